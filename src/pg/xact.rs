//! One transaction, one subtransaction and one resource-release callback for the whole
//! library.
//!
//! PostgreSQL calls every registered transaction callback at each event of every
//! transaction (twice per autocommit statement), so the capabilities that need them share
//! one registration instead of paying a call each. The order is the one their separate
//! registrations had (PostgreSQL calls the most recently registered first): what-if
//! planning, then change tracking, then statement statistics.
//!
//! Invariants:
//! - Nothing escapes a callback: each capability's handler runs as under its own
//!   `catch_unwind` (one for all on the common path, see below), and
//!   a panic (or a PostgreSQL ERROR that a pgrx-guarded call turned into one) is logged as
//!   a WARNING and dropped. An ERROR escaping at XACT_EVENT_COMMIT would be an outage
//!   (PostgreSQL cannot abort a committed transaction: it PANICs); the handlers do not call
//!   unguarded PostgreSQL functions that can raise one.
//! - The handlers only touch backend-local state and shared memory, and the common path of
//!   each is a few comparisons (`catch_unwind` costs nothing unless something panics).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pgrx::pg_sys;

/// Registers the callbacks (from `_PG_init`, in the postmaster).
pub fn init() {
    // SAFETY: _PG_init is single-threaded; registering callbacks with no argument is
    // allowed there and they live for the process.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
        pg_sys::RegisterResourceReleaseCallback(Some(on_resource_release), std::ptr::null_mut());
    }
}

/// Runs `f` once when the current transaction commits (nothing on abort), guarded like the
/// handlers: a panic in it is a WARNING. For one-off work a statement asks for, such as
/// waking a worker after the change it must see is visible.
pub fn at_commit(f: impl FnOnce() + std::panic::UnwindSafe + std::panic::RefUnwindSafe + 'static) {
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        guarded("at-commit", f)
    });
}

/// Runs one handler; a panic is reported as a WARNING, never propagated.
fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        report(what);
    }
}

#[cold]
#[inline(never)]
fn report(what: &str) {
    // A WARNING returns normally (no longjmp), also inside a commit callback.
    pgrx::warning!("pg_perf: the {what} transaction callback failed; its state was reset");
}

// The common path runs all handlers under one `catch_unwind` (one landing pad, no per-handler
// frame); `step` says which handler panicked, and the cold path runs the ones after it, each
// guarded on its own: the same result as one guard per handler.

unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    let mut step = 0;
    let all = catch_unwind(AssertUnwindSafe(|| {
        crate::advisor::whatif::on_xact_event(event);
        step = 1;
        crate::track::on_xact_event(event);
        step = 2;
        crate::stats::hooks::on_xact_event(event);
    }));
    if all.is_err() {
        xact_event_after_panic(event, step);
    }
}

#[cold]
#[inline(never)]
fn xact_event_after_panic(event: pg_sys::XactEvent::Type, failed: usize) {
    report(["what-if", "change tracking", "statistics"][failed.min(2)]);
    if failed < 1 {
        guarded("change tracking", || crate::track::on_xact_event(event));
    }
    if failed < 2 {
        guarded("statistics", || crate::stats::hooks::on_xact_event(event));
    }
}

unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    let mut step = 0;
    let all = catch_unwind(AssertUnwindSafe(|| {
        crate::advisor::whatif::on_subxact_event(event);
        step = 1;
        crate::stats::hooks::on_subxact_event(event);
    }));
    if all.is_err() {
        report(["what-if", "statistics"][step.min(1)]);
        if step < 1 {
            guarded("statistics", || {
                crate::stats::hooks::on_subxact_event(event)
            });
        }
    }
}

/// Resource release: called for every phase of every resource owner's release (several
/// times per statement). Only the top-level AFTER_LOCKS phase matters: by then the
/// transaction's catalog invalidations were sent, and change tracking ends the commit's
/// brackets (`track::on_transaction_released`). Every other call returns at once.
unsafe extern "C-unwind" fn on_resource_release(
    phase: pg_sys::ResourceReleasePhase::Type,
    _is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    if is_top_level && phase == pg_sys::ResourceReleasePhase::RESOURCE_RELEASE_AFTER_LOCKS {
        guarded("change tracking", crate::track::on_transaction_released);
    }
}
