//! Views over the statement table (`perf.statements`, `perf.predicates`,
//! `perf.predicate_stats`, `perf.table_access`) and the index-health functions
//! (`perf.unused_indexes()`, `perf.duplicate_indexes()`), written in SQL: they are catalog
//! joins, best expressed and reviewed as SQL.

pgrx::extension_sql_file!(
    "../../sql/stats.sql",
    name = "stats_views",
    requires = [
        stats::api::query_stats,
        stats::api::query_predicates,
        stats::api::reset_stats,
        pg::privilege::require_role_sql
    ]
);
