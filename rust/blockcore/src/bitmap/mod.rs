//! Dirty bitmaps: which chunks of a node were written since the bitmap was created or cleared.
//!
//! [`Bits`] is the bit array; [`DirtyBitmap`] adds what QEMU keeps beside it: an optional name
//! (anonymous bitmaps exist for internal users) and the state flags that decide which operations
//! are allowed. The allowed-operation rules themselves (QEMU's check sets) live with the callers
//! that produce QEMU's error messages; this module only stores the facts.

mod bits;

pub use bits::{Bits, DirtyRuns, SizeMismatch};

use crate::units::{ByteRange, Granularity};

/// The state flags of a dirty bitmap (QEMU's `BdrvDirtyBitmap` fields of the same meaning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BitmapState {
    /// Enabled: guest writes to the node set bits. Shown as `recording` in queries.
    pub enabled: bool,
    /// Owned by an operation (a backup job, a pending transactional remove): no user changes.
    pub busy: bool,
    /// Loaded from an image opened read-only: contents may not be changed.
    pub readonly: bool,
    /// Loaded with the qcow2 `in_use` flag set: contents are unreliable; it can only be removed.
    pub inconsistent: bool,
    /// Stored in the image (qcow2) when the node is closed or reopened read-only.
    pub persistent: bool,
    /// A pending transactional remove: do not store it into the image.
    pub skip_store: bool,
    /// Has a successor (a backup job's): the successor records writes in its place.
    pub frozen: bool,
}

/// A dirty bitmap attached to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    /// Name, unique on its node; `None` for anonymous internal bitmaps.
    pub name: Option<String>,
    /// The bits.
    pub bits: Bits,
    /// The state flags.
    pub state: BitmapState,
    /// For anonymous bitmaps owned by a job (successor, copy bitmap): the owner's tag.
    pub owner: Option<u64>,
}

impl DirtyBitmap {
    /// A new, enabled, all-clear bitmap over `len` bytes.
    pub fn new(name: Option<String>, len: u64, granularity: Granularity) -> Self {
        Self {
            name,
            bits: Bits::new(len, granularity),
            state: BitmapState {
                enabled: true,
                ..BitmapState::default()
            },
            owner: None,
        }
    }

    /// Records a guest write of `range` if the bitmap is enabled and not frozen (QEMU marks
    /// enabled bitmaps only; a frozen one's successor records instead).
    pub fn record_write(&mut self, range: ByteRange) {
        if self.state.enabled && !self.state.frozen {
            self.bits.set_range(range);
        }
    }
}

#[cfg(test)]
mod tests;
