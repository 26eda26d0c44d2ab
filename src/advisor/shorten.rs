//! Shortening chosen multicolumn btrees whose last key columns do not pay for their bytes.
//!
//! The greedy search extends a chosen btree by a key column whenever that is the best
//! option per byte at that step, and the final pass (`oracle::prune`) drops whole indexes
//! whose marginal benefit per byte is under a tenth of the configuration's average. The
//! same rule applies to each key column of a kept multicolumn btree: with the whole
//! configuration in place, its trailing key is dropped while what that key saves (net of
//! the write cost of the bytes it adds) per byte it adds is under a tenth of the average,
//! e.g. a third column that spares a rarely run report a few heap fetches while making a
//! large index a quarter bigger. A key some statement orders or groups by is never
//! dropped (the planner costs an average value; the sort it spares matters for the heavy
//! ones). Pure: costs come from a [`CostOracle`].

use super::candidates::{classify, covering_existing_index};
use super::model::{IndexCandidate, IndexMethod, Workload};
use super::selection::{CostOracle, SelectionResult};
use super::size::estimate_candidate;

/// Fraction of the configuration's average benefit per byte under which a key column (or,
/// in `oracle::prune`, a whole index) is not worth its storage.
pub const MIN_DENSITY_SHARE: f64 = 0.1;

/// Shortens the kept (`keep[i]`) multicolumn btrees of `result` as the module says, and
/// returns the workload cost added (what the dropped keys saved). `average_density` is
/// the configuration's saving per byte before pruning.
pub fn shorten_chosen<O: CostOracle + ?Sized>(
    result: &mut SelectionResult,
    keep: &[bool],
    workload: &Workload,
    oracle: &mut O,
    average_density: f64,
) -> f64 {
    let mut added_cost = 0.0;
    for i in 0..result.chosen.len() {
        while keep.get(i).copied().unwrap_or(false) {
            let full = &result.chosen[i];
            let c = &full.candidate;
            if c.method != IndexMethod::Btree || c.keys.len() < 2 {
                break;
            }
            // A key some statement orders or groups by stays: in index order the scan
            // spares the sort and stops at the LIMIT, which matters most for the values
            // with many rows, and the planner's estimate for an average value understates.
            let last = c.keys.last().map(|k| k.target.identity());
            let ordered_by = workload.queries.iter().flat_map(|q| &q.tables).any(|a| {
                a.table == c.table
                    && a.order_by
                        .iter()
                        .chain(&a.group_by)
                        .any(|s| Some(s.target.identity()) == last)
            });
            if ordered_by {
                break;
            }
            let mut shorter = c.clone();
            shorter.keys.pop();
            let Some(table) = workload.table(shorter.table) else {
                break;
            };
            // Never a copy of an index already there or already proposed.
            let signature = shorter.signature();
            if covering_existing_index(&shorter, &workload.existing_indexes).is_some()
                || result
                    .chosen
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && keep[j] && o.candidate.signature() == signature)
            {
                break;
            }
            let size = estimate_candidate(&shorter, table);
            let saved_bytes = full.size.bytes.saturating_sub(size.bytes) as f64;
            if saved_bytes <= 0.0 {
                break;
            }
            let config = |replace: Option<&IndexCandidate>| -> Vec<IndexCandidate> {
                result
                    .chosen
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| keep[*j])
                    .map(|(j, o)| match replace {
                        Some(r) if j == i => r.clone(),
                        _ => o.candidate.clone(),
                    })
                    .collect()
            };
            let (with, without) = (config(None), config(Some(&shorter)));
            let mut increase = 0.0;
            for q in workload.queries.iter().filter(|q| q.touches(shorter.table)) {
                match (
                    oracle.workload_query_cost(q.query_id, &with),
                    oracle.workload_query_cost(q.query_id, &without),
                ) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                        increase += q.calls * (b - a)
                    }
                    _ => {
                        increase = f64::INFINITY;
                        break;
                    }
                }
            }
            // Write cost is proportional to the entry's size (see `selection`).
            let write_saved = full.write_overhead * saved_bytes / (full.size.bytes as f64).max(1.0);
            let net = increase - write_saved;
            if !(net <= 0.0 || net / saved_bytes < MIN_DENSITY_SHARE * average_density) {
                break;
            }
            let dropped = full
                .candidate
                .keys
                .last()
                .map(|k| k.target.display_text().to_string())
                .unwrap_or_default();
            let chosen = &mut result.chosen[i];
            chosen.kind = classify(&shorter);
            chosen.candidate = shorter;
            chosen.size = size;
            chosen.benefit -= increase.max(0.0);
            chosen.write_overhead -= write_saved;
            chosen.reason.push_str(&format!(
                "; without key column {dropped}, which saved too little for the bytes it adds"
            ));
            added_cost += increase.max(0.0);
        }
    }
    added_cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::model::{
        ColumnRef, IndexKey, KeyTarget, QueryId, QueryShape, SortDirection, TableAccess, TableInfo,
    };
    use crate::advisor::selection::{ChosenIndex, StopReason};

    fn col(attnum: i16, name: &str) -> KeyTarget {
        KeyTarget::Column(ColumnRef::test_bigint(attnum, name))
    }

    fn btree(keys: &[(i16, &str)]) -> IndexCandidate {
        IndexCandidate {
            table: 10,
            method: IndexMethod::Btree,
            keys: keys
                .iter()
                .map(|(n, name)| IndexKey {
                    target: col(*n, name),
                    direction: SortDirection::default(),
                    opclass: None,
                })
                .collect(),
            include: vec![],
            predicate: None,
        }
    }

    fn workload() -> Workload {
        Workload {
            tables: vec![TableInfo {
                id: 10,
                schema: "public".into(),
                name: "t".into(),
                reltuples: 1e6,
                relpages: 1e6 / 60.0,
                avg_row_width: 100.0,
                inserts: 0.0,
                updates: 0.0,
                deletes: 0.0,
                hot_update_fraction: 0.0,
                is_append_only: false,
                column_stats: vec![],
            }],
            existing_indexes: vec![],
            queries: vec![QueryShape {
                query_id: 1,
                calls: 100.0,
                limit: None,
                tables: vec![TableAccess {
                    table: 10,
                    predicates: vec![],
                    join_columns: vec![],
                    order_by: vec![],
                    group_by: vec![],
                    referenced_columns: None,
                }],
            }],
        }
    }

    /// Costs per call by the number of key columns of the one index in the configuration.
    struct ByKeys([f64; 4]);

    impl CostOracle for ByKeys {
        fn workload_query_cost(&mut self, _q: QueryId, config: &[IndexCandidate]) -> Option<f64> {
            Some(self.0[config.first().map_or(0, |c| c.keys.len().min(3))])
        }
    }

    fn result_with(index: IndexCandidate, w: &Workload, costs: &ByKeys) -> SelectionResult {
        let calls = w.queries[0].calls;
        let (before, after) = (costs.0[0], costs.0[index.keys.len()]);
        SelectionResult {
            chosen: vec![ChosenIndex {
                kind: classify(&index),
                size: estimate_candidate(&index, &w.tables[0]),
                candidate: index,
                benefit: calls * (before - after),
                write_overhead: 0.0,
                query_savings: vec![],
                reason: "r".into(),
            }],
            query_costs: vec![],
            baseline_workload_cost: calls * before,
            final_workload_cost: calls * after,
            total_size_bytes: 0,
            total_write_overhead: 0.0,
            unplannable_queries: vec![],
            oracle_calls: 0,
            cache_hits: 0,
            steps: 1,
            stop_reason: StopReason::NoImprovement,
        }
    }

    fn density(r: &SelectionResult) -> f64 {
        (r.baseline_workload_cost - r.final_workload_cost) / r.chosen[0].size.bytes as f64
    }

    #[test]
    fn a_key_that_saves_a_sliver_is_dropped_one_that_pays_is_kept() {
        let w = workload();
        let mut oracle = ByKeys([100.0, 50.0, 10.001, 10.0]);
        let mut r = result_with(btree(&[(1, "a"), (2, "b"), (3, "c")]), &w, &oracle);
        let d = density(&r);
        let added = shorten_chosen(&mut r, &[true], &w, &mut oracle, d);
        let keys: Vec<&str> = r.chosen[0]
            .candidate
            .keys
            .iter()
            .map(|k| k.target.display_text())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert!((added - 0.1).abs() < 1e-6, "{added}");
        assert_eq!(
            r.chosen[0].size,
            estimate_candidate(&btree(&[(1, "a"), (2, "b")]), &w.tables[0])
        );
        assert!(r.chosen[0].reason.contains("without key column c"));
    }

    /// Shortens an (a, b, c) btree under `costs` (per key count); returns the keys left
    /// and the cost added. `keep` says whether the index was kept by the removal pass.
    fn shorten_abc(w: &Workload, costs: [f64; 4], keep: bool) -> (usize, f64) {
        let mut oracle = ByKeys(costs);
        let mut r = result_with(btree(&[(1, "a"), (2, "b"), (3, "c")]), w, &oracle);
        let d = density(&r);
        let added = shorten_chosen(&mut r, &[keep], w, &mut oracle, d);
        (r.chosen[0].candidate.keys.len(), added)
    }

    #[test]
    fn a_key_the_workload_orders_by_stays() {
        let mut w = workload();
        w.queries[0].tables[0].order_by = vec![crate::advisor::model::SortItem {
            target: col(3, "c"),
            direction: SortDirection::default(),
        }];
        assert_eq!(shorten_abc(&w, [100.0, 50.0, 10.001, 10.0], true), (3, 0.0));
    }

    #[test]
    fn keys_that_carry_the_saving_stay() {
        assert_eq!(
            shorten_abc(&workload(), [100.0, 90.0, 50.0, 10.0], true),
            (3, 0.0)
        );
    }

    #[test]
    fn dropped_indexes_and_unplannable_costs_are_left_alone() {
        let w = workload();
        assert_eq!(shorten_abc(&w, [100.0, 50.0, 10.0, 10.0], false), (3, 0.0));
        struct Never;
        impl CostOracle for Never {
            fn workload_query_cost(&mut self, _: QueryId, _: &[IndexCandidate]) -> Option<f64> {
                None
            }
        }
        let oracle = ByKeys([100.0, 50.0, 10.0, 10.0]);
        let mut r = result_with(btree(&[(1, "a"), (2, "b"), (3, "c")]), &w, &oracle);
        let d = density(&r);
        assert_eq!(shorten_chosen(&mut r, &[true], &w, &mut Never, d), 0.0);
        assert_eq!(r.chosen[0].candidate.keys.len(), 3);
    }
}
