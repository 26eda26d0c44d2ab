//! Invalidation of cached results.
//!
//! Writers: the statement-level trigger installed by `perf.cache_track()` marks its table as
//! written in this transaction. At PRE_COMMIT, before the commit becomes visible to other
//! sessions, every written table is counted as committing and its generation is bumped; when
//! the commit is over (visible), the count drops. An abort before PRE_COMMIT bumps nothing.
//! A fill stores its result only if no table it read was committing when it started or
//! ended and no generation moved in between (see `api::cached_json`).
//!
//! Everything else that can change a result — DDL, GRANT/REVOKE, policies, role changes,
//! replaced functions or views, COMMIT PREPARED — invalidates the whole cache, bracketed as
//! a global operation in progress from before its effects are visible until after.
//!
//! Invariants: the transaction callback is not `#[pg_guard]`-wrapped (it runs for every
//! transaction); its body only touches atomics and a backend-local vector and cannot panic.

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::store;
use crate::backend_local::BackendLocal;

struct CacheLocal {
    /// Registry slots of tables this transaction wrote.
    written: Vec<u32>,
    /// PRE_COMMIT counted the written tables as committing.
    committing: bool,
    /// A utility statement that may change results ran in this transaction.
    ddl_pending: bool,
    /// This transaction's commit holds a global operation (see `store::global_begin`).
    global_held: bool,
}

static LOCAL: BackendLocal<CacheLocal> = BackendLocal::new(CacheLocal {
    written: Vec::new(),
    committing: false,
    ddl_pending: false,
    global_held: false,
});

#[allow(clippy::mut_from_ref)]
fn local() -> &'static mut CacheLocal {
    // SAFETY: single-threaded backend; borrows are short and never overlap.
    unsafe { LOCAL.get() }
}

/// Registry slots this transaction wrote (own writes bypass the cache).
pub fn written_slots() -> &'static [u32] {
    &local().written
}

fn current_db() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Records that this transaction wrote `relid` (called by the invalidation trigger).
pub fn note_write(relid: u32) {
    let Some(slot) = store::registry_slot(current_db(), relid, true) else {
        // Registry full: nothing can be cached for this table anyway (fills need a slot),
        // but entries depending on it must still die: flush conservatively at commit.
        local().ddl_pending = true;
        return;
    };
    let l = local();
    if !l.written.contains(&slot) {
        l.written.push(slot);
    }
}

/// Called by the ProcessUtility hook before every utility statement. Marks statements that
/// may change cached results so the transaction flushes the cache when it commits, and
/// brackets COMMIT PREPARED (whose effects become visible inside the statement) as a global
/// operation: the returned guard ends it when dropped, also on error.
///
/// # Safety
/// `node` must be null or a valid parse node.
pub unsafe fn before_utility(node: *mut pg_sys::Node) -> Option<GlobalOperation> {
    if node.is_null() || !store::available() {
        return None;
    }
    // SAFETY: a valid parse node from PostgreSQL.
    let tag = unsafe { (*node).type_ };
    use pg_sys::NodeTag::*;
    match tag {
        T_TransactionStmt => {
            // SAFETY: the tag says it is a TransactionStmt.
            let kind = unsafe { (*(node as *mut pg_sys::TransactionStmt)).kind };
            if kind == pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED {
                store::global_begin();
                return Some(GlobalOperation);
            }
            None
        }
        // Statements that cannot change what a cached query returns.
        T_VariableSetStmt | T_VariableShowStmt | T_ExplainStmt | T_PrepareStmt | T_ExecuteStmt
        | T_DeallocateStmt | T_ListenStmt | T_NotifyStmt | T_UnlistenStmt | T_DiscardStmt
        | T_CheckPointStmt | T_VacuumStmt | T_CopyStmt | T_LockStmt | T_DeclareCursorStmt
        | T_ClosePortalStmt | T_FetchStmt | T_CallStmt | T_DoStmt | T_CreateTableAsStmt
        | T_ReindexStmt | T_ClusterStmt | T_RefreshMatViewStmt | T_ConstraintsSetStmt
        | T_LoadStmt => None,
        _ => {
            local().ddl_pending = true;
            None
        }
    }
}

/// A global operation in progress; ends (with a final invalidation) when dropped.
pub struct GlobalOperation;

impl Drop for GlobalOperation {
    fn drop(&mut self) {
        store::global_end();
    }
}

fn end_writers() {
    let l = local();
    if l.committing {
        for &slot in &l.written {
            store::commit_end(slot);
        }
        l.committing = false;
    }
    l.written.clear();
}

/// Transaction callback (registered in `cache::init`).
///
/// # Safety
/// Called by PostgreSQL's transaction machinery only.
/// Transaction events (called from `crate::xact`).
pub(crate) fn on_xact_event(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    let l = local();
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => {
            if !l.committing {
                for &slot in &l.written {
                    store::commit_begin(slot);
                }
                l.committing = true;
            }
            if l.ddl_pending && !l.global_held {
                store::global_begin();
                l.global_held = true;
            }
        }
        XACT_EVENT_COMMIT
        | XACT_EVENT_PARALLEL_COMMIT
        | XACT_EVENT_ABORT
        | XACT_EVENT_PARALLEL_ABORT => {
            end_writers();
            if l.global_held {
                store::global_end();
                l.global_held = false;
            }
            l.ddl_pending = false;
        }
        // A prepared transaction's changes become visible at COMMIT PREPARED, which
        // invalidates everything (see `before_utility`); here it just stops being ours.
        XACT_EVENT_PREPARE => {
            end_writers();
            l.ddl_pending = false;
        }
        _ => {}
    }
}

/// The statement-level trigger `perf.cache_track()` installs on tracked tables.
#[pg_trigger]
fn cache_invalidate_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relid = trigger.relid()?;
    note_write(relid.to_u32());
    Ok(None)
}
