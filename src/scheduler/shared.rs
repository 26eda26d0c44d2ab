//! The scheduler's small shared-memory table: the launcher's pid and one slot per database
//! the launcher knows about (its scheduler's pid, whether pg_perf is installed there, how
//! many job runners it has running). Backends use it to wake a scheduler (`SetLatch` on its
//! PGPROC latch) and to stop it before DROP DATABASE.
//!
//! Invariants: every access holds the tranche's one LWLock; nothing under the lock
//! allocates, raises an ERROR or calls back into PostgreSQL except `SetLatch` on a latch
//! found under ProcArrayLock-free `BackendPidGetProc` (which only takes ProcArrayLock).

use std::mem::size_of;

use pgrx::pg_sys;

use crate::pg::shmem::{self, LwLockGuard};

const SEGMENT: &std::ffi::CStr = c"pg_perf scheduler";
const TRANCHE: &std::ffi::CStr = c"pg_perf scheduler";
/// Databases the launcher can track at once.
pub const SLOTS: usize = 256;

/// What the launcher knows about a database.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum SlotState {
    /// Not known yet: start a scheduler, which checks for the extension.
    Unknown = 0,
    /// A scheduler runs (or is starting).
    Active = 1,
    /// The scheduler found no pg_perf and exited; start one again only when asked.
    Absent = 2,
    /// DROP DATABASE is under way: never start a scheduler here again.
    Dropping = 3,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    dboid: pg_sys::Oid,
    state: u32,
    scheduler_pid: i32,
    runners: i32,
    /// When the slot became Dropping (a TimestampTz): a DROP DATABASE that failed must not
    /// keep the database's scheduler away for good, so the mark expires.
    dropping_since: i64,
}

/// How long a Dropping mark lasts (microseconds).
const DROPPING_TTL_US: i64 = 30_000_000;

fn now_us() -> i64 {
    // SAFETY: reads the clock; no side effects.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

#[repr(C)]
struct Shared {
    launcher_pid: i32,
    /// Set when a backend asks the launcher to look at databases again.
    rescan: bool,
    slots: [Slot; SLOTS],
}

static mut SHARED: *mut Shared = std::ptr::null_mut();
static mut LOCK: *mut pg_sys::LWLock = std::ptr::null_mut();

/// Requests the segment and the lock (shmem_request hook, postmaster).
pub fn request() {
    shmem::request_segment(size_of::<Shared>(), Some((TRANCHE, 1)));
}

/// Creates or attaches the segment (shmem_startup hook).
pub fn startup() {
    // SAFETY: the shmem_startup hook, with the size and tranche requested in `request()`;
    // a zeroed table is a valid empty one, so there is nothing more to initialize.
    unsafe {
        let (base, _found) = shmem::attach_segment(SEGMENT, size_of::<Shared>(), |_| {});
        SHARED = base as *mut Shared;
        LOCK = &raw mut (*shmem::named_tranche(TRANCHE)).lock;
    }
}

/// Runs `f` on the table under its lock; None when shared memory is missing.
fn with<R>(f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
    // SAFETY: SHARED/LOCK are set once at startup, before any backend runs; every access
    // goes through this function and holds the lock.
    unsafe {
        if SHARED.is_null() || LOCK.is_null() {
            return None;
        }
        let _g = LwLockGuard::acquire(LOCK, true);
        Some(f(&mut *SHARED))
    }
}

fn find(s: &mut Shared, dboid: pg_sys::Oid) -> Option<&mut Slot> {
    s.slots.iter_mut().find(|x| x.used && x.dboid == dboid)
}

fn find_or_add(s: &mut Shared, dboid: pg_sys::Oid) -> Option<&mut Slot> {
    let i = s
        .slots
        .iter()
        .position(|x| x.used && x.dboid == dboid)
        .or_else(|| s.slots.iter().position(|x| !x.used))?;
    let slot = &mut s.slots[i];
    if !slot.used {
        *slot = Slot {
            used: true,
            dboid,
            state: SlotState::Unknown as u32,
            scheduler_pid: 0,
            runners: 0,
            dropping_since: 0,
        };
    }
    Some(slot)
}

fn state_of(x: &Slot, now: i64) -> SlotState {
    match x.state {
        1 => SlotState::Active,
        2 => SlotState::Absent,
        3 if now - x.dropping_since < DROPPING_TTL_US => SlotState::Dropping,
        _ => SlotState::Unknown,
    }
}

pub fn set_launcher_pid(pid: i32) {
    with(|s| s.launcher_pid = pid);
}

/// The state the launcher knows for `dboid` (Unknown when it has no slot).
pub fn state(dboid: pg_sys::Oid) -> SlotState {
    let now = now_us();
    with(|s| find(s, dboid).map(|x| state_of(x, now)))
        .flatten()
        .unwrap_or(SlotState::Unknown)
}

pub fn set_state(dboid: pg_sys::Oid, state: SlotState) {
    let now = now_us();
    with(|s| {
        if let Some(x) = find_or_add(s, dboid) {
            x.state = state as u32;
            x.dropping_since = now;
        }
    });
}

/// Marks `dboid` Dropping and returns its scheduler's pid (0 if none).
pub fn mark_dropping(dboid: pg_sys::Oid) -> i32 {
    let now = now_us();
    with(|s| {
        find_or_add(s, dboid).map(|x| {
            x.state = SlotState::Dropping as u32;
            x.dropping_since = now;
            x.scheduler_pid
        })
    })
    .flatten()
    .unwrap_or(0)
}

/// Frees the slots of databases for which `keep` is false.
pub fn retain(keep: impl Fn(pg_sys::Oid) -> bool) {
    // Copy the OIDs out on the stack: nothing allocates under the lock.
    let mut used = [pg_sys::InvalidOid; SLOTS];
    with(|s| {
        for (i, x) in s.slots.iter().enumerate() {
            if x.used {
                used[i] = x.dboid;
            }
        }
    });
    let used = used.into_iter().filter(|o| *o != pg_sys::InvalidOid);
    // Decide outside the lock (`keep` may allocate), then free.
    let drop_list: Vec<pg_sys::Oid> = used.filter(|o| !keep(*o)).collect();
    if drop_list.is_empty() {
        return;
    }
    with(|s| {
        for x in s.slots.iter_mut() {
            if x.used && x.scheduler_pid == 0 && drop_list.contains(&x.dboid) {
                x.used = false;
            }
        }
    });
}

/// Forgets a database (it is gone, or no longer in perf.worker_databases).
pub fn forget(dboid: pg_sys::Oid) {
    with(|s| {
        if let Some(x) = find(s, dboid) {
            x.used = false;
        }
    });
}

/// Records (or clears, with 0) the scheduler's pid of `dboid`.
pub fn set_scheduler_pid(dboid: pg_sys::Oid, pid: i32) {
    with(|s| {
        if let Some(x) = find_or_add(s, dboid) {
            x.scheduler_pid = pid;
            if pid != 0 {
                x.state = SlotState::Active as u32;
            }
        }
    });
}

pub fn scheduler_pid(dboid: pg_sys::Oid) -> i32 {
    with(|s| find(s, dboid).map(|x| x.scheduler_pid))
        .flatten()
        .unwrap_or(0)
}

/// Records how many runners `dboid`'s scheduler has running; returns the total over all
/// databases after the change.
pub fn set_runners(dboid: pg_sys::Oid, n: i32) -> i32 {
    with(|s| {
        if let Some(x) = find_or_add(s, dboid) {
            x.runners = n;
        }
        s.slots.iter().filter(|x| x.used).map(|x| x.runners).sum()
    })
    .unwrap_or(0)
}

/// Total runners over all databases.
pub fn total_runners() -> i32 {
    with(|s| s.slots.iter().filter(|x| x.used).map(|x| x.runners).sum()).unwrap_or(0)
}

/// Takes the rescan request (the launcher calls this each loop).
pub fn take_rescan() -> bool {
    with(|s| std::mem::replace(&mut s.rescan, false)).unwrap_or(false)
}

fn set_latch_of(pid: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: BackendPidGetProc returns a live PGPROC or null (it takes ProcArrayLock);
    // SetLatch on a PGPROC's latch is how PostgreSQL wakes another process.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// Wakes the scheduler of `dboid`, or the launcher (asking it to start one) when there is
/// none. Called at commit of a transaction that changed jobs.
pub fn wake(dboid: pg_sys::Oid) {
    let (sched, launcher) = with(|s| {
        let pid = find(s, dboid).map(|x| x.scheduler_pid).unwrap_or(0);
        if pid == 0 {
            if let Some(x) = find_or_add(s, dboid) {
                if x.state != SlotState::Dropping as u32 {
                    x.state = SlotState::Unknown as u32;
                }
            }
            s.rescan = true;
        }
        (pid, s.launcher_pid)
    })
    .unwrap_or((0, 0));
    if sched != 0 {
        set_latch_of(sched);
    } else {
        set_latch_of(launcher);
    }
}

/// Wakes the launcher and asks it to look at `dboid` again (CREATE EXTENSION, or a
/// database left by DROP DATABASE that failed).
pub fn wake_launcher(dboid: Option<pg_sys::Oid>) {
    let launcher = with(|s| {
        if let Some(dboid) = dboid {
            if let Some(x) = find_or_add(s, dboid) {
                x.state = SlotState::Unknown as u32;
            }
        }
        s.rescan = true;
        s.launcher_pid
    })
    .unwrap_or(0);
    set_latch_of(launcher);
}
