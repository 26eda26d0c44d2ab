//! Writes to `perf.partition_config`, which no role but the extension's owner may write
//! directly (PUBLIC may only read it). The partition functions run as their caller; they
//! record a set through [`partition_config_put`], which checks here, as the caller, that
//! the caller owns the table (and the template, and may create in a retention schema), and
//! only then writes the row as the configuration table's owner. So nobody can register a
//! set on someone else's table or point maintenance (which a superuser's scheduler may run)
//! at a schema they could not use themselves.

use pgrx::prelude::*;

use crate::error::PerfError;
use crate::pg::privilege;

fn owns(rel: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookup by OID for a relation whose existence the caller checked.
    unsafe { pg_sys::pg_class_ownercheck(rel, pg_sys::GetUserId()) }
}

fn relation_exists(rel: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = $1)",
        &[rel.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn require_owner(rel: pg_sys::Oid, what: &str) {
    if !relation_exists(rel) {
        crate::error::invalid_argument(
            format!("{what} (OID {}) does not exist", rel.to_u32()),
            "Pass an existing table.",
        );
    }
    if !owns(rel) {
        let name = Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[rel.into()])
            .ok()
            .flatten()
            .unwrap_or_default();
        PerfError::InsufficientPrivilege {
            what: format!("must be owner of table {name} to manage its partitions"),
            hint: "Run this as the table's owner (or a member of the owning role).".into(),
        }
        .raise();
    }
}

/// Records (or with `forget`, removes) the partition set of `parent`. Internal: called by
/// `perf.partition_table()` and `perf.partition_forget()` with a row of
/// `perf.partition_config` as jsonb. The caller must own `parent` (and `template`), and have
/// CREATE on a `schema:<name>` retention target.
#[pg_extern(volatile, parallel_unsafe, name = "_partition_config_put")]
fn partition_config_put(parent: Option<pg_sys::Oid>, config: Option<&str>, forget: Option<bool>) {
    privilege::require_in_admin_call("perf._partition_config_put()");
    let (Some(parent), Some(forget)) = (parent, forget) else {
        crate::error::invalid_argument(
            "parent and forget must not be NULL",
            "perf._partition_config_put() is internal: use perf.partition_table().",
        )
    };
    if config.is_none() && !forget {
        crate::error::invalid_argument(
            "config must not be NULL",
            "perf._partition_config_put() is internal: use perf.partition_table().",
        );
    }
    require_owner(parent, "partitioned table");
    if let Some(config) = config {
        // Parsed by PostgreSQL (as the caller): bad JSON is a clean 22P02.
        let (template, mode) = Spi::get_two_with_args::<String, String>(
            "SELECT $1::jsonb->>'template', $1::jsonb->>'retention_mode'",
            &[config.into()],
        )
        .unwrap_or((None, None));
        if let Some(t) = template {
            let toid =
                Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[t.into()])
                    .ok()
                    .flatten();
            if let Some(toid) = toid {
                require_owner(toid, "template table");
            }
        }
        if let Some(schema) = mode.as_deref().and_then(|m| m.strip_prefix("schema:")) {
            let ok = Spi::get_one_with_args::<bool>(
                "SELECT has_schema_privilege(n.oid, 'CREATE') FROM pg_catalog.pg_namespace n \
                 WHERE n.nspname = $1",
                &[schema.to_string().into()],
            )
            .ok()
            .flatten();
            match ok {
                Some(true) => {}
                Some(false) => PerfError::InsufficientPrivilege {
                    what: format!("permission denied for schema {schema}"),
                    hint: "Retention may only move partitions to a schema you may CREATE in."
                        .into(),
                }
                .raise(),
                None => crate::error::invalid_argument(
                    format!("retention schema \"{schema}\" does not exist"),
                    "Create the schema first, or use retention_mode 'drop' or 'detach'.",
                ),
            }
        }
    }
    let owner = Spi::get_one::<pg_sys::Oid>(
        "SELECT relowner FROM pg_catalog.pg_class WHERE oid = 'perf.partition_config'::regclass",
    )
    .ok()
    .flatten()
    .unwrap_or(pg_sys::BOOTSTRAP_SUPERUSERID.into());
    // As a SECURITY DEFINER function would, for the two statements below.
    let acting = crate::pg::role::ActingAs::switch(owner);
    let result = Spi::connect_mut(|client| -> Result<(), pgrx::spi::Error> {
        client.update(
            "DELETE FROM perf.partition_config WHERE parent = $1::oid::regclass",
            None,
            &[parent.into()],
        )?;
        if let (false, Some(row)) = (forget, config) {
            client.update(
                "INSERT INTO perf.partition_config \
                 SELECT (jsonb_populate_record(NULL::perf.partition_config, \
                         $2::jsonb || jsonb_build_object('parent', $1::oid::text))).*",
                None,
                &[parent.into(), row.into()],
            )?;
        }
        Ok(())
    });
    drop(acting);
    if let Err(e) = result {
        crate::error::invalid_argument(
            format!("could not record the partition set: {e}"),
            "Check the arguments given to perf.partition_table().",
        );
    }
}
