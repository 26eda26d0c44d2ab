//! Shared-memory plumbing shared by the capabilities: one pair of shmem hooks for the whole
//! library (each capability sizes and attaches its own segments), and an LWLock guard.
//!
//! Invariants: hooks chain to the previously installed ones; `LwLockGuard` releases its lock
//! exactly once, also while an ERROR unwinds.

// Previous shmem hooks are "C-unwind" function pointers, called directly: an ERROR they
// raise reaches PostgreSQL untouched (nothing here needs dropping).
#![allow(ffi_unwind_calls)]

use pgrx::pg_guard;
use pgrx::pg_sys;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Installs the shmem hooks (from `_PG_init`, in the postmaster).
pub fn init() {
    // SAFETY: _PG_init is single-threaded; previous hooks are saved and chained.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining to the previous hook in the postmaster.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
    }
    crate::stats::shmem::request();
    crate::cache::store::request();
    crate::partition::progress::request();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining to the previous hook.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
    }
    crate::stats::shmem::startup();
    crate::cache::store::startup();
    crate::partition::progress::startup();
}

/// Direct bindings to the LWLock functions, bypassing pgrx's per-call `sigsetjmp` guard
/// (about 100 instructions each; several per statement on the hot paths). Sound for our
/// use because neither can raise an ERROR here: LWLockAcquire errors only when a backend
/// holds more than 200 LWLocks (we hold at most one of ours, never across a call back into
/// PostgreSQL), and LWLockRelease only when the lock is not held, which `LwLockGuard` rules
/// out. Every other PostgreSQL function goes through pgrx's guard.
mod raw {
    use pgrx::pg_sys::{LWLock, LWLockMode};
    unsafe extern "C" {
        pub fn LWLockAcquire(lock: *mut LWLock, mode: LWLockMode::Type) -> bool;
        pub fn LWLockRelease(lock: *mut LWLock);
    }
}

/// Holds an LWLock until dropped (also on unwinding).
pub struct LwLockGuard(*mut pg_sys::LWLock);

impl LwLockGuard {
    /// # Safety
    /// `lock` must point to an initialized LWLock in shared memory.
    #[inline]
    pub unsafe fn acquire(lock: *mut pg_sys::LWLock, exclusive: bool) -> Self {
        let mode = if exclusive {
            pg_sys::LWLockMode::LW_EXCLUSIVE
        } else {
            pg_sys::LWLockMode::LW_SHARED
        };
        // SAFETY: per the function contract; see `raw` for why no guard is needed.
        unsafe { raw::LWLockAcquire(lock, mode) };
        LwLockGuard(lock)
    }
}

impl Drop for LwLockGuard {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: acquired in `acquire` and not released since.
        unsafe { raw::LWLockRelease(self.0) };
    }
}
