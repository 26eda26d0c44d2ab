//! Workload-level index selection (Extend, Schlosser et al., ICDE 2019) and the report of
//! existing indexes worth dropping.
//!
//! Extend is a greedy search over index configurations. It starts from the empty
//! configuration; each step evaluates
//! - adding any single-column candidate,
//! - extending an already chosen btree by one more key column (the extended index
//!   replaces the chosen one), and
//! - adding any other candidate (multicolumn, partial, expression, covering, GIN, BRIN)
//!   as an atomic option,
//!
//! and applies the option with the best net benefit (workload cost reduction minus added
//! write overhead) per byte of added storage. It stops when no option has a positive net
//! benefit or the storage budget does not fit any improving option.
//!
//! Costs come from a [`CostOracle`] (the what-if planner on the pgrx side). Requests are
//! memoized by (query, the configuration's indexes on the tables that query reads): most
//! requests of a greedy search repeat, and planning is the expensive part.
//!
//! Write overhead follows pganalyze's model: an index costs, per written row, a share of
//! the row's write cost equal to (index entry size / heap row size) × (fraction of rows
//! the index holds); see [`SelectionSettings::write_cost_per_row`] for the unit.
//!
//! Nothing here panics: NaN/negative/infinite oracle answers are treated as "could not
//! plan", and every loop is bounded.

use std::collections::HashMap;

use super::candidates::{classify, covering_existing_index, CandidateKind, GeneratedCandidate};
use super::model::{
    finite_or, CandidateSignature, ExistingIndex, IndexCandidate, IndexKey, IndexMethod, KeyTarget,
    QueryId, QueryShape, TableId, Workload,
};
use super::size::{estimate_candidate, IndexSizeEstimate, PAGE_BYTES};

/// Upper bound on a query's weight (calls per period).
const MAX_CALLS: f64 = 1e15;

/// Source of planner costs for hypothetical configurations.
pub trait CostOracle {
    /// Estimated cost (planner units) of one execution of `query` when the existing
    /// indexes plus the hypothetical indexes in `config` are available; `None` when the
    /// query cannot be planned. `config` holds only indexes on tables the query reads,
    /// in a canonical order.
    fn workload_query_cost(&mut self, query: QueryId, config: &[IndexCandidate]) -> Option<f64>;
}

/// Memoizing wrapper around a [`CostOracle`], keyed by query and the relevant part of the
/// configuration, so the same request never reaches the planner twice.
pub struct MemoizedOracle<'o, O: CostOracle + ?Sized> {
    inner: &'o mut O,
    cache: HashMap<(QueryId, Vec<CandidateSignature>), Option<f64>>,
    oracle_calls: u64,
    cache_hits: u64,
}

impl<'o, O: CostOracle + ?Sized> MemoizedOracle<'o, O> {
    /// Wraps an oracle with an empty cache.
    pub fn new(inner: &'o mut O) -> Self {
        MemoizedOracle {
            inner,
            cache: HashMap::new(),
            oracle_calls: 0,
            cache_hits: 0,
        }
    }

    /// Cost of one execution of `query` under `config` (indexes on other tables are
    /// ignored); `None` when the oracle cannot plan it or answers garbage.
    pub fn query_cost(&mut self, query: &QueryShape, config: &[IndexCandidate]) -> Option<f64> {
        // Only indexes the statement may use (see `may_use_any`): configurations that differ
        // in others share one cache entry (with one big table, most of them do).
        let mut relevant: Vec<(CandidateSignature, &IndexCandidate)> = config
            .iter()
            .filter(|c| query.touches(c.table) && may_use_any(query, c.table, &[*c]))
            .map(|c| (c.signature(), c))
            .collect();
        relevant.sort_by(|a, b| a.0.cmp(&b.0));
        relevant.dedup_by(|a, b| a.0 == b.0);
        let (signatures, indexes): (Vec<CandidateSignature>, Vec<IndexCandidate>) =
            relevant.into_iter().map(|(s, c)| (s, c.clone())).unzip();
        let key = (query.query_id, signatures);
        if let Some(&cost) = self.cache.get(&key) {
            self.cache_hits = self.cache_hits.saturating_add(1);
            return cost;
        }
        self.oracle_calls = self.oracle_calls.saturating_add(1);
        let cost = self
            .inner
            .workload_query_cost(query.query_id, &indexes)
            .filter(|c| c.is_finite() && *c >= 0.0);
        self.cache.insert(key, cost);
        cost
    }

    /// Requests that reached the wrapped oracle.
    pub fn oracle_calls(&self) -> u64 {
        self.oracle_calls
    }

    /// Requests answered from the cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits
    }
}

/// Knobs of the selection.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionSettings {
    /// Maximum total estimated size of the proposed indexes, in bytes.
    pub storage_budget_bytes: u64,
    /// Maximum number of proposed indexes.
    pub max_indexes: usize,
    /// Maximum key columns Extend grows a btree to.
    pub max_key_columns: usize,
    /// Planner cost units charged per written row (insert, non-HOT update, half a
    /// delete) for an index whose entry is as large as the heap row; smaller entries are
    /// charged proportionally. The default 1.0 equals `seq_page_cost`, i.e. one page of
    /// sequential work per row: an index insertion descends the tree and dirties a leaf
    /// page that must later be written and WAL-logged. It is an assumption, not a
    /// measurement; raise it for write-sensitive systems.
    pub write_cost_per_row: f64,
    /// An option must save at least this fraction of the baseline workload cost (net of
    /// write overhead); filters planner noise. The default 0.01% keeps an index that
    /// makes a query worth 0.1% of the workload 10% faster.
    pub min_benefit_fraction: f64,
    /// Upper bound on greedy steps (each step evaluates every option once).
    pub max_steps: usize,
}

impl Default for SelectionSettings {
    fn default() -> Self {
        SelectionSettings {
            storage_budget_bytes: 1 << 30,
            max_indexes: 20,
            max_key_columns: 4,
            write_cost_per_row: 1.0,
            min_benefit_fraction: 0.0001,
            max_steps: 64,
        }
    }
}

/// Why the greedy search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// No option improves the workload's net cost.
    NoImprovement,
    /// Improving options exist but none fits the remaining storage budget.
    BudgetExhausted,
    /// `max_indexes` indexes are chosen and no extension improves further.
    MaxIndexes,
    /// `max_steps` reached.
    MaxSteps,
    /// No plannable query in the workload.
    NoQueries,
}

/// Cost saved for one query by one chosen index.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySaving {
    /// Query.
    pub query_id: QueryId,
    /// Calls in the workload period.
    pub calls: f64,
    /// Cost saved over the workload period (calls × per-call saving).
    pub saved_cost: f64,
}

/// An index the selection proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenIndex {
    /// The index.
    pub candidate: IndexCandidate,
    /// Its kind.
    pub kind: CandidateKind,
    /// Estimated size.
    pub size: IndexSizeEstimate,
    /// Workload cost saved thanks to this index (its share of the greedy steps that
    /// built it; the shares of all chosen indexes add up to the total saving).
    pub benefit: f64,
    /// Write overhead per workload period, in the same cost units.
    pub write_overhead: f64,
    /// Savings per query, largest first.
    pub query_savings: Vec<QuerySaving>,
    /// Human-readable explanation.
    pub reason: String,
}

/// Cost of one query before and after the proposed indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryCostChange {
    /// Query.
    pub query_id: QueryId,
    /// Calls in the workload period.
    pub calls: f64,
    /// Cost per call with the existing indexes only.
    pub cost_before: f64,
    /// Cost per call with the proposed indexes added.
    pub cost_after: f64,
}

/// Outcome of [`select_indexes`].
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionResult {
    /// Proposed indexes, in the order they were first chosen.
    pub chosen: Vec<ChosenIndex>,
    /// Per-query costs, in workload order (plannable queries only).
    pub query_costs: Vec<QueryCostChange>,
    /// Σ calls × cost with existing indexes only.
    pub baseline_workload_cost: f64,
    /// Σ calls × cost with the proposal.
    pub final_workload_cost: f64,
    /// Estimated size of all proposed indexes.
    pub total_size_bytes: u64,
    /// Write overhead of all proposed indexes per workload period.
    pub total_write_overhead: f64,
    /// Queries the oracle could not plan (left out of the workload).
    pub unplannable_queries: Vec<QueryId>,
    /// Requests that reached the oracle.
    pub oracle_calls: u64,
    /// Requests answered from the memo cache.
    pub cache_hits: u64,
    /// Greedy steps applied.
    pub steps: usize,
    /// Why the search ended.
    pub stop_reason: StopReason,
}

/// A chosen index while the search runs.
#[derive(Debug, Clone)]
struct Selected {
    candidate: IndexCandidate,
    signature: CandidateSignature,
    size: IndexSizeEstimate,
    write_overhead: f64,
    /// Per-query savings attributed so far.
    savings: HashMap<QueryId, f64>,
    /// Order of first choice, to report in a stable order.
    first_step: usize,
}

/// One move of the greedy search.
#[derive(Debug, Clone)]
enum Move {
    /// Add a candidate.
    Add(IndexCandidate),
    /// Replace chosen index `index` by `extended` (one more key column).
    Extend {
        index: usize,
        extended: IndexCandidate,
    },
}

impl Move {
    /// The index this move leads to, as text: the same move at every step.
    fn key(&self) -> String {
        match self {
            Move::Add(c) => format!("add {c}"),
            Move::Extend { extended, .. } => format!("extend {extended}"),
        }
    }

    fn table(&self) -> TableId {
        match self {
            Move::Add(c) | Move::Extend { extended: c, .. } => c.table,
        }
    }
}

/// Result of evaluating a move.
struct Evaluation {
    config: Vec<Selected>,
    costs: Vec<(usize, f64)>,
    net_benefit: f64,
    score: f64,
    new_index: usize,
    absorbed: Vec<usize>,
}

/// Chooses indexes for the workload among `candidates` (from
/// [`super::candidates::generate_candidates`]) with the Extend greedy search.
pub fn select_indexes<O: CostOracle + ?Sized>(
    workload: &Workload,
    candidates: &[GeneratedCandidate],
    oracle: &mut O,
    settings: &SelectionSettings,
) -> SelectionResult {
    let mut memo = MemoizedOracle::new(oracle);
    let mut search = Search::new(workload, settings);

    // Baseline: existing indexes only. Unplannable queries leave the workload.
    let mut unplannable = Vec::new();
    for query in &workload.queries {
        // Capped so that calls × cost stays finite for any sane cost.
        let calls = finite_or(query.calls, 0.0).min(MAX_CALLS);
        if calls <= 0.0 {
            continue;
        }
        match memo.query_cost(query, &[]) {
            Some(cost) => search.queries.push((query, calls, cost)),
            None => unplannable.push(query.query_id),
        }
    }
    search.current = search.queries.iter().map(|q| q.2).collect();
    let baseline: f64 = search
        .queries
        .iter()
        .map(|(_, calls, cost)| calls * cost)
        .sum();

    let mut steps = 0;
    // Lazy greedy (as CELF): a move's score at an earlier step bounds its score now (adding
    // indexes rarely makes another one worth more), so moves are evaluated best bound first
    // and the step stops once the best score found beats every remaining bound.
    let mut bounds: HashMap<String, f64> = HashMap::new();
    let stop_reason = if search.queries.is_empty() {
        StopReason::NoQueries
    } else {
        loop {
            if steps >= settings.max_steps {
                break StopReason::MaxSteps;
            }
            let moves = search.moves(candidates);
            let threshold = finite_or(settings.min_benefit_fraction, 0.0).max(0.0) * baseline;
            let mut best: Option<Evaluation> = None;
            let mut blocked_by_budget = false;
            let mut blocked_by_count = false;
            let mut moves: Vec<(String, f64, Move)> = moves
                .into_iter()
                .map(|mv| {
                    let key = mv.key();
                    let bound = bounds.get(&key).copied().unwrap_or(f64::INFINITY);
                    (key, bound, mv)
                })
                .collect();
            moves.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (key, bound, mv) in moves {
                if best.as_ref().is_some_and(|b| b.score >= bound) {
                    break;
                }
                let Some(eval) = search.evaluate(&mv, &mut memo) else {
                    bounds.insert(key, f64::NEG_INFINITY);
                    continue;
                };
                bounds.insert(
                    key,
                    if eval.score.is_finite() {
                        eval.score
                    } else {
                        f64::NEG_INFINITY
                    },
                );
                if !eval.score.is_finite()
                    || eval.net_benefit <= threshold
                    || eval.net_benefit <= 0.0
                {
                    continue;
                }
                let size: u64 = eval
                    .config
                    .iter()
                    .map(|s| s.size.bytes)
                    .fold(0, u64::saturating_add);
                if size > settings.storage_budget_bytes {
                    blocked_by_budget = true;
                    continue;
                }
                if eval.config.len() > settings.max_indexes {
                    blocked_by_count = true;
                    continue;
                }
                if best.as_ref().is_none_or(|b| eval.score > b.score) {
                    best = Some(eval);
                }
            }
            match best {
                Some(eval) => {
                    search.apply(eval, steps);
                    steps += 1;
                }
                None if blocked_by_budget => break StopReason::BudgetExhausted,
                None if blocked_by_count => break StopReason::MaxIndexes,
                None => break StopReason::NoImprovement,
            }
        }
    };

    search.finish(
        baseline,
        unplannable,
        memo.oracle_calls(),
        memo.cache_hits(),
        steps,
        stop_reason,
    )
}

/// State of the greedy search.
struct Search<'w> {
    workload: &'w Workload,
    settings: &'w SelectionSettings,
    /// (query, calls, baseline cost per call) of plannable queries.
    queries: Vec<(&'w QueryShape, f64, f64)>,
    /// Current cost per call of each query in `queries`.
    current: Vec<f64>,
    chosen: Vec<Selected>,
}

impl<'w> Search<'w> {
    fn new(workload: &'w Workload, settings: &'w SelectionSettings) -> Self {
        Search {
            workload,
            settings,
            queries: Vec::new(),
            current: Vec::new(),
            chosen: Vec::new(),
        }
    }

    /// Every move of this step, in a deterministic order.
    fn moves(&self, candidates: &[GeneratedCandidate]) -> Vec<Move> {
        let mut moves = Vec::new();
        // Nothing a chosen index already gives (a prefix of it, a BRIN beside a btree on
        // the same leading column) is ever proposed next to it.
        let chosen_covers = |c: &IndexCandidate| {
            self.chosen
                .iter()
                .any(|s| s.candidate.shape().makes_redundant(&c.shape()))
        };
        // (a) single-column seeds, then (c) atomic candidates.
        for kind_is_single in [true, false] {
            for g in candidates {
                if (g.kind == CandidateKind::SingleColumn) != kind_is_single
                    || chosen_covers(&g.candidate)
                    || covering_existing_index(&g.candidate, &self.workload.existing_indexes)
                        .is_some()
                    || self.workload.table(g.candidate.table).is_none()
                {
                    continue;
                }
                moves.push(Move::Add(g.candidate.clone()));
            }
        }
        // (b) extend a chosen btree by one key taken from the btree candidates of its table.
        for (index, selected) in self.chosen.iter().enumerate() {
            let base = &selected.candidate;
            if base.method != IndexMethod::Btree || base.keys.len() >= self.settings.max_key_columns
            {
                continue;
            }
            let mut seen: Vec<(super::model::TargetIdentity, bool, Option<String>)> = Vec::new();
            for key in extension_keys(candidates, base.table) {
                if base.keys.iter().any(|k| k.target.same_as(&key.target)) {
                    continue;
                }
                let id = (
                    key.target.identity(),
                    key.direction.descending,
                    key.opclass.clone(),
                );
                if seen.contains(&id) {
                    continue;
                }
                seen.push(id);
                let mut extended = base.clone();
                extended.keys.push(key.clone());
                if let KeyTarget::Column(c) = &key.target {
                    extended.include.retain(|inc| inc.attnum != c.attnum);
                }
                let signature = extended.signature();
                let covered_by_other_chosen = self.chosen.iter().enumerate().any(|(j, s)| {
                    j != index && s.candidate.shape().makes_redundant(&extended.shape())
                });
                if covered_by_other_chosen
                    || self.chosen.iter().any(|s| s.signature == signature)
                    || covering_existing_index(&extended, &self.workload.existing_indexes).is_some()
                {
                    continue;
                }
                moves.push(Move::Extend { index, extended });
            }
        }
        moves
    }

    /// Evaluates a move: the resulting configuration (with indexes made redundant by the
    /// move removed), the new per-query costs and the net benefit per byte.
    fn evaluate<O: CostOracle + ?Sized>(
        &self,
        mv: &Move,
        memo: &mut MemoizedOracle<'_, O>,
    ) -> Option<Evaluation> {
        let table = self.workload.table(mv.table())?;
        let (new_candidate, replaced) = match mv {
            Move::Add(c) => (c.clone(), None),
            Move::Extend { index, extended } => (extended.clone(), Some(*index)),
        };
        let new_selected = self.make_selected(new_candidate, table);

        let mut config: Vec<Selected> = Vec::with_capacity(self.chosen.len() + 1);
        let mut absorbed = Vec::new();
        for (i, s) in self.chosen.iter().enumerate() {
            if Some(i) == replaced
                || new_selected
                    .candidate
                    .shape()
                    .makes_redundant(&s.candidate.shape())
            {
                absorbed.push(i);
            } else {
                config.push(s.clone());
            }
        }
        let new_index = config.len();
        config.push(new_selected);

        let candidates: Vec<IndexCandidate> = config.iter().map(|s| s.candidate.clone()).collect();
        // Only statements that mention the leading key of an index this move adds or removes
        // can plan differently: the others keep their cost without asking the planner (with
        // every statement on one big table, that is most of the requests).
        let changed: Vec<&IndexCandidate> = std::iter::once(&config[new_index].candidate)
            .chain(
                absorbed
                    .iter()
                    .filter_map(|&i| self.chosen.get(i).map(|s| &s.candidate)),
            )
            .collect();
        let mut costs = Vec::new();
        let mut saved = 0.0;
        for (qi, (query, calls, _)) in self.queries.iter().enumerate() {
            if !query.touches(table.id) || !may_use_any(query, table.id, &changed) {
                continue;
            }
            let before = self.current.get(qi).copied().unwrap_or(0.0);
            // A failed plan means "no information", not "free": keep the current cost.
            let after = memo.query_cost(query, &candidates).unwrap_or(before);
            saved += calls * (before - after);
            costs.push((qi, after));
        }
        let write_before: f64 = self.chosen.iter().map(|s| s.write_overhead).sum();
        let write_after: f64 = config.iter().map(|s| s.write_overhead).sum();
        let net_benefit = saved - (write_after - write_before);
        let bytes_before: f64 = self.chosen.iter().map(|s| s.size.bytes as f64).sum();
        let bytes_after: f64 = config.iter().map(|s| s.size.bytes as f64).sum();
        // Replacing an index by a smaller one frees space; still charge one page so the
        // score stays finite and comparable.
        let added = (bytes_after - bytes_before).max(PAGE_BYTES);
        Some(Evaluation {
            config,
            costs,
            net_benefit,
            score: net_benefit / added,
            new_index,
            absorbed,
        })
    }

    fn make_selected(
        &self,
        candidate: IndexCandidate,
        table: &super::model::TableInfo,
    ) -> Selected {
        let size = estimate_candidate(&candidate, table);
        let write_overhead = write_overhead(&candidate, &size, table, self.settings);
        Selected {
            signature: candidate.signature(),
            candidate,
            size,
            write_overhead,
            savings: HashMap::new(),
            first_step: usize::MAX,
        }
    }

    /// Applies an evaluated move and attributes the step's savings to the new index,
    /// which also inherits the attribution of the indexes it absorbed.
    fn apply(&mut self, eval: Evaluation, step: usize) {
        let Evaluation {
            mut config,
            costs,
            new_index,
            absorbed,
            ..
        } = eval;
        let mut savings: HashMap<QueryId, f64> = HashMap::new();
        let mut first_step = step;
        for i in absorbed {
            if let Some(old) = self.chosen.get(i) {
                first_step = first_step.min(old.first_step);
                for (q, s) in &old.savings {
                    *savings.entry(*q).or_insert(0.0) += s;
                }
            }
        }
        for (qi, after) in costs {
            if let (Some(current), Some((query, calls, _))) =
                (self.current.get_mut(qi), self.queries.get(qi))
            {
                let delta = calls * (*current - after);
                if delta != 0.0 {
                    *savings.entry(query.query_id).or_insert(0.0) += delta;
                }
                *current = after;
            }
        }
        if let Some(new) = config.get_mut(new_index) {
            new.savings = savings;
            new.first_step = first_step;
        }
        self.chosen = config;
    }

    fn finish(
        mut self,
        baseline: f64,
        unplannable_queries: Vec<QueryId>,
        oracle_calls: u64,
        cache_hits: u64,
        steps: usize,
        stop_reason: StopReason,
    ) -> SelectionResult {
        self.chosen.sort_by_key(|s| s.first_step);
        let calls_of: HashMap<QueryId, f64> = self
            .queries
            .iter()
            .map(|(q, c, _)| (q.query_id, *c))
            .collect();
        let query_costs: Vec<QueryCostChange> = self
            .queries
            .iter()
            .zip(&self.current)
            .map(|((q, calls, before), after)| QueryCostChange {
                query_id: q.query_id,
                calls: *calls,
                cost_before: *before,
                cost_after: *after,
            })
            .collect();
        let chosen: Vec<ChosenIndex> = self
            .chosen
            .iter()
            .map(|s| {
                let mut query_savings: Vec<QuerySaving> = s
                    .savings
                    .iter()
                    .map(|(q, saved)| QuerySaving {
                        query_id: *q,
                        calls: calls_of.get(q).copied().unwrap_or(0.0),
                        saved_cost: *saved,
                    })
                    .collect();
                query_savings.sort_by(|a, b| {
                    b.saved_cost
                        .total_cmp(&a.saved_cost)
                        .then(a.query_id.cmp(&b.query_id))
                });
                let benefit = query_savings.iter().map(|q| q.saved_cost).sum();
                let table = self.workload.table(s.candidate.table);
                let reason = explain(s, &query_savings, benefit, &query_costs, table);
                ChosenIndex {
                    kind: classify(&s.candidate),
                    candidate: s.candidate.clone(),
                    size: s.size,
                    benefit,
                    write_overhead: s.write_overhead,
                    query_savings,
                    reason,
                }
            })
            .collect();
        let final_cost = query_costs.iter().map(|q| q.calls * q.cost_after).sum();
        SelectionResult {
            total_size_bytes: chosen
                .iter()
                .map(|c| c.size.bytes)
                .fold(0, u64::saturating_add),
            total_write_overhead: chosen.iter().map(|c| c.write_overhead).sum(),
            chosen,
            query_costs,
            baseline_workload_cost: baseline,
            final_workload_cost: final_cost,
            unplannable_queries,
            oracle_calls,
            cache_hits,
            steps,
            stop_reason,
        }
    }
}

/// Whether `query` might plan differently with or without any of `indexes` (on `table`):
/// it filters, joins, sorts or groups that table on an index's leading key, or the index is
/// partial (usable for its predicate alone) or has no keys.
pub(super) fn may_use_any(query: &QueryShape, table: TableId, indexes: &[&IndexCandidate]) -> bool {
    let accesses = || query.tables.iter().filter(|a| a.table == table);
    indexes.iter().any(|c| {
        let Some(lead) = c.keys.first().filter(|_| c.predicate.is_none()) else {
            return true;
        };
        let target = &lead.target;
        accesses().any(|a| {
            a.predicates.iter().any(|p| p.target.same_as(target))
                || a.join_columns
                    .iter()
                    .any(|j| matches!(target, KeyTarget::Column(c) if c.attnum == j.attnum))
                || a.order_by
                    .iter()
                    .chain(&a.group_by)
                    .any(|o| o.target.same_as(target))
        })
    })
}

/// Keys Extend may append to a btree on `table`: every key of a btree candidate on that
/// table, in candidate order (with the direction and opclass the candidate gave it).
fn extension_keys(candidates: &[GeneratedCandidate], table: TableId) -> Vec<&IndexKey> {
    candidates
        .iter()
        .filter(|g| g.candidate.table == table && g.candidate.method == IndexMethod::Btree)
        .flat_map(|g| g.candidate.keys.iter())
        .collect()
}

/// Write overhead of an index per workload period: index writes of the table ×
/// `write_cost_per_row` × (entry size / heap row size) × fraction of rows indexed.
pub fn write_overhead(
    candidate: &IndexCandidate,
    size: &IndexSizeEstimate,
    table: &super::model::TableInfo,
    settings: &SelectionSettings,
) -> f64 {
    let fraction = candidate.row_fraction();
    let indexed_rows = table.row_estimate() * fraction;
    let entry_bytes = size.bytes_per_tuple(indexed_rows);
    let ratio = entry_bytes / table.heap_bytes_per_row();
    let cost = table.index_writes()
        * finite_or(settings.write_cost_per_row, 0.0).max(0.0)
        * ratio
        * fraction;
    finite_or(cost, 0.0).max(0.0)
}

fn explain(
    selected: &Selected,
    savings: &[QuerySaving],
    benefit: f64,
    query_costs: &[QueryCostChange],
    table: Option<&super::model::TableInfo>,
) -> String {
    let c = &selected.candidate;
    let helped: Vec<&QuerySaving> = savings.iter().filter(|q| q.saved_cost > 0.0).collect();
    let mut parts = Vec::new();
    let mut speedups = Vec::new();
    for q in helped.iter().take(3) {
        if let Some(change) = query_costs.iter().find(|x| x.query_id == q.query_id) {
            speedups.push(format!(
                "query {} ({:.0} calls, {:.1} -> {:.1} per call with all proposed indexes; \
                 {:.0} of that saving is due to this index)",
                q.query_id, change.calls, change.cost_before, change.cost_after, q.saved_cost
            ));
        }
    }
    let more = helped.len().saturating_sub(3);
    parts.push(format!(
        "speeds up {} quer{}{}{}",
        helped.len(),
        if helped.len() == 1 { "y" } else { "ies" },
        if speedups.is_empty() {
            String::new()
        } else {
            format!(": {}", speedups.join(", "))
        },
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ));
    parts.push(format!("saves {benefit:.0} cost units per workload period"));
    if let Some(p) = &c.predicate {
        parts.push(format!(
            "partial: indexes only rows where {} (~{:.1}% of rows), so it stays small",
            p.sql,
            c.row_fraction() * 100.0
        ));
    }
    if !c.include.is_empty() {
        let names: Vec<&str> = c.include.iter().map(|x| x.name.as_str()).collect();
        parts.push(format!(
            "INCLUDE ({}) lets the queries use index-only scans",
            names.join(", ")
        ));
    }
    if c.keys
        .iter()
        .any(|k| matches!(k.target, KeyTarget::Expression(_)))
    {
        parts.push("expression index: matches the expression the queries filter on".into());
    }
    match c.method {
        IndexMethod::Gin => parts.push(format!(
            "GIN{} for containment operators",
            c.keys
                .first()
                .and_then(|k| k.opclass.as_deref())
                .map(|o| format!(" with {o}"))
                .unwrap_or_default()
        )),
        IndexMethod::Brin => parts.push(
            "BRIN: the column follows the table's physical order, so a few pages of block \
             summaries replace a large btree"
                .into(),
        ),
        _ => {
            if c.keys.len() > 1 {
                parts
                    .push("multicolumn: equality columns first, then the range/sort column".into());
            }
        }
    }
    let writes = table.map_or(0.0, super::model::TableInfo::index_writes);
    parts.push(format!(
        "estimated size {}; write overhead {:.0} cost units for {:.0} index writes",
        format_bytes(selected.size.bytes),
        selected.write_overhead,
        writes
    ));
    let mut text = parts.join("; ");
    if let Some(first) = text.get(..1) {
        let upper = first.to_uppercase();
        text.replace_range(..1, &upper);
    }
    text
}

/// `1536` -> `1.5 kB`, like `pg_size_pretty` (base 1024).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Why an existing index is a drop candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum DropReason {
    /// Never scanned since statistics were last reset.
    Unused,
    /// Every scan it supports is supported by another index that is kept.
    Redundant {
        /// Name of the covering index.
        covered_by: String,
    },
}

/// An existing index that could be dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct DropCandidate {
    /// The index.
    pub index: ExistingIndex,
    /// Why.
    pub reason: DropReason,
    /// Human-readable explanation.
    pub explanation: String,
}

/// Existing indexes worth dropping: unused (0 scans) or redundant (covered by another
/// kept index of the same method with the same predicate). Unique, primary-key and
/// constraint indexes are never reported: they enforce something besides speed.
///
/// Indexes are decided widest first, so a chain such as (a) ⊂ (a, b) keeps the wider
/// one, and of two identical indexes the more used (then lower OID) one is kept. An
/// index is only called redundant when its covering index is itself kept, so the report
/// never suggests dropping both.
///
/// Scan counts only cover the time since the last statistics reset (and this server:
/// replicas have their own); the caller should say so.
pub fn find_drop_candidates(existing: &[ExistingIndex]) -> Vec<DropCandidate> {
    let protected = |i: &ExistingIndex| i.is_unique || i.is_primary || i.backs_constraint;
    let mut order: Vec<&ExistingIndex> = existing.iter().filter(|i| !protected(i)).collect();
    order.sort_by(|a, b| {
        b.keys
            .len()
            .cmp(&a.keys.len())
            .then(b.include.len().cmp(&a.include.len()))
            .then(b.scans.cmp(&a.scans))
            .then(a.id.cmp(&b.id))
    });
    let mut kept: Vec<&ExistingIndex> = existing.iter().filter(|i| protected(i)).collect();
    let mut drops = Vec::new();
    for index in order {
        let cover = kept
            .iter()
            .find(|k| k.id != index.id && k.shape().covers(&index.shape()));
        if let Some(cover) = cover {
            drops.push(DropCandidate {
                explanation: format!(
                    "redundant: index {} on the same table serves every scan {} serves \
                     (its leading keys and predicate match); {} scans, {}",
                    cover.name,
                    index.name,
                    index.scans.max(0),
                    format_bytes(index.size_bytes)
                ),
                reason: DropReason::Redundant {
                    covered_by: cover.name.clone(),
                },
                index: index.clone(),
            });
        } else if index.scans <= 0 {
            drops.push(DropCandidate {
                explanation: format!(
                    "unused: no scans since statistics were last reset; frees {} and its \
                     write cost",
                    format_bytes(index.size_bytes)
                ),
                reason: DropReason::Unused,
                index: index.clone(),
            });
        } else {
            kept.push(index);
        }
    }
    drops
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::advisor::candidates::generate_candidates;
    use crate::advisor::model::{
        ColumnRef, ColumnStats, ContainmentOperator, ExpressionRef, GinOperandKind,
        PartialPredicate, PredicateOperator, PredicateUse, RareConstant, SortDirection, SortItem,
        TableAccess, TableInfo, TypeAlign,
    };
    use std::collections::HashSet;

    // ---- workload -------------------------------------------------------------------

    const ORDERS: TableId = 10;
    const CUSTOMERS: TableId = 20;
    const EVENTS: TableId = 30;

    fn column(attnum: i16, name: &str, type_name: &str) -> ColumnRef {
        let (typlen, typalign, avg_width) = match type_name {
            "bigint" | "timestamp with time zone" => (8, TypeAlign::Double, 8),
            "jsonb" => (-1, TypeAlign::Int, 60),
            _ => (-1, TypeAlign::Int, 16),
        };
        ColumnRef {
            attnum,
            name: name.into(),
            type_name: type_name.into(),
            typlen,
            typalign,
            avg_width,
        }
    }

    fn c(target: &ColumnRef) -> KeyTarget {
        KeyTarget::Column(target.clone())
    }

    fn eq(target: KeyTarget, selectivity: f64) -> PredicateUse {
        PredicateUse {
            target,
            operator: PredicateOperator::Equality,
            selectivity,
            rare_constant: None,
        }
    }

    fn range(target: KeyTarget, selectivity: f64) -> PredicateUse {
        PredicateUse {
            operator: PredicateOperator::Range,
            ..eq(target, selectivity)
        }
    }

    fn desc(target: KeyTarget) -> SortItem {
        SortItem {
            target,
            direction: SortDirection::with_default_nulls(true),
        }
    }

    fn table(id: TableId, name: &str, rows: f64, pages: f64, inserts: f64) -> TableInfo {
        TableInfo {
            id,
            schema: "public".into(),
            name: name.into(),
            reltuples: rows,
            relpages: pages,
            avg_row_width: 80.0,
            inserts,
            updates: 0.0,
            deletes: 0.0,
            hot_update_fraction: 0.0,
            is_append_only: true,
            column_stats: vec![],
        }
    }

    fn access(table: TableId, predicates: Vec<PredicateUse>) -> TableAccess {
        TableAccess {
            table,
            predicates,
            join_columns: vec![],
            order_by: vec![],
            group_by: vec![],
            referenced_columns: None,
        }
    }

    fn query(id: QueryId, calls: f64, limit: Option<u64>, tables: Vec<TableAccess>) -> QueryShape {
        QueryShape {
            query_id: id,
            calls,
            limit,
            tables,
        }
    }

    fn pkey(id: u32, table: TableId, name: &str, col: &ColumnRef) -> ExistingIndex {
        ExistingIndex {
            id,
            table,
            schema: "public".into(),
            name: name.into(),
            method: IndexMethod::Btree,
            keys: vec![IndexKey::asc(c(col))],
            include: vec![],
            predicate: None,
            is_unique: true,
            is_primary: true,
            backs_constraint: true,
            size_bytes: 1 << 20,
            scans: 1000,
        }
    }

    /// Three tables, twelve queries: orders (1M rows), customers (100k rows), events (5M
    /// rows, 50M inserts per period: write-heavy).
    fn shop_workload() -> Workload {
        let o_id = column(1, "id", "bigint");
        let o_customer = column(2, "customer_id", "bigint");
        let o_status = column(3, "status", "text");
        let o_created = column(4, "created_at", "timestamp with time zone");
        let c_id = column(1, "id", "bigint");
        let c_region = column(3, "region", "text");
        let c_prefs = column(4, "prefs", "jsonb");
        let e_kind = column(2, "kind", "text");
        let e_created = column(3, "created_at", "timestamp with time zone");
        let lower_email = KeyTarget::Expression(ExpressionRef {
            sql: "lower(email)".into(),
            type_name: "text".into(),
            typlen: -1,
            typalign: TypeAlign::Int,
            avg_width: 24,
            referenced_attnums: vec![2],
        });
        let mut failed = eq(c(&o_status), 0.02);
        failed.rare_constant = Some(RareConstant {
            predicate_sql: "status = 'failed'::text".into(),
            selectivity: 0.02,
        });

        let mut orders = table(ORDERS, "orders", 1e6, 12_500.0, 20_000.0);
        orders.column_stats = vec![ColumnStats {
            attnum: 4,
            correlation: Some(0.3),
            n_distinct: Some(-1.0),
            gin_entries_per_row: None,
            gin_distinct_keys: None,
        }];
        let customers = table(CUSTOMERS, "customers", 1e5, 2_000.0, 500.0);
        let mut events = table(EVENTS, "events", 5e6, 50_000.0, 5e7);
        events.column_stats = vec![ColumnStats {
            attnum: 3,
            correlation: Some(0.999),
            n_distinct: Some(-1.0),
            gin_entries_per_row: None,
            gin_distinct_keys: None,
        }];

        let mut q1 = access(ORDERS, vec![failed.clone()]);
        q1.order_by = vec![desc(c(&o_created))];
        let mut q4 = access(ORDERS, vec![]);
        q4.order_by = vec![desc(c(&o_created))];
        let mut q5_orders = access(ORDERS, vec![]);
        q5_orders.join_columns = vec![o_customer.clone()];
        let mut q7 = access(ORDERS, vec![eq(c(&o_customer), 1e-4)]);
        q7.order_by = vec![desc(c(&o_created))];

        let queries = vec![
            // Rare status, newest first.
            query(1, 500.0, Some(50), vec![q1]),
            // Case-insensitive login lookup.
            query(
                2,
                5_000.0,
                None,
                vec![access(CUSTOMERS, vec![eq(lower_email, 1e-5)])],
            ),
            // jsonb containment.
            query(
                3,
                300.0,
                None,
                vec![access(
                    CUSTOMERS,
                    vec![PredicateUse {
                        target: c(&c_prefs),
                        operator: PredicateOperator::Containment {
                            operator: ContainmentOperator::Contains,
                            operand: GinOperandKind::Jsonb,
                        },
                        selectivity: 0.001,
                        rare_constant: None,
                    }],
                )],
            ),
            // Latest orders.
            query(4, 200.0, Some(10), vec![q4]),
            // Join: customers of a region with their orders.
            query(
                5,
                100.0,
                None,
                vec![access(CUSTOMERS, vec![eq(c(&c_region), 0.01)]), q5_orders],
            ),
            // Equality + range.
            query(
                6,
                3_000.0,
                None,
                vec![access(
                    ORDERS,
                    vec![eq(c(&o_customer), 1e-4), range(c(&o_created), 0.05)],
                )],
            ),
            // Equality + ORDER BY ... LIMIT.
            query(7, 1_000.0, Some(20), vec![q7]),
            // Primary-key lookups: already indexed.
            query(
                8,
                10_000.0,
                None,
                vec![access(ORDERS, vec![eq(c(&o_id), 1e-6)])],
            ),
            // Events report on a write-heavy table.
            query(
                9,
                200.0,
                None,
                vec![access(
                    EVENTS,
                    vec![eq(c(&e_kind), 0.001), range(c(&e_created), 0.01)],
                )],
            ),
            // The inserts themselves (no reads to speed up).
            query(10, 50_000.0, None, vec![]),
            // Customer by primary key.
            query(
                11,
                10_000.0,
                None,
                vec![access(CUSTOMERS, vec![eq(c(&c_id), 1e-5)])],
            ),
            // Rare status for one customer.
            query(
                12,
                50.0,
                None,
                vec![access(ORDERS, vec![failed, eq(c(&o_customer), 1e-4)])],
            ),
        ];
        Workload {
            tables: vec![orders, customers, events],
            existing_indexes: vec![
                pkey(900, ORDERS, "orders_pkey", &o_id),
                pkey(901, CUSTOMERS, "customers_pkey", &c_id),
            ],
            queries,
        }
    }

    // ---- mock planner ---------------------------------------------------------------

    /// A small cost model standing in for the what-if planner: per table the cheaper of a
    /// sequential scan and the best usable index, with sorts, LIMIT, index-only scans,
    /// partial-index implication and nested-loop lookups for join columns. It records
    /// every request to prove the memo cache works.
    struct MockPlanner<'w> {
        workload: &'w Workload,
        requests: HashSet<(QueryId, Vec<String>)>,
        duplicate_requests: usize,
        fail_query: Option<QueryId>,
    }

    impl<'w> MockPlanner<'w> {
        fn new(workload: &'w Workload) -> Self {
            MockPlanner {
                workload,
                requests: HashSet::new(),
                duplicate_requests: 0,
                fail_query: None,
            }
        }
    }

    /// Outer rows driving the nested loop of a join access.
    const JOIN_LOOPS: f64 = 1000.0;

    impl CostOracle for MockPlanner<'_> {
        fn workload_query_cost(
            &mut self,
            query: QueryId,
            config: &[IndexCandidate],
        ) -> Option<f64> {
            let mut key: Vec<String> = config.iter().map(|c| c.to_string()).collect();
            key.sort();
            if !self.requests.insert((query, key)) {
                self.duplicate_requests += 1;
            }
            if self.fail_query == Some(query) {
                return None;
            }
            let q = self.workload.queries.iter().find(|q| q.query_id == query)?;
            let mut indexes: Vec<IndexCandidate> = self
                .workload
                .existing_indexes
                .iter()
                .map(|e| IndexCandidate {
                    table: e.table,
                    method: e.method.clone(),
                    keys: e.keys.clone(),
                    include: e.include.clone(),
                    predicate: e.predicate.as_ref().map(|p| PartialPredicate {
                        sql: p.clone(),
                        selectivity: 1.0,
                    }),
                })
                .collect();
            indexes.extend(config.iter().cloned());
            let mut total = 0.5;
            for a in &q.tables {
                let t = self.workload.table(a.table)?;
                total += access_cost(t, a, q.limit, &indexes);
            }
            Some(total)
        }
    }

    fn sort_cost(rows: f64) -> f64 {
        rows * (rows + 2.0).log2() * 0.02
    }

    fn access_cost(
        t: &TableInfo,
        a: &TableAccess,
        limit: Option<u64>,
        indexes: &[IndexCandidate],
    ) -> f64 {
        let rows = t.reltuples;
        let all_sel: f64 = a.predicates.iter().map(|p| p.selectivity).product();
        let sort = if a.order_by.is_empty() {
            0.0
        } else {
            sort_cost(rows * all_sel)
        };
        let mut best = t.relpages + rows * 0.0125 + sort;
        for index in indexes.iter().filter(|i| i.table == t.id) {
            if let Some(cost) = index_cost(t, a, limit, index) {
                best = best.min(cost);
            }
        }
        best
    }

    fn index_cost(
        t: &TableInfo,
        a: &TableAccess,
        limit: Option<u64>,
        index: &IndexCandidate,
    ) -> Option<f64> {
        let rows = t.reltuples;
        let size = estimate_candidate(index, t);
        let mut used: Vec<usize> = Vec::new();
        let mut sel = 1.0;
        let mut fraction = 1.0;
        if let Some(p) = &index.predicate {
            let i = a.predicates.iter().position(|x| {
                x.rare_constant
                    .as_ref()
                    .is_some_and(|r| r.predicate_sql == p.sql)
            })?;
            sel *= a.predicates[i].selectivity;
            fraction = a.predicates[i].selectivity;
            used.push(i);
        }
        let mut parameterized = false;
        let mut ordered = false;
        match index.method {
            IndexMethod::Btree => {
                let mut k = 0;
                while let Some(key) = index.keys.get(k) {
                    if let Some(i) = a.predicates.iter().position(|p| {
                        p.operator == PredicateOperator::Equality && p.target.same_as(&key.target)
                    }) {
                        sel *= a.predicates[i].selectivity;
                        used.push(i);
                    } else if a.join_columns.iter().any(|j| c(j).same_as(&key.target)) {
                        sel *= 10.0 / rows;
                        parameterized = true;
                    } else {
                        break;
                    }
                    k += 1;
                }
                let rest = index.keys.get(k..).unwrap_or(&[]);
                if let Some(key) = rest.first() {
                    if let Some(i) = a.predicates.iter().position(|p| {
                        p.operator == PredicateOperator::Range && p.target.same_as(&key.target)
                    }) {
                        sel *= a.predicates[i].selectivity;
                        used.push(i);
                    }
                }
                if !a.order_by.is_empty() && rest.len() >= a.order_by.len() {
                    let pairs = || rest.iter().zip(&a.order_by);
                    ordered = pairs().all(|(k, s)| k.target.same_as(&s.target))
                        && (pairs().all(|(k, s)| k.direction == s.direction)
                            || pairs().all(|(k, s)| k.direction == s.direction.reversed()));
                }
                if used.is_empty() && !parameterized && !ordered {
                    return None;
                }
            }
            IndexMethod::Gin => {
                let key = index.keys.first()?;
                let path_ops = key.opclass.as_deref() == Some("jsonb_path_ops");
                let i = a.predicates.iter().position(|p| {
                    p.target.same_as(&key.target)
                        && matches!(
                            p.operator,
                            PredicateOperator::Containment { operator, .. }
                                if !path_ops || operator == ContainmentOperator::Contains
                        )
                })?;
                sel *= a.predicates[i].selectivity;
                used.push(i);
            }
            IndexMethod::Brin => {
                let key = index.keys.first()?;
                let i = a.predicates.iter().position(|p| {
                    p.operator == PredicateOperator::Range && p.target.same_as(&key.target)
                })?;
                let s = a.predicates[i].selectivity;
                let residual: f64 = a
                    .predicates
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| p.selectivity)
                    .product();
                let heap_pages = t.relpages * s + 128.0;
                let out = rows * s * residual;
                return Some(
                    size.pages as f64
                        + heap_pages
                        + rows * s * 0.0125
                        + if a.order_by.is_empty() {
                            0.0
                        } else {
                            sort_cost(out)
                        },
                );
            }
            _ => return None,
        }
        let residual: f64 = a
            .predicates
            .iter()
            .enumerate()
            .filter(|(j, _)| !used.contains(j))
            .map(|(_, p)| p.selectivity)
            .product();
        let index_rows = rows * sel;
        let index_only = a.referenced_columns.as_ref().is_some_and(|cols| {
            cols.iter().all(|col| {
                index.include.iter().any(|i| i.attnum == col.attnum)
                    || index.keys.iter().any(|k| c(col).same_as(&k.target))
            })
        });
        let per_row = 0.005 + if index_only { 0.0 } else { 1.0 } + 0.0025;
        let pages_read = size.pages as f64 * (index_rows / (rows * fraction).max(1.0));
        let full = 2.0 + pages_read + index_rows * per_row;
        let out = index_rows * residual;
        let cost = match limit {
            Some(n) if ordered && out > n as f64 => 2.0 + full * (n as f64 / out),
            _ if ordered || a.order_by.is_empty() => full,
            _ => full + sort_cost(out),
        };
        Some(if parameterized {
            cost * JOIN_LOOPS
        } else {
            cost
        })
    }

    // ---- helpers --------------------------------------------------------------------

    fn run(workload: &Workload, settings: &SelectionSettings) -> (SelectionResult, usize, usize) {
        let candidates = generate_candidates(workload);
        let mut planner = MockPlanner::new(workload);
        let result = select_indexes(workload, &candidates, &mut planner, settings);
        (result, planner.requests.len(), planner.duplicate_requests)
    }

    fn describe(chosen: &ChosenIndex) -> String {
        chosen.candidate.to_string()
    }

    fn chosen_on(result: &SelectionResult, table: TableId) -> Vec<String> {
        result
            .chosen
            .iter()
            .filter(|c| c.candidate.table == table)
            .map(describe)
            .collect()
    }

    // ---- tests ----------------------------------------------------------------------

    #[test]
    fn chooses_the_expected_indexes() {
        let w = shop_workload();
        let (r, _, _) = run(&w, &SelectionSettings::default());
        let all: Vec<String> = r.chosen.iter().map(describe).collect();
        let has = |s: &str| all.iter().any(|x| x == s);
        assert!(
            has("btree (created_at DESC) WHERE status = 'failed'::text"),
            "partial index for the rare status: {all:#?}"
        );
        assert!(has("btree (lower(email))"), "expression index: {all:#?}");
        assert!(has("gin (prefs jsonb_path_ops)"), "GIN: {all:#?}");
        assert!(
            all.iter()
                .any(|x| x.starts_with("btree (customer_id, created_at")),
            "multicolumn, equality first: {all:#?}"
        );
        assert!(
            all.iter()
                .any(|x| x == "btree (created_at DESC)" || x == "btree (created_at)"),
            "ORDER BY created_at DESC LIMIT: {all:#?}"
        );
        assert!(!all
            .iter()
            .any(|x| x.starts_with("btree (created_at, customer_id")));
        assert_eq!(r.stop_reason, StopReason::NoImprovement);
        assert!(r.final_workload_cost < r.baseline_workload_cost * 0.1);
        // Attribution adds up to the total saving (minus nothing: every saving is
        // attributed to exactly one chosen index).
        let attributed: f64 = r.chosen.iter().map(|c| c.benefit).sum();
        let saved = r.baseline_workload_cost - r.final_workload_cost;
        assert!((attributed - saved).abs() <= saved * 1e-9 + 1e-6);
        for chosen in &r.chosen {
            assert!(chosen.benefit > chosen.write_overhead, "{chosen:#?}");
            assert!(!chosen.reason.is_empty());
            assert!(chosen.query_savings.iter().any(|q| q.saved_cost > 0.0));
        }
        let q2 = r.query_costs.iter().find(|q| q.query_id == 2).expect("q2");
        assert!(q2.cost_after < q2.cost_before / 100.0);
        let partial = r
            .chosen
            .iter()
            .find(|c| c.candidate.predicate.is_some())
            .expect("partial");
        assert!(
            partial.reason.contains("status = 'failed'"),
            "{}",
            partial.reason
        );
        assert!(partial.reason.contains("query 1"), "{}", partial.reason);
    }

    #[test]
    fn nothing_redundant_with_existing_or_chosen_indexes() {
        let mut w = shop_workload();
        // An existing single-column index on orders(customer_id).
        w.existing_indexes.push(ExistingIndex {
            id: 902,
            table: ORDERS,
            schema: "public".into(),
            name: "orders_customer_id_idx".into(),
            method: IndexMethod::Btree,
            keys: vec![IndexKey::asc(c(&column(2, "customer_id", "bigint")))],
            include: vec![],
            predicate: None,
            is_unique: false,
            is_primary: false,
            backs_constraint: false,
            size_bytes: 1 << 24,
            scans: 50,
        });
        let (r, _, _) = run(&w, &SelectionSettings::default());
        for chosen in &r.chosen {
            assert!(
                covering_existing_index(&chosen.candidate, &w.existing_indexes).is_none(),
                "{} duplicates an existing index",
                chosen.candidate
            );
            for other in &r.chosen {
                if !std::ptr::eq(chosen, other) {
                    assert!(
                        !other.candidate.shape().covers(&chosen.candidate.shape()),
                        "{} is covered by {}",
                        chosen.candidate,
                        other.candidate
                    );
                }
            }
        }
        let all: Vec<String> = r.chosen.iter().map(describe).collect();
        assert!(!all.iter().any(|x| x == "btree (id)"));
        assert!(!all.iter().any(|x| x == "btree (customer_id)"));
        // Extending the existing prefix is still allowed and useful.
        assert!(all
            .iter()
            .any(|x| x.starts_with("btree (customer_id, created_at")));
    }

    #[test]
    fn write_heavy_table_gets_fewer_indexes() {
        let mut quiet = shop_workload();
        for t in &mut quiet.tables {
            if t.id == EVENTS {
                t.inserts = 0.0;
            }
        }
        let (quiet_result, _, _) = run(&quiet, &SelectionSettings::default());
        let (busy_result, _, _) = run(&shop_workload(), &SelectionSettings::default());
        let quiet_events = chosen_on(&quiet_result, EVENTS);
        let busy_events = chosen_on(&busy_result, EVENTS);
        assert!(
            quiet_events.iter().any(|x| x.starts_with("btree (kind")),
            "{quiet_events:?}"
        );
        assert!(
            busy_events.iter().all(|x| x.starts_with("brin")),
            "only a BRIN is cheap enough to maintain: {busy_events:?}"
        );
        let busy_bytes: u64 = busy_result
            .chosen
            .iter()
            .filter(|c| c.candidate.table == EVENTS)
            .map(|c| c.size.bytes)
            .sum();
        assert!(busy_bytes < 1 << 20);
    }

    #[test]
    fn storage_budget_is_respected() {
        let w = shop_workload();
        let (unlimited, _, _) = run(&w, &SelectionSettings::default());
        let budget = unlimited.total_size_bytes / 3;
        let settings = SelectionSettings {
            storage_budget_bytes: budget,
            ..SelectionSettings::default()
        };
        let (limited, _, _) = run(&w, &settings);
        assert!(limited.total_size_bytes <= budget);
        assert!(!limited.chosen.is_empty());
        assert!(limited.final_workload_cost > unlimited.final_workload_cost);
        assert_eq!(limited.stop_reason, StopReason::BudgetExhausted);

        let none = SelectionSettings {
            storage_budget_bytes: 0,
            ..SelectionSettings::default()
        };
        let (empty, _, _) = run(&w, &none);
        assert!(empty.chosen.is_empty());
        assert_eq!(empty.final_workload_cost, empty.baseline_workload_cost);
    }

    #[test]
    fn oracle_requests_are_memoized() {
        let w = shop_workload();
        let (r, distinct_requests, duplicates) = run(&w, &SelectionSettings::default());
        assert_eq!(duplicates, 0, "the same request reached the oracle twice");
        assert_eq!(r.oracle_calls, distinct_requests as u64);
        assert!(r.cache_hits > 0);

        // The wrapper on its own: same query and same relevant indexes hit the cache,
        // indexes on unrelated tables do not change the key.
        let mut planner = MockPlanner::new(&w);
        let mut memo = MemoizedOracle::new(&mut planner);
        let q8 = &w.queries[7];
        let events_brin = IndexCandidate {
            table: EVENTS,
            method: IndexMethod::Brin,
            keys: vec![IndexKey::asc(c(&column(
                3,
                "created_at",
                "timestamp with time zone",
            )))],
            include: vec![],
            predicate: None,
        };
        let a = memo.query_cost(q8, &[]);
        let b = memo.query_cost(q8, std::slice::from_ref(&events_brin));
        assert_eq!(a, b);
        assert_eq!((memo.oracle_calls(), memo.cache_hits()), (1, 1));
    }

    #[test]
    fn extend_grows_a_chosen_index() {
        // Only single-column candidates: the two-column index can only come from
        // extending a chosen one.
        let w = shop_workload();
        let singles: Vec<GeneratedCandidate> = generate_candidates(&w)
            .into_iter()
            .filter(|g| g.kind == CandidateKind::SingleColumn)
            .collect();
        let mut planner = MockPlanner::new(&w);
        let r = select_indexes(&w, &singles, &mut planner, &SelectionSettings::default());
        let all: Vec<String> = r.chosen.iter().map(describe).collect();
        assert!(
            all.iter()
                .any(|x| x.starts_with("btree (customer_id, created_at")),
            "{all:#?}"
        );
    }

    #[test]
    fn unplannable_and_garbage_answers_do_not_break_selection() {
        let w = shop_workload();
        let candidates = generate_candidates(&w);
        let mut planner = MockPlanner::new(&w);
        planner.fail_query = Some(2);
        let r = select_indexes(&w, &candidates, &mut planner, &SelectionSettings::default());
        assert_eq!(r.unplannable_queries, vec![2]);
        assert!(!r
            .chosen
            .iter()
            .any(|c| describe(c) == "btree (lower(email))"));

        struct Garbage;
        impl CostOracle for Garbage {
            fn workload_query_cost(
                &mut self,
                q: QueryId,
                config: &[IndexCandidate],
            ) -> Option<f64> {
                Some(match (q % 3, config.len()) {
                    (0, _) => f64::NAN,
                    (1, 0) => f64::INFINITY,
                    (_, n) => -(n as f64),
                })
            }
        }
        let r = select_indexes(&w, &candidates, &mut Garbage, &SelectionSettings::default());
        assert!(r.chosen.is_empty());
        assert!(r.baseline_workload_cost.is_finite());

        let empty = Workload::default();
        let r = select_indexes(&empty, &[], &mut Garbage, &SelectionSettings::default());
        assert_eq!(r.stop_reason, StopReason::NoQueries);
    }

    #[test]
    fn max_indexes_is_respected() {
        let w = shop_workload();
        let settings = SelectionSettings {
            max_indexes: 2,
            ..SelectionSettings::default()
        };
        let (r, _, _) = run(&w, &settings);
        assert!(r.chosen.len() <= 2);
        assert_eq!(r.stop_reason, StopReason::MaxIndexes);
    }

    #[test]
    fn write_overhead_scales_with_entry_size_and_partial_fraction() {
        let t = table(ORDERS, "orders", 1e6, 12_500.0, 10_000.0);
        let settings = SelectionSettings::default();
        let full = IndexCandidate {
            table: ORDERS,
            method: IndexMethod::Btree,
            keys: vec![IndexKey::asc(c(&column(2, "customer_id", "bigint")))],
            include: vec![],
            predicate: None,
        };
        let partial = IndexCandidate {
            predicate: Some(PartialPredicate {
                sql: "status = 'failed'".into(),
                selectivity: 0.02,
            }),
            ..full.clone()
        };
        let full_cost = write_overhead(&full, &estimate_candidate(&full, &t), &t, &settings);
        let part_cost = write_overhead(&partial, &estimate_candidate(&partial, &t), &t, &settings);
        // 10k writes × (≈23 bytes per entry / 102 bytes per heap row) ≈ 2.3k.
        assert!((1_500.0..3_500.0).contains(&full_cost), "{full_cost}");
        assert!(part_cost < full_cost * 0.05, "{part_cost} vs {full_cost}");
        let mut quiet = t.clone();
        quiet.inserts = 0.0;
        assert_eq!(
            write_overhead(&full, &estimate_candidate(&full, &quiet), &quiet, &settings),
            0.0
        );
    }

    fn existing(id: u32, name: &str, keys: &[&str], scans: i64, unique: bool) -> ExistingIndex {
        ExistingIndex {
            id,
            table: ORDERS,
            schema: "public".into(),
            name: name.into(),
            method: IndexMethod::Btree,
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    IndexKey::asc(c(&column(i16::try_from(i).unwrap_or(0) + 1, n, "bigint")))
                })
                .collect(),
            include: vec![],
            predicate: None,
            is_unique: unique,
            is_primary: false,
            backs_constraint: unique,
            size_bytes: 8192 * 100,
            scans,
        }
    }

    #[test]
    fn drop_report_finds_unused_and_redundant_but_keeps_constraints() {
        let a_b = existing(1, "t_a_b_idx", &["a", "b"], 100, false);
        let a = existing(2, "t_a_idx", &["a"], 40, false);
        let a_dup = existing(3, "t_a_dup_idx", &["a"], 0, false);
        let unique_a = existing(4, "t_a_key", &["a"], 0, true);
        let mut c_idx = existing(5, "t_c_idx", &["c"], 0, false);
        c_idx.keys[0].target = c(&column(3, "c", "bigint"));
        let mut partial = existing(6, "t_a_partial_idx", &["a"], 7, false);
        partial.predicate = Some("a > 0".into());
        let drops = find_drop_candidates(&[a_b, a, a_dup, unique_a, c_idx, partial]);
        let by_name: HashMap<&str, &DropReason> = drops
            .iter()
            .map(|d| (d.index.name.as_str(), &d.reason))
            .collect();
        assert_eq!(
            by_name.get("t_a_idx"),
            Some(&&DropReason::Redundant {
                covered_by: "t_a_key".into()
            })
        );
        assert!(matches!(
            by_name.get("t_a_dup_idx"),
            Some(DropReason::Redundant { .. })
        ));
        assert_eq!(by_name.get("t_c_idx"), Some(&&DropReason::Unused));
        assert!(!by_name.contains_key("t_a_key"));
        assert!(!by_name.contains_key("t_a_b_idx"));
        assert!(!by_name.contains_key("t_a_partial_idx"));
    }

    #[test]
    fn drop_report_never_drops_both_of_a_pair() {
        // (a) is used, (a, b) is not: drop the unused wide one, keep (a).
        let a_b = existing(1, "t_a_b_idx", &["a", "b"], 0, false);
        let a = existing(2, "t_a_idx", &["a"], 500, false);
        let drops = find_drop_candidates(&[a.clone(), a_b]);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].index.name, "t_a_b_idx");
        assert_eq!(drops[0].reason, DropReason::Unused);
        // Two identical used indexes: exactly one goes, the more used stays.
        let twin = existing(3, "t_a_twin_idx", &["a"], 20, false);
        let drops = find_drop_candidates(&[twin, a]);
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0].index.name, "t_a_twin_idx");
    }

    /// Deterministic pseudo-random numbers (64-bit LCG) for the robustness test.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn float(&mut self) -> f64 {
            match self.next() % 12 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -1.0,
                3 => 0.0,
                4 => 1e300,
                _ => (self.next() % 10_000) as f64 / 97.0,
            }
        }
    }

    #[test]
    fn random_workloads_never_panic() {
        let mut rng = Lcg(42);
        for round in 0..200 {
            let mut w = shop_workload();
            for t in &mut w.tables {
                t.reltuples = rng.float() * 1e5;
                t.relpages = rng.float() * 100.0;
                t.inserts = rng.float() * 1e6;
                t.avg_row_width = rng.float();
            }
            for q in &mut w.queries {
                q.calls = rng.float() * 100.0;
                for a in &mut q.tables {
                    for p in &mut a.predicates {
                        p.selectivity = rng.float();
                        if let Some(r) = &mut p.rare_constant {
                            r.selectivity = rng.float();
                        }
                    }
                }
            }
            let candidates = generate_candidates(&w);
            let mut planner = MockPlanner::new(&w);
            let settings = SelectionSettings {
                storage_budget_bytes: rng.next() << (round % 20),
                max_indexes: (rng.next() % 6) as usize,
                write_cost_per_row: rng.float(),
                min_benefit_fraction: rng.float(),
                ..SelectionSettings::default()
            };
            let r = select_indexes(&w, &candidates, &mut planner, &settings);
            assert!(r.total_size_bytes <= settings.storage_budget_bytes);
            assert!(r.chosen.len() <= settings.max_indexes);
            for chosen in &r.chosen {
                if let Some(t) = w.table(chosen.candidate.table) {
                    let name = crate::advisor::ddl::index_name(&chosen.candidate, &t.name);
                    assert!(
                        crate::advisor::ddl::create_index_sql(&chosen.candidate, t, &name).is_ok()
                    );
                }
            }
        }
    }

    #[test]
    fn format_bytes_is_readable() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1536), "1.5 kB");
        assert_eq!(format_bytes(22_487_040), "21.4 MB");
        assert_eq!(format_bytes(u64::MAX), "16777216.0 TB");
    }

    // ---- property: no redundant pair over random workloads ---------------------------

    /// A small deterministic PRNG (xorshift64*), so the property test needs no crate and
    /// every failure reproduces from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn fraction(&mut self) -> f64 {
            (self.next() % 1_000_000) as f64 / 1_000_000.0
        }
    }

    /// A random workload over 1-3 tables: equality, range, containment and rare-constant
    /// predicates, joins, ORDER BY (either direction), LIMIT, writes, correlated columns
    /// (BRIN candidates), and random existing indexes (primary keys, btree prefixes, BRIN).
    fn random_workload(rng: &mut Rng) -> Workload {
        let types = ["bigint", "timestamp with time zone", "text", "jsonb"];
        let mut w = Workload::default();
        let ntables = 1 + rng.below(3);
        let mut columns: Vec<Vec<ColumnRef>> = Vec::new();
        for t in 0..ntables {
            let id = 100 + t as TableId;
            let rows = [5e3, 2e5, 2e6][rng.below(3)];
            let mut info = table(id, &format!("t{t}"), rows, rows / 60.0, 0.0);
            if rng.chance(30) {
                info.inserts = rows * rng.fraction();
            }
            if rng.chance(20) {
                info.updates = rows * rng.fraction() * 0.1;
                info.is_append_only = false;
            }
            let ncols = 2 + rng.below(4);
            let cols: Vec<ColumnRef> = (0..ncols)
                .map(|i| {
                    let ty = if i == 0 {
                        "bigint"
                    } else {
                        types[rng.below(types.len())]
                    };
                    column(i as i16 + 1, &format!("c{i}"), ty)
                })
                .collect();
            for col in &cols {
                info.column_stats.push(ColumnStats {
                    attnum: col.attnum,
                    correlation: Some(if rng.chance(50) { 0.99 } else { 0.1 }),
                    n_distinct: Some(-0.5),
                    gin_entries_per_row: None,
                    gin_distinct_keys: None,
                });
            }
            w.existing_indexes
                .push(pkey(900 + t as u32, id, &format!("t{t}_pkey"), &cols[0]));
            if rng.chance(40) {
                let k = 1 + rng.below(cols.len() - 1);
                let mut keys = vec![IndexKey::asc(c(&cols[k]))];
                if rng.chance(50) {
                    keys.push(IndexKey::asc(c(&cols[rng.below(cols.len())])));
                }
                w.existing_indexes.push(ExistingIndex {
                    id: 950 + t as u32,
                    table: id,
                    schema: "public".into(),
                    name: format!("t{t}_existing"),
                    method: if rng.chance(20) {
                        IndexMethod::Brin
                    } else {
                        IndexMethod::Btree
                    },
                    keys,
                    include: vec![],
                    predicate: None,
                    is_unique: false,
                    is_primary: false,
                    backs_constraint: false,
                    size_bytes: 1 << 22,
                    scans: rng.below(100) as i64,
                });
            }
            w.tables.push(info);
            columns.push(cols);
        }
        let nqueries = 1 + rng.below(12);
        for q in 0..nqueries {
            let mut accesses = Vec::new();
            let first = rng.below(ntables);
            let tables_read = if ntables > 1 && rng.chance(25) {
                vec![first, (first + 1) % ntables]
            } else {
                vec![first]
            };
            for (n, &t) in tables_read.iter().enumerate() {
                let cols = &columns[t];
                let mut a = access(100 + t as TableId, vec![]);
                for _ in 0..rng.below(4) {
                    let col = &cols[rng.below(cols.len())];
                    let sel = [0.0001, 0.002, 0.05, 0.3][rng.below(4)];
                    let p = if col.type_name == "jsonb" {
                        PredicateUse {
                            target: c(col),
                            operator: PredicateOperator::Containment {
                                operator: ContainmentOperator::Contains,
                                operand: GinOperandKind::Jsonb,
                            },
                            selectivity: sel,
                            rare_constant: None,
                        }
                    } else if rng.chance(50) {
                        let mut p = eq(c(col), sel);
                        if col.type_name == "text" && rng.chance(40) {
                            p.rare_constant = Some(RareConstant {
                                predicate_sql: format!("{} = 'rare'::text", col.name),
                                selectivity: sel,
                            });
                        }
                        p
                    } else {
                        range(c(col), sel)
                    };
                    a.predicates.push(p);
                }
                if n == 1 {
                    a.join_columns.push(cols[0].clone());
                }
                if rng.chance(30) {
                    let col = &cols[rng.below(cols.len())];
                    if col.type_name != "jsonb" {
                        a.order_by.push(if rng.chance(50) {
                            desc(c(col))
                        } else {
                            SortItem {
                                target: c(col),
                                direction: SortDirection::ASC,
                            }
                        });
                    }
                }
                if rng.chance(30) {
                    a.referenced_columns = Some(cols.iter().take(2).cloned().collect());
                }
                accesses.push(a);
            }
            let limit = rng.chance(30).then_some(10);
            w.queries.push(query(
                q as QueryId,
                1.0 + rng.below(1000) as f64,
                limit,
                accesses,
            ));
        }
        w
    }

    #[test]
    fn no_redundant_pair_over_random_workloads() {
        let mut brin_seen = 0;
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let w = random_workload(&mut rng);
            let mut candidates = generate_candidates(&w);
            // Also hand the search every BRIN and every 1-column btree it could think of,
            // so that BRIN-beside-btree and prefix pairs are always on offer.
            for t in &w.tables {
                for s in &t.column_stats {
                    let col = column(s.attnum, &format!("c{}", s.attnum - 1), "bigint");
                    for method in [IndexMethod::Brin, IndexMethod::Btree] {
                        candidates.push(GeneratedCandidate {
                            candidate: IndexCandidate {
                                table: t.id,
                                method,
                                keys: vec![IndexKey::asc(c(&col))],
                                include: vec![],
                                predicate: None,
                            },
                            kind: CandidateKind::SingleColumn,
                            source_queries: vec![],
                        });
                    }
                }
            }
            let mut planner = MockPlanner::new(&w);
            let settings = SelectionSettings {
                storage_budget_bytes: [1u64 << 20, 1 << 26, u64::MAX / 4][rng.below(3)],
                ..SelectionSettings::default()
            };
            let r = select_indexes(&w, &candidates, &mut planner, &settings);
            brin_seen += r
                .chosen
                .iter()
                .filter(|c| c.candidate.method == IndexMethod::Brin)
                .count();
            for (i, a) in r.chosen.iter().enumerate() {
                if let Some(e) = covering_existing_index(&a.candidate, &w.existing_indexes) {
                    panic!(
                        "seed {seed}: {} is redundant with existing {}",
                        a.candidate, e.name
                    );
                }
                for (j, b) in r.chosen.iter().enumerate() {
                    assert!(
                        i == j || !b.candidate.shape().makes_redundant(&a.candidate.shape()),
                        "seed {seed}: {} is redundant next to {}",
                        a.candidate,
                        b.candidate
                    );
                }
            }
        }
        assert!(brin_seen > 0, "the random workloads never chose a BRIN");
    }

    #[test]
    fn brin_beside_btree_and_prefixes_are_redundant() {
        let col = column(2, "created_at", "timestamp with time zone");
        let other = column(3, "status", "text");
        let brin = IndexCandidate {
            table: ORDERS,
            method: IndexMethod::Brin,
            keys: vec![IndexKey::asc(c(&col))],
            include: vec![],
            predicate: None,
        };
        let btree = IndexCandidate {
            method: IndexMethod::Btree,
            keys: vec![IndexKey::asc(c(&col)), IndexKey::asc(c(&other))],
            ..brin.clone()
        };
        let prefix = IndexCandidate {
            keys: vec![IndexKey::asc(c(&col))],
            ..btree.clone()
        };
        assert!(btree.shape().makes_redundant(&brin.shape()));
        assert!(btree.shape().makes_redundant(&prefix.shape()));
        assert!(!brin.shape().makes_redundant(&btree.shape()));
        assert!(!prefix.shape().makes_redundant(&btree.shape()));
        let partial = IndexCandidate {
            predicate: Some(PartialPredicate {
                sql: "status = 'open'::text".into(),
                selectivity: 0.01,
            }),
            ..btree.clone()
        };
        // A partial btree serves only its rows: a full BRIN beside it is not redundant.
        assert!(!partial.shape().makes_redundant(&brin.shape()));
    }
}
