//! The current backend's identity, read without pgrx's per-call FFI guard (a sigsetjmp,
//! about 100 instructions): these functions only return backend state and cannot raise an
//! ERROR, and they are read on the per-statement path.

mod raw {
    // Plain "C": neither can raise an ERROR, so nothing unwinds through them.
    unsafe extern "C" {
        pub fn GetUserId() -> pgrx::pg_sys::Oid;
        pub fn GetCurrentTransactionNestLevel() -> i32;
    }
}

/// The current user (`GetUserId()`).
#[inline]
pub fn current_user_id() -> u32 {
    // SAFETY: returns a backend global; cannot raise an ERROR.
    unsafe { raw::GetUserId().to_u32() }
}

/// The current transaction nesting level (`GetCurrentTransactionNestLevel()`): 1 at top
/// level, one more per open subtransaction.
#[inline]
pub fn transaction_nest_level() -> i32 {
    // SAFETY: returns a field of the current transaction state; cannot raise an ERROR.
    unsafe { raw::GetCurrentTransactionNestLevel() }
}
