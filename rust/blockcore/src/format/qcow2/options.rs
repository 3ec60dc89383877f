//! Runtime options of an open qcow2 node (`blockdev-add` / `-drive`): the metadata cache sizes
//! and lazy refcounts, checked as QEMU checks them when it opens the image, and what they
//! change.
//!
//! QEMU checks them after the header was read (a file that is not qcow2 fails first), in this
//! order: option values that do not parse (the caller's message, see
//! [`RuntimeOptions::parse_error`]); `cache-size` against `l2-cache-size` and
//! `refcount-cache-size`; `l2-cache-entry-size`; the entry counts; `cache-clean-interval`;
//! `lazy-refcounts` (needs version 3); `discard-no-unref` (needs version 3).
//!
//! L2 cache entries smaller than a cluster are slices of tables, each cached on its own
//! ([`super::cache::L2Cache`]).
//!
//! Cache sizes: with `cache-size` alone the L2 cache gets what maps the whole disk if the rest
//! still holds the minimum refcount cache (4 clusters), else the refcount cache gets up to its
//! minimum and L2 the rest; with one of the two, the other gets the remainder. Unset, L2 gets
//! what maps the whole disk (at most 32 MiB) and refcount blocks 4 clusters. L2 sizes above
//! what maps the disk count as that much. An L2 cache smaller than the disk needs holds table
//! slices of `min(cluster size, 4 KiB)` unless `l2-cache-entry-size` says otherwise. Entry
//! counts are the sizes over the entry size (L2) or the cluster size (refcount blocks), at
//! least 2 and 4.
//!
//! `pass-discard-snapshot=off` keeps the clusters snapshot operations free in the file.
//!
//! Lazy refcounts (`lazy-refcounts`, by default the header's compatible bit): the first
//! allocation linked into an L2 table marks the image dirty in the header (its
//! `incompatible_features` field, at once); from then on L2 tables no longer wait for refcount
//! blocks and a flush writes L2 tables only (internal snapshot creation and shrinking still
//! write both). Closing or reopening read-only writes L2 tables, then refcount blocks, then
//! the header with the dirty bit clear.

use super::cache::MetaCache;
use super::header::{Header, INCOMPAT_DIRTY};
use super::Qcow2;
use crate::format::FormatError;

/// QEMU's default maximum L2 cache size (`DEFAULT_L2_CACHE_MAX_SIZE`, Linux).
const L2_CACHE_MAX_BYTES: u64 = 32 << 20;
/// QEMU's minimum number of L2 cache entries (`MIN_L2_CACHE_SIZE`).
const MIN_L2_ENTRIES: u64 = 2;
/// QEMU's minimum (and default) refcount cache, in clusters (`MIN_REFCOUNT_CACHE_SIZE`).
const MIN_REFCOUNT_ENTRIES: u64 = 4;
/// The smallest L2 cache entry (`1 << MIN_CLUSTER_BITS`).
const MIN_L2_ENTRY_BYTES: u64 = 512;
/// The L2 slice size QEMU picks when the cache does not cover the disk.
const DEFAULT_SLICE_BYTES: u64 = 4096;
/// Entry counts above this are refused (`INT_MAX`).
const MAX_ENTRIES: u64 = i32::MAX as u64;
/// The largest `cache-clean-interval` (`UINT_MAX` seconds).
const MAX_CLEAN_INTERVAL: u64 = u32::MAX as u64;
/// `cache-clean-interval` QEMU uses when it is not given (`DEFAULT_CACHE_CLEAN_INTERVAL`).
pub const DEFAULT_CLEAN_INTERVAL: u64 = 600;
/// Byte offset of `incompatible_features` in the header.
const INCOMPAT_FIELD: u64 = 72;
/// Compatible feature bit 0: lazy refcounts.
const COMPAT_LAZY_REFCOUNTS: u64 = 1;

/// The runtime options as given (`None`: not given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// An option value that did not parse, with the caller's (version's) message: QEMU reports
    /// it after reading the header, before any other option check.
    pub parse_error: Option<String>,
    /// `cache-size`: both caches together, bytes.
    pub cache_size: Option<u64>,
    /// `l2-cache-size`, bytes.
    pub l2_cache_size: Option<u64>,
    /// `l2-cache-entry-size`, bytes.
    pub l2_cache_entry_size: Option<u64>,
    /// `refcount-cache-size`, bytes.
    pub refcount_cache_size: Option<u64>,
    /// `cache-clean-interval`, seconds (a negative QAPI int arrives as its 64-bit pattern).
    pub cache_clean_interval: Option<u64>,
    /// `lazy-refcounts`.
    pub lazy_refcounts: Option<bool>,
    /// `discard-no-unref`.
    pub discard_no_unref: Option<bool>,
    /// `pass-discard-snapshot` (default on).
    pub pass_discard_snapshot: Option<bool>,
}

/// What the options come to for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// L2 cache entries.
    pub l2_entries: u64,
    /// Bytes per L2 cache entry (a whole table, or a slice of one).
    pub l2_entry_size: u64,
    /// Refcount cache entries (one refcount block each).
    pub refcount_entries: u64,
    /// Lazy refcounts in use.
    pub lazy_refcounts: bool,
    /// Seconds between cleanings of unused cache entries (0: never).
    pub cache_clean_interval: u64,
    /// Discards keep the clusters allocated.
    pub discard_no_unref: bool,
    /// Clusters freed by snapshot operations are discarded in the file.
    pub pass_discard_snapshot: bool,
}

impl RuntimeOptions {
    /// Checks the options against the image's header, in QEMU's order and with its messages,
    /// and works out the cache capacities.
    pub fn resolve(&self, header: &Header) -> Result<Resolved, FormatError> {
        let bad = |m: &str| FormatError::Unsupported(m.to_string());
        if let Some(e) = &self.parse_error {
            return Err(bad(e));
        }
        let cs = 1u64 << header.cluster_bits;
        let max_l2_cache = (header.size.div_ceil(cs) * 8).next_multiple_of(cs);
        let min_refcount_cache = MIN_REFCOUNT_ENTRIES * cs;
        let (mut l2, rc) = match self.cache_size {
            Some(combined) => match (self.l2_cache_size, self.refcount_cache_size) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time",
                    ))
                }
                (Some(l2), None) if l2 > combined => {
                    return Err(bad("l2-cache-size may not exceed cache-size"))
                }
                (None, Some(rc)) if rc > combined => {
                    return Err(bad("refcount-cache-size may not exceed cache-size"))
                }
                (Some(l2), None) => (l2, combined - l2),
                (None, Some(rc)) => (combined - rc, rc),
                (None, None) if combined >= max_l2_cache.saturating_add(min_refcount_cache) => {
                    (max_l2_cache, combined - max_l2_cache)
                }
                (None, None) => {
                    let rc = combined.min(min_refcount_cache);
                    (combined - rc, rc)
                }
            },
            None => (
                self.l2_cache_size
                    .unwrap_or(max_l2_cache.min(L2_CACHE_MAX_BYTES)),
                self.refcount_cache_size.unwrap_or(min_refcount_cache),
            ),
        };
        let mut entry = self.l2_cache_entry_size.unwrap_or(cs);
        if l2 < max_l2_cache {
            if self.l2_cache_entry_size.is_none() {
                entry = cs.min(DEFAULT_SLICE_BYTES);
            }
        } else {
            l2 = max_l2_cache;
        }
        if entry < MIN_L2_ENTRY_BYTES || entry > cs || !entry.is_power_of_two() {
            return Err(bad(&format!(
                "L2 cache entry size must be a power of two between {MIN_L2_ENTRY_BYTES} and the cluster size ({cs})"
            )));
        }
        let l2_entries = (l2 / entry).max(MIN_L2_ENTRIES);
        if l2_entries > MAX_ENTRIES {
            return Err(bad("L2 cache size too big"));
        }
        let refcount_entries = (rc / cs).max(MIN_REFCOUNT_ENTRIES);
        if refcount_entries > MAX_ENTRIES {
            return Err(bad("Refcount cache size too big"));
        }
        let cache_clean_interval = self.cache_clean_interval.unwrap_or(DEFAULT_CLEAN_INTERVAL);
        if cache_clean_interval > MAX_CLEAN_INTERVAL {
            return Err(bad("Cache clean interval too big"));
        }
        let lazy_refcounts = self
            .lazy_refcounts
            .unwrap_or(header.compatible_features & COMPAT_LAZY_REFCOUNTS != 0);
        if lazy_refcounts && header.version < 3 {
            return Err(bad(
                "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level",
            ));
        }
        let discard_no_unref = self.discard_no_unref.unwrap_or(false);
        if discard_no_unref && header.version < 3 {
            return Err(bad(
                "discard-no-unref is only supported since qcow2 version 3",
            ));
        }
        Ok(Resolved {
            l2_entries,
            l2_entry_size: entry,
            refcount_entries,
            lazy_refcounts,
            cache_clean_interval,
            discard_no_unref,
            pass_discard_snapshot: self.pass_discard_snapshot.unwrap_or(true),
        })
    }
}

impl Resolved {
    /// Refuses what the reference does not model, in QEMU's error form: periodic cache
    /// cleaning more often than QEMU's default (the reference has no timer for it; from the
    /// default on it, like QEMU within any scenario's few seconds, never cleans), and
    /// `discard-no-unref`.
    pub fn check_modelled(&self) -> Result<(), FormatError> {
        if (1..DEFAULT_CLEAN_INTERVAL).contains(&self.cache_clean_interval) {
            return Err(FormatError::Unsupported(format!(
                "cache-clean-interval={} is not modelled by this reference (only 0 and from {DEFAULT_CLEAN_INTERVAL} on)",
                self.cache_clean_interval
            )));
        }
        if self.discard_no_unref {
            return Err(FormatError::Unsupported(
                "discard-no-unref=on is not modelled by this reference".into(),
            ));
        }
        Ok(())
    }

    /// The metadata cache these sizes give.
    pub fn cache(&self, header: &Header) -> MetaCache {
        MetaCache::with_entries(
            header.geometry(),
            self.l2_entries as usize,
            self.refcount_entries as usize,
            self.l2_entry_size as usize,
        )
    }
}

impl Qcow2 {
    /// Whether refcounts on disk must be kept exact (QEMU's `qcow2_need_accurate_refcounts`):
    /// not while the dirty bit is set.
    pub(super) fn needs_accurate_refcounts(&self) -> bool {
        self.header.incompatible_features & INCOMPAT_DIRTY == 0
    }

    /// An allocation is about to be linked into an L2 table (QEMU's
    /// `qcow2_alloc_cluster_link_l2`): with lazy refcounts the image is marked dirty first;
    /// while refcounts must be exact the L2 tables come to wait for the refcount blocks.
    pub(super) fn before_link_l2(&mut self) -> Result<(), FormatError> {
        if self.lazy_refcounts {
            self.mark_dirty()?;
        }
        if self.needs_accurate_refcounts() {
            let storage = self.storage.clone();
            self.refcounts.cache.l2_after_refblocks(storage.as_ref())?;
        }
        Ok(())
    }

    /// Writes back both caches whether or not the dirty bit is set: where QEMU writes the
    /// refcount blocks even under lazy refcounts (internal snapshot creation, shrinking;
    /// measured on 7.2 and 10.0 with a bitmap on the file node: the same writes as without).
    pub(super) fn write_caches_even_if_dirty(&mut self) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        self.refcounts.cache.write_all(storage.as_ref())
    }

    /// Runs `f`, a snapshot operation, discarding in the file the clusters it frees unless
    /// `pass-discard-snapshot` is off (measured: internal snapshot deletion then leaves them
    /// in the file).
    pub(super) fn discarding_snapshot_freed<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        if self.pass_discard_snapshot {
            self.discarding_freed(f)
        } else {
            f(self)
        }
    }

    /// Sets the dirty bit in the header's `incompatible_features` (that field only, flushed),
    /// once (QEMU's `qcow2_mark_dirty`; version 3 only).
    fn mark_dirty(&mut self) -> Result<(), FormatError> {
        if self.header.version < 3 || !self.needs_accurate_refcounts() {
            return Ok(());
        }
        self.storage.flush()?;
        let field = self.header.incompatible_features | INCOMPAT_DIRTY;
        self.storage
            .write_at(&field.to_be_bytes(), INCOMPAT_FIELD)?;
        self.storage.flush()?;
        self.header.incompatible_features = field;
        Ok(())
    }

    /// Close of a dirty image (QEMU's `qcow2_inactivate` then `qcow2_mark_clean`): L2 tables,
    /// then refcount blocks, then the whole header with the dirty bit clear.
    pub(super) fn close_dirty(&mut self) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        self.refcounts.cache.flush_l2(storage.as_ref())?;
        self.refcounts.cache.flush_refblocks(storage.as_ref())?;
        self.header.incompatible_features &= !INCOMPAT_DIRTY;
        self.write_header()?;
        Ok(self.storage.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};
    use std::sync::Arc;

    fn header(cluster_bits: u32, size: u64, version: u32) -> Header {
        let opts = super::super::CreateOptions {
            cluster_size: 1 << cluster_bits,
            compat: if version == 2 {
                super::super::Compat::V0_10
            } else {
                super::super::Compat::V1_1
            },
            ..super::super::CreateOptions::new(size)
        };
        let st = Arc::new(MemStorage::default());
        Qcow2::create(st.clone(), &opts).unwrap();
        let mut first = vec![0u8; 1 << cluster_bits];
        st.read_at(&mut first, 0).unwrap();
        Header::parse(&first).unwrap()
    }

    fn resolve(o: RuntimeOptions, h: &Header) -> Result<Resolved, String> {
        o.resolve(h).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_cover_the_disk_with_four_refcount_blocks() {
        let h = header(9, 1 << 20, 3);
        let r = resolve(RuntimeOptions::default(), &h).unwrap();
        assert_eq!(
            (r.l2_entries, r.l2_entry_size, r.refcount_entries),
            (32, 512, 4)
        );
        assert!(!r.lazy_refcounts);
    }

    #[test]
    fn cache_size_alone_gives_l2_what_maps_the_disk_and_refcounts_the_rest() {
        let h = header(9, 1 << 20, 3);
        let o = |n| RuntimeOptions {
            cache_size: Some(n),
            ..Default::default()
        };
        // 16 KiB of L2 maps 1 MiB; 4 clusters of refcounts fit beside it.
        let r = resolve(o(16384 + 4096), &h).unwrap();
        assert_eq!((r.l2_entries, r.refcount_entries), (32, 8));
        // Too little: refcounts get their minimum first, L2 the rest.
        let r = resolve(o(4096), &h).unwrap();
        assert_eq!((r.l2_entries, r.refcount_entries), (4, 4));
        assert_eq!(r.cache(&h).capacity(), (4, 4));
        // Nothing: both minimums.
        let r = resolve(o(0), &h).unwrap();
        assert_eq!((r.l2_entries, r.refcount_entries), (2, 4));
    }

    #[test]
    fn conflicting_sizes_fail_with_qemus_messages_in_its_order() {
        let h = header(9, 1 << 20, 3);
        let all = RuntimeOptions {
            cache_size: Some(10),
            l2_cache_size: Some(1),
            refcount_cache_size: Some(1),
            ..Default::default()
        };
        assert!(resolve(all, &h)
            .unwrap_err()
            .contains("may not be set at the same time"));
        let l2 = RuntimeOptions {
            cache_size: Some(1),
            l2_cache_size: Some(5),
            l2_cache_entry_size: Some(3),
            ..Default::default()
        };
        assert_eq!(
            resolve(l2, &h).unwrap_err(),
            "l2-cache-size may not exceed cache-size"
        );
        let entry = RuntimeOptions {
            l2_cache_entry_size: Some(1024),
            cache_clean_interval: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(
            resolve(entry, &h).unwrap_err(),
            "L2 cache entry size must be a power of two between 512 and the cluster size (512)"
        );
        let rc = RuntimeOptions {
            refcount_cache_size: Some(i64::MAX as u64),
            cache_clean_interval: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(resolve(rc, &h).unwrap_err(), "Refcount cache size too big");
    }

    #[test]
    fn l2_sizes_above_the_disk_are_capped_and_small_ones_take_slices() {
        let h = header(16, 64 << 20, 3);
        let big = RuntimeOptions {
            l2_cache_size: Some(i64::MAX as u64),
            ..Default::default()
        };
        assert_eq!(resolve(big, &h).unwrap().l2_entries, 2);
        let big_disk = header(16, 1 << 40, 3);
        let small = RuntimeOptions {
            l2_cache_size: Some(65536),
            ..Default::default()
        };
        let r = resolve(small, &big_disk).unwrap();
        assert_eq!((r.l2_entries, r.l2_entry_size), (16, 4096));
    }

    fn incompatible_features(st: &MemStorage) -> u64 {
        let mut field = [0u8; 8];
        st.read_at(&mut field, INCOMPAT_FIELD).unwrap();
        u64::from_be_bytes(field)
    }

    #[test]
    fn lazy_refcounts_mark_the_header_dirty_until_close() {
        use crate::format::FormatDriver;
        let st = Arc::new(MemStorage::default());
        let opts = super::super::CreateOptions {
            cluster_size: 512,
            ..super::super::CreateOptions::new(1 << 20)
        };
        Qcow2::create(st.clone(), &opts).unwrap();
        let lazy = RuntimeOptions {
            lazy_refcounts: Some(true),
            ..Default::default()
        };
        let mut q = Qcow2::open_with(st.clone(), false, &lazy).unwrap();
        assert_eq!(incompatible_features(&st), 0);
        q.write(0, &[1; 4096]).unwrap();
        assert_eq!(incompatible_features(&st), INCOMPAT_DIRTY);
        assert!(q.facts().dirty);
        q.flush().unwrap();
        assert_eq!(
            incompatible_features(&st),
            INCOMPAT_DIRTY,
            "a flush keeps it dirty"
        );
        q.close().unwrap();
        assert_eq!(incompatible_features(&st), 0);
        // Reopened without the option: the refcounts on disk are exact again.
        let mut q = Qcow2::open(st.clone(), false).unwrap();
        q.write(8192, &[2; 512]).unwrap();
        assert_eq!(incompatible_features(&st), 0);
    }

    #[test]
    fn lazy_refcounts_follow_the_header_and_need_version_3() {
        let mut h = header(16, 1 << 20, 3);
        h.compatible_features = COMPAT_LAZY_REFCOUNTS;
        assert!(
            resolve(RuntimeOptions::default(), &h)
                .unwrap()
                .lazy_refcounts
        );
        let v2 = header(16, 1 << 20, 2);
        let on = RuntimeOptions {
            lazy_refcounts: Some(true),
            discard_no_unref: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(on, &v2).unwrap_err(),
            "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level"
        );
    }
}
