//! Cluster allocation: finding free clusters, creating refcount blocks, growing the refcount table.
//!
//! Free clusters are found as QEMU finds them: scanning upward from `free_cluster_index` for the
//! first run of free clusters long enough, the index advancing past everything looked at (and
//! dropping back whenever a refcount reaches zero). A new refcount block reaches the file (through
//! the metadata cache, flushed) before the refcount table points at it.

use super::refcount::{set_entry, Refcounts};
use super::units::{HostCluster, HostOffset};
use crate::format::FormatError;
use crate::storage::Storage;

/// Byte offset of `refcount_table_offset` in the header (followed by `refcount_table_clusters`).
const HEADER_REFTABLE_FIELDS: u64 = 48;

impl Refcounts {
    /// The first run of `n` free clusters at or after `free_cluster_index` (QEMU's
    /// `alloc_clusters_noref`); refcounts are not changed.
    pub fn find_free_run(
        &mut self,
        storage: &dyn Storage,
        n: u64,
    ) -> Result<HostCluster, FormatError> {
        let mut start = self.free_cluster_index;
        let mut len = 0;
        while len < n {
            let idx = self.free_cluster_index;
            self.free_cluster_index += 1;
            if self.get(storage, HostCluster(idx))? == 0 {
                if len == 0 {
                    start = idx;
                }
                len += 1;
            } else {
                len = 0;
            }
        }
        Ok(HostCluster(start))
    }

    /// Allocates `n` contiguous clusters with refcount 1 and returns the first.
    pub fn alloc(&mut self, storage: &dyn Storage, n: u64) -> Result<HostCluster, FormatError> {
        assert!(n > 0, "allocating zero clusters");
        loop {
            let before = self.free_cluster_index;
            let start = self.find_free_run(storage, n)?;
            let (first_rt, _) = self.locate(start);
            let (last_rt, _) = self.locate(HostCluster(start.0 + n - 1));
            let mut changed = false;
            for rt in first_rt..=last_rt {
                if self.ensure_block(storage, rt)? {
                    changed = true;
                    break;
                }
            }
            if changed {
                // New metadata may have landed in the run: search again from where we started.
                self.free_cluster_index = self.free_cluster_index.min(before).min(start.0);
                continue;
            }
            self.update_range(storage, start, n, 1)?;
            return Ok(start);
        }
    }

    /// Allocates enough clusters for `bytes` bytes; returns the host offset.
    pub fn alloc_bytes(
        &mut self,
        storage: &dyn Storage,
        bytes: u64,
    ) -> Result<HostOffset, FormatError> {
        let n = self.geo.clusters_for(bytes).max(1);
        let c = self.alloc(storage, n)?;
        Ok(self.geo.host_offset(c))
    }

    /// Drops one reference to every cluster overlapping `[offset, offset + bytes)`.
    pub fn free_bytes(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
        bytes: u64,
    ) -> Result<(), FormatError> {
        if bytes == 0 {
            return Ok(());
        }
        let first = offset >> self.geo.cluster_bits;
        let last = (offset + bytes - 1) >> self.geo.cluster_bits;
        self.update_range(storage, HostCluster(first), last - first + 1, -1)
    }

    /// Makes sure refcount table entry `rt_index` points at a block. Returns whether anything was
    /// allocated (then earlier searches for free clusters may be stale).
    pub(super) fn ensure_block(
        &mut self,
        storage: &dyn Storage,
        rt_index: usize,
    ) -> Result<bool, FormatError> {
        if self.table.get(rt_index).is_some_and(|&o| o != 0) {
            return Ok(false);
        }
        // QEMU's alloc_refcount_block: the refcount table is about to change, and it may be
        // ordered after the L2 tables, so the L2 cache is flushed first.
        self.cache.flush_l2(storage)?;
        if rt_index >= self.table.len() {
            self.grow_table(storage, rt_index)?;
            return Ok(true);
        }
        let order = self.geo.refcount_order;
        let cs = self.geo.cluster_size() as usize;
        loop {
            let c = self.find_free_run(storage, 1)?;
            let (c_rt, c_i) = self.locate(c);
            let offset = self.geo.host_offset(c).0;
            let mut block = vec![0u8; cs];
            if c_rt == rt_index {
                // The new block describes itself.
                set_entry(&mut block, c_i, order, 1);
            } else {
                if self.ensure_block(storage, c_rt)? {
                    self.free_cluster_index = self.free_cluster_index.min(c.0);
                    continue;
                }
                self.update_range(storage, c, 1, 1)?;
                self.cache.flush_refblocks(storage)?;
            }
            // QEMU's alloc_refcount_block: the new block goes through the cache, which is
            // flushed before the refcount table points at it.
            self.cache.new_refblock(storage, offset, block)?;
            self.cache.flush_refblocks(storage)?;
            self.table[rt_index] = offset;
            self.write_table_entry(storage, rt_index)?;
            return Ok(true);
        }
    }

    /// Replaces the refcount table with a larger one that has room for entry `needed`.
    ///
    /// The new table and the blocks that count it are placed right after the last cluster the
    /// old table can describe (nothing can be allocated there), and describe themselves: QEMU's
    /// "refcount area". The header is switched to the new table, then the old one is freed.
    fn grow_table(&mut self, storage: &dyn Storage, needed: usize) -> Result<(), FormatError> {
        let geo = self.geo;
        let cs = geo.cluster_size();
        let per_block = geo.refblock_entries();
        let per_table_cluster = cs / 8;
        let old_entries = self.table.len() as u64;
        let old_clusters = u64::from(self.table_clusters());
        let area = old_entries * per_block;
        let (mut blocks, mut tclusters) = (0u64, 0u64);
        loop {
            let entries = (needed as u64 + 1).max(old_entries + blocks);
            let t = entries
                .div_ceil(per_table_cluster)
                .max(old_clusters + old_clusters.div_ceil(2));
            let b = (blocks + t).div_ceil(per_block).max(1);
            if (b, t) == (blocks, tclusters) {
                break;
            }
            (blocks, tclusters) = (b, t);
        }
        let used_end = area + blocks + tclusters;
        let order = geo.refcount_order;
        for k in 0..blocks {
            let mut block = vec![0u8; cs as usize];
            let covers = area + k * per_block;
            for c in covers.max(area)..used_end.min(covers + per_block) {
                set_entry(&mut block, (c - covers) as usize, order, 1);
            }
            let off = (area + k) * cs;
            storage.write_at(&block, off)?;
        }
        let mut table = self.table.clone();
        table.resize((tclusters * per_table_cluster) as usize, 0);
        for k in 0..blocks {
            table[(old_entries + k) as usize] = (area + k) * cs;
        }
        let table_offset = (area + blocks) * cs;
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        storage.write_at(&raw, table_offset)?;
        storage.flush()?;
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&table_offset.to_be_bytes());
        fields[8..].copy_from_slice(&(tclusters as u32).to_be_bytes());
        storage.write_at(&fields, HEADER_REFTABLE_FIELDS)?;
        let old_offset = self.table_offset;
        self.table = table;
        self.table_offset = HostOffset(table_offset);
        self.free_bytes(storage, old_offset.0, old_clusters * cs)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::units::Geometry;
    use super::*;
    use crate::storage::MemStorage;

    /// A store with a one-cluster refcount table at cluster 1, one block at cluster 2, clusters
    /// 0..=2 in use: what `qemu-img create` starts from.
    fn fresh(cluster_bits: u32, refcount_order: u32) -> (MemStorage, Refcounts) {
        let geo = Geometry {
            cluster_bits,
            refcount_order,
        };
        let cs = geo.cluster_size();
        let st = MemStorage::new();
        st.write_at(&(2 * cs).to_be_bytes(), cs).unwrap();
        let mut block = vec![0u8; cs as usize];
        for i in 0..3 {
            set_entry(&mut block, i, refcount_order, 1);
        }
        st.write_at(&block, 2 * cs).unwrap();
        let rc = Refcounts::load(&st, geo, cs, 1, 1 << 30).unwrap();
        (st, rc)
    }

    #[test]
    fn alloc_fresh_image_returns_lowest_free_cluster() {
        let (st, mut rc) = fresh(16, 4);
        assert_eq!(rc.alloc(&st, 2).unwrap(), HostCluster(3));
        assert_eq!(rc.alloc(&st, 1).unwrap(), HostCluster(5));
        assert_eq!(rc.get(&st, HostCluster(4)).unwrap(), 1);
    }

    #[test]
    fn alloc_after_free_reuses_the_hole() {
        let (st, mut rc) = fresh(16, 4);
        let a = rc.alloc(&st, 1).unwrap();
        rc.alloc(&st, 1).unwrap();
        rc.free_bytes(&st, a.0 << 16, 1).unwrap();
        assert_eq!(rc.alloc(&st, 1).unwrap(), a);
    }

    #[test]
    fn alloc_past_first_block_creates_blocks_and_grows_table() {
        // 512-byte clusters, 16-bit refcounts: 256 clusters per block, 64 blocks per table cluster.
        let (st, mut rc) = fresh(9, 4);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40_000 {
            let c = rc.alloc(&st, 1).unwrap();
            assert!(seen.insert(c.0), "cluster {} handed out twice", c.0);
        }
        assert!(rc.table_clusters() > 1, "table grew");
        for &c in &seen {
            assert_eq!(rc.get(&st, HostCluster(c)).unwrap(), 1);
        }
        // Every metadata cluster is counted too: blocks and table.
        for &b in rc.table.clone().iter().filter(|&&b| b != 0) {
            assert_eq!(rc.get(&st, HostCluster(b >> 9)).unwrap(), 1);
            assert!(!seen.contains(&(b >> 9)));
        }
        let t0 = rc.table_offset.0 >> 9;
        for k in 0..u64::from(rc.table_clusters()) {
            assert_eq!(rc.get(&st, HostCluster(t0 + k)).unwrap(), 1);
        }
        // Reloading from the store sees the same table (the header is not in this store's
        // cluster 0 in this test, so read the fields back from offset 48).
        let mut fields = [0u8; 12];
        st.read_at(&mut fields, 48).unwrap();
        assert_eq!(
            u64::from_be_bytes(fields[..8].try_into().unwrap()),
            rc.table_offset.0
        );
    }

    #[test]
    fn alloc_with_1_bit_refcounts_works() {
        let (st, mut rc) = fresh(9, 0);
        for _ in 0..10_000 {
            rc.alloc(&st, 1).unwrap();
        }
        assert_eq!(rc.get(&st, HostCluster(5000)).unwrap(), 1);
    }
}
