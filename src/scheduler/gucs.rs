//! The scheduler's `perf.*` settings. Registered from `crate::gucs::init` (before the
//! `perf` prefix is reserved), read by the launcher, the per-database schedulers and
//! `perf.schedule()`. Settings a worker reads are SIGHUP-level: the workers reload them in
//! their main loop (`ConfigReloadPending`).

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `perf.worker_enabled`: run the launcher's per-database schedulers at all.
pub static WORKER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `perf.worker_naptime`: seconds a scheduler or the launcher sleeps at most when nothing
/// is due (they are woken early by perf.schedule()/perf.run_job() and by runner exits).
pub static WORKER_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);
/// `perf.max_job_workers`: job runs executing at once, all databases together.
pub static MAX_JOB_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
/// `perf.worker_databases`: comma-separated database names to schedule in; empty = every
/// database where pg_perf is installed.
pub static WORKER_DATABASES: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// `perf.scheduler_timezone`: default time zone of new jobs; empty = the session's TimeZone.
pub static SCHEDULER_TIMEZONE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
/// `perf.job_history_days`: finished runs older than this are deleted.
pub static JOB_HISTORY_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);
/// `perf.job_history_max_rows`: at most this many finished runs are kept per database.
pub static JOB_HISTORY_MAX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(10000);
/// `perf.job_lock_timeout`: lock_timeout (ms) of job runs.
pub static JOB_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60000);

/// `perf.maintenance_scale`: autovacuum's scale factors are multiplied by this in
/// pg_perf's maintenance plan (below 1: vacuum and analyze earlier than autovacuum would).
pub static MAINTENANCE_SCALE: GucSetting<f64> = GucSetting::<f64>::new(0.5);
/// `perf.reindex_bloat_pct`: maintenance rebuilds btrees whose estimated bloat is above this.
pub static REINDEX_BLOAT_PCT: GucSetting<f64> = GucSetting::<f64>::new(30.0);

pub fn maintenance_scale() -> f64 {
    MAINTENANCE_SCALE.get()
}

pub fn reindex_bloat_pct() -> f64 {
    REINDEX_BLOAT_PCT.get()
}

pub fn worker_enabled() -> bool {
    WORKER_ENABLED.get()
}

/// The longest sleep, in milliseconds.
pub fn naptime_ms() -> i64 {
    i64::from(WORKER_NAPTIME.get().max(1)) * 1000
}

pub fn max_job_workers() -> i32 {
    MAX_JOB_WORKERS.get().max(1)
}

/// The database names in `perf.worker_databases`, or None for "every database".
pub fn worker_databases() -> Option<Vec<String>> {
    let v = WORKER_DATABASES.get()?;
    let names: Vec<String> = v
        .to_string_lossy()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        None
    } else {
        Some(names)
    }
}

/// `perf.scheduler_timezone` when set.
pub fn scheduler_timezone() -> Option<String> {
    SCHEDULER_TIMEZONE
        .get()
        .map(|v| v.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn job_history_days() -> i32 {
    JOB_HISTORY_DAYS.get()
}

pub fn job_history_max_rows() -> i32 {
    JOB_HISTORY_MAX_ROWS.get()
}

pub fn job_lock_timeout_ms() -> i32 {
    JOB_LOCK_TIMEOUT.get()
}

/// Defines the scheduler's GUCs. Called from `crate::gucs::init`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"perf.worker_enabled",
        c"Runs pg_perf's job scheduler (one background worker per database with pg_perf).",
        c"Off stops every scheduler at the next reload; jobs wait until it is on again.",
        &WORKER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.worker_naptime",
        c"Longest sleep of the scheduler workers when no job is due.",
        c"Schedulers wake at each job's due time and when jobs change, so this only bounds \
          how late a change made outside pg_perf's functions is noticed.",
        &WORKER_NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"perf.max_job_workers",
        c"Job runs executing at once, across all databases.",
        c"Each run is a background worker: keep this below max_worker_processes minus the \
          schedulers (one per database) and the launcher.",
        &MAX_JOB_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"perf.worker_databases",
        c"Comma-separated databases to run the job scheduler in (empty = all with pg_perf).",
        c"",
        &WORKER_DATABASES,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"perf.scheduler_timezone",
        c"Time zone of new jobs when perf.schedule() is given none (empty = TimeZone).",
        c"",
        &SCHEDULER_TIMEZONE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.job_history_days",
        c"Days of job run history kept in perf.job_runs.",
        c"",
        &JOB_HISTORY_DAYS,
        0,
        36500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.job_history_max_rows",
        c"Finished job runs kept in perf.job_runs per database (the latest run of each job is always kept).",
        c"",
        &JOB_HISTORY_MAX_ROWS,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"perf.maintenance_scale",
        c"Multiplies autovacuum's scale factors in pg_perf's maintenance plan.",
        c"Below 1, maintenance jobs vacuum and analyze tables earlier than autovacuum would, \
          inside the window they are scheduled in.",
        &MAINTENANCE_SCALE,
        0.0,
        10.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"perf.reindex_bloat_pct",
        c"Maintenance rebuilds (REINDEX CONCURRENTLY) btree indexes with more estimated bloat than this.",
        c"",
        &REINDEX_BLOAT_PCT,
        0.0,
        100.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.job_lock_timeout",
        c"lock_timeout of job runs: a job waits at most this long for a lock.",
        c"",
        &JOB_LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}
