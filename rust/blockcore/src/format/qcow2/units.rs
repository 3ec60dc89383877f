//! Address spaces and units of a qcow2 image as distinct types.
//!
//! Three spaces meet in qcow2: the guest's (what the VM reads and writes), the host file's (where
//! clusters live) and cluster indexes within each. Mixing them up is the classic qcow2 bug, so each
//! is its own type and every conversion goes through [`Geometry`], which knows `cluster_bits`.

use std::fmt;

/// A byte offset in the guest's address space (the virtual disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestOffset(pub u64);

/// A byte offset in the image file (the host's address space).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostOffset(pub u64);

/// The index of a host cluster: its host offset divided by the cluster size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostCluster(pub u64);

impl fmt::Display for HostOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The cluster geometry of an image: everything derived from `cluster_bits` (and, for refcounts,
/// `refcount_order`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// `cluster_bits`: log2 of the cluster size, 9..=21 (QEMU's `MIN_CLUSTER_BITS`,
    /// `MAX_CLUSTER_BITS`).
    pub cluster_bits: u32,
    /// `refcount_order`: log2 of the refcount entry width in bits, 0..=6.
    pub refcount_order: u32,
}

impl Geometry {
    /// Bytes per cluster.
    pub fn cluster_size(self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in an L2 table (one cluster of 8-byte entries; no extended L2).
    pub fn l2_entries(self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes mapped by one L2 table.
    pub fn l2_span(self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// Index into the L1 table for a guest offset.
    pub fn l1_index(self, off: GuestOffset) -> u64 {
        off.0 / self.l2_span()
    }

    /// Index into the L2 table for a guest offset.
    pub fn l2_index(self, off: GuestOffset) -> usize {
        ((off.0 >> self.cluster_bits) % self.l2_entries()) as usize
    }

    /// Offset of a guest byte inside its cluster.
    pub fn in_cluster(self, off: GuestOffset) -> u64 {
        off.0 & (self.cluster_size() - 1)
    }

    /// The host cluster holding a host offset.
    pub fn host_cluster(self, off: HostOffset) -> HostCluster {
        HostCluster(off.0 >> self.cluster_bits)
    }

    /// The host offset where a host cluster starts.
    pub fn host_offset(self, c: HostCluster) -> HostOffset {
        HostOffset(c.0 << self.cluster_bits)
    }

    /// Whether a host offset is cluster aligned.
    pub fn is_aligned(self, off: u64) -> bool {
        off & (self.cluster_size() - 1) == 0
    }

    /// Number of clusters needed for `bytes` bytes.
    pub fn clusters_for(self, bytes: u64) -> u64 {
        bytes.div_ceil(self.cluster_size())
    }

    /// Refcount entry width in bits (`refcount_bits = 1 << refcount_order`).
    pub fn refcount_bits(self) -> u32 {
        1 << self.refcount_order
    }

    /// log2 of the refcount entries per refcount block.
    pub fn refblock_shift(self) -> u32 {
        self.cluster_bits + 3 - self.refcount_order
    }

    /// Entries in a refcount block.
    pub fn refblock_entries(self) -> u64 {
        1 << self.refblock_shift()
    }

    /// Largest refcount an entry can hold.
    pub fn max_refcount(self) -> u64 {
        if self.refcount_order == 6 {
            u64::MAX
        } else {
            (1u64 << self.refcount_bits()) - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_64k_clusters_maps_512mib_per_l2_table() {
        let g = Geometry {
            cluster_bits: 16,
            refcount_order: 4,
        };
        assert_eq!(g.l2_entries(), 8192);
        assert_eq!(g.l2_span(), 512 << 20);
        assert_eq!(g.refblock_entries(), 32768);
        assert_eq!(g.l1_index(GuestOffset(512 << 20)), 1);
        assert_eq!(g.l2_index(GuestOffset(65536 * 3 + 5)), 3);
        assert_eq!(g.max_refcount(), 65535);
    }

    #[test]
    fn geometry_refcount_order_6_max_is_u64_max() {
        let g = Geometry {
            cluster_bits: 9,
            refcount_order: 6,
        };
        assert_eq!(g.max_refcount(), u64::MAX);
        assert_eq!(g.refblock_entries(), 64);
    }
}
