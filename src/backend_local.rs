//! `BackendLocal<T>`: a `static` that belongs to one backend process.
//!
//! PostgreSQL runs every backend as a single-threaded process, and pg_perf touches its
//! per-backend state only from that thread (hooks, SQL functions, transaction and cache
//! invalidation callbacks). Such state needs neither a lock nor an atomic, only the
//! promise that no two mutable borrows of it overlap, which each module's accessor states.

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

    /// The value, mutably.
    ///
    /// # Safety
    /// No other reference obtained from this value may be live while the returned one is
    /// used; in particular it must not be held across a call that can reach the same value
    /// again (a hook re-entered by the planner or executor, an invalidation callback).
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: per the contract above.
        unsafe { &mut *self.0.get() }
    }
}
