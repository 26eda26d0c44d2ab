//! User-facing errors: every one maps to a specific SQLSTATE and carries a hint that
//! tells the DBA what to do next. Raise them with [`PerfError::raise`], never `panic!`.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Everything pg_perf can refuse to do, with enough context to say why.
#[derive(Debug, Clone, PartialEq)]
pub enum PerfError {
    /// The library was loaded by `CREATE EXTENSION`/`LOAD` instead of at server start.
    NotPreloaded,
    /// A function argument is out of its domain (unknown sort key, negative limit, ...).
    InvalidArgument { what: String, hint: String },
    /// Shared memory for a capability is not there (server started without the library).
    SharedMemoryMissing { what: &'static str },
    /// A query given to a pg_perf function could not be used.
    InvalidQuery { detail: String, hint: String },
    /// perf.cache_strict is on and the query cannot be cached.
    NotCacheable { reason: &'static str },
    /// The caller lacks a privilege the operation needs.
    InsufficientPrivilege { what: String, hint: String },
}

impl PerfError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            PerfError::NotPreloaded => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            PerfError::InvalidArgument { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            PerfError::SharedMemoryMissing { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            PerfError::InvalidQuery { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            PerfError::InsufficientPrivilege { .. } => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            PerfError::NotCacheable { .. } => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        }
    }

    pub fn message(&self) -> String {
        match self {
            PerfError::NotPreloaded => {
                "pg_perf must be loaded via shared_preload_libraries".to_string()
            }
            PerfError::InvalidArgument { what, .. } => what.clone(),
            PerfError::SharedMemoryMissing { what } => {
                format!("pg_perf {what} shared memory is not initialized")
            }
            PerfError::InvalidQuery { detail, .. } => detail.clone(),
            PerfError::InsufficientPrivilege { what, .. } => what.clone(),
            PerfError::NotCacheable { reason } => {
                format!("query result cannot be cached: {reason}")
            }
        }
    }

    pub fn hint(&self) -> String {
        match self {
            PerfError::NotPreloaded | PerfError::SharedMemoryMissing { .. } => {
                "Add pg_perf to shared_preload_libraries in postgresql.conf \
                 (shared_preload_libraries = 'pg_perf') and restart the server."
                    .to_string()
            }
            PerfError::NotCacheable { .. } => {
                "See docs/cache-design.md for what can be cached, or SET perf.cache_strict = off \
                 to execute such queries directly."
                    .to_string()
            }
            PerfError::InvalidArgument { hint, .. }
            | PerfError::InvalidQuery { hint, .. }
            | PerfError::InsufficientPrivilege { hint, .. } => hint.clone(),
        }
    }

    /// Raise this error as a PostgreSQL `ERROR` (longjmps out through pgrx's guard).
    pub fn raise(self) -> ! {
        ErrorReport::new(self.sqlstate(), self.message(), "pg_perf")
            .set_hint(self.hint())
            .report(PgLogLevel::ERROR);
        unreachable!("ERROR-level reports do not return")
    }
}

/// Shorthand for the most common refusal: a bad argument with a hint.
pub fn invalid_argument(what: impl Into<String>, hint: impl Into<String>) -> ! {
    PerfError::InvalidArgument {
        what: what.into(),
        hint: hint.into(),
    }
    .raise()
}
