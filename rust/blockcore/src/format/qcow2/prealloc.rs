//! QEMU's guess that an image is metadata-preallocated (`qemu-img create -o
//! preallocation=metadata`: every guest cluster mapped to a host cluster the file never
//! wrote), and what it changes: qcow2's block status then asks the generic layer to look at
//! the `file` child under each data run (`BDRV_BLOCK_RECURSE`), where a hole reads as zeros.
//!
//! The guess is made once per open, at the first block-status query of the image (any: a
//! backup's, or the image's own while it writes), and compares the host clusters with a
//! non-zero refcount (up to the file's end) with the clusters the file really occupies
//! (`st_blocks`): preallocated when the first reach `max(real * 10 / 9, real + 2)`. Measured on
//! QEMU 7.2 and 10.0 (`qemu-img map` of images whose files were punched with `fallocate -p`):
//! 6 refcounted clusters over 4 occupied are preallocated, over 5 not; 35 over 32 are, over
//! 33 not. A file whose size cannot be told (null-co) is never preallocated.

use super::units::HostCluster;
use super::Qcow2;
use crate::format::FormatError;
use crate::units::SECTOR;

/// How many host clusters with a non-zero refcount make an image with `real_clusters`
/// clusters occupied on the host count as metadata-preallocated
/// (`qcow2_detect_metadata_preallocation`'s threshold).
pub fn metadata_preallocation_threshold(real_clusters: u64) -> u64 {
    (real_clusters.saturating_mul(10) / 9).max(real_clusters.saturating_add(2))
}

impl Qcow2 {
    /// Whether this open of the image counts as metadata-preallocated: guessed at the first
    /// call (QEMU's first block-status query), then kept until the image is closed. A failed
    /// guess is a no.
    pub(super) fn metadata_preallocated(&mut self) -> bool {
        if let Some(known) = self.metadata_preallocation {
            return known;
        }
        let guess = self.detect_metadata_preallocation().unwrap_or(false);
        self.metadata_preallocation = Some(guess);
        guess
    }

    /// Counts the refcounted host clusters up to the file's end, stopping at the threshold
    /// the file's real allocation sets.
    fn detect_metadata_preallocation(&mut self) -> Result<bool, FormatError> {
        let storage = self.storage.clone();
        let file_length = storage.len()?.next_multiple_of(SECTOR);
        let Some(real) = storage.allocated_size()? else {
            return Ok(false);
        };
        let cs = self.geo.cluster_size();
        let threshold = metadata_preallocation_threshold(real / cs);
        let end = file_length.div_ceil(cs);
        let mut counted = 0;
        let mut c = 0;
        while c < end && counted < threshold {
            if self.refcounts.get(storage.as_ref(), HostCluster(c))? != 0 {
                counted += 1;
            }
            c += 1;
        }
        Ok(counted >= threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::qcow2::CreateOptions;
    use crate::format::{FormatDriver, RunKind};
    use crate::storage::{FileStorage, Storage};
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use tempfile::TempDir;

    const K64: u64 = 65536;

    #[test]
    fn threshold_is_two_more_for_small_files_and_a_ninth_more_for_large() {
        assert_eq!(metadata_preallocation_threshold(0), 2);
        assert_eq!(metadata_preallocation_threshold(4), 6);
        assert_eq!(metadata_preallocation_threshold(5), 7);
        assert_eq!(metadata_preallocation_threshold(17), 19);
        assert_eq!(metadata_preallocation_threshold(18), 20);
        assert_eq!(metadata_preallocation_threshold(32), 35);
        assert_eq!(metadata_preallocation_threshold(33), 36);
    }

    /// A 64M image (64k clusters) with `data` clusters written from guest offset 0, its file
    /// fully allocated, then its first data cluster punched out, then more data clusters and
    /// the L2 table's unused tail until the file occupies `real` bytes (as the measurement on
    /// QEMU did). Host layout: header, refcount table, refcount block, L1, L2, data clusters.
    fn punched(dir: &TempDir, data: u64, real: u64) -> Arc<FileStorage> {
        let path = dir.path().join("p.qcow2");
        let st = Arc::new(FileStorage::create(&path).unwrap());
        Qcow2::create(st.clone(), &CreateOptions::new(64 << 20)).unwrap();
        let mut q = Qcow2::open(st.clone(), false).unwrap();
        q.write(0, &vec![0x11; (data * K64) as usize]).unwrap();
        q.flush().unwrap();
        drop(q);
        let len = libc::off_t::try_from(st.len().unwrap()).unwrap();
        // SAFETY: fallocate (mode 0: allocate, keep the contents) on an open fd.
        let r = unsafe { libc::fallocate(st.file().as_raw_fd(), 0, 0, len) };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let allocated = || st.allocated_size().unwrap().unwrap();
        st.discard(5 * K64, K64).unwrap();
        let mut c = 6;
        while allocated() >= real + K64 && c < 5 + data {
            st.discard(c * K64, K64).unwrap();
            c += 1;
        }
        if allocated() > real {
            let rest = (allocated() - real) / 4096 * 4096;
            st.discard(4 * K64 + 4096, rest).unwrap();
        }
        assert_eq!(allocated() / K64, real / K64);
        st
    }

    fn guessed(st: Arc<FileStorage>) -> bool {
        let mut q = Qcow2::open(st, false).map_err(|e| e.to_string()).unwrap();
        let run = q.block_status(true, 0, K64).unwrap();
        assert_eq!(run.kind, RunKind::Data);
        run.recurse.is_some()
    }

    #[test]
    fn detect_six_refcounted_over_four_real_clusters_is_preallocated() {
        let dir = TempDir::new().unwrap();
        assert!(guessed(punched(&dir, 1, 4 * K64 + K64 / 2)));
    }

    #[test]
    fn detect_six_refcounted_over_five_real_clusters_is_not() {
        let dir = TempDir::new().unwrap();
        assert!(!guessed(punched(&dir, 1, 5 * K64 + K64 / 2)));
    }

    #[test]
    fn detect_thirty_five_over_thirty_two_is_preallocated_over_thirty_three_not() {
        let dir = TempDir::new().unwrap();
        assert!(guessed(punched(&dir, 30, 32 * K64 + K64 / 2)));
        let dir = TempDir::new().unwrap();
        assert!(!guessed(punched(&dir, 30, 33 * K64 + K64 / 2)));
    }

    #[test]
    fn detect_once_per_open_at_the_first_query() {
        let dir = TempDir::new().unwrap();
        let st = punched(&dir, 1, 4 * K64 + K64 / 2);
        let mut q = Qcow2::open(st.clone(), false).unwrap();
        assert!(q.block_status(true, 0, K64).unwrap().recurse.is_some());
        // The file fills up: this open keeps its guess, a new one guesses again.
        st.write_at(&vec![0x22; 2 * K64 as usize], 5 * K64).unwrap();
        assert!(q.block_status(true, 0, K64).unwrap().recurse.is_some());
        drop(q);
        assert!(!guessed(st));
    }

    #[test]
    fn detect_without_an_allocated_size_is_not_preallocated() {
        let st = Arc::new(crate::storage::MemStorage::new());
        Qcow2::create(st.clone(), &CreateOptions::new(4 << 20)).unwrap();
        let mut q = Qcow2::open(st, false).unwrap();
        q.write(0, &vec![0x11; K64 as usize]).unwrap();
        assert_eq!(q.block_status(true, 0, K64).unwrap().recurse, None);
    }
}
