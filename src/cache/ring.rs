//! One partition of the result cache's entry store: a ring of variable-size records with a
//! bucket-chained hash index. Pure logic over a block of raw memory (no pgrx types), unit
//! tested with plain `cargo test`; `store.rs` places one `Part` per partition in shared
//! memory and serializes access with that partition's LWLock.
//!
//! Memory of a partition: a `PartHeader`, `nbuckets` (a power of two) `u32` bucket heads,
//! then `cap` bytes of ring. A record is referenced by its offset in 8-byte units (`u32`).
//! A record is a fixed 80-byte `Entry` header followed by its source relations, the result
//! bytes, and the (truncated) query text and parameters shown by `perf.cache_entries()`,
//! padded to 8 bytes: a small entry costs its own size plus 80 bytes (the index, outside
//! the ring, takes 4 bytes per 128 bytes of capacity).
//!
//! Invariants (every write happens with the partition's lock EXCLUSIVE):
//! 1. Records lie wholly inside the ring, 8-aligned. Walking from `tail`, adding each
//!    record's `size` (back to 0 after a `WRAP` filler or at `cap`), reaches `head` after
//!    exactly `used` bytes. The free space is the rest: from `head` to `tail`, or to `cap`
//!    and from 0 to `tail` when `head > tail`. `head == tail` means empty (`used == 0`) or
//!    full (`used == cap`).
//! 2. A `LIVE` record is in exactly one bucket chain, the one of its key's `hash[1]`; `DEAD`
//!    (removed, invalidated or replaced) and `WRAP` records are in none and are skipped when
//!    the tail reaches them. At most one `LIVE` record has a given key. `entries` and
//!    `live_bytes` count the `LIVE` records and their sizes.
//! 3. Readers (lock SHARED) only read, except `hits` and `touched`, which are atomics. A
//!    record never moves or changes otherwise while any lock is held SHARED.
//! 4. Making room for n bytes reclaims records at the tail until the gap at `head` holds n
//!    contiguous bytes (a gap at the end that is too short becomes a `WRAP` filler). `DEAD`,
//!    `WRAP` and no longer valid (expired, invalidated) records are dropped; a valid record is
//!    evicted unless it was hit since it last passed the tail (`touched`, CLOCK's second
//!    chance), in which case it is slid down to `head` (memmove, its index link updated) and
//!    its flag cleared. The bytes slid per insert are bounded (`2 n + 16 kB`, then records
//!    are evicted regardless), so an insert does work proportional to its own size, there is
//!    no fragmentation (free space is one gap that only moves), and it always succeeds for
//!    n <= cap.
//! 5. Nothing here allocates, panics on bad data or calls out except the caller's `alive`
//!    predicate: a record that fails a bounds check (impossible unless memory is corrupted)
//!    resets the partition to empty (`resets` counts that) instead of being trusted.

use std::mem::size_of;
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Source relations an entry may depend on.
pub const MAX_RELS: usize = 16;
/// Bytes of query text kept for `perf.cache_entries()`.
pub const PREVIEW_TEXT: usize = 200;
/// Bytes of parameters kept for `perf.cache_entries()`.
pub const PREVIEW_PARAMS: usize = 96;
/// Fixed header bytes of every record.
pub const HEAD: usize = size_of::<Entry>();
/// Capacity bytes per index bucket: the index is sized from the capacity.
pub const BYTES_PER_BUCKET: usize = 128;
/// Bytes an insert may slide (beyond twice its own size) to keep recently hit records.
const KEEP_BUDGET: usize = 16 * 1024;
const NONE: u32 = u32::MAX;
const LIVE: u32 = 0x4556_494c;
const DEAD: u32 = 0x4441_4544;
const WRAP: u32 = 0x5041_5257;

pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Index buckets for a ring of `cap` bytes: a power of two, about one per 128 bytes.
pub fn buckets_for(cap: usize) -> usize {
    (cap / BYTES_PER_BUCKET).max(1).next_power_of_two()
}

/// Record bytes of an entry with these parts.
pub const fn record_size(nrels: usize, data: usize, text: usize, params: usize) -> usize {
    align8(HEAD + nrels * size_of::<RelDep>() + data + text + params)
}

/// A source relation an entry depends on, with the generation it was computed at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelDep {
    pub slot: u32,
    pub relid: u32,
    pub generation: u64,
}

/// What identifies an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub hash: [u64; 2],
    pub userid: u32,
    pub dbid: u32,
    pub format: u8,
}

/// The header of a record in the ring (the relations, data, text and params follow it).
#[repr(C)]
pub struct Entry {
    size: u32,
    state: u32,
    hnext: u32,
    len: u32,
    pub key: [u64; 2],
    pub userid: u32,
    pub dbid: u32,
    pub global_generation: u64,
    pub created: i64,
    /// 0 = no expiry.
    pub expires: i64,
    pub hits: AtomicU64,
    /// Hit since it last passed the tail (CLOCK reference bit).
    pub touched: AtomicU32,
    nrels: u8,
    pub format: u8,
    text_len: u8,
    params_len: u8,
}

const _: () = assert!(HEAD.is_multiple_of(8) && size_of::<RelDep>() == 16);
const _: () = assert!(PREVIEW_TEXT <= u8::MAX as usize);
const _: () = assert!(PREVIEW_PARAMS <= u8::MAX as usize);

impl Entry {
    fn part_bytes(&self, off: usize, len: usize) -> &[u8] {
        if off + len > self.size as usize {
            return &[];
        }
        // SAFETY: the record is `size` bytes long (checked on insert and when reached from
        // the index) and [off, off + len) lies inside it.
        unsafe { std::slice::from_raw_parts((self as *const Entry as *const u8).add(off), len) }
    }

    fn data_off(&self) -> usize {
        HEAD + self.nrels as usize * size_of::<RelDep>()
    }

    /// The relations it depends on.
    pub fn rels(&self) -> &[RelDep] {
        let n = (self.nrels as usize).min(MAX_RELS);
        if HEAD + n * size_of::<RelDep>() > self.size as usize {
            return &[];
        }
        // SAFETY: n deps were written right after the 8-aligned header, inside the record.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Entry as *const u8).add(HEAD) as *const RelDep,
                n,
            )
        }
    }

    /// The result bytes.
    pub fn data(&self) -> &[u8] {
        self.part_bytes(self.data_off(), self.len as usize)
    }

    /// The query text (truncated to PREVIEW_TEXT bytes).
    pub fn text(&self) -> &[u8] {
        self.part_bytes(self.data_off() + self.len as usize, self.text_len as usize)
    }

    /// The parameters (truncated to PREVIEW_PARAMS bytes).
    pub fn params(&self) -> &[u8] {
        let off = self.data_off() + self.len as usize + self.text_len as usize;
        self.part_bytes(off, self.params_len as usize)
    }

    /// Bytes of the record in the ring (header included).
    pub fn size(&self) -> u32 {
        self.size
    }

    fn matches(&self, k: &Key) -> bool {
        self.key == k.hash
            && self.userid == k.userid
            && self.dbid == k.dbid
            && self.format == k.format
    }
}

/// State of a partition (in shared memory, before its buckets).
#[repr(C)]
pub struct PartHeader {
    head: u64,
    tail: u64,
    used: u64,
    live_bytes: u64,
    entries: u64,
    resets: u64,
}

/// An entry to insert.
pub struct NewRecord<'a> {
    pub key: Key,
    pub deps: &'a [RelDep],
    pub global_generation: u64,
    pub created: i64,
    pub expires: i64,
    /// At most PREVIEW_TEXT bytes (longer is cut).
    pub text: &'a [u8],
    /// At most PREVIEW_PARAMS bytes (longer is cut).
    pub params: &'a [u8],
    pub data: &'a [u8],
}

impl NewRecord<'_> {
    fn parts(&self) -> (usize, usize, usize) {
        (
            self.deps.len().min(MAX_RELS),
            self.text.len().min(PREVIEW_TEXT),
            self.params.len().min(PREVIEW_PARAMS),
        )
    }

    /// Record bytes it needs.
    pub fn size(&self) -> usize {
        let (nrels, text, params) = self.parts();
        record_size(nrels, self.data.len(), text, params)
    }
}

/// What an insert reclaimed to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Valid entries dropped for room (the LRU victims).
    pub evicted: u64,
    /// Expired or invalidated entries dropped.
    pub dropped: u64,
    /// Recently hit entries slid to the head (kept).
    pub moved: u64,
}

/// A view of one partition's memory.
pub struct Part {
    hdr: *mut PartHeader,
    buckets: *mut u32,
    mask: usize,
    ring: *mut u8,
    cap: usize,
}

impl Part {
    /// Bytes of memory a partition with these sizes needs (8-aligned).
    pub const fn footprint(nbuckets: usize, cap: usize) -> usize {
        align8(size_of::<PartHeader>()) + align8(nbuckets * size_of::<u32>()) + align8(cap)
    }

    /// A view of the partition at `base`.
    ///
    /// # Safety
    /// `base` is 8-aligned and points to `footprint(nbuckets, cap)` bytes that stay mapped
    /// while the view is used, initialized by `init` (of some view) before any other method
    /// is called; `nbuckets` is a power of two and `cap` a multiple of 8 of at least HEAD.
    /// While the view is used the caller holds the partition's lock: SHARED for `&self`
    /// methods, EXCLUSIVE for `&mut self` methods.
    pub unsafe fn attach(base: *mut u8, nbuckets: usize, cap: usize) -> Part {
        // SAFETY: offsets inside the footprint, per the contract.
        unsafe {
            let buckets = base.add(align8(size_of::<PartHeader>()));
            Part {
                hdr: base as *mut PartHeader,
                buckets: buckets as *mut u32,
                mask: nbuckets - 1,
                ring: buckets.add(align8(nbuckets * size_of::<u32>())),
                cap,
            }
        }
    }

    /// Makes the partition empty (on creation of the memory).
    pub fn init(&mut self) {
        // SAFETY: exclusive access (contract of `attach`); header and buckets are ours.
        unsafe {
            ptr::write_bytes(self.hdr, 0, 1);
        }
        self.clear_index();
    }

    fn clear_index(&mut self) {
        for b in 0..=self.mask {
            // SAFETY: b < nbuckets.
            unsafe { *self.buckets.add(b) = NONE };
        }
    }

    fn h(&self) -> &PartHeader {
        // SAFETY: the header is live (contract of `attach`).
        unsafe { &*self.hdr }
    }

    fn h_mut(&mut self) -> &mut PartHeader {
        // SAFETY: exclusive access (contract of `attach`).
        unsafe { &mut *self.hdr }
    }

    /// Live entries.
    pub fn entries(&self) -> u64 {
        self.h().entries
    }

    /// Ring bytes held by live entries (headers included).
    pub fn live_bytes(&self) -> u64 {
        self.h().live_bytes
    }

    /// Ring bytes in use, including dead records not reclaimed yet.
    pub fn used(&self) -> u64 {
        self.h().used
    }

    /// Times the partition was reset because a record failed a bounds check.
    pub fn resets(&self) -> u64 {
        self.h().resets
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn bucket(&self, hash: &[u64; 2]) -> *mut u32 {
        // SAFETY: masked index < nbuckets.
        unsafe { self.buckets.add(hash[1] as usize & self.mask) }
    }

    /// The record starting at `r` (8-byte units), if its header lies inside the ring.
    fn at(&self, r: u32) -> Option<*mut Entry> {
        let off = r as usize * 8;
        if r == NONE || off + HEAD > self.cap {
            return None;
        }
        // SAFETY: off + HEAD <= cap, 8-aligned.
        Some(unsafe { self.ring.add(off) as *mut Entry })
    }

    /// The live entry with `key` (lock held in any mode).
    #[inline]
    pub fn find(&self, key: &Key) -> Option<&Entry> {
        // SAFETY: the bucket pointer is in bounds; chain links are only changed under the
        // EXCLUSIVE lock, which excludes us.
        let mut r = unsafe { *self.bucket(&key.hash) };
        // A chain never holds more than the live entries: bound the walk all the same.
        let mut steps = self.h().entries;
        while steps > 0 {
            // SAFETY: `at` checked the header bounds; linked records are LIVE and inside.
            let e = unsafe { &*self.at(r)? };
            if e.matches(key) {
                return (e.state == LIVE && r as usize * 8 + e.size as usize <= self.cap)
                    .then_some(e);
            }
            r = e.hnext;
            steps -= 1;
        }
        None
    }

    /// The link (bucket head or `hnext`) that holds `r` in its chain.
    fn link_to(&mut self, hash: &[u64; 2], r: u32) -> Option<*mut u32> {
        let mut link = self.bucket(hash);
        let mut steps = self.h().entries;
        loop {
            // SAFETY: link is a bucket head or the hnext of a record checked by `at`.
            let cur = unsafe { *link };
            if cur == r {
                return Some(link);
            }
            if steps == 0 {
                return None;
            }
            steps -= 1;
            // SAFETY: `at` checked the bounds.
            link = unsafe { &raw mut (*self.at(cur)?).hnext };
        }
    }

    /// Marks the live record `e` at `r` dead and unlinks it.
    fn kill(&mut self, r: u32) {
        let Some(e) = self.at(r) else { return };
        // SAFETY: exclusive lock; `at` checked the bounds.
        let (hash, size, next) = unsafe { ((*e).key, (*e).size, (*e).hnext) };
        if let Some(link) = self.link_to(&hash, r) {
            // SAFETY: link points into the index or a live record.
            unsafe { *link = next };
        }
        // SAFETY: as above.
        unsafe {
            (*e).state = DEAD;
            (*e).hnext = NONE;
        }
        let h = self.h_mut();
        h.entries = h.entries.saturating_sub(1);
        h.live_bytes = h.live_bytes.saturating_sub(size as u64);
    }

    /// Removes the entry with `key`; false if there was none.
    pub fn remove(&mut self, key: &Key) -> bool {
        let Some(e) = self.find(key) else {
            return false;
        };
        let r = ((e as *const Entry as usize - self.ring as usize) / 8) as u32;
        self.kill(r);
        true
    }

    /// Drops every live entry for which `keep` is false; returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> u64 {
        let mut dropped = 0;
        for b in 0..=self.mask {
            // SAFETY: b < nbuckets.
            let mut link = unsafe { self.buckets.add(b) };
            let mut steps = self.h().entries + 1;
            // Links are bucket heads or hnext fields of records checked by `at`; the caller
            // holds the exclusive lock.
            while steps > 0 {
                steps -= 1;
                // SAFETY: `link` is a bucket head or a live record's hnext (see above).
                let r = unsafe { *link };
                let Some(e) = self.at(r) else { break };
                // SAFETY: `at` checked that `r` is a live record inside the ring.
                let e = unsafe { &mut *e };
                if keep(e) {
                    link = &raw mut e.hnext;
                } else {
                    // SAFETY: as above; unlinks the record from its chain.
                    unsafe { *link = e.hnext };
                    e.state = DEAD;
                    e.hnext = NONE;
                    let size = e.size as u64;
                    let h = self.h_mut();
                    h.entries = h.entries.saturating_sub(1);
                    h.live_bytes = h.live_bytes.saturating_sub(size);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// Calls `f` on every live entry (lock held in any mode).
    pub fn for_each(&self, mut f: impl FnMut(&Entry)) {
        for b in 0..=self.mask {
            // SAFETY: b < nbuckets.
            let mut r = unsafe { *self.buckets.add(b) };
            let mut steps = self.h().entries;
            while steps > 0 {
                steps -= 1;
                let Some(e) = self.at(r) else { break };
                // SAFETY: `at` checked the bounds.
                let e = unsafe { &*e };
                f(e);
                r = e.hnext;
            }
        }
    }

    /// Empties the partition after a failed bounds check.
    fn reset(&mut self) {
        let resets = self.h().resets + 1;
        self.init();
        self.h_mut().resets = resets;
    }

    /// (size, state) of the record at byte offset `off`, if it passes the bounds checks.
    fn peek(&self, off: usize) -> Option<(usize, u32)> {
        if off + 8 > self.cap {
            return None;
        }
        // SAFETY: the first 8 bytes (size, state) are inside the ring.
        let (size, state) = unsafe {
            let p = self.ring.add(off) as *const u32;
            (*p as usize, *p.add(1))
        };
        let ok = size % 8 == 0
            && size >= 8
            && off + size <= self.cap
            && size as u64 <= self.h().used
            && match state {
                WRAP => off + size == self.cap,
                LIVE | DEAD => size >= HEAD,
                _ => false,
            };
        ok.then_some((size, state))
    }

    /// Reclaims records at the tail until `need` contiguous bytes are free at the head;
    /// returns the byte offset of that room (None if need > cap).
    fn make_room(
        &mut self,
        need: usize,
        alive: &mut impl FnMut(&Entry) -> bool,
        out: &mut Reclaimed,
    ) -> Option<usize> {
        if need > self.cap || need < HEAD {
            return None;
        }
        let cap = self.cap;
        let mut budget = 2 * need + KEEP_BUDGET;
        loop {
            let (head, tail, used) = {
                let h = self.h();
                (h.head as usize, h.tail as usize, h.used as usize)
            };
            if used == 0 {
                let h = self.h_mut();
                h.head = 0;
                h.tail = 0;
                return Some(0);
            }
            if head > tail {
                if cap - head >= need {
                    return Some(head);
                }
                // The end is too short: a filler up to `cap`, and go on at 0.
                // SAFETY: head + 8 <= cap (both multiples of 8, head < cap).
                unsafe {
                    let p = self.ring.add(head) as *mut u32;
                    *p = (cap - head) as u32;
                    *p.add(1) = WRAP;
                }
                let h = self.h_mut();
                h.used += (cap - head) as u64;
                h.head = 0;
                continue;
            }
            if tail - head >= need {
                return Some(head);
            }
            let Some((size, state)) = self.peek(tail) else {
                self.reset();
                continue;
            };
            let (mut new_head, mut new_tail, mut new_used) = (head, tail + size, used);
            if state == LIVE {
                let r = (tail / 8) as u32;
                let Some(e) = self.at(r) else {
                    self.reset();
                    continue;
                };
                // SAFETY: `peek` checked the record lies inside the ring; exclusive lock.
                let e = unsafe { &mut *e };
                let valid = alive(e);
                if valid && e.touched.load(Ordering::Relaxed) != 0 && budget >= size {
                    // Second chance: slide it down to the head.
                    budget -= size;
                    e.touched.store(0, Ordering::Relaxed);
                    if head != tail {
                        let hash = e.key;
                        let Some(link) = self.link_to(&hash, r) else {
                            self.reset();
                            continue;
                        };
                        // SAFETY: [tail, tail+size) is the record, [head, head+size) lies in
                        // the gap followed by the record (head < tail): overlap is handled by
                        // `copy` (memmove). The link is in the index or another record.
                        unsafe {
                            ptr::copy(self.ring.add(tail), self.ring.add(head), size);
                            *link = (head / 8) as u32;
                        }
                    }
                    new_head = head + size;
                    out.moved += 1;
                } else {
                    self.kill(r);
                    new_used -= size;
                    if valid {
                        out.evicted += 1;
                    } else {
                        out.dropped += 1;
                    }
                }
            } else {
                new_used -= size;
            }
            if new_tail == cap {
                new_tail = 0;
            }
            if new_head == cap {
                new_head = 0;
            }
            let h = self.h_mut();
            h.head = new_head as u64;
            h.tail = new_tail as u64;
            h.used = new_used as u64;
        }
    }

    /// Stores `n` (replacing the entry with the same key), reclaiming room at the tail as
    /// needed: `alive` says whether an entry is still valid (not expired, not invalidated).
    /// None if the record is larger than the ring.
    pub fn insert(
        &mut self,
        n: &NewRecord,
        mut alive: impl FnMut(&Entry) -> bool,
    ) -> Option<Reclaimed> {
        let (nrels, text_len, params_len) = n.parts();
        let size = n.size();
        if n.data.len() > u32::MAX as usize || size > u32::MAX as usize {
            return None;
        }
        self.remove(&n.key);
        let mut out = Reclaimed::default();
        let off = self.make_room(size, &mut alive, &mut out)?;
        let r = (off / 8) as u32;
        let link = self.bucket(&n.key.hash);
        // SAFETY: make_room returned `size` free contiguous bytes at `off` (inside the
        // ring, 8-aligned); exclusive lock; the parts were sized by `record_size`.
        unsafe {
            let base = self.ring.add(off);
            ptr::write(
                base as *mut Entry,
                Entry {
                    size: size as u32,
                    state: LIVE,
                    hnext: *link,
                    len: n.data.len() as u32,
                    key: n.key.hash,
                    userid: n.key.userid,
                    dbid: n.key.dbid,
                    global_generation: n.global_generation,
                    created: n.created,
                    expires: n.expires,
                    hits: AtomicU64::new(0),
                    touched: AtomicU32::new(0),
                    nrels: nrels as u8,
                    format: n.key.format,
                    text_len: text_len as u8,
                    params_len: params_len as u8,
                },
            );
            let mut p = base.add(HEAD);
            ptr::copy_nonoverlapping(n.deps.as_ptr(), p as *mut RelDep, nrels);
            p = p.add(nrels * size_of::<RelDep>());
            ptr::copy_nonoverlapping(n.data.as_ptr(), p, n.data.len());
            p = p.add(n.data.len());
            ptr::copy_nonoverlapping(n.text.as_ptr(), p, text_len);
            p = p.add(text_len);
            ptr::copy_nonoverlapping(n.params.as_ptr(), p, params_len);
            *link = r;
        }
        let cap = self.cap;
        let h = self.h_mut();
        h.head = ((off + size) % cap) as u64;
        h.used += size as u64;
        h.entries += 1;
        h.live_bytes += size as u64;
        Some(out)
    }

    /// Checks every invariant (for tests): walks the ring and the index.
    pub fn check(&self) -> Result<(), String> {
        let h = self.h();
        let (mut off, mut walked, mut live, mut live_bytes) = (h.tail as usize, 0u64, 0u64, 0u64);
        if h.used > self.cap as u64 || h.head as usize >= self.cap.max(1) {
            return Err(format!("head {} used {} cap {}", h.head, h.used, self.cap));
        }
        while walked < h.used {
            let (size, state) = self
                .peek(off)
                .ok_or_else(|| format!("bad record at {off} (walked {walked})"))?;
            if state == LIVE {
                // SAFETY: peek checked the bounds.
                let e = unsafe { &*(self.ring.add(off) as *const Entry) };
                live += 1;
                live_bytes += size as u64;
                let key = Key {
                    hash: e.key,
                    userid: e.userid,
                    dbid: e.dbid,
                    format: e.format,
                };
                match self.find(&key) {
                    Some(f) if std::ptr::eq(f, e) => {}
                    _ => return Err(format!("live record at {off} not found by its key")),
                }
                if HEAD + e.rels().len() * 16 + e.len as usize > size {
                    return Err(format!("record at {off} shorter than its parts"));
                }
            }
            walked += size as u64;
            off += size;
            if off == self.cap {
                off = 0;
            }
        }
        if walked != h.used || off != h.head as usize {
            return Err(format!(
                "walk ended at {off} after {walked}, head {} used {}",
                h.head, h.used
            ));
        }
        if live != h.entries || live_bytes != h.live_bytes {
            return Err(format!(
                "{live} live records of {live_bytes} bytes, header says {} of {}",
                h.entries, h.live_bytes
            ));
        }
        let mut chained = 0u64;
        for b in 0..=self.mask {
            // SAFETY: b < nbuckets.
            let mut r = unsafe { *self.buckets.add(b) };
            while r != NONE {
                let e = self
                    .at(r)
                    .ok_or_else(|| format!("bucket {b} links outside"))?;
                // SAFETY: `at` checked the bounds.
                let e = unsafe { &*e };
                if e.state != LIVE || e.key[1] as usize & self.mask != b {
                    return Err(format!("bucket {b} links a dead or misplaced record"));
                }
                chained += 1;
                if chained > h.entries {
                    return Err("more records chained than live".into());
                }
                r = e.hnext;
            }
        }
        if chained != h.entries {
            return Err(format!("{chained} chained, {} entries", h.entries));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Mem {
        _buf: Vec<u64>,
        part: Part,
    }

    fn part(nbuckets: usize, cap: usize) -> Mem {
        let mut buf = vec![0xa5a5_a5a5_a5a5_a5a5u64; Part::footprint(nbuckets, cap) / 8];
        // SAFETY: the buffer is 8-aligned, footprint-sized and outlives the view.
        let mut part = unsafe { Part::attach(buf.as_mut_ptr() as *mut u8, nbuckets, cap) };
        part.init();
        Mem { _buf: buf, part }
    }

    fn key(i: u64) -> Key {
        // Distinct keys; hash[1] low bits collide a lot on purpose (small index tests).
        Key {
            hash: [i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i * 3],
            userid: 10 + (i % 3) as u32,
            dbid: 5,
            format: (i % 2) as u8,
        }
    }

    fn payload(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
    }

    fn rec<'a>(k: Key, data: &'a [u8], deps: &'a [RelDep]) -> NewRecord<'a> {
        NewRecord {
            key: k,
            deps,
            global_generation: 1,
            created: 7,
            expires: 0,
            text: b"SELECT $1::int",
            params: b"[1]",
            data,
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn small_entries_cost_their_size_plus_the_header() {
        // perf.cached_json_text('SELECT $1::int', '[123456]'): 18 bytes of JSON.
        let small = record_size(0, br#"[{"int4": 123456}]"#.len(), 14, 8);
        assert_eq!(HEAD, 80);
        assert_eq!(small, 120);
        let per_entry = small + 4 * (small / BYTES_PER_BUCKET + 1); // with its share of index
        assert!(64 * 1024 * 1024 / per_entry >= 400_000);
    }

    #[test]
    fn insert_find_remove() {
        let mut m = part(16, 4096);
        let p = &mut m.part;
        let deps = [RelDep {
            slot: 3,
            relid: 16384,
            generation: 9,
        }];
        for i in 0..10 {
            let d = payload(i, 20 + i as usize);
            assert_eq!(
                p.insert(&rec(key(i), &d, &deps), |_| true),
                Some(Reclaimed::default())
            );
        }
        p.check().unwrap();
        for i in 0..10 {
            let e = p.find(&key(i)).unwrap();
            assert_eq!(e.data(), &payload(i, 20 + i as usize)[..]);
            assert_eq!(e.rels(), &deps);
            assert_eq!(e.text(), b"SELECT $1::int");
            assert_eq!(e.params(), b"[1]");
        }
        assert!(p.find(&key(11)).is_none());
        let mut other_user = key(3);
        other_user.userid += 100;
        assert!(p.find(&other_user).is_none());
        assert!(p.remove(&key(3)));
        assert!(!p.remove(&key(3)));
        assert!(p.find(&key(3)).is_none());
        assert_eq!(p.entries(), 9);
        p.check().unwrap();
        // Replacing keeps one entry per key.
        let d = payload(99, 5);
        p.insert(&rec(key(4), &d, &[]), |_| true).unwrap();
        assert_eq!(p.entries(), 9);
        assert_eq!(p.find(&key(4)).unwrap().data(), &d[..]);
        p.check().unwrap();
    }

    #[test]
    fn too_large_is_refused_and_a_full_ring_record_fits() {
        let mut m = part(4, 1024);
        let p = &mut m.part;
        let big = vec![1u8; 1024];
        assert!(p.insert(&rec(key(1), &big, &[]), |_| true).is_none());
        let fits = vec![2u8; 1024 - HEAD - 14 - 3];
        p.insert(&rec(key(2), &fits, &[]), |_| true).unwrap();
        assert_eq!(p.used(), 1024);
        p.check().unwrap();
        let r = p.insert(&rec(key(3), &fits, &[]), |_| true).unwrap();
        assert_eq!(r.evicted, 1);
        assert!(p.find(&key(2)).is_none());
        assert_eq!(p.find(&key(3)).unwrap().data(), &fits[..]);
        p.check().unwrap();
    }

    #[test]
    fn eviction_is_fifo_with_second_chance_and_drops_dead_first() {
        let mut m = part(64, 8 * 1024);
        let p = &mut m.part;
        let d = [0u8; 100]; // 200-byte records: 40 fit
        let mut i = 0;
        while p.used() + 200 <= 8 * 1024 {
            p.insert(&rec(key(i), &d, &[]), |_| true).unwrap();
            i += 1;
        }
        assert_eq!(i, 40);
        // Entry 0 is hit: it survives the next eviction, entry 1 goes.
        p.find(&key(0)).unwrap().touched.store(1, Ordering::Relaxed);
        let r = p.insert(&rec(key(100), &d, &[]), |_| true).unwrap();
        assert_eq!((r.evicted, r.moved), (1, 1));
        assert!(p.find(&key(0)).is_some());
        assert!(p.find(&key(1)).is_none());
        p.check().unwrap();
        // Entries 2 and 3 are no longer valid: dropped, not counted as evictions.
        let r = p
            .insert(&rec(key(101), &[0u8; 300], &[]), |e| {
                e.key != key(2).hash && e.key != key(3).hash
            })
            .unwrap();
        assert_eq!((r.evicted, r.dropped), (0, 2));
        p.check().unwrap();
    }

    #[test]
    fn dead_space_is_reclaimed_and_bytes_stay_within_capacity() {
        let mut m = part(8, 16 * 1024);
        let p = &mut m.part;
        let d = [7u8; 500];
        for round in 0..50u64 {
            for i in 0..20 {
                p.insert(&rec(key(round * 100 + i), &d, &[]), |_| true)
                    .unwrap();
            }
            // Invalidate every other entry of the round.
            let n = p.retain(|e| e.key[1] % 2 == 0);
            assert!(n <= 20);
            assert!(p.live_bytes() <= p.used() && p.used() <= 16 * 1024);
            p.check().unwrap();
        }
        let n = p.entries();
        assert_eq!(p.retain(|_| false), n);
        assert_eq!(p.entries(), 0);
        p.check().unwrap();
    }

    /// Random inserts (sizes from 0 to a third of the ring), hits, removals and
    /// invalidations against a model, with a tiny index (1 and 2 buckets: every key
    /// collides) and a larger one: every find returns the entry of its own key, with the
    /// bytes last stored for it, and every invariant holds after every step.
    #[test]
    fn random_operations_match_a_model_with_colliding_buckets() {
        for (nbuckets, cap, seed) in [
            (1, 4096, 1u64),
            (2, 6000 / 8 * 8, 2),
            (64, 32 * 1024, 3),
            (1024, 64 * 1024, 4),
        ] {
            let mut m = part(nbuckets, cap);
            let p = &mut m.part;
            let mut rng = Rng(seed * 0x2545_f491_4f6c_dd1d);
            let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut dead_relid = u32::MAX;
            let mut total = Reclaimed::default();
            let mut hits = 0;
            for step in 0..20_000 {
                let i = rng.next() % 300;
                match rng.next() % 10 {
                    0..=4 => {
                        let len = match rng.next() % 8 {
                            0 => (rng.next() % (cap as u64 / 3)) as usize,
                            _ => (rng.next() % 64) as usize,
                        };
                        let d = payload(i ^ step, len);
                        let deps = [RelDep {
                            slot: 0,
                            relid: (i % 7) as u32,
                            generation: 0,
                        }];
                        let nrels = (i % 2) as usize;
                        let n = rec(key(i), &d, &deps[..nrels]);
                        let fits = n.size() <= cap;
                        let r = p.insert(&n, |e| e.rels().iter().all(|d| d.relid != dead_relid));
                        assert_eq!(r.is_some(), fits);
                        if let Some(r) = r {
                            total.evicted += r.evicted;
                            total.dropped += r.dropped;
                            total.moved += r.moved;
                        }
                        if fits {
                            model.insert(i, d);
                        } else {
                            model.remove(&i);
                        }
                    }
                    5..=7 => {
                        if let Some(e) = p.find(&key(i)) {
                            assert_eq!(Some(e.data()), model.get(&i).map(|v| &v[..]));
                            e.touched.store(1, Ordering::Relaxed);
                            hits += 1;
                        }
                    }
                    8 => {
                        p.remove(&key(i));
                        model.remove(&i);
                    }
                    _ => {
                        dead_relid = (i % 7) as u32;
                        p.retain(|e| e.rels().iter().all(|d| d.relid != dead_relid));
                    }
                }
                if step % 97 == 0 {
                    p.check().unwrap();
                }
            }
            p.check().unwrap();
            // Evicted keys are gone from the ring; the others are exactly the model's.
            model.retain(|i, v| match p.find(&key(*i)) {
                Some(e) => {
                    assert_eq!(e.data(), &v[..]);
                    true
                }
                None => false,
            });
            assert_eq!(model.len() as u64, p.entries());
            assert_eq!(p.resets(), 0);
            // The run went through every path: evictions, dead records, second chances.
            assert!(
                total.evicted > 100 && total.dropped > 0 && total.moved > 10,
                "{total:?}"
            );
            assert!(hits > 100, "{hits} hits");
        }
    }

    #[test]
    fn corrupted_record_resets_instead_of_trusting_it() {
        let mut m = part(4, 2048);
        let p = &mut m.part;
        let d = [1u8; 400];
        for i in 0..3 {
            p.insert(&rec(key(i), &d, &[]), |_| true).unwrap();
        }
        // Scribble over the size of the oldest record.
        // SAFETY: the ring starts with that record.
        unsafe { *(p.ring as *mut u32) = 3 };
        for i in 3..6 {
            p.insert(&rec(key(i), &d, &[]), |_| true).unwrap();
        }
        assert_eq!(p.resets(), 1);
        p.check().unwrap();
        assert!(p.find(&key(5)).is_some());
    }
}
