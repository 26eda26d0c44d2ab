//! Rule 2: row estimates that are far off.

use super::*;

/// Direction and size of a node's estimate error.
#[derive(Clone, Copy)]
pub(super) struct Misestimate {
    pub(super) underestimate: bool,
    pub(super) factor: f64,
}

/// Estimate error of one executed node, if it passes the factor and absolute-error guards.
pub(super) fn misestimate(plan: &PlanTree, index: usize) -> Option<Misestimate> {
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
pub(super) fn row_misestimates(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
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
pub(super) fn misestimate_advice(node: &PlanNode) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_hides_expected_overestimate() {
        // Seq Scan estimated 90,077 rows but the Limit stopped it after 5.
        let findings = analyze(LIMIT);
        assert!(findings.iter().all(|f| f.finding != "row_misestimate"));
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
}
