//! Rule 7: nested loops that execute their inner side very often.

use super::*;

/// `nested_loop_inner_seq_scan`: the inner side is a sequential scan re-run ≥1000 times
/// (warning; critical at ≥10k runs or ≥10M rows read); estimate-only plans: ≥1000 estimated
/// outer rows (warning). `nested_loop_many_loops`: any other inner side run ≥1000 times
/// (info; warning at ≥100k).
pub(super) fn nested_loops(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
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
pub(super) fn nested_loop_seq_scan_advice(inner: &PlanNode) -> String {
    let target = relation_name(inner.fields).unwrap_or_else(|| "the inner table".to_string());
    format!(
        "Index the join column of {target} so each outer row becomes an index lookup, or help \
         the planner pick a hash join (check the outer side's row estimate, ANALYZE). Run \
         perf.suggest_indexes() for a recommendation."
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

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
}
