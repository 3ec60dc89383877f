//! The backup job: copies the source to the target cluster by cluster, with a copy-before-write
//! filter that saves a cluster's old contents to the target before a guest write changes it,
//! so the target ends up as the exact image of the source when the job started.
//!
//! The job's copy bitmap (an anonymous, disabled bitmap at the job's cluster size, on the filter
//! or, as QEMU <= 8.x kept it, on the source) says which clusters still have to be copied: all of them for `full`, `top` (unallocated ones
//! dropped when the job starts) and `none` (copied only before a guest write), the clusters
//! dirty in the sync bitmap for `bitmap`. The sync bitmap gets an anonymous successor that
//! records guest writes during the job; at finalization the successor replaces the bitmap
//! ("abdicate") or is merged back ("reclaim") as `bitmap-mode` says.

use super::{strerror, EventValue, Events, IoStatus, Job, JobError, JobEvent, RateLimit};
use crate::bitmap::{Bits, DirtyBitmap};
use crate::format::RunKind;
use crate::graph::{
    refine_by_file, store_run, Child, DataPath, Driver, Graph, GraphError, Node, WriteKind,
};
use crate::storage::Storage;
use crate::units::{ByteRange, Granularity};

/// QEMU's `MirrorSyncMode` as the job sees it (`incremental` is `bitmap` + `on-success`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every cluster.
    Full,
    /// Clusters allocated in the top layer.
    Top,
    /// Only copy-before-write.
    None,
    /// Clusters dirty in the sync bitmap.
    Bitmap,
}

impl SyncMode {
    /// Parses QEMU's name (`incremental` is not accepted here).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "full" => SyncMode::Full,
            "top" => SyncMode::Top,
            "none" => SyncMode::None,
            "bitmap" => SyncMode::Bitmap,
            _ => return None,
        })
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Top => "top",
            SyncMode::None => "none",
            SyncMode::Bitmap => "bitmap",
        }
    }
}

/// QEMU's `BitmapSyncMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapMode {
    /// Bitmap := successor on success.
    OnSuccess,
    /// Bitmap keeps its bits (plus the successor's).
    Never,
    /// Bitmap := successor (plus the clusters not copied, on failure).
    Always,
}

impl BitmapMode {
    /// Parses QEMU's name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "on-success" => BitmapMode::OnSuccess,
            "never" => BitmapMode::Never,
            "always" => BitmapMode::Always,
            _ => return None,
        })
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            BitmapMode::OnSuccess => "on-success",
            BitmapMode::Never => "never",
            BitmapMode::Always => "always",
        }
    }
}

/// QEMU's `BlockdevOnError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Fail the job.
    Report,
    /// Retry.
    Ignore,
    /// Stop on ENOSPC, else report.
    Enospc,
    /// Stop (pause the job).
    Stop,
    /// As `enospc` for block jobs.
    Auto,
}

impl OnError {
    /// Parses QEMU's name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "report" => OnError::Report,
            "ignore" => OnError::Ignore,
            "enospc" => OnError::Enospc,
            "stop" => OnError::Stop,
            "auto" => OnError::Auto,
            _ => return None,
        })
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;
/// The default (and minimum) backup cluster size.
pub const BACKUP_CLUSTER_SIZE: u64 = 64 * 1024;
/// The largest chunk one step copies.
pub const MAX_CHUNK: u64 = 1024 * 1024;
/// Requests a backup step starts at once (QEMU's default `max-workers`).
pub const MAX_WORKERS: usize = 64;
/// Delay before an ignored error's chunk is retried.
pub const RETRY_NS: u64 = 1_000_000;

/// Backup specifics of a job.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The source node.
    pub source: String,
    /// The target node.
    pub target: String,
    /// The copy-before-write filter, while the job holds it.
    pub filter: Option<String>,
    /// The sync mode.
    pub sync: SyncMode,
    /// The sync bitmap's name (on the source).
    pub bitmap: Option<String>,
    /// Its mode.
    pub bitmap_mode: Option<BitmapMode>,
    /// Write data clusters compressed (qcow2 targets); zero runs are written as zeroes.
    pub compress: bool,
    /// Policy for read errors.
    pub on_source_error: OnError,
    /// Policy for write errors.
    pub on_target_error: OnError,
    /// The job's cluster size.
    pub cluster_size: u64,
    /// Largest chunk per request (0: no limit but [`MAX_CHUNK`]).
    pub max_chunk: u64,
    /// Requests in flight at a time (`x-perf` `max-workers`).
    pub max_workers: usize,
    /// Source length.
    pub len: u64,
    successor_tag: u64,
    copy_tag: u64,
    done_tag: u64,
    /// Whether the copy bitmap lives on the source rather than on the filter.
    copy_on_source: bool,
    /// Nodes that close when the filter lets go of the target (see [`BackupParams`]).
    target_owned_nodes: u32,
    /// Discard each cluster on the source once copied (`discard-source`, 9.1+).
    pub discard_source: bool,
    /// Whether the job fails at its end when its filter no longer sits on the source (see
    /// [`BackupParams`]).
    pub(crate) displaced_filter_fails: bool,
}

impl Backup {
    /// Nodes the job uses (for drained sections).
    pub fn nodes(&self) -> Vec<String> {
        let mut v = vec![self.source.clone(), self.target.clone()];
        v.extend(self.filter.clone());
        v
    }

    /// Whether the job copies in the background (not `none`).
    pub fn has_background_work(&self) -> bool {
        self.sync != SyncMode::None
    }
}

/// Arguments of [`Graph::backup_create`].
#[derive(Debug, Clone)]
pub struct BackupParams {
    /// Job id.
    pub job_id: String,
    /// Source node.
    pub source: String,
    /// Target node.
    pub target: String,
    /// Sync mode.
    pub sync: SyncMode,
    /// Name of the copy-before-write filter node.
    pub filter_node_name: String,
    /// Sync bitmap.
    pub bitmap: Option<String>,
    /// Its mode.
    pub bitmap_mode: Option<BitmapMode>,
    /// Speed limit (bytes/s, 0 = none).
    pub speed: u64,
    /// Compress.
    pub compress: bool,
    /// Read error policy.
    pub on_source_error: OnError,
    /// Write error policy.
    pub on_target_error: OnError,
    /// Auto-finalize.
    pub auto_finalize: bool,
    /// Auto-dismiss.
    pub auto_dismiss: bool,
    /// Job transaction (None: its own).
    pub txn: Option<u64>,
    /// Largest chunk (0: no limit).
    pub max_chunk: u64,
    /// Requests in flight at a time (>= 1).
    pub max_workers: usize,
    /// Smallest job cluster size (`x-perf` `min-cluster-size`, 9.2+; 0: none).
    pub min_cluster_size: u64,
    /// Where the block-copy bitmap lives: on the source node, listed with its bitmaps from
    /// the job's creation on (QEMU <= 8.x, confirmed 7.2), or on the copy-before-write filter
    /// (false, confirmed 10.0).
    pub copy_bitmap_on_source: bool,
    /// How many nodes close when the filter, the target's last user, is closed at clean: a
    /// drive-backup target and its file (0: the target has other users). Where each graph
    /// change drains everything, each close is one more pause/resume pair of other jobs.
    pub target_owned_nodes: u32,
    /// `discard-source` (9.1+): after copying a range (in the background or before a guest
    /// write) the job discards it on the source, which records it like any discard. The caller
    /// passes false where the source ignores discards (opened without `discard=unmap`).
    pub discard_source: bool,
    /// QEMU 10.0 aborts (an assertion in the drained-section end) when the job drops a
    /// copy-before-write filter that an external snapshot moved off the source (the overlay
    /// now sits between filter and source); 7.2 completes. True: at its end such a job fails
    /// with an error that says so, the sane answer where QEMU dies.
    pub displaced_filter_fails: bool,
}

impl BackupParams {
    /// Parameters with QEMU's defaults.
    pub fn new(job_id: &str, source: &str, target: &str, sync: SyncMode, filter: &str) -> Self {
        Self {
            job_id: job_id.into(),
            source: source.into(),
            target: target.into(),
            sync,
            filter_node_name: filter.into(),
            bitmap: None,
            bitmap_mode: None,
            speed: 0,
            compress: false,
            on_source_error: OnError::Report,
            on_target_error: OnError::Report,
            auto_finalize: true,
            auto_dismiss: true,
            txn: None,
            max_chunk: 0,
            max_workers: MAX_WORKERS,
            min_cluster_size: 0,
            copy_bitmap_on_source: false,
            target_owned_nodes: 0,
            discard_source: false,
            displaced_filter_fails: false,
        }
    }
}

/// One request of a pipelined step: its range and the outcome of its write.
type Outcome = (u64, u64, Result<(), (bool, i32)>);

enum Payload {
    Data(Vec<u8>),
    Zeroes,
    Failed((bool, i32)),
}

struct Request {
    off: u64,
    end: u64,
    data: Payload,
}

/// Direct I/O on a node's data path (format driver or protocol store), for the pipelined copy.
enum NodeIo<'a> {
    /// A format driver, with its `file` child's store (for runs the driver recurses into).
    Format(
        &'a mut dyn crate::format::FormatDriver,
        Option<std::sync::Arc<crate::graph::ObservedStorage>>,
    ),
    Store(std::sync::Arc<crate::graph::ObservedStorage>),
}

impl<'a> NodeIo<'a> {
    /// `file`: the store of the node's `file` child, if it is a protocol node.
    fn of(
        data: &'a mut DataPath,
        file: Option<std::sync::Arc<crate::graph::ObservedStorage>>,
    ) -> Option<Self> {
        match data {
            DataPath::Format(f) => Some(NodeIo::Format(f.as_mut(), file)),
            DataPath::Protocol(s) => Some(NodeIo::Store(s.clone())),
            _ => None,
        }
    }

    fn read(&mut self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        match self {
            NodeIo::Format(f, _) => f.read(off, buf).map_err(|e| e.errno()),
            NodeIo::Store(s) => s
                .read_at(buf, off)
                .map_err(|e| e.raw_os_error().unwrap_or(EIO)),
        }
    }

    /// Block status at `off` of a node without backing: the first run's length (at most
    /// `bytes`) and whether it reads as zeros; `None` when the query fails.
    fn block_status(&mut self, off: u64, bytes: u64) -> Option<(u64, bool)> {
        match self {
            NodeIo::Format(f, file) => {
                let run = f.block_status(true, off, bytes).ok()?;
                let zero = match run.kind {
                    RunKind::Data => false,
                    RunKind::Zero => true,
                    // Unallocated without a backing node reads as zeros.
                    RunKind::Unallocated => f.supports_backing(),
                };
                let status = crate::graph::BlockStatus {
                    data: run.kind == RunKind::Data,
                    zero,
                    allocated: run.kind != RunKind::Unallocated,
                    len: run.len,
                };
                let status = match (run.recurse, file) {
                    (Some(host), Some(store)) if run.kind == RunKind::Data => {
                        let file_run = store_run(store.as_ref(), host, run.len).ok();
                        refine_by_file(status, file_run)
                    }
                    _ => status,
                };
                Some((status.len, status.zero))
            }
            NodeIo::Store(s) => s.extent(off, bytes).ok().map(|e| (e.len, e.hole)),
        }
    }

    fn write(&mut self, off: u64, data: &[u8], compress: bool) -> Result<(), (bool, i32)> {
        let r = match self {
            NodeIo::Format(f, _) if compress => {
                f.write_compressed(off, data).map_err(|e| e.errno())
            }
            NodeIo::Format(f, _) => f.write(off, data).map_err(|e| e.errno()),
            NodeIo::Store(_) if compress => Err(95),
            NodeIo::Store(s) => s
                .write_at(data, off)
                .map_err(|e| e.raw_os_error().unwrap_or(EIO)),
        };
        r.map_err(|e| (false, e))
    }

    fn write_zeroes(&mut self, off: u64, len: u64) -> Result<(), (bool, i32)> {
        let r = match self {
            // Block-copy writes zeroes without BDRV_REQ_MAY_UNMAP.
            NodeIo::Format(f, _) => f
                .write_zeroes_backed(off, len, &mut crate::format::NoBacking, false)
                .map_err(|e| e.errno()),
            NodeIo::Store(s) => s
                .write_zeroes(off, len)
                .map_err(|e| e.raw_os_error().unwrap_or(EIO)),
        };
        r.map_err(|e| (false, e))
    }
}

/// QEMU's `block_copy_block_status` from a status answer `(run length, zero)` at `off`: a run
/// shorter than the job cluster, or no answer, is one cluster of data; a longer run is aligned
/// down to the cluster, or up where it reaches the end of the source (`len`). Returns the
/// request's length and whether it writes zeroes.
fn request_len(status: Option<(u64, bool)>, off: u64, cluster: u64, len: u64) -> (u64, bool) {
    match status {
        Some((n, zero)) if n >= cluster => {
            let n = if off + n == len {
                n.div_ceil(cluster) * cluster
            } else {
                n / cluster * cluster
            };
            (n, zero)
        }
        _ => (cluster, false),
    }
}

fn errno_of(e: &GraphError) -> i32 {
    match e {
        GraphError::Format(f) => f.errno(),
        _ => EIO,
    }
}

impl Graph {
    fn owned_bitmap_mut(&mut self, node: &str, tag: u64) -> Option<&mut DirtyBitmap> {
        self.get_mut(node)
            .ok()?
            .bitmaps
            .iter_mut()
            .find(|b| b.owner == Some(tag))
    }

    fn owned_bitmap(&self, node: &str, tag: u64) -> Option<&DirtyBitmap> {
        self.node(node)?
            .bitmaps
            .iter()
            .find(|b| b.owner == Some(tag))
    }

    /// The job's copy bitmap (clusters still to copy).
    pub fn backup_copy_bits(&self, job: &Job) -> Option<&Bits> {
        self.copy_bitmap(&job.backup).map(|b| &b.bits)
    }

    /// The node holding the copy bitmap, while the job holds its filter.
    fn copy_bitmap_node(b: &Backup) -> Option<&str> {
        let filter = b.filter.as_deref()?;
        Some(if b.copy_on_source {
            b.source.as_str()
        } else {
            filter
        })
    }

    fn copy_bitmap(&self, b: &Backup) -> Option<&DirtyBitmap> {
        self.owned_bitmap(Self::copy_bitmap_node(b)?, b.copy_tag)
    }

    fn copy_bitmap_mut(&mut self, b: &Backup) -> Option<&mut DirtyBitmap> {
        let node = Self::copy_bitmap_node(b)?.to_string();
        self.owned_bitmap_mut(&node, b.copy_tag)
    }

    /// Creates a backup job (see the module docs); returns `[created]`.
    pub fn backup_create(&mut self, p: BackupParams) -> Result<Vec<JobEvent>, JobError> {
        if self.job(&p.job_id).is_some() {
            return Err(JobError::IdInUse(p.job_id));
        }
        if p.max_workers == 0 {
            return Err(JobError::Invalid("max-workers must be at least 1".into()));
        }
        if p.source == p.target {
            return Err(JobError::Invalid(
                "Source and target cannot be the same".into(),
            ));
        }
        if let Some(t) = p.txn {
            if !self.jobs.txns.contains_key(&t) {
                return Err(JobError::Invalid(format!("no job transaction {t}")));
            }
        }
        let len = self.get(&p.source)?.length()?;
        let target_cluster = self.get(&p.target)?.cluster_size().unwrap_or(0);
        if self.node(&p.filter_node_name).is_some() || self.backend(&p.filter_node_name).is_some() {
            return Err(GraphError::NameInUse(p.filter_node_name).into());
        }
        match (&p.bitmap, p.bitmap_mode) {
            (Some(_), Some(_)) | (None, None) => {}
            _ => {
                return Err(JobError::Invalid(
                    "a bitmap and its bitmap mode go together".into(),
                ))
            }
        }
        if p.sync == SyncMode::Bitmap && p.bitmap.is_none() {
            return Err(JobError::Invalid(
                "sync mode 'bitmap' needs a bitmap".into(),
            ));
        }
        if let Some(name) = &p.bitmap {
            self.bitmap(&p.source, name)?;
        }
        let cluster_size = target_cluster
            .max(BACKUP_CLUSTER_SIZE)
            .max(p.min_cluster_size);
        let gran = Granularity::new(cluster_size)
            .ok_or_else(|| JobError::Invalid(format!("bad cluster size {cluster_size}")))?;
        let successor_tag = self.jobs.next_tag;
        let copy_tag = successor_tag + 1;
        let done_tag = successor_tag + 2;
        let access_tag = successor_tag + 3;
        self.jobs.next_tag += 4;

        // The successor of the sync bitmap.
        if let Some(name) = &p.bitmap {
            let n = self.get_mut(&p.source)?;
            let parent = n
                .bitmap_mut(name)
                .ok_or_else(|| GraphError::BitmapNotFound(name.clone()))?;
            let mut succ = DirtyBitmap::new(None, parent.bits.len(), parent.bits.granularity());
            succ.state.enabled = parent.state.enabled;
            succ.owner = Some(successor_tag);
            parent.state.busy = true;
            parent.state.frozen = true;
            n.bitmaps.insert(0, succ);
        }

        // The copy-before-write filter replaces the source under its parents.
        self.observe_edges();
        let filter = p.filter_node_name.clone();
        let mut moved = Vec::new();
        for n in &mut self.nodes {
            for c in &mut n.children {
                if c.node == p.source {
                    c.node = filter.clone();
                    moved.push((n.name.clone(), c.role.clone()));
                }
            }
        }
        for b in &mut self.backends {
            if b.root.as_deref() == Some(p.source.as_str()) {
                b.root = Some(filter.clone());
            }
        }
        self.nodes.push(Node {
            name: filter.clone(),
            driver: Driver::CopyBeforeWrite,
            read_only: false,
            children: vec![
                Child {
                    role: "file".into(),
                    node: p.source.clone(),
                },
                Child {
                    role: "target".into(),
                    node: p.target.clone(),
                },
            ],
            bitmaps: Vec::new(),
            data: DataPath::Filter { len },
            lock_file: None,
            own_read_only: false,
        });

        // The filter's anonymous, disabled bitmaps at the job's cluster size, as QEMU lists
        // them newest first: the snapshot-access bitmap (all set), the done bitmap (clusters
        // saved by copy-before-write) and the copy bitmap (every cluster until the job starts),
        // unless that one is the source's newest bitmap.
        let filter_bitmap = |tag: u64, full: bool| {
            let mut b = DirtyBitmap::new(None, len, gran);
            b.state.enabled = false;
            b.owner = Some(tag);
            if full {
                b.bits.set_range(ByteRange::new(0, len));
            }
            b
        };
        // Edge order (drain order): the filter's children, the moved parents, the job's edges.
        self.jobs.stamps.attach(&filter, "file", &p.source);
        self.jobs.stamps.attach(&filter, "target", &p.target);
        for (parent, role) in moved {
            self.jobs.stamps.attach(&parent, &role, &filter);
        }
        let job_key = format!("job:{}", p.job_id);
        self.jobs.stamps.attach(&job_key, "main", &filter);
        self.jobs.stamps.attach(&job_key, "target", &p.target);
        let copy = filter_bitmap(copy_tag, true);
        let f = self.get_mut(&filter)?;
        f.bitmaps = vec![
            filter_bitmap(access_tag, true),
            filter_bitmap(done_tag, false),
        ];
        if p.copy_bitmap_on_source {
            self.get_mut(&p.source)?.bitmaps.insert(0, copy);
        } else {
            self.get_mut(&filter)?.bitmaps.push(copy);
        }

        let job = Job {
            id: p.job_id.clone(),
            status: super::JobStatus::Undefined,
            txn: 0,
            auto_finalize: p.auto_finalize,
            auto_dismiss: p.auto_dismiss,
            user_paused: false,
            pause_count: 0,
            started: false,
            cancelled: false,
            ret: None,
            error: None,
            io_status: IoStatus::Ok,
            speed: p.speed,
            current_progress: 0,
            total_progress: 0,
            backup: Backup {
                source: p.source,
                target: p.target,
                filter: Some(filter),
                sync: p.sync,
                bitmap: p.bitmap,
                bitmap_mode: p.bitmap_mode,
                compress: p.compress,
                on_source_error: p.on_source_error,
                on_target_error: p.on_target_error,
                cluster_size,
                max_chunk: p.max_chunk,
                max_workers: p.max_workers,
                len,
                successor_tag,
                copy_tag,
                done_tag,
                copy_on_source: p.copy_bitmap_on_source,
                target_owned_nodes: p.target_owned_nodes,
                discard_source: p.discard_source,
                displaced_filter_fails: p.displaced_filter_fails,
            },
            due_ns: 0,
            rate: RateLimit::default(),
            start_seq: 0,
            exit_pending: false,
        };
        let mut ev = Events::new(self.jobs.now);
        let drains = self.jobs.graph_drains;
        self.drain_all_pairs(drains.create_before, &mut ev);
        self.register_job(job, p.txn, &mut ev)?;
        self.drain_all_pairs(drains.create_after, &mut ev);
        Ok(ev.list)
    }

    /// Job start: the copy bitmap as the sync mode says, and the progress total.
    pub(crate) fn backup_begin(&mut self, i: usize) -> Result<(), JobError> {
        let b = self.jobs.jobs[i].backup.clone();
        let mut copy = match self.copy_bitmap(&b) {
            Some(c) => c.bits.clone(),
            None => return Ok(()),
        };
        match b.sync {
            SyncMode::Full | SyncMode::None => {}
            SyncMode::Bitmap => {
                copy.clear();
                if let Some(name) = &b.bitmap {
                    for r in self.bitmap(&b.source, name)?.bits.dirty_runs() {
                        copy.set_range(r);
                    }
                }
            }
            SyncMode::Top => {
                // A cluster is copied when any of it is allocated in the source's top layer
                // (QEMU's bdrv_is_allocated: block status down to the source itself, without
                // want_zero; a filter passes the question to its child).
                let mut off = 0;
                while off < b.len {
                    let end = (off + b.cluster_size).min(b.len);
                    let mut allocated = false;
                    let mut o = off;
                    while o < end && !allocated {
                        let s = self.status_above(&b.source, Some(&b.source), false, o, end - o)?;
                        if s.len == 0 {
                            break;
                        }
                        allocated = s.allocated;
                        o += s.len;
                    }
                    if !allocated {
                        copy.reset_range(ByteRange::new(off, end - off));
                    }
                    off = end;
                }
            }
        }
        let total = copy.dirty_bytes();
        if let Some(c) = self.copy_bitmap_mut(&b) {
            c.bits = copy;
        }
        let j = &mut self.jobs.jobs[i];
        j.total_progress = j.current_progress + total;
        Ok(())
    }

    /// Whether the cluster at `offset` of `node` is allocated in its top layer.
    pub fn is_allocated(&mut self, node: &str, offset: u64) -> Result<bool, GraphError> {
        let n = self.get_mut(node)?;
        match &mut n.data {
            DataPath::Format(f) => Ok(f.is_allocated(offset)?),
            _ => Ok(true),
        }
    }

    /// The next run of clusters to copy at or after byte `from`: `(offset, end)`, at most
    /// `limit` bytes.
    fn next_run(bits: &Bits, cluster: u64, len: u64, limit: u64, from: u64) -> Option<(u64, u64)> {
        let first = bits.next_set_bit(from / cluster)?;
        let n_max = (limit / cluster).max(1);
        let last = bits
            .next_clear_bit(first)
            .unwrap_or(len.div_ceil(cluster))
            .min(first + n_max);
        Some((first * cluster, (last * cluster).min(len)))
    }

    /// The request block-copy makes at `off` (dirty up to `end`): it ends where the source's
    /// block status run does (see [`request_len`]; `base` is none: the background copy asks
    /// about the whole chain), and writes zeroes where the run reads as zeros.
    fn backup_request(&mut self, b: &Backup, off: u64, end: u64) -> (u64, bool) {
        let status = self
            .block_status_above(&b.source, None, off, end - off)
            .ok()
            .map(|s| (s.len, s.zero));
        let (n, zero) = request_len(status, off, b.cluster_size, b.len);
        ((off + n).min(end), zero)
    }

    /// `discard-source`: the copied range is discarded on the source, below the filter (no
    /// copy-before-write of its own); like QEMU, a failed discard is ignored.
    fn discard_copied(&mut self, b: &Backup, off: u64, end: u64) {
        if !b.discard_source || end <= off {
            return;
        }
        self.jobs.discarding = true;
        let _ = self.write(&b.source, off, WriteKind::Discard, &[], end - off);
        self.jobs.discarding = false;
    }

    /// Copies the request `[off, end)` from the job's source to its target: zeroes where
    /// `zero`, else the data read. Errors say whether the read failed (true) or the write.
    fn backup_copy(
        &mut self,
        b: &Backup,
        off: u64,
        end: u64,
        zero: bool,
    ) -> Result<(), (bool, i32)> {
        let len = end - off;
        if zero {
            // Block-copy writes zeroes without BDRV_REQ_MAY_UNMAP.
            return self
                .write(&b.target, off, WriteKind::ZeroesNoUnmap, &[], len)
                .map_err(|e| (false, errno_of(&e)));
        }
        let data = self
            .read(&b.source, off, len)
            .map_err(|e| (true, errno_of(&e)))?;
        let kind = if b.compress {
            WriteKind::Compressed
        } else {
            WriteKind::Data
        };
        self.write(&b.target, off, kind, &data, len)
            .map_err(|e| (false, errno_of(&e)))
    }

    /// One step of backup job `i`: copy the next run, or exit when none is left.
    pub(crate) fn backup_step(&mut self, i: usize, ev: &mut Events) {
        let b = self.jobs.jobs[i].backup.clone();
        let limit = if b.max_chunk > 0 {
            b.max_chunk.min(MAX_CHUNK)
        } else {
            MAX_CHUNK
        };
        // Like QEMU's block-copy, a step issues up to MAX_WORKERS requests (fewer when the
        // speed limit says wait), `max_workers` of them in flight at a time; each covers up to
        // `limit` bytes of clusters of one allocation status. Requests in flight when one fails
        // still complete; the first error is handled after them.
        let now = self.jobs.now;
        if let Some(outcomes) = self.pipelined_batch(i, &b, limit) {
            self.finish_batch(i, &b, outcomes, ev);
            return;
        }
        let mut from = 0u64;
        let mut tasks = 0usize;
        let mut first_error: Option<(bool, i32, usize)> = None;
        while tasks < MAX_WORKERS {
            // With `max_workers` requests in flight, a request starts only once the one
            // `max_workers` before it completed; after a failure no further request starts.
            if first_error.is_some_and(|(_, _, at)| tasks >= at + b.max_workers) {
                break;
            }
            let run = self
                .copy_bitmap(&b)
                .and_then(|c| Self::next_run(&c.bits, b.cluster_size, b.len, limit, from));
            let Some((off, mut end)) = run else {
                break;
            };
            tasks += 1;
            let (request_end, zero) = self.backup_request(&b, off, end);
            end = request_end;
            from = end;
            match self.backup_copy(&b, off, end, zero) {
                Ok(()) => {
                    self.discard_copied(&b, off, end);
                    if let Some(c) = self.copy_bitmap_mut(&b) {
                        c.bits.reset_range(ByteRange::new(off, end - off));
                    }
                    let j = &mut self.jobs.jobs[i];
                    j.current_progress += end - off;
                    let delay = j.rate.account(now, j.speed, end - off);
                    j.due_ns = now + delay;
                    if delay > 0 {
                        break;
                    }
                }
                Err((is_read, errno)) => {
                    first_error.get_or_insert((is_read, errno, tasks - 1));
                }
            }
        }
        if let Some((is_read, errno, _)) = first_error {
            self.backup_io_error(i, is_read, errno, ev);
        } else if self
            .copy_bitmap(&b)
            .is_none_or(|c| c.bits.next_set_bit(0).is_none())
        {
            // The copy is done: the job leaves its loop at once, without waiting for its
            // speed limit.
            self.exit(i);
        }
    }

    /// The fast path of a step for an unthrottled job: a reader (this thread) and a writer
    /// thread overlap, as QEMU's parallel requests do. Same requests, same order, same
    /// outcomes as the sequential loop; used only where no rule of that loop could tell them
    /// apart (no speed limit, max_workers >= 64 so no request is held back by a failure, plain
    /// format or protocol nodes, no job reading the target). None: take the sequential path.
    fn pipelined_batch(&mut self, i: usize, b: &Backup, limit: u64) -> Option<Vec<Outcome>> {
        let j = &self.jobs.jobs[i];
        if j.speed != 0 || b.max_workers < MAX_WORKERS {
            return None;
        }
        if self.jobs.jobs.iter().any(|o| o.backup.source == b.target) {
            return None;
        }
        let bits = self.copy_bitmap(b)?.bits.clone();
        let si = self.nodes.iter().position(|n| n.name == b.source)?;
        let ti = self.nodes.iter().position(|n| n.name == b.target)?;
        if si == ti || self.nodes[ti].read_only {
            return None;
        }
        // Nodes with a backing chain read (and copy up) through the graph.
        if self.backing_of(&b.source).is_some() || self.backing_of(&b.target).is_some() {
            return None;
        }
        let file_store = |n: &Node| -> Option<std::sync::Arc<crate::graph::ObservedStorage>> {
            let file = n.child("file")?;
            match &self.node(file)?.data {
                DataPath::Protocol(s) => Some(s.clone()),
                _ => None,
            }
        };
        let src_file = file_store(&self.nodes[si]);
        let tgt_file = file_store(&self.nodes[ti]);
        let (src, tgt) = if si < ti {
            let (l, r) = self.nodes.split_at_mut(ti);
            (&mut l[si], &mut r[0])
        } else {
            let (l, r) = self.nodes.split_at_mut(si);
            (&mut r[0], &mut l[ti])
        };
        let mut src = NodeIo::of(&mut src.data, src_file)?;
        let mut tgt = NodeIo::of(&mut tgt.data, tgt_file)?;
        let (cs, len, compress) = (b.cluster_size, b.len, b.compress);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Request>(2);
        // Written buffers come back for the next reads (no allocation, no zero-filling).
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let outcomes = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                let mut out = Vec::new();
                for r in rx {
                    let res = match r.data {
                        Payload::Failed(e) => Err(e),
                        Payload::Zeroes => tgt.write_zeroes(r.off, r.end - r.off),
                        Payload::Data(buf) => {
                            let res = tgt.write(r.off, &buf, compress);
                            let _ = back_tx.send(buf);
                            res
                        }
                    };
                    out.push((r.off, r.end, res));
                }
                out
            });
            let mut from = 0u64;
            for _ in 0..MAX_WORKERS {
                let Some((off, mut end)) = Self::next_run(&bits, cs, len, limit, from) else {
                    break;
                };
                let (n, zero) = request_len(src.block_status(off, end - off), off, cs, len);
                end = (off + n).min(end);
                let data = if zero {
                    Payload::Zeroes
                } else {
                    let mut buf = back_rx.try_recv().unwrap_or_default();
                    buf.resize((end - off) as usize, 0);
                    match src.read(off, &mut buf) {
                        Ok(()) => Payload::Data(buf),
                        Err(e) => Payload::Failed((true, e)),
                    }
                };
                from = end;
                if tx.send(Request { off, end, data }).is_err() {
                    break;
                }
            }
            drop(tx);
            writer.join().unwrap_or_default()
        });
        // What the writes did to the target's bitmaps and its file's.
        if let Ok(t) = self.get_mut(&b.target) {
            for (off, end, res) in &outcomes {
                if res.is_ok() {
                    t.record_write(ByteRange::new(*off, end - off));
                }
            }
        }
        self.drain_store_writes(&b.target);
        Some(outcomes)
    }

    /// Accounts a pipelined batch as the sequential loop would have.
    fn finish_batch(&mut self, i: usize, b: &Backup, outcomes: Vec<Outcome>, ev: &mut Events) {
        let mut first_error: Option<(bool, i32)> = None;
        for (off, end, res) in &outcomes {
            match res {
                Ok(()) => {
                    self.discard_copied(b, *off, *end);
                    if let Some(c) = self.copy_bitmap_mut(b) {
                        c.bits.reset_range(ByteRange::new(*off, end - off));
                    }
                    self.jobs.jobs[i].current_progress += end - off;
                }
                Err(e) => {
                    first_error.get_or_insert(*e);
                }
            }
        }
        if let Some((is_read, errno)) = first_error {
            self.backup_io_error(i, is_read, errno, ev);
        } else if self
            .copy_bitmap(b)
            .is_none_or(|c| c.bits.next_set_bit(0).is_none())
        {
            self.exit(i);
        }
    }

    fn backup_io_error(&mut self, i: usize, is_read: bool, errno: i32, ev: &mut Events) {
        let j = &self.jobs.jobs[i];
        let policy = if is_read {
            j.backup.on_source_error
        } else {
            j.backup.on_target_error
        };
        let action = match policy {
            OnError::Report => "report",
            OnError::Ignore => "ignore",
            OnError::Stop => "stop",
            OnError::Enospc | OnError::Auto => {
                if errno == ENOSPC {
                    "stop"
                } else {
                    "report"
                }
            }
        };
        if !j.id.is_empty() {
            ev.push(
                "BLOCK_JOB_ERROR",
                vec![
                    ("device", EventValue::Str(j.id.clone())),
                    (
                        "operation",
                        EventValue::Str(if is_read { "read" } else { "write" }.into()),
                    ),
                    ("action", EventValue::Str(action.into())),
                ],
            );
        }
        let now = self.jobs.now;
        match action {
            "report" => {
                let j = &mut self.jobs.jobs[i];
                j.ret = Some(errno);
                j.error = Some(strerror(errno));
                self.exit(i);
            }
            "ignore" => self.jobs.jobs[i].due_ns = now + RETRY_NS,
            _ => {
                let j = &mut self.jobs.jobs[i];
                j.user_paused = true;
                if j.io_status == IoStatus::Ok {
                    j.io_status = if errno == ENOSPC {
                        IoStatus::NoSpace
                    } else {
                        IoStatus::Failed
                    };
                }
                self.pause_internal(i, ev);
            }
        }
    }

    /// Copy-before-write: before a write of `[offset, offset + len)` to `node`, every backup job
    /// with `node` as source copies the clusters of that range it has not copied yet.
    pub(crate) fn copy_before_write(
        &mut self,
        node: &str,
        offset: u64,
        len: u64,
    ) -> Result<(), GraphError> {
        if len == 0 || self.jobs.jobs.is_empty() || self.jobs.discarding {
            return Ok(());
        }
        let ids: Vec<String> = self
            .jobs
            .jobs
            .iter()
            .filter(|j| j.backup.source == node && j.backup.filter.is_some())
            .map(|j| j.id.clone())
            .collect();
        for id in ids {
            let Ok(i) = self.job_index(&id) else { continue };
            let b = self.jobs.jobs[i].backup.clone();
            let cs = b.cluster_size;
            let start = offset / cs * cs;
            let end = (offset + len).div_ceil(cs).saturating_mul(cs).min(b.len);
            let mut pos = start;
            while pos < end {
                let dirty = self.copy_bitmap(&b).is_some_and(|c| c.bits.get(pos));
                let next = (pos + cs).min(b.len);
                if dirty {
                    // Extend over the following dirty clusters of the range (up to a chunk),
                    // then copy it request by request, each sized by block status.
                    let mut run_end = next;
                    while run_end < end
                        && run_end - pos < MAX_CHUNK
                        && self.copy_bitmap(&b).is_some_and(|c| c.bits.get(run_end))
                    {
                        run_end = (run_end + cs).min(b.len);
                    }
                    let (request_end, zero) = self.backup_request(&b, pos, run_end);
                    self.backup_copy(&b, pos, request_end, zero)
                        .map_err(|(_, errno)| {
                            GraphError::Format(crate::format::FormatError::Io(
                                std::io::Error::from_raw_os_error(errno),
                            ))
                        })?;
                    self.discard_copied(&b, pos, request_end);
                    if let Some(c) = self.copy_bitmap_mut(&b) {
                        c.bits.reset_range(ByteRange::new(pos, request_end - pos));
                    }
                    if let Ok(i) = self.job_index(&id) {
                        self.jobs.jobs[i].current_progress += request_end - pos;
                    }
                    pos = request_end;
                } else {
                    pos = next;
                }
            }
            // The filter's done bitmap marks every cluster the write touches once its old data
            // is safe, whether or not the job still had to copy it (QEMU: both versions).
            if let Some(f) = b.filter.as_deref() {
                if let Some(d) = self.owned_bitmap_mut(f, b.done_tag) {
                    d.bits.set_range(ByteRange::new(start, end - start));
                }
            }
        }
        Ok(())
    }

    /// Finalization of the sync bitmap: abdicate (successor replaces it) or reclaim (successor
    /// merged back) as the mode and outcome say; with `always` on failure the clusters the job
    /// did not copy are added.
    pub(crate) fn backup_finish_bitmap(&mut self, i: usize, ok: bool) {
        let b = self.jobs.jobs[i].backup.clone();
        let (Some(name), Some(mode)) = (b.bitmap.clone(), b.bitmap_mode) else {
            return;
        };
        let sync = (ok || mode == BitmapMode::Always) && mode != BitmapMode::Never;
        if !sync {
            self.backup_reclaim_bitmap(i);
        } else {
            let Ok(n) = self.get_mut(&b.source) else {
                return;
            };
            let Some(pp) = n
                .bitmaps
                .iter()
                .position(|x| x.name.as_deref() == Some(name.as_str()) && x.state.frozen)
            else {
                return;
            };
            let parent = n.bitmaps.remove(pp);
            if let Some(succ) = n
                .bitmaps
                .iter_mut()
                .find(|x| x.owner == Some(b.successor_tag))
            {
                succ.name = parent.name;
                succ.owner = None;
                succ.state.persistent = parent.state.persistent;
                succ.state.readonly = parent.state.readonly;
                succ.state.skip_store = parent.state.skip_store;
                succ.state.busy = false;
                succ.state.frozen = false;
            }
        }
        if !ok && mode == BitmapMode::Always {
            let runs: Vec<ByteRange> = self
                .copy_bitmap(&b)
                .map(|c| c.bits.dirty_runs().collect())
                .unwrap_or_default();
            if let Ok(bm) = self.bitmap_mut(&b.source, &name) {
                for r in runs {
                    bm.bits.set_range(r);
                }
            }
        }
    }

    /// Merges the successor back into the sync bitmap, which is no longer busy.
    pub(crate) fn backup_reclaim_bitmap(&mut self, i: usize) {
        let b = self.jobs.jobs[i].backup.clone();
        let Some(name) = b.bitmap.clone() else { return };
        let Ok(n) = self.get_mut(&b.source) else {
            return;
        };
        let succ = n
            .bitmaps
            .iter()
            .position(|x| x.owner == Some(b.successor_tag))
            .map(|p| n.bitmaps.remove(p));
        if let Some(parent) = n
            .bitmaps
            .iter_mut()
            .find(|x| x.name.as_deref() == Some(name.as_str()) && x.state.frozen)
        {
            if let Some(s) = succ {
                // Same length and granularity by construction.
                let _ = parent.bits.merge_from(&s.bits);
            }
            parent.state.busy = false;
            parent.state.frozen = false;
        }
    }

    /// The driver's clean: the copy bitmap goes and the filter is dropped (a drained section of
    /// the filter).
    pub(crate) fn backup_clean(&mut self, i: usize, ev: &mut Events) {
        let b = self.jobs.jobs[i].backup.clone();
        let Some(filter) = b.filter.clone() else {
            return;
        };
        let id = self.jobs.jobs[i].id.clone();
        // The filter's parents get its current `file` child: the source, or the filter of a
        // newer backup of the same source that was inserted below this one.
        let below = self
            .node(&filter)
            .and_then(|f| f.child("file"))
            .unwrap_or(&b.source)
            .to_string();
        // QEMU 10.0 drains everything for each graph change here (dropping the job's edges,
        // then the filter's replacement inside a drained section of the node below it, then
        // closing the filter); 7.2 drained the filter it drops (so the jobs using it or its
        // parents pause, not another backup of the same source whose filter sits below).
        let all = self.jobs.graph_drains.clean;
        let drained_node = if all == 0 {
            filter.clone()
        } else {
            below.clone()
        };
        self.drain_all_pairs(all.min(1), ev);
        let drained = self.drained_begin(Some(&drained_node)).unwrap_or_default();
        ev.list.extend(drained);
        self.drain_all_pairs(all.saturating_sub(1).min(1), ev);
        if b.copy_on_source {
            if let Ok(n) = self.get_mut(&b.source) {
                n.bitmaps.retain(|x| x.owner != Some(b.copy_tag));
            }
        }
        self.nodes.retain(|n| n.name != filter);
        for n in &mut self.nodes {
            for c in &mut n.children {
                if c.node == filter {
                    c.node = below.clone();
                    self.jobs.stamps.attach(&n.name, &c.role, &below);
                }
            }
        }
        for bk in &mut self.backends {
            if bk.root.as_deref() == Some(filter.as_str()) {
                bk.root = Some(below.clone());
            }
        }
        if let Ok(k) = self.job_index(&id) {
            self.jobs.jobs[k].backup.filter = None;
        }
        let resumed = self.drained_end(Some(&drained_node)).unwrap_or_default();
        ev.list.extend(resumed);
        // Closing the filter drops the last reference to a job-owned target.
        let closes = if all == 0 { 0 } else { b.target_owned_nodes };
        self.drain_all_pairs(all.saturating_sub(2) + closes, ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u64 = BACKUP_CLUSTER_SIZE;

    #[test]
    fn request_len_short_run_or_no_answer_is_one_cluster_of_data() {
        assert_eq!(request_len(Some((4096, true)), 0, CS, 1 << 22), (CS, false));
        assert_eq!(request_len(None, CS, CS, 1 << 22), (CS, false));
    }

    #[test]
    fn request_len_aligns_down_inside_and_up_at_the_end() {
        assert_eq!(
            request_len(Some((3 * CS, true)), 0, CS, 1 << 22),
            (3 * CS, true)
        );
        assert_eq!(
            request_len(Some((CS + 100, false)), 0, CS, 1 << 22),
            (CS, false)
        );
        // A source of 200k: the run from 128k to its end is one request of two clusters.
        let len = 200 * 1024;
        assert_eq!(
            request_len(Some((len - 2 * CS, false)), 2 * CS, CS, len),
            (2 * CS, false)
        );
        assert_eq!(
            request_len(Some((len - CS, true)), CS, CS, len),
            (3 * CS, true)
        );
    }
}
