//! Internal subtransactions: run a piece of work so that an ERROR inside it rolls back only
//! that work, as PL/pgSQL's exception blocks do. Memory context and resource owner are
//! restored either way.

use pgrx::pg_sys;
use pgrx::PgTryBuilder;

/// Runs `f` in a subtransaction; an ERROR inside rolls it back and yields None.
pub fn in_subtransaction<T>(f: impl FnOnce() -> T) -> Option<T> {
    try_in_subtransaction(f).ok()
}

/// Runs `f` in a subtransaction; an ERROR inside rolls it back and yields its message.
pub fn try_in_subtransaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // SAFETY: the standard internal-subtransaction pattern (as PL/pgSQL's exception blocks):
    // remember memory context and resource owner, begin, and on success release / on error
    // roll back, restoring both either way.
    unsafe {
        let ctx = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(ctx);
        let mut f = Some(f);
        PgTryBuilder::new(std::panic::AssertUnwindSafe(move || {
            let r = (f.take().expect("runs once"))();
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            Ok(r)
        }))
        .catch_others(move |e| {
            pgrx::debug1!("pg_perf: subtransaction rolled back after an error: {e:?}");
            // The message first: the rollback may free what the error points into.
            let message = match &e {
                pgrx::pg_sys::panic::CaughtError::RustPanic { payload, .. }
                    if payload.is::<crate::pg::try_catch::CaughtError>() =>
                {
                    payload
                        .downcast_ref::<crate::pg::try_catch::CaughtError>()
                        .map(|c| c.message())
                        .unwrap_or_default()
                }
                pgrx::pg_sys::panic::CaughtError::PostgresError(r)
                | pgrx::pg_sys::panic::CaughtError::ErrorReport(r)
                | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                    r.message().to_string()
                }
            };
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(ctx);
            pg_sys::CurrentResourceOwner = owner;
            Err(message)
        })
        .execute()
    }
}
