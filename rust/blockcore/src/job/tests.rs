use super::backup::{BackupParams, BitmapMode, OnError, SyncMode, RETRY_NS};
use super::*;
use crate::format::qcow2::{CreateOptions, Qcow2};
use crate::graph::WriteKind;
use crate::storage::{FileStorage, InjectRule, StateRule};
use crate::units::Granularity;
use std::sync::Arc;
use tempfile::TempDir;

const K64: u64 = 65536;
const MIB: u64 = 1 << 20;

/// A small deterministic generator (xorshift64*), so property tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn qcow2_file(dir: &TempDir, name: &str, size: u64) -> String {
    let path = dir.path().join(name);
    let store = Arc::new(FileStorage::create(&path).unwrap());
    Qcow2::create(store, &CreateOptions::new(size)).unwrap();
    path.to_str().unwrap().to_string()
}

fn raw_file(dir: &TempDir, name: &str, size: u64) -> String {
    let path = dir.path().join(name);
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    path.to_str().unwrap().to_string()
}

/// Adds format node `name` (with a backend `dev_<name>`) over a new image of `size`.
fn disk(g: &mut Graph, dir: &TempDir, name: &str, fmt: &str, size: u64) {
    let file = if fmt == "qcow2" {
        qcow2_file(dir, &format!("{name}.img"), size)
    } else {
        raw_file(dir, &format!("{name}.img"), size)
    };
    g.add_file(&format!("{name}-file"), &file, false).unwrap();
    g.add_format(name, fmt, &format!("{name}-file"), false)
        .unwrap();
    g.add_backend(&format!("dev_{name}"), Some(name)).unwrap();
}

/// A raw disk whose file sits under a blkdebug node with the given rules.
fn debug_disk(
    g: &mut Graph,
    dir: &TempDir,
    name: &str,
    size: u64,
    inject: Vec<InjectRule>,
    set_state: Vec<StateRule>,
) {
    let file = raw_file(dir, &format!("{name}.img"), size);
    g.add_file(&format!("{name}-file"), &file, false).unwrap();
    g.add_blkdebug(
        &format!("{name}-dbg"),
        &format!("{name}-file"),
        false,
        inject,
        set_state,
    )
    .unwrap();
    g.add_format(name, "raw", &format!("{name}-dbg"), false)
        .unwrap();
    g.add_backend(&format!("dev_{name}"), Some(name)).unwrap();
}

fn read_error_at(sector: Option<u64>) -> InjectRule {
    InjectRule {
        event: "read_aio".into(),
        state: Some(2),
        iotype: None,
        errno: 5,
        sector,
        once: true,
        immediately: false,
    }
}

fn arm_on_flush() -> Vec<StateRule> {
    vec![StateRule {
        event: "flush_to_disk".into(),
        state: Some(1),
        new_state: 2,
    }]
}

fn write(g: &mut Graph, node: &str, off: u64, len: u64, byte: u8) {
    g.write(node, off, WriteKind::Data, &vec![byte; len as usize], len)
        .unwrap();
}

/// The root node of a device (the filter while a backup runs).
fn root(g: &Graph, dev: &str) -> String {
    g.backend(dev).unwrap().root.clone().unwrap()
}

fn params(id: &str, src: &str, tgt: &str, sync: SyncMode) -> BackupParams {
    BackupParams::new(id, src, tgt, sync, &format!("cbw-{id}"))
}

fn with_bitmap(mut p: BackupParams, name: &str, mode: BitmapMode) -> BackupParams {
    p.bitmap = Some(name.into());
    p.bitmap_mode = Some(mode);
    p
}

/// Events rendered compactly: `status id`, or `EVENT id [offset/len] [error]`.
fn show(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.name {
            "JOB_STATUS_CHANGE" => format!(
                "{} {}",
                e.get_str("status").unwrap(),
                e.get_str("id").unwrap()
            ),
            "BLOCK_JOB_PENDING" => format!("PENDING {}", e.get_str("id").unwrap()),
            "BLOCK_JOB_ERROR" => format!(
                "ERROR {} {} {}",
                e.get_str("device").unwrap(),
                e.get_str("operation").unwrap(),
                e.get_str("action").unwrap()
            ),
            name => {
                let mut s = format!(
                    "{} {} {}/{}",
                    name.trim_start_matches("BLOCK_JOB_"),
                    e.get_str("device").unwrap(),
                    e.get_int("offset").unwrap(),
                    e.get_int("len").unwrap()
                );
                if let Some(err) = e.get_str("error") {
                    s.push_str(&format!(" {err}"));
                }
                s
            }
        })
        .collect()
}

/// What a transaction does with backup actions: drained sections around prepare..clean, jobs
/// created in prepare, started in commit order, drains ended in clean order.
fn transaction(
    g: &mut Graph,
    jobs: Vec<BackupParams>,
    grouped: bool,
    reverse: bool,
) -> Vec<String> {
    let mut ev = Vec::new();
    let txn = grouped.then(|| g.txn_new());
    let mut ids = Vec::new();
    for mut p in jobs {
        ev.extend(g.drained_begin(Some(&p.source)).unwrap());
        p.txn = txn;
        ids.push((p.job_id.clone(), p.source.clone()));
        ev.extend(g.backup_create(p).unwrap());
    }
    if reverse {
        ids.reverse();
    }
    for (id, _) in &ids {
        ev.extend(g.job_start(id).unwrap());
    }
    for (_, src) in &ids {
        ev.extend(g.drained_end(Some(src)).unwrap());
    }
    show(&ev)
}

fn count(g: &Graph, node: &str, name: &str) -> u64 {
    g.bitmap(node, name).unwrap().bits.count()
}

#[test]
fn transition_table_is_qemus() {
    use JobStatus::*;
    let all = [
        Undefined, Created, Running, Paused, Ready, Standby, Waiting, Pending, Aborting, Concluded,
        Null,
    ];
    let allowed: usize = all
        .iter()
        .map(|a| all.iter().filter(|b| a.can_become(**b)).count())
        .sum();
    // 1 + 3 + 4 + 1 + 3 + 1 + 2 + 2 + 2 + 1 + 0 edges in QEMU's table.
    assert_eq!(allowed, 20);
    assert!(Created.can_become(Null));
    assert!(Aborting.can_become(Aborting));
    assert!(!Paused.can_become(Aborting));
    assert!(!Concluded.can_become(Aborting));
    assert!(!Null.can_become(Created));
}

#[test]
fn verb_table_is_qemus() {
    use JobStatus::*;
    assert!(Verb::Cancel.allowed_in(Pending));
    assert!(!Verb::Cancel.allowed_in(Concluded));
    assert!(!Verb::Cancel.allowed_in(Aborting));
    assert!(Verb::Pause.allowed_in(Created));
    assert!(!Verb::Pause.allowed_in(Waiting));
    assert!(Verb::Complete.allowed_in(Standby));
    assert!(!Verb::Complete.allowed_in(Running));
    assert!(Verb::Finalize.allowed_in(Pending));
    assert!(!Verb::Finalize.allowed_in(Paused));
    assert!(Verb::Dismiss.allowed_in(Concluded));
    assert!(!Verb::Dismiss.allowed_in(Pending));
    assert_eq!(Verb::SetSpeed.name(), "set-speed");
}

#[test]
fn strerror_drops_rusts_suffix() {
    assert_eq!(strerror(5), "Input/output error");
    assert_eq!(strerror(28), "No space left on device");
    assert_eq!(strerror(ECANCELED), "Operation canceled");
}

#[test]
fn one_full_backup_in_a_transaction() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "src", "qcow2", MIB);
    disk(&mut g, &dir, "tgt", "qcow2", MIB);
    write(&mut g, "src", 0, 2 * K64, 0x5a);
    let ev = transaction(
        &mut g,
        vec![params("j0", "src", "tgt", SyncMode::Full)],
        false,
        false,
    );
    assert_eq!(ev, ["created j0", "running j0", "paused j0", "running j0"]);
    // The filter replaced the source under the device while the job runs.
    assert_eq!(root(&g, "dev_src"), "cbw-j0");
    let filter = g.node("cbw-j0").unwrap();
    assert_eq!(filter.driver.name(), "copy-before-write");
    let counts: Vec<u64> = filter.bitmaps.iter().map(|b| b.bits.count()).collect();
    assert_eq!(counts, [MIB, 0, MIB]);
    let ev = show(&g.advance(0));
    assert_eq!(
        ev,
        [
            "waiting j0",
            "pending j0",
            "COMPLETED j0 1048576/1048576",
            "concluded j0",
            "null j0"
        ]
    );
    assert!(g.jobs().is_empty());
    assert_eq!(root(&g, "dev_src"), "src");
    assert!(g.node("cbw-j0").is_none());
    assert_eq!(
        g.read("tgt", 0, 2 * K64).unwrap(),
        vec![0x5a; 2 * K64 as usize]
    );
}

#[test]
fn speed_limits_progress_on_the_clock() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "src", "raw", MIB);
    disk(&mut g, &dir, "tgt", "raw", MIB);
    let mut p = params("j0", "src", "tgt", SyncMode::Full);
    p.speed = 10 * K64; // quota per 100 ms slice: one 64 KiB chunk
    p.max_chunk = K64;
    g.backup_create(p).unwrap();
    g.job_start("j0").unwrap();
    g.advance(0);
    assert_eq!(g.job("j0").unwrap().current_progress, K64);
    g.advance(SLICE_NS - 1);
    assert_eq!(g.job("j0").unwrap().current_progress, K64);
    g.advance(1);
    assert_eq!(g.job("j0").unwrap().current_progress, 2 * K64);
    assert!(!g.job("j0").unwrap().busy(g.now_ns()));
    g.job_set_speed("j0", 0).unwrap();
    let ev = show(&g.advance(0));
    assert_eq!(ev.last().unwrap(), "null j0");
}

/// Two sync=bitmap backups, one request per 64k cluster, of fully dirty 7-cluster disks: j0
/// of `d0` onto `t0` copies everything; j1 of `d1` (blkdebug, armed by the flush done here)
/// fails reading its last cluster. Returns the directory (keep it alive), the graph, the
/// disk length and the two jobs' parameters, ready for [`transaction`].
fn sibling_bitmap_backups_one_failing() -> (TempDir, Graph, u64, Vec<BackupParams>) {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    let len = 7 * K64;
    disk(&mut g, &dir, "d0", "raw", len);
    debug_disk(
        &mut g,
        &dir,
        "d1",
        len,
        vec![read_error_at(Some(6 * K64 / 512))],
        arm_on_flush(),
    );
    disk(&mut g, &dir, "t0", "raw", len);
    disk(&mut g, &dir, "t1", "raw", len);
    for d in ["d0", "d1"] {
        g.bitmap_add(d, "bm", Granularity::new(K64).unwrap(), true, false)
            .unwrap();
        write(&mut g, d, 0, len, 1);
    }
    g.flush("d1").unwrap();
    let mk = |id: &str, src: &str, tgt: &str| {
        let mut p = with_bitmap(
            params(id, src, tgt, SyncMode::Bitmap),
            "bm",
            BitmapMode::OnSuccess,
        );
        p.max_chunk = K64;
        p
    };
    let jobs = vec![mk("j0", "d0", "t0"), mk("j1", "d1", "t1")];
    (dir, g, len, jobs)
}

#[test]
fn grouped_failure_cancels_a_sibling_that_copied_everything() {
    // SEMANTICS Appendix A.1 (10.0 commit order: newest job starts first).
    let (_dir, mut g, len, jobs) = sibling_bitmap_backups_one_failing();
    let ev = transaction(&mut g, jobs, true, true);
    assert_eq!(
        ev,
        [
            "created j0",
            "created j1",
            "running j1",
            "paused j1",
            "running j0",
            "paused j0",
            "running j1",
            "running j0"
        ]
    );
    let ev = show(&g.advance(0));
    assert_eq!(
        ev,
        [
            "ERROR j1 read report",
            "aborting j1",
            "aborting j0",
            "COMPLETED j1 393216/458752 Input/output error",
            "concluded j1",
            "null j1",
            "CANCELLED j0 458752/458752",
            "concluded j0",
            "null j0"
        ]
    );
    assert_eq!(count(&g, "d0", "bm"), len);
    assert_eq!(count(&g, "d1", "bm"), len);
    assert!(!g.bitmap("d0", "bm").unwrap().state.busy);
    assert_eq!(g.get("d0").unwrap().bitmaps.len(), 1);
}

#[test]
fn individual_failure_leaves_the_other_job_alone() {
    // SEMANTICS Appendix A.2 (7.2 commit order).
    let (_dir, mut g, len, jobs) = sibling_bitmap_backups_one_failing();
    transaction(&mut g, jobs, false, false);
    let ev = show(&g.advance(0));
    // Both jobs end in the same round: j0 copied everything, j1's read failed. The failure
    // is seen last, so j1 scheduled its exit last and completes first (SEMANTICS A.2).
    assert_eq!(
        ev,
        [
            "ERROR j1 read report",
            "aborting j1",
            "COMPLETED j1 393216/458752 Input/output error",
            "concluded j1",
            "null j1",
            "waiting j0",
            "pending j0",
            "COMPLETED j0 458752/458752",
            "concluded j0",
            "null j0"
        ]
    );
    assert_eq!(count(&g, "d0", "bm"), 0);
    assert_eq!(count(&g, "d1", "bm"), len);
}

#[test]
fn grouped_manual_finalize_finalizes_every_member() {
    // SEMANTICS Appendix A.3.
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    for d in ["d0", "d1", "t0", "t1"] {
        disk(&mut g, &dir, d, "raw", MIB);
    }
    let mk = |id: &str, src: &str, tgt: &str| {
        let mut p = params(id, src, tgt, SyncMode::Full);
        p.auto_finalize = false;
        p.auto_dismiss = false;
        p
    };
    transaction(
        &mut g,
        vec![mk("j0", "d0", "t0"), mk("j1", "d1", "t1")],
        true,
        // Both QEMUs end the drained sections newest first, so j1 runs first and j0, the
        // newest exit, completes first.
        true,
    );
    let ev = show(&g.advance(0));
    assert_eq!(
        ev,
        [
            "waiting j0",
            "waiting j1",
            "pending j1",
            "PENDING j1",
            "pending j0",
            "PENDING j0"
        ]
    );
    match g.job_dismiss("j0") {
        Err(JobError::Verb { status, verb, .. }) => {
            assert_eq!((status, verb), (JobStatus::Pending, "dismiss"))
        }
        other => panic!("{other:?}"),
    }
    let ev = show(&g.job_finalize("j1").unwrap());
    assert_eq!(
        ev,
        [
            "COMPLETED j1 1048576/1048576",
            "concluded j1",
            "COMPLETED j0 1048576/1048576",
            "concluded j0"
        ]
    );
    assert_eq!(show(&g.job_dismiss("j0").unwrap()), ["null j0"]);
    assert_eq!(g.jobs().len(), 1);
}

#[test]
fn rollback_of_a_created_job() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "raw", MIB);
    disk(&mut g, &dir, "t0", "raw", MIB);
    g.bitmap_add("d0", "b1", Granularity::new(K64).unwrap(), true, false)
        .unwrap();
    write(&mut g, "d0", 0, K64, 1);
    let mut ev = g.drained_begin(Some("d0")).unwrap();
    ev.extend(
        g.backup_create(with_bitmap(
            params("jt", "d0", "t0", SyncMode::Bitmap),
            "b1",
            BitmapMode::OnSuccess,
        ))
        .unwrap(),
    );
    assert!(g.bitmap("d0", "b1").unwrap().state.busy);
    ev.extend(g.job_cancel("jt", true).unwrap());
    ev.extend(g.drained_end(Some("d0")).unwrap());
    assert_eq!(
        show(&ev),
        ["created jt", "aborting jt", "concluded jt", "null jt"]
    );
    let bm = g.bitmap("d0", "b1").unwrap();
    assert_eq!((bm.bits.count(), bm.state.busy), (K64, false));
    assert_eq!(g.get("d0").unwrap().bitmaps.len(), 1);
    assert_eq!(root(&g, "dev_d0"), "d0");
}

#[test]
fn discard_of_a_created_job_emits_null_only() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "raw", MIB);
    disk(&mut g, &dir, "t0", "raw", MIB);
    let mut ev = g
        .backup_create(params("j", "d0", "t0", SyncMode::Full))
        .unwrap();
    ev.extend(g.job_discard("j").unwrap());
    assert_eq!(show(&ev), ["created j", "null j"]);
    assert!(g.node("cbw-j").is_none());
}

/// `d0`: 1 MiB of 7s behind blkdebug whose reads all fail once armed (by the flush done
/// here); `t0`: an empty raw target of the same size.
fn source_failing_every_read() -> (TempDir, Graph) {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    debug_disk(
        &mut g,
        &dir,
        "d0",
        MIB,
        vec![read_error_at(None)],
        arm_on_flush(),
    );
    disk(&mut g, &dir, "t0", "raw", MIB);
    write(&mut g, "d0", 0, MIB, 7);
    g.flush("d0").unwrap();
    (dir, g)
}

#[test]
fn stop_policy_pauses_and_resume_retries() {
    // SEMANTICS Appendix A.5.
    let (_dir, mut g) = source_failing_every_read();
    let mut p = params("js", "d0", "t0", SyncMode::Full);
    p.on_source_error = OnError::Stop;
    p.auto_finalize = false;
    g.backup_create(p).unwrap();
    g.job_start("js").unwrap();
    let ev = show(&g.advance(0));
    assert_eq!(ev, ["ERROR js read stop", "paused js"]);
    let j = g.job("js").unwrap();
    assert_eq!((j.io_status, j.user_paused), (IoStatus::Failed, true));
    assert!(matches!(g.job_pause("js"), Err(JobError::AlreadyPaused(_))));
    let mut ev = g.job_resume("js").unwrap();
    ev.extend(g.advance(0));
    assert_eq!(
        show(&ev),
        ["running js", "waiting js", "pending js", "PENDING js"]
    );
    assert_eq!(g.job("js").unwrap().io_status, IoStatus::Ok);
    assert!(matches!(g.job_resume("js"), Err(JobError::NotPaused(_))));
    assert_eq!(g.read("t0", 0, 16).unwrap(), vec![7; 16]);
}

#[test]
fn ignore_policy_retries_the_chunk() {
    let (_dir, mut g) = source_failing_every_read();
    let mut p = params("ji", "d0", "t0", SyncMode::Full);
    p.on_source_error = OnError::Ignore;
    g.backup_create(p).unwrap();
    g.job_start("ji").unwrap();
    let ev = show(&g.run_until_idle(10 * RETRY_NS));
    assert_eq!(ev[0], "ERROR ji read ignore");
    assert_eq!(ev.last().unwrap(), "null ji");
    assert_eq!(g.read("t0", MIB - 16, 16).unwrap(), vec![7; 16]);
}

#[test]
fn user_cancel_of_a_running_job() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "raw", MIB);
    disk(&mut g, &dir, "t0", "raw", MIB);
    let mut p = params("j", "d0", "t0", SyncMode::None);
    p.auto_dismiss = false;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    assert_eq!(g.next_due_ns(), None, "sync=none has no background work");
    let mut ev = g.job_pause("j").unwrap();
    assert!(matches!(
        g.job_finalize("j"),
        Err(JobError::Verb {
            status: JobStatus::Paused,
            ..
        })
    ));
    ev.extend(g.job_cancel("j", true).unwrap());
    ev.extend(g.advance(0));
    assert_eq!(
        show(&ev),
        [
            "paused j",
            "running j",
            "aborting j",
            "CANCELLED j 0/1048576",
            "concluded j"
        ]
    );
    assert_eq!(
        g.job("j").unwrap().error.as_deref(),
        Some("Operation canceled")
    );
    assert!(matches!(
        g.job_cancel("j", false),
        Err(JobError::Verb {
            status: JobStatus::Concluded,
            ..
        })
    ));
}

#[test]
fn drained_sections_pause_the_jobs_they_touch() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    for d in ["d0", "d1", "t0"] {
        disk(&mut g, &dir, d, "raw", MIB);
    }
    let mut p = params("j", "d0", "t0", SyncMode::None);
    p.speed = 1;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    assert!(g.drained_begin(Some("d1")).unwrap().is_empty());
    g.drained_end(Some("d1")).unwrap();
    // The target's file is below a node the job uses.
    let mut ev = g.drained_begin(Some("t0-file")).unwrap();
    ev.extend(g.drained_begin(None).unwrap());
    ev.extend(g.drained_end(Some("t0-file")).unwrap());
    ev.extend(g.drained_end(None).unwrap());
    assert_eq!(show(&ev), ["paused j", "running j"]);
    assert!(g.drained_end(None).is_err());
}

/// One cell of the sync-bitmap table: 4 dirty clusters (the 4th read fails if `fail`), a guest
/// write to another cluster during the job; returns the bitmap's count afterwards.
fn bitmap_table_case(sync: SyncMode, mode: BitmapMode, fail: bool) -> u64 {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    let len = 64 * K64;
    let inject = if fail {
        vec![read_error_at(Some(3 * 4 * K64 / 512))]
    } else {
        vec![]
    };
    debug_disk(&mut g, &dir, "d0", len, inject, arm_on_flush());
    disk(&mut g, &dir, "t0", "raw", len);
    g.bitmap_add("d0", "bm", Granularity::new(K64).unwrap(), true, false)
        .unwrap();
    for k in 0..4 {
        write(&mut g, "d0", k * 4 * K64, K64, 9);
    }
    g.flush("d0").unwrap();
    let mut p = with_bitmap(params("j", "d0", "t0", sync), "bm", mode);
    p.max_chunk = K64;
    // One request at a time (x-perf max-workers 1, as iotest 257): nothing after the failing
    // request is copied.
    p.max_workers = 1;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    // A guest write during the job (after the first step) lands in the successor.
    g.run_jobs(1);
    let r = root(&g, "dev_d0");
    write(&mut g, &r, 40 * K64, 512, 3);
    g.advance(0);
    assert!(g.jobs().is_empty());
    let bm = g.bitmap("d0", "bm").unwrap();
    assert!(!bm.state.busy && !bm.state.frozen);
    assert_eq!(g.get("d0").unwrap().bitmaps.len(), 1);
    bm.bits.count()
}

#[test]
fn sync_bitmap_results_follow_semantics_4_6() {
    use BitmapMode::*;
    use SyncMode::*;
    // (sync, mode, fail) -> count, the extra guest write adding one cluster everywhere.
    let w = K64;
    let cases = [
        (Bitmap, OnSuccess, false, w),
        (Bitmap, OnSuccess, true, 4 * K64 + w),
        (Bitmap, Never, false, 4 * K64 + w),
        (Bitmap, Never, true, 4 * K64 + w),
        (Bitmap, Always, false, w),
        (Bitmap, Always, true, K64 + w),
        (Full, OnSuccess, false, w),
        (Full, OnSuccess, true, 4 * K64 + w),
        (Top, OnSuccess, false, w),
        (Top, OnSuccess, true, 4 * K64 + w),
    ];
    for (sync, mode, fail, want) in cases {
        let got = bitmap_table_case(sync, mode, fail);
        assert_eq!(got, want, "{sync:?} {mode:?} fail={fail}");
    }
    // full/always on failure: everything not yet copied of the whole disk (12 clusters were
    // copied before the failing one, plus the guest write's cluster which was copied already).
    let got = bitmap_table_case(Full, Always, true);
    assert_eq!(got, (64 - 12) * K64);
}

#[test]
fn point_in_time_target_under_random_guest_writes() {
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        let len = 32 * K64;
        let fmt = if seed % 2 == 0 { "qcow2" } else { "raw" };
        disk(&mut g, &dir, "src", fmt, len);
        disk(&mut g, &dir, "tgt", "qcow2", len);
        // Initial contents: some clusters of random data, some never written.
        for _ in 0..12 {
            let off = rng.below(len / 512) * 512;
            let n = (rng.below(3 * K64) + 1).min(len - off);
            let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            g.write("src", off, WriteKind::Data, &data, n).unwrap();
        }
        let snapshot = g.read("src", 0, len).unwrap();
        let sync = [SyncMode::Full, SyncMode::Top, SyncMode::None][seed as usize % 3];
        let mut p = params("j", "src", "tgt", sync);
        p.speed = if seed % 4 == 1 { 20 * K64 } else { 0 };
        p.max_chunk = [0, K64, 3 * K64][seed as usize % 3];
        p.max_workers = [1, 2, 64][seed as usize % 3];
        g.backup_create(p).unwrap();
        g.job_start("j").unwrap();
        let mut written = vec![false; (len / K64) as usize];
        for _ in 0..40 {
            match rng.below(3) {
                0 => {
                    g.run_jobs(rng.below(3) as usize);
                }
                1 => {
                    g.advance(rng.below(SLICE_NS));
                }
                _ => {
                    if g.job("j").is_none() {
                        break;
                    }
                    let off = rng.below(len / 512) * 512;
                    let n = (rng.below(2 * K64) + 1).min(len - off);
                    let r = root(&g, "dev_src");
                    let kind = rng.below(4);
                    if kind == 0 {
                        g.write(&r, off, WriteKind::Zeroes, &[], n).unwrap();
                    } else {
                        let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                        g.write(&r, off, WriteKind::Data, &data, n).unwrap();
                    }
                    for c in off / K64..=(off + n - 1) / K64 {
                        written[c as usize] = true;
                    }
                }
            }
        }
        if sync == SyncMode::None {
            g.job_cancel("j", true).unwrap();
        }
        g.run_until_idle(u64::MAX / 4);
        assert!(g.jobs().is_empty(), "seed {seed}");
        let target = g.read("tgt", 0, len).unwrap();
        for (c, was_written) in written.iter().enumerate() {
            let range = c * K64 as usize..(c + 1) * K64 as usize;
            if sync != SyncMode::None || *was_written {
                assert!(
                    target[range.clone()] == snapshot[range],
                    "seed {seed} {sync:?}: cluster {c} differs"
                );
            }
        }
    }
}

#[test]
fn two_backups_of_one_source_stack_their_filters() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    for d in ["d0", "t0", "t1"] {
        disk(&mut g, &dir, d, "raw", MIB);
    }
    write(&mut g, "d0", 0, MIB, 1);
    for (id, t) in [("a", "t0"), ("b", "t1")] {
        let mut p = params(id, "d0", t, SyncMode::Full);
        p.speed = 1;
        p.max_chunk = K64;
        g.backup_create(p).unwrap();
        g.job_start(id).unwrap();
    }
    // The newer filter sits right above the source, below the older one.
    assert_eq!(root(&g, "dev_d0"), "cbw-a");
    assert_eq!(g.node("cbw-a").unwrap().child("file"), Some("cbw-b"));
    let r = root(&g, "dev_d0");
    write(&mut g, &r, 5 * K64, K64, 2);
    // The older job ends first: the device now reaches the source through the newer filter.
    g.job_cancel("a", true).unwrap();
    g.advance(0);
    assert_eq!(root(&g, "dev_d0"), "cbw-b");
    g.job_set_speed("b", 0).unwrap();
    g.advance(0);
    assert_eq!(root(&g, "dev_d0"), "d0");
    assert_eq!(g.read("t1", 5 * K64, 4).unwrap(), vec![1; 4]);
    assert_eq!(g.read("d0", 5 * K64, 4).unwrap(), vec![2; 4]);
}

#[test]
fn requests_in_flight_complete_after_a_failure() {
    // Four dirty clusters far apart, the second read fails: with 64 workers the other two
    // requests in flight still copy their clusters; with one worker nothing after the failure.
    for (workers, copied) in [(64, 3 * K64), (1, K64)] {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        let inject = vec![read_error_at(Some(16 * K64 / 512))];
        debug_disk(&mut g, &dir, "d0", 64 * K64, inject, arm_on_flush());
        disk(&mut g, &dir, "t0", "raw", 64 * K64);
        g.bitmap_add("d0", "bm", Granularity::new(K64).unwrap(), true, false)
            .unwrap();
        for k in 0..4 {
            write(&mut g, "d0", k * 16 * K64, K64, 9);
        }
        g.flush("d0").unwrap();
        let mut p = with_bitmap(
            params("j", "d0", "t0", SyncMode::Bitmap),
            "bm",
            BitmapMode::Always,
        );
        p.max_workers = workers;
        g.backup_create(p).unwrap();
        g.job_start("j").unwrap();
        let ev = show(&g.advance(0));
        assert_eq!(
            ev[1..3],
            [
                "aborting j".to_string(),
                format!("COMPLETED j {copied}/262144 Input/output error")
            ],
            "{workers} workers"
        );
        assert_eq!(count(&g, "d0", "bm"), 4 * K64 - copied, "{workers} workers");
    }
}

#[test]
fn qemu_10_graph_changes_drain_every_running_job() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    g.set_graph_drains(GraphDrains {
        create_before: 4,
        create_after: 1,
        clean: 3,
        free: 1,
        all_through_nodes: true,
    });
    for d in ["d0", "d1", "t0", "t1"] {
        disk(&mut g, &dir, d, "raw", MIB);
    }
    let mut p = params("j0", "d0", "t0", SyncMode::Full);
    p.speed = 1;
    p.max_chunk = K64;
    g.backup_create(p).unwrap();
    g.job_start("j0").unwrap();
    let mut p = params("j1", "d1", "t1", SyncMode::Full);
    p.speed = 1;
    p.max_chunk = K64;
    let ev = show(&g.backup_create(p).unwrap());
    let pair = ["paused j0", "running j0"];
    let mut want: Vec<&str> = pair.repeat(4);
    want.push("created j1");
    want.extend(pair);
    assert_eq!(ev, want);
    g.job_start("j1").unwrap();
    g.advance(0);
    let mut ev = g.job_cancel("j1", true).unwrap();
    ev.extend(g.advance(0));
    let mut want: Vec<&str> = vec!["aborting j1"];
    want.extend(pair.repeat(3));
    want.extend(["CANCELLED j1 65536/1048576", "concluded j1", "null j1"]);
    want.extend(pair);
    assert_eq!(show(&ev), want);
}

#[test]
fn random_verb_sequences_keep_the_state_machine_valid() {
    // Every status change passes the transition table (debug-asserted in `transition`); every
    // refused verb is refused by the verb table or a pause rule; jobs always end up gone or
    // concluded, with their bitmaps no longer busy and the filters out of the graph.
    for seed in 1..=100u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        if seed % 2 == 0 {
            g.set_graph_drains(GraphDrains {
                create_before: 4,
                create_after: 1,
                clean: 3,
                free: 1,
                all_through_nodes: true,
            });
        }
        let len = 16 * K64;
        for d in ["d0", "d1", "d2"] {
            debug_disk(
                &mut g,
                &dir,
                d,
                len,
                vec![read_error_at(Some(rng.below(16) * K64 / 512))],
                arm_on_flush(),
            );
            g.bitmap_add(d, "bm", Granularity::new(K64).unwrap(), true, false)
                .unwrap();
            write(&mut g, d, 0, len / 2, 5);
        }
        for t in ["t0", "t1", "t2"] {
            disk(&mut g, &dir, t, "raw", len);
        }
        let txn = g.txn_new();
        let ids = ["j0", "j1", "j2"];
        let policies = [OnError::Report, OnError::Stop, OnError::Ignore];
        for (k, id) in ids.iter().enumerate() {
            let d = ["d0", "d1", "d2"][k];
            let mut p = params(id, d, ["t0", "t1", "t2"][k], SyncMode::Bitmap);
            p = with_bitmap(
                p,
                "bm",
                [BitmapMode::OnSuccess, BitmapMode::Never, BitmapMode::Always][k],
            );
            p.speed = [0, 1, 10 * K64][rng.below(3) as usize];
            p.max_chunk = K64;
            p.max_workers = [1, 64][rng.below(2) as usize];
            p.auto_finalize = rng.below(2) == 0;
            p.auto_dismiss = rng.below(2) == 0;
            p.on_source_error = policies[rng.below(3) as usize];
            p.txn = (seed % 3 != 0).then_some(txn);
            g.backup_create(p).unwrap();
        }
        let mut open_drains: Vec<Option<&str>> = Vec::new();
        for _ in 0..60 {
            let id = ids[rng.below(3) as usize];
            let _ = match rng.below(13) {
                0 => g.job_start(id),
                1 => g.job_pause(id),
                2 => g.job_resume(id),
                3 => g.job_cancel(id, rng.below(2) == 0),
                4 => g.job_finalize(id),
                5 => g.job_dismiss(id),
                6 => g.job_set_speed(id, [0, 1, 1 << 20][rng.below(3) as usize]),
                7 => g.job_complete(id),
                8 => {
                    let node = [None, Some("d0"), Some("t1")][rng.below(3) as usize];
                    open_drains.push(node);
                    g.drained_begin(node)
                }
                9 => match open_drains.pop() {
                    Some(node) => g.drained_end(node),
                    None => Ok(Vec::new()),
                },
                10 => {
                    let d = ["dev_d0", "dev_d1", "dev_d2"][rng.below(3) as usize];
                    let r = root(&g, d);
                    let _ = g.write(
                        &r,
                        rng.below(len / 512) * 512,
                        WriteKind::Data,
                        &[7; 512],
                        512,
                    );
                    let _ = g.flush(&r);
                    Ok(Vec::new())
                }
                11 => Ok(g.run_jobs(rng.below(4) as usize)),
                _ => Ok(g.advance(rng.below(3 * SLICE_NS))),
            };
        }
        // Wind down: end drains, start, resume and cancel everything, finalize, dismiss.
        while let Some(node) = open_drains.pop() {
            g.drained_end(node).unwrap();
        }
        for id in ids {
            let _ = g.job_start(id);
            let _ = g.job_resume(id);
            let _ = g.job_cancel(id, true);
        }
        g.run_until_idle(u64::MAX / 4);
        for id in ids {
            let _ = g.job_finalize(id);
        }
        g.run_until_idle(u64::MAX / 4);
        for id in ids {
            let _ = g.job_dismiss(id);
        }
        assert!(g.jobs().is_empty(), "seed {seed}: {:?}", g.jobs());
        for d in ["d0", "d1", "d2"] {
            let n = g.get(d).unwrap();
            assert_eq!(n.bitmaps.len(), 1, "seed {seed}: {d} keeps a job bitmap");
            assert!(!n.bitmaps[0].state.busy && !n.bitmaps[0].state.frozen);
            assert_eq!(root(&g, &format!("dev_{d}")), d, "seed {seed}: filter left");
        }
    }
}

#[test]
fn min_cluster_size_raises_the_job_cluster() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "qcow2", MIB);
    disk(&mut g, &dir, "t0", "qcow2", MIB);
    write(&mut g, "d0", 0, 2 * K64, 1);
    let mut p = params("j", "d0", "t0", SyncMode::Full);
    p.min_cluster_size = 2 * K64;
    p.speed = 1;
    g.backup_create(p).unwrap();
    assert_eq!(g.job("j").unwrap().backup.cluster_size, 2 * K64);
    let grans: Vec<u64> = g
        .node("cbw-j")
        .unwrap()
        .bitmaps
        .iter()
        .map(|b| b.bits.granularity().bytes())
        .collect();
    assert_eq!(grans, [2 * K64; 3]);
    g.job_start("j").unwrap();
    g.advance(0);
    // A 64 KiB guest write saves the whole 128 KiB job cluster first.
    let r = root(&g, "dev_d0");
    write(&mut g, &r, 9 * K64, K64, 2);
    let done = &g.node("cbw-j").unwrap().bitmaps[1];
    assert_eq!(done.bits.count(), 2 * K64);
    assert_eq!(g.job("j").unwrap().current_progress, 4 * K64);
    let mut p = params("k", "d0", "t0", SyncMode::Full);
    p.min_cluster_size = 3 * K64;
    assert!(matches!(g.backup_create(p), Err(JobError::Invalid(_))));
}

#[test]
fn copy_before_write_marks_done_for_clusters_it_did_not_copy() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "qcow2", MIB);
    disk(&mut g, &dir, "t0", "qcow2", MIB);
    write(&mut g, "d0", 0, K64, 1);
    write(&mut g, "d0", 8 * K64, K64, 1);
    let mut p = params("j", "d0", "t0", SyncMode::Top);
    p.speed = 1;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    g.advance(0);
    // Cluster 4 is unallocated: sync=top has nothing to copy there, yet the write is done.
    let r = root(&g, "dev_d0");
    write(&mut g, &r, 4 * K64 + 512, 4096, 2);

    let done = &g.node("cbw-j").unwrap().bitmaps[1];
    assert_eq!(done.bits.count(), K64);
    assert!(done.bits.get(4 * K64));
    assert_eq!(g.job("j").unwrap().current_progress, K64);
}

#[test]
fn copy_bitmap_on_source_is_the_source_s_newest_bitmap_until_clean() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "qcow2", MIB);
    disk(&mut g, &dir, "t0", "qcow2", MIB);
    write(&mut g, "d0", 0, 2 * K64, 1);
    g.bitmap_add("d0", "old", Granularity::new(K64).unwrap(), true, false)
        .unwrap();
    let mut p = params("j", "d0", "t0", SyncMode::Full);
    p.speed = 1;
    p.copy_bitmap_on_source = true;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    g.advance(0);
    g.bitmap_add("d0", "new", Granularity::new(K64).unwrap(), true, false)
        .unwrap();

    let names: Vec<Option<&str>> = g
        .get("d0")
        .unwrap()
        .bitmaps
        .iter()
        .map(|b| b.name.as_deref())
        .collect();
    assert_eq!(names, [Some("new"), None, Some("old")]);
    // The first request copied the two written clusters.
    assert_eq!(g.get("d0").unwrap().bitmaps[1].bits.count(), MIB - 2 * K64);
    assert_eq!(g.node("cbw-j").unwrap().bitmaps.len(), 2);
    g.job_cancel("j", false).unwrap();
    g.advance(0);
    let names: Vec<Option<&str>> = g
        .get("d0")
        .unwrap()
        .bitmaps
        .iter()
        .map(|b| b.name.as_deref())
        .collect();
    assert_eq!(names, [Some("new"), Some("old")]);
}

#[test]
fn start_and_discard_refuse_a_job_that_already_started() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "qcow2", MIB);
    disk(&mut g, &dir, "t0", "qcow2", MIB);
    let mut p = params("j", "d0", "t0", SyncMode::Full);
    p.speed = 1;
    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();

    let start = g.job_start("j").unwrap_err();
    let discard = g.job_discard("j").unwrap_err();

    assert!(matches!(
        start,
        JobError::Verb {
            verb: "start",
            status: JobStatus::Running,
            ..
        }
    ));
    assert!(matches!(
        discard,
        JobError::Verb {
            verb: "discard",
            status: JobStatus::Running,
            ..
        }
    ));
    assert!(matches!(g.job_discard("nope"), Err(JobError::NotFound(_))));
}

/// Two held backups of `d0` (`j1` then `j2`, whose filter goes below `j1`'s), running.
fn two_backups_of_one_source(g: &mut Graph, dir: &TempDir, all_through_nodes: bool) {
    g.set_graph_drains(GraphDrains {
        all_through_nodes,
        ..GraphDrains::default()
    });
    for d in ["t1", "t2", "d0"] {
        disk(g, dir, d, "raw", MIB);
    }
    write(g, "d0", 0, MIB, 1);
    for (id, t) in [("j1", "t1"), ("j2", "t2")] {
        let mut p = params(id, "d0", t, SyncMode::Full);
        p.speed = 1;
        p.max_chunk = K64;
        g.backup_create(p).unwrap();
        g.job_start(id).unwrap();
        g.advance(0);
    }
}

#[test]
fn drained_source_pauses_and_resumes_the_newest_backup_first() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    two_backups_of_one_source(&mut g, &dir, false);

    let paused = show(&g.drained_begin(Some("d0")).unwrap());
    let resumed = show(&g.drained_end(Some("d0")).unwrap());

    assert_eq!(paused, ["paused j2", "paused j1"]);
    assert_eq!(resumed, ["running j2", "running j1"]);
}

#[test]
fn draining_everything_resumes_by_version() {
    for (through_nodes, resumed_first) in [(false, "running j1"), (true, "running j2")] {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        two_backups_of_one_source(&mut g, &dir, through_nodes);

        let paused = show(&g.drained_begin(None).unwrap());
        let resumed = show(&g.drained_end(None).unwrap());

        // Paused by the oldest node each uses (the targets, opened first) in both versions;
        // 10.0 resumes j2 first: j1's filter is quiesced until j2's, below it, is not.
        assert_eq!(paused, ["paused j1", "paused j2"]);
        assert_eq!(resumed[0], resumed_first);
        assert_eq!(resumed.len(), 2);
    }
}

#[test]
fn discard_source_discards_each_copied_range_on_the_source() {
    let dir = TempDir::new().unwrap();
    let mut g = Graph::new();
    disk(&mut g, &dir, "d0", "qcow2", MIB);
    disk(&mut g, &dir, "t0", "qcow2", MIB);
    write(&mut g, "d0", 0, 2 * K64, 7);
    g.bitmap_add("d0", "b", Granularity::new(K64).unwrap(), true, false)
        .unwrap();
    let mut p = params("j", "d0", "t0", SyncMode::Full);
    p.discard_source = true;

    g.backup_create(p).unwrap();
    g.job_start("j").unwrap();
    g.advance(0);

    assert!(g.jobs().is_empty());
    let source = g.read("d0", 0, 2 * K64).unwrap();
    assert!(
        source.iter().all(|b| *b == 0),
        "the source was not discarded"
    );
    let target = g.read("t0", 0, 2 * K64).unwrap();
    assert!(target.iter().all(|b| *b == 7), "the target lost the data");
    // Every range the job copied was discarded and recorded, the unallocated ones too.
    assert_eq!(g.bitmap("d0", "b").unwrap().bits.count(), MIB);
}

#[test]
fn a_job_whose_filter_an_overlay_displaced_fails_at_its_end_where_asked() {
    for fails in [false, true] {
        let dir = TempDir::new().unwrap();
        let mut g = Graph::new();
        disk(&mut g, &dir, "src", "qcow2", MIB);
        disk(&mut g, &dir, "tgt", "raw", MIB);
        disk(&mut g, &dir, "ov", "qcow2", MIB);
        write(&mut g, "src", 0, K64, 0x5a);
        let mut p = params("j0", "src", "tgt", SyncMode::Full);
        p.displaced_filter_fails = fails;
        transaction(&mut g, vec![p], false, false);
        assert_eq!(g.job_filter_displaced("j0"), None);
        // An external snapshot of the source: the overlay goes under the job's filter.
        g.append_overlay("src", "ov").unwrap();
        assert_eq!(g.job_filter_displaced("j0").as_deref(), Some("ov"));
        let ev = show(&g.advance(0));
        let end = ev.iter().find(|e| e.starts_with("COMPLETED")).unwrap();
        if fails {
            assert!(
                end.starts_with("COMPLETED j0 1048576/1048576 QEMU aborts when job 'j0' drops"),
                "{end}"
            );
            assert!(end.ends_with("put 'ov' above its source 'src'"), "{end}");
            assert!(ev.contains(&"aborting j0".to_string()), "{ev:?}");
        } else {
            assert_eq!(end, "COMPLETED j0 1048576/1048576");
        }
        assert!(g.jobs().is_empty());
        assert_eq!(g.job_filter_displaced("j0"), None);
    }
}
