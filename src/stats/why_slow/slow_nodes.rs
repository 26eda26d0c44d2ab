//! Rule 1: nodes that take most of the execution time.

use super::*;

/// `slow_node`: the most expensive node if it has >10% of the time, plus any node >40%.
/// Needs timings and at least two timed nodes (in a one-node plan the share is trivially 100%).
pub(super) fn slow_nodes(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
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
pub(super) fn slow_node_advice(node_type: &str) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

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
}
