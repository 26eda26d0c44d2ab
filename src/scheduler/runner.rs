//! A job runner: a short-lived background worker that executes one run.
//!
//! The scheduler starts it up to `worker::START_AHEAD` before the run is due; it connects
//! to the database as the job's owner when that role can log in (so `session_user` is the
//! owner too), else as the bootstrap superuser, and claims the run (`pending` → `running`,
//! committed with its WAL flush; a run claimed by another runner is left alone, so no run
//! executes twice). While it waits for the run's `scheduled_for` on its latch (SIGTERM and
//! postmaster death end the wait), it parses and plans the command in a transaction it
//! aborts, so the caches the run needs are loaded ahead (`exec::load_caches`); all that is
//! left after the due time is the command's own transaction. It executes the command in
//! one transaction as the job's owner (`SetUserIdAndSecContext` with
//! SECURITY_LOCAL_USERID_CHANGE, so the command can neither SET ROLE nor SET SESSION
//! AUTHORIZATION back) with statement_timeout = max_runtime and lock_timeout =
//! perf.job_lock_timeout. An ERROR is caught, the transaction aborted, and the failure
//! (SQLSTATE, message) recorded in a fresh one, with `started_at` = when the command
//! started. Its own bookkeeping (claiming and recording the run) runs as the bootstrap
//! superuser (`as_superuser`), never the job's command.

use std::ffi::CString;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use super::api::Kind;
use super::exec::{self, sys, Outcome};
use super::gucs;
use super::maintenance;
use super::worker::{guarded, setup_signals, sleep};

struct Claim {
    name: String,
    command: String,
    kind: String,
    owner: pg_sys::Oid,
    owner_exists: bool,
    max_runtime_ms: Option<i64>,
}

/// Runs `f` (pg_perf's own bookkeeping, inside a transaction) as the bootstrap superuser,
/// whoever the session user is; an ERROR inside is undone by the transaction's abort,
/// which restores the user id of its start.
fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    let _as = crate::pg::role::ActingAs::catalog_owner();
    f()
}

/// When a pending run is due (Unix microseconds); None when it is not pending.
fn due_of(runid: i64) -> Option<i64> {
    Spi::get_one_with_args::<i64>(
        "SELECT (extract(epoch FROM r.scheduled_for) * 1000000)::bigint \
           FROM perf.job_runs r JOIN perf.jobs j ON j.jobid = r.jobid \
           LEFT JOIN pg_catalog.pg_roles o ON o.oid = j.owner \
          WHERE r.runid = $1 AND r.status = 'pending'",
        &[runid.into()],
    )
    .ok()
    .flatten()
}

/// Sleeps on the latch until the Unix time `due_us`. SIGTERM (`die`) ends the process at
/// the interrupt check, postmaster death at the wait; the run stays `pending` and the
/// scheduler marks it failed when it sees this runner gone.
fn wait_until(due_us: i64) {
    loop {
        let left = due_us - jiff::Timestamp::now().as_microsecond();
        if left <= 0 {
            return;
        }
        // Round up: waking a hair early would only loop once more.
        sleep((left + 999) / 1000);
    }
}

fn claim(runid: i64) -> Option<Claim> {
    Spi::connect_mut(|client| {
        // The claim waits for its WAL flush (synchronous_commit): a claim lost in a crash
        // would put the run back to `pending` and run it again after the restart, instead
        // of marking it failed ('server restarted'). Claimed ahead of the due time, it
        // starts then; `record` writes when it really started.
        let t = client.update(
            "UPDATE perf.job_runs r SET status = 'running', \
                    started_at = greatest(clock_timestamp(), r.scheduled_for), \
                    pid = pg_backend_pid() \
               FROM perf.jobs j \
              WHERE r.runid = $1 AND r.status = 'pending' AND j.jobid = r.jobid \
             RETURNING j.name, j.command, j.kind, j.owner, \
                       EXISTS (SELECT 1 FROM pg_catalog.pg_roles o WHERE o.oid = j.owner), \
                       (extract(epoch FROM j.max_runtime) * 1000)::bigint",
            None,
            &[runid.into()],
        )?;
        let mut out = None;
        for row in t {
            out = Some(Claim {
                name: row.get::<String>(1)?.unwrap_or_default(),
                command: row.get::<String>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
                owner: row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::InvalidOid),
                owner_exists: row.get::<bool>(5)?.unwrap_or(false),
                max_runtime_ms: row.get::<i64>(6)?,
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .ok()
    .flatten()
}

/// How a run ended, for perf.job_runs.
struct Ending {
    ok: bool,
    sqlstate: Option<String>,
    error: Option<String>,
    outcome: Outcome,
}

/// Records how run `runid` ended; `started_us` is when its command started (Unix µs).
fn record(runid: i64, started_us: i64, e: &Ending) {
    let _ = Spi::run_with_args(
        "UPDATE perf.job_runs SET status = $2, finished_at = clock_timestamp(), sqlstate = $3, \
                error = $4, command_tag = $5, rows = $6, \
                started_at = to_timestamp($7::float8 / 1000000) \
          WHERE runid = $1",
        &[
            runid.into(),
            if e.ok { "succeeded" } else { "failed" }.into(),
            e.sqlstate.as_deref().into(),
            e.error.as_deref().into(),
            Some(e.outcome.command_tag.as_str())
                .filter(|s| !s.is_empty())
                .into(),
            (e.outcome.rows as i64).into(),
            started_us.into(),
        ],
    );
}

/// Loads the caches `sql` needs as `owner` (see `exec::load_caches`) if there is time before
/// `due_us`; a lock it would wait for past the due time ends it (lock_timeout). Errors are
/// the run's to report, not this: they are dropped with the aborted transaction.
fn load_caches_before(owner: pg_sys::Oid, sql: &std::ffi::CStr, due_us: i64) {
    let left_ms = (due_us - jiff::Timestamp::now().as_microsecond()) / 1000;
    if left_ms < 2 {
        return;
    }
    set_guc(c"lock_timeout", &left_ms.to_string());
    PgTryBuilder::new(|| {
        // SAFETY: a transaction of our own, always aborted: nothing it did survives.
        unsafe { pg_sys::StartTransactionCommand() };
        {
            let _as = crate::pg::role::ActingAs::switch(owner);
            exec::load_caches(sql);
        }
        // SAFETY: as above.
        unsafe { pg_sys::AbortCurrentTransaction() };
    })
    .catch_others(|_| {
        // SAFETY: leaving the failed transaction (the guard restored the user on unwind).
        unsafe { pg_sys::AbortCurrentTransaction() }
    })
    .execute();
}

/// The five-character SQLSTATE of a packed error code.
fn sqlstate_text(code: i32) -> String {
    (0..5)
        .map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

fn set_guc(name: &std::ffi::CStr, value: &str) {
    let Ok(v) = CString::new(value) else { return };
    // SAFETY: setting a session GUC with valid C strings, as the superuser session.
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            v.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
}

/// The error fields pg_perf records: SQLSTATE and message (with DETAIL when there is one).
pub(super) fn error_of(e: &pg_sys::panic::CaughtError) -> (String, String) {
    match e {
        pg_sys::panic::CaughtError::PostgresError(r)
        | pg_sys::panic::CaughtError::ErrorReport(r)
        | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
            let mut m = r.message().to_string();
            if let Some(d) = r.detail() {
                m.push_str(&format!(" (DETAIL: {d})"));
            }
            (sqlstate_text(r.sql_error_code() as i32), m)
        }
    }
}

/// What a built-in kind runs, given the owner and security context to run it as.
enum Body {
    Sql(CString),
    Maintenance,
    StatsSnapshot,
    /// REFRESH of a managed materialized view, as its owner (`crate::matview::refresh`).
    MatviewRefresh(pg_sys::Oid),
}

/// Executes `body` in one transaction as `owner` (maintenance: one transaction per action,
/// the way VACUUM works), with statement_timeout = `max_ms`.
fn execute(
    owner: pg_sys::Oid,
    max_ms: Option<i32>,
    body: Body,
) -> (Ending, Vec<maintenance::Done>) {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_ctx = 0;
    let mut actions = Vec::new();
    let (mut base_user, mut base_ctx) = (pg_sys::InvalidOid, 0);
    // SAFETY: reading the session's user id (the login role) to restore it after an abort.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut base_user, &mut base_ctx) };
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the transaction and user switch of a top-level command, as
        // exec_simple_query plus SECURITY DEFINER do; undone below or by the abort.
        let run_ctx = unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
            let run_ctx = saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
            pg_sys::SetUserIdAndSecContext(owner, run_ctx);
            if let Some(ms) = max_ms {
                sys::enable_timeout_after(sys::STATEMENT_TIMEOUT, ms);
            }
            run_ctx
        };
        let out = match &body {
            Body::Sql(sql) => exec::run_top_level(sql),
            Body::StatsSnapshot => exec::run_top_level(c"SELECT perf.stats_snapshot()"),
            Body::MatviewRefresh(view) => crate::matview::refresh(*view, run_ctx),
            Body::Maintenance => {
                let (done, fatal) = maintenance::execute(owner, run_ctx);
                let n = done.iter().filter(|d| d.status == "done").count();
                actions = done;
                if let Some((state, msg)) = fatal {
                    pgrx::ereport!(
                        ERROR,
                        pgrx::PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                        format!("maintenance stopped after {n} actions: {state}: {msg}")
                    );
                }
                Outcome {
                    command_tag: "MAINTENANCE".into(),
                    rows: n as u64,
                }
            }
        };
        // SAFETY: undoing the settings above, then committing.
        unsafe {
            sys::disable_timeout(sys::STATEMENT_TIMEOUT, false);
            pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
            pg_sys::CommitTransactionCommand();
        }
        Ok(out)
    }))
    .catch_others(|e| Err(error_of(&e)))
    .execute();
    let ending = match result {
        Ok(outcome) => {
            let failed = actions.iter().filter(|d| d.status != "done").count();
            Ending {
                ok: true,
                sqlstate: None,
                error: (failed > 0).then(|| format!("{failed} maintenance actions failed or were skipped (see perf.maintenance_log)")),
                outcome,
            }
        }
        Err((state, msg)) => {
            // SAFETY: leaving the failed transaction; the abort restores the user id and
            // security context saved at its start (the session's), set again to be sure.
            unsafe {
                sys::disable_timeout(sys::STATEMENT_TIMEOUT, false);
                pg_sys::AbortCurrentTransaction();
                pg_sys::SetUserIdAndSecContext(base_user, base_ctx);
            }
            Ending {
                ok: false,
                sqlstate: Some(state),
                error: Some(msg),
                outcome: Outcome::default(),
            }
        }
    };
    (ending, actions)
}

/// The partition sets whose parent `owner` owns (or is a member of the owning role), in the
/// partition capability's order (call inside `guarded`, which gives it a transaction).
fn partition_sets(owner: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    let sql = format!(
        "SELECT s.parent FROM ({}) s JOIN pg_catalog.pg_class r ON r.oid = s.parent \
         WHERE pg_catalog.pg_has_role({}::oid, r.relowner, 'USAGE') ORDER BY s.parent",
        crate::partition::SETS_SQL,
        owner.to_u32()
    );
    let mut sets = Vec::new();
    let _ = Spi::connect(|client| -> Result<(), pgrx::spi::Error> {
        for row in client.select(&sql, None, &[])? {
            if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                sets.push(oid);
            }
        }
        Ok(())
    });
    sets
}

/// `partition_maintenance` jobs: `perf.partition_maintenance(set)` for every set, each in
/// its own transaction so no set's locks are held while another is maintained. The run
/// fails with the first set's error but still maintains the others; rows = sets maintained.
fn execute_partition_maintenance(
    owner: pg_sys::Oid,
    max_ms: Option<i32>,
) -> (Ending, Vec<maintenance::Done>) {
    let sets = match guarded("listing partition sets", || {
        as_superuser(|| partition_sets(owner))
    }) {
        Some(s) => s,
        None => {
            return (
                Ending {
                    ok: false,
                    sqlstate: Some("55000".into()),
                    error: Some("could not list the partition sets".into()),
                    outcome: Outcome::default(),
                },
                Vec::new(),
            )
        }
    };
    let mut rows = 0u64;
    let mut first_error: Option<Ending> = None;
    let mut failed = 0usize;
    for set in &sets {
        // A decimal OID in quotes: never a NUL byte.
        let sql = CString::new(
            crate::partition::MAINTENANCE_SQL.replace("$1", &format!("'{}'", set.to_u32())),
        )
        .unwrap_or_default();
        let (ending, _) = execute(owner, max_ms, Body::Sql(sql));
        if ending.ok {
            rows += 1;
        } else {
            failed += 1;
            first_error.get_or_insert(ending);
        }
    }
    match first_error {
        Some(mut e) => {
            e.error = Some(format!(
                "{} of {} partition sets failed; first: {}",
                failed,
                sets.len(),
                e.error.unwrap_or_default()
            ));
            (e, Vec::new())
        }
        None => (
            Ending {
                ok: true,
                sqlstate: None,
                error: None,
                outcome: Outcome {
                    command_tag: "PARTITION MAINTENANCE".into(),
                    rows,
                },
            },
            Vec::new(),
        ),
    }
}

/// What to execute for a claimed run: one body in one transaction, or (partition
/// maintenance) one transaction per partition set.
enum Plan {
    One(Body),
    PartitionSets,
}

fn plan_of(c: &Claim) -> Result<Plan, Ending> {
    match Kind::parse(&c.kind).unwrap_or(Kind::Sql) {
        Kind::Sql => CString::new(c.command.as_str())
            .map(|sql| Plan::One(Body::Sql(sql)))
            .map_err(|_| Ending {
                ok: false,
                sqlstate: Some("22023".into()),
                error: Some("job command contains a NUL byte".into()),
                outcome: Outcome::default(),
            }),
        Kind::Maintenance => Ok(Plan::One(Body::Maintenance)),
        Kind::StatsSnapshot => Ok(Plan::One(Body::StatsSnapshot)),
        Kind::PartitionMaintenance => Ok(Plan::PartitionSets),
        Kind::MatviewRefresh => c
            .command
            .trim()
            .parse::<u32>()
            .map(|oid| Plan::One(Body::MatviewRefresh(pg_sys::Oid::from(oid))))
            .map_err(|_| Ending {
                ok: false,
                sqlstate: Some("22023".into()),
                error: Some("matview_refresh job command is not an OID".into()),
                outcome: Outcome::default(),
            }),
    }
}

/// perf.run_maintenance() in a runner: extra = "m:<token>:<role oid>".
fn adhoc_maintenance(extra: &str) {
    let mut parts = extra.split(':').skip(1);
    let (Some(Ok(token)), Some(Ok(role))) = (
        parts.next().map(str::parse::<i64>),
        parts.next().map(str::parse::<u32>),
    ) else {
        return;
    };
    set_guc(c"application_name", "pg_perf run_maintenance");
    set_guc(c"lock_timeout", &gucs::job_lock_timeout_ms().to_string());
    let (ending, mut done) = execute(pg_sys::Oid::from(role), None, Body::Maintenance);
    if !ending.ok {
        // The plan itself failed: say so instead of returning nothing.
        done.push(maintenance::Done {
            item: maintenance::Item {
                action: super::policy::Action::Vacuum,
                object: String::new(),
                reason: "maintenance run".into(),
                observed: 0.0,
                limit: 0.0,
                command: String::new(),
                locked: false,
            },
            status: "failed",
            error: Some(format!(
                "{}: {}",
                ending.sqlstate.unwrap_or_default(),
                ending.error.unwrap_or_default()
            )),
            ms: 0.0,
        });
    }
    guarded("recording maintenance", || {
        maintenance::log(None, Some(token), &done)
    });
}

/// Entry point of a job runner (argument: database OID; bgw_extra: "<run id>:<role OID to
/// connect as, 0 = the bootstrap superuser>", or "m:..." for perf.run_maintenance()).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_perf_runner_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    let extra = BackgroundWorker::get_extra().trim().to_string();
    setup_signals();
    if extra.starts_with("m:") {
        BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
        adhoc_maintenance(&extra);
        return;
    }
    let mut parts = extra.split(':');
    let Some(Ok(runid)) = parts.next().map(str::parse::<i64>) else {
        return;
    };
    let login = parts
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|o| *o != 0)
        .map(pg_sys::Oid::from);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), login);
    // Started ahead of time: claim, load the caches, and wait, connected, until it is due.
    let due = guarded("reading a run", || as_superuser(|| due_of(runid))).flatten();
    let Some(c) = guarded("claiming a run", || as_superuser(|| claim(runid))).flatten() else {
        return;
    };
    set_guc(c"application_name", &format!("pg_perf job {}", c.name));
    let plan = plan_of(&c);
    if let (Some(due), true, Ok(Plan::One(Body::Sql(sql)))) = (due, c.owner_exists, &plan) {
        load_caches_before(c.owner, sql, due);
    }
    set_guc(c"lock_timeout", &gucs::job_lock_timeout_ms().to_string());
    if let Some(due) = due {
        wait_until(due);
    }
    let started_us = jiff::Timestamp::now().as_microsecond();
    let max_ms = c
        .max_runtime_ms
        .filter(|m| *m > 0)
        .map(|m| m.min(i64::from(i32::MAX)) as i32);
    let (ending, done) = if !c.owner_exists {
        (
            Ending {
                ok: false,
                sqlstate: Some("42704".into()),
                error: Some(format!(
                    "the role that owns job \"{}\" no longer exists",
                    c.name
                )),
                outcome: Outcome::default(),
            },
            Vec::new(),
        )
    } else {
        match plan {
            Err(e) => (e, Vec::new()),
            Ok(plan) => {
                // SAFETY: reporting our activity in pg_stat_activity, as a backend does.
                unsafe {
                    if let Ok(cmd) = CString::new(c.command.as_str()) {
                        pg_sys::pgstat_report_activity(
                            pg_sys::BackendState::STATE_RUNNING,
                            cmd.as_ptr(),
                        );
                    }
                }
                match plan {
                    Plan::PartitionSets => execute_partition_maintenance(c.owner, max_ms),
                    Plan::One(body) => execute(c.owner, max_ms, body),
                }
            }
        }
    };
    guarded("recording a run", || {
        as_superuser(|| {
            record(runid, started_us, &ending);
            maintenance::log(Some(runid), None, &done);
        })
    });
    if c.name.starts_with(crate::advisor::apply::JOB_PREFIX) {
        // The build's own table scans sit in this backend's pending statistics until the
        // next periodic flush; flushed now, the baseline read next includes them (else
        // they would surface later as reads the new index "missed").
        // SAFETY: between transactions (each `guarded` call is one), as PostgreSQL's idle
        // loop calls it.
        unsafe { pg_sys::pgstat_report_stat(true) };
        guarded("recording an index build", || {
            // pg_perf's bookkeeping, not the owner's work: as the catalog's owner.
            as_superuser(|| {
                crate::advisor::apply::after_build_run(
                    runid,
                    ending.ok,
                    ending.sqlstate.as_deref(),
                    ending.error.as_deref(),
                )
            })
        });
    }
    // SAFETY: as above.
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
}
