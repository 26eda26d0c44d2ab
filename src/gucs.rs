//! Every `perf.*` configuration parameter, registered once in `_PG_init`.
//!
//! Each GUC is a private, documented static with a typed accessor function, so the rest of
//! the code never touches `GucSetting` directly. The `perf` prefix is reserved: a typo such as
//! `SET perf.enabld = off` is an error instead of a silently ignored placeholder.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `perf.enabled`: master switch. Off means every hook returns straight to the next one.
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

// Hot-path accessors. `GucSetting::get()` checks that it runs on the main thread (a TLS
// lookup each time); the hooks run on the backend's only thread by construction, so they
// read the GUC storage directly.

/// True when pg_perf should do any work in this backend.
#[inline]
pub fn enabled() -> bool {
    // SAFETY: plain read of GUC storage owned by this (single-threaded) backend.
    unsafe { *ENABLED.as_ptr() }
}

/// `perf.track`, read without the thread check (see above).
#[inline]
pub fn track() -> TrackLevel {
    // SAFETY: plain read of GUC storage; the value is an ordinal of TrackLevel's entries.
    match unsafe { *TRACK.as_ptr() } {
        0 => TrackLevel::None,
        2 => TrackLevel::All,
        _ => TrackLevel::Top,
    }
}

/// `perf.track_utility`, read without the thread check.
#[inline]
pub fn track_utility() -> bool {
    // SAFETY: plain read of GUC storage.
    unsafe { *TRACK_UTILITY.as_ptr() }
}

/// `perf.slow_query_ms` as milliseconds (negative = plan capture off).
#[inline]
pub fn slow_query_ms() -> f64 {
    // SAFETY: plain read of GUC storage.
    unsafe { *SLOW_QUERY_MS.as_ptr() as f64 }
}

/// `perf.plan_sample_rate`, read without the thread check.
#[inline]
pub fn plan_sample_rate() -> f64 {
    // SAFETY: plain read of GUC storage.
    unsafe { *PLAN_SAMPLE_RATE.as_ptr() }
}

/// `perf.capture_predicates`, read without the thread check.
#[inline]
pub fn capture_predicates() -> bool {
    // SAFETY: plain read of GUC storage.
    unsafe { *CAPTURE_PREDICATES.as_ptr() }
}

/// `perf.capture_sample_values`, read without the thread check.
#[inline]
pub fn capture_sample_values() -> bool {
    // SAFETY: plain read of GUC storage.
    unsafe { *CAPTURE_SAMPLE_VALUES.as_ptr() }
}

/// `perf.verify_query_ids`, read without the thread check.
#[inline]
pub fn verify_query_ids() -> bool {
    // SAFETY: plain read of GUC storage.
    unsafe { *VERIFY_QUERY_IDS.as_ptr() }
}

/// Which statements `perf.track` records.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum TrackLevel {
    #[name = c"none"]
    None,
    #[name = c"top"]
    Top,
    #[name = c"all"]
    All,
}

/// `perf.track`: none | top (statements sent by clients) | all (also those run inside functions).
static TRACK: GucSetting<TrackLevel> = GucSetting::<TrackLevel>::new(TrackLevel::Top);
/// `perf.track_utility`: also record utility statements (DDL, VACUUM, COPY, ...).
static TRACK_UTILITY: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `perf.max_statements`: statement entries kept in shared memory (restart to change).
static MAX_STATEMENTS: GucSetting<i32> = GucSetting::<i32>::new(5000);
/// `perf.max_query_text`: bytes of normalized query text kept per statement (restart to change).
static MAX_QUERY_TEXT: GucSetting<i32> = GucSetting::<i32>::new(2048);
/// `perf.slow_query_ms`: runs at least this slow get their plan captured; -1 disables.
static SLOW_QUERY_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// `perf.plan_sample_rate`: fraction of executions run with per-node instrumentation.
static PLAN_SAMPLE_RATE: GucSetting<f64> = GucSetting::<f64>::new(0.01);
/// `perf.max_plans`: captured slow plans kept in shared memory (restart to change).
static MAX_PLANS: GucSetting<i32> = GucSetting::<i32>::new(500);
/// `perf.max_plan_size`: bytes kept per captured plan (restart to change).
static MAX_PLAN_SIZE: GucSetting<i32> = GucSetting::<i32>::new(16384);
/// `perf.capture_predicates`: record the columns each statement filters, joins and sorts on.
static CAPTURE_PREDICATES: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `perf.capture_sample_values`: keep a few sample values (constants or bind parameters)
/// per statement in shared memory, for the index advisor's custom plans.
static CAPTURE_SAMPLE_VALUES: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `perf.verify_query_ids`: jumble statements whose queryId came from the per-backend memo
/// too, and warn if the two differ (a check for the memo, off by default).
static VERIFY_QUERY_IDS: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `perf.track_planning`: also time planning (installs a planner hook; restart to change).
static TRACK_PLANNING: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `perf.cache_enabled`: serve and store results in perf.cached()/perf.cached_json()/
/// perf.cached_json_text().
static CACHE_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// `perf.cache_size_mb`: shared memory for cached results (restart to change).
static CACHE_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(64);
/// `perf.cache_max_entry_kb`: larger results are not cached.
static CACHE_MAX_ENTRY_KB: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// `perf.cache_default_ttl`: seconds a cached result lives (0 = until invalidated).
static CACHE_DEFAULT_TTL: GucSetting<i32> = GucSetting::<i32>::new(300);
/// `perf.cache_strict`: a refusal to cache is an ERROR instead of a direct execution.
static CACHE_STRICT: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `perf.advisor_budget_mb`: total size of the indexes perf.suggest_indexes() may propose.
static ADVISOR_BUDGET_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// `perf.save`: keep statistics across clean server restarts.
static SAVE: GucSetting<bool> = GucSetting::<bool>::new(true);

// Accessors for the settings read off the per-statement path (`GucSetting::get`, with its
// main-thread check). Restart-only settings are fixed for the server's life.

/// `perf.max_statements` (restart to change).
pub fn max_statements() -> i32 {
    MAX_STATEMENTS.get()
}

/// `perf.max_query_text`, in bytes (restart to change).
pub fn max_query_text() -> i32 {
    MAX_QUERY_TEXT.get()
}

/// `perf.max_plans` (restart to change).
pub fn max_plans() -> i32 {
    MAX_PLANS.get()
}

/// `perf.max_plan_size`, in bytes (restart to change).
pub fn max_plan_size() -> i32 {
    MAX_PLAN_SIZE.get()
}

/// `perf.track_planning` (restart to change: the planner hook is installed only when on).
pub fn track_planning() -> bool {
    TRACK_PLANNING.get()
}

/// `perf.cache_enabled`.
pub fn cache_enabled() -> bool {
    CACHE_ENABLED.get()
}

/// `perf.cache_size_mb`, in megabytes (restart to change).
pub fn cache_size_mb() -> i32 {
    CACHE_SIZE_MB.get()
}

/// `perf.cache_max_entry_kb`, in kilobytes.
pub fn cache_max_entry_kb() -> i32 {
    CACHE_MAX_ENTRY_KB.get()
}

/// `perf.cache_default_ttl`, in seconds (0 = until invalidated).
pub fn cache_default_ttl() -> i32 {
    CACHE_DEFAULT_TTL.get()
}

/// `perf.cache_strict`.
pub fn cache_strict() -> bool {
    CACHE_STRICT.get()
}

/// `perf.advisor_budget_mb`, in megabytes.
pub fn advisor_budget_mb() -> i32 {
    ADVISOR_BUDGET_MB.get()
}

/// `perf.save`: keep statistics across clean restarts.
pub fn save() -> bool {
    SAVE.get()
}

/// Registers all GUCs and reserves the `perf.` prefix. Called from `_PG_init` only.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"perf.enabled",
        c"Enables pg_perf statement capture and all of its background activity.",
        c"When off, every pg_perf hook passes straight through at near-zero cost; \
          SQL functions still answer from what was collected before.",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );

    GucRegistry::define_enum_guc(
        c"perf.track",
        c"Which statements pg_perf records: none, top (client-issued) or all (also nested).",
        c"'all' also records statements run inside functions and procedures.",
        &TRACK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"perf.track_utility",
        c"Records utility statements (DDL, VACUUM, COPY, ...) as well.",
        c"",
        &TRACK_UTILITY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.max_statements",
        c"Maximum number of distinct statements kept in shared memory.",
        c"When full, the least valuable 5% of a partition (by decayed calls and time) are evicted.",
        &MAX_STATEMENTS,
        100,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.max_query_text",
        c"Bytes of normalized query text kept per statement; longer texts are truncated.",
        c"",
        &MAX_QUERY_TEXT,
        256,
        1_048_576,
        GucContext::Postmaster,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_int_guc(
        c"perf.slow_query_ms",
        c"Executions at least this slow have their plan captured for perf.why_slow().",
        c"-1 disables plan capture.",
        &SLOW_QUERY_MS,
        -1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_float_guc(
        c"perf.plan_sample_rate",
        c"Fraction of executions run with per-node instrumentation (actual rows and timing).",
        c"A captured slow plan has actual row counts only if its run was sampled. Statements \
          known to be slow and lacking such a plan are instrumented on their next run.",
        &PLAN_SAMPLE_RATE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.max_plans",
        c"Maximum number of captured slow-query plans kept in shared memory.",
        c"",
        &MAX_PLANS,
        0,
        100_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.max_plan_size",
        c"Bytes kept per captured plan (JSON); larger plans are stored in compact text form.",
        c"",
        &MAX_PLAN_SIZE,
        1024,
        1_048_576,
        GucContext::Postmaster,
        GucFlags::UNIT_BYTE,
    );
    GucRegistry::define_bool_guc(
        c"perf.capture_predicates",
        c"Records the columns and operators each statement filters, joins, sorts and groups on.",
        c"Captured once per statement and plan shape; read by perf.predicates and the index advisor.",
        &CAPTURE_PREDICATES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"perf.capture_sample_values",
        c"Keeps a few sample values (constants or bind parameters) per statement in shared memory.",
        c"Up to 4 distinct samples of at most 256 bytes each per statement, captured on a \
          thinning schedule (about 8*ln(calls) captures in a statement's life) and used by \
          perf.suggest_indexes() to plan statements with real values. Shown by \
          perf.statement_samples() under the query-text rule. Off: no values are written \
          to shared memory (those kept before stay until perf.reset_stats()).",
        &CAPTURE_SAMPLE_VALUES,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"perf.verify_query_ids",
        c"Checks every memoized query id against core's query jumble.",
        c"With compute_query_id = auto, pg_perf gives repeated statement texts the queryId \
          core computed for the first one, without jumbling again. When on, it jumbles them \
          too and warns about any difference. Costs what compute_query_id = on costs.",
        &VERIFY_QUERY_IDS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"perf.track_planning",
        c"Records planning time and the number of plans per statement.",
        c"Off by default, like pg_stat_statements: when off the planner hook is not even \
          installed, so it costs nothing. Changing it needs a restart.",
        &TRACK_PLANNING,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"perf.cache_enabled",
        c"Serves and stores results in perf.cached(), perf.cached_json() and perf.cached_json_text().",
        c"When off, cached calls execute their query directly.",
        &CACHE_ENABLED,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.cache_size_mb",
        c"Shared memory for cached query results.",
        c"Least recently used results are evicted when it is full.",
        &CACHE_SIZE_MB,
        1,
        65536,
        GucContext::Postmaster,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"perf.cache_max_entry_kb",
        c"Results larger than this are executed but not cached.",
        c"",
        &CACHE_MAX_ENTRY_KB,
        1,
        1_048_576,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"perf.cache_default_ttl",
        c"Seconds a cached result may be served (0 = until its source tables change).",
        c"Per call, the ttl argument overrides it.",
        &CACHE_DEFAULT_TTL,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"perf.cache_strict",
        c"Makes a refusal to cache an ERROR instead of a direct execution.",
        c"Useful in tests and development to see why a query is not cached.",
        &CACHE_STRICT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"perf.advisor_budget_mb",
        c"Total size of the indexes perf.suggest_indexes() may propose.",
        c"The advisor picks the indexes with the best workload benefit per byte until this \
          storage budget is used up.",
        &ADVISOR_BUDGET_MB,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_bool_guc(
        c"perf.save",
        c"Saves statement statistics across clean server shutdowns.",
        c"",
        &SAVE,
        GucContext::Sighup,
        GucFlags::default(),
    );

    // The scheduler's GUCs (src/scheduler/gucs.rs), before the prefix is reserved.
    crate::scheduler::gucs::init();
    // SAFETY: called from _PG_init in the postmaster (or a backend loading the library),
    // single-threaded, after the GUCs above were defined; the string is a static C string.
    unsafe {
        pg_sys::MarkGUCPrefixReserved(c"perf".as_ptr());
    }
}

/// One `perf.*` setting as a DBA sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    pub name: String,
    pub value: String,
    pub unit: Option<String>,
    pub context: String,
    pub description: String,
}

/// Reads every `perf.*` setting from `pg_settings`, so values, units and contexts are
/// exactly what the server itself reports (including `SET` in this session).
pub fn current_settings() -> Vec<SettingRow> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT name::text, setting::text, unit::text, context::text, short_desc::text \
             FROM pg_catalog.pg_settings WHERE name LIKE 'perf.%' ORDER BY name",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(SettingRow {
                name: row.get::<String>(1)?.unwrap_or_default(),
                value: row.get::<String>(2)?.unwrap_or_default(),
                unit: row.get::<String>(3)?,
                context: row.get::<String>(4)?.unwrap_or_default(),
                description: row.get::<String>(5)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| {
        crate::error::PerfError::InvalidQuery {
            detail: format!("could not read pg_settings: {e}"),
            hint: "This is a bug in pg_perf; please report it.".into(),
        }
        .raise()
    })
}

/// Every `perf.*` setting: name, current value, unit, when it can change, and what it does.
#[pg_extern(stable, parallel_safe)]
fn settings() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(value, String),
        name!(unit, Option<String>),
        name!(context, String),
        name!(description, String),
    ),
> {
    TableIterator::new(
        current_settings()
            .into_iter()
            .map(|s| (s.name, s.value, s.unit, s.context, s.description)),
    )
}
