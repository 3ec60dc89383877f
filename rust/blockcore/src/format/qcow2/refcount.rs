//! Refcounts: the refcount table, refcount blocks, and reading and changing one cluster's count.
//!
//! Every host cluster (metadata included) has a reference count stored in a refcount block; the
//! refcount table lists the blocks. Entries are `refcount_bits` wide (1..=64, `1 << refcount_order`),
//! big-endian from 8 bits up, packed low bit first below 8 bits. Blocks live in the write-back
//! metadata cache ([`MetaCache`], which holds the L2 tables too, as their write-back is ordered
//! against each other); the refcount table is written through. Allocation (finding free
//! clusters, creating blocks, growing the table) lives in `alloc.rs`.

use super::cache::MetaCache;
use super::units::{Geometry, HostCluster, HostOffset};
use crate::format::FormatError;
use crate::storage::Storage;

/// Refcount table entries: bits 9..=63 are the block offset, bits 0..=8 are reserved.
pub const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;

/// Reads refcount entry `i` of a block.
pub fn get_entry(block: &[u8], i: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 >> order;
            let byte = block[i / per_byte];
            u64::from((byte >> ((i % per_byte) * bits)) & ((1u16 << bits) - 1) as u8)
        }
        3 => u64::from(block[i]),
        4 => u64::from(u16::from_be_bytes([block[2 * i], block[2 * i + 1]])),
        5 => u64::from(u32::from_be_bytes(
            block[4 * i..4 * i + 4].try_into().expect("4 bytes"),
        )),
        _ => u64::from_be_bytes(block[8 * i..8 * i + 8].try_into().expect("8 bytes")),
    }
}

/// Sets refcount entry `i` of a block; returns the byte range that changed.
pub fn set_entry(block: &mut [u8], i: usize, order: u32, value: u64) -> (usize, usize) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 >> order;
            let shift = (i % per_byte) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            let at = i / per_byte;
            block[at] = (block[at] & !mask) | (((value as u8) << shift) & mask);
            (at, 1)
        }
        3 => {
            block[i] = value as u8;
            (i, 1)
        }
        4 => {
            block[2 * i..2 * i + 2].copy_from_slice(&(value as u16).to_be_bytes());
            (2 * i, 2)
        }
        5 => {
            block[4 * i..4 * i + 4].copy_from_slice(&(value as u32).to_be_bytes());
            (4 * i, 4)
        }
        _ => {
            block[8 * i..8 * i + 8].copy_from_slice(&value.to_be_bytes());
            (8 * i, 8)
        }
    }
}

/// The refcount structures of an open image.
#[derive(Debug)]
pub struct Refcounts {
    /// Cluster geometry and refcount width.
    pub geo: Geometry,
    /// `refcount_table_offset`.
    pub table_offset: HostOffset,
    /// The refcount table (`refcount_table_clusters` clusters of 8-byte entries), offsets only.
    pub table: Vec<u64>,
    /// The metadata cache: refcount blocks, and the L2 tables [`Mapping`](super::mapping::Mapping)
    /// works on.
    pub cache: MetaCache,
    /// Where the next search for a free cluster starts (QEMU's `free_cluster_index`): lowered when
    /// a cluster's refcount drops to zero, advanced past every cluster a search looks at.
    pub free_cluster_index: u64,
    /// While set, every cluster whose refcount drops to zero is recorded here, so the caller
    /// can pass the discard down to the file (QEMU's `pass-discard-snapshot`, on by default).
    pub discard_log: Option<Vec<u64>>,
}

impl Refcounts {
    /// Reads the refcount table; the metadata cache is sized for a disk of `virtual_size`.
    pub fn load(
        storage: &dyn Storage,
        geo: Geometry,
        table_offset: u64,
        table_clusters: u32,
        virtual_size: u64,
    ) -> Result<Self, FormatError> {
        let bytes = u64::from(table_clusters) * geo.cluster_size();
        if bytes > super::header::MAX_REFTABLE_BYTES {
            return Err(FormatError::Corrupt(
                "Reference count table too large".into(),
            ));
        }
        if !geo.is_aligned(table_offset) || table_offset == 0 {
            return Err(FormatError::Corrupt(
                "Reference count table offset invalid".into(),
            ));
        }
        let mut raw = vec![0u8; bytes as usize];
        storage.read_at(&mut raw, table_offset)?;
        let table = raw
            .chunks_exact(8)
            .map(|e| u64::from_be_bytes(e.try_into().expect("8 bytes")) & REFT_OFFSET_MASK)
            .collect();
        Ok(Self {
            geo,
            table_offset: HostOffset(table_offset),
            table,
            cache: MetaCache::new(geo, virtual_size),
            free_cluster_index: 0,
            discard_log: None,
        })
    }

    /// `refcount_table_clusters` of the current table.
    pub fn table_clusters(&self) -> u32 {
        (self.table.len() as u64 * 8 / self.geo.cluster_size()) as u32
    }

    /// Index of the refcount table entry covering a cluster, and the index within the block.
    pub fn locate(&self, c: HostCluster) -> (usize, usize) {
        let shift = self.geo.refblock_shift();
        ((c.0 >> shift) as usize, (c.0 & ((1 << shift) - 1)) as usize)
    }

    /// The refcount block at `offset`, read on a miss.
    pub(super) fn block(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
    ) -> Result<&mut Vec<u8>, FormatError> {
        self.cache.refblock(storage, offset)
    }

    fn block_offset(&self, rt_index: usize) -> Result<Option<u64>, FormatError> {
        let Some(&off) = self.table.get(rt_index) else {
            return Ok(None);
        };
        if off == 0 {
            return Ok(None);
        }
        if !self.geo.is_aligned(off) {
            return Err(FormatError::Corrupt(format!(
                "Refblock offset {off:#x} unaligned (reftable index: {rt_index:#x})"
            )));
        }
        Ok(Some(off))
    }

    /// The refcount of a cluster (0 for clusters no block covers).
    pub fn get(&mut self, storage: &dyn Storage, c: HostCluster) -> Result<u64, FormatError> {
        let (rt, i) = self.locate(c);
        let Some(off) = self.block_offset(rt)? else {
            return Ok(0);
        };
        let order = self.geo.refcount_order;
        Ok(get_entry(self.block(storage, off)?, i, order))
    }

    /// Whether the cluster's refcount block exists.
    pub fn is_covered(&self, c: HostCluster) -> bool {
        let (rt, _) = self.locate(c);
        self.table.get(rt).is_some_and(|&o| o != 0)
    }

    /// Adds `delta` to the refcounts of clusters `[start, start + n)` in the cached blocks (marked
    /// dirty). The blocks must exist (allocation creates them first). A drop makes the blocks
    /// wait for the L2 tables; a table whose refcount reaches zero leaves the cache unwritten.
    pub fn update_range(
        &mut self,
        storage: &dyn Storage,
        start: HostCluster,
        n: u64,
        delta: i64,
    ) -> Result<(), FormatError> {
        let order = self.geo.refcount_order;
        let max = self.geo.max_refcount();
        let mut c = start.0;
        let end = start.0 + n;
        if delta < 0 {
            self.cache.refblocks_after_l2(storage)?;
        }
        while c < end {
            let (rt, first) = self.locate(HostCluster(c));
            let in_block = (self.geo.refblock_entries() - first as u64).min(end - c);
            let Some(off) = self.block_offset(rt)? else {
                return Err(FormatError::Corrupt(format!(
                    "refcount block for cluster {c} is missing"
                )));
            };
            let mut lowest_freed = None;
            let mut freed = Vec::new();
            let block = self.block(storage, off)?;
            for k in 0..in_block as usize {
                let old = get_entry(block, first + k, order);
                let new = old
                    .checked_add_signed(delta)
                    .filter(|&v| v <= max)
                    .ok_or_else(|| {
                        FormatError::Corrupt(format!(
                            "refcount of cluster {} would become invalid ({old} {delta:+})",
                            c + k as u64
                        ))
                    })?;
                set_entry(block, first + k, order, new);
                if new == 0 && old != 0 {
                    if lowest_freed.is_none() {
                        lowest_freed = Some(c + k as u64);
                    }
                    freed.push(c + k as u64);
                }
            }
            if let Some(f) = lowest_freed {
                self.free_cluster_index = self.free_cluster_index.min(f);
            }
            self.cache.refblocks.mark_dirty(off);
            let cs = self.geo.cluster_size();
            for &f in &freed {
                self.cache.refblocks.discard(f * cs);
                self.cache.l2.discard(f * cs);
            }
            if let Some(log) = &mut self.discard_log {
                log.extend(freed);
            }
            c += in_block;
        }
        Ok(())
    }

    /// Writes refcount table entry `index` to the file.
    pub(super) fn write_table_entry(
        &self,
        storage: &dyn Storage,
        index: usize,
    ) -> Result<(), FormatError> {
        storage.write_at(
            &self.table[index].to_be_bytes(),
            self.table_offset.0 + 8 * index as u64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_packing_below_8_bits_is_low_bit_first() {
        let mut b = vec![0u8; 4];
        set_entry(&mut b, 1, 0, 1);
        assert_eq!(b[0], 0b10);
        set_entry(&mut b, 3, 1, 3);
        assert_eq!(b[0], 0b1100_0010);
        set_entry(&mut b, 1, 2, 0xa);
        assert_eq!(b[0], 0xa2);
        assert_eq!(get_entry(&b, 1, 2), 0xa);
        assert_eq!(get_entry(&b, 0, 0), 0);
    }

    #[test]
    fn entry_16_bits_is_big_endian() {
        let mut b = vec![0u8; 8];
        assert_eq!(set_entry(&mut b, 1, 4, 0x0102), (2, 2));
        assert_eq!(&b[2..4], &[1, 2]);
        assert_eq!(get_entry(&b, 1, 4), 0x0102);
    }

    #[test]
    fn entry_64_bits_roundtrips_max() {
        let mut b = vec![0u8; 16];
        set_entry(&mut b, 1, 6, u64::MAX);
        assert_eq!(get_entry(&b, 1, 6), u64::MAX);
        assert_eq!(get_entry(&b, 0, 6), 0);
    }
}
