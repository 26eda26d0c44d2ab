//! Catalog facts the advisor's model needs about the workload's tables, columns, operators
//! and existing indexes (through SPI and the syscache), cached per advice.

use std::collections::HashMap;

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;

use super::model::*;
use crate::pg::quote::quote_identifier;
use crate::stats::PredicateRec;

/// Catalog facts about the tables, columns and operators the workload uses, cached.
#[derive(Default)]
pub(super) struct Catalog {
    columns: HashMap<(u32, i16), Option<ColumnRef>>,
    operators: HashMap<u32, Option<(String, i32, bool)>>,
}

fn spi_err(e: pgrx::spi::Error) -> String {
    e.to_string()
}

impl Catalog {
    pub(super) fn column(&mut self, relid: u32, attnum: i16) -> Option<ColumnRef> {
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
    pub(super) fn operator(&mut self, opno: u32) -> Option<(String, i32, bool)> {
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

    pub(super) fn target(&mut self, p: &PredicateRec) -> Option<KeyTarget> {
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
                quote_identifier(&name)
            } else {
                format!("{}.{}", quote_identifier(&nsp), quote_identifier(&name))
            };
            (name, pg_sys::get_func_rettype(func))
        };
        let type_name =
            Spi::get_one_with_args::<String>("SELECT format_type($1, NULL)", &[rettype.into()])
                .ok()
                .flatten()
                .unwrap_or_else(|| "text".into());
        Some(KeyTarget::Expression(ExpressionRef {
            sql: format!("{name}({})", quote_identifier(&col.name)),
            type_name,
            typlen: col.typlen,
            typalign: col.typalign,
            avg_width: col.avg_width,
            referenced_attnums: vec![col.attnum],
        }))
    }

    pub(super) fn predicate_operator(
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

pub(super) fn table_info(relid: u32) -> Option<TableInfo> {
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

pub(super) fn existing_indexes(relid: u32, catalog: &mut Catalog) -> Vec<ExistingIndex> {
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

/// The workload's tables with their statistics, the write counts replaced by the rows the
/// workload's own write statements wrote (`writes`: inserted, updated, deleted per table).
pub(super) fn tables_of(
    relids: &[u32],
    writes: &HashMap<u32, (f64, f64, f64)>,
) -> HashMap<TableId, TableInfo> {
    relids
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
        .collect()
}
