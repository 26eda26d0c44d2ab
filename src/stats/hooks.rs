//! Parse-analysis, executor and utility hooks that feed the statement table.
//!
//! Invariants:
//! - Every hook chains to the hook that was installed before it (or the standard function),
//!   calling it through `pg_guard_ffi_boundary` so a PostgreSQL ERROR becomes a Rust unwind
//!   that runs our `finally` blocks instead of a longjmp over Rust frames.
//! - With `perf.enabled = off` or `perf.track = none`, hooks do one GUC read and pass through.
//! - The nesting level is restored on error (PgTryBuilder `finally`), as pg_stat_statements
//!   does with PG_FINALLY, so `toplevel` stays right after a caught error in PL/pgSQL.
//! - Backend-local state lives in `LOCAL` (one backend = one thread). It is only touched
//!   from hook code and callbacks that run on that thread, never re-entrantly while borrowed.
//! - Nothing here holds a lock across a call back into PostgreSQL: locking lives in `shmem`.

// Previous hooks are C function pointers with the "C-unwind" ABI; every call to one goes
// through `pg_guard_ffi_boundary`, which turns a PostgreSQL longjmp into a Rust unwind.
#![allow(ffi_unwind_calls)]

use std::cell::UnsafeCell;
use std::time::Instant;

use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;
use pgrx::pg_sys::{self, QueryDesc};
use pgrx::prelude::*;
use pgrx::PgTryBuilder;

use super::normalize;
use super::shmem::{self, BufferDelta, ExecSample, StatKey, WalDelta};
use super::{plan_capture, predicates};
use crate::gucs::{self, TrackLevel};

const KNOWN_SLOTS: usize = 4096;
const WANT_PLAN_SLOTS: usize = 256;
const MAX_PENDING_TEXTS: usize = 256;

/// Backend-local bookkeeping.
struct Local {
    nesting: i32,
    /// Direct-mapped cache of key hashes known to have an entry (valid for `known_gen`), so
    /// parse analysis skips normalizing texts of statements that are already recorded.
    known: [u64; KNOWN_SLOTS],
    known_gen: u64,
    /// Normalized texts computed at parse time, waiting for their first execution.
    pending_texts: Vec<(u64, String)>,
    /// Hashes of statements that were slow but have no plan with actual rows yet: their next
    /// execution is instrumented regardless of `perf.plan_sample_rate`.
    want_analyzed_plan: [u64; WANT_PLAN_SLOTS],
    /// The statement currently executing, to count it as failed if the transaction aborts.
    in_flight: Option<(StatKey, u64)>,
    rng: u64,
}

struct BackendLocal(UnsafeCell<Local>);
// SAFETY: each PostgreSQL backend is a single-threaded process; `LOCAL` is only accessed
// from that thread (hooks and transaction callbacks).
unsafe impl Sync for BackendLocal {}

static LOCAL: BackendLocal = BackendLocal(UnsafeCell::new(Local {
    nesting: 0,
    known: [0; KNOWN_SLOTS],
    known_gen: 0,
    pending_texts: Vec::new(),
    want_analyzed_plan: [0; WANT_PLAN_SLOTS],
    in_flight: None,
    rng: 0x9e37_79b9_7f4a_7c15,
}));

/// # Safety
/// Single-threaded backend; callers must not hold the returned reference across a call that
/// can re-enter the hooks (planner/executor). All uses below are short and local.
#[inline]
#[allow(clippy::mut_from_ref)]
unsafe fn local() -> &'static mut Local {
    // SAFETY: see function contract.
    unsafe { &mut *LOCAL.0.get() }
}

static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Installs the hooks (from `_PG_init`, in the postmaster).
pub fn install() {
    // SAFETY: _PG_init runs single-threaded before any query; we save the previous hooks and
    // chain to them.
    unsafe {
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
        // Core computes queryId (same as pg_stat_statements) when compute_query_id = auto.
        pg_sys::EnableQueryId();
    }
}

/// Whether statements at `nesting` are recorded in this backend right now.
#[inline]
fn tracking(nesting: i32) -> bool {
    if !gucs::enabled() {
        return false;
    }
    let level_ok = match gucs::TRACK.get() {
        TrackLevel::None => false,
        TrackLevel::Top => nesting == 0,
        TrackLevel::All => true,
    };
    // SAFETY: plain read of a backend global; parallel workers' work is accounted to the
    // leader (their buffer usage is folded into the leader's counters).
    level_ok && unsafe { pg_sys::ParallelWorkerNumber } < 0
}

#[inline]
fn current_key(queryid: i64, nesting: i32) -> StatKey {
    // SAFETY: plain reads of backend state.
    unsafe {
        StatKey {
            userid: pg_sys::GetUserId().to_u32(),
            dbid: pg_sys::MyDatabaseId.to_u32(),
            queryid,
            toplevel: nesting == 0,
        }
    }
}

/// xorshift64*: a cheap sampler that needs no syscall or FFI.
#[inline]
fn sample(rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    // SAFETY: backend-local, short borrow.
    let l = unsafe { local() };
    l.rng ^= l.rng >> 12;
    l.rng ^= l.rng << 25;
    l.rng ^= l.rng >> 27;
    let r = l.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
    ((r >> 11) as f64 / (1u64 << 53) as f64) < rate
}

#[inline]
fn is_known(hash: u64) -> bool {
    // SAFETY: backend-local, short borrow.
    let l = unsafe { local() };
    let g = shmem::generation();
    if l.known_gen != g {
        l.known = [0; KNOWN_SLOTS];
        l.known_gen = g;
        return false;
    }
    l.known[hash as usize % KNOWN_SLOTS] == hash
}

#[inline]
fn mark_known(hash: u64) {
    // SAFETY: backend-local, short borrow.
    let l = unsafe { local() };
    l.known[hash as usize % KNOWN_SLOTS] = hash;
}

// ---------------------------------------------------------------------------------------
// post_parse_analyze: normalize the text of statements with constants, once.
// ---------------------------------------------------------------------------------------

#[pg_guard]
unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    // SAFETY: chaining to the previous hook with the arguments we were given.
    unsafe {
        if let Some(prev) = PREV_POST_PARSE_ANALYZE {
            pg_guard_ffi_boundary(|| prev(pstate, query, jstate));
        }
    }
    // SAFETY: PostgreSQL passes valid pointers; jstate may be null.
    unsafe {
        let nesting = local().nesting;
        if jstate.is_null()
            || (*jstate).clocations_count <= 0
            || (*query).queryId == 0
            || !tracking(nesting)
            || !shmem::available()
        {
            return;
        }
        let key = current_key((*query).queryId as i64, nesting);
        let hash = key.hash();
        if is_known(hash) {
            return;
        }
        let source = (*pstate).p_sourcetext;
        if source.is_null() {
            return;
        }
        let source = std::ffi::CStr::from_ptr(source).to_string_lossy();
        let n = (*jstate).clocations_count as usize;
        let locs: Vec<i32> = std::slice::from_raw_parts((*jstate).clocations, n)
            .iter()
            .map(|l| l.location)
            .collect();
        let text = normalize::normalize_statement(
            &source,
            (*query).stmt_location,
            (*query).stmt_len,
            &locs,
        );
        let l = local();
        if l.pending_texts.len() >= MAX_PENDING_TEXTS {
            l.pending_texts.clear();
        }
        l.pending_texts.retain(|(h, _)| *h != hash);
        l.pending_texts.push((hash, text));
    }
}

// ---------------------------------------------------------------------------------------
// Executor hooks.
// ---------------------------------------------------------------------------------------

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(qd: *mut QueryDesc, eflags: i32) {
    // SAFETY: PostgreSQL passes a valid QueryDesc whose plannedstmt is set.
    let track = unsafe {
        let queryid = (*(*qd).plannedstmt).queryId as i64;
        let track = queryid != 0
            && (eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32) == 0
            && tracking(local().nesting)
            && shmem::available();
        if track {
            let hash = current_key(queryid, local().nesting).hash();
            let wants = local().want_analyzed_plan[hash as usize % WANT_PLAN_SLOTS] == hash;
            if gucs::SLOW_QUERY_MS.get() >= 0 && (wants || sample(gucs::PLAN_SAMPLE_RATE.get())) {
                (*qd).instrument_options |= pg_sys::InstrumentOption::INSTRUMENT_ALL as i32;
            }
        }
        track
    };
    // SAFETY: chaining with the arguments we were given.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => pg_guard_ffi_boundary(|| prev(qd, eflags)),
            None => pg_sys::standard_ExecutorStart(qd, eflags),
        }
    }
    // SAFETY: after ExecutorStart, estate exists; totaltime is allocated in the query's
    // memory context so it lives exactly as long as the execution.
    unsafe {
        if track && (*qd).totaltime.is_null() {
            let old = pg_sys::MemoryContextSwitchTo((*(*qd).estate).es_query_cxt);
            (*qd).totaltime =
                pg_sys::InstrAlloc(1, pg_sys::InstrumentOption::INSTRUMENT_ALL as i32, false);
            pg_sys::MemoryContextSwitchTo(old);
        }
    }
}

/// Runs `f` one nesting level deeper, restoring the level even if `f` raises an ERROR, and
/// remembers `qd`'s statement as in flight so an abort counts it as failed.
#[inline]
unsafe fn nested<R>(qd: *mut QueryDesc, f: impl FnOnce() -> R) -> R {
    // SAFETY: valid QueryDesc from PostgreSQL.
    let flight = unsafe {
        let queryid = (*(*qd).plannedstmt).queryId as i64;
        let nesting = local().nesting;
        if queryid != 0 && !(*qd).totaltime.is_null() && tracking(nesting) {
            let key = current_key(queryid, nesting);
            Some((key, key.hash()))
        } else {
            None
        }
    };
    // SAFETY: short borrows of backend-local state.
    let saved = unsafe {
        let l = local();
        let saved = l.in_flight;
        if flight.is_some() {
            l.in_flight = flight;
        }
        l.nesting += 1;
        saved
    };
    let r = PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        // SAFETY: backend-local counter.
        .finally(|| unsafe { local().nesting -= 1 })
        .execute();
    // Success: the statement is no longer in flight (on error this line is not reached and
    // the abort callback records the failure).
    // SAFETY: backend-local.
    unsafe { local().in_flight = saved };
    r
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_run(
    qd: *mut QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    // SAFETY: chaining with the arguments we were given.
    unsafe {
        nested(qd, || match PREV_EXECUTOR_RUN {
            Some(prev) => pg_guard_ffi_boundary(|| prev(qd, direction, count, execute_once)),
            None => pg_sys::standard_ExecutorRun(qd, direction, count, execute_once),
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_finish(qd: *mut QueryDesc) {
    // SAFETY: chaining with the arguments we were given.
    unsafe {
        nested(qd, || match PREV_EXECUTOR_FINISH {
            Some(prev) => pg_guard_ffi_boundary(|| prev(qd)),
            None => pg_sys::standard_ExecutorFinish(qd),
        })
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end(qd: *mut QueryDesc) {
    // SAFETY: valid QueryDesc; totaltime/estate/planstate are alive until standard_ExecutorEnd.
    unsafe {
        let queryid = (*(*qd).plannedstmt).queryId as i64;
        if queryid != 0 && !(*qd).totaltime.is_null() && tracking(local().nesting) {
            record_execution(qd, queryid);
        }
        match PREV_EXECUTOR_END {
            Some(prev) => pg_guard_ffi_boundary(|| prev(qd)),
            None => pg_sys::standard_ExecutorEnd(qd),
        }
    }
}

/// Folds a finished execution into shared memory; captures its plan if it was slow and its
/// predicates if this statement has none recorded yet.
unsafe fn record_execution(qd: *mut QueryDesc, queryid: i64) {
    // SAFETY: called from executor_end with a live QueryDesc.
    unsafe {
        let tt = (*qd).totaltime;
        pg_sys::InstrEndLoop(tt);
        let total_ms = (*tt).total * 1000.0;
        let bu = &(*tt).bufusage;
        let wu = &(*tt).walusage;
        let sample = ExecSample {
            total_ms,
            rows: (*(*qd).estate).es_processed as i64,
            buffers: BufferDelta {
                shared_blks_hit: bu.shared_blks_hit,
                shared_blks_read: bu.shared_blks_read,
                shared_blks_dirtied: bu.shared_blks_dirtied,
                shared_blks_written: bu.shared_blks_written,
                local_blks_hit: bu.local_blks_hit,
                local_blks_read: bu.local_blks_read,
                local_blks_dirtied: bu.local_blks_dirtied,
                local_blks_written: bu.local_blks_written,
                temp_blks_read: bu.temp_blks_read,
                temp_blks_written: bu.temp_blks_written,
                blk_read_ms: instr_ms(&bu.blk_read_time),
                blk_write_ms: instr_ms(&bu.blk_write_time),
            },
            wal: WalDelta {
                records: wu.wal_records,
                fpi: wu.wal_fpi,
                bytes: wu.wal_bytes,
            },
            failed: false,
            now: pg_sys::GetCurrentTimestamp(),
        };
        let nesting = local().nesting;
        let key = current_key(queryid, nesting);
        let hash = key.hash();
        let slow_ms = gucs::SLOW_QUERY_MS.get() as f64;
        let mut outcome = shmem::record_existing(&key, hash, &sample, slow_ms);
        if !outcome.found {
            let text = take_pending_text(hash).unwrap_or_else(|| source_text(qd));
            outcome = shmem::record_new(&key, hash, &text, &sample, slow_ms);
        }
        mark_known(hash);

        if slow_ms >= 0.0 && total_ms >= slow_ms {
            let analyzed = plan_capture::has_node_instrumentation(qd);
            let improves = (analyzed && !outcome.plan_analyzed)
                || (total_ms > outcome.plan_ms && (analyzed || !outcome.plan_analyzed));
            if improves {
                let plan = plan_capture::explain_json(qd, analyzed);
                let params = plan_capture::params_text(qd);
                shmem::store_plan(&key, hash, total_ms, analyzed, &plan, &params, sample.now);
            }
            let slot = &mut local().want_analyzed_plan[hash as usize % WANT_PLAN_SLOTS];
            if analyzed || outcome.plan_analyzed {
                if *slot == hash {
                    *slot = 0;
                }
            } else {
                *slot = hash;
            }
        }

        if outcome.predicates_needed && gucs::CAPTURE_PREDICATES.get() {
            let preds = predicates::collect(qd);
            shmem::store_predicates(&key, hash, &preds);
        }
    }
}

#[inline]
fn instr_ms(t: &pg_sys::instr_time) -> f64 {
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1_000_000.0
}

fn take_pending_text(hash: u64) -> Option<String> {
    // SAFETY: backend-local, short borrow.
    let l = unsafe { local() };
    let i = l.pending_texts.iter().position(|(h, _)| *h == hash)?;
    Some(l.pending_texts.swap_remove(i).1)
}

/// The statement's text with every literal replaced by $n (used when parse analysis did not
/// leave a normalized text, e.g. after the entry was evicted): constants never reach shmem.
unsafe fn source_text(qd: *mut QueryDesc) -> String {
    // SAFETY: sourceText is a NUL-terminated string owned by the portal, or null.
    unsafe {
        let src = (*qd).sourceText;
        if src.is_null() {
            return String::new();
        }
        let source = std::ffi::CStr::from_ptr(src).to_string_lossy();
        let ps = (*qd).plannedstmt;
        let stmt = normalize::statement_text(&source, (*ps).stmt_location, (*ps).stmt_len);
        normalize::normalize_all_literals(stmt)
    }
}

// ---------------------------------------------------------------------------------------
// Utility statements.
// ---------------------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
#[pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let call = || {
        // SAFETY: chaining with the arguments we were given.
        unsafe {
            match PREV_PROCESS_UTILITY {
                Some(prev) => pg_guard_ffi_boundary(|| {
                    prev(
                        pstmt,
                        query_string,
                        read_only_tree,
                        context,
                        params,
                        query_env,
                        dest,
                        qc,
                    )
                }),
                None => pg_sys::standard_ProcessUtility(
                    pstmt,
                    query_string,
                    read_only_tree,
                    context,
                    params,
                    query_env,
                    dest,
                    qc,
                ),
            }
        }
    };
    // SAFETY: valid PlannedStmt with a utility statement.
    let (queryid, handled) = unsafe {
        let node = (*pstmt).utilityStmt;
        // EXECUTE/PREPARE/DEALLOCATE are accounted through the statements they run.
        let handled = !node.is_null()
            && !matches!(
                (*node).type_,
                pg_sys::NodeTag::T_ExecuteStmt
                    | pg_sys::NodeTag::T_PrepareStmt
                    | pg_sys::NodeTag::T_DeallocateStmt
            );
        ((*pstmt).queryId as i64, handled)
    };
    // SAFETY: backend-local read.
    let nesting = unsafe { local().nesting };
    if !(queryid != 0
        && handled
        && gucs::TRACK_UTILITY.get()
        && tracking(nesting)
        && shmem::available())
    {
        call();
        return;
    }
    let key = current_key(queryid, nesting);
    let hash = key.hash();
    // SAFETY: plain copies of backend-global counters.
    let (buf0, wal0) = unsafe { (pg_sys::pgBufferUsage, pg_sys::pgWalUsage) };
    let start = Instant::now();
    // SAFETY: backend-local.
    let saved = unsafe {
        let l = local();
        let saved = l.in_flight;
        l.in_flight = Some((key, hash));
        l.nesting += 1;
        saved
    };
    PgTryBuilder::new(std::panic::AssertUnwindSafe(call))
        // SAFETY: backend-local.
        .finally(|| unsafe { local().nesting -= 1 })
        .execute();
    // SAFETY: backend-local.
    unsafe { local().in_flight = saved };
    let total_ms = start.elapsed().as_secs_f64() * 1000.0;
    // SAFETY: plain copies of backend-global counters; qc may be null.
    unsafe {
        let (b1, w1) = (pg_sys::pgBufferUsage, pg_sys::pgWalUsage);
        let rows = if qc.is_null() {
            0
        } else {
            (*qc).nprocessed as i64
        };
        let sample = ExecSample {
            total_ms,
            rows,
            buffers: BufferDelta {
                shared_blks_hit: b1.shared_blks_hit - buf0.shared_blks_hit,
                shared_blks_read: b1.shared_blks_read - buf0.shared_blks_read,
                shared_blks_dirtied: b1.shared_blks_dirtied - buf0.shared_blks_dirtied,
                shared_blks_written: b1.shared_blks_written - buf0.shared_blks_written,
                local_blks_hit: b1.local_blks_hit - buf0.local_blks_hit,
                local_blks_read: b1.local_blks_read - buf0.local_blks_read,
                local_blks_dirtied: b1.local_blks_dirtied - buf0.local_blks_dirtied,
                local_blks_written: b1.local_blks_written - buf0.local_blks_written,
                temp_blks_read: b1.temp_blks_read - buf0.temp_blks_read,
                temp_blks_written: b1.temp_blks_written - buf0.temp_blks_written,
                blk_read_ms: instr_ms(&b1.blk_read_time) - instr_ms(&buf0.blk_read_time),
                blk_write_ms: instr_ms(&b1.blk_write_time) - instr_ms(&buf0.blk_write_time),
            },
            wal: WalDelta {
                records: w1.wal_records - wal0.wal_records,
                fpi: w1.wal_fpi - wal0.wal_fpi,
                bytes: w1.wal_bytes.wrapping_sub(wal0.wal_bytes),
            },
            failed: false,
            now: pg_sys::GetCurrentTimestamp(),
        };
        let slow_ms = gucs::SLOW_QUERY_MS.get() as f64;
        let outcome = shmem::record_existing(&key, hash, &sample, slow_ms);
        if !outcome.found {
            let text = if query_string.is_null() {
                String::new()
            } else {
                let source = std::ffi::CStr::from_ptr(query_string).to_string_lossy();
                let stmt =
                    normalize::statement_text(&source, (*pstmt).stmt_location, (*pstmt).stmt_len);
                // Utility statements are keyed by their exact text (core hashes the string),
                // so keep it as is: normalizing would merge nothing and hide what ran.
                stmt.to_string()
            };
            shmem::record_new(&key, hash, &text, &sample, slow_ms);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failed statements: counted when their (sub)transaction aborts.
// ---------------------------------------------------------------------------------------

fn record_failure() {
    // SAFETY: backend-local.
    let flight = unsafe { local().in_flight.take() };
    if let Some((key, hash)) = flight {
        // SAFETY: plain read.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let sample = ExecSample {
            failed: true,
            now,
            ..Default::default()
        };
        let outcome = shmem::record_existing(&key, hash, &sample, -1.0);
        // A statement that fails on its first run still shows up, with the normalized text
        // parse analysis left (statements without constants have none: skipped).
        if !outcome.found {
            if let Some(text) = take_pending_text(hash) {
                shmem::record_new(&key, hash, &text, &sample, -1.0);
            }
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            record_failure();
            // A top-level abort always returns to nesting level 0.
            // SAFETY: backend-local.
            unsafe { local().nesting = 0 };
        }
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        record_failure();
    }
}
