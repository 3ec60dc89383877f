//! Resizing the image: the virtual size and the L1 table (QEMU's `qcow2_co_truncate` without
//! preallocation, `qcow2_grow_l1_table` and the shrinking path).
//!
//! The L1 table must map the whole virtual size (an image whose table is shorter is refused at
//! open). Growing it places a new table in free clusters (the lowest run that fits, as every
//! allocation), copies the old entries, points the header's `l1_size` and `l1_table_offset` at
//! it, then frees the old table (no discard passed down: QEMU's `pass-discard-other` is off).
//! Internal snapshots keep their own L1 tables at their old size.
//!
//! Shrinking, as QEMU does it: the clusters past the new end are discarded, the L1 entries past
//! what the new size needs are zeroed on disk (`l1_size` stays), the refcount table is written
//! back (QEMU rewrites it whole while dropping unused refcount blocks), the file is cut after
//! its last used cluster when it is longer, and the header's size is written. Freed clusters
//! are discarded in the file. Measured on QEMU 7.2 and 10.0 through the file node's bitmaps: the
//! discard allocates an L2 table for an empty L1 entry in the range (then freed with the L1
//! tail), and the refcount table drops the refcount blocks left counting nothing but themselves.

use super::refcount::get_entry;
use super::units::{HostCluster, HostOffset};
use super::Qcow2;
use crate::format::FormatError;

/// Byte offset of `size` in the header.
const HEADER_SIZE_FIELD: u64 = 24;
/// Byte offset of `l1_size` (followed by `l1_table_offset`) in the header.
const HEADER_L1_FIELDS: u64 = 36;

impl Qcow2 {
    /// Resizes the image to `new_size` (a multiple of 512): [`Qcow2::grow`] or
    /// [`Qcow2::shrink`].
    pub fn resize(&mut self, new_size: u64) -> Result<(), FormatError> {
        if new_size < self.header.size {
            self.shrink(new_size)
        } else {
            self.grow(new_size)
        }
    }

    /// Shrinks the virtual size to `new_size` (see the module doc).
    pub fn shrink(&mut self, new_size: u64) -> Result<(), FormatError> {
        self.check_resize(new_size)?;
        let cs = self.geo.cluster_size();
        let old_size = self.header.size;
        let keep_l1 = new_size.div_ceil(self.geo.l2_span());
        let from = new_size.div_ceil(cs) * cs;
        // Freed clusters are discarded in the file (QEMU's discard type "always").
        self.discarding_freed(|q| {
            if old_size > from {
                // A full discard: entries become unallocated. Like QEMU's cluster lookup for
                // a change, it allocates an L2 table where the L1 entry has none.
                let n = (old_size - from).div_ceil(cs);
                q.for_each_table(from / cs, n, |q, l2, idx, count| {
                    q.rewrite_entries(l2, idx, count, |_, _| Some(0))
                })?;
            }
            q.shrink_l1(keep_l1)
        })?;
        let storage = self.storage.clone();
        // As measured on QEMU 7.2 and 10.0 (blockdev/resize_grow_shrink): the L2 tables and
        // refcount blocks the discard left dirty reach the file after the L1 tail is freed
        // (the freed tables are dropped unwritten), whether or not they were clean before, and
        // under lazy refcounts too (measured: the close after it writes only the header).
        self.write_caches_even_if_dirty()?;
        self.shrink_reftable()?;
        // Cut the file after its last cluster in use.
        let file_len = storage.len()?;
        let mut last = None;
        for c in (0..file_len.div_ceil(cs)).rev() {
            if self.refcounts.get(storage.as_ref(), HostCluster(c))? > 0 {
                last = Some(c);
                break;
            }
        }
        if let Some(last) = last {
            if (last + 1) * cs < file_len {
                // QEMU only warns when this fails.
                let _ = storage.set_len((last + 1) * cs);
            }
        }
        self.header.size = new_size;
        storage.write_at(&new_size.to_be_bytes(), HEADER_SIZE_FIELD)?;
        storage.flush()?;
        Ok(())
    }

    /// Zeroes the L1 entries from `keep` on in the file (`l1_size` stays), then frees the L2
    /// tables they pointed at (QEMU's `qcow2_shrink_l1_table`).
    fn shrink_l1(&mut self, keep: u64) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        let len = self.mapping.l1.len() as u64;
        if keep >= len {
            return Ok(());
        }
        let at = self.mapping.l1_offset.0 + keep * 8;
        storage.write_zeroes(at, (len - keep) * 8)?;
        storage.flush()?;
        for i in (keep..len).rev() {
            if let Some((l2, _)) = self.mapping.l2_offset(i)? {
                self.mapping.l1[i as usize] = 0;
                self.refcounts.cache.l2.discard(l2);
                self.refcounts
                    .free_bytes(storage.as_ref(), l2, self.geo.cluster_size())?;
            }
        }
        Ok(())
    }

    /// Writes the refcount table back whole, without the refcount blocks that count nothing
    /// but (possibly) themselves, then frees those blocks and discards them in the file (QEMU's
    /// `qcow2_shrink_reftable`).
    fn shrink_reftable(&mut self) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        let order = self.geo.refcount_order;
        let table = self.refcounts.table.clone();
        let mut kept = table.clone();
        for (i, &off) in table.iter().enumerate() {
            if off == 0 {
                continue;
            }
            let (own_rt, own_i) = self
                .refcounts
                .locate(self.geo.host_cluster(HostOffset(off)));
            let block = self.refcounts.block(storage.as_ref(), off)?;
            let entries = (block.len() * 8) >> order;
            let unused = (0..entries)
                .all(|e| (own_rt == i && e == own_i) || get_entry(block, e, order) == 0);
            if unused {
                kept[i] = 0;
            }
        }
        let mut raw: Vec<u8> = kept.iter().flat_map(|e| e.to_be_bytes()).collect();
        let table_bytes = u64::from(self.refcounts.table_clusters()) * self.geo.cluster_size();
        raw.resize(table_bytes as usize, 0);
        storage.write_at(&raw, self.refcounts.table_offset.0)?;
        storage.flush()?;
        let cs = self.geo.cluster_size();
        for (i, &off) in table.iter().enumerate() {
            if off == 0 || kept[i] != 0 {
                continue;
            }
            self.refcounts.cache.refblocks.discard(off);
            self.refcounts.table[i] = 0;
            let (own_rt, _) = self
                .refcounts
                .locate(self.geo.host_cluster(HostOffset(off)));
            if own_rt != i {
                self.refcounts.free_bytes(storage.as_ref(), off, cs)?;
            }
            let c = off / cs;
            self.refcounts.free_cluster_index = self.refcounts.free_cluster_index.min(c);
            // A failed discard is ignored, as for every freed cluster.
            let _ = storage.discard(off, cs);
        }
        Ok(())
    }

    /// QEMU's checks before any resize: the size unit, and a v2 image with snapshots.
    fn check_resize(&self, new_size: u64) -> Result<(), FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        if !new_size.is_multiple_of(512) {
            return Err(FormatError::Unsupported(
                "The new size must be a multiple of 512".into(),
            ));
        }
        if self.header.version < 3 && !self.snapshots.is_empty() {
            return Err(FormatError::Unsupported(
                "Can't resize a v2 image which has internal snapshots".into(),
            ));
        }
        Ok(())
    }

    /// Grows the virtual size to `new_size` (a multiple of 512, not smaller than now), growing
    /// the L1 table to exactly what the new size needs. The new range reads as zeros (or from
    /// the backing file: the caller zeroes it when there is one, as QEMU's truncate does).
    /// Refused (`Unsupported`) for shrinking. Persistent bitmaps in the image are resized in
    /// memory by the caller and stored with the new size later, as in QEMU.
    pub fn grow(&mut self, new_size: u64) -> Result<(), FormatError> {
        self.check_resize(new_size)?;
        if new_size < self.header.size {
            return Err(FormatError::Unsupported(
                "grow: the new size is smaller than the image".into(),
            ));
        }
        // As measured on QEMU (block_resize): the dirty L2 tables and refcount blocks reach
        // the file before the L1 table moves.
        self.write_caches()?;
        let needed = new_size.div_ceil(self.geo.l2_span());
        self.grow_l1(needed).map_err(|e| match e {
            FormatError::Io(io) => {
                let text = io.to_string();
                let cause = text.split(" (os error").next().unwrap_or(&text);
                FormatError::Unsupported(format!("Failed to grow the L1 table: {cause}"))
            }
            other => other,
        })?;
        self.header.size = new_size;
        self.storage
            .write_at(&new_size.to_be_bytes(), HEADER_SIZE_FIELD)?;
        self.storage.flush()?;
        Ok(())
    }

    /// Makes the active L1 table exactly `new_len` entries long (no-op when it is already at
    /// least that long).
    fn grow_l1(&mut self, new_len: u64) -> Result<(), FormatError> {
        let old_len = self.mapping.l1.len() as u64;
        if new_len <= old_len {
            return Ok(());
        }
        if new_len * 8 > super::header::MAX_L1_BYTES {
            return Err(FormatError::Io(std::io::Error::from_raw_os_error(27))); // EFBIG
        }
        let storage = self.storage.clone();
        let bytes = new_len * 8;
        let new_off = self.refcounts.alloc_bytes(storage.as_ref(), bytes)?.0;
        // Like QEMU, the new table's refcounts reach the file before the table is written.
        self.refcounts.cache.flush_refblocks(storage.as_ref())?;
        storage.flush()?;
        let mut table = self.mapping.l1.clone();
        table.resize(new_len as usize, 0);
        let raw: Vec<u8> = table.iter().flat_map(|e| e.to_be_bytes()).collect();
        storage.write_at(&raw, new_off)?;
        storage.flush()?;
        let mut fields = [0u8; 12];
        fields[..4].copy_from_slice(&(new_len as u32).to_be_bytes());
        fields[4..].copy_from_slice(&new_off.to_be_bytes());
        storage.write_at(&fields, HEADER_L1_FIELDS)?;
        storage.flush()?;
        let old_off = self.mapping.l1_offset.0;
        self.mapping.replace_l1(new_off, table);
        self.header.l1_size = new_len as u32;
        self.header.l1_table_offset = new_off;
        self.refcounts
            .free_bytes(storage.as_ref(), old_off, old_len * 8)?;
        Ok(())
    }
}
