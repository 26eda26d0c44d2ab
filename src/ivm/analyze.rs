//! Reads an incremental view's query: parse + analyze + rewrite as PostgreSQL does, then
//! checks that the query tree is in the supported class (one plain table, GROUP BY
//! keys all selected, top-level count/sum/avg/min/max, immutable expressions) and renders
//! its expressions back to SQL with `deparse_expression` under `search_path = pg_catalog,
//! pg_temp`, so that every name in the generated SQL is qualified as needed.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::sqlgen::{Agg, AggKind, Col, Key};
use super::{raise, unsupported};
use crate::pg::list;

/// The analysed query, ready for `sqlgen::Spec`.
pub struct Analysis {
    pub source: pg_sys::Oid,
    pub quals: Option<String>,
    pub keys: Vec<Key>,
    pub aggs: Vec<Agg>,
    pub cols: Vec<Col>,
}

/// What the tree walk collects before rendering (nodes live in the current context).
enum Item {
    Key(String, *mut pg_sys::Node),
    Agg(String, AggKind, *mut pg_sys::Aggref, *mut pg_sys::Node),
}

const NUMERIC_ARGS: [pg_sys::Oid; 6] = [
    pg_sys::INT2OID,
    pg_sys::INT4OID,
    pg_sys::INT8OID,
    pg_sys::NUMERICOID,
    pg_sys::FLOAT4OID,
    pg_sys::FLOAT8OID,
];

fn cstr_owned(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated string returned by PostgreSQL, copied at once.
    unsafe { CStr::from_ptr(p).to_string_lossy().into_owned() }
}

/// Sets search_path for the rest of the scope (the way a function's SET clause does).
pub(super) struct PinnedSearchPath(i32);

impl PinnedSearchPath {
    pub(super) fn pin() -> Self {
        // SAFETY: the same calls fmgr_security_definer makes for `SET search_path`; the
        // nest level is popped in Drop (or by the transaction's abort on ERROR).
        unsafe {
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            PinnedSearchPath(level)
        }
    }
}

impl Drop for PinnedSearchPath {
    fn drop(&mut self) {
        // SAFETY: pops the nest level pushed in `pin`.
        unsafe { pg_sys::AtEOXact_GUC(true, self.0) };
    }
}

fn type_sql(typ: pg_sys::Oid, typmod: i32) -> String {
    // SAFETY: catalog lookup; the palloc'd result is copied.
    cstr_owned(unsafe { pg_sys::format_type_with_typemod(typ, typmod) })
}

/// Analyses `query` (as the caller, under the caller's search_path).
pub fn analyze(query: &str) -> Analysis {
    let Ok(c) = CString::new(query) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "the query contains a NUL byte".into(),
            "Remove the NUL byte.",
        )
    };
    // SAFETY: parse/analyze allocate in the current memory context (this function call's),
    // and every node read below lives until the call returns. ERRORs propagate as usual.
    unsafe {
        let raw: Vec<*mut pg_sys::RawStmt> =
            list::ptrs(pg_sys::pg_parse_query(c.as_ptr())).collect();
        if raw.len() != 1
            || (*raw[0]).stmt.is_null()
            || (*(*raw[0]).stmt).type_ != pg_sys::NodeTag::T_SelectStmt
        {
            unsupported("the query must be exactly one SELECT statement");
        }
        let queries: Vec<*mut pg_sys::Query> =
            list::ptrs(pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw[0],
                c.as_ptr(),
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
            ))
            .collect();
        if queries.len() != 1 {
            unsupported("the query must be exactly one SELECT statement");
        }
        check(queries[0])
    }
}

/// # Safety
/// `q` is a valid analysed Query.
unsafe fn check(q: *mut pg_sys::Query) -> Analysis {
    // SAFETY: reading fields of a valid Query tree, per the contract.
    unsafe {
        let q = &*q;
        if q.commandType != pg_sys::CmdType::CMD_SELECT || !q.utilityStmt.is_null() {
            unsupported("the query must be a SELECT");
        }
        if !q.cteList.is_null() {
            unsupported("WITH (common table expressions) is not supported");
        }
        if !q.setOperations.is_null() {
            unsupported("UNION/INTERSECT/EXCEPT is not supported");
        }
        if q.hasWindowFuncs {
            unsupported("window functions are not supported");
        }
        if q.hasSubLinks {
            unsupported("subqueries are not supported");
        }
        if q.hasTargetSRFs {
            unsupported("set-returning functions in the select list are not supported");
        }
        if !q.distinctClause.is_null() || q.hasDistinctOn {
            unsupported("DISTINCT is not supported");
        }
        if !q.havingQual.is_null() {
            unsupported(
                "HAVING is not supported (a group can enter and leave the result as rows change)",
            );
        }
        if !q.sortClause.is_null() {
            unsupported("ORDER BY is not supported (a table has no order: order when you read it)");
        }
        if !q.limitCount.is_null() || !q.limitOffset.is_null() {
            unsupported("LIMIT/OFFSET is not supported");
        }
        if q.hasForUpdate || !q.rowMarks.is_null() {
            unsupported("FOR UPDATE/SHARE is not supported");
        }
        if !q.groupingSets.is_null() {
            unsupported("GROUPING SETS, ROLLUP and CUBE are not supported");
        }
        if !q.hasAggs {
            unsupported("the query has no aggregates: only GROUP BY aggregates are supported");
        }
        if q.groupClause.is_null() {
            unsupported("the query has no GROUP BY (a single-row aggregate is not supported yet)");
        }
        // FROM: exactly one plain table.
        let rtable: Vec<*mut pg_sys::RangeTblEntry> = list::ptrs(q.rtable).collect();
        let from: Vec<*mut pg_sys::Node> = if q.jointree.is_null() {
            Vec::new()
        } else {
            list::ptrs((*q.jointree).fromlist).collect()
        };
        if from.len() != 1 || rtable.len() != 1 {
            unsupported("joins are not supported: the query must read exactly one table");
        }
        if (*from[0]).type_ != pg_sys::NodeTag::T_RangeTblRef {
            unsupported("joins are not supported: the query must read exactly one table");
        }
        let rte = &*rtable[0];
        if rte.rtekind != pg_sys::RTEKind::RTE_RELATION {
            unsupported("the query must read a table (not a view, subquery or function)");
        }
        if !rte.tablesample.is_null() {
            unsupported("TABLESAMPLE is not supported");
        }
        let relid = rte.relid;
        check_source(relid, rte.relkind as u8, rte.inh);
        // Immutable expressions only: a result that depends on time or chance cannot be
        // maintained from changes.
        let quals = (*q.jointree).quals;
        if pg_sys::contain_mutable_functions(q.targetList as *mut pg_sys::Node)
            || (!quals.is_null() && pg_sys::contain_mutable_functions(quals))
        {
            unsupported(
                "the query calls volatile or stable functions (now(), random(), ...): \
                 only immutable expressions can be maintained from changes",
            );
        }
        let group_refs: Vec<u32> = list::ptrs::<pg_sys::SortGroupClause>(q.groupClause)
            .map(|s| (*s).tleSortGroupRef)
            .collect();
        let mut items = Vec::new();
        for tle in list::ptrs::<pg_sys::TargetEntry>(q.targetList) {
            let tle = &*tle;
            let is_key = tle.ressortgroupref != 0 && group_refs.contains(&tle.ressortgroupref);
            if tle.resjunk {
                if is_key {
                    unsupported("every GROUP BY expression must also be in the select list");
                }
                continue;
            }
            let name = cstr_owned(tle.resname);
            let expr = tle.expr as *mut pg_sys::Node;
            if is_key {
                items.push(Item::Key(name, expr));
            } else if !expr.is_null() && (*expr).type_ == pg_sys::NodeTag::T_Aggref {
                let agg = expr as *mut pg_sys::Aggref;
                let (kind, arg) = check_aggregate(&name, agg);
                items.push(Item::Agg(name, kind, agg, arg));
            } else {
                unsupported(&format!(
                    "select list entry \"{name}\" is neither a GROUP BY expression nor a bare \
                     count/sum/avg/min/max aggregate"
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for it in &items {
            let (Item::Key(n, _) | Item::Agg(n, ..)) = it;
            if n.starts_with("__ivm") {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_NAME,
                    format!("column name \"{n}\" is reserved"),
                    "Names starting with __ivm are pg_perf's hidden columns: alias the column.",
                );
            }
            if !seen.insert(n.clone()) {
                raise(
                    PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
                    format!("column \"{n}\" appears twice in the query's select list"),
                    "Give each column its own alias (count(*) AS n, sum(x) AS total).",
                );
            }
        }
        render(relid, quals, items)
    }
}

fn check_source(relid: pg_sys::Oid, relkind: u8, inh: bool) {
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT c.relpersistence::text, c.relrowsecurity, c.relhassubclass \
               FROM pg_catalog.pg_class c WHERE c.oid = $1",
            None,
            &[relid.into()],
        )?;
        let mut out = None;
        for r in t {
            out = Some((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<bool>(2)?.unwrap_or(false),
                r.get::<bool>(3)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .ok()
    .flatten();
    let Some((persistence, rls, children)) = row else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            "the query's table does not exist".into(),
            "",
        )
    };
    if relkind == b'p' || (inh && children) {
        unsupported(
            "partitioned and inherited tables are not supported (writes to a partition or \
             child table bypass the parent's statement triggers)",
        );
    }
    if relkind != b'r' {
        unsupported("the query must read a table (not a view, foreign table or matview)");
    }
    if persistence == "t" {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "the query reads a temporary table".into(),
            "A temporary table vanishes with its session and other sessions cannot read it; \
             use a permanent (or unlogged) table.",
        );
    }
    if rls {
        unsupported(
            "the table has row-level security enabled (the view would show rows its \
             readers may not see)",
        );
    }
}

/// # Safety
/// `agg` is a valid Aggref of the query tree.
unsafe fn check_aggregate(name: &str, agg: *mut pg_sys::Aggref) -> (AggKind, *mut pg_sys::Node) {
    // SAFETY: reading a valid Aggref, per the contract.
    unsafe {
        let a = &*agg;
        if a.agglevelsup != 0 || a.aggkind as u8 != b'n' {
            unsupported(&format!("aggregate \"{name}\" is not a plain aggregate"));
        }
        if !a.aggdistinct.is_null() {
            unsupported(&format!(
                "DISTINCT inside aggregate \"{name}\" is not supported"
            ));
        }
        if !a.aggorder.is_null() {
            unsupported(&format!(
                "ORDER BY inside aggregate \"{name}\" is not supported"
            ));
        }
        if !a.aggfilter.is_null() {
            unsupported(&format!("FILTER on aggregate \"{name}\" is not supported"));
        }
        let fname = cstr_owned(pg_sys::get_func_name(a.aggfnoid));
        let in_catalog = pg_sys::get_func_namespace(a.aggfnoid)
            == pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE);
        let kind = match (in_catalog, fname.as_str(), a.aggstar) {
            (true, "count", true) => AggKind::CountStar,
            (true, "count", false) => AggKind::Count,
            (true, "sum", false) => AggKind::Sum,
            (true, "avg", false) => AggKind::Avg,
            (true, "min", false) => AggKind::Min,
            (true, "max", false) => AggKind::Max,
            _ => unsupported(&format!(
                "aggregate {fname}() (column \"{name}\") is not supported: only count, sum, avg, \
                 min and max"
            )),
        };
        if kind == AggKind::CountStar {
            return (kind, std::ptr::null_mut());
        }
        let args: Vec<*mut pg_sys::TargetEntry> = list::ptrs(a.args).collect();
        if args.len() != 1 {
            unsupported(&format!("aggregate \"{name}\" must take one argument"));
        }
        let arg = (*args[0]).expr as *mut pg_sys::Node;
        let typ = pg_sys::exprType(arg);
        let ok = match kind {
            AggKind::Sum => {
                NUMERIC_ARGS.contains(&typ) || typ == pg_sys::INTERVALOID || typ == pg_sys::MONEYOID
            }
            AggKind::Avg => NUMERIC_ARGS.contains(&typ),
            _ => true,
        };
        if !ok {
            unsupported(&format!(
                "{fname}() of type {} (column \"{name}\") is not supported",
                type_sql(typ, -1)
            ));
        }
        (kind, arg)
    }
}

/// Renders the collected expressions as SQL under a pinned search_path.
///
/// # Safety
/// The nodes are valid parts of the analysed query over `relid`.
unsafe fn render(relid: pg_sys::Oid, quals: *mut pg_sys::Node, items: Vec<Item>) -> Analysis {
    let _pin = PinnedSearchPath::pin();
    // SAFETY: deparse_context_for builds a one-relation namespace for Vars with varno 1;
    // deparse_expression returns palloc'd text, copied at once.
    unsafe {
        let relname = pg_sys::get_rel_name(relid);
        let ctx = pg_sys::deparse_context_for(relname, relid);
        let deparse =
            |n: *mut pg_sys::Node| cstr_owned(pg_sys::deparse_expression(n, ctx, false, false));
        let mut out = Analysis {
            source: relid,
            quals: (!quals.is_null()).then(|| deparse(quals)),
            keys: Vec::new(),
            aggs: Vec::new(),
            cols: Vec::new(),
        };
        for it in items {
            match it {
                Item::Key(name, expr) => {
                    let not_null = if (*expr).type_ == pg_sys::NodeTag::T_Var {
                        let v = &*(expr as *mut pg_sys::Var);
                        v.varattno > 0
                            && Spi::get_one_with_args::<bool>(
                                "SELECT attnotnull FROM pg_catalog.pg_attribute \
                                  WHERE attrelid = $1 AND attnum = $2",
                                &[relid.into(), v.varattno.into()],
                            )
                            .ok()
                            .flatten()
                            .unwrap_or(false)
                    } else {
                        false
                    };
                    out.cols.push(Col::Key(out.keys.len()));
                    out.keys.push(Key {
                        name,
                        expr: deparse(expr),
                        typ: type_sql(pg_sys::exprType(expr), pg_sys::exprTypmod(expr)),
                        not_null,
                    });
                }
                Item::Agg(name, kind, agg, arg) => {
                    let typ = type_sql((*agg).aggtype, -1);
                    let sum_typ = match kind {
                        AggKind::Sum => typ.clone(),
                        AggKind::Avg => {
                            let t = pg_sys::exprType(arg);
                            if t == pg_sys::FLOAT4OID || t == pg_sys::FLOAT8OID {
                                "double precision".into()
                            } else {
                                "numeric".into()
                            }
                        }
                        _ => String::new(),
                    };
                    out.cols.push(Col::Agg(out.aggs.len()));
                    out.aggs.push(Agg {
                        name,
                        kind,
                        arg: if arg.is_null() {
                            String::new()
                        } else {
                            deparse(arg)
                        },
                        typ,
                        sum_typ,
                    });
                }
            }
        }
        out
    }
}
