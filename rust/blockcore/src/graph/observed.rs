//! A store wrapper that logs the byte ranges written through it, so the graph can mark the
//! dirty bitmaps of a protocol node with the writes its format parent caused.

use crate::storage::Storage;
use crate::units::ByteRange;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A [`Storage`] that remembers which ranges were written since the last [`take_writes`].
///
/// [`take_writes`]: ObservedStorage::take_writes
#[derive(Debug)]
pub struct ObservedStorage {
    inner: Arc<dyn Storage>,
    writes: Mutex<Vec<ByteRange>>,
    /// Whether discards reach the store (QEMU's `BDRV_O_UNMAP`): a node opened as another
    /// node's child always passes them; one added on its own only with `discard: unmap`.
    unmap: AtomicBool,
}

impl ObservedStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            writes: Mutex::new(Vec::new()),
            unmap: AtomicBool::new(true),
        }
    }

    /// Sets whether discard requests reach the store; ignored ones do nothing at all (QEMU
    /// returns before the request is tracked, so no bitmap is marked either).
    pub fn set_unmap(&self, on: bool) {
        self.unmap.store(on, Ordering::Relaxed);
    }

    /// The ranges written since the last call, in order.
    pub fn take_writes(&self) -> Vec<ByteRange> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn log(&self, range: ByteRange) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(range);
    }
}

impl Storage for ObservedStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    // A request marks its node's bitmaps when it finishes, failed or not (QEMU's request end).
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let done = self.inner.write_at(data, offset);
        self.log(ByteRange::new(offset, data.len() as u64));
        done
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        let done = self.inner.write_zeroes(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.unmap.load(Ordering::Relaxed) {
            return Ok(());
        }
        let done = self.inner.discard(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let done = self.inner.zero_range(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        self.inner.is_hole(offset, len)
    }
    fn extent(&self, offset: u64, len: u64) -> io::Result<crate::storage::Extent> {
        self.inner.extent(offset, len)
    }

    fn filename(&self) -> Option<&str> {
        self.inner.filename()
    }
    fn debug_event(&self, event: &str) {
        self.inner.debug_event(event)
    }
    fn flush_request(&self) -> io::Result<()> {
        self.inner.flush_request()
    }
}
