//! Fixtures and helpers shared by the rule tests.

use super::*;
use serde_json::json;

pub(super) fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is valid JSON")
}

pub(super) fn analyze(text: &str) -> Vec<Finding> {
    analyze_plan(&parse(text), &PlanContext::default())
}

/// (code, severity) pairs, for compact assertions.
pub(super) fn codes(findings: &[Finding]) -> Vec<(&'static str, Severity)> {
    findings.iter().map(|f| (f.finding, f.severity)).collect()
}

pub(super) fn find<'a>(findings: &'a [Finding], code: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.finding == code)
        .unwrap_or_else(|| panic!("expected {code} in {findings:#?}"))
}

pub(super) fn assert_no_warning(findings: &[Finding]) {
    assert!(
        findings.iter().all(|f| f.severity == Severity::Info),
        "expected at most info findings, got {findings:#?}"
    );
}

pub(super) fn assert_sorted(findings: &[Finding]) {
    assert!(
        findings
            .windows(2)
            .all(|pair| pair[0].severity >= pair[1].severity),
        "findings not sorted by severity: {findings:#?}"
    );
}

pub(super) const SEQ_SCAN: &str =
    include_str!("../../../tests/fixtures/plans/seq_scan_selective_filter.json");
pub(super) const SEQ_SCAN_ESTIMATE: &str =
    include_str!("../../../tests/fixtures/plans/seq_scan_selective_filter_estimate.json");
pub(super) const SEQ_SCAN_EXPRESSION: &str =
    include_str!("../../../tests/fixtures/plans/seq_scan_expression_filter.json");
pub(super) const SEQ_SCAN_MULTI_COLUMN: &str =
    include_str!("../../../tests/fixtures/plans/seq_scan_multi_column_filter.json");
pub(super) const SORT_SPILL: &str = include_str!("../../../tests/fixtures/plans/sort_spill.json");
pub(super) const HASH_BATCHES: &str =
    include_str!("../../../tests/fixtures/plans/hash_batches.json");
pub(super) const HASH_AGGREGATE_SPILL: &str =
    include_str!("../../../tests/fixtures/plans/hash_aggregate_spill.json");
pub(super) const NESTED_LOOP_SEQ_SCAN: &str =
    include_str!("../../../tests/fixtures/plans/nested_loop_inner_seq_scan.json");
pub(super) const NESTED_LOOP_SEQ_SCAN_ESTIMATE: &str =
    include_str!("../../../tests/fixtures/plans/nested_loop_inner_seq_scan_estimate.json");
pub(super) const NESTED_LOOP_INDEX: &str =
    include_str!("../../../tests/fixtures/plans/nested_loop_index_many_loops.json");
pub(super) const MISESTIMATE: &str =
    include_str!("../../../tests/fixtures/plans/row_misestimate.json");
pub(super) const OVERESTIMATE: &str =
    include_str!("../../../tests/fixtures/plans/row_overestimate.json");
pub(super) const HEAP_FETCHES: &str =
    include_str!("../../../tests/fixtures/plans/index_only_heap_fetches.json");
pub(super) const CLEAN: &str =
    include_str!("../../../tests/fixtures/plans/clean_index_lookup.json");
pub(super) const CLEAN_ESTIMATE: &str =
    include_str!("../../../tests/fixtures/plans/clean_index_lookup_estimate.json");
pub(super) const LIMIT: &str = include_str!("../../../tests/fixtures/plans/limit_early_stop.json");
pub(super) const SUBPLAN: &str =
    include_str!("../../../tests/fixtures/plans/initplan_subplan.json");
pub(super) const CTE_TEMP: &str =
    include_str!("../../../tests/fixtures/plans/temp_written_cte.json");
pub(super) const PARALLEL: &str =
    include_str!("../../../tests/fixtures/plans/parallel_aggregate.json");

pub(super) const ALL_FIXTURES: &[&str] = &[
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

/// A timed node; `plans` become its children.
pub(super) fn timed(node_type: &str, total_ms: f64, plans: Vec<Value>) -> Value {
    json!({"Node Type": node_type, "Plan Rows": 1, "Actual Rows": 1, "Actual Loops": 1,
       "Actual Total Time": total_ms, "Plans": plans})
}

pub(super) fn estimate_node(plan_rows: f64, actual_rows: f64, loops: f64) -> Value {
    json!({"Node Type": "Index Scan", "Relation Name": "t", "Plan Rows": plan_rows,
       "Actual Rows": actual_rows, "Actual Loops": loops, "Actual Total Time": 0.1})
}

pub(super) fn misestimate_severity(
    plan_rows: f64,
    actual_rows: f64,
    loops: f64,
) -> Option<Severity> {
    analyze_plan(
        &estimate_node(plan_rows, actual_rows, loops),
        &PlanContext::default(),
    )
    .iter()
    .find(|f| f.finding == "row_misestimate")
    .map(|f| f.severity)
}

pub(super) fn filtered_scan(node_type: &str, returned: f64, removed: f64, loops: f64) -> Value {
    json!({"Node Type": node_type, "Relation Name": "t", "Plan Rows": returned,
       "Actual Rows": returned, "Actual Loops": loops, "Filter": "((a = 1) AND (b > 2))",
       "Rows Removed by Filter": removed})
}

pub(super) fn filter_severity(
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

pub(super) fn nested_loop(inner_type: &str, loops: f64, inner_rows: f64) -> Value {
    json!({"Node Type": "Nested Loop", "Plan Rows": 1, "Actual Rows": 1, "Actual Loops": 1,
       "Plans": [
           {"Node Type": "Seq Scan", "Relation Name": "a", "Parent Relationship": "Outer",
            "Plan Rows": loops, "Actual Rows": loops, "Actual Loops": 1},
           {"Node Type": inner_type, "Relation Name": "b", "Parent Relationship": "Inner",
            "Plan Rows": inner_rows, "Actual Rows": inner_rows, "Actual Loops": loops}]})
}

pub(super) fn nested_loop_codes(
    inner_type: &str,
    loops: f64,
    inner_rows: f64,
) -> Vec<(&'static str, Severity)> {
    codes(&analyze_plan(
        &nested_loop(inner_type, loops, inner_rows),
        &PlanContext::default(),
    ))
}
