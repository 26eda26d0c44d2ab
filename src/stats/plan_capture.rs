//! EXPLAIN of a finished execution, for slow runs only (like auto_explain, but kept in
//! shared memory instead of the log).
//!
//! Invariants: called from ExecutorEnd before `standard_ExecutorEnd`, while `planstate` and
//! `estate` are alive; everything is palloc'd in the current (per-query) memory context, so
//! nothing leaks past the statement.
//!
//! Plan facts, part of stats' public API: the advisor's what-if planner prints its plans
//! with [`explain`] on an EXPLAIN-only QueryDesc.

use pgrx::pg_sys::{self, QueryDesc};

/// True when the plan nodes carry instrumentation (actual rows), i.e. the run was sampled
/// or run under EXPLAIN ANALYZE.
///
/// # Safety
/// `qd` must be a live QueryDesc between ExecutorStart and ExecutorEnd.
pub unsafe fn has_node_instrumentation(qd: *mut QueryDesc) -> bool {
    // SAFETY: valid QueryDesc; planstate may be null for utility-like executions.
    unsafe {
        let ps = (*qd).planstate;
        !ps.is_null()
            && !(*ps).instrument.is_null()
            && ((*qd).instrument_options & pg_sys::InstrumentOption::INSTRUMENT_ROWS as i32) != 0
    }
}

/// Prints the plan of a started QueryDesc in `format` (with actual rows, timing and buffers
/// when `analyzed` and the run was instrumented for them).
///
/// # Safety
/// `qd` must be a live, started QueryDesc whose planstate has not been shut down yet.
pub unsafe fn explain(
    qd: *mut QueryDesc,
    format: pg_sys::ExplainFormat::Type,
    analyzed: bool,
) -> String {
    // SAFETY: mirrors what EXPLAIN itself does on a live QueryDesc; all allocations are in
    // CurrentMemoryContext.
    unsafe {
        let es = pg_sys::NewExplainState();
        let opts = (*qd).instrument_options;
        (*es).analyze = analyzed;
        (*es).verbose = false;
        (*es).costs = true;
        (*es).buffers =
            analyzed && (opts & pg_sys::InstrumentOption::INSTRUMENT_BUFFERS as i32) != 0;
        (*es).wal = false;
        (*es).timing = analyzed && (opts & pg_sys::InstrumentOption::INSTRUMENT_TIMER as i32) != 0;
        (*es).summary = false;
        (*es).format = format;
        pg_sys::ExplainBeginOutput(es);
        pg_sys::ExplainPrintPlan(es, qd);
        pg_sys::ExplainEndOutput(es);
        let s = (*es).str_;
        let bytes = std::slice::from_raw_parts((*s).data as *const u8, (*s).len.max(0) as usize);
        String::from_utf8_lossy(bytes).trim().to_string()
    }
}

/// The plan as EXPLAIN JSON object `{"Plan": ...}` (see [`explain`]).
///
/// # Safety
/// As for [`explain`].
pub unsafe fn explain_json(qd: *mut QueryDesc, analyzed: bool) -> String {
    // SAFETY: per the function contract.
    let text = unsafe { explain(qd, pg_sys::ExplainFormat::EXPLAIN_FORMAT_JSON, analyzed) };
    // Without the per-query group EXPLAIN itself opens, JSON output is `[ "Plan": … ]`:
    // turn the outer brackets into braces to make it the object `{"Plan": …}`.
    match (text.strip_prefix('['), text.strip_suffix(']')) {
        (Some(_), Some(_)) if text.len() >= 2 => format!("{{{}}}", &text[1..text.len() - 1]),
        _ => text,
    }
}

/// Bind parameters of the run as `$1 = '42', $2 = 'x'` (empty when there are none).
///
/// # Safety
/// `qd` must be a live QueryDesc.
pub unsafe fn params_text(qd: *mut QueryDesc) -> String {
    // SAFETY: params may be null; BuildParamLogString returns a palloc'd string or null.
    unsafe {
        let params = (*qd).params;
        if params.is_null() || (*params).numParams <= 0 {
            return String::new();
        }
        let s = pg_sys::BuildParamLogString(params, std::ptr::null_mut(), 256);
        if s.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned()
    }
}
