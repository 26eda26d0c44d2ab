//! The job scheduler: jobs in `perf.jobs`, run by background workers.
//!
//! Processes: one launcher (registered in `_PG_init`) starts one scheduler per database
//! where pg_perf is installed (`launcher`); each scheduler sleeps on its latch until the
//! next job is due, queues the run in `perf.job_runs` and starts a short-lived runner
//! bgworker for it shortly before it is due (`worker`); the runner connects (as the job's
//! owner when it can log in), waits until the due time, executes the command as the job's
//! owner, as top-level statements (`exec`, `runner`), and records the outcome.
//!
//! Pure parts, tested with `cargo test` and no server: cron expressions with time zones
//! (`cron`), intervals that do not drift (`interval`), `Schedule` (either), maintenance
//! windows (`Window`), retry backoff (`retry`), the maintenance policy (`policy`).
//!
//! Invariants: a run is recorded (status `pending`) before a runner starts, and only the
//! runner that flips it to `running` executes it, so no run is doubled; the next scheduled
//! time is computed from the last recorded slot, so a scheduler restart loses no run.
//!
//! Other capabilities whose work runs on the worker (managed matviews, index builds) use
//! only [`hosted`], and plug in as job kinds: the runner calls their entry points
//! (`matview::refresh`, `advisor::apply::after_build_run`) and the scheduler asks
//! `matview::queue_due` when it computes its next wake-up.

pub mod api;
pub mod cron;
pub mod exec;
pub mod gucs;
pub mod interval;
pub mod launcher;
pub mod maintenance;
pub mod policy;
pub mod retry;
pub mod runner;
pub mod shared;
pub mod worker;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

pub use cron::{Cron, CronError};
pub use interval::Interval;

/// The scheduler's API for capabilities that run work on its worker: validating and
/// computing schedules, writing the jobs catalog as its owner, waking the worker, running
/// statements top-level, the retry policy, and whether the worker serves a database.
pub(crate) mod hosted {
    pub(crate) use super::api::{
        check_schedule, default_timezone, refuse_in_recovery, wake_at_commit, AsCatalogOwner,
    };
    pub(crate) use super::exec::{run_top_level, Outcome};
    pub(crate) use super::gucs::{worker_databases, worker_enabled};
    pub(crate) use super::retry::RetryPolicy;
    pub(crate) use super::shared::wake;
    pub(crate) use super::{next_slot, Schedule};
}

/// When a job runs: civil times in a time zone, or fixed steps of elapsed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(Cron),
    Every(Interval),
    /// '@never': runs only when asked (perf.run_job(), or a managed matview's change).
    Never,
}

impl Schedule {
    /// Parses a cron expression or an interval ('*/5 * * * *', '@daily', '30 seconds').
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        if text.trim().eq_ignore_ascii_case("@never") {
            Ok(Schedule::Never)
        } else if Interval::looks_like(text) {
            Interval::parse(text).map(Schedule::Every)
        } else {
            Cron::parse(text).map(Schedule::Cron)
        }
    }

    /// The next run strictly after `after`. Intervals count from `anchor` (when the job
    /// was scheduled); cron expressions read civil time in `tz`.
    pub fn next_after(
        &self,
        after: Timestamp,
        anchor: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c.next_after(after, tz),
            Schedule::Every(i) => i.next_after(anchor, after),
            Schedule::Never => None,
        }
    }
}

pgrx::extension_sql_file!(
    "../../sql/scheduler.sql",
    name = "scheduler_sql",
    requires = [scheduler::api::job_next_run]
);

/// Called from `_PG_init` (postmaster, preload): registers the launcher. GUCs are defined
/// by `crate::gucs::init` (through `gucs::init` here), shared memory through `crate::pg::shmem`.
pub fn init() {
    launcher::register();
}

/// shmem_request hook callout (from `crate::pg::shmem`).
pub fn shmem_request() {
    shared::request();
}

/// shmem_startup hook callout (from `crate::pg::shmem`).
pub fn shmem_startup() {
    shared::startup();
}

/// Utility-hook callout (from the ProcessUtility hook, before the statement runs):
/// DROP DATABASE stops our workers in that database first (PostgreSQL only terminates
/// autovacuum workers there, and would wait 5 s and fail); DROP/CREATE EXTENSION pg_perf
/// wake the scheduler/launcher at commit so they exit or start.
///
/// # Safety
/// `pstmt` must be null or the PlannedStmt the utility hook was given.
pub unsafe fn before_utility(pstmt: *mut pgrx::pg_sys::PlannedStmt) {
    use pgrx::pg_sys;
    if pstmt.is_null() {
        return;
    }
    // SAFETY: a valid PlannedStmt from the utility hook; node tags checked before casts.
    unsafe {
        let node = (*pstmt).utilityStmt;
        if node.is_null() {
            return;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => {
                let stmt = node as *mut pg_sys::DropdbStmt;
                if (*stmt).dbname.is_null() {
                    return;
                }
                let oid = pg_sys::get_database_oid((*stmt).dbname, true);
                if oid != pg_sys::InvalidOid {
                    shared::mark_dropping(oid);
                    stop_workers_in(oid);
                }
            }
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node as *mut pg_sys::DropStmt;
                if (*stmt).removeType == pg_sys::ObjectType::OBJECT_EXTENSION
                    && names_pg_perf((*stmt).objects)
                {
                    let db = pg_sys::MyDatabaseId;
                    crate::pg::xact::at_commit(move || shared::wake(db));
                }
            }
            pg_sys::NodeTag::T_CreateExtensionStmt => {
                let stmt = node as *mut pg_sys::CreateExtensionStmt;
                if !(*stmt).extname.is_null()
                    && std::ffi::CStr::from_ptr((*stmt).extname).to_bytes() == b"pg_perf"
                {
                    let db = pg_sys::MyDatabaseId;
                    crate::pg::xact::at_commit(move || shared::wake_launcher(Some(db)));
                }
            }
            _ => {}
        }
    }
}

/// True when a DROP EXTENSION object list names pg_perf (a List of String nodes).
unsafe fn names_pg_perf(list: *mut pgrx::pg_sys::List) -> bool {
    use pgrx::pg_sys;
    // SAFETY: a (possibly NIL) List of String nodes (DROP EXTENSION's object names).
    unsafe {
        crate::pg::list::ptrs::<pg_sys::Node>(list).any(|n| {
            if n.is_null() || (*n).type_ != pg_sys::NodeTag::T_String {
                return false;
            }
            let sval = (*(n as *mut pg_sys::String)).sval;
            !sval.is_null() && std::ffi::CStr::from_ptr(sval).to_bytes() == b"pg_perf"
        })
    }
}

/// Sends SIGTERM to pg_perf's background workers (scheduler, runners) connected to `db`.
fn stop_workers_in(db: pgrx::pg_sys::Oid) {
    use pgrx::pg_sys;
    // SAFETY: reading this transaction's snapshot of backend statuses; the pid is checked
    // to be a pg_perf background worker before it is signalled.
    unsafe {
        let n = pg_sys::pgstat_fetch_stat_numbackends();
        for i in 1..=n {
            let e = pg_sys::pgstat_fetch_stat_local_beentry(i);
            if e.is_null() {
                continue;
            }
            let st = &(*e).backendStatus;
            if st.st_databaseid != db || st.st_backendType != pg_sys::BackendType::B_BG_WORKER {
                continue;
            }
            let pid = st.st_procpid;
            let ty = pg_sys::GetBackgroundWorkerTypeByPid(pid);
            if ty.is_null() {
                continue;
            }
            let ty = std::ffi::CStr::from_ptr(ty).to_bytes();
            if ty == worker::SCHEDULER_TYPE.as_bytes() || ty == worker::RUNNER_TYPE.as_bytes() {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// A daily window of civil time (in the job's time zone) when runs may start:
/// `[start, end)`, microseconds since midnight; wraps past midnight when end <= start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
}

impl Window {
    /// True when `t` (read in `tz`) falls inside the window.
    pub fn contains(&self, t: Timestamp, tz: &TimeZone) -> bool {
        let civil = tz.to_datetime(t).time();
        let us = i64::from(civil.hour()) * 3_600_000_000
            + i64::from(civil.minute()) * 60_000_000
            + i64::from(civil.second()) * 1_000_000
            + i64::from(civil.subsec_nanosecond()) / 1000;
        if self.start_us < self.end_us {
            us >= self.start_us && us < self.end_us
        } else {
            us >= self.start_us || us < self.end_us
        }
    }
}

/// When a retry due at `at` may start: `at` itself when it falls inside `window` (or there
/// is none), else the next start of the window (civil time in `tz`; a start that falls in
/// a DST gap moves forward as PostgreSQL does). None only past the representable range.
pub fn retry_in_window(at: Timestamp, window: Option<Window>, tz: &TimeZone) -> Option<Timestamp> {
    let Some(w) = window else {
        return Some(at);
    };
    if w.contains(at, tz) {
        return Some(at);
    }
    let start = jiff::civil::Time::midnight()
        .checked_add(SignedDuration::from_micros(
            w.start_us.rem_euclid(86_400_000_000),
        ))
        .ok()?;
    let mut date = tz.to_datetime(at).date();
    for _ in 0..3 {
        let t = tz
            .to_ambiguous_timestamp(date.to_datetime(start))
            .compatible()
            .ok()?;
        if t > at {
            return Some(t);
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// Slots examined at most when looking for one inside a window or catching up.
const MAX_STEPS: usize = 200_000;

/// The next slot strictly after `after` that falls inside `window` (when given).
pub fn next_slot(
    s: &Schedule,
    after: Timestamp,
    anchor: Timestamp,
    tz: &TimeZone,
    window: Option<Window>,
) -> Option<Timestamp> {
    let mut t = s.next_after(after, anchor, tz)?;
    if let Some(w) = window {
        for _ in 0..MAX_STEPS {
            if w.contains(t, tz) {
                return Some(t);
            }
            t = s.next_after(t, anchor, tz)?;
        }
        return None;
    }
    Some(t)
}

/// The latest slot after `last` that is not later than `now`, or None when the next slot
/// is still ahead. Slots missed while nothing ran (server down) are not caught up one by
/// one: the job runs once, for the latest of them.
pub fn latest_due(
    s: &Schedule,
    last: Timestamp,
    anchor: Timestamp,
    tz: &TimeZone,
    window: Option<Window>,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut due = next_slot(s, last, anchor, tz, window).filter(|t| *t <= now)?;
    for _ in 0..MAX_STEPS {
        match next_slot(s, due, anchor, tz, window) {
            Some(n) if n <= now => due = n,
            _ => break,
        }
    }
    Some(due)
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC) as a jiff Timestamp.
pub fn from_pg(ts: i64) -> Timestamp {
    Timestamp::from_microsecond(ts.saturating_add(PG_EPOCH_OFFSET_US)).unwrap_or(Timestamp::MAX)
}

/// A jiff Timestamp as a PostgreSQL `TimestampTz`.
pub fn to_pg(t: Timestamp) -> i64 {
    (t.as_microsecond()).saturating_sub(PG_EPOCH_OFFSET_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn window_wraps_midnight() {
        let tz = TimeZone::UTC;
        let w = Window {
            start_us: 22 * 3_600_000_000,
            end_us: 2 * 3_600_000_000,
        };
        assert!(w.contains(ts("2026-01-01T23:00:00Z"), &tz));
        assert!(w.contains(ts("2026-01-01T01:59:59Z"), &tz));
        assert!(!w.contains(ts("2026-01-01T02:00:00Z"), &tz));
        assert!(!w.contains(ts("2026-01-01T12:00:00Z"), &tz));
    }

    #[test]
    fn next_slot_respects_window() {
        let tz = TimeZone::UTC;
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let w = Window {
            start_us: 3 * 3_600_000_000,
            end_us: 4 * 3_600_000_000,
        };
        let t0 = ts("2026-01-01T12:00:00Z");
        assert_eq!(
            next_slot(&s, t0, t0, &tz, Some(w)),
            Some(ts("2026-01-02T03:00:00Z"))
        );
    }

    #[test]
    fn retry_outside_the_window_waits_for_it() {
        let utc = TimeZone::UTC;
        let w = Window {
            start_us: 22 * 3_600_000_000,
            end_us: 2 * 3_600_000_000,
        };
        // Inside (before and after midnight): unchanged.
        for t in ["2026-01-01T23:30:00Z", "2026-01-02T01:59:00Z"] {
            assert_eq!(retry_in_window(ts(t), Some(w), &utc), Some(ts(t)));
        }
        // Outside: the window's next start, the same day or the next.
        assert_eq!(
            retry_in_window(ts("2026-01-02T02:00:30Z"), Some(w), &utc),
            Some(ts("2026-01-02T22:00:00Z"))
        );
        let day = Window {
            start_us: 3 * 3_600_000_000,
            end_us: 4 * 3_600_000_000,
        };
        assert_eq!(
            retry_in_window(ts("2026-01-02T04:10:00Z"), Some(day), &utc),
            Some(ts("2026-01-03T03:00:00Z"))
        );
        assert_eq!(
            retry_in_window(ts("2026-01-02T01:00:00Z"), Some(day), &utc),
            Some(ts("2026-01-02T03:00:00Z"))
        );
        // No window: unchanged.
        let t = ts("2026-01-02T12:00:00Z");
        assert_eq!(retry_in_window(t, None, &utc), Some(t));
    }

    #[test]
    fn retry_window_in_a_time_zone_across_dst() {
        // Europe/Berlin springs forward at 02:00 on 2026-03-29 (02:00-03:00 does not exist).
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let w = Window {
            start_us: 2 * 3_600_000_000 + 30 * 60_000_000,
            end_us: 5 * 3_600_000_000,
        };
        // A retry at 12:00 local on the 28th waits for 02:30 local on the 29th, which is
        // in the gap: it starts at 03:30 CEST = 01:30 UTC.
        let at = ts("2026-03-28T11:00:00Z");
        assert_eq!(
            retry_in_window(at, Some(w), &tz),
            Some(ts("2026-03-29T01:30:00Z"))
        );
        // In winter, 02:30 CET = 01:30 UTC too; in summer 02:30 CEST = 00:30 UTC.
        assert_eq!(
            retry_in_window(ts("2026-06-01T12:00:00Z"), Some(w), &tz),
            Some(ts("2026-06-02T00:30:00Z"))
        );
    }

    #[test]
    fn latest_due_runs_missed_slots_once() {
        let tz = TimeZone::UTC;
        let s = Schedule::parse("1 minute").unwrap();
        let anchor = ts("2026-01-01T00:00:00Z");
        let now = ts("2026-01-01T01:00:30Z");
        assert_eq!(
            latest_due(&s, anchor, anchor, &tz, None, now),
            Some(ts("2026-01-01T01:00:00Z"))
        );
        assert_eq!(
            latest_due(&s, ts("2026-01-01T01:00:00Z"), anchor, &tz, None, now),
            None
        );
    }

    #[test]
    fn pg_epoch_round_trip() {
        let t = ts("2026-03-04T05:06:07.123456Z");
        assert_eq!(from_pg(to_pg(t)), t);
        assert_eq!(to_pg(ts("2000-01-01T00:00:00Z")), 0);
    }

    #[test]
    fn parse_picks_the_kind() {
        assert!(matches!(
            Schedule::parse("30 seconds"),
            Ok(Schedule::Every(_))
        ));
        assert!(matches!(
            Schedule::parse("*/5 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(matches!(Schedule::parse("@daily"), Ok(Schedule::Cron(_))));
        assert_eq!(Schedule::parse(" @NEVER "), Ok(Schedule::Never));
        assert!(Schedule::parse("").is_err());
        assert!(Schedule::parse("5 fortnights").is_err());
    }
}
