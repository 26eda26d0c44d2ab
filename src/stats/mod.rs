//! Slow-query analysis: per-statement statistics in shared memory (keyed like
//! pg_stat_statements), latency histograms, captured plans of slow runs, the predicates each
//! statement uses, and SQL functions that rank statements and explain why they are slow.
//!
//! Other capabilities use only: [`workload`] (the current database's statements, with the
//! text-visibility rule applied), the plan facts ([`predicates`], [`plan_capture`] and the
//! [`PredicateKind`]/[`PredicateRec`] records re-exported here), and the pure [`normalize`]
//! helpers. The statement table in shared memory ([`shmem`]) is internal.

pub mod api;
mod dump;
pub mod encoding;
pub mod fingerprint;
pub mod histogram;
pub mod hooks;
pub mod index_health;
pub mod normalize;
pub mod plan_capture;
pub mod predicates;
pub mod query_id_memo;
pub mod rollup;
pub mod samples;
pub mod shmem;
pub mod why_slow;
pub mod workload;

/// The plan facts statement capture records and the advisor's what-if planner reads (see
/// [`predicates`], [`plan_capture`]): other capabilities name these types from here.
pub use shmem::{PredicateKind, PredicateRec};

#[cfg(any(test, feature = "pg_test"))]
use pgrx::pg_schema;

// Hooks are installed by `crate::pg::hooks` (entry points in `hooks`); shared memory is
// requested and attached through `crate::pg::shmem` (`shmem::request`/`startup`).

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn calls_and_rows(like: &str) -> (i64, i64, bool) {
        Spi::get_three_with_args::<i64, i64, bool>(
            "SELECT calls, rows, toplevel FROM perf.statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND query LIKE $1",
            &[like.into()],
        )
        .map(|(c, r, t)| (c.unwrap_or(0), r.unwrap_or(0), t.unwrap_or(true)))
        .unwrap_or((0, 0, true))
    }

    /// Statements run through SPI inside this test function are nested (level 1): recorded
    /// with toplevel = false under perf.track = 'all', not at all under 'top'.
    #[pg_test]
    fn nested_statements_follow_perf_track() {
        Spi::run("SET perf.track = 'all'").unwrap();
        for _ in 0..5 {
            Spi::run("SELECT g FROM generate_series(1, 3) g WHERE g > 0").unwrap();
        }
        let (calls, rows, toplevel) =
            calls_and_rows("SELECT g FROM generate_series($1, $2) g WHERE g > $3");
        assert_eq!((calls, rows, toplevel), (5, 15, false));

        Spi::run("SET perf.track = 'top'").unwrap();
        Spi::run("SELECT g FROM generate_series(1, 3) g WHERE g > 0").unwrap();
        let (calls, _, _) = calls_and_rows("SELECT g FROM generate_series($1, $2) g WHERE g > $3");
        assert_eq!(calls, 5, "track = top must not record nested statements");
    }

    #[pg_test]
    fn predicates_are_captured_once_per_statement() {
        Spi::run("SET perf.track = 'all'").unwrap();
        Spi::run("CREATE TABLE pt (a int, b text)").unwrap();
        Spi::run("INSERT INTO pt SELECT g, 'x' || g FROM generate_series(1, 100) g").unwrap();
        for _ in 0..3 {
            Spi::run("SELECT count(*) FROM pt WHERE a > 10 AND b = 'x5'").unwrap();
        }
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM perf.predicates WHERE relation = 'pt'::regclass \
             AND kind = 'filter' AND column_expr IN ('a', 'b')",
        )
        .unwrap();
        assert_eq!(n, Some(2));
    }

    #[pg_test]
    fn disabled_means_nothing_recorded() {
        Spi::run("SET perf.track = 'all'").unwrap();
        Spi::run("SET perf.enabled = off").unwrap();
        Spi::run("SELECT 31337 AS marker_off").unwrap();
        Spi::run("SET perf.enabled = on").unwrap();
        assert_eq!(calls_and_rows("SELECT $1 AS marker_off").0, 0);
    }

    #[pg_test(error = "unknown order_by \"sideways\"")]
    fn slow_queries_rejects_unknown_order() {
        Spi::run("SELECT * FROM perf.slow_queries(5, 'sideways')").unwrap();
    }
}
