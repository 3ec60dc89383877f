//! `create_image`: makes a new image file the way `qemu-img create`, drive-backup and external
//! snapshots (`blockdev-snapshot-sync`) do.

use crate::errors::format_to_py;
use pyo3::prelude::*;

/// Creates (or truncates) `filename` as an empty image of `driver` (`qcow2` or `raw`) and
/// `size` bytes, as `qemu-img create -f DRIVER [-b BACKING -F BACKING_FORMAT]` does; the backing
/// file is only recorded. Errors: ImageError(message, errno): errno 95 with QEMU's message for
/// another format, a backing file with raw and QEMU's qcow2 option messages; the OS errno for
/// host errors (2 for a missing directory); LockConflict when another user holds the file.
#[pyfunction]
#[pyo3(signature = (driver, filename, size, backing_file=None, backing_format=None))]
pub fn create_image(
    driver: &str,
    filename: &str,
    size: u64,
    backing_file: Option<&str>,
    backing_format: Option<&str>,
) -> PyResult<()> {
    blockcore::format::create_image(driver, filename, size, backing_file, backing_format)
        .map_err(|e| format_to_py(&e))
}
