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
//!
//! Layout: `tree.rs` flattens the plan into nodes with their exclusive time and counters;
//! one file per family of rules (`slow_nodes`, `estimates`, `scans` for filters, sequential
//! and index-only scans, `spills` for sorts/hashes/temp files, `joins` for nested loops);
//! `conditions.rs` reads index columns out of filter texts; `format.rs` prints numbers. This
//! file holds the public API ([`analyze_plan`], [`Finding`], [`PlanContext`], thresholds).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

mod conditions;
mod estimates;
mod format;
mod joins;
mod scans;
mod slow_nodes;
mod spills;
#[cfg(test)]
mod test_support;
mod tree;

use conditions::*;
use estimates::*;
use format::*;
use joins::*;
use scans::*;
use slow_nodes::*;
use spills::*;
use tree::*;

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

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

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
}
