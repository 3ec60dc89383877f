//! A store on a host file, with positioned I/O (no shared cursor, so `&self` suffices).

use super::{Extent, Storage};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// A host file opened read-only or read-write.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    filename: String,
    read_only: bool,
}

impl FileStorage {
    /// Opens an existing file; `read_only` opens it without write access.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Ok(Self {
            file,
            filename: path.to_string_lossy().into_owned(),
            read_only,
        })
    }

    /// Creates (or truncates) a file for reading and writing.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            file,
            filename: path.to_string_lossy().into_owned(),
            read_only: false,
        })
    }

    /// Opens (creating it if needed) a file for reading and writing without truncating it, as
    /// QEMU's `file` driver does before it checks the locks of an image it is about to create.
    pub fn open_for_create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Self {
            file,
            filename: path.to_string_lossy().into_owned(),
            read_only: false,
        })
    }

    /// The open file (for image locks).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `fallocate(mode)` over the range; `Ok(false)` when the file system cannot do it (the
    /// caller falls back to writing zeros, as QEMU's `file` driver does).
    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<bool> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if n == 0 {
            return Ok(true);
        }
        // SAFETY: fallocate on an open fd changes only the file, no memory of ours.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, n) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(false),
            _ => Err(e),
        }
    }

    /// Whether the file was opened without write access.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

impl Storage for FileStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(9)); // EBADF, as a write to an O_RDONLY fd
        }
        self.file.write_all_at(data, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn filename(&self) -> Option<&str> {
        Some(&self.filename)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if self.fallocate(mode, offset, len)? {
            return Ok(());
        }
        let end = self.len()?.min(offset.saturating_add(len));
        if end > offset {
            self.write_zeroes(offset, end - offset)?;
        }
        Ok(())
    }

    /// QEMU's `file` driver zeroes with `FALLOC_FL_ZERO_RANGE` where it can (no data for
    /// `SEEK_DATA` afterwards, growing the file if the range ends past it), else it writes
    /// zeros; so does this store, for write-zeroes with or without `BDRV_REQ_NO_FALLBACK`.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.fallocate(libc::FALLOC_FL_ZERO_RANGE, offset, len)? {
            return Ok(());
        }
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            self.write_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// What the file occupies on disk: `st_blocks` (512-byte units), as QEMU's `file` driver
    /// answers `bdrv_get_allocated_file_size`. Blocks allocated unwritten
    /// (`FALLOC_FL_ZERO_RANGE`) count, though `SEEK_DATA` skips them.
    fn allocated_size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.file.metadata()?.blocks() * 512))
    }

    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        let Ok(start) = libc::off_t::try_from(offset) else {
            return Ok(true);
        };
        // SAFETY: lseek on an open fd has no memory effects; SEEK_DATA only reads the offset.
        let data = unsafe { libc::lseek(self.file.as_raw_fd(), start, libc::SEEK_DATA) };
        if data == -1 {
            let e = io::Error::last_os_error();
            // ENXIO: no data at or after `offset` (a trailing hole, or past the end).
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(true),
                _ => Ok(false),
            };
        }
        Ok(data as u64 >= offset.saturating_add(len))
    }

    fn extent(&self, offset: u64, len: u64) -> io::Result<Extent> {
        let fd = self.file.as_raw_fd();
        let Ok(start) = libc::off_t::try_from(offset) else {
            return Ok(Extent { hole: true, len });
        };
        // SAFETY: lseek on an open fd has no memory effects.
        let data = unsafe { libc::lseek(fd, start, libc::SEEK_DATA) };
        if data == -1 {
            // ENXIO: a trailing hole (or past the end); other errors: no information, data.
            let hole = io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
            return Ok(Extent { hole, len });
        }
        let data = data as u64;
        if data > offset {
            let len = len.min(data - offset);
            return Ok(Extent { hole: true, len });
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let run = if hole == -1 {
            len
        } else {
            (hole as u64).saturating_sub(offset).clamp(1, len.max(1))
        };
        Ok(Extent {
            hole: false,
            len: run.min(len),
        })
    }
}
