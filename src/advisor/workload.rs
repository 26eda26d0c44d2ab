//! The advisor's workload: the statements pg_perf captured in this database (read through
//! stats' API, with its text-visibility rule) or an explicit list, each planned once as it
//! is and turned into the model's [`QueryShape`]: the columns its plan filters, joins, sorts
//! and groups on, and the rows its writes add to each table.

use std::collections::HashMap;

use pgrx::pg_sys::{self, Oid};
use pgrx::PgList;

use super::catalog::Catalog;
use super::guard::{in_subtransaction, try_in_subtransaction};
use super::model::*;
use super::normalized::{
    arithmetic_params_as_integer, plannable_text, with_bind_values, with_sample_values,
};
use super::whatif::{self, Planned};
use crate::stats::workload;
use crate::stats::PredicateKind;

/// The table an INSERT/UPDATE/DELETE writes, from its parse tree alone: normalized texts
/// (`$n` for constants) cannot always be planned again (ambiguous parameter types), but
/// their writes must still count against indexes on the table.
pub(super) fn write_target_of(text: &str) -> Option<(u32, pg_sys::CmdType::Type)> {
    let c = std::ffi::CString::new(text).ok()?;
    in_subtransaction(|| {
        // SAFETY: raw parsing (no analysis) and a relation name lookup that may miss.
        unsafe {
            let raw = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(c.as_ptr()));
            if raw.len() != 1 {
                return None;
            }
            let stmt = (*raw.head()?).stmt;
            let (rv, cmd) = match (*stmt).type_ {
                pg_sys::NodeTag::T_InsertStmt => (
                    (*(stmt as *mut pg_sys::InsertStmt)).relation,
                    pg_sys::CmdType::CMD_INSERT,
                ),
                pg_sys::NodeTag::T_UpdateStmt => (
                    (*(stmt as *mut pg_sys::UpdateStmt)).relation,
                    pg_sys::CmdType::CMD_UPDATE,
                ),
                pg_sys::NodeTag::T_DeleteStmt => (
                    (*(stmt as *mut pg_sys::DeleteStmt)).relation,
                    pg_sys::CmdType::CMD_DELETE,
                ),
                _ => return None,
            };
            let relid = pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as i32,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            );
            // Only tables the caller may read: advice must not describe any other.
            let readable = relid != Oid::INVALID
                && pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
                    == pg_sys::AclResult::ACLCHECK_OK;
            readable.then(|| (relid.to_u32(), cmd))
        }
    })
    .flatten()
}

/// One workload statement.
pub(super) struct WorkloadQuery {
    pub(super) queryid: i64,
    pub(super) text: String,
    /// The slowest run's text with its constants, when a slow plan was captured: planned
    /// first (real selectivities, and it always parses), the normalized text otherwise.
    pub(super) sample: Option<String>,
    /// Sample values kept for it (`perf.capture_sample_values`): how many captures saw
    /// each sample, and its `($n, literal)` pairs. Planned first, each with its share of
    /// the statement's weight.
    pub(super) values: Vec<(f64, Vec<(u32, String)>)>,
    pub(super) calls: f64,
    /// Rows processed over all calls (rows written, for a write statement).
    pub(super) rows: f64,
    /// The caller ran this statement (or passed it): it may be planned even when it calls
    /// user-defined functions. Other roles' statements are planned only when they call
    /// nothing but built-in code (planning folds immutable calls, i.e. runs them).
    pub(super) own: bool,
    /// The caller may read its text (pg_stat_statements' rule).
    pub(super) visible: bool,
}

/// How many captured statements the advisor plans at most (those with the most time).
const MAX_CAPTURED: usize = 200;

/// A captured statement the advisor left out, and why.
pub(super) struct Skipped {
    pub(super) queryid: i64,
    /// The text as stats shows it to the caller.
    pub(super) text: String,
    pub(super) calls: i64,
    pub(super) reason: String,
}

impl Skipped {
    pub(super) fn of(q: &WorkloadQuery, reason: String) -> Skipped {
        Skipped {
            queryid: q.queryid,
            text: if q.visible {
                q.text.clone()
            } else {
                workload::HIDDEN.to_string()
            },
            calls: q.calls as i64,
            reason,
        }
    }
}

/// The statements pg_perf captured in this database that can be planned (no utility
/// statements, none of pg_perf's or the catalogs'), merged over roles and top level, the 200
/// that took the most time first; each with its slowest run's sample when one was captured.
/// Second: the ones beyond those 200, reported as left out.
pub(super) fn captured_workload() -> (Vec<WorkloadQuery>, Vec<Skipped>) {
    let mut by_id: HashMap<i64, (WorkloadQuery, f64)> = HashMap::new();
    for e in workload::statements() {
        let lower = e.text.trim_start().to_ascii_lowercase();
        let plannable = ["select", "with", "update", "delete", "insert"]
            .iter()
            .any(|k| lower.starts_with(k));
        if e.calls == 0 || !plannable || lower.contains("perf.") || lower.contains("pg_catalog.") {
            continue;
        }
        let entry = by_id.entry(e.queryid).or_insert_with(|| {
            (
                WorkloadQuery {
                    queryid: e.queryid,
                    text: e.text.clone(),
                    sample: None,
                    values: Vec::new(),
                    calls: 0.0,
                    rows: 0.0,
                    own: false,
                    visible: false,
                },
                0.0,
            )
        });
        entry.0.own |= e.own;
        entry.0.visible |= e.visible;
        entry.0.calls += e.calls as f64;
        entry.0.rows += e.rows as f64;
        entry.1 += e.total_time_ms;
    }
    for (queryid, sample, params) in workload::slow_run_samples() {
        if let Some((q, _)) = by_id.get_mut(&queryid) {
            // An extended-protocol run's text has `$n`: write its bind values in, so that
            // it gets a custom plan (real selectivities) as a simple-protocol run does.
            let with_values = (!params.is_empty())
                .then(|| with_bind_values(&sample, &params))
                .flatten();
            q.sample = Some(with_values.unwrap_or(sample));
        }
    }
    for (queryid, list) in workload::value_samples() {
        if let Some((q, _)) = by_id.get_mut(&queryid) {
            q.values = list
                .into_iter()
                .map(|s| (s.seen.max(1) as f64, s.values))
                .collect();
        }
    }
    let mut all: Vec<(WorkloadQuery, f64)> = by_id.into_values().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    let rest = all.split_off(all.len().min(MAX_CAPTURED));
    let skipped = rest
        .iter()
        .map(|(q, _)| {
            Skipped::of(
                q,
                format!("outside the {MAX_CAPTURED} statements with the most total execution time"),
            )
        })
        .collect();
    (all.into_iter().map(|(q, _)| q).collect(), skipped)
}

/// The statements of an explicit list (`perf.suggest_indexes(queries => ...)`), the caller's
/// own: the same text given several times is one statement called several times.
pub(super) fn explicit_workload(list: Vec<Option<String>>) -> Vec<WorkloadQuery> {
    let mut merged: Vec<WorkloadQuery> = Vec::new();
    for text in whatif::no_nulls(list, "queries", "statement texts") {
        match merged.iter_mut().find(|q| q.text == text) {
            Some(q) => {
                q.calls += 1.0;
                q.rows += 1.0;
            }
            None => merged.push(WorkloadQuery {
                queryid: 0,
                text,
                sample: None,
                values: Vec::new(),
                calls: 1.0,
                rows: 1.0,
                own: true,
                visible: true,
            }),
        }
    }
    merged
}

/// The texts the oracle plans for one statement, each with its share of the statement's
/// weight (one text with share 1 unless it has sample values), and whether it is another
/// role's statement.
pub(super) type PlanTexts = (Vec<(String, f64)>, bool);

/// The workload planned once as it is: per planned statement (by its index in the
/// workload) the texts the oracle plans; the shapes; the
/// tables involved; rows written per table by the workload's own write statements.
pub(super) struct PlannedWorkload {
    pub(super) texts: HashMap<QueryId, PlanTexts>,
    pub(super) shapes: Vec<QueryShape>,
    pub(super) relids: Vec<u32>,
    pub(super) writes: HashMap<u32, (f64, f64, f64)>,
    /// Statements (by index in the workload) that could not be planned, and why.
    pub(super) skipped: Vec<(usize, String)>,
}

/// Plans every statement of the workload as it is (the slowest run's sample first).
pub(super) fn plan_workload(
    workload_queries: &[WorkloadQuery],
    catalog: &mut Catalog,
) -> PlannedWorkload {
    let mut texts: HashMap<QueryId, PlanTexts> = HashMap::new();
    let mut shapes = Vec::new();
    let mut relids: Vec<u32> = Vec::new();
    // Rows written per table by the workload's own write statements: the same period as its
    // reads (pg_stat_all_tables would also count bulk loads and anything before).
    let mut writes: HashMap<u32, (f64, f64, f64)> = HashMap::new();
    let mut skipped = Vec::new();
    for (i, q) in workload_queries.iter().enumerate() {
        // An explicit list must plan: its errors are the caller's to see.
        let foreign = !q.own;
        // A normalized typed literal (`timestamptz $2`) is not valid SQL: plan it as the
        // cast it stands for (`$2::timestamptz`).
        let text = plannable_text(&q.text).unwrap_or_else(|| q.text.clone());
        // Sample values: each sample planned with its values (a custom plan), its share of
        // the statement's weight by how many captures saw it. The shape comes from the
        // most seen sample that plans.
        // Samples the planner sees alike (the same estimates: every predicate's selectivity
        // and the result rows within 25%) plan alike under any indexes: planned once, with
        // their weights added up.
        let mut with_values: Vec<(String, f64)> = Vec::new();
        let mut seen_estimates: Vec<Vec<f64>> = Vec::new();
        let mut first_plan = None;
        for (seen, values) in &q.values {
            let t = with_sample_values(&q.text, values);
            let t = plannable_text(&t).unwrap_or(t);
            if let Some(p) = in_subtransaction(|| whatif::plan_checked(&t, foreign)) {
                let estimates = plan_estimates(&p);
                match seen_estimates.iter().position(|e| alike(e, &estimates)) {
                    Some(k) => with_values[k].1 += *seen,
                    None => {
                        seen_estimates.push(estimates);
                        with_values.push((t, *seen));
                    }
                }
                first_plan.get_or_insert(p);
            }
        }
        if let Some(planned) = first_plan {
            let total: f64 = with_values.iter().map(|(_, w)| w).sum::<f64>().max(1e-9);
            for (_, w) in &mut with_values {
                *w /= total;
            }
            note_writes(&text, q.rows, &mut writes, &mut relids);
            let id = i as QueryId;
            let shape = shape_of(id, q.calls, &planned, catalog);
            for t in &shape.tables {
                if !relids.contains(&t.table) {
                    relids.push(t.table);
                }
            }
            texts.insert(id, (with_values, foreign));
            shapes.push(shape);
            continue;
        }
        let sample_plan = q.sample.as_ref().and_then(|t| {
            in_subtransaction(|| whatif::plan_checked(t, foreign)).map(|p| (t.clone(), p))
        });
        let (plan_text, planned) = match sample_plan {
            Some((t, p)) => (t, Some(p)),
            None if q.queryid == 0 => (text.clone(), Some(whatif::plan(&text))),
            None => match try_in_subtransaction(|| whatif::plan_checked(&text, foreign)) {
                Ok(p) => (text.clone(), Some(p)),
                // Parameters whose type the planner cannot infer (`$2::date + $3`): once
                // more with integers next to arithmetic operators.
                Err(message) => match arithmetic_params_as_integer(&text).and_then(|t| {
                    in_subtransaction(|| whatif::plan_checked(&t, foreign)).map(|p| (t, p))
                }) {
                    Some((t, p)) => (t, Some(p)),
                    None => {
                        skipped.push((i, format!("could not be planned: {message}")));
                        (text.clone(), None)
                    }
                },
            },
        };
        note_writes(&text, q.rows, &mut writes, &mut relids);
        let Some(planned) = planned else { continue };
        let id = i as QueryId;
        let shape = shape_of(id, q.calls, &planned, catalog);
        for t in &shape.tables {
            if !relids.contains(&t.table) {
                relids.push(t.table);
            }
        }
        texts.insert(id, (vec![(plan_text, 1.0)], foreign));
        shapes.push(shape);
    }
    PlannedWorkload {
        texts,
        shapes,
        relids,
        writes,
        skipped,
    }
}

/// What the planner estimated for a plan: the result rows and each predicate's
/// selectivity, in plan order.
fn plan_estimates(p: &Planned) -> Vec<f64> {
    std::iter::once(p.rows)
        .chain(p.predicates.iter().map(|r| r.est_selectivity as f64))
        .collect()
}

/// Two plans' estimates are alike: as many, each pair within 25% (or both tiny).
fn alike(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&x, &y)| {
            let (lo, hi) = (x.min(y), x.max(y));
            hi <= 1e-9 || (lo > 0.0 && hi / lo <= 1.25)
        })
}

/// Counts a write statement's rows against the table it writes.
fn note_writes(
    text: &str,
    rows: f64,
    writes: &mut HashMap<u32, (f64, f64, f64)>,
    relids: &mut Vec<u32>,
) {
    if let Some((relid, command)) = write_target_of(text) {
        let w = writes.entry(relid).or_default();
        match command {
            pg_sys::CmdType::CMD_INSERT => w.0 += rows,
            pg_sys::CmdType::CMD_UPDATE => w.1 += rows,
            _ => w.2 += rows,
        }
        if !relids.contains(&relid) {
            relids.push(relid);
        }
    }
}

fn shape_of(id: QueryId, calls: f64, planned: &Planned, catalog: &mut Catalog) -> QueryShape {
    let mut by_table: Vec<TableAccess> = Vec::new();
    fn access(by_table: &mut Vec<TableAccess>, relid: u32) -> usize {
        match by_table.iter().position(|t| t.table == relid) {
            Some(i) => i,
            None => {
                by_table.push(TableAccess {
                    table: relid,
                    predicates: Vec::new(),
                    join_columns: Vec::new(),
                    order_by: Vec::new(),
                    group_by: Vec::new(),
                    referenced_columns: None,
                });
                by_table.len() - 1
            }
        }
    }
    for p in &planned.predicates {
        let Some(kind) = PredicateKind::from_u8(p.kind) else {
            continue;
        };
        let Some(target) = catalog.target(p) else {
            continue;
        };
        let i = access(&mut by_table, p.relid);
        match kind {
            PredicateKind::Filter | PredicateKind::IndexCond => {
                if let Some(operator) = catalog.predicate_operator(p, &target) {
                    let selectivity = if p.est_selectivity >= 0.0 {
                        p.est_selectivity as f64
                    } else {
                        0.1
                    };
                    by_table[i].predicates.push(PredicateUse {
                        target,
                        operator,
                        selectivity,
                        rare_constant: None,
                    });
                }
            }
            PredicateKind::Join => {
                if let KeyTarget::Column(c) = target {
                    by_table[i].join_columns.push(c);
                }
            }
            PredicateKind::Sort => by_table[i].order_by.push(SortItem {
                target,
                direction: SortDirection::ASC,
            }),
            PredicateKind::Group => by_table[i].group_by.push(SortItem {
                target,
                direction: SortDirection::ASC,
            }),
        }
    }
    QueryShape {
        query_id: id,
        calls,
        limit: planned.limited.then_some(100),
        tables: by_table,
    }
}
