//! Incremental views: `perf.create_incremental_view(name, query)` keeps the result of a
//! single-table GROUP BY aggregate query (count/sum/avg/min/max) in a table and maintains
//! it from changes instead of recomputing it.
//!
//! - Writers pay little: statement-level AFTER triggers with transition tables aggregate
//!   each statement's rows per group and append one compact delta row per group to the
//!   view's log (in the writer's transaction: a rollback takes its deltas with it).
//!   TRUNCATE appends a reset marker.
//! - Appliers (`perf.refresh_incremental(view)`, `perf.fresh(view)`, and a scheduler job
//!   created with the view) serialize on an advisory lock, consume the log with
//!   `DELETE ... RETURNING` (each delta exactly once, whatever the commit order of
//!   writers), fold the deltas per group with one MERGE (groups appear, change, vanish at
//!   count 0) and recompute min/max of groups that lost rows from the source. A reset
//!   marker makes the apply recompute the whole view in one statement (one snapshot for
//!   the log it consumes and the source it reads).
//! - Everything generated runs as the view's creator (SECURITY DEFINER, owned by the
//!   creator, `search_path = pg_catalog, pg_temp`, every name qualified by the deparser).
//!
//! `analyze` checks the query and renders its parts; `sqlgen` (pure) writes the SQL; `api`
//! is the SQL surface. Catalog: `perf.incremental_views` (sql/incremental.sql).

pub mod analyze;
pub mod api;
pub mod sqlgen;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pgrx::extension_sql_file!(
    "../../sql/incremental.sql",
    name = "incremental_sql",
    requires = [ivm::api::create_incremental_view, "scheduler_sql"]
);

pub(crate) fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    let mut r = pgrx::pg_sys::panic::ErrorReport::new(code, message, "pg_perf");
    if !hint.is_empty() {
        r = r.set_hint(hint);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// A query outside the supported class: 0A000, saying why, pointing at manage_matview.
pub(crate) fn unsupported(why: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("cannot maintain this query incrementally: {why}"),
        "Incremental views support one table, GROUP BY keys that are all selected, and bare \
         count/sum/avg/min/max aggregates with immutable expressions. For other queries \
         create a materialized view and keep it fresh with perf.manage_matview().",
    )
}
