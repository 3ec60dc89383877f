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
//! its last used cluster when it is longer, and the header's size is written. This reference
//! shrinks only when nothing past the new end is mapped and the L1 table keeps every entry
//! (measured on QEMU 7.2 and 10.0: the refcount table and header writes), and says so
//! otherwise.

use super::units::{GuestOffset, HostCluster};
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

    /// Shrinks the virtual size to `new_size` (see the module doc); refused (`Unsupported`)
    /// when a cluster past the new end is mapped.
    pub fn shrink(&mut self, new_size: u64) -> Result<(), FormatError> {
        self.check_resize(new_size)?;
        let cs = self.geo.cluster_size();
        let keep_l1 = new_size.div_ceil(self.geo.l2_span());
        let from = new_size.div_ceil(cs) * cs;
        // QEMU also zeroes the L1 entries the new size no longer needs, and then writes and
        // discards more on the file than this reference has measured; refused until it has.
        if self.mapped_from(from, keep_l1)? || keep_l1 < self.mapping.l1.len() as u64 {
            return Err(FormatError::Unsupported(
                "shrinking a qcow2 image over mapped clusters or L1 entries is not supported by this \
                 reference"
                    .into(),
            ));
        }
        let storage = self.storage.clone();
        // The refcount table, written back whole (no refcount block became unused).
        let table_bytes = u64::from(self.refcounts.table_clusters()) * cs;
        let table_offset = self.refcounts.table_offset.0;
        let mut table = vec![0u8; table_bytes as usize];
        storage.read_at(&mut table, table_offset)?;
        storage.write_at(&table, table_offset)?;
        storage.flush()?;
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

    /// Whether any guest cluster from `from` on is mapped (data, zero flags, compressed), or an
    /// L1 entry from index `keep_l1` on points at an L2 table.
    fn mapped_from(&mut self, from: u64, keep_l1: u64) -> Result<bool, FormatError> {
        let storage = self.storage.clone();
        let span = self.geo.l2_span();
        for l1i in 0..self.mapping.l1.len() as u64 {
            let Some((l2, _)) = self.mapping.l2_offset(l1i)? else {
                continue;
            };
            if l1i >= keep_l1 {
                return Ok(true);
            }
            let start = l1i * span;
            if start + span <= from {
                continue;
            }
            let first = self.geo.l2_index(GuestOffset(from.max(start)));
            let table = self.mapping.l2_table(storage.as_ref(), l2)?;
            if table[first..].iter().any(|e| *e != 0) {
                return Ok(true);
            }
        }
        Ok(false)
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
