//! Catalog invalidation callbacks: the one place pg_perf registers with PostgreSQL's
//! relcache and syscache invalidation machinery, and the list of capabilities it tells.
//!
//! Registered once in `_PG_init`, in the postmaster: the callback tables are plain arrays in
//! inval.c, so every process forked afterwards (backends, background workers) starts with
//! them, and no statement pays a "registered yet?" check. A callback only sets flags in
//! backend-local state; it never touches the catalogs, allocates or raises, since it runs
//! while PostgreSQL processes invalidation messages (inside any catalog access).

use pgrx::pg_sys;

/// The syscaches whose changes can change what a statement text resolves to (names,
/// types, functions, operators, casts, collations, schemas, roles, opclasses).
const WATCHED_SYSCACHES: [pg_sys::SysCacheIdentifier::Type; 11] = {
    use pg_sys::SysCacheIdentifier::*;
    [
        RELNAMENSP,
        ATTNAME,
        TYPEOID,
        PROCOID,
        OPEROID,
        CASTSOURCETARGET,
        COLLOID,
        NAMESPACEOID,
        AUTHOID,
        CLAOID,
        AMOPSTRATEGY,
    ]
};

/// Registers the callbacks. Called once, from `_PG_init` (postmaster, before any fork).
pub fn init() {
    // SAFETY: registration only fills inval.c's static callback arrays (11 of its 64
    // syscache slots and one of its 10 relcache slots); no catalog access.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_change), pg_sys::Datum::from(0));
        for cache in WATCHED_SYSCACHES {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(on_syscache_change),
                pg_sys::Datum::from(0),
            );
        }
    }
}

unsafe extern "C-unwind" fn on_syscache_change(_arg: pg_sys::Datum, _cache_id: i32, _hash: u32) {
    crate::stats::query_id_memo::on_catalog_change();
}

unsafe extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    crate::stats::query_id_memo::on_catalog_change();
}
