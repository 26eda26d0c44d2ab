//! `perf.apply_index(ddl)`: builds one index the advisor suggested and remembers what it was
//! meant to do; `perf.index_outcomes` (sql/advisor_apply.sql) reports what it did.
//!
//! The statement is parsed, never run as given: it must be exactly one `CREATE INDEX` with a
//! name, on a table the caller owns (the checks CREATE INDEX makes), and it is refused
//! otherwise (42601 for anything but one statement, 22023 for anything but a plain named
//! CREATE INDEX, PostgreSQL's own codes for the rest). What runs is that statement with its
//! table schema-qualified and CONCURRENTLY added, re-parsed and compared node by node with
//! the original, so nothing else can ride along.
//!
//! Before building, the captured statements on the table are planned with the index as a
//! hypothetical one (the what-if planner, `whatif::Session`): those whose plans use it
//! (`helped`), those whose plans filter, join, sort or group on its key columns
//! (`filters`), and the writes to the table (`writes`, which it costs) are remembered with
//! pg_perf's counters at that moment (`perf.index_application_statements`).
//!
//! The build runs CONCURRENTLY as a one-shot job of the scheduler (a disabled job owned by
//! the caller, run once, so as the caller: CREATE INDEX CONCURRENTLY cannot run inside a
//! function's transaction, the job runner executes it as a top-level statement). Builds
//! run one at a time per database, queued in id order (`start_next_queued`). When the
//! run ends, the runner calls [`after_build_run`], which records the outcome and the
//! statistics at build time (statement counters, table and index counters): the baseline
//! of every "after". `mode => 'inline'` builds it at once, in the caller's transaction,
//! without CONCURRENTLY.

use std::collections::HashMap;
use std::ffi::{CStr, CString};

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::{PgList, PgLogLevel, PgSqlErrorCode};

use super::catalog::Catalog;
use super::guard::in_subtransaction;
use super::normalized::plannable_text;
use super::whatif;
use super::workload::{captured_workload, plan_workload, write_target_of};
use crate::pg::quote::{quote_identifier, quote_qualified};
use crate::pg::raw;
use crate::pg::try_catch::{rethrowing, try_capture_query};
use crate::stats::workload as stats_workload;

/// Name prefix of the one-shot jobs that build applied indexes (`pg_perf apply_index <id>`).
pub const JOB_PREFIX: &str = "pg_perf apply_index ";

pgrx::extension_sql_file!(
    "../../sql/advisor_apply.sql",
    name = "advisor_apply_sql",
    requires = ["stats_views", "scheduler_sql", advisor::apply::apply_index]
);

fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    ErrorReport::new(code, message, "pg_perf")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

const FORM_HINT: &str = "Pass one CREATE INDEX statement as perf.suggest_indexes() prints it, \
    e.g. 'CREATE INDEX CONCURRENTLY orders_customer_id_idx ON public.orders USING btree (customer_id)'.";

/// The index to build, checked.
struct Target {
    relid: Oid,
    schema: String,
    table: String,
    index: String,
    /// What runs: the table schema-qualified, CONCURRENTLY unless inline.
    command: String,
    /// The same without CONCURRENTLY, for the what-if planner.
    plain: String,
    /// Key and INCLUDE columns that are plain columns.
    columns: Vec<i16>,
}

/// Byte range of the next word at or after `pos`, skipping whitespace and comments.
fn next_word(s: &str, mut pos: usize) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    loop {
        while pos < b.len() && b[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let rest = b.get(pos..)?;
        if rest.starts_with(b"--") {
            pos += rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
        } else if rest.starts_with(b"/*") {
            // Nested comments are rare in DDL: refuse rather than guess.
            let end = s.get(pos + 2..)?.find("*/")?;
            if s.get(pos + 2..pos + 2 + end)?.contains("/*") {
                return None;
            }
            pos += end + 4;
        } else {
            break;
        }
    }
    let start = pos;
    while pos < b.len() && (b[pos].is_ascii_alphanumeric() || b[pos] == b'_') {
        pos += 1;
    }
    (pos > start).then_some((start, pos))
}

/// `stmt` (the statement's text, `start..end` of `ddl`) with `schema.` inserted at byte
/// `table_at` (when given) and CONCURRENTLY added or removed after CREATE INDEX. None when
/// it does not start with CREATE INDEX.
fn rewrite(
    ddl: &str,
    start: usize,
    end: usize,
    table_at: Option<(usize, &str)>,
    concurrently: bool,
) -> Option<String> {
    let mut s = ddl.get(..end)?.to_string();
    if let Some((at, schema)) = table_at {
        if at < start || at > end || !s.is_char_boundary(at) {
            return None;
        }
        s.insert_str(at, &format!("{}.", quote_identifier(schema)));
    }
    let (c0, c1) = next_word(&s, start)?;
    if !s[c0..c1].eq_ignore_ascii_case("create") {
        return None;
    }
    let (i0, i1) = next_word(&s, c1)?;
    if !s[i0..i1].eq_ignore_ascii_case("index") || table_at.is_some_and(|(at, _)| at < i1) {
        return None;
    }
    let next = next_word(&s, i1).filter(|&(a, b)| s[a..b].eq_ignore_ascii_case("concurrently"));
    match (next, concurrently) {
        (None, true) => s.insert_str(i1, " CONCURRENTLY"),
        (Some((a, b)), false) => s.replace_range(a..b, ""),
        _ => {}
    }
    Some(s.get(start..)?.trim().to_string())
}

/// Parses `text` into its raw statements; a syntax error is PostgreSQL's own (42601).
#[allow(ffi_unwind_calls)] // a raw call that longjmps, caught by try_capture_query (see `raw`)
fn parse(text: &CStr) -> Vec<*mut pg_sys::RawStmt> {
    let q = text.as_ptr();
    // SAFETY: raw parsing in the current memory context, outside pgrx's guard so that the
    // error keeps its position; re-thrown by `rethrowing` around the SQL function.
    unsafe {
        let list = try_capture_query(q, || raw::pg_parse_query(q)).unwrap_or_else(|e| e.raise());
        PgList::<pg_sys::RawStmt>::from_pg(list)
            .iter_ptr()
            .collect()
    }
}

fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated string from PostgreSQL.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Checks `ddl` and the caller's rights; see the module documentation.
fn validate(ddl: &str, concurrently: bool) -> Target {
    let Ok(text) = CString::new(ddl) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "the index definition contains a NUL byte".into(),
            FORM_HINT,
        )
    };
    let stmts = parse(&text);
    if stmts.len() != 1 {
        raise(
            PgSqlErrorCode::ERRCODE_SYNTAX_ERROR,
            format!(
                "perf.apply_index() takes exactly one CREATE INDEX statement, not {}",
                stmts.len()
            ),
            FORM_HINT,
        );
    }
    let rawstmt = stmts[0];
    // SAFETY: nodes produced by the parser above, tags checked before each cast; catalog
    // lookups in the current transaction.
    unsafe {
        let node = (*rawstmt).stmt;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_IndexStmt {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "perf.apply_index() only builds indexes: the statement is not CREATE INDEX".into(),
                FORM_HINT,
            );
        }
        let istmt = node as *mut pg_sys::IndexStmt;
        if (*istmt).unique
            || (*istmt).primary
            || (*istmt).isconstraint
            || !(*istmt).excludeOpNames.is_null()
        {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "perf.apply_index() builds plain indexes, not unique indexes or constraints".into(),
                "A unique index changes what the table accepts: create it yourself if you mean it.",
            );
        }
        if (*istmt).idxname.is_null() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "perf.apply_index() needs a named index".into(),
                "Name the index (CREATE INDEX CONCURRENTLY name ON ...), as perf.suggest_indexes() does: \
                 its outcome and its undo refer to it by name.",
            );
        }
        let rv = (*istmt).relation;
        let relid = pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::AccessShareLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        let given = if (*rv).schemaname.is_null() {
            cstr((*rv).relname)
        } else {
            format!("{}.{}", cstr((*rv).schemaname), cstr((*rv).relname))
        };
        if relid == Oid::INVALID {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation \"{given}\" does not exist"),
                "Check the table name (schema-qualified names are safest).",
            );
        }
        let relkind = pg_sys::get_rel_relkind(relid) as u8;
        let allowed = match relkind {
            pg_sys::RELKIND_RELATION | pg_sys::RELKIND_MATVIEW => true,
            pg_sys::RELKIND_PARTITIONED_TABLE => !concurrently,
            _ => false,
        };
        if !allowed {
            raise(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("cannot apply an index on \"{given}\" this way"),
                if relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
                    "A partitioned table's index cannot be built CONCURRENTLY: use mode => 'inline', \
                     or build it on each partition."
                } else {
                    "Indexes go on tables and materialized views."
                },
            );
        }
        if pg_sys::get_rel_persistence(relid) as u8 == pg_sys::RELPERSISTENCE_TEMP && concurrently {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("\"{given}\" is a temporary table, which the job runner cannot see"),
                "Use mode => 'inline' for a temporary table.",
            );
        }
        let me = pg_sys::GetUserId();
        let nsp = pg_sys::get_rel_namespace(relid);
        let schema = cstr(pg_sys::get_namespace_name(nsp));
        let table = cstr(pg_sys::get_rel_name(relid));
        if !pg_sys::pg_class_ownercheck(relid, me) {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be owner of table {}", quote_identifier(&table)),
                "perf.apply_index() builds the index with your rights, and CREATE INDEX needs \
                 the table's owner (or a member of the owning role).",
            );
        }
        if pg_sys::pg_namespace_aclcheck(nsp, me, pg_sys::ACL_CREATE as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for schema {}", quote_identifier(&schema)),
                "CREATE INDEX needs the CREATE privilege on the table's schema.",
            );
        }
        if !(*istmt).tableSpace.is_null() {
            let ts = pg_sys::get_tablespace_oid((*istmt).tableSpace, true);
            if ts == Oid::INVALID {
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!(
                        "tablespace \"{}\" does not exist",
                        cstr((*istmt).tableSpace)
                    ),
                    "Leave TABLESPACE out to use the table's.",
                );
            }
            if ts != pg_sys::MyDatabaseTableSpace
                && pg_sys::pg_tablespace_aclcheck(ts, me, pg_sys::ACL_CREATE as _)
                    != pg_sys::AclResult::ACLCHECK_OK
            {
                raise(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!(
                        "permission denied for tablespace {}",
                        cstr((*istmt).tableSpace)
                    ),
                    "Leave TABLESPACE out to use the table's.",
                );
            }
        }
        let index = cstr((*istmt).idxname);
        if pg_sys::get_relname_relid((*istmt).idxname, nsp) != Oid::INVALID {
            raise(
                PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
                format!("relation \"{index}\" already exists in schema \"{schema}\""),
                "SELECT * FROM perf.index_outcomes shows indexes applied before; choose another \
                 name or drop the existing relation first.",
            );
        }
        let mut columns = Vec::new();
        for list in [(*istmt).indexParams, (*istmt).indexIncludingParams] {
            for elem in PgList::<pg_sys::IndexElem>::from_pg(list).iter_ptr() {
                if !(*elem).name.is_null() {
                    let attnum = pg_sys::get_attnum(relid, (*elem).name);
                    if attnum > 0 {
                        columns.push(attnum);
                    }
                }
            }
        }

        // The text to run: the statement alone (no trailing `;`), its table qualified.
        let start = usize::try_from((*rawstmt).stmt_location).unwrap_or(0);
        let end = match usize::try_from((*rawstmt).stmt_len).unwrap_or(0) {
            0 => ddl.len(),
            n => (start + n).min(ddl.len()),
        };
        let table_at = (*rv).schemaname.is_null().then(|| {
            (
                usize::try_from((*rv).location).unwrap_or(usize::MAX),
                schema.as_str(),
            )
        });
        let rewritten = |c: bool| -> String {
            let Some(text) = rewrite(ddl, start, end, table_at, c) else {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "perf.apply_index() could not read the statement's CREATE INDEX head".into(),
                    "Start it with CREATE INDEX [CONCURRENTLY] name ON ..., without comments in between.",
                )
            };
            // Re-parsed and compared node by node with what was given (plus the schema and
            // CONCURRENTLY): the text that runs says exactly that and nothing more.
            let Ok(c_text) = CString::new(text.as_str()) else {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "the index definition contains a NUL byte".into(),
                    FORM_HINT,
                )
            };
            let again = parse(&c_text);
            (*istmt).concurrent = c;
            if table_at.is_some() {
                (*rv).schemaname =
                    pg_sys::pstrdup(CString::new(schema.as_str()).unwrap_or_default().as_ptr());
            }
            let same = again.len() == 1
                && pg_sys::equal(
                    node as *const std::ffi::c_void,
                    (*again[0]).stmt as *const std::ffi::c_void,
                );
            if table_at.is_some() {
                (*rv).schemaname = std::ptr::null_mut();
            }
            if !same {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    "perf.apply_index() could not qualify the statement's table unambiguously"
                        .into(),
                    "Write the table schema-qualified (CREATE INDEX ... ON schema.table ...).",
                );
            }
            text
        };
        let command = rewritten(concurrently);
        let plain = rewritten(false);
        Target {
            relid,
            schema,
            table,
            index,
            command,
            plain,
            columns,
        }
    }
}

/// A captured statement the index was meant to help, or whose writes it costs.
struct Remembered {
    queryid: i64,
    relation: &'static str,
    cost_before: Option<f64>,
    cost_after: Option<f64>,
}

/// A captured statement planned with each of its sample texts: the share-weighted cost and
/// the plans; None when a sample cannot be planned.
fn plan_samples(texts: &[(String, f64)], foreign: bool) -> Option<(f64, Vec<whatif::Planned>)> {
    let mut cost = 0.0;
    let mut plans = Vec::with_capacity(texts.len());
    for (text, share) in texts {
        let p = in_subtransaction(|| whatif::plan_checked(text, foreign))?;
        cost += share * p.total_cost;
        plans.push(p);
    }
    Some((cost, plans))
}

/// The captured statements on the target's table, planned with and without the index as a
/// hypothetical one; the what-if session also checks the definition as CREATE INDEX would.
fn remembered(t: &Target) -> Vec<Remembered> {
    let (queries, _) = captured_workload();
    let mut catalog = Catalog::default();
    let planned = plan_workload(&queries, &mut catalog);
    let relid = t.relid.to_u32();
    let mut ids: Vec<_> = planned.texts.keys().copied().collect();
    ids.sort_unstable();
    // Before: as things are (no session).
    let mut before: HashMap<usize, (f64, bool)> = HashMap::new();
    for &id in &ids {
        let (texts, foreign) = &planned.texts[&id];
        if let Some((cost, plans)) = plan_samples(texts, *foreign) {
            let filters = plans
                .iter()
                .flat_map(|p| &p.predicates)
                .any(|r| r.relid == relid && r.attnum > 0 && t.columns.contains(&r.attnum));
            before.insert(id as usize, (cost, filters));
        }
    }
    // After: with the index (its definition is checked here, as CREATE INDEX would).
    let mut out: Vec<Remembered> = Vec::new();
    {
        let session = whatif::Session::start(std::slice::from_ref(&t.plain), &[]);
        for &id in &ids {
            let i = id as usize;
            let Some(&(cost_before, filters)) = before.get(&i) else {
                continue;
            };
            let (texts, foreign) = &planned.texts[&id];
            let after = plan_samples(texts, *foreign);
            let helped = after.as_ref().is_some_and(|(_, plans)| {
                plans
                    .iter()
                    .any(|p| !session.names_of(&p.index_oids).is_empty())
            });
            let queryid = queries[i].queryid;
            if queryid == 0 || !(helped || filters) {
                continue;
            }
            out.push(Remembered {
                queryid,
                relation: if helped { "helped" } else { "filters" },
                cost_before: Some(cost_before),
                cost_after: after.map(|(cost, _)| cost),
            });
        }
    }
    for q in &queries {
        if q.queryid == 0 || out.iter().any(|r| r.queryid == q.queryid) {
            continue;
        }
        let text = plannable_text(&q.text).unwrap_or_else(|| q.text.clone());
        if write_target_of(&text).is_some_and(|(r, _)| r == relid) {
            out.push(Remembered {
                queryid: q.queryid,
                relation: "writes",
                cost_before: None,
                cost_after: None,
            });
        }
    }
    out
}

/// pg_perf's counters per statement of this database (all roles, top level and nested):
/// calls and total execution time.
fn counters() -> HashMap<i64, (i64, f64)> {
    let mut m: HashMap<i64, (i64, f64)> = HashMap::new();
    for s in stats_workload::statements() {
        let e = m.entry(s.queryid).or_default();
        e.0 += s.calls;
        e.1 += s.total_time_ms;
    }
    m
}

/// Refuses the worker mode when the scheduler's workers do not run in this database.
fn check_worker() {
    let hint = "Turn the scheduler on (ALTER SYSTEM SET perf.worker_enabled = on; SELECT \
                pg_reload_conf(); and list this database in perf.worker_databases if that is \
                set), or build the index now, without CONCURRENTLY (writes to the table wait \
                while it builds): perf.apply_index(ddl, mode => 'inline').";
    if !crate::scheduler::hosted::worker_enabled() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_perf's scheduler is disabled (perf.worker_enabled = off): nothing would build \
             the index CONCURRENTLY"
                .into(),
            hint,
        );
    }
    if let Some(dbs) = crate::scheduler::hosted::worker_databases() {
        // SAFETY: catalog lookup of the current database's name.
        let me = cstr(unsafe { pg_sys::get_database_name(pg_sys::MyDatabaseId) });
        if !dbs.contains(&me) {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "pg_perf's scheduler does not run in database \"{me}\" (perf.worker_databases)"
                ),
                hint,
            );
        }
    }
}

/// Builds one suggested index (`ddl`: a CREATE INDEX statement as perf.suggest_indexes()
/// prints it) and returns the id of its row in perf.index_outcomes. `mode`: 'worker' (the
/// default) builds it CONCURRENTLY in the background, as a one-shot job of pg_perf's
/// scheduler run as the caller; 'inline' builds it now, in this transaction, without
/// CONCURRENTLY (writes to the table wait until the transaction ends). First it remembers
/// the captured statements the index should help, with their latency so far.
#[pg_extern(volatile, parallel_unsafe)]
fn apply_index(ddl: Option<&str>, mode: default!(Option<&str>, "'worker'")) -> i64 {
    crate::pg::privilege::require(crate::pg::privilege::Role::Admin, "perf.apply_index()");
    let Some(ddl) = ddl.map(str::to_string) else {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "ddl must not be NULL".into(),
            FORM_HINT,
        )
    };
    let inline = match mode.map(|m| m.trim().to_ascii_lowercase()).as_deref() {
        Some("worker") => false,
        Some("inline") => true,
        _ => raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown mode {:?}", mode.unwrap_or("NULL")),
            "mode is 'worker' (CONCURRENTLY, in the background; the default) or 'inline' \
             (now, in this transaction, not concurrently).",
        ),
    };
    // SAFETY: the arguments move into the closure; the frames between pgrx's wrapper and a
    // re-thrown ERROR hold nothing to drop.
    unsafe { rethrowing(move || apply_index_impl(&ddl, inline)) }
}

fn apply_index_impl(ddl: &str, inline: bool) -> i64 {
    // SAFETY: plain read of shared recovery state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        raise(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            "cannot apply an index on a standby server (it is in recovery)".into(),
            "Run it on the primary: the index replicates to the standbys.",
        );
    }
    let t = validate(ddl, !inline);
    if !inline {
        check_worker();
    }
    let remembered = remembered(&t);
    let before = counters();
    let helped = remembered.iter().filter(|r| r.relation == "helped").count();
    if helped == 0 {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "the what-if planner expects no captured statement to use index \"{}\"",
                t.index
            ),
            "pg_perf",
        )
        .set_hint("It is built all the same; perf.index_outcomes will show whether it pays off.")
        .report(PgLogLevel::NOTICE);
    }
    // SAFETY: plain read of the current user.
    let me = unsafe { pg_sys::GetUserId() };
    let id = {
        let _as = crate::pg::role::ActingAs::catalog_owner();
        Spi::get_one::<i64>("SELECT nextval('perf.index_applications_id_seq')")
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let reads_at_start = inline
        .then(|| {
            // SAFETY: discards this backend's statistics snapshot.
            unsafe { pg_sys::pgstat_clear_snapshot() };
            Spi::get_one_with_args::<i64>(
                &format!("SELECT ({})::bigint", TABLE_READS_SQL.replace("$T", "$1")),
                &[t.relid.into()],
            )
            .ok()
            .flatten()
        })
        .flatten();
    let jobid = if inline {
        // As the caller; an ERROR aborts the whole call.
        Spi::run(&t.command).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("could not build the index: {e}"),
                "",
            )
        });
        None
    } else {
        // A disabled job (it never runs on its schedule) owned by the caller, so that the
        // runner builds the index as the caller; its one run is queued by
        // `start_next_queued`.
        let name = format!("{JOB_PREFIX}{id}");
        Spi::get_one_with_args::<i64>(
            "SELECT perf.schedule(name => $1, schedule => '@yearly', command => $2, enabled => false)",
            &[name.as_str().into(), t.command.as_str().into()],
        )
        .ok()
        .flatten()
    };
    {
        let _as = crate::pg::role::ActingAs::catalog_owner();
        let _ = Spi::run_with_args(
            "INSERT INTO perf.index_applications (id, ddl, command, table_oid, schema_name, \
                 table_name, index_name, requested_by, mode, jobid, reads_at_start) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                id.into(),
                ddl.into(),
                t.command.as_str().into(),
                t.relid.into(),
                t.schema.as_str().into(),
                t.table.as_str().into(),
                t.index.as_str().into(),
                me.into(),
                if inline { "inline" } else { "worker" }.into(),
                jobid.into(),
                reads_at_start.into(),
            ],
        );
        for r in &remembered {
            let Some(&(calls, ms)) = before.get(&r.queryid).filter(|c| c.0 > 0) else {
                continue;
            };
            let _ = Spi::run_with_args(
                "INSERT INTO perf.index_application_statements (application_id, queryid, \
                     relation, cost_before, cost_after, calls_before, total_ms_before) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    id.into(),
                    r.queryid.into(),
                    r.relation.into(),
                    r.cost_before.into(),
                    r.cost_after.into(),
                    calls.into(),
                    ms.into(),
                ],
            );
        }
        if inline {
            record_build(id, true, None, None);
        }
    }
    if !inline {
        let started = {
            let _as = crate::pg::role::ActingAs::catalog_owner();
            start_next_queued()
        };
        let when = if started == Some(id) {
            "once this transaction commits".to_string()
        } else {
            "after the builds queued before it (one at a time: two concurrent builds on a \
             table deadlock)"
                .to_string()
        };
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "index {} is built CONCURRENTLY in the background {when} (job \"{JOB_PREFIX}{id}\")",
                quote_qualified(&t.schema, &t.index)
            ),
            "pg_perf",
        )
        .set_hint(format!(
            "SELECT * FROM perf.index_outcomes WHERE id = {id} follows it."
        ))
        .report(PgLogLevel::NOTICE);
    }
    id
}

/// Scans of table `$T` so far (sequential, and through each of its indexes), this
/// process's unflushed counts included: the baseline of "reads since".
const TABLE_READS_SQL: &str = "pg_catalog.pg_stat_get_numscans($T) \
    + pg_catalog.pg_stat_get_xact_numscans($T) \
    + (SELECT coalesce(sum(pg_catalog.pg_stat_get_numscans(x.indexrelid) \
                           + pg_catalog.pg_stat_get_xact_numscans(x.indexrelid)), 0) \
         FROM pg_catalog.pg_index x WHERE x.indrelid = $T)";

/// Advisory lock key that serializes the decision which build runs next (b"pgperfap").
const QUEUE_LOCK: i64 = 0x7067_7065_7266_6170;

/// Starts the oldest queued build unless one is in flight (queued: an application in
/// worker mode without a run). One build at a time per database: two CREATE INDEX
/// CONCURRENTLY on one table deadlock, and on different tables they wait for each other.
/// The run is queued in perf.job_runs directly (the job belongs to the role that applied
/// the index, and the runner runs it as that role); the scheduler is woken at commit.
/// Returns the application started. As a superuser.
fn start_next_queued() -> Option<i64> {
    let _ = Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[QUEUE_LOCK.into()],
    );
    let in_flight = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM perf.index_applications a \
                          JOIN perf.job_runs r ON r.runid = a.runid \
                         WHERE a.status = 'pending' AND r.status IN ('pending', 'running'))",
    )
    .ok()
    .flatten()
    .unwrap_or(true);
    if in_flight {
        return None;
    }
    let (id, jobid) = Spi::get_two::<i64, i64>(
        "SELECT a.id, a.jobid FROM perf.index_applications a \
          WHERE a.status = 'pending' AND a.mode = 'worker' AND a.runid IS NULL \
            AND EXISTS (SELECT 1 FROM perf.jobs j WHERE j.jobid = a.jobid) \
          ORDER BY a.id LIMIT 1",
    )
    .ok()?;
    let (id, jobid) = (id?, jobid?);
    let runid = Spi::get_one_with_args::<i64>(
        "INSERT INTO perf.job_runs (jobid, trigger, status, scheduled_for) \
         VALUES ($1, 'manual', 'pending', now()) RETURNING runid",
        &[jobid.into()],
    )
    .ok()
    .flatten()?;
    // SAFETY: discards this backend's statistics snapshot, as pg_stat_clear_snapshot() does.
    unsafe { pg_sys::pgstat_clear_snapshot() };
    let _ = Spi::run_with_args(
        &format!(
            "UPDATE perf.index_applications a SET runid = $2, reads_at_start = {} WHERE a.id = $1",
            TABLE_READS_SQL.replace("$T", "a.table_oid")
        ),
        &[id.into(), runid.into()],
    );
    // SAFETY: plain read of the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId };
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        crate::scheduler::hosted::wake(db)
    });
    Some(id)
}

/// Records how a build ended and the statistics at that moment (the baseline of
/// perf.index_outcomes' "after"). Runs as a superuser (the runner, or under
/// `AsExtensionOwner`).
fn record_build(id: i64, ok: bool, sqlstate: Option<&str>, error: Option<&str>) {
    // Statistics read now, not a copy cached earlier in this transaction; this process's
    // unflushed counts (the build's own table scans) are added by the pg_stat_get_xact_*
    // functions, so they do not count as reads "since the build".
    // SAFETY: discards this backend's statistics snapshot, as pg_stat_clear_snapshot() does.
    unsafe { pg_sys::pgstat_clear_snapshot() };
    let index_oid = Spi::get_one_with_args::<Oid>(
        "SELECT c.oid FROM perf.index_applications a \
           JOIN pg_catalog.pg_namespace n ON n.nspname = a.schema_name \
           JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = a.index_name \
          WHERE a.id = $1 AND c.relkind IN ('i', 'I')",
        &[id.into()],
    )
    .ok()
    .flatten();
    let _ = Spi::run_with_args(
        &format!(
            "UPDATE perf.index_applications a SET \
            status = CASE WHEN $2 THEN 'built' ELSE 'failed' END, \
            sqlstate = $3, error = $4, built_at = clock_timestamp(), index_oid = $5, \
            base_index_scans = pg_catalog.pg_stat_get_numscans($5) \
                               + pg_catalog.pg_stat_get_xact_numscans($5), \
            base_table_reads = {reads}, \
            base_tup_ins = pg_catalog.pg_stat_get_tuples_inserted(a.table_oid) \
                + pg_catalog.pg_stat_get_xact_tuples_inserted(a.table_oid), \
            base_tup_upd = pg_catalog.pg_stat_get_tuples_updated(a.table_oid) \
                + pg_catalog.pg_stat_get_xact_tuples_updated(a.table_oid), \
            base_tup_hot_upd = pg_catalog.pg_stat_get_tuples_hot_updated(a.table_oid) \
                + pg_catalog.pg_stat_get_xact_tuples_hot_updated(a.table_oid), \
            base_tup_del = pg_catalog.pg_stat_get_tuples_deleted(a.table_oid) \
                + pg_catalog.pg_stat_get_xact_tuples_deleted(a.table_oid) \
          WHERE a.id = $1",
            reads = TABLE_READS_SQL.replace("$T", "a.table_oid")
        ),
        &[
            id.into(),
            ok.into(),
            sqlstate.into(),
            error.into(),
            index_oid.into(),
        ],
    );
    // Scans of the table while this index was built (the build's own, mostly) are not
    // reads that indexes built on it before missed.
    let _ = Spi::run_with_args(
        "UPDATE perf.index_applications o \
            SET base_table_reads = o.base_table_reads \
                                   + greatest(a.base_table_reads - a.reads_at_start, 0) \
           FROM perf.index_applications a \
          WHERE a.id = $1 AND o.id <> $1 AND o.status = 'built' AND o.table_oid = a.table_oid \
            AND o.built_at <= a.built_at",
        &[id.into()],
    );
    let now = counters();
    let (ids, (calls, ms)): (Vec<i64>, (Vec<i64>, Vec<f64>)) = now.into_iter().unzip();
    let _ = Spi::run_with_args(
        "UPDATE perf.index_application_statements s \
            SET calls_at_build = coalesce(v.calls, 0), total_ms_at_build = coalesce(v.ms, 0) \
           FROM perf.index_application_statements s2 \
           LEFT JOIN unnest($2::bigint[], $3::bigint[], $4::float8[]) v(q, calls, ms) \
                  ON v.q = s2.queryid \
          WHERE s.application_id = $1 AND s2.application_id = $1 AND s2.queryid = s.queryid",
        &[id.into(), ids.into(), calls.into(), ms.into()],
    );
}

/// Called by the job runner (as the bootstrap superuser, in a transaction of its own) when
/// a run of a job named [`JOB_PREFIX`]... ended: records the build of the application that
/// run belongs to, and removes the one-shot job once the index is built.
pub fn after_build_run(runid: i64, ok: bool, sqlstate: Option<&str>, error: Option<&str>) {
    let app = Spi::get_two_with_args::<i64, i64>(
        "SELECT id, jobid FROM perf.index_applications WHERE runid = $1 AND status = 'pending'",
        &[runid.into()],
    );
    let Ok((Some(id), jobid)) = app else {
        return;
    };
    record_build(id, ok, sqlstate, error);
    if ok {
        if let Some(jobid) = jobid {
            let _ = Spi::run_with_args("DELETE FROM perf.jobs WHERE jobid = $1", &[jobid.into()]);
        }
    }
    start_next_queued();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_word_skips_space_and_comments() {
        let s = "  /* c */ create -- x\n index";
        let (a, b) = next_word(s, 0).unwrap();
        assert_eq!(&s[a..b], "create");
        let (a, b) = next_word(s, b).unwrap();
        assert_eq!(&s[a..b], "index");
        assert_eq!(next_word(s, b), None);
        assert_eq!(next_word("/* /* nested */ */ create", 0), None);
    }

    #[test]
    fn rewrite_adds_and_removes_concurrently() {
        let d = "CREATE INDEX i ON t (a);";
        let end = d.len() - 1;
        assert_eq!(
            rewrite(d, 0, end, Some((18, "s")), true).unwrap(),
            "CREATE INDEX CONCURRENTLY i ON s.t (a)"
        );
        let d = "create index concurrently i on s.t (a)";
        assert_eq!(
            rewrite(d, 0, d.len(), None, false).unwrap(),
            "create index  i on s.t (a)"
        );
        assert_eq!(
            rewrite(d, 0, d.len(), None, true).unwrap(),
            "create index concurrently i on s.t (a)"
        );
        assert_eq!(rewrite("DROP TABLE t", 0, 12, None, true), None);
        let q = "CREATE INDEX i ON \"My T\" (a)";
        assert_eq!(
            rewrite(q, 0, q.len(), Some((18, "Sch")), true).unwrap(),
            "CREATE INDEX CONCURRENTLY i ON \"Sch\".\"My T\" (a)"
        );
    }
}
