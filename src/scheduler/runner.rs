//! A job runner: a short-lived background worker that executes one run.
//!
//! It connects to the database as the bootstrap superuser (so it can record the run),
//! claims the run (`pending` → `running`; a run claimed by another runner is left alone, so
//! no run executes twice), then executes the command in one transaction as the job's
//! owner (`SetUserIdAndSecContext` with SECURITY_LOCAL_USERID_CHANGE, so the command can
//! neither SET ROLE nor SET SESSION AUTHORIZATION back) with statement_timeout =
//! max_runtime and lock_timeout = perf.job_lock_timeout. An ERROR is caught, the
//! transaction aborted, and the failure (SQLSTATE, message) recorded in a fresh one.

use std::ffi::CString;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use super::api::Kind;
use super::exec::{self, sys, Outcome};
use super::gucs;
use super::worker::{guarded, setup_signals};

struct Claim {
    name: String,
    command: String,
    kind: String,
    owner: pg_sys::Oid,
    owner_exists: bool,
    max_runtime_ms: Option<i64>,
}

fn claim(runid: i64) -> Option<Claim> {
    Spi::connect_mut(|client| {
        let t = client.update(
            "UPDATE perf.job_runs r SET status = 'running', started_at = clock_timestamp(), \
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

fn record(runid: i64, e: &Ending) {
    let _ = Spi::run_with_args(
        "UPDATE perf.job_runs SET status = $2, finished_at = clock_timestamp(), sqlstate = $3, \
                error = $4, command_tag = $5, rows = $6 \
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
        ],
    );
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

/// The command of a built-in kind, as SQL run at top level.
fn builtin_command(kind: Kind) -> &'static str {
    match kind {
        Kind::Sql => "",
        Kind::Maintenance => "SELECT perf.run_maintenance(false)",
        Kind::StatsSnapshot => "SELECT perf.stats_snapshot()",
    }
}

/// Executes the claimed command in one transaction, as the owner.
fn execute(c: &Claim) -> Ending {
    let kind = Kind::parse(&c.kind).unwrap_or(Kind::Sql);
    let sql = if kind == Kind::Sql {
        c.command.clone()
    } else {
        builtin_command(kind).to_string()
    };
    let Ok(sql) = CString::new(sql) else {
        return Ending {
            ok: false,
            sqlstate: Some("22023".into()),
            error: Some("job command contains a NUL byte".into()),
            outcome: Outcome::default(),
        };
    };
    let owner = c.owner;
    let max_ms = c
        .max_runtime_ms
        .filter(|m| *m > 0)
        .map(|m| m.min(i64::from(i32::MAX)) as i32);
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_ctx = 0;
    let result = PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the transaction and user switch of a top-level command, as
        // exec_simple_query plus SECURITY DEFINER do; undone below or by the abort.
        unsafe {
            pg_sys::SetCurrentStatementStartTimestamp();
            pg_sys::StartTransactionCommand();
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_ctx);
            pg_sys::SetUserIdAndSecContext(
                owner,
                saved_ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
            if let Some(ms) = max_ms {
                sys::enable_timeout_after(sys::STATEMENT_TIMEOUT, ms);
            }
        }
        let out = exec::run_top_level(&sql);
        // SAFETY: undoing the settings above, then committing.
        unsafe {
            sys::disable_timeout(sys::STATEMENT_TIMEOUT, false);
            pg_sys::SetUserIdAndSecContext(saved_user, saved_ctx);
            pg_sys::CommitTransactionCommand();
        }
        Ok(out)
    }))
    .catch_others(|e| {
        let (code, msg) = match &e {
            pg_sys::panic::CaughtError::PostgresError(r)
            | pg_sys::panic::CaughtError::ErrorReport(r)
            | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => {
                let mut m = r.message().to_string();
                if let Some(d) = r.detail() {
                    m.push_str(&format!(" (DETAIL: {d})"));
                }
                (r.sql_error_code() as i32, m)
            }
        };
        Err((sqlstate_text(code), msg))
    })
    .execute();
    match result {
        Ok(outcome) => Ending {
            ok: true,
            sqlstate: None,
            error: None,
            outcome,
        },
        Err((state, msg)) => {
            // SAFETY: leaving the failed transaction; the abort restores the user id and
            // security context saved at its start (the superuser's).
            unsafe {
                sys::disable_timeout(sys::STATEMENT_TIMEOUT, false);
                pg_sys::AbortCurrentTransaction();
                pg_sys::SetUserIdAndSecContext(pg_sys::BOOTSTRAP_SUPERUSERID.into(), 0);
            }
            Ending {
                ok: false,
                sqlstate: Some(state),
                error: Some(msg),
                outcome: Outcome::default(),
            }
        }
    }
}

/// Entry point of a job runner (argument: database OID; bgw_extra: the run id).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_perf_runner_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    let Ok(runid) = BackgroundWorker::get_extra().trim().parse::<i64>() else {
        return;
    };
    setup_signals();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    let Some(c) = guarded("claiming a run", || claim(runid)).flatten() else {
        return;
    };
    set_guc(c"application_name", &format!("pg_perf job {}", c.name));
    set_guc(c"lock_timeout", &gucs::job_lock_timeout_ms().to_string());
    let ending = if !c.owner_exists {
        Ending {
            ok: false,
            sqlstate: Some("42704".into()),
            error: Some(format!(
                "the role that owns job \"{}\" no longer exists",
                c.name
            )),
            outcome: Outcome::default(),
        }
    } else {
        // SAFETY: reporting our activity in pg_stat_activity, as a backend does.
        unsafe {
            if let Ok(cmd) = CString::new(c.command.as_str()) {
                pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, cmd.as_ptr());
            }
        }
        execute(&c)
    };
    guarded("recording a run", || record(runid, &ending));
    // SAFETY: as above.
    unsafe {
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
    }
}
