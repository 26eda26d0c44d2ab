//! SQL functions over the statement table: `perf.query_stats()`, `perf.slow_queries()`,
//! `perf.why_slow()`, `perf.slow_plans()`, `perf.query_predicates()`, `perf.stats_info()`,
//! `perf.reset_stats()`. Views over them live in `sql/stats.sql`.

use std::collections::HashMap;

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::encoding::ServerText;
use super::histogram;
use super::shmem::{self, EntrySnapshot, PredicateKind, StatKey};
use super::why_slow::{self, Finding, PlanContext, Severity};
use super::workload::{self, caller_reads_all as can_read_all, current_db_id, current_user_id};
use crate::error::{invalid_argument, PerfError};
use crate::pg::privilege::{self, Role};

fn require_shmem() {
    if !shmem::available() {
        PerfError::SharedMemoryMissing {
            what: "statement statistics",
        }
        .raise();
    }
}

fn ts(t: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(t).ok()
}

fn visible_text(e: &EntrySnapshot, all: bool, me: u32) -> String {
    workload::shown_text(&e.text, e.key.userid, all, me)
}

fn stddev(c: &shmem::Counters) -> f64 {
    if c.calls > 1 {
        (c.m2_time / c.calls as f64).sqrt()
    } else {
        0.0
    }
}

fn pct(c: &shmem::Counters, p: f64) -> Option<f64> {
    histogram::percentile_ms(&c.histogram, p).map(|v| v.clamp(c.min_time, c.max_time))
}

/// Every recorded statement with its counters, latency percentiles (from a log-scale
/// histogram: accurate to one bucket, about ±19%) and whether a slow plan was captured.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn query_stats(
    showtext: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(userid, pg_sys::Oid),
        name!(dbid, pg_sys::Oid),
        name!(toplevel, bool),
        name!(queryid, i64),
        name!(query, Option<ServerText>),
        name!(calls, i64),
        name!(errors, i64),
        name!(rows, i64),
        name!(total_exec_time, f64),
        name!(min_exec_time, f64),
        name!(max_exec_time, f64),
        name!(mean_exec_time, f64),
        name!(stddev_exec_time, f64),
        name!(p50_exec_time, Option<f64>),
        name!(p95_exec_time, Option<f64>),
        name!(p99_exec_time, Option<f64>),
        name!(shared_blks_hit, i64),
        name!(shared_blks_read, i64),
        name!(shared_blks_dirtied, i64),
        name!(shared_blks_written, i64),
        name!(plans, i64),
        name!(total_plan_time, f64),
        name!(temp_blks_read, i64),
        name!(temp_blks_written, i64),
        name!(blk_read_time, f64),
        name!(blk_write_time, f64),
        name!(wal_records, i64),
        name!(wal_bytes, i64),
        name!(slow_calls, i64),
        name!(first_seen, Option<TimestampWithTimeZone>),
        name!(last_seen, Option<TimestampWithTimeZone>),
        name!(plan_captured, bool),
    ),
> {
    require_shmem();
    let all = can_read_all();
    let me = current_user_id();
    let rows: Vec<_> = shmem::snapshot(|_| true)
        .into_iter()
        .map(|e| {
            let c = e.counters;
            let text = showtext.then(|| ServerText(visible_text(&e, all, me)));
            (
                pg_sys::Oid::from(e.key.userid),
                pg_sys::Oid::from(e.key.dbid),
                e.key.toplevel,
                e.key.queryid,
                text,
                c.calls,
                c.errors,
                c.rows,
                c.total_time,
                c.min_time,
                c.max_time,
                c.mean_time,
                stddev(&c),
                pct(&c, 0.50),
                pct(&c, 0.95),
                pct(&c, 0.99),
                c.buffers.shared_blks_hit,
                c.buffers.shared_blks_read,
                c.buffers.shared_blks_dirtied,
                c.buffers.shared_blks_written,
                c.plans,
                c.total_plan_time,
                c.buffers.temp_blks_read,
                c.buffers.temp_blks_written,
                c.buffers.blk_read_ms,
                c.buffers.blk_write_ms,
                c.wal.records,
                c.wal.bytes.min(i64::MAX as u64) as i64,
                c.slow_calls,
                ts(c.first_seen),
                ts(c.last_seen),
                c.plan_ms > 0.0,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Sort keys accepted by `perf.slow_queries(order_by => ...)`.
const ORDER_KEYS: &[&str] = &[
    "total_time",
    "mean_time",
    "p95",
    "p99",
    "max_time",
    "calls",
    "rows",
    "io",
    "temp",
    "errors",
    "slow_calls",
];

fn order_value(key: &str, c: &shmem::Counters) -> f64 {
    match key {
        "total_time" => c.total_time,
        "mean_time" => c.mean_time,
        "p95" => pct(c, 0.95).unwrap_or(0.0),
        "p99" => pct(c, 0.99).unwrap_or(0.0),
        "max_time" => c.max_time,
        "calls" => c.calls as f64,
        "rows" => c.rows as f64,
        "io" => c.buffers.shared_blks_read as f64,
        "temp" => (c.buffers.temp_blks_written + c.buffers.temp_blks_read) as f64,
        "errors" => c.errors as f64,
        _ => c.slow_calls as f64,
    }
}

/// The worst statements of the current database, with their share of its total execution
/// time. `order_by`: total_time (default), mean_time, p95, p99, max_time, calls, rows, io,
/// temp, errors, slow_calls.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn slow_queries(
    limit: default!(i32, 20),
    order_by: default!(&str, "'total_time'"),
) -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(query, ServerText),
        name!(calls, i64),
        name!(total_time_ms, f64),
        name!(mean_time_ms, f64),
        name!(p95_time_ms, Option<f64>),
        name!(p99_time_ms, Option<f64>),
        name!(max_time_ms, f64),
        name!(pct_of_db_time, f64),
        name!(rows_per_call, f64),
        name!(cache_hit_pct, Option<f64>),
        name!(temp_blks_written, i64),
        name!(slow_calls, i64),
        name!(errors, i64),
        name!(plan_captured, bool),
    ),
> {
    require_shmem();
    if limit <= 0 {
        invalid_argument(
            format!("limit must be positive, got {limit}"),
            "Pass the number of statements to return, e.g. perf.slow_queries(10).",
        );
    }
    let key = order_by.trim().to_ascii_lowercase();
    if !ORDER_KEYS.contains(&key.as_str()) {
        invalid_argument(
            format!("unknown order_by \"{order_by}\""),
            format!("Use one of: {}.", ORDER_KEYS.join(", ")),
        );
    }
    let db = current_db_id();
    let all = can_read_all();
    let me = current_user_id();
    let mut entries = shmem::snapshot(|k| k.dbid == db);
    entries.retain(|e| e.counters.calls > 0 || e.counters.errors > 0);
    let db_total: f64 = entries.iter().map(|e| e.counters.total_time).sum();
    entries
        .sort_by(|a, b| order_value(&key, &b.counters).total_cmp(&order_value(&key, &a.counters)));
    entries.truncate(limit as usize);
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            let c = &e.counters;
            let blocks = c.buffers.shared_blks_hit + c.buffers.shared_blks_read;
            (
                e.key.queryid,
                ServerText(visible_text(e, all, me)),
                c.calls,
                c.total_time,
                c.mean_time,
                pct(c, 0.95),
                pct(c, 0.99),
                c.max_time,
                if db_total > 0.0 {
                    100.0 * c.total_time / db_total
                } else {
                    0.0
                },
                if c.calls > 0 {
                    c.rows as f64 / c.calls as f64
                } else {
                    0.0
                },
                (blocks > 0).then(|| 100.0 * c.buffers.shared_blks_hit as f64 / blocks as f64),
                c.buffers.temp_blks_written,
                c.slow_calls,
                c.errors,
                c.plan_ms > 0.0,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Captured plans of slow runs (the slowest run per statement, with actual row counts when
/// the run was instrumented), for statements of the current database.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn slow_plans() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(userid, pg_sys::Oid),
        name!(toplevel, bool),
        name!(captured_at, Option<TimestampWithTimeZone>),
        name!(exec_time_ms, f64),
        name!(analyzed, bool),
        name!(params, Option<String>),
        name!(sample_query, Option<ServerText>),
        name!(plan, Option<pgrx::JsonB>),
    ),
> {
    require_shmem();
    let db = current_db_id();
    let all = can_read_all();
    let me = current_user_id();
    let rows: Vec<_> = shmem::plans(|k| k.dbid == db && (all || k.userid == me))
        .into_iter()
        .map(|p| {
            let plan = serde_json::from_str::<serde_json::Value>(&p.plan)
                .ok()
                .map(pgrx::JsonB);
            (
                p.key.queryid,
                pg_sys::Oid::from(p.key.userid),
                p.key.toplevel,
                ts(p.captured_at),
                p.exec_ms,
                p.analyzed,
                (!p.params.is_empty()).then_some(p.params),
                (!p.sample.is_empty()).then_some(ServerText(p.sample)),
                plan,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Findings drawn from the counters alone (no plan needed).
fn counter_findings(c: &shmem::Counters, out: &mut Vec<Finding>) {
    let blocks = c.buffers.shared_blks_hit + c.buffers.shared_blks_read;
    if blocks > 1000 && c.buffers.shared_blks_read * 10 > blocks {
        out.push(Finding {
            finding: "low_cache_hit_ratio",
            severity: if c.buffers.shared_blks_read * 2 > blocks { Severity::Warning } else { Severity::Info },
            node: "statement".into(),
            detail: format!(
                "{:.1}% of {} buffer accesses were reads from disk or OS cache",
                100.0 * c.buffers.shared_blks_read as f64 / blocks as f64,
                blocks
            ),
            suggestion: "The statement reads more than fits in shared_buffers; an index that \
                         narrows the scan (see perf.suggest_indexes()) or more shared_buffers helps."
                .into(),
        });
    }
    if c.buffers.temp_blks_written > 0 {
        out.push(Finding {
            finding: "temp_spill",
            severity: Severity::Warning,
            node: "statement".into(),
            detail: format!(
                "wrote {} temporary blocks ({} kB) over {} calls",
                c.buffers.temp_blks_written,
                c.buffers.temp_blks_written * 8,
                c.calls
            ),
            suggestion: "Sorts or hashes spill to disk: raise work_mem for this workload \
                         (SET work_mem = ...) or avoid the sort with an index."
                .into(),
        });
    }
    if let (Some(p50), Some(p99)) = (pct(c, 0.5), pct(c, 0.99)) {
        if c.calls >= 20 && p50 > 0.0 && p99 > 10.0 * p50 && p99 > 1.0 {
            out.push(Finding {
                finding: "unstable_latency",
                severity: Severity::Info,
                node: "statement".into(),
                detail: format!(
                    "p99 {p99:.2} ms is {:.0}x the median {p50:.2} ms",
                    p99 / p50
                ),
                suggestion: "Runs differ widely: look for lock waits, parameter-dependent plans \
                             (compare perf.slow_plans() params) or cold caches."
                    .into(),
            });
        }
    }
    if c.errors > 0 {
        out.push(Finding {
            finding: "errors",
            severity: Severity::Info,
            node: "statement".into(),
            detail: format!("{} of {} executions failed", c.errors, c.calls + c.errors),
            suggestion: "Check the server log for the error messages.".into(),
        });
    }
}

fn relation_rows() -> HashMap<String, f64> {
    let mut map = HashMap::new();
    let _ = Spi::connect(|client| {
        let rows = client.select(
            "SELECT relname::text, reltuples::float8 FROM pg_catalog.pg_class \
             WHERE relkind IN ('r','p','m') AND relnamespace <> 'pg_catalog'::regnamespace",
            None,
            &[],
        )?;
        for r in rows {
            if let (Some(name), Some(t)) = (r.get::<String>(1)?, r.get::<f64>(2)?) {
                let e = map.entry(name).or_insert(t);
                *e = f64::max(*e, t);
            }
        }
        Ok::<_, pgrx::spi::Error>(())
    });
    map
}

/// Why is this statement slow? Rules over its captured slow plan (misestimates, spills,
/// selective sequential scans, nested loops, heap fetches, ...) and over its counters
/// (cache misses, temp files, unstable latency). Most severe first.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn why_slow(
    queryid: i64,
) -> TableIterator<
    'static,
    (
        name!(finding, String),
        name!(severity, String),
        name!(node, String),
        name!(detail, String),
        name!(suggestion, String),
    ),
> {
    require_shmem();
    let db = current_db_id();
    let all = can_read_all();
    let me = current_user_id();
    let visible = |k: &StatKey| k.dbid == db && k.queryid == queryid && (all || k.userid == me);
    let entries = shmem::snapshot(visible);
    if entries.is_empty() {
        PerfError::InvalidArgument {
            what: format!("no statement with queryid {queryid} in this database"),
            hint: "Pick a queryid from perf.slow_queries() (statistics are per database).".into(),
        }
        .raise();
    }
    // Merge counters over users/toplevel variants: take the busiest entry's counters.
    let busiest = entries
        .iter()
        .max_by(|a, b| a.counters.total_time.total_cmp(&b.counters.total_time))
        .map(|e| e.counters)
        .unwrap_or_else(|| entries[0].counters);
    let mut findings = Vec::new();
    let plans = shmem::plans(visible);
    let best = plans.iter().max_by(|a, b| {
        (a.analyzed, a.exec_ms)
            .partial_cmp(&(b.analyzed, b.exec_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match best.and_then(|p| {
        serde_json::from_str::<serde_json::Value>(&p.plan)
            .ok()
            .map(|v| (p, v))
    }) {
        Some((p, plan)) => {
            let ctx = PlanContext {
                relation_rows: relation_rows(),
                ..Default::default()
            };
            findings.extend(why_slow::analyze_plan(&plan, &ctx));
            if !p.analyzed {
                findings.push(Finding {
                    finding: "plan_without_actuals",
                    severity: Severity::Info,
                    node: "statement".into(),
                    detail: format!(
                        "the captured plan ({:.1} ms run) has estimates only; the next slow run \
                         is instrumented automatically",
                        p.exec_ms
                    ),
                    suggestion: "Run the statement again (or raise perf.plan_sample_rate) to \
                                 get row-count and timing findings."
                        .into(),
                });
            }
        }
        None => findings.push(Finding {
            finding: "no_plan_captured",
            severity: Severity::Info,
            node: "statement".into(),
            detail: format!(
                "no run reached perf.slow_query_ms = {} ms (slowest run: {:.2} ms)",
                crate::gucs::slow_query_ms(),
                busiest.max_time
            ),
            suggestion: "Lower perf.slow_query_ms to capture plans of faster statements.".into(),
        }),
    }
    counter_findings(&busiest, &mut findings);
    // Stable sort: the plan rules' own order (by time share) is kept within a severity.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    TableIterator::new(findings.into_iter().map(|f| {
        (
            f.finding.to_string(),
            f.severity.as_str().to_string(),
            f.node,
            f.detail,
            f.suggestion,
        )
    }))
}

/// Raw predicate records of the current database's statements (perf.predicates is the
/// readable view over this).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn query_predicates() -> TableIterator<
    'static,
    (
        name!(queryid, i64),
        name!(relid, pg_sys::Oid),
        name!(attnum, i16),
        name!(funcid, pg_sys::Oid),
        name!(opno, pg_sys::Oid),
        name!(kind, String),
        name!(node_group, i32),
        name!(position, i32),
        name!(with_constant, bool),
        name!(est_selectivity, Option<f64>),
        name!(actual_selectivity, Option<f64>),
        name!(calls, i64),
        name!(total_time_ms, f64),
    ),
> {
    require_shmem();
    let db = current_db_id();
    let mut rows = Vec::new();
    for e in shmem::snapshot(|k| k.dbid == db) {
        let c = &e.counters;
        for (position, p) in c.predicates.iter().take(c.npredicates as usize).enumerate() {
            let Some(kind) = PredicateKind::from_u8(p.kind) else {
                continue;
            };
            let sel = |v: f32| (v >= 0.0).then_some(v as f64);
            rows.push((
                e.key.queryid,
                pg_sys::Oid::from(p.relid),
                p.attnum,
                pg_sys::Oid::from(p.funcid),
                pg_sys::Oid::from(p.opno),
                kind.as_str().to_string(),
                p.group as i32,
                position as i32,
                p.with_constant,
                sel(p.est_selectivity),
                sel(p.actual_selectivity),
                c.calls,
                c.total_time,
            ));
        }
    }
    TableIterator::new(rows)
}

/// Size and state of the statement table.
#[pg_extern(volatile, parallel_safe)]
fn stats_info() -> TableIterator<
    'static,
    (
        name!(entries, i64),
        name!(max_entries, i64),
        name!(evictions, i64),
        name!(stats_reset, Option<TimestampWithTimeZone>),
    ),
> {
    privilege::require(Role::Reader, "perf.stats_info()");
    require_shmem();
    let i = shmem::info();
    TableIterator::once((
        i.entries as i64,
        i.capacity as i64,
        i.evictions as i64,
        ts(i.stats_reset),
    ))
}

/// This backend's query-id memo (with `compute_query_id = auto`): statements whose core
/// queryId came from the memo (`hits`) or from core's jumble (`misses`, also counting
/// statements the memo does not serve), and the memo's size in entries.
#[pg_extern(volatile, parallel_unsafe)]
fn query_id_memo(
) -> TableIterator<'static, (name!(hits, i64), name!(misses, i64), name!(capacity, i32))> {
    let (hits, misses) = super::query_id_memo::counters();
    TableIterator::once((
        hits as i64,
        misses as i64,
        super::query_id_memo::SLOTS as i32,
    ))
}

/// Forgets recorded statements: all of them by default, or those matching the given user,
/// database and/or queryid (0 = any). Returns how many entries were removed.
#[pg_extern(volatile)]
fn reset_stats(
    userid: default!(pg_sys::Oid, 0),
    dbid: default!(pg_sys::Oid, 0),
    queryid: default!(i64, 0),
) -> i64 {
    privilege::require(Role::Admin, "perf.reset_stats()");
    require_shmem();
    let (u, d) = (userid.to_u32(), dbid.to_u32());
    shmem::reset(|k| {
        (u == 0 || k.userid == u)
            && (d == 0 || k.dbid == d)
            && (queryid == 0 || k.queryid == queryid)
    }) as i64
}

/// The sample values kept per statement (`perf.capture_sample_values`): up to 4 distinct
/// samples each, the constants of a simple-protocol run or the bind parameters of an
/// extended-protocol one, as `$1 = 'open', $2 = 42`, with how many captures saw each.
/// Like query texts, a statement's samples are shown to superusers, members of
/// pg_read_all_stats and the role that ran it; other rows are left out.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn statement_samples() -> TableIterator<
    'static,
    (
        name!(userid, pg_sys::Oid),
        name!(dbid, pg_sys::Oid),
        name!(queryid, i64),
        name!(toplevel, bool),
        name!(sample, i32),
        name!(seen, i64),
        name!(sample_values, String),
    ),
> {
    require_shmem();
    let all = super::workload::caller_reads_all();
    // SAFETY: plain read of backend state.
    let me = unsafe { pg_sys::GetUserId().to_u32() };
    let mut rows = Vec::new();
    for (key, list) in shmem::samples(|k| all || k.userid == me) {
        for (i, (seen, bytes)) in list.into_iter().enumerate() {
            let shown = super::samples::decode(&bytes)
                .into_iter()
                .map(|(n, v)| format!("${n} = {}", String::from_utf8_lossy(&v)))
                .collect::<Vec<_>>()
                .join(", ");
            rows.push((
                pg_sys::Oid::from(key.userid),
                pg_sys::Oid::from(key.dbid),
                key.queryid,
                key.toplevel,
                i as i32 + 1,
                seen as i64,
                shown,
            ));
        }
    }
    TableIterator::new(rows)
}
