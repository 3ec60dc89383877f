//! `create_image`: makes a new image file the way `qemu-img create` / drive-backup do.

use crate::errors::format_to_py;
use blockcore::format::qcow2::{CreateOptions, Qcow2};
use blockcore::format::FormatError;
use blockcore::storage::{FileStorage, Storage};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Arc;

/// Creates (or truncates) `filename` as an empty image of `fmt` (`qcow2` or `raw`) and `size`
/// bytes; a qcow2 image may name a backing file (recorded only). Errors: ImageError(message,
/// errno) for host errors (e.g. errno 2 for a missing directory) and QEMU's qcow2 option
/// messages; ValueError for another format.
#[pyfunction]
#[pyo3(signature = (filename, fmt, size, backing_file=None, backing_format=None))]
pub fn create_image(
    filename: &str,
    fmt: &str,
    size: u64,
    backing_file: Option<String>,
    backing_format: Option<String>,
) -> PyResult<()> {
    if fmt != "qcow2" && fmt != "raw" {
        return Err(PyValueError::new_err(format!(
            "cannot create images of format '{fmt}'"
        )));
    }
    let store = FileStorage::create(filename).map_err(|e| format_to_py(&FormatError::Io(e)))?;
    if fmt == "raw" {
        return store
            .set_len(size)
            .map_err(|e| format_to_py(&FormatError::Io(e)));
    }
    let mut opts = CreateOptions::new(size);
    opts.backing_file = backing_file;
    opts.backing_format = backing_format;
    Qcow2::create(Arc::new(store), &opts).map_err(|e| format_to_py(&e))
}
