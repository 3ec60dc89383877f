//! The node graph: named block nodes, their children, the dirty bitmaps attached to them, block
//! backends (devices) pointing at root nodes, and guest-like I/O routed through it all.
//!
//! A node is a protocol node (`file`: a host file; `null-co`: reads zeros, discards writes) or a
//! format node (`raw`, `qcow2`) whose `file` child is a protocol node sharing the same store. A
//! write to a node marks the enabled bitmaps of that node, and the store writes it causes mark the
//! enabled bitmaps of its `file` child (at host offsets), as in QEMU, where every layer tracks the
//! writes that pass through it.
//!
//! This module stores facts and enforces structural invariants (unique names, no dangling
//! children). QEMU's lookups and their error messages belong to the reference engine.

mod observed;
mod status;

use crate::bitmap::{Bits, DirtyBitmap, SizeMismatch};
use crate::format::qcow2::RuntimeOptions;
use crate::format::{
    self, Backing, FormatDriver, FormatError, LoadedBitmap, NoBacking, SnapshotEntry,
    SnapshotParams,
};
use crate::job::JobSet;
use crate::storage::lock::{self, LockError};
use crate::storage::{
    BlkdebugRules, BlkdebugStorage, FileStorage, InjectRule, IoType, NullStorage, StateRule,
    Storage,
};
use crate::units::{ByteRange, Granularity};
pub(crate) use observed::ObservedStorage;
pub use status::BlockStatus;
pub(crate) use status::{refine_by_file, store_run};
use std::sync::Arc;

/// The copy-on-read unit for a child without clusters (QEMU's default cluster size).
const DEFAULT_COR_CLUSTER: u64 = 65536;

/// Errors of graph operations.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A bitmap with that name already exists on the node.
    #[error("bitmap already exists: {0}")]
    BitmapExists(String),
    /// No bitmap of that name on the node.
    #[error("dirty bitmap '{0}' not found")]
    BitmapNotFound(String),
    /// A format-layer error (I/O, corrupt image, out of range).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Merging bitmaps of different disk lengths.
    #[error(transparent)]
    SizeMismatch(#[from] SizeMismatch),
    /// The node has no data path (e.g. a format node whose image is closed).
    #[error("node '{0}' has no medium")]
    NoMedium(String),
    /// A node or device name is already taken.
    #[error("duplicate node name '{0}'")]
    NameInUse(String),
    /// No node with that name.
    #[error("node '{0}' not found")]
    NodeNotFound(String),
    /// The node is still referenced (as a child or by a device).
    #[error("node '{0}' is in use")]
    NodeInUse(String),
    /// Attaching `child` under `parent` would create a cycle.
    #[error("Making '{child}' a backing child of '{parent}' would create a cycle")]
    Cycle {
        /// The node that would become a child.
        child: String,
        /// The node that would become its parent.
        parent: String,
    },
    /// Two parents of a node need permissions the other does not share (QEMU's message).
    #[error("{0}")]
    PermissionConflict(String),
    /// No internal snapshot matches.
    #[error("snapshot with id {id:?} and name {name:?} not found")]
    SnapshotNotFound {
        /// The id asked for.
        id: Option<String>,
        /// The name asked for.
        name: Option<String>,
    },
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// A host file (QEMU's `file` protocol driver).
    File {
        /// Path as given.
        filename: String,
    },
    /// QEMU's `null-co`: a disk of `size` bytes that reads zeros and drops writes.
    NullCo {
        /// Virtual size in bytes.
        size: u64,
    },
    /// An image format over a `file` child (`raw`, `qcow2`).
    Format {
        /// QEMU's driver name.
        name: String,
    },
    /// QEMU's `blkdebug` over an `image` child: passes requests through, failing some.
    Blkdebug,
    /// A backup job's `copy-before-write` filter over its `file` child (the job's source).
    CopyBeforeWrite,
    /// QEMU's `copy-on-read` filter over its `file` child: reads copy what the child's top
    /// layer does not hold into it (down to `bottom`, if given: only data of the chain down to
    /// that node inclusive).
    CopyOnRead {
        /// The `bottom` node name.
        bottom: Option<String>,
    },
}

impl Driver {
    /// The QEMU driver name (`file`, `null-co`, `raw`, `qcow2`).
    pub fn name(&self) -> &str {
        match self {
            Driver::File { .. } => "file",
            Driver::NullCo { .. } => "null-co",
            Driver::Format { name } => name,
            Driver::Blkdebug => "blkdebug",
            Driver::CopyBeforeWrite => "copy-before-write",
            Driver::CopyOnRead { .. } => "copy-on-read",
        }
    }
}

/// A child edge: `role` is QEMU's child name (`file`, `backing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    /// The child role.
    pub role: String,
    /// The child's node name.
    pub node: String,
}

pub(crate) enum DataPath {
    Protocol(Arc<ObservedStorage>),
    Format(Box<dyn FormatDriver>),
    /// A filter passing everything to its `file` child; `len` is the child's length.
    Filter {
        len: u64,
    },
    /// `null-co`: guest requests to the node itself read zeros and drop writes; the store (a
    /// [`NullStorage`]) is what a format parent writes through, logged for the node's bitmaps.
    Null(Arc<ObservedStorage>),
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataPath::Protocol(_) => "Protocol",
            DataPath::Format(_) => "Format",
            DataPath::Filter { .. } => "Filter",
            DataPath::Null(_) => "Null",
        })
    }
}

/// A block node.
#[derive(Debug)]
pub struct Node {
    /// The node-name (user-given or `#blockNNN`).
    pub name: String,
    /// What the node is.
    pub driver: Driver,
    /// Opened read-only.
    pub read_only: bool,
    /// Children, in the order they were attached.
    pub children: Vec<Child>,
    /// Dirty bitmaps, newest first (QEMU pushes new bitmaps on the head of the list).
    pub bitmaps: Vec<DirtyBitmap>,
    pub(crate) data: DataPath,
    /// For a `file` node with locking on: the file whose lock bytes stand for its users.
    pub(crate) lock_file: Option<Arc<FileStorage>>,
    /// Opened with a `read-only` option of its own (a root node, or an inline child that
    /// spelled it out), so a parent's reopen read-only does not reach it
    /// ([`Graph::keep_own_read_only`]).
    pub own_read_only: bool,
}

impl Node {
    /// Guest-visible length in bytes.
    pub fn length(&self) -> Result<u64, GraphError> {
        Ok(match &self.data {
            DataPath::Protocol(s) => s.len().map_err(FormatError::from)?,
            DataPath::Format(f) => f.virtual_size(),
            DataPath::Filter { len } => *len,
            DataPath::Null(_) => match self.driver {
                Driver::NullCo { size } => size,
                _ => 0,
            },
        })
    }

    /// The format's cluster size, if it has one.
    pub fn cluster_size(&self) -> Option<u64> {
        match &self.data {
            DataPath::Format(f) => f.cluster_size(),
            _ => None,
        }
    }

    /// The file name of the store under this node, if any.
    pub fn filename(&self) -> Option<&str> {
        match &self.data {
            DataPath::Protocol(s) => s.filename(),
            _ => match &self.driver {
                Driver::File { filename } => Some(filename),
                _ => None,
            },
        }
    }

    /// The format driver of a format node.
    pub fn format(&self) -> Option<&dyn FormatDriver> {
        match &self.data {
            DataPath::Format(f) => Some(f.as_ref()),
            _ => None,
        }
    }

    /// The bitmap named `name`.
    pub fn bitmap(&self, name: &str) -> Option<&DirtyBitmap> {
        self.bitmaps
            .iter()
            .find(|b| b.name.as_deref() == Some(name))
    }

    /// The bitmap named `name`, mutably.
    pub fn bitmap_mut(&mut self, name: &str) -> Option<&mut DirtyBitmap> {
        self.bitmaps
            .iter_mut()
            .find(|b| b.name.as_deref() == Some(name))
    }

    /// The node name of the child with role `role`.
    pub fn child(&self, role: &str) -> Option<&str> {
        self.children
            .iter()
            .find(|c| c.role == role)
            .map(|c| c.node.as_str())
    }

    /// The child a filter passes requests to: `file` (copy-on-read, copy-before-write) or
    /// `image` (blkdebug over a node that is not a protocol node).
    pub fn filtered_child(&self) -> Option<&str> {
        self.child("file").or_else(|| self.child("image"))
    }

    pub(crate) fn record_write(&mut self, range: ByteRange) {
        for bm in &mut self.bitmaps {
            bm.record_write(range);
        }
    }
}

/// A block backend: a device id (`-drive id=X`) naming a root node (or none: no medium).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The device id.
    pub name: String,
    /// The root node, if a medium is inserted.
    pub root: Option<String>,
}

/// The node graph.
#[derive(Debug, Default)]
pub struct Graph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) backends: Vec<Backend>,
    /// Names given to nodes still being opened, each with the list place the node will take.
    /// QEMU lists a node by when its name was assigned: a driver that opens its children itself
    /// (blkdebug's `image`) is named first, so its children are newer than it.
    pub(crate) reserved: Vec<(String, usize)>,
    /// Jobs, the deterministic clock and drained sections.
    pub(crate) jobs: JobSet,
    /// Nodes with QEMU's copy-on-read flag (`-drive copy-on-read=on`): every read of them
    /// first copies what their top layer does not hold, as the copy-on-read filter does.
    pub(crate) copy_on_read: Vec<String>,
    /// The rules of blkdebug nodes over a format node or filter (the graph passes their
    /// requests on; a raw node above signals the debug events that arm them).
    pub(crate) debug_rules: Vec<(String, Arc<BlkdebugRules>)>,
}

/// The kind of a guest request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Write data.
    Data,
    /// Write zeroes, allowing unmap (`BDRV_REQ_MAY_UNMAP`, `qemu-io write -z -u`).
    Zeroes,
    /// Write zeroes, keeping allocated clusters allocated (`qemu-io write -z`).
    ZeroesNoUnmap,
    /// Discard (unmap).
    Discard,
    /// Write data as compressed clusters (whole clusters; formats without compression refuse).
    Compressed,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nodes, newest first (the order of `query-named-block-nodes`).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().rev()
    }

    /// Backends in creation order (the order of `query-block`).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node named `name`, or [`GraphError::NodeNotFound`].
    pub fn get(&self, name: &str) -> Result<&Node, GraphError> {
        self.node(name)
            .ok_or_else(|| GraphError::NodeNotFound(name.into()))
    }

    /// The node named `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut Node, GraphError> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| GraphError::NodeNotFound(name.into()))
    }

    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Parents of `name`: `(parent node, role)` pairs, plus backends (role `root`) naming it.
    pub fn parents(&self, name: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .nodes
            .iter()
            .flat_map(|n| {
                n.children
                    .iter()
                    .filter(|c| c.node == name)
                    .map(|c| (n.name.clone(), c.role.clone()))
            })
            .collect();
        out.extend(
            self.backends
                .iter()
                .filter(|b| b.root.as_deref() == Some(name))
                .map(|b| (b.name.clone(), "root".to_string())),
        );
        out
    }

    fn check_free(&self, name: &str) -> Result<(), GraphError> {
        if self.node(name).is_some() || self.backend(name).is_some() || self.is_reserved(name) {
            return Err(GraphError::NameInUse(name.into()));
        }
        Ok(())
    }

    /// Like [`Self::check_free`], but a name reserved for the node being added is its own.
    fn check_claim(&self, name: &str) -> Result<(), GraphError> {
        if self.is_reserved(name) {
            return Ok(());
        }
        self.check_free(name)
    }

    /// Whether `name` is reserved for a node still being opened.
    pub fn is_reserved(&self, name: &str) -> bool {
        self.reserved.iter().any(|(n, _)| n == name)
    }

    /// Gives `name` to a node about to be opened, before its children: the node takes the
    /// newest place in the list now, and nodes added before it (its children) are newer.
    pub fn reserve_name(&mut self, name: &str) -> Result<(), GraphError> {
        self.check_free(name)?;
        self.reserved.push((name.into(), self.nodes.len()));
        Ok(())
    }

    /// Drops the reservation of `name` (the open failed); no-op if none.
    pub fn release_name(&mut self, name: &str) {
        self.reserved.retain(|(n, _)| n != name);
    }

    /// Puts `node` in the list: at its reserved place, or as the newest node.
    fn insert_node(&mut self, node: Node) {
        match self.reserved.iter().position(|(n, _)| *n == node.name) {
            Some(i) => {
                let (_, at) = self.reserved.remove(i);
                // Nodes opened since the reservation (its children) all lie after `at`; the
                // reservations taken after this one are newer and move one place on with them.
                for (_, later) in &mut self.reserved[i..] {
                    if *later >= at {
                        *later += 1;
                    }
                }
                let at = at.min(self.nodes.len());
                self.nodes.insert(at, node);
            }
            None => self.nodes.push(node),
        }
    }

    /// Adds a `file` node over host file `filename`, with image locking on (QEMU's default).
    pub fn add_file(
        &mut self,
        name: &str,
        filename: &str,
        read_only: bool,
    ) -> Result<(), GraphError> {
        self.add_file_with(name, filename, read_only, true)
    }

    /// Adds a `file` node over host file `filename`; `locking` is QEMU's `locking` option
    /// (on: the node's users take OFD locks on the file, see [`crate::storage::lock`]).
    pub fn add_file_with(
        &mut self,
        name: &str,
        filename: &str,
        read_only: bool,
        locking: bool,
    ) -> Result<(), GraphError> {
        self.check_claim(name)?;
        let store = Arc::new(FileStorage::open(filename, read_only).map_err(FormatError::from)?);
        let lock_file = locking.then(|| store.clone());
        self.insert_node(Node {
            lock_file,
            own_read_only: false,
            name: name.into(),
            driver: Driver::File {
                filename: filename.into(),
            },
            read_only,
            children: Vec::new(),
            bitmaps: Vec::new(),
            data: DataPath::Protocol(Arc::new(ObservedStorage::with_status_cache(store))),
        });
        Ok(())
    }

    /// Sets whether discard requests reach protocol node `name`'s store (QEMU's `discard`
    /// option: `unmap` or `ignore`). Nodes pass them until told otherwise, as QEMU's nodes
    /// opened as another node's child do.
    pub fn set_discard_unmap(&mut self, name: &str, on: bool) -> Result<(), GraphError> {
        if let DataPath::Protocol(s) | DataPath::Null(s) = &self.get(name)?.data {
            s.set_unmap(on);
        }
        Ok(())
    }

    /// Sets a format node's `pass-discard-request` (see
    /// [`FormatDriver::set_pass_discard_request`]); other nodes ignore it.
    pub fn set_pass_discard_request(&mut self, name: &str, on: bool) -> Result<(), GraphError> {
        if let DataPath::Format(f) = &mut self.get_mut(name)?.data {
            f.set_pass_discard_request(on);
        }
        Ok(())
    }

    /// Adds a `null-co` node of `size` bytes that reads zeros.
    pub fn add_null(&mut self, name: &str, size: u64, read_only: bool) -> Result<(), GraphError> {
        self.add_null_with(name, size, read_only, true)
    }

    /// Adds a `null-co` node of `size` bytes; `read_zeroes` is QEMU's option (off: reads leave
    /// the reader's buffer as it was, see [`Graph::read_filled`]).
    pub fn add_null_with(
        &mut self,
        name: &str,
        size: u64,
        read_only: bool,
        read_zeroes: bool,
    ) -> Result<(), GraphError> {
        self.check_claim(name)?;
        self.insert_node(Node {
            name: name.into(),
            driver: Driver::NullCo { size },
            read_only,
            children: Vec::new(),
            bitmaps: Vec::new(),
            data: DataPath::Null(Arc::new(ObservedStorage::new(Arc::new(
                NullStorage::with_read_zeroes(size, read_zeroes),
            )))),
            lock_file: None,
            own_read_only: false,
        });
        Ok(())
    }

    /// Adds a format node `name` of `driver` over the protocol node `file`. Persistent bitmaps
    /// found in the image are attached, each pushed on the front in directory order (so the
    /// query lists them in reverse directory order, as QEMU does).
    pub fn add_format(
        &mut self,
        name: &str,
        driver: &str,
        file: &str,
        read_only: bool,
    ) -> Result<(), GraphError> {
        self.add_format_with(name, driver, file, read_only, &RuntimeOptions::default())
    }

    /// As [`Graph::add_format`], a qcow2 node with its runtime options (cache sizes, lazy
    /// refcounts; checked as QEMU checks them at open).
    pub fn add_format_with(
        &mut self,
        name: &str,
        driver: &str,
        file: &str,
        read_only: bool,
        qcow2_options: &RuntimeOptions,
    ) -> Result<(), GraphError> {
        self.check_claim(name)?;
        let store: Arc<dyn Storage> = match &self.get(file)?.data {
            DataPath::Protocol(s) | DataPath::Null(s) => s.clone(),
            // raw over a node without a store (a format node, a filter): the graph passes its
            // requests on, raw's debug events first.
            DataPath::Format(_) | DataPath::Filter { .. } if driver == "raw" => {
                let len = self.get(file)?.length()?;
                let node = Self::format_node(name, driver, file, read_only, Vec::new());
                self.insert_node(Node {
                    data: DataPath::Filter { len },
                    ..node
                });
                return Ok(());
            }
            _ => return Err(GraphError::NoMedium(file.into())),
        };
        // QEMU attaches the `file` child, taking its permissions, before the driver reads a byte:
        // first the parents of the file node must agree, then other users of the file.
        let wanted = Self::format_perms(driver, read_only).unwrap_or((0, lock::PERM_ALL));
        self.check_parent_perms(name, file, wanted)?;
        if let Some(holder) = self.lock_holder(file) {
            let (p, s) = self.lock_perms(&holder);
            self.check_locks(&holder, p | wanted.0, s & wanted.1)?;
        }
        let mut fmt = format::open_with(driver, store, read_only, qcow2_options)?;
        let loaded = fmt.take_loaded_bitmaps();
        let mut bitmaps = Vec::with_capacity(loaded.len());
        for LoadedBitmap { bitmap } in loaded {
            bitmaps.insert(0, bitmap);
        }
        let node = Self::format_node(name, driver, file, read_only, bitmaps);
        self.insert_node(Node {
            data: DataPath::Format(fmt),
            ..node
        });
        self.drain_store_writes(name);
        self.apply_locks(file)?;
        Ok(())
    }

    /// A format node `name` of `driver` over its `file` child, before its data path is set
    /// (a placeholder filter of length 0).
    fn format_node(
        name: &str,
        driver: &str,
        file: &str,
        read_only: bool,
        bitmaps: Vec<DirtyBitmap>,
    ) -> Node {
        Node {
            name: name.into(),
            driver: Driver::Format {
                name: driver.into(),
            },
            read_only,
            children: vec![Child {
                role: "file".into(),
                node: file.into(),
            }],
            bitmaps,
            data: DataPath::Filter { len: 0 },
            lock_file: None,
            own_read_only: false,
        }
    }

    /// Adds a `blkdebug` node `name` over node `image` with error-injection rules: over a
    /// protocol or null-co node it wraps the store (rules fail requests of the format driver
    /// above); over a format node or filter it passes guest requests through.
    pub fn add_blkdebug(
        &mut self,
        name: &str,
        image: &str,
        read_only: bool,
        inject: Vec<InjectRule>,
        set_state: Vec<StateRule>,
    ) -> Result<(), GraphError> {
        self.check_claim(name)?;
        let data = match &self.get(image)?.data {
            DataPath::Protocol(s) | DataPath::Null(s) => {
                let dbg: Arc<dyn Storage> =
                    Arc::new(BlkdebugStorage::new(s.clone(), inject, set_state));
                DataPath::Protocol(Arc::new(ObservedStorage::new(dbg)))
            }
            // Over a format node or a filter, blkdebug passes requests on as a filter: its
            // rules are armed by the debug events a raw node above it signals.
            DataPath::Format(_) | DataPath::Filter { .. } => {
                let rules = Arc::new(BlkdebugRules::new(inject, set_state));
                self.debug_rules.push((name.into(), rules));
                DataPath::Filter {
                    len: self.get(image)?.length()?,
                }
            }
        };
        self.insert_node(Node {
            name: name.into(),
            driver: Driver::Blkdebug,
            read_only,
            children: vec![Child {
                role: "image".into(),
                node: image.into(),
            }],
            bitmaps: Vec::new(),
            data,
            lock_file: None,
            own_read_only: false,
        });
        Ok(())
    }

    /// Adds a `copy-on-read` filter `name` over node `file` (its `file` child). `bottom`, if
    /// given, must be `file` or a node down its backing chain.
    pub fn add_copy_on_read(
        &mut self,
        name: &str,
        file: &str,
        read_only: bool,
        bottom: Option<&str>,
    ) -> Result<(), GraphError> {
        self.check_claim(name)?;
        let len = self.get(file)?.length()?;
        if let Some(b) = bottom {
            self.get(b)?;
        }
        self.insert_node(Node {
            name: name.into(),
            driver: Driver::CopyOnRead {
                bottom: bottom.map(Into::into),
            },
            read_only,
            children: vec![Child {
                role: "file".into(),
                node: file.into(),
            }],
            bitmaps: Vec::new(),
            data: DataPath::Filter { len },
            lock_file: None,
            own_read_only: false,
        });
        Ok(())
    }

    /// Whether the cluster at `offset` is allocated in `from` or down its backing chain to
    /// `bottom` inclusive (QEMU's `bdrv_is_allocated_above` with an inclusive base).
    fn allocated_down_to(
        &mut self,
        from: &str,
        bottom: &str,
        offset: u64,
    ) -> Result<bool, GraphError> {
        let mut cur = from.to_string();
        loop {
            if offset < self.get(&cur)?.length()? && self.is_allocated(&cur, offset)? {
                return Ok(true);
            }
            if cur == bottom {
                return Ok(false);
            }
            match self.backing_of(&cur) {
                Some(b) => cur = b,
                None => return Ok(false),
            }
        }
    }

    /// Copy-on-read of `[offset, offset + len)` of `node` (a copy-on-read filter's child):
    /// each cluster its top layer does not hold is read through the chain and written into
    /// it, zeroes as zero clusters. These writes leave the data unchanged, so as in QEMU they
    /// mark no bitmap of `node` (its file node's bitmaps see the host writes).
    fn copy_on_read(
        &mut self,
        node: &str,
        bottom: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<(), GraphError> {
        let n = self.get(node)?;
        if n.format().is_none() || n.read_only {
            return Ok(());
        }
        let cluster = n.cluster_size().unwrap_or(DEFAULT_COR_CLUSTER);
        let length = n.length()?;
        let mut pos = offset - offset % cluster;
        let end = (offset + len)
            .div_ceil(cluster)
            .saturating_mul(cluster)
            .min(length);
        while pos < end {
            let n = cluster.min(end - pos);
            let copy = !self.is_allocated(node, pos)?
                && match (bottom, self.backing_of(node)) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(b), Some(below)) => self.allocated_down_to(&below, b, pos)?,
                };
            if copy {
                let mut buf = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
                self.read_into(node, pos, &mut buf)?;
                if buf.iter().all(|b| *b == 0) {
                    self.with_driver(node, |f, bk| f.write_zeroes_backed(pos, n, bk, false))?;
                } else {
                    self.with_driver(node, |f, bk| f.write_backed(pos, &buf, bk))?;
                }
                self.drain_store_writes(node);
            }
            pos += n;
        }
        Ok(())
    }

    /// Turns QEMU's copy-on-read flag of `node` on or off (`-drive copy-on-read=on` sets it on
    /// the drive's root node; no filter node is inserted).
    pub fn set_copy_on_read(&mut self, node: &str, on: bool) -> Result<(), GraphError> {
        self.get(node)?;
        self.copy_on_read.retain(|n| n != node);
        if on {
            self.copy_on_read.push(node.into());
        }
        Ok(())
    }

    /// Adds a block backend `name`, optionally with root node `root`.
    pub fn add_backend(&mut self, name: &str, root: Option<&str>) -> Result<(), GraphError> {
        self.check_free(name)?;
        if let Some(r) = root {
            self.get(r)?;
        }
        self.backends.push(Backend {
            name: name.into(),
            root: root.map(Into::into),
        });
        Ok(())
    }

    /// Removes node `name`, which must have no parents. Persistent bitmaps are stored into the
    /// image first (QEMU stores them when a node is closed) and the image is flushed.
    pub fn remove_node(&mut self, name: &str) -> Result<(), GraphError> {
        if !self.parents(name).is_empty() {
            return Err(GraphError::NodeInUse(name.into()));
        }
        self.close_node(name)?;
        let files: Vec<String> = self
            .get(name)?
            .children
            .iter()
            .filter(|c| c.role == "file" || c.role == "image")
            .map(|c| c.node.clone())
            .collect();
        self.nodes.retain(|n| n.name != name);
        self.copy_on_read.retain(|n| n != name);
        self.debug_rules.retain(|(n, _)| n != name);
        for f in files {
            self.apply_locks(&f)?;
        }
        Ok(())
    }

    /// Stores persistent bitmaps and flushes node `name` (close without removal).
    pub fn close_node(&mut self, name: &str) -> Result<(), GraphError> {
        let node = self.get_mut(name)?;
        if let DataPath::Format(fmt) = &mut node.data {
            if !node.read_only {
                let persistent: Vec<&DirtyBitmap> = node
                    .bitmaps
                    .iter()
                    .filter(|b| b.state.persistent && !b.state.skip_store)
                    .collect();
                fmt.store_bitmaps(&persistent)?;
            }
            fmt.close()?;
        }
        self.drain_store_writes(name);
        Ok(())
    }

    /// Closes every node, top-down (formats before their files): what `quit` does. Image locks
    /// are released at once, as when QEMU exits, even though the graph lives on.
    pub fn close_all(&mut self) -> Vec<(String, GraphError)> {
        let names: Vec<String> = self.nodes().map(|n| n.name.clone()).collect();
        let mut errors: Vec<(String, GraphError)> = names
            .into_iter()
            .filter_map(|n| self.close_node(&n).err().map(|e| (n, e)))
            .collect();
        for n in &mut self.nodes {
            if let Some(f) = n.lock_file.take() {
                if let Err(e) = lock::apply(f.file(), 0, lock::PERM_ALL) {
                    errors.push((n.name.clone(), FormatError::from(e).into()));
                }
            }
        }
        errors
    }

    // ---- dirty bitmaps -------------------------------------------------------------------------

    /// Creates bitmap `name` on `node` covering the node's length, pushed on the front.
    pub fn bitmap_add(
        &mut self,
        node: &str,
        name: &str,
        granularity: Granularity,
        enabled: bool,
        persistent: bool,
    ) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        if n.bitmap(name).is_some() {
            return Err(GraphError::BitmapExists(name.into()));
        }
        let mut bm = DirtyBitmap::new(Some(name.into()), n.length()?, granularity);
        bm.state.enabled = enabled;
        bm.state.persistent = persistent;
        n.bitmaps.insert(0, bm);
        Ok(())
    }

    /// The bitmap `name` of `node`.
    pub fn bitmap(&self, node: &str, name: &str) -> Result<&DirtyBitmap, GraphError> {
        self.get(node)?
            .bitmap(name)
            .ok_or_else(|| GraphError::BitmapNotFound(name.into()))
    }

    /// The bitmap `name` of `node`, mutably.
    pub fn bitmap_mut(&mut self, node: &str, name: &str) -> Result<&mut DirtyBitmap, GraphError> {
        self.get_mut(node)?
            .bitmap_mut(name)
            .ok_or_else(|| GraphError::BitmapNotFound(name.into()))
    }

    /// Detaches bitmap `name` from `node` and returns it with its position in the list, so an
    /// undo can put it back where it was.
    pub fn bitmap_take(
        &mut self,
        node: &str,
        name: &str,
    ) -> Result<(usize, DirtyBitmap), GraphError> {
        let n = self.get_mut(node)?;
        let pos = n
            .bitmaps
            .iter()
            .position(|b| b.name.as_deref() == Some(name))
            .ok_or_else(|| GraphError::BitmapNotFound(name.into()))?;
        Ok((pos, n.bitmaps.remove(pos)))
    }

    /// Re-attaches a bitmap at `pos` (clamped to the list length).
    pub fn bitmap_put(
        &mut self,
        node: &str,
        pos: usize,
        bitmap: DirtyBitmap,
    ) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        let pos = pos.min(n.bitmaps.len());
        n.bitmaps.insert(pos, bitmap);
        Ok(())
    }

    /// ORs bitmap `src_name` of `src_node` into bitmap `target` of `node`.
    pub fn bitmap_merge(
        &mut self,
        node: &str,
        target: &str,
        src_node: &str,
        src_name: &str,
    ) -> Result<(), GraphError> {
        let src: Bits = self.bitmap(src_node, src_name)?.bits.clone();
        self.bitmap_mut(node, target)?.bits.merge_from(&src)?;
        Ok(())
    }

    /// Deletes the stored copy of a persistent bitmap from the node's image at once.
    pub fn remove_stored_bitmap(&mut self, node: &str, name: &str) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        if let DataPath::Format(fmt) = &mut n.data {
            fmt.remove_stored_bitmap(name)?;
        }
        self.drain_store_writes(node);
        Ok(())
    }

    // ---- guest I/O -----------------------------------------------------------------------------

    /// What a filter node does with a request before passing it to `child`: a raw node
    /// signals its debug event to the child's blkdebug rules; a blkdebug node fails it if an
    /// armed rule matches.
    fn filter_request(
        &self,
        node: &str,
        child: &str,
        event: &str,
        kind: IoType,
        offset: u64,
        len: u64,
    ) -> Result<(), GraphError> {
        let is_raw = matches!(&self.get(node)?.driver, Driver::Format { name } if name == "raw");
        if is_raw {
            if let Some((_, rules)) = self.debug_rules.iter().find(|(n, _)| n == child) {
                rules.event(event);
            }
        }
        if let Some((_, rules)) = self.debug_rules.iter().find(|(n, _)| n == node) {
            rules.check(kind, offset, len).map_err(FormatError::from)?;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of `node`.
    pub fn read(&mut self, node: &str, offset: u64, len: u64) -> Result<Vec<u8>, GraphError> {
        self.read_filled(node, offset, len, 0)
    }

    /// Reads `len` bytes at `offset` of `node` into a buffer first filled with `fill`: what a
    /// reader sees where a driver leaves the buffer alone (null-co without `read-zeroes`;
    /// qemu-io fills its buffers with 0xab).
    pub fn read_filled(
        &mut self,
        node: &str,
        offset: u64,
        len: u64,
        fill: u8,
    ) -> Result<Vec<u8>, GraphError> {
        let n = self.get_mut(node)?;
        let length = n.length()?;
        if offset.checked_add(len).is_none_or(|end| end > length) {
            return Err(FormatError::OutOfRange {
                offset,
                len,
                size: length,
            }
            .into());
        }
        if let DataPath::Filter { .. } = n.data {
            let bottom = match &n.driver {
                Driver::CopyOnRead { bottom } => Some(bottom.clone()),
                _ => None,
            };
            let child = n.filtered_child().map(str::to_string);
            let child = child.ok_or_else(|| GraphError::NoMedium(node.into()))?;
            if let Some(bottom) = bottom {
                self.copy_on_read(&child, bottom.as_deref(), offset, len)?;
            }
            self.filter_request(node, &child, "read_aio", IoType::Read, offset, len)?;
            return self.read_filled(&child, offset, len, fill);
        }
        if self.copy_on_read.iter().any(|n| n == node) {
            self.copy_on_read(node, None, offset, len)?;
        }
        let mut buf = vec![
            fill;
            usize::try_from(len).map_err(|_| FormatError::OutOfRange {
                offset,
                len,
                size: length
            })?
        ];
        let read = self.read_into(node, offset, &mut buf);
        // A read can evict dirty metadata (a qcow2 L2 table missing from a small cache), here
        // or down the backing chain: those writes reach the file nodes' bitmaps now.
        let mut layer = Some(node.to_string());
        while let Some(n) = layer {
            self.drain_store_writes(&n);
            layer = self.backing_of(&n);
        }
        read?;
        Ok(buf)
    }

    /// Reads into `buf` (range checked by the caller), through the backing chain.
    fn read_into(&mut self, node: &str, offset: u64, buf: &mut [u8]) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        match &mut n.data {
            DataPath::Protocol(s) => s.read_at(buf, offset).map_err(FormatError::from)?,
            DataPath::Format(_) => {
                self.with_driver(node, |f, bk| f.read_backed(offset, buf, bk))?;
            }
            DataPath::Filter { .. } => {
                let child = n.filtered_child().map(str::to_string);
                let child = child.ok_or_else(|| GraphError::NoMedium(node.into()))?;
                self.read_into(&child, offset, buf)?;
            }
            DataPath::Null(s) => s.read_at(buf, offset).map_err(FormatError::from)?,
        }
        Ok(())
    }

    /// The `backing` child of `node`, if any.
    pub fn backing_of(&self, node: &str) -> Option<String> {
        self.node(node)?
            .children
            .iter()
            .find(|c| c.role == "backing")
            .map(|c| c.node.clone())
    }

    /// Runs `f` on the format driver of `node` with its backing child as the [`Backing`]. The
    /// driver is taken out of the node for the call, so the backing chain can be read through
    /// the graph (the chain has no cycles, so it never reaches `node` again).
    fn with_driver<T>(
        &mut self,
        node: &str,
        f: impl FnOnce(&mut dyn FormatDriver, &mut dyn Backing) -> Result<T, FormatError>,
    ) -> Result<T, GraphError> {
        let backing = self.backing_of(node);
        let n = self.get_mut(node)?;
        let mut data = std::mem::replace(&mut n.data, DataPath::Filter { len: 0 });
        let result = match &mut data {
            DataPath::Format(drv) => match backing {
                Some(b) => f(
                    drv.as_mut(),
                    &mut GraphBacking {
                        graph: self,
                        node: b,
                    },
                ),
                None => f(drv.as_mut(), &mut NoBacking),
            },
            _ => Err(FormatError::Unsupported("Operation not supported".into())),
        };
        if let Ok(n) = self.get_mut(node) {
            n.data = data;
        }
        Ok(result?)
    }

    /// Writes to `node` (data, zeroes or discard), marking the node's enabled bitmaps and, through
    /// the store, those of its `file` child.
    pub fn write(
        &mut self,
        node: &str,
        offset: u64,
        kind: WriteKind,
        data: &[u8],
        len: u64,
    ) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        let length = n.length()?;
        if offset.checked_add(len).is_none_or(|end| end > length) {
            return Err(FormatError::OutOfRange {
                offset,
                len,
                size: length,
            }
            .into());
        }
        if n.read_only {
            return Err(FormatError::ReadOnly.into());
        }
        if let DataPath::Filter { .. } = n.data {
            let child = n.filtered_child().map(str::to_string);
            let child = child.ok_or_else(|| GraphError::NoMedium(node.into()))?;
            let io = match kind {
                WriteKind::Data | WriteKind::Compressed => IoType::Write,
                WriteKind::Zeroes | WriteKind::ZeroesNoUnmap => IoType::WriteZeroes,
                WriteKind::Discard => IoType::Discard,
            };
            let done = self
                .filter_request(node, &child, "write_aio", io, offset, len)
                .and_then(|()| self.write(&child, offset, kind, data, len));
            // Every layer a write passes through tracks it (the filter's own bitmaps too),
            // when the request ends, failed (I/O error) or not.
            if matches!(done, Ok(()) | Err(GraphError::Format(FormatError::Io(_)))) {
                self.get_mut(node)?
                    .record_write(ByteRange::new(offset, len));
            }
            return done;
        }
        // Copy-before-write: a backup job whose source this is saves the old data first.
        self.copy_before_write(node, offset, len)?;
        let n = self.get_mut(node)?;
        let done: Result<(), GraphError> = match (&mut n.data, kind) {
            (DataPath::Protocol(_), WriteKind::Compressed) => {
                return Err(FormatError::Unsupported(
                    "Compression is not supported for this drive".into(),
                )
                .into())
            }
            (DataPath::Protocol(s), WriteKind::Data) => s
                .write_at(data, offset)
                .map_err(|e| FormatError::from(e).into()),
            (DataPath::Protocol(s), WriteKind::Discard) => s
                .discard(offset, len)
                .map_err(|e| FormatError::from(e).into()),
            (DataPath::Protocol(s), _) => s
                .write_zeroes(offset, len)
                .map_err(|e| FormatError::from(e).into()),
            (DataPath::Format(_), kind) => self.with_driver(node, |f, bk| match kind {
                WriteKind::Data => f.write_backed(offset, data, bk),
                WriteKind::Compressed => f.write_compressed_backed(offset, data, bk),
                WriteKind::Zeroes => f.write_zeroes_backed(offset, len, bk, true),
                WriteKind::ZeroesNoUnmap => f.write_zeroes_backed(offset, len, bk, false),
                WriteKind::Discard => f.discard_backed(offset, len, bk),
            }),
            (DataPath::Filter { .. }, _) | (DataPath::Null(_), _) => Ok(()),
        };
        // QEMU marks a request's range when it finishes, failed or not (checked with blkdebug
        // errors on writes, write-zeroes and discards: the raw and blkdebug nodes are marked,
        // the file node under the failing blkdebug not). An I/O error is such a failure; the
        // other errors stand for checks QEMU makes before the request starts.
        let reached = matches!(done, Ok(()) | Err(GraphError::Format(FormatError::Io(_))));
        if reached || kind == WriteKind::Discard {
            self.get_mut(node)?
                .record_write(ByteRange::new(offset, len));
        }
        self.drain_store_writes(node);
        done
    }

    /// Flushes `node`.
    pub fn flush(&mut self, node: &str) -> Result<(), GraphError> {
        let n = self.get_mut(node)?;
        if let DataPath::Filter { .. } = n.data {
            let child = n.filtered_child().map(str::to_string);
            let child = child.ok_or_else(|| GraphError::NoMedium(node.into()))?;
            return self.flush(&child);
        }
        match &mut n.data {
            DataPath::Protocol(s) => s.flush_request().map_err(FormatError::from)?,
            DataPath::Format(f) => f.flush()?,
            DataPath::Filter { .. } | DataPath::Null(_) => {}
        }
        self.drain_store_writes(node);
        Ok(())
    }

    /// Resizes `node` to `new_size` bytes (QEMU's `bdrv_co_truncate`): a read-only node
    /// refuses; a file (or blkdebug over one) truncates its store; raw and filters resize their
    /// child first and take the new size; qcow2 resizes its image, and when it has a backing
    /// child zeroes the new range so the backing file's data does not show through, as QEMU
    /// does; null-co cannot resize. The node's own bitmaps follow its new length (whole
    /// sectors). With `parents_follow` (QEMU 7.2, whose raw and filter drivers take their
    /// child's length whenever asked) raw and filter parents take the new length too, their
    /// bitmaps unchanged; otherwise (10.0) a parent keeps the length it had.
    pub fn truncate(
        &mut self,
        node: &str,
        new_size: u64,
        parents_follow: bool,
    ) -> Result<(), GraphError> {
        self.truncate_node(node, new_size)?;
        if parents_follow {
            self.parents_follow_length(node)?;
        }
        Ok(())
    }

    /// Raw and filter parents of `node` (and theirs, upwards) take its length.
    fn parents_follow_length(&mut self, node: &str) -> Result<(), GraphError> {
        let len = self.get(node)?.length()?;
        for (parent, role) in self.parents(node) {
            if role != "file" && role != "image" {
                continue;
            }
            let Ok(p) = self.get_mut(&parent) else {
                continue;
            };
            match &mut p.data {
                DataPath::Format(f) if f.format_name() == "raw" => f.refresh_size(len),
                DataPath::Filter { len: l } => *l = len,
                _ => continue,
            }
            self.parents_follow_length(&parent)?;
        }
        Ok(())
    }

    fn truncate_node(&mut self, node: &str, new_size: u64) -> Result<(), GraphError> {
        let n = self.get(node)?;
        if n.read_only {
            return Err(FormatError::ReadOnly.into());
        }
        let old_size = n.length()?;
        let child = match (&n.data, &n.driver) {
            (DataPath::Format(_), Driver::Format { name }) if name == "raw" => {
                n.child("file").map(str::to_string)
            }
            (DataPath::Filter { .. }, _) => n.filtered_child().map(str::to_string),
            _ => None,
        };
        if let Some(c) = &child {
            self.truncate_node(c, new_size)?;
        }
        let n = self.get_mut(node)?;
        let result: Result<(), GraphError> = match &mut n.data {
            DataPath::Protocol(s) => s.set_len(new_size).map_err(|e| FormatError::from(e).into()),
            DataPath::Null(_) => Err(FormatError::Unsupported(
                "Image format driver does not support resize".into(),
            )
            .into()),
            DataPath::Filter { len } => {
                *len = new_size;
                Ok(())
            }
            DataPath::Format(_) => {
                let r = self.with_driver(node, |f, _| f.truncate(new_size));
                if r.is_ok() && new_size > old_size && self.backing_of(node).is_some() {
                    self.with_driver(node, |f, bk| {
                        f.write_zeroes_backed(old_size, new_size - old_size, bk, false)
                    })
                } else {
                    r
                }
            }
        };
        self.drain_store_writes(node);
        result?;
        let len = new_size.div_ceil(512) * 512;
        for bm in &mut self.get_mut(node)?.bitmaps {
            bm.bits.resize(len);
        }
        Ok(())
    }

    // ---- backing chains -------------------------------------------------------------------------

    /// Whether `target` is `from` or reachable from it through children of any role.
    fn reaches(&self, from: &str, target: &str) -> bool {
        let mut stack = vec![from.to_string()];
        let mut seen: Vec<String> = Vec::new();
        while let Some(n) = stack.pop() {
            if n == target {
                return true;
            }
            if seen.contains(&n) {
                continue;
            }
            if let Some(node) = self.node(&n) {
                stack.extend(node.children.iter().map(|c| c.node.clone()));
            }
            seen.push(n);
        }
        false
    }

    /// Checks that `backing` may become the backing child of `node`.
    fn check_backing(&self, node: &str, backing: &str) -> Result<(), GraphError> {
        let n = self.get(node)?;
        self.get(backing)?;
        if !n.format().is_some_and(|f| f.supports_backing()) {
            return Err(FormatError::Unsupported(format!(
                "Driver '{}' of node '{node}' does not support backing files",
                n.driver.name()
            ))
            .into());
        }
        if self.reaches(backing, node) {
            return Err(GraphError::Cycle {
                child: backing.into(),
                parent: node.into(),
            });
        }
        Ok(())
    }

    /// Attaches `backing` as the `backing` child of `node` (replacing any), or detaches it.
    pub fn set_backing(&mut self, node: &str, backing: Option<&str>) -> Result<(), GraphError> {
        if let Some(b) = backing {
            self.check_backing(node, b)?;
        }
        let n = self.get_mut(node)?;
        n.children.retain(|c| c.role != "backing");
        if let Some(b) = backing {
            n.children.push(Child {
                role: "backing".into(),
                node: b.into(),
            });
        }
        Ok(())
    }

    /// QEMU's `bdrv_append`: `node` becomes the backing child of `overlay`, and every other
    /// parent of `node` (node edges of any role, backends) points at `overlay` instead.
    pub fn append_overlay(&mut self, node: &str, overlay: &str) -> Result<(), GraphError> {
        self.check_backing(overlay, node)?;
        self.repoint(node, overlay);
        self.set_backing(overlay, Some(node))
    }

    /// Undoes [`Graph::append_overlay`]: `overlay` loses its backing child and every parent of
    /// `overlay` points at `node` again.
    pub fn remove_overlay(&mut self, overlay: &str, node: &str) -> Result<(), GraphError> {
        self.get(overlay)?;
        self.get(node)?;
        self.set_backing(overlay, None)?;
        self.repoint(overlay, node);
        Ok(())
    }

    /// Re-points every edge to `from` (except from `to` itself) and every backend at `to`.
    fn repoint(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            if n.name == to {
                continue;
            }
            for c in &mut n.children {
                if c.node == from {
                    c.node = to.into();
                }
            }
        }
        for b in &mut self.backends {
            if b.root.as_deref() == Some(from) {
                b.root = Some(to.into());
            }
        }
    }

    /// Marks `node` as opened with its own `read-only` option (QEMU: an option the node's
    /// own options set, not one inherited from a parent): reopening a parent read-only leaves
    /// it as it is. Measured on QEMU 7.2 and 10.0 after `blockdev-snapshot(-sync)`: a `file`
    /// node added by its own `blockdev-add` and referenced by name stays read-write, as does
    /// an inline one given `read-only: false`; an inline one without the option follows.
    pub fn keep_own_read_only(&mut self, node: &str) -> Result<(), GraphError> {
        self.get_mut(node)?.own_read_only = true;
        Ok(())
    }

    /// Reopens `node` and its `file` child read-only, as QEMU does with the old active layer
    /// at an external snapshot's commit: persistent bitmaps (not `skip_store`) are stored first
    /// and then become read-only. If storing fails the reopen is abandoned (QEMU ignores the
    /// error and the node stays writable): the result lists `(node, message)` then.
    pub fn reopen_read_only(&mut self, node: &str) -> Result<Vec<(String, String)>, GraphError> {
        let n = self.get_mut(node)?;
        if n.read_only {
            return Ok(Vec::new());
        }
        if let DataPath::Format(fmt) = &mut n.data {
            let persistent: Vec<&crate::bitmap::DirtyBitmap> = n
                .bitmaps
                .iter()
                .filter(|b| b.state.persistent && !b.state.skip_store)
                .collect();
            let stored = fmt
                .store_bitmaps(&persistent)
                .and_then(|()| fmt.inactivate());
            if let Err(e) = stored {
                self.drain_store_writes(node);
                return Ok(vec![(node.to_string(), e.to_string())]);
            }
            fmt.set_read_only();
            for bm in &mut n.bitmaps {
                if bm.state.persistent {
                    bm.state.readonly = true;
                }
            }
        }
        n.read_only = true;
        let file = n
            .children
            .iter()
            .find(|c| c.role == "file")
            .map(|c| c.node.clone());
        self.drain_store_writes(node);
        if let Some(f) = file {
            // The reopen reaches the children that inherit the node's options: the file node
            // and, under a blkdebug node, its image, as long as each was opened inline without
            // a read-only option of its own.
            let mut below = Some(f.clone());
            while let Some(b) = below {
                let n = self.get_mut(&b)?;
                if n.own_read_only {
                    break;
                }
                n.read_only = true;
                below = match n.driver {
                    Driver::Blkdebug => n.child("image").map(str::to_string),
                    _ => None,
                };
            }
            self.apply_locks(&f)?;
        }
        Ok(Vec::new())
    }

    // ---- image locking ----------------------------------------------------------------------

    /// What a format node of `driver` takes on its `file` child: qcow2 (its `file` child holds
    /// metadata) needs consistent reads, and writes and resizes when writable, and never shares
    /// writes or resizes. Raw passes on its parents' needs; devices are the only parents that
    /// need any, and the reference has none.
    fn format_perms(driver: &str, read_only: bool) -> Option<(u8, u8)> {
        (driver == "qcow2").then(|| {
            let perm = lock::PERM_CONSISTENT_READ
                | if read_only {
                    0
                } else {
                    lock::PERM_WRITE | lock::PERM_RESIZE
                };
            (
                perm,
                lock::PERM_ALL & !(lock::PERM_WRITE | lock::PERM_RESIZE),
            )
        })
    }

    /// QEMU's `bdrv_parent_perms_conflict` for a new parent `new` of `file` wanting `wanted`:
    /// parents newest first (QEMU inserts at the head), every ordered pair checked.
    fn check_parent_perms(
        &self,
        new: &str,
        file: &str,
        wanted: (u8, u8),
    ) -> Result<(), GraphError> {
        let mut parents: Vec<(String, (u8, u8))> = vec![(new.to_string(), wanted)];
        for n in self.nodes.iter().rev() {
            let Driver::Format { name } = &n.driver else {
                continue;
            };
            if n.children
                .iter()
                .any(|c| c.role == "file" && c.node == file)
            {
                let perms = Self::format_perms(name, n.read_only).unwrap_or((0, lock::PERM_ALL));
                parents.push((n.name.clone(), perms));
            }
        }
        for (a, (_, a_shared)) in &parents {
            for (b, (b_perm, _)) in &parents {
                if a == b || b_perm & a_shared == *b_perm {
                    continue;
                }
                let perms = lock::perm_names(b_perm & !a_shared);
                return Err(GraphError::PermissionConflict(format!(
                    "Permission conflict on node '{file}': permissions '{perms}' are both required by node '{b}' (uses node '{file}' as 'file' child) and unshared by node '{a}' (uses node '{file}' as 'file' child)."
                )));
            }
        }
        Ok(())
    }

    /// The permissions the parents of `file` hold on it and what they share.
    fn lock_perms(&self, file: &str) -> (u8, u8) {
        let (mut perm, mut shared) = (0, lock::PERM_ALL);
        for n in &self.nodes {
            let wants = match &n.driver {
                Driver::Format { name } if Self::has_child(n, "file", file) => {
                    Self::format_perms(name, n.read_only)
                }
                // blkdebug passes its parents' permissions on to its image (QEMU's default
                // permissions of a filtered child).
                Driver::Blkdebug if Self::has_child(n, "image", file) => {
                    Some(self.lock_perms(&n.name))
                }
                _ => None,
            };
            if let Some((p, s)) = wants {
                perm |= p;
                shared &= s;
            }
        }
        (perm, shared)
    }

    fn has_child(n: &Node, role: &str, child: &str) -> bool {
        n.children.iter().any(|c| c.role == role && c.node == child)
    }

    /// The node whose file takes the lock bytes for users of `node`: a `file` node with
    /// locking on, or one below blkdebug nodes (which pass requests and permissions through).
    fn lock_holder(&self, node: &str) -> Option<String> {
        let n = self.node(node)?;
        if n.lock_file.is_some() {
            return Some(node.to_string());
        }
        match n.driver {
            Driver::Blkdebug => self.lock_holder(n.child("image")?),
            _ => None,
        }
    }

    fn check_locks(&self, file: &str, perm: u8, shared: u8) -> Result<(), GraphError> {
        let Some(f) = self.get(file)?.lock_file.as_ref() else {
            return Ok(());
        };
        match lock::check(f.file(), perm, shared) {
            Ok(()) => Ok(()),
            Err(LockError::Conflict(c)) => Err(FormatError::Locked(c.0).into()),
            Err(LockError::Io(e)) => Err(FormatError::from(e).into()),
        }
    }

    /// Makes the lock bytes of `file` match what its parents hold now.
    fn apply_locks(&self, file: &str) -> Result<(), GraphError> {
        self.get(file)?;
        let Some(holder) = self.lock_holder(file) else {
            return Ok(());
        };
        let Some(f) = self.get(&holder)?.lock_file.as_ref() else {
            return Ok(());
        };
        let (perm, shared) = self.lock_perms(&holder);
        lock::apply(f.file(), perm, shared).map_err(FormatError::from)?;
        Ok(())
    }

    // ---- internal snapshots --------------------------------------------------------------------

    /// The internal snapshots of `node`'s image, in table order.
    pub fn snapshots(&self, node: &str) -> Result<Vec<SnapshotEntry>, GraphError> {
        match self.get(node)?.format() {
            Some(f) => Ok(f.snapshots()?),
            None => Err(FormatError::Unsupported("Operation not supported".into()).into()),
        }
    }

    /// Creates an internal snapshot of `node`'s image.
    pub fn snapshot_create(
        &mut self,
        node: &str,
        params: &SnapshotParams,
    ) -> Result<SnapshotEntry, GraphError> {
        let r = self.with_driver(node, |f, _| f.snapshot_create(params));
        self.drain_store_writes(node);
        r
    }

    /// Deletes the first snapshot of `node` matching `id` and/or `name`.
    pub fn snapshot_delete(
        &mut self,
        node: &str,
        id: Option<&str>,
        name: Option<&[u8]>,
    ) -> Result<SnapshotEntry, GraphError> {
        let r = self.with_driver(node, |f, _| f.snapshot_delete(id, name));
        self.drain_store_writes(node);
        r?.ok_or_else(|| GraphError::SnapshotNotFound {
            id: id.map(Into::into),
            name: name.map(|n| String::from_utf8_lossy(n).into_owned()),
        })
    }

    /// Marks the `file` child's bitmaps with the store writes a format node caused. When the
    /// node is itself a protocol node its own writes were recorded directly, so the log is dropped.
    pub(crate) fn drain_store_writes(&mut self, node: &str) {
        let Some(n) = self.node(node) else { return };
        let file = n.child("file").map(str::to_string);
        let mut target = file.unwrap_or_else(|| node.to_string());
        let mut is_self = target == node;
        // A blkdebug store passes writes on to its `image` child's store, which logs them too.
        loop {
            self.drain_one_store(&target, is_self);
            match self.node(&target).and_then(|t| t.child("image")) {
                Some(image) => {
                    target = image.to_string();
                    is_self = false;
                }
                None => break,
            }
        }
    }

    fn drain_one_store(&mut self, target: &str, is_self: bool) {
        let Ok(t) = self.get_mut(target) else { return };
        if let DataPath::Protocol(s) | DataPath::Null(s) = &t.data {
            let writes = s.take_writes();
            // A write past the end grows the file, and QEMU grows the node's bitmaps with it.
            if let Ok(len) = s.len() {
                for bm in &mut t.bitmaps {
                    if bm.bits.len() != len {
                        bm.bits.resize(len);
                    }
                }
            }
            if !is_self {
                for r in writes {
                    t.record_write(r);
                }
            }
        }
    }
}

/// The backing child of a format node, read through the graph.
struct GraphBacking<'a> {
    graph: &'a mut Graph,
    node: String,
}

impl GraphBacking<'_> {
    /// Whether block status calls all of `[offset, offset + len)` zero, run by run (past a
    /// short node's end always). `probe` is QEMU's `want_zero`: without it a protocol node's
    /// holes count as data (the status QEMU's copy-on-write zero detection uses).
    fn block_status_zero(
        &mut self,
        offset: u64,
        len: u64,
        probe: bool,
    ) -> Result<bool, FormatError> {
        let to_format = |e: GraphError| match e {
            GraphError::Format(f) => f,
            other => FormatError::Io(std::io::Error::other(other.to_string())),
        };
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let s = self
                .graph
                .status_above(&self.node, None, probe, pos, end - pos)
                .map_err(to_format)?;
            if s.len == 0 {
                return Ok(true);
            }
            if !s.zero {
                return Ok(false);
            }
            pos += s.len;
        }
        Ok(true)
    }
}

impl Backing for GraphBacking<'_> {
    fn present(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let to_format = |e: GraphError| match e {
            GraphError::Format(f) => f,
            other => FormatError::Io(std::io::Error::other(other.to_string())),
        };
        let len = self.graph.get(&self.node).and_then(|n| n.length());
        let len = len.map_err(to_format)?;
        let inside = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        let (head, tail) = buf.split_at_mut(inside);
        if !head.is_empty() {
            self.graph
                .read_into(&self.node, offset, head)
                .map_err(to_format)?;
        }
        tail.fill(0);
        Ok(())
    }

    fn is_zero(&mut self, offset: u64, len: u64) -> Result<bool, FormatError> {
        self.block_status_zero(offset, len, true)
    }

    fn is_zero_unprobed(&mut self, offset: u64, len: u64) -> Result<bool, FormatError> {
        self.block_status_zero(offset, len, false)
    }
}

#[cfg(test)]
mod tests;
