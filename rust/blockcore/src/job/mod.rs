//! Block jobs: QEMU's job state machine, its verbs, job transactions (JobTxn), drained sections
//! and a deterministic clock that makes jobs progress only when told to.
//!
//! The model follows QEMU's documented job behaviour:
//!
//! * A job is created in `created` with one pause held (it is not started yet) plus one per open
//!   drained section touching it. `start` drops the creation hold: `running`, then `paused` at
//!   once if a drained section still holds it.
//! * A running job copies one chunk per *step*. Steps happen in *rounds*: every due job (running,
//!   not paused, not sleeping for its speed limit) takes one step, in start order. A job whose
//!   step finds no work left, fails with policy `report`, or notices a cancel request *exits*;
//!   exits are processed after the round: those of failed jobs first, then the others, each
//!   newest first (QEMU defers a job's completion to a bottom half, one main-loop pass runs
//!   pending bottom halves newest first, and a failed request is seen after the successful
//!   ones). A job runs its steps in the order it was (re)entered: started or resumed. A member
//!   a txn abort cancels ends with BLOCK_JOB_CANCELLED even when its own request had failed.
//! * Completion: a failed or cancelled job goes to `aborting` and aborts its txn: every other
//!   member is force-cancelled, then members are finalized in txn order (newest first), each
//!   still-running cancelled member being stopped first. A successful job goes to `waiting`;
//!   when the last member of its txn got there, all go to `pending` (with BLOCK_JOB_PENDING for
//!   those with auto-finalize off) and, unless one needs a manual finalize, are finalized.
//! * Finalizing one job: the driver's commit (success) or abort (failure), then clean, then
//!   BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED (only if the job was started), then `concluded`
//!   and, with auto-dismiss or for a never-started job, `null` (the job is gone).
//! * Cleaning drains the job's filter; like QEMU's nested event loop this lets cancelled members of
//!   an aborting txn stop (they report `aborting` before the finalized job's own event).
//!
//! Backup specifics (copying, copy-before-write, the sync bitmap) live in [`backup`].

pub mod backup;
mod drain;

use crate::graph::{Driver, Graph, GraphError};
use std::collections::HashMap;

/// QEMU's `JobStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Not yet created (initial pseudo state).
    Undefined,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Paused (by the user, an error policy or a drained section).
    Paused,
    /// Ready for `complete` (never for backup).
    Ready,
    /// Paused while ready.
    Standby,
    /// Finished its work, waiting for the other txn members.
    Waiting,
    /// Waiting to be finalized.
    Pending,
    /// Failed or cancelled, being finalized.
    Aborting,
    /// Finalized, waiting to be dismissed.
    Concluded,
    /// Gone.
    Null,
}

impl JobStatus {
    /// QEMU's name of the status.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Undefined => "undefined",
            JobStatus::Created => "created",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Ready => "ready",
            JobStatus::Standby => "standby",
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Aborting => "aborting",
            JobStatus::Concluded => "concluded",
            JobStatus::Null => "null",
        }
    }

    /// Whether QEMU's transition table allows going from `self` to `to`.
    pub fn can_become(self, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, to),
            (Undefined, Created)
                | (Created, Running | Aborting | Null)
                | (Running, Paused | Ready | Waiting | Aborting)
                | (Paused, Running)
                | (Ready, Standby | Waiting | Aborting)
                | (Standby, Ready)
                | (Waiting, Pending | Aborting)
                | (Pending, Aborting | Concluded)
                | (Aborting, Aborting | Concluded)
                | (Concluded, Null)
        )
    }

    /// Whether the job has finished running (QEMU's `job_is_completed`).
    pub fn is_completed(self) -> bool {
        matches!(
            self,
            JobStatus::Waiting
                | JobStatus::Pending
                | JobStatus::Aborting
                | JobStatus::Concluded
                | JobStatus::Null
        )
    }
}

/// A QMP verb on a job (QEMU's `JobVerb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// job-cancel / block-job-cancel.
    Cancel,
    /// job-pause / block-job-pause.
    Pause,
    /// job-resume / block-job-resume.
    Resume,
    /// block-job-set-speed.
    SetSpeed,
    /// job-complete / block-job-complete.
    Complete,
    /// job-finalize / block-job-finalize.
    Finalize,
    /// job-dismiss / block-job-dismiss.
    Dismiss,
    /// block-job-change (8.2+).
    Change,
}

impl Verb {
    /// QEMU's name of the verb, as it appears in the rejection message.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Cancel => "cancel",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::SetSpeed => "set-speed",
            Verb::Complete => "complete",
            Verb::Finalize => "finalize",
            Verb::Dismiss => "dismiss",
            Verb::Change => "change",
        }
    }

    /// Whether QEMU's verb table allows the verb in `status`.
    pub fn allowed_in(self, status: JobStatus) -> bool {
        use JobStatus::*;
        match self {
            Verb::Cancel => matches!(
                status,
                Created | Running | Paused | Ready | Standby | Waiting | Pending
            ),
            Verb::Pause | Verb::Resume | Verb::SetSpeed | Verb::Change => {
                matches!(status, Created | Running | Paused | Ready | Standby)
            }
            Verb::Complete => matches!(status, Ready | Standby),
            Verb::Finalize => status == Pending,
            Verb::Dismiss => status == Concluded,
        }
    }
}

/// A job's I/O status (QEMU's `BlockDeviceIoStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// No error.
    Ok,
    /// Stopped on an error.
    Failed,
    /// Stopped on ENOSPC.
    NoSpace,
}

impl IoStatus {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            IoStatus::Ok => "ok",
            IoStatus::Failed => "failed",
            IoStatus::NoSpace => "nospace",
        }
    }
}

/// A value in an event's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(u64),
}

/// One QMP event of the job layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// QMP event name.
    pub name: &'static str,
    /// QMP data, in QEMU's key order.
    pub data: Vec<(&'static str, EventValue)>,
    /// Clock time of the event.
    pub time_ns: u64,
}

impl JobEvent {
    /// The string value of `key`, if present.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.data.iter().find_map(|(k, v)| match v {
            EventValue::Str(s) if *k == key => Some(s.as_str()),
            _ => None,
        })
    }

    /// The integer value of `key`, if present.
    pub fn get_int(&self, key: &str) -> Option<u64> {
        self.data.iter().find_map(|(k, v)| match v {
            EventValue::Int(n) if *k == key => Some(*n),
            _ => None,
        })
    }
}

/// Errors of job operations.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job with that id.
    #[error("job '{0}' not found")]
    NotFound(String),
    /// A job with that id exists.
    #[error("Job ID '{0}' already in use")]
    IdInUse(String),
    /// The verb is not allowed in the job's state.
    #[error("Job '{id}' in state '{}' cannot accept command verb '{verb}'", status.name())]
    Verb {
        /// The job.
        id: String,
        /// Its state.
        status: JobStatus,
        /// QEMU's verb name (or an internal operation name).
        verb: &'static str,
    },
    /// A user pause of a job the user already paused.
    #[error("Job is already paused")]
    AlreadyPaused(String),
    /// A user resume of a job not paused by the user.
    #[error("Can't resume a job that was not paused")]
    NotPaused(String),
    /// Invalid arguments (the caller should have rejected them with QEMU's message).
    #[error("{0}")]
    Invalid(String),
    /// A graph error.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Rate limiting as QEMU's `RateLimit`: 100 ms slices with a byte quota of `speed / 10`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimit {
    slice_start: u64,
    slice_end: u64,
    dispatched: u64,
}

/// Length of a rate-limit slice.
pub const SLICE_NS: u64 = 100_000_000;

impl RateLimit {
    /// Accounts `bytes` dispatched at `now` under `speed` bytes/s; returns the delay before the
    /// next dispatch.
    fn account(&mut self, now: u64, speed: u64, bytes: u64) -> u64 {
        if speed == 0 {
            return 0;
        }
        if self.slice_end < now {
            self.slice_start = now;
            self.slice_end = now + SLICE_NS;
            self.dispatched = 0;
        }
        self.dispatched += bytes;
        let quota = (speed as f64 * SLICE_NS as f64 / 1e9).max(1.0);
        if (self.dispatched as f64) < quota {
            return 0;
        }
        let slices = self.dispatched as f64 / quota;
        let end = self.slice_start as f64 + slices * SLICE_NS as f64;
        self.slice_end = if end >= u64::MAX as f64 {
            u64::MAX / 2
        } else {
            end as u64
        };
        self.slice_end.saturating_sub(now)
    }
}

/// A job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id.
    pub id: String,
    /// Its status.
    pub status: JobStatus,
    /// Its job transaction.
    pub txn: u64,
    /// Finalize automatically.
    pub auto_finalize: bool,
    /// Dismiss automatically.
    pub auto_dismiss: bool,
    /// Paused by the user or by an error policy.
    pub user_paused: bool,
    /// Everything holding the job paused (creation hold, user, drained sections).
    pub pause_count: u32,
    /// `start` ran.
    pub started: bool,
    /// A (forced) cancel was requested.
    pub cancelled: bool,
    /// The errno of the failure (`ECANCELED` for a cancel), once completed with one.
    pub ret: Option<i32>,
    /// The error text, once failed or cancelled.
    pub error: Option<String>,
    /// The I/O status.
    pub io_status: IoStatus,
    /// The speed limit in bytes/s (0: none).
    pub speed: u64,
    /// Bytes done.
    pub current_progress: u64,
    /// Bytes in all.
    pub total_progress: u64,
    /// The backup specifics.
    pub backup: backup::Backup,
    pub(crate) due_ns: u64,
    pub(crate) rate: RateLimit,
    pub(crate) start_seq: u64,
    pub(crate) exit_pending: bool,
}

impl Job {
    /// Whether the job has work it can do on its own right now or later (not counting pauses).
    fn wants_to_run(&self) -> bool {
        self.status == JobStatus::Running
            && !self.exit_pending
            && (self.cancelled || self.backup.has_background_work())
    }

    /// Whether the job would take a step if its time came. A cancelled job no longer stops
    /// at pause points (QEMU's `job_pause_point` returns at once for it).
    fn runnable(&self) -> bool {
        (self.pause_count == 0 || self.cancelled) && self.wants_to_run()
    }

    /// True while a running job has work due at `now`.
    pub fn busy(&self, now: u64) -> bool {
        self.runnable() && self.due_ns <= now
    }
}

/// A job transaction: its members, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Txn {
    members: Vec<String>,
    aborting: bool,
}

/// A drained section: the node (None: everything) and the jobs it holds.
#[derive(Debug, Clone)]
struct Drain {
    node: Option<String>,
    jobs: Vec<String>,
}

/// Every job of a graph with the clock, the job transactions and the open drained sections.
#[derive(Debug, Default)]
pub struct JobSet {
    /// Jobs in creation order.
    pub(crate) jobs: Vec<Job>,
    pub(crate) now: u64,
    pub(crate) txns: HashMap<u64, Txn>,
    next_txn: u64,
    pub(crate) next_tag: u64,
    next_start: u64,
    drains: Vec<Drain>,
    exits: Vec<String>,
    pub(crate) graph_drains: GraphDrains,
    pub(crate) stamps: drain::EdgeStamps,
    /// A job's own discard of its source is under way (no copy-before-write for it).
    pub(crate) discarding: bool,
}

/// How many drain-everything sections (a pause/resume pair for every running job) QEMU's
/// graph changes cause at points inside the job layer. QEMU 10.0 takes the graph write lock,
/// which drains everything, for each graph change; 7.2 did not (all zero, the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphDrains {
    /// While a backup job is being created, before `created` (filter inserted, job attached).
    pub create_before: u32,
    /// After `created` (the target attached to the job).
    pub create_after: u32,
    /// When a job's clean drops its filter, before BLOCK_JOB_COMPLETED/CANCELLED.
    pub clean: u32,
    /// When a job is freed, after `null`.
    pub free: u32,
    /// Draining everything quiesces every node and passes it on to its parent nodes (10.0);
    /// false: each node tells only the jobs attached to it (7.2). Decides the order in which
    /// several jobs pause and resume (see the `drain` module).
    pub all_through_nodes: bool,
}

/// ECANCELED.
pub const ECANCELED: i32 = 125;

/// QEMU's `strerror` text for `errno` (without Rust's "(os error N)" suffix).
pub fn strerror(errno: i32) -> String {
    if errno == ECANCELED {
        return "Operation canceled".into();
    }
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// An event collector stamped with the clock.
pub(crate) struct Events {
    pub(crate) list: Vec<JobEvent>,
    now: u64,
}

impl Events {
    fn new(now: u64) -> Self {
        Self {
            list: Vec::new(),
            now,
        }
    }

    pub(crate) fn push(&mut self, name: &'static str, data: Vec<(&'static str, EventValue)>) {
        self.list.push(JobEvent {
            name,
            data,
            time_ns: self.now,
        });
    }
}

fn s(v: &str) -> EventValue {
    EventValue::Str(v.to_string())
}

impl Graph {
    // ---- lookups -------------------------------------------------------------------------------

    /// Jobs not yet dismissed, in creation order.
    pub fn jobs(&self) -> &[Job] {
        &self.jobs.jobs
    }

    /// The job `id`.
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.jobs.iter().find(|j| j.id == id)
    }

    pub(crate) fn job_index(&self, id: &str) -> Result<usize, JobError> {
        self.jobs
            .jobs
            .iter()
            .position(|j| j.id == id)
            .ok_or_else(|| JobError::NotFound(id.into()))
    }

    fn verb(&self, i: usize, verb: Verb) -> Result<(), JobError> {
        let j = &self.jobs.jobs[i];
        if verb.allowed_in(j.status) {
            Ok(())
        } else {
            Err(JobError::Verb {
                id: j.id.clone(),
                status: j.status,
                verb: verb.name(),
            })
        }
    }

    /// The clock, in nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.jobs.now
    }

    /// A new job transaction id.
    pub fn txn_new(&mut self) -> u64 {
        self.jobs.next_txn += 1;
        let id = self.jobs.next_txn;
        self.jobs.txns.insert(id, Txn::default());
        id
    }

    // ---- state changes -------------------------------------------------------------------------

    pub(crate) fn transition(&mut self, i: usize, to: JobStatus, ev: &mut Events) {
        let j = &mut self.jobs.jobs[i];
        if j.status == to {
            return;
        }
        debug_assert!(
            j.status.can_become(to),
            "{} -> {}",
            j.status.name(),
            to.name()
        );
        j.status = to;
        if !j.id.is_empty() {
            ev.push(
                "JOB_STATUS_CHANGE",
                vec![("id", s(&j.id)), ("status", s(to.name()))],
            );
        }
    }

    /// Registers a freshly built job (status `undefined`) and moves it to `created`.
    pub(crate) fn register_job(
        &mut self,
        mut job: Job,
        txn: Option<u64>,
        ev: &mut Events,
    ) -> Result<(), JobError> {
        if self.job(&job.id).is_some() {
            return Err(JobError::IdInUse(job.id));
        }
        let txn = match txn {
            Some(t) if self.jobs.txns.contains_key(&t) => t,
            Some(t) => return Err(JobError::Invalid(format!("no job transaction {t}"))),
            None => self.txn_new(),
        };
        job.txn = txn;
        job.pause_count = 1;
        let id = job.id.clone();
        let nodes = job.backup.nodes();
        self.jobs.jobs.push(job);
        let i = self.jobs.jobs.len() - 1;
        // Open drained sections touching the job hold it too.
        let mut holds = 0;
        for d in 0..self.jobs.drains.len() {
            let affected = self.drain_affects(self.jobs.drains[d].node.as_deref(), &nodes);
            if affected {
                self.jobs.drains[d].jobs.push(id.clone());
                holds += 1;
            }
        }
        self.jobs.jobs[i].pause_count += holds;
        if let Some(t) = self.jobs.txns.get_mut(&txn) {
            t.members.insert(0, id);
        }
        self.transition(i, JobStatus::Created, ev);
        Ok(())
    }

    /// Sets the drain-everything counts of [`GraphDrains`].
    pub fn set_graph_drains(&mut self, drains: GraphDrains) {
        self.jobs.graph_drains = drains;
    }

    /// `n` drain-everything sections, one after the other.
    pub(crate) fn drain_all_pairs(&mut self, n: u32, ev: &mut Events) {
        for _ in 0..n {
            if let Ok(e) = self.drained_begin(None) {
                ev.list.extend(e);
            }
            if let Ok(e) = self.drained_end(None) {
                ev.list.extend(e);
            }
        }
    }

    pub(crate) fn pause_internal(&mut self, i: usize, ev: &mut Events) {
        self.jobs.jobs[i].pause_count += 1;
        if self.jobs.jobs[i].cancelled {
            return;
        }
        if self.jobs.jobs[i].status == JobStatus::Running {
            self.transition(i, JobStatus::Paused, ev);
        } else if self.jobs.jobs[i].status == JobStatus::Ready {
            self.transition(i, JobStatus::Standby, ev);
        }
    }

    fn resume_internal(&mut self, i: usize, ev: &mut Events) {
        let j = &mut self.jobs.jobs[i];
        j.pause_count = j.pause_count.saturating_sub(1);
        if j.pause_count == 0 {
            let now = self.jobs.now;
            let j = &mut self.jobs.jobs[i];
            j.due_ns = j.due_ns.max(now);
            match j.status {
                JobStatus::Paused => {
                    // QEMU re-enters the job's coroutine now: it runs after those already
                    // running (the order of the next round's steps).
                    self.jobs.next_start += 1;
                    self.jobs.jobs[i].start_seq = self.jobs.next_start;
                    self.transition(i, JobStatus::Running, ev)
                }
                JobStatus::Standby => self.transition(i, JobStatus::Ready, ev),
                _ => {}
            }
        }
    }

    // ---- verbs ---------------------------------------------------------------------------------

    /// The index of job `id` if it was created and never started; else the error naming
    /// `verb` (the guard of [`Graph::job_start`] and [`Graph::job_discard`]).
    fn created_job(&self, id: &str, verb: &'static str) -> Result<usize, JobError> {
        let i = self.job_index(id)?;
        let j = &self.jobs.jobs[i];
        if j.status != JobStatus::Created || j.started {
            return Err(JobError::Verb {
                id: id.into(),
                status: j.status,
                verb,
            });
        }
        Ok(i)
    }

    /// Starts a created job.
    pub fn job_start(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.created_job(id, "start")?;
        let mut ev = Events::new(self.jobs.now);
        self.jobs.next_start += 1;
        let now = self.jobs.now;
        {
            let j = &mut self.jobs.jobs[i];
            j.started = true;
            j.start_seq = self.jobs.next_start;
            j.pause_count -= 1;
            j.due_ns = now;
        }
        self.backup_begin(i)?;
        self.transition(i, JobStatus::Running, &mut ev);
        if self.jobs.jobs[i].pause_count > 0 {
            self.transition(i, JobStatus::Paused, &mut ev);
        }
        Ok(ev.list)
    }

    /// Early failure of a created job: `null`, everything it set up undone.
    pub fn job_discard(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.created_job(id, "discard")?;
        let mut ev = Events::new(self.jobs.now);
        self.backup_reclaim_bitmap(i);
        self.backup_clean(i, &mut ev);
        self.transition(i, JobStatus::Null, &mut ev);
        self.remove_job(i);
        self.drain_all_pairs(self.jobs.graph_drains.free, &mut ev);
        Ok(ev.list)
    }

    /// User pause.
    pub fn job_pause(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        self.verb(i, Verb::Pause)?;
        if self.jobs.jobs[i].user_paused {
            return Err(JobError::AlreadyPaused(id.into()));
        }
        let mut ev = Events::new(self.jobs.now);
        self.jobs.jobs[i].user_paused = true;
        self.pause_internal(i, &mut ev);
        Ok(ev.list)
    }

    /// User resume.
    pub fn job_resume(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        let j = &self.jobs.jobs[i];
        if !j.user_paused || j.pause_count == 0 {
            return Err(JobError::NotPaused(id.into()));
        }
        self.verb(i, Verb::Resume)?;
        let mut ev = Events::new(self.jobs.now);
        let j = &mut self.jobs.jobs[i];
        j.user_paused = false;
        j.io_status = IoStatus::Ok;
        self.resume_internal(i, &mut ev);
        Ok(ev.list)
    }

    /// User cancel (always forced for backup).
    pub fn job_cancel(&mut self, id: &str, force: bool) -> Result<Vec<JobEvent>, JobError> {
        let _ = force;
        let i = self.job_index(id)?;
        self.verb(i, Verb::Cancel)?;
        let mut ev = Events::new(self.jobs.now);
        self.cancel(i, &mut ev);
        Ok(ev.list)
    }

    /// Cancels job `i` (QEMU's `job_cancel`).
    pub(crate) fn cancel(&mut self, i: usize, ev: &mut Events) {
        if self.jobs.jobs[i].status == JobStatus::Concluded {
            self.transition(i, JobStatus::Null, ev);
            self.remove_job(i);
            self.drain_all_pairs(self.jobs.graph_drains.free, ev);
            return;
        }
        self.cancel_async(i, ev);
        // QEMU enters the job: one held at a pause point by a drained section wakes up
        // (`running`) and, being cancelled, leaves at once.
        self.wake_cancelled(i, ev);
        let j = &self.jobs.jobs[i];
        if !j.started {
            let id = j.id.clone();
            self.completed(&id, None, ev);
        } else if j.status.is_completed() || j.exit_pending {
            let id = j.id.clone();
            self.txn_abort(&id, ev);
        }
        // A running job notices the request at its next step (due now).
    }

    /// Marks job `i` cancelled; a user-paused job is resumed (QEMU's `job_cancel_async`).
    fn cancel_async(&mut self, i: usize, ev: &mut Events) {
        let now = self.jobs.now;
        let j = &mut self.jobs.jobs[i];
        if j.status.is_completed()
            && j.status != JobStatus::Waiting
            && j.status != JobStatus::Pending
        {
            return;
        }
        j.cancelled = true;
        j.due_ns = j.due_ns.min(now);
        if j.user_paused {
            j.user_paused = false;
            j.io_status = IoStatus::Ok;
            self.resume_internal(i, ev);
        }
    }

    /// A cancelled job waiting at a pause point is woken: it goes back to `running` (QEMU's
    /// pause point restores the status when the job is entered, whatever holds it).
    fn wake_cancelled(&mut self, i: usize, ev: &mut Events) {
        let now = self.jobs.now;
        let j = &mut self.jobs.jobs[i];
        if j.cancelled && j.started && j.status == JobStatus::Paused {
            j.due_ns = j.due_ns.min(now);
            self.transition(i, JobStatus::Running, ev);
        }
    }

    /// `complete`: never valid for a backup job.
    pub fn job_complete(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        self.verb(i, Verb::Complete)?;
        Err(JobError::Invalid(format!(
            "The active block job '{id}' cannot be completed"
        )))
    }

    /// `finalize`: finalizes every member of the job's txn.
    pub fn job_finalize(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        self.verb(i, Verb::Finalize)?;
        let mut ev = Events::new(self.jobs.now);
        let txn = self.jobs.jobs[i].txn;
        self.do_finalize(txn, &mut ev);
        Ok(ev.list)
    }

    /// `dismiss`.
    pub fn job_dismiss(&mut self, id: &str) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        self.verb(i, Verb::Dismiss)?;
        let mut ev = Events::new(self.jobs.now);
        self.transition(i, JobStatus::Null, &mut ev);
        self.remove_job(i);
        self.drain_all_pairs(self.jobs.graph_drains.free, &mut ev);
        Ok(ev.list)
    }

    /// `set-speed`.
    pub fn job_set_speed(&mut self, id: &str, speed: i64) -> Result<Vec<JobEvent>, JobError> {
        let i = self.job_index(id)?;
        self.verb(i, Verb::SetSpeed)?;
        let speed = u64::try_from(speed).map_err(|_| {
            JobError::Invalid("Parameter 'speed' expects a non-negative value".into())
        })?;
        let now = self.jobs.now;
        let j = &mut self.jobs.jobs[i];
        let old = j.speed;
        j.speed = speed;
        // A lower limit takes effect at the next request; a higher one (or none) wakes a
        // sleeping job, which asks the limit again and may go back to sleep at once.
        if speed == 0 {
            j.due_ns = j.due_ns.min(now);
        } else if speed > old {
            j.due_ns = now + j.rate.account(now, speed, 0);
        }
        Ok(Vec::new())
    }

    fn remove_job(&mut self, i: usize) {
        let j = self.jobs.jobs.remove(i);
        if let Some(t) = self.jobs.txns.get_mut(&j.txn) {
            t.members.retain(|m| *m != j.id);
            if t.members.is_empty() {
                self.jobs.txns.remove(&j.txn);
            }
        }
        for d in &mut self.jobs.drains {
            d.jobs.retain(|m| *m != j.id);
        }
    }

    // ---- completion, job transactions, finalization --------------------------------------------

    /// The node that an external snapshot put between backup job `id`'s copy-before-write
    /// filter (below any newer jobs' filters stacked on it) and the job's source, if any.
    pub fn job_filter_displaced(&self, id: &str) -> Option<String> {
        let j = self.job(id)?;
        let mut below = j.backup.filter.clone()?;
        while let Some(node) = self.node(&below) {
            if !matches!(node.driver, Driver::CopyBeforeWrite) {
                break;
            }
            match node.child("file") {
                Some(child) => below = child.to_string(),
                None => return None,
            }
        }
        (below != j.backup.source).then_some(below)
    }

    /// The job exited with `ret` (None: success unless cancelled); QEMU's `job_completed`.
    pub(crate) fn completed(&mut self, id: &str, ret: Option<i32>, ev: &mut Events) {
        let Ok(i) = self.job_index(id) else { return };
        let displaced = {
            let j = &self.jobs.jobs[i];
            let ends_well = j.ret.is_none() && ret.is_none() && !j.cancelled;
            if ends_well && j.backup.displaced_filter_fails {
                self.job_filter_displaced(id)
            } else {
                None
            }
        };
        {
            let j = &mut self.jobs.jobs[i];
            j.exit_pending = false;
            if j.ret.is_none() {
                j.ret = ret;
            }
            if let Some(over) = displaced {
                j.ret = Some(5); // EIO
                j.error = Some(format!(
                    "QEMU aborts when job '{id}' drops its filter (bdrv_do_drained_end: \
                     Assertion `bs->quiesce_counter > 0' failed): an external snapshot put \
                     '{over}' above its source '{}'",
                    j.backup.source
                ));
            }
        }
        self.update_rc(i, ev);
        if self.jobs.jobs[i].ret.is_some() {
            self.txn_abort(id, ev);
        } else {
            self.txn_success(id, ev);
        }
    }

    fn update_rc(&mut self, i: usize, ev: &mut Events) {
        let j = &mut self.jobs.jobs[i];
        if j.ret.is_none() && j.cancelled {
            j.ret = Some(ECANCELED);
        }
        if let Some(e) = j.ret {
            if j.error.is_none() {
                j.error = Some(strerror(e));
            }
            self.transition(i, JobStatus::Aborting, ev);
        }
    }

    fn txn_members(&self, txn: u64) -> Vec<String> {
        self.jobs
            .txns
            .get(&txn)
            .map(|t| t.members.clone())
            .unwrap_or_default()
    }

    fn txn_success(&mut self, id: &str, ev: &mut Events) {
        let Ok(i) = self.job_index(id) else { return };
        self.transition(i, JobStatus::Waiting, ev);
        let txn = self.jobs.jobs[i].txn;
        let members = self.txn_members(txn);
        for m in &members {
            if self.job(m).is_some_and(|j| !j.status.is_completed()) {
                return;
            }
        }
        for m in &members {
            if let Ok(k) = self.job_index(m) {
                self.transition(k, JobStatus::Pending, ev);
                let j = &self.jobs.jobs[k];
                if !j.auto_finalize && !j.id.is_empty() {
                    ev.push(
                        "BLOCK_JOB_PENDING",
                        vec![("type", s("backup")), ("id", s(&j.id))],
                    );
                }
            }
        }
        if members
            .iter()
            .any(|m| self.job(m).is_some_and(|j| !j.auto_finalize))
        {
            return;
        }
        self.do_finalize(txn, ev);
    }

    fn do_finalize(&mut self, txn: u64, ev: &mut Events) {
        for m in self.txn_members(txn) {
            if let Ok(k) = self.job_index(&m) {
                self.finalize_single(k, ev);
            }
        }
    }

    fn txn_abort(&mut self, id: &str, ev: &mut Events) {
        let Ok(i) = self.job_index(id) else { return };
        let txn = self.jobs.jobs[i].txn;
        match self.jobs.txns.get_mut(&txn) {
            Some(t) if t.aborting => return,
            Some(t) => t.aborting = true,
            None => return,
        }
        for m in self.txn_members(txn) {
            if m != id {
                if let Ok(k) = self.job_index(&m) {
                    self.cancel_async(k, ev);
                }
            }
        }
        while let Some(first) = self.txn_members(txn).first().cloned() {
            let Ok(k) = self.job_index(&first) else {
                break;
            };
            if !self.jobs.jobs[k].status.is_completed() {
                // Run the cancelled member until it stops.
                self.wake_cancelled(k, ev);
                self.completed(&first, None, ev);
            }
            let Ok(k) = self.job_index(&first) else {
                continue;
            };
            self.finalize_single(k, ev);
        }
    }

    fn finalize_single(&mut self, i: usize, ev: &mut Events) {
        let id = self.jobs.jobs[i].id.clone();
        self.update_rc(i, ev);
        let ok = self.jobs.jobs[i].ret.is_none();
        self.backup_finish_bitmap(i, ok);
        self.backup_clean(i, ev);
        // Cleaning drained; that let cancelled members of aborting txns stop.
        self.poll_cancelled(ev);
        let Ok(i) = self.job_index(&id) else {
            return;
        };
        let j = &self.jobs.jobs[i];
        if j.started && !j.id.is_empty() {
            let mut data = vec![
                ("type", s("backup")),
                ("device", s(&j.id)),
                ("len", EventValue::Int(j.total_progress)),
                ("offset", EventValue::Int(j.current_progress)),
                ("speed", EventValue::Int(j.speed)),
            ];
            // QEMU's job_is_cancelled: a backup job's cancel is always forced, so a cancelled
            // job ends cancelled even when its own request failed first (a grouped member the
            // txn cancelled while its failure was still on the way out).
            if j.cancelled {
                ev.push("BLOCK_JOB_CANCELLED", data);
            } else {
                if let Some(e) = &j.error {
                    data.push(("error", s(e)));
                }
                ev.push("BLOCK_JOB_COMPLETED", data);
            }
        }
        let (txn, id) = (j.txn, j.id.clone());
        if let Some(t) = self.jobs.txns.get_mut(&txn) {
            t.members.retain(|m| *m != id);
        }
        self.transition(i, JobStatus::Concluded, ev);
        let j = &self.jobs.jobs[i];
        if j.auto_dismiss || !j.started {
            self.transition(i, JobStatus::Null, ev);
            self.remove_job(i);
            self.drain_all_pairs(self.jobs.graph_drains.free, ev);
        }
    }

    /// Lets cancelled, started, unpaused members of aborting txns stop.
    fn poll_cancelled(&mut self, ev: &mut Events) {
        loop {
            let next = self.jobs.jobs.iter().find(|j| {
                j.cancelled
                    && j.started
                    && j.status == JobStatus::Running
                    && self.jobs.txns.get(&j.txn).is_some_and(|t| t.aborting)
            });
            let Some(id) = next.map(|j| j.id.clone()) else {
                break;
            };
            self.completed(&id, None, ev);
        }
    }

    // ---- drained sections ----------------------------------------------------------------------

    /// `node` and every node above it.
    fn self_and_ancestors(&self, node: &str) -> Vec<String> {
        let mut out = vec![node.to_string()];
        let mut k = 0;
        while k < out.len() {
            let cur = out[k].clone();
            for n in &self.nodes {
                if n.children.iter().any(|c| c.node == cur) && !out.contains(&n.name) {
                    out.push(n.name.clone());
                }
            }
            k += 1;
        }
        out
    }

    fn drain_affects(&self, node: Option<&str>, job_nodes: &[String]) -> bool {
        match node {
            None => true,
            Some(n) => {
                let set = self.self_and_ancestors(n);
                job_nodes.iter().any(|jn| set.contains(jn))
            }
        }
    }

    /// Begins a drained section of `node` (None: everything).
    pub fn drained_begin(&mut self, node: Option<&str>) -> Result<Vec<JobEvent>, JobError> {
        if let Some(n) = node {
            self.get(n)?;
        }
        self.observe_edges();
        let mut ev = Events::new(self.jobs.now);
        let mut held = Vec::new();
        for i in 0..self.jobs.jobs.len() {
            let nodes = self.jobs.jobs[i].backup.nodes();
            if self.drain_affects(node, &nodes) {
                held.push(self.jobs.jobs[i].id.clone());
            }
        }
        let held = self.drain_order(node, true, &held);
        for id in &held {
            if let Ok(i) = self.job_index(id) {
                self.pause_internal(i, &mut ev);
            }
        }
        self.jobs.drains.push(Drain {
            node: node.map(str::to_string),
            jobs: held,
        });
        Ok(ev.list)
    }

    /// Ends the newest drained section of `node`.
    pub fn drained_end(&mut self, node: Option<&str>) -> Result<Vec<JobEvent>, JobError> {
        let pos = self
            .jobs
            .drains
            .iter()
            .rposition(|d| d.node.as_deref() == node)
            .ok_or_else(|| JobError::Invalid("no such drained section is open".into()))?;
        let d = self.jobs.drains.remove(pos);
        self.observe_edges();
        let mut ev = Events::new(self.jobs.now);
        for id in self.drain_order(node, false, &d.jobs) {
            if let Ok(i) = self.job_index(&id) {
                self.resume_internal(i, &mut ev);
            }
        }
        Ok(ev.list)
    }

    // ---- the clock -----------------------------------------------------------------------------

    /// When some job next has work, if any can progress on its own.
    pub fn next_due_ns(&self) -> Option<u64> {
        if !self.jobs.exits.is_empty() {
            return Some(self.jobs.now);
        }
        self.jobs
            .jobs
            .iter()
            .filter(|j| j.runnable())
            .map(|j| j.due_ns.max(self.jobs.now))
            .min()
    }

    /// One round at the current time: each due job takes one step (in start order), then the
    /// exits are processed. Returns the number of steps taken.
    fn round(&mut self, max_steps: usize, ev: &mut Events) -> usize {
        let now = self.jobs.now;
        let mut due: Vec<(u64, String)> = self
            .jobs
            .jobs
            .iter()
            .filter(|j| j.runnable() && j.due_ns <= now)
            .map(|j| (j.start_seq, j.id.clone()))
            .collect();
        due.sort();
        let mut steps = 0;
        for (_, id) in due {
            if steps >= max_steps {
                break;
            }
            let Ok(i) = self.job_index(&id) else { continue };
            if !(self.jobs.jobs[i].runnable() && self.jobs.jobs[i].due_ns <= now) {
                continue;
            }
            steps += 1;
            self.step(i, ev);
        }
        self.process_exits(ev);
        steps
    }

    fn process_exits(&mut self, ev: &mut Events) {
        // QEMU defers each exit to a bottom half, and one main-loop pass runs the pending ones
        // newest first. Within a round, a job whose request failed learns it last (the injected
        // error comes back through the coroutine-wakeup bottom half, after the thread pool's
        // completions), so it scheduled its exit last: failed jobs complete first, the later
        // one first, then the others, newest first.
        while !self.jobs.exits.is_empty() {
            let mut batch = std::mem::take(&mut self.jobs.exits);
            batch.reverse();
            let failed = |id: &String| {
                self.job(id)
                    .is_some_and(|j| j.ret.is_some() && !j.status.is_completed())
            };
            let (mut order, rest): (Vec<String>, Vec<String>) = batch.into_iter().partition(failed);
            order.extend(rest);
            for id in order {
                let Ok(i) = self.job_index(&id) else { continue };
                let j = &self.jobs.jobs[i];
                if !j.exit_pending || j.status.is_completed() {
                    continue;
                }
                let ret = j.ret;
                self.completed(&id, ret, ev);
            }
        }
    }

    /// One step of job `i`.
    fn step(&mut self, i: usize, ev: &mut Events) {
        if self.jobs.jobs[i].cancelled {
            self.exit(i);
            return;
        }
        self.backup_step(i, ev);
    }

    /// Job `i` leaves its run loop; its completion is processed after the round.
    pub(crate) fn exit(&mut self, i: usize) {
        let j = &mut self.jobs.jobs[i];
        j.exit_pending = true;
        self.jobs.exits.push(j.id.clone());
    }

    /// Moves the clock forward by `ns`, running every step that becomes due.
    pub fn advance(&mut self, ns: u64) -> Vec<JobEvent> {
        let target = self.jobs.now.saturating_add(ns);
        let mut ev = Events::new(self.jobs.now);
        while let Some(t) = self.next_due_ns() {
            if t > target {
                break;
            }
            self.jobs.now = self.jobs.now.max(t);
            ev.now = self.jobs.now;
            self.round(usize::MAX, &mut ev);
        }
        self.jobs.now = target;
        ev.list
    }

    /// Runs at most `max_steps` steps due now.
    pub fn run_jobs(&mut self, max_steps: usize) -> Vec<JobEvent> {
        let mut ev = Events::new(self.jobs.now);
        let mut left = max_steps;
        while left > 0 {
            if self.next_due_ns() != Some(self.jobs.now) {
                break;
            }
            let n = self.round(left, &mut ev);
            if n == 0 && self.jobs.exits.is_empty() {
                break;
            }
            left -= n;
        }
        self.process_exits(&mut ev);
        ev.list
    }

    /// Advances from due time to due time while that stays within `max_ns` from now.
    pub fn run_until_idle(&mut self, max_ns: u64) -> Vec<JobEvent> {
        let limit = self.jobs.now.saturating_add(max_ns);
        let mut ev = Events::new(self.jobs.now);
        while let Some(t) = self.next_due_ns() {
            if t > limit {
                break;
            }
            self.jobs.now = self.jobs.now.max(t);
            ev.now = self.jobs.now;
            self.round(usize::MAX, &mut ev);
        }
        ev.list
    }
}

#[cfg(test)]
mod tests;
