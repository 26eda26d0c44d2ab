//! PostgreSQL functions that run a user's query, declared here to be called outside pgrx's
//! FFI guard (which would rebuild their ERROR from a few of its fields): callers run them
//! through `try_catch::try_capture`/`try_capture_query`, and the SQL function around them
//! re-throws the original error with `try_catch::rethrowing`, every field intact.
//!
//! Invariant: each is called only inside `try_capture*`, never directly.

use pgrx::pg_sys::{
    Datum, List, Oid, ParamListInfo, PlannedStmt, Query, QueryEnvironment, RawStmt, SPIPlanPtr,
};
use std::ffi::c_char;

unsafe extern "C-unwind" {
    pub fn pg_parse_query(query_string: *const c_char) -> *mut List;
    pub fn parse_analyze_varparams(
        parse_tree: *mut RawStmt,
        source_text: *const c_char,
        param_types: *mut *mut Oid,
        num_params: *mut i32,
        query_env: *mut QueryEnvironment,
    ) -> *mut Query;
    pub fn pg_analyze_and_rewrite_varparams(
        parsetree: *mut RawStmt,
        query_string: *const c_char,
        param_types: *mut *mut Oid,
        num_params: *mut i32,
        query_env: *mut QueryEnvironment,
    ) -> *mut List;
    pub fn OidInputFunctionCall(
        function_id: Oid,
        text: *const c_char,
        typioparam: Oid,
        typmod: i32,
    ) -> Datum;
    pub fn pg_rewrite_query(query: *mut Query) -> *mut List;
    pub fn pg_plan_query(
        query: *mut Query,
        query_string: *const c_char,
        cursor_options: i32,
        bound_params: ParamListInfo,
    ) -> *mut PlannedStmt;
    pub fn SPI_prepare(src: *const c_char, nargs: i32, argtypes: *mut Oid) -> SPIPlanPtr;
    pub fn SPI_execute_plan(
        plan: SPIPlanPtr,
        values: *mut Datum,
        nulls: *const c_char,
        read_only: bool,
        tcount: i64,
    ) -> i32;
}
