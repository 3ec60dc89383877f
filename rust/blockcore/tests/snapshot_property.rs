//! Property test (qcow2 v3 with 4/16/64-bit refcounts and v2): random sequences of guest writes (data, zeroes, discard), internal snapshots
//! (create, delete), external snapshots (new overlay appended, old layer reopened read-only),
//! persistent bitmaps and close/reopen keep every image clean for `qemu-img check`, the data
//! equal to a plain model of the disk, every internal snapshot equal to the disk when it was
//! taken (as QEMU reads it with `qemu-img convert -l`), and the bitmaps equal to a model of
//! the writes they saw, across reopens.
//!
//! Skips (printing why) when `qemu-img` is not installed.

#[allow(dead_code)] // each test binary uses a different subset
mod common;

use blockcore::format::qcow2::{Compat, CreateOptions, Qcow2};
use blockcore::format::SnapshotParams;
use blockcore::graph::{Graph, WriteKind};
use blockcore::storage::FileStorage;
use blockcore::units::Granularity;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

const SIZE: u64 = 256 * 1024;
const MAX_CHAIN: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: u64, byte: u8 },
    Zero { off: u64, len: u64, unmap: bool },
    Discard { off: u64, len: u64 },
    InternalSnapshot,
    DeleteSnapshot(usize),
    ExternalSnapshot,
    BitmapAdd { gran_bits: u32, enabled: bool },
    Reopen,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..SIZE).prop_flat_map(|off| {
        let max = (SIZE - off).min(80_000);
        (Just(off), 1..=max)
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (range(), any::<u8>()).prop_map(|((off, len), byte)| Op::Write { off, len, byte }),
        2 => (range(), any::<bool>()).prop_map(|((off, len), unmap)| Op::Zero { off, len, unmap }),
        2 => range().prop_map(|(off, len)| Op::Discard { off, len }),
        2 => Just(Op::InternalSnapshot),
        1 => (0..4usize).prop_map(Op::DeleteSnapshot),
        1 => Just(Op::ExternalSnapshot),
        1 => (12..17u32, any::<bool>()).prop_map(|(gran_bits, enabled)| Op::BitmapAdd { gran_bits, enabled }),
        1 => Just(Op::Reopen),
    ]
}

/// A persistent bitmap and the granules the model says it has seen written.
struct ModelBitmap {
    node: usize,
    name: String,
    gran: u64,
    enabled: bool,
    dirty: BTreeSet<u64>,
}

/// An internal snapshot: the image it is in, its id and the disk when it was taken.
struct ModelSnapshot {
    image: usize,
    id: String,
    disk: Vec<u8>,
}

struct World {
    dir: tempfile::TempDir,
    cluster: u64,
    compat: Compat,
    refcount_bits: u64,
    files: Vec<PathBuf>,
    /// What the backing node of the active image reads (frozen once it became read-only).
    backing_disk: Option<Vec<u8>>,
    g: Graph,
    disk: Vec<u8>,
    snaps: Vec<ModelSnapshot>,
    bitmaps: Vec<ModelBitmap>,
    clock: u64,
}

fn node(i: usize) -> String {
    format!("n{i}")
}

impl World {
    fn new(cluster: u64, compat: Compat, refcount_bits: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Self {
            dir,
            cluster,
            compat,
            refcount_bits,
            files: Vec::new(),
            backing_disk: None,
            g: Graph::new(),
            disk: vec![0; SIZE as usize],
            snaps: Vec::new(),
            bitmaps: Vec::new(),
            clock: 0,
        };
        w.new_image();
        w.open_node(0);
        w
    }

    fn active(&self) -> usize {
        self.files.len() - 1
    }

    /// Creates the next image of the chain, backed by the current top.
    fn new_image(&mut self) {
        let path = self
            .dir
            .path()
            .join(format!("img{}.qcow2", self.files.len()));
        let opts = CreateOptions {
            cluster_size: self.cluster,
            compat: self.compat,
            refcount_bits: self.refcount_bits,
            backing_file: self.files.last().map(|p| s(p).to_string()),
            backing_format: self.files.last().map(|_| "qcow2".to_string()),
            ..CreateOptions::new(SIZE)
        };
        Qcow2::create(Arc::new(FileStorage::create(&path).unwrap()), &opts).unwrap();
        self.files.push(path);
    }

    fn open_node(&mut self, i: usize) {
        let ro = i != self.active();
        let n = node(i);
        let file = format!("{n}-file");
        self.g.add_file(&file, s(&self.files[i]), ro).unwrap();
        self.g.add_format(&n, "qcow2", &file, ro).unwrap();
        if i > 0 {
            self.g.set_backing(&n, Some(&node(i - 1))).unwrap();
        }
    }

    fn mark(&mut self, off: u64, len: u64) {
        let active = self.active();
        for b in self
            .bitmaps
            .iter_mut()
            .filter(|b| b.node == active && b.enabled)
        {
            for c in off / b.gran..=(off + len - 1) / b.gran {
                b.dirty.insert(c);
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let top = node(self.active());
        match *op {
            Op::Write { off, len, byte } => {
                let data = vec![byte; len as usize];
                self.g
                    .write(&top, off, WriteKind::Data, &data, len)
                    .unwrap();
                self.disk[off as usize..(off + len) as usize].fill(byte);
                self.mark(off, len);
            }
            Op::Zero { off, len, unmap } => {
                let kind = if unmap {
                    WriteKind::Zeroes
                } else {
                    WriteKind::ZeroesNoUnmap
                };
                self.g.write(&top, off, kind, &[], len).unwrap();
                self.disk[off as usize..(off + len) as usize].fill(0);
                self.mark(off, len);
            }
            Op::Discard { off, len } => {
                self.g
                    .write(&top, off, WriteKind::Discard, &[], len)
                    .unwrap();
                // Whole clusters read as zeros afterwards; partial ones are left alone; v2 over
                // a backing cannot discard at all (no zero flag).
                let cs = self.cluster;
                let first = off.div_ceil(cs) * cs;
                let end = off + len;
                let last = if end == SIZE { end } else { end / cs * cs };
                let v2_backed = self.compat == Compat::V0_10 && self.backing_disk.is_some();
                if last > first && !v2_backed {
                    self.disk[first as usize..last as usize].fill(0);
                }
                self.mark(off, len);
            }
            Op::InternalSnapshot => {
                self.clock += 1;
                let p = SnapshotParams {
                    name: format!("s{}", self.clock).into_bytes(),
                    date_sec: self.clock as u32,
                    date_nsec: 0,
                    vm_clock_nsec: self.clock * 1000,
                    icount: None,
                };
                let e = self.g.snapshot_create(&top, &p).unwrap();
                let image = self.active();
                let max = self
                    .snaps
                    .iter()
                    .filter(|s| s.image == image)
                    .map(|s| s.id.parse::<u64>().unwrap())
                    .max()
                    .unwrap_or(0);
                assert_eq!(e.id, (max + 1).to_string(), "id = max + 1");
                self.snaps.push(ModelSnapshot {
                    image,
                    id: e.id,
                    disk: self.disk.clone(),
                });
            }
            Op::DeleteSnapshot(k) => {
                let image = self.active();
                let mine: Vec<usize> = (0..self.snaps.len())
                    .filter(|&i| self.snaps[i].image == image)
                    .collect();
                if let Some(&i) = mine.get(k % mine.len().max(1)) {
                    let id = self.snaps[i].id.clone();
                    let gone = self.g.snapshot_delete(&top, Some(&id), None).unwrap();
                    assert_eq!(gone.id, id);
                    self.snaps.remove(i);
                }
            }
            Op::ExternalSnapshot => {
                if self.files.len() >= MAX_CHAIN {
                    return;
                }
                let old = self.active();
                self.new_image();
                let new = self.active();
                let n = node(new);
                let file = format!("{n}-file");
                self.g.add_file(&file, s(&self.files[new]), false).unwrap();
                self.g.add_format(&n, "qcow2", &file, false).unwrap();
                self.g.append_overlay(&node(old), &n).unwrap();
                self.backing_disk = Some(self.disk.clone());
                assert!(self.g.reopen_read_only(&node(old)).unwrap().is_empty());
            }
            Op::BitmapAdd { gran_bits, enabled } => {
                if self.compat == Compat::V0_10 {
                    return; // QEMU: Cannot store dirty bitmaps in qcow2 v2 files
                }
                let name = format!("b{}", self.bitmaps.len());
                let gran = 1u64 << gran_bits;
                self.g
                    .bitmap_add(&top, &name, Granularity::new(gran).unwrap(), enabled, true)
                    .unwrap();
                self.bitmaps.push(ModelBitmap {
                    node: self.active(),
                    name,
                    gran,
                    enabled,
                    dirty: BTreeSet::new(),
                });
            }
            Op::Reopen => {
                let before = self.bitmap_sums();
                assert!(self.g.close_all().is_empty());
                self.g = Graph::new();
                for i in 0..self.files.len() {
                    self.open_node(i);
                }
                assert_eq!(
                    self.bitmap_sums(),
                    before,
                    "bitmaps survive close and reopen"
                );
            }
        }
    }

    fn bitmap_sums(&self) -> Vec<(String, String, u64)> {
        self.bitmaps
            .iter()
            .map(|b| {
                let bm = self.g.bitmap(&node(b.node), &b.name).unwrap();
                (b.name.clone(), bm.bits.sha256_hex(), bm.bits.count())
            })
            .collect()
    }

    fn check_model(&mut self) {
        let top = node(self.active());
        assert!(
            self.g.read(&top, 0, SIZE).unwrap() == self.disk,
            "disk differs"
        );
        for b in &self.bitmaps {
            let bm = self.g.bitmap(&node(b.node), &b.name).unwrap();
            let want: u64 = b.dirty.iter().map(|&c| b.gran.min(SIZE - c * b.gran)).sum();
            assert_eq!(bm.bits.count(), want, "bitmap {}", b.name);
        }
    }

    /// Closes everything and lets QEMU judge: `qemu-img check` of each image, each snapshot
    /// read back by `qemu-img convert -l`.
    fn check_with_qemu(mut self) {
        assert!(self.g.close_all().is_empty());
        // Dropping the graph closes the files and so releases their image locks.
        self.g = Graph::new();
        for f in &self.files {
            assert_check_clean(f);
        }
        let out = self.dir.path().join("snap.raw");
        for sn in &self.snaps {
            let img = &self.files[sn.image];
            qemu_img(&[
                "convert",
                "-f",
                "qcow2",
                "-O",
                "raw",
                "-l",
                &format!("snapshot.id={}", sn.id),
                s(img),
                s(&out),
            ]);
            let got = std::fs::read(&out).unwrap();
            assert!(
                got == sn.disk,
                "snapshot {} of image {} differs",
                sn.id,
                sn.image
            );
        }
        let top = self.files.last().unwrap();
        qemu_img(&["convert", "-f", "qcow2", "-O", "raw", s(top), s(&out)]);
        assert!(
            std::fs::read(&out).unwrap() == self.disk,
            "QEMU reads a different disk"
        );
    }
}

#[test]
fn random_snapshot_histories_stay_consistent() {
    if !have_qemu() {
        return;
    }
    let config = Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let format = prop_oneof![
        Just((Compat::V1_1, 16u64)),
        Just((Compat::V1_1, 4)),
        Just((Compat::V1_1, 64)),
        Just((Compat::V0_10, 16)),
    ];
    let strategy = (
        prop_oneof![Just(512u64), Just(4096), Just(65536)],
        format,
        proptest::collection::vec(op(), 1..30),
    );
    TestRunner::new(config)
        .run(&strategy, |(cluster, (compat, refcount_bits), ops)| {
            let mut w = World::new(cluster, compat, refcount_bits);
            for op in &ops {
                w.apply(op);
                w.check_model();
            }
            w.check_with_qemu();
            Ok(())
        })
        .unwrap();
}
