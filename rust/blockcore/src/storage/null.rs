//! The store of QEMU's `null-co` driver: a fixed length, reads zeros, drops writes.

use super::Storage;
use std::io;

/// A `null-co` store of `len` bytes.
#[derive(Debug)]
pub struct NullStorage {
    len: u64,
}

impl NullStorage {
    /// A store of `len` bytes.
    pub fn new(len: u64) -> Self {
        Self { len }
    }
}

impl Storage for NullStorage {
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(0);
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
}
