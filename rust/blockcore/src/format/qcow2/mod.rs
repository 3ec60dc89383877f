//! The qcow2 format (versions 2 and 3), over any [`Storage`].
//!
//! One file per concern, as in imago: [`header`] (first cluster), [`mapping`] (L1/L2),
//! [`refcount`] (refcount table and blocks), [`cache`] (the write-back metadata cache), `alloc`
//! (finding and counting clusters), `io` (the
//! guest read/write/zero/discard paths), [`bitmaps`] (persistent dirty bitmaps), [`snapshot`]
//! (internal snapshots), `resize` (growing the virtual size and the L1 table) and [`create`]
//! (what `qemu-img create -f qcow2` writes). [`units`] keeps guest offsets, host offsets and
//! cluster indexes apart.
//!
//! Supported: cluster sizes 512 B..2 MiB, refcount widths 1..64 bits, zero clusters, internal
//! snapshots (created, deleted, and copied on write after), persistent dirty bitmaps,
//! compressed clusters, zlib or zstd (`compress`: read, written packed as QEMU packs them by
//! [`FormatDriver::write_compressed`], partial overwrites copy them up decompressed), backing
//! chains.
//! Refused at open: extended L2 entries, external data files, encryption, unknown incompatible
//! features. The backing node is not this
//! driver's business: every guest path takes a [`Backing`] that unallocated
//! clusters read from (the graph passes the node's `backing` child), and whose presence decides
//! what zeroes and discards leave behind, as `bs->backing` does in QEMU.
//!
//! L2 tables and refcount blocks are cached write-back as QEMU caches them ([`cache`]): they
//! reach the file as whole clusters when the cache is flushed (flush, close, internal snapshots,
//! new tables being hooked up), evicted, or ordered before the other cache, so a dirty bitmap
//! on the `file` node sees QEMU's metadata writes. The header, the L1 table and the refcount
//! table are written through.
//!
//! The host file is laid out as QEMU lays it out: an allocating write whose copy-on-write
//! regions are zero for block status zeroes the new clusters with [`Storage::zero_range`] and
//! writes only the guest bytes; clusters freed by snapshot operations (`pass-discard-snapshot`)
//! and by guest discards and unmapping zeroes (`pass-discard-request`, on for a node opened with
//! discard=unmap) are punched out with [`Storage::discard`]; a preallocated zero cluster of the
//! node's own is written in place.

mod alloc;
pub mod bitmaps;
pub mod cache;
mod compress;
pub mod create;
pub mod header;
mod io;
pub mod mapping;
mod options;
pub mod prealloc;
pub mod refcount;
mod resize;
pub mod snapshot;
pub mod units;

pub use create::{Compat, CreateOptions};
pub use options::{Resolved, RuntimeOptions};

use super::{
    Backing, BitmapStoreError, FormatDriver, FormatError, LoadedBitmap, NoBacking, RunKind,
    SnapshotEntry, SnapshotParams, StatusRun,
};
use crate::bitmap::DirtyBitmap;
use crate::storage::Storage;
use crate::units::Granularity;
use header::{Header, AUTOCLEAR_KNOWN, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use mapping::Mapping;
use refcount::Refcounts;
use std::sync::Arc;
use units::Geometry;

/// An open qcow2 image.
#[derive(Debug)]
pub struct Qcow2 {
    storage: Arc<dyn Storage>,
    read_only: bool,
    header: Header,
    geo: Geometry,
    refcounts: Refcounts,
    mapping: Mapping,
    /// The bitmap directory as it is in the file (empty without a trusted bitmaps extension).
    directory: Vec<bitmaps::DirEntry>,
    /// Bitmaps loaded at open, until the graph takes them.
    loaded: Vec<LoadedBitmap>,
    /// Where the next compressed cluster may go in a partly used host cluster (0: none).
    free_byte_offset: u64,
    /// The internal snapshot table.
    snapshots: Vec<snapshot::Snapshot>,
    /// Length in bytes of the table at `snapshots_offset` (to free it when rewritten).
    snapshots_size: u64,
    /// `pass-discard-request`: clusters freed by guest discards and unmapping write-zeroes are
    /// discarded in the file (on until told otherwise, as `qemu-io`'s discard=unmap opens).
    pass_discard_request: bool,
    /// Whether this open counts as metadata-preallocated ([`prealloc`]); `None` until the
    /// first block-status query guesses it.
    metadata_preallocation: Option<bool>,
    /// `lazy-refcounts` in use ([`options`]).
    lazy_refcounts: bool,
    /// `pass-discard-snapshot` ([`options`]).
    pass_discard_snapshot: bool,
}

impl Qcow2 {
    /// Opens a qcow2 image, loading its persistent bitmaps; read-write opens mark them `in_use`
    /// in the file at once, as QEMU does.
    pub fn open(storage: Arc<dyn Storage>, read_only: bool) -> Result<Self, FormatError> {
        Self::open_with(storage, read_only, &RuntimeOptions::default())
    }

    /// Opens a qcow2 image with the node's runtime options, checked where QEMU checks them
    /// (after the header), giving its cache sizes and lazy refcounts.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        read_only: bool,
        options: &RuntimeOptions,
    ) -> Result<Self, FormatError> {
        let mut first = vec![0u8; 512];
        storage.read_at(&mut first, 0)?;
        let cluster_bits = u32::from_be_bytes(first[20..24].try_into().expect("4 bytes"));
        if (9..=21).contains(&cluster_bits) {
            first.resize(1 << cluster_bits, 0);
            storage.read_at(&mut first, 0)?;
        }
        let mut header = Header::parse(&first)?;
        if !read_only && header.incompatible_features & INCOMPAT_CORRUPT != 0 {
            return Err(FormatError::Corrupt(
                "qcow2: Image is corrupt; cannot be opened read/write".into(),
            ));
        }
        let resolved = options.resolve(&header)?;
        resolved.check_modelled()?;
        if !read_only && header.incompatible_features & INCOMPAT_DIRTY != 0 {
            return Err(FormatError::Unsupported(
                "qcow2 image has the dirty bit set (lazy refcounts); repairing it is not supported, run 'qemu-img check -r all'".into(),
            ));
        }
        let geo = header.geometry();
        let l2_span = geo.l2_span();
        if u64::from(header.l1_size) < header.size.div_ceil(l2_span) {
            return Err(FormatError::Corrupt("L1 table is too small".into()));
        }
        let mut refcounts = Refcounts::load(
            storage.as_ref(),
            geo,
            header.refcount_table_offset,
            header.refcount_table_clusters,
            header.size,
        )?;
        refcounts.cache = resolved.cache(&header);
        let mapping = Mapping::load(
            storage.as_ref(),
            geo,
            header.l1_table_offset,
            header.l1_size,
        )?;
        let mut update_header = false;
        if !read_only
            && (header.autoclear_features & !AUTOCLEAR_KNOWN != 0 || header.bitmaps_ignored)
        {
            // QEMU clears autoclear bits it does not know, and drops a bitmaps extension whose
            // autoclear bit is clear (its clusters leak, as `qemu-img check` then reports).
            header.autoclear_features &= AUTOCLEAR_KNOWN;
            header.bitmaps_ignored = false;
            update_header = true;
        }
        let mut image = Self {
            storage,
            read_only,
            header,
            geo,
            refcounts,
            mapping,
            directory: Vec::new(),
            loaded: Vec::new(),
            free_byte_offset: 0,
            snapshots: Vec::new(),
            snapshots_size: 0,
            pass_discard_request: true,
            metadata_preallocation: None,
            lazy_refcounts: resolved.lazy_refcounts,
            pass_discard_snapshot: resolved.pass_discard_snapshot,
        };
        image.load_snapshots()?;
        if update_header {
            image.write_header()?;
        }
        image.load_bitmaps()?;
        Ok(image)
    }

    /// The parsed header (refcount and L1 fields as of the last header write).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The backing file name recorded in the image, if any (not opened yet).
    pub fn backing_file(&self) -> Option<&str> {
        self.header.backing_file.as_deref()
    }

    /// The backing file format recorded in the image, if any.
    pub fn backing_format(&self) -> Option<&str> {
        self.header.backing_format.as_deref()
    }

    /// The L2 table at host offset `offset`, from the metadata cache.
    #[cfg(test)]
    fn l2_table(&mut self, offset: u64) -> Result<&mut Vec<u64>, FormatError> {
        let storage = self.storage.clone();
        self.refcounts.cache.l2(storage.as_ref(), offset)
    }

    /// The kind of the cluster holding guest offset `off`.
    fn lookup(&mut self, off: units::GuestOffset) -> Result<mapping::ClusterKind, FormatError> {
        let storage = self.storage.clone();
        self.mapping
            .lookup(&mut self.refcounts.cache, storage.as_ref(), off)
    }

    /// Writes every dirty L2 table and refcount block back to the file (QEMU's
    /// `qcow2_write_caches`; L2 tables only while the dirty bit is set), without flushing it.
    pub(super) fn write_caches(&mut self) -> Result<(), FormatError> {
        let storage = self.storage.clone();
        if self.needs_accurate_refcounts() {
            self.refcounts.cache.write_all(storage.as_ref())
        } else {
            self.refcounts.cache.write_l2(storage.as_ref())
        }
    }

    /// Writes the whole header cluster, refcount table and L1 fields taken from the live state.
    fn write_header(&mut self) -> Result<(), FormatError> {
        self.header.refcount_table_offset = self.refcounts.table_offset.0;
        self.header.refcount_table_clusters = self.refcounts.table_clusters();
        self.header.l1_table_offset = self.mapping.l1_offset.0;
        self.header.l1_size = self.mapping.l1.len() as u32;
        let cluster = self.header.to_cluster()?;
        self.storage.write_at(&cluster, 0)?;
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), FormatError> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.header.size)
        {
            return Err(FormatError::OutOfRange {
                offset,
                len,
                size: self.header.size,
            });
        }
        Ok(())
    }

    fn check_write(&self, offset: u64, len: u64) -> Result<(), FormatError> {
        if self.read_only {
            return Err(FormatError::ReadOnly);
        }
        self.check_range(offset, len)
    }
}

impl FormatDriver for Qcow2 {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    fn facts(&self) -> crate::format::ImageFacts {
        let h = &self.header;
        crate::format::ImageFacts {
            dirty: h.incompatible_features & header::INCOMPAT_DIRTY != 0,
            qcow2: Some(crate::format::Qcow2Facts {
                compat: if h.version >= 3 { "1.1" } else { "0.10" }.to_string(),
                compression_type: if h.compression_type == 1 {
                    "zstd"
                } else {
                    "zlib"
                }
                .to_string(),
                lazy_refcounts: h.compatible_features & 1 != 0, // lazy refcounts: compatible bit 0
                refcount_bits: 1 << h.refcount_order,
                corrupt: h.incompatible_features & header::INCOMPAT_CORRUPT != 0,
                extended_l2: h.incompatible_features & header::INCOMPAT_EXTL2 != 0,
                bitmaps: self
                    .directory
                    .iter()
                    .map(|e| {
                        let mut flags = Vec::new();
                        if e.flags & 1 != 0 {
                            flags.push("in-use".to_string());
                        }
                        if e.flags & 2 != 0 {
                            flags.push("auto".to_string());
                        }
                        (e.name.clone(), 1u64 << e.granularity_bits, flags)
                    })
                    .collect(),
            }),
        }
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn cluster_size(&self) -> Option<u64> {
        Some(self.geo.cluster_size())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn set_read_only(&mut self) {
        self.read_only = true;
    }

    fn set_pass_discard_request(&mut self, on: bool) {
        self.pass_discard_request = on;
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.read_backed(offset, buf, &mut NoBacking)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        self.write_backed(offset, data, &mut NoBacking)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), FormatError> {
        self.write_zeroes_backed(offset, len, &mut NoBacking, true)
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<(), FormatError> {
        self.discard_backed(offset, len, &mut NoBacking)
    }

    fn read_backed(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        self.check_range(offset, buf.len() as u64)?;
        self.read_guest(offset, buf, backing)
    }

    fn write_backed(
        &mut self,
        offset: u64,
        data: &[u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        self.check_write(offset, data.len() as u64)?;
        self.write_guest(offset, data, backing)
    }

    fn write_zeroes_backed(
        &mut self,
        offset: u64,
        len: u64,
        backing: &mut dyn Backing,
        may_unmap: bool,
    ) -> Result<(), FormatError> {
        self.check_write(offset, len)?;
        self.zero_guest(offset, len, backing, may_unmap)
    }

    fn discard_backed(
        &mut self,
        offset: u64,
        len: u64,
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        self.check_write(offset, len)?;
        self.discard_guest(offset, len, backing.present())
    }

    fn block_status(
        &mut self,
        _want_zero: bool,
        offset: u64,
        len: u64,
    ) -> Result<StatusRun, FormatError> {
        let len = len.min(self.header.size.saturating_sub(offset));
        if len == 0 {
            return Ok(StatusRun::new(RunKind::Unallocated, 0));
        }
        let preallocated = self.metadata_preallocated();
        let storage = self.storage.clone();
        let (cluster, len) = self.mapping.status_run(
            &mut self.refcounts.cache,
            storage.as_ref(),
            units::GuestOffset(offset),
            len,
        )?;
        let kind = match cluster {
            mapping::ClusterKind::Normal { .. } | mapping::ClusterKind::Compressed { .. } => {
                RunKind::Data
            }
            mapping::ClusterKind::ZeroPlain | mapping::ClusterKind::ZeroAlloc { .. } => {
                RunKind::Zero
            }
            mapping::ClusterKind::Unallocated => RunKind::Unallocated,
        };
        // RECURSE: data whose host offset is valid (not compressed) in a preallocated image.
        let recurse = match cluster {
            mapping::ClusterKind::Normal { host, .. } if preallocated => {
                Some(host.0 + self.geo.in_cluster(units::GuestOffset(offset)))
            }
            _ => None,
        };
        Ok(StatusRun { kind, len, recurse })
    }

    fn supports_backing(&self) -> bool {
        true
    }

    fn backing_file(&self) -> Option<&str> {
        self.header.backing_file.as_deref()
    }

    fn backing_format(&self) -> Option<&str> {
        self.header.backing_format.as_deref()
    }

    fn snapshots(&self) -> Result<Vec<SnapshotEntry>, FormatError> {
        Ok(self.snapshots.iter().map(|s| s.entry.clone()).collect())
    }

    fn snapshot_create(&mut self, params: &SnapshotParams) -> Result<SnapshotEntry, FormatError> {
        self.create_snapshot(params)
    }

    fn snapshot_delete(
        &mut self,
        id: Option<&str>,
        name: Option<&[u8]>,
    ) -> Result<Option<SnapshotEntry>, FormatError> {
        self.delete_snapshot(id, name)
    }

    fn flush(&mut self) -> Result<(), FormatError> {
        self.storage.debug_event("flush_to_os");
        self.write_caches()?;
        self.storage.debug_event("flush_to_disk");
        Ok(self.storage.flush_request()?)
    }

    fn inactivate(&mut self) -> Result<(), FormatError> {
        self.flush()?;
        if self.needs_accurate_refcounts() {
            return Ok(());
        }
        self.close_dirty()
    }

    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        self.write_compressed_backed(offset, data, &mut NoBacking)
    }

    fn write_compressed_backed(
        &mut self,
        offset: u64,
        data: &[u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        self.check_write(offset, data.len() as u64)?;
        self.write_compressed_guest(offset, data, backing)
    }

    fn is_allocated(&mut self, offset: u64) -> Result<bool, FormatError> {
        let kind = self.lookup(units::GuestOffset(offset))?;
        Ok(!matches!(kind, mapping::ClusterKind::Unallocated))
    }

    fn truncate(&mut self, new_size: u64) -> Result<(), FormatError> {
        self.resize(new_size)
    }

    fn take_loaded_bitmaps(&mut self) -> Vec<LoadedBitmap> {
        std::mem::take(&mut self.loaded)
    }

    fn can_store_bitmap(
        &self,
        name: &str,
        granularity: Granularity,
    ) -> Result<(), BitmapStoreError> {
        self.check_can_store(name, granularity)
    }

    fn store_bitmaps(&mut self, bitmaps: &[&DirtyBitmap]) -> Result<(), FormatError> {
        self.store(bitmaps)
    }

    fn remove_stored_bitmap(&mut self, name: &str) -> Result<(), FormatError> {
        self.remove_bitmap(name)
    }
}

#[cfg(test)]
mod tests;
