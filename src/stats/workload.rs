//! The statement table as other capabilities may read it (the index advisor's workload):
//! owned copies of the current database's entries, with the text-visibility rule of
//! `perf.statements` (pg_stat_statements' rule) already applied. Nothing outside `stats`
//! reads the statement table in shared memory; it comes here.
//!
//! The plan facts other capabilities share with statement capture (what a plan filters,
//! joins, sorts and groups on; EXPLAIN of a live execution) are [`super::predicates`] and
//! [`super::plan_capture`], with their record types re-exported as
//! [`super::PredicateKind`] and [`super::PredicateRec`].

use pgrx::pg_sys;

use super::shmem;

/// What a statement text shows to a caller who may not read it (as `perf.statements`).
pub const HIDDEN: &str = "<insufficient privilege>";

/// Whether the caller may read the texts and plans of other roles' statements: superuser or
/// a member of pg_read_all_stats, like pg_stat_statements. Without it a role sees the texts
/// of its own statements only.
pub fn caller_reads_all() -> bool {
    // SAFETY: plain catalog privilege checks in a transaction.
    unsafe {
        pg_sys::superuser()
            || pg_sys::has_privs_of_role(
                pg_sys::GetUserId(),
                pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS),
            )
    }
}

/// The text of a statement recorded for `userid`, as a caller shows it: itself when
/// `reads_all` ([`caller_reads_all`]) or the caller (`me`) ran it, [`HIDDEN`] otherwise.
pub fn shown_text(text: &str, userid: u32, reads_all: bool, me: u32) -> String {
    if reads_all || userid == me {
        text.to_string()
    } else {
        HIDDEN.to_string()
    }
}

/// One entry of the statement table (a statement as run by one role, top level or nested),
/// copied out of shared memory.
#[derive(Clone, Debug)]
pub struct Statement {
    pub queryid: i64,
    /// The normalized text (`$n` for constants). For planning inside the server; shown to
    /// the caller only through [`Statement::shown_text`].
    pub text: String,
    /// The caller ran this statement (the entry is the caller's own).
    pub own: bool,
    /// The caller may read its text ([`caller_reads_all`] or [`Statement::own`]).
    pub visible: bool,
    pub calls: i64,
    /// Rows processed over all calls (rows written, for a write statement).
    pub rows: i64,
    pub total_time_ms: f64,
}

impl Statement {
    /// The text as `perf.statements` shows it to the caller.
    pub fn shown_text(&self) -> &str {
        if self.visible {
            &self.text
        } else {
            HIDDEN
        }
    }
}

/// The role whose privileges apply (`GetUserId()`).
pub(super) fn current_user_id() -> u32 {
    // SAFETY: plain read of backend state.
    unsafe { pg_sys::GetUserId().to_u32() }
}

/// The current database.
pub(super) fn current_db_id() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Every recorded statement of the current database, one per (role, queryid, top level)
/// entry, in the table's order. Empty when statement capture is not loaded.
pub fn statements() -> Vec<Statement> {
    let db = current_db_id();
    let me = current_user_id();
    let reads_all = caller_reads_all();
    shmem::snapshot(|k| k.dbid == db)
        .into_iter()
        .map(|e| {
            let own = e.key.userid == me;
            Statement {
                queryid: e.key.queryid,
                text: e.text,
                own,
                visible: reads_all || own,
                calls: e.counters.calls,
                rows: e.counters.rows,
                total_time_ms: e.counters.total_time,
            }
        })
        .collect()
}

/// The captured slow runs of the current database, as (queryid, text with its constants,
/// bind parameters as PostgreSQL logs them: `$1 = 'open', $2 = '10'`, empty for none),
/// skipping plans whose text did not fit. For planning inside the server only: never shown
/// to the caller (they may hold other roles' constants).
pub fn slow_run_samples() -> Vec<(i64, String, String)> {
    let db = current_db_id();
    shmem::plans(|k| k.dbid == db)
        .into_iter()
        .filter(|p| !p.sample.is_empty())
        .map(|p| (p.key.queryid, p.sample, p.params))
        .collect()
}

/// One kept sample of a statement's values: `($n, SQL literal)` pairs, and how many
/// captures saw it (its share of the statement's runs).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueSample {
    pub values: Vec<(u32, String)>,
    pub seen: u32,
}

/// The kept sample values of the current database's statements, by queryid (merged over
/// roles and top level: equal samples add up), most seen first. For planning inside the
/// server only: never shown to the caller (they may hold other roles' constants;
/// `perf.statement_samples()` applies the visibility rule).
pub fn value_samples() -> std::collections::HashMap<i64, Vec<ValueSample>> {
    let db = current_db_id();
    let mut out: std::collections::HashMap<i64, Vec<ValueSample>> =
        std::collections::HashMap::new();
    for (key, list) in shmem::samples(|k| k.dbid == db) {
        let merged = out.entry(key.queryid).or_default();
        for (seen, bytes) in list {
            let values: Vec<(u32, String)> = super::samples::decode(&bytes)
                .into_iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            match merged.iter_mut().find(|s| s.values == values) {
                Some(s) => s.seen = s.seen.saturating_add(seen),
                None => merged.push(ValueSample { values, seen }),
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|s| std::cmp::Reverse(s.seen));
    }
    out
}
