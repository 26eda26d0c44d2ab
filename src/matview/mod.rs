//! Materialized views that refresh themselves.
//!
//! Managed refresh (`managed`): `perf.manage_matview()` records a view in `perf.matviews`
//! with its sources (the tables its definition reads, found through views and unmanaged
//! matviews; managed matviews are sources themselves) and a `matview_refresh` job. The
//! scheduler calls `queue_due` on every wake: a view is due when a source changed (its
//! change generation in `crate::track` moved since the generation recorded at the last
//! refresh) and min_interval passed, when a schedule slot after the first unapplied change
//! came, or when the oldest unapplied change is older than max_staleness; never when
//! nothing changed. The run (a job runner) calls `refresh`.
//!
//! Waking without polling: a view found unchanged arms its sources' registry slots
//! (`track::watch`); the first commit that changes one of them wakes this database's
//! scheduler when it ends (`after_transaction`, from the resource-release callback).
//!
//! Invariants: generations are read before the refresh's snapshot is taken, and a source
//! with a commit in progress is recorded one generation back per committing writer, so a
//! change is never counted as applied before it was visible (at worst one extra refresh).
//! Generations recorded under another shared-memory instance (a restart), or for a
//! registry slot that no longer holds the relation, count as a change.

pub mod managed;

pub use managed::{queue_due, refresh};

pgrx::extension_sql_file!(
    "../../sql/matview.sql",
    name = "matview_sql",
    requires = [
        "scheduler_sql",
        "cache_sql",
        matview::managed::matview_manage_oid,
        matview::managed::matview_unmanage_oid,
        matview::managed::track_generation,
        matview::managed::track_instance
    ]
);

/// Called after every top-level transaction ended (from `crate::pg::xact`): when its commit
/// changed a relation a managed view watches, wake this database's scheduler.
pub(crate) fn after_transaction() {
    if crate::track::take_watch_fired() {
        // SAFETY: plain read of the backend's database id.
        let db = unsafe { pgrx::pg_sys::MyDatabaseId };
        crate::scheduler::hosted::wake(db);
    }
}
