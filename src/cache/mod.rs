//! Shared-memory result cache: `perf.cached()` / `perf.cached_json()` serve query results
//! from shared memory, invalidated at commit by statement-level triggers on the source
//! tables. Design contract and guarantees: docs/cache-design.md.

// Previous shmem hooks are "C-unwind" function pointers, called through pg_guard_ffi_boundary.
#![allow(ffi_unwind_calls)]

pub mod api;
pub mod invalidate;
pub mod key;
pub mod store;

use pgrx::pg_guard;
use pgrx::pg_sys;
use pgrx::pg_sys::submodules::ffi::pg_guard_ffi_boundary;

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Called from `_PG_init` (postmaster, preload).
pub fn init() {
    // SAFETY: _PG_init is single-threaded; previous hooks are saved and chained.
    unsafe {
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
        pg_sys::RegisterXactCallback(Some(invalidate::on_xact_event), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining to the previous hook in the postmaster.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            pg_guard_ffi_boundary(|| prev());
        }
    }
    store::request();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining to the previous hook.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            pg_guard_ffi_boundary(|| prev());
        }
    }
    store::startup();
}

pgrx::extension_sql_file!(
    "../../sql/cache.sql",
    name = "cache_sql",
    requires = [
        cache::api::cached_json,
        cache::api::cache_invalidate_oid,
        cache::invalidate::cache_invalidate_trigger
    ]
);
