//! Who may call what: pg_perf's two roles and the one check every function makes first.
//!
//! - `perf_reader`: monitoring reads (metrics, health, cache and index statistics, the
//!   maintenance plan, partition sets, ...). Created NOLOGIN by `sql/roles.sql`.
//! - `perf_admin`: anything that changes the database or pg_perf's state (maintenance,
//!   partitioning, applying indexes, scheduling, cache track/flush, resets). A member of
//!   `perf_reader`.
//!
//! Superusers pass every check. Roles are cluster-wide: `CREATE EXTENSION` creates them
//! only if missing and `DROP EXTENSION` leaves them (other databases may use them).
//!
//! Rust functions call [`require`] first; SQL and PL/pgSQL functions call
//! `perf._require_role('perf_admin', 'perf.name()')`, which is [`require`] too. The check
//! is on the current user (so a job runs with its owner's roles, and a SECURITY DEFINER
//! function must check before it switches). A refusal is SQLSTATE 42501 naming the function
//! and, in its hint, the GRANT that would allow it. EXECUTE stays granted to PUBLIC so that
//! this hint, not PostgreSQL's bare "permission denied for function", is what a user sees.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU32, Ordering};

// Creates the roles before anything else in the extension script grants to them.
pgrx::extension_sql_file!("../../sql/roles.sql", name = "roles", bootstrap);

/// One of pg_perf's roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `perf_reader`: monitoring reads.
    Reader,
    /// `perf_admin`: changes to the database or to pg_perf's state.
    Admin,
}

impl Role {
    /// The role's name in the catalog.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Reader => "perf_reader",
            Role::Admin => "perf_admin",
        }
    }

    /// The role named `name`, if it is one of pg_perf's.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "perf_reader" => Some(Role::Reader),
            "perf_admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// What the role is for, for error messages.
    const fn purpose(self) -> &'static str {
        match self {
            Role::Reader => "pg_perf's monitoring reads",
            Role::Admin => "changes to the database or to pg_perf's state",
        }
    }
}

/// The OID of role `name`, or None when it does not exist (someone dropped it).
fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    let c = CString::new(name).ok()?;
    // SAFETY: catalog lookup with a valid NUL-terminated name; missing_ok = true.
    let oid = unsafe { pg_sys::get_role_oid(c.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Whether the current user may act as `role`: a superuser, or has the privileges of the
/// role (directly or through membership; `perf_admin` counts for `perf_reader`).
pub fn has(role: Role) -> bool {
    // SAFETY: superuser() and has_privs_of_role() are catalog lookups inside a transaction.
    if unsafe { pg_sys::superuser() } {
        return true;
    }
    // SAFETY: reading the current user id of this backend.
    let me = unsafe { pg_sys::GetUserId() };
    let holds = |r: Role| {
        // SAFETY: catalog lookup on two role ids.
        role_oid(r.name()).is_some_and(|oid| unsafe { pg_sys::has_privs_of_role(me, oid) })
    };
    match role {
        Role::Admin => holds(Role::Admin),
        Role::Reader => holds(Role::Reader) || holds(Role::Admin),
    }
}

/// The current user's name, quoted as an identifier (for the GRANT in the hint).
fn current_user_quoted() -> String {
    // SAFETY: name lookup of the current user id; noerr = true returns NULL if it is gone.
    let name = unsafe {
        let p = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if p.is_null() {
            return "CURRENT_USER".to_string();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    super::quote::quote_identifier(&name)
}

/// The local transaction in which this backend last passed a `perf_admin` check (0: none).
/// Internal writers ([`require_in_admin_call`]) accept calls made inside it: an admin
/// function may switch to a table's owner (who need not be a perf_admin) before it records
/// its work, as the partition functions do.
static ADMIN_PASSED_LXID: AtomicU32 = AtomicU32::new(0);

fn my_lxid() -> u32 {
    // SAFETY: MyProc is this backend's own PGPROC, set for every backend that runs SQL.
    unsafe { (*pg_sys::MyProc).lxid }
}

/// Raises SQLSTATE 42501 unless the current user may act as `role` ([`has`]). `function`
/// names the caller in the message, as `perf.reset_stats()`.
pub fn require(role: Role, function: &str) {
    if has(role) {
        if role == Role::Admin {
            ADMIN_PASSED_LXID.store(my_lxid(), Ordering::Relaxed);
        }
        return;
    }
    refuse(role, function)
}

/// For internal functions that write pg_perf's state on behalf of an admin function
/// (`perf._partition_config_put()`, the partition progress slots): passes when the current
/// user is a perf_admin, or when a perf_admin check passed earlier in this transaction of
/// this backend (the admin function may have switched to the table's owner since).
pub fn require_in_admin_call(function: &str) {
    let lxid = my_lxid();
    if lxid != 0 && ADMIN_PASSED_LXID.load(Ordering::Relaxed) == lxid {
        return;
    }
    require(Role::Admin, function)
}

fn refuse(role: Role, function: &str) -> ! {
    let user = current_user_quoted();
    let hint = if role_oid(role.name()).is_some() {
        format!("GRANT {} TO {user};", role.name())
    } else {
        format!(
            "The role {r} does not exist (it was dropped): CREATE ROLE {r} NOLOGIN; then GRANT {r} TO {user};",
            r = role.name()
        )
    };
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        format!("permission denied for function {function}"),
        "pg_perf",
    )
    .set_detail(format!(
        "{function} is for superusers and members of {} ({}).",
        role.name(),
        role.purpose()
    ))
    .set_hint(hint)
    .report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// The check for SQL and PL/pgSQL functions: `PERFORM perf._require_role('perf_admin',
/// 'perf.partition_table()')` as their first statement. Same rule and error as [`require`].
#[pg_extern(stable, parallel_safe, name = "_require_role")]
fn require_role_sql(role: &str, function: &str) {
    match Role::from_name(role) {
        Some(r) => require(r, function),
        None => crate::error::invalid_argument(
            format!("unknown pg_perf role \"{role}\""),
            "perf._require_role() takes 'perf_reader' or 'perf_admin'.",
        ),
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn roles_exist_and_admin_is_a_reader() {
        let ok = Spi::get_one::<bool>(
            "SELECT pg_has_role('perf_admin', 'perf_reader', 'MEMBER') \
                AND NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'perf_admin') \
                AND NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'perf_reader')",
        )
        .unwrap();
        assert_eq!(ok, Some(true));
    }

    #[pg_test]
    fn superuser_passes() {
        Spi::run("SELECT perf._require_role('perf_admin', 'perf.test()')").unwrap();
    }

    #[pg_test(error = "permission denied for function perf.test()")]
    fn plain_role_is_refused() {
        Spi::run("CREATE ROLE perf_priv_plain").unwrap();
        Spi::run("SET ROLE perf_priv_plain").unwrap();
        Spi::run("SELECT perf._require_role('perf_reader', 'perf.test()')").unwrap();
    }
}
