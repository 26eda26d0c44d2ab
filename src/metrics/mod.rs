//! Metrics and health: `perf.metrics()` renders what a DBA's dashboards and alerts need as
//! Prometheus text (catalog statistics under postgres_exporter's names, pg_perf's own
//! statement and cache figures), and `perf.health()` turns the same figures into checks with
//! thresholds (GUCs) and advice. Reads other capabilities only through their documented API
//! (`stats::rollup`) and their SQL functions.

pub mod api;
pub mod exposition;
pub mod gucs;
pub mod sources;

/// Called from `_PG_init`: registers the health thresholds.
pub fn init() {
    gucs::init();
}

pgrx::extension_sql_file!(
    "../../sql/metrics.sql",
    name = "metrics_sql",
    requires = [metrics::api::metrics, "cache_sql", "scheduler_sql"]
);
