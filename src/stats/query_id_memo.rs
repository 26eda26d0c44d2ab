//! Core `queryId`s without jumbling every statement: a per-backend memo from statement
//! fingerprints ([`super::fingerprint`]) to the id core's `JumbleQuery` computed for the
//! first statement with that fingerprint.
//!
//! pg_perf does not call `EnableQueryId()`: with `compute_query_id = auto` (the default)
//! core leaves `Query.queryId` at 0 and the post-parse-analyze hook fills it in from here,
//! so every consumer downstream (the planner, the executor hooks, `pg_stat_activity`,
//! `EXPLAIN VERBOSE`, `log_line_prefix` `%Q`) sees exactly the id core would have given.
//! With `compute_query_id = on`, or another module that enables query ids (such as
//! pg_stat_statements), core has already jumbled and nothing here runs.
//!
//! Invariants:
//! - An id is only served from the memo when the fingerprint, the current user, the
//!   `search_path` string and the parser settings that change what a text means
//!   (`transform_null_equals`) are those it was computed under, and no catalog
//!   invalidation that can change name resolution (relations and their columns, types,
//!   functions, operators, casts, collations, schemas, roles, operator classes) has
//!   arrived since: every such invalidation empties the memo.
//! - The memo is bypassed (core jumbles) whenever the text alone may not decide the parse
//!   tree: the statement is not a client's top-level statement (inside functions and
//!   utility statements such as EXPLAIN the tree can depend on variables the text does
//!   not define), it refers to `$n` parameters (their types come from the client),
//!   column-reference parser hooks are set (PL/pgSQL and SQL-function variables), a query
//!   environment is present (trigger transition tables), `standard_conforming_strings` is
//!   off (the fingerprint reads strings the standard way), or the statement is a utility
//!   statement (core hashes its text, which is already cheap).
//! - Backend-local state only; it is touched from the hook and from invalidation callbacks,
//!   which never run while the hook holds a reference into it.
//! - `perf.verify_query_ids = on` jumbles memo hits as well and reports any difference
//!   with a WARNING (and uses core's id), for anyone who wants proof on their workload.

use pgrx::pg_sys;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::fingerprint;
use super::normalize;
use crate::pg::backend_local::BackendLocal;

/// Memo entries per backend (direct-mapped by key).
pub const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    query_id: u64,
}

/// The shape of a recently fingerprinted statement, with the key it gave under the context
/// (user, `transform_null_equals`, `search_path`) it was computed in.
#[derive(Default)]
struct TemplateSlot {
    template: fingerprint::Template,
    key: u64,
    context: u64,
    search_path: Vec<u8>,
}

/// Templates per backend, chosen by the statement's first bytes.
const TEMPLATES: usize = 32;

struct Memo {
    slots: [Slot; SLOTS],
    /// Statement shapes seen recently: a statement with the shape of one of them gets its
    /// key without a full fingerprint (see `fingerprint::Template`).
    templates: Vec<TemplateSlot>,
    /// Set by invalidation callbacks; the next lookup empties the memo.
    stale: bool,
    /// Reused buffer for the fingerprint stream (no allocation per statement).
    stream: Vec<u8>,
    hits: u64,
    misses: u64,
}

static MEMO: BackendLocal<Memo> = BackendLocal::new(Memo {
    slots: [Slot {
        key: 0,
        query_id: 0,
    }; SLOTS],
    stale: false,
    templates: Vec::new(),
    stream: Vec::new(),
    hits: 0,
    misses: 0,
});

/// Runs `f` on this backend's memo. The closures here never access the catalogs (which
/// could process invalidations, whose callbacks write `stale`) and never nest.
#[inline(always)]
fn with_memo<R>(f: impl FnOnce(&mut Memo) -> R) -> R {
    // SAFETY: single-threaded backend; per the rule above no other borrow of MEMO can be
    // live while `f` runs.
    unsafe { MEMO.with(f) }
}

/// Memo hits and misses of this backend (`perf.query_id_memo()`).
pub fn counters() -> (u64, u64) {
    with_memo(|m| (m.hits, m.misses))
}

/// Gives `query` core's `queryId` if core did not compute one (`compute_query_id = auto`
/// and no module asked for ids). Returns the jumble state when it jumbled (its constant
/// locations normalize the text), null on a memo hit or when nothing was done.
///
/// `top_level`: the statement came from the client (not from a function, a utility
/// statement such as EXPLAIN, or PREPARE); only those use the memo.
///
/// # Safety
/// `pstate` and `query` are the valid pointers the post-parse-analyze hook received.
pub unsafe fn assign(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    top_level: bool,
) -> *mut pg_sys::JumbleState {
    // SAFETY: valid pointers per the contract; GUC variables are plain backend globals.
    unsafe {
        if (*query).queryId != 0
            || pg_sys::compute_query_id == pg_sys::ComputeQueryIdType::COMPUTE_QUERY_ID_OFF as i32
        {
            return std::ptr::null_mut();
        }
        let source = (*pstate).p_sourcetext;
        if source.is_null() {
            return std::ptr::null_mut();
        }
        // Parameter hooks (the extended protocol's Parse always installs them) only act on
        // `$n` references, which the fingerprint refuses; column-reference hooks can turn
        // any name into something else.
        let memo_usable = top_level
            && (*query).utilityStmt.is_null()
            && (*pstate).p_pre_columnref_hook.is_none()
            && (*pstate).p_post_columnref_hook.is_none()
            && (*pstate).p_queryEnv.is_null()
            && pg_sys::standard_conforming_strings;
        if !memo_usable {
            with_memo(|m| m.misses += 1);
            return jumble(query, source);
        }
        let (location, len) = ((*query).stmt_location, (*query).stmt_len);
        // Ok(query id) on a hit, Err(memo key, if the text has one) on a miss.
        let found = with_memo(|m| {
            if m.stale {
                m.slots.fill(Slot {
                    key: 0,
                    query_id: 0,
                });
                m.stale = false;
            }
            // `source` is the NUL-terminated text of the statement; hashing it touches no
            // catalog.
            let key = statement_key(m, source, location, len);
            let hit = key.and_then(|key| {
                let slot = m.slots[key as usize % SLOTS];
                (slot.key == key).then_some(slot.query_id)
            });
            match hit {
                Some(query_id) => {
                    m.hits += 1;
                    Ok(query_id)
                }
                None => {
                    m.misses += 1;
                    Err(key)
                }
            }
        });
        let key = match found {
            Ok(query_id) => {
                if crate::gucs::verify_query_ids() {
                    return verify(query, source, query_id);
                }
                (*query).queryId = query_id;
                return std::ptr::null_mut();
            }
            Err(None) => return jumble(query, source),
            Err(Some(key)) => key,
        };
        let jstate = jumble(query, source);
        // jumble() may have processed invalidations: only remember the id if none came.
        let query_id = (*query).queryId;
        with_memo(|m| {
            if !m.stale {
                m.slots[key as usize % SLOTS] = Slot { key, query_id };
            }
        });
        jstate
    }
}

/// The jumble state for a statement whose id came from the memo (its text is new to the
/// statement table and needs its constant locations). Recomputes the same id.
///
/// # Safety
/// As for [`assign`].
pub unsafe fn jumble_state(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
) -> *mut pg_sys::JumbleState {
    // SAFETY: per contract.
    unsafe {
        let source = (*pstate).p_sourcetext;
        if source.is_null() || !(*query).utilityStmt.is_null() {
            return std::ptr::null_mut();
        }
        jumble(query, source)
    }
}

/// Memo key: a hash of the statement's fingerprint and of the context that the text does
/// not show (user, `search_path`, `transform_null_equals`). `None` when the text alone
/// does not decide the tree (it has `$n` parameters).
unsafe fn statement_key(
    m: &mut Memo,
    source: *const std::ffi::c_char,
    location: i32,
    len: i32,
) -> Option<u64> {
    // SAFETY: NUL-terminated strings owned by the caller / the GUC machinery. Token
    // boundaries only fall on ASCII bytes in every server encoding, so the text is scanned
    // as bytes whatever the encoding.
    unsafe {
        let statement = statement_bytes(source, location, len);
        let search_path: &[u8] = if pg_sys::namespace_search_path.is_null() {
            &[]
        } else {
            std::ffi::CStr::from_ptr(pg_sys::namespace_search_path).to_bytes()
        };
        let context = (u64::from(crate::pg::backend::current_user_id()) << 1)
            | u64::from(pg_sys::Transform_null_equals);
        if m.templates.is_empty() {
            m.templates.resize_with(TEMPLATES, TemplateSlot::default);
        }
        let t = &mut m.templates[template_index(statement)];
        if t.key != 0
            && t.context == context
            && t.search_path == search_path
            && t.template.matches(statement)
        {
            return Some(t.key);
        }
        if !fingerprint::fingerprint_recording(statement, &mut m.stream, Some(&mut t.template)) {
            t.key = 0;
            return None;
        }
        m.stream.push(0);
        m.stream.extend_from_slice(search_path);
        // 0 marks an empty slot.
        let key = xxh3_64_with_seed(&m.stream, context).max(1);
        t.key = key;
        t.context = context;
        t.search_path.clear();
        t.search_path.extend_from_slice(search_path);
        Some(key)
    }
}

/// Template slot for a statement: its first bytes (most statements of one shape share
/// them, and literals rarely come that early), mixed.
fn template_index(statement: &[u8]) -> usize {
    let mut head = [0u8; 8];
    let n = statement.len().min(8);
    head[..n].copy_from_slice(&statement[..n]);
    let tail = statement.get(8..16).map_or(0, |t| {
        let mut b = [0u8; 8];
        b.copy_from_slice(t);
        u64::from_le_bytes(b)
    });
    let x = (u64::from_le_bytes(head) ^ tail.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 59) as usize % TEMPLATES
}

/// The statement's own bytes in a possibly multi-statement source string, as
/// `CleanQuerytext` delimits them (a length of 0 = to the end), trimmed of whitespace and
/// trailing semicolons.
///
/// # Safety
/// `source` is NUL-terminated; a positive `len` from PostgreSQL lies within it.
unsafe fn statement_bytes<'a>(
    source: *const std::ffi::c_char,
    location: i32,
    len: i32,
) -> &'a [u8] {
    // SAFETY: per the contract.
    let all = unsafe {
        match (usize::try_from(location), usize::try_from(len)) {
            (Ok(start), Ok(len)) if len > 0 => {
                std::slice::from_raw_parts(source.add(start).cast::<u8>(), len)
            }
            (Ok(start), _) => std::ffi::CStr::from_ptr(source.add(start)).to_bytes(),
            _ => std::ffi::CStr::from_ptr(source).to_bytes(),
        }
    };
    normalize::trim_statement(all)
}

/// Core's own jumble, with query ids switched on for the call (as `EnableQueryId()` would
/// do for the whole backend).
unsafe fn jumble(
    query: *mut pg_sys::Query,
    source: *const std::ffi::c_char,
) -> *mut pg_sys::JumbleState {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: backend global, restored also when an ERROR unwinds.
            unsafe { pg_sys::query_id_enabled = self.0 };
        }
    }
    // SAFETY: valid Query and NUL-terminated source text; JumbleQuery asserts
    // IsQueryIdEnabled(), which the flag makes true for the duration of the call.
    unsafe {
        let _restore = Restore(pg_sys::query_id_enabled);
        pg_sys::query_id_enabled = true;
        pg_sys::JumbleQuery(query, source)
    }
}

/// `perf.verify_query_ids`: jumble anyway and compare.
unsafe fn verify(
    query: *mut pg_sys::Query,
    source: *const std::ffi::c_char,
    memo_id: u64,
) -> *mut pg_sys::JumbleState {
    // SAFETY: per the caller's contract.
    unsafe {
        let jstate = jumble(query, source);
        let core_id = (*query).queryId;
        if core_id != memo_id {
            pgrx::warning!(
                "pg_perf: memoized query id {} differs from core's {} for: {}",
                memo_id as i64,
                core_id as i64,
                std::ffi::CStr::from_ptr(source).to_string_lossy()
            );
        }
        jstate
    }
}

/// A catalog changed (called by `pg::inval`'s callbacks, on the backend's thread, never
/// while a `with_memo` closure runs): the next lookup empties the memo.
pub(crate) fn on_catalog_change() {
    with_memo(|m| m.stale = true);
}
