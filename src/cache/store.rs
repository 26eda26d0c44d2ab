//! Shared memory of the result cache: a partitioned entry store. Each entry records the
//! change generations (`crate::track`) of the relations it read; it is valid while none
//! of them moved.
//!
//! Invariants:
//! - Entries live in `PARTITIONS` partitions chosen by key hash, each with its own LWLock:
//!   a hit takes only its partition's lock SHARED (no global lock, no exclusive lock);
//!   storing, evicting and invalidating take one partition's lock EXCLUSIVE.
//! - Each partition is a `ring::Part`: variable-size records (an 80-byte header, the
//!   relations, the result bytes, the query/params preview) in a ring reclaimed at its tail
//!   (CLOCK: recently hit entries slide forward, the others are evicted; expired and
//!   invalidated ones go first), and a hash index of bucket chains sized from the capacity,
//!   so a hit is O(1) in the number of entries. The ring's invariants are in `ring.rs`.
//! - Nothing allocates or can fail while a lock is held: callers pass buffers sized before
//!   locking; copies are bounded by the entry's recorded length.
//! - Entry fields other than the atomics (`hits`, `touched`) change only under the EXCLUSIVE
//!   partition lock.

use core::ffi::CStr;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use once_cell::sync::OnceCell;
use pgrx::pg_sys;

use super::ring::{self, align8, Part, PREVIEW_PARAMS, PREVIEW_TEXT};
pub use super::ring::{RelDep, MAX_RELS};
use crate::pg::shmem::{self as pg_shmem, LwLockGuard};
use crate::track;

/// Entry-store partitions, each with its own LWLock.
pub const PARTITIONS: usize = 32;
const TRANCHE: &CStr = c"pg_perf_cache";
const SEGMENT: &CStr = c"pg_perf result cache";

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
    part_cap: u64,
    part_buckets: u64,
    counters: [AtomicU64; NCOUNTERS],
    refusals: [AtomicU64; NREFUSALS],
}

struct Shared {
    header: *mut Header,
    /// `PARTITIONS` partitions of `part_bytes` each (see `ring::Part`).
    parts: *mut u8,
    part_bytes: usize,
    part_buckets: usize,
    part_cap: usize,
    locks: *mut pg_sys::LWLockPadded,
}

// SAFETY: single-threaded backends; pointers into shared memory valid for the server's life;
// concurrent access is governed by the LWLocks and atomics described in the module docs.
unsafe impl Send for Shared {}
// SAFETY: as for Send.
unsafe impl Sync for Shared {}

static SHARED: OnceCell<Shared> = OnceCell::new();

/// Sizes derived from `perf.cache_size_mb`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Ring bytes per partition: the capacity for entries (headers included).
    pub part_cap: usize,
    /// Index buckets per partition (a power of two, one per ~128 bytes of ring).
    pub part_buckets: usize,
    /// Bytes of each partition's memory (header, index, ring).
    pub part_bytes: usize,
    /// Bytes of the whole segment.
    pub bytes: usize,
}

impl Layout {
    pub fn compute(size_mb: usize) -> Self {
        // At least 64 kB per partition, so any one result of a few kB fits.
        let part_cap = (size_mb * 1024 * 1024 / PARTITIONS).max(64 * 1024) & !7;
        let part_buckets = ring::buckets_for(part_cap);
        let part_bytes = Part::footprint(part_buckets, part_cap);
        let bytes = align8(size_of::<Header>()) + PARTITIONS * part_bytes;
        Layout {
            part_cap,
            part_buckets,
            part_bytes,
            bytes,
        }
    }

    fn from_gucs() -> Self {
        Layout::compute(crate::gucs::cache_size_mb().max(1) as usize)
    }
}

/// shmem_request: reserve the segment and the partition locks.
pub fn request() {
    let l = Layout::from_gucs();
    pg_shmem::request_segment(l.bytes, Some((TRANCHE, PARTITIONS)));
}

/// shmem_startup: attach, and initialize on first creation.
pub fn startup() {
    let l = Layout::from_gucs();
    let layout = move |base: *mut u8| Shared {
        header: base as *mut Header,
        // SAFETY: the partitions follow the header inside the segment (see `Layout`).
        parts: unsafe { base.add(align8(size_of::<Header>())) },
        part_bytes: l.part_bytes,
        part_buckets: l.part_buckets,
        part_cap: l.part_cap,
        locks: ptr::null_mut(),
    };
    let init = |base: *mut u8| {
        let shared = layout(base);
        // SAFETY: the header lies at the start of the zeroed segment; each partition is
        // initialized while the init lock keeps every other process out.
        unsafe {
            (*shared.header).part_cap = l.part_cap as u64;
            (*shared.header).part_buckets = l.part_buckets as u64;
            for p in 0..PARTITIONS {
                shared.part(p).init();
            }
        }
    };
    // SAFETY: called from the shmem_startup hook with the size requested in `request()`;
    // the initializer only writes into the zeroed segment.
    let (base, _) = unsafe { pg_shmem::attach_segment(SEGMENT, l.bytes, init) };
    // SAFETY: the tranche was requested in `request()`.
    let locks = unsafe { pg_shmem::named_tranche(TRANCHE) };
    let _ = SHARED.set(Shared {
        locks,
        ..layout(base)
    });
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
    /// Partition from `hash[0]`; the index bucket inside it comes from `hash[1]`.
    fn partition(&self) -> usize {
        (self.hash[0] >> 40) as usize % PARTITIONS
    }

    fn ring_key(&self) -> ring::Key {
        ring::Key {
            hash: self.hash,
            userid: self.userid,
            dbid: self.dbid,
            format: self.format as u8,
        }
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
    /// A view of partition `part`.
    ///
    /// # Safety
    /// The caller holds partition `part`'s lock while it uses the view: SHARED for reads,
    /// EXCLUSIVE for `&mut` methods (or is initializing the segment under the init lock).
    unsafe fn part(&self, part: usize) -> Part {
        // SAFETY: part < PARTITIONS at every call site (partition() is reduced modulo
        // PARTITIONS), so the block lies inside the segment, 8-aligned, sized by Layout.
        unsafe {
            Part::attach(
                self.parts.add((part % PARTITIONS) * self.part_bytes),
                self.part_buckets,
                self.part_cap,
            )
        }
    }

    /// Whether no generation the entry was computed at has moved.
    fn valid(&self, e: &ring::Entry) -> bool {
        e.global_generation == track::global_state().0
            && e.rels()
                .iter()
                .all(|d| track::relation_state(d.slot).0 == d.generation)
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
    // SAFETY: the partition's lock is held SHARED until `_g` drops; only `&self` methods.
    let p = unsafe { s.part(part) };
    let Some(e) = p.find(&key.ring_key()) else {
        return Lookup::Miss;
    };
    if e.expires != 0 && e.expires <= now {
        count(Counter::Expirations);
        return Lookup::Miss;
    }
    if !s.valid(e) {
        count(Counter::Invalidations);
        return Lookup::Miss;
    }
    if e.rels().iter().any(|d| written.contains(&d.slot)) {
        return Lookup::OwnWrites;
    }
    let data = e.data();
    if out.capacity() < data.len() {
        // The buffer is sized for perf.cache_max_entry_kb; an entry stored under a larger
        // setting is simply not served to this backend.
        return Lookup::Miss;
    }
    out.clear();
    out.extend_from_slice(data);
    e.touched.store(1, Ordering::Relaxed);
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

/// Stores a result, reclaiming the oldest not recently hit entries of its partition as
/// needed. Returns false if it cannot fit (larger than a partition, or too many relations).
pub fn store(n: &NewEntry) -> bool {
    let Some(s) = shared() else { return false };
    if n.deps.len() > MAX_RELS {
        return false;
    }
    let rec = ring::NewRecord {
        key: n.key.ring_key(),
        deps: n.deps,
        global_generation: n.global_generation,
        created: n.now,
        expires: n.expires,
        text: crate::pg::text::truncate_utf8(n.text, PREVIEW_TEXT).as_bytes(),
        params: crate::pg::text::truncate_utf8(n.params, PREVIEW_PARAMS).as_bytes(),
        data: n.data,
    };
    if rec.size() > s.part_cap {
        return false;
    }
    let now = n.now;
    let reclaimed = {
        let part = n.key.partition();
        let _g = part_lock(s, part, true);
        // SAFETY: the partition's lock is held EXCLUSIVE until `_g` drops.
        let mut p = unsafe { s.part(part) };
        p.insert(&rec, |e| (e.expires == 0 || e.expires > now) && s.valid(e))
    };
    let Some(r) = reclaimed else { return false };
    if r.evicted > 0 {
        // SAFETY: header is live; atomic.
        unsafe {
            (*s.header).counters[Counter::Evictions as usize]
                .fetch_add(r.evicted, Ordering::Relaxed)
        };
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
        // SAFETY: the partition's lock is held EXCLUSIVE until `_g` drops.
        let mut p = unsafe { s.part(part) };
        n += p.retain(|e| !drop_it(e.dbid, e.rels()));
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
    text_len: u8,
    params: [u8; PREVIEW_PARAMS],
    params_len: u8,
    rels: [u32; MAX_RELS],
    nrels: u8,
    userid: u32,
    dbid: u32,
    bytes: u32,
    hits: u64,
    created: i64,
    expires: i64,
    valid: bool,
}

impl RawInfo {
    fn of(s: &Shared, e: &ring::Entry) -> RawInfo {
        let mut r = RawInfo {
            format: e.format,
            text: [0; PREVIEW_TEXT],
            text_len: 0,
            params: [0; PREVIEW_PARAMS],
            params_len: 0,
            rels: [0; MAX_RELS],
            nrels: 0,
            userid: e.userid,
            dbid: e.dbid,
            bytes: e.data().len() as u32,
            hits: e.hits.load(Ordering::Relaxed),
            created: e.created,
            expires: e.expires,
            valid: s.valid(e),
        };
        let (t, p) = (e.text(), e.params());
        r.text[..t.len()].copy_from_slice(t);
        r.text_len = t.len() as u8;
        r.params[..p.len()].copy_from_slice(p);
        r.params_len = p.len() as u8;
        for (dst, d) in r.rels.iter_mut().zip(e.rels()) {
            *dst = d.relid;
            r.nrels += 1;
        }
        r
    }
}

/// Copies out every entry: per partition, the entry count is read under the SHARED lock,
/// the buffer sized without it, then the entries copied under the lock again (at most the
/// buffer's capacity: entries stored in between may be missed, as by any snapshot of a
/// running cache). Texts are decoded after the lock is released.
pub fn entries() -> Vec<EntryInfo> {
    let Some(s) = shared() else { return Vec::new() };
    let mut out = Vec::new();
    let mut raw: Vec<RawInfo> = Vec::new();
    for part in 0..PARTITIONS {
        raw.clear();
        let n = {
            let _g = part_lock(s, part, false);
            // SAFETY: the partition's lock is held SHARED.
            unsafe { s.part(part) }.entries() as usize
        };
        raw.reserve(n + 16);
        {
            let _g = part_lock(s, part, false);
            // SAFETY: the partition's lock is held SHARED; pushes stay within capacity.
            let p = unsafe { s.part(part) };
            p.for_each(|e| {
                if raw.len() < raw.capacity() {
                    raw.push(RawInfo::of(s, e));
                }
            });
        }
        for r in &raw {
            out.push(EntryInfo {
                format: Format::from_u8(r.format),
                text: String::from_utf8_lossy(&r.text[..r.text_len as usize]).into_owned(),
                params: String::from_utf8_lossy(&r.params[..r.params_len as usize]).into_owned(),
                userid: r.userid,
                dbid: r.dbid,
                bytes: r.bytes,
                hits: r.hits,
                created: r.created,
                expires: r.expires,
                relids: r.rels[..r.nrels as usize].to_vec(),
                valid: r.valid,
            });
        }
    }
    out
}

/// (entries, bytes they occupy in the rings (headers included), capacity in bytes).
pub fn usage() -> (u64, u64, u64) {
    let Some(s) = shared() else { return (0, 0, 0) };
    let (mut n, mut b) = (0u64, 0u64);
    for part in 0..PARTITIONS {
        let _g = part_lock(s, part, false);
        // SAFETY: the partition's lock is held SHARED.
        let p = unsafe { s.part(part) };
        n += p.entries();
        b += p.live_bytes();
    }
    (n, b, (PARTITIONS * s.part_cap) as u64)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn layout_scales_with_size() {
        let small = Layout::compute(1);
        let big = Layout::compute(64);
        assert!(small.part_cap >= 64 * 1024);
        assert_eq!(big.part_cap * PARTITIONS, 64 * 1024 * 1024);
        assert!(big.bytes > 64 * 1024 * 1024);
        // The index is a few percent of the capacity.
        assert!(big.bytes < 64 * 1024 * 1024 * 21 / 20 + 4096);
        // 400,000 small entries (perf.cached_json_text('SELECT $1::int', '[123456]'))
        // fit in the default 64 MB, with room for partitions filling unevenly.
        let small_entry = ring::record_size(0, 18, 14, 8);
        assert!(big.part_cap / small_entry * PARTITIONS >= 400_000 * 11 / 10);
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
