//! Rendering the advice as rows of `perf.suggest_indexes()`: CREATE INDEX for the indexes
//! kept, DROP INDEX for existing ones worth dropping, and for each the statements it helps
//! (their texts as stats shows them to the caller).

use std::collections::HashMap;

use pgrx::pg_sys::{self, Oid};

use super::ddl;
use super::model::*;
use super::selection::{find_drop_candidates, SelectionResult};
use super::workload::WorkloadQuery;
use crate::pg::quote::quote_identifier;
use crate::stats::workload;

/// CREATE INDEX for a candidate, CONCURRENTLY except on a partitioned table (where CREATE
/// INDEX refuses CONCURRENTLY).
pub(super) fn index_ddl(c: &IndexCandidate, table: &TableInfo, name: &str) -> Option<String> {
    let sql = ddl::create_index_sql(c, table, name).ok()?;
    // SAFETY: plain syscache lookup (0 when the table is gone).
    let relkind = unsafe { pg_sys::get_rel_relkind(Oid::from(table.id)) } as u8;
    Some(if relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
        sql.replacen("CREATE INDEX CONCURRENTLY ", "CREATE INDEX ", 1)
    } else {
        sql
    })
}

/// A row of `suggest_indexes` (its SQL signature names the columns).
pub(super) type SuggestionRow = (
    String,
    String,
    String,
    i64,
    f64,
    f64,
    f64,
    pgrx::JsonB,
    f64,
    String,
);

/// The rows: `keep` says which of `result.chosen` survived pruning, `final_cost` is the
/// workload's cost with those.
pub(super) fn rows(
    workload_queries: &[WorkloadQuery],
    tables: &HashMap<TableId, TableInfo>,
    existing: &[ExistingIndex],
    result: &SelectionResult,
    keep: &[bool],
    final_cost: f64,
) -> Vec<SuggestionRow> {
    let queryid_of = |id: QueryId| {
        workload_queries.get(id as usize).map(|q| {
            let text = if q.visible {
                q.text.clone()
            } else {
                workload::HIDDEN.to_string()
            };
            (q.queryid, text)
        })
    };
    let mut rows = Vec::new();
    let mut taken: Vec<String> = existing.iter().map(|e| e.name.clone()).collect();
    for (c, _) in result.chosen.iter().zip(keep).filter(|(_, k)| **k) {
        let Some(table) = tables.get(&c.candidate.table) else {
            continue;
        };
        let name = ddl::choose_index_name(&c.candidate, &table.name, &taken);
        taken.push(name.clone());
        let Some(sql) = index_ddl(&c.candidate, table, &name) else {
            continue;
        };
        let helped: Vec<serde_json::Value> = c
            .query_savings
            .iter()
            .filter_map(|s| {
                let (queryid, text) = queryid_of(s.query_id)?;
                let before = result
                    .query_costs
                    .iter()
                    .find(|q| q.query_id == s.query_id)?;
                Some(serde_json::json!({
                    "queryid": queryid,
                    "query": text,
                    "calls": s.calls,
                    "cost_before": before.cost_before,
                    "cost_after": before.cost_after,
                }))
            })
            .collect();
        rows.push((
            "create".to_string(),
            format!(
                "{}.{}",
                quote_identifier(&table.schema),
                quote_identifier(&table.name)
            ),
            format!("{sql};"),
            c.size.bytes as i64,
            result.baseline_workload_cost,
            final_cost,
            if result.baseline_workload_cost > 0.0 {
                100.0 * c.benefit / result.baseline_workload_cost
            } else {
                0.0
            },
            pgrx::JsonB(serde_json::Value::Array(helped)),
            c.write_overhead,
            c.reason.clone(),
        ));
    }
    for d in find_drop_candidates(existing) {
        let Ok(sql) = ddl::drop_index_sql(&d.index) else {
            continue;
        };
        let table = tables.get(&d.index.table).map(|t| {
            format!(
                "{}.{}",
                quote_identifier(&t.schema),
                quote_identifier(&t.name)
            )
        });
        rows.push((
            "drop".to_string(),
            table.unwrap_or_default(),
            format!("{sql};"),
            d.index.size_bytes as i64,
            result.baseline_workload_cost,
            final_cost,
            0.0,
            pgrx::JsonB(serde_json::Value::Array(Vec::new())),
            0.0,
            d.explanation.clone(),
        ));
    }
    rows
}
