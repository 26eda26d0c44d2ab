//! pg_perf: a PostgreSQL extension that makes a database tune itself.
//!
//! This file only wires things together: module magic, the preload check, GUC
//! registration and the PostgreSQL layer (`pg`), which installs every hook and calls the
//! capabilities. The capabilities live in their folders; see ARCHITECTURE.md.

#![deny(ffi_unwind_calls)]

use pgrx::prelude::*;

pub mod advisor;
pub mod cache;
pub mod error;
pub mod gucs;
pub mod ivm;
pub mod matview;
pub mod metrics;
pub mod partition;
pub mod pg;
pub mod scheduler;
pub mod stats;
pub mod track;

::pgrx::pg_module_magic!(name, version);

/// Called once when the library is loaded. pg_perf needs shared memory and executor hooks
/// that only work when the library is loaded at server start, so anything else is refused
/// with a clear error rather than half-working.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a plain global flag set by the postmaster before it loads preload
    // libraries; we are on the main thread.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if !preloading {
        error::PerfError::NotPreloaded.raise();
    }
    gucs::init();
    // The PostgreSQL layer installs every hook and callback; each calls the capabilities'
    // entry points in a fixed order (see src/pg/hooks.rs, shmem.rs, xact.rs).
    pg::shmem::init();
    pg::hooks::install();
    pg::xact::init();
    pg::inval::init();
    metrics::init();
    scheduler::init();
    partition::init();
}

/// The version of the pg_perf library that is loaded in this server.
#[pg_extern(immutable, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn version_matches_cargo() {
        let v = Spi::get_one::<String>("SELECT perf.version()").unwrap();
        assert_eq!(v.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[pg_test]
    fn settings_lists_enabled_guc() {
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM perf.settings() WHERE name = 'perf.enabled' AND value = 'on'",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test(error = "invalid configuration parameter name \"perf.nonsense\"")]
    fn reserved_prefix_rejects_unknown_guc() {
        Spi::run("SET perf.nonsense = 1").unwrap();
    }
}

/// Required by `cargo pgrx test`: the test cluster preloads pg_perf with the same settings
/// the demo and regression clusters use (see `pgrx-config/pg_perf.conf`).
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_perf'",
            "perf.verify_query_ids = on",
        ]
    }
}
