//! `PG_TRY` / `PG_CATCH` / `PG_RE_THROW` for hooks that call back into PostgreSQL.
//!
//! pgrx's `pg_guard_ffi_boundary` catches a PostgreSQL ERROR, copies a few of its fields
//! into a Rust panic and lets `#[pg_guard]` raise a new, rebuilt ERROR from them: the
//! schema/table/column/datatype/constraint names, the cursor and internal positions, the
//! internal query and the error context stack of the original are lost. A hook that must
//! be invisible cannot do that. `try_or_cleanup` instead does what C code does with
//! `PG_TRY(); ... PG_CATCH(); cleanup; PG_RE_THROW(); PG_END_TRY();`: the original error
//! stays in PostgreSQL's error data stack and is re-thrown untouched, every field intact.
//!
//! Invariants (the callers' side of the contract, checked where possible by the types):
//! - The body is a plain call into PostgreSQL: it captures only `Copy` values (so nothing
//!   it owns needs dropping when an ERROR longjmps out of it) and never panics (it runs
//!   behind an `extern "C"` frame, where a panic aborts the process). Call the standard
//!   functions through raw `extern "C-unwind"` declarations, not pgrx's wrappers, which
//!   would turn the ERROR into a panic.
//! - Everything that must be cleaned up on ERROR is moved in as `cleanup` and comes back
//!   on success; dropping it must not raise an ERROR (a panic there is swallowed).
//! - The frames between the caller and the next outer `PG_TRY` hold nothing that needs
//!   dropping while the body runs: the re-throw longjmps over them.
//!
//! Cost: one `sigsetjmp` without signal mask (no system call) per call. Keep it off
//! per-statement paths that hold nothing to clean up; those call the next hook directly.

// pg_re_throw longjmps (it does not unwind), over frames that hold nothing to drop.
#![allow(ffi_unwind_calls)]

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pgrx::pg_sys;

mod raw {
    unsafe extern "C-unwind" {
        /// `PG_RE_THROW()`: longjmps to the next outer handler with the current error.
        pub fn pg_re_throw() -> !;
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
        if jumped != 0 {
            // PG_CATCH: the error is still on PostgreSQL's error data stack. A panic while
            // cleaning up must not replace it: ignored.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(cleanup)));
            raw::pg_re_throw();
        }
        (result.assume_init(), cleanup)
    }
}
