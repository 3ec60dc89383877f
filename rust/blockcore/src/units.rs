//! Units of the block layer as distinct types, so that a byte count can never be passed where a
//! granularity is expected. Conversions are named and checked.

use std::fmt;

/// The block layer's sector (`BDRV_SECTOR_SIZE`): QEMU sees a `file` node's length in whole
/// sectors.
pub const SECTOR: u64 = 512;

/// Granularity of a dirty bitmap in bytes: a power of two from 512 to 2^31.
///
/// The bounds are QEMU's: `block-dirty-bitmap-add` rejects anything below 512 or not a power of
/// two, and the QAPI type of `granularity` is `uint32`, so 2^31 is the largest power of two that
/// can be given. The qcow2 bitmap directory stores `granularity_bits` in 9..=31, the same range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Granularity(u32);

impl Granularity {
    /// Smallest granularity QEMU accepts (512 bytes, one sector).
    pub const MIN_BITS: u32 = 9;
    /// Largest granularity that fits QAPI's `uint32` (2 GiB).
    pub const MAX_BITS: u32 = 31;

    /// A granularity of `bytes`, or `None` unless it is a power of two in 512..=2^31.
    pub fn new(bytes: u64) -> Option<Self> {
        if bytes.is_power_of_two()
            && ((1 << Self::MIN_BITS)..=(1 << Self::MAX_BITS)).contains(&bytes)
        {
            Some(Self(bytes as u32))
        } else {
            None
        }
    }

    /// A granularity of `2^bits` bytes, or `None` outside 9..=31.
    pub fn from_bits(bits: u32) -> Option<Self> {
        (Self::MIN_BITS..=Self::MAX_BITS)
            .contains(&bits)
            .then(|| Self(1 << bits))
    }

    /// The granularity in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// log2 of the granularity (what qcow2 stores as `granularity_bits`).
    pub fn bits(self) -> u32 {
        self.0.trailing_zeros()
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte range `[offset, offset + len)` of a node's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte of the range.
    pub offset: u64,
    /// Length in bytes; zero means an empty range.
    pub len: u64,
}

impl ByteRange {
    /// The range `[offset, offset + len)`.
    pub fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// One past the last byte (saturating, so a range at the end of `u64` cannot wrap).
    pub fn end(self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Rounds `n` up to a multiple of the power of two `align`.
pub fn align_up(n: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (n + align - 1) & !(align - 1)
}

/// Rounds `n` down to a multiple of the power of two `align`.
pub fn align_down(n: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    n & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_new_rejects_non_powers_and_out_of_range() {
        assert!(Granularity::new(0).is_none());
        assert!(Granularity::new(256).is_none());
        assert!(Granularity::new(1000).is_none());
        assert!(Granularity::new(1 << 32).is_none());
        assert_eq!(Granularity::new(512).map(Granularity::bits), Some(9));
        assert_eq!(Granularity::new(1 << 31).map(Granularity::bits), Some(31));
    }
}
