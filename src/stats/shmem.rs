//! The shared-memory statement table and the captured-plan pool.
//!
//! Layout (computed once from postmaster-context GUCs, identical in every process):
//! `Header | index cells [PARTITIONS × cells] | entries [PARTITIONS × per_part × stride]`,
//! and a second segment `PlanPoolHeader | plan slots [max_plans × plan_stride]`.
//!
//! Invariants:
//! - The table is split into `PARTITIONS` partitions by key hash, each with its own LWLock.
//!   Recording into an existing entry takes its partition lock SHARED plus the entry's
//!   spinlock, so there is no global lock and no exclusive lock on the hit path.
//! - Keys, texts, index cells and entry positions change only under the partition lock held
//!   EXCLUSIVE (insert, evict, reset); counters change only under the entry spinlock.
//! - Eviction runs inside one partition only, so it never stalls backends that record into
//!   other partitions.
//! - Nothing allocates, ereports or can panic while a lock is held: callers prepare buffers
//!   first, copy under the lock, and do all parsing/formatting after releasing it. Any path
//!   that could fail returns early before taking a lock.
//! - `Counters` and friends are `repr(C)` plain data (no pointers), so entries can be copied
//!   with `ptr::copy` and dumped to disk byte for byte.

use core::ffi::CStr;
use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use once_cell::sync::OnceCell;
use pgrx::pg_sys;

use super::dump;
use super::histogram;
use super::samples::{self, SAMPLE_BYTES, SAMPLE_SLOTS};
use crate::pg::shmem::{self as pg_shmem, spin_lock, spin_unlock, LwLockGuard};

/// Partitions of the statement table; each has its own LWLock.
pub const PARTITIONS: usize = 16;
/// Predicates remembered per statement (the first ones the plan walk finds).
pub const MAX_PREDICATES: usize = 16;
const TRANCHE: &CStr = c"pg_perf";
const STATS_SEGMENT: &CStr = c"pg_perf statements";
const PLANS_SEGMENT: &CStr = c"pg_perf plans";
/// Changes whenever the layout of `Counters`/`PredicateRec`/the stats file changes.
pub(super) const FORMAT_VERSION: u64 = 0x5045_5246_0000_0007;
/// Fraction of a full partition evicted at once (amortizes the exclusive lock).
const EVICT_FRACTION: f64 = 0.05;
/// Usage decays by this factor at every eviction in the partition, so old hot entries fade.
const USAGE_DECAY: f64 = 0.99;
/// One call adds 1 to usage, plus one per this many milliseconds of execution time: a rare
/// 10-second report is worth keeping as much as a thousand-call lookup.
const USAGE_MS_PER_POINT: f64 = 10.0;

/// Identity of a statement: same as pg_stat_statements' key.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StatKey {
    pub userid: u32,
    pub dbid: u32,
    pub queryid: i64,
    pub toplevel: bool,
}

impl StatKey {
    /// A well-mixed 64-bit hash (splitmix64 finalizer over the key fields).
    #[inline]
    pub fn hash(&self) -> u64 {
        let mut x = (self.queryid as u64)
            ^ ((self.userid as u64) << 32 | self.dbid as u64).rotate_left(17)
            ^ (self.toplevel as u64) << 63;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
}

/// What a predicate was used for in the plan.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PredicateKind {
    Filter = 1,
    IndexCond = 2,
    Join = 3,
    Sort = 4,
    Group = 5,
}

impl PredicateKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Filter,
            2 => Self::IndexCond,
            3 => Self::Join,
            4 => Self::Sort,
            5 => Self::Group,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::IndexCond => "index_cond",
            Self::Join => "join",
            Self::Sort => "sort",
            Self::Group => "group",
        }
    }
}

/// One column use found in a statement's plan.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PredicateRec {
    pub relid: u32,
    /// Operator (0 for sort/group keys).
    pub opno: u32,
    /// Function wrapped around the column (`lower(email)`), 0 for a plain column.
    pub funcid: u32,
    pub attnum: i16,
    /// A `PredicateKind` as u8 (0 = unused slot).
    pub kind: u8,
    /// Predicates from the same plan node share a group: they are AND-ed (a column set).
    pub group: u8,
    /// Planner's fraction of the table's rows that pass this node's quals (-1 unknown).
    pub est_selectivity: f32,
    /// Measured fraction when the run was instrumented (-1 unknown).
    pub actual_selectivity: f32,
    /// Comparison against a constant/parameter (not another column).
    pub with_constant: bool,
    pub _pad: [u8; 3],
}

/// Per-statement counters. Plain data: copied out under the spinlock, dumped to disk as is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    pub calls: i64,
    pub errors: i64,
    pub rows: i64,
    pub total_time: f64,
    pub min_time: f64,
    pub max_time: f64,
    pub mean_time: f64,
    /// Welford's running sum of squared deviations (stddev = sqrt(m2 / calls)).
    pub m2_time: f64,
    /// Plans made for this statement and their total time (with perf.track_planning).
    pub plans: i64,
    pub total_plan_time: f64,
    pub buffers: BufferDelta,
    pub wal: WalDelta,
    pub slow_calls: i64,
    pub usage: f64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Execution time of the run whose plan is in the plan pool (0 = none).
    pub plan_ms: f64,
    /// The captured plan came from an instrumented run (actual rows).
    pub plan_analyzed: bool,
    pub predicates_captured: bool,
    pub npredicates: u8,
    pub _pad: [u8; 5],
    pub histogram: [u64; histogram::BUCKETS],
    pub predicates: [PredicateRec; MAX_PREDICATES],
}

impl Counters {
    fn new(now: i64) -> Self {
        Counters {
            calls: 0,
            errors: 0,
            rows: 0,
            total_time: 0.0,
            min_time: 0.0,
            max_time: 0.0,
            mean_time: 0.0,
            m2_time: 0.0,
            plans: 0,
            total_plan_time: 0.0,
            buffers: BufferDelta::default(),
            wal: WalDelta::default(),
            slow_calls: 0,
            usage: 0.0,
            first_seen: now,
            last_seen: now,
            plan_ms: 0.0,
            plan_analyzed: false,
            predicates_captured: false,
            npredicates: 0,
            _pad: [0; 5],
            histogram: [0; histogram::BUCKETS],
            predicates: [PredicateRec::default(); MAX_PREDICATES],
        }
    }

    /// Folds one planning run into the counters.
    #[inline]
    fn add_planning(&mut self, ms: f64, now: i64) {
        self.plans += 1;
        self.total_plan_time += ms;
        self.last_seen = now;
    }

    /// Folds one finished execution into the counters.
    #[inline]
    fn add_execution(&mut self, s: &ExecSample, slow_ms: f64) {
        if s.failed {
            self.errors += 1;
            self.last_seen = s.now;
            return;
        }
        let x = s.total_ms;
        self.calls += 1;
        if self.calls == 1 {
            self.min_time = x;
            self.max_time = x;
        } else {
            self.min_time = self.min_time.min(x);
            self.max_time = self.max_time.max(x);
        }
        let delta = x - self.mean_time;
        self.mean_time += delta / self.calls as f64;
        self.m2_time += delta * (x - self.mean_time);
        self.total_time += x;
        self.rows += s.rows;
        self.buffers.add(&s.buffers);
        self.wal.add(&s.wal);
        if slow_ms >= 0.0 && x >= slow_ms {
            self.slow_calls += 1;
        }
        self.usage += 1.0 + x / USAGE_MS_PER_POINT;
        self.last_seen = s.now;
        histogram::record(&mut self.histogram, x);
    }
}

/// Buffer counters: of one execution, or summed over a statement's executions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BufferDelta {
    pub shared_blks_hit: i64,
    pub shared_blks_read: i64,
    pub shared_blks_dirtied: i64,
    pub shared_blks_written: i64,
    pub local_blks_hit: i64,
    pub local_blks_read: i64,
    pub local_blks_dirtied: i64,
    pub local_blks_written: i64,
    pub temp_blks_read: i64,
    pub temp_blks_written: i64,
    pub blk_read_ms: f64,
    pub blk_write_ms: f64,
}

impl BufferDelta {
    /// Accumulates PostgreSQL's buffer usage counters with `sign` = -1 when a measured
    /// interval starts and +1 when it ends: the sum is the interval's usage, with no copy of
    /// the counters kept in between.
    #[inline]
    pub fn accumulate(&mut self, u: &pg_sys::BufferUsage, sign: i64) {
        let ms = |t: &pg_sys::instr_time| t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6;
        self.shared_blks_hit += sign * u.shared_blks_hit;
        self.shared_blks_read += sign * u.shared_blks_read;
        self.shared_blks_dirtied += sign * u.shared_blks_dirtied;
        self.shared_blks_written += sign * u.shared_blks_written;
        self.local_blks_hit += sign * u.local_blks_hit;
        self.local_blks_read += sign * u.local_blks_read;
        self.local_blks_dirtied += sign * u.local_blks_dirtied;
        self.local_blks_written += sign * u.local_blks_written;
        self.temp_blks_read += sign * u.temp_blks_read;
        self.temp_blks_written += sign * u.temp_blks_written;
        // I/O timings are zero unless track_io_timing is on: skip the float work then.
        if u.blk_read_time.tv_sec != 0 || u.blk_read_time.tv_nsec != 0 {
            self.blk_read_ms += sign as f64 * ms(&u.blk_read_time);
        }
        if u.blk_write_time.tv_sec != 0 || u.blk_write_time.tv_nsec != 0 {
            self.blk_write_ms += sign as f64 * ms(&u.blk_write_time);
        }
    }

    #[inline]
    fn add(&mut self, o: &BufferDelta) {
        self.shared_blks_hit += o.shared_blks_hit;
        self.shared_blks_read += o.shared_blks_read;
        self.shared_blks_dirtied += o.shared_blks_dirtied;
        self.shared_blks_written += o.shared_blks_written;
        self.local_blks_hit += o.local_blks_hit;
        self.local_blks_read += o.local_blks_read;
        self.local_blks_dirtied += o.local_blks_dirtied;
        self.local_blks_written += o.local_blks_written;
        self.temp_blks_read += o.temp_blks_read;
        self.temp_blks_written += o.temp_blks_written;
        self.blk_read_ms += o.blk_read_ms;
        self.blk_write_ms += o.blk_write_ms;
    }
}

/// WAL counters: of one execution, or summed over a statement's executions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WalDelta {
    pub records: i64,
    pub fpi: i64,
    pub bytes: u64,
}

impl WalDelta {
    /// Like [`BufferDelta::accumulate`] for PostgreSQL's WAL usage counters.
    #[inline]
    pub fn accumulate(&mut self, u: &pg_sys::WalUsage, sign: i64) {
        self.records += sign * u.wal_records;
        self.fpi += sign * u.wal_fpi;
        self.bytes = self
            .bytes
            .wrapping_add((sign as u64).wrapping_mul(u.wal_bytes));
    }

    #[inline]
    fn add(&mut self, o: &WalDelta) {
        self.records += o.records;
        self.fpi += o.fpi;
        self.bytes = self.bytes.wrapping_add(o.bytes);
    }
}

/// One finished (or failed) execution to fold into a statement's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecSample {
    pub total_ms: f64,
    pub rows: i64,
    pub buffers: BufferDelta,
    pub wal: WalDelta,
    pub failed: bool,
    pub now: i64,
}

/// What the recording backend should do next for this statement (decided under the lock,
/// acted upon after releasing it).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordOutcome {
    pub found: bool,
    pub predicates_needed: bool,
    /// Milliseconds of the run whose plan is stored (0 = none) and whether it had actuals.
    pub plan_ms: f64,
    pub plan_analyzed: bool,
    /// The statement is due for a sample of its values (`perf.capture_sample_values`).
    pub sample_due: bool,
}

/// A statement's sample values (see `samples`): up to `SAMPLE_SLOTS` distinct samples with
/// how many captures saw each. Read and written only under the entry's spinlock; not in
/// the stats file (constants stay out of files; they are captured again after a restart).
///
/// Capture schedule: `countdown` executions pass between two captures (the hot path
/// decrements it under the spinlock it already holds); at 0 the statement is due, and
/// the next run that can show its values stores them and draws the next gap
/// (`samples::next_gap`: about calls/8, so ~8·ln(calls) captures in a statement's life).
#[repr(C)]
#[derive(Clone, Copy)]
struct SampleSlots {
    countdown: u32,
    n: u8,
    /// The statement has no values at all (no constants, no parameters): never due.
    none: bool,
    _pad: [u8; 2],
    counts: [u32; SAMPLE_SLOTS],
    lens: [u16; SAMPLE_SLOTS],
    bytes: [[u8; SAMPLE_BYTES]; SAMPLE_SLOTS],
}

impl SampleSlots {
    const EMPTY: SampleSlots = SampleSlots {
        countdown: 0,
        n: 0,
        none: false,
        _pad: [0; 2],
        counts: [0; SAMPLE_SLOTS],
        lens: [0; SAMPLE_SLOTS],
        bytes: [[0; SAMPLE_BYTES]; SAMPLE_SLOTS],
    };

    /// One execution: true when a sample is due (a couple of comparisons otherwise).
    #[inline]
    fn tick(&mut self) -> bool {
        if self.none {
            return false;
        }
        if self.countdown > 1 {
            self.countdown -= 1;
            false
        } else {
            self.countdown = 0;
            true
        }
    }

    /// Keeps `values` (an encoded sample): counts it again if already kept, else takes a
    /// free slot or the least counted one (`random` breaks ties).
    fn keep(&mut self, values: &[u8], random: u64) {
        let n = self.n as usize;
        for i in 0..n {
            if &self.bytes[i][..self.lens[i] as usize] == values {
                self.counts[i] = self.counts[i].saturating_add(1);
                return;
            }
        }
        let i = if n < SAMPLE_SLOTS {
            self.n += 1;
            n
        } else {
            let start = (random % SAMPLE_SLOTS as u64) as usize;
            (0..SAMPLE_SLOTS)
                .map(|k| (start + k) % SAMPLE_SLOTS)
                .min_by_key(|&i| self.counts[i])
                .unwrap_or(start)
        };
        let len = values.len().min(SAMPLE_BYTES);
        self.bytes[i][..len].copy_from_slice(&values[..len]);
        self.lens[i] = len as u16;
        self.counts[i] = 1;
    }
}

/// What a run showed of its values, for [`store_sample`].
#[derive(Clone, Copy, Debug)]
pub enum SampleCapture<'a> {
    /// An encoded sample (`samples::encode`).
    Values(&'a [u8]),
    /// The statement has no constants and no parameters.
    NoValues,
    /// The values could not be kept (too long, or not printable safely): try later.
    Skip,
}

#[repr(C)]
struct Header {
    format: u64,
    per_part: u32,
    cells_per_part: u32,
    stride: u32,
    text_cap: u32,
    /// Bumped by every eviction and reset: backends drop their caches of "known" entries.
    generation: AtomicU64,
    evictions: AtomicU64,
    stats_reset: AtomicU64,
    used: [u32; PARTITIONS],
}

/// Index cell: `slot_plus_one == 0` means empty.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cell {
    tag: u32,
    slot_plus_one: u32,
}

#[repr(C)]
struct EntryHeader {
    key: StatKey,
    hash: u64,
    /// Spinlock over `counters` (0 free, 1 held): taken only for a few dozen instructions
    /// of arithmetic that cannot fail, like PostgreSQL's own slock_t, but without an FFI call.
    mutex: AtomicU32,
    text_len: u32,
    counters: Counters,
    samples: SampleSlots,
    // followed by `text_cap` bytes of normalized query text
}

#[repr(C)]
struct PlanPoolHeader {
    nslots: u32,
    text_cap: u32,
    stride: u32,
}

#[repr(C)]
struct PlanSlotHeader {
    key: StatKey,
    used: bool,
    analyzed: bool,
    exec_ms: f64,
    captured_at: i64,
    plan_len: u32,
    params_len: u32,
    sample_len: u32,
    // followed by `text_cap` bytes: plan JSON, parameter text, then the statement's own
    // text with its constants (what the index advisor plans to see real selectivities)
}

/// Process-local view of the shared segments (raw pointers into shared memory).
struct Shared {
    header: *mut Header,
    cells: *mut Cell,
    entries: *mut u8,
    locks: *mut pg_sys::LWLockPadded,
    plans: *mut PlanPoolHeader,
    per_part: usize,
    cells_per_part: usize,
    stride: usize,
    text_cap: usize,
}

// SAFETY: Postgres backends are single-threaded; the pointers refer to shared memory that
// lives as long as the postmaster, and all concurrent access goes through LWLocks/spinlocks.
unsafe impl Send for Shared {}
// SAFETY: as for Send.
unsafe impl Sync for Shared {}

static SHARED: OnceCell<Shared> = OnceCell::new();

/// Sizes derived from the GUCs; pure arithmetic so it can be checked in tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub per_part: usize,
    pub cells_per_part: usize,
    pub stride: usize,
    pub text_cap: usize,
    pub stats_bytes: usize,
    pub plan_slots: usize,
    pub plan_text_cap: usize,
    pub plan_stride: usize,
    pub plan_bytes: usize,
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl Layout {
    pub fn compute(
        max_statements: usize,
        text_cap: usize,
        plan_slots: usize,
        plan_cap: usize,
    ) -> Self {
        let per_part = max_statements.div_ceil(PARTITIONS).max(4);
        // Linear probing stays short at load factor <= 0.5.
        let cells_per_part = (per_part * 2).next_power_of_two();
        let stride = align8(size_of::<EntryHeader>() + text_cap);
        let stats_bytes = align8(size_of::<Header>())
            + PARTITIONS * cells_per_part * size_of::<Cell>()
            + PARTITIONS * per_part * stride;
        let plan_stride = align8(size_of::<PlanSlotHeader>() + plan_cap);
        let plan_bytes = align8(size_of::<PlanPoolHeader>()) + plan_slots * plan_stride;
        Layout {
            per_part,
            cells_per_part,
            stride,
            text_cap,
            stats_bytes,
            plan_slots,
            plan_text_cap: plan_cap,
            plan_stride,
            plan_bytes,
        }
    }

    fn from_gucs() -> Self {
        use crate::gucs;
        Layout::compute(
            gucs::max_statements().max(1) as usize,
            gucs::max_query_text().max(1) as usize,
            gucs::max_plans().max(0) as usize,
            gucs::max_plan_size().max(1) as usize,
        )
    }
}

/// Called from the shmem_request hook: reserve our segments and locks.
pub fn request() {
    let l = Layout::from_gucs();
    pg_shmem::request_segment(
        l.stats_bytes + l.plan_bytes,
        Some((TRANCHE, PARTITIONS + 1)),
    );
}

/// Called from the shmem_startup hook: attach (and in the postmaster, initialize and load the
/// saved statistics).
pub fn startup() {
    let l = Layout::from_gucs();
    let init_stats = |base: *mut u8| {
        // SAFETY: `base` is the zeroed segment of `stats_bytes` bytes, 8-aligned, and the
        // init lock keeps every other process out while it is written.
        unsafe {
            ptr::write(
                base as *mut Header,
                Header {
                    format: FORMAT_VERSION,
                    per_part: l.per_part as u32,
                    cells_per_part: l.cells_per_part as u32,
                    stride: l.stride as u32,
                    text_cap: l.text_cap as u32,
                    generation: AtomicU64::new(1),
                    evictions: AtomicU64::new(0),
                    stats_reset: AtomicU64::new(pg_sys::GetCurrentTimestamp() as u64),
                    used: [0; PARTITIONS],
                },
            )
        }
    };
    let init_plans = |base: *mut u8| {
        let plans = base as *mut PlanPoolHeader;
        // SAFETY: `base` is the zeroed plan segment, large enough for its header.
        unsafe {
            (*plans).nslots = l.plan_slots as u32;
            (*plans).text_cap = l.plan_text_cap as u32;
            (*plans).stride = l.plan_stride as u32;
        }
    };
    // SAFETY: called from the shmem_startup hook; the segments are sized exactly as
    // requested in `request()` from the same postmaster-context GUCs, and the initializers
    // only write into them.
    let shared = unsafe {
        let (base, stats_found) =
            pg_shmem::attach_segment(STATS_SEGMENT, l.stats_bytes, init_stats);
        let (plans, _) = pg_shmem::attach_segment(PLANS_SEGMENT, l.plan_bytes, init_plans);
        let header = base as *mut Header;
        let cells = base.add(align8(size_of::<Header>())) as *mut Cell;
        let entries = (cells as *mut u8).add(PARTITIONS * l.cells_per_part * size_of::<Cell>());
        let locks = pg_shmem::named_tranche(TRANCHE);
        (
            Shared {
                header,
                cells,
                entries,
                locks,
                plans: plans as *mut PlanPoolHeader,
                per_part: l.per_part,
                cells_per_part: l.cells_per_part,
                stride: l.stride,
                text_cap: l.text_cap,
            },
            stats_found,
        )
    };
    let (shared, stats_found) = shared;
    let _ = SHARED.set(shared);
    // SAFETY: plain read of a postmaster global.
    let in_postmaster = unsafe { !pg_sys::IsUnderPostmaster };
    if in_postmaster {
        if !stats_found {
            dump::load_from_disk();
        }
        // SAFETY: registering a process-exit callback in the postmaster, as core modules do.
        unsafe { pg_sys::on_shmem_exit(Some(dump::dump_on_exit), pg_sys::Datum::from(0)) };
    }
}

/// The shared table, if the library was preloaded and shared memory attached.
#[inline]
fn shared() -> Option<&'static Shared> {
    SHARED.get()
}

/// True when the statement table is available in this process.
pub fn available() -> bool {
    SHARED.get().is_some()
}

/// Current generation: changes whenever entries may have disappeared.
#[inline]
pub fn generation() -> u64 {
    match shared() {
        // SAFETY: header points into live shared memory; the field is atomic.
        Some(s) => unsafe { (*s.header).generation.load(Ordering::Relaxed) },
        None => 0,
    }
}

impl Shared {
    #[inline]
    fn partition_of(hash: u64) -> usize {
        (hash >> 59) as usize % PARTITIONS
    }

    #[inline]
    fn lock(&self, part: usize) -> *mut pg_sys::LWLock {
        // SAFETY: `locks` has PARTITIONS + 1 elements (see `request`).
        unsafe { &raw mut (*self.locks.add(part)).lock }
    }

    #[inline]
    fn plan_lock(&self) -> *mut pg_sys::LWLock {
        self.lock(PARTITIONS)
    }

    #[inline]
    fn cell(&self, part: usize, i: usize) -> *mut Cell {
        // SAFETY: i < cells_per_part, part < PARTITIONS by construction at every call site.
        unsafe { self.cells.add(part * self.cells_per_part + i) }
    }

    #[inline]
    fn entry(&self, part: usize, slot: usize) -> *mut EntryHeader {
        // SAFETY: slot < per_part, part < PARTITIONS at every call site.
        unsafe {
            self.entries
                .add((part * self.per_part + slot) * self.stride) as *mut EntryHeader
        }
    }

    #[inline]
    fn text_ptr(e: *mut EntryHeader) -> *mut u8 {
        // SAFETY: the text area directly follows the header inside the same stride.
        unsafe { (e as *mut u8).add(size_of::<EntryHeader>()) }
    }

    #[inline]
    fn used(&self, part: usize) -> usize {
        // SAFETY: read under the partition lock by every caller.
        unsafe { (*self.header).used[part] as usize }
    }

    /// Finds `key` in its partition. Caller holds the partition lock (any mode).
    /// Returns (cell index, slot).
    #[inline]
    fn find(&self, part: usize, key: &StatKey, hash: u64) -> Option<(usize, usize)> {
        let mask = self.cells_per_part - 1;
        let tag = hash as u32;
        let mut i = (hash as usize) & mask;
        for _ in 0..self.cells_per_part {
            // SAFETY: i <= mask < cells_per_part.
            let c = unsafe { *self.cell(part, i) };
            if c.slot_plus_one == 0 {
                return None;
            }
            if c.tag == tag {
                let slot = (c.slot_plus_one - 1) as usize;
                // SAFETY: slot < used <= per_part (maintained by insert/remove).
                if unsafe { (*self.entry(part, slot)).key == *key } {
                    return Some((i, slot));
                }
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Removes the index cell at `i` with backward-shift deletion (no tombstones).
    /// Caller holds the partition lock EXCLUSIVE.
    fn remove_cell(&self, part: usize, mut i: usize) {
        let mask = self.cells_per_part - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            // SAFETY: indices masked into range; exclusive lock held.
            let cj = unsafe { *self.cell(part, j) };
            if cj.slot_plus_one == 0 {
                break;
            }
            // SAFETY: as above.
            let home = unsafe { (*self.entry(part, (cj.slot_plus_one - 1) as usize)).hash }
                as usize
                & mask;
            // Move cj back to i unless its home lies cyclically in (i, j].
            let in_range = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !in_range {
                // SAFETY: as above.
                unsafe { *self.cell(part, i) = cj };
                i = j;
            }
        }
        // SAFETY: as above.
        unsafe {
            *self.cell(part, i) = Cell {
                tag: 0,
                slot_plus_one: 0,
            }
        };
    }

    /// Removes the entry in `slot` (dense array: the last entry moves into the hole).
    /// Caller holds the partition lock EXCLUSIVE.
    fn remove_entry(&self, part: usize, slot: usize) {
        // SAFETY: exclusive lock held; slot < used.
        let (key, hash) = unsafe {
            let e = self.entry(part, slot);
            ((*e).key, (*e).hash)
        };
        if let Some((ci, _)) = self.find(part, &key, hash) {
            self.remove_cell(part, ci);
        }
        let last = self.used(part) - 1;
        if slot != last {
            // SAFETY: distinct slots in the same array; exclusive lock held, so no backend
            // holds either entry's spinlock (spinlocks are only taken under a shared lock).
            unsafe {
                let (lk, lh) = {
                    let e = self.entry(part, last);
                    ((*e).key, (*e).hash)
                };
                ptr::copy_nonoverlapping(
                    self.entry(part, last) as *const u8,
                    self.entry(part, slot) as *mut u8,
                    self.stride,
                );
                if let Some((ci, _)) = self.find(part, &lk, lh) {
                    (*self.cell(part, ci)).slot_plus_one = slot as u32 + 1;
                }
            }
        }
        // SAFETY: exclusive lock held.
        unsafe { (*self.header).used[part] = last as u32 };
    }

    /// Evicts the least valuable `EVICT_FRACTION` of a full partition. `scratch` has room
    /// for `per_part` values and was allocated before the lock was taken.
    fn evict(&self, part: usize, scratch: &mut [f64]) {
        let used = self.used(part);
        if used == 0 {
            return;
        }
        let n = used.min(scratch.len());
        for (slot, s) in scratch.iter_mut().enumerate().take(n) {
            // SAFETY: exclusive lock held; slot < used.
            unsafe {
                let e = self.entry(part, slot);
                (*e).counters.usage *= USAGE_DECAY;
                *s = (*e).counters.usage;
            }
        }
        let victims = ((n as f64 * EVICT_FRACTION).ceil() as usize).clamp(1, n);
        let (_, threshold, _) =
            scratch[..n].select_nth_unstable_by(victims - 1, |a, b| a.total_cmp(b));
        let threshold = *threshold;
        let mut removed = 0;
        let mut slot = 0;
        while slot < self.used(part) && removed < victims {
            // SAFETY: exclusive lock held; slot < used.
            let usage = unsafe { (*self.entry(part, slot)).counters.usage };
            if usage <= threshold {
                self.remove_entry(part, slot);
                removed += 1;
                // the last entry moved into `slot`: look at it next
            } else {
                slot += 1;
            }
        }
        // SAFETY: header is live; atomics.
        unsafe {
            (*self.header)
                .evictions
                .fetch_add(removed as u64, Ordering::Relaxed);
            (*self.header).generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Inserts a new entry (caller holds the partition lock EXCLUSIVE and checked absence).
    fn insert(&self, part: usize, key: &StatKey, hash: u64, text: &[u8], now: i64) -> usize {
        let slot = self.used(part);
        let mask = self.cells_per_part - 1;
        let len = text.len().min(self.text_cap);
        // SAFETY: exclusive lock held; slot < per_part because the caller evicted if full.
        unsafe {
            let e = self.entry(part, slot);
            ptr::write(
                e,
                EntryHeader {
                    key: *key,
                    hash,
                    mutex: AtomicU32::new(0),
                    text_len: len as u32,
                    counters: Counters::new(now),
                    samples: SampleSlots::EMPTY,
                },
            );
            ptr::copy_nonoverlapping(text.as_ptr(), Self::text_ptr(e), len);
            let mut i = (hash as usize) & mask;
            while (*self.cell(part, i)).slot_plus_one != 0 {
                i = (i + 1) & mask;
            }
            *self.cell(part, i) = Cell {
                tag: hash as u32,
                slot_plus_one: slot as u32 + 1,
            };
            (*self.header).used[part] = slot as u32 + 1;
        }
        slot
    }

    /// Runs `f` on the entry's counters under its spinlock. Caller holds the partition lock.
    #[inline]
    fn with_counters<R>(&self, part: usize, slot: usize, f: impl FnOnce(&mut Counters) -> R) -> R {
        let e = self.entry(part, slot);
        // SAFETY: the partition lock keeps the entry in place; the spinlock serializes counter
        // updates. `f` is plain arithmetic on plain data: it cannot error or allocate.
        unsafe {
            spin_lock(&(*e).mutex);
            let r = f(&mut (*e).counters);
            spin_unlock(&(*e).mutex);
            r
        }
    }
}

fn outcome_of(c: &Counters, sample_due: bool) -> RecordOutcome {
    RecordOutcome {
        found: true,
        predicates_needed: !c.predicates_captured,
        plan_ms: c.plan_ms,
        plan_analyzed: c.plan_analyzed,
        sample_due,
    }
}

impl Shared {
    /// Folds `sample` into the entry in `slot` under its spinlock; a successful run also
    /// ticks the sample countdown. Caller holds the partition lock.
    #[inline]
    fn add_execution(
        &self,
        part: usize,
        slot: usize,
        sample: &ExecSample,
        slow_ms: f64,
    ) -> RecordOutcome {
        let e = self.entry(part, slot);
        // SAFETY: as in `with_counters`: plain arithmetic on plain data under the spinlock.
        unsafe {
            spin_lock(&(*e).mutex);
            (*e).counters.add_execution(sample, slow_ms);
            let due = !sample.failed && (*e).samples.tick();
            let outcome = outcome_of(&(*e).counters, due);
            spin_unlock(&(*e).mutex);
            outcome
        }
    }
}

/// Folds `sample` into the entry for `key` if it exists. The hot path: partition lock
/// SHARED + entry spinlock, no allocation.
#[inline]
pub fn record_existing(
    key: &StatKey,
    hash: u64,
    sample: &ExecSample,
    slow_ms: f64,
) -> RecordOutcome {
    let Some(s) = shared() else {
        return RecordOutcome::default();
    };
    let part = Shared::partition_of(hash);
    // SAFETY: lock pointer is valid for the life of the server.
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
    match s.find(part, key, hash) {
        Some((_, slot)) => s.add_execution(part, slot, sample, slow_ms),
        None => RecordOutcome::default(),
    }
}

/// Creates the entry for `key` with `text` (if still absent) and folds `sample` into it.
/// Slow path: allocates its scratch buffer before taking the partition lock EXCLUSIVE.
pub fn record_new(
    key: &StatKey,
    hash: u64,
    text: &str,
    sample: &ExecSample,
    slow_ms: f64,
) -> RecordOutcome {
    let Some(s) = shared() else {
        return RecordOutcome::default();
    };
    let part = Shared::partition_of(hash);
    let mut scratch = vec![0.0f64; s.per_part];
    // SAFETY: lock pointer is valid for the life of the server.
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), true) };
    let slot = match s.find(part, key, hash) {
        Some((_, slot)) => slot,
        None => {
            if s.used(part) >= s.per_part {
                s.evict(part, &mut scratch);
            }
            s.insert(part, key, hash, text.as_bytes(), sample.now)
        }
    };
    s.add_execution(part, slot, sample, slow_ms)
}

/// Stores what a run due for a sample showed of its values (see [`SampleSlots`]), and
/// draws the statement's next gap with `random`.
pub fn store_sample(key: &StatKey, hash: u64, capture: SampleCapture, random: u64) {
    let Some(s) = shared() else { return };
    let part = Shared::partition_of(hash);
    // SAFETY: lock pointer is valid for the life of the server.
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
    let Some((_, slot)) = s.find(part, key, hash) else {
        return;
    };
    let e = s.entry(part, slot);
    // SAFETY: the partition lock keeps the entry in place; under its spinlock we copy at
    // most SAMPLE_BYTES bytes and do arithmetic: nothing can fail or allocate.
    unsafe {
        spin_lock(&(*e).mutex);
        let st = &mut (*e).samples;
        match capture {
            SampleCapture::NoValues if st.n == 0 => st.none = true,
            SampleCapture::Values(v) if !v.is_empty() && v.len() <= SAMPLE_BYTES => {
                st.keep(v, random)
            }
            _ => {}
        }
        st.countdown = samples::next_gap((*e).counters.calls, random);
        spin_unlock(&(*e).mutex);
    }
}

/// One statement's kept samples: (captures that saw it, encoded values) each.
pub type StatementSamples = (StatKey, Vec<(u32, Vec<u8>)>);

/// Copies the samples of every entry that `keep` accepts and has some. Per partition: one
/// SHARED lock, a copy of each entry's sample slots under its spinlock; decoding happens
/// after the lock is released.
pub fn samples(keep: impl Fn(&StatKey) -> bool) -> Vec<StatementSamples> {
    let Some(s) = shared() else { return Vec::new() };
    let mut out = Vec::new();
    // Allocated before any lock is taken, reused for every partition.
    let mut buf: Vec<SampleSlots> = vec![SampleSlots::EMPTY; s.per_part];
    let mut keys: Vec<StatKey> = Vec::with_capacity(s.per_part);
    for part in 0..PARTITIONS {
        keys.clear();
        {
            // SAFETY: lock pointer valid.
            let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
            let used = s.used(part).min(s.per_part);
            for slot in 0..used {
                let e = s.entry(part, slot);
                // SAFETY: slot < used; the key is immutable under the shared lock; the
                // spinlock gives a consistent copy of the slots (plain data) into `buf`,
                // which has room for every entry of a partition (keys.len() < per_part).
                unsafe {
                    let key = (*e).key;
                    if !keep(&key) {
                        continue;
                    }
                    let dst = &mut buf[keys.len()];
                    spin_lock(&(*e).mutex);
                    let n = (*e).samples.n;
                    if n > 0 {
                        *dst = (*e).samples;
                    }
                    spin_unlock(&(*e).mutex);
                    if n > 0 {
                        keys.push(key);
                    }
                }
            }
        }
        for (k, key) in keys.iter().enumerate() {
            let st = &buf[k];
            let n = (st.n as usize).min(SAMPLE_SLOTS);
            let list = (0..n)
                .map(|i| {
                    let len = (st.lens[i] as usize).min(SAMPLE_BYTES);
                    (st.counts[i], st.bytes[i][..len].to_vec())
                })
                .collect();
            out.push((*key, list));
        }
    }
    out
}

/// Adds one planning run to the entry for `key`, creating it (with `text`) if needed.
pub fn record_planning(key: &StatKey, hash: u64, ms: f64, now: i64, text: impl FnOnce() -> String) {
    let Some(s) = shared() else { return };
    let part = Shared::partition_of(hash);
    {
        // SAFETY: lock pointer is valid for the life of the server.
        let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
        if let Some((_, slot)) = s.find(part, key, hash) {
            s.with_counters(part, slot, |c| c.add_planning(ms, now));
            return;
        }
    }
    let text = text();
    let mut scratch = vec![0.0f64; s.per_part];
    // SAFETY: lock pointer is valid for the life of the server.
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), true) };
    let slot = match s.find(part, key, hash) {
        Some((_, slot)) => slot,
        None => {
            if s.used(part) >= s.per_part {
                s.evict(part, &mut scratch);
            }
            s.insert(part, key, hash, text.as_bytes(), now)
        }
    };
    s.with_counters(part, slot, |c| c.add_planning(ms, now));
}

/// Stores the predicates found in the statement's plan (first writer wins).
pub fn store_predicates(key: &StatKey, hash: u64, preds: &[PredicateRec]) {
    let Some(s) = shared() else { return };
    let part = Shared::partition_of(hash);
    // SAFETY: lock pointer is valid for the life of the server.
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
    if let Some((_, slot)) = s.find(part, key, hash) {
        s.with_counters(part, slot, |c| {
            if c.predicates_captured {
                return;
            }
            let n = preds.len().min(MAX_PREDICATES);
            c.predicates[..n].copy_from_slice(&preds[..n]);
            c.npredicates = n as u8;
            c.predicates_captured = true;
        });
    }
}

/// A consistent copy of one entry, taken out of shared memory.
#[derive(Clone, Debug)]
pub struct EntrySnapshot {
    pub key: StatKey,
    pub counters: Counters,
    pub text: String,
}

/// Copies every entry that `keep` accepts. Per partition: one SHARED lock, a memcpy per
/// entry under its spinlock; texts are decoded after the lock is released.
pub fn snapshot(keep: impl Fn(&StatKey) -> bool) -> Vec<EntrySnapshot> {
    let Some(s) = shared() else { return Vec::new() };
    let mut out = Vec::new();
    let mut buf = vec![0u8; s.per_part * s.stride];
    for part in 0..PARTITIONS {
        let mut copied = Vec::with_capacity(s.per_part);
        {
            // SAFETY: lock pointer valid; we copy plain bytes into a preallocated buffer.
            let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
            let used = s.used(part).min(s.per_part);
            for slot in 0..used {
                let e = s.entry(part, slot);
                // SAFETY: slot < used; key is immutable under the shared lock.
                let key = unsafe { (*e).key };
                if !keep(&key) {
                    continue;
                }
                let dst = copied.len() * s.stride;
                // SAFETY: dst + stride <= buf.len() since copied.len() < per_part; the
                // spinlock gives a consistent view of the counters.
                unsafe {
                    spin_lock(&(*e).mutex);
                    ptr::copy_nonoverlapping(e as *const u8, buf.as_mut_ptr().add(dst), s.stride);
                    spin_unlock(&(*e).mutex);
                }
                copied.push(dst);
            }
        }
        for dst in copied {
            // SAFETY: buf holds a byte copy of an EntryHeader + text at `dst` (8-aligned
            // offsets into a u8 Vec, so read unaligned).
            unsafe {
                let hdr: EntryHeader =
                    ptr::read_unaligned(buf.as_ptr().add(dst) as *const EntryHeader);
                let len = (hdr.text_len as usize).min(s.text_cap);
                let tp = buf.as_ptr().add(dst + size_of::<EntryHeader>());
                let text =
                    String::from_utf8_lossy(std::slice::from_raw_parts(tp, len)).into_owned();
                out.push(EntrySnapshot {
                    key: hdr.key,
                    counters: hdr.counters,
                    text,
                });
            }
        }
    }
    out
}

/// Table-wide numbers for `perf.stats_info()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableInfo {
    pub entries: usize,
    pub capacity: usize,
    pub evictions: u64,
    pub stats_reset: i64,
}

pub fn info() -> TableInfo {
    let Some(s) = shared() else {
        return TableInfo::default();
    };
    let mut entries = 0;
    for part in 0..PARTITIONS {
        // SAFETY: lock pointer valid.
        let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
        entries += s.used(part);
    }
    // SAFETY: header live; atomics.
    unsafe {
        TableInfo {
            entries,
            capacity: s.per_part * PARTITIONS,
            evictions: (*s.header).evictions.load(Ordering::Relaxed),
            stats_reset: (*s.header).stats_reset.load(Ordering::Relaxed) as i64,
        }
    }
}

/// Removes all entries (and all captured plans) matching `filter`.
/// Returns how many statement entries were removed.
pub fn reset(filter: impl Fn(&StatKey) -> bool) -> usize {
    let Some(s) = shared() else { return 0 };
    let mut removed = 0;
    for part in 0..PARTITIONS {
        // SAFETY: lock pointer valid.
        let _g = unsafe { LwLockGuard::acquire(s.lock(part), true) };
        let mut slot = 0;
        while slot < s.used(part) {
            // SAFETY: exclusive lock; slot < used.
            let key = unsafe { (*s.entry(part, slot)).key };
            if filter(&key) {
                s.remove_entry(part, slot);
                removed += 1;
            } else {
                slot += 1;
            }
        }
    }
    {
        // SAFETY: plan pool lock valid; slots are plain data.
        let _g = unsafe { LwLockGuard::acquire(s.plan_lock(), true) };
        for i in 0..plan_slot_count(s) {
            let p = plan_slot(s, i);
            // SAFETY: i < nslots; exclusive plan lock held.
            unsafe {
                if (*p).used && filter(&(*p).key) {
                    (*p).used = false;
                }
            }
        }
    }
    // SAFETY: header live; atomics.
    unsafe {
        (*s.header).generation.fetch_add(1, Ordering::Relaxed);
        (*s.header)
            .stats_reset
            .store(pg_sys::GetCurrentTimestamp() as u64, Ordering::Relaxed);
    }
    removed
}

fn plan_slot_count(s: &Shared) -> usize {
    // SAFETY: plan pool header is initialized at startup and never changes.
    unsafe { (*s.plans).nslots as usize }
}

fn plan_slot(s: &Shared, i: usize) -> *mut PlanSlotHeader {
    // SAFETY: i < nslots at every call site; stride fixed at startup.
    unsafe {
        (s.plans as *mut u8)
            .add(align8(size_of::<PlanPoolHeader>()) + i * (*s.plans).stride as usize)
            as *mut PlanSlotHeader
    }
}

/// A slow run's plan and what goes with it.
#[derive(Clone, Copy)]
pub struct CapturedPlan<'a> {
    pub exec_ms: f64,
    /// The plan has actual row counts (the run was instrumented).
    pub analyzed: bool,
    /// EXPLAIN JSON.
    pub plan: &'a str,
    /// Bind parameters (`$1 = '42'`).
    pub params: &'a str,
    /// The statement's own text with its constants.
    pub sample: &'a str,
    pub captured_at: i64,
}

/// Keeps `plan` as the captured plan of `key` if it is the slowest seen (or the first with
/// actual row counts); replaces the fastest stored plan when the pool is full.
/// Returns true if stored. The statement entry's `plan_ms` is updated too.
pub fn store_plan(key: &StatKey, hash: u64, captured: &CapturedPlan) -> bool {
    let Some(s) = shared() else { return false };
    let n = plan_slot_count(s);
    if n == 0 {
        return false;
    }
    let CapturedPlan {
        exec_ms,
        analyzed,
        plan,
        params,
        sample,
        captured_at: now,
    } = *captured;
    let stored = {
        // SAFETY: plan lock valid; slots are plain data; we copy bytes only.
        let _g = unsafe { LwLockGuard::acquire(s.plan_lock(), true) };
        let mut target = None;
        let mut fastest: Option<(usize, f64)> = None;
        let mut free = None;
        for i in 0..n {
            let p = plan_slot(s, i);
            // SAFETY: i < n, exclusive plan lock.
            unsafe {
                if !(*p).used {
                    free.get_or_insert(i);
                } else if (*p).key == *key {
                    target = Some(i);
                    break;
                } else if fastest.is_none_or(|(_, ms)| (*p).exec_ms < ms) {
                    fastest = Some((i, (*p).exec_ms));
                }
            }
        }
        let slot = match (target, free, fastest) {
            (Some(i), _, _) => {
                let p = plan_slot(s, i);
                // SAFETY: i < n, exclusive plan lock.
                let (old_ms, old_analyzed) = unsafe { ((*p).exec_ms, (*p).analyzed) };
                let better =
                    exec_ms > old_ms && (analyzed || !old_analyzed) || (analyzed && !old_analyzed);
                better.then_some(i)
            }
            (None, Some(i), _) => Some(i),
            (None, None, Some((i, ms))) if ms < exec_ms => Some(i),
            _ => None,
        };
        if let Some(i) = slot {
            let p = plan_slot(s, i);
            // SAFETY: i < n, exclusive plan lock; copies are bounded by the slot capacity.
            unsafe {
                let cap = (*s.plans).text_cap as usize;
                let plan_len = plan.len().min(cap);
                let params_len = params.len().min(cap - plan_len);
                // The sample is only useful whole: keep it only if it fits.
                let sample_len = if sample.len() <= cap - plan_len - params_len {
                    sample.len()
                } else {
                    0
                };
                (*p).key = *key;
                (*p).used = true;
                (*p).analyzed = analyzed;
                (*p).exec_ms = exec_ms;
                (*p).captured_at = now;
                (*p).plan_len = plan_len as u32;
                (*p).params_len = params_len as u32;
                (*p).sample_len = sample_len as u32;
                let text = (p as *mut u8).add(size_of::<PlanSlotHeader>());
                ptr::copy_nonoverlapping(plan.as_ptr(), text, plan_len);
                ptr::copy_nonoverlapping(params.as_ptr(), text.add(plan_len), params_len);
                ptr::copy_nonoverlapping(
                    sample.as_ptr(),
                    text.add(plan_len + params_len),
                    sample_len,
                );
            }
        }
        slot.is_some()
    };
    if stored {
        let part = Shared::partition_of(hash);
        // SAFETY: lock pointer valid.
        let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
        if let Some((_, slot)) = s.find(part, key, hash) {
            s.with_counters(part, slot, |c| {
                c.plan_ms = exec_ms;
                c.plan_analyzed = analyzed;
            });
        }
    }
    stored
}

/// A captured plan copied out of shared memory.
#[derive(Clone, Debug)]
pub struct PlanSnapshot {
    pub key: StatKey,
    pub analyzed: bool,
    pub exec_ms: f64,
    pub captured_at: i64,
    pub plan: String,
    pub params: String,
    /// The slowest run's statement text with its constants (empty when it did not fit).
    pub sample: String,
}

/// Copies the captured plans that `keep` accepts.
pub fn plans(keep: impl Fn(&StatKey) -> bool) -> Vec<PlanSnapshot> {
    let Some(s) = shared() else { return Vec::new() };
    let n = plan_slot_count(s);
    // SAFETY: plan pool header is immutable after startup.
    let stride = unsafe { (*s.plans).stride as usize };
    let mut buf = vec![0u8; n * stride];
    let mut copied = Vec::new();
    {
        // SAFETY: plan lock valid; byte copies into a preallocated buffer.
        let _g = unsafe { LwLockGuard::acquire(s.plan_lock(), false) };
        for i in 0..n {
            let p = plan_slot(s, i);
            // SAFETY: i < n; shared plan lock held.
            unsafe {
                if (*p).used && keep(&(*p).key) {
                    let dst = copied.len() * stride;
                    ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr().add(dst), stride);
                    copied.push(dst);
                }
            }
        }
    }
    copied
        .into_iter()
        .map(|dst| {
            // SAFETY: byte copy of a PlanSlotHeader followed by its text.
            unsafe {
                let h: PlanSlotHeader =
                    ptr::read_unaligned(buf.as_ptr().add(dst) as *const PlanSlotHeader);
                let cap = stride - size_of::<PlanSlotHeader>();
                let plan_len = (h.plan_len as usize).min(cap);
                let params_len = (h.params_len as usize).min(cap - plan_len);
                let sample_len = (h.sample_len as usize).min(cap - plan_len - params_len);
                let t = buf.as_ptr().add(dst + size_of::<PlanSlotHeader>());
                PlanSnapshot {
                    key: h.key,
                    analyzed: h.analyzed,
                    exec_ms: h.exec_ms,
                    captured_at: h.captured_at,
                    plan: String::from_utf8_lossy(std::slice::from_raw_parts(t, plan_len))
                        .into_owned(),
                    params: String::from_utf8_lossy(std::slice::from_raw_parts(
                        t.add(plan_len),
                        params_len,
                    ))
                    .into_owned(),
                    sample: String::from_utf8_lossy(std::slice::from_raw_parts(
                        t.add(plan_len + params_len),
                        sample_len,
                    ))
                    .into_owned(),
                }
            }
        })
        .collect()
}

/// Longest normalized text an entry keeps (0 before shared memory is attached).
pub(super) fn text_cap() -> usize {
    shared().map_or(0, |s| s.text_cap)
}

/// Overwrites the counters of `key`'s entry (created just before by `record_new`), for
/// loading the stats file. Returns whether the entry was there.
pub(super) fn restore_counters(key: &StatKey, hash: u64, counters: &Counters) -> bool {
    let Some(s) = shared() else { return false };
    let part = Shared::partition_of(hash);
    // SAFETY: lock pointer valid (tranche attached in `startup`).
    let _g = unsafe { LwLockGuard::acquire(s.lock(part), false) };
    match s.find(part, key, hash) {
        Some((_, slot)) => {
            s.with_counters(part, slot, |c| *c = *counters);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn layout_has_room_and_alignment() {
        let l = Layout::compute(5000, 2048, 500, 16384);
        assert!(l.per_part * PARTITIONS >= 5000);
        assert!(l.cells_per_part >= 2 * l.per_part);
        assert!(l.cells_per_part.is_power_of_two());
        assert_eq!(l.stride % 8, 0);
        assert!(l.stride >= 2048 + size_of::<EntryHeader>());
        assert_eq!(l.plan_stride % 8, 0);
    }

    #[test]
    fn key_hash_spreads_partitions() {
        let mut seen = [0usize; PARTITIONS];
        for q in 0..10_000i64 {
            let k = StatKey {
                userid: 10,
                dbid: 5,
                queryid: q * 7919,
                toplevel: true,
            };
            seen[Shared::partition_of(k.hash())] += 1;
        }
        for n in seen {
            assert!(n > 400 && n < 850, "unbalanced partitions: {seen:?}");
        }
        let a = StatKey {
            userid: 1,
            dbid: 1,
            queryid: 1,
            toplevel: true,
        };
        let b = StatKey {
            toplevel: false,
            ..a
        };
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn welford_mean_and_variance() {
        let mut c = Counters::new(0);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            c.add_execution(
                &ExecSample {
                    total_ms: x,
                    rows: 1,
                    ..Default::default()
                },
                3.0,
            );
        }
        assert_eq!(c.calls, 5);
        assert_eq!(c.rows, 5);
        assert!((c.mean_time - 3.0).abs() < 1e-12);
        assert!(((c.m2_time / 5.0).sqrt() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(c.min_time, 1.0);
        assert_eq!(c.max_time, 5.0);
        assert_eq!(c.slow_calls, 3);
        let failed = ExecSample {
            failed: true,
            ..Default::default()
        };
        c.add_execution(&failed, 3.0);
        assert_eq!((c.calls, c.errors), (5, 1));
    }
}
