//! `Graph`: the node graph, its bitmaps and guest I/O, addressed by node and bitmap names.

use crate::errors::{job_to_py, to_py};
use crate::jobs::{self, JobEvent, JobInfo};
use blockcore::bitmap::{Bits, DirtyBitmap};
use blockcore::format::qcow2::RuntimeOptions;
use blockcore::format::{BitmapStoreError, SnapshotEntry, SnapshotParams};
use blockcore::graph::{self, Driver, GraphError, Node, WriteKind};
use blockcore::job::backup::BackupParams;
use blockcore::job::GraphDrains;
use blockcore::units::Granularity;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMapping};
use std::sync::{Mutex, MutexGuard};

fn granularity(bytes: u64) -> PyResult<Granularity> {
    Granularity::new(bytes).ok_or_else(|| {
        PyValueError::new_err(format!(
            "granularity {bytes} is not a power of two in 512..=2^31"
        ))
    })
}

/// A read-only view of one node, as of the call that made it.
#[pyclass(frozen, get_all, module = "reference._core")]
pub struct NodeInfo {
    name: String,
    driver: String,
    read_only: bool,
    children: Vec<(String, String)>,
    length: u64,
    cluster_size: Option<u64>,
    filename: Option<String>,
    dirty: bool,
    qcow2: Option<Qcow2Info>,
    backing_file: Option<String>,
    backing_format: Option<String>,
}

/// One internal snapshot (QEMU's `SnapshotInfo`).
#[pyclass(frozen, get_all, module = "reference._core")]
pub struct SnapshotInfo {
    id: String,
    name: String,
    vm_state_size: u64,
    date_sec: u32,
    date_nsec: u32,
    vm_clock_sec: u64,
    vm_clock_nsec: u64,
    icount: Option<u64>,
}

impl SnapshotInfo {
    fn of(e: SnapshotEntry) -> Self {
        Self {
            id: e.id,
            name: String::from_utf8_lossy(&e.name).into_owned(),
            vm_state_size: e.vm_state_size,
            date_sec: e.date_sec,
            date_nsec: e.date_nsec,
            vm_clock_sec: e.vm_clock_nsec / 1_000_000_000,
            vm_clock_nsec: e.vm_clock_nsec % 1_000_000_000,
            icount: e.icount,
        }
    }
}

/// qcow2 facts of a node (`ImageInfoSpecificQCow2`).
#[pyclass(frozen, get_all, module = "reference._core")]
#[derive(Clone)]
pub struct Qcow2Info {
    compat: String,
    compression_type: String,
    lazy_refcounts: bool,
    refcount_bits: u32,
    corrupt: bool,
    extended_l2: bool,
    bitmaps: Vec<(String, u64, Vec<String>)>,
}

impl NodeInfo {
    fn of(node: &Node) -> Result<Self, GraphError> {
        let facts = node.format().map(|f| f.facts()).unwrap_or_default();
        Ok(Self {
            backing_file: node.format().and_then(|f| f.backing_file().map(Into::into)),
            backing_format: node
                .format()
                .and_then(|f| f.backing_format().map(Into::into)),
            dirty: facts.dirty,
            qcow2: facts.qcow2.map(|q| Qcow2Info {
                compat: q.compat,
                compression_type: q.compression_type,
                lazy_refcounts: q.lazy_refcounts,
                refcount_bits: q.refcount_bits,
                corrupt: q.corrupt,
                extended_l2: q.extended_l2,
                bitmaps: q.bitmaps,
            }),
            name: node.name.clone(),
            driver: node.driver.name().to_string(),
            read_only: node.read_only,
            children: node
                .children
                .iter()
                .map(|c| (c.role.clone(), c.node.clone()))
                .collect(),
            length: node.length()?,
            cluster_size: node.cluster_size(),
            filename: match &node.driver {
                Driver::File { filename } => Some(filename.clone()),
                _ => node.filename().map(str::to_string),
            },
        })
    }
}

/// A read-only view of one dirty bitmap, as of the call that made it.
#[pyclass(frozen, get_all, module = "reference._core")]
pub struct BitmapInfo {
    name: Option<String>,
    enabled: bool,
    busy: bool,
    readonly: bool,
    inconsistent: bool,
    persistent: bool,
    skip_store: bool,
    granularity: u64,
    count: u64,
    frozen: bool,
}

impl BitmapInfo {
    fn of(bm: &DirtyBitmap) -> Self {
        Self {
            name: bm.name.clone(),
            enabled: bm.state.enabled,
            busy: bm.state.busy,
            readonly: bm.state.readonly,
            inconsistent: bm.state.inconsistent,
            persistent: bm.state.persistent,
            skip_store: bm.state.skip_store,
            granularity: bm.bits.granularity().bytes(),
            count: bm.bits.count(),
            frozen: bm.state.frozen,
        }
    }
}

/// A saved copy of a bitmap's bits, for undo (`bitmap_copy_bits` / `bitmap_restore_bits`).
#[pyclass(frozen, module = "reference._core")]
pub struct BitsCopy(Bits);

/// A bitmap detached from its node with `bitmap_take`, to be put back with `bitmap_put`.
#[pyclass(module = "reference._core")]
pub struct DetachedBitmap(Option<DirtyBitmap>);

/// The node graph.
#[pyclass(module = "reference._core")]
pub struct Graph(Mutex<graph::Graph>);

impl Graph {
    /// The graph, locked. A panic inside the core cannot leave it half-updated in a way the
    /// lock could protect against, so a poisoned lock is simply taken over.
    fn g(&self) -> MutexGuard<'_, graph::Graph> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_bitmap<T>(
        &self,
        node: &str,
        name: &str,
        f: impl FnOnce(&mut DirtyBitmap) -> T,
    ) -> PyResult<T> {
        let mut g = self.g();
        let bm = g.bitmap_mut(node, name).map_err(to_py)?;
        Ok(f(bm))
    }
}

#[pymethods]
impl Graph {
    #[new]
    fn new() -> Self {
        Self(Mutex::new(graph::Graph::new()))
    }

    // ---- nodes and backends ----

    #[pyo3(signature = (name, filename, read_only, locking=true))]
    fn add_file(&self, name: &str, filename: &str, read_only: bool, locking: bool) -> PyResult<()> {
        self.g()
            .add_file_with(name, filename, read_only, locking)
            .map_err(to_py)
    }

    fn set_pass_discard_request(&self, name: &str, on: bool) -> PyResult<()> {
        self.g().set_pass_discard_request(name, on).map_err(to_py)
    }

    fn set_discard_unmap(&self, name: &str, unmap: bool) -> PyResult<()> {
        self.g().set_discard_unmap(name, unmap).map_err(to_py)
    }

    #[pyo3(signature = (name, size, read_only, read_zeroes=true))]
    fn add_null(&self, name: &str, size: u64, read_only: bool, read_zeroes: bool) -> PyResult<()> {
        self.g()
            .add_null_with(name, size, read_only, read_zeroes)
            .map_err(to_py)
    }

    // One keyword argument per QEMU qcow2 runtime option, as blockdev-add names them.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        name, driver, file, read_only, *, option_error=None, cache_size=None,
        l2_cache_size=None, l2_cache_entry_size=None, refcount_cache_size=None,
        cache_clean_interval=None, lazy_refcounts=None, discard_no_unref=None,
        pass_discard_snapshot=None,
    ))]
    fn add_format(
        &self,
        name: &str,
        driver: &str,
        file: &str,
        read_only: bool,
        option_error: Option<String>,
        cache_size: Option<u64>,
        l2_cache_size: Option<u64>,
        l2_cache_entry_size: Option<u64>,
        refcount_cache_size: Option<u64>,
        cache_clean_interval: Option<u64>,
        lazy_refcounts: Option<bool>,
        discard_no_unref: Option<bool>,
        pass_discard_snapshot: Option<bool>,
    ) -> PyResult<()> {
        let options = RuntimeOptions {
            parse_error: option_error,
            cache_size,
            l2_cache_size,
            l2_cache_entry_size,
            refcount_cache_size,
            cache_clean_interval,
            lazy_refcounts,
            discard_no_unref,
            pass_discard_snapshot,
        };
        self.g()
            .add_format_with(name, driver, file, read_only, &options)
            .map_err(to_py)
    }

    #[pyo3(signature = (name, file, read_only, bottom=None))]
    fn add_copy_on_read(
        &self,
        name: &str,
        file: &str,
        read_only: bool,
        bottom: Option<&str>,
    ) -> PyResult<()> {
        self.g()
            .add_copy_on_read(name, file, read_only, bottom)
            .map_err(to_py)
    }

    fn reserve_name(&self, name: &str) -> PyResult<()> {
        self.g().reserve_name(name).map_err(to_py)
    }

    fn release_name(&self, name: &str) {
        self.g().release_name(name)
    }

    fn is_reserved(&self, name: &str) -> bool {
        self.g().is_reserved(name)
    }

    #[pyo3(signature = (name, root=None))]
    fn add_backend(&self, name: &str, root: Option<&str>) -> PyResult<()> {
        self.g().add_backend(name, root).map_err(to_py)
    }

    fn remove_node(&self, name: &str) -> PyResult<()> {
        self.g().remove_node(name).map_err(to_py)
    }

    fn close_node(&self, name: &str) -> PyResult<()> {
        self.g().close_node(name).map_err(to_py)
    }

    /// Closes every node; returns `(node, message)` for each that failed.
    fn close_all(&self) -> Vec<(String, String)> {
        self.g()
            .close_all()
            .into_iter()
            .map(|(n, e)| (n, e.to_string()))
            .collect()
    }

    fn nodes(&self) -> PyResult<Vec<NodeInfo>> {
        self.g()
            .nodes()
            .map(NodeInfo::of)
            .collect::<Result<_, _>>()
            .map_err(to_py)
    }

    fn node(&self, name: &str) -> PyResult<Option<NodeInfo>> {
        self.g()
            .node(name)
            .map(NodeInfo::of)
            .transpose()
            .map_err(to_py)
    }

    fn backends(&self) -> Vec<(String, Option<String>)> {
        self.g()
            .backends()
            .iter()
            .map(|b| (b.name.clone(), b.root.clone()))
            .collect()
    }

    fn parents(&self, name: &str) -> Vec<(String, String)> {
        self.g().parents(name)
    }

    // ---- bitmaps ----

    fn bitmaps(&self, node: &str) -> PyResult<Vec<BitmapInfo>> {
        Ok(self
            .g()
            .get(node)
            .map_err(to_py)?
            .bitmaps
            .iter()
            .map(BitmapInfo::of)
            .collect())
    }

    fn bitmap(&self, node: &str, name: &str) -> PyResult<BitmapInfo> {
        self.g()
            .bitmap(node, name)
            .map(BitmapInfo::of)
            .map_err(to_py)
    }

    fn bitmap_add(
        &self,
        node: &str,
        name: &str,
        granularity_bytes: u64,
        enabled: bool,
        persistent: bool,
    ) -> PyResult<()> {
        let g = granularity(granularity_bytes)?;
        self.g()
            .bitmap_add(node, name, g, enabled, persistent)
            .map_err(to_py)
    }

    #[pyo3(signature = (node, name, *, enabled=None, busy=None, skip_store=None))]
    fn bitmap_set(
        &self,
        node: &str,
        name: &str,
        enabled: Option<bool>,
        busy: Option<bool>,
        skip_store: Option<bool>,
    ) -> PyResult<()> {
        self.with_bitmap(node, name, |bm| {
            let state = &mut bm.state;
            if let Some(v) = enabled {
                state.enabled = v;
            }
            if let Some(v) = busy {
                state.busy = v;
            }
            if let Some(v) = skip_store {
                state.skip_store = v;
            }
        })
    }

    fn bitmap_clear(&self, node: &str, name: &str) -> PyResult<()> {
        self.with_bitmap(node, name, |bm| bm.bits.clear())
    }

    fn bitmap_copy_bits(&self, node: &str, name: &str) -> PyResult<BitsCopy> {
        Ok(BitsCopy(
            self.g().bitmap(node, name).map_err(to_py)?.bits.clone(),
        ))
    }

    fn bitmap_restore_bits(&self, node: &str, name: &str, copy: &BitsCopy) -> PyResult<()> {
        self.with_bitmap(node, name, |bm| bm.bits.restore_from(&copy.0))
    }

    fn bitmap_merge(
        &self,
        node: &str,
        target: &str,
        src_node: &str,
        src_name: &str,
    ) -> PyResult<()> {
        self.g()
            .bitmap_merge(node, target, src_node, src_name)
            .map_err(to_py)
    }

    fn bitmap_sha256(&self, node: &str, name: &str) -> PyResult<String> {
        Ok(self
            .g()
            .bitmap(node, name)
            .map_err(to_py)?
            .bits
            .sha256_hex())
    }

    fn bitmap_take(&self, node: &str, name: &str) -> PyResult<(usize, DetachedBitmap)> {
        let (pos, bm) = self.g().bitmap_take(node, name).map_err(to_py)?;
        Ok((pos, DetachedBitmap(Some(bm))))
    }

    fn bitmap_put(&self, node: &str, pos: usize, bitmap: &mut DetachedBitmap) -> PyResult<()> {
        let bm = bitmap
            .0
            .take()
            .ok_or_else(|| PyValueError::new_err("bitmap was already put back"))?;
        self.g().bitmap_put(node, pos, bm).map_err(to_py)
    }

    /// `None` if a persistent bitmap could be stored; else `(supported, reason)` where
    /// `supported` is false when the node's format stores no bitmaps at all.
    fn can_store_bitmap(
        &self,
        node: &str,
        name: &str,
        granularity_bytes: u64,
    ) -> PyResult<Option<(bool, String)>> {
        let gran = granularity(granularity_bytes)?;
        let g = self.g();
        let n = g.get(node).map_err(to_py)?;
        let Some(fmt) = n.format() else {
            return Ok(Some((false, BitmapStoreError::NotSupported.to_string())));
        };
        Ok(match fmt.can_store_bitmap(name, gran) {
            Ok(()) => None,
            Err(e @ BitmapStoreError::NotSupported) => Some((false, e.to_string())),
            Err(e) => Some((true, e.to_string())),
        })
    }

    fn remove_stored_bitmap(&self, node: &str, name: &str) -> PyResult<()> {
        self.g().remove_stored_bitmap(node, name).map_err(to_py)
    }

    // ---- guest I/O ----

    #[pyo3(signature = (node, offset, length, fill=0))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        node: &str,
        offset: u64,
        length: u64,
        fill: u8,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = self
            .g()
            .read_filled(node, offset, length, fill)
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &data))
    }

    fn set_copy_on_read(&self, node: &str, on: bool) -> PyResult<()> {
        self.g().set_copy_on_read(node, on).map_err(to_py)
    }

    #[pyo3(signature = (node, size, parents_follow=false))]
    fn truncate(&self, node: &str, size: u64, parents_follow: bool) -> PyResult<()> {
        self.g().truncate(node, size, parents_follow).map_err(to_py)
    }

    fn write(&self, node: &str, offset: u64, data: &[u8]) -> PyResult<()> {
        self.g()
            .write(node, offset, WriteKind::Data, data, data.len() as u64)
            .map_err(to_py)
    }

    #[pyo3(signature = (node, offset, length, may_unmap=true))]
    fn write_zeroes(&self, node: &str, offset: u64, length: u64, may_unmap: bool) -> PyResult<()> {
        let kind = if may_unmap {
            WriteKind::Zeroes
        } else {
            WriteKind::ZeroesNoUnmap
        };
        self.g()
            .write(node, offset, kind, &[], length)
            .map_err(to_py)
    }

    fn discard(&self, node: &str, offset: u64, length: u64) -> PyResult<()> {
        self.g()
            .write(node, offset, WriteKind::Discard, &[], length)
            .map_err(to_py)
    }

    fn flush(&self, node: &str) -> PyResult<()> {
        self.g().flush(node).map_err(to_py)
    }

    #[pyo3(signature = (name, image, read_only, inject_error=Vec::new(), set_state=Vec::new()))]
    fn add_blkdebug(
        &self,
        name: &str,
        image: &str,
        read_only: bool,
        inject_error: Vec<Bound<'_, PyMapping>>,
        set_state: Vec<Bound<'_, PyMapping>>,
    ) -> PyResult<()> {
        let inject = jobs::inject_rules(inject_error)?;
        let states = jobs::state_rules(set_state)?;
        self.g()
            .add_blkdebug(name, image, read_only, inject, states)
            .map_err(to_py)
    }

    // ---- clock and jobs ----

    fn now_ns(&self) -> u64 {
        self.g().now_ns()
    }

    fn advance(&self, py: Python<'_>, ns: i64) -> PyResult<Vec<JobEvent>> {
        let ns = u64::try_from(ns).map_err(|_| PyValueError::new_err("ns must be >= 0"))?;
        Ok(jobs::events(py.allow_threads(|| self.g().advance(ns))))
    }

    fn run_jobs(&self, py: Python<'_>, max_steps: usize) -> Vec<JobEvent> {
        jobs::events(py.allow_threads(|| self.g().run_jobs(max_steps)))
    }

    fn next_due_ns(&self) -> Option<u64> {
        self.g().next_due_ns()
    }

    fn run_until_idle(&self, py: Python<'_>, max_ns: u64) -> Vec<JobEvent> {
        jobs::events(py.allow_threads(|| self.g().run_until_idle(max_ns)))
    }

    #[pyo3(signature = (create_before, create_after, clean, free, all_through_nodes=false))]
    fn set_graph_drains(
        &self,
        create_before: u32,
        create_after: u32,
        clean: u32,
        free: u32,
        all_through_nodes: bool,
    ) {
        self.g().set_graph_drains(GraphDrains {
            create_before,
            create_after,
            clean,
            free,
            all_through_nodes,
        });
    }

    fn txn_new(&self) -> u64 {
        self.g().txn_new()
    }

    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        job_id, source, target, *, sync, filter_node_name, bitmap=None, bitmap_mode=None,
        speed=0, compress=false, on_source_error="report", on_target_error="report",
        auto_finalize=true, auto_dismiss=true, txn=None, max_chunk=0, max_workers=64,
        min_cluster_size=0, copy_bitmap_on_source=false, target_owned_nodes=0,
        discard_source=false, displaced_filter_fails=false
    ))]
    fn backup_create(
        &self,
        job_id: &str,
        source: &str,
        target: &str,
        sync: &str,
        filter_node_name: &str,
        bitmap: Option<String>,
        bitmap_mode: Option<&str>,
        speed: i64,
        compress: bool,
        on_source_error: &str,
        on_target_error: &str,
        auto_finalize: bool,
        auto_dismiss: bool,
        txn: Option<u64>,
        max_chunk: i64,
        max_workers: i64,
        min_cluster_size: u64,
        copy_bitmap_on_source: bool,
        target_owned_nodes: u32,
        discard_source: bool,
        displaced_filter_fails: bool,
    ) -> PyResult<Vec<JobEvent>> {
        let mut p = BackupParams::new(
            job_id,
            source,
            target,
            jobs::sync_mode(sync)?,
            filter_node_name,
        );
        p.bitmap = bitmap;
        p.bitmap_mode = jobs::bitmap_mode(bitmap_mode)?;
        p.speed = u64::try_from(speed).map_err(|_| PyValueError::new_err("negative speed"))?;
        p.compress = compress;
        p.on_source_error = jobs::on_error(on_source_error)?;
        p.on_target_error = jobs::on_error(on_target_error)?;
        p.auto_finalize = auto_finalize;
        p.auto_dismiss = auto_dismiss;
        p.txn = txn;
        p.max_chunk =
            u64::try_from(max_chunk).map_err(|_| PyValueError::new_err("negative max_chunk"))?;
        p.max_workers = usize::try_from(max_workers)
            .ok()
            .filter(|w| *w >= 1)
            .ok_or_else(|| PyValueError::new_err("max_workers must be at least 1"))?;
        p.min_cluster_size = min_cluster_size;
        p.copy_bitmap_on_source = copy_bitmap_on_source;
        p.target_owned_nodes = target_owned_nodes;
        p.discard_source = discard_source;
        p.displaced_filter_fails = displaced_filter_fails;
        self.g()
            .backup_create(p)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_start(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_start(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_discard(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_discard(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_pause(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_pause(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_resume(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_resume(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_cancel(&self, job_id: &str, force: bool) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_cancel(job_id, force)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_complete(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_complete(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_finalize(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_finalize(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_dismiss(&self, job_id: &str) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_dismiss(job_id)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn job_set_speed(&self, job_id: &str, speed: i64) -> PyResult<Vec<JobEvent>> {
        self.g()
            .job_set_speed(job_id, speed)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    #[pyo3(signature = (node))]
    fn drained_begin(&self, node: Option<&str>) -> PyResult<Vec<JobEvent>> {
        self.g()
            .drained_begin(node)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    #[pyo3(signature = (node))]
    fn drained_end(&self, node: Option<&str>) -> PyResult<Vec<JobEvent>> {
        self.g()
            .drained_end(node)
            .map(jobs::events)
            .map_err(job_to_py)
    }

    fn jobs(&self) -> Vec<JobInfo> {
        let g = self.g();
        let now = g.now_ns();
        g.jobs().iter().rev().map(|j| JobInfo::of(j, now)).collect()
    }

    fn job(&self, job_id: &str) -> Option<JobInfo> {
        let g = self.g();
        let now = g.now_ns();
        g.job(job_id).map(|j| JobInfo::of(j, now))
    }

    fn job_filter_displaced(&self, job_id: &str) -> Option<String> {
        self.g().job_filter_displaced(job_id)
    }
    // ---- backing chains ----

    fn set_backing(&self, node: &str, backing: Option<&str>) -> PyResult<()> {
        self.g().set_backing(node, backing).map_err(to_py)
    }

    fn append_overlay(&self, node: &str, overlay: &str) -> PyResult<()> {
        self.g().append_overlay(node, overlay).map_err(to_py)
    }

    fn remove_overlay(&self, overlay: &str, node: &str) -> PyResult<()> {
        self.g().remove_overlay(overlay, node).map_err(to_py)
    }

    /// A parent's reopen read-only does not reach `node` (it has its own `read-only`).
    fn keep_own_read_only(&self, node: &str) -> PyResult<()> {
        self.g().keep_own_read_only(node).map_err(to_py)
    }

    fn reopen_read_only(&self, node: &str) -> PyResult<Vec<(String, String)>> {
        self.g().reopen_read_only(node).map_err(to_py)
    }

    // ---- internal snapshots ----

    fn snapshots(&self, node: &str) -> PyResult<Vec<SnapshotInfo>> {
        Ok(self
            .g()
            .snapshots(node)
            .map_err(to_py)?
            .into_iter()
            .map(SnapshotInfo::of)
            .collect())
    }

    #[pyo3(signature = (node, name, date_sec, date_nsec, vm_clock_nsec, icount=None))]
    fn snapshot_create(
        &self,
        node: &str,
        name: &str,
        date_sec: u32,
        date_nsec: u32,
        vm_clock_nsec: u64,
        icount: Option<u64>,
    ) -> PyResult<SnapshotInfo> {
        let params = SnapshotParams {
            name: name.as_bytes().to_vec(),
            date_sec,
            date_nsec,
            vm_clock_nsec,
            icount,
        };
        self.g()
            .snapshot_create(node, &params)
            .map(SnapshotInfo::of)
            .map_err(to_py)
    }

    fn snapshot_delete(
        &self,
        node: &str,
        id: Option<&str>,
        name: Option<&str>,
    ) -> PyResult<SnapshotInfo> {
        self.g()
            .snapshot_delete(node, id, name.map(str::as_bytes))
            .map(SnapshotInfo::of)
            .map_err(to_py)
    }
}
