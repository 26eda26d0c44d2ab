//! Shared memory for every capability: the one pair of shmem hooks, the segment helper
//! (size request, `ShmemInitStruct`, first-creation initialization), named LWLock tranches,
//! an LWLock guard and a spinlock with backoff and stuck detection.
//!
//! A capability plugs in with a `request()` (called from `shmem_request`: sizes its
//! segments with [`request_segment`]) and a `startup()` (called from `shmem_startup`:
//! attaches them with [`attach_segment`]); both are listed in the two hooks below, in the
//! order: statistics, change tracking, then the result cache.
//!
//! Invariants:
//! - The hooks chain to the previously installed ones.
//! - Segments are created and initialized under this library's own init lock (a named
//!   tranche of one LWLock, "pg_perf_init"), so a segment is initialized exactly once.
//! - `LwLockGuard` releases its lock exactly once, also while an ERROR unwinds.
//! - A spinlock is held only for a few dozen instructions of arithmetic that cannot fail
//!   (no allocation, no call into PostgreSQL), and only under one of our LWLocks.

// Previous shmem hooks are "C-unwind" function pointers, called directly: an ERROR they
// raise reaches PostgreSQL untouched (nothing here needs dropping).
#![allow(ffi_unwind_calls)]

use std::ffi::CStr;
use std::sync::atomic::{AtomicU32, Ordering};

use pgrx::pg_guard;
use pgrx::pg_sys;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Serializes segment creation and initialization across processes (instead of
/// PostgreSQL's AddinShmemInitLock, which has no exported name).
const INIT_TRANCHE: &CStr = c"pg_perf_init";

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
    request_segment(0, Some((INIT_TRANCHE, 1)));
    crate::stats::shmem::request();
    crate::track::request();
    crate::cache::store::request();
    crate::scheduler::shmem_request();
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
    crate::track::startup();
    crate::cache::store::startup();
    crate::scheduler::shmem_startup();
}

/// Reserves `bytes` of shared memory and, with `tranche = Some((name, n))`, a named tranche
/// of `n` LWLocks. Call only from a capability's `request()` (the shmem_request hook).
pub fn request_segment(bytes: usize, tranche: Option<(&CStr, usize)>) {
    // SAFETY: only called from the shmem_request hook in the postmaster, where both are
    // allowed; the tranche name is a static C string.
    unsafe {
        if bytes > 0 {
            pg_sys::RequestAddinShmemSpace(bytes);
        }
        if let Some((name, n)) = tranche {
            pg_sys::RequestNamedLWLockTranche(name.as_ptr(), n as i32);
        }
    }
}

/// The first LWLock of the named tranche `name` (requested with [`request_segment`]).
///
/// # Safety
/// Call from a capability's `startup()`, after the tranche was requested.
pub unsafe fn named_tranche(name: &CStr) -> *mut pg_sys::LWLockPadded {
    // SAFETY: per the contract, the tranche exists (else PostgreSQL raises an ERROR).
    unsafe { pg_sys::GetNamedLWLockTranche(name.as_ptr()) }
}

/// Attaches the segment `name` of `bytes` (as requested in `request()`), creating it if it
/// does not exist yet; `init(base)` then runs once, under the init lock, on zeroed memory.
/// Returns the segment's base and whether it already existed.
///
/// # Safety
/// Call from a capability's `startup()` (the shmem_startup hook), with the size requested.
/// `init` must not raise an ERROR or allocate (it runs under an LWLock).
pub unsafe fn attach_segment(
    name: &CStr,
    bytes: usize,
    init: impl FnOnce(*mut u8),
) -> (*mut u8, bool) {
    let mut found = false;
    // SAFETY: the init tranche was requested by our shmem_request hook and its lock is
    // initialized before any shmem_startup hook runs; ShmemInitStruct returns `bytes`
    // writable bytes (or raises an ERROR when shared memory is exhausted).
    unsafe {
        let init_lock = &raw mut (*named_tranche(INIT_TRANCHE)).lock;
        let _g = LwLockGuard::acquire(init_lock, true);
        let base = pg_sys::ShmemInitStruct(name.as_ptr(), bytes, &mut found) as *mut u8;
        if !found {
            std::ptr::write_bytes(base, 0, bytes);
            init(base);
        }
        (base, found)
    }
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

/// Takes a spinlock word in shared memory (0 free, 1 held). Uncontended: one
/// compare-and-swap, no call. Contended: PostgreSQL's own backoff (`perform_spin_delay`,
/// randomized sleeps growing up to a second), which also detects a stuck lock and PANICs
/// after about a minute, as `SpinLockAcquire` does.
#[inline]
pub fn spin_lock(m: &AtomicU32) {
    if m.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spin_lock_slow(m);
    }
}

#[cold]
#[inline(never)]
fn spin_lock_slow(m: &AtomicU32) {
    let mut status = pg_sys::SpinDelayStatus {
        spins: 0,
        delays: 0,
        cur_delay: 0,
        file: c"src/pg/shmem.rs".as_ptr(),
        line: line!() as i32,
        func: c"spin_lock".as_ptr(),
    };
    loop {
        if m.load(Ordering::Relaxed) == 0
            && m.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break;
        }
        // SAFETY: `status` is initialized as init_spin_delay() does; the call sleeps or
        // spins, and PANICs (never returns an ERROR) when the lock looks stuck.
        unsafe { pg_sys::perform_spin_delay(&mut status) };
    }
    // SAFETY: same status, after the lock was obtained (adjusts spins_per_delay).
    unsafe { pg_sys::finish_spin_delay(&mut status) };
}

/// Releases a spinlock taken with [`spin_lock`].
#[inline]
pub fn spin_unlock(m: &AtomicU32) {
    m.store(0, Ordering::Release);
}
