//! Backups checked by real QEMU tools: the target of a backup taken while the guest writes is
//! `qemu-img compare`-equal to a copy of the source made when the job started, and `qemu-img
//! check` finds it clean, plain and compressed; compressed clusters written by `qemu-img
//! convert -c` read back right.
//!
//! Every test skips (printing why) when `qemu-img` is not installed.

use blockcore::graph::{Graph, WriteKind};
use blockcore::job::backup::{BackupParams, SyncMode};
use std::path::Path;
use std::process::Command;

const K64: u64 = 65536;
const MIB: u64 = 1 << 20;

fn have_qemu() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: qemu-img not found");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn qemu_img(args: &[&str]) -> String {
    let (ok, text) = run("qemu-img", args);
    assert!(ok, "qemu-img {args:?} failed: {text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Guest data that deflate can shrink (so compressed clusters really get written).
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 64) as u8).wrapping_mul(seed as u8 | 1))
        .collect()
}

fn open(g: &mut Graph, name: &str, path: &Path) {
    g.add_file(&format!("{name}-file"), s(path), false).unwrap();
    g.add_format(name, "qcow2", &format!("{name}-file"), false)
        .unwrap();
}

fn backup_under_writes(compress: bool) {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.qcow2");
    let snap = dir.path().join("snap.qcow2");
    let tgt = dir.path().join("tgt.qcow2");
    let size = 8 * MIB;
    qemu_img(&["create", "-q", "-f", "qcow2", s(&src), "8M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", s(&tgt), "8M"]);
    let mut g = Graph::new();
    open(&mut g, "src", &src);
    g.add_backend("drv0", Some("src")).unwrap();
    open(&mut g, "tgt", &tgt);
    for k in 0..40u64 {
        let off = (k * 7919 * 4096) % (size - 3 * K64);
        let data = pattern(k, 3 * K64 / 2);
        g.write("src", off, WriteKind::Data, &data, data.len() as u64)
            .unwrap();
    }
    g.flush("src").unwrap();
    std::fs::copy(&src, &snap).unwrap();

    let mut p = BackupParams::new("j", "src", "tgt", SyncMode::Full, "cbw");
    p.compress = compress;
    p.speed = 4 * MIB;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    let mut k = 0u64;
    while g.job("j").is_some() {
        // Guest writes through the device between rate-limited chunks.
        let root = g.backend("drv0").unwrap().root.clone().unwrap();
        let off = (k * 104_729 * 512) % (size - K64);
        let data = pattern(k + 100, K64 / 2 + 512);
        g.write(&root, off, WriteKind::Data, &data, data.len() as u64)
            .unwrap();
        g.advance(25_000_000);
        k += 1;
        assert!(k < 10_000, "backup never finished");
    }
    assert!(
        k > 5,
        "the job was not held by its speed long enough to test much"
    );
    g.close_all();
    drop(g);
    qemu_img(&["check", "-q", s(&tgt)]);
    qemu_img(&["compare", "-q", s(&snap), s(&tgt)]);
    let (same, _) = run("qemu-img", &["compare", "-q", s(&src), s(&tgt)]);
    assert!(!same, "the guest writes did not change the source");
    let map = qemu_img(&["map", "--output=json", s(&tgt)]);
    assert_eq!(
        map.contains("\"compressed\": true"),
        compress,
        "compressed clusters in the target: {map}"
    );
}

#[test]
fn backup_target_is_the_point_in_time_image() {
    backup_under_writes(false);
}

#[test]
fn compressed_backup_target_is_clean_and_equal() {
    backup_under_writes(true);
}

#[test]
fn reads_clusters_qemu_compressed() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.qcow2");
    let packed = dir.path().join("packed.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&plain), "4M"]);
    let mut g = Graph::new();
    open(&mut g, "p", &plain);
    let data = pattern(3, 3 * MIB);
    g.write("p", 4096, WriteKind::Data, &data, data.len() as u64)
        .unwrap();
    g.close_all();
    drop(g);
    qemu_img(&["convert", "-c", "-O", "qcow2", s(&plain), s(&packed)]);
    let mut g = Graph::new();
    open(&mut g, "c", &packed);
    assert_eq!(g.read("c", 4096, data.len() as u64).unwrap(), data);
    // A partial overwrite of a compressed cluster keeps the rest of it.
    g.write("c", 4096 + 100, WriteKind::Data, &[0xEE; 10], 10)
        .unwrap();
    let back = g.read("c", 4096, 200).unwrap();
    assert_eq!(&back[..100], &data[..100]);
    assert_eq!(&back[100..110], &[0xEE; 10]);
    assert_eq!(&back[110..], &data[110..200]);
    g.close_all();
    drop(g);
    qemu_img(&["check", "-q", s(&packed)]);
}
