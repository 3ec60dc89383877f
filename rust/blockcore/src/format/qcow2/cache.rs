//! The metadata cache: L2 tables and refcount blocks, write-back, as QEMU's `Qcow2Cache`.
//!
//! QEMU keeps both kinds of tables in two small caches and writes a changed table back to the
//! file only at certain moments, always as a whole cluster (or, for L2 tables cached as
//! slices, `l2-cache-entry-size` smaller than a cluster, as the one slice: see [`L2Cache`]): when the cache is flushed (a guest
//! or block-layer flush, close, an internal snapshot, a new L2 table or refcount block being
//! hooked up), when a dirty table is evicted to make room, and when an ordering between the two
//! caches must be kept. A dirty bitmap on the image's `file` node sees exactly those writes, so
//! the reference keeps the same caches and the same rules:
//!
//! * capacity: by default L2 tables enough to map the whole disk (at most 32 MiB of them), at
//!   least 2, and refcount blocks 4; the node's runtime options (`cache-size`,
//!   `l2-cache-size`, `refcount-cache-size`) change them (`options`);
//! * slots and eviction: a lookup starts at slot `(offset / cluster_size * 4) % capacity`, and a
//!   miss replaces the least recently used slot met first from there (empty slots count as
//!   never used); a dirty victim is written back first;
//! * write-back order: a cache that *depends* on the other one flushes the other one (write
//!   back every dirty table, then flush the file) before it writes anything. L2 tables come to
//!   depend on refcount blocks when an allocation is linked into them (refcounts must reach the
//!   file before anything points at the cluster); refcount blocks come to depend on L2 tables
//!   when a refcount drops (the reference must be gone before the cluster is free). Setting one
//!   dependency while the opposite one is pending flushes the other cache at once.
//!
//! Tables freed while cached are dropped without being written. The L1 table, the header and
//! the refcount table are not cached: they are written at once where they change.

use super::units::Geometry;
use crate::format::FormatError;
use crate::storage::Storage;

/// QEMU's default maximum L2 cache size (`DEFAULT_L2_CACHE_MAX_SIZE`, Linux).
const L2_CACHE_MAX_BYTES: u64 = 32 << 20;
/// QEMU's minimum number of L2 cache entries (`MIN_L2_CACHE_SIZE`).
const MIN_L2_ENTRIES: usize = 2;
/// QEMU's default (and minimum) refcount cache, in clusters (`MIN_REFCOUNT_CACHE_SIZE`).
const REFCOUNT_ENTRIES: usize = 4;

/// A table the cache can hold: written back as its on-disk cluster.
pub trait Table {
    /// The cluster as it goes to the file.
    fn to_bytes(&self) -> Vec<u8>;
}

impl Table for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }
}

impl Table for Vec<u64> {
    fn to_bytes(&self) -> Vec<u8> {
        self.iter().flat_map(|e| e.to_be_bytes()).collect()
    }
}

/// One cached table.
#[derive(Debug)]
struct Slot<T> {
    /// Host offset of the table.
    offset: u64,
    table: T,
    /// Changed since it was read or last written back.
    dirty: bool,
    /// Value of the cache's use counter at the last use (0: never).
    lru: u64,
}

/// One cache of same-kind tables (QEMU's `Qcow2Cache`).
#[derive(Debug)]
pub struct TableCache<T> {
    slots: Vec<Option<Slot<T>>>,
    /// Counts uses; the slot with the lowest stamp is the least recently used.
    uses: u64,
    cluster_bits: u32,
    /// Debug event signalled before a table of this cache is written back.
    event: &'static str,
}

impl<T: Table> TableCache<T> {
    fn new(capacity: usize, cluster_bits: u32, event: &'static str) -> Self {
        Self {
            slots: (0..capacity).map(|_| None).collect(),
            uses: 0,
            cluster_bits,
            event,
        }
    }

    fn position(&self, offset: u64) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.offset == offset))
    }

    /// The slot a miss for `offset` replaces.
    fn victim(&self, offset: u64) -> usize {
        let n = self.slots.len();
        let start = ((offset >> self.cluster_bits).wrapping_mul(4) % n as u64) as usize;
        let mut best = start;
        let mut best_lru = u64::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let lru = self.slots[i].as_ref().map_or(0, |s| s.lru);
            if lru < best_lru {
                best_lru = lru;
                best = i;
            }
        }
        best
    }

    fn touch(&mut self, i: usize) -> &mut T {
        self.uses += 1;
        let slot = self.slots[i].as_mut().expect("occupied slot");
        slot.lru = self.uses;
        &mut slot.table
    }

    /// Marks the cached table at `offset` changed (it must be cached).
    pub fn mark_dirty(&mut self, offset: u64) {
        let i = self
            .position(offset)
            .expect("marking an uncached table dirty");
        self.slots[i].as_mut().expect("occupied slot").dirty = true;
    }

    /// Forgets the table at `offset` without writing it (it was freed).
    pub fn discard(&mut self, offset: u64) {
        if let Some(i) = self.position(offset) {
            self.slots[i] = None;
        }
    }

    /// Whether any cached table is dirty.
    fn any_dirty(&self) -> bool {
        self.slots.iter().flatten().any(|s| s.dirty)
    }

    /// Writes slot `i` back if it is dirty (the caller has honoured the dependencies).
    fn write_slot(&mut self, storage: &dyn Storage, i: usize) -> Result<(), FormatError> {
        let Some(slot) = self.slots[i].as_mut() else {
            return Ok(());
        };
        if !slot.dirty {
            return Ok(());
        }
        storage.debug_event(self.event);
        storage.write_at(&slot.table.to_bytes(), slot.offset)?;
        slot.dirty = false;
        Ok(())
    }
}

/// The L2 cache: slices of L2 tables (a whole table by default; `l2-cache-entry-size`
/// smaller than a cluster, or an L2 cache too small for the disk, gives QEMU's table slices).
/// Each slice is an entry of its own: looked up, evicted and written back alone.
///
/// The entries of every table seen are kept in `tables` (the guest paths read and change
/// them there); the slots hold the slices as they go to the file, copied from `tables` when
/// a slice is marked dirty.
#[derive(Debug)]
pub struct L2Cache {
    /// Resident slices, keyed by their host offset.
    slots: TableCache<Vec<u64>>,
    /// The entries of the tables seen, by table offset.
    tables: std::collections::HashMap<u64, Vec<u64>>,
    /// Entries per slice.
    slice_entries: usize,
    /// Entries per table.
    table_entries: usize,
    /// The slices of the last access (table offset, first slice, slice count): what
    /// [`L2Cache::mark_dirty`] marks.
    last: Option<(u64, usize, usize)>,
}

impl L2Cache {
    fn slice_bytes(&self) -> u64 {
        self.slice_entries as u64 * 8
    }

    /// Marks the slices of the last access to the table at `offset` changed (they must be
    /// cached; all of its cached slices if it was not the last one accessed).
    pub fn mark_dirty(&mut self, offset: u64) {
        let Some(table) = self.tables.get(&offset) else {
            panic!("marking an uncached table dirty");
        };
        let n_slices = self.table_entries / self.slice_entries;
        let (first, count) = match self.last {
            Some((t, first, count)) if t == offset => (first, count),
            _ => (0, n_slices),
        };
        let mut marked = false;
        for k in first..first + count {
            let at = offset + k as u64 * self.slice_bytes();
            if let Some(i) = self.slots.position(at) {
                let slot = self.slots.slots[i].as_mut().expect("occupied slot");
                slot.table
                    .copy_from_slice(&table[k * self.slice_entries..(k + 1) * self.slice_entries]);
                slot.dirty = true;
                marked = true;
            }
        }
        assert!(marked, "marking an uncached table dirty");
    }

    /// Forgets the table at `offset` without writing it (it was freed).
    pub fn discard(&mut self, offset: u64) {
        if self.tables.remove(&offset).is_none() {
            return;
        }
        let n_slices = self.table_entries / self.slice_entries;
        for k in 0..n_slices {
            self.slots.discard(offset + k as u64 * self.slice_bytes());
        }
        if self.last.is_some_and(|(t, _, _)| t == offset) {
            self.last = None;
        }
    }

    /// The entries of the table at `offset` (read from the file if never seen), without
    /// touching the cache.
    fn entries(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
    ) -> Result<&mut Vec<u64>, FormatError> {
        if !self.tables.contains_key(&offset) {
            let mut raw = vec![0u8; self.table_entries * 8];
            storage.read_at(&mut raw, offset)?;
            let table = raw
                .chunks_exact(8)
                .map(|e| u64::from_be_bytes(e.try_into().expect("8 bytes")))
                .collect();
            self.tables.insert(offset, table);
        }
        Ok(self.tables.get_mut(&offset).expect("just loaded"))
    }
}

/// Which cache must reach the file first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// No pending order.
    None,
    /// L2 tables wait for the refcount blocks.
    L2AfterRefblocks,
    /// Refcount blocks wait for the L2 tables.
    RefblocksAfterL2,
}

/// Which of the two caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    L2,
    Refblocks,
}

/// Both caches of an open image and the order pending between them.
#[derive(Debug)]
pub struct MetaCache {
    /// L2 tables, or slices of them.
    pub l2: L2Cache,
    /// Refcount blocks (raw bytes).
    pub refblocks: TableCache<Vec<u8>>,
    order: Order,
}

impl MetaCache {
    /// The caches QEMU gives an image of `virtual_size` bytes by default.
    pub fn new(geo: Geometry, virtual_size: u64) -> Self {
        let cs = geo.cluster_size();
        let l2_bytes = (virtual_size.div_ceil(cs) * 8).next_multiple_of(cs);
        let l2_entries = (l2_bytes.min(L2_CACHE_MAX_BYTES) / cs) as usize;
        let cs = cs as usize;
        Self::with_entries(geo, l2_entries.max(MIN_L2_ENTRIES), REFCOUNT_ENTRIES, cs)
    }

    /// Caches of `l2_entries` L2 slices of `l2_entry_bytes` (a power of two, at most a
    /// cluster) and `refcount_entries` refcount blocks (the sizes the node's runtime options
    /// give, see `options`).
    pub fn with_entries(
        geo: Geometry,
        l2_entries: usize,
        refcount_entries: usize,
        l2_entry_bytes: usize,
    ) -> Self {
        Self {
            l2: L2Cache {
                slots: TableCache::new(l2_entries, l2_entry_bytes.trailing_zeros(), "l2_update"),
                tables: std::collections::HashMap::new(),
                slice_entries: l2_entry_bytes / 8,
                table_entries: geo.l2_entries() as usize,
                last: None,
            },
            refblocks: TableCache::new(refcount_entries, geo.cluster_bits, "refblock_update_part"),
            order: Order::None,
        }
    }

    /// Capacities in entries: (L2 slices, refcount blocks).
    pub fn capacity(&self) -> (usize, usize) {
        (self.l2.slots.slots.len(), self.refblocks.slots.len())
    }

    /// Entries per L2 cache entry (a whole table's unless the cache holds slices).
    pub fn l2_slice_entries(&self) -> usize {
        self.l2.slice_entries
    }

    /// The L2 table at `offset`, every slice of it looked up in turn (read on a miss).
    pub fn l2(&mut self, storage: &dyn Storage, offset: u64) -> Result<&mut Vec<u64>, FormatError> {
        let n = self.l2.table_entries;
        self.l2_range(storage, offset, 0, n)
    }

    /// The L2 table at `offset`, having looked up (in order, reading misses, evicting) the
    /// slices holding entries `[first, first + count)`; those are what a following
    /// `l2.mark_dirty(offset)` marks.
    pub fn l2_range(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
        first: usize,
        count: usize,
    ) -> Result<&mut Vec<u64>, FormatError> {
        let se = self.l2.slice_entries;
        let k0 = first / se;
        let k1 = (first + count.max(1))
            .div_ceil(se)
            .min(self.l2.table_entries / se);
        self.l2.entries(storage, offset)?;
        for k in k0..k1 {
            self.touch_slice(storage, offset, k, false)?;
        }
        self.l2.last = Some((offset, k0, k1 - k0));
        Ok(self.l2.tables.get_mut(&offset).expect("loaded"))
    }

    /// Looks up slice `k` of the table at `offset` (its entries are in `l2.tables`): a hit
    /// counts as a use, a miss takes the victim's slot (written back first if dirty). A
    /// `fresh` slice is not read but cached dirty (QEMU's `qcow2_cache_get_empty`).
    fn touch_slice(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
        k: usize,
        fresh: bool,
    ) -> Result<(), FormatError> {
        let se = self.l2.slice_entries;
        let at = offset + k as u64 * self.l2.slice_bytes();
        let i = match self.l2.slots.position(at) {
            Some(i) => i,
            None => {
                let i = self.make_room(storage, Kind::L2, at)?;
                let table = &self.l2.tables[&offset];
                self.l2.slots.slots[i] = Some(Slot {
                    offset: at,
                    table: table[k * se..(k + 1) * se].to_vec(),
                    dirty: false,
                    lru: 0,
                });
                i
            }
        };
        if fresh {
            let table = &self.l2.tables[&offset];
            let slot = self.l2.slots.slots[i].as_mut().expect("occupied slot");
            slot.table.copy_from_slice(&table[k * se..(k + 1) * se]);
            slot.dirty = true;
        }
        self.l2.slots.touch(i);
        Ok(())
    }

    /// The refcount block at `offset`, read on a miss.
    pub fn refblock(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
    ) -> Result<&mut Vec<u8>, FormatError> {
        if let Some(i) = self.refblocks.position(offset) {
            return Ok(self.refblocks.touch(i));
        }
        let i = self.make_room(storage, Kind::Refblocks, offset)?;
        let mut raw = vec![0u8; 1 << self.refblocks.cluster_bits];
        storage.read_at(&mut raw, offset)?;
        self.refblocks.slots[i] = Some(Slot {
            offset,
            table: raw,
            dirty: false,
            lru: 0,
        });
        Ok(self.refblocks.touch(i))
    }

    /// Caches a new L2 table at `offset` holding `table`, every slice dirty, without reading
    /// the file (QEMU's `qcow2_cache_get_empty`); with `source`, the table it copies, each of
    /// whose slices is looked up right after the new one (QEMU's `l2_allocate`).
    pub fn new_l2(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
        table: Vec<u64>,
        source: Option<u64>,
    ) -> Result<(), FormatError> {
        let se = self.l2.slice_entries;
        self.l2.tables.insert(offset, table);
        for k in 0..self.l2.table_entries / se {
            self.touch_slice(storage, offset, k, true)?;
            if let Some(src) = source {
                self.l2_range(storage, src, k * se, se)?;
            }
        }
        self.l2.last = None;
        Ok(())
    }

    /// The entries of the L2 table at `offset` without looking any slice up (read from the
    /// file if never seen).
    pub fn l2_entries(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
    ) -> Result<Vec<u64>, FormatError> {
        Ok(self.l2.entries(storage, offset)?.clone())
    }

    /// Caches a new refcount block at `offset`, dirty, without reading the file.
    pub fn new_refblock(
        &mut self,
        storage: &dyn Storage,
        offset: u64,
        block: Vec<u8>,
    ) -> Result<(), FormatError> {
        let i = match self.refblocks.position(offset) {
            Some(i) => i,
            None => self.make_room(storage, Kind::Refblocks, offset)?,
        };
        self.refblocks.slots[i] = Some(Slot {
            offset,
            table: block,
            dirty: true,
            lru: 0,
        });
        self.refblocks.touch(i);
        Ok(())
    }

    /// Frees a slot for `offset` in cache `kind`, writing its victim back if dirty.
    fn make_room(
        &mut self,
        storage: &dyn Storage,
        kind: Kind,
        offset: u64,
    ) -> Result<usize, FormatError> {
        let i = match kind {
            Kind::L2 => self.l2.slots.victim(offset),
            Kind::Refblocks => self.refblocks.victim(offset),
        };
        self.write_back(storage, kind, Some(i))?;
        match kind {
            Kind::L2 => self.l2.slots.slots[i] = None,
            Kind::Refblocks => self.refblocks.slots[i] = None,
        }
        Ok(i)
    }

    /// Writes back slot `only` (or every dirty slot, in slot order) of cache `kind`, first
    /// flushing the other cache if `kind` waits for it.
    fn write_back(
        &mut self,
        storage: &dyn Storage,
        kind: Kind,
        only: Option<usize>,
    ) -> Result<(), FormatError> {
        let dirty = match (kind, only) {
            (Kind::L2, Some(i)) => self.l2.slots.slots[i].as_ref().is_some_and(|s| s.dirty),
            (Kind::Refblocks, Some(i)) => self.refblocks.slots[i].as_ref().is_some_and(|s| s.dirty),
            (Kind::L2, None) => self.l2.slots.any_dirty(),
            (Kind::Refblocks, None) => self.refblocks.any_dirty(),
        };
        if !dirty {
            return Ok(());
        }
        match (kind, self.order) {
            (Kind::L2, Order::L2AfterRefblocks) => {
                self.flush_cache(storage, Kind::Refblocks)?;
                self.order = Order::None;
            }
            (Kind::Refblocks, Order::RefblocksAfterL2) => {
                self.flush_cache(storage, Kind::L2)?;
                self.order = Order::None;
            }
            _ => {}
        }
        let cache_len = match kind {
            Kind::L2 => self.l2.slots.slots.len(),
            Kind::Refblocks => self.refblocks.slots.len(),
        };
        let slots: Vec<usize> = only.map_or_else(|| (0..cache_len).collect(), |i| vec![i]);
        for i in slots {
            match kind {
                Kind::L2 => self.l2.slots.write_slot(storage, i)?,
                Kind::Refblocks => self.refblocks.write_slot(storage, i)?,
            }
        }
        Ok(())
    }

    /// Writes back every dirty table of `kind`, then flushes the file (`qcow2_cache_flush`).
    fn flush_cache(&mut self, storage: &dyn Storage, kind: Kind) -> Result<(), FormatError> {
        self.write_back(storage, kind, None)?;
        storage.flush()?;
        Ok(())
    }

    /// Writes back and flushes every dirty L2 table.
    pub fn flush_l2(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        self.flush_cache(storage, Kind::L2)
    }

    /// Writes back and flushes every dirty refcount block.
    pub fn flush_refblocks(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        self.flush_cache(storage, Kind::Refblocks)
    }

    /// Writes back both caches, L2 tables first (QEMU's `qcow2_write_caches`; their
    /// dependency may put the refcount blocks first), without flushing the file.
    pub fn write_all(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        self.write_back(storage, Kind::L2, None)?;
        self.write_back(storage, Kind::Refblocks, None)
    }

    /// Writes back the L2 tables only, without flushing the file (`qcow2_write_caches` while
    /// refcounts need not be exact: lazy refcounts with the dirty bit set).
    pub fn write_l2(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        self.write_back(storage, Kind::L2, None)
    }

    /// An allocation was linked into an L2 table: L2 tables now wait for refcount blocks.
    pub fn l2_after_refblocks(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        if self.order == Order::RefblocksAfterL2 {
            self.flush_cache(storage, Kind::L2)?;
        }
        self.order = Order::L2AfterRefblocks;
        Ok(())
    }

    /// A refcount is dropping: refcount blocks now wait for L2 tables.
    pub fn refblocks_after_l2(&mut self, storage: &dyn Storage) -> Result<(), FormatError> {
        if self.order == Order::L2AfterRefblocks {
            self.flush_cache(storage, Kind::Refblocks)?;
        }
        self.order = Order::RefblocksAfterL2;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use std::sync::Mutex;

    /// A store that remembers the offsets written, in order.
    #[derive(Debug, Default)]
    struct Log {
        inner: MemStorage,
        writes: Mutex<Vec<(u64, usize)>>,
    }

    impl Storage for Log {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, data: &[u8], offset: u64) -> std::io::Result<()> {
            self.writes.lock().unwrap().push((offset, data.len()));
            self.inner.write_at(data, offset)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const GEO: Geometry = Geometry {
        cluster_bits: 9,
        refcount_order: 4,
    };

    fn take(log: &Log) -> Vec<(u64, usize)> {
        std::mem::take(&mut *log.writes.lock().unwrap())
    }

    #[test]
    fn capacity_follows_qemu_defaults() {
        // 64 MiB at 64 KiB clusters needs 8 KiB of L2: one cluster, raised to the minimum 2.
        let g64k = Geometry {
            cluster_bits: 16,
            refcount_order: 4,
        };
        let c = MetaCache::new(g64k, 64 << 20);
        assert_eq!(c.capacity(), (2, 4));
        // 1 MiB at 512-byte clusters: 2048 entries, 16 KiB of L2 = 32 tables.
        assert_eq!(MetaCache::new(GEO, 1 << 20).capacity().0, 32);
        // Capped at 32 MiB of tables.
        assert_eq!(MetaCache::new(g64k, 1 << 50).capacity().0, 512);
    }

    #[test]
    fn dirty_tables_reach_the_file_only_when_flushed_as_whole_clusters() {
        let log = Log::default();
        let mut c = MetaCache::new(GEO, 1 << 20);
        c.l2(&log, 0x1000).unwrap()[3] = 7;
        c.l2.mark_dirty(0x1000);
        c.refblock(&log, 0x400).unwrap()[0] = 1;
        c.refblocks.mark_dirty(0x400);
        assert!(take(&log).is_empty(), "nothing written before a flush");
        c.write_all(&log).unwrap();
        assert_eq!(take(&log), vec![(0x1000, 512), (0x400, 512)]);
        c.write_all(&log).unwrap();
        assert!(take(&log).is_empty(), "clean tables are not written again");
    }

    #[test]
    fn l2_waiting_for_refblocks_writes_them_first() {
        let log = Log::default();
        let mut c = MetaCache::new(GEO, 1 << 20);
        c.l2(&log, 0x1000).unwrap();
        c.l2.mark_dirty(0x1000);
        c.refblock(&log, 0x400).unwrap();
        c.refblocks.mark_dirty(0x400);
        c.l2_after_refblocks(&log).unwrap();
        c.flush_l2(&log).unwrap();
        assert_eq!(take(&log), vec![(0x400, 512), (0x1000, 512)]);
    }

    #[test]
    fn opposite_dependency_flushes_the_waited_for_cache_at_once() {
        let log = Log::default();
        let mut c = MetaCache::new(GEO, 1 << 20);
        c.refblock(&log, 0x400).unwrap();
        c.refblocks.mark_dirty(0x400);
        c.l2_after_refblocks(&log).unwrap();
        assert!(take(&log).is_empty());
        c.refblocks_after_l2(&log).unwrap();
        assert_eq!(take(&log), vec![(0x400, 512)]);
    }

    #[test]
    fn full_cache_evicts_least_recently_used_writing_it_back_if_dirty() {
        let log = Log::default();
        let mut c = MetaCache::new(GEO, 1 << 20);
        for k in 0..4u64 {
            c.refblock(&log, 0x400 * (k + 1)).unwrap();
        }
        c.refblocks.mark_dirty(0x400);
        // 0x400 is the least recently used: a fifth block evicts it, writing it first.
        c.refblock(&log, 0x2000).unwrap();
        assert_eq!(take(&log), vec![(0x400, 512)]);
        assert!(c.refblocks.position(0x400).is_none());
    }

    #[test]
    fn slices_are_looked_up_evicted_and_written_alone() {
        // 4 KiB clusters (512 entries a table) cached as 512-byte slices of 64 entries, two.
        let g4k = Geometry {
            cluster_bits: 12,
            refcount_order: 4,
        };
        let log = Log::default();
        let mut c = MetaCache::with_entries(g4k, 2, 4, 512);
        c.l2_range(&log, 0x1000, 3, 1).unwrap()[3] = 7;
        c.l2.mark_dirty(0x1000);
        c.l2_range(&log, 0x1000, 64, 1).unwrap()[64] = 8;
        c.l2.mark_dirty(0x1000);
        assert!(take(&log).is_empty());
        // A third slice evicts the least recently used one, slice 0, written alone.
        c.l2_range(&log, 0x1000, 200, 1).unwrap();
        assert_eq!(take(&log), vec![(0x1000, 512)]);
        c.write_all(&log).unwrap();
        assert_eq!(take(&log), vec![(0x1200, 512)]);
        // Slice 0 comes back with the entry written into it.
        assert_eq!(c.l2_range(&log, 0x1000, 3, 1).unwrap()[3], 7);
    }

    #[test]
    fn discarded_tables_are_never_written() {
        let log = Log::default();
        let mut c = MetaCache::new(GEO, 1 << 20);
        c.new_l2(&log, 0x1000, vec![0; 64], None).unwrap();
        c.l2.discard(0x1000);
        c.write_all(&log).unwrap();
        assert!(take(&log).is_empty());
    }
}
