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
//! - Nothing escapes a callback: each capability's handler runs under `catch_unwind`, and
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

/// Runs one capability's handler; a panic is reported as a WARNING, never propagated.
#[inline(always)]
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

unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    guarded("what-if", || crate::advisor::whatif::on_xact_event(event));
    guarded("change tracking", || crate::track::on_xact_event(event));
    guarded("statistics", || crate::stats::hooks::on_xact_event(event));
}

unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    guarded("what-if", || {
        crate::advisor::whatif::on_subxact_event(event)
    });
    guarded("statistics", || {
        crate::stats::hooks::on_subxact_event(event)
    });
}

/// Resource release: change tracking ends a commit's brackets once its catalog
/// invalidations were sent (top-level AFTER_LOCKS phase).
unsafe extern "C-unwind" fn on_resource_release(
    phase: pg_sys::ResourceReleasePhase::Type,
    is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    guarded("change tracking", || {
        crate::track::on_resource_release(phase, is_commit, is_top_level)
    });
}
