//! Slow-query analysis: per-statement statistics in shared memory (keyed like
//! pg_stat_statements), latency histograms, captured plans of slow runs, the predicates each
//! statement uses, and SQL functions that rank statements and explain why they are slow.

// Previous shmem hooks are "C-unwind" function pointers, called through pg_guard_ffi_boundary.
#![allow(ffi_unwind_calls)]

pub mod api;
pub mod histogram;
pub mod hooks;
pub mod index_health;
pub mod normalize;
pub mod plan_capture;
pub mod predicates;
pub mod shmem;
pub mod why_slow;

use pgrx::pg_guard;
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Called from `_PG_init` (postmaster, preload): shared memory hooks and executor hooks.
pub fn init() {
    // SAFETY: _PG_init is single-threaded; previous hooks are saved and chained.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
    hooks::install();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining to the previous hook in the postmaster.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_guard_ffi_boundary(|| prev());
        }
    }
    shmem::request();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining to the previous hook.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_guard_ffi_boundary(|| prev());
        }
    }
    shmem::startup();
}
