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
//!
//! Layout: this file holds the session, the hooks and the planning entry points (`plan`,
//! `perf.whatif()`, `perf.whatif_index_size()`); `whatif/parse.rs` turns a CREATE INDEX
//! statement into a `HypoIndex`; `whatif/index_info.rs` builds the planner's
//! `IndexOptInfo` for it.

#![allow(ffi_unwind_calls)]

use std::ffi::{CStr, CString};
use std::rc::Rc;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{PgList, PgLogLevel, PgSqlErrorCode};

use super::guard;
use super::model::{AttrWidth, TypeAlign};
use super::size;
use crate::error::PerfError;
use crate::pg::backend_local::BackendLocal;
use crate::pg::quote::quote_identifier;
use crate::pg::raw;
use crate::pg::try_catch::{rethrowing, try_capture_query};

mod index_info;
mod parse;

use index_info::*;
use parse::*;

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
#[derive(Clone)]
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

/// The active what-if session. The planner hooks read it through `session()`, which hands
/// out a shared handle, so no borrow of the backend-local slot outlives one access.
static SESSION: BackendLocal<Option<Rc<SessionState>>> = BackendLocal::new(None);

fn session() -> Option<Rc<SessionState>> {
    // SAFETY: a short access that only clones the handle.
    unsafe { SESSION.with(|s| s.clone()) }
}

fn session_active() -> bool {
    // SAFETY: a short read.
    unsafe { SESSION.with(|s| s.is_some()) }
}

fn set_session(state: Option<SessionState>) {
    // SAFETY: a short access; the old state is dropped after it ends.
    let old = unsafe { SESSION.with(|s| std::mem::replace(s, state.map(Rc::new))) };
    drop(old);
}

/// Numbers the expression-sample tables of this backend.
static SAMPLE_TABLES: BackendLocal<u64> = BackendLocal::new(0);

type SampleKey = (u32, String);

/// Expression samples made in this transaction, by (table, deparsed expression): the
/// advisor asks about the same expression in thousands of configurations, and sampling it
/// once is enough. Cleared when the transaction or a subtransaction ends with an abort (a
/// rolled-back subtransaction drops the tables it created) and at commit (ON COMMIT DROP).
static SAMPLES: BackendLocal<Option<std::collections::HashMap<SampleKey, Oid>>> =
    BackendLocal::new(None);

fn sample_of(key: &SampleKey) -> Option<Oid> {
    // SAFETY: a short read.
    unsafe { SAMPLES.with(|m| m.as_ref().and_then(|m| m.get(key).copied())) }
}

fn remember_sample(key: SampleKey, oid: Oid) {
    // SAFETY: a short write.
    unsafe { SAMPLES.with(|m| m.get_or_insert_with(Default::default).insert(key, oid)) };
}

fn forget_samples() {
    // SAFETY: a short write; the map is dropped after the access ends.
    let old = unsafe { SAMPLES.with(|m| m.take()) };
    drop(old);
}

/// Transaction events (called from `crate::xact`).
pub(crate) fn on_xact_event(event: pg_sys::XactEvent::Type) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        set_session(None);
    }
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
            | pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PREPARE
    ) {
        forget_samples();
    }
}

/// Subtransaction events (called from `crate::xact`).
pub(crate) fn on_subxact_event(event: pg_sys::SubXactEvent::Type) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        forget_samples();
    }
}

/// Hypothetical indexes parsed once for many sessions (`Session::start_cached`): the
/// advisor starts thousands of sessions over the same few definitions, and parsing them
/// again each time was most of its runtime. Their nodes live in a memory context of their
/// own, a child of the one current when the cache was made, and freed with it.
pub struct ParsedIndexes {
    ctx: pg_sys::MemoryContext,
    parsed: std::collections::HashMap<String, HypoIndex>,
    /// The next fake OID to try (each index of the cache has its own).
    next_oid: u32,
}

impl Default for ParsedIndexes {
    fn default() -> Self {
        Self::new()
    }
}

impl ParsedIndexes {
    pub fn new() -> Self {
        // SAFETY: a child of the current memory context.
        let ctx = unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::CurrentMemoryContext,
                c"pg_perf hypothetical indexes".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        ParsedIndexes {
            ctx,
            parsed: std::collections::HashMap::new(),
            next_oid: 4_000_000_000,
        }
    }

    /// Forgets every parsed index: after a rolled-back subtransaction, whose expression
    /// sample tables are gone.
    pub fn clear(&mut self) {
        self.parsed.clear();
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
        set_session(Some(state));
        Session(())
    }

    /// Like `start` (nothing hidden), but each definition is parsed (with its statistics)
    /// only the first time `cache` sees it. An ERROR while parsing leaves the memory
    /// context switched to the cache's: call it inside a subtransaction (which restores it).
    pub fn start_cached(indexes: &[String], cache: &mut ParsedIndexes) -> Session {
        for def in indexes {
            if cache.parsed.contains_key(def) {
                continue;
            }
            // SAFETY: the cache's context is current while the definition is parsed (its
            // nodes must live as long as the cache), and switched back afterwards.
            let old = unsafe { pg_sys::MemoryContextSwitchTo(cache.ctx) };
            // SAFETY: plain catalog lookup.
            while unsafe { pg_sys::get_rel_relkind(Oid::from(cache.next_oid)) } != 0 {
                cache.next_oid -= 1;
            }
            let mut h = parse_index(def, Oid::from(cache.next_oid));
            cache.next_oid -= 1;
            sample_expression_stats(&mut h);
            h.distinct_keys = distinct_keys(&h, reltuples_of(h.relid));
            // SAFETY: see above.
            unsafe { pg_sys::MemoryContextSwitchTo(old) };
            cache.parsed.insert(def.clone(), h);
        }
        let state = SessionState {
            indexes: indexes
                .iter()
                .filter_map(|d| cache.parsed.get(d).cloned())
                .collect(),
            hidden: Vec::new(),
        };
        set_session(Some(state));
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
        set_session(None);
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
        if let Some(oid) = sample_of(&cache_key) {
            h.expr_stats[*i] = oid;
            continue;
        }
        // SAFETY: a short access to a backend-local counter.
        let n = unsafe {
            SAMPLE_TABLES.with(|n| {
                *n += 1;
                *n
            })
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
            remember_sample(cache_key, oid);
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

/// Runs for every relation of every query planned, so the common case (no what-if session,
/// no other extension's hook) returns without entering pgrx's guard: it only compares two
/// values and cannot panic or raise.
pub(crate) unsafe extern "C-unwind" fn get_relation_info(
    root: *mut pg_sys::PlannerInfo,
    relid: Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    if crate::pg::hooks::prev_get_relation_info().is_none() && !session_active() {
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
            for info in PgList::<pg_sys::IndexOptInfo>::from_pg(old).iter_ptr() {
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
    pub predicates: Vec<crate::stats::PredicateRec>,
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
            for p in PgList::<pg_sys::Plan>::from_pg(l).iter_ptr() {
                collect_indexes(p, out, depth + 1);
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
pub fn plan_checked(query: &str, builtin_only: bool) -> Planned {
    let (text, stmt) = planned_stmt(query, builtin_only);
    // SAFETY: `stmt` is the planner's result for `text`, in the current memory context; it
    // is only started EXPLAIN_ONLY (nothing is executed) and explained.
    unsafe { describe(&text, stmt) }
}

/// The estimated total cost of `query`'s plan (checked as by `plan_checked`), and nothing
/// else: no executor start, no predicate walk, no EXPLAIN text. The advisor's cost oracle
/// asks this thousands of times per advice.
pub fn plan_cost(query: &str, builtin_only: bool) -> f64 {
    let (_, stmt) = planned_stmt(query, builtin_only);
    // SAFETY: `planned_stmt` returns a non-null statement with a plan tree.
    unsafe { (*(*stmt).planTree).total_cost }
}

/// Parses, analyzes and plans `query` (see `plan_checked`); a non-null statement with a
/// plan tree.
#[allow(ffi_unwind_calls)] // raw calls that longjmp, caught by try_capture_query (see `raw`)
fn planned_stmt(query: &str, builtin_only: bool) -> (CString, *mut pg_sys::PlannedStmt) {
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
        let raw = PgList::<pg_sys::RawStmt>::from_pg(raw);
        let Some(rawstmt) = raw.head().filter(|_| raw.len() == 1) else {
            PerfError::InvalidQuery {
                detail: "what-if planning takes exactly one SQL statement".into(),
                hint: "Pass a single SELECT, INSERT, UPDATE or DELETE.".into(),
            }
            .raise();
        };
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
        let queries = PgList::<pg_sys::Query>::from_pg(queries);
        let nqueries = queries.len();
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
        let q = queries.head().unwrap_or(std::ptr::null_mut());
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
        (text, stmt)
    }
}

/// What `plan_checked` returns for a planned statement.
///
/// # Safety
/// `stmt` is the planner's non-null result for `text`, with a plan tree.
#[allow(ffi_unwind_calls)]
unsafe fn describe(text: &CStr, stmt: *mut pg_sys::PlannedStmt) -> Planned {
    // SAFETY: per the caller; EXPLAIN_ONLY: nothing is executed.
    unsafe {
        let mut index_oids = Vec::new();
        collect_indexes((*stmt).planTree, &mut index_oids, 0);
        for p in PgList::<pg_sys::Plan>::from_pg((*stmt).subplans).iter_ptr() {
            collect_indexes(p, &mut index_oids, 0);
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
