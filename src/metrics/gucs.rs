//! `perf.health_*`: the thresholds `perf.health()` judges against, a warn and a critical
//! level per check. Any role may set them for its session (they only change what it sees).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// (name, short description, storage)
type Threshold = (
    &'static std::ffi::CStr,
    &'static std::ffi::CStr,
    &'static GucSetting<f64>,
);

macro_rules! thresholds {
    ($($warn:ident = $wd:expr, $crit:ident = $cd:expr;)*) => {
        $(
            static $warn: GucSetting<f64> = GucSetting::<f64>::new($wd);
            static $crit: GucSetting<f64> = GucSetting::<f64>::new($cd);
        )*
    };
}

thresholds! {
    CACHE_HIT_WARN = 0.95, CACHE_HIT_CRIT = 0.90;
    CONN_WARN = 0.80, CONN_CRIT = 0.95;
    SLOW_WARN = 0.01, SLOW_CRIT = 0.05;
    LONG_XACT_WARN = 300.0, LONG_XACT_CRIT = 3600.0;
    IDLE_XACT_WARN = 60.0, IDLE_XACT_CRIT = 600.0;
    LAG_WARN = 30.0, LAG_CRIT = 300.0;
    WRAP_WARN = 0.50, WRAP_CRIT = 0.75;
    DEAD_WARN = 0.20, DEAD_CRIT = 0.50;
    JOB_FAIL_WARN = 1.0, JOB_FAIL_CRIT = 3.0;
    DEFAULT_ROWS_WARN = 1.0, DEFAULT_ROWS_CRIT = 10000.0;
    MATVIEW_STALE_WARN = 600.0, MATVIEW_STALE_CRIT = 3600.0;
}

const THRESHOLDS: &[Threshold] = &[
    (c"perf.health_cache_hit_ratio_warn", c"perf.health(): buffer cache hit ratio below this warns.", &CACHE_HIT_WARN),
    (c"perf.health_cache_hit_ratio_critical", c"perf.health(): buffer cache hit ratio below this is critical.", &CACHE_HIT_CRIT),
    (c"perf.health_connections_warn", c"perf.health(): share of usable connections in use above this warns.", &CONN_WARN),
    (c"perf.health_connections_critical", c"perf.health(): share of usable connections in use above this is critical.", &CONN_CRIT),
    (c"perf.health_slow_rate_warn", c"perf.health(): share of executions slower than perf.slow_query_ms above this warns.", &SLOW_WARN),
    (c"perf.health_slow_rate_critical", c"perf.health(): share of slow executions above this is critical.", &SLOW_CRIT),
    (c"perf.health_long_transaction_warn_s", c"perf.health(): an active transaction older than this many seconds warns.", &LONG_XACT_WARN),
    (c"perf.health_long_transaction_critical_s", c"perf.health(): an active transaction older than this many seconds is critical.", &LONG_XACT_CRIT),
    (c"perf.health_idle_in_transaction_warn_s", c"perf.health(): a session idle in transaction longer than this many seconds warns.", &IDLE_XACT_WARN),
    (c"perf.health_idle_in_transaction_critical_s", c"perf.health(): a session idle in transaction longer than this many seconds is critical.", &IDLE_XACT_CRIT),
    (c"perf.health_replication_lag_warn_s", c"perf.health(): replication lag above this many seconds warns.", &LAG_WARN),
    (c"perf.health_replication_lag_critical_s", c"perf.health(): replication lag above this many seconds is critical.", &LAG_CRIT),
    (c"perf.health_wraparound_warn", c"perf.health(): xid or multixact age as a share of the 2^31 wraparound horizon above this warns.", &WRAP_WARN),
    (c"perf.health_wraparound_critical", c"perf.health(): xid or multixact age share above this is critical.", &WRAP_CRIT),
    (c"perf.health_dead_rows_warn", c"perf.health(): a table (over 8 MB) whose dead-row share is above this warns.", &DEAD_WARN),
    (c"perf.health_dead_rows_critical", c"perf.health(): a table's dead-row share above this is critical.", &DEAD_CRIT),
    (c"perf.health_failing_jobs_warn", c"perf.health(): a job with at least this many consecutive failures warns.", &JOB_FAIL_WARN),
    (c"perf.health_failing_jobs_critical", c"perf.health(): a job with at least this many consecutive failures is critical.", &JOB_FAIL_CRIT),
    (c"perf.health_default_partition_rows_warn", c"perf.health(): this many rows in a managed default partition warns.", &DEFAULT_ROWS_WARN),
    (c"perf.health_default_partition_rows_critical", c"perf.health(): this many rows in a managed default partition is critical.", &DEFAULT_ROWS_CRIT),
    (c"perf.health_matview_stale_warn_s", c"perf.health(): a managed materialized view stale for longer than this many seconds warns.", &MATVIEW_STALE_WARN),
    (c"perf.health_matview_stale_critical_s", c"perf.health(): a managed materialized view stale for longer than this many seconds is critical.", &MATVIEW_STALE_CRIT),
];

/// Registers every threshold (from `_PG_init`).
pub fn init() {
    for (name, short, setting) in THRESHOLDS {
        GucRegistry::define_float_guc(
            name,
            short,
            c"Read by perf.health(); see the README's health section.",
            setting,
            0.0,
            1e12,
            GucContext::Userset,
            GucFlags::default(),
        );
    }
}
