//! Job-layer views for Python: `JobEvent`, `JobInfo`, and argument parsing for the job methods
//! of `Graph` (which live in `graph.rs`, PyO3 allowing one `#[pymethods]` block per class).

use blockcore::job::backup::{BitmapMode, OnError, SyncMode};
use blockcore::job::{EventValue, Job};
use blockcore::storage::{InjectRule, IoType, StateRule};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyAnyMethods, PyDict, PyMapping};

/// One QMP event of the job layer.
#[pyclass(frozen, module = "reference._core")]
pub struct JobEvent(pub blockcore::job::JobEvent);

#[pymethods]
impl JobEvent {
    #[getter]
    fn name(&self) -> &str {
        self.0.name
    }

    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.0.data {
            match v {
                EventValue::Str(s) => d.set_item(*k, s)?,
                EventValue::Int(n) => d.set_item(*k, *n)?,
            }
        }
        Ok(d)
    }

    #[getter]
    fn time_ns(&self) -> u64 {
        self.0.time_ns
    }

    fn __repr__(&self) -> String {
        format!(
            "JobEvent({} {:?} @{})",
            self.0.name, self.0.data, self.0.time_ns
        )
    }
}

/// Wraps core events.
pub fn events(list: Vec<blockcore::job::JobEvent>) -> Vec<JobEvent> {
    list.into_iter().map(JobEvent).collect()
}

/// A read-only view of one job.
#[pyclass(frozen, get_all, module = "reference._core")]
pub struct JobInfo {
    id: String,
    r#type: String,
    status: String,
    txn: u64,
    auto_finalize: bool,
    auto_dismiss: bool,
    user_paused: bool,
    pause_count: u32,
    busy: bool,
    speed: u64,
    io_status: String,
    error: Option<String>,
    current_progress: u64,
    total_progress: u64,
    source: String,
    target: String,
    filter_node: Option<String>,
    sync: String,
    bitmap: Option<String>,
    bitmap_mode: Option<String>,
    cluster_size: u64,
    started: bool,
}

impl JobInfo {
    /// The view of `j` at clock `now`.
    pub fn of(j: &Job, now: u64) -> Self {
        Self {
            id: j.id.clone(),
            r#type: "backup".into(),
            status: j.status.name().into(),
            txn: j.txn,
            auto_finalize: j.auto_finalize,
            auto_dismiss: j.auto_dismiss,
            user_paused: j.user_paused,
            pause_count: j.pause_count,
            busy: j.busy(now),
            speed: j.speed,
            io_status: j.io_status.name().into(),
            error: j.error.clone(),
            current_progress: j.current_progress,
            total_progress: j.total_progress,
            source: j.backup.source.clone(),
            target: j.backup.target.clone(),
            filter_node: j.backup.filter.clone(),
            sync: j.backup.sync.name().into(),
            bitmap: j.backup.bitmap.clone(),
            bitmap_mode: j.backup.bitmap_mode.map(|m| m.name().to_string()),
            cluster_size: j.backup.cluster_size,
            started: j.started,
        }
    }
}

fn bad(what: &str, value: &str) -> PyErr {
    PyValueError::new_err(format!("invalid {what} '{value}'"))
}

/// Parses a sync mode.
pub fn sync_mode(s: &str) -> PyResult<SyncMode> {
    SyncMode::parse(s).ok_or_else(|| bad("sync mode", s))
}

/// Parses a bitmap mode.
pub fn bitmap_mode(s: Option<&str>) -> PyResult<Option<BitmapMode>> {
    s.map(|m| BitmapMode::parse(m).ok_or_else(|| bad("bitmap mode", m)))
        .transpose()
}

/// Parses an error policy.
pub fn on_error(s: &str) -> PyResult<OnError> {
    OnError::parse(s).ok_or_else(|| bad("error policy", s))
}

fn opt<'py, T: FromPyObject<'py>>(m: &Bound<'py, PyMapping>, key: &str) -> PyResult<Option<T>> {
    if m.contains(key)? {
        Ok(Some(m.get_item(key)?.extract()?))
    } else {
        Ok(None)
    }
}

fn req<'py, T: FromPyObject<'py>>(m: &Bound<'py, PyMapping>, key: &str) -> PyResult<T> {
    opt(m, key)?.ok_or_else(|| PyValueError::new_err(format!("rule lacks '{key}'")))
}

/// Parses `inject-error` rules given with QAPI's keys.
pub fn inject_rules(items: Vec<Bound<'_, PyMapping>>) -> PyResult<Vec<InjectRule>> {
    items
        .iter()
        .map(|m| {
            let iotype: Option<String> = opt(m, "iotype")?;
            Ok(InjectRule {
                event: req(m, "event")?,
                state: opt(m, "state")?,
                iotype: iotype
                    .map(|t| IoType::parse(&t).ok_or_else(|| bad("iotype", &t)))
                    .transpose()?,
                errno: opt(m, "errno")?.unwrap_or(5),
                sector: opt(m, "sector")?,
                once: opt(m, "once")?.unwrap_or(false),
                immediately: opt(m, "immediately")?.unwrap_or(false),
            })
        })
        .collect()
}

/// Parses `set-state` rules given with QAPI's keys.
pub fn state_rules(items: Vec<Bound<'_, PyMapping>>) -> PyResult<Vec<StateRule>> {
    items
        .iter()
        .map(|m| {
            Ok(StateRule {
                event: req(m, "event")?,
                state: opt(m, "state")?,
                new_state: req(m, "new_state")?,
            })
        })
        .collect()
}
