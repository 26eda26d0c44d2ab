//! Every `perf.*` configuration parameter, registered once in `_PG_init`.
//!
//! Each GUC is a documented static with a typed accessor, so the rest of the code never
//! touches `GucSetting` directly. The `perf` prefix is reserved: a typo such as
//! `SET perf.enabld = off` is an error instead of a silently ignored placeholder.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `perf.enabled`: master switch. Off means every hook returns straight to the next one.
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);

/// True when pg_perf should do any work in this backend.
#[inline]
pub fn enabled() -> bool {
    ENABLED.get()
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
