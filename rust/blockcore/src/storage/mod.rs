//! The storage layer: byte-addressed backing stores under the format drivers.
//!
//! A [`Storage`] is what QEMU's protocol drivers (`file`) provide to format drivers (`raw`,
//! `qcow2`): positioned reads and writes, length, truncation and flush. It knows nothing of
//! formats. Methods take `&self` so that a format driver and the graph's protocol node can share
//! one store (`Arc<dyn Storage>`), as the qcow2 node and its `file` child share one file in QEMU.

mod blkdebug;
mod file;
pub mod lock;
mod memory;
mod null;

pub use blkdebug::{BlkdebugRules, BlkdebugStorage, InjectRule, IoType, StateRule};
pub use file::FileStorage;
pub use memory::MemStorage;
pub use null::NullStorage;

use std::fmt::Debug;
use std::io;

/// The first extent of a range as the `file` driver's block status sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// A hole (or past the end): reads as zeros, no data.
    pub hole: bool,
    /// Its length in bytes, at most the length asked about.
    pub len: u64,
}

/// A byte-addressed store.
pub trait Storage: Send + Sync + Debug {
    /// Fills `buf` from `offset`; bytes past the end of the store read as zero.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `data` at `offset`, growing the store if needed.
    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the store is zero bytes long.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes written data durable.
    fn flush(&self) -> io::Result<()>;
    /// Makes `[offset, offset + len)` read as zeros (a file store may punch a hole instead).
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }
    /// QEMU's discard on a `file` node: afterwards `[offset, offset + len)` reads as zeros. A
    /// file store punches a hole and keeps its length (`FALLOC_FL_PUNCH_HOLE |
    /// FALLOC_FL_KEEP_SIZE`); others write zeros up to their current length.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = self.len()?.min(offset.saturating_add(len));
        if end > offset {
            self.write_zeroes(offset, end - offset)?;
        }
        Ok(())
    }
    /// QEMU's write-zeroes with `BDRV_REQ_NO_FALLBACK` on a `file` node: the range reads as
    /// zeros, growing the store if it ends past it. A file store allocates it without writing
    /// (`FALLOC_FL_ZERO_RANGE`: no data for `SEEK_DATA`); others fall back to
    /// [`Storage::write_zeroes`].
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }
    /// The file name, for stores that have one (used in query output and error messages).
    fn filename(&self) -> Option<&str> {
        None
    }
    /// Signals a debug event (QEMU's `BLKDBG_EVENT`, e.g. `read_aio` before a format driver
    /// reads guest data) to the store. Only `blkdebug` reacts; wrappers forward it.
    fn debug_event(&self, event: &str) {
        let _ = event;
    }
    /// Flushes to disk; the same as [`Storage::flush`] but lets an error-injecting store see a
    /// flush request (its `iotype` `flush`).
    fn flush_request(&self) -> io::Result<()> {
        self.flush()
    }
    /// Whether `[offset, offset + len)` holds no data (a hole, or past the end), as QEMU's
    /// `file` driver reports it in block status (`SEEK_DATA`). Stores that cannot tell say no.
    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        let _ = (offset, len);
        Ok(false)
    }
    /// Bytes the store really occupies on the host (QEMU's `bdrv_get_allocated_file_size`: a
    /// file's `st_blocks` times 512); `None` where the store cannot tell (QEMU: ENOTSUP).
    fn allocated_size(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    /// The extent at `offset` (at most `len` bytes): a hole up to the next data, or data up to
    /// the next hole, as QEMU's `file` driver answers block status (`SEEK_DATA`, `SEEK_HOLE`).
    /// Stores that cannot tell answer [`Storage::is_hole`] for the whole range.
    fn extent(&self, offset: u64, len: u64) -> io::Result<Extent> {
        Ok(Extent {
            hole: self.is_hole(offset, len)?,
            len,
        })
    }
}
