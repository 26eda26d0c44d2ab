//! Progress of long partition work (converting a table, draining a default partition),
//! readable from other sessions through `perf.partition_progress`, in the manner of
//! `pg_stat_progress_*`: the work runs in one transaction, so nothing it writes to a table
//! is visible until it commits; shared memory is.
//!
//! Layout: a fixed array of [`SLOTS`] slots. A backend claims a slot by storing its pid
//! (compare-and-swap from 0, or from the pid of a backend that no longer exists) and is
//! then the only writer of that slot; every field is an atomic, so readers never block the
//! writer and no LWLock is needed (a reader may see fields from two consecutive updates;
//! harmless for progress figures). A slot left behind by an ERROR is not cleaned up by a
//! callback: it records the local transaction id it was written in, and readers skip slots
//! whose backend is gone or has moved on to another transaction. With every slot busy,
//! progress is simply not reported (the work itself is never refused).

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};
use std::time::Instant;

use pgrx::prelude::*;

use crate::error::invalid_argument;
use crate::pg::privilege::{self, Role};

/// Concurrent long partition operations whose progress is shown.
pub const SLOTS: usize = 32;
const SEGMENT: &std::ffi::CStr = c"pg_perf partition progress";

#[repr(C)]
struct Slot {
    pid: AtomicI32,
    db: AtomicU32,
    relid: AtomicU32,
    lxid: AtomicU32,
    phase: AtomicU32,
    rows_done: AtomicI64,
    rows_total: AtomicI64,
    parts_done: AtomicI64,
    started: AtomicI64,
}

/// The phases a long operation goes through, in order (the SQL side names them).
const PHASES: [&str; 7] = [
    "",
    "scanning",
    "creating partitions",
    "moving rows",
    "attaching",
    "swapping names",
    "applying retention",
];

static mut BASE: *mut Slot = std::ptr::null_mut();

thread_local! {
    static MY_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    static LAST_NOTICE: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn bytes() -> usize {
    SLOTS * std::mem::size_of::<Slot>()
}

/// shmem_request: reserve the slot array.
pub fn request() {
    crate::pg::shmem::request_segment(bytes(), None);
}

/// shmem_startup: attach, and zero the slots on first creation.
pub fn startup() {
    // SAFETY: the shmem_startup hook, with the size requested in request(); the helper
    // zeroes a new segment, and all-zero bytes are valid atomics (free slots).
    unsafe {
        let (base, _found) = crate::pg::shmem::attach_segment(SEGMENT, bytes(), |_| {});
        BASE = base as *mut Slot;
    }
}

fn slots() -> Option<&'static [Slot]> {
    // SAFETY: BASE is set once at shmem startup (inherited by backends) and points to
    // SLOTS initialized slots that live as long as the server.
    unsafe {
        let base = BASE;
        (!base.is_null()).then(|| std::slice::from_raw_parts(base, SLOTS))
    }
}

fn backend_alive(pid: i32) -> bool {
    // SAFETY: takes ProcArrayLock shared internally; we hold no LWLock.
    unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// The local transaction id a live backend is running, if any.
fn backend_lxid(pid: i32) -> Option<u32> {
    // SAFETY: as backend_alive; the PGPROC lives in shared memory for the server's life, so
    // reading its lxid after the lock is released is a benign race (progress display only).
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        (!proc_.is_null()).then(|| (*proc_).lxid)
    }
}

fn my_lxid() -> u32 {
    // SAFETY: MyProc is this backend's own PGPROC.
    unsafe { (*pg_sys::MyProc).lxid }
}

fn claim(slots: &[Slot]) -> Option<usize> {
    // SAFETY: plain read of a backend global.
    let me = unsafe { pg_sys::MyProcPid };
    if let Some(i) = MY_SLOT.get() {
        if slots[i].pid.load(Ordering::Relaxed) == me {
            return Some(i);
        }
    }
    if let Some(i) = slots
        .iter()
        .position(|s| s.pid.load(Ordering::Relaxed) == me)
    {
        MY_SLOT.set(Some(i));
        return Some(i);
    }
    for (i, s) in slots.iter().enumerate() {
        let owner = s.pid.load(Ordering::Relaxed);
        if (owner == 0 || !backend_alive(owner))
            && s.pid
                .compare_exchange(owner, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            MY_SLOT.set(Some(i));
            return Some(i);
        }
    }
    None
}

/// Records where this backend's long partition operation on `relid` stands, and emits a
/// NOTICE when `perf.partition_notice_interval` has passed since the last one. Internal:
/// called by pg_perf's own partition functions.
#[pg_extern(volatile, parallel_unsafe, name = "_partition_progress")]
fn partition_progress_update(
    relid: pg_sys::Oid,
    phase: &str,
    rows_done: i64,
    rows_total: i64,
    parts_done: i64,
) {
    privilege::require_in_admin_call("perf._partition_progress()");
    let Some(code) = PHASES.iter().skip(1).position(|p| *p == phase) else {
        invalid_argument(
            format!("unknown partition progress phase \"{phase}\""),
            format!("Use one of: {}.", PHASES[1..].join(", ")),
        )
    };
    let code = code as u32 + 1;
    if let Some(slots) = slots() {
        if let Some(i) = claim(slots) {
            let s = &slots[i];
            let lxid = my_lxid();
            if s.lxid.load(Ordering::Relaxed) != lxid
                || s.relid.load(Ordering::Relaxed) != relid.to_u32()
            {
                // SAFETY: plain reads of backend globals / a clock function without errors.
                let (db, now) =
                    unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::GetCurrentTimestamp()) };
                s.db.store(db, Ordering::Relaxed);
                s.relid.store(relid.to_u32(), Ordering::Relaxed);
                s.started.store(now, Ordering::Relaxed);
                s.lxid.store(lxid, Ordering::Relaxed);
            }
            s.phase.store(code, Ordering::Relaxed);
            s.rows_done.store(rows_done, Ordering::Relaxed);
            s.rows_total.store(rows_total, Ordering::Relaxed);
            s.parts_done.store(parts_done, Ordering::Relaxed);
        }
    }
    let interval = super::gucs::NOTICE_INTERVAL_MS.get();
    if interval > 0 {
        let now = Instant::now();
        let due = match LAST_NOTICE.get() {
            None => {
                // First report of this operation: start the clock, say nothing yet.
                LAST_NOTICE.set(Some(now));
                false
            }
            Some(t) => now.duration_since(t).as_millis() >= interval as u128,
        };
        if due {
            LAST_NOTICE.set(Some(now));
            let rel =
                Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[relid.into()])
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| relid.to_u32().to_string());
            notice!(
                "pg_perf: {rel}: {phase}, {rows_done} of {rows_total} rows moved, {parts_done} partitions done"
            );
        }
    }
}

/// Marks this backend's long partition operation finished (frees its progress slot).
#[pg_extern(volatile, parallel_unsafe, name = "_partition_progress_done")]
fn partition_progress_done() {
    privilege::require_in_admin_call("perf._partition_progress_done()");
    LAST_NOTICE.set(None);
    if let (Some(slots), Some(i)) = (slots(), MY_SLOT.get()) {
        // SAFETY: plain read of a backend global.
        let me = unsafe { pg_sys::MyProcPid };
        let _ = slots[i]
            .pid
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Every long partition operation running now, in any database (the view
/// `perf.partition_progress` shows the current database's, with names).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn partition_progress_all() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(datid, pg_sys::Oid),
        name!(relid, pg_sys::Oid),
        name!(phase, String),
        name!(rows_done, i64),
        name!(rows_total, i64),
        name!(partitions_done, i64),
        name!(started, Option<TimestampWithTimeZone>),
    ),
> {
    privilege::require(Role::Reader, "perf.partition_progress_all()");
    let mut rows = Vec::new();
    if let Some(slots) = slots() {
        for s in slots {
            let pid = s.pid.load(Ordering::Acquire);
            let phase = s.phase.load(Ordering::Relaxed) as usize;
            if pid == 0 || phase == 0 || phase >= PHASES.len() {
                continue;
            }
            // Left behind by an operation that raised an ERROR: skip.
            if backend_lxid(pid) != Some(s.lxid.load(Ordering::Relaxed)) {
                continue;
            }
            let started = TimestampWithTimeZone::try_from(s.started.load(Ordering::Relaxed)).ok();
            rows.push((
                pid,
                pg_sys::Oid::from(s.db.load(Ordering::Relaxed)),
                pg_sys::Oid::from(s.relid.load(Ordering::Relaxed)),
                PHASES[phase].to_string(),
                s.rows_done.load(Ordering::Relaxed),
                s.rows_total.load(Ordering::Relaxed),
                s.parts_done.load(Ordering::Relaxed),
                started,
            ));
        }
    }
    TableIterator::new(rows)
}
