//! Change generations in shared memory: per relation (by database and OID) a generation
//! that moves whenever a change of it commits, and a count of commits in progress; and one
//! global generation for changes that may affect any relation (DDL, privileges, COMMIT
//! PREPARED), with its own in-progress count.
//!
//! Invariants:
//! - The registry is lock-free: a slot's key (dbid, relid) is claimed with a CAS and
//!   changes only in a sweep; generations and in-progress counts are atomics. Readers
//!   never lock.
//! - A sweep (`sweep`, when three quarters of the slots are claimed) frees the slots of
//!   relations nobody is committing or watching. It runs alone (no lookup is in flight),
//!   inside a global operation (every stored result that read a generation is invalidated,
//!   as by DDL), and moves the sweep epoch before and after: a transaction whose first noted
//!   write is older than the epoch commits as a global operation, because the slot it holds
//!   may have been freed and claimed again by another relation. Kept slots keep their probe
//!   chains (every slot between a kept key's home and its slot stays claimed), so a kept key
//!   is still found where its holders look for it. Generations never go back, also in a
//!   freed slot.
//! - A commit is counted as in progress before its generation moves, and stops being so
//!   after its changes are visible, so a reader that sees neither a moved generation nor a
//!   commit in progress across its work saw no concurrent change.

use core::ffi::CStr;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use once_cell::sync::OnceCell;

use crate::pg::shmem as pg_shmem;

/// Relations the registry can hold, over all databases.
pub const REGISTRY_SLOTS: usize = 16384;
/// Claimed slots at which the next claim sweeps first: linear probing stays short at
/// three quarters full.
const SWEEP_AT: u32 = (REGISTRY_SLOTS as u32 / 4) * 3;
const SEGMENT: &CStr = c"pg_perf relation generations";

#[repr(C)]
struct Header {
    /// Bumped by DDL, privilege changes and COMMIT PREPARED: every relation changed.
    generation: AtomicU64,
    /// Global operations in flight (see `global_begin`).
    in_progress: AtomicU32,
    /// Identifies this incarnation of shared memory (the time it was created, in
    /// microseconds): generations stored elsewhere are only comparable within one.
    instance: AtomicU64,
    /// Slots with a key (approximate between sweeps: only grows).
    claimed: AtomicU32,
    /// Odd while a sweep runs; moves by two per sweep.
    sweep_epoch: AtomicU64,
    /// 1 while a sweep runs (lookups return None meanwhile).
    sweeping: AtomicU32,
    /// Lookups in flight (a sweep waits for them to end).
    lookups: AtomicU32,
    /// Sweeps since the server started.
    sweeps: AtomicU64,
}

/// One source table's state.
#[repr(C)]
pub struct RegistrySlot {
    /// `(dbid << 32) | relid`; 0 = free.
    key: AtomicU64,
    generation: AtomicU64,
    /// Writers between their generation bump (PRE_COMMIT) and the end of their commit: their
    /// changes may be visible to some snapshots and not others, so nothing may be stored.
    committing: AtomicU32,
    /// Armed by a watcher (`watch`) that wants to hear of the next committed change: the
    /// first writer that ends its commit disarms it and reports it
    /// (`crate::track::take_watch_fired`).
    watched: AtomicU32,
}

struct Shared {
    header: *mut Header,
    slots: *mut RegistrySlot,
}

// SAFETY: single-threaded backends; pointers into shared memory valid for the server's
// life; every field they reach is an atomic.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

static SHARED: OnceCell<Shared> = OnceCell::new();

impl Shared {
    fn header(&self) -> &Header {
        // SAFETY: the header is live shared memory for the server's life; all atomics.
        unsafe { &*self.header }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

const BYTES: usize = align8(size_of::<Header>()) + REGISTRY_SLOTS * size_of::<RegistrySlot>();

/// shmem_request: reserve the segment.
pub(crate) fn request() {
    pg_shmem::request_segment(BYTES, None);
}

/// shmem_startup: attach, and initialize on first creation.
pub(crate) fn startup() {
    let init = |base: *mut u8| {
        // SAFETY: the header lies at the start of the zeroed segment.
        unsafe {
            let h = &*(base as *mut Header);
            h.generation.store(1, Ordering::Relaxed);
            h.instance.store(now_us().max(1), Ordering::Relaxed);
        };
    };
    // SAFETY: called from the shmem_startup hook with the size requested in `request()`;
    // the initializer only writes into the zeroed segment.
    let (base, _) = unsafe { pg_shmem::attach_segment(SEGMENT, BYTES, init) };
    let _ = SHARED.set(Shared {
        header: base as *mut Header,
        // SAFETY: the slots follow the header inside the segment (see `BYTES`).
        slots: unsafe { base.add(align8(size_of::<Header>())) } as *mut RegistrySlot,
    });
}

#[inline]
fn shared() -> Option<&'static Shared> {
    SHARED.get()
}

/// True when the generations are attached in this process (the library was preloaded).
pub(crate) fn available() -> bool {
    SHARED.get().is_some()
}

/// Where a key's probe starts.
fn home(key: u64) -> usize {
    let mut h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    h as usize % REGISTRY_SLOTS
}

/// The registry slot of (dbid, relid), claimed if `create` and not there yet. None when
/// the registry is full or a sweep is running (callers treat it as "cannot track").
pub fn relation_slot(dbid: u32, relid: u32, create: bool) -> Option<u32> {
    let s = shared()?;
    let key = ((dbid as u64) << 32) | relid as u64;
    if key == 0 {
        return None;
    }
    let h = s.header();
    if create && h.claimed.load(Ordering::Relaxed) >= SWEEP_AT {
        sweep(s);
    }
    // Announced before the sweep flag is read, and the sweep raises its flag before it
    // waits for announced lookups to end: one of the two sees the other.
    h.lookups.fetch_add(1, Ordering::SeqCst);
    let found = if h.sweeping.load(Ordering::SeqCst) != 0 {
        None
    } else {
        probe(s, key, create)
    };
    h.lookups.fetch_sub(1, Ordering::SeqCst);
    found
}

/// Linear probing from the key's home: its slot, or the first free one claimed.
fn probe(s: &Shared, key: u64, create: bool) -> Option<u32> {
    let start = home(key);
    for i in 0..REGISTRY_SLOTS {
        let idx = (start + i) % REGISTRY_SLOTS;
        let slot = slot(s, idx as u32);
        let k = slot.key.load(Ordering::Acquire);
        if k == key {
            return Some(idx as u32);
        }
        if k == 0 {
            if !create {
                return None;
            }
            match slot
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    s.header().claimed.fetch_add(1, Ordering::Relaxed);
                    return Some(idx as u32);
                }
                Err(now) if now == key => return Some(idx as u32),
                Err(_) => continue,
            }
        }
    }
    None
}

/// The sweep epoch now (see the module's invariants; 0 when not attached).
pub fn sweep_epoch() -> u64 {
    shared().map_or(0, |s| s.header().sweep_epoch.load(Ordering::SeqCst))
}

/// True when a sweep ran or is running since `epoch` was read: a slot looked up after that
/// read may have been freed (and claimed by another relation).
pub fn swept_since(epoch: u64) -> bool {
    epoch % 2 == 1 || sweep_epoch() != epoch
}

/// Sweeps since the server started.
pub fn sweeps() -> u64 {
    shared().map_or(0, |s| s.header().sweeps.load(Ordering::Relaxed))
}

/// Frees every slot nobody is committing or watching (see the module's invariants).
/// Returns false when another sweep runs or lookups did not drain in a second.
fn sweep(s: &Shared) -> bool {
    let h = s.header();
    if h.sweeping
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return false;
    }
    h.sweep_epoch.fetch_add(1, Ordering::SeqCst);
    global_begin();
    // Lookups are a probe over atomics (no ERROR, no wait): this ends at once unless a
    // backend was descheduled mid-probe.
    let waited = std::time::Instant::now();
    let drained = loop {
        if h.lookups.load(Ordering::SeqCst) == 0 {
            break true;
        }
        if waited.elapsed() > std::time::Duration::from_secs(1) {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    };
    let freed = if drained {
        let keys: Vec<u64> = (0..REGISTRY_SLOTS)
            .map(|i| slot(s, i as u32).key.load(Ordering::Acquire))
            .collect();
        // SeqCst against `commit_begin`: a writer whose count this misses sees the epoch.
        let busy: Vec<bool> = (0..REGISTRY_SLOTS)
            .map(|i| {
                let t = slot(s, i as u32);
                keys[i] != 0
                    && (t.committing.load(Ordering::SeqCst) > 0
                        || t.watched.load(Ordering::SeqCst) != 0)
            })
            .collect();
        let keep = super::registry::kept(&keys, &busy, home);
        let (mut kept, mut freed) = (0u32, 0u32);
        for (i, k) in keys.iter().enumerate() {
            if keep[i] {
                kept += 1;
            } else if *k != 0 {
                slot(s, i as u32).key.store(0, Ordering::Release);
                freed += 1;
            }
        }
        h.claimed.store(kept, Ordering::Relaxed);
        h.sweeps.fetch_add(1, Ordering::Relaxed);
        freed
    } else {
        0
    };
    h.sweep_epoch.fetch_add(1, Ordering::SeqCst);
    global_end();
    h.sweeping.store(0, Ordering::SeqCst);
    // Logged after the flags are down: an ERROR while logging must not leave them up.
    if drained {
        pgrx::log!(
            "pg_perf: the relation change registry reached {SWEEP_AT} of {REGISTRY_SLOTS} slots; \
             freed {freed} (stored results were invalidated once, as after DDL)"
        );
    }
    drained
}

fn slot(s: &Shared, idx: u32) -> &RegistrySlot {
    // SAFETY: idx came from `relation_slot`, so idx < REGISTRY_SLOTS.
    unsafe { &*s.slots.add(idx as usize % REGISTRY_SLOTS) }
}

/// (generation, writers committing) of a registry slot.
pub fn relation_state(idx: u32) -> (u64, u32) {
    match shared() {
        Some(s) => {
            let t = slot(s, idx);
            (
                t.generation.load(Ordering::Acquire),
                t.committing.load(Ordering::Acquire),
            )
        }
        None => (0, 0),
    }
}

/// Moves a relation's generation outside any commit (an explicit invalidation).
pub fn bump(idx: u32) {
    if let Some(s) = shared() {
        slot(s, idx).generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A writer of the table starts committing (PRE_COMMIT): counted as committing first, then
/// the generation is bumped, so a fill never sees the new generation without the count.
pub fn commit_begin(idx: u32) {
    if let Some(s) = shared() {
        let t = slot(s, idx);
        // SeqCst: pairs with a sweep's epoch move and count read (see `sweep`).
        t.committing.fetch_add(1, Ordering::SeqCst);
        t.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The writer's commit (or abort after PRE_COMMIT) is over. Returns true when the slot
/// was watched (and disarms it).
pub fn commit_end(idx: u32) -> bool {
    if let Some(s) = shared() {
        let t = slot(s, idx);
        let _ = t
            .committing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
        // Pairs with the fence in `watch`: either the watcher sees this commit's generation
        // or this load sees its arm (store-load order needs a full fence on both sides).
        // Load first: the common case (nobody watching) writes nothing.
        std::sync::atomic::fence(Ordering::SeqCst);
        return t.watched.load(Ordering::SeqCst) != 0 && t.watched.swap(0, Ordering::AcqRel) != 0;
    }
    false
}

/// Arms a slot: the next writer of the relation to end its commit reports it (see
/// `crate::track::take_watch_fired`). Used by the managed matviews' scheduler to be woken by
/// the first change after a refresh instead of polling.
pub fn watch(idx: u32) {
    if let Some(s) = shared() {
        slot(s, idx).watched.store(1, Ordering::SeqCst);
        // The caller reads generations next: see `commit_end`.
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

/// Disarms a slot armed with `watch`.
pub fn unwatch(idx: u32) {
    if let Some(s) = shared() {
        slot(s, idx).watched.store(0, Ordering::Release);
    }
}

/// This incarnation of the generations (0 when not attached): a generation read under
/// another instance (before a restart) says nothing about the current ones.
pub fn instance() -> u64 {
    match shared() {
        // SAFETY: header is live; atomics.
        Some(s) => unsafe { (*s.header).instance.load(Ordering::Acquire) },
        None => 0,
    }
}

/// (global generation, global operations in progress).
pub fn global_state() -> (u64, u32) {
    match shared() {
        // SAFETY: header is live; atomics.
        Some(s) => unsafe {
            (
                (*s.header).generation.load(Ordering::Acquire),
                (*s.header).in_progress.load(Ordering::Acquire),
            )
        },
        None => (0, 0),
    }
}

/// Starts an operation that invalidates everything when it becomes visible (DDL commit,
/// COMMIT PREPARED): entries are invalidated now and none can be stored until `global_end`.
pub fn global_begin() {
    if let Some(s) = shared() {
        // SAFETY: header is live; atomics.
        unsafe {
            (*s.header).in_progress.fetch_add(1, Ordering::AcqRel);
            (*s.header).generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Ends an operation started with `global_begin` (after its effects became visible).
pub fn global_end() {
    if let Some(s) = shared() {
        // SAFETY: header is live; atomics.
        unsafe {
            (*s.header).generation.fetch_add(1, Ordering::AcqRel);
            let _ =
                (*s.header)
                    .in_progress
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                        Some(v.saturating_sub(1))
                    });
        }
    }
}

// ---------------------------------------------------------------------------------------
