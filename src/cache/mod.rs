//! Shared-memory result cache: `perf.cached()` / `perf.cached_json()` serve query results
//! from shared memory, invalidated at commit by statement-level triggers on the source
//! tables. Design contract and guarantees: docs/cache-design.md.

pub mod api;
pub mod invalidate;
pub mod key;
pub mod store;

/// Called from `_PG_init` (postmaster, preload). Shared memory is requested and attached
/// through `crate::shmem`; the transaction callback is `crate::xact`'s.
pub fn init() {}

pgrx::extension_sql_file!(
    "../../sql/cache.sql",
    name = "cache_sql",
    requires = [
        cache::api::cached_json,
        cache::api::cache_invalidate_oid,
        cache::api::cache_flush,
        cache::invalidate::cache_invalidate_trigger
    ]
);
