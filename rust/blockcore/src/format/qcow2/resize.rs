//! Growing the image: the virtual size and the L1 table (QEMU's `qcow2_co_truncate` for a
//! larger size without preallocation, and `qcow2_grow_l1_table`).
//!
//! The L1 table must map the whole virtual size (an image whose table is shorter is refused at
//! open). Growing it places a new table in free clusters (the lowest run that fits, as every
//! allocation), copies the old entries, points the header's `l1_size` and `l1_table_offset` at
//! it, then frees the old table (no discard passed down: QEMU's `pass-discard-other` is off).
//! Internal snapshots keep their own L1 tables at their old size.

use super::Qcow2;
use crate::format::FormatError;

/// Byte offset of `size` in the header.
const HEADER_SIZE_FIELD: u64 = 24;
/// Byte offset of `l1_size` (followed by `l1_table_offset`) in the header.
const HEADER_L1_FIELDS: u64 = 36;

impl Qcow2 {
    /// Grows the virtual size to `new_size` (a multiple of 512, not smaller than now), growing
    /// the L1 table to exactly what the new size needs. The new range reads as zeros (or from
    /// the backing file: the caller zeroes it when there is one, as QEMU's truncate does).
    /// Refused (`Unsupported`) with persistent bitmaps in the image, and for shrinking.
    pub fn grow(&mut self, new_size: u64) -> Result<(), FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        if !new_size.is_multiple_of(512) {
            return Err(FormatError::Unsupported(
                "The new size must be a multiple of 512".into(),
            ));
        }
        if new_size < self.header.size {
            return Err(FormatError::Unsupported(
                "shrinking a qcow2 image is not supported by this reference".into(),
            ));
        }
        if self.header.version < 3 && !self.snapshots.is_empty() {
            return Err(FormatError::Unsupported(
                "Can't resize a v2 image which has internal snapshots".into(),
            ));
        }
        if !self.directory.is_empty() {
            return Err(FormatError::Unsupported(
                "resizing an image with persistent bitmaps is not supported by this reference"
                    .into(),
            ));
        }
        // As measured on QEMU (block_resize): the dirty L2 tables and refcount blocks reach
        // the file before the L1 table moves.
        self.write_caches()?;
        let needed = new_size.div_ceil(self.geo.l2_span());
        self.grow_l1(needed)?;
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
