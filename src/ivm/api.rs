//! `perf.create_incremental_view()` and `perf.drop_incremental_view()`. The objects are
//! created as the caller (who owns them and whose rights the view runs with); only the
//! row of `perf.incremental_views` is written as the bootstrap superuser.
//! `perf.refresh_incremental()`/`perf.fresh()` are plain SQL (sql/incremental.sql).

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::analyze::{analyze, PinnedSearchPath};
use super::raise;
use super::sqlgen::{qi, Spec};

fn required<T>(v: Option<T>, name: &str) -> T {
    v.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be NULL"),
            "",
        )
    })
}

fn run(sql: &str) {
    if let Err(e) = Spi::run(sql) {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("incremental view: could not run generated SQL: {e}"),
            "",
        );
    }
}

/// Splits `name` ('v' or 'schema.v', quoted as SQL identifiers) into (schema, name).
fn split_name(name: &str) -> (String, String) {
    let parts = Spi::connect(|c| {
        let t = c.select(
            "SELECT p[1], p[2], cardinality(p), current_schema()::text FROM parse_ident($1) AS p",
            None,
            &[name.into()],
        )?;
        let mut out = None;
        for r in t {
            out = Some((
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<i32>(3)?.unwrap_or(0),
                r.get::<String>(4)?,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .ok()
    .flatten();
    let bad = || -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            format!("invalid view name \"{name}\""),
            "Give a name or schema.name, e.g. 'sales_by_day' or 'reports.sales_by_day'.",
        )
    };
    let (schema, rel) = match parts {
        Some((Some(n), _, 1, Some(cur))) => (cur, n),
        Some((Some(_), _, 1, None)) => raise(
            PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
            "no schema has been selected to create the view in".into(),
            "Qualify the name (schema.name) or set search_path.",
        ),
        Some((Some(s), Some(n), 2, _)) => (s, n),
        _ => bad(),
    };
    if schema.starts_with("pg_temp") || schema == "pg_catalog" {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("cannot create an incremental view in schema \"{schema}\""),
            "Create it in a permanent schema of your own: the scheduler's worker maintains it \
             from its own session.",
        );
    }
    (schema, rel)
}

/// Creates the incremental view `name` (a table holding the result of `query`, plus hidden
/// helper columns), fills it, and installs the triggers that log changes of the query's
/// table. `schedule` ('10 seconds' by default; NULL for none) creates a scheduler job that
/// applies pending changes in the background. Returns the number of groups computed.
#[pg_extern(volatile, parallel_unsafe)]
fn create_incremental_view(
    name: Option<&str>,
    query: Option<&str>,
    schedule: default!(Option<&str>, "'10 seconds'"),
) -> i64 {
    crate::pg::privilege::require(
        crate::pg::privilege::Role::Admin,
        "perf.create_incremental_view()",
    );
    let name = required(name, "name");
    let query = required(query, "query");
    let a = analyze(query);
    let (schema, rel) = split_name(name);
    let view = format!("{}.{}", qi(&schema), qi(&rel));
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT to_regclass($1) IS NOT NULL",
        &[view.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if exists {
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_TABLE,
            format!("relation \"{schema}.{rel}\" already exists"),
            "Choose another name, or perf.drop_incremental_view() the existing view first.",
        );
    }
    let source = Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.oid = $1",
        &[a.source.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let mut spec = Spec {
        schema: qi(&schema),
        view: view.clone(),
        source,
        quals: a.quals,
        keys: a.keys,
        aggs: a.aggs,
        cols: a.cols,
        oid: 0,
    };
    let pin = PinnedSearchPath::pin();
    run(&spec.create_view());
    spec.oid =
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[view.as_str().into()])
            .ok()
            .flatten()
            .map(|o| o.to_u32())
            .unwrap_or(0);
    drop(pin);
    // A plain view of the query, created as the caller wrote it: PostgreSQL then refuses
    // to drop or retype a column the triggers read (which would make every write fail).
    let guard = spec.guard();
    run(&format!("CREATE VIEW {guard} AS {query}"));
    let pin = PinnedSearchPath::pin();
    run(&spec.create_index());
    run(&spec.create_log());
    // CREATE TRIGGER locks the table against writers until we commit, so the initial
    // computation below and the first logged change cannot overlap or miss each other.
    for s in spec.triggers() {
        run(&s);
    }
    run(&spec.apply_function());
    let groups = Spi::get_one::<i64>(&format!(
        "WITH i AS ({} RETURNING 1) SELECT count(*) FROM i",
        spec.populate()
    ))
    .ok()
    .flatten()
    .unwrap_or(0);
    drop(pin);
    let job = schedule.map(|s| {
        let job = format!("incremental view {schema}.{rel}");
        let command = format!(
            "SELECT perf.refresh_incremental({}, wait => false)",
            quote_literal(&view)
        );
        if let Err(e) = Spi::get_one_with_args::<i64>(
            "SELECT perf.schedule($1, $2, $3)",
            &[job.as_str().into(), s.into(), command.as_str().into()],
        ) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("could not schedule the view's refresh job: {e}"),
                "schedule is a perf.schedule() schedule such as '10 seconds' or '* * * * *'; \
                 NULL for no job (refresh with perf.refresh_incremental()).",
            );
        }
        job
    });
    // SAFETY: plain read of the current user id.
    let owner = unsafe { pg_sys::GetUserId() };
    let funcs: Vec<String> = ["ins", "upd", "del", "trunc"]
        .iter()
        .map(|w| format!("{}()", spec.func(w)))
        .collect();
    // The helpers depend on the view: DROP TABLE of the view refuses without CASCADE (and
    // with it, takes the log, guard and functions, and so the triggers, along).
    depend_on_view(
        spec.oid,
        pg_sys::RelationRelationId,
        "regclass",
        &spec.log(),
    );
    depend_on_view(spec.oid, pg_sys::RelationRelationId, "regclass", &guard);
    depend_on_view(
        spec.oid,
        pg_sys::ProcedureRelationId,
        "regprocedure",
        &format!("{}(boolean)", spec.func("apply")),
    );
    for f in &funcs {
        depend_on_view(spec.oid, pg_sys::ProcedureRelationId, "regprocedure", f);
    }
    let _as = crate::pg::role::ActingAs::catalog_owner();
    let _pin = PinnedSearchPath::pin();
    if let Err(e) = Spi::run_with_args(
        "INSERT INTO perf.incremental_views \
           (view, source, owner, query, log, apply, trigger_functions, job, guard) \
         VALUES ($1::regclass, $2::oid::regclass, $3, $4, $5::regclass, $6::regprocedure, \
                 $7::regprocedure[], $8, $9::regclass)",
        &[
            view.as_str().into(),
            a.source.into(),
            owner.into(),
            query.into(),
            spec.log().as_str().into(),
            format!("{}(boolean)", spec.func("apply")).as_str().into(),
            funcs.into(),
            job.into(),
            guard.as_str().into(),
        ],
    ) {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("could not record the incremental view: {e}"),
            "",
        );
    }
    groups
}

/// Records that the object `name` (of catalog `class`, resolved with a cast to `cast`)
/// depends on the view, as PostgreSQL records a view's dependencies.
fn depend_on_view(view: u32, class: pg_sys::Oid, cast: &str, name: &str) {
    let oid =
        Spi::get_one_with_args::<pg_sys::Oid>(&format!("SELECT $1::{cast}::oid"), &[name.into()])
            .ok()
            .flatten()
            .unwrap_or(pg_sys::InvalidOid);
    if oid == pg_sys::InvalidOid || view == 0 {
        return;
    }
    let depender = pg_sys::ObjectAddress {
        classId: class,
        objectId: oid,
        objectSubId: 0,
    };
    let referenced = pg_sys::ObjectAddress {
        classId: pg_sys::RelationRelationId,
        objectId: pg_sys::Oid::from(view),
        objectSubId: 0,
    };
    // SAFETY: two valid addresses of objects created in this transaction; the call inserts
    // a pg_depend row (and makes it visible with CommandCounterIncrement below).
    unsafe {
        pg_sys::recordDependencyOn(
            &depender,
            &referenced,
            pg_sys::DependencyType::DEPENDENCY_NORMAL,
        );
        pg_sys::CommandCounterIncrement();
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Drops an incremental view: its refresh job, triggers, log, functions and table.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_incremental_view(view: Option<&str>) -> bool {
    crate::pg::privilege::require(
        crate::pg::privilege::Role::Admin,
        "perf.drop_incremental_view()",
    );
    let view = required(view, "view");
    // The name as the caller means it; the helper objects' names as the pinned path prints them.
    let oid =
        match Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[view.into()]) {
            Ok(Some(o)) => o,
            Ok(None) => required(None, "view"),
            Err(e) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("{e}"),
                "SELECT view FROM perf.incremental_views lists the incremental views.",
            ),
        };
    let pin = PinnedSearchPath::pin();
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT i.view::oid, i.log::text, i.apply::text, i.trigger_functions::text[], i.job, \
                    i.guard::text, \
                    pg_catalog.pg_has_role(c.relowner, 'USAGE') \
               FROM perf.incremental_views i \
               JOIN pg_catalog.pg_class c ON c.oid = i.view \
              WHERE i.view::oid = $1",
            None,
            &[oid.into()],
        )?;
        let mut out = None;
        for r in t {
            out = Some((
                r.get::<pg_sys::Oid>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
                r.get::<String>(5)?,
                r.get::<String>(6)?,
                r.get::<bool>(7)?.unwrap_or(false),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    });
    let row = match row {
        Ok(r) => r,
        Err(e) => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("{e}"),
            "SELECT view FROM perf.incremental_views lists the incremental views.",
        ),
    };
    let Some((Some(oid), log, apply, funcs, job, guard, owner_ok)) = row else {
        raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{view}\" is not an incremental view"),
            "SELECT view FROM perf.incremental_views lists the incremental views.",
        )
    };
    if !owner_ok {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of incremental view \"{view}\""),
            "Only the role that owns the view (or a member of it, or a superuser) may drop it.",
        );
    }
    if let Some(job) = job {
        let _ = Spi::run_with_args(
            "SELECT perf.unschedule(name) FROM perf.jobs WHERE name = $1",
            &[job.as_str().into()],
        );
    }
    {
        // Dropping the trigger functions drops the triggers (their dependents).
        for f in funcs {
            run(&format!("DROP FUNCTION IF EXISTS {f} CASCADE"));
        }
        if let Some(a) = apply {
            run(&format!("DROP FUNCTION IF EXISTS {a}"));
        }
        if let Some(g) = guard {
            run(&format!("DROP VIEW IF EXISTS {g}"));
        }
        if let Some(l) = log {
            run(&format!("DROP TABLE IF EXISTS {l}"));
        }
        run(&format!("DROP TABLE {}", oid_regclass(oid)));
    }
    drop(pin);
    let _as = crate::pg::role::ActingAs::catalog_owner();
    let _ = Spi::run_with_args(
        "DELETE FROM perf.incremental_views WHERE view::oid = $1",
        &[oid.into()],
    );
    true
}

fn oid_regclass(oid: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[oid.into()])
        .ok()
        .flatten()
        .unwrap_or_default()
}
