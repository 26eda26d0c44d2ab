//! Change tracking: "this relation changed, at commit". A service for every capability
//! whose results depend on relation contents or definitions (the result cache today; the
//! matview refresh and maintenance policy next). It keeps, in shared memory, a generation
//! per relation and a global one (`generations`), moved when a change commits.
//!
//! Recording changes: `note_write(relid)` (e.g. from a statement-level trigger) marks a
//! relation changed by the current transaction; `before_utility` (called by the pg layer's
//! ProcessUtility hook for every utility statement) records DDL. At PRE_COMMIT, before the
//! commit becomes visible to other sessions, every changed relation is counted as
//! committing and its generation moves; when the commit is over (visible), the count
//! drops. An abort before PRE_COMMIT moves nothing.
//!
//! Reading: `relation_slot` + `relation_state` / `global_state` give (generation, commits
//! in progress); a reader that saw the same generations and no commit in progress before
//! and after its work saw no concurrent change (see `cache::api::cached_json`).
//!
//! DDL is tracked as narrowly as it can be told apart (`before_utility`): statements on a
//! relation (ALTER/DROP/RENAME/SET SCHEMA, triggers, policies, rules, GRANT/REVOKE on
//! tables, CREATE OR REPLACE VIEW) count as a change of that relation (and of its
//! inheritance children where the change reaches them); a new or renamed permanent
//! relation also counts as a change of every relation with the same name, whose readers
//! may now resolve to it. Temporary objects change nothing shared. Everything else that can
//! change a result (functions, types, schemas, roles, COMMIT PREPARED, ...) moves the
//! global generation, bracketed as a global operation.
//!
//! Brackets end after the commit's catalog invalidations were sent (a resource-release
//! callback after AtEOXact_Inval), so a reader that starts after a bracket ended and then
//! accepts invalidation messages plans with the new catalog state.
//!
//! Own changes: changed relations' slots are in `with_written_slots` until the transaction
//! ends; other DDL sets `own_global_ddl` until it ends.
//!
//! Invariants: the transaction and resource-release handlers (called from `pg::xact`, for
//! every transaction) only touch atomics and backend-local state and cannot panic.

use pgrx::pg_sys;

use crate::pg::backend_local::BackendLocal;
use crate::pg::list;

mod generations;
mod registry;

pub use generations::{
    bump, global_begin, global_end, global_state, instance, relation_slot, relation_state, sweeps,
    unwatch, watch, REGISTRY_SLOTS,
};
use generations::{commit_begin, commit_end, sweep_epoch, swept_since};
pub(crate) use generations::{request, startup};

struct TrackLocal {
    /// Registry slots of relations this transaction wrote or changed with DDL.
    written: Vec<u32>,
    /// PRE_COMMIT counted the written tables as committing.
    committing: bool,
    /// A statement that may change any result ran in this transaction.
    ddl_pending: bool,
    /// This transaction's commit holds a global operation (see `global_begin`).
    global_held: bool,
    /// A utility statement that may create or drop relations ran in this transaction.
    utility_seen: bool,
    /// Counts such utility statements in this backend (see `utility_epoch`).
    utility_epoch: u64,
    /// A commit of this backend ended on a watched slot (see `take_watch_fired`).
    watch_fired: bool,
    /// The registry's sweep epoch read before this transaction's first noted write: a sweep
    /// since then may have freed a slot in `written` (see `generations`).
    noted_epoch: Option<u64>,
}

static LOCAL: BackendLocal<TrackLocal> = BackendLocal::new(TrackLocal {
    written: Vec::new(),
    committing: false,
    ddl_pending: false,
    global_held: false,
    utility_seen: false,
    utility_epoch: 0,
    watch_fired: false,
    noted_epoch: None,
});

/// Runs `f` on this backend's change bookkeeping. Closures here are a few lines on
/// `TrackLocal` and atomics in shared memory: no nested `with_local`, no catalog access.
#[inline(always)]
fn with_local<R>(f: impl FnOnce(&mut TrackLocal) -> R) -> R {
    // SAFETY: single-threaded backend, and per the rule above borrows never overlap.
    unsafe { LOCAL.with(f) }
}

/// Runs `f` with the registry slots this transaction wrote (its own writes: a reader of
/// generations must not serve results computed without them).
pub fn with_written_slots<R>(f: impl FnOnce(&[u32]) -> R) -> R {
    with_local(|l| f(&l.written))
}

/// True (once) when a transaction of this backend that ended changed a relation someone
/// `watch`ed: the watcher should be told (see `crate::matview::after_transaction`).
pub fn take_watch_fired() -> bool {
    with_local(|l| std::mem::replace(&mut l.watch_fired, false))
}

/// This transaction ran DDL whose effect is not limited to known relations: nothing that
/// depends on generations may be used until it ends (its own changes are not visible to
/// other readers).
pub fn own_global_ddl() -> bool {
    // A sweep since the first write: the written slots may no longer be the relations'.
    with_local(|l| l.ddl_pending || l.noted_epoch.is_some_and(swept_since))
}

/// `(epoch, in_transaction)`: `epoch` changes whenever a utility statement that may create,
/// drop or rename relations starts in this backend; `in_transaction` says one ran in the
/// current transaction (its effects may still be rolled back). A value derived from the
/// session's relations may be memoized while the epoch stays and `in_transaction` is false.
pub fn utility_epoch() -> (u64, bool) {
    with_local(|l| (l.utility_epoch, l.utility_seen))
}

fn ddl_pending() {
    with_local(|l| l.ddl_pending = true);
}

fn current_db() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Records that this transaction changed `relid` (a write seen by a trigger, or DDL): its
/// generation moves when the transaction commits.
pub fn note_write(relid: u32) {
    // Read before the lookup: a sweep after it moves the epoch (see `generations`).
    let epoch = sweep_epoch();
    let Some(slot) = relation_slot(current_db(), relid, true) else {
        // Registry full: nothing can depend on this relation anyway (readers need a slot),
        // but to be safe everything is treated as changed at commit.
        ddl_pending();
        return;
    };
    with_local(|l| {
        l.noted_epoch.get_or_insert(epoch);
        if !l.written.contains(&slot) {
            l.written.push(slot);
        }
    });
}

extern "C" {
    /// catalog/pg_inherits.h; not bound by pgrx.
    fn find_all_inheritors(
        parent: pg_sys::Oid,
        lockmode: std::ffi::c_int,
        numparents: *mut *mut pg_sys::List,
    ) -> *mut pg_sys::List;
}

/// Counts a DDL change of the relation `relid` (and of its inheritance children when
/// `children`) as a write of this transaction. Temporary relations are never cached.
unsafe fn note_relation(relid: pg_sys::Oid, children: bool) {
    if relid == pg_sys::InvalidOid {
        return;
    }
    // SAFETY: catalog lookups by OID; the relation may have been dropped since its name was
    // resolved (no lock is held): then there is nothing left to invalidate but its slot.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(relid),
        );
        if !tuple.is_null() {
            let td = (*tuple).t_data;
            let form =
                (td as *mut u8).add((*td).t_hoff as usize) as *const pg_sys::FormData_pg_class;
            let temp = (*form).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP;
            pg_sys::ReleaseSysCache(tuple);
            if temp {
                return;
            }
        }
        note_write(relid.to_u32());
        if children {
            let all = find_all_inheritors(relid, pg_sys::NoLock as i32, std::ptr::null_mut());
            for child in list::oids(all) {
                if child != relid {
                    note_write(child.to_u32());
                }
            }
        }
    }
}

/// The OID a RangeVar names now (InvalidOid if it does not exist), without locking; None
/// if it cannot be resolved without risking an error of our own (cross-database names).
unsafe fn resolve(rv: *mut pg_sys::RangeVar) -> Option<pg_sys::Oid> {
    // SAFETY: rv is null or a valid RangeVar of the statement.
    unsafe {
        if rv.is_null() || !(*rv).catalogname.is_null() {
            return None;
        }
        if (*rv).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP {
            return Some(pg_sys::InvalidOid);
        }
        Some(pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        ))
    }
}

/// A DDL change of the relation a RangeVar names; unresolvable names change everything.
unsafe fn note_rangevar(rv: *mut pg_sys::RangeVar, children: bool) {
    // SAFETY: per the caller.
    match unsafe { resolve(rv) } {
        // SAFETY: an OID just resolved (or InvalidOid, which is ignored).
        Some(oid) => unsafe { note_relation(oid, children) },
        None => ddl_pending(),
    }
}

/// A permanent relation named `name` appears (created, renamed or moved): cached queries
/// that resolved the name to another relation with that name may now resolve to it.
unsafe fn note_new_name(name: *const std::ffi::c_char) {
    if name.is_null() {
        return;
    }
    // SAFETY: a catcache list search on the first key of RELNAMENSP (relname); members are
    // pg_class tuples, released before returning.
    unsafe {
        let list = pg_sys::SearchSysCacheList(
            pg_sys::SysCacheIdentifier::RELNAMENSP as i32,
            1,
            pg_sys::Datum::from(name),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        if list.is_null() {
            return;
        }
        let n = (*list).n_members.max(0) as usize;
        for ct in (*list).members.as_slice(n) {
            let td = (**ct).tuple.t_data;
            if td.is_null() {
                continue;
            }
            let form =
                (td as *mut u8).add((*td).t_hoff as usize) as *const pg_sys::FormData_pg_class;
            if (*form).relpersistence as u8 != pg_sys::RELPERSISTENCE_TEMP {
                note_write((*form).oid.to_u32());
            }
        }
        pg_sys::ReleaseCatCacheList(list);
    }
}

/// The relation named by a qualified name list (`names` minus its last `drop_last`
/// elements): for DROP TABLE (the list is the name) and DROP TRIGGER/POLICY/RULE (the list
/// ends with the object's own name).
unsafe fn note_name_list(names: *mut pg_sys::List, drop_last: usize) {
    // SAFETY: names is a List of String nodes from the parser.
    unsafe {
        if names.is_null() {
            return;
        }
        let len = (*names).length as usize;
        if len <= drop_last || len - drop_last > 3 {
            ddl_pending();
            return;
        }
        let copy = pg_sys::list_truncate(pg_sys::list_copy(names), (len - drop_last) as i32);
        // Dropping a partitioned table drops its partitions; dropping a trigger on one drops
        // its clones on the partitions.
        note_rangevar(pg_sys::makeRangeVarFromNameList(copy), true);
    }
}

fn list_nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    // SAFETY: a valid pointer List from the parser (or NIL), alive while we collect it.
    unsafe { list::ptrs(list).collect() }
}

fn is_relation_kind(t: pg_sys::ObjectType::Type) -> bool {
    use pg_sys::ObjectType::*;
    matches!(
        t,
        OBJECT_TABLE
            | OBJECT_VIEW
            | OBJECT_MATVIEW
            | OBJECT_FOREIGN_TABLE
            | OBJECT_SEQUENCE
            | OBJECT_INDEX
    )
}

/// Called by the ProcessUtility hook before every utility statement. Records what the
/// statement may change (see the module docs) and brackets COMMIT PREPARED (whose effects
/// become visible inside the statement) as a global operation: the returned guard ends it
/// when dropped, also on error.
///
/// # Safety
/// `node` must be null or a valid parse node.
pub unsafe fn before_utility(node: *mut pg_sys::Node) -> Option<GlobalOperation> {
    if node.is_null() || !generations::available() {
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
                global_begin();
                return Some(GlobalOperation);
            }
            return None;
        }
        // A refreshed materialized view changed (managed views that read it refresh next).
        T_RefreshMatViewStmt => {
            // SAFETY: the tag says it is a RefreshMatViewStmt; its relation is a RangeVar.
            unsafe { note_rangevar((*(node as *mut pg_sys::RefreshMatViewStmt)).relation, false) };
            return None;
        }
        // Statements that cannot change what a cached query returns (writes are seen by
        // the invalidation triggers; statements they run come through here themselves).
        // EXPLAIN ANALYZE CREATE TABLE AS runs the CTAS without coming back here.
        T_ExplainStmt => {
            // SAFETY: the tag says it is an ExplainStmt; its query is null or an analyzed
            // Query whose utility statement (if any) is a valid parse node.
            unsafe {
                let q = (*(node as *mut pg_sys::ExplainStmt)).query as *mut pg_sys::Query;
                if !q.is_null()
                    && (*q).type_ == pg_sys::NodeTag::T_Query
                    && !(*q).utilityStmt.is_null()
                    && (*(*q).utilityStmt).type_ == T_CreateTableAsStmt
                {
                    return before_utility((*q).utilityStmt);
                }
            }
            return None;
        }
        T_VariableSetStmt | T_VariableShowStmt | T_PrepareStmt | T_ExecuteStmt
        | T_DeallocateStmt | T_ListenStmt | T_NotifyStmt | T_UnlistenStmt | T_CheckPointStmt
        | T_VacuumStmt | T_CopyStmt | T_LockStmt | T_DeclareCursorStmt | T_ClosePortalStmt
        | T_FetchStmt | T_CallStmt | T_DoStmt | T_ReindexStmt | T_ClusterStmt
        | T_ConstraintsSetStmt | T_LoadStmt | T_TruncateStmt | T_CommentStmt | T_SecLabelStmt => {
            return None
        }
        _ => {}
    }
    with_local(|l| {
        l.utility_seen = true;
        l.utility_epoch = l.utility_epoch.wrapping_add(1);
    });
    // SAFETY: each arm casts the node to the struct its tag names; pointers inside are
    // null or valid parse nodes.
    unsafe {
        match tag {
            // DISCARD TEMP/ALL only drops this session's temporary relations.
            T_DiscardStmt => {}
            T_CreateStmt | T_CreateForeignTableStmt => {
                // CreateForeignTableStmt starts with its CreateStmt.
                let s = node as *mut pg_sys::CreateStmt;
                for parent in list_nodes((*s).inhRelations) {
                    note_rangevar(parent as *mut pg_sys::RangeVar, false);
                }
                note_new_relation((*s).relation);
            }
            T_ViewStmt => {
                let s = node as *mut pg_sys::ViewStmt;
                note_rangevar((*s).view, false);
                note_new_relation((*s).view);
            }
            T_CreateTableAsStmt => {
                let s = node as *mut pg_sys::CreateTableAsStmt;
                if !(*s).into.is_null() {
                    note_new_relation((*(*s).into).rel);
                }
            }
            T_CreateSeqStmt => note_new_relation((*(node as *mut pg_sys::CreateSeqStmt)).sequence),
            T_AlterSeqStmt => {}
            T_IndexStmt => note_new_name((*(node as *mut pg_sys::IndexStmt)).idxname),
            T_AlterTableStmt => {
                note_rangevar((*(node as *mut pg_sys::AlterTableStmt)).relation, true)
            }
            T_CreateTrigStmt => {
                note_rangevar((*(node as *mut pg_sys::CreateTrigStmt)).relation, false)
            }
            T_CreatePolicyStmt => {
                note_rangevar((*(node as *mut pg_sys::CreatePolicyStmt)).table, false)
            }
            T_AlterPolicyStmt => {
                note_rangevar((*(node as *mut pg_sys::AlterPolicyStmt)).table, false)
            }
            T_RuleStmt => note_rangevar((*(node as *mut pg_sys::RuleStmt)).relation, false),
            T_RenameStmt => {
                let s = node as *mut pg_sys::RenameStmt;
                if (*s).relation.is_null() {
                    ddl_pending();
                } else {
                    note_rangevar((*s).relation, true);
                    if is_relation_kind((*s).renameType) {
                        note_new_name((*s).newname);
                    }
                }
            }
            T_AlterObjectSchemaStmt => {
                let s = node as *mut pg_sys::AlterObjectSchemaStmt;
                if (*s).relation.is_null() {
                    ddl_pending();
                } else {
                    note_rangevar((*s).relation, false);
                    note_new_name((*(*s).relation).relname);
                }
            }
            T_DropStmt => {
                let s = node as *mut pg_sys::DropStmt;
                use pg_sys::ObjectType::*;
                let t = (*s).removeType;
                if is_relation_kind(t) {
                    for names in list_nodes((*s).objects) {
                        note_name_list(names as *mut pg_sys::List, 0);
                    }
                } else if matches!(t, OBJECT_TRIGGER | OBJECT_POLICY | OBJECT_RULE) {
                    for names in list_nodes((*s).objects) {
                        note_name_list(names as *mut pg_sys::List, 1);
                    }
                } else {
                    ddl_pending();
                }
            }
            T_GrantStmt => {
                let s = node as *mut pg_sys::GrantStmt;
                use pg_sys::ObjectType::*;
                if (*s).targtype == pg_sys::GrantTargetType::ACL_TARGET_OBJECT
                    && matches!((*s).objtype, OBJECT_TABLE | OBJECT_SEQUENCE)
                {
                    for rv in list_nodes((*s).objects) {
                        note_rangevar(rv as *mut pg_sys::RangeVar, false);
                    }
                } else {
                    ddl_pending();
                }
            }
            _ => ddl_pending(),
        }
    }
    None
}

/// A relation is created with the name `rv` gives: temporary ones only change this
/// session's temporary-relation signature; permanent ones may shadow same-named relations.
unsafe fn note_new_relation(rv: *mut pg_sys::RangeVar) {
    // SAFETY: rv is null or a valid RangeVar.
    unsafe {
        if rv.is_null() || (*rv).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP {
            return;
        }
        note_new_name((*rv).relname);
    }
}

/// A global operation in progress; ends (with a final invalidation) when dropped.
pub struct GlobalOperation;

impl Drop for GlobalOperation {
    fn drop(&mut self) {
        global_end();
    }
}

fn end_writers(l: &mut TrackLocal) {
    if l.committing {
        for &slot in &l.written {
            if commit_end(slot) {
                l.watch_fired = true;
            }
        }
        l.committing = false;
    }
    l.written.clear();
    l.noted_epoch = None;
}

/// Ends everything this transaction started: writers counted as committing and the global
/// operation. Idempotent.
fn end_transaction() {
    with_local(|l| {
        end_writers(l);
        if l.global_held {
            global_end();
            l.global_held = false;
        }
        l.ddl_pending = false;
        l.utility_seen = false;
    });
}

/// Transaction events (called from `crate::pg::xact`).
pub(crate) fn on_xact_event(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PARALLEL_PRE_COMMIT => with_local(|l| {
            if !l.committing {
                for &slot in &l.written {
                    commit_begin(slot);
                }
                l.committing = true;
                // After the counts (see `generations::sweep`): a sweep that missed them moved
                // the epoch, and a slot it freed may be another relation's now, so this
                // commit invalidates everything instead.
                if l.noted_epoch.is_some_and(swept_since) {
                    l.ddl_pending = true;
                }
            }
            if l.ddl_pending && !l.global_held {
                global_begin();
                l.global_held = true;
            }
        }),
        // The commit is visible now, but its catalog invalidations are sent later
        // (AtEOXact_Inval): the brackets end in `on_transaction_released`.
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {}
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => end_transaction(),
        // A prepared transaction's changes become visible at COMMIT PREPARED, which
        // invalidates everything (see `before_utility`); here it just stops being ours.
        XACT_EVENT_PREPARE => end_transaction(),
        _ => {}
    }
}

/// The transaction ended and its catalog invalidations were sent (called from
/// `crate::pg::xact` at the top-level AFTER_LOCKS phase of resource release, after a commit
/// or an abort): end its brackets.
pub(crate) fn on_transaction_released() {
    end_transaction();
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::generations::{sweep_epoch, swept_since};
    use super::*;

    /// Keys of a database that does not exist: nothing else uses them.
    const NO_DB: u32 = 0xFFFF_FFF0;

    #[pg_test]
    fn a_full_registry_is_swept_and_keeps_watched_slots_where_they_are() {
        let watched = relation_slot(NO_DB, 1, true).expect("a slot");
        watch(watched);
        let freed_later = relation_slot(NO_DB, 2, true).expect("a slot");
        // A write noted before the sweep, by this transaction.
        note_write(4_242_424);
        assert!(!own_global_ddl());
        let (sweeps_before, epoch_before, global_before) =
            (sweeps(), sweep_epoch(), global_state().0);
        let mut relid = 3;
        while sweeps() == sweeps_before && relid < 2 * REGISTRY_SLOTS as u32 {
            relation_slot(NO_DB, relid, true);
            relid += 1;
        }
        unwatch(watched);
        assert!(sweeps() > sweeps_before, "no sweep after {relid} claims");
        assert!(swept_since(epoch_before));
        assert_ne!(
            global_state().0,
            global_before,
            "stored results must be invalidated"
        );
        assert_eq!(global_state().1, 0, "the sweep's global operation ended");
        // The watched key is found in its slot; the others were freed.
        assert_eq!(relation_slot(NO_DB, 1, false), Some(watched));
        assert_ne!(relation_slot(NO_DB, 2, false), Some(freed_later));
        // The slot this transaction wrote may be another relation's now: its own reads
        // must not be cached, and its commit invalidates everything.
        assert!(own_global_ddl());
        // Claims work after the sweep, far below the threshold again.
        assert!(relation_slot(NO_DB, relid + 1, true).is_some());
    }
}
