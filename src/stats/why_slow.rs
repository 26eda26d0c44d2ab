//! Rule engine behind `perf.why_slow(queryid)`: reads PostgreSQL 15's `EXPLAIN (FORMAT JSON)`
//! output and explains, as a list of [`Finding`]s, why a query is slow.
//!
//! The module is deliberately pure Rust (only `std` and `serde_json`) so the rules can be
//! tested with plain `cargo test` against captured plans; the SQL wrapper turns findings into
//! rows. Plans with `ANALYZE` (optionally `BUFFERS`) get the full rule set; estimate-only plans
//! only get the rules that make sense without actual row counts and timings.
//!
//! Thresholds follow the conventions of plan visualizers (PEV2, explain.depesz.com) and are
//! named constants below so the SQL documentation can quote them.
//!
//! Robustness contract: any JSON value is accepted. Unknown shapes, missing keys and values of
//! the wrong type are treated as absent; nothing here panics on input, and the plan tree is
//! walked iteratively so a pathologically deep document cannot overflow the stack.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Exclusive share of execution time above which a node is reported as `slow_node` (info).
/// Only the single most expensive node is reported at this level, to avoid noise.
pub const SLOW_NODE_INFO_SHARE: f64 = 0.10;
/// Exclusive share of execution time above which any node is reported as `slow_node` (warning).
pub const SLOW_NODE_WARNING_SHARE: f64 = 0.40;
/// Exclusive share of execution time above which a node is reported as `slow_node` (critical).
pub const SLOW_NODE_CRITICAL_SHARE: f64 = 0.90;
/// Nodes that spend less than this many milliseconds of their own are never called slow.
pub const SLOW_NODE_MIN_MS: f64 = 1.0;

/// Estimate error factor (either direction) that makes a `row_misestimate` a warning.
pub const MISESTIMATE_WARNING_FACTOR: f64 = 10.0;
/// Estimate error factor (either direction) that makes a `row_misestimate` critical.
pub const MISESTIMATE_CRITICAL_FACTOR: f64 = 100.0;
/// Misestimates whose absolute error (over all loops) is below this many rows are ignored:
/// 1 row expected and 12 found is a large factor but harmless.
pub const MISESTIMATE_MIN_ROW_ERROR: f64 = 100.0;

/// Fraction of examined rows removed by a filter that is worth an info finding.
pub const FILTER_INFO_FRACTION: f64 = 0.50;
/// Fraction of examined rows removed by a filter that is worth a warning.
pub const FILTER_WARNING_FRACTION: f64 = 0.90;
/// Filters that examine fewer rows than this (over all loops) are not reported.
pub const FILTER_MIN_EXAMINED_ROWS: f64 = 1_000.0;

/// A sequential scan must read at least this many rows per scan (or, in estimate-only
/// plans, the table must hold this many rows) before a missing index is suggested.
pub const SEQ_SCAN_MIN_TABLE_ROWS: f64 = 10_000.0;
/// Fraction of the rows read that the filter must discard before a missing index is suggested.
pub const SEQ_SCAN_SELECTIVE_FRACTION: f64 = 0.90;
/// A selective sequential scan becomes critical when it discards at least this fraction...
pub const SEQ_SCAN_CRITICAL_FRACTION: f64 = 0.99;
/// ...and reads at least this many rows in total (large table or repeated scans).
pub const SEQ_SCAN_CRITICAL_ROWS_READ: f64 = 1_000_000.0;

/// Executions of a nested loop's inner side from which the loop is worth mentioning.
pub const NESTED_LOOP_MANY_LOOPS: f64 = 1_000.0;
/// Executions of an inner side that is not a sequential scan that make the loop a warning.
pub const NESTED_LOOP_WARNING_LOOPS: f64 = 100_000.0;
/// Executions of an inner sequential scan that make the loop critical.
pub const NESTED_LOOP_SEQ_SCAN_CRITICAL_LOOPS: f64 = 10_000.0;
/// Total rows read by repeated inner sequential scans that make the loop critical.
pub const NESTED_LOOP_SEQ_SCAN_CRITICAL_ROWS: f64 = 10_000_000.0;

/// Heap fetches of an index-only scan below this count are not worth a finding.
pub const HEAP_FETCHES_MIN: f64 = 100.0;
/// Heap fetches per returned row that are worth an info finding.
pub const HEAP_FETCHES_INFO_RATIO: f64 = 0.01;
/// Heap fetches per returned row that are worth a warning.
pub const HEAP_FETCHES_WARNING_RATIO: f64 = 0.10;

/// How bad a finding is. Ordered so that `Critical > Warning > Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; probably not the main cause.
    Info,
    /// Likely contributes noticeably to the query's run time.
    Warning,
    /// Very likely the main reason the query is slow.
    Critical,
}

impl Severity {
    /// The lower-case name used in the SQL result (`info`, `warning`, `critical`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Numeric rank for sorting (`info` 0, `warning` 1, `critical` 2); same order as `Ord`.
    pub fn rank(&self) -> u8 {
        match self {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
        }
    }
}

/// One explanation of why the query is slow, shaped like a row of `perf.why_slow()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Stable snake_case code of the rule that fired, e.g. `sort_spilled_to_disk`.
    pub finding: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The plan node, labelled like EXPLAIN's text format, e.g. `Seq Scan on orders o`.
    pub node: String,
    /// What was observed, with the numbers that triggered the rule.
    pub detail: String,
    /// What to do about it.
    pub suggestion: String,
}

/// Facts about the plan and the database that the plan JSON itself does not carry.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanContext {
    /// Whether the plan was captured with EXPLAIN ANALYZE. When false, any actual counts in
    /// the plan are ignored and only the estimate-based rules run. When true, actuals are
    /// used if the plan has them (detected from the root's "Actual Loops"), so a wrong `true`
    /// is harmless. Defaults to true.
    pub analyzed: bool,
    /// Estimated rows per table (`pg_class.reltuples`), keyed by `schema.table` or by bare
    /// table name; the schema-qualified key is tried first. Lets estimate-only plans be
    /// checked for selective sequential scans on large tables.
    pub relation_rows: HashMap<String, f64>,
    /// Size of a disk block in bytes (`BLCKSZ`), used to convert temp block counts to bytes.
    pub block_size_bytes: f64,
}

impl Default for PlanContext {
    fn default() -> Self {
        PlanContext {
            analyzed: true,
            relation_rows: HashMap::new(),
            block_size_bytes: 8192.0,
        }
    }
}

/// Analyzes one EXPLAIN output and returns its findings, most severe first and, within a
/// severity, the nodes that take the largest share of the time (or, without timings, of the
/// estimated cost) first.
///
/// `explain` may be the full `EXPLAIN (FORMAT JSON)` output (`[{"Plan": {...}, ...}]`), a
/// single `{"Plan": {...}}` object (as auto_explain logs it) or a bare plan node. Actuals
/// (ANALYZE) are used when the plan has them and `ctx.analyzed` allows it. Anything
/// unrecognizable yields no findings.
pub fn analyze_plan(explain: &Value, ctx: &PlanContext) -> Vec<Finding> {
    let Some((root, execution_time_ms)) = locate_root(explain) else {
        return Vec::new();
    };
    let plan = PlanTree::build(root, execution_time_ms, ctx.analyzed);
    let mut findings = Vec::new();

    slow_nodes(&plan, &mut findings);
    row_misestimates(&plan, &mut findings);
    let seq_scans = selective_seq_scans(&plan, ctx, &mut findings);
    filters_removing_rows(&plan, &seq_scans, &mut findings);
    let spilled = spilled_sorts_and_hashes(&plan, &mut findings);
    nested_loops(&plan, &mut findings);
    index_only_heap_fetches(&plan, &mut findings);
    temp_blocks_written(&plan, ctx, &spilled, &mut findings);

    // Stable sort: equal keys keep the plan's top-down order.
    findings.sort_by(|a, b| {
        b.finding
            .severity
            .cmp(&a.finding.severity)
            .then(b.weight.total_cmp(&a.weight))
    });
    findings.into_iter().map(|ranked| ranked.finding).collect()
}

/// A finding plus the weight of its node, used only for ordering.
struct RankedFinding {
    finding: Finding,
    weight: f64,
}

/// Adds a finding about node `index`, ranked by that node's share of the work.
fn report(
    out: &mut Vec<RankedFinding>,
    plan: &PlanTree,
    index: usize,
    code: &'static str,
    severity: Severity,
    detail: String,
    suggestion: String,
) {
    out.push(RankedFinding {
        finding: Finding {
            finding: code,
            severity,
            node: plan.nodes[index].label.clone(),
            detail,
            suggestion,
        },
        weight: plan.weight(index),
    });
}

/// Finds the root plan node and the statement's execution time in any accepted input shape.
fn locate_root(explain: &Value) -> Option<(&Map<String, Value>, Option<f64>)> {
    let statement = match explain {
        Value::Array(items) => items.first()?.as_object()?,
        Value::Object(object) => object,
        _ => return None,
    };
    if let Some(plan) = statement.get("Plan") {
        return Some((plan.as_object()?, number(statement, "Execution Time")));
    }
    statement
        .contains_key("Node Type")
        .then_some((statement, None))
}

/// Reads a non-negative finite number; EXPLAIN never emits negative numbers, so anything
/// else is treated as absent. Numeric strings are accepted for tools that stringify values.
fn number(fields: &Map<String, Value>, key: &str) -> Option<f64> {
    let value = match fields.get(key)? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (value.is_finite() && value >= 0.0).then_some(value)
}

/// Reads a non-empty string.
fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// One plan node with what the rules need precomputed.
struct PlanNode<'a> {
    fields: &'a Map<String, Value>,
    node_type: &'a str,
    label: String,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Nodes whose time and buffer counters are included in this node's own counters: the
    /// children, except CTE InitPlans, plus the CTE that this node is the first scan of
    /// (PostgreSQL charges a CTE's work to whichever CTE Scan pulls its rows first).
    included: Vec<usize>,
    /// Number of processes sharing the node's work (leader plus workers under a Gather); its
    /// "Actual Loops" counts every process, but they run concurrently.
    processes: f64,
    /// Set under a Limit or on the inner side of a semi/anti join: such nodes legitimately
    /// stop before producing all the rows the planner estimated.
    may_stop_early: bool,
}

/// The flattened plan, in EXPLAIN's top-down order, with derived totals.
struct PlanTree<'a> {
    nodes: Vec<PlanNode<'a>>,
    /// Whether actuals (EXPLAIN ANALYZE) are used: the plan has them and the context allows.
    analyzed: bool,
    /// Statement run time that node time shares are relative to.
    total_ms: Option<f64>,
    /// Root's estimated total cost, the fallback weight when there are no timings.
    total_cost: Option<f64>,
}

impl<'a> PlanTree<'a> {
    /// Flattens the tree under `root`; `use_actuals: false` makes it estimate-only.
    fn build(
        root: &'a Map<String, Value>,
        execution_time_ms: Option<f64>,
        use_actuals: bool,
    ) -> Self {
        let mut nodes: Vec<PlanNode<'a>> = Vec::new();
        // (node, parent index, processes sharing it, may stop early)
        let mut pending = vec![(root, None::<usize>, 1.0_f64, false)];
        while let Some((fields, parent, processes, may_stop_early)) = pending.pop() {
            let index = nodes.len();
            if let Some(parent) = parent {
                nodes[parent].children.push(index);
            }
            let node_type = text(fields, "Node Type").unwrap_or("Unknown");
            nodes.push(PlanNode {
                fields,
                node_type,
                label: node_label(fields),
                parent,
                children: Vec::new(),
                included: Vec::new(),
                processes,
                may_stop_early,
            });

            let children: Vec<&'a Map<String, Value>> = fields
                .get("Plans")
                .and_then(Value::as_array)
                .map(|plans| plans.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default();
            let child_processes = if node_type.starts_with("Gather") {
                gather_processes(fields, children.first().copied())
            } else {
                processes
            };
            let semi_or_anti = matches!(text(fields, "Join Type"), Some("Semi" | "Anti"));
            // Pushed in reverse so they are popped, and numbered, in plan order.
            for (position, child) in children.iter().enumerate().rev() {
                let stops_early = may_stop_early
                    || node_type == "Limit"
                    || (semi_or_anti && is_inner_child(child, position));
                pending.push((child, Some(index), child_processes, stops_early));
            }
        }

        attribute_ctes(&mut nodes);
        let analyzed = use_actuals
            && nodes
                .first()
                .is_some_and(|root| root.fields.contains_key("Actual Loops"));
        let root_ms = nodes.first().and_then(|root| node_total_ms(root));
        let total_ms = execution_time_ms
            .filter(|ms| *ms > 0.0)
            .or(root_ms.filter(|ms| *ms > 0.0))
            .filter(|_| analyzed);
        let total_cost = nodes
            .first()
            .and_then(|root| number(root.fields, "Total Cost"))
            .filter(|cost| *cost > 0.0);
        PlanTree {
            nodes,
            analyzed,
            total_ms,
            total_cost,
        }
    }

    /// Time spent in the node itself, excluding the nodes it drives.
    fn exclusive_ms(&self, index: usize) -> Option<f64> {
        self.exclusive(index, node_total_ms)
    }

    /// Temp blocks written by the node itself (BUFFERS counters include the children's).
    fn exclusive_temp_written(&self, index: usize) -> Option<f64> {
        self.exclusive(index, |node| number(node.fields, "Temp Written Blocks"))
    }

    /// A cumulative counter of the node minus the same counter of the nodes it includes.
    fn exclusive(&self, index: usize, counter: impl Fn(&PlanNode) -> Option<f64>) -> Option<f64> {
        let node = self.nodes.get(index)?;
        let own = counter(node)?;
        let included: f64 = node
            .included
            .iter()
            .filter_map(|&child| self.nodes.get(child).and_then(&counter))
            .sum();
        Some((own - included).max(0.0))
    }

    /// Node's share of statement execution time, when timings are known.
    fn time_share(&self, index: usize) -> Option<f64> {
        let total = self.total_ms?;
        Some((self.exclusive_ms(index)? / total).min(1.0))
    }

    /// Ordering weight: time share, or the share of estimated cost when there are no timings.
    fn weight(&self, index: usize) -> f64 {
        if let Some(share) = self.time_share(index) {
            return share;
        }
        let Some(total_cost) = self.total_cost else {
            return 0.0;
        };
        self.exclusive(index, |node| number(node.fields, "Total Cost"))
            .map_or(0.0, |cost| (cost / total_cost).min(1.0))
    }

    /// The node's inner child (as EXPLAIN labels it, else the second child).
    fn inner_child(&self, index: usize) -> Option<usize> {
        let children = &self.nodes.get(index)?.children;
        children
            .iter()
            .copied()
            .find(|&child| text(self.nodes[child].fields, "Parent Relationship") == Some("Inner"))
            .or_else(|| children.get(1).copied())
    }

    /// The node's outer child (as EXPLAIN labels it, else the first child).
    fn outer_child(&self, index: usize) -> Option<usize> {
        let children = &self.nodes.get(index)?.children;
        children
            .iter()
            .copied()
            .find(|&child| text(self.nodes[child].fields, "Parent Relationship") == Some("Outer"))
            .or_else(|| children.first().copied())
    }

    /// Whether the node ran at all (never-executed nodes report zero loops).
    fn executed(&self, index: usize) -> bool {
        number(self.nodes[index].fields, "Actual Loops").is_some_and(|loops| loops > 0.0)
    }
}

/// Whether `child` at `position` is the inner side of its join.
fn is_inner_child(child: &Map<String, Value>, position: usize) -> bool {
    match text(child, "Parent Relationship") {
        Some(relationship) => relationship == "Inner",
        None => position == 1,
    }
}

/// How many processes run the subtree of a Gather: the loops of its first child per loop of
/// the Gather (this respects `parallel_leader_participation`), else launched or planned
/// workers plus the leader.
fn gather_processes(gather: &Map<String, Value>, first_child: Option<&Map<String, Value>>) -> f64 {
    let from_loops = first_child
        .and_then(|child| number(child, "Actual Loops"))
        .zip(number(gather, "Actual Loops").filter(|loops| *loops > 0.0))
        .map(|(child_loops, gather_loops)| (child_loops / gather_loops).round());
    let from_workers = number(gather, "Workers Launched")
        .or_else(|| number(gather, "Workers Planned"))
        .map(|workers| workers + 1.0);
    from_loops
        .filter(|processes| *processes >= 1.0)
        .or(from_workers)
        .unwrap_or(1.0)
        .max(1.0)
}

/// Fills `included` for every node, moving each CTE's counters from the node it is attached
/// to onto the first CTE Scan that reads it.
fn attribute_ctes(nodes: &mut [PlanNode]) {
    let mut cte_plans: HashMap<String, usize> = HashMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if text(node.fields, "Parent Relationship") == Some("InitPlan") {
            if let Some(name) =
                text(node.fields, "Subplan Name").and_then(|n| n.strip_prefix("CTE "))
            {
                cte_plans.entry(name.to_string()).or_insert(index);
            }
        }
    }
    let cte_indexes: HashSet<usize> = cte_plans.values().copied().collect();
    // Plan order, so the first CTE Scan of each CTE claims it.
    for node in nodes.iter_mut() {
        node.included = node
            .children
            .iter()
            .copied()
            .filter(|child| !cte_indexes.contains(child))
            .collect();
        if node.node_type == "CTE Scan" {
            if let Some(cte) = text(node.fields, "CTE Name").and_then(|name| cte_plans.remove(name))
            {
                node.included.push(cte);
            }
        }
    }
}

/// Wall-clock time of all executions of a node: per-loop time times loops, divided among
/// the processes that ran it concurrently.
fn node_total_ms(node: &PlanNode) -> Option<f64> {
    let per_loop = number(node.fields, "Actual Total Time")?;
    let loops = number(node.fields, "Actual Loops")?;
    Some(per_loop * loops / node.processes)
}

/// Labels a node like EXPLAIN's text format does: `Parallel Seq Scan on orders o`,
/// `Index Scan using orders_pkey on orders`, `HashAggregate`, `CTE Scan on x`.
fn node_label(fields: &Map<String, Value>) -> String {
    let node_type = text(fields, "Node Type").unwrap_or("Unknown node");
    let mut label = String::new();
    if fields.get("Parallel Aware").and_then(Value::as_bool) == Some(true) {
        label.push_str("Parallel ");
    }
    match node_type {
        "Aggregate" => {
            match text(fields, "Partial Mode") {
                Some("Partial") => label.push_str("Partial "),
                Some("Finalize") => label.push_str("Finalize "),
                _ => {}
            }
            label.push_str(match text(fields, "Strategy") {
                Some("Hashed") => "HashAggregate",
                Some("Sorted") => "GroupAggregate",
                Some("Mixed") => "MixedAggregate",
                _ => "Aggregate",
            });
        }
        "ModifyTable" => label.push_str(text(fields, "Operation").unwrap_or("ModifyTable")),
        other => label.push_str(other),
    }
    if let Some(index_name) = text(fields, "Index Name") {
        let preposition = if node_type == "Bitmap Index Scan" {
            "on"
        } else {
            "using"
        };
        label.push_str(&format!(" {preposition} {index_name}"));
    }
    let target = relation_name(fields)
        .or_else(|| text(fields, "CTE Name").map(str::to_string))
        .or_else(|| text(fields, "Function Name").map(str::to_string));
    match (target, text(fields, "Alias")) {
        (Some(target), alias) => {
            label.push_str(" on ");
            label.push_str(&target);
            let bare_target = target.rsplit('.').next().unwrap_or(&target);
            if let Some(alias) = alias.filter(|alias| *alias != bare_target) {
                label.push(' ');
                label.push_str(alias);
            }
        }
        (None, Some(alias)) if node_type == "Subquery Scan" => {
            label.push_str(" on ");
            label.push_str(alias);
        }
        _ => {}
    }
    if let Some(subplan) = text(fields, "Subplan Name") {
        label.push_str(&format!(" ({subplan})"));
    }
    label
}

/// The scanned table, schema-qualified when the plan says the schema (EXPLAIN VERBOSE).
fn relation_name(fields: &Map<String, Value>) -> Option<String> {
    let relation = text(fields, "Relation Name")?;
    Some(match text(fields, "Schema") {
        Some(schema) => format!("{schema}.{relation}"),
        None => relation.to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// Rule 1: nodes that take most of the execution time.
// ---------------------------------------------------------------------------------------

/// `slow_node`: the most expensive node if it has >10% of the time, plus any node >40%.
/// Needs timings and at least two timed nodes (in a one-node plan the share is trivially 100%).
fn slow_nodes(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
    let Some(total_ms) = plan.total_ms else {
        return;
    };
    let mut shares: Vec<(usize, f64, f64)> = (0..plan.nodes.len())
        .filter_map(|index| Some((index, plan.time_share(index)?, plan.exclusive_ms(index)?)))
        .collect();
    if shares.len() < 2 {
        return;
    }
    shares.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (rank, &(index, share, own_ms)) in shares.iter().enumerate() {
        if own_ms < SLOW_NODE_MIN_MS {
            continue;
        }
        let severity = if share > SLOW_NODE_CRITICAL_SHARE {
            Severity::Critical
        } else if share > SLOW_NODE_WARNING_SHARE {
            Severity::Warning
        } else if share > SLOW_NODE_INFO_SHARE && rank == 0 {
            Severity::Info
        } else {
            continue;
        };
        let node = &plan.nodes[index];
        let detail = format!(
            "{} spends {} of the execution time in itself ({} of {}, not counting its child nodes)",
            node.label,
            percent(share),
            milliseconds(own_ms),
            milliseconds(total_ms)
        );
        let suggestion = slow_node_advice(node.node_type).to_string();
        report(out, plan, index, "slow_node", severity, detail, suggestion);
    }
}

/// What usually helps when a node of this type dominates the run time.
fn slow_node_advice(node_type: &str) -> &'static str {
    match node_type {
        "Seq Scan" => {
            "Reading the whole table dominates: if the query needs only some of its rows, an \
             index on the filtering or join column lets it read just those; see the other \
             findings for this scan."
        }
        "CTE Scan" | "Materialize" => {
            "Materializing rows dominates: a CTE referenced once can be inlined (WITH ... AS \
             NOT MATERIALIZED) so conditions reach the underlying scans; otherwise produce fewer \
             rows or give it more work_mem."
        }
        "Sort" | "Incremental Sort" => {
            "Sorting dominates: an index on the sort key can return rows already ordered; \
             otherwise sort fewer rows or give the sort more work_mem."
        }
        "Hash Join" | "Hash" | "Merge Join" => {
            "The join dominates: join fewer rows (filter before joining) and check the \
             findings about spills and row estimates."
        }
        "Nested Loop" => {
            "The nested loop dominates: check its outer side's row estimate; for many outer \
             rows a hash join or an index on the inner join column is usually cheaper."
        }
        "Aggregate" | "WindowAgg" | "Group" => {
            "Aggregation dominates: aggregate fewer rows (filter earlier) or keep a \
             pre-aggregated summary (materialized view) for this query."
        }
        "Index Scan" | "Index Only Scan" | "Bitmap Heap Scan" | "Bitmap Index Scan" => {
            "Index access dominates: check that the index is selective for this condition and, \
             for repeated lookups, whether a covering index (INCLUDE columns) avoids heap visits."
        }
        "Gather" | "Gather Merge" => {
            "Starting parallel workers and passing rows through the Gather dominates: reduce \
             the rows that reach it (filter or aggregate below it); for short queries \
             parallelism may not pay off at all (raise parallel_setup_cost)."
        }
        _ => "This node is where optimisation pays off most; see the other findings for it.",
    }
}

// ---------------------------------------------------------------------------------------
// Rule 2: row estimates that are far off.
// ---------------------------------------------------------------------------------------

/// Direction and size of a node's estimate error.
#[derive(Clone, Copy)]
struct Misestimate {
    underestimate: bool,
    factor: f64,
}

/// Estimate error of one executed node, if it passes the factor and absolute-error guards.
fn misestimate(plan: &PlanTree, index: usize) -> Option<Misestimate> {
    let node = &plan.nodes[index];
    let estimated = number(node.fields, "Plan Rows")?;
    let actual = number(node.fields, "Actual Rows")?;
    let loops = number(node.fields, "Actual Loops").filter(|loops| *loops > 0.0)?;
    // Both are per-loop averages; flooring at one row keeps zeros from producing infinities.
    let (estimated_floor, actual_floor) = (estimated.max(1.0), actual.max(1.0));
    let underestimate = actual_floor > estimated_floor;
    let factor = if underestimate {
        actual_floor / estimated_floor
    } else {
        estimated_floor / actual_floor
    };
    let row_error = (actual - estimated).abs() * loops;
    if factor < MISESTIMATE_WARNING_FACTOR || row_error < MISESTIMATE_MIN_ROW_ERROR {
        return None;
    }
    if !underestimate && node.may_stop_early {
        return None;
    }
    Some(Misestimate {
        underestimate,
        factor,
    })
}

/// `row_misestimate`: actual rows per loop ≥10x off the estimate (warning), ≥100x (critical).
/// An error inherited from a child (same direction, at most 10x more) is reported only at the
/// child, where it originates.
fn row_misestimates(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
    if !plan.analyzed {
        return;
    }
    let errors: Vec<Option<Misestimate>> = (0..plan.nodes.len())
        .map(|index| misestimate(plan, index))
        .collect();
    for (index, error) in errors.iter().enumerate() {
        let Some(error) = *error else {
            continue;
        };
        let inherited = plan.nodes[index].children.iter().any(|&child| {
            errors[child].is_some_and(|child_error| {
                child_error.underestimate == error.underestimate
                    && child_error.factor * MISESTIMATE_WARNING_FACTOR >= error.factor
            })
        });
        if inherited {
            continue;
        }
        let severity = if error.factor >= MISESTIMATE_CRITICAL_FACTOR {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let node = &plan.nodes[index];
        let estimated = number(node.fields, "Plan Rows").unwrap_or(0.0);
        let actual = number(node.fields, "Actual Rows").unwrap_or(0.0);
        let loops = number(node.fields, "Actual Loops").unwrap_or(1.0);
        let per_loop = if loops > 1.0 {
            format!(" per loop (over {} loops)", count(loops))
        } else {
            String::new()
        };
        let detail = format!(
            "The planner estimated {} rows{per_loop} but {} came back: a {}x {}",
            count(estimated),
            count(actual),
            count(error.factor.round()),
            if error.underestimate {
                "underestimate"
            } else {
                "overestimate"
            }
        );
        let suggestion = misestimate_advice(node);
        report(
            out,
            plan,
            index,
            "row_misestimate",
            severity,
            detail,
            suggestion,
        );
    }
}

/// Refreshing statistics fixes stale estimates; extended statistics fix correlated columns.
fn misestimate_advice(node: &PlanNode) -> String {
    let consequence = "Wrong row estimates make the planner choose the wrong join method, \
                       join order or scan type.";
    let Some(relation) = relation_name(node.fields) else {
        return format!(
            "Run ANALYZE on the tables involved; if join columns are correlated, \
             CREATE STATISTICS on them may help. {consequence}"
        );
    };
    let tested: Vec<IndexColumn> = ["Filter", "Index Cond", "Recheck Cond"]
        .iter()
        .filter_map(|key| text(node.fields, key))
        .flat_map(index_columns)
        .collect();
    let columns: Vec<String> = tested
        .iter()
        .filter(|column| column.is_plain_column())
        .map(|column| column.expression.clone())
        .fold(Vec::new(), |mut unique, column| {
            if !unique.contains(&column) {
                unique.push(column);
            }
            unique
        });
    // The planner has no statistics for an expression unless an index or extended
    // statistics object on it exists, so it falls back to a fixed guess.
    if let Some(expression) = tested.iter().find(|column| !column.is_plain_column()) {
        let expression = &expression.expression;
        return format!(
            "The planner has no statistics for {expression} and guessed. An expression index \
             (CREATE INDEX ON {relation} (({expression}))) or CREATE STATISTICS ON \
             ({expression}) FROM {relation}, followed by ANALYZE {relation}, gives it real \
             ones. {consequence}"
        );
    }
    if columns.len() >= 2 {
        let column_list = columns.join(", ");
        format!(
            "Run ANALYZE {relation} in case its statistics are stale; if the conditions on \
             {column_list} are correlated, the planner multiplies their selectivities wrongly: \
             CREATE STATISTICS ON {column_list} FROM {relation}; then ANALYZE {relation}. \
             {consequence}"
        )
    } else {
        format!(
            "Run ANALYZE {relation} (its statistics may be stale); if that does not help, raise \
             the statistics target of the filtered column (ALTER TABLE ... ALTER COLUMN ... SET \
             STATISTICS 1000). {consequence}"
        )
    }
}

// ---------------------------------------------------------------------------------------
// Rules 3 and 4: filters that discard most rows, and sequential scans that need an index.
// ---------------------------------------------------------------------------------------

/// `seq_scan_selective_filter`: a sequential scan reading ≥10k rows per scan of which the
/// filter discards ≥90% (warning; critical at ≥99% discarded and ≥1M rows read in total).
/// Without actuals: the estimated rows are ≤10% of a table known (from the context) to hold
/// ≥10k rows. Returns the nodes reported, so the generic filter rule can skip them.
fn selective_seq_scans(
    plan: &PlanTree,
    ctx: &PlanContext,
    out: &mut Vec<RankedFinding>,
) -> HashSet<usize> {
    let mut reported = HashSet::new();
    for (index, node) in plan.nodes.iter().enumerate() {
        if node.node_type != "Seq Scan" {
            continue;
        }
        let Some(filter) = text(node.fields, "Filter") else {
            continue;
        };
        let Some(relation) = relation_name(node.fields) else {
            continue;
        };
        let parallel = node.fields.get("Parallel Aware").and_then(Value::as_bool) == Some(true);
        // A parallel scan's per-loop counts cover one process's share of the table.
        let share_factor = if parallel { node.processes } else { 1.0 };
        let (severity, detail) = if plan.analyzed {
            if !plan.executed(index) {
                continue;
            }
            let returned = number(node.fields, "Actual Rows").unwrap_or(0.0);
            let removed = number(node.fields, "Rows Removed by Filter").unwrap_or(0.0);
            let loops = number(node.fields, "Actual Loops").unwrap_or(1.0);
            let read_per_scan = (returned + removed) * share_factor;
            if read_per_scan < SEQ_SCAN_MIN_TABLE_ROWS {
                continue;
            }
            let removed_fraction = removed / (returned + removed);
            if removed_fraction < SEQ_SCAN_SELECTIVE_FRACTION {
                continue;
            }
            let read_total = (returned + removed) * loops;
            let severity = if removed_fraction >= SEQ_SCAN_CRITICAL_FRACTION
                && read_total >= SEQ_SCAN_CRITICAL_ROWS_READ
            {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let repeated = if loops / share_factor > 1.0 {
                format!(", and the scan ran {} times", count(loops / share_factor))
            } else {
                String::new()
            };
            let detail = format!(
                "Read {} rows of {relation} to keep {} ({} discarded by Filter: \
                 {filter}){repeated}",
                count(read_per_scan),
                count(returned * share_factor),
                percent(removed_fraction)
            );
            (severity, detail)
        } else {
            let Some(table_rows) = lookup_relation_rows(ctx, node.fields) else {
                continue;
            };
            let estimated = number(node.fields, "Plan Rows").unwrap_or(0.0) * share_factor;
            if table_rows < SEQ_SCAN_MIN_TABLE_ROWS
                || estimated > table_rows * (1.0 - SEQ_SCAN_SELECTIVE_FRACTION)
            {
                continue;
            }
            let detail = format!(
                "Plans to read all ~{} rows of {relation} to keep an estimated {} \
                 (Filter: {filter})",
                count(table_rows),
                count(estimated)
            );
            (Severity::Warning, detail)
        };
        let suggestion = index_advice(&relation, filter);
        report(
            out,
            plan,
            index,
            "seq_scan_selective_filter",
            severity,
            detail,
            suggestion,
        );
        reported.insert(index);
    }
    reported
}

/// Table size from the context, trying `schema.table` before the bare name.
fn lookup_relation_rows(ctx: &PlanContext, fields: &Map<String, Value>) -> Option<f64> {
    let relation = text(fields, "Relation Name")?;
    let qualified = text(fields, "Schema").map(|schema| format!("{schema}.{relation}"));
    qualified
        .and_then(|name| ctx.relation_rows.get(&name))
        .or_else(|| ctx.relation_rows.get(relation))
        .copied()
        .filter(|rows| rows.is_finite() && *rows >= 0.0)
}

/// Suggests an index named after the filter's columns when the filter is simple enough.
fn index_advice(relation: &str, filter: &str) -> String {
    let columns = index_columns(filter);
    if columns.is_empty() {
        return format!(
            "An index on the column(s) tested by the filter could let PostgreSQL read only the \
             matching rows of {relation}. Run perf.suggest_indexes() for a recommendation \
             weighed against the whole workload."
        );
    }
    let key = columns
        .iter()
        .map(IndexColumn::index_key)
        .collect::<Vec<_>>()
        .join(", ");
    let mixes_equality_and_range = columns.iter().any(|column| column.equality)
        && columns.iter().any(|column| !column.equality);
    let ordering = if mixes_equality_and_range {
        " Equality columns come first so the range condition can use the rest of the index."
    } else {
        ""
    };
    format!(
        "Consider an index on {relation} ({key}), e.g. CREATE INDEX ON {relation} ({key}).\
         {ordering} Run perf.suggest_indexes() to see it weighed against the whole workload."
    )
}

/// `filter_removes_rows` / `join_filter_removes_rows`: a (join) filter discards >50% (info)
/// or >90% (warning) of the rows it examines, counting only filters that examine ≥1000 rows.
fn filters_removing_rows(
    plan: &PlanTree,
    already_reported: &HashSet<usize>,
    out: &mut Vec<RankedFinding>,
) {
    if !plan.analyzed {
        return;
    }
    for (index, node) in plan.nodes.iter().enumerate() {
        if already_reported.contains(&index) || !plan.executed(index) {
            continue;
        }
        let returned = number(node.fields, "Actual Rows").unwrap_or(0.0);
        let loops = number(node.fields, "Actual Loops").unwrap_or(1.0);
        let filters = [
            ("Filter", "Rows Removed by Filter", "filter_removes_rows"),
            (
                "Join Filter",
                "Rows Removed by Join Filter",
                "join_filter_removes_rows",
            ),
        ];
        for (condition_key, removed_key, code) in filters {
            let Some(removed) = number(node.fields, removed_key) else {
                continue;
            };
            let examined = returned + removed;
            if examined * loops < FILTER_MIN_EXAMINED_ROWS {
                continue;
            }
            let fraction = removed / examined;
            let severity = if fraction > FILTER_WARNING_FRACTION {
                Severity::Warning
            } else if fraction > FILTER_INFO_FRACTION {
                Severity::Info
            } else {
                continue;
            };
            let condition = text(node.fields, condition_key).unwrap_or("(not shown)");
            let detail = format!(
                "{condition_key} {condition} discarded {} of {} rows examined per loop ({})",
                count(removed),
                count(examined),
                percent(fraction)
            );
            let suggestion = if code == "join_filter_removes_rows" {
                "The join condition is checked row by row after pairing rows up. Make it usable \
                 as an index or hash condition: compare plain columns with = (no expressions or \
                 casts on the join column) and index the inner side's join column."
                    .to_string()
            } else if let Some(relation) = relation_name(node.fields) {
                format!(
                    "Rows are fetched and then thrown away. {} Run perf.suggest_indexes() for a \
                     workload-wide recommendation.",
                    filter_index_sentence(&relation, condition)
                )
            } else {
                "Rows are produced and then thrown away by a filter above the scan. Rewrite the \
                 query so the condition can be applied in the table scan (e.g. move it into the \
                 subquery or CTE, or mark the CTE NOT MATERIALIZED)."
                    .to_string()
            };
            report(out, plan, index, code, severity, detail, suggestion);
        }
    }
}

/// One sentence suggesting an index that covers the filter, naming columns when possible.
fn filter_index_sentence(relation: &str, filter: &str) -> String {
    let columns = index_columns(filter);
    if columns.is_empty() {
        return format!("An index covering the filter's columns on {relation} could avoid that.");
    }
    let key = columns
        .iter()
        .map(IndexColumn::index_key)
        .collect::<Vec<_>>()
        .join(", ");
    format!("An index on {relation} ({key}) matching the filter could avoid that.")
}

// ---------------------------------------------------------------------------------------
// Rules 5, 6 and 9: work that spilled to temporary files.
// ---------------------------------------------------------------------------------------

/// `sort_spilled_to_disk`, `hash_spilled_to_disk` and `hash_aggregate_spilled_to_disk`
/// (all warnings). Returns the nodes reported, so the temp-file rule does not repeat them.
fn spilled_sorts_and_hashes(plan: &PlanTree, out: &mut Vec<RankedFinding>) -> HashSet<usize> {
    let mut reported = HashSet::new();
    if !plan.analyzed {
        return reported;
    }
    for (index, node) in plan.nodes.iter().enumerate() {
        let fields = node.fields;
        match node.node_type {
            "Sort" | "Incremental Sort" => {
                let Some(disk_kb) = sort_disk_kb(fields) else {
                    continue;
                };
                let method = text(fields, "Sort Method").unwrap_or("external sort");
                let detail = format!(
                    "Sort ({method}) did not fit in work_mem and wrote {} to disk",
                    kilobytes(disk_kb)
                );
                report(
                    out,
                    plan,
                    index,
                    "sort_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    sort_advice(fields, disk_kb),
                );
                reported.insert(index);
            }
            "Hash" => {
                let batches = number(fields, "Hash Batches").unwrap_or(1.0);
                let planned = number(fields, "Original Hash Batches").unwrap_or(1.0);
                if batches <= 1.0 && planned <= 1.0 {
                    continue;
                }
                let peak_kb = number(fields, "Peak Memory Usage").unwrap_or(0.0);
                let detail = format!(
                    "The hash table was split into {} batches (planned {}), so both join inputs \
                     were partly written to temporary files; peak memory per batch {}",
                    count(batches),
                    count(planned),
                    kilobytes(peak_kb)
                );
                let needed_kb = peak_kb * batches.max(planned);
                let suggestion = format!(
                    "Give the hash more memory so it fits in one batch: work_mem × \
                     hash_mem_multiplier of at least ~{} (e.g. SET LOCAL work_mem for this \
                     query), or join fewer rows by filtering the inner side first.",
                    memory_setting(needed_kb * 1.5)
                );
                report(
                    out,
                    plan,
                    index,
                    "hash_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    suggestion,
                );
                reported.insert(index);
                // The join above a batched hash writes the outer side's batches itself.
                if let Some(parent) = node.parent {
                    reported.insert(parent);
                }
            }
            "Aggregate" => {
                let Some((batches, disk_kb)) = hash_aggregate_spill(fields) else {
                    continue;
                };
                let detail = format!(
                    "The hash aggregate exceeded its memory limit and spilled: {} batches, {} \
                     written to disk",
                    count(batches),
                    kilobytes(disk_kb)
                );
                let suggestion = format!(
                    "Raise work_mem (or hash_mem_multiplier) for this query to roughly {} so the \
                     groups fit in memory, or aggregate fewer rows.",
                    memory_setting(disk_kb.max(1.0) * 2.0)
                );
                report(
                    out,
                    plan,
                    index,
                    "hash_aggregate_spilled_to_disk",
                    Severity::Warning,
                    detail,
                    suggestion,
                );
                reported.insert(index);
            }
            _ => {}
        }
    }
    reported
}

/// Disk space used by a sort that spilled, in kB, looking at the node itself, at each
/// parallel worker, and at incremental sort group statistics.
fn sort_disk_kb(fields: &Map<String, Value>) -> Option<f64> {
    let spilled = |entry: &Map<String, Value>| {
        text(entry, "Sort Space Type") == Some("Disk")
            || text(entry, "Sort Method").is_some_and(|method| method.starts_with("external"))
    };
    let mut disk_kb: Option<f64> = None;
    let mut record = |kb: f64| disk_kb = Some(disk_kb.map_or(kb, |seen| seen.max(kb)));
    let workers = fields
        .get("Workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object);
    for entry in std::iter::once(fields).chain(workers) {
        if spilled(entry) {
            record(number(entry, "Sort Space Used").unwrap_or(0.0));
        }
        for groups in ["Full-sort Groups", "Pre-sorted Groups"] {
            let disk = entry
                .get(groups)
                .and_then(Value::as_object)
                .and_then(|group| group.get("Sort Space Disk"))
                .and_then(Value::as_object);
            if let Some(disk) = disk {
                record(number(disk, "Peak Sort Space Used").unwrap_or(0.0));
            }
        }
    }
    disk_kb
}

/// Memory advice for a spilled sort, plus an index on the sort key when the key is simple.
fn sort_advice(fields: &Map<String, Value>, disk_kb: f64) -> String {
    // An in-memory sort needs noticeably more room than the compact on-disk runs.
    let memory = format!(
        "Raise work_mem for this query to at least ~{} (e.g. SET LOCAL work_mem = '{}')",
        memory_setting(disk_kb * 2.0),
        memory_setting(disk_kb * 2.0)
    );
    let keys: Vec<&str> = fields
        .get("Sort Key")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        format!("{memory}, or sort fewer rows.")
    } else {
        format!(
            "{memory}, or create an index on ({}) so rows can be read already in that order.",
            keys.join(", ")
        )
    }
}

/// Batches and disk usage (kB) of a hash aggregate that spilled, including parallel workers.
fn hash_aggregate_spill(fields: &Map<String, Value>) -> Option<(f64, f64)> {
    let workers = fields
        .get("Workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object);
    let (mut batches, mut disk_kb) = (0.0_f64, 0.0_f64);
    for entry in std::iter::once(fields).chain(workers) {
        batches = batches.max(number(entry, "HashAgg Batches").unwrap_or(0.0));
        disk_kb = disk_kb.max(number(entry, "Disk Usage").unwrap_or(0.0));
    }
    (batches > 1.0 || disk_kb > 0.0).then_some((batches, disk_kb))
}

/// `temp_blocks_written` (info): a node wrote temporary files itself (BUFFERS) and no more
/// specific spill finding already covers it, e.g. a CTE, Materialize or WindowAgg tuplestore.
fn temp_blocks_written(
    plan: &PlanTree,
    ctx: &PlanContext,
    already_reported: &HashSet<usize>,
    out: &mut Vec<RankedFinding>,
) {
    if !plan.analyzed {
        return;
    }
    for index in 0..plan.nodes.len() {
        if already_reported.contains(&index) {
            continue;
        }
        let Some(blocks) = plan.exclusive_temp_written(index).filter(|b| *b > 0.0) else {
            continue;
        };
        let block_size = if ctx.block_size_bytes.is_finite() && ctx.block_size_bytes > 0.0 {
            ctx.block_size_bytes
        } else {
            8192.0
        };
        let kb = blocks * block_size / 1024.0;
        let detail = format!(
            "Wrote {} blocks ({}) to temporary files because its working data did not fit in \
             work_mem",
            count(blocks),
            kilobytes(kb)
        );
        let suggestion = format!(
            "Temporary files are much slower than memory: raise work_mem for this query to \
             ~{} or reduce the rows this node has to hold.",
            memory_setting(kb * 2.0)
        );
        report(
            out,
            plan,
            index,
            "temp_blocks_written",
            Severity::Info,
            detail,
            suggestion,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Rule 7: nested loops that execute their inner side very often.
// ---------------------------------------------------------------------------------------

/// `nested_loop_inner_seq_scan`: the inner side is a sequential scan re-run ≥1000 times
/// (warning; critical at ≥10k runs or ≥10M rows read); estimate-only plans: ≥1000 estimated
/// outer rows (warning). `nested_loop_many_loops`: any other inner side run ≥1000 times
/// (info; warning at ≥100k).
fn nested_loops(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
    for (index, node) in plan.nodes.iter().enumerate() {
        if node.node_type != "Nested Loop" {
            continue;
        }
        let Some(mut inner) = plan.inner_child(index) else {
            continue;
        };
        // A Memoize caches inner results; only its cache misses execute the node below it.
        if plan.nodes[inner].node_type == "Memoize" {
            match plan.nodes[inner].children.first() {
                Some(&below) => inner = below,
                None => continue,
            }
        }
        let inner_node = &plan.nodes[inner];
        let inner_is_seq_scan = inner_node.node_type == "Seq Scan";
        if !plan.analyzed {
            let estimated_loops = plan
                .outer_child(index)
                .and_then(|outer| number(plan.nodes[outer].fields, "Plan Rows"))
                .unwrap_or(0.0);
            if inner_is_seq_scan && estimated_loops >= NESTED_LOOP_MANY_LOOPS {
                let detail = format!(
                    "The plan re-runs {} once per outer row, ~{} times by estimate",
                    inner_node.label,
                    count(estimated_loops)
                );
                report(
                    out,
                    plan,
                    index,
                    "nested_loop_inner_seq_scan",
                    Severity::Warning,
                    detail,
                    nested_loop_seq_scan_advice(inner_node),
                );
            }
            continue;
        }
        let loops = number(inner_node.fields, "Actual Loops").unwrap_or(0.0) / inner_node.processes;
        if loops < NESTED_LOOP_MANY_LOOPS {
            continue;
        }
        if inner_is_seq_scan {
            let rows_per_scan = number(inner_node.fields, "Actual Rows").unwrap_or(0.0)
                + number(inner_node.fields, "Rows Removed by Filter").unwrap_or(0.0);
            let rows_read = rows_per_scan * loops;
            let severity = if loops >= NESTED_LOOP_SEQ_SCAN_CRITICAL_LOOPS
                || rows_read >= NESTED_LOOP_SEQ_SCAN_CRITICAL_ROWS
            {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let detail = format!(
                "{} ran {} times, once per outer row, reading {} rows in total",
                inner_node.label,
                count(loops),
                count(rows_read)
            );
            report(
                out,
                plan,
                index,
                "nested_loop_inner_seq_scan",
                severity,
                detail,
                nested_loop_seq_scan_advice(inner_node),
            );
        } else {
            let severity = if loops >= NESTED_LOOP_WARNING_LOOPS {
                Severity::Warning
            } else {
                Severity::Info
            };
            let detail = format!(
                "{} ran {} times, once per outer row",
                inner_node.label,
                count(loops)
            );
            let suggestion = "Each outer row triggers a separate lookup. If the outer side's row \
                              estimate is far too low, fix it (ANALYZE, CREATE STATISTICS) so the \
                              planner can choose a hash or merge join; otherwise make sure the \
                              inner lookup is a cheap index probe."
                .to_string();
            report(
                out,
                plan,
                index,
                "nested_loop_many_loops",
                severity,
                detail,
                suggestion,
            );
        }
    }
}

/// Advice for a nested loop that rescans a table: index the inner join column.
fn nested_loop_seq_scan_advice(inner: &PlanNode) -> String {
    let target = relation_name(inner.fields).unwrap_or_else(|| "the inner table".to_string());
    format!(
        "Index the join column of {target} so each outer row becomes an index lookup, or help \
         the planner pick a hash join (check the outer side's row estimate, ANALYZE). Run \
         perf.suggest_indexes() for a recommendation."
    )
}

// ---------------------------------------------------------------------------------------
// Rule 8: index-only scans that still visit the heap.
// ---------------------------------------------------------------------------------------

/// `index_only_scan_heap_fetches`: ≥100 heap fetches that are ≥1% (info) or ≥10% (warning)
/// of the rows returned. "Heap Fetches" is a total over all loops; "Actual Rows" is per loop.
fn index_only_heap_fetches(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
    if !plan.analyzed {
        return;
    }
    for (index, node) in plan.nodes.iter().enumerate() {
        if node.node_type != "Index Only Scan" {
            continue;
        }
        let Some(fetches) = number(node.fields, "Heap Fetches").filter(|f| *f >= HEAP_FETCHES_MIN)
        else {
            continue;
        };
        let rows = number(node.fields, "Actual Rows").unwrap_or(0.0)
            * number(node.fields, "Actual Loops").unwrap_or(1.0);
        let ratio = fetches / rows.max(1.0);
        let severity = if ratio >= HEAP_FETCHES_WARNING_RATIO {
            Severity::Warning
        } else if ratio >= HEAP_FETCHES_INFO_RATIO {
            Severity::Info
        } else {
            continue;
        };
        let relation = relation_name(node.fields).unwrap_or_else(|| "the table".to_string());
        let detail = format!(
            "The index-only scan had to visit the table {} times for {} rows ({} of them), \
             because those pages are not marked all-visible",
            count(fetches),
            count(rows),
            percent(ratio.min(1.0))
        );
        let suggestion = format!(
            "VACUUM {relation} to update its visibility map so the index alone can answer; for \
             insert-heavy tables lower autovacuum_vacuum_insert_scale_factor so autovacuum \
             keeps it current."
        );
        report(
            out,
            plan,
            index,
            "index_only_scan_heap_fetches",
            severity,
            detail,
            suggestion,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Reading simple conditions out of EXPLAIN's Filter / Index Cond text.
// ---------------------------------------------------------------------------------------

/// A column or expression that a condition tests, usable as an index key.
#[derive(Debug, Clone, PartialEq)]
struct IndexColumn {
    /// Column name (`status`) or expression (`lower(email)`), as EXPLAIN prints it.
    expression: String,
    /// Tested with `=` (or `IS NULL`, `= ANY`) rather than a range operator.
    equality: bool,
}

impl IndexColumn {
    /// Whether this is a plain column rather than an expression.
    fn is_plain_column(&self) -> bool {
        !self.expression.contains('(')
    }

    /// How the column is written inside `CREATE INDEX ... (...)`: expressions need
    /// their own parentheses.
    fn index_key(&self) -> String {
        if self.is_plain_column() {
            self.expression.clone()
        } else {
            format!("({})", self.expression)
        }
    }
}

/// The columns or expressions a filter compares with `=`, `<`, `<=`, `>`, `>=` or tests with
/// `IS NULL`, equality ones first (the order a B-tree index wants them in). Returns nothing
/// for conditions that are not a plain AND of such comparisons at the top level, such as ORs.
fn index_columns(filter: &str) -> Vec<IndexColumn> {
    let condition = strip_outer_parens(filter);
    if !top_level_positions(condition, " OR ").is_empty() {
        return Vec::new();
    }
    let mut columns: Vec<IndexColumn> = Vec::new();
    for conjunct in split_top_level(condition, " AND ") {
        let Some(column) = comparison_column(conjunct) else {
            continue;
        };
        if let Some(existing) = columns
            .iter_mut()
            .find(|existing| existing.expression == column.expression)
        {
            existing.equality |= column.equality;
        } else {
            columns.push(column);
        }
    }
    // Stable: keeps the filter's order within equality and within range columns.
    columns.sort_by_key(|column| !column.equality);
    columns
}

/// The indexable side of one comparison like `(status = 'x'::text)`.
fn comparison_column(conjunct: &str) -> Option<IndexColumn> {
    let comparison = strip_outer_parens(conjunct);
    if let Some(tested) = comparison.strip_suffix(" IS NULL") {
        let expression = column_expression(tested)?;
        return Some(IndexColumn {
            expression: expression.text,
            equality: true,
        });
    }
    let (left, operator, right) = split_binary_operator(comparison)?;
    let equality = match operator {
        "=" => true,
        "<" | "<=" | ">" | ">=" => false,
        _ => return None,
    };
    let chosen = match (column_expression(left), column_expression(right)) {
        // Both sides are columns (a correlated or join condition): the unqualified one
        // belongs to the scanned table.
        (Some(left), Some(right)) if left.qualified && !right.qualified => right,
        (Some(left), _) => left,
        (None, Some(right)) => right,
        (None, None) => return None,
    };
    Some(IndexColumn {
        expression: chosen.text,
        equality,
    })
}

/// A column or expression operand, as opposed to a constant or parameter.
struct Operand {
    text: String,
    qualified: bool,
}

/// Words that look like identifiers but are constants.
const CONSTANT_WORDS: &[&str] = &[
    "null",
    "true",
    "false",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
];

/// Interprets one side of a comparison as a column (`status`, `o.status`, `(status)::text`)
/// or an expression over columns (`lower(email)`); constants, parameters and compound
/// expressions yield `None`.
fn column_expression(operand: &str) -> Option<Operand> {
    let mut expression = strip_outer_parens(operand);
    // A cast on the column (`(status)::text`) does not change which column is tested.
    if let Some(&cast) = top_level_positions(expression, "::").first() {
        expression = strip_outer_parens(&expression[..cast]);
    }
    let first = expression.chars().next()?;
    if !(first.is_alphabetic() || first == '_' || first == '"') {
        return None;
    }
    if !top_level_positions(expression, " ").is_empty() {
        return None;
    }
    if CONSTANT_WORDS.contains(&expression.to_ascii_lowercase().as_str()) {
        return None;
    }
    if let Some(open) = expression.find('(') {
        // A function of no arguments (`now()`) is a constant for the query.
        let arguments = expression[open + 1..].trim_end_matches(')').trim();
        if arguments.is_empty() {
            return None;
        }
        return Some(Operand {
            text: expression.to_string(),
            qualified: false,
        });
    }
    match top_level_positions(expression, ".").last() {
        Some(&dot) => Some(Operand {
            text: expression[dot + 1..].to_string(),
            qualified: true,
        }),
        None => Some(Operand {
            text: expression.to_string(),
            qualified: false,
        }),
    }
}

/// Splits `left OP right` at the first top-level operator surrounded by single spaces, the
/// way PostgreSQL prints binary operators.
fn split_binary_operator(expression: &str) -> Option<(&str, &str, &str)> {
    const OPERATOR_CHARS: &str = "+-*/<>=~!@#%^&|`?";
    for space in top_level_positions(expression, " ") {
        let rest = &expression[space + 1..];
        let operator_len = rest
            .find(|c: char| !OPERATOR_CHARS.contains(c))
            .unwrap_or(rest.len());
        if operator_len == 0 || !rest[operator_len..].starts_with(' ') {
            continue;
        }
        let operator = &rest[..operator_len];
        let right = &rest[operator_len + 1..];
        return Some((&expression[..space], operator, right));
    }
    None
}

/// Byte offsets where `needle` starts outside parentheses, brackets and quotes.
fn top_level_positions(haystack: &str, needle: &str) -> Vec<usize> {
    let mut positions = Vec::new();
    let mut depth: usize = 0;
    let (mut in_string, mut in_identifier) = (false, false);
    for (offset, c) in haystack.char_indices() {
        // Tested before `c` updates the nesting state, so `c` itself counts as outside.
        if depth == 0 && !in_string && !in_identifier && haystack[offset..].starts_with(needle) {
            positions.push(offset);
        }
        match c {
            '\'' if !in_identifier => in_string = !in_string,
            '"' if !in_string => in_identifier = !in_identifier,
            _ if in_string || in_identifier => {}
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    positions
}

/// Splits at every top-level occurrence of `separator`.
fn split_top_level<'a>(haystack: &'a str, separator: &str) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for position in top_level_positions(haystack, separator) {
        if position >= start {
            parts.push(&haystack[start..position]);
            start = position + separator.len();
        }
    }
    parts.push(&haystack[start..]);
    parts
}

/// Removes whitespace and parentheses that enclose the whole expression: `((a = 1))` → `a = 1`,
/// but `(a = 1) AND (b = 2)` stays as it is.
fn strip_outer_parens(expression: &str) -> &str {
    let mut current = expression.trim();
    while current.starts_with('(') && current.ends_with(')') && closes_at_end(current) {
        current = current[1..current.len() - 1].trim();
    }
    current
}

/// Whether the parenthesis opening `expression` is closed by its last character.
fn closes_at_end(expression: &str) -> bool {
    let mut depth: usize = 0;
    let (mut in_string, mut in_identifier) = (false, false);
    for (offset, c) in expression.char_indices() {
        match c {
            '\'' if !in_identifier => in_string = !in_string,
            '"' if !in_string => in_identifier = !in_identifier,
            _ if in_string || in_identifier => {}
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return offset == expression.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Number formatting for details and suggestions.
// ---------------------------------------------------------------------------------------

/// `0.764` → `76%`, `0.998` → `99.8%`, `0.99998` → `99.99%`: near 100% digits are cut
/// rather than rounded, so a filter that kept some rows never reads as `100%`.
fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    // The epsilon keeps binary representation noise (99.8 stored as 99.7999...) from
    // truncating a digit away.
    let truncated = |decimals: i32| {
        let scale = 10_f64.powi(decimals);
        (value * scale + 1e-6).floor() / scale
    };
    if (99.0..100.0).contains(&value) {
        if truncated(1) < 99.9 {
            format!("{:.1}%", truncated(1))
        } else {
            format!("{:.2}%", truncated(2))
        }
    } else if value < 10.0 {
        format!("{value:.1}%")
    } else {
        format!("{value:.0}%")
    }
}

/// `42.137` → `42.1 ms`, `1234.5` → `1.23 s`.
fn milliseconds(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Rounds and groups thousands: `99800.0` → `99,800`.
fn count(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// `3568` kB → `3.5 MB`, `77` kB → `77 kB`.
fn kilobytes(kb: f64) -> String {
    if kb >= 1024.0 * 1024.0 {
        format!("{:.1} GB", kb / (1024.0 * 1024.0))
    } else if kb >= 1024.0 {
        format!("{:.1} MB", kb / 1024.0)
    } else {
        format!("{kb:.0} kB")
    }
}

/// A work_mem value covering `kb`, rounded up to whole MB (`7MB`), as PostgreSQL accepts it.
fn memory_setting(kb: f64) -> String {
    let megabytes = (kb / 1024.0).ceil().max(1.0);
    if megabytes >= 1024.0 {
        format!("{}GB", (megabytes / 1024.0).ceil())
    } else {
        format!("{megabytes}MB")
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is valid JSON")
    }

    fn analyze(text: &str) -> Vec<Finding> {
        analyze_plan(&parse(text), &PlanContext::default())
    }

    /// (code, severity) pairs, for compact assertions.
    fn codes(findings: &[Finding]) -> Vec<(&'static str, Severity)> {
        findings.iter().map(|f| (f.finding, f.severity)).collect()
    }

    fn find<'a>(findings: &'a [Finding], code: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.finding == code)
            .unwrap_or_else(|| panic!("expected {code} in {findings:#?}"))
    }

    fn assert_no_warning(findings: &[Finding]) {
        assert!(
            findings.iter().all(|f| f.severity == Severity::Info),
            "expected at most info findings, got {findings:#?}"
        );
    }

    fn assert_sorted(findings: &[Finding]) {
        assert!(
            findings
                .windows(2)
                .all(|pair| pair[0].severity >= pair[1].severity),
            "findings not sorted by severity: {findings:#?}"
        );
    }

    const SEQ_SCAN: &str =
        include_str!("../../tests/fixtures/plans/seq_scan_selective_filter.json");
    const SEQ_SCAN_ESTIMATE: &str =
        include_str!("../../tests/fixtures/plans/seq_scan_selective_filter_estimate.json");
    const SEQ_SCAN_EXPRESSION: &str =
        include_str!("../../tests/fixtures/plans/seq_scan_expression_filter.json");
    const SEQ_SCAN_MULTI_COLUMN: &str =
        include_str!("../../tests/fixtures/plans/seq_scan_multi_column_filter.json");
    const SORT_SPILL: &str = include_str!("../../tests/fixtures/plans/sort_spill.json");
    const HASH_BATCHES: &str = include_str!("../../tests/fixtures/plans/hash_batches.json");
    const HASH_AGGREGATE_SPILL: &str =
        include_str!("../../tests/fixtures/plans/hash_aggregate_spill.json");
    const NESTED_LOOP_SEQ_SCAN: &str =
        include_str!("../../tests/fixtures/plans/nested_loop_inner_seq_scan.json");
    const NESTED_LOOP_SEQ_SCAN_ESTIMATE: &str =
        include_str!("../../tests/fixtures/plans/nested_loop_inner_seq_scan_estimate.json");
    const NESTED_LOOP_INDEX: &str =
        include_str!("../../tests/fixtures/plans/nested_loop_index_many_loops.json");
    const MISESTIMATE: &str = include_str!("../../tests/fixtures/plans/row_misestimate.json");
    const OVERESTIMATE: &str = include_str!("../../tests/fixtures/plans/row_overestimate.json");
    const HEAP_FETCHES: &str =
        include_str!("../../tests/fixtures/plans/index_only_heap_fetches.json");
    const CLEAN: &str = include_str!("../../tests/fixtures/plans/clean_index_lookup.json");
    const CLEAN_ESTIMATE: &str =
        include_str!("../../tests/fixtures/plans/clean_index_lookup_estimate.json");
    const LIMIT: &str = include_str!("../../tests/fixtures/plans/limit_early_stop.json");
    const SUBPLAN: &str = include_str!("../../tests/fixtures/plans/initplan_subplan.json");
    const CTE_TEMP: &str = include_str!("../../tests/fixtures/plans/temp_written_cte.json");
    const PARALLEL: &str = include_str!("../../tests/fixtures/plans/parallel_aggregate.json");

    const ALL_FIXTURES: &[&str] = &[
        SEQ_SCAN,
        SEQ_SCAN_ESTIMATE,
        SEQ_SCAN_EXPRESSION,
        SEQ_SCAN_MULTI_COLUMN,
        SORT_SPILL,
        HASH_BATCHES,
        HASH_AGGREGATE_SPILL,
        NESTED_LOOP_SEQ_SCAN,
        NESTED_LOOP_SEQ_SCAN_ESTIMATE,
        NESTED_LOOP_INDEX,
        MISESTIMATE,
        OVERESTIMATE,
        HEAP_FETCHES,
        CLEAN,
        CLEAN_ESTIMATE,
        LIMIT,
        SUBPLAN,
        CTE_TEMP,
        PARALLEL,
    ];

    // ----- fixtures captured from PostgreSQL 15 -----

    #[test]
    fn clean_plans_have_no_warnings() {
        for fixture in [CLEAN, CLEAN_ESTIMATE, LIMIT] {
            let findings = analyze(fixture);
            assert_no_warning(&findings);
        }
        assert!(analyze(CLEAN).is_empty(), "{:#?}", analyze(CLEAN));
        assert!(analyze(CLEAN_ESTIMATE).is_empty());
    }

    #[test]
    fn limit_hides_expected_overestimate() {
        // Seq Scan estimated 90,077 rows but the Limit stopped it after 5.
        let findings = analyze(LIMIT);
        assert!(findings.iter().all(|f| f.finding != "row_misestimate"));
    }

    #[test]
    fn selective_seq_scan_names_the_column() {
        let findings = analyze(SEQ_SCAN);
        let finding = find(&findings, "seq_scan_selective_filter");
        assert_eq!(finding.severity, Severity::Warning);
        assert_eq!(finding.node, "Seq Scan on orders");
        assert!(finding.detail.contains("(status = 'refunded'::text)"));
        assert!(finding.detail.contains("100,000"), "{}", finding.detail);
        assert!(finding.suggestion.contains("perf.suggest_indexes()"));
        assert!(finding
            .suggestion
            .contains("CREATE INDEX ON orders (status)"));
        // Not repeated as a generic filter finding; single-node plan has no slow_node.
        assert_eq!(
            codes(&findings),
            vec![("seq_scan_selective_filter", Severity::Warning)]
        );
    }

    #[test]
    fn selective_seq_scan_from_estimates_needs_relation_rows() {
        assert!(analyze(SEQ_SCAN_ESTIMATE).is_empty());

        let mut ctx = PlanContext::default();
        ctx.relation_rows.insert("orders".to_string(), 100_000.0);
        let findings = analyze_plan(&parse(SEQ_SCAN_ESTIMATE), &ctx);
        assert_eq!(
            codes(&findings),
            vec![("seq_scan_selective_filter", Severity::Warning)]
        );
        assert!(findings[0].suggestion.contains("perf.suggest_indexes()"));
        assert!(findings[0].suggestion.contains("(status)"));

        // A small table is not worth an index.
        ctx.relation_rows.insert("orders".to_string(), 2_000.0);
        assert!(analyze_plan(&parse(SEQ_SCAN_ESTIMATE), &ctx).is_empty());
    }

    #[test]
    fn analyzed_false_ignores_actuals() {
        let mut ctx = PlanContext {
            analyzed: false,
            ..PlanContext::default()
        };
        // Actuals of the sort spill, nested loop and heap fetch plans are ignored...
        for fixture in [
            SORT_SPILL,
            HEAP_FETCHES,
            MISESTIMATE,
            HASH_BATCHES,
            CTE_TEMP,
        ] {
            assert!(analyze_plan(&parse(fixture), &ctx).is_empty());
        }
        // ...but estimate-based rules still run on an analyzed plan.
        assert_eq!(
            codes(&analyze_plan(&parse(NESTED_LOOP_SEQ_SCAN), &ctx)),
            vec![("nested_loop_inner_seq_scan", Severity::Warning)]
        );
        ctx.relation_rows.insert("orders".to_string(), 100_000.0);
        assert_eq!(
            codes(&analyze_plan(&parse(SEQ_SCAN), &ctx)),
            vec![("seq_scan_selective_filter", Severity::Warning)]
        );
        assert!(PlanContext::default().analyzed);
    }

    #[test]
    fn schema_qualified_relation_rows_win() {
        let plan = json!({"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "shop",
                          "Plan Rows": 5, "Filter": "(id = 1)"});
        let mut ctx = PlanContext::default();
        ctx.relation_rows.insert("orders".to_string(), 10.0);
        assert!(analyze_plan(&plan, &ctx).is_empty());
        ctx.relation_rows
            .insert("shop.orders".to_string(), 50_000.0);
        let findings = analyze_plan(&plan, &ctx);
        assert_eq!(findings.len(), 1);
        assert!(findings[0]
            .suggestion
            .contains("CREATE INDEX ON shop.orders (id)"));
    }

    #[test]
    fn expression_filter_suggests_expression_index() {
        let findings = analyze(SEQ_SCAN_EXPRESSION);
        let finding = find(&findings, "seq_scan_selective_filter");
        assert_eq!(finding.severity, Severity::Warning);
        assert!(
            finding
                .suggestion
                .contains("CREATE INDEX ON orders ((lower(email)))"),
            "{}",
            finding.suggestion
        );
        // The planner guessed 500 rows (0.5%) for the expression and found 1.
        let misestimate = find(&findings, "row_misestimate");
        assert_eq!(misestimate.severity, Severity::Critical);
        assert!(
            misestimate
                .suggestion
                .contains("no statistics for lower(email)"),
            "{}",
            misestimate.suggestion
        );
    }

    #[test]
    fn multi_column_filter_puts_equality_first() {
        let findings = analyze(SEQ_SCAN_MULTI_COLUMN);
        let finding = find(&findings, "seq_scan_selective_filter");
        assert!(
            finding.suggestion.contains("orders (customer_id, amount)"),
            "{}",
            finding.suggestion
        );
        assert!(finding.suggestion.contains("Equality columns come first"));
        assert!(
            finding.detail.contains("99.99% discarded"),
            "{}",
            finding.detail
        );
    }

    #[test]
    fn sort_spill_reports_memory_and_sort_key() {
        let findings = analyze(SORT_SPILL);
        assert_sorted(&findings);
        let sort = find(&findings, "sort_spilled_to_disk");
        assert_eq!(sort.severity, Severity::Warning);
        assert_eq!(sort.node, "Sort");
        assert!(sort.detail.contains("3.5 MB"), "{}", sort.detail);
        assert!(
            sort.suggestion.contains("work_mem = '7MB'"),
            "{}",
            sort.suggestion
        );
        assert!(sort.suggestion.contains("index on (email)"));
        // The Sort takes ~76% of the time on its own.
        let slow = find(&findings, "slow_node");
        assert_eq!(
            (slow.severity, slow.node.as_str()),
            (Severity::Warning, "Sort")
        );
        // Its temp files are covered by the sort finding, not repeated.
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
    }

    #[test]
    fn hash_batches_reported_on_hash_node_only() {
        let findings = analyze(HASH_BATCHES);
        let hash = find(&findings, "hash_spilled_to_disk");
        assert_eq!(
            (hash.severity, hash.node.as_str()),
            (Severity::Warning, "Hash")
        );
        assert!(hash.detail.contains("4 batches"));
        assert!(hash.suggestion.contains("work_mem"));
        // The Hash Join's own temp writes belong to the same spill.
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
        let slow = find(&findings, "slow_node");
        assert_eq!(slow.node, "Hash Join");
    }

    #[test]
    fn hash_aggregate_spill() {
        let findings = analyze(HASH_AGGREGATE_SPILL);
        let aggregate = find(&findings, "hash_aggregate_spilled_to_disk");
        assert_eq!(aggregate.severity, Severity::Warning);
        assert_eq!(aggregate.node, "HashAggregate");
        assert!(
            aggregate.detail.contains("341 batches"),
            "{}",
            aggregate.detail
        );
        assert!(findings.iter().all(|f| f.finding != "temp_blocks_written"));
    }

    #[test]
    fn nested_loop_with_inner_seq_scan() {
        let findings = analyze(NESTED_LOOP_SEQ_SCAN);
        assert_sorted(&findings);
        let nested = find(&findings, "nested_loop_inner_seq_scan");
        assert_eq!(nested.severity, Severity::Warning);
        assert_eq!(nested.node, "Nested Loop");
        assert!(
            nested.detail.contains("Seq Scan on tags t ran 1,666 times"),
            "{}",
            nested.detail
        );
        assert!(nested.suggestion.contains("tags"));
        // The join condition is evaluated as a Join Filter, discarding 99.5% of pairs.
        let join_filter = find(&findings, "join_filter_removes_rows");
        assert_eq!(join_filter.severity, Severity::Warning);
        // The outer scan's filter removes 2/3 of customers: info only.
        let filter = find(&findings, "filter_removes_rows");
        assert_eq!(filter.severity, Severity::Info);
        assert_eq!(filter.node, "Seq Scan on customers c");
        assert!(
            filter.suggestion.contains("customers (region)"),
            "{}",
            filter.suggestion
        );
        // The nested loop's own work is nearly all of the time.
        // The loop's own work (51%) and the repeated inner scan (47%) share the time.
        let slow: Vec<(Severity, &str)> = findings
            .iter()
            .filter(|f| f.finding == "slow_node")
            .map(|f| (f.severity, f.node.as_str()))
            .collect();
        assert_eq!(
            slow,
            vec![
                (Severity::Warning, "Nested Loop"),
                (Severity::Warning, "Seq Scan on tags t")
            ]
        );
    }

    #[test]
    fn nested_loop_from_estimates() {
        let findings = analyze(NESTED_LOOP_SEQ_SCAN_ESTIMATE);
        assert_eq!(
            codes(&findings),
            vec![("nested_loop_inner_seq_scan", Severity::Warning)]
        );
        assert!(findings[0].detail.contains("1,666"));
    }

    #[test]
    fn nested_loop_with_index_lookups_is_info() {
        let findings = analyze(NESTED_LOOP_INDEX);
        let nested = find(&findings, "nested_loop_many_loops");
        assert_eq!(nested.severity, Severity::Info);
        assert!(nested.detail.contains("9,800 times"));
        assert!(findings
            .iter()
            .all(|f| f.finding != "nested_loop_inner_seq_scan"));
        // The outer scan throws away 90.2% of orders.
        let seq = find(&findings, "seq_scan_selective_filter");
        assert!(seq.suggestion.contains("(status)"));
    }

    #[test]
    fn correlated_columns_underestimate() {
        let findings = analyze(MISESTIMATE);
        let misestimate = find(&findings, "row_misestimate");
        assert_eq!(misestimate.severity, Severity::Critical);
        assert_eq!(misestimate.node, "Seq Scan on events");
        assert!(
            misestimate.detail.contains("100x underestimate"),
            "{}",
            misestimate.detail
        );
        assert!(
            misestimate
                .suggestion
                .contains("CREATE STATISTICS ON kind, subkind FROM events"),
            "{}",
            misestimate.suggestion
        );
        assert_eq!(findings[0].severity, Severity::Critical);
        assert_sorted(&findings);
    }

    #[test]
    fn overestimate_to_zero_rows() {
        let findings = analyze(OVERESTIMATE);
        let misestimate = find(&findings, "row_misestimate");
        assert_eq!(misestimate.severity, Severity::Critical);
        assert!(
            misestimate.detail.contains("25,000x overestimate"),
            "{}",
            misestimate.detail
        );
        // 100% removed: the scan is also an index candidate.
        find(&findings, "seq_scan_selective_filter");
    }

    #[test]
    fn index_only_scan_heap_fetches() {
        let findings = analyze(HEAP_FETCHES);
        assert_eq!(
            codes(&findings),
            vec![("index_only_scan_heap_fetches", Severity::Warning)]
        );
        assert_eq!(
            findings[0].node,
            "Index Only Scan using visits_pkey on visits"
        );
        assert!(findings[0].suggestion.contains("VACUUM visits"));
    }

    #[test]
    fn subplan_nodes_are_walked() {
        let findings = analyze(SUBPLAN);
        let seq = find(&findings, "seq_scan_selective_filter");
        assert_eq!(seq.node, "Seq Scan on orders o");
        assert!(seq.detail.contains("ran 3 times"), "{}", seq.detail);
        assert!(
            seq.suggestion.contains("orders (customer_id)"),
            "{}",
            seq.suggestion
        );
        // Only 3 heap fetches: below the threshold.
        assert!(findings
            .iter()
            .all(|f| f.finding != "index_only_scan_heap_fetches"));
    }

    #[test]
    fn cte_temp_files_attributed_to_cte_scan() {
        let findings = analyze(CTE_TEMP);
        let temp: Vec<&Finding> = findings
            .iter()
            .filter(|f| f.finding == "temp_blocks_written")
            .collect();
        assert_eq!(temp.len(), 1, "{findings:#?}");
        assert_eq!(temp[0].severity, Severity::Info);
        assert_eq!(temp[0].node, "CTE Scan on x");
        assert!(
            temp[0].detail.contains("805 blocks (6.3 MB)"),
            "{}",
            temp[0].detail
        );

        // The CTE's own scan time is charged to the CTE Scan, not subtracted from the Aggregate.
        let root = parse(CTE_TEMP);
        let (plan_root, execution) = locate_root(&root).expect("plan");
        let tree = PlanTree::build(plan_root, execution, true);
        let cte_scan = tree
            .nodes
            .iter()
            .position(|n| n.node_type == "CTE Scan")
            .expect("CTE Scan");
        let own = tree.exclusive_ms(cte_scan).expect("timed");
        assert!((own - (13.937 - 3.605)).abs() < 1e-6, "{own}");
        let aggregate_own = tree.exclusive_ms(0).expect("timed");
        assert!(
            (aggregate_own - (16.427 - 13.937)).abs() < 1e-6,
            "{aggregate_own}"
        );
    }

    #[test]
    fn parallel_plan_times_are_per_process() {
        let root = parse(PARALLEL);
        let (plan_root, execution) = locate_root(&root).expect("plan");
        let tree = PlanTree::build(plan_root, execution, true);
        let seq = tree
            .nodes
            .iter()
            .position(|n| n.node_type == "Seq Scan")
            .expect("Seq Scan");
        assert_eq!(tree.nodes[seq].processes, 3.0);
        assert_eq!(tree.nodes[seq].label, "Parallel Seq Scan on orders");
        // 1.462 ms per loop × 3 loops shared by 3 processes.
        let own = tree.exclusive_ms(seq).expect("timed");
        assert!((own - 1.462).abs() < 1e-6, "{own}");
        for index in 0..tree.nodes.len() {
            let share = tree.time_share(index).unwrap_or(0.0);
            assert!((0.0..=1.0).contains(&share));
        }
        let findings = analyze(PARALLEL);
        assert!(
            findings.iter().all(|f| f.finding == "slow_node"),
            "{findings:#?}"
        );
    }

    #[test]
    fn every_fixture_is_sorted_and_accepts_all_input_shapes() {
        for fixture in ALL_FIXTURES {
            let full = parse(fixture);
            let findings = analyze_plan(&full, &PlanContext::default());
            assert_sorted(&findings);
            // `{"Plan": ...}` gives the same findings.
            let statement = full[0].clone();
            assert_eq!(analyze_plan(&statement, &PlanContext::default()), findings);
            // A bare node loses only the statement's Execution Time, so compare codes.
            let bare = statement["Plan"].clone();
            let bare_codes: Vec<&str> = analyze_plan(&bare, &PlanContext::default())
                .iter()
                .map(|f| f.finding)
                .filter(|code| *code != "slow_node")
                .collect();
            let full_codes: Vec<&str> = findings
                .iter()
                .map(|f| f.finding)
                .filter(|code| *code != "slow_node")
                .collect();
            let (mut bare_codes, mut full_codes) = (bare_codes, full_codes);
            bare_codes.sort_unstable();
            full_codes.sort_unstable();
            assert_eq!(bare_codes, full_codes);
        }
    }

    #[test]
    fn fixture_node_labels_match_explain_text() {
        let labels: Vec<String> = ALL_FIXTURES
            .iter()
            .flat_map(|fixture| {
                let root = parse(fixture);
                let (plan_root, execution) = locate_root(&root).expect("plan");
                let tree = PlanTree::build(plan_root, execution, true);
                tree.nodes.into_iter().map(|n| n.label).collect::<Vec<_>>()
            })
            .collect();
        for expected in [
            "Index Scan using orders_pkey on orders",
            "Aggregate (SubPlan 1)",
            "Finalize GroupAggregate",
            "Partial HashAggregate",
            "Gather Merge",
            "Hash Join",
            "Seq Scan on orders o",
        ] {
            assert!(
                labels.iter().any(|l| l == expected),
                "{expected} not in {labels:#?}"
            );
        }
    }

    // ----- hand-written edge cases -----

    /// A timed node; `plans` become its children.
    fn timed(node_type: &str, total_ms: f64, plans: Vec<Value>) -> Value {
        json!({"Node Type": node_type, "Plan Rows": 1, "Actual Rows": 1, "Actual Loops": 1,
               "Actual Total Time": total_ms, "Plans": plans})
    }

    #[test]
    fn slow_node_thresholds() {
        let plan = |own: f64| {
            json!([{"Plan": timed("Hash Join", 100.0, vec![timed("Seq Scan", 100.0 - own, vec![])]),
                    "Execution Time": 100.0}])
        };
        let severity_of = |own: f64| {
            let findings = analyze_plan(&plan(own), &PlanContext::default());
            findings
                .iter()
                .find(|f| f.finding == "slow_node" && f.node == "Hash Join")
                .map(|f| f.severity)
        };
        assert_eq!(severity_of(95.0), Some(Severity::Critical));
        assert_eq!(severity_of(60.0), Some(Severity::Warning));
        // 20%: the Seq Scan (80%) is the top node, so the join is not mentioned.
        assert_eq!(severity_of(20.0), None);
        assert_eq!(severity_of(5.0), None);
        // Top node at 30% still gets an info finding.
        let three = json!([{"Plan": timed("Append", 100.0, vec![
            timed("Seq Scan", 30.0, vec![]), timed("Seq Scan", 25.0, vec![]),
            timed("Seq Scan", 25.0, vec![])]), "Execution Time": 100.0}]);
        let findings = analyze_plan(&three, &PlanContext::default());
        assert_eq!(codes(&findings), vec![("slow_node", Severity::Info)]);
        assert!(findings[0].detail.contains("30%"), "{}", findings[0].detail);
    }

    #[test]
    fn slow_node_ignores_sub_millisecond_work() {
        let plan = json!({"Plan": timed("Limit", 0.5, vec![timed("Seq Scan", 0.45, vec![])])});
        assert!(analyze_plan(&plan, &PlanContext::default()).is_empty());
    }

    fn estimate_node(plan_rows: f64, actual_rows: f64, loops: f64) -> Value {
        json!({"Node Type": "Index Scan", "Relation Name": "t", "Plan Rows": plan_rows,
               "Actual Rows": actual_rows, "Actual Loops": loops, "Actual Total Time": 0.1})
    }

    fn misestimate_severity(plan_rows: f64, actual_rows: f64, loops: f64) -> Option<Severity> {
        analyze_plan(
            &estimate_node(plan_rows, actual_rows, loops),
            &PlanContext::default(),
        )
        .iter()
        .find(|f| f.finding == "row_misestimate")
        .map(|f| f.severity)
    }

    #[test]
    fn misestimate_thresholds_both_directions() {
        assert_eq!(misestimate_severity(100.0, 999.0, 1.0), None);
        assert_eq!(
            misestimate_severity(100.0, 1_000.0, 1.0),
            Some(Severity::Warning)
        );
        assert_eq!(
            misestimate_severity(100.0, 10_000.0, 1.0),
            Some(Severity::Critical)
        );
        assert_eq!(
            misestimate_severity(100.0, 1_000_000.0, 1.0),
            Some(Severity::Critical)
        );
        assert_eq!(
            misestimate_severity(1_000.0, 100.0, 1.0),
            Some(Severity::Warning)
        );
        assert_eq!(
            misestimate_severity(100_000.0, 10.0, 1.0),
            Some(Severity::Critical)
        );
    }

    #[test]
    fn misestimate_guards_zeros_and_tiny_errors() {
        assert_eq!(misestimate_severity(0.0, 0.0, 1.0), None);
        assert_eq!(misestimate_severity(1.0, 0.0, 1.0), None);
        // 50x but only 49 rows off in total.
        assert_eq!(misestimate_severity(1.0, 50.0, 1.0), None);
        // Same per-loop error repeated over many loops does matter.
        assert_eq!(
            misestimate_severity(1.0, 50.0, 10.0),
            Some(Severity::Warning)
        );
        let repeated = analyze_plan(&estimate_node(1.0, 50.0, 10.0), &PlanContext::default());
        assert!(
            repeated[0]
                .detail
                .contains("1 rows per loop (over 10 loops) but 50"),
            "{}",
            repeated[0].detail
        );
        // Zero estimate against a big actual: floored to 1, no division by zero.
        assert_eq!(
            misestimate_severity(0.0, 5_000.0, 1.0),
            Some(Severity::Critical)
        );
        // Never executed.
        assert_eq!(misestimate_severity(10.0, 0.0, 0.0), None);
        assert_eq!(misestimate_severity(100_000.0, 0.0, 0.0), None);
    }

    #[test]
    fn misestimate_reported_where_it_originates() {
        let mut scan = estimate_node(10.0, 10_000.0, 1.0);
        scan["Node Type"] = json!("Seq Scan");
        let sort = json!({"Node Type": "Sort", "Plan Rows": 10, "Actual Rows": 10_000,
                          "Actual Loops": 1, "Plans": [scan]});
        let findings = analyze_plan(&sort, &PlanContext::default());
        let misestimates: Vec<&str> = findings
            .iter()
            .filter(|f| f.finding == "row_misestimate")
            .map(|f| f.node.as_str())
            .collect();
        assert_eq!(misestimates, vec!["Seq Scan on t"]);

        // A join that multiplies the error by another 100x is a new source of error.
        let mut scan = estimate_node(10.0, 100.0, 1.0);
        scan["Node Type"] = json!("Seq Scan");
        let join = json!({"Node Type": "Hash Join", "Plan Rows": 10, "Actual Rows": 10_000,
                          "Actual Loops": 1, "Plans": [scan]});
        let findings = analyze_plan(&join, &PlanContext::default());
        let join_finding = find(&findings, "row_misestimate");
        assert_eq!(join_finding.node, "Hash Join");
        assert!(join_finding.suggestion.contains("ANALYZE"));
    }

    #[test]
    fn semi_join_inner_may_return_fewer_rows() {
        let inner = json!({"Node Type": "Index Scan", "Relation Name": "t",
                           "Parent Relationship": "Inner",
                           "Plan Rows": 1000, "Actual Rows": 1, "Actual Loops": 500});
        let outer = json!({"Node Type": "Seq Scan", "Relation Name": "s",
                           "Parent Relationship": "Outer",
                           "Plan Rows": 500, "Actual Rows": 500, "Actual Loops": 1});
        let join = json!({"Node Type": "Nested Loop", "Join Type": "Semi", "Plan Rows": 500,
                          "Actual Rows": 500, "Actual Loops": 1, "Plans": [outer, inner]});
        let findings = analyze_plan(&join, &PlanContext::default());
        assert!(
            findings.iter().all(|f| f.finding != "row_misestimate"),
            "{findings:#?}"
        );
    }

    fn filtered_scan(node_type: &str, returned: f64, removed: f64, loops: f64) -> Value {
        json!({"Node Type": node_type, "Relation Name": "t", "Plan Rows": returned,
               "Actual Rows": returned, "Actual Loops": loops, "Filter": "((a = 1) AND (b > 2))",
               "Rows Removed by Filter": removed})
    }

    fn filter_severity(
        node_type: &str,
        returned: f64,
        removed: f64,
        loops: f64,
    ) -> Option<Severity> {
        analyze_plan(
            &filtered_scan(node_type, returned, removed, loops),
            &PlanContext::default(),
        )
        .iter()
        .find(|f| f.finding == "filter_removes_rows")
        .map(|f| f.severity)
    }

    #[test]
    fn filter_thresholds() {
        assert_eq!(filter_severity("Index Scan", 500.0, 500.0, 1.0), None);
        assert_eq!(
            filter_severity("Index Scan", 400.0, 600.0, 1.0),
            Some(Severity::Info)
        );
        assert_eq!(
            filter_severity("Index Scan", 50.0, 950.0, 1.0),
            Some(Severity::Warning)
        );
        // Too few rows examined to matter, unless repeated.
        assert_eq!(filter_severity("Index Scan", 5.0, 95.0, 1.0), None);
        assert_eq!(
            filter_severity("Index Scan", 5.0, 95.0, 20.0),
            Some(Severity::Warning)
        );
        let findings = analyze_plan(
            &filtered_scan("Index Scan", 50.0, 950.0, 1.0),
            &PlanContext::default(),
        );
        let finding = find(&findings, "filter_removes_rows");
        assert!(finding.detail.contains("((a = 1) AND (b > 2))"));
        assert!(
            finding.suggestion.contains("t (a, b)"),
            "{}",
            finding.suggestion
        );
    }

    #[test]
    fn small_or_unselective_seq_scans_are_not_index_candidates() {
        let seq = |returned: f64, removed: f64| {
            analyze_plan(
                &filtered_scan("Seq Scan", returned, removed, 1.0),
                &PlanContext::default(),
            )
        };
        // 9,999 rows read: below the table-size threshold, generic filter finding instead.
        assert_eq!(
            codes(&seq(99.0, 9_900.0)),
            vec![("filter_removes_rows", Severity::Warning)]
        );
        // 80% removed: only info about the filter.
        assert_eq!(
            codes(&seq(20_000.0, 80_000.0)),
            vec![("filter_removes_rows", Severity::Info)]
        );
        assert_eq!(
            codes(&seq(1_000.0, 99_000.0)),
            vec![("seq_scan_selective_filter", Severity::Warning)]
        );
        // 99.99% removed from 2M rows: critical.
        assert_eq!(
            codes(&seq(200.0, 1_999_800.0)),
            vec![("seq_scan_selective_filter", Severity::Critical)]
        );
    }

    #[test]
    fn filter_on_cte_scan_suggests_pushing_down() {
        let node = json!({"Node Type": "CTE Scan", "CTE Name": "x", "Alias": "x", "Plan Rows": 10,
                          "Actual Rows": 10, "Actual Loops": 1, "Filter": "(a = 1)",
                          "Rows Removed by Filter": 5000});
        let findings = analyze_plan(&node, &PlanContext::default());
        let finding = find(&findings, "filter_removes_rows");
        assert_eq!(finding.node, "CTE Scan on x");
        assert!(finding.suggestion.contains("NOT MATERIALIZED"));
    }

    #[test]
    fn spills_from_hand_written_nodes() {
        let original_batches = json!({"Node Type": "Hash", "Actual Loops": 1, "Hash Batches": 1,
                                      "Original Hash Batches": 8, "Peak Memory Usage": 4096});
        assert_eq!(
            codes(&analyze_plan(&original_batches, &PlanContext::default())),
            vec![("hash_spilled_to_disk", Severity::Warning)]
        );
        let in_memory = json!({"Node Type": "Hash", "Actual Loops": 1, "Hash Batches": 1,
                               "Original Hash Batches": 1});
        assert!(analyze_plan(&in_memory, &PlanContext::default()).is_empty());

        let external_sort = json!({"Node Type": "Sort", "Actual Loops": 1,
                                   "Sort Method": "external sort", "Sort Space Used": 2048});
        let findings = analyze_plan(&external_sort, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        assert!(findings[0].suggestion.contains("or sort fewer rows"));

        let worker_sort = json!({"Node Type": "Sort", "Actual Loops": 1, "Sort Method": "quicksort",
            "Sort Space Type": "Memory", "Sort Space Used": 25, "Sort Key": ["a"],
            "Workers": [{"Worker Number": 0, "Sort Method": "external merge",
                         "Sort Space Used": 10240, "Sort Space Type": "Disk"}]});
        let findings = analyze_plan(&worker_sort, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        assert!(
            findings[0].detail.contains("10.0 MB"),
            "{}",
            findings[0].detail
        );

        let incremental = json!({"Node Type": "Incremental Sort", "Actual Loops": 1,
            "Full-sort Groups": {"Group Count": 3, "Sort Methods Used": ["external merge"],
                                 "Sort Space Disk": {"Average Sort Space Used": 100,
                                                     "Peak Sort Space Used": 300}}});
        assert_eq!(
            codes(&analyze_plan(&incremental, &PlanContext::default())),
            vec![("sort_spilled_to_disk", Severity::Warning)]
        );
        let memory_sort = json!({"Node Type": "Sort", "Actual Loops": 1, "Sort Method": "quicksort",
                                 "Sort Space Used": 25, "Sort Space Type": "Memory"});
        assert!(analyze_plan(&memory_sort, &PlanContext::default()).is_empty());
    }

    #[test]
    fn temp_blocks_written_on_materialize() {
        let scan = json!({"Node Type": "Seq Scan", "Relation Name": "t", "Temp Written Blocks": 0});
        let materialize = json!({"Node Type": "Materialize", "Actual Loops": 1,
                                 "Temp Written Blocks": 128, "Plans": [scan]});
        let findings = analyze_plan(&materialize, &PlanContext::default());
        assert_eq!(
            codes(&findings),
            vec![("temp_blocks_written", Severity::Info)]
        );
        assert!(
            findings[0].detail.contains("128 blocks (1.0 MB)"),
            "{}",
            findings[0].detail
        );
        // A zero or nonsensical block size falls back to 8 kB.
        let ctx = PlanContext {
            block_size_bytes: 0.0,
            ..PlanContext::default()
        };
        assert_eq!(
            analyze_plan(&materialize, &ctx)[0].detail,
            findings[0].detail
        );
    }

    fn nested_loop(inner_type: &str, loops: f64, inner_rows: f64) -> Value {
        json!({"Node Type": "Nested Loop", "Plan Rows": 1, "Actual Rows": 1, "Actual Loops": 1,
               "Plans": [
                   {"Node Type": "Seq Scan", "Relation Name": "a", "Parent Relationship": "Outer",
                    "Plan Rows": loops, "Actual Rows": loops, "Actual Loops": 1},
                   {"Node Type": inner_type, "Relation Name": "b", "Parent Relationship": "Inner",
                    "Plan Rows": inner_rows, "Actual Rows": inner_rows, "Actual Loops": loops}]})
    }

    fn nested_loop_codes(
        inner_type: &str,
        loops: f64,
        inner_rows: f64,
    ) -> Vec<(&'static str, Severity)> {
        codes(&analyze_plan(
            &nested_loop(inner_type, loops, inner_rows),
            &PlanContext::default(),
        ))
    }

    #[test]
    fn nested_loop_thresholds() {
        assert!(nested_loop_codes("Seq Scan", 999.0, 10.0).is_empty());
        assert_eq!(
            nested_loop_codes("Seq Scan", 1_000.0, 10.0),
            vec![("nested_loop_inner_seq_scan", Severity::Warning)]
        );
        assert_eq!(
            nested_loop_codes("Seq Scan", 10_000.0, 1.0),
            vec![("nested_loop_inner_seq_scan", Severity::Critical)]
        );
        assert_eq!(
            nested_loop_codes("Seq Scan", 2_000.0, 5_000.0),
            vec![("nested_loop_inner_seq_scan", Severity::Critical)]
        );
        assert_eq!(
            nested_loop_codes("Index Scan", 1_000.0, 1.0),
            vec![("nested_loop_many_loops", Severity::Info)]
        );
        assert_eq!(
            nested_loop_codes("Index Scan", 100_000.0, 1.0),
            vec![("nested_loop_many_loops", Severity::Warning)]
        );
    }

    #[test]
    fn memoize_hits_do_not_count_as_loops() {
        let plan = json!({"Node Type": "Nested Loop", "Actual Loops": 1, "Plans": [
            {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Actual Loops": 1},
            {"Node Type": "Memoize", "Parent Relationship": "Inner", "Actual Loops": 50_000,
             "Plans": [{"Node Type": "Index Scan", "Parent Relationship": "Outer",
                        "Actual Loops": 20}]}]});
        assert!(analyze_plan(&plan, &PlanContext::default()).is_empty());
    }

    #[test]
    fn heap_fetch_thresholds() {
        let scan = |fetches: f64, rows: f64, loops: f64| {
            let node = json!({"Node Type": "Index Only Scan", "Relation Name": "t",
                              "Index Name": "t_pkey", "Plan Rows": rows, "Actual Rows": rows,
                              "Actual Loops": loops, "Heap Fetches": fetches});
            codes(&analyze_plan(&node, &PlanContext::default()))
        };
        assert!(scan(0.0, 1_000.0, 1.0).is_empty());
        assert!(scan(99.0, 100.0, 1.0).is_empty());
        assert!(scan(100.0, 100_000.0, 1.0).is_empty());
        assert_eq!(
            scan(200.0, 10_000.0, 1.0),
            vec![("index_only_scan_heap_fetches", Severity::Info)]
        );
        assert_eq!(
            scan(1_000.0, 10_000.0, 1.0),
            vec![("index_only_scan_heap_fetches", Severity::Warning)]
        );
        // Heap Fetches is a total over loops, Actual Rows per loop: 500 / (1 × 10,000).
        assert_eq!(
            scan(500.0, 1.0, 10_000.0),
            vec![("index_only_scan_heap_fetches", Severity::Info)]
        );
    }

    #[test]
    fn malformed_input_never_panics() {
        let inputs = [
            json!(null),
            json!(42),
            json!("Seq Scan"),
            json!([]),
            json!([null]),
            json!([[]]),
            json!({}),
            json!({"Plan": 5}),
            json!({"Plan": null, "Execution Time": "soon"}),
            json!({"Plan": {}}),
            json!({"Node Type": 7, "Plans": "none"}),
            json!({"Node Type": "Seq Scan", "Plans": [1, null, "x", [], {}]}),
            json!({"Node Type": "Seq Scan", "Actual Loops": -3, "Actual Rows": "lots",
                   "Plan Rows": -1e308, "Filter": 12, "Rows Removed by Filter": {"a": 1}}),
            json!({"Node Type": "Seq Scan", "Relation Name": "t", "Actual Loops": 1,
                   "Actual Rows": 0, "Rows Removed by Filter": 0, "Filter": ""}),
            json!({"Node Type": "Nested Loop", "Actual Loops": 1, "Plans": []}),
            json!({"Node Type": "Nested Loop", "Plans": [{"Node Type": "Memoize"}]}),
            json!({"Node Type": "Nested Loop", "Actual Loops": 1,
                   "Plans": [{}, {"Node Type": "Memoize", "Actual Loops": 5000}]}),
            json!({"Node Type": "Gather", "Actual Loops": 0, "Workers Launched": "2",
                   "Plans": [{"Node Type": "Seq Scan", "Parallel Aware": true, "Actual Loops": 3,
                              "Actual Total Time": 1e300}]}),
            json!({"Plan": {"Node Type": "Sort", "Sort Space Type": "Disk", "Sort Key": [1, null],
                            "Workers": "none", "Full-sort Groups": 3}, "Execution Time": 0}),
            json!({"Node Type": "Aggregate", "Workers": [null, 1, {"HashAgg Batches": "x"}]}),
            json!({"Node Type": "CTE Scan", "CTE Name": "c", "Actual Total Time": 1.0,
                   "Actual Loops": 1,
                   "Plans": [{"Node Type": "Result", "Parent Relationship": "InitPlan",
                              "Subplan Name": "CTE c", "Actual Total Time": 5.0,
                              "Actual Loops": 1}]}),
            json!({"Node Type": "Seq Scan", "Relation Name": "t", "Plan Rows": 1,
                   "Filter": "((((( unbalanced"}),
        ];
        let mut ctx = PlanContext::default();
        ctx.relation_rows.insert("t".to_string(), f64::NAN);
        for input in &inputs {
            for finding in analyze_plan(input, &ctx) {
                assert!(!finding.detail.contains("NaN") && !finding.detail.contains("inf"));
            }
        }
    }

    #[test]
    fn deep_plans_do_not_overflow_the_stack() {
        let mut plan =
            json!({"Node Type": "Seq Scan", "Actual Loops": 1, "Actual Total Time": 1.0});
        for _ in 0..2_000 {
            // Built by hand: `json!` would re-serialize (recursively) the whole subtree.
            let mut parent =
                json!({"Node Type": "Result", "Actual Loops": 1, "Actual Total Time": 1.0});
            if let Some(fields) = parent.as_object_mut() {
                fields.insert("Plans".to_string(), Value::Array(vec![plan]));
            }
            plan = parent;
        }
        let findings = analyze_plan(&plan, &PlanContext::default());
        assert!(findings.len() <= 2_001);
        // serde_json drops nested values recursively; unwind the chain iteratively.
        let mut current = plan;
        while let Some(child) = current
            .get_mut("Plans")
            .and_then(Value::as_array_mut)
            .and_then(Vec::pop)
        {
            current = child;
        }
    }

    #[test]
    fn severity_names_and_order() {
        assert_eq!(Severity::Info.as_str(), "info");
        assert_eq!(Severity::Warning.as_str(), "warning");
        assert_eq!(Severity::Critical.as_str(), "critical");
        assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
        assert!(Severity::Critical.rank() > Severity::Warning.rank());
        assert!(Severity::Warning.rank() > Severity::Info.rank());
    }

    #[test]
    fn findings_sorted_by_severity_then_time_share() {
        // Two warnings: the scan taking more time comes first.
        let scan = |name: &str, ms: f64| {
            json!({"Node Type": "Seq Scan", "Relation Name": name, "Plan Rows": 100,
                   "Actual Rows": 100, "Actual Loops": 1, "Actual Total Time": ms,
                   "Filter": "(x = 1)", "Rows Removed by Filter": 99_900})
        };
        let plan = json!([{"Plan": {"Node Type": "Append", "Actual Loops": 1,
                                    "Actual Total Time": 100.0, "Plan Rows": 200,
                                    "Actual Rows": 200,
                                    "Plans": [scan("small", 0.8), scan("big", 0.9)]},
                           "Execution Time": 100.0}]);
        let findings = analyze_plan(&plan, &PlanContext::default());
        let order: Vec<&str> = findings.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(
            order,
            vec!["Append", "Seq Scan on big", "Seq Scan on small"]
        );
        assert_eq!(findings[0].severity, Severity::Critical);
    }

    #[test]
    fn index_columns_from_filters() {
        let columns = |filter: &str| -> Vec<(String, bool)> {
            index_columns(filter)
                .into_iter()
                .map(|c| (c.expression, c.equality))
                .collect()
        };
        let column = |name: &str, equality: bool| (name.to_string(), equality);
        assert_eq!(
            columns("(status = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("((lower(email)) = 'a@b.c'::text)"),
            vec![column("lower(email)", true)]
        );
        assert_eq!(
            columns("((a = 1) AND (b > 2))"),
            vec![column("a", true), column("b", false)]
        );
        assert_eq!(
            columns("((b > 2) AND (a = 1) AND (b < 9))"),
            vec![column("a", true), column("b", false)]
        );
        assert_eq!(
            columns("((status)::text = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("('x'::text = status)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("(customer_id = c.id)"),
            vec![column("customer_id", true)]
        );
        assert_eq!(
            columns("(o.status = 'x'::text)"),
            vec![column("status", true)]
        );
        assert_eq!(
            columns("(id = ANY ('{1,2,3}'::integer[]))"),
            vec![column("id", true)]
        );
        assert_eq!(
            columns("(deleted_at IS NULL)"),
            vec![column("deleted_at", true)]
        );
        assert_eq!(
            columns("(created_at >= (now() - '1 day'::interval))"),
            vec![column("created_at", false)]
        );
        assert_eq!(
            columns("(created_at < now())"),
            vec![column("created_at", false)]
        );
        assert_eq!(
            columns("((\"Order Status\" = 'a AND b'::text) AND (x = 1))"),
            vec![column("\"Order Status\"", true), column("x", true)]
        );
        // Partly simple: name what can be indexed.
        assert_eq!(
            columns("((email ~~ '%x%'::text) AND (region = 'eu'::text))"),
            vec![column("region", true)]
        );
        // Not simple: ORs, pattern matches, inequality, constants only, garbage.
        assert!(columns("((a = 1) OR (b = 2))").is_empty());
        assert!(columns("(email ~~ 'x%'::text)").is_empty());
        assert!(columns("(a <> 1)").is_empty());
        assert!(columns("(1 = 1)").is_empty());
        assert!(columns("(NULL = x)").len() == 1);
        assert!(columns("").is_empty());
        assert!(columns("(((").is_empty());
        assert!(columns(")))").is_empty());
        assert!(columns("(a = 'unterminated)").is_empty());
        assert!(columns("(é = 1)") == vec![column("é", true)]);
    }

    #[test]
    fn number_formatting() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1_000.0), "1,000");
        assert_eq!(count(1_234_567.4), "1,234,567");
        assert_eq!(percent(0.764), "76%");
        assert_eq!(percent(0.998), "99.8%");
        assert_eq!(percent(0.9998), "99.98%");
        assert_eq!(percent(0.999_999), "99.99%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.99), "99.0%");
        assert_eq!(percent(0.05), "5.0%");
        assert_eq!(kilobytes(77.0), "77 kB");
        assert_eq!(kilobytes(3568.0), "3.5 MB");
        assert_eq!(memory_setting(7136.0), "7MB");
        assert_eq!(memory_setting(1.0), "1MB");
        assert_eq!(memory_setting(3.0 * 1024.0 * 1024.0), "3GB");
        assert_eq!(milliseconds(42.137), "42.1 ms");
        assert_eq!(milliseconds(1234.5), "1.23 s");
    }
}
