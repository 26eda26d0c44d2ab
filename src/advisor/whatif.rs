//! What-if planning: hypothetical indexes injected through `get_relation_info_hook`.
//!
//! A what-if session lives inside one SQL function call: `Session::start` registers the
//! hypothetical indexes (and existing indexes to hide), planning sees them, and the session
//! guard removes them when dropped — also when an ERROR unwinds — and the transaction abort
//! callback clears them again as a second line of defence. Outside a session the hook only
//! chains to the previous hook: hypothetical indexes never leak into normal planning.
//!
//! Invariants:
//! - Hypothetical index definitions are real `CREATE INDEX` statements, parsed and analyzed
//!   by PostgreSQL itself (expressions, predicates, opclasses, collations), so what is
//!   evaluated is exactly what would be built. They are refused wherever CREATE INDEX
//!   would refuse them (same SQLSTATE and message), and unless the caller may SELECT from
//!   the table.
//! - Only plain SELECT/INSERT/UPDATE/DELETE are planned: a statement that is, or is
//!   rewritten into, a utility statement or nothing at all is refused before the planner.
//! - User-defined functions are never executed; see `guard` for the rules.
//! - Each gets a fake OID checked to be unused; EXPLAIN names it through
//!   `explain_get_index_name_hook`, and plans are only ever EXPLAIN-ed, never executed
//!   (ExecInitIndexScan stops before opening the index under EXEC_FLAG_EXPLAIN_ONLY).
//! - All node memory lives in the calling function's memory context, which outlives the
//!   session.

#![allow(ffi_unwind_calls)]

use std::ffi::{CStr, CString};

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use super::guard;
use super::model::{AttrWidth, TypeAlign};
use super::size;
use crate::error::PerfError;
use crate::pg::backend_local::BackendLocal;
use crate::pg::raw;
use crate::pg::try_catch::{rethrowing, try_capture_query};

/// One key or INCLUDE column of a hypothetical index.
#[derive(Clone, Copy)]
struct HypoColumn {
    /// Table column, or 0 for an expression.
    attnum: i16,
    /// Analyzed expression with Vars of varno 1 (null for a plain column).
    expr: *mut pg_sys::Node,
    typ: Oid,
    typmod: i32,
    collation: Oid,
    opfamily: Oid,
    opcintype: Oid,
    desc: bool,
    nulls_first: bool,
    width: AttrWidth,
}

/// A hypothetical index, as parsed from its CREATE INDEX statement.
struct HypoIndex {
    oid: Oid,
    name: CString,
    relid: Oid,
    amoid: Oid,
    keys: Vec<HypoColumn>,
    include: Vec<HypoColumn>,
    /// Analyzed WHERE clause (varno 1), or null.
    predicate: *mut pg_sys::Node,
    /// Fraction of the table's rows the predicate keeps (1 for a full index), estimated by
    /// the planner when the session starts (the hook runs too early to ask it).
    predicate_selectivity: f64,
    unique: bool,
    /// Per key column (position - 1): a temporary table holding an ANALYZEd sample of that
    /// expression's values in its column 1, whose statistics stand in for those a real
    /// expression index would get; InvalidOid for plain columns.
    expr_stats: Vec<Oid>,
    /// Distinct key combinations in the table (from column statistics), when btree
    /// deduplication applies to this index; None otherwise.
    distinct_keys: Option<f64>,
}

struct SessionState {
    indexes: Vec<HypoIndex>,
    hidden: Vec<Oid>,
}

static SESSION: BackendLocal<Option<SessionState>> = BackendLocal::new(None);

#[allow(clippy::mut_from_ref)]
fn session() -> &'static mut Option<SessionState> {
    // SAFETY: single-threaded backend; borrows are short and never overlap.
    unsafe { SESSION.get() }
}

/// Numbers the expression-sample tables of this backend.
static mut SAMPLE_TABLES: u64 = 0;

/// Expression samples made in this transaction, by (table, deparsed expression): the
/// advisor asks about the same expression in thousands of configurations, and sampling it
/// once is enough. Cleared when the transaction or a subtransaction ends with an abort (a
/// rolled-back subtransaction drops the tables it created) and at commit (ON COMMIT DROP).
static SAMPLES: BackendLocal<Option<std::collections::HashMap<(u32, String), Oid>>> =
    BackendLocal::new(None);

#[allow(clippy::mut_from_ref)]
fn samples() -> &'static mut std::collections::HashMap<(u32, String), Oid> {
    // SAFETY: single-threaded backend; borrows are short and never overlap.
    unsafe { SAMPLES.get().get_or_insert_with(Default::default) }
}

/// Transaction events (called from `crate::xact`).
pub(crate) fn on_xact_event(event: pg_sys::XactEvent::Type) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        *session() = None;
    }
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        // SAFETY: backend-local; no borrow is live inside a transaction callback.
        unsafe { *SAMPLES.get() = None };
    }
}

/// Subtransaction events (called from `crate::xact`).
pub(crate) fn on_subxact_event(event: pg_sys::SubXactEvent::Type) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // SAFETY: backend-local; no borrow is live inside a transaction callback.
        unsafe { *SAMPLES.get() = None };
    }
}

/// An active what-if session; ends (hypothetical indexes gone) when dropped.
pub struct Session(());

impl Session {
    /// Parses `indexes` (CREATE INDEX statements) and `hide` (names of existing indexes) and
    /// makes the planner see the former and not the latter until the session is dropped.
    pub fn start(indexes: &[String], hide: &[String]) -> Session {
        let mut state = SessionState {
            indexes: Vec::new(),
            hidden: Vec::new(),
        };
        let mut next_oid = 4_000_000_000u32;
        for def in indexes {
            // SAFETY: plain catalog lookup.
            while unsafe { pg_sys::get_rel_relkind(Oid::from(next_oid)) } != 0 {
                next_oid -= 1;
            }
            state.indexes.push(parse_index(def, Oid::from(next_oid)));
            next_oid -= 1;
        }
        for name in hide {
            state.hidden.push(resolve_index(name));
        }
        for h in state.indexes.iter_mut() {
            sample_expression_stats(h);
            h.distinct_keys = distinct_keys(h, reltuples_of(h.relid));
        }
        *session() = Some(state);
        Session(())
    }

    /// Names of the hypothetical indexes among `oids`.
    pub fn names_of(&self, oids: &[Oid]) -> Vec<String> {
        let Some(s) = session() else {
            return Vec::new();
        };
        s.indexes
            .iter()
            .filter(|h| oids.contains(&h.oid))
            .map(|h| h.name.to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        *session() = None;
    }
}

/// Gives an expression index the statistics ANALYZE would collect for it: a sample of the
/// expression values goes into a temporary table (dropped at commit), which is ANALYZEd.
/// Only expressions made of built-in functions, operators and types are sampled, as the
/// calling role under SECURITY_RESTRICTED_OPERATION, with errors swallowed (see
/// `guard`); any other expression keeps the planner's default estimates.
fn sample_expression_stats(h: &mut HypoIndex) {
    let exprs: Vec<(usize, *mut pg_sys::Node)> = h
        .keys
        .iter()
        .enumerate()
        .filter(|(_, c)| c.attnum == 0 && !c.expr.is_null())
        .filter(|(_, c)| {
            // SAFETY: walking an analyzed expression of this index.
            unsafe { !guard::calls_user_code(c.expr, true) }
        })
        .map(|(i, c)| (i, c.expr))
        .collect();
    h.expr_stats = vec![Oid::INVALID; h.keys.len()];
    if exprs.is_empty() {
        return;
    }
    let qualified = qualified_rel_name(h.relid);
    let rname = CString::new(rel_name(h.relid)).unwrap_or_default();
    // SAFETY: deparsing analyzed expressions of this table.
    let texts: Vec<String> = unsafe {
        let ctx = pg_sys::deparse_context_for(rname.as_ptr(), h.relid);
        exprs
            .iter()
            .map(|(_, e)| {
                CStr::from_ptr(pg_sys::deparse_expression(*e, ctx, false, false))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let reltuples = reltuples_of(h.relid);
    // ANALYZE's own sample is 30000 rows (default statistics target): sample about that.
    let pct = if reltuples > 30_000.0 {
        (30_000.0 / reltuples * 150.0).clamp(0.01, 100.0)
    } else {
        100.0
    };
    for ((i, _), text) in exprs.iter().zip(&texts) {
        let cache_key = (h.relid.to_u32(), text.clone());
        if let Some(&oid) = samples().get(&cache_key) {
            h.expr_stats[*i] = oid;
            continue;
        }
        // SAFETY: a backend-local counter.
        let n = unsafe {
            SAMPLE_TABLES += 1;
            SAMPLE_TABLES
        };
        let name = format!("pg_perf_whatif_{}_{n}", std::process::id());
        // The empty table is created first (a security-restricted operation may not create
        // temporary tables); the expression is evaluated only inside `restricted`.
        let sampled = guard::in_subtransaction(|| {
            Spi::run(&format!(
                "CREATE TEMP TABLE {name} ON COMMIT DROP AS \
                 SELECT {text} AS e1 FROM ONLY {qualified} WITH NO DATA"
            ))
            .ok()?;
            guard::restricted(|| {
                Spi::run(&format!(
                    "INSERT INTO pg_temp.{name} \
                     SELECT {text} FROM ONLY {qualified} TABLESAMPLE SYSTEM ({pct})"
                ))
                .ok()?;
                Spi::run(&format!("ANALYZE pg_temp.{name}")).ok()
            })??;
            Spi::get_one::<Oid>(&format!("SELECT 'pg_temp.{name}'::regclass::oid"))
                .ok()
                .flatten()
        })
        .flatten();
        if let Some(oid) = sampled {
            samples().insert(cache_key, oid);
            h.expr_stats[*i] = oid;
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn release_stats_tuple(tuple: pg_sys::HeapTuple) {
    // SAFETY: the tuple came from SearchSysCache3 in get_index_stats.
    unsafe { pg_sys::ReleaseSysCache(tuple) };
}

/// Statistics of a hypothetical expression index's columns: those of its sample table.
#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn get_index_stats(
    root: *mut pg_sys::PlannerInfo,
    index_oid: Oid,
    attnum: pg_sys::AttrNumber,
    vardata: *mut pg_sys::VariableStatData,
) -> bool {
    if let Some(state) = session() {
        if let Some(h) = state.indexes.iter().find(|h| h.oid == index_oid) {
            let sample = h
                .expr_stats
                .get((attnum as usize).wrapping_sub(1))
                .copied()
                .unwrap_or(Oid::INVALID);
            if sample != Oid::INVALID {
                // SAFETY: syscache lookup of pg_statistic for the sample table's column.
                unsafe {
                    let tuple = pg_sys::SearchSysCache3(
                        pg_sys::SysCacheIdentifier::STATRELATTINH as i32,
                        pg_sys::Datum::from(sample),
                        pg_sys::Datum::from(1i16),
                        pg_sys::Datum::from(false),
                    );
                    if !tuple.is_null() {
                        (*vardata).statsTuple = tuple;
                        (*vardata).freefunc = Some(release_stats_tuple);
                        (*vardata).acl_ok = true;
                    }
                }
            }
            return true;
        }
    }
    // SAFETY: chaining to the previous hook.
    unsafe {
        match crate::pg::hooks::prev_get_index_stats() {
            Some(prev) => prev(root, index_oid, attnum, vardata),
            None => false,
        }
    }
}

/// pg_statistic.stadistinct of a table column, read through the syscache as the planner
/// does (pg_statistic itself is readable by superusers only).
fn stadistinct(relid: Oid, attnum: i16) -> Option<f32> {
    // SAFETY: syscache lookup, released before returning.
    unsafe {
        let tuple = pg_sys::SearchSysCache3(
            pg_sys::SysCacheIdentifier::STATRELATTINH as i32,
            pg_sys::Datum::from(relid),
            pg_sys::Datum::from(attnum),
            pg_sys::Datum::from(false),
        );
        if tuple.is_null() {
            return None;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_statistic>(tuple);
        let nd = (*form).stadistinct;
        pg_sys::ReleaseSysCache(tuple);
        Some(nd)
    }
}

/// Distinct key combinations of a btree index, from the columns' statistics, when btree
/// deduplication applies (plain key columns of types whose equality is bitwise, no INCLUDE).
fn distinct_keys(h: &HypoIndex, reltuples: f64) -> Option<f64> {
    if h.amoid != pg_sys::BTREE_AM_OID || !h.include.is_empty() || reltuples <= 0.0 {
        return None;
    }
    let no_dedup = [
        pg_sys::NUMERICOID,
        pg_sys::FLOAT4OID,
        pg_sys::FLOAT8OID,
        pg_sys::JSONBOID,
    ];
    let mut product = 1.0f64;
    for c in &h.keys {
        if c.attnum <= 0 || no_dedup.contains(&c.typ) {
            return None;
        }
        let nd = stadistinct(h.relid, c.attnum)? as f64;
        let distinct = if nd < 0.0 { -nd * reltuples } else { nd };
        product *= distinct.max(1.0);
    }
    Some(product.min(reltuples))
}

fn bad_index(detail: String) -> ! {
    PerfError::InvalidQuery {
        detail,
        hint: "Give each hypothetical index as a CREATE INDEX statement, e.g. \
               'CREATE INDEX ON orders (customer_id, created_at DESC) WHERE status = ''open'''."
            .into(),
    }
    .raise()
}

fn resolve_index(name: &str) -> Oid {
    let oid = Spi::get_one_with_args::<Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'i'",
        &[name.into()],
    )
    .ok()
    .flatten();
    oid.unwrap_or_else(|| {
        PerfError::InvalidArgument {
            what: format!("index \"{name}\" does not exist"),
            hint: "hide takes names of existing indexes (schema-qualified if needed).".into(),
        }
        .raise()
    })
}

/// An identifier quoted the way PostgreSQL's quote_identifier does.
fn quote_identifier(ident: &str) -> String {
    let Ok(c) = CString::new(ident) else {
        return format!("\"{}\"", ident.replace('"', "\"\""));
    };
    // SAFETY: quote_identifier returns its argument or a palloc'd quoted copy.
    unsafe {
        CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr()))
            .to_string_lossy()
            .into_owned()
    }
}

fn width_of(typ: Oid, avg: i32) -> AttrWidth {
    let mut typlen: i16 = 0;
    let mut byval = false;
    let mut align: std::ffi::c_char = b'i' as _;
    // SAFETY: plain catalog lookup.
    unsafe { pg_sys::get_typlenbyvalalign(typ, &mut typlen, &mut byval, &mut align) };
    let avg = if avg > 0 {
        avg
    } else {
        // SAFETY: plain catalog lookup.
        unsafe { pg_sys::get_typavgwidth(typ, -1) }
    };
    AttrWidth {
        avg_bytes: avg.max(1) as u32,
        typlen,
        align: TypeAlign::from_pg_code(align as u8 as char),
    }
}

extern "C-unwind" {
    /// parser/parse_utilcmd.h (not in pgrx's bindings): analyzes an IndexStmt's expressions
    /// and predicate against the table, as CREATE INDEX does.
    fn transformIndexStmt(
        relid: Oid,
        stmt: *mut pg_sys::IndexStmt,
        query_string: *const std::ffi::c_char,
    ) -> *mut pg_sys::IndexStmt;
}

/// An ERROR with PostgreSQL's own SQLSTATE and message (CREATE INDEX's refusals).
fn pg_error(code: PgSqlErrorCode, message: String, detail: Option<String>) -> ! {
    let mut report = ErrorReport::new(code, message, "pg_perf");
    if let Some(d) = detail {
        report = report.set_detail(d);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// CREATE INDEX's errdetail_relkind_not_supported text.
fn relkind_detail(relkind: u8) -> String {
    let what = match relkind {
        pg_sys::RELKIND_VIEW => "views",
        pg_sys::RELKIND_SEQUENCE => "sequences",
        pg_sys::RELKIND_FOREIGN_TABLE => "foreign tables",
        pg_sys::RELKIND_INDEX => "indexes",
        pg_sys::RELKIND_PARTITIONED_INDEX => "partitioned indexes",
        pg_sys::RELKIND_COMPOSITE_TYPE => "composite types",
        pg_sys::RELKIND_TOASTVALUE => "TOAST tables",
        _ => "this relation",
    };
    format!("This operation is not supported for {what}.")
}

/// The name of a relation, or an ERROR when it no longer exists (dropped concurrently).
fn rel_name(relid: Oid) -> String {
    // SAFETY: syscache lookup; a NULL result is handled.
    unsafe {
        let n = pg_sys::get_rel_name(relid);
        if n.is_null() {
            pg_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", relid.to_u32()),
                None,
            );
        }
        CStr::from_ptr(n).to_string_lossy().into_owned()
    }
}

/// `schema.table`, quoted, for SQL text; an ERROR when the relation is gone.
fn qualified_rel_name(relid: Oid) -> String {
    let table = rel_name(relid);
    // SAFETY: syscache lookups; a NULL result is handled.
    let nsp = unsafe {
        let n = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if n.is_null() {
            pg_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation \"{table}\" has no schema any more"),
                None,
            );
        }
        CStr::from_ptr(n).to_string_lossy().into_owned()
    };
    format!("{}.{}", quote_identifier(&nsp), quote_identifier(&table))
}

unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a pointer list of `length` elements.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value as *mut T)
            .collect()
    }
}

/// Parses one CREATE INDEX statement into a hypothetical index. It is refused exactly where
/// CREATE INDEX (DefineIndex, ComputeIndexAttrs, CheckPredicate, index_create in PG 15)
/// would refuse it, with the same SQLSTATEs and messages, and also when the caller may not
/// SELECT from the table (a hypothetical index needs no ownership, but must not reveal
/// anything about a table the caller cannot read). IF NOT EXISTS and ONLY are ignored.
/// Operator class options are refused: they can only be validated against a built index.
fn parse_index(def: &str, oid: Oid) -> HypoIndex {
    let Ok(text) = CString::new(def) else {
        bad_index("the index definition contains a NUL byte".into())
    };
    // SAFETY: parser and catalog calls in the current memory context; every node pointer is
    // produced by PostgreSQL and checked for its tag or NULL before use.
    unsafe {
        let raw = pg_sys::pg_parse_query(text.as_ptr());
        if raw.is_null() || (*raw).length != 1 {
            bad_index(format!("\"{def}\" is not a single CREATE INDEX statement"));
        }
        let stmt = (*(*(*raw).elements).ptr_value.cast::<pg_sys::RawStmt>()).stmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_IndexStmt {
            bad_index(format!("\"{def}\" is not a CREATE INDEX statement"));
        }
        let istmt = stmt as *mut pg_sys::IndexStmt;
        let key_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexParams);
        let include_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexIncludingParams);
        if key_elems.is_empty() {
            pg_error(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                "must specify at least one column".into(),
                None,
            );
        }
        if key_elems.len() + include_elems.len() > pg_sys::INDEX_MAX_KEYS as usize {
            pg_error(
                PgSqlErrorCode::ERRCODE_TOO_MANY_COLUMNS,
                format!(
                    "cannot use more than {} columns in an index",
                    pg_sys::INDEX_MAX_KEYS
                ),
                None,
            );
        }
        let rel = pg_sys::table_openrv((*istmt).relation, pg_sys::AccessShareLock as i32);
        let relid = (*rel).rd_id;
        let relkind = (*(*rel).rd_rel).relkind as u8;
        let table = rel_name(relid);
        // Nothing about a table the caller cannot read.
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            let name = CString::new(table.clone()).unwrap_or_default();
            pg_sys::aclcheck_error(
                pg_sys::AclResult::ACLCHECK_NO_PRIV,
                pg_sys::get_relkind_objtype(relkind as std::ffi::c_char),
                name.as_ptr(),
            );
        }
        if !matches!(
            relkind,
            pg_sys::RELKIND_RELATION | pg_sys::RELKIND_MATVIEW | pg_sys::RELKIND_PARTITIONED_TABLE
        ) {
            pg_error(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("cannot create index on relation \"{table}\""),
                Some(relkind_detail(relkind)),
            );
        }
        if relkind == pg_sys::RELKIND_PARTITIONED_TABLE && (*istmt).concurrent {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("cannot create index on partitioned table \"{table}\" concurrently"),
                None,
            );
        }
        if (*(*rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP
            && !(*rel).rd_islocaltemp
        {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot create indexes on temporary tables of other sessions".into(),
                None,
            );
        }
        if pg_sys::IsSystemRelation(rel) && !pg_sys::allowSystemTableMods {
            pg_error(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied: \"{table}\" is a system catalog"),
                None,
            );
        }
        if !(*istmt).tableSpace.is_null() {
            pg_sys::get_tablespace_oid((*istmt).tableSpace, false);
        }
        let am_name: *const std::ffi::c_char = if (*istmt).accessMethod.is_null() {
            c"btree".as_ptr()
        } else {
            (*istmt).accessMethod as *const _
        };
        let am_text = CStr::from_ptr(am_name).to_string_lossy().into_owned();
        // get_index_am_oid refuses table access methods (42809) where DefineIndex would fail
        // with an internal error.
        let amoid = pg_sys::get_index_am_oid(am_name, false);
        let amroutine = pg_sys::GetIndexAmRoutineByAmId(amoid, false);
        let am_refuses = |what: &str| -> ! {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("access method \"{am_text}\" does not support {what}"),
                None,
            )
        };
        if (*istmt).unique && !(*amroutine).amcanunique {
            am_refuses("unique indexes");
        }
        if !include_elems.is_empty() && !(*amroutine).amcaninclude {
            am_refuses("included columns");
        }
        if key_elems.len() > 1 && !(*amroutine).amcanmulticol {
            am_refuses("multicolumn indexes");
        }
        if !(*istmt).excludeOpNames.is_null() {
            bad_index("hypothetical indexes cannot be exclusion constraints".into());
        }
        // Storage parameters: validated by the access method, as CREATE INDEX does.
        let reloptions = pg_sys::transformRelOptions(
            pg_sys::Datum::from(0usize),
            (*istmt).options,
            std::ptr::null(),
            std::ptr::null_mut(),
            false,
            false,
        );
        pg_sys::index_reloptions((*amroutine).amoptions, reloptions, true);

        // Expressions and predicate, analyzed against the table (varno 1).
        let istmt = pg_guard_ffi_boundary(|| transformIndexStmt(relid, istmt, text.as_ptr()));
        let key_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexParams);
        let include_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexIncludingParams);
        let predicate = (*istmt).whereClause;
        if !predicate.is_null() && guard::is_mutable(predicate) {
            pg_error(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                "functions in index predicate must be marked IMMUTABLE".into(),
                None,
            );
        }

        let column = |elem: *mut pg_sys::IndexElem, key: bool| -> HypoColumn {
            let (mut attnum, mut expr) = (0i16, std::ptr::null_mut::<pg_sys::Node>());
            if !(*elem).name.is_null() {
                attnum = pg_sys::get_attnum(relid, (*elem).name);
                if attnum == 0 {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                        format!(
                            "column \"{}\" does not exist",
                            CStr::from_ptr((*elem).name).to_string_lossy()
                        ),
                        None,
                    );
                }
            } else {
                let e = (*elem).expr;
                if !e.is_null()
                    && (*e).type_ == pg_sys::NodeTag::T_Var
                    && (*(e as *mut pg_sys::Var)).varattno != 0
                {
                    // A parenthesized plain column is a plain column.
                    attnum = (*(e as *mut pg_sys::Var)).varattno;
                } else {
                    if !key {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                            "expressions are not supported in included columns".into(),
                            None,
                        );
                    }
                    if e.is_null() || guard::is_mutable(e) {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                            "functions in index expression must be marked IMMUTABLE".into(),
                            None,
                        );
                    }
                    expr = e;
                }
            }
            let (typ, typmod, mut collation) = if expr.is_null() {
                let (mut t, mut m, mut c) = (Oid::INVALID, 0i32, Oid::INVALID);
                if attnum > 0 {
                    pg_sys::get_atttypetypmodcoll(relid, attnum, &mut t, &mut m, &mut c);
                } else {
                    // A system column: refused below, once every column has been checked.
                    t = pg_sys::INT4OID;
                }
                (t, m, c)
            } else {
                (
                    pg_sys::exprType(expr),
                    pg_sys::exprTypmod(expr),
                    pg_sys::exprCollation(expr),
                )
            };
            let has = |l: *mut pg_sys::List| !l.is_null() && (*l).length > 0;
            if !key {
                let refuse = |what: &str| -> ! {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                        format!("including column does not support {what}"),
                        None,
                    )
                };
                if has((*elem).collation) {
                    refuse("a collation");
                }
                if has((*elem).opclass) {
                    refuse("an operator class");
                }
                if (*elem).ordering != pg_sys::SortByDir::SORTBY_DEFAULT {
                    refuse("ASC/DESC options");
                }
                if (*elem).nulls_ordering != pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT {
                    refuse("NULLS FIRST/LAST options");
                }
            }
            if key {
                if has((*elem).collation) {
                    collation = pg_sys::get_collation_oid((*elem).collation, false);
                }
                if attnum >= 0 {
                    if pg_sys::type_is_collatable(typ) {
                        if collation == Oid::INVALID {
                            ErrorReport::new(
                                PgSqlErrorCode::ERRCODE_INDETERMINATE_COLLATION,
                                "could not determine which collation to use for index expression",
                                "pg_perf",
                            )
                            .set_hint("Use the COLLATE clause to set the collation explicitly.")
                            .report(PgLogLevel::ERROR);
                        }
                    } else if collation != Oid::INVALID {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                            format!(
                                "collations are not supported by type {}",
                                CStr::from_ptr(pg_sys::format_type_be(typ)).to_string_lossy()
                            ),
                            None,
                        );
                    }
                }
            } else {
                collation = Oid::INVALID;
            }
            // Operator class: ResolveOpClass refuses a missing default with PostgreSQL's
            // message and hint.
            let opclass = if key && attnum >= 0 {
                pg_sys::ResolveOpClass((*elem).opclass, typ, am_name, amoid)
            } else {
                Oid::INVALID
            };
            if key && has((*elem).opclassopts) {
                bad_index(
                    "operator class options are not supported by hypothetical indexes".into(),
                );
            }
            if key && !(*amroutine).amcanorder {
                if (*elem).ordering != pg_sys::SortByDir::SORTBY_DEFAULT {
                    am_refuses("ASC/DESC options");
                }
                if (*elem).nulls_ordering != pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT {
                    am_refuses("NULLS FIRST/LAST options");
                }
            }
            let avg = if attnum > 0 {
                pg_sys::get_attavgwidth(relid, attnum)
            } else {
                0
            };
            let desc = (*elem).ordering == pg_sys::SortByDir::SORTBY_DESC;
            let nulls_first = match (*elem).nulls_ordering {
                pg_sys::SortByNulls::SORTBY_NULLS_FIRST => true,
                pg_sys::SortByNulls::SORTBY_NULLS_LAST => false,
                _ => desc,
            };
            HypoColumn {
                attnum,
                expr,
                typ,
                typmod,
                collation,
                opfamily: if opclass != Oid::INVALID {
                    pg_sys::get_opclass_family(opclass)
                } else {
                    Oid::INVALID
                },
                opcintype: if opclass != Oid::INVALID {
                    pg_sys::get_opclass_input_type(opclass)
                } else {
                    Oid::INVALID
                },
                desc,
                nulls_first,
                width: width_of(typ, avg),
            }
        };
        let keys: Vec<HypoColumn> = key_elems.iter().map(|&e| column(e, true)).collect();
        let include: Vec<HypoColumn> = include_elems.iter().map(|&e| column(e, false)).collect();

        // A unique index on a partitioned table must contain the partition key (DefineIndex).
        if (*istmt).unique && relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
            let partattrs = Spi::get_one_with_args::<Vec<i16>>(
                "SELECT partattrs::int2[] FROM pg_catalog.pg_partitioned_table WHERE partrelid = $1",
                &[relid.into()],
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            for a in partattrs {
                if a == 0 {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        "unsupported UNIQUE constraint with partition key definition".into(),
                        Some(
                            "UNIQUE constraints cannot be used when partition keys include \
                             expressions."
                                .into(),
                        ),
                    );
                }
                if !keys.iter().any(|c| c.attnum == a) {
                    let col = pg_sys::get_attname(relid, a, true);
                    let col = if col.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(col).to_string_lossy().into_owned()
                    };
                    pg_error(
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        "unique constraint on partitioned table must include all partitioning \
                         columns"
                            .into(),
                        Some(format!(
                            "UNIQUE constraint on table \"{table}\" lacks column \"{col}\" which \
                             is part of the partition key."
                        )),
                    );
                }
            }
        }

        // System columns, also inside expressions and the predicate (DefineIndex).
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        for c in keys.iter().chain(&include) {
            if c.attnum < 0 {
                attrs = pg_sys::bms_add_member(
                    attrs,
                    c.attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                );
            }
            if !c.expr.is_null() {
                pg_sys::pull_varattnos(c.expr, 1, &mut attrs);
            }
        }
        if !predicate.is_null() {
            pg_sys::pull_varattnos(predicate, 1, &mut attrs);
        }
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(attrs, member);
            if member < 0 {
                break;
            }
            if member + pg_sys::FirstLowInvalidHeapAttributeNumber < 0 {
                pg_error(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "index creation on system columns is not supported".into(),
                    None,
                );
            }
        }

        let reltuples = (*(*rel).rd_rel).reltuples as f64;
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        let name = if (*istmt).idxname.is_null() {
            // Like PostgreSQL's own choice: table_col1_col2_idx ("expr" for expressions).
            let cols: Vec<String> = keys
                .iter()
                .map(|c| {
                    if c.attnum > 0 {
                        let n = pg_sys::get_attname(relid, c.attnum, true);
                        if n.is_null() {
                            "expr".into()
                        } else {
                            CStr::from_ptr(n).to_string_lossy().into_owned()
                        }
                    } else {
                        "expr".into()
                    }
                })
                .collect();
            format!("{table}_{}_idx", cols.join("_"))
        } else {
            CStr::from_ptr((*istmt).idxname)
                .to_string_lossy()
                .into_owned()
        };
        let name = CString::new(format!("<hypothetical>{name}")).unwrap_or_default();
        let predicate_selectivity = if predicate.is_null() {
            1.0
        } else {
            // Deparse the analyzed predicate and let the planner estimate its rows.
            let rname = CString::new(table.clone()).unwrap_or_default();
            let ctx = pg_sys::deparse_context_for(rname.as_ptr(), relid);
            let text = CStr::from_ptr(pg_sys::deparse_expression(predicate, ctx, false, false))
                .to_string_lossy()
                .into_owned();
            let q = format!(
                "SELECT 1 FROM ONLY {} WHERE {text}",
                qualified_rel_name(relid)
            );
            let planned = plan(&q);
            if reltuples > 0.0 {
                (planned.rows / reltuples).clamp(0.0, 1.0)
            } else {
                1.0
            }
        };
        HypoIndex {
            oid,
            name,
            relid,
            amoid,
            keys,
            include,
            predicate,
            predicate_selectivity,
            unique: (*istmt).unique,
            expr_stats: Vec::new(),
            distinct_keys: None,
        }
    }
}

/// The OID of the table whose hypothetical indexes apply to the relation being planned:
/// itself, or for a partition any of its ancestors in this query.
unsafe fn applies_to(
    root: *mut pg_sys::PlannerInfo,
    relid: Oid,
    rel: *mut pg_sys::RelOptInfo,
    target: Oid,
) -> bool {
    if relid == target {
        return true;
    }
    // SAFETY: append_rel_array has simple_rel_array_size entries when set.
    unsafe {
        let mut rti = (*rel).relid as usize;
        for _ in 0..32 {
            if (*root).append_rel_array.is_null() || rti >= (*root).simple_rel_array_size as usize {
                return false;
            }
            let app = *(*root).append_rel_array.add(rti);
            if app.is_null() {
                return false;
            }
            if (*app).parent_reloid == target {
                return true;
            }
            rti = (*app).parent_relid as usize;
        }
    }
    false
}

unsafe fn oid_array(values: impl Iterator<Item = Oid>, n: usize) -> *mut Oid {
    // SAFETY: palloc of n Oids, filled below.
    unsafe {
        let p = pg_sys::palloc0(n.max(1) * std::mem::size_of::<Oid>()) as *mut Oid;
        for (i, v) in values.enumerate().take(n) {
            *p.add(i) = v;
        }
        p
    }
}

unsafe fn bool_array(values: impl Iterator<Item = bool>, n: usize) -> *mut bool {
    // SAFETY: palloc of n bools, filled below.
    unsafe {
        let p = pg_sys::palloc0(n.max(1)) as *mut bool;
        for (i, v) in values.enumerate().take(n) {
            *p.add(i) = v;
        }
        p
    }
}

/// Builds the planner's view of a hypothetical index on `rel`.
unsafe fn index_opt_info(
    relid: Oid,
    rel: *mut pg_sys::RelOptInfo,
    h: &HypoIndex,
) -> Option<*mut pg_sys::IndexOptInfo> {
    // SAFETY: planner structures handed to get_relation_info_hook; allocations in the
    // planner's memory context.
    unsafe {
        let varno = (*rel).relid as i32;
        let same_table = relid == h.relid;
        // A partition's columns can sit at other attnums: map by name; expressions and
        // predicates are only used on the table they were written for.
        if !same_table
            && (!h.predicate.is_null() || h.keys.iter().chain(&h.include).any(|c| c.attnum == 0))
        {
            return None;
        }
        let map_attnum = |attnum: i16| -> i16 {
            if same_table {
                return attnum;
            }
            let name = pg_sys::get_attname(h.relid, attnum, true);
            if name.is_null() {
                0
            } else {
                pg_sys::get_attnum(relid, name)
            }
        };
        let all: Vec<HypoColumn> = h.keys.iter().chain(&h.include).copied().collect();
        let ncols = all.len();
        let nkeys = h.keys.len();
        let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexOptInfo>())
            as *mut pg_sys::IndexOptInfo;
        (*info).type_ = pg_sys::NodeTag::T_IndexOptInfo;
        (*info).indexoid = h.oid;
        (*info).reltablespace = (*rel).reltablespace;
        (*info).rel = rel;
        (*info).ncolumns = ncols as i32;
        (*info).nkeycolumns = nkeys as i32;
        let keys = pg_sys::palloc0(ncols * std::mem::size_of::<i32>()) as *mut i32;
        let mut indexprs: *mut pg_sys::List = std::ptr::null_mut();
        let mut tlist: *mut pg_sys::List = std::ptr::null_mut();
        for (i, c) in all.iter().enumerate() {
            let expr: *mut pg_sys::Expr = if c.attnum > 0 {
                let a = map_attnum(c.attnum);
                if a <= 0 {
                    return None;
                }
                *keys.add(i) = a as i32;
                pg_sys::makeVar(varno, a, c.typ, c.typmod, c.collation, 0) as *mut pg_sys::Expr
            } else {
                let e = pg_sys::copyObjectImpl(c.expr as *const _) as *mut pg_sys::Node;
                pg_sys::ChangeVarNodes(e, 1, varno, 0);
                indexprs = pg_sys::lappend(indexprs, e as *mut _);
                e as *mut pg_sys::Expr
            };
            let te = pg_sys::makeTargetEntry(expr, (i + 1) as i16, std::ptr::null_mut(), false);
            tlist = pg_sys::lappend(tlist, te as *mut _);
        }
        (*info).indexkeys = keys;
        (*info).indexcollations = oid_array(h.keys.iter().map(|c| c.collation), nkeys);
        (*info).opfamily = oid_array(h.keys.iter().map(|c| c.opfamily), nkeys);
        (*info).opcintype = oid_array(h.keys.iter().map(|c| c.opcintype), nkeys);
        let amroutine = pg_sys::GetIndexAmRoutineByAmId(h.amoid, false);
        let is_btree = h.amoid == pg_sys::BTREE_AM_OID;
        if is_btree {
            (*info).sortopfamily = oid_array(h.keys.iter().map(|c| c.opfamily), nkeys);
            (*info).reverse_sort = bool_array(h.keys.iter().map(|c| c.desc), nkeys);
            (*info).nulls_first = bool_array(h.keys.iter().map(|c| c.nulls_first), nkeys);
        }
        (*info).opclassoptions =
            pg_sys::palloc0(ncols.max(1) * std::mem::size_of::<*mut pg_sys::bytea>())
                as *mut *mut pg_sys::bytea;
        // Index-only scans: btree returns every column; other AMs here do not.
        (*info).canreturn = bool_array(
            std::iter::repeat(is_btree && (*amroutine).amcanreturn.is_some()),
            ncols,
        );
        (*info).relam = h.amoid;
        (*info).indexprs = indexprs;
        (*info).indextlist = tlist;
        if !h.predicate.is_null() {
            let p = pg_sys::copyObjectImpl(h.predicate as *const _) as *mut pg_sys::Node;
            pg_sys::ChangeVarNodes(p, 1, varno, 0);
            let p = pg_sys::canonicalize_qual(p as *mut pg_sys::Expr, false);
            (*info).indpred = pg_sys::make_ands_implicit(p);
        }
        (*info).indrestrictinfo = std::ptr::null_mut();
        (*info).predOK = false;
        (*info).unique = h.unique;
        (*info).immediate = true;
        (*info).hypothetical = true;
        (*info).amcanorderbyop = (*amroutine).amcanorderbyop;
        (*info).amoptionalkey = (*amroutine).amoptionalkey;
        (*info).amsearcharray = (*amroutine).amsearcharray;
        (*info).amsearchnulls = (*amroutine).amsearchnulls;
        (*info).amhasgettuple = (*amroutine).amgettuple.is_some();
        (*info).amhasgetbitmap = (*amroutine).amgetbitmap.is_some();
        (*info).amcanparallel = (*amroutine).amcanparallel;
        (*info).amcanmarkpos = (*amroutine).ammarkpos.is_some();
        // SAFETY: both are the AM's cost estimator; IndexOptInfo stores it untyped.
        (*info).amcostestimate = std::mem::transmute::<
            pg_sys::amcostestimate_function,
            Option<unsafe extern "C-unwind" fn()>,
        >((*amroutine).amcostestimate);

        // Size: rows covered (a partial index only covers rows matching its predicate).
        let heap_rows = (*rel).tuples.max(0.0);
        let rows = if h.predicate.is_null() {
            heap_rows
        } else {
            (heap_rows * h.predicate_selectivity).max(1.0)
        };
        let est = estimate_size(h, rows, (*rel).pages as f64);
        (*info).pages = est.pages.min(u32::MAX as u64) as u32;
        (*info).tuples = if h.amoid == pg_sys::BRIN_AM_OID {
            est.tuples
        } else {
            rows
        };
        (*info).tree_height = if is_btree { est.tree_height as i32 } else { -1 };
        Some(info)
    }
}

/// Size of a hypothetical index covering `rows` heap rows (of a `heap_pages`-page table).
fn estimate_size(h: &HypoIndex, rows: f64, heap_pages: f64) -> size::IndexSizeEstimate {
    let key_w: Vec<AttrWidth> = h.keys.iter().map(|c| c.width).collect();
    let inc_w: Vec<AttrWidth> = h.include.iter().map(|c| c.width).collect();
    if h.amoid == pg_sys::BRIN_AM_OID {
        size::estimate_brin(heap_pages, 128.0, &key_w)
    } else {
        // GIN and others: the btree model stands in for page counts.
        size::estimate_btree_with(&size::BtreeSizeInput {
            rows,
            key_widths: &key_w,
            include_widths: &inc_w,
            distinct_keys: h.distinct_keys.map(|d| d.min(rows)),
            fillfactor: 90.0,
        })
    }
}

/// pg_class.reltuples of a table.
fn reltuples_of(relid: Oid) -> f64 {
    // SAFETY: plain relcache lookup, released right away.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return 0.0;
        }
        let t = (*(*rel).rd_rel).reltuples as f64;
        pg_sys::RelationClose(rel);
        t
    }
}

/// Runs for every relation of every query planned, so the common case (no what-if session,
/// no other extension's hook) returns without entering pgrx's guard: it only compares two
/// values and cannot panic or raise.
pub(crate) unsafe extern "C-unwind" fn get_relation_info(
    root: *mut pg_sys::PlannerInfo,
    relid: Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    if crate::pg::hooks::prev_get_relation_info().is_none() && session().is_none() {
        return;
    }
    // SAFETY: same arguments, handed on to the guarded implementation.
    unsafe { get_relation_info_guarded(root, relid, inhparent, rel) }
}

#[pg_guard]
unsafe extern "C-unwind" fn get_relation_info_guarded(
    root: *mut pg_sys::PlannerInfo,
    relid: Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    // SAFETY: chaining to the previous hook with the arguments we were given.
    unsafe {
        if let Some(prev) = crate::pg::hooks::prev_get_relation_info() {
            prev(root, relid, inhparent, rel);
        }
    }
    let Some(state) = session() else { return };
    // SAFETY: planner structures handed to the hook; list manipulation in the planner's
    // memory context.
    unsafe {
        if !state.hidden.is_empty() && !(*rel).indexlist.is_null() {
            let old = (*rel).indexlist;
            let mut kept: *mut pg_sys::List = std::ptr::null_mut();
            for i in 0..(*old).length as usize {
                let info = (*(*old).elements.add(i)).ptr_value as *mut pg_sys::IndexOptInfo;
                if !state.hidden.contains(&(*info).indexoid) {
                    kept = pg_sys::lappend(kept, info as *mut _);
                }
            }
            (*rel).indexlist = kept;
        }
        if inhparent {
            return; // indexes are used on the parent's children, not on the parent itself
        }
        for h in &state.indexes {
            if applies_to(root, relid, rel, h.relid) {
                if let Some(info) = index_opt_info(relid, rel, h) {
                    (*rel).indexlist = pg_sys::lcons(info as *mut _, (*rel).indexlist);
                }
            }
        }
    }
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn explain_index_name(oid: Oid) -> *const std::ffi::c_char {
    if let Some(state) = session() {
        if let Some(h) = state.indexes.iter().find(|h| h.oid == oid) {
            // SAFETY: pstrdup copies into the current memory context.
            return unsafe { pg_sys::pstrdup(h.name.as_ptr()) };
        }
    }
    // SAFETY: chaining to the previous hook.
    unsafe {
        match crate::pg::hooks::prev_explain_index_name() {
            Some(prev) => prev(oid),
            None => std::ptr::null(),
        }
    }
}

/// A planned query: total cost, the indexes its plan uses, and the EXPLAIN text.
pub struct Planned {
    pub total_cost: f64,
    /// Rows the plan's top node expects to return.
    pub rows: f64,
    /// The plan's top node is a Limit (an ORDER BY ... LIMIT can stop early with an index).
    pub limited: bool,
    /// The columns the plan filters, joins, sorts and groups on (as statement capture
    /// records them).
    pub predicates: Vec<crate::stats::shmem::PredicateRec>,
    pub index_oids: Vec<Oid>,
    pub plan_text: String,
}

unsafe fn collect_indexes(plan: *mut pg_sys::Plan, out: &mut Vec<Oid>, depth: u32) {
    if plan.is_null() || depth > 100 {
        return;
    }
    // SAFETY: walking a valid plan tree.
    unsafe {
        use pg_sys::NodeTag::*;
        let list_plans = |l: *mut pg_sys::List, out: &mut Vec<Oid>| {
            if !l.is_null() {
                for i in 0..(*l).length as usize {
                    collect_indexes(
                        (*(*l).elements.add(i)).ptr_value as *mut pg_sys::Plan,
                        out,
                        depth + 1,
                    );
                }
            }
        };
        match (*plan).type_ {
            T_IndexScan => out.push((*(plan as *mut pg_sys::IndexScan)).indexid),
            T_IndexOnlyScan => out.push((*(plan as *mut pg_sys::IndexOnlyScan)).indexid),
            T_BitmapIndexScan => out.push((*(plan as *mut pg_sys::BitmapIndexScan)).indexid),
            T_Append => list_plans((*(plan as *mut pg_sys::Append)).appendplans, out),
            T_MergeAppend => list_plans((*(plan as *mut pg_sys::MergeAppend)).mergeplans, out),
            T_BitmapAnd => list_plans((*(plan as *mut pg_sys::BitmapAnd)).bitmapplans, out),
            T_BitmapOr => list_plans((*(plan as *mut pg_sys::BitmapOr)).bitmapplans, out),
            T_SubqueryScan => collect_indexes(
                (*(plan as *mut pg_sys::SubqueryScan)).subplan,
                out,
                depth + 1,
            ),
            _ => {}
        }
        collect_indexes((*plan).lefttree, out, depth + 1);
        collect_indexes((*plan).righttree, out, depth + 1);
    }
}

/// Plans `query` (never executes it): a generic plan when it has `$n` parameters.
pub fn plan(query: &str) -> Planned {
    plan_checked(query, false)
}

/// Plans `query` like `plan`; with `builtin_only`, refuses (ERROR) a statement that calls a
/// function or operator that is not built in, before planning could fold (execute) it.
#[allow(ffi_unwind_calls)] // raw calls that longjmp, caught by try_capture_query (see `raw`)
pub fn plan_checked(query: &str, builtin_only: bool) -> Planned {
    let Ok(text) = CString::new(query) else {
        PerfError::InvalidQuery {
            detail: "the query contains a NUL byte".into(),
            hint: "Pass the query text as is.".into(),
        }
        .raise()
    };
    // SAFETY: parse, analyze, plan and EXPLAIN (EXPLAIN_ONLY: nothing is executed) in the
    // current memory context.
    unsafe {
        // The user's query is parsed, analyzed and planned outside pgrx's FFI guard, so that
        // its errors keep every field (position, context, names), as through SPI.
        let qtext = text.as_ptr();
        let raw =
            try_capture_query(qtext, || raw::pg_parse_query(qtext)).unwrap_or_else(|e| e.raise());
        if raw.is_null() || (*raw).length != 1 {
            PerfError::InvalidQuery {
                detail: "what-if planning takes exactly one SQL statement".into(),
                hint: "Pass a single SELECT, INSERT, UPDATE or DELETE.".into(),
            }
            .raise();
        }
        let rawstmt = (*(*raw).elements).ptr_value as *mut pg_sys::RawStmt;
        let tag = (*(*rawstmt).stmt).type_;
        if !matches!(
            tag,
            pg_sys::NodeTag::T_SelectStmt
                | pg_sys::NodeTag::T_InsertStmt
                | pg_sys::NodeTag::T_UpdateStmt
                | pg_sys::NodeTag::T_DeleteStmt
        ) {
            PerfError::InvalidQuery {
                detail: "what-if planning only plans SELECT, INSERT, UPDATE and DELETE".into(),
                hint: "DDL and other utility statements have no plan to compare.".into(),
            }
            .raise();
        }
        let mut ptypes: *mut Oid = std::ptr::null_mut();
        let mut nparams = 0;
        let (ptypes_p, nparams_p) = (&raw mut ptypes, &raw mut nparams);
        let queries = try_capture_query(qtext, || {
            raw::pg_analyze_and_rewrite_varparams(
                rawstmt,
                qtext,
                ptypes_p,
                nparams_p,
                std::ptr::null_mut(),
            )
        })
        .unwrap_or_else(|e| e.raise());
        let nqueries = if queries.is_null() {
            0
        } else {
            (*queries).length
        };
        if nqueries == 0 {
            PerfError::InvalidQuery {
                detail: "the statement rewrites into no query at all (a DO INSTEAD NOTHING rule)"
                    .into(),
                hint: "There is no plan to compare; plan the statement a rule does run.".into(),
            }
            .raise();
        }
        if nqueries != 1 {
            PerfError::InvalidQuery {
                detail: "the statement rewrites into several queries (rules)".into(),
                hint: "Plan the rewritten queries one by one.".into(),
            }
            .raise();
        }
        let q = (*(*queries).elements).ptr_value as *mut pg_sys::Query;
        if q.is_null()
            || !(*q).utilityStmt.is_null()
            || !matches!(
                (*q).commandType,
                pg_sys::CmdType::CMD_SELECT
                    | pg_sys::CmdType::CMD_INSERT
                    | pg_sys::CmdType::CMD_UPDATE
                    | pg_sys::CmdType::CMD_DELETE
            )
        {
            PerfError::InvalidQuery {
                detail: "the statement is (or a rule rewrites it into) a utility statement, \
                         such as SELECT INTO or NOTIFY, which has no plan"
                    .into(),
                hint: "Pass a plain SELECT, INSERT, UPDATE or DELETE (CREATE TABLE AS / \
                       SELECT INTO: plan its SELECT)."
                    .into(),
            }
            .raise();
        }
        if builtin_only && guard::calls_user_code(q as *mut pg_sys::Node, false) {
            PerfError::InsufficientPrivilege {
                what: "the statement calls functions or operators that are not built in, \
                       and another role ran it"
                    .into(),
                hint: "Planning can execute immutable functions; pg_perf does not run \
                       another role's code with your rights."
                    .into(),
            }
            .raise();
        }
        let options = pg_sys::CURSOR_OPT_GENERIC_PLAN as i32;
        let stmt = try_capture_query(qtext, || {
            raw::pg_plan_query(q, qtext, options, std::ptr::null_mut())
        })
        .unwrap_or_else(|e| e.raise());
        if stmt.is_null() || (*stmt).planTree.is_null() {
            PerfError::InvalidQuery {
                detail: "the planner returned no plan for this statement".into(),
                hint: "Pass a plain SELECT, INSERT, UPDATE or DELETE.".into(),
            }
            .raise();
        }
        let mut index_oids = Vec::new();
        collect_indexes((*stmt).planTree, &mut index_oids, 0);
        let subplans = (*stmt).subplans;
        if !subplans.is_null() {
            for i in 0..(*subplans).length as usize {
                collect_indexes(
                    (*(*subplans).elements.add(i)).ptr_value as *mut pg_sys::Plan,
                    &mut index_oids,
                    0,
                );
            }
        }
        let total_cost = (*(*stmt).planTree).total_cost;
        let rows = (*(*stmt).planTree).plan_rows;

        let pushed = !pg_sys::ActiveSnapshotSet();
        if pushed {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let qd = pg_sys::CreateQueryDesc(
            stmt,
            text.as_ptr(),
            pg_sys::GetActiveSnapshot(),
            std::ptr::null_mut(),
            pg_sys::None_Receiver,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
        pg_sys::ExecutorStart(qd, pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32);
        let predicates = crate::stats::predicates::collect(qd);
        let limited = (*(*stmt).planTree).type_ == pg_sys::NodeTag::T_Limit;
        let plan_text = crate::stats::plan_capture::explain(
            qd,
            pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT,
            false,
        );
        pg_sys::ExecutorEnd(qd);
        pg_sys::FreeQueryDesc(qd);
        if pushed {
            pg_sys::PopActiveSnapshot();
        }
        Planned {
            total_cost,
            rows,
            limited,
            predicates,
            index_oids,
            plan_text,
        }
    }
}

/// What a set of hypothetical indexes (and hidden existing ones) would do to a query's
/// plan: costs before and after, the hypothetical indexes the new plan uses, both plans.
/// Nothing is built and the query is not run; see `guard` for what may be evaluated (built-in
/// expressions of hypothetical indexes, sampled as the caller) and what never is.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn whatif(
    query: &str,
    indexes: default!(Vec<Option<String>>, "ARRAY[]::text[]"),
    hide: default!(Vec<Option<String>>, "ARRAY[]::text[]"),
) -> TableIterator<
    'static,
    (
        name!(cost_before, f64),
        name!(cost_after, f64),
        name!(improvement_pct, f64),
        name!(indexes_used, Vec<String>),
        name!(plan_before, String),
        name!(plan_after, String),
    ),
> {
    // SAFETY: the arguments move into the closure, so the frames between pgrx's wrapper and
    // a re-thrown ERROR hold nothing that needs dropping.
    unsafe {
        rethrowing(move || {
            let before = plan(query);
            let (after, used) = {
                let session = Session::start(
                    &no_nulls(indexes, "indexes", "CREATE INDEX statements"),
                    &no_nulls(hide, "hide", "names of existing indexes"),
                );
                let after = plan(query);
                let used = session.names_of(&after.index_oids);
                (after, used)
            };
            let improvement = if before.total_cost > 0.0 {
                100.0 * (before.total_cost - after.total_cost) / before.total_cost
            } else {
                0.0
            };
            TableIterator::once((
                before.total_cost,
                after.total_cost,
                improvement,
                used.into_iter()
                    .map(|n| n.trim_start_matches("<hypothetical>").to_string())
                    .collect(),
                before.plan_text,
                after.plan_text,
            ))
        })
    }
}

/// The elements of a text[] argument; a NULL element is refused (22004).
pub(crate) fn no_nulls(list: Vec<Option<String>>, arg: &str, what: &str) -> Vec<String> {
    list.into_iter()
        .map(|e| {
            e.unwrap_or_else(|| {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    format!("{arg} contains a NULL element"),
                    "pg_perf",
                )
                .set_hint(format!("Pass {what}, without NULLs."))
                .report(PgLogLevel::ERROR);
                unreachable!("ERROR-level reports do not return")
            })
        })
        .collect()
}

/// The size pg_perf's what-if planner assumes for a hypothetical index (from the table's
/// current statistics), to compare with what CREATE INDEX would build.
#[pg_extern(volatile, parallel_unsafe)]
fn whatif_index_size(
    index: &str,
) -> TableIterator<
    'static,
    (
        name!(pages, i64),
        name!(bytes, i64),
        name!(tuples, f64),
        name!(tree_height, i32),
    ),
> {
    let mut h = parse_index(index, Oid::from(4_000_000_000u32));
    h.distinct_keys = distinct_keys(&h, reltuples_of(h.relid));
    // SAFETY: plain relcache lookup of the table's statistics; NULL when it is gone.
    let (reltuples, relpages) = unsafe {
        let rel = pg_sys::RelationIdGetRelation(h.relid);
        if rel.is_null() {
            rel_name(h.relid); // raises "does not exist"
            return TableIterator::once((0, 0, 0.0, 0));
        }
        let r = (
            (*(*rel).rd_rel).reltuples as f64,
            (*(*rel).rd_rel).relpages as f64,
        );
        pg_sys::RelationClose(rel);
        r
    };
    let rows = reltuples.max(0.0) * h.predicate_selectivity;
    let est = estimate_size(&h, rows, relpages);
    TableIterator::once((
        est.pages as i64,
        est.bytes as i64,
        est.tuples,
        est.tree_height as i32,
    ))
}
