//! Shared memory of the result cache: a table registry (per source table: generation and
//! writers in progress) and a partitioned entry store with a chunked arena.
//!
//! Invariants:
//! - The registry is lock-free: a slot's key (dbid, relid) is claimed once with a CAS and
//!   never changes; generation and in-progress counts are atomics. Readers never lock it.
//! - Entries live in `PARTITIONS` partitions chosen by key hash, each with its own LWLock:
//!   a hit takes only its partition's lock SHARED (no global lock, no exclusive lock);
//!   storing, evicting and invalidating take one partition's lock EXCLUSIVE.
//! - Result bytes are kept in fixed-size chunks linked through a per-partition `next` array,
//!   so there is no fragmentation; a partition's free chunks form a list.
//! - Nothing allocates or can fail while a lock is held: callers pass buffers sized before
//!   locking; copies are bounded by the entry's recorded length.
//! - Entry fields other than the atomics change only under the EXCLUSIVE partition lock.

use core::ffi::CStr;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use once_cell::sync::OnceCell;
use pgrx::pg_sys;

use crate::shmem::LwLockGuard;

/// Entry-store partitions, each with its own LWLock.
pub const PARTITIONS: usize = 32;
/// Bytes of result data per chunk.
pub const CHUNK_SIZE: usize = 4096;
/// Source relations an entry may depend on.
pub const MAX_RELS: usize = 16;
/// Tables (and views) the registry can hold, over all databases.
pub const REGISTRY_SLOTS: usize = 16384;
const PREVIEW_TEXT: usize = 200;
const PREVIEW_PARAMS: usize = 96;
const TRANCHE: &CStr = c"pg_perf_cache";
const SEGMENT: &CStr = c"pg_perf result cache";
const NONE: u32 = u32::MAX;

/// Cache-wide counters (index into `Header::counters`).
#[derive(Clone, Copy)]
pub enum Counter {
    Hits = 0,
    Misses,
    Stores,
    Evictions,
    Expirations,
    Invalidations,
}
const NCOUNTERS: usize = 6;

/// The SQL type a result is stored and served as. Each format of the same query is its own
/// entry, already in its output form, so a hit is a copy: `Jsonb` for perf.cached_json()
/// (and the typed perf.cached()), `JsonText` (jsonb's text rendering, made once when the
/// entry is stored) for perf.cached_json_text(), whose hits skip rendering the jsonb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    Jsonb = 0,
    JsonText = 1,
}

impl Format {
    /// The name perf.cache_entries() shows: the SQL type the entry is served as.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonb => "jsonb",
            Format::JsonText => "json",
        }
    }

    /// The SQL function that serves this format.
    pub fn function(self) -> &'static str {
        match self {
            Format::Jsonb => "perf.cached_json",
            Format::JsonText => "perf.cached_json_text",
        }
    }

    fn from_u8(v: u8) -> Format {
        if v == Format::JsonText as u8 {
            Format::JsonText
        } else {
            Format::Jsonb
        }
    }
}

/// Why a result was not served from or stored in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Disabled = 0,
    Isolation,
    Recovery,
    OwnWrites,
    UntrackedTable,
    MutableFunction,
    RowLocks,
    NotReadOnly,
    UnsupportedRelation,
    RowSecurity,
    TooLarge,
    ConcurrentWrite,
    TooManyRelations,
    CacheFull,
}
pub const NREFUSALS: usize = 14;

impl Refusal {
    pub const ALL: [Refusal; NREFUSALS] = [
        Refusal::Disabled,
        Refusal::Isolation,
        Refusal::Recovery,
        Refusal::OwnWrites,
        Refusal::UntrackedTable,
        Refusal::MutableFunction,
        Refusal::RowLocks,
        Refusal::NotReadOnly,
        Refusal::UnsupportedRelation,
        Refusal::RowSecurity,
        Refusal::TooLarge,
        Refusal::ConcurrentWrite,
        Refusal::TooManyRelations,
        Refusal::CacheFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::Isolation => "isolation",
            Refusal::Recovery => "recovery",
            Refusal::OwnWrites => "own_writes",
            Refusal::UntrackedTable => "untracked_table",
            Refusal::MutableFunction => "mutable_function",
            Refusal::RowLocks => "row_locks",
            Refusal::NotReadOnly => "not_read_only",
            Refusal::UnsupportedRelation => "unsupported_relation",
            Refusal::RowSecurity => "row_security",
            Refusal::TooLarge => "too_large",
            Refusal::ConcurrentWrite => "concurrent_write",
            Refusal::TooManyRelations => "too_many_relations",
            Refusal::CacheFull => "cache_full",
        }
    }
}

#[repr(C)]
struct Header {
    chunks_per_part: u32,
    entries_per_part: u32,
    /// Bumped by DDL, privilege changes and COMMIT PREPARED: invalidates every entry.
    global_generation: AtomicU64,
    /// DDL commits and COMMIT PREPARED in flight: no entry may be stored meanwhile.
    global_in_progress: AtomicU32,
    counters: [AtomicU64; NCOUNTERS],
    refusals: [AtomicU64; NREFUSALS],
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
}

#[repr(C)]
struct PartHeader {
    free_chunk: u32,
    free_chunks: u32,
    entries: u32,
    bytes: u64,
}

/// A source relation an entry depends on, with the generation it was computed at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RelDep {
    pub slot: u32,
    pub relid: u32,
    pub generation: u64,
}

#[repr(C)]
struct Entry {
    used: bool,
    format: u8,
    userid: u32,
    dbid: u32,
    key: [u64; 2],
    global_generation: u64,
    nrels: u32,
    rels: [RelDep; MAX_RELS],
    created: i64,
    expires: i64,
    last_used: AtomicI64,
    hits: AtomicU64,
    len: u32,
    first_chunk: u32,
    text_len: u16,
    params_len: u16,
    text: [u8; PREVIEW_TEXT],
    params: [u8; PREVIEW_PARAMS],
}

struct Shared {
    header: *mut Header,
    registry: *mut RegistrySlot,
    parts: *mut PartHeader,
    /// Per entry slot, the first half of its key hash (0 = free): lookups scan this compact
    /// array instead of the entries themselves.
    hashes: *mut u64,
    entries: *mut Entry,
    next: *mut u32,
    chunks: *mut u8,
    locks: *mut pg_sys::LWLockPadded,
    chunks_per_part: usize,
    entries_per_part: usize,
}

// SAFETY: single-threaded backends; pointers into shared memory valid for the server's life;
// concurrent access is governed by the LWLocks and atomics described in the module docs.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

static SHARED: OnceCell<Shared> = OnceCell::new();

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Sizes derived from `perf.cache_size_mb`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub chunks_per_part: usize,
    pub entries_per_part: usize,
    pub bytes: usize,
}

impl Layout {
    pub fn compute(size_mb: usize) -> Self {
        let total_chunks = (size_mb * 1024 * 1024 / CHUNK_SIZE).max(PARTITIONS * 4);
        let chunks_per_part = total_chunks / PARTITIONS;
        let entries_per_part = chunks_per_part;
        let bytes = align8(size_of::<Header>())
            + align8(REGISTRY_SLOTS * size_of::<RegistrySlot>())
            + align8(PARTITIONS * size_of::<PartHeader>())
            + align8(PARTITIONS * entries_per_part * size_of::<u64>())
            + align8(PARTITIONS * entries_per_part * size_of::<Entry>())
            + align8(PARTITIONS * chunks_per_part * size_of::<u32>())
            + PARTITIONS * chunks_per_part * CHUNK_SIZE;
        Layout {
            chunks_per_part,
            entries_per_part,
            bytes,
        }
    }

    fn from_gucs() -> Self {
        Layout::compute(crate::gucs::CACHE_SIZE_MB.get().max(1) as usize)
    }
}

/// shmem_request: reserve the segment and the partition locks.
pub fn request() {
    let l = Layout::from_gucs();
    // SAFETY: called from the shmem_request hook in the postmaster.
    unsafe {
        pg_sys::RequestAddinShmemSpace(l.bytes);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), PARTITIONS as i32);
    }
}

/// shmem_startup: attach, and initialize on first creation.
pub fn startup() {
    let l = Layout::from_gucs();
    let mut found = false;
    // SAFETY: AddinShmemInitLock serializes segment creation; sizes match `request()`.
    let shared = unsafe {
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let base = pg_sys::ShmemInitStruct(SEGMENT.as_ptr(), l.bytes, &mut found) as *mut u8;
        let mut off = 0usize;
        let header = base as *mut Header;
        off += align8(size_of::<Header>());
        let registry = base.add(off) as *mut RegistrySlot;
        off += align8(REGISTRY_SLOTS * size_of::<RegistrySlot>());
        let parts = base.add(off) as *mut PartHeader;
        off += align8(PARTITIONS * size_of::<PartHeader>());
        let hashes = base.add(off) as *mut u64;
        off += align8(PARTITIONS * l.entries_per_part * size_of::<u64>());
        let entries = base.add(off) as *mut Entry;
        off += align8(PARTITIONS * l.entries_per_part * size_of::<Entry>());
        let next = base.add(off) as *mut u32;
        off += align8(PARTITIONS * l.chunks_per_part * size_of::<u32>());
        let chunks = base.add(off);
        if !found {
            ptr::write_bytes(base, 0, off);
            (*header).chunks_per_part = l.chunks_per_part as u32;
            (*header).entries_per_part = l.entries_per_part as u32;
            (*header).global_generation.store(1, Ordering::Relaxed);
            for p in 0..PARTITIONS {
                let ph = parts.add(p);
                (*ph).free_chunk = 0;
                (*ph).free_chunks = l.chunks_per_part as u32;
                for c in 0..l.chunks_per_part {
                    *next.add(p * l.chunks_per_part + c) = if c + 1 < l.chunks_per_part {
                        c as u32 + 1
                    } else {
                        NONE
                    };
                }
            }
        }
        let locks = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
        pg_sys::LWLockRelease(init_lock);
        Shared {
            header,
            registry,
            parts,
            hashes,
            entries,
            next,
            chunks,
            locks,
            chunks_per_part: l.chunks_per_part,
            entries_per_part: l.entries_per_part,
        }
    };
    let _ = SHARED.set(shared);
}

fn shared() -> Option<&'static Shared> {
    SHARED.get()
}

pub fn available() -> bool {
    SHARED.get().is_some()
}

/// Takes partition `part`'s lock.
fn part_lock(s: &Shared, part: usize, exclusive: bool) -> LwLockGuard {
    // SAFETY: the tranche has PARTITIONS locks and part < PARTITIONS at every call site.
    unsafe { LwLockGuard::acquire(&raw mut (*s.locks.add(part % PARTITIONS)).lock, exclusive) }
}

// ---------------------------------------------------------------------------------------
// Counters.
// ---------------------------------------------------------------------------------------

pub fn count(c: Counter) {
    if let Some(s) = shared() {
        // SAFETY: header is live; atomic.
        unsafe { (*s.header).counters[c as usize].fetch_add(1, Ordering::Relaxed) };
    }
}

pub fn count_refusal(r: Refusal) {
    if let Some(s) = shared() {
        // SAFETY: header is live; atomic.
        unsafe { (*s.header).refusals[r as usize].fetch_add(1, Ordering::Relaxed) };
    }
}

pub fn counter(c: Counter) -> u64 {
    // SAFETY: header is live; atomic.
    shared().map_or(0, |s| unsafe {
        (*s.header).counters[c as usize].load(Ordering::Relaxed)
    })
}

pub fn refusal_count(r: Refusal) -> u64 {
    // SAFETY: header is live; atomic.
    shared().map_or(0, |s| unsafe {
        (*s.header).refusals[r as usize].load(Ordering::Relaxed)
    })
}

// ---------------------------------------------------------------------------------------
// Registry and generations.
// ---------------------------------------------------------------------------------------

/// The registry slot of (dbid, relid), claimed if `create` and not there yet.
pub fn registry_slot(dbid: u32, relid: u32, create: bool) -> Option<u32> {
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
        let slot = unsafe { &*s.registry.add(idx) };
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
    // SAFETY: idx came from `registry_slot`, so idx < REGISTRY_SLOTS.
    unsafe { &*s.registry.add(idx as usize % REGISTRY_SLOTS) }
}

/// (generation, writers committing) of a registry slot.
pub fn table_state(idx: u32) -> (u64, u32) {
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

/// Invalidates a table's entries (no commit involved: cache_invalidate()).
pub fn bump_generation(idx: u32) {
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

/// The writer's commit (or abort after PRE_COMMIT) is over.
pub fn commit_end(idx: u32) {
    if let Some(s) = shared() {
        let _ = slot(s, idx)
            .committing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
    }
}

/// (global generation, global operations in progress).
pub fn global_state() -> (u64, u32) {
    match shared() {
        // SAFETY: header is live; atomics.
        Some(s) => unsafe {
            (
                (*s.header).global_generation.load(Ordering::Acquire),
                (*s.header).global_in_progress.load(Ordering::Acquire),
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
            (*s.header)
                .global_in_progress
                .fetch_add(1, Ordering::AcqRel);
            (*s.header).global_generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Ends an operation started with `global_begin` (after its effects became visible).
pub fn global_end() {
    if let Some(s) = shared() {
        // SAFETY: header is live; atomics.
        unsafe {
            (*s.header).global_generation.fetch_add(1, Ordering::AcqRel);
            let _ = (*s.header).global_in_progress.fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |v| Some(v.saturating_sub(1)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entries.
// ---------------------------------------------------------------------------------------

/// What identifies a cached result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheKey {
    pub hash: [u64; 2],
    pub userid: u32,
    pub dbid: u32,
    pub format: Format,
}

impl CacheKey {
    fn partition(&self) -> usize {
        (self.hash[0] >> 40) as usize % PARTITIONS
    }
}

/// Outcome of a lookup.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// Valid entry: its bytes were copied into the caller's buffer.
    Hit,
    /// No entry, or an expired/invalidated one.
    Miss,
    /// An entry exists but depends on a table this transaction wrote.
    OwnWrites,
}

impl Shared {
    fn entry(&self, part: usize, i: usize) -> *mut Entry {
        // SAFETY: callers pass part < PARTITIONS and i < entries_per_part.
        unsafe { self.entries.add(part * self.entries_per_part + i) }
    }

    fn next(&self, part: usize, c: u32) -> *mut u32 {
        // SAFETY: callers pass c < chunks_per_part.
        unsafe { self.next.add(part * self.chunks_per_part + c as usize) }
    }

    fn chunk(&self, part: usize, c: u32) -> *mut u8 {
        // SAFETY: callers pass c < chunks_per_part.
        unsafe {
            self.chunks
                .add((part * self.chunks_per_part + c as usize) * CHUNK_SIZE)
        }
    }

    fn part(&self, part: usize) -> *mut PartHeader {
        // SAFETY: part < PARTITIONS.
        unsafe { self.parts.add(part) }
    }

    #[allow(clippy::mut_from_ref)]
    fn hashes(&self, part: usize) -> &mut [u64] {
        // SAFETY: each partition owns entries_per_part consecutive hash slots; callers hold
        // the partition lock (writes only under EXCLUSIVE).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.hashes.add(part * self.entries_per_part),
                self.entries_per_part,
            )
        }
    }

    /// Index of the live entry with `key` (partition lock held, any mode).
    fn find(&self, part: usize, key: &CacheKey) -> Option<usize> {
        let h = key.hash[0] | 1; // never 0, which marks a free slot
        let hashes = self.hashes(part);
        (0..hashes.len()).find(|&i| {
            hashes[i] == h && {
                // SAFETY: i < entries_per_part; fields are stable under the partition lock.
                let e = unsafe { &*self.entry(part, i) };
                e.used
                    && e.key == key.hash
                    && e.userid == key.userid
                    && e.dbid == key.dbid
                    && e.format == key.format as u8
            }
        })
    }

    fn valid(&self, e: &Entry) -> bool {
        // SAFETY: header is live.
        let global = unsafe { (*self.header).global_generation.load(Ordering::Acquire) };
        e.global_generation == global
            && e.rels[..(e.nrels as usize).min(MAX_RELS)]
                .iter()
                .all(|d| slot(self, d.slot).generation.load(Ordering::Acquire) == d.generation)
    }

    /// Frees entry `i` and its chunks (partition lock EXCLUSIVE).
    fn free_entry(&self, part: usize, i: usize) {
        // SAFETY: exclusive lock held; chunk indexes were allocated from this partition.
        unsafe {
            let e = &mut *self.entry(part, i);
            if !e.used {
                return;
            }
            let mut c = e.first_chunk;
            let ph = &mut *self.part(part);
            while c != NONE && (c as usize) < self.chunks_per_part {
                let n = *self.next(part, c);
                *self.next(part, c) = ph.free_chunk;
                ph.free_chunk = c;
                ph.free_chunks += 1;
                c = n;
            }
            ph.entries = ph.entries.saturating_sub(1);
            ph.bytes = ph.bytes.saturating_sub(e.len as u64);
            e.used = false;
            self.hashes(part)[i] = 0;
        }
    }

    /// Frees the least recently used (expired or invalid first) entry of a partition.
    fn evict_one(&self, part: usize, now: i64) -> bool {
        let mut victim: Option<(usize, i64)> = None;
        for i in 0..self.entries_per_part {
            // SAFETY: exclusive lock held.
            let e = unsafe { &*self.entry(part, i) };
            if !e.used {
                continue;
            }
            let dead = (e.expires != 0 && e.expires <= now) || !self.valid(e);
            let score = if dead {
                i64::MIN
            } else {
                e.last_used.load(Ordering::Relaxed)
            };
            if victim.is_none_or(|(_, s)| score < s) {
                victim = Some((i, score));
            }
        }
        match victim {
            Some((i, score)) => {
                self.free_entry(part, i);
                if score != i64::MIN {
                    count(Counter::Evictions);
                }
                true
            }
            None => false,
        }
    }
}

/// Looks `key` up; on a valid hit copies its bytes into `out` (cleared first; it must have
/// capacity for the largest entry, so nothing is allocated under the lock).
/// `written` lists registry slots this transaction wrote (own writes bypass the cache).
pub fn lookup(key: &CacheKey, now: i64, written: &[u32], out: &mut Vec<u8>) -> Lookup {
    let Some(s) = shared() else {
        return Lookup::Miss;
    };
    let part = key.partition();
    let _g = part_lock(s, part, false);
    let Some(i) = s.find(part, key) else {
        return Lookup::Miss;
    };
    // SAFETY: i < entries_per_part; shared lock keeps non-atomic fields stable.
    let e = unsafe { &*s.entry(part, i) };
    if e.expires != 0 && e.expires <= now {
        count(Counter::Expirations);
        return Lookup::Miss;
    }
    if !s.valid(e) {
        count(Counter::Invalidations);
        return Lookup::Miss;
    }
    let deps = &e.rels[..(e.nrels as usize).min(MAX_RELS)];
    if deps.iter().any(|d| written.contains(&d.slot)) {
        return Lookup::OwnWrites;
    }
    let len = e.len as usize;
    if out.capacity() < len {
        // The buffer is sized for perf.cache_max_entry_kb; an entry stored under a larger
        // setting is simply not served to this backend.
        return Lookup::Miss;
    }
    out.clear();
    let mut c = e.first_chunk;
    let mut remaining = len;
    while remaining > 0 && c != NONE && (c as usize) < s.chunks_per_part {
        let n = remaining.min(CHUNK_SIZE);
        // SAFETY: chunk c holds at least n bytes of this entry; out has capacity (checked).
        unsafe {
            let src = std::slice::from_raw_parts(s.chunk(part, c), n);
            out.extend_from_slice(src);
            c = *s.next(part, c);
        }
        remaining -= n;
    }
    if remaining != 0 {
        return Lookup::Miss;
    }
    e.last_used.store(now, Ordering::Relaxed);
    e.hits.fetch_add(1, Ordering::Relaxed);
    Lookup::Hit
}

/// Everything needed to store a result.
pub struct NewEntry<'a> {
    pub key: CacheKey,
    pub deps: &'a [RelDep],
    pub global_generation: u64,
    pub now: i64,
    pub expires: i64,
    pub text: &'a str,
    pub params: &'a str,
    pub data: &'a [u8],
}

fn preview(dst: &mut [u8], src: &str) -> u16 {
    let t = crate::stats::normalize::truncate_utf8(src, dst.len());
    dst[..t.len()].copy_from_slice(t.as_bytes());
    t.len() as u16
}

/// Stores a result, evicting least recently used entries of its partition as needed.
/// Returns false if it cannot fit (larger than a partition, or too many relations).
pub fn store(n: &NewEntry) -> bool {
    let Some(s) = shared() else { return false };
    if n.deps.len() > MAX_RELS {
        return false;
    }
    let need = n.data.len().div_ceil(CHUNK_SIZE).max(1);
    if need > s.chunks_per_part {
        return false;
    }
    let part = n.key.partition();
    let _g = part_lock(s, part, true);
    if let Some(i) = s.find(part, &n.key) {
        s.free_entry(part, i);
    }
    loop {
        // SAFETY: exclusive lock held.
        let (free_chunks, entries) =
            unsafe { ((*s.part(part)).free_chunks, (*s.part(part)).entries) };
        if free_chunks as usize >= need && (entries as usize) < s.entries_per_part {
            break;
        }
        if !s.evict_one(part, n.now) {
            return false;
        }
    }
    let Some(slot) = (0..s.entries_per_part).find(|&i| {
        // SAFETY: exclusive lock held.
        unsafe { !(*s.entry(part, i)).used }
    }) else {
        return false;
    };
    // SAFETY: exclusive lock held; we take `need` chunks off the free list (count checked)
    // and copy at most CHUNK_SIZE bytes into each.
    unsafe {
        let ph = &mut *s.part(part);
        let mut first = NONE;
        let mut prev = NONE;
        let mut offset = 0;
        for _ in 0..need {
            let c = ph.free_chunk;
            ph.free_chunk = *s.next(part, c);
            ph.free_chunks -= 1;
            *s.next(part, c) = NONE;
            if prev == NONE {
                first = c;
            } else {
                *s.next(part, prev) = c;
            }
            prev = c;
            let len = (n.data.len() - offset).min(CHUNK_SIZE);
            ptr::copy_nonoverlapping(n.data.as_ptr().add(offset), s.chunk(part, c), len);
            offset += len;
        }
        let e = &mut *s.entry(part, slot);
        e.used = true;
        e.format = n.key.format as u8;
        e.userid = n.key.userid;
        e.dbid = n.key.dbid;
        e.key = n.key.hash;
        e.global_generation = n.global_generation;
        e.nrels = n.deps.len() as u32;
        e.rels = [RelDep::default(); MAX_RELS];
        e.rels[..n.deps.len()].copy_from_slice(n.deps);
        e.created = n.now;
        e.expires = n.expires;
        e.last_used.store(n.now, Ordering::Relaxed);
        e.hits.store(0, Ordering::Relaxed);
        e.len = n.data.len() as u32;
        e.first_chunk = first;
        e.text_len = preview(&mut e.text, n.text);
        e.params_len = preview(&mut e.params, n.params);
        ph.entries += 1;
        ph.bytes += n.data.len() as u64;
        s.hashes(part)[slot] = n.key.hash[0] | 1;
    }
    count(Counter::Stores);
    true
}

/// Drops every entry for which `drop_it(dbid, deps)` is true; returns how many.
pub fn invalidate(drop_it: impl Fn(u32, &[RelDep]) -> bool) -> u64 {
    let Some(s) = shared() else { return 0 };
    let mut n = 0;
    for part in 0..PARTITIONS {
        let _g = part_lock(s, part, true);
        for i in 0..s.entries_per_part {
            // SAFETY: exclusive lock held.
            let e = unsafe { &*s.entry(part, i) };
            if e.used && drop_it(e.dbid, &e.rels[..(e.nrels as usize).min(MAX_RELS)]) {
                s.free_entry(part, i);
                n += 1;
            }
        }
    }
    n
}

/// A cached entry as shown by `perf.cache_entries()`.
pub struct EntryInfo {
    pub format: Format,
    pub text: String,
    pub params: String,
    pub userid: u32,
    pub dbid: u32,
    pub bytes: u32,
    pub hits: u64,
    pub created: i64,
    pub expires: i64,
    pub relids: Vec<u32>,
    pub valid: bool,
}

/// Fixed-size copy of an entry's descriptive fields (no heap data: copied under the lock).
#[derive(Clone, Copy)]
struct RawInfo {
    format: u8,
    text: [u8; PREVIEW_TEXT],
    text_len: u16,
    params: [u8; PREVIEW_PARAMS],
    params_len: u16,
    rels: [u32; MAX_RELS],
    nrels: usize,
    userid: u32,
    dbid: u32,
    bytes: u32,
    hits: u64,
    created: i64,
    expires: i64,
    valid: bool,
}

/// Copies out every entry (one SHARED lock per partition into a buffer sized beforehand;
/// texts are decoded after the lock is released).
pub fn entries() -> Vec<EntryInfo> {
    let Some(s) = shared() else { return Vec::new() };
    let mut out = Vec::new();
    let mut raw: Vec<RawInfo> = Vec::with_capacity(s.entries_per_part);
    for part in 0..PARTITIONS {
        raw.clear();
        {
            let _g = part_lock(s, part, false);
            for i in 0..s.entries_per_part {
                // SAFETY: lock held; i < entries_per_part, so `raw` never exceeds capacity.
                let e = unsafe { &*s.entry(part, i) };
                if !e.used {
                    continue;
                }
                let nrels = (e.nrels as usize).min(MAX_RELS);
                let mut rels = [0u32; MAX_RELS];
                for (r, d) in rels.iter_mut().zip(&e.rels[..nrels]) {
                    *r = d.relid;
                }
                raw.push(RawInfo {
                    format: e.format,
                    text: e.text,
                    text_len: e.text_len,
                    params: e.params,
                    params_len: e.params_len,
                    rels,
                    nrels,
                    userid: e.userid,
                    dbid: e.dbid,
                    bytes: e.len,
                    hits: e.hits.load(Ordering::Relaxed),
                    created: e.created,
                    expires: e.expires,
                    valid: s.valid(e),
                });
            }
        }
        for r in &raw {
            let tl = (r.text_len as usize).min(PREVIEW_TEXT);
            let pl = (r.params_len as usize).min(PREVIEW_PARAMS);
            out.push(EntryInfo {
                format: Format::from_u8(r.format),
                text: String::from_utf8_lossy(&r.text[..tl]).into_owned(),
                params: String::from_utf8_lossy(&r.params[..pl]).into_owned(),
                userid: r.userid,
                dbid: r.dbid,
                bytes: r.bytes,
                hits: r.hits,
                created: r.created,
                expires: r.expires,
                relids: r.rels[..r.nrels].to_vec(),
                valid: r.valid,
            });
        }
    }
    out
}

/// (entries, bytes, capacity in bytes).
pub fn usage() -> (u64, u64, u64) {
    let Some(s) = shared() else { return (0, 0, 0) };
    let (mut n, mut b) = (0u64, 0u64);
    for part in 0..PARTITIONS {
        let _g = part_lock(s, part, false);
        // SAFETY: lock held.
        unsafe {
            n += (*s.part(part)).entries as u64;
            b += (*s.part(part)).bytes;
        }
    }
    (n, b, (PARTITIONS * s.chunks_per_part * CHUNK_SIZE) as u64)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn layout_scales_with_size() {
        let small = Layout::compute(1);
        let big = Layout::compute(64);
        assert!(small.chunks_per_part >= 4);
        assert_eq!(
            big.chunks_per_part * PARTITIONS * CHUNK_SIZE,
            64 * 1024 * 1024
        );
        assert!(big.bytes > 64 * 1024 * 1024);
    }

    #[test]
    fn formats_round_trip_and_are_named_after_their_sql_types() {
        for f in [Format::Jsonb, Format::JsonText] {
            assert_eq!(Format::from_u8(f as u8), f);
        }
        assert_eq!(Format::Jsonb.as_str(), "jsonb");
        assert_eq!(Format::JsonText.as_str(), "json");
        assert_ne!(Format::Jsonb.function(), Format::JsonText.function());
    }

    #[test]
    fn refusal_names_are_unique() {
        let mut names: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NREFUSALS);
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
