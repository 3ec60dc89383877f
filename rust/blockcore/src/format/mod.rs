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
    /// Another user of the image holds a conflicting lock (`Failed to get "write" lock`).
    #[error("{0}")]
    Locked(String),
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
            FormatError::Locked(_) => 11,      // EAGAIN
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

/// Where a format node's unallocated clusters read from: its `backing` child, or nothing.
pub trait Backing {
    /// Whether a backing node is attached (QEMU's `bs->backing`). Without one, unallocated
    /// clusters read as zeros and may be left unallocated by write-zeroes and discard.
    fn present(&self) -> bool;
    /// Reads guest bytes `[offset, offset + buf.len())` of the backing node; past its end the
    /// buffer reads as zeros.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError>;
    /// Whether QEMU's block status of the backing chain calls `[offset, offset + len)` zero
    /// (unallocated down the whole chain, zero clusters, or past the end of a short backing),
    /// not merely whether it reads as zeros.
    fn is_zero(&mut self, offset: u64, len: u64) -> Result<bool, FormatError>;
    /// Like [`Backing::is_zero`], but for block status that does not probe the protocol
    /// layer (QEMU's `want_zero = false`): a raw node's holes are data, zero clusters and
    /// ranges unallocated down the whole chain are zero. Without a finer answer from the chain,
    /// only the absence of a backing node counts as zero.
    fn is_zero_unprobed(&mut self, offset: u64, len: u64) -> Result<bool, FormatError> {
        let _ = (offset, len);
        Ok(!self.present())
    }
}

/// No backing node: everything unallocated reads as zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBacking;

impl Backing for NoBacking {
    fn present(&self) -> bool {
        false
    }

    fn read(&mut self, _offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        buf.fill(0);
        Ok(())
    }

    fn is_zero(&mut self, _offset: u64, _len: u64) -> Result<bool, FormatError> {
        Ok(true)
    }
}

/// What one layer's block status says about the start of a range: QEMU's
/// `bdrv_co_block_status` of a format node before the generic layer adds what a missing or
/// short backing node means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Data held by this layer (`BDRV_BLOCK_DATA`).
    Data,
    /// Reads as zeros, recorded by this layer (`BDRV_BLOCK_ZERO`).
    Zero,
    /// Not held by this layer: the backing node's, or zeros without one.
    Unallocated,
}

/// One run of a block status answer: `len` bytes from the queried offset have `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRun {
    /// What the run is.
    pub kind: RunKind,
    /// Its length in bytes (at least 1 for a non-empty query inside the image).
    pub len: u64,
    /// `BDRV_BLOCK_RECURSE` with the run's offset in the `file` child: the driver asks the
    /// generic layer to refine a data run by the file's own block status there (qcow2 does for
    /// a metadata-preallocated image, see [`qcow2`]'s `prealloc`).
    pub recurse: Option<u64>,
}

impl StatusRun {
    /// A run without `BDRV_BLOCK_RECURSE`.
    pub fn new(kind: RunKind, len: u64) -> Self {
        Self {
            kind,
            len,
            recurse: None,
        }
    }
}

/// One internal snapshot of an image (QEMU's `QEMUSnapshotInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The snapshot id (`"1"`, `"2"`, ...).
    pub id: String,
    /// The name as stored (bytes; QEMU's names are C strings of at most 255 bytes).
    pub name: Vec<u8>,
    /// Size of the saved VM state (0: disk-only snapshot).
    pub vm_state_size: u64,
    /// Wall clock seconds at creation.
    pub date_sec: u32,
    /// Wall clock nanoseconds at creation.
    pub date_nsec: u32,
    /// Guest virtual clock in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Instruction count, `None` when not recorded (stored as -1).
    pub icount: Option<u64>,
}

/// What a new internal snapshot records besides the disk state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotParams {
    /// The name; truncated to 255 bytes as QEMU's `pstrcpy` into a 256-byte field does.
    pub name: Vec<u8>,
    /// Wall clock seconds.
    pub date_sec: u32,
    /// Wall clock nanoseconds.
    pub date_nsec: u32,
    /// Guest virtual clock in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Instruction count, if recorded.
    pub icount: Option<u64>,
}

fn not_supported() -> FormatError {
    FormatError::Unsupported("Operation not supported".into())
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
    /// [`FormatDriver::read`] with unallocated clusters read from `backing`.
    fn read_backed(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let _ = backing;
        self.read(offset, buf)
    }
    /// [`FormatDriver::write`]; partial clusters are completed from `backing` (copy-up).
    fn write_backed(
        &mut self,
        offset: u64,
        data: &[u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let _ = backing;
        self.write(offset, data)
    }
    /// [`FormatDriver::write_zeroes`]; the range reads as zeros even with a backing node.
    /// `may_unmap` is QEMU's `BDRV_REQ_MAY_UNMAP` (`qemu-io write -z -u`): without it qcow2
    /// keeps allocated clusters allocated under the zero flag.
    fn write_zeroes_backed(
        &mut self,
        offset: u64,
        len: u64,
        backing: &mut dyn Backing,
        may_unmap: bool,
    ) -> Result<(), FormatError> {
        let _ = (backing, may_unmap);
        self.write_zeroes(offset, len)
    }
    /// [`FormatDriver::discard`] as QEMU does it over a backing node.
    fn discard_backed(
        &mut self,
        offset: u64,
        len: u64,
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let _ = backing;
        self.discard(offset, len)
    }
    /// Block status of this layer at `offset`: the kind of the first run of at most `len`
    /// bytes and its length (QEMU's driver `bdrv_co_block_status`; without `want_zero` a
    /// driver need not look for zeros below it). Formats without allocation information call
    /// everything data.
    fn block_status(
        &mut self,
        want_zero: bool,
        offset: u64,
        len: u64,
    ) -> Result<StatusRun, FormatError> {
        let _ = (want_zero, offset);
        Ok(StatusRun::new(RunKind::Data, len))
    }
    /// Whether the format can have a backing node (qcow2).
    fn supports_backing(&self) -> bool {
        false
    }
    /// Backing file name recorded in the image.
    fn backing_file(&self) -> Option<&str> {
        None
    }
    /// Backing format recorded in the image.
    fn backing_format(&self) -> Option<&str> {
        None
    }
    /// Switches the driver to read-only (after a read-only reopen; nothing is written).
    fn set_read_only(&mut self);
    /// Whether host clusters freed by guest discards and unmapping write-zeroes are discarded
    /// in the file too (qcow2's `pass-discard-request`, by default on for a node opened with
    /// `discard=unmap`). Formats that free nothing ignore it.
    fn set_pass_discard_request(&mut self, on: bool) {
        let _ = on;
    }
    /// The internal snapshots, in table order. ENOTSUP for formats without them.
    fn snapshots(&self) -> Result<Vec<SnapshotEntry>, FormatError> {
        Err(not_supported())
    }
    /// Creates an internal snapshot of the current disk state.
    fn snapshot_create(&mut self, params: &SnapshotParams) -> Result<SnapshotEntry, FormatError> {
        let _ = params;
        Err(not_supported())
    }
    /// Deletes the first snapshot matching `id` and/or `name` (both must match when both are
    /// given); `Ok(None)` when none does.
    fn snapshot_delete(
        &mut self,
        id: Option<&str>,
        name: Option<&[u8]>,
    ) -> Result<Option<SnapshotEntry>, FormatError> {
        let _ = (id, name);
        Err(not_supported())
    }
    /// Makes everything written so far durable, metadata included.
    fn flush(&mut self) -> Result<(), FormatError>;
    /// Takes `len`, the `file` child's new length, as the virtual size, for formats whose size
    /// is their child's (raw); others ignore it.
    fn refresh_size(&mut self, len: u64) {
        let _ = len;
    }
    /// Changes the virtual size to `new_size` (QEMU's `bdrv_co_truncate` of the driver). A
    /// format whose size is its `file` child's (raw) only takes the new size: the graph has
    /// resized the child already. Formats that cannot resize refuse with QEMU's message.
    fn truncate(&mut self, new_size: u64) -> Result<(), FormatError> {
        let _ = new_size;
        Err(FormatError::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }
    /// Writes whole clusters compressed (`compress: true` backups). Formats without compressed
    /// clusters refuse (QEMU: `Compression is not supported for this drive`).
    fn write_compressed(&mut self, offset: u64, data: &[u8]) -> Result<(), FormatError> {
        let _ = (offset, data);
        Err(FormatError::Unsupported(
            "Compression is not supported for this drive".into(),
        ))
    }
    /// [`FormatDriver::write_compressed`] over a backing node (an uncompressible last cluster
    /// that is written plainly is completed from `backing`).
    fn write_compressed_backed(
        &mut self,
        offset: u64,
        data: &[u8],
        backing: &mut dyn Backing,
    ) -> Result<(), FormatError> {
        let _ = backing;
        self.write_compressed(offset, data)
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
    /// Makes the image consistent on disk before it stops being written (QEMU's
    /// `bdrv_inactivate`: a close or a reopen read-only): flushes, and a qcow2 image with lazy
    /// refcounts writes its refcount blocks and clears its dirty bit.
    fn inactivate(&mut self) -> Result<(), FormatError> {
        self.flush()
    }
    /// Flushes and releases the image. After this the driver must not be used.
    fn close(&mut self) -> Result<(), FormatError> {
        self.inactivate()
    }
}

/// Creates (truncating) host file `path` as an empty image of format `driver` and `size` bytes,
/// as `qemu-img create -f DRIVER [-b BACKING -F BACKING_FORMAT] PATH SIZE` does.
pub fn create_image(
    driver: &str,
    path: &str,
    size: u64,
    backing_file: Option<&str>,
    backing_format: Option<&str>,
) -> Result<(), FormatError> {
    match driver {
        "qcow2" => {
            let opts = qcow2::CreateOptions {
                backing_file: backing_file.map(Into::into),
                backing_format: backing_format.map(Into::into),
                ..qcow2::CreateOptions::new(size)
            };
            opts.check()?;
            let store = open_for_create(path)?;
            qcow2::Qcow2::create(Arc::new(store), &opts)
        }
        "raw" => {
            if backing_file.is_some() {
                return Err(FormatError::Unsupported(
                    "Backing file not supported for file format 'raw'".into(),
                ));
            }
            let store = open_for_create(path)?;
            store.set_len(0)?;
            store.set_len(size)?;
            Ok(store.flush()?)
        }
        other => Err(FormatError::Unsupported(format!(
            "Unknown file format '{other}'"
        ))),
    }
}

/// Opens `path` for creating an image in it, refusing (before anything is truncated) a file
/// another user holds, as QEMU's `file` driver does: it wants `write` and `resize` and shares
/// everything but `resize`.
fn open_for_create(path: &str) -> Result<crate::storage::FileStorage, FormatError> {
    use crate::storage::lock;
    let store = crate::storage::FileStorage::open_for_create(path)?;
    let perm = lock::PERM_WRITE | lock::PERM_RESIZE;
    match lock::check(store.file(), perm, lock::PERM_ALL & !lock::PERM_RESIZE) {
        Ok(()) => Ok(store),
        Err(lock::LockError::Conflict(c)) => Err(FormatError::Locked(c.0)),
        Err(lock::LockError::Io(e)) => Err(e.into()),
    }
}

/// Opens an image of format `driver` over `storage`.
pub fn open(
    driver: &str,
    storage: Arc<dyn Storage>,
    read_only: bool,
) -> Result<Box<dyn FormatDriver>, FormatError> {
    open_with(
        driver,
        storage,
        read_only,
        &qcow2::RuntimeOptions::default(),
    )
}

/// Opens an image of format `driver` over `storage`, a qcow2 one with its runtime options.
pub fn open_with(
    driver: &str,
    storage: Arc<dyn Storage>,
    read_only: bool,
    qcow2_options: &qcow2::RuntimeOptions,
) -> Result<Box<dyn FormatDriver>, FormatError> {
    match driver {
        "raw" => Ok(Box::new(raw::Raw::open(storage, read_only)?)),
        "qcow2" => Ok(Box::new(qcow2::Qcow2::open_with(
            storage,
            read_only,
            qcow2_options,
        )?)),
        other => Err(FormatError::Unsupported(format!(
            "Unknown driver '{other}'"
        ))),
    }
}
