//! qcow2 (version 2 and 3): work in progress in this commit; see the qcow2 issue notes.
use super::{FormatDriver, FormatError};
use crate::storage::Storage;
use std::sync::Arc;

/// A qcow2 image.
#[derive(Debug)]
pub struct Qcow2;

impl Qcow2 {
    /// Opens a qcow2 image.
    pub fn open(_storage: Arc<dyn Storage>, _read_only: bool) -> Result<Self, FormatError> {
        Err(FormatError::Unsupported("qcow2 not yet implemented".into()))
    }
}

impl FormatDriver for Qcow2 {
    fn format_name(&self) -> &'static str { "qcow2" }
    fn virtual_size(&self) -> u64 { 0 }
    fn cluster_size(&self) -> Option<u64> { None }
    fn read_only(&self) -> bool { true }
    fn read(&mut self, _o: u64, _b: &mut [u8]) -> Result<(), FormatError> { unimplemented!() }
    fn write(&mut self, _o: u64, _d: &[u8]) -> Result<(), FormatError> { unimplemented!() }
    fn write_zeroes(&mut self, _o: u64, _l: u64) -> Result<(), FormatError> { unimplemented!() }
    fn discard(&mut self, _o: u64, _l: u64) -> Result<(), FormatError> { unimplemented!() }
    fn flush(&mut self) -> Result<(), FormatError> { unimplemented!() }
}
