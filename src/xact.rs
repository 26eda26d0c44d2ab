//! One transaction and one subtransaction callback for the whole library.
//!
//! PostgreSQL calls every registered transaction callback at each event of every
//! transaction (twice per autocommit statement), so the capabilities that need them share
//! one registration instead of paying a call each. The order is the one their separate
//! registrations had (PostgreSQL calls the most recently registered first): what-if
//! planning, then the result cache, then statement statistics.
//!
//! Invariants: the callbacks never raise an ERROR (each capability's handler keeps its own
//! failure handling), and they only touch backend-local state and shared memory.

use pgrx::pg_sys;

/// Registers the callbacks (from `_PG_init`, in the postmaster).
pub fn init() {
    // SAFETY: _PG_init is single-threaded; registering callbacks is allowed there.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
    }
}

unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    crate::advisor::whatif::on_xact_event(event);
    crate::cache::invalidate::on_xact_event(event);
    crate::stats::hooks::on_xact_event(event);
}

unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    crate::advisor::whatif::on_subxact_event(event);
    crate::stats::hooks::on_subxact_event(event);
}
