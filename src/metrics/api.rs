//! `perf.metrics()`: every family of [`super::sources`] plus pg_perf's per-database
//! statement roll-up, rendered as Prometheus text.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::exposition::{self, Family, Kind};
use super::sources::{Source, SOURCES};
use crate::pg::privilege::{self, Role};
use crate::stats::rollup;

/// The source's query with its label columns cast to text and its value columns to
/// float8, so every source reads the same way whatever types its catalog columns have.
fn normalized_sql(src: &Source) -> String {
    let n_labels = src.labels.len();
    let n = n_labels + src.columns.len();
    let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < n_labels {
                format!("{c}::text")
            } else {
                format!("{c}::float8")
            }
        })
        .collect();
    format!(
        "SELECT {} FROM ({}) AS q({})",
        casts.join(", "),
        src.sql,
        names.join(", ")
    )
}

fn read_source(client: &SpiClient<'_>, src: &Source, out: &mut Vec<Family>) {
    let mut families: Vec<Family> = src
        .columns
        .iter()
        .map(|c| Family::new(c.name, c.help, c.kind))
        .collect();
    let rows = client
        .select(&normalized_sql(src), None, &[])
        .unwrap_or_else(|e| pgrx::error!("perf.metrics(): reading {}: {e}", src.columns[0].name));
    for row in rows {
        let labels: Vec<String> = (1..=src.labels.len())
            .map(|i| row.get::<String>(i).ok().flatten().unwrap_or_default())
            .collect();
        let pairs: Vec<(&str, &str)> = src
            .labels
            .iter()
            .zip(&labels)
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        for (j, fam) in families.iter_mut().enumerate() {
            let value = row
                .get::<f64>(src.labels.len() + j + 1)
                .ok()
                .flatten()
                .unwrap_or(f64::NAN);
            fam.push(&pairs, value);
        }
    }
    out.extend(families);
}

fn database_names(client: &SpiClient<'_>) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    if let Ok(rows) = client.select(
        "SELECT oid::int8, datname::text FROM pg_database",
        None,
        &[],
    ) {
        for row in rows {
            if let (Ok(Some(oid)), Ok(Some(name))) = (row.get::<i64>(1), row.get::<String>(2)) {
                names.insert(oid as u32, name);
            }
        }
    }
    names
}

/// pg_perf's statement figures per database, with the latency histogram as a real
/// Prometheus histogram (log buckets, ratio √2) and its p99 as a gauge.
fn statement_families(names: &HashMap<u32, String>) -> Vec<Family> {
    let mut statements = Family::new(
        "pg_perf_statements",
        "Distinct statements pg_perf holds statistics for.",
        Kind::Gauge,
    );
    let mut calls = Family::new(
        "pg_perf_statement_calls_total",
        "Statement executions recorded.",
        Kind::Counter,
    );
    let mut errors = Family::new(
        "pg_perf_statement_errors_total",
        "Statement executions that ended in an ERROR.",
        Kind::Counter,
    );
    let mut rows = Family::new(
        "pg_perf_statement_rows_total",
        "Rows returned or affected by statements.",
        Kind::Counter,
    );
    let mut slow = Family::new(
        "pg_perf_statement_slow_calls_total",
        "Executions slower than perf.slow_query_ms.",
        Kind::Counter,
    );
    let mut seconds = Family::new(
        "pg_perf_statement_exec_seconds_total",
        "Time spent executing statements.",
        Kind::Counter,
    );
    let mut p99 = Family::new(
        "pg_perf_statement_p99_seconds",
        "99th percentile of statement execution time over all statements of the database \
         (merged histograms, accurate to one bucket: about +-19%).",
        Kind::Gauge,
    );
    let mut duration = Family::new(
        "pg_perf_statement_duration_seconds",
        "Statement execution time.",
        Kind::Histogram,
    );
    for r in rollup::per_database() {
        let name = names
            .get(&r.dbid)
            .cloned()
            .unwrap_or_else(|| r.dbid.to_string());
        let l = [("datname", name.as_str())];
        statements.push(&l, r.statements as f64);
        calls.push(&l, r.calls as f64);
        errors.push(&l, r.errors as f64);
        rows.push(&l, r.rows as f64);
        slow.push(&l, r.slow_calls as f64);
        seconds.push(&l, r.total_exec_ms / 1e3);
        if let Some(ms) = r.percentile_ms(0.99) {
            p99.push(&l, ms / 1e3);
        }
        let mut count = 0u64;
        for (upper, cum) in exposition::cumulative(&r.histogram, rollup::bucket_upper_seconds) {
            let le = exposition::le_label(upper);
            duration.push_suffixed("_bucket", &[("datname", &name), ("le", &le)], cum as f64);
            count = cum;
        }
        duration.push_suffixed("_sum", &l, r.total_exec_ms / 1e3);
        duration.push_suffixed("_count", &l, count as f64);
    }
    vec![
        statements, calls, errors, rows, slow, seconds, p99, duration,
    ]
}

/// Everything a dashboard needs, as Prometheus text exposition (format 0.0.4). Catalog
/// figures are what the caller may see (pg_stat_activity hides other roles' sessions from
/// roles without pg_read_all_stats); per-table figures are the current database's.
#[pg_extern(volatile, parallel_safe)]
fn metrics() -> String {
    privilege::require(Role::Reader, "perf.metrics()");
    let mut families = Vec::new();
    let mut up = Family::new(
        "pg_up",
        "Whether the server answered this scrape.",
        Kind::Gauge,
    );
    up.push(&[], 1.0);
    families.push(up);
    Spi::connect(|client| {
        for src in SOURCES {
            read_source(client, src, &mut families);
        }
        let names = database_names(client);
        families.extend(statement_families(&names));
    });
    exposition::render(&families)
}

/// pg_perf's statements rolled up per database (no query text, so any role may read it):
/// what `perf.metrics()` exports, as rows for exporters that map query columns to metrics
/// (postgres_exporter's custom queries: `contrib/postgres_exporter/queries.yaml`).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn database_stats() -> TableIterator<
    'static,
    (
        name!(datname, String),
        name!(statements, i64),
        name!(calls, i64),
        name!(errors, i64),
        name!(rows, i64),
        name!(slow_calls, i64),
        name!(exec_seconds, f64),
        name!(p50_seconds, Option<f64>),
        name!(p95_seconds, Option<f64>),
        name!(p99_seconds, Option<f64>),
    ),
> {
    privilege::require(Role::Reader, "perf.database_stats()");
    let names = Spi::connect(database_names);
    let rows: Vec<_> = rollup::per_database()
        .into_iter()
        .map(|r| {
            let name = names
                .get(&r.dbid)
                .cloned()
                .unwrap_or_else(|| r.dbid.to_string());
            let secs = |p: f64| r.percentile_ms(p).map(|ms| ms / 1e3);
            (
                name,
                r.statements,
                r.calls,
                r.errors,
                r.rows,
                r.slow_calls,
                r.total_exec_ms / 1e3,
                secs(0.50),
                secs(0.95),
                secs(0.99),
            )
        })
        .collect();
    TableIterator::new(rows)
}
