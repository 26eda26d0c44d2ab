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

/// `perf.partition_interval`: how often the scheduler maintains partition sets on its own
/// (a built-in `partition_maintenance` job in each database with partition sets); '0',
/// 'off' or '' = never (schedule a job yourself).
pub static PARTITION_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 hour"));

/// A `perf.partition_interval` value that is neither an interval nor off.
#[derive(Debug, PartialEq, Eq)]
pub struct BadInterval;

/// Seconds of a `perf.partition_interval` value; None = disabled.
pub fn parse_partition_interval(text: &str) -> Result<Option<i64>, BadInterval> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t == "0" || t == "off" {
        return Ok(None);
    }
    match super::Interval::parse(&t) {
        Ok(i) if i.seconds() > 0 => Ok(Some(i.seconds())),
        _ => Err(BadInterval),
    }
}

/// `perf.partition_interval` in seconds, or None when off.
pub fn partition_interval_secs() -> Option<i64> {
    let v = PARTITION_INTERVAL.get()?;
    parse_partition_interval(&v.to_string_lossy())
        .ok()
        .flatten()
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_partition_interval(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pgrx::pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes the candidate value (NULL or a C string).
    let text = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        std::ffi::CStr::from_ptr(*newval)
            .to_string_lossy()
            .into_owned()
    };
    if parse_partition_interval(&text).is_ok() {
        return true;
    }
    // SAFETY: GUC check hooks report through these globals (palloc'd strings).
    unsafe {
        pgrx::pg_sys::GUC_check_errcode(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32,
        );
        pgrx::pg_sys::GUC_check_errhint_string = pgrx::pg_sys::pstrdup(
            c"Give an interval such as '1 hour', '15 minutes' or '1d', or 'off'.".as_ptr(),
        );
    }
    false
}

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
    // SAFETY: the check hook is #[pg_guard]ed and only parses the value.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"perf.partition_interval",
            c"How often the scheduler maintains partition sets by itself ('off' = never).",
            c"In each database with partition sets, the scheduler keeps a built-in job \
              'partition_maintenance' on this interval (runs recorded in perf.job_runs).",
            &PARTITION_INTERVAL,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_partition_interval),
            None,
            None,
        );
    }
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

#[cfg(test)]
mod tests {
    use super::parse_partition_interval;

    #[test]
    fn partition_interval_values() {
        assert_eq!(parse_partition_interval("1 hour"), Ok(Some(3600)));
        assert_eq!(parse_partition_interval(" 15 minutes "), Ok(Some(900)));
        for off in ["0", "off", "OFF", ""] {
            assert_eq!(parse_partition_interval(off), Ok(None));
        }
        assert!(parse_partition_interval("soon").is_err());
        assert!(parse_partition_interval("-1 hour").is_err());
    }
}
