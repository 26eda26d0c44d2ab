//! Parse-analysis, executor and utility hooks that feed the statement table.
//!
//! Invariants:
//! - Every hook chains to the hook that was installed before it (or the standard function)
//!   so that a PostgreSQL ERROR raised below reaches the client untouched, every field of it
//!   (never through pgrx's `pg_guard_ffi_boundary`, which rebuilds the error from a few of
//!   its fields): with a plain call where nothing in the frame needs cleaning up, else
//!   inside `crate::pg::try_catch` (PG_TRY, clean up, PG_RE_THROW).
//! - With `perf.enabled = off` or `perf.track = none`, hooks do one GUC read and pass through.
//! - The nesting level is restored on error (a Drop guard runs while the ERROR unwinds), as
//!   pg_stat_statements does with PG_FINALLY, so `toplevel` stays right after a caught error.
//!   (The guards are moved into `try_or_cleanup`, which drops them in its PG_CATCH.)
//! - Backend-local state lives in `LOCAL` (one backend = one thread), reached only through
//!   `with_local`, whose closures are a few lines of bookkeeping: they never call back into
//!   PostgreSQL or reach `LOCAL` again, so borrows never overlap.
//! - The hooks are installed and chained by `crate::pg::hooks` (these are the entry points
//!   it installs; `next_*` continues the chain).
//! - Nothing here holds a lock across a call back into PostgreSQL: locking lives in `shmem`.

// Previous hooks and the standard functions are "C-unwind" functions called directly: an
// ERROR raised below longjmps over frames that hold nothing to drop (see each hook).
#![allow(ffi_unwind_calls)]

use std::time::Instant;

use pgrx::pg_sys::{self, QueryDesc};
use pgrx::prelude::*;

use super::encoding;
use super::normalize;
use super::query_id_memo;
use super::samples;
use super::shmem::{self, BufferDelta, ExecSample, StatKey, WalDelta};
use super::{plan_capture, predicates};
use crate::gucs::{self, TrackLevel};
use crate::pg::backend_local::BackendLocal;
use crate::pg::hooks::{self as pg_hooks, UtilityArgs};
use crate::pg::try_catch::try_or_cleanup;

const KNOWN_SLOTS: usize = 4096;
const WANT_PLAN_SLOTS: usize = 256;
const MAX_PENDING_TEXTS: usize = 256;
const WANT_SAMPLE_SLOTS: usize = 256;
const MAX_PENDING_SAMPLES: usize = 16;

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
    /// Hashes of statements due for a sample of their values whose last run showed none
    /// (simple protocol: the constants are only known at parse analysis): their next
    /// parse analysis cuts the constants out of the text.
    want_sample: [u64; WANT_SAMPLE_SLOTS],
    /// Constants cut out at parse analysis, waiting for the execution (None: too long).
    pending_samples: Vec<(u64, Option<Vec<u8>>)>,
    /// Executions in progress (innermost last).
    running: Vec<Tracked>,
    /// (transaction nesting level, `nesting`) at the start of each open subtransaction:
    /// an ERROR caught by a subtransaction abort longjmps past the executor hooks, so the
    /// abort restores the nesting level from here.
    subxact_nesting: Vec<(i32, i32)>,
    /// Wall clock minus monotonic clock, in µs (0 = not measured yet).
    wall_offset_us: i64,
    rng: u64,
}

static LOCAL: BackendLocal<Local> = BackendLocal::new(Local {
    nesting: 0,
    known: [0; KNOWN_SLOTS],
    known_gen: 0,
    pending_texts: Vec::new(),
    want_analyzed_plan: [0; WANT_PLAN_SLOTS],
    want_sample: [0; WANT_SAMPLE_SLOTS],
    pending_samples: Vec::new(),
    running: Vec::new(),
    subxact_nesting: Vec::new(),
    wall_offset_us: 0,
    rng: 0x9e37_79b9_7f4a_7c15,
});

/// Runs `f` on this backend's bookkeeping. Every closure passed in this module is a few
/// lines on `Local` (at most recording into shared memory, which never reaches `LOCAL`):
/// no nested `with_local`, no call that can re-enter a hook or callback.
#[inline(always)]
fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> R {
    // SAFETY: single-threaded backend, and per the rule above no closure reaches LOCAL
    // again or can re-enter a hook while it runs.
    unsafe { LOCAL.with(f) }
}

/// Whether statements at `nesting` are recorded in this backend right now.
#[inline]
fn tracking(nesting: i32) -> bool {
    if !gucs::enabled() {
        return false;
    }
    let level_ok = match gucs::track() {
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
            userid: crate::pg::backend::current_user_id(),
            dbid: pg_sys::MyDatabaseId.to_u32(),
            queryid,
            toplevel: nesting == 0,
        }
    }
}

/// xorshift64*: a cheap random number that needs no syscall or FFI.
#[inline]
fn random() -> u64 {
    with_local(|l| {
        l.rng ^= l.rng >> 12;
        l.rng ^= l.rng << 25;
        l.rng ^= l.rng >> 27;
        l.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// True with probability `rate`.
#[inline]
fn sample(rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    ((random() >> 11) as f64 / (1u64 << 53) as f64) < rate
}

#[inline]
fn is_known(hash: u64) -> bool {
    let g = shmem::generation();
    with_local(|l| {
        if l.known_gen != g {
            l.known = [0; KNOWN_SLOTS];
            l.known_gen = g;
            return false;
        }
        l.known[hash as usize % KNOWN_SLOTS] == hash
    })
}

#[inline]
fn mark_known(hash: u64) {
    with_local(|l| l.known[hash as usize % KNOWN_SLOTS] = hash);
}

// ---------------------------------------------------------------------------------------
// post_parse_analyze: normalize the text of statements with constants, once.
// ---------------------------------------------------------------------------------------

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    let nesting = with_local(|l| l.nesting);
    let tracked = tracking(nesting);
    let mut jstate = jstate;
    let mut id_from_memo = false;
    // SAFETY: PostgreSQL passes valid pointers; the id is set before any other hook runs,
    // so the previous hooks (and everything downstream) see it. Ids are given at every
    // level, as core would (EXPLAIN VERBOSE and pg_stat_activity show them).
    unsafe {
        if (*query).queryId == 0 && gucs::enabled() && gucs::track() != TrackLevel::None {
            jstate = query_id_memo::assign(pstate, query, nesting == 0);
            id_from_memo = jstate.is_null() && (*query).queryId != 0;
        }
        // A plain call: nothing in this frame needs dropping if it raises an ERROR.
        pg_hooks::next_post_parse_analyze(pstate, query, jstate);
    }
    // SAFETY: PostgreSQL passes valid pointers; jstate may be null.
    unsafe {
        if (*query).queryId == 0 || !tracked || !shmem::available() {
            return;
        }
        let key = current_key((*query).queryId as i64, nesting);
        let hash = key.hash();
        let known = is_known(hash);
        // A known statement: only when it is due for a sample of its constants (one
        // comparison otherwise).
        let want_sample =
            gucs::capture_sample_values() && (!known || with_local(|l| take_want_sample(l, hash)));
        if known && !want_sample {
            return;
        }
        // A statement whose id came from the memo: its constants' locations are only
        // known to the jumble.
        if id_from_memo {
            jstate = query_id_memo::jumble_state(pstate, query);
        }
        let source = (*pstate).p_sourcetext;
        if jstate.is_null() || source.is_null() {
            return;
        }
        // Bytes in the database encoding: the locations are offsets into them.
        let source = std::ffi::CStr::from_ptr(source).to_bytes();
        let n = (*jstate).clocations_count.max(0) as usize;
        let locs: Vec<i32> = if n == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*jstate).clocations, n)
                .iter()
                .map(|l| l.location)
                .collect()
        };
        if want_sample {
            let constants = constants_sample(source, query, &locs);
            with_local(|l| {
                if l.pending_samples.len() >= MAX_PENDING_SAMPLES {
                    l.pending_samples.clear();
                }
                l.pending_samples.retain(|(h, _)| *h != hash);
                l.pending_samples.push((hash, constants));
            });
        }
        if known || locs.is_empty() {
            return;
        }
        let text = encoding::server_to_utf8(&normalize::normalize_statement_bytes(
            source,
            (*query).stmt_location,
            (*query).stmt_len,
            &locs,
        ));
        with_local(|l| {
            if l.pending_texts.len() >= MAX_PENDING_TEXTS {
                l.pending_texts.clear();
            }
            l.pending_texts.retain(|(h, _)| *h != hash);
            l.pending_texts.push((hash, text));
        });
    }
}

/// Clears and returns the "due for a sample" mark of `hash` in this backend.
#[inline]
fn take_want_sample(l: &mut Local, hash: u64) -> bool {
    let slot = &mut l.want_sample[hash as usize % WANT_SAMPLE_SLOTS];
    if *slot == hash {
        *slot = 0;
        true
    } else {
        false
    }
}

/// The statement's constants as an encoded sample (`$n` numbers as in its normalized
/// text), None when they do not fit.
///
/// # Safety
/// `query` is the Query being analyzed, `source` its source text.
unsafe fn constants_sample(
    source: &[u8],
    query: *mut pg_sys::Query,
    locs: &[i32],
) -> Option<Vec<u8>> {
    // SAFETY: valid Query.
    let (location, len) = unsafe { ((*query).stmt_location, (*query).stmt_len) };
    let (text, values) = normalize::statement_constants(source, location, len, locs);
    let converted: Vec<(u32, Vec<u8>)> = values
        .into_iter()
        .map(|(n, r)| {
            let bytes = text.get(r).unwrap_or(&[]);
            (n, encoding::server_to_utf8(bytes).into_bytes())
        })
        .collect();
    samples::encode(converted.iter().map(|(n, v)| (*n, v.as_slice())))
}

/// The bind parameters of a run as an encoded sample, each `'text'::type` from its type's
/// output function. Only built-in types whose output function is built in (no user code
/// runs), parameters without a fetch hook (PL/pgSQL's are evaluated lazily): others are
/// left out. None: no parameters. Some(None): they do not fit.
///
/// # Safety
/// `qd` is a live QueryDesc.
unsafe fn params_sample(qd: *mut QueryDesc) -> Option<Option<Vec<u8>>> {
    // SAFETY: params may be null; when set, `params[..numParams]` are initialized (no fetch
    // hook); the type lookups are syscache reads; output functions are built-in ones.
    unsafe {
        let params = (*qd).params;
        if params.is_null() || (*params).numParams <= 0 || (*params).paramFetch.is_some() {
            return None;
        }
        let n = (*params).numParams as usize;
        let list = (*params).params.as_slice(n);
        let mut values: Vec<(u32, Vec<u8>)> = Vec::with_capacity(n);
        let mut total = 0;
        for (i, p) in list.iter().enumerate() {
            let ptype = p.ptype;
            let t = ptype.to_u32();
            if t == 0
                || t >= pg_sys::FirstNormalObjectId
                || ptype == pg_sys::RECORDOID
                || ptype == pg_sys::RECORDARRAYOID
            {
                continue;
            }
            let type_name = std::ffi::CStr::from_ptr(pg_sys::format_type_be(ptype))
                .to_string_lossy()
                .into_owned();
            let literal = if p.isnull {
                samples::param_literal(None, &type_name)
            } else {
                let mut output = pg_sys::Oid::INVALID;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(ptype, &mut output, &mut varlena);
                if output.to_u32() >= pg_sys::FirstGenbkiObjectId {
                    continue;
                }
                // A long varlena is not printed at all: it could not be kept.
                if varlena && pg_sys::toast_raw_datum_size(p.value) > samples::SAMPLE_BYTES {
                    return Some(None);
                }
                let text = pg_sys::OidOutputFunctionCall(output, p.value);
                let value = encoding::server_to_utf8(std::ffi::CStr::from_ptr(text).to_bytes());
                samples::param_literal(Some(&value), &type_name)
            };
            total += literal.len() + 4;
            if total > samples::SAMPLE_BYTES {
                return Some(None);
            }
            values.push((i as u32 + 1, literal.into_bytes()));
        }
        Some(samples::encode(
            values.iter().map(|(n, v)| (*n, v.as_slice())),
        ))
    }
}

/// A run of a statement due for a sample: keeps its values (parameters from the executor,
/// constants cut out at parse analysis), or marks the statement so that its next parse
/// analysis in this backend cuts out its constants.
///
/// # Safety
/// `qd` is a live QueryDesc.
unsafe fn capture_sample(
    qd: *mut QueryDesc,
    key: &StatKey,
    hash: u64,
    constants: Option<Option<Vec<u8>>>,
) {
    // SAFETY: per contract.
    let params = unsafe { params_sample(qd) };
    let merged = match (constants, params) {
        (None, None) => {
            with_local(|l| l.want_sample[hash as usize % WANT_SAMPLE_SLOTS] = hash);
            return;
        }
        (Some(Some(c)), Some(Some(p))) => samples::merge(&c, &p),
        (Some(Some(v)), None) | (None, Some(Some(v))) => Some(v),
        _ => None,
    };
    let capture = match &merged {
        Some(v) if v.is_empty() => shmem::SampleCapture::NoValues,
        Some(v) => shmem::SampleCapture::Values(v),
        None => shmem::SampleCapture::Skip,
    };
    shmem::store_sample(key, hash, capture, random());
}

/// Constants cut out at parse analysis for `hash`, if any (nothing to scan usually).
#[inline]
fn take_pending_sample(hash: u64) -> Option<Option<Vec<u8>>> {
    with_local(|l| {
        if l.pending_samples.is_empty() {
            return None;
        }
        let i = l.pending_samples.iter().position(|(h, _)| *h == hash)?;
        Some(l.pending_samples.swap_remove(i).1)
    })
}

// ---------------------------------------------------------------------------------------
// Executor hooks.
//
// A tracked execution gets an entry on `Local::running` at ExecutorStart; ExecutorRun and
// ExecutorFinish add their wall time and buffer/WAL deltas to it (read straight from the
// backend's global counters, so no Instrumentation is allocated), ExecutorEnd pops it and
// records it.
//
// These four hooks run for every statement, so they chain to the next hook (or the
// standard function) with a plain call, not through pgrx's FFI boundary (a sigsetjmp per
// call). An ERROR raised below them therefore longjmps straight past their frames, which
// hold nothing that needs dropping at that point (no guards, no owned allocations): the
// bookkeeping such an ERROR interrupts is repaired by the (sub)transaction abort
// callbacks instead, which record the executions started inside the aborted
// (sub)transaction as failed and restore the nesting level saved when it started.
// ---------------------------------------------------------------------------------------

/// One execution being tracked (identified by its QueryDesc, or PlannedStmt for utilities).
struct Tracked {
    id: usize,
    key: StatKey,
    hash: u64,
    elapsed_ns: u64,
    buffers: BufferDelta,
    wal: WalDelta,
    /// Set when an ERROR unwound through a (guarded) utility execution.
    failed: bool,
    /// Transaction nesting level the execution started at: an abort of that level or an
    /// outer one means it failed. `i32::MAX` for utility executions, which are guarded
    /// (`failed` says it) and can themselves end subtransactions (ROLLBACK TO SAVEPOINT).
    xact_level: i32,
}

/// Entries beyond this are not tracked (deeply nested or leaked executions).
const MAX_RUNNING: usize = 64;

/// Starts tracking an execution (identified by `id`) that began at transaction nesting
/// level `xact_level`.
fn push_running(id: usize, key: StatKey, hash: u64, xact_level: i32) {
    with_local(|l| {
        l.running.push(Tracked {
            id,
            key,
            hash,
            elapsed_ns: 0,
            buffers: BufferDelta::default(),
            wal: WalDelta::default(),
            failed: false,
            xact_level,
        })
    });
}

fn local_running_len() -> usize {
    with_local(|l| l.running.len())
}

fn find_running(id: usize) -> Option<usize> {
    with_local(|l| l.running.iter().rposition(|t| t.id == id))
}

/// Raises the nesting level for its lifetime (also when an ERROR unwinds through it).
struct NestingGuard;

impl NestingGuard {
    #[inline]
    fn enter() -> Self {
        with_local(|l| l.nesting += 1);
        NestingGuard
    }
}

impl Drop for NestingGuard {
    #[inline]
    fn drop(&mut self) {
        with_local(|l| l.nesting -= 1);
    }
}

/// Monotonic clock in nanoseconds (vDSO, no syscall, no FFI guard needed).
#[inline]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Adds (`sign` = +1) or removes (-1) the current clock and usage counters to the running
/// entry `i`: -1 when a Run/Finish call starts, +1 when it returns, so the entry ends up
/// with the sum over its calls and nothing is copied in between.
#[inline]
fn meter(i: usize, sign: i64) {
    let now = monotonic_ns();
    // SAFETY: plain reads of the backend's usage counters (globals of this
    // single-threaded process, read through raw pointers, not modified while we read).
    let (buffers, wal) = unsafe {
        (
            &*std::ptr::addr_of!(pg_sys::pgBufferUsage),
            &*std::ptr::addr_of!(pg_sys::pgWalUsage),
        )
    };
    with_local(|l| {
        if let Some(t) = l.running.get_mut(i) {
            t.elapsed_ns = t.elapsed_ns.wrapping_add((sign as u64).wrapping_mul(now));
            t.buffers.accumulate(buffers, sign);
            t.wal.accumulate(wal, sign);
        }
    });
}

/// Meters one Run/Finish call of a tracked execution. Dropped without `finish()` means an
/// ERROR is unwinding through the call: the execution failed.
struct RunMeter {
    id: usize,
    done: bool,
}

impl RunMeter {
    #[inline]
    fn start(id: usize, index: usize) -> Self {
        meter(index, -1);
        RunMeter { id, done: false }
    }

    #[inline]
    fn finish(mut self) {
        self.done = true;
        // The entry may have moved if an inner execution ended out of order: look it up.
        if let Some(i) = find_running(self.id) {
            meter(i, 1);
        }
    }
}

impl Drop for RunMeter {
    fn drop(&mut self) {
        if !self.done {
            if let Some(i) = find_running(self.id) {
                // A plain store (we may be unwinding).
                with_local(|l| l.running[i].failed = true);
            }
        }
    }
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn executor_start(qd: *mut QueryDesc, eflags: i32) {
    // SAFETY: PostgreSQL passes a valid QueryDesc whose plannedstmt is set.
    let tracked = unsafe {
        let queryid = (*(*qd).plannedstmt).queryId as i64;
        let (nesting, room) = with_local(|l| (l.nesting, l.running.len() < MAX_RUNNING));
        let track = queryid != 0
            && (eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32) == 0
            && tracking(nesting)
            && shmem::available()
            && room;
        if track {
            let key = current_key(queryid, nesting);
            let hash = key.hash();
            let wants =
                with_local(|l| l.want_analyzed_plan[hash as usize % WANT_PLAN_SLOTS] == hash);
            if gucs::slow_query_ms() >= 0.0 && (wants || sample(gucs::plan_sample_rate())) {
                (*qd).instrument_options |= pg_sys::InstrumentOption::INSTRUMENT_ALL as i32;
            }
            Some((key, hash))
        } else {
            None
        }
    };
    // SAFETY: chaining with the arguments we were given; nothing in this frame needs
    // dropping if it raises an ERROR (see the section comment).
    unsafe { pg_hooks::next_executor_start(qd, eflags) };
    if let Some((key, hash)) = tracked {
        let level = crate::pg::backend::transaction_nest_level();
        push_running(qd as usize, key, hash, level);
    }
}

/// Not `#[pg_guard]`ed (a catch_unwind and a thread check per call): the body only does
/// panic-free bookkeeping on backend-local state (lookups with `get`, no allocation), and
/// PostgreSQL ERRORs below it longjmp past it as described above.
pub(crate) unsafe extern "C-unwind" fn executor_run(
    qd: *mut QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    let metered = find_running(qd as usize).map(|i| meter(i, -1)).is_some();
    // Restored below, or by the abort callbacks after an ERROR.
    with_local(|l| l.nesting = l.nesting.wrapping_add(1));
    // SAFETY: chaining with the arguments we were given; nothing in this frame needs
    // dropping if it raises an ERROR.
    unsafe { pg_hooks::next_executor_run(qd, direction, count, execute_once) };
    with_local(|l| l.nesting = l.nesting.wrapping_sub(1));
    if metered {
        end_metering(qd as usize);
    }
}

/// Not `#[pg_guard]`ed, like `executor_run`.
pub(crate) unsafe extern "C-unwind" fn executor_finish(qd: *mut QueryDesc) {
    // For a plain SELECT, ExecutorFinish has nothing to do (no AFTER triggers, no
    // ModifyTable post-processing), so it is not metered: saves two clock reads per query.
    // SAFETY: valid QueryDesc from PostgreSQL.
    let trivial = unsafe {
        (*qd).operation == pg_sys::CmdType::CMD_SELECT && !(*(*qd).plannedstmt).hasModifyingCTE
    };
    let metered = !trivial && find_running(qd as usize).map(|i| meter(i, -1)).is_some();
    with_local(|l| l.nesting = l.nesting.wrapping_add(1));
    // SAFETY: as in executor_run.
    unsafe { pg_hooks::next_executor_finish(qd) };
    with_local(|l| l.nesting = l.nesting.wrapping_sub(1));
    if metered {
        end_metering(qd as usize);
    }
}

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn executor_end(qd: *mut QueryDesc) {
    if let Some(i) = find_running(qd as usize) {
        // The entry is removed before anything can re-enter.
        let t = with_local(|l| l.running.remove(i));
        // SAFETY: live QueryDesc; estate/planstate are alive until standard_ExecutorEnd.
        unsafe { record_execution(qd, &t) };
    }
    // SAFETY: chaining with the arguments we were given; nothing here needs dropping.
    unsafe { pg_hooks::next_executor_end(qd) };
}

/// Ends a Run/Finish call of the tracked execution `id` (started with `meter(i, -1)`).
/// The entry may have moved if an inner execution ended out of order: it is looked up.
#[inline]
fn end_metering(id: usize) {
    if let Some(i) = find_running(id) {
        meter(i, 1);
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's TimestampTz). Derived from the monotonic
/// clock plus an offset to wall time taken once per backend: one vDSO call, no FFI.
fn now_timestamptz() -> i64 {
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    let mono_us = (monotonic_ns() / 1000) as i64;
    with_local(|l| {
        if l.wall_offset_us == 0 {
            let wall_us = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_micros() as i64,
                Err(_) => 0,
            };
            l.wall_offset_us = wall_us - PG_EPOCH_OFFSET_US - mono_us;
        }
        mono_us + l.wall_offset_us
    })
}

/// Folds a finished execution into shared memory; captures its plan if it was slow and its
/// predicates if this statement has none recorded yet.
unsafe fn record_execution(qd: *mut QueryDesc, t: &Tracked) {
    // SAFETY: called from executor_end with a live QueryDesc.
    unsafe {
        let total_ms = t.elapsed_ns as f64 / 1_000_000.0;
        let sample = ExecSample {
            total_ms,
            rows: (*(*qd).estate).es_processed as i64,
            buffers: t.buffers,
            wal: t.wal,
            failed: false,
            now: now_timestamptz(),
        };
        let (key, hash) = (t.key, t.hash);
        let slow_ms = gucs::slow_query_ms();
        let mut outcome = shmem::record_existing(&key, hash, &sample, slow_ms);
        if !outcome.found {
            let text = take_pending_text(hash).unwrap_or_else(|| source_text(qd));
            outcome = shmem::record_new(&key, hash, &text, &sample, slow_ms);
        }
        mark_known(hash);
        let constants = take_pending_sample(hash);
        if outcome.sample_due && gucs::capture_sample_values() {
            capture_sample(qd, &key, hash, constants);
        }

        if slow_ms >= 0.0 && total_ms >= slow_ms {
            let analyzed = plan_capture::has_node_instrumentation(qd);
            let improves = (analyzed && !outcome.plan_analyzed)
                || (total_ms > outcome.plan_ms && (analyzed || !outcome.plan_analyzed));
            if improves {
                let plan = plan_capture::explain_json(qd, analyzed);
                let params = plan_capture::params_text(qd);
                let text = statement_sample(qd);
                shmem::store_plan(
                    &key,
                    hash,
                    &shmem::CapturedPlan {
                        exec_ms: total_ms,
                        analyzed,
                        plan: &plan,
                        params: &params,
                        sample: &text,
                        captured_at: sample.now,
                    },
                );
            }
            let plan_analyzed = analyzed || outcome.plan_analyzed;
            with_local(|l| {
                let slot = &mut l.want_analyzed_plan[hash as usize % WANT_PLAN_SLOTS];
                if plan_analyzed {
                    if *slot == hash {
                        *slot = 0;
                    }
                } else {
                    *slot = hash;
                }
            });
        }

        if outcome.predicates_needed && gucs::capture_predicates() {
            let preds = predicates::collect(qd);
            shmem::store_predicates(&key, hash, &preds);
        }
    }
}

/// The statement's own text with its constants, for the slowest run kept with its plan.
unsafe fn statement_sample(qd: *mut QueryDesc) -> String {
    // SAFETY: per this function's caller (a live QueryDesc).
    encoding::server_to_utf8(unsafe { statement_bytes(qd) })
}

/// The statement's own bytes (in the database encoding).
unsafe fn statement_bytes<'a>(qd: *mut QueryDesc) -> &'a [u8] {
    // SAFETY: sourceText is a NUL-terminated string owned by the portal, or null.
    unsafe {
        let src = (*qd).sourceText;
        if src.is_null() {
            return &[];
        }
        let source = std::ffi::CStr::from_ptr(src).to_bytes();
        let ps = (*qd).plannedstmt;
        normalize::statement_bytes(source, (*ps).stmt_location, (*ps).stmt_len)
    }
}

fn take_pending_text(hash: u64) -> Option<String> {
    with_local(|l| {
        let i = l.pending_texts.iter().position(|(h, _)| *h == hash)?;
        Some(l.pending_texts.swap_remove(i).1)
    })
}

/// The statement's text with every literal replaced by $n (used when parse analysis did not
/// leave a normalized text, e.g. after the entry was evicted): constants never reach shmem.
unsafe fn source_text(qd: *mut QueryDesc) -> String {
    // SAFETY: per this function's caller (a live QueryDesc).
    encoding::server_to_utf8(&normalize::normalize_all_literals_bytes(unsafe {
        statement_bytes(qd)
    }))
}

// ---------------------------------------------------------------------------------------
// Planning (only installed with perf.track_planning = on).
// ---------------------------------------------------------------------------------------

#[pg_guard]
pub(crate) unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    // Only captures Copy values and calls C: fit for `try_or_cleanup`.
    let call = || {
        // SAFETY: chaining with the arguments we were given.
        unsafe { pg_hooks::next_planner(parse, query_string, cursor_options, bound_params) }
    };
    // SAFETY: valid Query from PostgreSQL.
    let queryid = unsafe { (*parse).queryId as i64 };
    let nesting = with_local(|l| l.nesting);
    if queryid == 0 || query_string.is_null() || !tracking(nesting) || !shmem::available() {
        // A plain call: nothing in this frame needs dropping if it raises an ERROR.
        return call();
    }
    let key = current_key(queryid, nesting);
    let started = Instant::now();
    // Statements run while planning (e.g. by functions folded into constants) are nested.
    // SAFETY: `call` only calls C; this frame holds nothing else that needs dropping.
    let (plan, nesting_guard) = unsafe { try_or_cleanup(NestingGuard::enter(), call) };
    drop(nesting_guard);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let hash = key.hash();
    shmem::record_planning(&key, hash, ms, now_timestamptz(), || {
        take_pending_text(hash).unwrap_or_else(|| {
            // SAFETY: NUL-terminated source text of the statement being planned.
            let source = unsafe { std::ffi::CStr::from_ptr(query_string) }.to_bytes();
            // SAFETY: valid Query.
            let (loc, len) = unsafe { ((*parse).stmt_location, (*parse).stmt_len) };
            encoding::server_to_utf8(&normalize::normalize_all_literals_bytes(
                normalize::statement_bytes(source, loc, len),
            ))
        })
    });
    plan
}

// ---------------------------------------------------------------------------------------
// Utility statements.
// ---------------------------------------------------------------------------------------

/// The statistics part of ProcessUtility_hook (called by `crate::pg::hooks`, which runs
/// change tracking first): runs the statement through the rest of the chain, one nesting
/// level deeper, and records it. `change` (change tracking's guard for this statement) is
/// held while the statement runs and dropped after it, also on ERROR.
///
/// # Safety
/// `a` holds the arguments ProcessUtility_hook was called with; dropping `change` must not
/// raise an ERROR.
pub(crate) unsafe fn process_utility<G>(a: UtilityArgs, change: G) {
    let UtilityArgs {
        pstmt,
        query_string,
        qc,
        ..
    } = a;
    // Only captures Copy values and calls C: fit for `try_or_cleanup`, which is how it is
    // called below (the guards this hook holds must be released if it raises an ERROR).
    // SAFETY: chaining with the arguments we were given.
    let call = || unsafe { pg_hooks::next_process_utility(a) };
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
    let (nesting, room) = with_local(|l| (l.nesting, l.running.len() < MAX_RUNNING));
    if !(queryid != 0
        && handled
        && room
        && gucs::track_utility()
        && tracking(nesting)
        && shmem::available())
    {
        // Nested statements run by this utility (DO, CALL, CREATE TABLE AS, EXPLAIN
        // ANALYZE, ...) are one level deeper, as with pg_stat_statements.
        // SAFETY: `call` only calls C; every value of this frame that needs dropping is
        // moved into the cleanup (dropped in this order on ERROR, then re-thrown).
        let ((), guards) = unsafe { try_or_cleanup((NestingGuard::enter(), change), call) };
        drop(guards);
        return;
    }
    let key = current_key(queryid, nesting);
    let hash = key.hash();
    let id = pstmt as usize;
    push_running(id, key, hash, i32::MAX);
    let meter = RunMeter::start(id, local_running_len() - 1);
    // SAFETY: as above; on ERROR the meter's drop marks the execution failed.
    let ((), (nesting_guard, meter, _change)) =
        unsafe { try_or_cleanup((NestingGuard::enter(), meter, change), call) };
    drop(nesting_guard);
    meter.finish();
    let Some(i) = find_running(id) else { return };
    let t = with_local(|l| l.running.remove(i));
    // SAFETY: qc may be null; query_string is the NUL-terminated source text or null.
    unsafe {
        let rows = if qc.is_null() {
            0
        } else {
            (*qc).nprocessed as i64
        };
        let sample = ExecSample {
            total_ms: t.elapsed_ns as f64 / 1_000_000.0,
            rows,
            buffers: t.buffers,
            wal: t.wal,
            failed: false,
            now: now_timestamptz(),
        };
        let slow_ms = gucs::slow_query_ms();
        let outcome = shmem::record_existing(&key, hash, &sample, slow_ms);
        if !outcome.found {
            let text = if query_string.is_null() {
                String::new()
            } else {
                let source = std::ffi::CStr::from_ptr(query_string).to_bytes();
                // Utility statements are keyed by their exact text (core hashes the string),
                // so it is kept as is: normalizing would merge nothing and hide what ran.
                encoding::server_to_utf8(normalize::statement_bytes(
                    source,
                    (*pstmt).stmt_location,
                    (*pstmt).stmt_len,
                ))
            };
            shmem::record_new(&key, hash, &text, &sample, slow_ms);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Failed statements: counted when their (sub)transaction aborts. These callbacks run for
// every transaction, so they are not wrapped by #[pg_guard] (which costs a catch_unwind per
// call): the common path is a comparison, and the abort path runs under catch_unwind.
// ---------------------------------------------------------------------------------------

/// Records the executions that an aborting (sub)transaction interrupted, and drops them:
/// executor entries started at the aborted level `level` or deeper (an ERROR longjmped
/// past their hooks), and utility entries an ERROR unwound through. At top-level abort
/// every entry goes (`level` 1) and the nesting level returns to 0; at subtransaction
/// abort it returns to what it was when the subtransaction started.
fn record_failures(level: i32) {
    let now = now_timestamptz();
    // No hook can run while this callback runs; shared memory is not LOCAL.
    let result = std::panic::catch_unwind(|| {
        with_local(|l| {
            let interrupted = |t: &Tracked| t.failed || t.xact_level >= level;
            for t in l.running.iter().filter(|t| interrupted(t)) {
                let sample = ExecSample {
                    failed: true,
                    now,
                    ..Default::default()
                };
                let outcome = shmem::record_existing(&t.key, t.hash, &sample, -1.0);
                // A statement that fails on its first run still shows up, with the normalized
                // text parse analysis left (statements without constants have none: skipped).
                if !outcome.found {
                    if let Some(i) = l.pending_texts.iter().position(|(h, _)| *h == t.hash) {
                        let text = l.pending_texts.swap_remove(i).1;
                        shmem::record_new(&t.key, t.hash, &text, &sample, -1.0);
                    }
                }
            }
            if level <= 1 {
                l.running.clear();
                l.subxact_nesting.clear();
                l.nesting = 0;
            } else {
                l.running.retain(|t| !interrupted(t));
                while let Some(&(started, nesting)) = l.subxact_nesting.last() {
                    if started < level {
                        break;
                    }
                    l.subxact_nesting.pop();
                    if started == level {
                        l.nesting = nesting;
                    }
                }
            }
        })
    });
    if result.is_err() {
        // Nothing sensible to do inside an abort; the statistics just miss this failure.
        with_local(|l| l.running.clear());
    }
}

/// Transaction events (called from `crate::pg::xact`).
pub(crate) fn on_xact_event(event: pg_sys::XactEvent::Type) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            record_failures(1)
        }
        // Every execution of the transaction has ended by commit; forget leftovers.
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            with_local(|l| {
                if !l.running.is_empty() {
                    l.running.clear();
                }
            });
        }
        _ => {}
    }
}

/// Subtransaction events (called from `crate::pg::xact`).
pub(crate) fn on_subxact_event(event: pg_sys::SubXactEvent::Type) {
    // The level of the subtransaction the event is about.
    let level = crate::pg::backend::transaction_nest_level();
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_START_SUB => {
            with_local(|l| l.subxact_nesting.push((level, l.nesting)));
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => with_local(|l| {
            while l
                .subxact_nesting
                .last()
                .is_some_and(|&(started, _)| started >= level)
            {
                l.subxact_nesting.pop();
            }
        }),
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => record_failures(level),
        _ => {}
    }
}
