//! SQL API of the result cache: `perf.cached_json()`, `perf.cache_stats()`,
//! `perf.cache_refusals()`, `perf.cache_entries()`, `perf.cache_invalidate()`,
//! `perf.cache_flush()`; `perf.cached()`, `perf.cache_track()`, `perf.cache_untrack()` are
//! SQL in `sql/cache.sql`. The contract is docs/cache-design.md.

use std::ffi::{CStr, CString};

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::invalidate;
use super::key;
use super::store::{self, CacheKey, Counter, Format, Lookup, NewEntry, Refusal, RelDep};
use crate::error::PerfError;
use crate::pg::backend_local::BackendLocal;
use crate::pg::list;
use crate::pg::privilege::{self, Role};
use crate::pg::try_catch::{rethrowing, try_capture, try_capture_query};
use crate::track;

/// Declares a result type for a varlena datum handed to PostgreSQL as is (no round trip
/// through serde): the datum is always of SQL type `$sql` (OID `$oid`).
macro_rules! varlena_result {
    ($name:ident, $oid:ident, $sql:literal) => {
        pub struct $name(pg_sys::Datum);

        impl IntoDatum for $name {
            fn into_datum(self) -> Option<pg_sys::Datum> {
                Some(self.0)
            }
            fn type_oid() -> pg_sys::Oid {
                pg_sys::$oid
            }
        }

        pgrx::impl_sql_translatable!($name, $sql);

        // SAFETY: the datum is a palloc'd varlena of the declared type, returned directly
        // to the caller.
        unsafe impl pgrx::callconv::BoxRet for $name {
            unsafe fn box_into<'fcx>(
                self,
                fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
            ) -> pgrx::datum::Datum<'fcx> {
                // SAFETY: per the trait contract, the datum is returned as the function's
                // result.
                unsafe { fcinfo.return_raw_datum(self.0) }
            }
        }
    };
}

varlena_result!(JsonbDatum, JSONBOID, "jsonb");
varlena_result!(JsonDatum, JSONOID, "json");

/// A jsonb argument taken as its (detoasted) bytes: hashing them for the cache key needs no
/// conversion; they are decoded to JSON only when the query must actually run.
pub struct JsonbArg {
    datum: pg_sys::Datum,
    bytes: &'static [u8],
}

impl JsonbArg {
    /// The value as serde JSON. Rendered by jsonb's own output function and converted from
    /// the database encoding, then parsed: any value jsonb holds that serde cannot (nesting
    /// deeper than 128 levels) is a clear 22023, never a panic.
    fn to_json(&self) -> serde_json::Value {
        // SAFETY: datum is a valid, non-null, detoasted jsonb for the duration of the call;
        // both functions return palloc'd NUL-terminated strings.
        let text = unsafe {
            let jb = self.datum.cast_mut_ptr::<pg_sys::Jsonb>();
            let out = pg_sys::JsonbToCString(
                std::ptr::null_mut(),
                &raw mut (*jb).root,
                self.bytes.len() as i32,
            );
            let len = std::ffi::CStr::from_ptr(out).to_bytes().len() as i32;
            let utf8 = pg_sys::pg_server_to_any(out, len, pg_sys::pg_enc::PG_UTF8 as i32);
            std::ffi::CStr::from_ptr(utf8)
                .to_string_lossy()
                .into_owned()
        };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            crate::error::invalid_argument(
                format!("params cannot be used: {e}"),
                "Pass params as a JSON array with one element per $n parameter, e.g. '[42, \"open\"]'.",
            )
        })
    }
}

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb argument; the detoasted copy lives in the call's context.
        unsafe {
            let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let bytes = std::slice::from_raw_parts(v as *const u8, varsize_any(v));
            Some(JsonbArg {
                datum: pg_sys::Datum::from(v),
                bytes,
            })
        }
    }
}

// SAFETY: same contract as pgrx's own FromDatum-based argument types.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: per the trait contract.
        unsafe {
            arg.unbox_arg_using_from_datum()
                .unwrap_or_else(|| panic!("argument {index} must not be null"))
        }
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: per the trait contract.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

pgrx::impl_sql_translatable!(JsonbArg, "jsonb");

/// Copies `bytes` (a varlena image with a 4-byte header) into a palloc'd datum.
fn datum_from_bytes(bytes: &[u8]) -> pg_sys::Datum {
    // SAFETY: bytes is a complete varlena (header included) produced by PostgreSQL.
    unsafe {
        let p = pg_sys::palloc(bytes.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        pg_sys::Datum::from(p)
    }
}

/// Runs the query without the cache (a refusal or the caller's own writes) and returns the
/// result in `format`.
fn executed(p: &Prepared, format: Format) -> pg_sys::Datum {
    datum_from_bytes(&in_format(execute(p), format))
}

/// A freshly computed result (jsonb bytes) in the form `format` stores and serves.
fn in_format(jsonb: Vec<u8>, format: Format) -> Vec<u8> {
    match format {
        Format::Jsonb => jsonb,
        Format::JsonText => jsonb_text(&jsonb),
    }
}

/// jsonb's own text rendering (jsonb_out) of a jsonb image, as a `json`/`text` varlena
/// image: the very text a client reads from the jsonb form.
fn jsonb_text(jsonb: &[u8]) -> Vec<u8> {
    // SAFETY: the jsonb image is copied into palloc'd (aligned) memory and rendered by
    // jsonb_out, which returns a palloc'd NUL-terminated string.
    let text = unsafe {
        let mut output = pg_sys::Oid::INVALID;
        let mut varlena = false;
        pg_sys::getTypeOutputInfo(pg_sys::JSONBOID, &mut output, &mut varlena);
        CStr::from_ptr(pg_sys::OidOutputFunctionCall(
            output,
            datum_from_bytes(jsonb),
        ))
    }
    .to_bytes();
    varlena_image(text)
}

/// Per-backend copy buffer, sized for the largest entry once, so a hit never allocates while
/// holding a partition lock.
static BUFFER: BackendLocal<Vec<u8>> = BackendLocal::new(Vec::new());

fn max_entry_bytes() -> usize {
    crate::gucs::cache_max_entry_kb().max(1) as usize * 1024
}

fn now_us() -> i64 {
    // SAFETY: plain call; cannot fail.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn interval_us(i: &Interval) -> i64 {
    const DAY_US: i64 = 86_400_000_000;
    i.micros()
        .saturating_add((i.days() as i64).saturating_mul(DAY_US))
        .saturating_add((i.months() as i64).saturating_mul(30 * DAY_US))
}

fn refuse(r: Refusal) {
    store::count_refusal(r);
    if crate::gucs::cache_strict() {
        PerfError::NotCacheable { reason: r.as_str() }.raise();
    }
}

/// The query, analyzed and with its parameters converted to the types PostgreSQL inferred.
struct Prepared {
    wrapped: CString,
    types: Vec<pg_sys::Oid>,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<std::ffi::c_char>,
    query: *mut pg_sys::Query,
    source: CString,
}

fn json_param_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn bad_query(detail: String, hint: &str) -> ! {
    PerfError::InvalidQuery {
        detail,
        hint: hint.into(),
    }
    .raise()
}

/// Parses and analyzes `query` (exactly one SELECT), infers parameter types and converts the
/// JSON parameter values to them.
#[allow(ffi_unwind_calls)] // raw calls that longjmp, caught by try_capture (see `raw`)
fn prepare(query: &str, params: &[serde_json::Value], format: Format) -> Prepared {
    let body = query.trim().trim_end_matches(';').trim_end();
    let Ok(source) = CString::new(body) else {
        bad_query(
            "the query contains a NUL byte".into(),
            "Pass the query text as is.",
        )
    };
    // Newlines keep a trailing `-- comment` from swallowing the wrapper's closing text.
    // `t.*`, not `t`: a result column named t would otherwise be aggregated instead of the row.
    let wrapped = CString::new(format!(
        "SELECT coalesce(jsonb_agg(t.*), '[]'::jsonb) FROM (\n{body}\n) t"
    ))
    .unwrap_or_else(|_| {
        bad_query(
            "the query contains a NUL byte".into(),
            "Pass the query text as is.",
        )
    });
    // SAFETY: parse analysis of a NUL-terminated string in the current memory context; every
    // pointer comes from PostgreSQL and is used before the context is reset.
    unsafe {
        let src = source.as_ptr();
        let raw = user_query_step(src, || raw::pg_parse_query(src));
        if raw.is_null() || (*raw).length != 1 {
            bad_query(
                format!("{}() takes exactly one SQL statement", format.function()),
                "Pass a single SELECT, without a second statement after a semicolon.",
            );
        }
        let stmt = list::first::<pg_sys::RawStmt>(raw).unwrap_or(std::ptr::null_mut());
        let mut ptypes: *mut pg_sys::Oid = std::ptr::null_mut();
        let mut nparams: i32 = 0;
        let (pt, np) = (&raw mut ptypes, &raw mut nparams);
        let q = user_query_step(src, || {
            raw::parse_analyze_varparams(stmt, src, pt, np, std::ptr::null_mut())
        });
        if (*q).commandType != pg_sys::CmdType::CMD_SELECT || !(*q).utilityStmt.is_null() {
            bad_query(
                format!("{}() only runs SELECT queries", format.function()),
                "Run data-modifying statements directly; only read queries can be cached.",
            );
        }
        let n = nparams.max(0) as usize;
        if params.len() != n {
            PerfError::InvalidArgument {
                what: format!(
                    "the query has {n} parameter(s) but params has {} value(s)",
                    params.len()
                ),
                hint: "Pass params as a JSON array with one value per $n, e.g. '[42, \"x\"]'."
                    .into(),
            }
            .raise();
        }
        let mut types = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        let mut nulls = Vec::with_capacity(n);
        for (i, v) in params.iter().enumerate() {
            let mut t = *ptypes.add(i);
            if t == pg_sys::UNKNOWNOID || t == pg_sys::InvalidOid {
                t = pg_sys::TEXTOID;
            }
            types.push(t);
            match json_param_text(v) {
                None => {
                    values.push(pg_sys::Datum::from(0));
                    nulls.push(b'n' as std::ffi::c_char);
                }
                Some(text) => {
                    let c = CString::new(text).unwrap_or_else(|_| {
                        bad_query(
                            "a parameter contains a NUL byte".into(),
                            "Remove NUL bytes from params.",
                        )
                    });
                    let mut infunc = pg_sys::Oid::INVALID;
                    let mut ioparam = pg_sys::Oid::INVALID;
                    pg_sys::getTypeInputInfo(t, &mut infunc, &mut ioparam);
                    let text = c.as_ptr();
                    let value =
                        try_capture(|| raw::OidInputFunctionCall(infunc, text, ioparam, -1))
                            .unwrap_or_else(|e| e.raise());
                    values.push(value);
                    nulls.push(b' ' as std::ffi::c_char);
                }
            }
        }
        Prepared {
            wrapped,
            types,
            values,
            nulls,
            query: q,
            source,
        }
    }
}

/// What a cacheable query reads, or why it cannot be cached.
#[allow(ffi_unwind_calls)] // raw calls that longjmp, caught by try_capture (see `raw`)
fn analyze(p: &Prepared) -> Result<Vec<u32>, Refusal> {
    // SAFETY: rewriting and planning the analyzed query in the current memory context.
    unsafe {
        let (src, query) = (p.source.as_ptr(), p.query);
        let rewritten = user_query_step(src, || raw::pg_rewrite_query(query));
        if rewritten.is_null() || (*rewritten).length != 1 {
            return Err(Refusal::NotReadOnly);
        }
        let q = list::first::<pg_sys::Query>(rewritten).unwrap_or(std::ptr::null_mut());
        if (*q).commandType != pg_sys::CmdType::CMD_SELECT {
            return Err(Refusal::NotReadOnly);
        }
        if (*q).hasModifyingCTE {
            return Err(Refusal::NotReadOnly);
        }
        if !(*q).rowMarks.is_null() && (*(*q).rowMarks).length > 0 {
            return Err(Refusal::RowLocks);
        }
        if pg_sys::contain_mutable_functions(q as *mut pg_sys::Node) {
            return Err(Refusal::MutableFunction);
        }
        let n = p.types.len() as i32;
        let params = pg_sys::makeParamList(n);
        for i in 0..p.types.len() {
            let d = (*params).params.as_mut_ptr().add(i);
            (*d).value = p.values[i];
            (*d).isnull = p.nulls[i] == b'n' as std::ffi::c_char;
            (*d).pflags = pg_sys::PARAM_FLAG_CONST as u16;
            (*d).ptype = p.types[i];
        }
        let plan = user_query_step(src, || raw::pg_plan_query(q, src, 0, params));
        let oids = (*plan).relationOids;
        let mut relids = Vec::new();
        for oid in list::oids(oids) {
            let oid = oid.to_u32();
            if !relids.contains(&oid) {
                relids.push(oid);
            }
        }
        Ok(relids)
    }
}

/// Checks, with a snapshot taken now, that every relation can back a cached result: base
/// tables tracked (tracking committed, trigger enabled ALWAYS), no RLS, no security
/// barrier views, nothing temporary/unlogged/system/foreign/materialized.
fn check_relations(relids: &[u32]) -> Result<(), Refusal> {
    if relids.len() > store::MAX_RELS {
        return Err(Refusal::TooManyRelations);
    }
    let oids: Vec<pg_sys::Oid> = relids.iter().map(|&r| pg_sys::Oid::from(r)).collect();
    // SAFETY: a snapshot of everything committed now, pushed for the SPI query below (which
    // runs read-only on the active snapshot) and popped right after it; an error aborts
    // the transaction, which unwinds the snapshot stack.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let verdict = Spi::connect(|client| {
        let rows = client.select(
            "SELECT c.relkind::text, c.relpersistence::text, c.relrowsecurity,
                    c.oid < 16384 OR c.relnamespace = 'pg_catalog'::regnamespace,
                    EXISTS (SELECT 1 FROM unnest(c.reloptions) o
                             WHERE o ~* '^security_barrier=(true|on|yes|1)$'),
                    EXISTS (SELECT 1 FROM perf.cache_tracked t WHERE t.relid = c.oid)
               FROM pg_catalog.pg_class c WHERE c.oid = ANY($1)",
            None,
            &[oids.into()],
        )?;
        let mut seen = 0;
        let mut verdict = Ok(());
        for r in rows {
            seen += 1;
            let kind = r.get::<String>(1)?.unwrap_or_default();
            let persistence = r.get::<String>(2)?.unwrap_or_default();
            let rls = r.get::<bool>(3)?.unwrap_or(false);
            let system = r.get::<bool>(4)?.unwrap_or(true);
            let barrier = r.get::<bool>(5)?.unwrap_or(false);
            let tracked = r.get::<bool>(6)?.unwrap_or(false);
            let this = if system || persistence != "p" || !matches!(kind.as_str(), "r" | "p" | "v")
            {
                Err(Refusal::UnsupportedRelation)
            } else if rls || barrier {
                Err(Refusal::RowSecurity)
            } else if kind != "v" && !tracked {
                Err(Refusal::UntrackedTable)
            } else {
                Ok(())
            };
            if verdict.is_ok() {
                verdict = this;
            }
        }
        if seen != relids.len() && verdict.is_ok() {
            verdict = Err(Refusal::UnsupportedRelation);
        }
        Ok::<_, pgrx::spi::Error>(verdict)
    });
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    verdict.unwrap_or(Err(Refusal::UnsupportedRelation))
}

use crate::pg::raw;

/// Runs one parse/analyze/rewrite/plan step of the user's query (see `raw`), with SPI's
/// error context for `query`.
///
/// # Safety
/// `step` only calls C; `query` is NUL-terminated and alive for the call.
unsafe fn user_query_step<R>(query: *const std::ffi::c_char, step: impl FnOnce() -> R + Copy) -> R {
    // SAFETY: per this function's contract.
    unsafe { try_capture_query(query, step) }.unwrap_or_else(|e| e.raise())
}

/// Runs the wrapped query through SPI (a fresh snapshot in READ COMMITTED) and returns the
/// jsonb result's bytes.
fn execute(p: &Prepared) -> Vec<u8> {
    execute_checked(p).0
}

/// `execute`, also returning the relations the executed statement was analyzed against
/// (its plan source's dependencies: the relations named in the query and the views it
/// expands, not the partitions the planner adds).
#[allow(ffi_unwind_calls)] // raw calls that longjmp, caught by try_capture (see `raw`)
fn execute_checked(p: &Prepared) -> (Vec<u8>, Vec<u32>) {
    // SAFETY: plain SPI use: connect, prepare and execute with the converted parameters,
    // copy the single jsonb value and the plan source's relation OIDs out before
    // SPI_finish frees their memory.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            bad_query(
                "could not connect to SPI".into(),
                "This is a bug in pg_perf; please report it.",
            );
        }
        // SPI adds its own error context (the query text, or its internal position).
        let (query, nargs) = (p.wrapped.as_ptr(), p.types.len() as i32);
        let types = p.types.as_ptr() as *mut pg_sys::Oid;
        let plan =
            try_capture(|| raw::SPI_prepare(query, nargs, types)).unwrap_or_else(|e| e.raise());
        if plan.is_null() {
            bad_query(
                "the cached query could not be prepared".into(),
                "Check the query text.",
            );
        }
        let (values, nulls) = (p.values.as_ptr() as *mut pg_sys::Datum, p.nulls.as_ptr());
        let rc = try_capture(|| raw::SPI_execute_plan(plan, values, nulls, false, 0))
            .unwrap_or_else(|e| e.raise());
        let mut rels = Vec::new();
        let sources = pg_sys::SPI_plan_get_plan_sources(plan);
        for src in list::ptrs::<pg_sys::CachedPlanSource>(sources) {
            rels.extend(list::oids((*src).relationOids).map(|o| o.to_u32()));
        }
        let mut out = Vec::new();
        if rc == pg_sys::SPI_OK_SELECT as i32 && pg_sys::SPI_processed == 1 {
            let tt = pg_sys::SPI_tuptable;
            let mut isnull = false;
            let d = pg_sys::SPI_getbinval(*(*tt).vals, (*tt).tupdesc, 1, &mut isnull);
            if !isnull {
                let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
                let len = varsize_any(v);
                out.extend_from_slice(std::slice::from_raw_parts(v as *const u8, len));
            }
        }
        pg_sys::SPI_finish();
        if out.is_empty() {
            bad_query(
                "the cached query did not produce a result".into(),
                "Check the query text.",
            );
        }
        // A packed (1-byte header) varlena must become a 4-byte header one to be returned.
        (normalize_varlena(out), rels)
    }
}

/// Size of a varlena with either header form.
unsafe fn varsize_any(v: *const pg_sys::varlena) -> usize {
    // SAFETY: v points at a detoasted varlena.
    unsafe {
        let first = *(v as *const u8);
        if first & 0x01 == 0x01 {
            (first >> 1) as usize // 1-byte header (little-endian layout)
        } else {
            ((*(v as *const u32)) >> 2) as usize
        }
    }
}

/// Turns a short-header varlena image into a regular 4-byte-header one.
fn normalize_varlena(bytes: Vec<u8>) -> Vec<u8> {
    match bytes.first() {
        Some(b) if b & 0x01 == 0x01 => varlena_image(&bytes[1..]),
        _ => bytes,
    }
}

/// `data` as a varlena image with a regular 4-byte header (little-endian layout:
/// total length << 2).
fn varlena_image(data: &[u8]) -> Vec<u8> {
    let total = data.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&((total as u32) << 2).to_le_bytes());
    out.extend_from_slice(data);
    out
}

// Backend globals behind GUCs that change a query's output and that pgrx does not bind.
extern "C" {
    /// `bytea_output` (an enum value).
    static bytea_output: std::ffi::c_int;
    /// `lc_monetary` as set.
    static locale_monetary: *mut std::ffi::c_char;
    /// `lc_numeric` as set (to_char's decimal point and group separator).
    static locale_numeric: *mut std::ffi::c_char;
    /// `lc_time` as set (to_char's TM names).
    static locale_time: *mut std::ffi::c_char;
    /// `xmlbinary` (an enum value).
    static xmlbinary: std::ffi::c_int;
    /// `xmloption` (an enum value).
    static xmloption: std::ffi::c_int;
}

/// Settings that change a query's output, for the cache key, read from the variables behind
/// them: looking each GUC up by name costs more than the rest of the key. String settings
/// are pointers to the live values (no copies on the hit path); enum and integer settings
/// are their values, the same in every backend.
struct OutputSettings {
    search_path: Option<&'static [u8]>,
    time_zone: Option<&'static [u8]>,
    lc_monetary: Option<&'static [u8]>,
    lc_numeric: Option<&'static [u8]>,
    lc_time: Option<&'static [u8]>,
    /// default_text_search_config (to_tsvector and friends without a configuration).
    text_search_config: Option<&'static [u8]>,
    /// DateStyle and its field order, IntervalStyle, extra_float_digits, bytea_output,
    /// xmlbinary, xmloption, backslash_quote, and as one bit each:
    /// transform_null_equals, standard_conforming_strings, array_nulls, row_security,
    /// quote_all_identifiers (see `NUMBERS`).
    numbers: [u8; NUMBERS * 4],
}

/// Integer settings in `OutputSettings::numbers`.
const NUMBERS: usize = 9;

impl OutputSettings {
    fn current() -> OutputSettings {
        fn bytes(p: *const std::ffi::c_char) -> Option<&'static [u8]> {
            // SAFETY: p is null or a GUC's NUL-terminated current value (or, for the time
            // zone, the session zone's name), which stays valid until the setting changes;
            // that cannot happen while the key is computed.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
        }
        // SAFETY: plain reads of backend globals; session_timezone is set at backend start.
        unsafe {
            let zone = if pg_sys::session_timezone.is_null() {
                std::ptr::null()
            } else {
                pg_sys::pg_get_timezone_name(pg_sys::session_timezone)
            };
            let mut numbers = [0u8; NUMBERS * 4];
            let flags = pg_sys::Transform_null_equals as i32
                | (pg_sys::standard_conforming_strings as i32) << 1
                | (pg_sys::Array_nulls as i32) << 2
                | (pg_sys::row_security as i32) << 3
                | (pg_sys::quote_all_identifiers as i32) << 4;
            let values: [i32; NUMBERS] = [
                pg_sys::DateStyle,
                pg_sys::DateOrder,
                pg_sys::IntervalStyle,
                pg_sys::extra_float_digits,
                bytea_output,
                xmlbinary,
                xmloption,
                pg_sys::backslash_quote,
                flags,
            ];
            for (dst, v) in numbers.chunks_exact_mut(4).zip(values) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            OutputSettings {
                search_path: bytes(pg_sys::namespace_search_path),
                time_zone: bytes(zone),
                lc_monetary: bytes(locale_monetary),
                lc_numeric: bytes(locale_numeric),
                lc_time: bytes(locale_time),
                text_search_config: bytes(pg_sys::TSCurrentConfig),
                numbers,
            }
        }
    }

    /// The key parts, with `temp` (this session's temporary-relation signature).
    fn parts<'a>(&'a self, temp: &'a [u8]) -> [Option<&'a [u8]>; 8] {
        [
            self.search_path,
            self.time_zone,
            self.lc_monetary,
            self.lc_numeric,
            self.lc_time,
            self.text_search_config,
            Some(&self.numbers),
            Some(temp),
        ]
    }
}

fn param_values(params: &JsonbArg) -> Vec<serde_json::Value> {
    match params.to_json() {
        serde_json::Value::Array(v) => v,
        _ => Vec::new(),
    }
}

/// A query's result as a JSON array of row objects, from the shared-memory cache when a
/// valid entry exists, else executed (and cached when safe). See docs/cache-design.md.
#[pg_extern(volatile, parallel_unsafe)]
fn cached_json(
    query: Option<&str>,
    params: default!(Option<JsonbArg>, "'[]'"),
    ttl: default!(Option<Interval>, "NULL"),
) -> JsonbDatum {
    let (query, params) = required(query, params, Format::Jsonb);
    // SAFETY: nothing between pgrx's wrapper and here needs dropping.
    unsafe { rethrowing(|| JsonbDatum(cached_result(query, &params, ttl, Format::Jsonb))) }
}

/// The same result as `cached_json`, as `json`: jsonb's text rendering, made once when the
/// entry is stored, so a hit is served without rendering anything (the fastest form, for
/// clients that parse the JSON themselves). Its entries are separate from `cached_json`'s.
#[pg_extern(volatile, parallel_unsafe)]
fn cached_json_text(
    query: Option<&str>,
    params: default!(Option<JsonbArg>, "'[]'"),
    ttl: default!(Option<Interval>, "NULL"),
) -> JsonDatum {
    let (query, params) = required(query, params, Format::JsonText);
    // SAFETY: nothing between pgrx's wrapper and here needs dropping.
    unsafe { rethrowing(|| JsonDatum(cached_result(query, &params, ttl, Format::JsonText))) }
}

/// Raises null_value_not_allowed (22004) for a NULL argument that has no meaning.
fn null_argument(what: String, hint: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(
        pgrx::PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        what,
        "pg_perf",
    )
    .set_hint(hint)
    .report(pgrx::PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// The query and params of a cached call; NULL for either is an error (a NULL ttl means
/// the default).
fn required(query: Option<&str>, params: Option<JsonbArg>, format: Format) -> (&str, JsonbArg) {
    let Some(query) = query else {
        null_argument(
            format!("{}(): query must not be NULL", format.function()),
            "Pass the text of one SELECT statement.",
        )
    };
    let Some(params) = params else {
        null_argument(
            format!("{}(): params must not be NULL", format.function()),
            "Pass a JSON array with one value per $n, or '[]' (the default) for none; \
             a NULL parameter value is a JSON null inside the array: '[null]'.",
        )
    };
    (query, params)
}

/// The result of `query` with `params` in `format`: from the cache, or executed (and stored
/// when safe).
fn cached_result(
    query: &str,
    params: &JsonbArg,
    ttl: Option<Interval>,
    format: Format,
) -> pg_sys::Datum {
    if !store::available() {
        PerfError::SharedMemoryMissing {
            what: "result cache",
        }
        .raise();
    }
    // jsonb's root header: the container type bits say whether it is an array.
    const JB_FARRAY: u32 = 0x4000_0000;
    const JB_FSCALAR: u32 = 0x1000_0000;
    let root = params
        .bytes
        .get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if !matches!(root, Some(h) if h & JB_FARRAY != 0 && h & JB_FSCALAR == 0) {
        PerfError::InvalidArgument {
            what: "params must be a JSON array".into(),
            hint: "Pass one value per $n, e.g. '[42, \"x\"]'::jsonb, or '[]'.".into(),
        }
        .raise()
    }
    let ttl_us = match ttl {
        Some(i) => {
            let us = interval_us(&i);
            if us < 0 {
                PerfError::InvalidArgument {
                    what: format!("{}(): ttl must not be negative", format.function()),
                    hint: "Pass a positive interval such as '5 minutes', '0' for no expiry, \
                           or NULL for perf.cache_default_ttl."
                        .into(),
                }
                .raise()
            }
            us
        }
        None => crate::gucs::cache_default_ttl() as i64 * 1_000_000,
    };
    // Conditions under which the cache is not used at all.
    // SAFETY: plain read of a backend global.
    let isolation = unsafe { pg_sys::XactIsoLevel };
    let in_recovery = || {
        // SAFETY: a plain call that reads shared state and cannot fail.
        unsafe { pg_sys::RecoveryInProgress() }
    };
    let pre_refusal = if !crate::gucs::cache_enabled() {
        Some(Refusal::Disabled)
    } else if isolation >= pg_sys::XACT_REPEATABLE_READ as i32 {
        Some(Refusal::Isolation)
    } else if in_recovery() {
        Some(Refusal::Recovery)
    } else if track::own_global_ddl() {
        // This transaction changed something every entry may depend on.
        Some(Refusal::OwnWrites)
    } else {
        None
    };
    // SAFETY: plain reads of backend globals.
    let (userid, dbid) = unsafe { (pg_sys::GetUserId().to_u32(), pg_sys::MyDatabaseId.to_u32()) };
    let cache_key = CacheKey {
        hash: key::hash(
            query.as_bytes(),
            params.bytes,
            &OutputSettings::current().parts(&invalidate::temp_signature().to_le_bytes()),
        ),
        userid,
        dbid,
        format,
    };
    let now = now_us();

    if pre_refusal.is_none() {
        let max = max_entry_bytes();
        // SAFETY: the only use of BUFFER; the closure does not reach it again.
        let (lookup, hit) = unsafe {
            BUFFER.with(|buf| {
                if buf.capacity() < max {
                    buf.reserve(max - buf.len());
                }
                let lookup = crate::track::with_written_slots(|written| {
                    store::lookup(&cache_key, now, written, buf)
                });
                let hit = (lookup == Lookup::Hit).then(|| datum_from_bytes(buf));
                (lookup, hit)
            })
        };
        match lookup {
            Lookup::Hit => {
                store::count(Counter::Hits);
                return hit.unwrap_or_else(pg_sys::Datum::null);
            }
            Lookup::OwnWrites => {
                refuse(Refusal::OwnWrites);
                let p = prepare(query, &param_values(params), format);
                return executed(&p, format);
            }
            Lookup::Miss => store::count(Counter::Misses),
        }
    }

    let params_json = params.to_json();
    let values = match &params_json {
        serde_json::Value::Array(v) => v.as_slice(),
        _ => &[],
    };
    let params_text = params_json.to_string();
    let p = prepare(query, values, format);
    if let Some(r) = pre_refusal {
        refuse(r);
        return executed(&p, format);
    }
    // Checked once before registry slots are claimed (untracked and temporary relations
    // never get one), and again below after the generations were read.
    let relids = match analyze(&p).and_then(|relids| check_relations(&relids).map(|_| relids)) {
        Ok(relids) => relids,
        Err(r) => {
            refuse(r);
            return executed(&p, format);
        }
    };
    // The global generation before the slots are looked up: a registry sweep that frees a
    // slot after its lookup moves it (see `track`).
    let (global_before, global_busy_before) = track::global_state();
    let mut deps = Vec::with_capacity(relids.len());
    for &relid in &relids {
        let Some(slot) = track::relation_slot(dbid, relid, true) else {
            refuse(Refusal::CacheFull);
            return executed(&p, format);
        };
        deps.push(RelDep {
            slot,
            relid,
            generation: 0,
        });
    }
    if crate::track::with_written_slots(|written| deps.iter().any(|d| written.contains(&d.slot))) {
        refuse(Refusal::OwnWrites);
        return executed(&p, format);
    }

    // Generations and committing writers before the relations are checked and the query
    // planned and run ...
    let mut busy = global_busy_before > 0;
    for d in deps.iter_mut() {
        let (generation, committing) = track::relation_state(d.slot);
        d.generation = generation;
        busy |= committing > 0;
    }
    // ... with the catalog state every bracket that already ended left behind (brackets
    // end after their commit's invalidations were sent) ...
    // SAFETY: plain call; processes pending catalog invalidations.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    // ... tracking as committed now, not as of the statement's snapshot (an untrack or
    // disabled trigger committed meanwhile bumps a generation read above or is seen here) ...
    if let Err(r) = check_relations(&relids) {
        refuse(r);
        return executed(&p, format);
    }
    let (jsonb, ran_on) = execute_checked(&p);
    let result = in_format(jsonb, format);
    // ... and the query ran on relations it was checked for (a relation created, renamed or
    // dropped meanwhile can make the same text resolve to another one).
    busy |= ran_on.iter().any(|r| !relids.contains(r));
    // ... and after it: store only if no generation moved and nobody was committing. A
    // writer whose commit overlapped the snapshot is caught by one of the two checks; one
    // that commits later bumps the generation before its changes become visible.
    let (global_after, global_busy_after) = track::global_state();
    busy |= global_busy_after > 0 || global_after != global_before;
    for d in &deps {
        let (generation, committing) = track::relation_state(d.slot);
        busy |= committing > 0 || generation != d.generation;
    }
    if busy {
        refuse(Refusal::ConcurrentWrite);
    } else if result.len() > max_entry_bytes() {
        refuse(Refusal::TooLarge);
    } else {
        let stored = store::store(&NewEntry {
            key: cache_key,
            deps: &deps,
            global_generation: global_before,
            now,
            expires: if ttl_us > 0 {
                now.saturating_add(ttl_us)
            } else {
                0
            },
            text: query,
            params: &params_text,
            data: &result,
        });
        if !stored {
            refuse(Refusal::CacheFull);
        }
    }
    datum_from_bytes(&result)
}

/// Cache-wide numbers.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn cache_stats() -> TableIterator<
    'static,
    (
        name!(entries, i64),
        name!(bytes, i64),
        name!(capacity_bytes, i64),
        name!(hits, i64),
        name!(misses, i64),
        name!(hit_ratio, Option<f64>),
        name!(evictions, i64),
        name!(expirations, i64),
        name!(invalidations, i64),
        name!(stores, i64),
        name!(refusals, i64),
    ),
> {
    privilege::require(Role::Reader, "perf.cache_stats()");
    let (entries, bytes, capacity) = store::usage();
    let hits = store::counter(Counter::Hits);
    let misses = store::counter(Counter::Misses);
    let refusals: u64 = Refusal::ALL.iter().map(|r| store::refusal_count(*r)).sum();
    let lookups = hits + misses;
    TableIterator::once((
        entries as i64,
        bytes as i64,
        capacity as i64,
        hits as i64,
        misses as i64,
        (lookups > 0).then(|| hits as f64 / lookups as f64),
        store::counter(Counter::Evictions) as i64,
        store::counter(Counter::Expirations) as i64,
        store::counter(Counter::Invalidations) as i64,
        store::counter(Counter::Stores) as i64,
        refusals as i64,
    ))
}

/// How often results were not cached, by reason.
#[pg_extern(volatile, parallel_safe)]
fn cache_refusals() -> TableIterator<'static, (name!(reason, String), name!(count, i64))> {
    privilege::require(Role::Reader, "perf.cache_refusals()");
    TableIterator::new(
        Refusal::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), store::refusal_count(*r) as i64))
            .collect::<Vec<_>>(),
    )
}

/// Entries in the cache (query texts and parameters are shown only to superusers, members of
/// pg_read_all_stats, and the user who cached them).
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn cache_entries() -> TableIterator<
    'static,
    (
        name!(query, Option<String>),
        name!(params, Option<String>),
        name!(userid, pg_sys::Oid),
        name!(bytes, i32),
        name!(hits, i64),
        name!(created, Option<TimestampWithTimeZone>),
        name!(expires, Option<TimestampWithTimeZone>),
        name!(valid, bool),
        name!(format, &'static str),
        name!(relations, Vec<pg_sys::Oid>),
    ),
> {
    privilege::require(Role::Reader, "perf.cache_entries()");
    // SAFETY: privilege check and plain reads of backend globals.
    let (all, me, db) = unsafe {
        (
            pg_sys::superuser()
                || pg_sys::has_privs_of_role(
                    pg_sys::GetUserId(),
                    pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS),
                ),
            pg_sys::GetUserId().to_u32(),
            pg_sys::MyDatabaseId.to_u32(),
        )
    };
    let rows: Vec<_> = store::entries()
        .into_iter()
        .filter(|e| e.dbid == db)
        .map(|e| {
            let visible = all || e.userid == me;
            (
                visible.then(|| e.text.clone()),
                visible.then(|| e.params.clone()),
                pg_sys::Oid::from(e.userid),
                e.bytes as i32,
                e.hits as i64,
                TimestampWithTimeZone::try_from(e.created).ok(),
                (e.expires != 0)
                    .then(|| TimestampWithTimeZone::try_from(e.expires).ok())
                    .flatten(),
                e.valid,
                e.format.as_str(),
                e.relids.iter().map(|&r| pg_sys::Oid::from(r)).collect(),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Drops cached results that depend on the relation with OID `rel`; returns how many.
/// (SQL callers use `perf.cache_invalidate(regclass)`, defined in sql/cache.sql.)
#[pg_extern(volatile)]
fn cache_invalidate_oid(rel: pg_sys::Oid) -> i64 {
    privilege::require(Role::Admin, "perf.cache_invalidate()");
    // SAFETY: catalog lookups by OID (the owner check only for an existing relation) and
    // plain reads of backend globals.
    let (owner, db) = unsafe {
        let exists = pg_sys::SearchSysCacheExists(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(rel),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
            pg_sys::Datum::from(0),
        );
        (
            exists && pg_sys::pg_class_ownercheck(rel, pg_sys::GetUserId()),
            pg_sys::MyDatabaseId.to_u32(),
        )
    };
    if !owner {
        // SAFETY: catalog lookup by OID; NULL when the relation does not exist.
        let name = unsafe { pg_sys::get_rel_name(rel) };
        let name = if name.is_null() {
            format!("with OID {}", rel.to_u32())
        } else {
            // SAFETY: a palloc'd NUL-terminated relation name.
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        };
        PerfError::InsufficientPrivilege {
            what: format!("perf.cache_invalidate: must be the owner of relation {name}"),
            hint: "Only the owner of a table (or a superuser) can invalidate its cached results; \
                   committed writes invalidate them automatically."
                .into(),
        }
        .raise();
    }
    let relid = rel.to_u32();
    if let Some(slot) = track::relation_slot(db, relid, false) {
        track::bump(slot);
    }
    store::invalidate(|dbid, deps| dbid == db && deps.iter().any(|d| d.relid == relid)) as i64
}

/// Drops every cached result; returns how many.
#[pg_extern(volatile)]
fn cache_flush() -> i64 {
    privilege::require(Role::Admin, "perf.cache_flush()");
    track::global_begin();
    track::global_end();
    store::invalidate(|_, _| true) as i64
}
