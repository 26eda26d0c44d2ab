//! `perf.suggest_indexes()`: the workload (captured statements, or an explicit list) is
//! planned once as it is; the columns each plan filters, joins, sorts and groups on become
//! the advisor's model (with table and column statistics from the catalogs); the pure core
//! generates candidates and selects them Extend-style under `perf.advisor_budget_mb`, asking
//! the what-if planner what each configuration costs.

use std::collections::HashMap;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use super::candidates::generate_candidates;
use super::ddl;
use super::guard::{can_read_all_stats, in_subtransaction};
use super::model::*;
use super::selection::{find_drop_candidates, select_indexes, CostOracle, SelectionSettings};
use super::whatif::{self, Planned, Session};
use crate::pg::try_catch::rethrowing;
use crate::stats::shmem::{self, PredicateKind, PredicateRec};

/// The table an INSERT/UPDATE/DELETE writes, from its parse tree alone: normalized texts
/// (`$n` for constants) cannot always be planned again (ambiguous parameter types), but
/// their writes must still count against indexes on the table.
fn write_target_of(text: &str) -> Option<(u32, pg_sys::CmdType::Type)> {
    let c = std::ffi::CString::new(text).ok()?;
    in_subtransaction(|| {
        // SAFETY: raw parsing (no analysis) and a relation name lookup that may miss.
        unsafe {
            let raw = pg_sys::pg_parse_query(c.as_ptr());
            if raw.is_null() || (*raw).length != 1 {
                return None;
            }
            let stmt = (*((*(*raw).elements).ptr_value as *mut pg_sys::RawStmt)).stmt;
            let (rv, cmd) = match (*stmt).type_ {
                pg_sys::NodeTag::T_InsertStmt => (
                    (*(stmt as *mut pg_sys::InsertStmt)).relation,
                    pg_sys::CmdType::CMD_INSERT,
                ),
                pg_sys::NodeTag::T_UpdateStmt => (
                    (*(stmt as *mut pg_sys::UpdateStmt)).relation,
                    pg_sys::CmdType::CMD_UPDATE,
                ),
                pg_sys::NodeTag::T_DeleteStmt => (
                    (*(stmt as *mut pg_sys::DeleteStmt)).relation,
                    pg_sys::CmdType::CMD_DELETE,
                ),
                _ => return None,
            };
            let relid = pg_sys::RangeVarGetRelidExtended(
                rv,
                pg_sys::NoLock as i32,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            );
            // Only tables the caller may read: advice must not describe any other.
            let readable = relid != Oid::INVALID
                && pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
                    == pg_sys::AclResult::ACLCHECK_OK;
            readable.then(|| (relid.to_u32(), cmd))
        }
    })
    .flatten()
}

/// One workload statement.
struct WorkloadQuery {
    queryid: i64,
    text: String,
    /// The slowest run's text with its constants, when a slow plan was captured: planned
    /// first (real selectivities, and it always parses), the normalized text otherwise.
    sample: Option<String>,
    calls: f64,
    /// Rows processed over all calls (rows written, for a write statement).
    rows: f64,
    /// The caller ran this statement (or passed it): it may be planned even when it calls
    /// user-defined functions. Other roles' statements are planned only when they call
    /// nothing but built-in code (planning folds immutable calls, i.e. runs them).
    own: bool,
    /// The caller may read its text (pg_stat_statements' rule).
    visible: bool,
}

/// What a statement text shows to a caller who may not read it (as perf.statements).
const HIDDEN: &str = "<insufficient privilege>";

fn captured_workload() -> Vec<WorkloadQuery> {
    // SAFETY: plain read of a backend global.
    let db = unsafe { pg_sys::MyDatabaseId.to_u32() };
    // SAFETY: plain read of backend state.
    let me = unsafe { pg_sys::GetUserId().to_u32() };
    let read_all = can_read_all_stats();
    let mut by_id: HashMap<i64, (WorkloadQuery, f64)> = HashMap::new();
    for e in shmem::snapshot(|k| k.dbid == db) {
        let lower = e.text.trim_start().to_ascii_lowercase();
        let plannable = ["select", "with", "update", "delete", "insert"]
            .iter()
            .any(|k| lower.starts_with(k));
        if e.counters.calls == 0
            || !plannable
            || lower.contains("perf.")
            || lower.contains("pg_catalog.")
        {
            continue;
        }
        let entry = by_id.entry(e.key.queryid).or_insert_with(|| {
            (
                WorkloadQuery {
                    queryid: e.key.queryid,
                    text: e.text.clone(),
                    sample: None,
                    calls: 0.0,
                    rows: 0.0,
                    own: false,
                    visible: read_all,
                },
                0.0,
            )
        });
        if e.key.userid == me {
            entry.0.own = true;
            entry.0.visible = true;
        }
        entry.0.calls += e.counters.calls as f64;
        entry.0.rows += e.counters.rows as f64;
        entry.1 += e.counters.total_time;
    }
    for p in shmem::plans(|k| k.dbid == db) {
        if let Some((q, _)) = by_id.get_mut(&p.key.queryid) {
            if !p.sample.is_empty() {
                q.sample = Some(p.sample);
            }
        }
    }
    let mut all: Vec<(WorkloadQuery, f64)> = by_id.into_values().collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.into_iter().take(200).map(|(q, _)| q).collect()
}

/// Catalog facts about the tables, columns and operators the workload uses, cached.
#[derive(Default)]
struct Catalog {
    columns: HashMap<(u32, i16), Option<ColumnRef>>,
    operators: HashMap<u32, Option<(String, i32, bool)>>,
}

fn spi_err(e: pgrx::spi::Error) -> String {
    e.to_string()
}

impl Catalog {
    fn column(&mut self, relid: u32, attnum: i16) -> Option<ColumnRef> {
        self.columns
            .entry((relid, attnum))
            .or_insert_with(|| {
                Spi::connect(|c| {
                    let r = c.select(
                        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typlen,
                                t.typalign::text, coalesce(s.avg_width, 0)
                           FROM pg_catalog.pg_attribute a
                           JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                           JOIN pg_catalog.pg_class cl ON cl.oid = a.attrelid
                           JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
                           LEFT JOIN pg_catalog.pg_stats s ON s.schemaname = n.nspname
                                AND s.tablename = cl.relname AND s.attname = a.attname
                          WHERE a.attrelid = $1 AND a.attnum = $2 AND NOT a.attisdropped",
                        None,
                        &[Oid::from(relid).into(), attnum.into()],
                    )?;
                    let mut out = None;
                    for row in r {
                        out = Some(ColumnRef {
                            attnum,
                            name: row.get::<String>(1)?.unwrap_or_default(),
                            type_name: row.get::<String>(2)?.unwrap_or_default(),
                            typlen: row.get::<i16>(3)?.unwrap_or(-1),
                            typalign: TypeAlign::from_pg_code(
                                row.get::<String>(4)?
                                    .unwrap_or_default()
                                    .chars()
                                    .next()
                                    .unwrap_or('i'),
                            ),
                            avg_width: row.get::<i32>(5)?.unwrap_or(0).max(0) as u32,
                        });
                    }
                    Ok::<_, pgrx::spi::Error>(out)
                })
                .map_err(spi_err)
                .ok()
                .flatten()
            })
            .clone()
    }

    /// (operator name, btree strategy or 0, usable by GIN).
    fn operator(&mut self, opno: u32) -> Option<(String, i32, bool)> {
        self.operators
            .entry(opno)
            .or_insert_with(|| {
                Spi::connect(|c| {
                    let r = c.select(
                        "SELECT o.oprname::text,
                                coalesce((SELECT max(am.amopstrategy) FROM pg_catalog.pg_amop am
                                           WHERE am.amopopr = o.oid AND am.amopmethod = 403), 0)::int4,
                                EXISTS (SELECT 1 FROM pg_catalog.pg_amop am
                                         WHERE am.amopopr = o.oid AND am.amopmethod = 2742)
                           FROM pg_catalog.pg_operator o WHERE o.oid = $1",
                        None,
                        &[Oid::from(opno).into()],
                    )?;
                    let mut out = None;
                    for row in r {
                        out = Some((
                            row.get::<String>(1)?.unwrap_or_default(),
                            row.get::<i32>(2)?.unwrap_or(0),
                            row.get::<bool>(3)?.unwrap_or(false),
                        ));
                    }
                    Ok::<_, pgrx::spi::Error>(out)
                })
                .map_err(spi_err)
                .ok()
                .flatten()
            })
            .clone()
    }

    fn target(&mut self, p: &PredicateRec) -> Option<KeyTarget> {
        let col = self.column(p.relid, p.attnum)?;
        if p.funcid == 0 {
            return Some(KeyTarget::Column(col));
        }
        // Only IMMUTABLE functions can be indexed (CREATE INDEX's rule): a predicate on any
        // other function call yields no candidate. The name is quoted and, when not on the
        // search_path, schema-qualified.
        // SAFETY: plain catalog lookups; NULL results (a dropped function) are handled.
        let (name, rettype) = unsafe {
            let func = Oid::from(p.funcid);
            // get_func_name first: NULL for a dropped function, where func_volatile would
            // raise an internal error.
            let n = pg_sys::get_func_name(func);
            if n.is_null()
                || pg_sys::func_volatile(func) != pg_sys::PROVOLATILE_IMMUTABLE as std::ffi::c_char
            {
                return None;
            }
            let nsp = pg_sys::get_namespace_name(pg_sys::get_func_namespace(func));
            if nsp.is_null() {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(n).to_string_lossy().into_owned();
            let nsp = std::ffi::CStr::from_ptr(nsp).to_string_lossy().into_owned();
            // Qualified only when not visible, so the text matches pg_get_indexdef's.
            let name = if pg_sys::FunctionIsVisible(func) {
                ddl::quote_ident(&name)
            } else {
                format!("{}.{}", ddl::quote_ident(&nsp), ddl::quote_ident(&name))
            };
            (name, pg_sys::get_func_rettype(func))
        };
        let type_name =
            Spi::get_one_with_args::<String>("SELECT format_type($1, NULL)", &[rettype.into()])
                .ok()
                .flatten()
                .unwrap_or_else(|| "text".into());
        Some(KeyTarget::Expression(ExpressionRef {
            sql: format!("{name}({})", ddl::quote_ident(&col.name)),
            type_name,
            typlen: col.typlen,
            typalign: col.typalign,
            avg_width: col.avg_width,
            referenced_attnums: vec![col.attnum],
        }))
    }

    fn predicate_operator(
        &mut self,
        p: &PredicateRec,
        target: &KeyTarget,
    ) -> Option<PredicateOperator> {
        let (name, strategy, gin) = self.operator(p.opno)?;
        if strategy == 3 {
            return Some(PredicateOperator::Equality);
        }
        if matches!(strategy, 1 | 2 | 4 | 5) {
            return Some(PredicateOperator::Range);
        }
        if name == "~~" {
            return Some(PredicateOperator::LikePrefix {
                needs_pattern_opclass: true,
            });
        }
        if gin {
            let operand = GinOperandKind::from_type_name(target.type_name())?;
            let operator = match name.as_str() {
                "@>" => ContainmentOperator::Contains,
                "<@" => ContainmentOperator::ContainedBy,
                "?" | "?|" | "?&" => ContainmentOperator::KeyExists,
                "&&" => ContainmentOperator::Overlaps,
                "@@" if operand == GinOperandKind::TsVector => ContainmentOperator::TextSearchMatch,
                "@@" | "@?" => ContainmentOperator::JsonPathMatch,
                _ => return None,
            };
            return Some(PredicateOperator::Containment { operator, operand });
        }
        None
    }
}

fn table_info(relid: u32) -> Option<TableInfo> {
    Spi::connect(|c| {
        let r = c.select(
            "SELECT n.nspname::text, cl.relname::text, greatest(cl.reltuples, 0)::float8,
                    cl.relpages::float8,
                    coalesce(s.n_tup_ins, 0)::float8, coalesce(s.n_tup_upd, 0)::float8,
                    coalesce(s.n_tup_del, 0)::float8, coalesce(s.n_tup_hot_upd, 0)::float8,
                    coalesce((SELECT sum(st.avg_width) FROM pg_catalog.pg_stats st
                               WHERE st.schemaname = n.nspname AND st.tablename = cl.relname), 0)::float8
               FROM pg_catalog.pg_class cl
               JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
               LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = cl.oid
              WHERE cl.oid = $1",
            None,
            &[Oid::from(relid).into()],
        )?;
        let mut out = None;
        for row in r {
            let inserts = row.get::<f64>(5)?.unwrap_or(0.0);
            let updates = row.get::<f64>(6)?.unwrap_or(0.0);
            let deletes = row.get::<f64>(7)?.unwrap_or(0.0);
            let hot = row.get::<f64>(8)?.unwrap_or(0.0);
            out = Some(TableInfo {
                id: relid,
                schema: row.get::<String>(1)?.unwrap_or_default(),
                name: row.get::<String>(2)?.unwrap_or_default(),
                reltuples: row.get::<f64>(3)?.unwrap_or(0.0),
                relpages: row.get::<f64>(4)?.unwrap_or(0.0),
                avg_row_width: row.get::<f64>(9)?.unwrap_or(0.0) + 24.0,
                inserts,
                updates,
                deletes,
                hot_update_fraction: if updates > 0.0 { (hot / updates).clamp(0.0, 1.0) } else { 0.0 },
                is_append_only: updates + deletes == 0.0 && inserts > 0.0,
                column_stats: Vec::new(),
            });
        }
        let Some(mut t) = out else { return Ok(None) };
        let cols = c.select(
            "SELECT a.attnum, s.correlation::float8, s.n_distinct::float8
               FROM pg_catalog.pg_attribute a
               JOIN pg_catalog.pg_stats s ON s.schemaname = $2 AND s.tablename = $3 AND s.attname = a.attname
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[Oid::from(relid).into(), t.schema.clone().into(), t.name.clone().into()],
        )?;
        for row in cols {
            t.column_stats.push(ColumnStats {
                attnum: row.get::<i16>(1)?.unwrap_or(0),
                correlation: row.get::<f64>(2)?,
                n_distinct: row.get::<f64>(3)?,
                gin_entries_per_row: None,
                gin_distinct_keys: None,
            });
        }
        Ok::<_, pgrx::spi::Error>(Some(t))
    })
    .ok()
    .flatten()
}

/// One row of the existing-index catalog query.
struct IndexRow {
    oid: i64,
    schema: String,
    name: String,
    am: String,
    unique: bool,
    primary: bool,
    constraint: bool,
    size: i64,
    scans: i64,
    nkeys: i16,
    attnums: Vec<i16>,
    options: Vec<i16>,
    predicate: Option<String>,
}

fn existing_indexes(relid: u32, catalog: &mut Catalog) -> Vec<ExistingIndex> {
    let rows: Vec<IndexRow> = Spi::connect(|c| {
            let r = c.select(
                "SELECT i.indexrelid::int8, n.nspname::text, ic.relname::text, am.amname::text,
                        i.indisunique, i.indisprimary,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid),
                        pg_relation_size(i.indexrelid), coalesce(s.idx_scan, 0),
                        i.indnkeyatts, i.indkey::int2[], i.indoption::int2[],
                        pg_get_expr(i.indpred, i.indrelid)
                   FROM pg_catalog.pg_index i
                   JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
                   JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
                   JOIN pg_catalog.pg_am am ON am.oid = ic.relam
                   LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
                  WHERE i.indrelid = $1 AND i.indisvalid",
                None,
                &[Oid::from(relid).into()],
            )?;
            let mut v = Vec::new();
            for row in r {
                v.push(IndexRow {
                    oid: row.get::<i64>(1)?.unwrap_or(0),
                    schema: row.get::<String>(2)?.unwrap_or_default(),
                    name: row.get::<String>(3)?.unwrap_or_default(),
                    am: row.get::<String>(4)?.unwrap_or_default(),
                    unique: row.get::<bool>(5)?.unwrap_or(false),
                    primary: row.get::<bool>(6)?.unwrap_or(false),
                    constraint: row.get::<bool>(7)?.unwrap_or(false),
                    size: row.get::<i64>(8)?.unwrap_or(0),
                    scans: row.get::<i64>(9)?.unwrap_or(0),
                    nkeys: row.get::<i16>(10)?.unwrap_or(0),
                    attnums: row.get::<Vec<i16>>(11)?.unwrap_or_default(),
                    options: row.get::<Vec<i16>>(12)?.unwrap_or_default(),
                    predicate: row.get::<String>(13)?,
                });
            }
            Ok::<_, pgrx::spi::Error>(v)
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for IndexRow {
        oid,
        schema,
        name,
        am,
        unique,
        primary,
        constraint,
        size,
        scans,
        nkeys,
        attnums,
        options,
        predicate: pred,
    } in rows
    {
        let mut keys = Vec::new();
        let mut include = Vec::new();
        for (pos, &attnum) in attnums.iter().enumerate() {
            let target = if attnum > 0 {
                match catalog.column(relid, attnum) {
                    Some(c) => KeyTarget::Column(c),
                    None => continue,
                }
            } else {
                let sql = Spi::get_one_with_args::<String>(
                    "SELECT pg_get_indexdef($1, $2, true)",
                    &[Oid::from(oid as u32).into(), ((pos + 1) as i32).into()],
                )
                .ok()
                .flatten()
                .unwrap_or_default();
                KeyTarget::Expression(ExpressionRef {
                    sql,
                    type_name: "text".into(),
                    typlen: -1,
                    typalign: TypeAlign::Int,
                    avg_width: 0,
                    referenced_attnums: Vec::new(),
                })
            };
            if (pos as i16) < nkeys {
                let opt = options.get(pos).copied().unwrap_or(0);
                keys.push(IndexKey {
                    target,
                    direction: SortDirection {
                        descending: opt & 1 != 0,
                        nulls_first: opt & 2 != 0,
                    },
                    opclass: None,
                });
            } else if let KeyTarget::Column(c) = target {
                include.push(c);
            }
        }
        out.push(ExistingIndex {
            id: oid as u32,
            table: relid,
            schema,
            name,
            method: IndexMethod::from_am_name(&am),
            keys,
            include,
            predicate: pred,
            is_unique: unique,
            is_primary: primary,
            backs_constraint: constraint,
            size_bytes: size.max(0) as u64,
            scans,
        });
    }
    out
}

/// CREATE INDEX for a candidate, CONCURRENTLY except on a partitioned table (where CREATE
/// INDEX refuses CONCURRENTLY).
fn index_ddl(c: &IndexCandidate, table: &TableInfo, name: &str) -> Option<String> {
    let sql = ddl::create_index_sql(c, table, name).ok()?;
    // SAFETY: plain syscache lookup (0 when the table is gone).
    let relkind = unsafe { pg_sys::get_rel_relkind(Oid::from(table.id)) } as u8;
    Some(if relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
        sql.replacen("CREATE INDEX CONCURRENTLY ", "CREATE INDEX ", 1)
    } else {
        sql
    })
}

/// The what-if planner as the selection's cost oracle. It answers each (statement, indexes
/// on the tables that statement reads) once per advice: the selection and the final pruning
/// pass share its cache, so no statement is planned twice under the same configuration.
struct WhatIfOracle<'a> {
    /// Text to plan, and whether it must call only built-in code (another role's).
    texts: &'a HashMap<QueryId, (String, bool)>,
    tables: &'a HashMap<TableId, TableInfo>,
    /// Tables each statement reads.
    touches: HashMap<QueryId, Vec<TableId>>,
    cache: HashMap<(QueryId, Vec<String>), Option<f64>>,
}

impl CostOracle for WhatIfOracle<'_> {
    fn workload_query_cost(&mut self, query: QueryId, config: &[IndexCandidate]) -> Option<f64> {
        let (text, foreign) = self.texts.get(&query)?;
        let touched = self.touches.get(&query);
        let mut relevant: Vec<&IndexCandidate> = config
            .iter()
            .filter(|c| touched.is_none_or(|t| t.contains(&c.table)))
            .collect();
        relevant.sort_by_key(|c| c.signature());
        relevant.dedup_by_key(|c| c.signature());
        let mut defs = Vec::with_capacity(relevant.len());
        for (i, c) in relevant.iter().enumerate() {
            let table = self.tables.get(&c.table)?;
            defs.push(index_ddl(c, table, &format!("perf_candidate_{i}"))?);
        }
        let key = (query, defs);
        if let Some(cost) = self.cache.get(&key) {
            return *cost;
        }
        let cost = in_subtransaction(|| {
            let _session = Session::start(&key.1, &[]);
            whatif::plan_checked(text, *foreign).total_cost
        });
        self.cache.insert(key, cost);
        cost
    }
}

fn shape_of(id: QueryId, calls: f64, planned: &Planned, catalog: &mut Catalog) -> QueryShape {
    let mut by_table: Vec<TableAccess> = Vec::new();
    fn access(by_table: &mut Vec<TableAccess>, relid: u32) -> usize {
        match by_table.iter().position(|t| t.table == relid) {
            Some(i) => i,
            None => {
                by_table.push(TableAccess {
                    table: relid,
                    predicates: Vec::new(),
                    join_columns: Vec::new(),
                    order_by: Vec::new(),
                    group_by: Vec::new(),
                    referenced_columns: None,
                });
                by_table.len() - 1
            }
        }
    }
    for p in &planned.predicates {
        let Some(kind) = PredicateKind::from_u8(p.kind) else {
            continue;
        };
        let Some(target) = catalog.target(p) else {
            continue;
        };
        let i = access(&mut by_table, p.relid);
        match kind {
            PredicateKind::Filter | PredicateKind::IndexCond => {
                if let Some(operator) = catalog.predicate_operator(p, &target) {
                    let selectivity = if p.est_selectivity >= 0.0 {
                        p.est_selectivity as f64
                    } else {
                        0.1
                    };
                    by_table[i].predicates.push(PredicateUse {
                        target,
                        operator,
                        selectivity,
                        rare_constant: None,
                    });
                }
            }
            PredicateKind::Join => {
                if let KeyTarget::Column(c) = target {
                    by_table[i].join_columns.push(c);
                }
            }
            PredicateKind::Sort => by_table[i].order_by.push(SortItem {
                target,
                direction: SortDirection::ASC,
            }),
            PredicateKind::Group => by_table[i].group_by.push(SortItem {
                target,
                direction: SortDirection::ASC,
            }),
        }
    }
    QueryShape {
        query_id: id,
        calls,
        limit: planned.limited.then_some(100),
        tables: by_table,
    }
}

/// Index suggestions for the workload: CREATE INDEX statements chosen together under the
/// storage budget (`perf.advisor_budget_mb`), weighing each index's benefit for every
/// statement against its size and write cost, plus existing indexes worth dropping.
/// `queries`: plan these instead of the statements pg_perf captured in this database.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn suggest_indexes(
    queries: default!(Option<Vec<Option<String>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(action, String),
        name!(table_name, String),
        name!(index_ddl, String),
        name!(estimated_size, i64),
        name!(workload_cost_before, f64),
        name!(workload_cost_after, f64),
        name!(improvement_pct, f64),
        name!(queries_helped, pgrx::JsonB),
        name!(write_overhead, f64),
        name!(reason, String),
    ),
> {
    // SAFETY: the argument moves into the closure, so the frames between pgrx's wrapper and
    // a re-thrown ERROR (a captured statement's parse or plan error) hold nothing to drop.
    unsafe { rethrowing(move || suggest_indexes_impl(queries)) }
}

/// A row of `suggest_indexes` (its SQL signature names the columns).
type SuggestionRow = (
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

fn suggest_indexes_impl(
    queries: Option<Vec<Option<String>>>,
) -> TableIterator<'static, SuggestionRow> {
    let workload_queries: Vec<WorkloadQuery> = match queries {
        // The same text given several times is one statement called several times.
        Some(list) => {
            let mut merged: Vec<WorkloadQuery> = Vec::new();
            for text in whatif::no_nulls(list, "queries", "statement texts") {
                match merged.iter_mut().find(|q| q.text == text) {
                    Some(q) => {
                        q.calls += 1.0;
                        q.rows += 1.0;
                    }
                    None => merged.push(WorkloadQuery {
                        queryid: 0,
                        text,
                        sample: None,
                        calls: 1.0,
                        rows: 1.0,
                        own: true,
                        visible: true,
                    }),
                }
            }
            merged
        }
        None => captured_workload(),
    };
    let mut catalog = Catalog::default();
    let mut texts: HashMap<QueryId, (String, bool)> = HashMap::new();
    let mut shapes = Vec::new();
    let mut relids: Vec<u32> = Vec::new();
    // Rows written per table by the workload's own write statements: the same period as its
    // reads (pg_stat_all_tables would also count bulk loads and anything before).
    let mut writes: HashMap<u32, (f64, f64, f64)> = HashMap::new();
    for (i, q) in workload_queries.iter().enumerate() {
        // An explicit list must plan: its errors are the caller's to see.
        let foreign = !q.own;
        let sample_plan = q.sample.as_ref().and_then(|t| {
            in_subtransaction(|| whatif::plan_checked(t, foreign)).map(|p| (t.clone(), p))
        });
        let (plan_text, planned) = match sample_plan {
            Some((t, p)) => (t, Some(p)),
            None if q.queryid == 0 => (q.text.clone(), Some(whatif::plan(&q.text))),
            None => (
                q.text.clone(),
                in_subtransaction(|| whatif::plan_checked(&q.text, foreign)),
            ),
        };
        if let Some((relid, command)) = write_target_of(&q.text) {
            let w = writes.entry(relid).or_default();
            match command {
                pg_sys::CmdType::CMD_INSERT => w.0 += q.rows,
                pg_sys::CmdType::CMD_UPDATE => w.1 += q.rows,
                _ => w.2 += q.rows,
            }
            if !relids.contains(&relid) {
                relids.push(relid);
            }
        }
        let Some(planned) = planned else { continue };
        let id = i as QueryId;
        let shape = shape_of(id, q.calls, &planned, &mut catalog);
        for t in &shape.tables {
            if !relids.contains(&t.table) {
                relids.push(t.table);
            }
        }
        texts.insert(id, (plan_text, foreign));
        shapes.push(shape);
    }
    let tables: HashMap<TableId, TableInfo> = relids
        .iter()
        .filter_map(|&r| table_info(r).map(|t| (r, t)))
        .map(|(r, mut t)| {
            let (ins, upd, del) = writes.get(&r).copied().unwrap_or_default();
            t.inserts = ins;
            t.updates = upd;
            t.deletes = del;
            t.is_append_only = upd + del == 0.0;
            (r, t)
        })
        .collect();
    let existing: Vec<ExistingIndex> = relids
        .iter()
        .flat_map(|&r| existing_indexes(r, &mut catalog))
        .collect();
    let workload = Workload {
        tables: tables.values().cloned().collect(),
        existing_indexes: existing.clone(),
        queries: shapes,
    };
    let candidates = generate_candidates(&workload);
    pgrx::debug1!(
        "pg_perf advisor: {} statements, {} tables, {} existing indexes, {} candidates: {:?}",
        workload.queries.len(),
        workload.tables.len(),
        workload.existing_indexes.len(),
        candidates.len(),
        candidates
            .iter()
            .map(|c| c.candidate.to_string())
            .collect::<Vec<_>>()
    );
    let settings = SelectionSettings {
        storage_budget_bytes: crate::gucs::advisor_budget_mb().max(1) as u64 * 1024 * 1024,
        ..SelectionSettings::default()
    };
    let mut oracle = WhatIfOracle {
        texts: &texts,
        tables: &tables,
        touches: workload
            .queries
            .iter()
            .map(|q| (q.query_id, q.tables.iter().map(|t| t.table).collect()))
            .collect(),
        cache: HashMap::new(),
    };
    let result = select_indexes(&workload, &candidates, &mut oracle, &settings);
    pgrx::debug1!(
        "pg_perf advisor: baseline {:.1}, final {:.1}, {} chosen, {} oracle calls, unplannable {:?}, shapes {:?}",
        result.baseline_workload_cost,
        result.final_workload_cost,
        result.chosen.len(),
        result.oracle_calls,
        result.unplannable_queries,
        workload.queries
    );

    // Prune, smallest contribution first: an index goes if removing it from the final
    // configuration costs nothing (net of its write overhead: it is redundant, e.g. a BRIN
    // next to a btree on the same column), or if its marginal benefit per byte is under a
    // tenth of the configuration's average (storage spent for little, e.g. a wide index
    // extended for a sliver of the workload). Each check plans the affected statements
    // with and without it.
    let total_saving = (result.baseline_workload_cost - result.final_workload_cost).max(0.0);
    let total_size: f64 = result
        .chosen
        .iter()
        .map(|c| c.size.bytes as f64)
        .sum::<f64>()
        .max(1.0);
    let average_density = total_saving / total_size;
    let mut keep = vec![true; result.chosen.len()];
    let mut order: Vec<usize> = (0..result.chosen.len()).collect();
    order.sort_by(|&a, &b| {
        result.chosen[a]
            .benefit
            .total_cmp(&result.chosen[b].benefit)
    });
    let mut final_cost = result.final_workload_cost;
    for i in order {
        let table = result.chosen[i].candidate.table;
        let config = |without: Option<usize>| -> Vec<IndexCandidate> {
            result
                .chosen
                .iter()
                .enumerate()
                .filter(|(j, _)| keep[*j] && Some(*j) != without)
                .map(|(_, c)| c.candidate.clone())
                .collect()
        };
        let (with, without) = (config(None), config(Some(i)));
        let mut increase = 0.0;
        for q in workload
            .queries
            .iter()
            .filter(|q| q.tables.iter().any(|t| t.table == table))
        {
            let (Some(a), Some(b)) = (
                oracle.workload_query_cost(q.query_id, &with),
                oracle.workload_query_cost(q.query_id, &without),
            ) else {
                increase = f64::INFINITY;
                break;
            };
            increase += q.calls * (b - a);
        }
        let net = increase - result.chosen[i].write_overhead;
        let size = (result.chosen[i].size.bytes as f64).max(8192.0);
        if net <= 0.0 || net / size < 0.1 * average_density {
            keep[i] = false;
            final_cost += increase.max(0.0);
        }
    }

    let queryid_of = |id: QueryId| {
        workload_queries.get(id as usize).map(|q| {
            let text = if q.visible {
                q.text.clone()
            } else {
                HIDDEN.to_string()
            };
            (q.queryid, text)
        })
    };
    let mut rows = Vec::new();
    let mut taken: Vec<String> = existing.iter().map(|e| e.name.clone()).collect();
    for (c, _) in result.chosen.iter().zip(&keep).filter(|(_, k)| **k) {
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
                ddl::quote_ident(&table.schema),
                ddl::quote_ident(&table.name)
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
    for d in find_drop_candidates(&existing) {
        let Ok(sql) = ddl::drop_index_sql(&d.index) else {
            continue;
        };
        let table = tables.get(&d.index.table).map(|t| {
            format!(
                "{}.{}",
                ddl::quote_ident(&t.schema),
                ddl::quote_ident(&t.name)
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
    TableIterator::new(rows)
}
