//! Interoperability of the qcow2 driver with real QEMU (`qemu-img`, `qemu-io`,
//! `qemu-system-x86_64`): images QEMU makes are read and changed by us and stay clean for
//! `qemu-img check`; what we write reads the same in QEMU as QEMU's own writes.
//!
//! Every test skips (printing why) when `qemu-img` is not installed.

use blockcore::bitmap::DirtyBitmap;
use blockcore::format::qcow2::{Compat, CreateOptions, Qcow2};
use blockcore::format::FormatDriver;
use blockcore::storage::FileStorage;
use blockcore::units::{ByteRange, Granularity};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

#[allow(dead_code)] // each test binary uses a different subset
mod common;
use common::*;

fn open(path: &Path, read_only: bool) -> Qcow2 {
    let st = Arc::new(FileStorage::open(path, read_only).unwrap());
    Qcow2::open(st, read_only).unwrap()
}

/// The JSON `qemu-img info` prints, without whitespace.
fn info_compact(path: &Path, force_share: bool) -> String {
    let mut args = vec!["info", "--output=json"];
    if force_share {
        args.push("-U");
    }
    args.push(s(path));
    qemu_img(&args).split_whitespace().collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Write(u64, u64, u8),
    Zero(u64, u64),
    Discard(u64, u64),
}

/// Applies `ops` to `ours` with our driver and to `theirs` with one `qemu-io` run.
fn apply_both(ours: &Path, theirs: &Path, ops: &[Op]) {
    let mut q = open(ours, false);
    let mut args: Vec<String> = Vec::new();
    for op in ops {
        match *op {
            Op::Write(off, len, p) => {
                q.write(off, &vec![p; len as usize]).unwrap();
                args.push("-c".into());
                args.push(format!("write -P {p:#x} {off} {len}"));
            }
            Op::Zero(off, len) => {
                q.write_zeroes(off, len).unwrap();
                args.push("-c".into());
                args.push(format!("write -z -u {off} {len}"));
            }
            Op::Discard(off, len) => {
                q.discard(off, len).unwrap();
                args.push("-c".into());
                args.push(format!("discard {off} {len}"));
            }
        }
    }
    q.close().unwrap();
    for chunk in args.chunks(400) {
        let mut a: Vec<&str> = chunk.iter().map(String::as_str).collect();
        a.push(s(theirs));
        let (ok, text) = run("qemu-io", &a);
        assert!(ok && !text.contains("failed"), "qemu-io: {text}");
    }
}

/// The file's length and its data extents as `SEEK_DATA`/`SEEK_HOLE` report them: where the
/// host bytes went, what `qemu-img map` and `qemu-img info` see of the file.
fn host_layout(path: &Path) -> (u64, Vec<(u64, u64)>) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let fd = f.as_raw_fd();
    let mut extents = Vec::new();
    let mut off = 0i64;
    while (off as u64) < len {
        // SAFETY: lseek on an open fd only moves its offset.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        extents.push((data as u64, hole as u64));
        off = hole;
    }
    (len, extents)
}

fn assert_same_host_layout(ours: &Path, theirs: &Path, what: &str) {
    assert_eq!(
        host_layout(ours),
        host_layout(theirs),
        "host layout, {what}"
    );
}

fn assorted_writes(size: u64, cluster: u64) -> Vec<Op> {
    let l2_span = cluster * (cluster / 8);
    let mut ops = vec![
        Op::Write(0, 1, 0x11),
        Op::Write(1, 700, 0x12),
        Op::Write(cluster - 3, 10, 0x13),
        Op::Write(3 * cluster + 5, 5 * cluster, 0x14),
        Op::Write(l2_span - 100, 300, 0x15),
        Op::Write(size - 512, 512, 0x16),
        Op::Write(size / 2 + 12345, 100_000, 0x17),
        Op::Write(cluster + 1, cluster, 0x18),
    ];
    // Overwrites of allocated clusters, in place and across allocated/unallocated borders.
    ops.push(Op::Write(2, 3 * cluster, 0x19));
    ops.retain(|op| matches!(op, Op::Write(o, l, _) if o + l <= size));
    ops
}

#[test]
fn writes_match_qemu_io_and_check_clean() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (cluster, opts) in [
        (65536u64, "cluster_size=65536"),
        (512, "cluster_size=512"),
        (4096, "cluster_size=4096,refcount_bits=1"),
        (2 * MIB, "cluster_size=2M,refcount_bits=64"),
        (65536, "compat=0.10"),
    ] {
        let size = 64 * MIB;
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        create_with_qemu(&ours, size, opts);
        create_with_qemu(&theirs, size, opts);
        apply_both(&ours, &theirs, &assorted_writes(size, cluster));
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        assert_same_host_layout(&ours, &theirs, opts);
    }
}

#[test]
fn sparse_writes_grow_refcount_table_and_check_clean() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    let size = 64 * MIB;
    create_with_qemu(&ours, size, "cluster_size=512");
    create_with_qemu(&theirs, size, "cluster_size=512");
    let mut ops = Vec::new();
    let (mut off, mut p) = (17u64, 1u8);
    while off + 16_000 < size {
        ops.push(Op::Write(off, 16_000, p));
        off += 97 * 1024 + 13;
        p = p.wrapping_add(1).max(1);
    }
    apply_both(&ours, &theirs, &ops);
    // One refcount table cluster (64 blocks of 256 clusters) covers 8 MiB; we wrote more.
    let hdr = std::fs::read(&ours).unwrap();
    let rt_clusters = u32::from_be_bytes(hdr[56..60].try_into().unwrap());
    assert!(
        rt_clusters > 1,
        "refcount table grew (now {rt_clusters} clusters)"
    );
    assert_check_clean(&ours);
    assert_identical(&ours, &theirs);
}

/// `qemu-img map` reduced to what the guest sees (zero/data/present), per range.
fn map_shape(path: &Path) -> Vec<String> {
    let text = qemu_img(&["map", "--output=json", s(path)]);
    text.lines()
        .filter(|l| l.contains("\"start\""))
        .map(|l| {
            l.split(',')
                .filter(|f| !f.contains("\"offset\"") && !f.contains("depth"))
                .collect::<Vec<_>>()
                .join(",")
                .trim_end_matches(['}', ']', ',', ' '])
                .to_string()
        })
        .collect()
}

#[test]
fn zeroes_and_discard_match_qemu_io_and_check_clean() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (cluster, opts) in [
        (65536u64, ""),
        (512, "cluster_size=512"),
        (65536, "compat=0.10"),
    ] {
        let size = 16 * MIB;
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        create_with_qemu(&ours, size, opts);
        create_with_qemu(&theirs, size, opts);
        let c = cluster;
        let ops = vec![
            Op::Write(0, 12 * c, 0xaa),
            Op::Write(5 * MIB, 3 * c + 100, 0xbb),
            Op::Zero(c, c),
            Op::Zero(2 * c + 10, 20),
            Op::Zero(3 * c, 2 * c + 7),
            Op::Discard(6 * c, 2 * c),
            Op::Discard(8 * c + 1, c),
            Op::Discard(10 * c, c - 512),
            Op::Zero(9 * MIB + 100, 1000),
            Op::Discard(12 * MIB, 2 * MIB),
            Op::Zero(size - 3 * c, 3 * c),
            Op::Write(6 * c + 77, 33, 0xcc),
        ];
        apply_both(&ours, &theirs, &ops);
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        // qemu-io opens with discard=unmap: the clusters guest discards and unmapping zeroes
        // free are passed down to the file (holes), by the driver too.
        assert_same_host_layout(&ours, &theirs, &format!("{opts:?}"));
        assert_eq!(map_shape(&ours), map_shape(&theirs), "opts {opts:?}");
    }
}

/// SHA-256 of persistent bitmaps as real QEMU computes them (`x-debug-block-dirty-bitmap-sha256`
/// after a read-only `blockdev-add`), in the order of `names`; `None` without the emulator.
fn qemu_sha256(path: &Path, names: &[&str]) -> Option<Vec<String>> {
    let mut child = spawn_qemu(&[]).ok()?;
    let mut input = String::from("{\"execute\":\"qmp_capabilities\"}\n");
    input += &format!(
        "{{\"execute\":\"blockdev-add\",\"arguments\":{{\"driver\":\"qcow2\",\"node-name\":\"disk0\",\"read-only\":true,\"file\":{{\"driver\":\"file\",\"filename\":\"{}\"}}}}}}\n",
        s(path)
    );
    for n in names {
        input += &format!(
            "{{\"execute\":\"x-debug-block-dirty-bitmap-sha256\",\"arguments\":{{\"node\":\"disk0\",\"name\":\"{n}\"}}}}\n"
        );
    }
    input += "{\"execute\":\"quit\"}\n";
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let sums: Vec<String> = text
        .split("\"sha256\": \"")
        .skip(1)
        .map(|t| t[..64].to_string())
        .collect();
    assert_eq!(sums.len(), names.len(), "QMP transcript: {text}");
    Some(sums)
}

#[test]
fn bitmaps_made_by_qemu_load_with_same_bits_and_flags() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bm.qcow2");
    create_with_qemu(&img, 64 * MIB, "");
    qemu_img(&["bitmap", "--add", s(&img), "b1"]);
    qemu_img(&["bitmap", "--add", "-g", "512", "--disable", s(&img), "b2"]);
    qemu_img(&["bitmap", "--add", "-g", "1M", s(&img), "b3"]);
    // qemu-io opens read-write: the enabled bitmaps (b1, b3) record these writes.
    let (ok, text) = run(
        "qemu-io",
        &[
            "-c",
            "write -P 1 0 1",
            "-c",
            "write -P 2 100k 300k",
            "-c",
            "write -P 3 40M 5M",
            "-c",
            "write -P 4 67108863 1",
            s(&img),
        ],
    );
    assert!(ok, "{text}");
    // b2 gets bits by merging b1 into it (qemu-img bitmap --merge works on disabled bitmaps).
    qemu_img(&["bitmap", "--merge", "b1", s(&img), "b2"]);
    assert_check_clean(&img);

    let mut q = open(&img, true);
    let loaded: Vec<DirtyBitmap> = q
        .take_loaded_bitmaps()
        .into_iter()
        .map(|l| l.bitmap)
        .collect();
    let names: Vec<&str> = loaded.iter().map(|b| b.name.as_deref().unwrap()).collect();
    assert_eq!(names, ["b1", "b2", "b3"], "directory order");
    let grans: Vec<u64> = loaded
        .iter()
        .map(|b| b.bits.granularity().bytes())
        .collect();
    assert_eq!(grans, [65536, 512, 1 << 20]);
    let enabled: Vec<bool> = loaded.iter().map(|b| b.state.enabled).collect();
    assert_eq!(enabled, [true, false, true]);
    assert!(loaded
        .iter()
        .all(|b| b.state.persistent && b.state.readonly));
    assert!(loaded.iter().all(|b| !b.state.inconsistent));
    // b1: bytes 0, 100k..400k, 40M..45M, the last byte at 64 KiB granularity.
    let mut want = blockcore::bitmap::Bits::new(64 * MIB, Granularity::new(65536).unwrap());
    for (o, l) in [
        (0, 1),
        (100 << 10, 300 << 10),
        (40 * MIB, 5 * MIB),
        (64 * MIB - 1, 1),
    ] {
        want.set_range(ByteRange::new(o, l));
    }
    assert_eq!(loaded[0].bits, want);
    let ours: Vec<String> = loaded.iter().map(|b| b.bits.sha256_hex()).collect();
    match qemu_sha256(&img, &names) {
        Some(theirs) => assert_eq!(ours, theirs),
        None => eprintln!("qemu-system-x86_64 not available: sha256 not cross-checked"),
    }
}

fn persistent(name: &str, g: u64, ranges: &[(u64, u64)], enabled: bool) -> DirtyBitmap {
    let mut b = DirtyBitmap::new(Some(name.into()), 64 * MIB, Granularity::new(g).unwrap());
    for &(o, l) in ranges {
        b.bits.set_range(ByteRange::new(o, l));
    }
    b.state.persistent = true;
    b.state.enabled = enabled;
    b
}

#[test]
fn stored_bitmaps_are_read_by_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("store.qcow2");
    create_with_qemu(&img, 64 * MIB, "");
    let a = persistent("alpha", 65536, &[(0, 1), (3 * MIB, 10 * MIB)], true);
    let b = persistent("beta", 512, &[(64 * MIB - 1, 1), (7 * MIB, 513)], false);
    let all = persistent("gamma", 4096, &[(0, 64 * MIB)], true);
    {
        let mut q = open(&img, false);
        q.write(5 * MIB, &[7u8; 4096]).unwrap();
        q.store_bitmaps(&[&a, &b, &all]).unwrap();
        q.close().unwrap();
    }
    assert_check_clean(&img);
    let info = info_compact(&img, false);
    for want in [
        r#"{"flags":["auto"],"name":"alpha","granularity":65536}"#,
        r#"{"flags":[],"name":"beta","granularity":512}"#,
        r#"{"flags":["auto"],"name":"gamma","granularity":4096}"#,
    ] {
        assert!(info.contains(want), "missing {want} in {info}");
    }
    if let Some(theirs) = qemu_sha256(&img, &["alpha", "beta", "gamma"]) {
        assert_eq!(
            theirs,
            [
                a.bits.sha256_hex(),
                b.bits.sha256_hex(),
                all.bits.sha256_hex()
            ]
        );
    }
    // Store again with one changed and one removed; the rest stays, nothing leaks.
    {
        let mut q = open(&img, false);
        let loaded = q.take_loaded_bitmaps();
        assert_eq!(loaded.len(), 3);
        let mut changed = loaded[0].bitmap.clone();
        changed.bits.set_range(ByteRange::new(60 * MIB, 1));
        changed.state.enabled = false;
        q.remove_stored_bitmap("beta").unwrap();
        // The directory no longer names beta, but its clusters' refcounts are still in the
        // metadata cache, as in QEMU: leaked for a reader of the file, nothing worse.
        assert_only_leaks_shared(&img);
        q.store_bitmaps(&[&changed, &loaded[2].bitmap]).unwrap();
        q.close().unwrap();
    }
    assert_check_clean(&img);
    let info = info_compact(&img, false);
    assert!(
        info.contains(r#"{"flags":[],"name":"alpha","granularity":65536}"#),
        "{info}"
    );
    assert!(!info.contains("beta"), "{info}");
    // qemu-img itself can remove what we stored.
    qemu_img(&["bitmap", "--remove", s(&img), "alpha"]);
    qemu_img(&["bitmap", "--remove", s(&img), "gamma"]);
    assert_check_clean(&img);
}

/// `qemu-img check -U` (the image is open read-write in this process) finds leaked clusters
/// and nothing else.
fn assert_only_leaks_shared(path: &Path) {
    let (_, text) = run("qemu-img", &["check", "-U", s(path)]);
    assert!(
        text.contains("leaked clusters were found") && !text.contains("ERROR"),
        "check -U: {text}"
    );
}

#[test]
fn in_use_left_set_by_killed_writer_loads_inconsistent() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("kill.qcow2");
    create_with_qemu(&img, 64 * MIB, "");
    qemu_img(&["bitmap", "--add", s(&img), "b1"]);
    qemu_img(&["bitmap", "--add", "--disable", s(&img), "b2"]);

    // Our read-write open marks in_use at once, as QEMU's does.
    let ours = open(&img, false);
    let info = info_compact(&img, true);
    assert!(
        info.contains(r#"{"flags":["in-use","auto"],"name":"b1""#),
        "{info}"
    );
    assert!(
        info.contains(r#"{"flags":["in-use"],"name":"b2""#),
        "{info}"
    );
    drop(ours); // never stored: a killed process

    let mut q = open(&img, true);
    let loaded = q.take_loaded_bitmaps();
    assert!(loaded.iter().all(|l| l.bitmap.state.inconsistent));
    assert!(loaded.iter().all(|l| !l.bitmap.state.enabled));
    assert!(loaded.iter().all(|l| l.bitmap.bits.count_bits() == 0));
}

#[test]
fn in_use_left_set_by_killed_qemu_loads_inconsistent() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("qkill.qcow2");
    create_with_qemu(&img, 64 * MIB, "");
    qemu_img(&["bitmap", "--add", s(&img), "b1"]);
    let Ok(mut child) = spawn_qemu(&[]) else {
        eprintln!("skipping: qemu-system-x86_64 not available");
        return;
    };
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let cmds = format!(
        "{{\"execute\":\"qmp_capabilities\"}}\n{{\"execute\":\"blockdev-add\",\"arguments\":{{\"driver\":\"qcow2\",\"node-name\":\"disk0\",\"file\":{{\"driver\":\"file\",\"filename\":\"{}\"}}}}}}\n",
        s(&img)
    );
    stdin.write_all(cmds.as_bytes()).unwrap();
    let mut returns = 0;
    while returns < 2 {
        let line = lines.next().unwrap().unwrap();
        assert!(!line.contains("\"error\""), "{line}");
        if line.contains("\"return\"") {
            returns += 1;
        }
    }
    let info = info_compact(&img, true);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        info.contains(r#"{"flags":["in-use","auto"],"name":"b1""#),
        "{info}"
    );
    let mut q = open(&img, true);
    let loaded = q.take_loaded_bitmaps();
    assert!(loaded[0].bitmap.state.inconsistent);
    // A clean rw open and store by us keeps the inconsistent entry as it is (QEMU does too).
    let mut rw = open(&img, false);
    let l = rw.take_loaded_bitmaps();
    let fresh = persistent("b9", 65536, &[(0, 1)], true);
    rw.store_bitmaps(&[&l[0].bitmap, &fresh]).unwrap();
    rw.close().unwrap();
    drop(rw);
    let info = info_compact(&img, false);
    assert!(
        info.contains(r#"{"flags":["in-use","auto"],"name":"b1""#),
        "{info}"
    );
    assert!(info.contains(r#"{"flags":["auto"],"name":"b9""#), "{info}");
    assert_check_clean(&img);
}

#[test]
fn bitmaps_extension_without_autoclear_is_dropped_on_rw_open() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ac.qcow2");
    create_with_qemu(&img, 64 * MIB, "");
    qemu_img(&["bitmap", "--add", s(&img), "b1"]);
    // Clear autoclear bit 0, as a program without bitmap support would.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[0x5f] &= !1;
    std::fs::write(&img, &bytes).unwrap();
    let mut ro = open(&img, true);
    assert!(ro.take_loaded_bitmaps().is_empty());
    drop(ro);
    let mut rw = open(&img, false);
    assert!(rw.take_loaded_bitmaps().is_empty());
    rw.close().unwrap();
    drop(rw);
    let info = info_compact(&img, false);
    assert!(!info.contains("bitmaps"), "{info}");
    // Like QEMU, the old bitmap clusters are leaked, not freed.
    let (_, text) = run("qemu-img", &["check", s(&img)]);
    assert!(text.contains("leaked clusters"), "{text}");
}

fn create_ours(path: &Path, opts: &CreateOptions) {
    let st = Arc::new(FileStorage::create(path).unwrap());
    Qcow2::create(st, opts).unwrap();
}

#[test]
fn create_matches_qemu_img_byte_for_byte() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_with_qemu(&base, 64 * MIB, "");
    let cases: Vec<(CreateOptions, Vec<&str>)> = vec![
        (CreateOptions::new(64 * MIB), vec![]),
        (CreateOptions::new(10 << 30), vec![]),
        (
            CreateOptions {
                cluster_size: 512,
                ..CreateOptions::new(64 * MIB)
            },
            vec!["-o", "cluster_size=512"],
        ),
        (
            CreateOptions {
                cluster_size: 512,
                ..CreateOptions::new(1 << 30)
            },
            vec!["-o", "cluster_size=512"],
        ),
        (
            CreateOptions {
                compat: Compat::V0_10,
                ..CreateOptions::new(64 * MIB)
            },
            vec!["-o", "compat=0.10"],
        ),
        (
            CreateOptions {
                refcount_bits: 1,
                cluster_size: 2 * MIB,
                ..CreateOptions::new(64 * MIB)
            },
            vec!["-o", "refcount_bits=1,cluster_size=2M"],
        ),
        (
            CreateOptions {
                refcount_bits: 64,
                cluster_size: 4096,
                ..CreateOptions::new(100 * MIB)
            },
            vec!["-o", "refcount_bits=64,cluster_size=4096"],
        ),
        (
            CreateOptions {
                backing_file: Some(s(&base).to_string()),
                backing_format: Some("qcow2".into()),
                ..CreateOptions::new(64 * MIB)
            },
            vec!["-b", s(&base), "-F", "qcow2"],
        ),
        (
            CreateOptions {
                cluster_size: 512,
                backing_file: Some("base.qcow2".into()),
                backing_format: Some("qcow2".into()),
                ..CreateOptions::new(64 * MIB)
            },
            vec![
                "-o",
                "cluster_size=512",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                "-u",
            ],
        ),
    ];
    for (opts, args) in cases {
        let ours: PathBuf = dir.path().join("ours.qcow2");
        let theirs: PathBuf = dir.path().join("theirs.qcow2");
        create_ours(&ours, &opts);
        let size = opts.size.to_string();
        let mut a = vec!["create", "-q", "-f", "qcow2"];
        a.extend(args.iter().copied());
        a.extend([s(&theirs), size.as_str()]);
        qemu_img(&a);
        let strip = |t: String| t.replace(s(&ours), "X").replace(s(&theirs), "X");
        assert_eq!(
            strip(info_compact(&ours, false)),
            strip(info_compact(&theirs, false)),
            "{opts:?}"
        );
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "bytes differ for {opts:?}"
        );
        if opts.backing_file.is_none() {
            assert_check_clean(&ours);
        }
    }
}

/// Throughput of sequential 64 KiB writes filling a 1 GiB image (run with `--release --ignored`).
#[test]
#[ignore = "benchmark: cargo test --release -p blockcore --test qcow2_interop -- --ignored"]
fn sequential_64k_writes_of_1gib_throughput() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bench.qcow2");
    create_ours(&img, &CreateOptions::new(1 << 30));
    let mut q = open(&img, false);
    let buf = vec![0x5au8; 65536];
    let start = std::time::Instant::now();
    for off in (0..1u64 << 30).step_by(65536) {
        q.write(off, &buf).unwrap();
    }
    q.flush().unwrap();
    let write = start.elapsed();
    let start = std::time::Instant::now();
    let mut rbuf = vec![0u8; 65536];
    for off in (0..1u64 << 30).step_by(65536) {
        q.read(off, &mut rbuf).unwrap();
    }
    let read = start.elapsed();
    q.close().unwrap();
    eprintln!(
        "1 GiB in 64 KiB writes: {:.0} MB/s write (incl. fsync), {:.0} MB/s read",
        1024.0 / write.as_secs_f64(),
        1024.0 / read.as_secs_f64()
    );
    assert_eq!(rbuf, buf);
    assert_check_clean(&img);
}

#[test]
fn writes_after_internal_snapshot_keep_snapshot_intact() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("snap.qcow2");
    let want_snap = dir.path().join("want.qcow2");
    create_with_qemu(&img, 16 * MIB, "");
    create_with_qemu(&want_snap, 16 * MIB, "");
    let before = ["-c", "write -P 0x61 0 1M", "-c", "write -P 0x62 3M 200k"];
    for target in [&img, &want_snap] {
        let mut a = before.to_vec();
        a.push(s(target));
        assert!(run("qemu-io", &a).0);
    }
    qemu_img(&["snapshot", "-c", "s1", s(&img)]);
    {
        let mut q = open(&img, false);
        q.write(100, &[0x71; 5000]).unwrap(); // copy-on-write of a shared cluster
        q.write(3 * MIB + 65536, &[0x72; 70_000]).unwrap();
        q.write_zeroes(512 * 1024, 128 * 1024).unwrap();
        q.discard(3 * MIB, 65536).unwrap();
        q.write(10 * MIB, &[0x73; 4096]).unwrap();
        q.close().unwrap();
    }
    assert_check_clean(&img);
    qemu_img(&["snapshot", "-a", "s1", s(&img)]);
    assert_check_clean(&img);
    assert_identical(&img, &want_snap);
}

/// Images compressed by `qemu-img convert -c` read back as their source, and partial writes,
/// zeroes and discards of compressed clusters (copying them up decompressed) leave the same
/// guest data and layout as `qemu-io` does, clean for `qemu-img check`.
#[test]
fn compressed_clusters_read_and_copy_up_like_qemu() {
    if !have_qemu() {
        return;
    }
    for (cluster, ctype) in [
        (4096u64, "zlib"),
        (65536, "zlib"),
        (4096, "zstd"),
        (65536, "zstd"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        qemu_img(&["create", "-q", "-f", "raw", s(&src), "1M"]);
        let (ok, text) = run(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0x41 0 300k",
                "-c",
                "write -P 0x42 512k 100k",
                s(&src),
            ],
        );
        assert!(ok, "{text}");
        let ours = dir.path().join("ours.qcow2");
        let opt = format!("cluster_size={cluster},compression_type={ctype}");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &opt,
            s(&src),
            s(&ours),
        ]);
        let theirs = dir.path().join("theirs.qcow2");
        std::fs::copy(&ours, &theirs).unwrap();
        let mut q = open(&ours, true);
        let mut got = vec![0u8; MIB as usize];
        q.read(0, &mut got).unwrap();
        assert!(got == std::fs::read(&src).unwrap(), "{opt}");
        drop(q);
        let ops = [
            Op::Write(1000, 10, 0x51),
            Op::Write(512 * 1024 + 4000, 70_000, 0x52),
            Op::Zero(200 * 1024 + 7, 100),
            Op::Discard(0, 2 * cluster),
            Op::Write(600 * 1024, cluster, 0x53),
        ];
        apply_both(&ours, &theirs, &ops);
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        assert_eq!(map_shape(&ours), map_shape(&theirs), "{opt}");
    }
}

/// Compressed writes (`write -c`, what a `compress: true` backup does to its target) of one
/// cluster each read as `qemu-io`'s and leave a clean image whose file is the one `qemu-io`
/// makes, byte for byte: the same deflate streams (the system's zlib with QEMU's parameters)
/// or zstd frames, packed at the same offsets, incompressible clusters written plain.
#[test]
fn compressed_writes_match_qemu_io_byte_for_byte() {
    if !have_qemu() {
        return;
    }
    for opts in [
        "compression_type=zlib",
        "compression_type=zlib,cluster_size=4096",
        "compression_type=zlib,cluster_size=2M",
        "compression_type=zstd",
        "compression_type=zstd,cluster_size=4096",
        "compression_type=zstd,cluster_size=2M",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        create_with_qemu(&ours, 32 * MIB, opts);
        create_with_qemu(&theirs, 32 * MIB, opts);
        let cluster = open(&ours, true).cluster_size().unwrap();
        let mut x = 0x2545_f491u32;
        let noise: Vec<u8> = (0..cluster)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let text: Vec<u8> = (0..cluster * 3)
            .map(|i| b"qcow2 zstd "[(i % 11) as usize] ^ (i / 997) as u8)
            .collect();
        // One cluster per write: QEMU compresses the clusters of one request in parallel
        // and packs them in the order they finish (not deterministic).
        let c = cluster as usize;
        let writes: Vec<(u64, Vec<u8>)> = vec![
            (0, text[..c].to_vec()),
            (cluster, text[c..2 * c].to_vec()),
            (2 * cluster, text[2 * c..].to_vec()),
            (3 * cluster, noise.clone()),
            (5 * cluster, vec![0x77; cluster as usize]),
            (6 * cluster, text[..cluster as usize].to_vec()),
        ];
        {
            let mut q = open(&ours, false);
            for (off, data) in &writes {
                q.write_compressed(*off, data).unwrap();
            }
            q.close().unwrap();
        }
        // One qemu-io run, as one open of ours: both pack streams from a fresh position.
        let mut args: Vec<String> = Vec::new();
        for (k, (off, data)) in writes.iter().enumerate() {
            let pattern_file = dir.path().join(format!("chunk{k}.raw"));
            std::fs::write(&pattern_file, data).unwrap();
            args.push("-c".into());
            args.push(format!(
                "write -c -s {} {off} {}",
                s(&pattern_file),
                data.len()
            ));
        }
        args.push(s(&theirs).into());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = run("qemu-io", &a);
        assert!(ok && !text.contains("failed"), "qemu-io: {text}");
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "{opts}: files differ"
        );
    }
}

/// Snapshots, copy-on-write into unallocated and shared clusters, and snapshot deletes leave
/// the host file as QEMU leaves it: zero copy-on-write regions not written (the cluster
/// allocated without data, only the guest bytes written), clusters freed by snapshot
/// operations discarded (holes, the file keeps its length), free clusters reused in QEMU's
/// order.
#[test]
fn snapshot_history_host_layout_matches_qemu() {
    use blockcore::format::SnapshotParams;
    if !have_qemu() {
        return;
    }
    for opts in [
        "cluster_size=65536",
        "cluster_size=4096",
        "cluster_size=512",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        create_with_qemu(&ours, 4 * MIB, opts);
        create_with_qemu(&theirs, 4 * MIB, opts);
        enum Step {
            Snap(&'static str),
            Delete(&'static str),
            Write(u64, u64, u8),
        }
        let steps = [
            Step::Snap("a"),
            Step::Write(0, 4096, 1),
            Step::Write(200 * 1024, 70_000, 2),
            Step::Snap("b"),
            Step::Delete("a"),
            Step::Write(100, 1000, 3),
            Step::Write(3 * MIB + 7, 512, 4),
            Step::Snap("c"),
            Step::Write(210 * 1024, 100, 5),
            Step::Delete("b"),
            Step::Write(MIB, 65536, 6),
        ];
        for step in &steps {
            let mut q = open(&ours, false);
            match *step {
                Step::Snap(name) => {
                    let p = SnapshotParams {
                        name: name.as_bytes().to_vec(),
                        ..SnapshotParams::default()
                    };
                    q.snapshot_create(&p).unwrap();
                    qemu_img(&["snapshot", "-c", name, s(&theirs)]);
                }
                Step::Delete(name) => {
                    q.snapshot_delete(None, Some(name.as_bytes())).unwrap();
                    qemu_img(&["snapshot", "-d", name, s(&theirs)]);
                }
                Step::Write(off, len, p) => {
                    q.write(off, &vec![p; len as usize]).unwrap();
                    let cmd = format!("write -P {p} {off} {len}");
                    assert!(run("qemu-io", &["-c", &cmd, s(&theirs)]).0);
                }
            }
            q.close().unwrap();
        }
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        assert_same_host_layout(&ours, &theirs, opts);
    }
}

/// Growing an image as `qemu-img resize` grows it: the L1 table is replaced by one of exactly
/// the new length in the lowest free clusters, the old one freed, the header's size and L1
/// fields rewritten; the files are byte-identical, with and without internal snapshots (whose
/// L1 tables keep their size), and writes past the old size then land where `qemu-io` puts
/// them.
#[test]
fn grow_matches_qemu_img_resize_byte_for_byte() {
    if !have_qemu() {
        return;
    }
    for (opts, size, new_size, snapshot) in [
        ("cluster_size=65536", 4 * MIB, 4096 * MIB, false),
        ("cluster_size=512", MIB, 64 * MIB, false),
        ("cluster_size=512", MIB, 64 * MIB, true),
        (
            "cluster_size=4096,refcount_bits=2",
            3 * MIB,
            700 * MIB,
            true,
        ),
        ("cluster_size=65536", 512 * MIB, 513 * MIB, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        create_with_qemu(&base, size, opts);
        let fill = format!("write -P 0x31 {} 70000", size / 3);
        assert!(
            run(
                "qemu-io",
                &["-c", "write -P 0x30 0 5000", "-c", &fill, s(&base)]
            )
            .0
        );
        if snapshot {
            qemu_img(&["snapshot", "-c", "s1", s(&base)]);
            assert!(run("qemu-io", &["-c", "write -P 0x32 100 100", s(&base)]).0);
        }
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        std::fs::copy(&base, &ours).unwrap();
        std::fs::copy(&base, &theirs).unwrap();
        {
            let mut q = open(&ours, false);
            q.grow(new_size).unwrap();
            q.close().unwrap();
        }
        qemu_img(&["resize", s(&theirs), &new_size.to_string()]);
        let what = format!("{opts} {size} -> {new_size}, snapshot {snapshot}");
        assert_check_clean(&ours);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "after the resize: {what}"
        );
        // Writes past the old end, into L2 tables the old L1 table could not reach.
        let writes = [(size + 512, 3000u64, 0x41u8), (new_size - 4096, 4096, 0x42)];
        {
            let mut q = open(&ours, false);
            for (off, len, p) in writes {
                q.write(off, &vec![p; len as usize]).unwrap();
            }
            q.close().unwrap();
        }
        for (off, len, p) in writes {
            let cmd = format!("write -P {p} {off} {len}");
            assert!(run("qemu-io", &["-c", &cmd, s(&theirs)]).0);
        }
        assert_check_clean(&ours);
        assert_identical(&ours, &theirs);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "after writes past the old end: {what}"
        );
    }
}

/// Shrinking an image as `qemu-img resize --shrink` shrinks it: clusters past the new end are
/// freed (and discarded in the file), L2 tables an L1 entry past the new size pointed at are
/// freed (one allocated on the way where the range crossed an empty L1 entry), the file is cut
/// after its last used cluster and the header's size rewritten; the files are byte-identical
/// and hold their data in the same places, with and without an internal snapshot.
#[test]
fn shrink_matches_qemu_img_resize_byte_for_byte() {
    if !have_qemu() {
        return;
    }
    for (opts, size, writes, new_size, snapshot) in [
        (
            "cluster_size=65536",
            4 * MIB,
            vec![0, 3 * MIB],
            2 * MIB,
            false,
        ),
        ("cluster_size=65536", 4 * MIB, vec![0, MIB], 3 * MIB, false),
        ("cluster_size=512", 2 * MIB, vec![0, MIB + 4096], MIB, false),
        (
            "cluster_size=512",
            2 * MIB,
            vec![MIB / 2, MIB + 512],
            MIB,
            true,
        ),
        (
            "cluster_size=65536",
            1024 * MIB,
            vec![0, 700 * MIB, 1023 * MIB],
            3 * MIB / 2,
            false,
        ),
        ("cluster_size=65536", 1024 * MIB, vec![MIB], 2 * MIB, false),
        (
            "cluster_size=65536",
            1024 * MIB,
            vec![600 * MIB],
            2 * MIB,
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        create_with_qemu(&base, size, opts);
        for (i, off) in writes.iter().enumerate() {
            let cmd = format!("write -P {} {off} 70000", 0x30 + i);
            assert!(run("qemu-io", &["-c", &cmd, s(&base)]).0);
        }
        if snapshot {
            qemu_img(&["snapshot", "-c", "s1", s(&base)]);
        }
        let ours = dir.path().join("ours.qcow2");
        let theirs = dir.path().join("theirs.qcow2");
        std::fs::copy(&base, &ours).unwrap();
        std::fs::copy(&base, &theirs).unwrap();
        {
            let mut q = open(&ours, false);
            q.shrink(new_size).unwrap();
            q.close().unwrap();
        }
        qemu_img(&["resize", "--shrink", s(&theirs), &new_size.to_string()]);
        let what = format!("{opts} {size} -> {new_size}, writes {writes:?}, snapshot {snapshot}");
        assert_check_clean(&ours);
        assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "after the shrink: {what}"
        );
        assert_same_host_layout(&ours, &theirs, &what);
    }
}
