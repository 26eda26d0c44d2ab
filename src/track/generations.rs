//! Change generations in shared memory: per relation (by database and OID) a generation
//! that moves whenever a change of it commits, and a count of commits in progress; and one
//! global generation for changes that may affect any relation (DDL, privileges, COMMIT
//! PREPARED), with its own in-progress count.
//!
//! Invariants:
//! - The registry is lock-free: a slot's key (dbid, relid) is claimed once with a CAS and
//!   never changes; generations and in-progress counts are atomics. Readers never lock.
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

/// The registry slot of (dbid, relid), claimed if `create` and not there yet.
pub fn relation_slot(dbid: u32, relid: u32, create: bool) -> Option<u32> {
    let s = shared()?;
    let key = ((dbid as u64) << 32) | relid as u64;
    if key == 0 {
        return None;
    }
    let mut h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    let start = h as usize % REGISTRY_SLOTS;
    for i in 0..REGISTRY_SLOTS {
        let idx = (start + i) % REGISTRY_SLOTS;
        // SAFETY: idx < REGISTRY_SLOTS; the slot array is live shared memory.
        let slot = unsafe { &*s.slots.add(idx) };
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
                Ok(_) => return Some(idx as u32),
                Err(now) if now == key => return Some(idx as u32),
                Err(_) => continue,
            }
        }
    }
    None
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
        t.committing.fetch_add(1, Ordering::AcqRel);
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
