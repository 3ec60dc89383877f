//! Interoperability of backing chains, internal snapshots and read-only reopen with real QEMU:
//! what we write is what QEMU writes (byte for byte where the operations are the same), passes
//! `qemu-img check`, and QEMU-written snapshot tables and chains read the same through us.
//!
//! Every test skips (printing why) when `qemu-img` is not installed.

#[allow(dead_code)] // each test binary uses a different subset
mod common;

use blockcore::format::{create_image, SnapshotParams};
use blockcore::graph::{Graph, WriteKind};
use blockcore::units::Granularity;
use common::*;
use std::path::Path;

const MIB: u64 = 1 << 20;

/// A graph with `format` node `name` (file node `name-file`) over `path`.
fn open_node(g: &mut Graph, name: &str, path: &Path, read_only: bool) {
    let file = format!("{name}-file");
    g.add_file(&file, s(path), read_only).unwrap();
    g.add_format(name, "qcow2", &file, read_only).unwrap();
}

fn write(g: &mut Graph, node: &str, off: u64, len: u64, byte: u8) {
    g.write(node, off, WriteKind::Data, &vec![byte; len as usize], len)
        .unwrap();
}

fn params(name: &str, date_sec: u32, date_nsec: u32, vm_clock_nsec: u64) -> SnapshotParams {
    SnapshotParams {
        name: name.as_bytes().to_vec(),
        date_sec,
        date_nsec,
        vm_clock_nsec,
        icount: None,
    }
}

fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "file lengths differ");
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("files differ first at byte {i:#x}");
    }
}

/// Internal snapshots made through QMP (`blockdev-snapshot-internal-sync`, a guest write in
/// between, `blockdev-snapshot-delete-internal-sync`) and the same operations through us, with
/// the dates QEMU recorded, leave byte-identical files.
#[test]
fn internal_snapshots_match_qemu_byte_for_byte() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (dir.path().join("q.qcow2"), dir.path().join("o.qcow2"));
    for p in [&theirs, &ours] {
        create_with_qemu(p, 4 * MIB, "");
        qemu_io(p, &["write -P 0x11 0 300k", "write -P 0x22 2M 64k"]);
    }
    let snap = |n: &str| {
        format!("{{\"execute\":\"blockdev-snapshot-internal-sync\",\"arguments\":{{\"device\":\"disk0\",\"name\":\"{n}\"}}}}")
    };
    let hmp = |c: &str| {
        format!("{{\"execute\":\"human-monitor-command\",\"arguments\":{{\"command-line\":\"qemu-io disk0 \\\"{c}\\\"\"}}}}")
    };
    let Some(t) = qmp_session(&[
        qmp_add_qcow2("disk0", &theirs, false),
        snap("s1"),
        hmp("write -P 0x33 4k 8k"),
        snap("s2"),
        hmp("write -P 0x44 2M 512"),
        "{\"execute\":\"blockdev-snapshot-delete-internal-sync\",\"arguments\":{\"device\":\"disk0\",\"name\":\"s1\"}}".into(),
    ]) else {
        eprintln!("skipping: qemu-system-x86_64 did not run");
        return;
    };
    assert_eq!(t.matches("\"error\"").count(), 0, "QMP: {t}");
    // Dates and clocks as QEMU recorded them; s1 is gone from the file, but the delete
    // command returned it.
    let mut g = Graph::new();
    open_node(&mut g, "q", &theirs, true);
    let recorded = g.snapshots("q").unwrap();
    assert_eq!(recorded.len(), 1);
    let s2 = &recorded[0];
    assert_eq!((s2.id.as_str(), s2.name.as_slice()), ("2", &b"s2"[..]));
    assert_eq!(
        s2.icount, None,
        "QEMU stores icount -1 without record/replay"
    );
    assert_eq!(s2.vm_state_size, 0);
    let ret = t
        .lines()
        .find(|l| l.contains("\"vm-clock-sec\"") && l.contains("\"s1\""))
        .expect("delete reply");
    let field = |k: &str| -> u64 {
        let at = ret.find(&format!("\"{k}\": ")).unwrap() + k.len() + 4;
        ret[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    let s1 = params(
        "s1",
        field("date-sec") as u32,
        field("date-nsec") as u32,
        field("vm-clock-sec") * 1_000_000_000 + field("vm-clock-nsec"),
    );
    open_node(&mut g, "o", &ours, false);
    g.snapshot_create("o", &s1).unwrap();
    write(&mut g, "o", 4096, 8192, 0x33);
    let p2 = params("s2", s2.date_sec, s2.date_nsec, s2.vm_clock_nsec);
    assert_eq!(g.snapshot_create("o", &p2).unwrap().id, "2");
    write(&mut g, "o", 2 * MIB, 512, 0x44);
    let gone = g.snapshot_delete("o", None, Some(b"s1")).unwrap();
    assert_eq!(gone.id, "1");
    g.close_all();
    drop(g);
    assert_check_clean(&ours);
    assert_same_bytes(&ours, &theirs);
}

/// Snapshot tables written by `qemu-img snapshot` are read, changed and kept valid; ids are
/// max + 1; applying a snapshot afterwards gives back its contents.
#[test]
fn qemu_img_snapshots_read_deleted_and_applied() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.qcow2");
    let want = dir.path().join("want.qcow2");
    create_with_qemu(&img, 8 * MIB, "cluster_size=4096");
    create_with_qemu(&want, 8 * MIB, "");
    qemu_io(&img, &["write -P 0x11 0 1M"]);
    qemu_img(&["snapshot", "-c", "one", s(&img)]);
    qemu_io(&img, &["write -P 0x12 512k 1M"]);
    qemu_img(&["snapshot", "-c", "two", s(&img)]);
    qemu_io(&want, &["write -P 0x11 0 1M", "write -P 0x12 512k 1M"]);
    let mut g = Graph::new();
    open_node(&mut g, "d", &img, false);
    let names: Vec<(String, Vec<u8>)> = g
        .snapshots("d")
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.name))
        .collect();
    assert_eq!(
        names,
        vec![("1".into(), b"one".to_vec()), ("2".into(), b"two".to_vec())]
    );
    assert!(g.snapshot_delete("d", Some("2"), Some(b"one")).is_err());
    g.snapshot_delete("d", Some("1"), None).unwrap();
    write(&mut g, "d", 100, 70_000, 0x13);
    g.write(
        "d",
        3 * 4096,
        WriteKind::Zeroes,
        &[],
        5 * 4096 + 100, // partial last cluster: explicit zeros
    )
    .unwrap();
    let three = g.snapshot_create("d", &params("three", 5, 6, 7)).unwrap();
    assert_eq!(three.id, "3");
    write(&mut g, "d", 0, 4096, 0x14);
    g.close_all();
    drop(g);
    assert_check_clean(&img);
    let list = qemu_img(&["snapshot", "-l", s(&img)]);
    let ids: Vec<&str> = list
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["2", "3"], "{list}");
    let after = dir.path().join("after.qcow2");
    std::fs::copy(&img, &after).unwrap();
    qemu_img(&["snapshot", "-a", "two", s(&img)]);
    assert_check_clean(&img);
    assert_identical(&img, &want);
    qemu_io(
        &want,
        &[
            "write -P 0x13 100 70000",
            "write -z 12288 20580",
            "write -P 0x14 0 4096",
        ],
    );
    assert_identical(&after, &want);
}

/// An overlay created as `qemu-img create -b -F` does, written through our graph over its
/// backing chain (copy-up of partial clusters, zeroes and discard over backing data), equals
/// the same overlay written by `qemu-io` through QEMU's chain, byte for byte.
#[test]
fn overlay_writes_over_backing_match_qemu_io() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_with_qemu(&base, 4 * MIB, "");
    qemu_io(
        &base,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 3M 512k",
            "write -z 1M 64k",
        ],
    );
    let ours = dir.path().join("ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    create_image("qcow2", s(&ours), 4 * MIB, Some(s(&base)), Some("qcow2")).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&theirs),
        "4194304",
    ]);
    assert_same_bytes(&ours, &theirs);
    let mut g = Graph::new();
    open_node(&mut g, "base", &base, true);
    open_node(&mut g, "top", &ours, false);
    g.set_backing("top", Some("base")).unwrap();
    assert_eq!(g.read("top", 0, 4).unwrap(), vec![0x11; 4]);
    write(&mut g, "top", 1000, 100, 0x33);
    write(&mut g, "top", MIB - 50, 100, 0x34); // straddles the end of base data
    g.write("top", 3 * MIB, WriteKind::Zeroes, &[], 4096)
        .unwrap();
    g.write("top", 3 * MIB + 65536, WriteKind::Discard, &[], 65536)
        .unwrap();
    g.write("top", 3 * MIB + 131_072, WriteKind::Zeroes, &[], 65536)
        .unwrap();
    // Partial zeroes where the chain's status is zero (backing unallocated, a backing zero
    // cluster) zero the whole cluster instead of copying it up, as QEMU does.
    for off in [2 * MIB + 512, MIB + 4096] {
        g.write("top", off, WriteKind::Zeroes, &[], 4096).unwrap();
    }
    let whole = g.read("top", 0, 4 * MIB).unwrap();
    assert_eq!(&whole[990..1000], &[0x11; 10]);
    assert_eq!(&whole[1000..1100], &[0x33; 100]);
    assert_eq!(&whole[3 * MIB as usize + 4096..][..10], &[0x22; 10]);
    g.close_all();
    drop(g);
    qemu_io(
        &theirs,
        &[
            "write -P 0x33 1000 100",
            &format!("write -P 0x34 {} 100", MIB - 50),
            &format!("write -z {} 4096", 3 * MIB),
            &format!("discard {} 65536", 3 * MIB + 65536),
            &format!("write -z {} 65536", 3 * MIB + 131_072),
            &format!("write -z {} 4096", 2 * MIB + 512),
            &format!("write -z {} 4096", MIB + 4096),
        ],
    );
    assert_check_clean(&ours);
    assert_identical(&ours, &theirs);
    assert_same_bytes(&ours, &theirs);
    let info = qemu_img(&["info", "--backing-chain", s(&ours)]);
    assert!(
        info.contains(&format!("backing file: {}", s(&base))),
        "{info}"
    );
}

/// A read-only reopen (external snapshot commit) stores persistent bitmaps: `qemu-img info`
/// lists them without `in-use`, QEMU computes the same sha256, and the bitmaps are readonly.
#[test]
fn reopen_read_only_stores_persistent_bitmaps() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    create_with_qemu(&img, 4 * MIB, "");
    let mut g = Graph::new();
    open_node(&mut g, "d", &img, false);
    let gran = Granularity::new(65536).unwrap();
    g.bitmap_add("d", "p1", gran, true, true).unwrap();
    g.bitmap_add("d", "t1", gran, true, false).unwrap();
    write(&mut g, "d", 70_000, 200_000, 0x5a);
    assert!(g.reopen_read_only("d").unwrap().is_empty());
    assert!(g.get("d").unwrap().read_only);
    assert!(g.get("d-file").unwrap().read_only);
    assert!(g.bitmap("d", "p1").unwrap().state.readonly);
    assert!(!g.bitmap("d", "t1").unwrap().state.readonly);
    assert!(g.write("d", 0, WriteKind::Data, &[1; 512], 512).is_err());
    let info = qemu_img(&["info", "-U", "--output=json", s(&img)]);
    let compact: String = info.split_whitespace().collect();
    assert!(
        compact
            .contains("\"bitmaps\":[{\"flags\":[\"auto\"],\"name\":\"p1\",\"granularity\":65536}]"),
        "{info}"
    );
    let ours = g.bitmap("d", "p1").unwrap().bits.sha256_hex();
    // Closing a read-only node writes nothing more.
    g.close_all();
    drop(g);
    assert_check_clean(&img);
    let t = qmp_session(&[
        qmp_add_qcow2("disk0", &img, true),
        "{\"execute\":\"x-debug-block-dirty-bitmap-sha256\",\"arguments\":{\"node\":\"disk0\",\"name\":\"p1\"}}".into(),
    ]);
    if let Some(t) = t {
        assert!(t.contains(&ours), "QEMU: {t}, ours {ours}");
    }
}

/// Image locks: QEMU refuses an image the reference holds, and the reference refuses one QEMU
/// holds, with QEMU's messages.
#[test]
fn image_locks_are_seen_by_qemu_and_from_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l.qcow2");
    create_with_qemu(&img, MIB, "");
    let mut g = Graph::new();
    open_node(&mut g, "d", &img, false);
    let Some(t) = qmp_session(&[
        qmp_add_qcow2("rw", &img, false),
        qmp_add_qcow2("ro", &img, true),
    ]) else {
        eprintln!("skipping: qemu-system-x86_64 did not run");
        return;
    };
    assert!(t.contains("Failed to get \\\"write\\\" lock"), "{t}");
    assert!(t.contains("Failed to get shared \\\"write\\\" lock"), "{t}");
    let (ok, text) = run("qemu-img", &["info", s(&img)]);
    assert!(
        !ok && text.contains("Failed to get shared \"write\" lock"),
        "{text}"
    );
    g.reopen_read_only("d").unwrap();
    // A read-only reference node lets QEMU read, not write.
    let t = qmp_session(&[
        qmp_add_qcow2("ro", &img, true),
        qmp_add_qcow2("rw", &img, false),
    ])
    .unwrap();
    assert_eq!(t.matches("\"return\": {}").count(), 3, "{t}"); // capabilities, ro, quit
    assert!(t.contains("Failed to get \\\"write\\\" lock"), "{t}");
    g.close_all();
    drop(g);
    // And the other way round: a QEMU holding the image makes the reference fail.
    let blockdev = format!(
        "driver=qcow2,node-name=q,file.driver=file,file.filename={}",
        s(&img)
    );
    let mut child = spawn_qemu(&["-blockdev", &blockdev]).unwrap();
    // The greeting is printed once the command line's block devices are open.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut greeting = String::new();
    std::io::BufRead::read_line(&mut out, &mut greeting).unwrap();
    assert!(greeting.contains("QMP"), "{greeting}");
    let mut g = Graph::new();
    g.add_file("f", s(&img), true).unwrap();
    let err = g.add_format("d", "qcow2", "f", true).unwrap_err();
    assert_eq!(err.to_string(), "Failed to get shared \"write\" lock");
    let err = create_image("qcow2", s(&img), MIB, None, None).unwrap_err();
    assert_eq!(err.to_string(), "Failed to get \"write\" lock");
    // QEMU keeps running when its QMP input ends; ask it to quit.
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut stdin,
        b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n",
    )
    .unwrap();
    drop(stdin);
    std::io::copy(&mut out, &mut std::io::sink()).unwrap();
    child.wait().unwrap();
    g.add_format("d", "qcow2", "f", true).unwrap();
}

/// Over a sparse raw backing file, block status sees holes as zero (as QEMU's `file` driver
/// does with `SEEK_DATA`): partial zeroes over a hole zero the overlay cluster, over data they
/// copy it up; the overlay equals `qemu-io`'s byte for byte.
#[test]
fn overlay_over_sparse_raw_backing_matches_qemu_io() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&base), "4M"]);
    let (ok, text) = run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x11 0 128k", s(&base)],
    );
    assert!(ok, "{text}");
    let mut files = Vec::new();
    for name in ["ours.qcow2", "theirs.qcow2"] {
        let p = dir.path().join(name);
        create_image("qcow2", s(&p), 4 * MIB, Some(s(&base)), Some("raw")).unwrap();
        files.push(p);
    }
    let mut g = Graph::new();
    g.add_file("base-file", s(&base), true).unwrap();
    g.add_format("base", "raw", "base-file", true).unwrap();
    open_node(&mut g, "top", &files[0], false);
    g.set_backing("top", Some("base")).unwrap();
    for off in [2 * MIB + 512, 4096, 3 * MIB + 60 * 1024] {
        g.write("top", off, WriteKind::Zeroes, &[], 8192).unwrap();
    }
    g.close_all();
    drop(g);
    qemu_io(
        &files[1],
        &[
            &format!("write -z {} 8192", 2 * MIB + 512),
            "write -z 4096 8192",
            &format!("write -z {} 8192", 3 * MIB + 60 * 1024),
        ],
    );
    assert_check_clean(&files[0]);
    assert_same_bytes(&files[0], &files[1]);
}

/// qcow2 v2 (compat 0.10) overlays: zeroes are explicit zeros and discard does nothing (QEMU
/// returns ENOTSUP, having no zero flag to hide the backing), as `qemu-io` shows.
#[test]
fn v2_overlay_zeroes_and_discard_match_qemu_io() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_with_qemu(&base, MIB, "compat=0.10");
    qemu_io(&base, &["write -P 0x11 0 1M"]);
    let mut files = Vec::new();
    for name in ["ours.qcow2", "theirs.qcow2"] {
        let p = dir.path().join(name);
        let opts = format!("compat=0.10,backing_file={},backing_fmt=qcow2", s(&base));
        create_with_qemu(&p, MIB, &opts);
        files.push(p);
    }
    let mut g = Graph::new();
    open_node(&mut g, "base", &base, true);
    open_node(&mut g, "top", &files[0], false);
    g.set_backing("top", Some("base")).unwrap();
    write(&mut g, "top", 0, 131_072, 0x22);
    g.write("top", 0, WriteKind::Discard, &[], 65536).unwrap();
    g.write("top", 200_000, WriteKind::Zeroes, &[], 70_000)
        .unwrap();
    assert_eq!(g.read("top", 0, 2).unwrap(), [0x22, 0x22]);
    g.close_all();
    drop(g);
    qemu_io(
        &files[1],
        &[
            "write -P 0x22 0 128k",
            "discard 0 64k",
            "write -z 200000 70000",
        ],
    );
    assert_check_clean(&files[0]);
    assert_same_bytes(&files[0], &files[1]);
}

/// `qemu-io write -z` without `-u` keeps allocated clusters allocated under the zero flag
/// (also clusters shared with an internal snapshot); with `-u` they are freed; data written
/// later over a kept cluster of its own goes in place. All match `qemu-io` byte for byte.
#[test]
fn zeroes_with_and_without_unmap_match_qemu_io() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [
        dir.path().join("ours.qcow2"),
        dir.path().join("theirs.qcow2"),
    ];
    create_with_qemu(&files[0], 2 * MIB, "");
    qemu_io(&files[0], &["write -P 0x11 0 1M"]);
    qemu_img(&["snapshot", "-c", "s", s(&files[0])]);
    qemu_io(&files[0], &["write -P 0x12 512k 256k"]);
    // One image, copied: the snapshot's date is the same in both.
    std::fs::copy(&files[0], &files[1]).unwrap();
    let mut g = Graph::new();
    open_node(&mut g, "d", &files[0], false);
    let ops: [(u64, u64, bool); 4] = [
        (0, 131_072, false),            // shared with the snapshot, kept allocated
        (512 * 1024, 131_072, false),   // own clusters, kept allocated
        (640 * 1024, 65536, true),      // own cluster, freed
        (900 * 1024 + 17, 5000, false), // partial: explicit zeros
    ];
    let mut cmds = Vec::new();
    for (off, len, unmap) in ops {
        let kind = if unmap {
            WriteKind::Zeroes
        } else {
            WriteKind::ZeroesNoUnmap
        };
        g.write("d", off, kind, &[], len).unwrap();
        cmds.push(format!(
            "write -z{} {off} {len}",
            if unmap { " -u" } else { "" }
        ));
    }
    // Data over the kept clusters: an own one is written in place (whole, or partly with
    // the rest zeroed), a shared one is copied as any shared cluster.
    for (off, len, byte) in [
        (512 * 1024, 65536, 0x31u8),
        (576 * 1024 + 100, 3000, 0x32),
        (4096, 4096, 0x33),
    ] {
        g.write("d", off, WriteKind::Data, &vec![byte; len], len as u64)
            .unwrap();
        cmds.push(format!("write -P {byte:#x} {off} {len}"));
    }
    g.close_all();
    drop(g);
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(&files[1], &cmds);
    assert_check_clean(&files[0]);
    assert_same_bytes(&files[0], &files[1]);
}
