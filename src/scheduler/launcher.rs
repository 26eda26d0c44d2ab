//! The launcher: one static background worker (registered in `_PG_init`, restarted by the
//! postmaster 5 s after it dies) that keeps one scheduler running per database.
//!
//! It connects to no database (it reads only the shared catalog pg_database, with a heap
//! scan) and starts a scheduler (a dynamic worker, database OID as argument) for every
//! database that allows connections, or only those in perf.worker_databases. A scheduler
//! that finds no pg_perf exits and marks its slot Absent; CREATE EXTENSION pg_perf asks
//! the launcher to try again. The launcher is the scheduler's bgw_notify_pid, so the
//! postmaster sets its latch when one exits: a scheduler that died (terminated, crashed)
//! is started again at once (at most once a second per database). Schedulers of databases
//! that vanished or left perf.worker_databases are stopped; a database being dropped is
//! marked Dropping by the utility hook and never restarted.

use std::collections::HashMap;
use std::time::Instant;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

use super::gucs;
use super::shared::{self, SlotState};
use super::worker::{
    guarded, reload_config_if_asked, setup_signals, sleep, Worker, SCHEDULER_TYPE,
};

/// Registers the launcher (from `_PG_init`).
pub fn register() {
    BackgroundWorkerBuilder::new("pg_perf launcher")
        .set_type("pg_perf launcher")
        .set_library("pg_perf")
        .set_function("pg_perf_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(std::time::Duration::from_secs(5)))
        .load();
}

/// Databases a scheduler may run in: (oid, name) of those that allow connections and
/// are not templates.
fn databases() -> Vec<(pg_sys::Oid, String)> {
    let mut out = Vec::new();
    // SAFETY: a catalog heap scan of pg_database inside the caller's transaction, as the
    // autovacuum launcher does; tuples are read while the scan holds them.
    unsafe {
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            let data = (*tup).t_data;
            let form = (data as *mut u8).add((*data).t_hoff as usize)
                as *const pg_sys::FormData_pg_database;
            if !(*form).datallowconn || (*form).datistemplate {
                continue;
            }
            let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push(((*form).oid, name));
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
    }
    out
}

fn start_scheduler(dboid: pg_sys::Oid, name: &str) -> Option<Worker> {
    // SAFETY: plain read of this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let title = format!("pg_perf scheduler {name}");
    let title: String = title.chars().take(90).collect();
    Worker::start(
        BackgroundWorkerBuilder::new(&title)
            .set_type(SCHEDULER_TYPE)
            .set_library("pg_perf")
            .set_function("pg_perf_scheduler_main")
            .enable_spi_access()
            .set_restart_time(None)
            .set_argument(Some(pg_sys::Datum::from(u32::from(dboid))))
            .set_notify_pid(me),
    )
}

/// Entry point of the launcher.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_perf_launcher_main(_arg: pg_sys::Datum) {
    setup_signals();
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: plain read of this process's pid.
    shared::set_launcher_pid(unsafe { pg_sys::MyProcPid });
    let mut running: HashMap<pg_sys::Oid, Worker> = HashMap::new();
    let mut last_start: HashMap<pg_sys::Oid, Instant> = HashMap::new();
    loop {
        pgrx::check_for_interrupts!();
        reload_config_if_asked();
        let _ = shared::take_rescan();
        let enabled = gucs::worker_enabled();
        let only = gucs::worker_databases();
        let dbs: Vec<(pg_sys::Oid, String)> = guarded("listing databases", databases)
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, name)| only.as_ref().is_none_or(|l| l.iter().any(|n| n == name)))
            .collect();
        // Forget schedulers that ended; a scheduler that did not mark its database
        // Absent (no pg_perf) died and is started again below.
        running.retain(|_, h| !h.stopped());
        // Stop what should not run.
        let wanted: HashMap<pg_sys::Oid, &str> = if enabled {
            dbs.iter().map(|(o, n)| (*o, n.as_str())).collect()
        } else {
            HashMap::new()
        };
        let extra: Vec<pg_sys::Oid> = running
            .keys()
            .filter(|o| !wanted.contains_key(o) || shared::state(**o) == SlotState::Dropping)
            .copied()
            .collect();
        for o in extra {
            if let Some(h) = running.remove(&o) {
                h.terminate();
            }
        }
        let mut wait_ms = gucs::naptime_ms();
        for (oid, name) in &wanted {
            if running.contains_key(oid) {
                continue;
            }
            match shared::state(*oid) {
                SlotState::Absent | SlotState::Dropping => continue,
                SlotState::Unknown | SlotState::Active => {}
            }
            if let Some(t) = last_start.get(oid) {
                let since = t.elapsed().as_millis() as i64;
                if since < 1000 {
                    wait_ms = wait_ms.min(1000 - since);
                    continue;
                }
            }
            match start_scheduler(*oid, name) {
                Some(h) => {
                    shared::set_state(*oid, SlotState::Active);
                    running.insert(*oid, h);
                    last_start.insert(*oid, Instant::now());
                }
                None => {
                    // max_worker_processes exhausted: try again soon.
                    wait_ms = wait_ms.min(1000);
                }
            }
        }
        // Databases that are gone: free their slots.
        let present: Vec<pg_sys::Oid> = dbs.iter().map(|(o, _)| *o).collect();
        shared::retain(|o| present.contains(&o) || running.contains_key(&o));
        last_start.retain(|o, _| present.contains(o));
        sleep(wait_ms);
    }
}
