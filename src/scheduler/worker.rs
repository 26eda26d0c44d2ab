//! The per-database scheduler: a dynamic background worker started by the launcher with
//! the database OID as its argument.
//!
//! Loop: reap finished runners → queue runs due now or within `START_AHEAD` (`pending`
//! rows; a due slot of a job whose previous run is still going becomes a `skipped` row)
//! and retries (moved into the job's window) → start a runner for each pending run while
//! fewer than perf.max_job_workers run (a runner started early waits for its due time) →
//! sleep on the latch until `START_AHEAD` before the next due time (at most
//! perf.worker_naptime). Once a minute (and after a reload): prune history and keep the
//! built-in partition maintenance job in line with perf.partition_interval. perf.schedule()/perf.run_job() and
//! runner exits (bgw_notify_pid) set the latch. SIGHUP reloads the configuration; SIGTERM
//! (`die`) and postmaster death end the process at the next interrupt check.
//!
//! Each step runs in its own transaction; an ERROR in one is caught, the transaction
//! aborted, and the loop goes on (it never kills the scheduler).

use std::collections::HashMap;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder};
use pgrx::prelude::*;

use super::exec::sys;
use super::retry::RetryPolicy;
use super::{gucs, latest_due, next_slot, retry_in_window, shared, Schedule, Window};

/// bgw_type of the per-database schedulers (pg_stat_activity.backend_type).
pub const SCHEDULER_TYPE: &str = "pg_perf scheduler";
/// bgw_type of job runners.
pub const RUNNER_TYPE: &str = "pg_perf job runner";

/// A dynamic background worker we started, with its handle freed when dropped (pgrx's
/// handle is never freed: a scheduler starting a runner a second would leak).
pub(super) struct Worker(*mut pg_sys::BackgroundWorkerHandle);

impl Worker {
    /// Registers `b` (its bgw_notify_pid should be this process, to be woken at its exit);
    /// None when no worker slot is free (max_worker_processes).
    pub(super) fn start(b: BackgroundWorkerBuilder) -> Option<Worker> {
        let mut bgw: pg_sys::BackgroundWorker = (&b).into();
        let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
        // SAFETY: registration with a filled struct; the handle is palloc'd in
        // TopMemoryContext so it outlives transactions, and freed in Drop.
        let ok = unsafe {
            let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            let ok = pg_sys::RegisterDynamicBackgroundWorker(&mut bgw, &mut handle);
            pg_sys::MemoryContextSwitchTo(old);
            ok
        };
        if ok && !handle.is_null() {
            Some(Worker(handle))
        } else {
            None
        }
    }

    /// True once the worker has exited (or the postmaster died).
    pub(super) fn stopped(&self) -> bool {
        let mut pid: pg_sys::pid_t = 0;
        // SAFETY: a live handle from RegisterDynamicBackgroundWorker.
        let st = unsafe { pg_sys::GetBackgroundWorkerPid(self.0, &mut pid) };
        st == pg_sys::BgwHandleStatus::BGWH_STOPPED
            || st == pg_sys::BgwHandleStatus::BGWH_POSTMASTER_DIED
    }

    /// Asks the postmaster to stop the worker (SIGTERM).
    pub(super) fn terminate(&self) {
        // SAFETY: a live handle.
        unsafe { pg_sys::TerminateBackgroundWorker(self.0) };
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: allocated by RegisterDynamicBackgroundWorker, freed once.
            unsafe { pg_sys::pfree(self.0.cast()) };
        }
    }
}

/// SIGTERM ends the process through PostgreSQL's own `die` (FATAL at the next interrupt
/// check, which also cancels a running statement); SIGHUP sets ConfigReloadPending.
pub(super) fn setup_signals() {
    // SAFETY: installing PostgreSQL's own handlers, then unblocking signals, as any
    // background worker does at start.
    unsafe {
        sys::pqsignal(pg_sys::SIGTERM as i32, sys::die);
        sys::pqsignal(pg_sys::SIGHUP as i32, sys::SignalHandlerForConfigReload);
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

/// Reloads the configuration when SIGHUP asked for it; true when it did.
pub(super) fn reload_config_if_asked() -> bool {
    // SAFETY: the flag is set by the signal handler; ProcessConfigFile is what every
    // auxiliary process calls in its main loop.
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            return true;
        }
    }
    false
}

/// Sleeps until the latch is set or `ms` pass; exits with the postmaster.
pub(super) fn sleep(ms: i64) {
    let ms = ms.clamp(0, i64::from(i32::MAX)) as std::ffi::c_long;
    // SAFETY: the standard latch wait of a background worker.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Runs `f` in a transaction; an ERROR is caught, logged as a WARNING with `what`, and the
/// transaction aborted. Returns None on ERROR.
pub(super) fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    let f = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || Some(BackgroundWorker::transaction(f)))
        .catch_others(|e| {
            // SAFETY: leaving the failed transaction before anything else runs.
            unsafe { pg_sys::AbortCurrentTransaction() };
            let msg = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r)
                | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            };
            pgrx::warning!("pg_perf scheduler: {what} failed: {msg}");
            None
        })
        .execute()
}

fn from_unix_us(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One enabled job as the scheduler needs it.
struct JobState {
    jobid: i64,
    schedule: String,
    timezone: String,
    retries: i32,
    backoff_us: i64,
    window: Option<Window>,
    last_slot_us: i64,
    anchor_us: i64,
    active: bool,
    last_runid: Option<i64>,
    last_failed: bool,
    last_attempt: i32,
    last_finished_us: Option<i64>,
}

const JOBS_SQL: &str = "\
SELECT j.jobid, j.schedule, j.timezone, j.retries,
       (extract(epoch FROM j.backoff) * 1000000)::bigint AS backoff_us,
       (extract(epoch FROM j.window_start) * 1000000)::bigint AS ws,
       (extract(epoch FROM j.window_end) * 1000000)::bigint AS we,
       (extract(epoch FROM greatest(j.schedule_since,
            (SELECT max(r.scheduled_for) FROM perf.job_runs r
              WHERE r.jobid = j.jobid AND r.trigger = 'schedule'))) * 1000000)::bigint AS last_slot,
       (extract(epoch FROM j.schedule_since) * 1000000)::bigint AS anchor,
       EXISTS (SELECT 1 FROM perf.job_runs r
                WHERE r.jobid = j.jobid AND r.status IN ('pending', 'running')) AS active,
       lf.runid, lf.status = 'failed' AS failed, lf.attempt,
       (extract(epoch FROM lf.finished_at) * 1000000)::bigint AS finished
  FROM perf.jobs j
  LEFT JOIN LATERAL (SELECT r.runid, r.status, r.attempt, r.finished_at FROM perf.job_runs r
                      WHERE r.jobid = j.jobid AND r.status IN ('succeeded', 'failed')
                      ORDER BY r.runid DESC LIMIT 1) lf ON true
 WHERE j.enabled";

fn load_jobs() -> Vec<JobState> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        let table = client.select(JOBS_SQL, None, &[])?;
        for row in table {
            let ws = row.get::<i64>(6)?;
            let we = row.get::<i64>(7)?;
            out.push(JobState {
                jobid: row.get::<i64>(1)?.unwrap_or(0),
                schedule: row.get::<String>(2)?.unwrap_or_default(),
                timezone: row.get::<String>(3)?.unwrap_or_default(),
                retries: row.get::<i32>(4)?.unwrap_or(0),
                backoff_us: row.get::<i64>(5)?.unwrap_or(30_000_000),
                window: match (ws, we) {
                    (Some(s), Some(e)) => Some(Window {
                        start_us: s,
                        end_us: e,
                    }),
                    _ => None,
                },
                last_slot_us: row.get::<i64>(8)?.unwrap_or(0),
                anchor_us: row.get::<i64>(9)?.unwrap_or(0),
                active: row.get::<bool>(10)?.unwrap_or(false),
                last_runid: row.get::<i64>(11)?,
                last_failed: row.get::<bool>(12)?.unwrap_or(false),
                last_attempt: row.get::<i32>(13)?.unwrap_or(1),
                last_finished_us: row.get::<i64>(14)?,
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_default()
}

/// How long before a run is due its runner is started: the runner connects, claims the
/// run and loads the caches its command needs, then waits on its latch until the due
/// time, so process start, connection, the claim's WAL flush and cold caches (tens of ms on
/// a busy machine) are not part of the start latency. A run's `scheduled_for` is its slot
/// and its `started_at` when its command started (recorded when it ends), so both stay what
/// they say.
pub(super) const START_AHEAD: SignedDuration = SignedDuration::from_millis(250);

/// A number in [0, 1) fixed per run, for retry jitter (the same on every loop).
fn jitter_of(runid: i64) -> f64 {
    let mut x = runid as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn insert_run(
    jobid: i64,
    trigger: &str,
    attempt: i32,
    status: &str,
    slot: Timestamp,
    error: Option<&str>,
) {
    let slot_us = slot.as_microsecond();
    let _ = Spi::run_with_args(
        "INSERT INTO perf.job_runs (jobid, trigger, attempt, status, scheduled_for, started_at, \
                                    finished_at, error) \
         VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000000), \
                 CASE WHEN $4 = 'skipped' THEN clock_timestamp() END, \
                 CASE WHEN $4 = 'skipped' THEN clock_timestamp() END, $6)",
        &[
            jobid.into(),
            trigger.into(),
            attempt.into(),
            status.into(),
            slot_us.into(),
            error.into(),
        ],
    );
}

/// Queues what is due now or within [`START_AHEAD`] (so its runner can start early);
/// returns the next time the scheduler must look again.
fn queue_due(now: Timestamp) -> Option<Timestamp> {
    let horizon = now.checked_add(START_AHEAD).unwrap_or(now);
    let mut next: Option<Timestamp> = None;
    let mut consider = |t: Timestamp| {
        next = Some(next.map_or(t, |n| n.min(t)));
    };
    for job in load_jobs() {
        let Ok(sched) = Schedule::parse(&job.schedule) else {
            continue;
        };
        let Ok(tz) = TimeZone::get(&job.timezone) else {
            continue;
        };
        let last = from_unix_us(job.last_slot_us);
        let anchor = from_unix_us(job.anchor_us);
        let mut active = job.active;
        let mut after = last;
        if let Some(due) = latest_due(&sched, last, anchor, &tz, job.window, horizon) {
            if active && due > now {
                // The previous run may still end before this slot: look again at the
                // slot (or when that runner exits, which sets our latch).
                consider(due);
                after = due;
            } else {
                if active {
                    insert_run(
                        job.jobid,
                        "schedule",
                        1,
                        "skipped",
                        due,
                        Some("previous run still going"),
                    );
                } else {
                    insert_run(job.jobid, "schedule", 1, "pending", due, None);
                    active = true;
                }
                after = due;
            }
        }
        if let Some(t) = next_slot(&sched, after, anchor, &tz, job.window) {
            consider(t.checked_sub(START_AHEAD).unwrap_or(t));
        }
        if !active && job.last_failed && job.retries > 0 {
            if let (Some(runid), Some(fin)) = (job.last_runid, job.last_finished_us) {
                let base = SignedDuration::from_micros(job.backoff_us.max(1_000_000));
                let policy = RetryPolicy {
                    max_retries: job.retries as u32,
                    base,
                    cap: base.checked_mul(100).unwrap_or(base),
                    jitter: 0.2,
                };
                let attempt = job.last_attempt.max(1) as u32;
                let retry = policy
                    .next_retry(from_unix_us(fin), attempt, jitter_of(runid))
                    .and_then(|at| retry_in_window(at, job.window, &tz));
                if let Some(at) = retry {
                    if at <= horizon {
                        insert_run(
                            job.jobid,
                            "retry",
                            job.last_attempt + 1,
                            "pending",
                            at,
                            None,
                        );
                    } else {
                        consider(at.checked_sub(START_AHEAD).unwrap_or(at));
                    }
                }
            }
        }
    }
    next
}

/// Pending runs, oldest first, with the role their runner connects as: the job's owner
/// when it may open a session now (LOGIN, under its connection limit), else 0 (the
/// bootstrap superuser; the command still runs as the owner, only session_user differs).
fn pending_runs() -> Vec<(i64, u32)> {
    Spi::connect(|client| {
        let t = client.select(
            "SELECT r.runid, \
                    CASE WHEN o.rolcanlogin AND (o.rolconnlimit < 0 OR \
                              (SELECT count(*) FROM pg_catalog.pg_stat_activity a \
                                WHERE a.usesysid = o.oid) < o.rolconnlimit) \
                         THEN o.oid ELSE 0 END::bigint \
               FROM perf.job_runs r JOIN perf.jobs j ON j.jobid = r.jobid \
               LEFT JOIN pg_catalog.pg_roles o ON o.oid = j.owner \
              WHERE r.status = 'pending' ORDER BY r.runid",
            None,
            &[],
        )?;
        let mut v = Vec::new();
        for row in t {
            if let Some(id) = row.get::<i64>(1)? {
                let login = row.get::<i64>(2)?.unwrap_or(0);
                v.push((id, u32::try_from(login).unwrap_or(0)));
            }
        }
        Ok::<_, pgrx::spi::Error>(v)
    })
    .unwrap_or_default()
}

/// Runs marked `running` whose runner is gone (a crash, a restart) fail with `why`; with
/// Some(runid), only that run (also when still `pending`: its runner died before starting).
fn fail_orphans(runid: Option<i64>, why: &str) {
    let _ = Spi::run_with_args(
        "UPDATE perf.job_runs r SET status = 'failed', finished_at = clock_timestamp(), \
                sqlstate = '57P01', error = $2 \
          WHERE ($1::bigint IS NULL OR r.runid = $1) \
            AND (r.status = 'running' OR ($1::bigint IS NOT NULL AND r.status = 'pending')) \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
                             WHERE a.pid = r.pid AND a.backend_type = 'pg_perf job runner')",
        &[runid.into(), why.into()],
    );
}

fn prune_history() {
    let days = gucs::job_history_days();
    let max_rows = gucs::job_history_max_rows();
    let _ = Spi::run_with_args(
        "DELETE FROM perf.job_runs r \
          WHERE r.status IN ('succeeded', 'failed', 'skipped') \
            AND ((($1 > 0) AND r.finished_at < now() - make_interval(days => $1)) \
                 OR ($2 > 0 AND r.runid <= (SELECT f.runid FROM perf.job_runs f \
                                             WHERE f.status IN ('succeeded', 'failed', 'skipped') \
                                             ORDER BY f.runid DESC OFFSET $2 LIMIT 1))) \
            AND r.runid NOT IN (SELECT max(k.runid) FROM perf.job_runs k GROUP BY k.jobid \
                                UNION ALL \
                                SELECT max(k.runid) FROM perf.job_runs k \
                                 WHERE k.trigger = 'schedule' GROUP BY k.jobid)",
        &[days.into(), max_rows.into()],
    );
}

/// Ages out maintenance records and statement snapshots (perf.job_history_days).
fn prune_extras() {
    let days = gucs::job_history_days();
    if days > 0 {
        let _ = Spi::run_with_args(
            "DELETE FROM perf.maintenance_log \
              WHERE runid IS NULL AND at < now() - make_interval(days => $1)",
            &[days.into()],
        );
        let _ = Spi::run_with_args(
            "DELETE FROM perf.statement_snapshots WHERE taken_at < now() - make_interval(days => $1)",
            &[days.into()],
        );
    }
}

/// The built-in job that `perf.partition_interval` keeps: this name and kind, owned by the
/// bootstrap superuser, with the kind's name as its command. A job of the same name that
/// a user made is left alone (it replaces the built-in one).
const BUILTIN_PARTITION_JOB: &str =
    "name = 'partition_maintenance' AND kind = 'partition_maintenance' \
     AND owner = 10 AND command = 'partition_maintenance'";

/// Creates, reschedules or removes the built-in partition maintenance job to match
/// `perf.partition_interval`: it exists while the setting is on and the database has
/// partition sets (it is created when the first set exists).
fn sync_partition_job() {
    match gucs::partition_interval_secs() {
        Some(secs) => {
            let schedule = format!("{secs} seconds");
            let _ = Spi::run_with_args(
                "INSERT INTO perf.jobs (name, schedule, command, kind, timezone, owner) \
                 SELECT 'partition_maintenance', $1, 'partition_maintenance', \
                        'partition_maintenance', 'UTC', 10 \
                  WHERE EXISTS (SELECT 1 FROM perf.partition_config) \
                 ON CONFLICT (name) DO NOTHING",
                &[schedule.as_str().into()],
            );
            let _ = Spi::run_with_args(
                &format!(
                    "UPDATE perf.jobs SET schedule = $1, schedule_since = now() \
                      WHERE {BUILTIN_PARTITION_JOB} AND schedule <> $1"
                ),
                &[schedule.as_str().into()],
            );
        }
        None => {
            let _ = Spi::run(&format!(
                "DELETE FROM perf.jobs WHERE {BUILTIN_PARTITION_JOB}"
            ));
        }
    }
}

fn extension_installed() -> bool {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_perf') \
            AND to_regclass('perf.job_runs') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn start_runner(dboid: pg_sys::Oid, runid: i64, login: u32) -> Option<Worker> {
    // SAFETY: plain read of this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    Worker::start(
        BackgroundWorkerBuilder::new(RUNNER_TYPE)
            .set_type(RUNNER_TYPE)
            .set_library("pg_perf")
            .set_function("pg_perf_runner_main")
            .enable_spi_access()
            .set_restart_time(None)
            .set_argument(Some(pg_sys::Datum::from(u32::from(dboid))))
            .set_extra(&format!("{runid}:{login}"))
            .set_notify_pid(me),
    )
}

#[pg_guard]
unsafe extern "C-unwind" fn clear_slot(_code: i32, arg: pg_sys::Datum) {
    shared::set_scheduler_pid(pg_sys::Oid::from(arg.value() as u32), 0);
    shared::set_runners(pg_sys::Oid::from(arg.value() as u32), 0);
}

/// Entry point of a per-database scheduler (argument: the database OID).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_perf_scheduler_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    setup_signals();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // SAFETY: registering a callback that only touches our shared slot.
    unsafe {
        shared::set_scheduler_pid(dboid, pg_sys::MyProcPid);
        pg_sys::before_shmem_exit(Some(clear_slot), arg);
    }
    if !guarded("checking for pg_perf", extension_installed).unwrap_or(false) {
        // Not installed here: exit for good; CREATE EXTENSION asks the launcher again.
        shared::set_state(dboid, shared::SlotState::Absent);
        return;
    }
    guarded("marking interrupted runs", || {
        fail_orphans(None, "server restarted")
    });
    let mut runners: HashMap<i64, Worker> = HashMap::new();
    let mut last_prune: Option<Timestamp> = None;
    loop {
        pgrx::check_for_interrupts!();
        if reload_config_if_asked() {
            // Settings such as perf.partition_interval apply now, not at the next prune.
            last_prune = None;
        }
        if !gucs::worker_enabled() {
            return;
        }
        // Reap runners that ended.
        let ended: Vec<i64> = runners
            .iter()
            .filter(|(_, h)| h.stopped())
            .map(|(id, _)| *id)
            .collect();
        for id in &ended {
            runners.remove(id);
            guarded("recording a runner's exit", || {
                fail_orphans(Some(*id), "job runner exited before finishing the run")
            });
        }
        shared::set_runners(dboid, runners.len() as i32);

        let now = Timestamp::now();
        // Housekeeping at most once a minute (or per naptime, when shorter).
        let every = SignedDuration::from_millis(gucs::naptime_ms().min(60_000));
        let housekeeping = last_prune.is_none_or(|t| now.duration_since(t) >= every);
        if housekeeping {
            guarded("keeping the partition maintenance job", || {
                if extension_installed() {
                    sync_partition_job();
                }
            });
        }
        let step = guarded("queueing due jobs", || {
            if !extension_installed() {
                return None;
            }
            let next = queue_due(now);
            let next = match (next, crate::matview::queue_due(dboid, now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            Some((next, pending_runs()))
        });
        let (next_due, pending) = match step {
            // An ERROR: try again shortly.
            None => {
                sleep(1000);
                continue;
            }
            // DROP EXTENSION: exit for good (runners finish on their own).
            Some(None) => {
                shared::set_state(dboid, shared::SlotState::Absent);
                return;
            }
            Some(Some(x)) => x,
        };
        let mut retry_soon = false;
        for (runid, login) in pending {
            if runners.contains_key(&runid) {
                continue;
            }
            if shared::total_runners() >= gucs::max_job_workers() {
                break;
            }
            match start_runner(dboid, runid, login) {
                Some(h) => {
                    runners.insert(runid, h);
                    shared::set_runners(dboid, runners.len() as i32);
                }
                None => {
                    // max_worker_processes is exhausted: try again in a moment.
                    retry_soon = true;
                    break;
                }
            }
        }
        if housekeeping {
            guarded("pruning job history", prune_history);
            guarded("pruning maintenance records", prune_extras);
            last_prune = Some(now);
        }
        let mut wait_ms = gucs::naptime_ms();
        if let Some(t) = next_due {
            let us = t.duration_since(Timestamp::now()).as_micros();
            // Round up: waking a hair early would find nothing due and sleep again.
            wait_ms = wait_ms.min(((us.max(0) + 999) / 1000) as i64);
        }
        if retry_soon {
            wait_ms = wait_ms.min(1000);
        }
        sleep(wait_ms);
    }
}
