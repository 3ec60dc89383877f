//! The format layer: image formats interpreted over a [`Storage`].
//!
//! A format driver maps the guest's address space (what the VM sees) onto its store. `raw` maps it
//! one to one; `qcow2` maps it through L1/L2 tables with refcounted clusters and carries metadata
//! of its own (persistent dirty bitmaps now; backing files and internal snapshots later).

pub mod qcow2;
pub mod raw;

use crate::bitmap::DirtyBitmap;
use crate::storage::Storage;
use crate::units::Granularity;
use std::io;
use std::sync::Arc;

/// Errors of the format layer.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The image metadata is invalid; the message says what (QEMU's wording where it has one).
    #[error("{0}")]
    Corrupt(String),
    /// An I/O error of the store underneath.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A write or metadata change on an image opened read-only.
    #[error("image is read-only")]
    ReadOnly,
    /// The operation is outside the image (offset or length past the virtual size).
    #[error("access of {len} bytes at {offset} is outside the image of {size} bytes")]
    OutOfRange {
        /// Guest offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Virtual size of the image.
        size: u64,
    },
    /// The image uses a feature this implementation does not support (QEMU's wording).
    #[error("{0}")]
    Unsupported(String),
}

impl FormatError {
    /// The errno QEMU would report for this error (for `strerror`-style messages).
    pub fn errno(&self) -> i32 {
        match self {
            FormatError::Io(e) => e.raw_os_error().unwrap_or(5),
            FormatError::ReadOnly => 1,          // EPERM
            FormatError::OutOfRange { .. } => 5, // EIO
            FormatError::Corrupt(_) => 5,
            FormatError::Unsupported(_) => 95, // ENOTSUP
        }
    }
}

/// Why a persistent bitmap cannot be stored in an image: the tail of QEMU's
/// `Can't make bitmap '<name>' persistent in '<node>': <reason>` (or, for formats that store no
/// bitmaps at all, of `Can't store persistent bitmaps to <node>: Operation not supported`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapStoreError {
    /// The format stores no bitmaps (raw, qcow2 is the only one that does).
    #[error("Operation not supported")]
    NotSupported,
    /// A format-specific refusal, in QEMU's words.
    #[error("{0}")]
    Refused(String),
}

/// A persistent bitmap found in an image when it was opened.
#[derive(Debug, Clone)]
pub struct LoadedBitmap {
    /// The bitmap, with `persistent` set, `enabled` from the `auto` flag, `inconsistent` from the
    /// `in_use` flag and `readonly` when the image was opened read-only.
    pub bitmap: DirtyBitmap,
}

/// What `qemu-img info` / `query-block` report about an image beyond its size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The format's dirty flag (qcow2: incompatible feature bit 0).
    pub dirty: bool,
    /// qcow2-specific facts, for a qcow2 image.
    pub qcow2: Option<Qcow2Facts>,
}

/// The qcow2 part of QEMU's `ImageInfoSpecificQCow2`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qcow2Facts {
    /// `"0.10"` (version 2) or `"1.1"` (version 3).
    pub compat: String,
    /// `"zlib"` or `"zstd"`.
    pub compression_type: String,
    /// Compatible feature bit 0.
    pub lazy_refcounts: bool,
    /// Width of a refcount entry in bits.
    pub refcount_bits: u32,
    /// Incompatible feature bit 1.
    pub corrupt: bool,
    /// Incompatible feature bit 4.
    pub extended_l2: bool,
    /// The bitmap directory as stored: `(name, granularity, flags)`, flags as QEMU names them
    /// (`in-use`, `auto`), in directory order.
    pub bitmaps: Vec<(String, u64, Vec<String>)>,
}

/// An open image of some format.
pub trait FormatDriver: Send + std::fmt::Debug {
    /// The format's QEMU driver name (`raw`, `qcow2`).
    fn format_name(&self) -> &'static str;
    /// Guest-visible size in bytes.
    fn virtual_size(&self) -> u64;
    /// The image's cluster size, if the format has clusters (qcow2).
    fn cluster_size(&self) -> Option<u64>;
    /// Whether the image was opened read-only.
    fn read_only(&self) -> bool;
    /// Reads guest bytes `[offset, offset + buf.len())`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError>;
    /// Writes guest bytes at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError>;
    /// Makes `[offset, offset + len)` read as zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), FormatError>;
    /// Discards `[offset, offset + len)`; afterwards it reads as zeros.
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), FormatError>;
    /// Makes everything written so far durable, metadata included.
    fn flush(&mut self) -> Result<(), FormatError>;
    /// Writes whole clusters compressed (`compress: true` backups). Formats without compressed
    /// clusters refuse (QEMU: `Compression is not supported for this drive`).
    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let _ = (offset, data);
        Err(FormatError::Unsupported(
            "Compression is not supported for this drive".into(),
        ))
    }
    /// Whether the guest cluster holding `offset` is allocated in this layer (data or zero
    /// clusters; what QEMU's `bdrv_is_allocated` says for a top layer). Formats without
    /// allocation tracking answer true.
    fn is_allocated(&mut self, offset: u64) -> Result<bool, FormatError> {
        let _ = offset;
        Ok(true)
    }
    /// Facts for query output (dirty flag, format-specific information).
    fn facts(&self) -> ImageFacts {
        ImageFacts::default()
    }
    /// Persistent bitmaps loaded at open, handed over once (later calls return nothing).
    fn take_loaded_bitmaps(&mut self) -> Vec<LoadedBitmap> {
        Vec::new()
    }
    /// Whether a persistent bitmap `name` with `granularity` could be stored here.
    fn can_store_bitmap(
        &self,
        name: &str,
        granularity: Granularity,
    ) -> Result<(), BitmapStoreError> {
        let _ = (name, granularity);
        Err(BitmapStoreError::NotSupported)
    }
    /// Writes `bitmaps` as the image's persistent bitmaps, replacing the stored set, and clears
    /// their `in_use` flags. Entries that are inconsistent keep their stored form.
    fn store_bitmaps(&mut self, bitmaps: &[&DirtyBitmap]) -> Result<(), FormatError> {
        let _ = bitmaps;
        Ok(())
    }
    /// Deletes the stored bitmap `name` from the image at once (no error if it is not stored).
    fn remove_stored_bitmap(&mut self, name: &str) -> Result<(), FormatError> {
        let _ = name;
        Ok(())
    }
    /// Flushes and releases the image. After this the driver must not be used.
    fn close(&mut self) -> Result<(), FormatError> {
        self.flush()
    }
}

/// Opens an image of format `driver` over `storage`.
pub fn open(
    driver: &str,
    storage: Arc<dyn Storage>,
    read_only: bool,
) -> Result<Box<dyn FormatDriver>, FormatError> {
    match driver {
        "raw" => Ok(Box::new(raw::Raw::open(storage, read_only)?)),
        "qcow2" => Ok(Box::new(qcow2::Qcow2::open(storage, read_only)?)),
        other => Err(FormatError::Unsupported(format!(
            "Unknown driver '{other}'"
        ))),
    }
}
