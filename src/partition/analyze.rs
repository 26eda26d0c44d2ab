//! ANALYZE of a partitioned table's own statistics, without re-analyzing every partition.
//!
//! On PostgreSQL 15, `ANALYZE parent` expands a partitioned table into itself and all its
//! partitions: after maintenance moved rows, a set with 1,000 partitions would be read
//! 1,001 times over. Only the parent's statistics need it: autovacuum never analyzes a
//! partitioned table, but it does analyze the partitions that received rows (their first
//! changes pass its threshold at once). `analyze_rel()` given the parent's OID analyzes that
//! relation only, which is how autovacuum calls it.
//!
//! Runs with the caller's rights: `analyze_rel` skips, with PostgreSQL's own WARNING, a
//! table the caller does not own.

use pgrx::prelude::*;

/// `perf._partition_analyze_parent(parent oid)`: the inheritance statistics of the
/// partitioned table `parent` (sampled across its partitions), not the partitions' own.
#[pg_extern(volatile, parallel_unsafe, name = "_partition_analyze_parent")]
fn partition_analyze_parent(parent: Option<pg_sys::Oid>) {
    let Some(parent) = parent else {
        crate::error::invalid_argument(
            "parent must not be NULL",
            "Pass the partitioned table to analyze.",
        )
    };
    let relkind = Spi::get_one_with_args::<i8>(
        "SELECT relkind::\"char\" FROM pg_catalog.pg_class WHERE oid = $1",
        &[parent.into()],
    )
    .ok()
    .flatten();
    if relkind != Some(pg_sys::RELKIND_PARTITIONED_TABLE as i8) {
        crate::error::invalid_argument(
            format!("relation {} is not a partitioned table", u32::from(parent)),
            "perf._partition_analyze_parent() analyzes a partition set's parent.",
        );
    }
    let mut params = pg_sys::VacuumParams {
        options: pg_sys::VACOPT_ANALYZE,
        freeze_min_age: -1,
        freeze_table_age: -1,
        multixact_freeze_min_age: -1,
        multixact_freeze_table_age: -1,
        log_min_duration: -1,
        index_cleanup: pg_sys::VacOptValue::VACOPTVALUE_UNSPECIFIED,
        truncate: pg_sys::VacOptValue::VACOPTVALUE_UNSPECIFIED,
        ..Default::default()
    };
    // SAFETY: called in a transaction (a SQL function), as ANALYZE inside a transaction block
    // is (in_outer_xact = true). analyze_rel opens the relation by OID itself with
    // SHARE UPDATE EXCLUSIVE (a relation dropped meanwhile is skipped), checks ownership,
    // and raises PostgreSQL ERRORs, which pgrx's FFI guard turns into this function's error.
    // `params` outlives the call; the strategy is palloc'd in the current memory context.
    unsafe {
        let strategy = pg_sys::GetAccessStrategy(pg_sys::BufferAccessStrategyType::BAS_VACUUM);
        pg_sys::analyze_rel(
            parent,
            std::ptr::null_mut(),
            &mut params,
            std::ptr::null_mut(),
            true,
            strategy,
        );
    }
}
