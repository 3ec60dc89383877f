//! Property test: random histories of guest writes, internal snapshots (create, delete),
//! growing the image (the L1 table replaced by a longer one, the old one freed) and reopens
//! keep the image clean for `qemu-img check`, the data equal to a plain model of the disk
//! (new space reads as zeros), and every internal snapshot equal to the disk when it was taken
//! (as QEMU reads it with `qemu-img convert -l`: at the image's current size, zeros past the
//! snapshot's own).
//!
//! Skips (printing why) when `qemu-img` is not installed.

#[allow(dead_code)] // each test binary uses a different subset
mod common;

use blockcore::format::qcow2::Qcow2;
use blockcore::format::{FormatDriver, FormatError, SnapshotParams};
use blockcore::storage::FileStorage;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
enum Op {
    /// A write at `at` (a fraction of the current size, in 1/1000) of `len` bytes.
    Write {
        at: u64,
        len: u64,
        byte: u8,
    },
    /// Grow by `sectors` 512-byte sectors.
    Grow {
        sectors: u64,
    },
    Snapshot,
    DeleteSnapshot(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..1000, 1u64..20_000, 1u8..=255).prop_map(|(at, len, byte)| Op::Write { at, len, byte }),
        2 => (1u64..8192).prop_map(|sectors| Op::Grow { sectors }),
        1 => Just(Op::Snapshot),
        1 => (0usize..4).prop_map(Op::DeleteSnapshot),
        1 => Just(Op::Reopen),
    ]
}

struct Snap {
    name: String,
    disk: Vec<u8>,
}

struct World {
    dir: tempfile::TempDir,
    path: PathBuf,
    v2: bool,
    q: Option<Qcow2>,
    disk: Vec<u8>,
    snaps: Vec<Snap>,
    next: u32,
}

impl World {
    fn new(cluster: u64, v2: bool, size: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.qcow2");
        let compat = if v2 { "0.10" } else { "1.1" };
        create_with_qemu(
            &path,
            size,
            &format!("cluster_size={cluster},compat={compat}"),
        );
        let q = Some(Self::open(&path));
        Self {
            dir,
            path,
            v2,
            q,
            disk: vec![0; size as usize],
            snaps: Vec::new(),
            next: 0,
        }
    }

    fn open(path: &PathBuf) -> Qcow2 {
        Qcow2::open(Arc::new(FileStorage::open(path, false).unwrap()), false).unwrap()
    }

    fn q(&mut self) -> &mut Qcow2 {
        self.q.as_mut().expect("open")
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { at, len, byte } => {
                let size = self.disk.len() as u64;
                let off = size * at / 1000;
                let len = len.min(size - off);
                if len == 0 {
                    return;
                }
                self.q().write(off, &vec![byte; len as usize]).unwrap();
                self.disk[off as usize..(off + len) as usize].fill(byte);
            }
            Op::Grow { sectors } => {
                let new = self.disk.len() as u64 + sectors * 512;
                let r = self.q().grow(new);
                if self.v2 && !self.snaps.is_empty() {
                    assert!(matches!(r, Err(FormatError::Unsupported(_))), "{r:?}");
                } else {
                    r.unwrap();
                    self.disk.resize(new as usize, 0);
                }
            }
            Op::Snapshot => {
                let name = format!("s{}", self.next);
                self.next += 1;
                let p = SnapshotParams {
                    name: name.as_bytes().to_vec(),
                    ..SnapshotParams::default()
                };
                self.q().snapshot_create(&p).unwrap();
                let disk = self.disk.clone();
                self.snaps.push(Snap { name, disk });
            }
            Op::DeleteSnapshot(i) => {
                if self.snaps.is_empty() {
                    return;
                }
                let sn = self.snaps.remove(i % self.snaps.len());
                let name = sn.name.into_bytes();
                assert!(self
                    .q()
                    .snapshot_delete(None, Some(&name))
                    .unwrap()
                    .is_some());
            }
            Op::Reopen => {
                self.q.take().expect("open").close().unwrap();
                self.q = Some(Self::open(&self.path));
            }
        }
    }

    fn check_model(&mut self) {
        let mut got = vec![0u8; self.disk.len()];
        let q = self.q.as_mut().expect("open");
        assert_eq!(q.virtual_size(), self.disk.len() as u64);
        q.read(0, &mut got).unwrap();
        assert!(got == self.disk, "our reads differ from the model");
    }

    fn check_with_qemu(mut self) {
        self.q.take().expect("open").close().unwrap();
        assert_check_clean(&self.path);
        let out = self.dir.path().join("out.raw");
        for sn in &self.snaps {
            let l = format!("snapshot.name={}", sn.name);
            let args = ["convert", "-f", "qcow2", "-O", "raw", "-l", &l];
            let mut a = args.to_vec();
            a.extend([s(&self.path), s(&out)]);
            qemu_img(&a);
            // QEMU reads a snapshot at the image's current size: zeros past its own.
            let mut want = sn.disk.clone();
            want.resize(self.disk.len(), 0);
            assert!(std::fs::read(&out).unwrap() == want, "snapshot {}", sn.name);
        }
        qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            s(&self.path),
            s(&out),
        ]);
        assert!(
            std::fs::read(&out).unwrap() == self.disk,
            "QEMU reads a different disk"
        );
    }
}

#[test]
fn random_histories_with_growth_stay_consistent() {
    if !have_qemu() {
        return;
    }
    let config = Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        prop_oneof![Just(512u64), Just(1024), Just(4096)],
        prop_oneof![4 => Just(false), 1 => Just(true)],
        1u64..256,
        proptest::collection::vec(op(), 1..25),
    );
    TestRunner::new(config)
        .run(&strategy, |(cluster, v2, sectors, ops)| {
            let mut w = World::new(cluster, v2, sectors * 512);
            for op in &ops {
                w.apply(op);
                w.check_model();
            }
            w.check_with_qemu();
            Ok(())
        })
        .unwrap();
}
