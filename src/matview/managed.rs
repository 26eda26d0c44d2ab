//! Managed refresh of materialized views: perf.manage_matview()/perf.unmanage_matview()
//! (the SQL wrappers taking a regclass are in sql/matview.sql), the scheduler's due check
//! (`queue_due`) and the refresh a job runner executes (`refresh`). See the module docs in
//! `super` for the rules.

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::scheduler::hosted::{
    check_schedule, default_timezone, next_slot, refuse_in_recovery, run_top_level, wake_at_commit,
    AsCatalogOwner, Outcome, RetryPolicy, Schedule,
};
use crate::track;

fn raise(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    pg_sys::panic::ErrorReport::new(code, message, "pg_perf")
        .set_hint(hint)
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

fn invalid(message: String, hint: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

fn required<T>(v: Option<T>, name: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            "Leave the argument out to get its default.",
        )
    })
}

fn db() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// The leaf sources of a materialized view `$1`: relations its definition reads, through
/// views and unmanaged matviews (managed matviews are leaves: their refresh is a change),
/// partitions of partitioned tables included. `tracked`: writes to it move its change
/// generation (a permanent table with the tracking trigger enabled always, or a managed
/// matview). `needs_trigger`: a permanent user table that would be tracked with the trigger.
pub(crate) const SOURCES_SQL: &str = "\
WITH RECURSIVE deps(rel) AS (
    SELECT $1::oid
    UNION
    SELECT d.refobjid
      FROM deps
      JOIN pg_catalog.pg_class c ON c.oid = deps.rel
      JOIN pg_catalog.pg_rewrite r ON r.ev_class = deps.rel
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass
                                 AND d.objid = r.oid
                                 AND d.refclassid = 'pg_catalog.pg_class'::regclass
                                 AND d.refobjid <> deps.rel
     WHERE deps.rel = $1::oid
        OR c.relkind = 'v'
        OR (c.relkind = 'm' AND NOT EXISTS (SELECT 1 FROM perf.matviews m WHERE m.view = c.oid))
), leaves AS (
    SELECT c.oid, c.relkind, c.relpersistence, c.relnamespace
      FROM deps JOIN pg_catalog.pg_class c ON c.oid = deps.rel
     WHERE c.oid <> $1::oid
       AND (c.relkind IN ('r', 'p', 'f')
            OR (c.relkind = 'm' AND EXISTS (SELECT 1 FROM perf.matviews m WHERE m.view = c.oid)))
    UNION
    SELECT c.oid, c.relkind, c.relpersistence, c.relnamespace
      FROM deps
      JOIN pg_catalog.pg_class p ON p.oid = deps.rel AND p.relkind = 'p'
      CROSS JOIN LATERAL pg_catalog.pg_partition_tree(p.oid) t
      JOIN pg_catalog.pg_class c ON c.oid = t.relid
)
SELECT l.oid,
       l.relkind = 'm'
       OR (l.relkind IN ('r', 'p') AND l.relpersistence = 'p'
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                        WHERE g.tgrelid = l.oid AND g.tgname = 'pg_perf_cache_invalidate'
                          AND g.tgfoid = 'perf.cache_invalidate_trigger()'::regprocedure
                          AND g.tgenabled = 'A')) AS tracked,
       l.relkind IN ('r', 'p') AND l.relpersistence = 'p' AND l.oid >= 16384
       AND l.relnamespace <> 'pg_catalog'::regnamespace AS trackable
  FROM leaves l
 ORDER BY l.oid";

struct Source {
    oid: pg_sys::Oid,
    tracked: bool,
    trackable: bool,
}

fn sources_of(view: pg_sys::Oid) -> Vec<Source> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(SOURCES_SQL, None, &[view.into()])? {
            out.push(Source {
                oid: row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                tracked: row.get::<bool>(2)?.unwrap_or(false),
                trackable: row.get::<bool>(3)?.unwrap_or(false),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_default()
}

/// The generation to record for a tracked source: (slot, generation), with one generation
/// less per writer still committing (its change may not be visible to our snapshot yet).
fn baseline(relid: pg_sys::Oid) -> Option<(u32, u64)> {
    let slot = track::relation_slot(db(), relid.to_u32(), true)?;
    let (g, committing) = track::relation_state(slot);
    Some((slot, g.saturating_sub(u64::from(committing))))
}

fn interval_us(i: &Interval) -> i64 {
    i64::from(i.months()) * 30 * 86_400_000_000 + i64::from(i.days()) * 86_400_000_000 + i.micros()
}

struct ViewInfo {
    kind: i8,
    persistence: i8,
    owner: pg_sys::Oid,
}

fn view_info(view: pg_sys::Oid) -> Option<ViewInfo> {
    // SAFETY: a syscache lookup by OID, copied out before the tuple is released.
    unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(view),
        );
        if tuple.is_null() {
            return None;
        }
        let td = (*tuple).t_data;
        let form = (td as *mut u8).add((*td).t_hoff as usize) as *const pg_sys::FormData_pg_class;
        let info = ViewInfo {
            kind: (*form).relkind as i8,
            persistence: (*form).relpersistence as i8,
            owner: (*form).relowner,
        };
        pg_sys::ReleaseSysCache(tuple);
        Some(info)
    }
}

fn rel_name(view: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::oid::regclass::text", &[view.into()])
        .ok()
        .flatten()
        .unwrap_or_else(|| format!("OID {}", view.to_u32()))
}

/// A materialized view we may manage: it exists, is a permanent matview, and the caller
/// has the privileges of its owner. Returns its owner.
fn check_view(view: pg_sys::Oid) -> pg_sys::Oid {
    let Some(info) = view_info(view) else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", view.to_u32()),
            "Pass an existing materialized view, e.g. perf.manage_matview('daily_stats').",
        )
    };
    let name = rel_name(view);
    if info.persistence == pg_sys::RELPERSISTENCE_TEMP as i8 {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is a temporary relation"),
            "Only permanent materialized views can be managed: the scheduler's worker cannot \
             see another session's temporary objects.",
        );
    }
    if info.kind != pg_sys::RELKIND_MATVIEW as i8 {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not a materialized view"),
            "perf.manage_matview() keeps materialized views fresh; create one with \
             CREATE MATERIALIZED VIEW ... AS SELECT ..., then manage it.",
        );
    }
    // SAFETY: catalog lookups on role ids.
    let ok = unsafe {
        let me = pg_sys::GetUserId();
        pg_sys::superuser_arg(me) || pg_sys::has_privs_of_role(me, info.owner)
    };
    if !ok {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be the owner of materialized view \"{name}\""),
            "Only the view's owner (or a member of the owning role, or a superuser) can \
             manage its refresh.",
        );
    }
    info.owner
}

/// The unique index REFRESH ... CONCURRENTLY can use (unique, valid, immediate, no WHERE,
/// plain columns only), if the view has one.
const UNIQUE_INDEX_SQL: &str = "\
SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index i
 WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indimmediate
   AND i.indpred IS NULL AND i.indexprs IS NULL
 ORDER BY i.indexrelid LIMIT 1";

fn usable_unique_index(view: pg_sys::Oid) -> Option<String> {
    Spi::get_one_with_args::<String>(UNIQUE_INDEX_SQL, &[view.into()])
        .ok()
        .flatten()
}

fn refuse_concurrently(name: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "materialized view \"{name}\" has no unique index usable by REFRESH ... CONCURRENTLY"
        ),
        "CONCURRENTLY needs a unique index on plain columns of the view, without a WHERE \
         clause (CREATE UNIQUE INDEX ON view (key columns)); or pass concurrently => NULL \
         to refresh plainly until there is one.",
    )
}

/// perf.manage_matview(): see sql/matview.sql. Every input is checked before anything is
/// written, so a refused call leaves nothing behind.
#[pg_extern(volatile, parallel_unsafe)]
fn matview_manage_oid(
    view: Option<pg_sys::Oid>,
    schedule: Option<&str>,
    on_change: Option<bool>,
    min_interval: Option<Interval>,
    max_staleness: Option<Interval>,
    concurrently: Option<bool>,
) -> bool {
    crate::pg::privilege::require(crate::pg::privilege::Role::Admin, "perf.manage_matview()");
    refuse_in_recovery("manage materialized views");
    let view = required(view, "view");
    let on_change = required(on_change, "on_change");
    let min_interval = required(min_interval, "min_interval");
    let owner = check_view(view);
    let name = rel_name(view);
    if let Some(s) = schedule {
        if matches!(check_schedule(s), Schedule::Never) {
            invalid(
                "schedule '@never' is the same as no schedule".into(),
                "Leave schedule NULL to refresh on changes only.",
            );
        }
    }
    if interval_us(&min_interval) < 0 {
        invalid(
            "min_interval must not be negative".into(),
            "min_interval is the least time between two refreshes, e.g. '1 minute'.",
        );
    }
    if let Some(m) = &max_staleness {
        if interval_us(m) <= 0 {
            invalid(
                "max_staleness must be positive".into(),
                "max_staleness bounds how long a change may stay unrefreshed, e.g. '1 hour'.",
            );
        }
    }
    if !on_change && schedule.is_none() && max_staleness.is_none() {
        invalid(
            "with on_change => false, give a schedule or max_staleness".into(),
            "Otherwise the view would never be refreshed.",
        );
    }
    if concurrently == Some(true) && usable_unique_index(view).is_none() {
        refuse_concurrently(&name);
    }
    // Sources: install the tracking trigger (as the caller, who needs the right to create
    // triggers on them) where it is missing; the same trigger the result cache uses.
    let found = {
        let _su = AsUser::superuser();
        sources_of(view)
    };
    for s in found {
        if s.trackable && !s.tracked {
            Spi::run_with_args(
                "SELECT perf.cache_track($1::oid::regclass)",
                &[s.oid.into()],
            )
            .unwrap_or_else(|e| invalid(format!("could not track a source: {e}"), ""));
        }
    }
    let tz = default_timezone();
    let _as = AsCatalogOwner::switch();
    let existing = Spi::get_one_with_args::<i64>(
        "SELECT m.jobid FROM perf.matviews m JOIN perf.jobs j USING (jobid) WHERE m.view = $1",
        &[view.into()],
    )
    .ok()
    .flatten();
    let jobid = match existing {
        Some(j) => {
            Spi::run_with_args(
                "UPDATE perf.jobs SET owner = $2 WHERE jobid = $1",
                &[j.into(), owner.into()],
            )
            .ok();
            j
        }
        None => {
            let mut job_name = format!("matview:{name}");
            job_name.truncate(180);
            let taken = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM perf.jobs WHERE name = $1)",
                &[job_name.as_str().into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            if taken {
                job_name = format!("{job_name}#{}", view.to_u32());
            }
            Spi::run_with_args("DELETE FROM perf.matviews WHERE view = $1", &[view.into()]).ok();
            Spi::get_one_with_args::<i64>(
                "INSERT INTO perf.jobs (name, schedule, command, kind, timezone, retries, \
                                        backoff, owner) \
                 VALUES ($1, '@never', $2, 'matview_refresh', $3, 0, '10 seconds', $4) \
                 RETURNING jobid",
                &[
                    job_name.as_str().into(),
                    view.to_u32().to_string().as_str().into(),
                    tz.as_str().into(),
                    owner.into(),
                ],
            )
            .ok()
            .flatten()
            .unwrap_or_else(|| invalid("could not create the refresh job".into(), ""))
        }
    };
    Spi::run_with_args(
        "INSERT INTO perf.matviews (view, jobid, schedule, timezone, on_change, min_interval, \
                                    max_staleness, refresh_concurrently) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (view) DO UPDATE SET jobid = EXCLUDED.jobid, schedule = EXCLUDED.schedule, \
             timezone = EXCLUDED.timezone, on_change = EXCLUDED.on_change, \
             min_interval = EXCLUDED.min_interval, max_staleness = EXCLUDED.max_staleness, \
             refresh_concurrently = EXCLUDED.refresh_concurrently, next_refresh_at = NULL",
        &[
            view.into(),
            jobid.into(),
            schedule.map(str::trim).into(),
            tz.as_str().into(),
            on_change.into(),
            min_interval.into(),
            max_staleness.into(),
            concurrently.into(),
        ],
    )
    .unwrap_or_else(|e| invalid(format!("could not manage \"{name}\": {e}"), ""));
    // Sources as known now, with no generation yet: the first refresh records them (a
    // view is assumed stale until pg_perf refreshed it once).
    Spi::run_with_args(
        "DELETE FROM perf.matview_sources WHERE view = $1",
        &[view.into()],
    )
    .ok();
    for s in sources_of(view) {
        Spi::run_with_args(
            "INSERT INTO perf.matview_sources (view, source, tracked) VALUES ($1, $2, $3)",
            &[view.into(), s.oid.into(), s.tracked.into()],
        )
        .ok();
    }
    wake_at_commit();
    true
}

/// perf.unmanage_matview(): removes the view's refresh job and state. The tracking
/// triggers stay on the sources (the result cache may rely on them; perf.cache_untrack()
/// removes them).
#[pg_extern(volatile, parallel_unsafe)]
fn matview_unmanage_oid(view: Option<pg_sys::Oid>) -> bool {
    crate::pg::privilege::require(crate::pg::privilege::Role::Admin, "perf.unmanage_matview()");
    refuse_in_recovery("unmanage materialized views");
    let view = required(view, "view");
    check_view(view);
    let name = rel_name(view);
    let _as = AsCatalogOwner::switch();
    let jobid = Spi::get_one_with_args::<i64>(
        "DELETE FROM perf.matviews WHERE view = $1 RETURNING jobid",
        &[view.into()],
    )
    .ok()
    .flatten();
    let Some(jobid) = jobid else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("materialized view \"{name}\" is not managed"),
            "SELECT view FROM perf.matview_status lists the managed views.",
        )
    };
    Spi::run_with_args("DELETE FROM perf.jobs WHERE jobid = $1", &[jobid.into()]).ok();
    wake_at_commit();
    true
}

/// The change generation of a relation now (NULL when nothing recorded one since the
/// server started), for perf.matview_status.
#[pg_extern(volatile, parallel_safe)]
fn track_generation(rel: pg_sys::Oid) -> Option<i64> {
    crate::pg::privilege::require(
        crate::pg::privilege::Role::Reader,
        "perf.track_generation()",
    );
    let slot = track::relation_slot(db(), rel.to_u32(), false)?;
    Some(track::relation_state(slot).0 as i64)
}

/// The registry slot of a relation now (NULL when it has none).
#[pg_extern(volatile, parallel_safe)]
fn track_slot(rel: pg_sys::Oid) -> Option<i32> {
    crate::pg::privilege::require(crate::pg::privilege::Role::Reader, "perf.track_slot()");
    track::relation_slot(db(), rel.to_u32(), false).map(|s| s as i32)
}

/// Identifies this server's change generations (they start over at a restart).
#[pg_extern(volatile, parallel_safe)]
fn track_instance() -> i64 {
    crate::pg::privilege::require(crate::pg::privilege::Role::Reader, "perf.track_instance()");
    track::instance() as i64
}

// ---------------------------------------------------------------------------------------
// The scheduler's side.

struct ViewState {
    view: pg_sys::Oid,
    jobid: i64,
    schedule: Option<String>,
    timezone: String,
    on_change: bool,
    min_interval_us: i64,
    max_staleness_us: Option<i64>,
    last_refresh_us: Option<i64>,
    first_change_us: Option<i64>,
    managed_since_us: i64,
    next_refresh_us: Option<i64>,
    instance: Option<i64>,
    active: bool,
    failures: i32,
    last_finished_us: Option<i64>,
    backoff_us: i64,
}

const VIEWS_SQL: &str = "\
SELECT m.view, m.jobid, m.schedule, m.timezone, m.on_change,
       (extract(epoch FROM m.min_interval) * 1000000)::bigint,
       (extract(epoch FROM m.max_staleness) * 1000000)::bigint,
       (extract(epoch FROM m.last_refresh_at) * 1000000)::bigint,
       (extract(epoch FROM m.first_change_at) * 1000000)::bigint,
       (extract(epoch FROM m.managed_since) * 1000000)::bigint,
       (extract(epoch FROM m.next_refresh_at) * 1000000)::bigint,
       m.instance,
       EXISTS (SELECT 1 FROM perf.job_runs r
                WHERE r.jobid = m.jobid AND r.status IN ('pending', 'running')),
       (SELECT count(*) FROM perf.job_runs f
         WHERE f.jobid = m.jobid AND f.status = 'failed'
           AND f.runid > coalesce((SELECT max(s.runid) FROM perf.job_runs s
                                    WHERE s.jobid = m.jobid AND s.status = 'succeeded'), 0))::int,
       (SELECT (extract(epoch FROM max(f.finished_at)) * 1000000)::bigint FROM perf.job_runs f
         WHERE f.jobid = m.jobid AND f.status IN ('succeeded', 'failed')),
       (extract(epoch FROM j.backoff) * 1000000)::bigint
  FROM perf.matviews m JOIN perf.jobs j ON j.jobid = m.jobid
 WHERE j.enabled
 ORDER BY m.view";

fn load_views() -> Vec<ViewState> {
    Spi::connect(|client| {
        let mut out = Vec::new();
        for row in client.select(VIEWS_SQL, None, &[])? {
            out.push(ViewState {
                view: row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                jobid: row.get::<i64>(2)?.unwrap_or(0),
                schedule: row.get::<String>(3)?,
                timezone: row.get::<String>(4)?.unwrap_or_else(|| "UTC".into()),
                on_change: row.get::<bool>(5)?.unwrap_or(true),
                min_interval_us: row.get::<i64>(6)?.unwrap_or(60_000_000),
                max_staleness_us: row.get::<i64>(7)?,
                last_refresh_us: row.get::<i64>(8)?,
                first_change_us: row.get::<i64>(9)?,
                managed_since_us: row.get::<i64>(10)?.unwrap_or(0),
                next_refresh_us: row.get::<i64>(11)?,
                instance: row.get::<i64>(12)?,
                active: row.get::<bool>(13)?.unwrap_or(false),
                failures: row.get::<i32>(14)?.unwrap_or(0),
                last_finished_us: row.get::<i64>(15)?,
                backoff_us: row.get::<i64>(16)?.unwrap_or(10_000_000),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_default()
}

struct SourceState {
    source: pg_sys::Oid,
    tracked: bool,
    slot: Option<i32>,
    generation: Option<i64>,
}

fn load_sources() -> HashMap<pg_sys::Oid, Vec<SourceState>> {
    let mut map: HashMap<pg_sys::Oid, Vec<SourceState>> = HashMap::new();
    let _ = Spi::connect(|client| {
        for row in client.select(
            "SELECT view, source, tracked, slot, generation FROM perf.matview_sources",
            None,
            &[],
        )? {
            let view = row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid);
            map.entry(view).or_default().push(SourceState {
                source: row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                tracked: row.get::<bool>(3)?.unwrap_or(false),
                slot: row.get::<i32>(4)?,
                generation: row.get::<i64>(5)?,
            });
        }
        Ok::<_, pgrx::spi::Error>(())
    });
    map
}

fn from_unix_us(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn plus_us(t: Timestamp, us: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_micros(us))
        .unwrap_or(Timestamp::MAX)
}

/// Whether a view's sources changed since its last refresh (or cannot tell).
fn changed(v: &ViewState, sources: &[SourceState], instance: i64) -> bool {
    if v.last_refresh_us.is_none() || v.instance != Some(instance) || sources.is_empty() {
        return true;
    }
    sources.iter().any(|s| {
        if !s.tracked {
            return true;
        }
        let (Some(slot), Some(g)) = (s.slot, s.generation) else {
            return true;
        };
        match track::relation_slot(db(), s.source.to_u32(), false) {
            Some(now) if now as i32 == slot => track::relation_state(now).0 as i64 != g,
            // The slot was recycled or is gone: treat as changed.
            _ => true,
        }
    })
}

fn tracked_slots(sources: &[SourceState]) -> impl Iterator<Item = u32> + '_ {
    sources
        .iter()
        .filter(|s| s.tracked)
        .filter_map(|s| s.slot.map(|x| x as u32))
}

/// Called by the scheduler on every wake, inside its transaction: queues a refresh run for
/// every managed view that is due (sources refreshed first), records when changes were
/// first seen and when each view refreshes next; returns the next time one becomes due.
pub fn queue_due(_dboid: pg_sys::Oid, now: Timestamp) -> Option<Timestamp> {
    // SAFETY: catalog lookups by name; InvalidOid when missing (an older pg_perf version
    // without managed views).
    let present = unsafe {
        let ns = pg_sys::get_namespace_oid(c"perf".as_ptr(), true);
        ns != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"matviews".as_ptr(), ns) != pg_sys::InvalidOid
    };
    if !present {
        return None;
    }
    // This bookkeeping is not the database's workload: keep it out of perf.statements.
    let _quiet = Untracked::start();
    // Views dropped without the event trigger seeing it (or whose job was removed).
    let _ = Spi::run(
        "WITH gone AS (DELETE FROM perf.matviews m \
                        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                                           WHERE c.oid = m.view AND c.relkind = 'm') \
                           OR NOT EXISTS (SELECT 1 FROM perf.jobs j WHERE j.jobid = m.jobid) \
                       RETURNING jobid) \
         DELETE FROM perf.jobs j USING gone WHERE j.jobid = gone.jobid",
    );
    let views = load_views();
    if views.is_empty() {
        return None;
    }
    let sources = load_sources();
    let instance = track::instance() as i64;
    let empty = Vec::new();
    let managed: HashSet<pg_sys::Oid> = views.iter().map(|v| v.view).collect();
    let mut next: Option<Timestamp> = None;
    let mut due: Vec<(usize, &'static str)> = Vec::new();
    let mut busy: HashSet<pg_sys::Oid> =
        views.iter().filter(|v| v.active).map(|v| v.view).collect();
    // Arm every source before reading generations: a commit after the read then finds its
    // slot armed and wakes us. Slots only stale views read are disarmed after (they are
    // refreshed anyway; a commit in between costs one early wake).
    let mut clean_slots: HashSet<u32> = HashSet::new();
    let mut stale_slots: HashSet<u32> = HashSet::new();
    for v in views.iter().filter(|v| !v.active) {
        for slot in tracked_slots(sources.get(&v.view).unwrap_or(&empty)) {
            track::watch(slot);
        }
    }
    for (i, v) in views.iter().enumerate() {
        let srcs = sources.get(&v.view).unwrap_or(&empty);
        if v.active {
            continue;
        }
        if changed(v, srcs, instance) {
            stale_slots.extend(tracked_slots(srcs));
        } else {
            clean_slots.extend(tracked_slots(srcs));
            if v.first_change_us.is_some() || v.next_refresh_us.is_some() {
                let _ = Spi::run_with_args(
                    "UPDATE perf.matviews SET first_change_at = NULL, next_refresh_at = NULL \
                      WHERE view = $1",
                    &[v.view.into()],
                );
            }
            continue;
        }
        let first = v.first_change_us.map(from_unix_us).unwrap_or(now);
        let mut at: Option<(Timestamp, &'static str)> = None;
        let mut take = |t: Timestamp, why: &'static str| {
            if at.is_none_or(|(a, _)| t < a) {
                at = Some((t, why));
            }
        };
        if v.on_change || v.last_refresh_us.is_none() {
            let t = v
                .last_refresh_us
                .map(|l| plus_us(from_unix_us(l), v.min_interval_us))
                .unwrap_or(now);
            take(t, "change");
        }
        if let Some(s) = v.schedule.as_deref() {
            if let (Ok(sched), Ok(tz)) = (Schedule::parse(s), TimeZone::get(&v.timezone)) {
                let anchor = from_unix_us(v.managed_since_us);
                if let Some(t) = next_slot(&sched, first, anchor, &tz, None) {
                    take(t, "schedule");
                }
            }
        }
        if let Some(ms) = v.max_staleness_us {
            take(plus_us(first, ms), "change");
        }
        let Some((mut t, mut why)) = at else { continue };
        if v.failures > 0 {
            // Retry with the job's backoff, doubling per failure in a row (capped).
            if let Some(fin) = v.last_finished_us {
                let base = SignedDuration::from_micros(v.backoff_us.max(1_000_000));
                let policy = RetryPolicy {
                    max_retries: u32::MAX,
                    base,
                    cap: base.checked_mul(100).unwrap_or(base),
                    jitter: 0.0,
                };
                if let Some(r) = policy.next_retry(from_unix_us(fin), v.failures as u32, 0.5) {
                    if r > t {
                        t = r;
                    }
                }
            }
            why = "retry";
        }
        let t_us = t.as_microsecond();
        if v.first_change_us.is_none() || v.next_refresh_us != Some(t_us) {
            let _ = Spi::run_with_args(
                "UPDATE perf.matviews SET first_change_at = coalesce(first_change_at, \
                        to_timestamp($2::float8 / 1000000)), \
                        next_refresh_at = to_timestamp($3::float8 / 1000000) \
                  WHERE view = $1",
                &[v.view.into(), first.as_microsecond().into(), t_us.into()],
            );
        }
        if t <= now {
            due.push((i, why));
        } else {
            next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        }
    }
    for slot in stale_slots.difference(&clean_slots) {
        track::unwatch(*slot);
    }
    // Dependency order: a view waits while a managed view it reads is due or refreshing
    // (that refresh's commit wakes us again).
    let due_views: HashSet<pg_sys::Oid> = due.iter().map(|(i, _)| views[*i].view).collect();
    for (i, why) in due {
        let v = &views[i];
        let srcs = sources.get(&v.view).unwrap_or(&empty);
        let waits = srcs.iter().any(|s| {
            s.source != v.view
                && managed.contains(&s.source)
                && (due_views.contains(&s.source) || busy.contains(&s.source))
        });
        if waits {
            continue;
        }
        let _ = Spi::run_with_args(
            "INSERT INTO perf.job_runs (jobid, trigger, attempt, status, scheduled_for) \
             VALUES ($1, $2, $3, 'pending', now())",
            &[v.jobid.into(), why.into(), (v.failures + 1).into()],
        );
        busy.insert(v.view);
    }
    next
}

/// perf.track = none until dropped (the previous value is restored; an ERROR's abort
/// restores it itself).
struct Untracked(i32);

impl Untracked {
    fn start() -> Self {
        // SAFETY: a GUC change saved at a new nest level, as a function's SET clause does;
        // undone in Drop (or by the transaction's abort).
        unsafe {
            let nest = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"perf.track".as_ptr(),
                c"none".as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            Untracked(nest)
        }
    }
}

impl Drop for Untracked {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // SAFETY: pops the nest level opened in `start`.
        unsafe { pg_sys::AtEOXact_GUC(true, self.0) };
    }
}

// ---------------------------------------------------------------------------------------
// The runner's side.

/// Switches the current user (keeping the run's security context) until dropped.
struct AsUser {
    user: pg_sys::Oid,
    context: i32,
}

impl AsUser {
    /// The bootstrap superuser, in the current security context (perf's own tables).
    fn superuser() -> Self {
        let mut user = pg_sys::InvalidOid;
        let mut ctx = 0;
        // SAFETY: plain read of the current user id and security context.
        unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut ctx) };
        Self::switch(
            pg_sys::BOOTSTRAP_SUPERUSERID.into(),
            ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        )
    }

    fn switch(to: pg_sys::Oid, context: i32) -> Self {
        let mut user = pg_sys::InvalidOid;
        let mut saved = 0;
        // SAFETY: saving and switching the current user id, as SECURITY DEFINER does; an
        // ERROR aborts the transaction, which restores the ids saved at its start.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut saved);
            pg_sys::SetUserIdAndSecContext(to, context);
        }
        AsUser {
            user,
            context: saved,
        }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: restores the values saved in `switch`.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// A fresh snapshot pushed as the active one until dropped (the runner's transaction has
/// none of its own; SPI needs one). An ERROR's abort unwinds the snapshot stack itself.
struct ActiveSnapshot;

impl ActiveSnapshot {
    fn push() -> Self {
        // SAFETY: inside a transaction; popped in Drop.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        ActiveSnapshot
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // an ERROR: the abort resets the snapshot stack
        }
        // SAFETY: pops the snapshot pushed in `push`.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
}

/// The refresh mode of a view now: (concurrently?, why).
fn mode_of(view: pg_sys::Oid, wanted: Option<bool>) -> (bool, String) {
    let populated = Spi::get_one_with_args::<bool>(
        "SELECT relispopulated FROM pg_catalog.pg_class WHERE oid = $1",
        &[view.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if wanted == Some(false) {
        return (false, "concurrently => false".into());
    }
    let index = usable_unique_index(view);
    match (populated, index) {
        (false, _) => (
            false,
            "not populated yet: the first refresh is plain".into(),
        ),
        (true, Some(ix)) => (true, format!("unique index {ix}")),
        (true, None) => {
            if wanted == Some(true) {
                refuse_concurrently(&rel_name(view));
            }
            (
                false,
                "no unique index without WHERE on plain columns".into(),
            )
        }
    }
}

/// A source as recorded at a refresh: (relation, tracked, (slot, generation)).
type Recorded = (pg_sys::Oid, bool, Option<(u32, u64)>);

/// A `matview_refresh` run (called by the job runner inside its transaction, as the job's
/// owner with security context `run_ctx`): records the sources' generations, refreshes the
/// view as its owner (CONCURRENTLY when it can), and records the refresh. Raises an ERROR
/// on failure (the runner records it and the scheduler retries with backoff).
pub fn refresh(view: pg_sys::Oid, run_ctx: i32) -> Outcome {
    // Read committed whatever the default: each statement's snapshot is taken after the
    // generations below were read. Nothing has taken a snapshot in this transaction yet.
    // SAFETY: plain write of the transaction's isolation level before its first snapshot,
    // as SET TRANSACTION ISOLATION LEVEL does.
    unsafe {
        if !pg_sys::FirstSnapshotSet {
            pg_sys::XactIsoLevel = pg_sys::XACT_READ_COMMITTED as i32;
        }
    }
    let su = AsUser::switch(pg_sys::BOOTSTRAP_SUPERUSERID.into(), run_ctx);
    let snap = ActiveSnapshot::push();
    let Some(info) = view_info(view).filter(|i| i.kind == pg_sys::RELKIND_MATVIEW as i8) else {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!(
                "managed materialized view with OID {} no longer exists",
                view.to_u32()
            ),
            "It was dropped; its refresh job is removed by the scheduler.",
        )
    };
    let wanted = Spi::get_two_with_args::<bool, bool>(
        "SELECT true, refresh_concurrently FROM perf.matviews WHERE view = $1",
        &[view.into()],
    )
    .unwrap_or((None, None));
    if wanted.0.is_none() {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("materialized view \"{}\" is not managed", rel_name(view)),
            "perf.manage_matview() manages it.",
        );
    }
    let name = Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.oid = $1",
        &[view.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let (concurrent, reason) = mode_of(view, wanted.1);
    let mut sources = sources_of(view);
    // Tables that appeared since (a new partition) get the tracking trigger too.
    for s in sources.iter_mut().filter(|s| s.trackable && !s.tracked) {
        Spi::run_with_args(
            "SELECT perf.cache_track($1::oid::regclass)",
            &[s.oid.into()],
        )
        .unwrap_or_else(|e| invalid(format!("could not track a source: {e}"), ""));
        s.tracked = true;
    }
    let instance = track::instance() as i64;
    let recorded: Vec<Recorded> = sources
        .iter()
        .map(|s| {
            (
                s.oid,
                s.tracked,
                if s.tracked { baseline(s.oid) } else { None },
            )
        })
        .collect();
    drop(snap);
    drop(su);
    let sql = format!(
        "REFRESH MATERIALIZED VIEW {}{}",
        if concurrent { "CONCURRENTLY " } else { "" },
        name
    );
    let started = std::time::Instant::now();
    let outcome = {
        let _owner = AsUser::switch(info.owner, run_ctx);
        let c = std::ffi::CString::new(sql).unwrap_or_default();
        run_top_level(&c)
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    // Views that read this one see the refresh as a change.
    track::note_write(view.to_u32());
    let _su = AsUser::switch(pg_sys::BOOTSTRAP_SUPERUSERID.into(), run_ctx);
    let _snap = ActiveSnapshot::push();
    Spi::run_with_args(
        "UPDATE perf.matviews SET last_refresh_at = clock_timestamp(), \
                last_duration = make_interval(secs => $2 / 1000), last_mode = $3, \
                mode_reason = $4, refreshes = refreshes + 1, first_change_at = NULL, \
                next_refresh_at = NULL, instance = $5 \
          WHERE view = $1",
        &[
            view.into(),
            ms.into(),
            if concurrent { "concurrent" } else { "plain" }.into(),
            reason.as_str().into(),
            instance.into(),
        ],
    )
    .ok();
    Spi::run_with_args(
        "DELETE FROM perf.matview_sources WHERE view = $1",
        &[view.into()],
    )
    .ok();
    for (oid, tracked, b) in recorded {
        Spi::run_with_args(
            "INSERT INTO perf.matview_sources (view, source, tracked, slot, generation) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                view.into(),
                oid.into(),
                (tracked && b.is_some()).into(),
                b.map(|(s, _)| s as i32).into(),
                b.map(|(_, g)| g as i64).into(),
            ],
        )
        .ok();
    }
    Outcome {
        command_tag: outcome.command_tag,
        rows: outcome.rows,
    }
}
