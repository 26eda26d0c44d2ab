//! Rules 3 and 4: filters that discard most rows, and sequential scans that need an index.
//! Rule 8: index-only scans that still visit the heap.

use super::*;

/// `seq_scan_selective_filter`: a sequential scan reading ≥10k rows per scan of which the
/// filter discards ≥90% (warning; critical at ≥99% discarded and ≥1M rows read in total).
/// Without actuals: the estimated rows are ≤10% of a table known (from the context) to hold
/// ≥10k rows. Returns the nodes reported, so the generic filter rule can skip them.
pub(super) fn selective_seq_scans(
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
pub(super) fn lookup_relation_rows(ctx: &PlanContext, fields: &Map<String, Value>) -> Option<f64> {
    let relation = text(fields, "Relation Name")?;
    let qualified = text(fields, "Schema").map(|schema| format!("{schema}.{relation}"));
    qualified
        .and_then(|name| ctx.relation_rows.get(&name))
        .or_else(|| ctx.relation_rows.get(relation))
        .copied()
        .filter(|rows| rows.is_finite() && *rows >= 0.0)
}

/// Suggests an index named after the filter's columns when the filter is simple enough.
pub(super) fn index_advice(relation: &str, filter: &str) -> String {
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
pub(super) fn filters_removing_rows(
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
pub(super) fn filter_index_sentence(relation: &str, filter: &str) -> String {
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

/// `index_only_scan_heap_fetches`: ≥100 heap fetches that are ≥1% (info) or ≥10% (warning)
/// of the rows returned. "Heap Fetches" is a total over all loops; "Actual Rows" is per loop.
pub(super) fn index_only_heap_fetches(plan: &PlanTree, out: &mut Vec<RankedFinding>) {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::json;

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
}
