//! The SQL surface of the scheduler: perf.schedule(), perf.alter_job(), perf.unschedule(),
//! perf.run_job(), and perf.job_next_run() (used by the perf.jobs_status view).
//!
//! `perf.jobs`/`perf.job_runs` are not writable by PUBLIC: these functions check the caller
//! (owner of the job, a member of the owner role, or a superuser) and then write as the
//! bootstrap superuser for the duration of the statement (`AsCatalogOwner`). Every input is
//! checked before anything is written, so a refused call creates nothing.

use std::ffi::CString;

use jiff::tz::TimeZone;
use pgrx::datum::{Interval, Time, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{exec, gucs, shared, Schedule, Window};
use crate::pg::privilege::{self, Role};

/// Job kinds: what the command of a job means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQL statements, run as top-level statements.
    Sql,
    /// pg_perf's maintenance policy (VACUUM/ANALYZE/REINDEX as needed).
    Maintenance,
    /// A snapshot of perf.statements for trends.
    StatsSnapshot,
    /// `perf.partition_maintenance()` of every partition set, one transaction per set.
    PartitionMaintenance,
    /// Refreshes one managed materialized view (command: its OID); created by
    /// perf.manage_matview(), queued by the scheduler when the view is due (`crate::matview`).
    MatviewRefresh,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sql" => Some(Kind::Sql),
            "maintenance" => Some(Kind::Maintenance),
            "stats_snapshot" => Some(Kind::StatsSnapshot),
            "partition_maintenance" => Some(Kind::PartitionMaintenance),
            "matview_refresh" => Some(Kind::MatviewRefresh),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Maintenance => "maintenance",
            Kind::StatsSnapshot => "stats_snapshot",
            Kind::PartitionMaintenance => "partition_maintenance",
            Kind::MatviewRefresh => "matview_refresh",
        }
    }
}

fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, message, "pg_perf")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// A required argument: NULL is refused with 22004 (the function cannot be STRICT, since
/// its optional arguments default to NULL).
fn required<T>(v: Option<T>, name: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            "Leave the argument out to get its default.",
        )
    })
}

fn invalid(message: String, hint: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

const SCHEDULE_HINT: &str = "Use 5 cron fields ('*/5 * * * *'), 6 with seconds first \
    ('*/10 * * * * *'), a macro (@hourly, @daily, @weekly, @monthly, @yearly), or an \
    interval ('30 seconds', '5 minutes', '1 day').";

pub(crate) fn check_schedule(text: &str) -> Schedule {
    match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => invalid(format!("invalid schedule \"{text}\": {e}"), SCHEDULE_HINT),
    }
}

fn check_timezone(name: &str) -> TimeZone {
    match TimeZone::get(name) {
        Ok(tz) => tz,
        Err(_) => invalid(
            format!("time zone \"{name}\" not recognized"),
            "Use an IANA time zone name such as 'UTC' or 'Europe/Berlin' \
             (SELECT name FROM pg_timezone_names).",
        ),
    }
}

fn check_kind(kind: &str) -> Kind {
    Kind::parse(kind).unwrap_or_else(|| {
        invalid(
            format!("unknown job kind \"{kind}\""),
            "Kinds are 'sql' (the default), 'maintenance', 'stats_snapshot' and 'partition_maintenance'.",
        )
    })
}

/// Checks a command for its kind: SQL must parse, hold at least one statement and no
/// transaction control; the built-in kinds take no command.
fn check_command(kind: Kind, command: &str) {
    if kind == Kind::MatviewRefresh {
        if command.trim().parse::<u32>().is_err() {
            invalid(
                "a matview_refresh job's command is the OID of a managed materialized view".into(),
                "Use perf.manage_matview() to have a materialized view refreshed.",
            );
        }
        return;
    }
    if kind != Kind::Sql {
        if !command.trim().is_empty() && !command.trim().eq_ignore_ascii_case(kind.as_str()) {
            invalid(
                format!("a {} job takes no command", kind.as_str()),
                "Pass '' (or the kind's name) as the command of a built-in kind.",
            );
        }
        return;
    }
    let Ok(c) = CString::new(command) else {
        invalid(
            "job command contains a NUL byte".into(),
            "Remove the NUL byte.",
        )
    };
    let shape = exec::shape(&c);
    if shape.statements == 0 {
        invalid(
            "job command is empty".into(),
            "Give the SQL the job runs, e.g. 'VACUUM ANALYZE my_table'.",
        );
    }
    if let Some(kw) = shape.transaction_control {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("job commands cannot contain transaction control ({kw})"),
            "Each run is one transaction (VACUUM and the like manage their own): remove \
             BEGIN/COMMIT/ROLLBACK/SAVEPOINT, or schedule the parts as separate jobs.",
        );
    }
}

/// An interval in microseconds (a month counts 30 days, as in interval comparison).
fn interval_us(i: &Interval) -> i128 {
    i.as_micros()
}

fn check_max_runtime(i: &Option<Interval>) {
    if let Some(i) = i {
        let us = interval_us(i);
        if us < 1000 || us > i128::from(i32::MAX) * 1000 {
            invalid(
                "max_runtime must be between 1 millisecond and 24 days".into(),
                "Pass NULL for no limit.",
            );
        }
    }
}

fn check_backoff(i: &Interval) {
    let us = interval_us(i);
    if !(1_000_000..=7 * 86_400_000_000).contains(&us) {
        invalid(
            "backoff must be between 1 second and 7 days".into(),
            "The first retry waits backoff, each further one twice as long (capped at 100 times backoff).",
        );
    }
}

fn check_retries(r: i32) {
    if !(0..=100).contains(&r) {
        invalid(
            format!("retries must be between 0 and 100, not {r}"),
            "retries is how many times a failed run is retried before the job waits for its next time.",
        );
    }
}

fn check_window(start: &Option<Time>, end: &Option<Time>) {
    match (start, end) {
        (None, None) => {}
        (Some(s), Some(e)) if s != e => {}
        (Some(_), Some(_)) => invalid(
            "window_start and window_end must differ".into(),
            "A window is [window_start, window_end) each day; it may wrap past midnight.",
        ),
        _ => invalid(
            "window_start and window_end go together".into(),
            "Give both (e.g. window_start => '01:00', window_end => '05:00') or neither.",
        ),
    }
}

fn check_name(name: &str) {
    if name.trim().is_empty() || name.len() > 200 {
        invalid(
            "job name must be 1 to 200 characters".into(),
            "Name jobs so you can alter or unschedule them later, e.g. 'nightly_vacuum'.",
        );
    }
}

/// The role calling us (before any switch).
fn caller() -> pg_sys::Oid {
    // SAFETY: plain read of the backend's current user id.
    unsafe { pg_sys::GetUserId() }
}

/// Writes to the scheduler's catalog as the bootstrap superuser until dropped. An ERROR
/// in between aborts the (sub)transaction, which restores the user id itself.
pub(crate) struct AsCatalogOwner {
    _acting: crate::pg::role::ActingAs,
}

/// Refuses work that writes the scheduler's catalog or needs its workers on a hot standby
/// (both are replicated from the primary; the workers start after a promotion).
pub(crate) fn refuse_in_recovery(what: &str) {
    // SAFETY: plain read of shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("cannot {what} on a standby server (it is in recovery)"),
            "Run it on the primary: jobs replicate to standbys, and a promoted standby's \
             scheduler runs them.",
        );
    }
}

impl AsCatalogOwner {
    pub(crate) fn switch() -> Self {
        refuse_in_recovery("change scheduled jobs");
        AsCatalogOwner {
            _acting: crate::pg::role::ActingAs::catalog_owner(),
        }
    }
}

/// Wakes this database's scheduler when the transaction commits (it then sees the change).
pub(crate) fn wake_at_commit() {
    // SAFETY: plain read of the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId };
    crate::pg::xact::at_commit(move || shared::wake(db));
}

struct JobRow {
    jobid: i64,
    owner: pg_sys::Oid,
}

fn find_job(name: &str) -> JobRow {
    let row = Spi::get_two_with_args::<i64, pg_sys::Oid>(
        "SELECT jobid, owner FROM perf.jobs WHERE name = $1",
        &[name.into()],
    );
    match row {
        Ok((Some(jobid), Some(owner))) => JobRow { jobid, owner },
        _ => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("job \"{name}\" does not exist"),
            "SELECT name FROM perf.jobs lists the jobs you can see.",
        ),
    }
}

fn check_owner(name: &str, job: &JobRow, who: pg_sys::Oid) {
    // SAFETY: catalog lookups on role ids.
    let ok = unsafe { pg_sys::superuser_arg(who) || pg_sys::has_privs_of_role(who, job.owner) };
    if !ok {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be the owner of job \"{name}\""),
            "Only the role that scheduled a job (or a member of it, or a superuser) may change, \
             run or remove it.",
        );
    }
}

pub(crate) fn default_timezone() -> String {
    gucs::scheduler_timezone().unwrap_or_else(|| {
        // The session's TimeZone, read directly (no SPI: a query here would also run on a
        // standby, where perf.schedule() must fail with its own clear error instead).
        // SAFETY: session_timezone is set at backend start; pg_get_timezone_name returns a
        // pointer into it (or null), copied before anything can change it.
        unsafe {
            let tz = pg_sys::session_timezone;
            let name = if tz.is_null() {
                std::ptr::null()
            } else {
                pg_sys::pg_get_timezone_name(tz)
            };
            if name.is_null() {
                "UTC".into()
            } else {
                std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned()
            }
        }
    })
}

/// Schedules `command` to run on `schedule` (cron: 5 fields or 6 with seconds, @macros;
/// or an interval such as '30 seconds') and returns the new job's id. The job runs as the
/// calling role. Options: `kind` ('sql', 'maintenance', 'stats_snapshot', 'partition_maintenance'), `timezone` of
/// cron fields (default perf.scheduler_timezone, else TimeZone), `max_runtime` (the
/// run's statement_timeout), `retries` after a failure with exponential `backoff`, a daily
/// window [`window_start`, `window_end`) outside which scheduled runs do not start, and
/// `enabled`.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn schedule(
    name: Option<&str>,
    schedule: Option<&str>,
    command: Option<&str>,
    kind: default!(Option<&str>, "'sql'"),
    timezone: default!(Option<&str>, "NULL"),
    max_runtime: default!(Option<Interval>, "NULL"),
    retries: default!(Option<i32>, 0),
    backoff: default!(Option<Interval>, "'30 seconds'"),
    window_start: default!(Option<Time>, "NULL"),
    window_end: default!(Option<Time>, "NULL"),
    enabled: default!(Option<bool>, true),
) -> i64 {
    privilege::require(Role::Admin, "perf.schedule()");
    let name = required(name, "name");
    let schedule = required(schedule, "schedule");
    let command = required(command, "command");
    let kind = required(kind, "kind");
    let retries = required(retries, "retries");
    let backoff = required(backoff, "backoff");
    let enabled = required(enabled, "enabled");
    check_name(name);
    check_schedule(schedule);
    let kind = check_kind(kind);
    if kind == Kind::MatviewRefresh {
        invalid(
            "matview_refresh jobs are created by perf.manage_matview()".into(),
            "SELECT perf.manage_matview('my_view', schedule => '@hourly') refreshes a \
             materialized view on a schedule (and when its sources change).",
        );
    }
    let tz = timezone
        .map(str::to_string)
        .unwrap_or_else(default_timezone);
    check_timezone(&tz);
    check_command(kind, command);
    check_max_runtime(&max_runtime);
    check_retries(retries);
    check_backoff(&backoff);
    check_window(&window_start, &window_end);
    let owner = caller();
    let _as = AsCatalogOwner::switch();
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM perf.jobs WHERE name = $1)",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if exists {
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("job \"{name}\" already exists"),
            "perf.alter_job() changes a job; perf.unschedule() removes it.",
        );
    }
    let jobid = Spi::get_one_with_args::<i64>(
        "INSERT INTO perf.jobs (name, schedule, command, kind, timezone, max_runtime, retries, \
                                backoff, window_start, window_end, enabled, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING jobid",
        &[
            name.into(),
            schedule.trim().into(),
            command.into(),
            kind.as_str().into(),
            tz.as_str().into(),
            max_runtime.into(),
            retries.into(),
            backoff.into(),
            window_start.into(),
            window_end.into(),
            enabled.into(),
            owner.into(),
        ],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    wake_at_commit();
    jobid
}

/// Changes a job: every argument given (not NULL) replaces the job's value. Changing the
/// schedule, time zone or window restarts the schedule from now (missed slots are not
/// caught up). `clear_max_runtime`/`clear_window` remove those limits; `new_name` renames
/// the job (its history stays with it).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn alter_job(
    name: Option<&str>,
    schedule: default!(Option<&str>, "NULL"),
    command: default!(Option<&str>, "NULL"),
    kind: default!(Option<&str>, "NULL"),
    timezone: default!(Option<&str>, "NULL"),
    max_runtime: default!(Option<Interval>, "NULL"),
    retries: default!(Option<i32>, "NULL"),
    backoff: default!(Option<Interval>, "NULL"),
    window_start: default!(Option<Time>, "NULL"),
    window_end: default!(Option<Time>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
    clear_max_runtime: default!(Option<bool>, false),
    clear_window: default!(Option<bool>, false),
    new_name: default!(Option<&str>, "NULL"),
) -> bool {
    privilege::require(Role::Admin, "perf.alter_job()");
    let name = required(name, "name");
    if let Some(n) = new_name {
        check_name(n);
    }
    let clear_max_runtime = required(clear_max_runtime, "clear_max_runtime");
    let clear_window = required(clear_window, "clear_window");
    if let Some(s) = schedule {
        check_schedule(s);
    }
    if let Some(t) = timezone {
        check_timezone(t);
    }
    check_max_runtime(&max_runtime);
    if let Some(r) = retries {
        check_retries(r);
    }
    if let Some(b) = &backoff {
        check_backoff(b);
    }
    check_window(&window_start, &window_end);
    let who = caller();
    let _as = AsCatalogOwner::switch();
    let job = find_job(name);
    check_owner(name, &job, who);
    let (cur_kind, cur_command) = Spi::get_two_with_args::<String, String>(
        "SELECT kind, command FROM perf.jobs WHERE jobid = $1",
        &[job.jobid.into()],
    )
    .unwrap_or((None, None));
    let new_kind = match kind {
        Some(k) => check_kind(k),
        None => Kind::parse(cur_kind.as_deref().unwrap_or("sql")).unwrap_or(Kind::Sql),
    };
    let new_command = command
        .map(str::to_string)
        .or(cur_command)
        .unwrap_or_default();
    check_command(new_kind, &new_command);
    if let Some(n) = new_name.filter(|n| *n != name) {
        let taken = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM perf.jobs WHERE name = $1)",
            &[n.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if taken {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
                format!("cannot rename job \"{name}\": job \"{n}\" already exists"),
                "Pick another name, or perf.unschedule() the other job first.",
            );
        }
    }
    Spi::run_with_args(
        "UPDATE perf.jobs SET \
            schedule = coalesce($2, schedule), \
            command = $3, \
            kind = $4, \
            timezone = coalesce($5, timezone), \
            max_runtime = CASE WHEN $12 THEN NULL ELSE coalesce($6, max_runtime) END, \
            retries = coalesce($7, retries), \
            backoff = coalesce($8, backoff), \
            window_start = CASE WHEN $13 THEN NULL ELSE coalesce($9, window_start) END, \
            window_end = CASE WHEN $13 THEN NULL ELSE coalesce($10, window_end) END, \
            enabled = coalesce($11, enabled), \
            schedule_since = CASE WHEN $2 IS NOT NULL OR $5 IS NOT NULL OR $9 IS NOT NULL \
                                       OR $13 OR ($11 AND NOT enabled) \
                                  THEN now() ELSE schedule_since END, \
            name = coalesce($14, name) \
         WHERE jobid = $1",
        &[
            job.jobid.into(),
            schedule.map(str::trim).into(),
            new_command.as_str().into(),
            new_kind.as_str().into(),
            timezone.into(),
            max_runtime.into(),
            retries.into(),
            backoff.into(),
            window_start.into(),
            window_end.into(),
            enabled.into(),
            clear_max_runtime.into(),
            clear_window.into(),
            new_name.into(),
        ],
    )
    .unwrap_or_else(|e| invalid(format!("could not change job \"{name}\": {e}"), ""));
    wake_at_commit();
    true
}

/// Removes a job and its run history. A run in progress finishes; it is not recorded.
#[pg_extern(volatile, parallel_unsafe)]
fn unschedule(name: Option<&str>) -> bool {
    privilege::require(Role::Admin, "perf.unschedule()");
    let name = required(name, "name");
    let who = caller();
    let _as = AsCatalogOwner::switch();
    let job = find_job(name);
    check_owner(name, &job, who);
    Spi::run_with_args(
        "DELETE FROM perf.jobs WHERE jobid = $1",
        &[job.jobid.into()],
    )
    .unwrap_or_else(|e| invalid(format!("could not remove job \"{name}\": {e}"), ""));
    wake_at_commit();
    true
}

/// Runs a job now (in the background, as its owner) and returns the run's id; follow it in
/// perf.job_runs. The run starts when this transaction commits.
#[pg_extern(volatile, parallel_unsafe)]
fn run_job(name: Option<&str>) -> i64 {
    privilege::require(Role::Admin, "perf.run_job()");
    let name = required(name, "name");
    let who = caller();
    let _as = AsCatalogOwner::switch();
    let job = find_job(name);
    check_owner(name, &job, who);
    let runid = Spi::get_one_with_args::<i64>(
        "INSERT INTO perf.job_runs (jobid, trigger, status, scheduled_for) \
         VALUES ($1, 'manual', 'pending', now()) RETURNING runid",
        &[job.jobid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    wake_at_commit();
    runid
}

fn window_of(start: Option<Time>, end: Option<Time>) -> Option<Window> {
    match (start, end) {
        (Some(s), Some(e)) => Some(Window {
            start_us: s.into_inner(),
            end_us: e.into_inner(),
        }),
        _ => None,
    }
}

/// The next time a schedule fires after `after` (cron fields read in `timezone`;
/// intervals count from `anchor`), inside the window when one is given. NULL for an
/// invalid schedule or time zone.
#[pg_extern(stable, parallel_safe)]
fn job_next_run(
    schedule: Option<&str>,
    timezone: Option<&str>,
    after: Option<TimestampWithTimeZone>,
    anchor: Option<TimestampWithTimeZone>,
    window_start: default!(Option<Time>, "NULL"),
    window_end: default!(Option<Time>, "NULL"),
) -> Option<TimestampWithTimeZone> {
    let s = Schedule::parse(schedule?).ok()?;
    let tz = TimeZone::get(timezone?).ok()?;
    let (after, anchor) = (after?, anchor?);
    if !after.is_finite() || !anchor.is_finite() {
        return None;
    }
    let after = super::from_pg(after.into());
    let anchor = super::from_pg(anchor.into());
    let t = super::next_slot(&s, after, anchor, &tz, window_of(window_start, window_end))?;
    TimestampWithTimeZone::try_from(super::to_pg(t)).ok()
}

/// Wakes this database's scheduler (after changing perf.jobs by hand, say). perf_admin.
#[pg_extern(volatile, parallel_unsafe)]
fn scheduler_wake() -> bool {
    privilege::require(Role::Admin, "perf.scheduler_wake()");
    wake_at_commit();
    true
}
