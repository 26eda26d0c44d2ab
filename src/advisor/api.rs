//! `perf.suggest_indexes()`: the workload (captured statements, or an explicit list) is
//! planned once as it is; the columns each plan filters, joins, sorts and groups on become
//! the advisor's model (with table and column statistics from the catalogs); the pure core
//! generates candidates and selects them Extend-style under `perf.advisor_budget_mb`, asking
//! the what-if planner what each configuration costs.
//!
//! The steps live next door: `workload.rs` (which statements, planned once), `catalog.rs`
//! (table, column, operator and index facts), `oracle.rs` (the what-if cost oracle and the
//! final pruning), `output.rs` (the rows).

use pgrx::prelude::*;

use super::candidates::generate_candidates;
use super::catalog::{existing_indexes, tables_of, Catalog};
use super::model::*;
use super::oracle::{prune, WhatIfOracle};
use super::output::{self, SuggestionRow};
use super::selection::{select_indexes, SelectionSettings};
use super::workload::{
    captured_workload, explicit_workload, plan_workload, PlannedWorkload, Skipped,
};
use crate::pg::try_catch::rethrowing;

/// Index suggestions for the workload: CREATE INDEX statements chosen together under the
/// storage budget (`perf.advisor_budget_mb`), weighing each index's benefit for every
/// statement against its size and write cost, plus existing indexes worth dropping.
/// `queries`: plan these instead of the statements pg_perf captured in this database.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn suggest_indexes(
    queries: default!(Option<Vec<Option<String>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(action, String),
        name!(table_name, String),
        name!(index_ddl, String),
        name!(estimated_size, i64),
        name!(workload_cost_before, f64),
        name!(workload_cost_after, f64),
        name!(improvement_pct, f64),
        name!(queries_helped, pgrx::JsonB),
        name!(write_overhead, f64),
        name!(reason, String),
    ),
> {
    // SAFETY: the argument moves into the closure, so the frames between pgrx's wrapper and
    // a re-thrown ERROR (a captured statement's parse or plan error) hold nothing to drop.
    unsafe { rethrowing(move || suggest_indexes_impl(queries)) }
}

fn suggest_indexes_impl(
    queries: Option<Vec<Option<String>>>,
) -> TableIterator<'static, SuggestionRow> {
    let captured = queries.is_none();
    let (workload_queries, mut skipped) = match queries {
        Some(list) => (explicit_workload(list), Vec::new()),
        None => captured_workload(),
    };
    let started = std::time::Instant::now();
    let mut catalog = Catalog::default();
    let PlannedWorkload {
        texts,
        shapes,
        relids,
        writes,
        skipped: unplanned,
    } = plan_workload(&workload_queries, &mut catalog);
    let beyond = skipped.len();
    skipped.extend(
        unplanned
            .into_iter()
            .map(|(i, reason)| Skipped::of(&workload_queries[i], reason)),
    );
    let tables = tables_of(&relids, &writes);
    let existing: Vec<ExistingIndex> = relids
        .iter()
        .flat_map(|&r| existing_indexes(r, &mut catalog))
        .collect();
    let workload = Workload {
        tables: tables.values().cloned().collect(),
        existing_indexes: existing.clone(),
        queries: shapes,
    };
    let candidates = generate_candidates(&workload);
    pgrx::debug1!(
        "pg_perf advisor: {} statements, {} tables, {} existing indexes, {} candidates: {:?}",
        workload.queries.len(),
        workload.tables.len(),
        workload.existing_indexes.len(),
        candidates.len(),
        candidates
            .iter()
            .map(|c| c.candidate.to_string())
            .collect::<Vec<_>>()
    );
    let settings = SelectionSettings {
        storage_budget_bytes: crate::gucs::advisor_budget_mb().max(1) as u64 * 1024 * 1024,
        ..SelectionSettings::default()
    };
    let planned_at = started.elapsed();
    let mut oracle = WhatIfOracle::new(&texts, &tables, &workload);
    let mut result = select_indexes(&workload, &candidates, &mut oracle, &settings);
    let selected_at = started.elapsed();
    let (search_sessions, search_plans, search_session_time) =
        (oracle.sessions, oracle.plans, oracle.session_time);
    pgrx::debug1!(
        "pg_perf advisor: baseline {:.1}, final {:.1}, {} chosen, {} oracle calls, unplannable {:?}, shapes {:?}",
        result.baseline_workload_cost,
        result.final_workload_cost,
        result.chosen.len(),
        result.oracle_calls,
        result.unplannable_queries,
        workload.queries
    );

    skipped.extend(result.unplannable_queries.iter().filter_map(|&id| {
        workload_queries.get(id as usize).map(|q| {
            Skipped::of(
                q,
                "the what-if planner could not plan it with candidate indexes".into(),
            )
        })
    }));
    if !skipped.is_empty() {
        let total = workload_queries.len() + beyond;
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "pg_perf advisor: {} of {} {} statements were left out of the advice",
                skipped.len(),
                total,
                if captured { "captured" } else { "given" }
            ),
            "pg_perf",
        )
        .set_hint("SELECT * FROM perf.advisor_skipped() lists them with the reason.")
        .report(PgLogLevel::NOTICE);
    }

    let (keep, final_cost) = prune(&mut result, &workload, &mut oracle);
    pgrx::debug1!(
        "pg_perf advisor timing: workload planned {:.3} s; selection {:.3} s ({} what-if sessions started in {:.3} s, {} plans); pruning {:.3} s ({} sessions, {} plans)",
        planned_at.as_secs_f64(),
        (selected_at - planned_at).as_secs_f64(),
        search_sessions,
        search_session_time.as_secs_f64(),
        search_plans,
        (started.elapsed() - selected_at).as_secs_f64(),
        oracle.sessions - search_sessions,
        oracle.plans - search_plans,
    );
    TableIterator::new(output::rows(
        &workload_queries,
        &tables,
        &existing,
        &result,
        &keep,
        final_cost,
    ))
}

/// The captured statements `perf.suggest_indexes()` leaves out of its advice, and why: those
/// it cannot plan (the error), those beyond the 200 with the most time, those the what-if
/// planner could not plan with candidate indexes. Utility statements (no plan to compare)
/// and pg_perf's own or catalog queries are not workload and are not listed. `query` follows
/// `perf.statements`' visibility rule.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn advisor_skipped() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(query, String),
        name!(calls, i64),
        name!(reason, String),
    ),
> {
    // SAFETY: nothing to drop between pgrx's wrapper and a re-thrown ERROR.
    unsafe { rethrowing(advisor_skipped_impl) }
}

fn advisor_skipped_impl() -> TableIterator<'static, (i64, String, i64, String)> {
    let (workload_queries, mut skipped) = captured_workload();
    let mut catalog = Catalog::default();
    let planned = plan_workload(&workload_queries, &mut catalog);
    skipped.extend(
        planned
            .skipped
            .into_iter()
            .map(|(i, reason)| Skipped::of(&workload_queries[i], reason)),
    );
    skipped.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.queryid.cmp(&b.queryid)));
    TableIterator::new(
        skipped
            .into_iter()
            .map(|s| (s.queryid, s.text, s.calls, s.reason)),
    )
}
