//! The result cache's side of invalidation: the statement-level trigger installed by
//! `perf.cache_track()` reports writes to change tracking (`crate::track`), whose
//! generations decide whether an entry is still valid; and the session's
//! temporary-relation signature, part of every cache key.

use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::pg::backend_local::BackendLocal;

/// Memoized `temp_signature()`: (track's utility epoch it was computed at, signature).
static TEMP_SIGNATURE: BackendLocal<Option<(u64, u64)>> = BackendLocal::new(None);

/// A hash of the names of this session's temporary relations and types (0 without a
/// temporary schema). Unqualified names resolve to them first, so two sessions share cache
/// entries only when the same names are temporary in both; a cached query never reads a
/// temporary relation, so its result is the same in both.
pub fn temp_signature() -> u64 {
    let (epoch, utility_in_xact) = crate::track::utility_epoch();
    // SAFETY: a plain copy out of backend-local state; nothing else runs meanwhile.
    if let Some((at, sig)) = unsafe { TEMP_SIGNATURE.with(|m| *m) } {
        if at == epoch && !utility_in_xact {
            return sig;
        }
    }
    let mut ns = pg_sys::InvalidOid;
    let mut toast = pg_sys::InvalidOid;
    // SAFETY: plain read of the backend's temporary-namespace state.
    unsafe { pg_sys::GetTempNamespaceState(&mut ns, &mut toast) };
    let sig = if ns == pg_sys::InvalidOid {
        0
    } else {
        // SAFETY: a snapshot of everything committed now (and this transaction's own
        // changes), pushed for the query below and popped right after it; an error aborts
        // the transaction, which unwinds the snapshot stack.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
        let names = Spi::get_one_with_args::<String>(
            "SELECT string_agg(n, '/' ORDER BY n) FROM (
                 SELECT relname::text FROM pg_catalog.pg_class
                  WHERE relnamespace = $1 AND relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                 UNION ALL
                 SELECT 'type:' || typname FROM pg_catalog.pg_type WHERE typnamespace = $1
             ) s(n)",
            &[ns.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        // SAFETY: pops the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
        // Never 0 once a temporary schema exists, so an empty one differs from none.
        super::key::hash(names.as_bytes(), b"", &[])[0] | 1
    };
    // While this transaction runs utility statements, temporary relations may come and go
    // (also by savepoint rollbacks): recompute every time.
    if !utility_in_xact {
        // SAFETY: a plain store into backend-local state; nothing else runs meanwhile.
        unsafe { TEMP_SIGNATURE.with(|m| *m = Some((epoch, sig))) };
    }
    sig
}

/// The statement-level trigger `perf.cache_track()` installs on tracked tables.
#[pg_trigger]
fn cache_invalidate_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relid = trigger.relid()?;
    crate::track::note_write(relid.to_u32());
    Ok(None)
}
