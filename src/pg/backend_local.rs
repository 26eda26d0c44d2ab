//! `BackendLocal<T>`: a `static` that belongs to one backend process.
//!
//! PostgreSQL runs every backend as a single-threaded process, and pg_perf touches its
//! per-backend state only from that thread (hooks, SQL functions, transaction and cache
//! invalidation callbacks). Such state needs neither a lock nor an atomic, only the
//! promise that no two mutable borrows of it overlap.
//!
//! Access is scoped: [`BackendLocal::with`] lends the value to a closure, so no reference
//! outlives the access (nothing is handed out as `&'static mut`). The closure must not
//! reach the same value again (no nested `with` on it, no call that can re-enter a hook
//! or callback using it); keep each closure a few lines of bookkeeping.

use std::cell::UnsafeCell;

/// A value private to the backend process that uses it.
pub struct BackendLocal<T>(UnsafeCell<T>);

// SAFETY: a backend has one thread, and only that thread reaches these values (module
// documentation above); nothing is shared between processes through them.
unsafe impl<T> Sync for BackendLocal<T> {}

impl<T> BackendLocal<T> {
    pub const fn new(value: T) -> Self {
        BackendLocal(UnsafeCell::new(value))
    }

    /// Runs `f` with the value, mutably; the borrow ends when `f` returns.
    ///
    /// # Safety
    /// `f` must not reach this same value again while it runs: no nested `with` on it, and
    /// no call that can re-enter code using it (a hook re-entered by the planner or
    /// executor, an invalidation callback, an ERROR longjmp out of `f`).
    #[inline(always)]
    pub unsafe fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: per the contract above, this is the only live reference.
        f(unsafe { &mut *self.0.get() })
    }
}
