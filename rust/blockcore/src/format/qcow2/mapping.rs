//! Mapping guest clusters to host clusters: the L1 table, L2 tables and what an L2 entry means.
//!
//! The active L1 table is kept in memory whole and written through (only the entries that
//! changed); L2 tables live in the write-back metadata cache ([`MetaCache`]). Standard (not
//! extended) L2 entries only.

use super::cache::MetaCache;
use super::units::{Geometry, GuestOffset, HostOffset};
use crate::format::FormatError;
use crate::storage::Storage;

/// L1 entry bits 9..=55: host offset of the L2 table.
pub const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry bits 9..=55: host offset of the data cluster (standard clusters).
pub const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63 of L1 and L2 entries, `QCOW_OFLAG_COPIED`: the refcount of what the entry points at
/// is exactly 1, so it may be written in place.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: the cluster is compressed.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Bit 0 of standard L2 entries (v3): the cluster reads as zeros.
pub const OFLAG_ZERO: u64 = 1;

/// What one L2 entry says about one guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterKind {
    /// Not allocated here: read from the backing file, or zeros without one.
    Unallocated,
    /// Reads as zeros, no host cluster (zero flag, offset 0).
    ZeroPlain,
    /// Reads as zeros, host cluster preallocated (zero flag with an offset).
    ZeroAlloc {
        /// The preallocated host cluster.
        host: HostOffset,
        /// `QCOW_OFLAG_COPIED`.
        copied: bool,
    },
    /// Data in a host cluster.
    Normal {
        /// The host cluster.
        host: HostOffset,
        /// `QCOW_OFLAG_COPIED`.
        copied: bool,
    },
    /// Compressed data somewhere in the file.
    Compressed {
        /// Host offset of the compressed bytes (not aligned).
        host: u64,
        /// Bytes the compressed data may span (whole 512-byte sectors from `host`).
        size: u64,
    },
}

impl ClusterKind {
    /// Decodes a standard L2 entry.
    pub fn decode(entry: u64, geo: Geometry) -> Self {
        if entry & OFLAG_COMPRESSED != 0 {
            let shift = 62 - (geo.cluster_bits - 8);
            let host = entry & ((1u64 << shift) - 1);
            let sectors = ((entry >> shift) & ((1u64 << (geo.cluster_bits - 8)) - 1)) + 1;
            return ClusterKind::Compressed {
                host,
                size: sectors * 512 - (host & 511),
            };
        }
        let host = HostOffset(entry & L2E_OFFSET_MASK);
        let copied = entry & OFLAG_COPIED != 0;
        match (entry & OFLAG_ZERO != 0, host.0 != 0) {
            (true, false) => ClusterKind::ZeroPlain,
            (true, true) => ClusterKind::ZeroAlloc { host, copied },
            (false, true) => ClusterKind::Normal { host, copied },
            (false, false) => ClusterKind::Unallocated,
        }
    }

    /// Whether the entry holds host clusters (QEMU's `qcow2_cluster_is_allocated`).
    pub fn is_allocated(self) -> bool {
        matches!(
            self,
            ClusterKind::Normal { .. }
                | ClusterKind::ZeroAlloc { .. }
                | ClusterKind::Compressed { .. }
        )
    }

    /// The host bytes this entry holds a reference to, if any: `(offset, length)`.
    pub fn host_extent(self, geo: Geometry) -> Option<(u64, u64)> {
        match self {
            ClusterKind::Normal { host, .. } | ClusterKind::ZeroAlloc { host, .. } => {
                Some((host.0, geo.cluster_size()))
            }
            ClusterKind::Compressed { host, size } => Some((host, size)),
            _ => None,
        }
    }
}

/// The active L1 table.
#[derive(Debug)]
pub struct Mapping {
    geo: Geometry,
    /// `l1_table_offset`.
    pub l1_offset: HostOffset,
    /// The active L1 table (`l1_size` raw entries).
    pub l1: Vec<u64>,
}

impl Mapping {
    /// Reads the active L1 table.
    pub fn load(
        storage: &dyn Storage,
        geo: Geometry,
        l1_offset: u64,
        l1_size: u32,
    ) -> Result<Self, FormatError> {
        let bytes = u64::from(l1_size) * 8;
        if bytes > super::header::MAX_L1_BYTES {
            return Err(FormatError::Corrupt("Active L1 table too large".into()));
        }
        if l1_size > 0 && (!geo.is_aligned(l1_offset) || l1_offset == 0) {
            return Err(FormatError::Corrupt(
                "Active L1 table offset invalid".into(),
            ));
        }
        let mut raw = vec![0u8; bytes as usize];
        storage.read_at(&mut raw, l1_offset)?;
        let l1 = raw
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes(e.try_into().expect("8 bytes")))
            .collect();
        Ok(Self {
            geo,
            l1_offset: HostOffset(l1_offset),
            l1,
        })
    }

    /// The L2 table offset in L1 entry `index` and its COPIED flag; `None` if unallocated.
    pub fn l2_offset(&self, index: u64) -> Result<Option<(u64, bool)>, FormatError> {
        let Some(&e) = self.l1.get(index as usize) else {
            return Ok(None);
        };
        let off = e & L1E_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !self.geo.is_aligned(off) {
            return Err(FormatError::Corrupt(format!(
                "L2 table offset {off:#x} unaligned (L1 index: {index:#x})"
            )));
        }
        Ok(Some((off, e & OFLAG_COPIED != 0)))
    }

    /// Switches to a new active L1 table (already written at `offset`).
    pub fn replace_l1(&mut self, offset: u64, table: Vec<u64>) {
        self.l1_offset = HostOffset(offset);
        self.l1 = table;
    }

    /// Sets L1 entry `index` and writes it through.
    pub fn set_l1(
        &mut self,
        storage: &dyn Storage,
        index: u64,
        entry: u64,
    ) -> Result<(), FormatError> {
        self.l1[index as usize] = entry;
        storage.write_at(&entry.to_be_bytes(), self.l1_offset.0 + 8 * index)?;
        Ok(())
    }

    /// The kind of the cluster holding guest offset `off`, validating data offsets.
    pub fn lookup(
        &self,
        cache: &mut MetaCache,
        storage: &dyn Storage,
        off: GuestOffset,
    ) -> Result<ClusterKind, FormatError> {
        let l1i = self.geo.l1_index(off);
        let Some((l2, _)) = self.l2_offset(l1i)? else {
            return Ok(ClusterKind::Unallocated);
        };
        let i = self.geo.l2_index(off);
        let e = cache.l2_range(storage, l2, i, 1)?[i];
        check_entry(e, self.geo, l2, i)
    }
}

impl Mapping {
    /// QEMU's qcow2 block status at guest offset `off`: the kind of its cluster and how many
    /// bytes from `off` (at most `len`) share it. A run ends where the cluster kind changes
    /// (normal, zero with a host cluster, plain zero, unallocated), where the host clusters of
    /// normal or zero-allocated clusters stop being contiguous, and at the end of the L2 cache
    /// entry the lookup covers (QEMU's L2 slice: the whole table by default); a
    /// compressed cluster is a run of its own, and a range without an L2 table is unallocated
    /// up to that entry's end too (`qcow2_get_host_offset`, `count_contiguous_subclusters`).
    pub fn status_run(
        &self,
        cache: &mut MetaCache,
        storage: &dyn Storage,
        off: GuestOffset,
        len: u64,
    ) -> Result<(ClusterKind, u64), FormatError> {
        let geo = self.geo;
        let cs = geo.cluster_size();
        let in_cluster = geo.in_cluster(off);
        let first = geo.l2_index(off) as u64;
        // A run ends with the L2 cache entry holding `first`: the table, or its slice.
        let slice = cache.l2_slice_entries() as u64;
        let available = (slice - first % slice) * cs;
        let needed = (len + in_cluster).min(available);
        let Some((l2, _)) = self.l2_offset(geo.l1_index(off))? else {
            return Ok((ClusterKind::Unallocated, needed - in_cluster));
        };
        let nb = needed.div_ceil(cs).max(1);
        let table = cache.l2_range(storage, l2, first as usize, nb as usize)?;
        let entries = &table[first as usize..(first + nb) as usize];
        let kind = check_entry(entries[0], geo, l2, first as usize)?;
        if matches!(kind, ClusterKind::Compressed { .. }) {
            return Ok((kind, (cs - in_cluster).min(len)));
        }
        let mut count = 1u64;
        for (i, &e) in entries.iter().enumerate().skip(1) {
            // Later entries are compared, not validated: a bad offset ends the run.
            let next = ClusterKind::decode(e, geo);
            let same = match (kind, next) {
                (ClusterKind::Normal { host: a, .. }, ClusterKind::Normal { host: b, .. })
                | (
                    ClusterKind::ZeroAlloc { host: a, .. },
                    ClusterKind::ZeroAlloc { host: b, .. },
                ) => b.0 == a.0 + i as u64 * cs,
                (ClusterKind::ZeroPlain, ClusterKind::ZeroPlain)
                | (ClusterKind::Unallocated, ClusterKind::Unallocated) => true,
                _ => false,
            };
            if !same {
                break;
            }
            count += 1;
        }
        Ok((kind, (count * cs).min(needed) - in_cluster))
    }
}

/// Decodes an L2 entry, refusing unaligned data offsets as QEMU does.
pub fn check_entry(e: u64, geo: Geometry, l2: u64, i: usize) -> Result<ClusterKind, FormatError> {
    let kind = ClusterKind::decode(e, geo);
    if let ClusterKind::Normal { host, .. } | ClusterKind::ZeroAlloc { host, .. } = kind {
        if !geo.is_aligned(host.0) {
            return Err(FormatError::Corrupt(format!(
                "Cluster allocation offset {:#x} unaligned (L2 offset: {l2:#x}, L2 index: {i:#x})",
                host.0
            )));
        }
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: Geometry = Geometry {
        cluster_bits: 16,
        refcount_order: 4,
    };

    #[test]
    fn decode_entries_by_flags() {
        assert_eq!(ClusterKind::decode(0, GEO), ClusterKind::Unallocated);
        assert_eq!(ClusterKind::decode(1, GEO), ClusterKind::ZeroPlain);
        assert_eq!(
            ClusterKind::decode(OFLAG_COPIED | 0x50000, GEO),
            ClusterKind::Normal {
                host: HostOffset(0x50000),
                copied: true
            }
        );
        assert_eq!(
            ClusterKind::decode(0x60000 | 1, GEO),
            ClusterKind::ZeroAlloc {
                host: HostOffset(0x60000),
                copied: false
            }
        );
    }

    use crate::format::qcow2::{CreateOptions, Qcow2};
    use crate::format::{FormatDriver, NoBacking, RunKind, StatusRun};
    use crate::storage::MemStorage;
    use std::sync::Arc;

    const K64: u64 = 65536;

    fn image(size: u64, cluster_size: u64) -> Qcow2 {
        let st = Arc::new(MemStorage::new());
        let opts = CreateOptions {
            cluster_size,
            ..CreateOptions::new(size)
        };
        Qcow2::create(st.clone(), &opts).unwrap();
        Qcow2::open(st, false).unwrap()
    }

    fn run(kind: RunKind, len: u64) -> StatusRun {
        StatusRun::new(kind, len)
    }

    #[test]
    fn status_run_compressed_clusters_one_at_a_time() {
        let mut q = image(4 << 20, K64);
        q.write_compressed(0, &vec![0x11; 2 * K64 as usize])
            .unwrap();
        assert_eq!(
            q.block_status(true, 0, 1 << 20).unwrap(),
            run(RunKind::Data, K64)
        );
        assert_eq!(
            q.block_status(true, K64, 1 << 20).unwrap(),
            run(RunKind::Data, K64)
        );
        // From inside the cluster: to its end.
        assert_eq!(
            q.block_status(true, 100, 1 << 20).unwrap(),
            run(RunKind::Data, K64 - 100)
        );
    }

    #[test]
    fn status_run_ends_where_host_clusters_stop_being_contiguous() {
        let mut q = image(4 << 20, K64);
        q.write(K64, &[0x11; K64 as usize]).unwrap();
        q.write(0, &[0x12; K64 as usize]).unwrap();
        q.write(2 * K64, &[0x13; 2 * K64 as usize]).unwrap();
        assert_eq!(
            q.block_status(true, 0, 1 << 20).unwrap(),
            run(RunKind::Data, K64)
        );
        // 64k was allocated first, 128k..256k right after 0: one run from 128k only.
        assert_eq!(
            q.block_status(true, K64, 1 << 20).unwrap(),
            run(RunKind::Data, K64)
        );
        assert_eq!(
            q.block_status(true, 2 * K64, 1 << 20).unwrap(),
            run(RunKind::Data, 2 * K64)
        );
        assert_eq!(
            q.block_status(true, 4 * K64, 1 << 20).unwrap(),
            run(RunKind::Unallocated, 1 << 20)
        );
    }

    #[test]
    fn status_run_ends_between_zero_kinds_and_at_the_request_end() {
        let mut q = image(4 << 20, K64);
        q.write(0, &[0x11; K64 as usize]).unwrap();
        q.write_zeroes_backed(0, K64, &mut NoBacking, false)
            .unwrap();
        q.write_zeroes_backed(K64, K64, &mut NoBacking, false)
            .unwrap();
        assert_eq!(
            q.block_status(true, 0, 1 << 20).unwrap(),
            run(RunKind::Zero, K64)
        );
        assert_eq!(
            q.block_status(true, K64, 1 << 20).unwrap(),
            run(RunKind::Zero, K64)
        );
        assert_eq!(
            q.block_status(true, K64, 1000).unwrap(),
            run(RunKind::Zero, 1000)
        );
        // At the image end the run stops there.
        assert_eq!(
            q.block_status(true, (4 << 20) - 4096, 1 << 20).unwrap(),
            run(RunKind::Unallocated, 4096)
        );
    }

    #[test]
    fn status_run_ends_at_the_l2_table_end() {
        // 512-byte clusters: one L2 table maps 64 clusters, 32 KiB.
        let mut q = image(1 << 20, 512);
        assert_eq!(
            q.block_status(true, 1000, 1 << 20).unwrap(),
            run(RunKind::Unallocated, 32768 - 1000)
        );
        q.write(0, &[0x11; 65536]).unwrap();
        let first = q.block_status(true, 0, 1 << 20).unwrap();
        assert_eq!(first.kind, RunKind::Data);
        assert!(first.len <= 32768, "{first:?}");
        let second = q.block_status(true, 32768, 1 << 20).unwrap();
        assert_eq!(second.kind, RunKind::Data);
        assert!(second.len <= 32768, "{second:?}");
    }

    #[test]
    fn decode_compressed_entry_spans_sectors() {
        // 64 KiB clusters: offset in bits 0..=53, additional sectors in bits 54..=61.
        let e = OFLAG_COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            ClusterKind::decode(e, GEO),
            ClusterKind::Compressed {
                host: 0x12345,
                size: 4 * 512 - 0x145
            }
        );
    }
}
