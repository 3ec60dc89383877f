//! Property test: a qcow2 image whose clusters we write compressed (zlib or zstd, what a
//! `compress: true` backup writes) is byte for byte the file `qemu-img convert -c` makes from
//! the same disk: the same deflate streams or zstd frames (the system's zlib and libzstd with
//! QEMU's parameters), packed at the same offsets, incompressible clusters written plain,
//! all-zero clusters left unallocated, the file's length rounded up to a sector as convert
//! leaves it.
//!
//! Skips (printing why) when `qemu-img` is not installed.

#[allow(dead_code)] // each test binary uses a different subset
mod common;

use blockcore::format::qcow2::Qcow2;
use blockcore::format::FormatDriver;
use blockcore::storage::FileStorage;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::Arc;

/// What one cluster of the source disk holds.
#[derive(Clone, Debug)]
enum Content {
    /// Every byte the same (0: the cluster is skipped by convert).
    Fill(u8),
    /// Text-like bytes: a repeated phrase perturbed every `period` bytes.
    Text { seed: u8, period: u16 },
    /// Incompressible noise (xorshift32 from `seed`, never 0).
    Noise(u32),
    /// Noise over an alphabet of `letters` bytes: compressible, but into many short symbols
    /// (so deflate's block boundaries, which `memLevel` sizes, matter).
    Letters { seed: u32, letters: u8 },
    /// Noise in the first `noisy` bytes, zeros after.
    PartNoise { seed: u32, noisy: u16 },
}

impl Content {
    fn bytes(&self, len: usize) -> Vec<u8> {
        let noise = |mut x: u32, n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect()
        };
        match *self {
            Content::Fill(b) => vec![b; len],
            Content::Text { seed, period } => (0..len)
                .map(|i| {
                    b"qcow2 compressed cluster "[i % 25] ^ seed ^ (i / usize::from(period)) as u8
                })
                .collect(),
            Content::Noise(seed) => noise(seed, len),
            Content::Letters { seed, letters } => noise(seed, len)
                .into_iter()
                .map(|b| b'a' + b % letters)
                .collect(),
            Content::PartNoise { seed, noisy } => {
                let mut v = noise(seed, (usize::from(noisy)).min(len));
                v.resize(len, 0);
                v
            }
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        2 => prop_oneof![Just(0u8), any::<u8>()].prop_map(Content::Fill),
        4 => (any::<u8>(), 1..4096u16).prop_map(|(seed, period)| Content::Text { seed, period }),
        1 => (1..u32::MAX).prop_map(Content::Noise),
        3 => (1..u32::MAX, 2..20u8).prop_map(|(seed, letters)| Content::Letters { seed, letters }),
        2 => (1..u32::MAX, 1..8192u16).prop_map(|(seed, noisy)| Content::PartNoise { seed, noisy }),
    ]
}

/// `(options, disk)`: qcow2 creation options, and the source disk's clusters (the last one
/// possibly cut short by the disk size).
fn case() -> impl Strategy<Value = (&'static str, Vec<Content>, u64)> {
    (
        prop_oneof![
            Just("compression_type=zlib"),
            Just("compression_type=zlib,cluster_size=4096"),
            Just("compression_type=zlib,cluster_size=512"),
            Just("compression_type=zstd,cluster_size=4096"),
        ],
        prop::collection::vec(content(), 1..12),
        0..512u64,
    )
}

#[test]
fn compressed_writes_equal_qemu_img_convert_c() {
    if !have_qemu() {
        return;
    }
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |(opts, clusters, cut)| {
            let dir = tempfile::tempdir().unwrap();
            let ours = dir.path().join("ours.qcow2");
            let theirs = dir.path().join("theirs.qcow2");
            let source = dir.path().join("source.raw");
            let cluster: u64 = opts
                .split(',')
                .find_map(|o| o.strip_prefix("cluster_size="))
                .map_or(65536, |v| v.parse().unwrap());
            // The disk ends `cut` sectors' worth of bytes before its last cluster's end, but
            // keeps at least one sector of it.
            let full = clusters.len() as u64 * cluster;
            let size = full - (cut * 512 % cluster);
            let mut disk = Vec::with_capacity(full as usize);
            for c in &clusters {
                disk.extend(c.bytes(cluster as usize));
            }
            disk.truncate(size as usize);
            std::fs::write(&source, &disk).unwrap();
            let co = format!("-o{opts}");
            qemu_img(&[
                "convert",
                "-q",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                &co,
                s(&source),
                s(&theirs),
            ]);
            create_with_qemu(&ours, size, opts);
            {
                let st = Arc::new(FileStorage::open(&ours, false).unwrap());
                let mut q = Qcow2::open(st, false).unwrap();
                for (k, chunk) in disk.chunks(cluster as usize).enumerate() {
                    if chunk.iter().all(|&b| b == 0) {
                        continue;
                    }
                    q.write_compressed(k as u64 * cluster, chunk).unwrap();
                }
                q.close().unwrap();
            }
            // convert ends with an empty compressed write, which rounds the file's length up
            // to a whole sector (the tool's step, not the driver's: a backup does not do it).
            let file = std::fs::OpenOptions::new().write(true).open(&ours).unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len.div_ceil(512) * 512).unwrap();
            assert_check_clean(&ours);
            assert_identical(&ours, &theirs);
            prop_assert!(
                std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
                "{opts}: files differ"
            );
            Ok(())
        })
        .unwrap();
}
