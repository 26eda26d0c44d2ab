//! The `maintenance` job kind, perf.maintenance_plan() and perf.run_maintenance().
//!
//! The plan gathers each table's statistics (pg_stat_user_tables, pg_class, reloptions)
//! and each btree's size, and `policy` decides: VACUUM, VACUUM (FREEZE), ANALYZE (also of
//! partitioned parents, which autovacuum never analyzes), REINDEX INDEX CONCURRENTLY of
//! bloated btrees. Thresholds are autovacuum's (with the table's reloptions), scale
//! factors times perf.maintenance_scale (default 0.5: ahead of autovacuum, in the quiet
//! window a maintenance job runs in). Only objects the current role owns are planned.
//!
//! Executing needs top-level statements (VACUUM refuses to run inside a function), so it
//! happens in a job runner: a `maintenance` job's run, or, for perf.run_maintenance(), a
//! runner started for the call, which the calling backend waits for. A table locked by
//! another session is skipped when lock_timeout (perf.job_lock_timeout) expires, and the
//! skip recorded. Each action is recorded in perf.maintenance_log.

use std::ffi::CString;
use std::time::Instant;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;

use super::exec;
use super::gucs;
use super::policy::{self, Action, IndexFacts, TableFacts, Thresholds};
use crate::pg::privilege::{self, Role};

/// One planned action.
#[derive(Debug, Clone)]
pub struct Item {
    pub action: Action,
    pub object: String,
    pub reason: String,
    pub observed: f64,
    pub limit: f64,
    pub command: String,
    /// Another session holds a lock VACUUM/REINDEX would wait for.
    pub locked: bool,
}

/// What happened to one planned action.
#[derive(Debug, Clone)]
pub struct Done {
    pub item: Item,
    pub status: &'static str,
    pub error: Option<String>,
    pub ms: f64,
}

const LOCKED_SQL: &str = "EXISTS (SELECT 1 FROM pg_catalog.pg_locks l \
     WHERE l.locktype = 'relation' AND l.relation = c.oid AND l.granted \
       AND l.pid <> pg_backend_pid() \
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()) \
       AND l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', \
                      'ExclusiveLock', 'AccessExclusiveLock'))";

fn tables_sql() -> String {
    format!(
        "WITH o AS (
           SELECT c.oid,
                  (SELECT array_agg(option_name || '=' || option_value)
                     FROM pg_catalog.pg_options_to_table(c.reloptions)) AS opts
             FROM pg_catalog.pg_class c)
         SELECT c.oid::regclass::text,
                c.relkind = 'p',
                CASE WHEN c.relkind = 'p' THEN
                     coalesce((SELECT sum(greatest(k.reltuples, 0)) FROM pg_catalog.pg_inherits i
                                 JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid
                                WHERE i.inhparent = c.oid), 0)
                     ELSE c.reltuples END::float8,
                coalesce(s.n_dead_tup, 0)::float8,
                coalesce(s.n_ins_since_vacuum, 0)::float8,
                CASE WHEN c.relkind = 'p' THEN
                     coalesce((SELECT sum(ks.n_mod_since_analyze) FROM pg_catalog.pg_inherits i
                                 JOIN pg_catalog.pg_stat_user_tables ks ON ks.relid = i.inhrelid
                                WHERE i.inhparent = c.oid), 0)
                     ELSE coalesce(s.n_mod_since_analyze, 0) END::float8,
                CASE WHEN c.relkind = 'p' THEN 0 ELSE age(c.relfrozenxid) END::float8,
                CASE WHEN c.relkind = 'p' THEN 0 ELSE mxid_age(c.relminmxid) END::float8,
                (s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL),
                array_to_string(o.opts, ','),
                {LOCKED_SQL}
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN o ON o.oid = c.oid
           LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid
          WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname !~ '^pg_(toast|temp)'
            AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
          ORDER BY 1"
    )
}

fn indexes_sql() -> String {
    format!(
        "SELECT c.oid::regclass::text,
                c.relpages::float8, c.reltuples::float8,
                (SELECT sum(st.avg_width) FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_stats st ON st.schemaname = n.nspname
                    AND st.tablename = t.relname AND st.attname = a.attname
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]))::float8,
                (SELECT count(*) FROM pg_catalog.pg_attribute a
                   JOIN pg_catalog.pg_stats st ON st.schemaname = n.nspname
                    AND st.tablename = t.relname AND st.attname = a.attname
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]))
                  = i.indnatts,
                EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                          JOIN pg_catalog.pg_stats st ON st.schemaname = n.nspname
                           AND st.tablename = t.relname AND st.attname = a.attname
                         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                           AND st.null_frac > 0),
                coalesce((SELECT option_value FROM pg_catalog.pg_options_to_table(c.reloptions)
                           WHERE option_name = 'fillfactor')::float8, 90),
                current_setting('block_size')::float8,
                {}
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
           JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_catalog.pg_am am ON am.oid = c.relam
          WHERE am.amname = 'btree' AND i.indisvalid AND i.indexprs IS NULL
            AND t.relpersistence <> 't'
            AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname !~ '^pg_(toast|temp)'
            AND pg_catalog.pg_has_role(t.relowner, 'USAGE')
          ORDER BY 1",
        LOCKED_SQL.replace("c.oid", "t.oid")
    )
}

fn setting(name: &str) -> f64 {
    Spi::get_one_with_args::<String>("SELECT current_setting($1)", &[name.into()])
        .ok()
        .flatten()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

fn base_thresholds() -> Thresholds {
    let d = Thresholds::default();
    let or = |v: f64, dflt: f64| if v.is_nan() { dflt } else { v };
    Thresholds {
        vacuum_threshold: or(setting("autovacuum_vacuum_threshold"), d.vacuum_threshold),
        vacuum_scale: or(setting("autovacuum_vacuum_scale_factor"), d.vacuum_scale),
        insert_threshold: or(
            setting("autovacuum_vacuum_insert_threshold"),
            d.insert_threshold,
        ),
        insert_scale: or(
            setting("autovacuum_vacuum_insert_scale_factor"),
            d.insert_scale,
        ),
        analyze_threshold: or(setting("autovacuum_analyze_threshold"), d.analyze_threshold),
        analyze_scale: or(setting("autovacuum_analyze_scale_factor"), d.analyze_scale),
        freeze_max_age: or(setting("autovacuum_freeze_max_age"), d.freeze_max_age),
        multixact_freeze_max_age: or(
            setting("autovacuum_multixact_freeze_max_age"),
            d.multixact_freeze_max_age,
        ),
        freeze_fraction: d.freeze_fraction,
    }
}

/// A table's thresholds: the base ones, its reloptions, then pg_perf's eagerness.
fn table_thresholds(base: &Thresholds, opts: &str, scale: f64) -> Thresholds {
    let mut t = *base;
    for kv in opts.split(',') {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let Ok(v) = v.parse::<f64>() else { continue };
        match k {
            "autovacuum_vacuum_threshold" => t.vacuum_threshold = v,
            "autovacuum_vacuum_scale_factor" => t.vacuum_scale = v,
            "autovacuum_vacuum_insert_threshold" => t.insert_threshold = v,
            "autovacuum_vacuum_insert_scale_factor" => t.insert_scale = v,
            "autovacuum_analyze_threshold" => t.analyze_threshold = v,
            "autovacuum_analyze_scale_factor" => t.analyze_scale = v,
            "autovacuum_freeze_max_age" => t.freeze_max_age = v.min(base.freeze_max_age),
            "autovacuum_multixact_freeze_max_age" => {
                t.multixact_freeze_max_age = v.min(base.multixact_freeze_max_age)
            }
            _ => {}
        }
    }
    t.vacuum_scale *= scale;
    t.insert_scale *= scale;
    t.analyze_scale *= scale;
    t
}

fn command_for(action: Action, object: &str) -> String {
    match action {
        Action::VacuumFreeze => format!("VACUUM (FREEZE) {object}"),
        Action::Vacuum => format!("VACUUM {object}"),
        Action::Analyze => format!("ANALYZE {object}"),
        Action::Reindex => format!("REINDEX INDEX CONCURRENTLY {object}"),
    }
}

/// The plan for the current role, in this database. Needs a transaction (SPI).
pub fn plan() -> Vec<Item> {
    let base = base_thresholds();
    let scale = gucs::maintenance_scale();
    let bloat_pct = gucs::reindex_bloat_pct();
    let mut out = Vec::new();
    let _ = Spi::connect(|client| {
        for row in client.select(&tables_sql(), None, &[])? {
            let object = row.get::<String>(1)?.unwrap_or_default();
            let facts = TableFacts {
                partitioned: row.get::<bool>(2)?.unwrap_or(false),
                reltuples: row.get::<f64>(3)?.unwrap_or(-1.0),
                dead_tuples: row.get::<f64>(4)?.unwrap_or(0.0),
                inserted_since_vacuum: row.get::<f64>(5)?.unwrap_or(0.0),
                modified_since_analyze: row.get::<f64>(6)?.unwrap_or(0.0),
                xid_age: row.get::<f64>(7)?.unwrap_or(0.0),
                mxid_age: row.get::<f64>(8)?.unwrap_or(0.0),
                analyzed_before: row.get::<bool>(9)?.unwrap_or(false),
            };
            let opts = row.get::<String>(10)?.unwrap_or_default();
            let locked = row.get::<bool>(11)?.unwrap_or(false);
            let t = table_thresholds(&base, &opts, scale);
            for d in policy::decide_table(&facts, &t) {
                out.push(Item {
                    action: d.action,
                    command: command_for(d.action, &object),
                    object: object.clone(),
                    reason: d.reason,
                    observed: d.observed,
                    limit: d.limit,
                    locked,
                });
            }
        }
        for row in client.select(&indexes_sql(), None, &[])? {
            // Without statistics for every key column the estimate means nothing.
            if !row.get::<bool>(5)?.unwrap_or(false) {
                continue;
            }
            let object = row.get::<String>(1)?.unwrap_or_default();
            let facts = IndexFacts {
                pages: row.get::<f64>(2)?.unwrap_or(0.0),
                tuples: row.get::<f64>(3)?.unwrap_or(0.0),
                key_data_width: row.get::<f64>(4)?.unwrap_or(0.0),
                has_nulls: row.get::<bool>(6)?.unwrap_or(false),
                fillfactor: row.get::<f64>(7)?.unwrap_or(90.0),
                block_size: row.get::<f64>(8)?.unwrap_or(8192.0),
            };
            let locked = row.get::<bool>(9)?.unwrap_or(false);
            if let Some(d) = policy::decide_index(&facts, bloat_pct, 128.0) {
                out.push(Item {
                    action: d.action,
                    command: command_for(d.action, &object),
                    object,
                    reason: d.reason,
                    observed: d.observed,
                    limit: d.limit,
                    locked,
                });
            }
        }
        Ok::<_, pgrx::spi::Error>(())
    });
    out
}

/// Runs the plan as top-level statements, inside the runner's job transaction (already
/// started, as the job's owner; `owner`/`sec_context` restore that after a failed action).
/// One action's ERROR is recorded and the next one runs; a statement timeout
/// (max_runtime) ends the run.
pub fn execute(owner: pg_sys::Oid, sec_context: i32) -> (Vec<Done>, Option<(String, String)>) {
    // SAFETY: the plan's queries need a snapshot; popped before any action runs (VACUUM
    // commits the transaction it starts in).
    let items = unsafe {
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let items = plan();
        pg_sys::PopActiveSnapshot();
        items
    };
    let mut done = Vec::new();
    let mut fatal = None;
    for item in items {
        let t0 = Instant::now();
        let Ok(sql) = CString::new(item.command.clone()) else {
            continue;
        };
        let r = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            exec::run_top_level(&sql);
            Ok(())
        }))
        .catch_others(|e| Err(super::runner::error_of(&e)))
        .execute();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(()) => done.push(Done {
                item,
                status: "done",
                error: None,
                ms,
            }),
            Err((state, msg)) => {
                // SAFETY: leave the failed transaction and start the next one as the owner.
                unsafe {
                    pg_sys::AbortCurrentTransaction();
                    pg_sys::StartTransactionCommand();
                    pg_sys::SetUserIdAndSecContext(owner, sec_context);
                }
                let status = if state == "55P03" {
                    "skipped: locked"
                } else {
                    "failed"
                };
                done.push(Done {
                    item,
                    status,
                    error: Some(format!("{state}: {msg}")),
                    ms,
                });
                if state == "57014" {
                    fatal = Some((state, msg));
                    break;
                }
            }
        }
    }
    (done, fatal)
}

/// Writes what a maintenance run did to perf.maintenance_log (as the superuser).
pub fn log(runid: Option<i64>, token: Option<i64>, done: &[Done]) {
    for d in done {
        let _ = Spi::run_with_args(
            "INSERT INTO perf.maintenance_log (runid, token, action, object, reason, status, \
                                               error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                runid.into(),
                token.into(),
                d.item.action.as_str().into(),
                d.item.object.as_str().into(),
                d.item.reason.as_str().into(),
                d.status.into(),
                d.error.as_deref().into(),
                d.ms.into(),
            ],
        );
    }
}

/// What pg_perf's maintenance would do now in this database, for the objects the current
/// role owns: the action, the object, why (with the numbers), the measured value and the
/// limit it passed, the statement, and whether it would run now (false: another session
/// holds a conflicting lock, so the action would be skipped).
#[pg_extern(volatile, parallel_unsafe)]
fn maintenance_plan() -> TableIterator<
    'static,
    (
        name!(action, String),
        name!(object, String),
        name!(reason, String),
        name!(observed, f64),
        name!(threshold, f64),
        name!(command, String),
        name!(runs_now, bool),
    ),
> {
    privilege::require(Role::Reader, "perf.maintenance_plan()");
    TableIterator::new(plan().into_iter().map(|i| {
        (
            i.action.as_str().to_string(),
            i.object,
            i.reason,
            i.observed,
            i.limit,
            i.command,
            !i.locked,
        )
    }))
}

/// Runs the maintenance plan now and returns what it did (with `dry_run`, what it would
/// do). VACUUM cannot run inside a function, so the work is done by a job runner started
/// for this call, as the calling role; this call waits for it.
#[pg_extern(volatile, parallel_unsafe)]
fn run_maintenance(
    dry_run: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(action, String),
        name!(object, String),
        name!(reason, String),
        name!(status, String),
        name!(error, Option<String>),
        name!(duration_ms, f64),
    ),
> {
    privilege::require(
        if dry_run { Role::Reader } else { Role::Admin },
        "perf.run_maintenance()",
    );
    if dry_run {
        return TableIterator::new(
            plan()
                .into_iter()
                .map(|i| {
                    let status = if i.locked {
                        "would skip: locked"
                    } else {
                        "dry run"
                    };
                    (
                        i.action.as_str().to_string(),
                        i.object,
                        i.reason,
                        status.to_string(),
                        None,
                        0.0,
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    super::api::refuse_in_recovery("run maintenance");
    // SAFETY: plain reads of backend globals.
    let (db, me, user) = unsafe { (pg_sys::MyDatabaseId, pg_sys::MyProcPid, pg_sys::GetUserId()) };
    let token = Spi::get_one::<i64>("SELECT (random() * 9e18)::bigint")
        .ok()
        .flatten()
        .unwrap_or(i64::from(me));
    // The handle lives in this call's memory context: it is needed only until the runner ends.
    let handle = BackgroundWorkerBuilder::new(super::worker::RUNNER_TYPE)
        .set_type(super::worker::RUNNER_TYPE)
        .set_library("pg_perf")
        .set_function("pg_perf_runner_main")
        .enable_spi_access()
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(u32::from(db))))
        .set_extra(&format!("m:{token}:{}", u32::from(user)))
        .set_notify_pid(me)
        .load_dynamic();
    let Ok(handle) = handle else {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "could not start a background worker for perf.run_maintenance()",
            "pg_perf",
        )
        .set_hint("Raise max_worker_processes, or schedule a job of kind 'maintenance'.")
        .report(PgLogLevel::ERROR);
        unreachable!()
    };
    let _ = handle.wait_for_shutdown();
    // The runner committed after this statement's snapshot was taken: read with a new one.
    // SAFETY: pushed here, popped right after the query.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let rows = Spi::connect(|client| {
        let t = client.select(
            "SELECT action, object, reason, status, error, duration_ms \
               FROM perf.maintenance_log WHERE token = $1 ORDER BY id",
            None,
            &[token.into()],
        )?;
        let mut v = Vec::new();
        for r in t {
            v.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<String>(5)?,
                r.get::<f64>(6)?.unwrap_or(0.0),
            ));
        }
        Ok::<_, pgrx::spi::Error>(v)
    })
    .unwrap_or_default();
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    TableIterator::new(rows)
}
