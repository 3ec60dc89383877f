//! QEMU's image locking (`file` driver, `locking=auto` on Linux): open file description (OFD)
//! byte-range locks on the image file, so that two users of one image, in one process or in
//! two, refuse each other as QEMU does.
//!
//! For every permission bit `i` a user holds, byte `100 + i` is read-locked; for every bit it
//! does not share, byte `200 + i` is read-locked. A new user wanting permission `i` fails if
//! anyone else holds byte `200 + i` (`Failed to get "<perm>" lock`); one not sharing `i` fails if
//! anyone else holds byte `100 + i` (`Failed to get shared "<perm>" lock`). Locks of the same
//! open file description never conflict; they go away when the file is closed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `BLK_PERM_CONSISTENT_READ`.
pub const PERM_CONSISTENT_READ: u8 = 0x01;
/// `BLK_PERM_WRITE`.
pub const PERM_WRITE: u8 = 0x02;
/// `BLK_PERM_WRITE_UNCHANGED`.
pub const PERM_WRITE_UNCHANGED: u8 = 0x04;
/// `BLK_PERM_RESIZE`.
pub const PERM_RESIZE: u8 = 0x08;
/// `BLK_PERM_ALL`.
pub const PERM_ALL: u8 = 0x0f;

const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];
const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

fn flock(kind: libc::c_short, offset: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset;
    fl.l_len = 1;
    fl
}

fn set(file: &File, offset: i64, lock: bool) -> io::Result<()> {
    let kind = if lock { libc::F_RDLCK } else { libc::F_UNLCK };
    let fl = flock(kind as libc::c_short, offset);
    // SAFETY: F_OFD_SETLK reads a valid `flock` through the pointer; the fd is open.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether another open file description holds a lock on byte `offset`.
fn held_elsewhere(file: &File, offset: i64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, offset);
    // SAFETY: F_OFD_GETLK reads and writes a valid `flock` through the pointer; the fd is open.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// A lock conflict, in QEMU's words (`Failed to get "write" lock`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LockConflict(pub String);

/// Why locking failed: a conflict, or the lock calls themselves.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds a conflicting lock.
    #[error(transparent)]
    Conflict(#[from] LockConflict),
    /// `fcntl` failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// QEMU's `bdrv_perm_names`: the names of the bits of `perm`, in bit order, comma-separated.
pub fn perm_names(perm: u8) -> String {
    PERM_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| perm & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// QEMU's `raw_check_lock_bytes`: can a user with `perm`, sharing `shared`, open `file`?
pub fn check(file: &File, perm: u8, shared: u8) -> Result<(), LockError> {
    for (i, name) in PERM_NAMES.iter().enumerate() {
        if perm & (1 << i) != 0 && held_elsewhere(file, SHARED_BASE + i as i64)? {
            return Err(LockConflict(format!("Failed to get \"{name}\" lock")).into());
        }
    }
    for (i, name) in PERM_NAMES.iter().enumerate() {
        if shared & (1 << i) == 0 && held_elsewhere(file, PERM_BASE + i as i64)? {
            return Err(LockConflict(format!("Failed to get shared \"{name}\" lock")).into());
        }
    }
    Ok(())
}

/// QEMU's `raw_apply_lock_bytes` with unlock: holds exactly the bytes for `perm` and `shared`.
pub fn apply(file: &File, perm: u8, shared: u8) -> io::Result<()> {
    for i in 0..PERM_NAMES.len() {
        let bit = 1u8 << i;
        set(file, PERM_BASE + i as i64, perm & bit != 0)?;
        set(file, SHARED_BASE + i as i64, shared & bit == 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn writers_refuse_each_other_and_readers_refuse_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"x").unwrap();
        let (a, b) = (open(&path), open(&path));
        let rw = (
            PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE,
            PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
        );
        let ro = (
            PERM_CONSISTENT_READ,
            PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
        );
        check(&a, rw.0, rw.1).unwrap();
        apply(&a, rw.0, rw.1).unwrap();
        // The same description never conflicts with itself.
        check(&a, rw.0, rw.1).unwrap();
        let err = check(&b, rw.0, rw.1).unwrap_err().to_string();
        assert_eq!(err, "Failed to get \"write\" lock");
        let err = check(&b, ro.0, ro.1).unwrap_err().to_string();
        assert_eq!(err, "Failed to get shared \"write\" lock");
        // Downgraded to read-only: other readers are fine, writers still are not.
        apply(&a, ro.0, ro.1).unwrap();
        check(&b, ro.0, ro.1).unwrap();
        assert!(check(&b, rw.0, rw.1).is_err());
        // Nothing held: anything goes; closing drops the locks too.
        apply(&a, 0, PERM_ALL).unwrap();
        check(&b, rw.0, rw.1).unwrap();
        apply(&b, rw.0, rw.1).unwrap();
        drop(b);
        check(&a, rw.0, rw.1).unwrap();
    }
}
