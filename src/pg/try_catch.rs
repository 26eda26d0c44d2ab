//! `PG_TRY` / `PG_CATCH` / `PG_RE_THROW` for code that calls back into PostgreSQL.
//!
//! pgrx's `pg_guard_ffi_boundary` catches a PostgreSQL ERROR, copies a few of its fields
//! into a Rust panic and lets `#[pg_guard]` raise a new, rebuilt ERROR from them: the
//! schema/table/column/datatype/constraint names, the cursor and internal positions, the
//! internal query and the error context stack of the original are lost, and an SQLSTATE
//! pgrx does not know becomes XX000. A hook that must be invisible cannot do that. Here
//! the original error is always re-thrown untouched, every field intact:
//! - `try_or_cleanup` does what C code does with
//!   `PG_TRY(); ... PG_CATCH(); cleanup; PG_RE_THROW(); PG_END_TRY();` (hooks).
//! - `try_capture` catches the error as a `CaughtError` (a copy of its `ErrorData`, the
//!   error state flushed) so that Rust frames owning values can be unwound normally, and
//!   `rethrowing` around a SQL function's body re-throws it with `ReThrowError` once they
//!   are (SQL functions that run user queries). `try_capture_query` adds the error context
//!   SPI gives a query it parses or plans.
//!
//! Invariants (the callers' side of the contract, checked where possible by the types):
//! - The body is a plain call into PostgreSQL: it captures only `Copy` values (so nothing
//!   it owns needs dropping when an ERROR longjmps out of it) and never panics (it runs
//!   behind an `extern "C"` frame, where a panic aborts the process). Call PostgreSQL
//!   through raw `extern "C-unwind"` declarations, not pgrx's wrappers, which would turn
//!   the ERROR into a panic.
//! - `try_or_cleanup`: everything that must be cleaned up on ERROR is moved in as
//!   `cleanup` and comes back on success; dropping it must not raise an ERROR (a panic
//!   there is swallowed). The frames between the caller and the next outer `PG_TRY` hold
//!   nothing that needs dropping while the body runs: the re-throw longjmps over them.
//! - `try_capture`: after a `CaughtError`, call nothing in PostgreSQL that could depend on
//!   the failed state (the transaction is aborting); unwind with `CaughtError::raise` up to
//!   `rethrowing`, whose frames up to pgrx's function wrapper hold nothing to drop.
//!
//! Cost: one `sigsetjmp` without signal mask (no system call) per call. Keep it off
//! per-statement paths that hold nothing to clean up; those call the next hook directly.

// pg_re_throw and ReThrowError longjmp (they do not unwind), over frames that hold nothing
// to drop.
#![allow(ffi_unwind_calls)]

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use pgrx::pg_sys;

mod raw {
    use pgrx::pg_sys::ErrorData;
    unsafe extern "C-unwind" {
        /// `PG_RE_THROW()`: longjmps to the next outer handler with the current error.
        pub fn pg_re_throw() -> !;
        pub fn ReThrowError(edata: *mut ErrorData) -> !;
        pub fn CopyErrorData() -> *mut ErrorData;
        pub fn FlushErrorState();
    }
    // Called from an error context callback, while the error is being reported: they only
    // set fields of the current error.
    unsafe extern "C" {
        pub fn geterrposition() -> i32;
        pub fn errposition(cursorpos: i32) -> i32;
        pub fn internalerrposition(cursorpos: i32) -> i32;
        pub fn internalerrquery(query: *const std::ffi::c_char) -> i32;
        pub fn set_errcontext_domain(domain: *const std::ffi::c_char) -> i32;
        pub fn errcontext_msg(fmt: *const std::ffi::c_char, ...) -> i32;
    }
}

/// Runs `body` inside `PG_TRY`: `Some` of its result, or `None` if it raised an ERROR, which
/// is then still the current error (the `PG_CATCH` state; exception and context stacks are
/// restored either way).
///
/// # Safety
/// As `try_or_cleanup`'s body; the caller must end the `PG_CATCH` state (re-throw or copy
/// and flush the error) before calling anything else in PostgreSQL.
#[inline]
unsafe fn pg_try<R, F>(body: F) -> Option<R>
where
    F: FnOnce() -> R + Copy,
{
    // SAFETY: the saved stacks are restored on both paths before anything else runs, as
    // PG_TRY/PG_END_TRY do; the jump buffer lives in call_with_sigsetjmp's frame, which is
    // alive for as long as it is installed as PG_exception_stack.
    unsafe {
        let save_exception_stack = pg_sys::PG_exception_stack;
        let save_context_stack = pg_sys::error_context_stack;
        let mut result = MaybeUninit::<R>::uninit();
        let result_ptr = result.as_mut_ptr();
        let jumped = cee_scape::call_with_sigsetjmp(false, |jump_buffer| {
            pg_sys::PG_exception_stack = std::ptr::from_ref(jump_buffer).cast_mut().cast();
            result_ptr.write(body());
            0
        });
        pg_sys::PG_exception_stack = save_exception_stack;
        pg_sys::error_context_stack = save_context_stack;
        (jumped == 0).then(|| result.assume_init())
    }
}

/// Runs `body` inside `PG_TRY`. On success returns its result together with `cleanup`.
/// If `body` raises an ERROR, drops `cleanup` (in `PG_CATCH`) and re-throws the original
/// error (`PG_RE_THROW`), so the caller never sees it return.
///
/// # Safety
/// See the module invariants: `body` must not panic; the caller's frames up to the next
/// outer `PG_TRY` (normally: up to the hook's entry point) hold no values that need
/// dropping; dropping `cleanup` must not raise an ERROR. Main thread only.
#[inline]
pub unsafe fn try_or_cleanup<G, R, F>(cleanup: G, body: F) -> (R, G)
where
    F: FnOnce() -> R + Copy,
{
    // SAFETY: per this function's contract.
    match unsafe { pg_try(body) } {
        Some(r) => (r, cleanup),
        None => {
            // PG_CATCH: the error is still on PostgreSQL's error data stack. A panic while
            // cleaning up must not replace it: ignored.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(cleanup)));
            // SAFETY: re-throws the current error to the next outer handler.
            unsafe { raw::pg_re_throw() }
        }
    }
}

/// An ERROR caught by `try_capture`: a copy of its `ErrorData`, in the memory context that
/// was current when `try_capture` was called (which must live until it is re-thrown).
pub struct CaughtError(*mut pg_sys::ErrorData);

// SAFETY: only ever used on the backend's main thread; Send is needed to be a panic payload.
unsafe impl Send for CaughtError {}

/// How many `rethrowing` calls are on the stack: `raise` needs one to unwind to.
static RETHROWING_DEPTH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl CaughtError {
    /// The error's primary message (to report why something was skipped).
    pub fn message(&self) -> String {
        // SAFETY: the ErrorData copy is alive (see CaughtError); its message is
        // NUL-terminated or null.
        unsafe {
            let m = (*self.0).message;
            if m.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned()
            }
        }
    }

    /// Unwinds the Rust frames (running their drops) up to `rethrowing`, which re-throws
    /// the error. Should a code path reach this with no `rethrowing` around it, the error
    /// is raised through pgrx instead (SQLSTATE, message, detail and hint kept, the other
    /// fields lost), never as pgrx's XX000 for an unknown panic.
    pub fn raise(self) -> ! {
        use std::sync::atomic::Ordering;
        if RETHROWING_DEPTH.load(Ordering::Relaxed) > 0 {
            resume_unwind(Box::new(self))
        }
        // SAFETY: the ErrorData copy is alive (see CaughtError); its strings are
        // NUL-terminated or null.
        let (code, message, detail, hint) = unsafe {
            let e = &*self.0;
            let text = |p: *const std::ffi::c_char| {
                (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
            };
            (e.sqlerrcode, text(e.message), text(e.detail), text(e.hint))
        };
        let mut report = pgrx::pg_sys::panic::ErrorReport::new(
            pgrx::PgSqlErrorCode::from(code),
            message.unwrap_or_default(),
            "pg_perf",
        );
        if let Some(d) = detail {
            report = report.set_detail(d);
        }
        if let Some(h) = hint {
            report = report.set_hint(h);
        }
        report.report(pgrx::PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

/// Counts a `rethrowing` frame while it is on the stack (also while unwinding).
struct RethrowingFrame;

impl RethrowingFrame {
    fn enter() -> Self {
        RETHROWING_DEPTH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RethrowingFrame
    }
}

impl Drop for RethrowingFrame {
    fn drop(&mut self) {
        RETHROWING_DEPTH.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `body` inside `PG_TRY`; an ERROR it raises is copied out and the error state
/// flushed, so the caller can unwind normally (`CaughtError::raise`).
///
/// # Safety
/// As `try_or_cleanup`'s body; the current memory context must outlive the re-throw.
#[inline]
pub unsafe fn try_capture<R, F>(body: F) -> Result<R, CaughtError>
where
    F: FnOnce() -> R + Copy,
{
    // SAFETY: plain read of a backend global.
    let context = unsafe { pg_sys::CurrentMemoryContext };
    // SAFETY: per this function's contract.
    match unsafe { pg_try(body) } {
        Some(r) => Ok(r),
        // SAFETY: the PG_CATCH state: copy the error out of ErrorContext (into the caller's
        // context, as CopyErrorData requires) and flush it, as PL/pgSQL's handlers do.
        None => unsafe {
            pg_sys::CurrentMemoryContext = context;
            let edata = raw::CopyErrorData();
            raw::FlushErrorState();
            Err(CaughtError(edata))
        },
    }
}

/// Runs `f` (a SQL function's body); a `CaughtError` unwinding out of it is re-thrown as
/// the original ERROR (`ReThrowError`), every field intact. Other panics carry on to pgrx.
///
/// # Safety
/// The frames between pgrx's function wrapper and this call hold nothing that needs
/// dropping (the re-throw longjmps over them). Main thread only.
pub unsafe fn rethrowing<R>(f: impl FnOnce() -> R) -> R {
    let frame = RethrowingFrame::enter();
    let result = catch_unwind(AssertUnwindSafe(f));
    drop(frame);
    match result {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<CaughtError>() {
            // SAFETY: the ErrorData copy is alive (see CaughtError); ReThrowError puts it
            // back on the error stack and longjmps to the next handler.
            Ok(caught) => unsafe { raw::ReThrowError(caught.0) },
            Err(other) => resume_unwind(other),
        },
    }
}

/// `try_capture` for parsing, analyzing or planning `query` (a NUL-terminated string alive
/// for the call), with the error context SPI gives the queries it runs: a syntax error's
/// position becomes an internal position in `query`, any other error gets the context line
/// `SQL statement "query"`. So the error reads as it would had the query gone through SPI,
/// and a position is never reported against the client's statement.
///
/// # Safety
/// As `try_capture`.
pub unsafe fn try_capture_query<R, F>(
    query: *const std::ffi::c_char,
    body: F,
) -> Result<R, CaughtError>
where
    F: FnOnce() -> R + Copy,
{
    /// As PostgreSQL's `_SPI_error_callback`.
    unsafe extern "C-unwind" fn callback(arg: *mut std::ffi::c_void) {
        let query = arg as *const std::ffi::c_char;
        if query.is_null() {
            return;
        }
        // SAFETY: called by errfinish while the error is the current one; the query text
        // outlives the callback's registration.
        unsafe {
            let position = raw::geterrposition();
            if position > 0 {
                raw::errposition(0);
                raw::internalerrposition(position);
                raw::internalerrquery(query);
            } else {
                raw::set_errcontext_domain(std::ptr::null());
                raw::errcontext_msg(c"SQL statement \"%s\"".as_ptr(), query);
            }
        }
    }
    // SAFETY: the callback record lives on this frame and is unlinked before it returns
    // (pg_try restores error_context_stack to it on ERROR; it is then popped here).
    unsafe {
        let mut record = pg_sys::ErrorContextCallback {
            previous: pg_sys::error_context_stack,
            callback: Some(callback),
            arg: query as *mut std::ffi::c_void,
        };
        pg_sys::error_context_stack = &mut record;
        let result = try_capture(body);
        pg_sys::error_context_stack = record.previous;
        result
    }
}
