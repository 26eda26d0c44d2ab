//! The what-if planner as the selection's cost oracle, and the final pruning pass that asks
//! it whether each chosen index still pays for itself.

use std::collections::HashMap;

use pgrx::pg_sys;

use super::guard::in_subtransaction;
use super::model::*;
use super::output::index_ddl;
use super::selection::{may_use_any, CostOracle, SelectionResult};
use super::shorten::{shorten_chosen, MIN_DENSITY_SHARE};
use super::whatif::{self, ParsedIndexes, Session};
use super::workload::PlanTexts;

/// The what-if planner as the selection's cost oracle. It answers each (statement, indexes
/// on the tables that statement reads) once per advice: the selection and the final pruning
/// pass share its cache, so no statement is planned twice under the same configuration.
pub(super) struct WhatIfOracle<'a> {
    /// Text to plan, and whether it must call only built-in code (another role's).
    pub(super) texts: &'a HashMap<QueryId, PlanTexts>,
    pub(super) tables: &'a HashMap<TableId, TableInfo>,
    /// Each statement's shape: which tables it reads, and on which columns.
    pub(super) shapes: HashMap<QueryId, &'a QueryShape>,
    pub(super) cache: HashMap<(QueryId, Vec<String>), Option<f64>>,
    /// What-if sessions started and statement texts planned (for the DEBUG1 line).
    pub(super) sessions: u64,
    pub(super) plans: u64,
    /// Time spent starting what-if sessions (parsing the hypothetical indexes).
    pub(super) session_time: std::time::Duration,
    /// Hypothetical indexes parsed once for all requests, and each candidate's name in
    /// them (stable, so that the same index is the same definition in every request).
    parsed: ParsedIndexes,
    names: HashMap<CandidateSignature, usize>,
}

/// Runs `f` in a fresh memory context, deleted afterwards (nothing `f` allocates in the
/// current context may outlive it).
fn in_scratch_context<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: a child of the current context, current only while `f` runs; an ERROR
    // escaping `f` leaves it to be freed with its parent.
    unsafe {
        let parent = pg_sys::CurrentMemoryContext;
        let scratch = pg_sys::AllocSetContextCreateExtended(
            parent,
            c"pg_perf what-if request".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        pg_sys::MemoryContextSwitchTo(scratch);
        let r = f();
        pg_sys::MemoryContextSwitchTo(parent);
        pg_sys::MemoryContextDelete(scratch);
        r
    }
}

impl<'a> WhatIfOracle<'a> {
    pub(super) fn new(
        texts: &'a HashMap<QueryId, PlanTexts>,
        tables: &'a HashMap<TableId, TableInfo>,
        workload: &'a Workload,
    ) -> Self {
        WhatIfOracle {
            texts,
            tables,
            shapes: workload.queries.iter().map(|q| (q.query_id, q)).collect(),
            cache: HashMap::new(),
            sessions: 0,
            plans: 0,
            session_time: std::time::Duration::ZERO,
            parsed: ParsedIndexes::new(),
            names: HashMap::new(),
        }
    }
}

impl CostOracle for WhatIfOracle<'_> {
    fn workload_query_cost(&mut self, query: QueryId, config: &[IndexCandidate]) -> Option<f64> {
        let (texts, foreign) = self.texts.get(&query)?;
        // Only the indexes the statement may use (on a table it reads, leading key among the
        // columns it filters, joins, sorts or groups on, or partial): the cache key leaves
        // out the rest, so configurations that differ only in indexes it cannot use share one
        // plan. The selection makes the same call (`may_use_any`) when it decides which
        // statements a move re-plans.
        let shape = self.shapes.get(&query);
        let mut relevant: Vec<&IndexCandidate> = config
            .iter()
            .filter(|c| shape.is_none_or(|q| q.touches(c.table) && may_use_any(q, c.table, &[*c])))
            .collect();
        relevant.sort_by_key(|c| c.signature());
        relevant.dedup_by_key(|c| c.signature());
        let mut defs = Vec::with_capacity(relevant.len());
        for c in &relevant {
            let table = self.tables.get(&c.table)?;
            let next = self.names.len();
            let n = *self.names.entry(c.signature()).or_insert(next);
            defs.push(index_ddl(c, table, &format!("perf_candidate_{n}"))?);
        }
        let key = (query, defs);
        if let Some(cost) = self.cache.get(&key) {
            return *cost;
        }
        // With sample values: the statement's cost is its samples' costs weighted by their
        // shares (each a custom plan under the same hypothetical indexes).
        // Only the cost is needed (no EXPLAIN, no executor start), and the parse trees and
        // plans of this request are freed with its own memory context: thousands of
        // requests would otherwise pile up in the function call's context.
        self.sessions += 1;
        self.plans += texts.len() as u64;
        let cost = in_scratch_context(|| {
            in_subtransaction(|| {
                let t0 = std::time::Instant::now();
                let _session = Session::start_cached(&key.1, &mut self.parsed);
                self.session_time += t0.elapsed();
                let mut sum = 0.0;
                for (text, share) in texts {
                    sum += share * whatif::plan_cost(text, *foreign);
                }
                sum
            })
        });
        if cost.is_none() {
            // Its subtransaction rolled back: so did any expression sample made in it.
            self.parsed.clear();
        }
        self.cache.insert(key, cost);
        cost
    }
}

/// Which chosen indexes to keep (by position in `result.chosen`) and the workload's cost
/// with only those; kept multicolumn btrees may be shortened in `result` (`shorten`).
pub(super) fn prune(
    result: &mut SelectionResult,
    workload: &Workload,
    oracle: &mut WhatIfOracle,
) -> (Vec<bool>, f64) {
    // Prune, smallest contribution first: an index goes if removing it from the final
    // configuration costs nothing (net of its write overhead: it is redundant, e.g. a BRIN
    // next to a btree on the same column), or if its marginal benefit per byte is under a
    // tenth of the configuration's average (storage spent for little, e.g. a wide index
    // extended for a sliver of the workload). Each check plans the affected statements
    // with and without it.
    let total_saving = (result.baseline_workload_cost - result.final_workload_cost).max(0.0);
    let total_size: f64 = result
        .chosen
        .iter()
        .map(|c| c.size.bytes as f64)
        .sum::<f64>()
        .max(1.0);
    let average_density = total_saving / total_size;
    let mut keep = vec![true; result.chosen.len()];
    let mut order: Vec<usize> = (0..result.chosen.len()).collect();
    order.sort_by(|&a, &b| {
        result.chosen[a]
            .benefit
            .total_cmp(&result.chosen[b].benefit)
    });
    let mut final_cost = result.final_workload_cost;
    for i in order {
        let table = result.chosen[i].candidate.table;
        let config = |without: Option<usize>| -> Vec<IndexCandidate> {
            result
                .chosen
                .iter()
                .enumerate()
                .filter(|(j, _)| keep[*j] && Some(*j) != without)
                .map(|(_, c)| c.candidate.clone())
                .collect()
        };
        let (with, without) = (config(None), config(Some(i)));
        let mut increase = 0.0;
        for q in workload
            .queries
            .iter()
            .filter(|q| q.tables.iter().any(|t| t.table == table))
        {
            let (Some(a), Some(b)) = (
                oracle.workload_query_cost(q.query_id, &with),
                oracle.workload_query_cost(q.query_id, &without),
            ) else {
                increase = f64::INFINITY;
                break;
            };
            increase += q.calls * (b - a);
        }
        let net = increase - result.chosen[i].write_overhead;
        let size = (result.chosen[i].size.bytes as f64).max(8192.0);
        if net <= 0.0 || net / size < MIN_DENSITY_SHARE * average_density {
            keep[i] = false;
            final_cost += increase.max(0.0);
        }
    }
    final_cost += shorten_chosen(result, &keep, workload, oracle, average_density);
    (keep, final_cost)
}
