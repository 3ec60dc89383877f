//! A store wrapper that logs the byte ranges written through it, so the graph can mark the
//! dirty bitmaps of a protocol node with the writes its format parent caused; for a `file`
//! node it also keeps QEMU's block-status cache (the last data extent block status found).

use crate::storage::{Extent, Storage};
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
    /// QEMU's block-status cache of a protocol node without children (`bdrv_bsc_*`): the last
    /// data extent `[start, end)` a `want_zero` query found, answered again without asking the
    /// file until a write-zeroes or discard overlapping it. Plain writes leave it, so it may
    /// end before the file's data now does. `None`: the node keeps no cache (blkdebug, which
    /// has a child; null-co).
    status_cache: Option<Mutex<Option<(u64, u64)>>>,
}

impl ObservedStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            writes: Mutex::new(Vec::new()),
            unmap: AtomicBool::new(true),
            status_cache: None,
        }
    }

    /// Wraps the store of a `file` node, which keeps QEMU's block-status cache.
    pub fn with_status_cache(inner: Arc<dyn Storage>) -> Self {
        Self {
            status_cache: Some(Mutex::new(None)),
            ..Self::new(inner)
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

    /// `bdrv_bsc_invalidate_range`: a write-zeroes or discard overlapping the cached extent
    /// drops it.
    fn invalidate(&self, offset: u64, len: u64) {
        if let Some(cache) = &self.status_cache {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.is_some_and(|(start, end)| offset < end && start < offset.saturating_add(len)) {
                *c = None;
            }
        }
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
        self.invalidate(offset, len);
        let done = self.inner.write_zeroes(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.unmap.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.invalidate(offset, len);
        let done = self.inner.discard(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.invalidate(offset, len);
        let done = self.inner.zero_range(offset, len);
        self.log(ByteRange::new(offset, len));
        done
    }
    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        self.inner.is_hole(offset, len)
    }
    /// With the block-status cache: a query inside the cached data extent is data up to its
    /// end; otherwise the file is asked for its whole extent (QEMU's `file` driver answers
    /// past the length asked), a data extent is cached, and the answer is cut to `len`.
    /// Truncation keeps the cache (measured: a shrink and regrow still answers data).
    fn extent(&self, offset: u64, len: u64) -> io::Result<Extent> {
        let Some(cache) = &self.status_cache else {
            return self.inner.extent(offset, len);
        };
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((start, end)) = *c {
            if (start..end).contains(&offset) {
                let len = len.min(end - offset);
                return Ok(Extent { hole: false, len });
            }
        }
        let whole = self
            .inner
            .extent(offset, u64::MAX / 2 - offset.min(u64::MAX / 2))?;
        if !whole.hole && whole.len > 0 {
            *c = Some((offset, offset + whole.len));
        }
        Ok(Extent {
            hole: whole.hole,
            len: whole.len.min(len),
        })
    }
    fn allocated_size(&self) -> io::Result<Option<u64>> {
        self.inner.allocated_size()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FileStorage;
    use tempfile::TempDir;

    const K64: u64 = 65536;

    fn cached(dir: &TempDir) -> ObservedStorage {
        let path = dir.path().join("f");
        let f = FileStorage::create(&path).unwrap();
        f.set_len(16 * K64).unwrap();
        f.write_at(&[0x11; K64 as usize], 2 * K64).unwrap();
        ObservedStorage::with_status_cache(Arc::new(f))
    }

    #[test]
    fn status_cache_answers_the_old_extent_after_a_write_extends_it() {
        let dir = TempDir::new().unwrap();
        let s = cached(&dir);
        let e = s.extent(2 * K64, 16 * K64).unwrap();
        assert_eq!(
            e,
            Extent {
                hole: false,
                len: K64
            }
        );
        s.write_at(&[0x22; K64 as usize], 3 * K64).unwrap();
        // Inside the cached extent: its end, not the file's.
        let e = s.extent(2 * K64 + 4096, 16 * K64).unwrap();
        assert_eq!(
            e,
            Extent {
                hole: false,
                len: K64 - 4096
            }
        );
        // Past it: the file, which caches the new extent.
        let e = s.extent(3 * K64, 16 * K64).unwrap();
        assert_eq!(
            e,
            Extent {
                hole: false,
                len: K64
            }
        );
    }

    #[test]
    fn status_cache_is_dropped_by_an_overlapping_write_zeroes_or_discard() {
        let dir = TempDir::new().unwrap();
        let s = cached(&dir);
        s.extent(2 * K64, K64).unwrap();
        s.write_at(&[0x22; K64 as usize], 3 * K64).unwrap();
        // Not overlapping: kept.
        s.zero_range(8 * K64, K64).unwrap();
        assert_eq!(s.extent(2 * K64, 16 * K64).unwrap().len, K64);
        s.discard(2 * K64 + 4096, 4096).unwrap();
        // Asked again: data to the hole just punched.
        let e = s.extent(2 * K64, 16 * K64).unwrap();
        assert_eq!(
            e,
            Extent {
                hole: false,
                len: 4096
            }
        );
    }

    #[test]
    fn status_cache_survives_a_truncation() {
        let dir = TempDir::new().unwrap();
        let s = cached(&dir);
        s.extent(2 * K64, K64).unwrap();
        s.set_len(2 * K64).unwrap();
        s.set_len(16 * K64).unwrap();
        // As QEMU: the file has no data there any more, the cache still says data.
        assert_eq!(
            s.extent(2 * K64, 16 * K64).unwrap(),
            Extent {
                hole: false,
                len: K64
            }
        );
    }

    #[test]
    fn status_cache_answer_is_cut_to_the_length_asked() {
        let dir = TempDir::new().unwrap();
        let s = cached(&dir);
        assert_eq!(s.extent(2 * K64, 4096).unwrap().len, 4096);
        assert_eq!(s.extent(2 * K64, 8192).unwrap().len, 8192);
        assert_eq!(
            s.extent(0, 16 * K64).unwrap(),
            Extent {
                hole: true,
                len: 2 * K64
            }
        );
    }
}
