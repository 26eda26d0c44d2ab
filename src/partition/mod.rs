//! Partition sets: `perf.partition_table()` makes a table a managed set of range (time or
//! integer) or hash partitions, converting a populated plain table if need be;
//! `perf.partition_maintenance()` premakes partitions, applies retention and drains rows
//! out of the default partition; `perf.partition_sets`, `perf.partitions` and
//! `perf.partition_progress` show them. The SQL API is PL/pgSQL (sql/partition.sql): it is
//! DDL orchestration, where SQL is the clearest language and SPI from Rust would add
//! nothing but noise. Rust provides what SQL cannot: the privilege-checked writer of the
//! configuration table ([`config`]), progress in shared memory ([`progress`]) and the
//! settings ([`gucs`]).
//!
//! Lock order (also in README.md, "Partitioning"): parent SHARE UPDATE EXCLUSIVE, then (only
//! for retention) parent ACCESS EXCLUSIVE, then the default partition ACCESS EXCLUSIVE, then
//! tables nobody else can see yet. Every wait is bounded by `perf.partition_lock_timeout`;
//! a timed-out attempt is rolled back (releasing what it locked) and retried.
//!
//! For the scheduler (job kind `partition_maintenance`, every `perf.partition_interval`): run
//! [`MAINTENANCE_SQL`] once per set, each in its own transaction, so that no set's locks are
//! held while another is processed (list the sets with [`SETS_SQL`]). A no-op run of a set
//! takes no lock at all. `perf.partition_maintenance()` without an argument does every set
//! in one transaction instead (for a manual run).

pub mod analyze;
pub mod config;
pub mod gucs;
pub mod progress;

/// Lists the partition sets (one `oid` column, `parent`), in the order to maintain them.
pub const SETS_SQL: &str =
    "SELECT parent::oid AS parent FROM perf.partition_config ORDER BY parent::oid";
/// Maintains one set (`$1`: the parent's OID); returns what it did as rows
/// (set, action, object, detail). Raises an ERROR if the set cannot be maintained.
pub const MAINTENANCE_SQL: &str =
    "SELECT count(*) FROM perf.partition_maintenance($1::oid::regclass)";

/// Called from `_PG_init`: registers the `perf.partition_*` settings. Shared memory for
/// progress is requested and attached through `crate::pg::shmem` (progress::request/startup).
pub fn init() {
    gucs::init();
}

pgrx::extension_sql_file!(
    "../../sql/partition.sql",
    name = "partition_sql",
    requires = [
        partition::analyze::partition_analyze_parent,
        partition::config::partition_config_put,
        partition::progress::partition_progress_update,
        partition::progress::partition_progress_done,
        partition::progress::partition_progress_all,
        pg::privilege::require_role_sql
    ]
);
