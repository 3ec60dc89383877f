//! `Bitmap`: a free-standing dirty bitmap (bits only), for benchmarks and tests that exercise the
//! word-level operations without a graph.

use blockcore::bitmap::Bits;
use blockcore::units::{ByteRange, Granularity};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::SizeMismatch;

/// A dirty bitmap over `length` bytes at `granularity`.
#[pyclass(module = "reference._core")]
pub struct Bitmap(Bits);

#[pymethods]
impl Bitmap {
    #[new]
    fn new(length: u64, granularity: u64) -> PyResult<Self> {
        let g = Granularity::new(granularity).ok_or_else(|| {
            PyValueError::new_err("granularity must be a power of two in 512..=2^31")
        })?;
        Ok(Self(Bits::new(length, g)))
    }

    fn set(&mut self, offset: u64, length: u64) {
        self.0.set_range(ByteRange::new(offset, length));
    }

    fn reset(&mut self, offset: u64, length: u64) {
        self.0.reset_range(ByteRange::new(offset, length));
    }

    fn get(&self, offset: u64) -> bool {
        self.0.get(offset)
    }

    fn count(&self) -> u64 {
        self.0.count()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn merge(&mut self, other: &Bitmap) -> PyResult<()> {
        self.0
            .merge_from(&other.0)
            .map_err(|e| SizeMismatch::new_err((e.dest, e.src)))
    }

    fn sha256(&self) -> String {
        self.0.sha256_hex()
    }
}
