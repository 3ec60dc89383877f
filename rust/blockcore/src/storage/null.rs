//! The store of QEMU's `null-co` driver: a fixed length, drops writes; reads fill the buffer
//! with zeros only with `read-zeroes` (QEMU's default leaves the reader's buffer untouched).

use super::{Extent, Storage};
use std::io;

/// A `null-co` store of `len` bytes.
#[derive(Debug)]
pub struct NullStorage {
    len: u64,
    read_zeroes: bool,
}

impl NullStorage {
    /// A store of `len` bytes whose reads return zeros.
    pub fn new(len: u64) -> Self {
        Self::with_read_zeroes(len, true)
    }

    /// A store of `len` bytes; `read_zeroes` is QEMU's option: without it a read leaves the
    /// buffer as the reader filled it.
    pub fn with_read_zeroes(len: u64, read_zeroes: bool) -> Self {
        Self { len, read_zeroes }
    }
}

impl Storage for NullStorage {
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        if self.read_zeroes {
            buf.fill(0);
        }
        Ok(())
    }

    fn write_at(&self, _data: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    /// QEMU's null driver cannot be resized (`truncate` is not implemented).
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(95))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// QEMU's null block status: the whole range at once, zeros with `read-zeroes`, else
    /// neither data nor zeros (the caller reads the latter as "not a hole").
    fn extent(&self, _offset: u64, len: u64) -> io::Result<Extent> {
        Ok(Extent {
            hole: self.read_zeroes,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zeros_and_drops_writes() {
        let s = NullStorage::new(4096);
        s.write_at(&[0x5a; 512], 0).unwrap();
        let mut buf = [0xffu8; 512];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
        assert_eq!(s.len().unwrap(), 4096);
        assert!(s.set_len(8192).is_err());
        assert_eq!(s.len().unwrap(), 4096);
    }

    #[test]
    fn without_read_zeroes_reads_leave_the_buffer_untouched() {
        let s = NullStorage::with_read_zeroes(4096, false);
        let mut buf = [0xabu8; 512];
        s.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|b| *b == 0xab));
    }
}
