//! Runs a job's SQL as top-level statements, the way `exec_simple_query` (and pg_cron's
//! runner) does: parse, analyze, plan, portal, `PortalRun` with `isTopLevel` when the
//! string holds one statement. SPI would run it in an atomic context where VACUUM,
//! REINDEX CONCURRENTLY and DETACH PARTITION CONCURRENTLY refuse to run.
//!
//! Also the check that a command has no transaction control (BEGIN/COMMIT/ROLLBACK/
//! SAVEPOINT/...), with the raw parser, for perf.schedule() and the runner alike.

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

/// Signal handlers and timeouts PostgreSQL does not expose through pgrx's bindings, or only
/// as guarded Rust functions (a signal handler must be the raw C symbol).
pub mod sys {
    use std::ffi::c_int;

    /// `TimeoutId` value of STATEMENT_TIMEOUT (utils/timeout.h, PG15).
    pub const STATEMENT_TIMEOUT: c_int = 3;

    unsafe extern "C" {
        pub fn die(sig: c_int);
        pub fn SignalHandlerForConfigReload(sig: c_int);
        pub fn pqsignal(signo: c_int, func: unsafe extern "C" fn(c_int)) -> *mut std::ffi::c_void;
        pub fn enable_timeout_after(id: c_int, delay_ms: c_int);
        pub fn disable_timeout(id: c_int, keep_indicator: bool);
    }
}

/// What a run did: the last statement's command tag and rows processed, summed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub command_tag: String,
    pub rows: u64,
}

/// The raw parse trees of `sql` (a `List` of `RawStmt`), in the current memory context.
/// A syntax error is raised as PostgreSQL's own ERROR (42601 with position).
unsafe fn parse(sql: &CStr) -> *mut pg_sys::List {
    // SAFETY: a valid C string; the result lives in CurrentMemoryContext.
    unsafe { pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) }
}

/// The statements of a raw parse list.
unsafe fn statements(list: *mut pg_sys::List) -> Vec<*mut pg_sys::RawStmt> {
    // SAFETY: a valid (or NIL) pointer List of RawStmt nodes, walked while it lives.
    unsafe { crate::pg::list::ptrs::<pg_sys::RawStmt>(list).collect() }
}

/// How a job command is shaped, for validation.
pub struct Shape {
    pub statements: usize,
    /// The first transaction-control statement's keyword, if any.
    pub transaction_control: Option<&'static str>,
}

fn transaction_keyword(kind: pg_sys::TransactionStmtKind::Type) -> &'static str {
    use pg_sys::TransactionStmtKind::*;
    match kind {
        TRANS_STMT_BEGIN | TRANS_STMT_START => "BEGIN",
        TRANS_STMT_COMMIT => "COMMIT",
        TRANS_STMT_ROLLBACK => "ROLLBACK",
        TRANS_STMT_SAVEPOINT => "SAVEPOINT",
        TRANS_STMT_RELEASE => "RELEASE",
        TRANS_STMT_ROLLBACK_TO => "ROLLBACK TO SAVEPOINT",
        TRANS_STMT_PREPARE => "PREPARE TRANSACTION",
        TRANS_STMT_COMMIT_PREPARED => "COMMIT PREPARED",
        TRANS_STMT_ROLLBACK_PREPARED => "ROLLBACK PREPARED",
        _ => "transaction control",
    }
}

/// Parses `sql` and reports how many statements it has and whether any controls the
/// transaction. Raises the parser's ERROR on a syntax error.
pub fn shape(sql: &CStr) -> Shape {
    // SAFETY: parsing allocates in the current (transaction) memory context; the nodes are
    // read here only.
    unsafe {
        let stmts = statements(parse(sql));
        let mut transaction_control = None;
        for &raw in &stmts {
            let node = (*raw).stmt;
            if !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_TransactionStmt {
                let t = node as *mut pg_sys::TransactionStmt;
                transaction_control = Some(transaction_keyword((*t).kind));
                break;
            }
        }
        Shape {
            statements: stmts.len(),
            transaction_control,
        }
    }
}

/// Analyzes, rewrites and plans one raw statement of `sql` (with a snapshot when analysis
/// needs one), in the current memory context: the plans, as `pg_plan_queries` returns them.
unsafe fn plan(raw: *mut pg_sys::RawStmt, sql: &CStr) -> *mut pg_sys::List {
    // SAFETY: a raw statement parsed from `sql`, inside a transaction (the callers').
    unsafe {
        let snapshot = pg_sys::analyze_requires_snapshot(raw);
        if snapshot {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
        let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
            raw,
            sql.as_ptr(),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        );
        let plans = pg_sys::pg_plan_queries(
            queries,
            sql.as_ptr(),
            pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
            std::ptr::null_mut(),
        );
        if snapshot {
            pg_sys::PopActiveSnapshot();
        }
        plans
    }
}

/// Executes `sql` as top-level statement(s) inside the current transaction, which the
/// caller started (and commits or aborts). Statements such as VACUUM commit and start
/// transactions internally, so everything that must survive is kept in a memory context
/// under TopMemoryContext. Raises an ERROR on failure (the caller catches it).
// The DestNone receiver's rDestroy is a "C-unwind" pointer to a no-op (donothingCleanup).
#[allow(ffi_unwind_calls)]
pub fn run_top_level(sql: &CStr) -> Outcome {
    let mut outcome = Outcome::default();
    // SAFETY: the sequence of exec_simple_query: each call gets the objects the previous one
    // returned; `ctx` outlives internal commits and is deleted at the end (on ERROR the
    // runner process exits soon after, so the context is not leaked for long).
    unsafe {
        let ctx = pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"pg_perf job".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        let old = pg_sys::MemoryContextSwitchTo(ctx);
        let stmts = statements(pg_sys::pg_parse_query(sql.as_ptr()));
        pg_sys::MemoryContextSwitchTo(old);
        let top_level = stmts.len() == 1;
        for &raw in &stmts {
            let node = (*raw).stmt;
            if !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_TransactionStmt {
                pgrx::ereport!(
                    ERROR,
                    pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "transaction control statements are not allowed in pg_perf jobs",
                    "Each run is one transaction (VACUUM and the like manage their own); \
                     remove BEGIN/COMMIT/ROLLBACK/SAVEPOINT from the command."
                );
            }
            let tag = pg_sys::CreateCommandTag(node);
            pg_sys::set_ps_display(pg_sys::GetCommandTagName(tag));
            let old = pg_sys::MemoryContextSwitchTo(ctx);
            let plans = plan(raw, sql);
            pgrx::check_for_interrupts!();
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(
                portal,
                std::ptr::null(),
                sql.as_ptr(),
                tag,
                plans,
                std::ptr::null_mut(),
            );
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let mut format: i16 = 0;
            pg_sys::PortalSetResultFormat(portal, 1, &mut format);
            let receiver = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
            pg_sys::MemoryContextSwitchTo(old);
            let mut qc = pg_sys::QueryCompletion {
                commandTag: pg_sys::CommandTag::CMDTAG_UNKNOWN,
                nprocessed: 0,
            };
            pg_sys::PortalRun(
                portal,
                std::ffi::c_long::MAX,
                top_level,
                true,
                receiver,
                receiver,
                &mut qc,
            );
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            pg_sys::PortalDrop(portal, false);
            let name =
                pg_sys::GetCommandTagName(if qc.commandTag == pg_sys::CommandTag::CMDTAG_UNKNOWN {
                    tag
                } else {
                    qc.commandTag
                });
            outcome.command_tag = cstr(name);
            outcome.rows += qc.nprocessed;
            pg_sys::CommandCounterIncrement();
        }
        pg_sys::MemoryContextDelete(ctx);
    }
    outcome
}

/// Parses, analyzes and plans `sql` without running anything, in the current transaction
/// (which the caller aborts): the catalog, relation and statistics caches a run needs are
/// loaded before its due time instead of after it. Stops at the first statement that
/// raises (a later statement may depend on an earlier one's effect); the caller catches.
pub fn load_caches(sql: &CStr) {
    // SAFETY: the first half of `run_top_level`'s sequence, in the caller's transaction
    // and memory context; nothing is executed and the transaction is aborted afterwards.
    unsafe {
        for raw in statements(pg_sys::pg_parse_query(sql.as_ptr())) {
            let node = (*raw).stmt;
            if node.is_null() || (*node).type_ == pg_sys::NodeTag::T_TransactionStmt {
                return;
            }
            plan(raw, sql);
        }
    }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: a NUL-terminated string from PostgreSQL.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}
