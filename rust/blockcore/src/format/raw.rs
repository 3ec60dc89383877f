//! The `raw` format: guest offset = store offset; the virtual size is the store's length.

use super::{FormatDriver, FormatError, RunKind, StatusRun};
use crate::storage::Storage;
use std::sync::Arc;

/// A raw image.
#[derive(Debug)]
pub struct Raw {
    storage: Arc<dyn Storage>,
    size: u64,
    read_only: bool,
}

impl Raw {
    /// Opens a raw image; its size is the store's length at open time (as QEMU's `raw` driver).
    pub fn open(storage: Arc<dyn Storage>, read_only: bool) -> Result<Self, FormatError> {
        let size = storage.len()?;
        Ok(Self {
            storage,
            size,
            read_only,
        })
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), FormatError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(FormatError::OutOfRange {
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<(), FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        self.check(offset, len)
    }
}

impl FormatDriver for Raw {
    fn format_name(&self) -> &'static str {
        "raw"
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn cluster_size(&self) -> Option<u64> {
        None
    }
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Raw passes block status to its file: holes read as zeros, the rest is data (all of it
    /// without `want_zero`, where the file does not look for holes).
    fn block_status(
        &mut self,
        want_zero: bool,
        offset: u64,
        len: u64,
    ) -> Result<StatusRun, FormatError> {
        let len = len.min(self.size.saturating_sub(offset));
        if !want_zero {
            return Ok(StatusRun::new(RunKind::Data, len));
        }
        let e = self.storage.extent(offset, len)?;
        let kind = if e.hole { RunKind::Zero } else { RunKind::Data };
        Ok(StatusRun::new(kind, e.len))
    }

    fn refresh_size(&mut self, len: u64) {
        self.size = len;
    }

    /// The `file` child was resized first; the raw node takes its new size.
    fn truncate(&mut self, new_size: u64) -> Result<(), FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        self.size = new_size;
        Ok(())
    }

    fn set_read_only(&mut self) {
        self.read_only = true;
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.check(offset, buf.len() as u64)?;
        self.storage.debug_event("read_aio");
        Ok(self.storage.read_at(buf, offset)?)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        self.check_write(offset, data.len() as u64)?;
        self.storage.debug_event("write_aio");
        Ok(self.storage.write_at(data, offset)?)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), FormatError> {
        self.check_write(offset, len)?;
        Ok(self.storage.write_zeroes(offset, len)?)
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), FormatError> {
        self.check_write(offset, len)?;
        Ok(self.storage.discard(offset, len)?)
    }
    fn flush(&mut self) -> Result<(), FormatError> {
        self.storage.debug_event("flush_to_disk");
        Ok(self.storage.flush_request()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn raw_write_past_end_is_out_of_range() {
        let store = Arc::new(MemStorage::new());
        store.set_len(4096).unwrap();
        let mut raw = Raw::open(store, false).unwrap();
        assert!(matches!(
            raw.write(4000, &[0; 200]),
            Err(FormatError::OutOfRange { .. })
        ));
        raw.write(0, b"abc").unwrap();
        let mut buf = [0u8; 3];
        raw.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abc");
    }
}
