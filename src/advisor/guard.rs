//! What the advisor and the what-if planner may run, and with whose rights.
//!
//! Design (issue #10):
//! - Only IMMUTABLE index expressions and predicates are accepted, by CREATE INDEX's own rule
//!   (`expression_planner` + `contain_mutable_functions`, as `CheckMutability` does). When the
//!   expression calls anything that is not built in, the check runs on the expression as
//!   written instead: `expression_planner` folds constant calls of immutable functions, which
//!   would execute user code.
//! - Expression statistics are sampled (the expression is evaluated over a sample of the
//!   table) only when every function, operator and type the expression uses is built in
//!   (OID below `FirstNormalObjectId`). The sample runs as the calling role, inside a
//!   subtransaction, under `SECURITY_RESTRICTED_OPERATION` with its own GUC nest level (as
//!   ANALYZE runs index expressions); any error there (division by zero, say) is swallowed and
//!   the planner's default estimates are used. User-defined functions are never executed.
//! - Statements captured from other roles are planned for the advisor only when they call
//!   nothing but built-in functions and operators, on values of built-in types or enums:
//!   constant folding and selectivity estimation (a range type's subtype_diff) during
//!   planning would otherwise run another role's code with the caller's rights.

#![allow(ffi_unwind_calls)]

use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgList;

pub(crate) use crate::pg::subxact::{in_subtransaction, try_in_subtransaction};

/// Runs `f` as the current user under `SECURITY_RESTRICTED_OPERATION` and a new GUC nest
/// level, in a subtransaction whose errors are swallowed (None).
pub(crate) fn restricted<T>(f: impl FnOnce() -> T) -> Option<T> {
    in_subtransaction(|| {
        let mut user = Oid::INVALID;
        let mut sec = 0;
        // SAFETY: ANALYZE's pattern: save the user and security context, restrict, and
        // restore both; on error the subtransaction abort restores them and the GUC level.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
            pg_sys::SetUserIdAndSecContext(
                user,
                sec | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
            let level = pg_sys::NewGUCNestLevel();
            let r = f();
            pg_sys::AtEOXact_GUC(false, level);
            pg_sys::SetUserIdAndSecContext(user, sec);
            r
        }
    })
}

fn builtin(oid: Oid) -> bool {
    oid.to_u32() < pg_sys::FirstNormalObjectId
}

#[pg_guard]
unsafe extern "C-unwind" fn user_function(func: Oid, _ctx: *mut std::ffi::c_void) -> bool {
    !builtin(func)
}

/// Walker context: whether node types outside a short list of plain expression nodes count
/// as user code (for sampling).
struct Walk {
    strict: bool,
}

/// Whether values of this type can reach user code when compared or estimated: any type
/// that is not built in, except enums (whose operators and support functions are built in).
/// A range type's subtype_diff, for one, is user code the planner calls to estimate `&&`.
fn user_type(typ: Oid) -> bool {
    // SAFETY: plain syscache lookup (0 for a missing type).
    !builtin(typ) && unsafe { pg_sys::get_typtype(typ) } as u8 != pg_sys::TYPTYPE_ENUM
}

unsafe fn list_oids(list: *mut pg_sys::List) -> Vec<Oid> {
    // SAFETY: per the caller, `list` is NIL or a valid OID list that outlives this call.
    unsafe { PgList::<Oid>::from_pg(list) }.iter_oid().collect()
}

#[pg_guard]
unsafe extern "C-unwind" fn user_code_walker(
    node: *mut pg_sys::Node,
    ctx: *mut std::ffi::c_void,
) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: `ctx` is the `Walk` passed by `calls_user_code`; nodes come from the walkers.
    unsafe {
        let walk = &*(ctx as *const Walk);
        use pg_sys::NodeTag::*;
        let tag = (*node).type_;
        if tag == T_Query {
            return pg_sys::query_tree_walker(
                node as *mut pg_sys::Query,
                Some(user_code_walker),
                ctx,
                0,
            );
        }
        if pg_sys::check_functions_in_node(node, Some(user_function), std::ptr::null_mut()) {
            return true;
        }
        let user = match tag {
            T_OpExpr | T_DistinctExpr | T_NullIfExpr => {
                !builtin((*(node as *mut pg_sys::OpExpr)).opno)
            }
            T_ScalarArrayOpExpr => !builtin((*(node as *mut pg_sys::ScalarArrayOpExpr)).opno),
            T_RowCompareExpr => list_oids((*(node as *mut pg_sys::RowCompareExpr)).opnos)
                .into_iter()
                .any(|o| !builtin(o)),
            T_MinMaxExpr => !builtin((*(node as *mut pg_sys::MinMaxExpr)).minmaxtype),
            T_CoerceToDomain => !builtin((*(node as *mut pg_sys::CoerceToDomain)).resulttype),
            T_Var => user_type((*(node as *mut pg_sys::Var)).vartype),
            T_Const => user_type((*(node as *mut pg_sys::Const)).consttype),
            T_Param => user_type((*(node as *mut pg_sys::Param)).paramtype),
            T_FuncExpr | T_BoolExpr | T_RelabelType | T_CoerceViaIO | T_CaseExpr | T_CaseWhen
            | T_CaseTestExpr | T_NullTest | T_BooleanTest | T_ArrayExpr | T_CoalesceExpr
            | T_List => false,
            // Anything else (subqueries, aggregates, sublinks...) is not sampled.
            _ => walk.strict,
        };
        if user {
            return true;
        }
        pg_sys::expression_tree_walker(node, Some(user_code_walker), ctx)
    }
}

/// Whether an analyzed expression or query (`node`) calls a function or operator that is not
/// built in, or uses a column, constant or parameter of a type that is not built in (enums
/// excepted) or a domain. `strict` also counts any node beyond plain expressions: the rule
/// for evaluating an expression.
pub(crate) unsafe fn calls_user_code(node: *mut pg_sys::Node, strict: bool) -> bool {
    let walk = Walk { strict };
    // SAFETY: walking a valid node tree; the context outlives the walk.
    unsafe { user_code_walker(node, &walk as *const Walk as *mut std::ffi::c_void) }
}

/// CREATE INDEX's mutability rule for an analyzed index expression or predicate (varno 1):
/// planned with `expression_planner` then `contain_mutable_functions` (`CheckMutability`),
/// except that an expression calling user code is checked as written (see module docs).
pub(crate) unsafe fn is_mutable(expr: *mut pg_sys::Node) -> bool {
    // SAFETY: a copy of a valid analyzed expression is planned; nothing else is touched.
    unsafe {
        if calls_user_code(expr, false) {
            return pg_sys::contain_mutable_functions(expr);
        }
        let copy = pg_sys::copyObjectImpl(expr as *const _) as *mut pg_sys::Expr;
        let planned = pg_sys::expression_planner(copy);
        pg_sys::contain_mutable_functions(planned as *mut pg_sys::Node)
    }
}
