//! Every PostgreSQL hook pg_perf uses is installed here, and only here, and each one is
//! chained to the hook that was installed before it (or to the standard function).
//!
//! Who handles what (the capabilities' entry points, called directly: no registration
//! table or dynamic dispatch on the per-statement path):
//!
//! | hook                            | entry point                                        |
//! |---------------------------------|----------------------------------------------------|
//! | post_parse_analyze_hook         | `stats::hooks::post_parse_analyze`                 |
//! | planner_hook (track_planning)   | `stats::hooks::planner`                            |
//! | ExecutorStart/Run/Finish/End    | `stats::hooks::executor_*`                         |
//! | ProcessUtility_hook             | [`process_utility`] here:                          |
//! |                                 | `scheduler::before_utility` (DROP DATABASE/        |
//! |                                 | EXTENSION stop our workers), `track::before_utility`,|
//! |                                 | then `stats::hooks::process_utility`               |
//! | get_relation_info_hook,         | `advisor::whatif::get_relation_info`,              |
//! | explain_get_index_name_hook,    | `advisor::whatif::explain_index_name`,             |
//! | get_index_stats_hook            | `advisor::whatif::get_index_stats`                 |
//! | shmem_request/startup_hook      | `pg::shmem` (capabilities' `request`/`startup`)    |
//! | xact/subxact/resource callbacks | `pg::xact` (capabilities' `on_*_event`)            |
//!
//! A capability's entry point continues the chain with the `next_*` function of its hook
//! (the previous hook, or PostgreSQL's standard function).
//!
//! Invariants:
//! - `install` runs once, in `_PG_init` (postmaster, single-threaded), before any query;
//!   after it the `PREV_*` statics are only read.
//! - The `next_*` functions are plain calls (no pgrx FFI guard): an ERROR raised below
//!   longjmps through the caller's frame, which must hold nothing that needs dropping, or
//!   make the call inside `pg::try_catch::try_or_cleanup` (see `stats::hooks`).

// Previous hooks and the standard functions are "C-unwind" functions called directly.
#![allow(ffi_unwind_calls)]

use pgrx::pg_sys::{self, QueryDesc};
use std::ffi::c_char;

static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_GET_RELATION_INFO: pg_sys::get_relation_info_hook_type = None;
static mut PREV_EXPLAIN_INDEX_NAME: pg_sys::explain_get_index_name_hook_type = None;
static mut PREV_GET_INDEX_STATS: pg_sys::get_index_stats_hook_type = None;

/// Installs every hook (from `_PG_init`, in the postmaster), in this order: statistics
/// (parse analysis, executor, utility, planner), then the what-if planner hooks.
pub fn install() {
    use crate::advisor::whatif;
    use crate::stats::hooks as stats;
    // SAFETY: _PG_init runs single-threaded before any query; each previous hook is saved
    // before ours replaces it, and ours chain to it.
    unsafe {
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(stats::post_parse_analyze);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(stats::executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(stats::executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(stats::executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(stats::executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        // Only with perf.track_planning = on (a restart setting): planning is not timed
        // otherwise, and the hook would cost every statement a call.
        if crate::gucs::track_planning() {
            PREV_PLANNER = pg_sys::planner_hook;
            pg_sys::planner_hook = Some(stats::planner);
        }
        // No EnableQueryId(): with compute_query_id = auto, post_parse_analyze gives each
        // statement core's queryId itself, memoized per text (see stats::query_id_memo).
        PREV_GET_RELATION_INFO = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(whatif::get_relation_info);
        PREV_EXPLAIN_INDEX_NAME = pg_sys::explain_get_index_name_hook;
        pg_sys::explain_get_index_name_hook = Some(whatif::explain_index_name);
        PREV_GET_INDEX_STATS = pg_sys::get_index_stats_hook;
        pg_sys::get_index_stats_hook = Some(whatif::get_index_stats);
    }
}

/// The standard functions, declared without pgrx's per-call guard (a sigsetjmp, about 100
/// instructions, and an ERROR rebuilt from a few of its fields).
mod raw {
    use pgrx::pg_sys::{
        DestReceiver, ParamListInfo, PlannedStmt, ProcessUtilityContext, Query, QueryCompletion,
        QueryDesc, QueryEnvironment, ScanDirection,
    };
    use std::ffi::c_char;
    unsafe extern "C-unwind" {
        pub fn standard_planner(
            parse: *mut Query,
            query_string: *const c_char,
            cursor_options: i32,
            bound_params: ParamListInfo,
        ) -> *mut PlannedStmt;
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut PlannedStmt,
            query_string: *const c_char,
            read_only_tree: bool,
            context: ProcessUtilityContext::Type,
            params: ParamListInfo,
            query_env: *mut QueryEnvironment,
            dest: *mut DestReceiver,
            qc: *mut QueryCompletion,
        );
        pub fn standard_ExecutorStart(qd: *mut QueryDesc, eflags: i32);
        pub fn standard_ExecutorRun(
            qd: *mut QueryDesc,
            direction: ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        pub fn standard_ExecutorFinish(qd: *mut QueryDesc);
        pub fn standard_ExecutorEnd(qd: *mut QueryDesc);
    }
}

/// Continues post_parse_analyze_hook.
///
/// # Safety
/// Called from our post_parse_analyze hook with its own arguments.
#[inline(always)]
pub unsafe fn next_post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    // SAFETY: written once in `install`, read-only since; arguments per the contract.
    unsafe {
        if let Some(prev) = PREV_POST_PARSE_ANALYZE {
            prev(pstate, query, jstate);
        }
    }
}

/// Continues ExecutorStart_hook.
///
/// # Safety
/// Called from our ExecutorStart hook with its own arguments.
#[inline(always)]
pub unsafe fn next_executor_start(qd: *mut QueryDesc, eflags: i32) {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(qd, eflags),
            None => raw::standard_ExecutorStart(qd, eflags),
        }
    }
}

/// Continues ExecutorRun_hook.
///
/// # Safety
/// Called from our ExecutorRun hook with its own arguments.
#[inline(always)]
pub unsafe fn next_executor_run(
    qd: *mut QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_EXECUTOR_RUN {
            Some(prev) => prev(qd, direction, count, execute_once),
            None => raw::standard_ExecutorRun(qd, direction, count, execute_once),
        }
    }
}

/// Continues ExecutorFinish_hook.
///
/// # Safety
/// Called from our ExecutorFinish hook with its own arguments.
#[inline(always)]
pub unsafe fn next_executor_finish(qd: *mut QueryDesc) {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_EXECUTOR_FINISH {
            Some(prev) => prev(qd),
            None => raw::standard_ExecutorFinish(qd),
        }
    }
}

/// Continues ExecutorEnd_hook.
///
/// # Safety
/// Called from our ExecutorEnd hook with its own arguments.
#[inline(always)]
pub unsafe fn next_executor_end(qd: *mut QueryDesc) {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(qd),
            None => raw::standard_ExecutorEnd(qd),
        }
    }
}

/// Continues planner_hook.
///
/// # Safety
/// Called from our planner hook with its own arguments.
#[inline(always)]
pub unsafe fn next_planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_PLANNER {
            Some(prev) => prev(parse, query_string, cursor_options, bound_params),
            None => raw::standard_planner(parse, query_string, cursor_options, bound_params),
        }
    }
}

/// The arguments of ProcessUtility_hook, as one `Copy` value a capability hands on.
#[derive(Clone, Copy)]
pub struct UtilityArgs {
    pub pstmt: *mut pg_sys::PlannedStmt,
    pub query_string: *const c_char,
    pub read_only_tree: bool,
    pub context: pg_sys::ProcessUtilityContext::Type,
    pub params: pg_sys::ParamListInfo,
    pub query_env: *mut pg_sys::QueryEnvironment,
    pub dest: *mut pg_sys::DestReceiver,
    pub qc: *mut pg_sys::QueryCompletion,
}

/// Continues ProcessUtility_hook.
///
/// # Safety
/// `a` holds the arguments our ProcessUtility hook was called with.
#[inline(always)]
pub unsafe fn next_process_utility(a: UtilityArgs) {
    // SAFETY: as in `next_post_parse_analyze`.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                a.pstmt,
                a.query_string,
                a.read_only_tree,
                a.context,
                a.params,
                a.query_env,
                a.dest,
                a.qc,
            ),
            None => raw::standard_ProcessUtility(
                a.pstmt,
                a.query_string,
                a.read_only_tree,
                a.context,
                a.params,
                a.query_env,
                a.dest,
                a.qc,
            ),
        }
    }
}

/// ProcessUtility_hook: change tracking first (it must see every utility statement,
/// whatever perf.track says; its guard ends a global operation when dropped, also on
/// ERROR), then statement statistics, which run the statement and drop the guard.
#[allow(clippy::too_many_arguments)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let args = UtilityArgs {
        pstmt,
        query_string,
        read_only_tree,
        context,
        params,
        query_env,
        dest,
        qc,
    };
    // The scheduler first: a DROP DATABASE must not wait for our workers in that database.
    // SAFETY: PostgreSQL passes a valid PlannedStmt (null-checked there).
    unsafe { crate::scheduler::before_utility(pstmt) };
    // SAFETY: PostgreSQL passes a valid PlannedStmt; its utilityStmt is a parse node.
    let change = unsafe { crate::track::before_utility((*pstmt).utilityStmt) };
    // SAFETY: our hook's own arguments.
    unsafe { crate::stats::hooks::process_utility(args, change) };
}

/// The hook installed before ours in get_relation_info_hook.
#[inline(always)]
pub fn prev_get_relation_info() -> pg_sys::get_relation_info_hook_type {
    // SAFETY: written once in `install`, read-only since (a by-value read of the static).
    unsafe { std::ptr::read(&raw const PREV_GET_RELATION_INFO) }
}

/// The hook installed before ours in explain_get_index_name_hook.
#[inline(always)]
pub fn prev_explain_index_name() -> pg_sys::explain_get_index_name_hook_type {
    // SAFETY: as in `prev_get_relation_info`.
    unsafe { std::ptr::read(&raw const PREV_EXPLAIN_INDEX_NAME) }
}

/// The hook installed before ours in get_index_stats_hook.
#[inline(always)]
pub fn prev_get_index_stats() -> pg_sys::get_index_stats_hook_type {
    // SAFETY: as in `prev_get_relation_info`.
    unsafe { std::ptr::read(&raw const PREV_GET_INDEX_STATS) }
}
