//! Documented API for other capabilities: statement statistics rolled up per database,
//! with no query text (so any role may see them, like pg_stat_database). Latency
//! histograms are merged bucket by bucket, so a database's percentiles are exact to one
//! bucket, as a single statement's are.

use super::histogram::{self, BUCKETS};
use super::shmem;

/// One database's statements, summed. Times in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseRollup {
    pub dbid: u32,
    pub statements: i64,
    pub calls: i64,
    pub errors: i64,
    pub rows: i64,
    pub slow_calls: i64,
    pub total_exec_ms: f64,
    pub histogram: [u64; BUCKETS],
}

impl DatabaseRollup {
    fn new(dbid: u32) -> Self {
        DatabaseRollup {
            dbid,
            statements: 0,
            calls: 0,
            errors: 0,
            rows: 0,
            slow_calls: 0,
            total_exec_ms: 0.0,
            histogram: [0; BUCKETS],
        }
    }

    /// The `p` quantile (0..1) of execution time in milliseconds, if anything ran.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        histogram::percentile_ms(&self.histogram, p)
    }
}

/// Upper edge of histogram bucket `i` in seconds (+∞ for the last one).
pub fn bucket_upper_seconds(i: usize) -> f64 {
    histogram::bucket_bounds_micros(i).1 / 1e6
}

/// Every database with recorded statements, ordered by OID. Empty when pg_perf's shared
/// memory is not there (library not preloaded).
pub fn per_database() -> Vec<DatabaseRollup> {
    let mut out: Vec<DatabaseRollup> = Vec::new();
    for e in shmem::snapshot(|_| true) {
        let pos = match out.binary_search_by_key(&e.key.dbid, |r| r.dbid) {
            Ok(p) => p,
            Err(p) => {
                out.insert(p, DatabaseRollup::new(e.key.dbid));
                p
            }
        };
        let r = &mut out[pos];
        let c = &e.counters;
        r.statements += 1;
        r.calls = r.calls.saturating_add(c.calls);
        r.errors = r.errors.saturating_add(c.errors);
        r.rows = r.rows.saturating_add(c.rows);
        r.slow_calls = r.slow_calls.saturating_add(c.slow_calls);
        r.total_exec_ms += c.total_time;
        histogram::merge(&mut r.histogram, &c.histogram);
    }
    out
}
