//! Walks an executed plan and records which columns each statement filters, joins, sorts
//! and groups on, with the operator and the selectivity — what pg_qualstats collects, taken
//! once per statement instead of on every execution.
//!
//! Invariants: called from ExecutorEnd with a live QueryDesc (plan, planstate, estate and
//! relations still open); reads only; allocates only in Rust (`Vec`) and through catalog
//! lookups that palloc in the per-query context. Unknown node or expression shapes are
//! skipped, never guessed.
//!
//! Plan facts, part of stats' public API: statement capture calls [`collect`] at
//! ExecutorEnd, and the advisor's what-if planner calls it on an EXPLAIN-only QueryDesc
//! (started, never run: selectivities are then the planner's estimates only).

use pgrx::pg_sys::{self, Plan, PlanState, QueryDesc};
use pgrx::PgList;

use super::shmem::{PredicateKind, PredicateRec, MAX_PREDICATES};

/// Relations with OIDs below this are system catalogs: never worth an index suggestion.
const FIRST_NORMAL_OBJECT_ID: u32 = 16384;

struct Walk {
    qd: *mut QueryDesc,
    out: Vec<PredicateRec>,
    group: u8,
}

/// The predicates of the statement behind `qd` (at most `MAX_PREDICATES`).
///
/// # Safety
/// `qd` must be a live QueryDesc in ExecutorEnd, before `standard_ExecutorEnd` frees it.
pub unsafe fn collect(qd: *mut QueryDesc) -> Vec<PredicateRec> {
    let mut w = Walk {
        qd,
        out: Vec::new(),
        group: 0,
    };
    // SAFETY: live QueryDesc from ExecutorEnd.
    unsafe {
        let ps = (*qd).planstate;
        if !ps.is_null() {
            w.planstate(ps, 0);
        }
    }
    w.out
}

/// A pointer List of the plan (NIL included) as a [`PgList`].
///
/// # Safety
/// `list` is NIL or a valid pointer List that outlives the returned value.
unsafe fn list<T>(list: *mut pg_sys::List) -> PgList<T> {
    // SAFETY: per the function contract; PgList::from_pg never frees the list.
    unsafe { PgList::from_pg(list) }
}

/// The i-th pointer of a PostgreSQL List (null when out of range).
///
/// # Safety
/// As for [`list`].
unsafe fn nth(l: *mut pg_sys::List, i: i32) -> *mut std::ffi::c_void {
    let Ok(i) = usize::try_from(i) else {
        return std::ptr::null_mut();
    };
    // SAFETY: per the function contract.
    unsafe { list::<std::ffi::c_void>(l) }
        .get_ptr(i)
        .unwrap_or(std::ptr::null_mut())
}

unsafe fn tag(node: *const std::ffi::c_void) -> pg_sys::NodeTag {
    // SAFETY: every node starts with its NodeTag.
    unsafe { (*(node as *const pg_sys::Node)).type_ }
}

/// Strips binary-compatible relabelings and casts that don't change which column it is.
unsafe fn strip(mut e: *mut pg_sys::Expr) -> *mut pg_sys::Expr {
    // SAFETY: walking valid expression nodes.
    unsafe {
        while !e.is_null() {
            match tag(e as _) {
                pg_sys::NodeTag::T_RelabelType => e = (*(e as *mut pg_sys::RelabelType)).arg,
                pg_sys::NodeTag::T_CoerceViaIO => e = (*(e as *mut pg_sys::CoerceViaIO)).arg,
                _ => break,
            }
        }
        e
    }
}

/// Whether `e` is a value known before the scan starts: a constant, a bind parameter, or a
/// non-volatile function or operator of those (`lower($1)`, `$1 - $2::interval`, `now()`),
/// which a generic plan keeps unfolded. Column references, outer (PARAM_EXEC) parameters,
/// volatile calls and any other node shape are not.
///
/// # Safety
/// `e` is null or a valid expression node.
unsafe fn pseudo_constant(e: *mut pg_sys::Expr, depth: u32) -> bool {
    // SAFETY: walking valid expression nodes; func_volatile/op_volatile are syscache
    // lookups of the plan's own (existing) functions and operators.
    unsafe {
        let e = strip(e);
        if e.is_null() || depth > 8 {
            return false;
        }
        let args_constant = |args: *mut pg_sys::List| {
            list::<pg_sys::Expr>(args)
                .iter_ptr()
                .all(|a| pseudo_constant(a, depth + 1))
        };
        match tag(e as _) {
            pg_sys::NodeTag::T_Const => true,
            pg_sys::NodeTag::T_Param => {
                (*(e as *mut pg_sys::Param)).paramkind != pg_sys::ParamKind::PARAM_EXEC
            }
            pg_sys::NodeTag::T_FuncExpr => {
                let f = e as *mut pg_sys::FuncExpr;
                pg_sys::func_volatile((*f).funcid)
                    != pg_sys::PROVOLATILE_VOLATILE as std::ffi::c_char
                    && args_constant((*f).args)
            }
            pg_sys::NodeTag::T_OpExpr => {
                let o = e as *mut pg_sys::OpExpr;
                pg_sys::op_volatile((*o).opno) != pg_sys::PROVOLATILE_VOLATILE as std::ffi::c_char
                    && args_constant((*o).args)
            }
            _ => false,
        }
    }
}

/// A column reference resolved to its base table.
#[derive(Clone, Copy)]
struct Column {
    relid: u32,
    attnum: i16,
    funcid: u32,
}

enum Side {
    Column(Column),
    Constant,
    OuterParam,
    Other,
}

impl Walk {
    fn push(&mut self, rec: PredicateRec) {
        if rec.relid < FIRST_NORMAL_OBJECT_ID || self.out.len() >= MAX_PREDICATES {
            return;
        }
        let dup = self.out.iter().any(|r| {
            r.relid == rec.relid
                && r.attnum == rec.attnum
                && r.opno == rec.opno
                && r.kind == rec.kind
                && r.funcid == rec.funcid
        });
        if !dup {
            self.out.push(rec);
        }
    }

    fn next_group(&mut self) -> u8 {
        self.group = self.group.wrapping_add(1);
        self.group
    }

    unsafe fn rte_relid(&self, rti: i32) -> Option<u32> {
        // SAFETY: rtable belongs to the live PlannedStmt.
        unsafe {
            let rte = nth((*(*self.qd).plannedstmt).rtable, rti - 1) as *mut pg_sys::RangeTblEntry;
            if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
                return None;
            }
            Some((*rte).relid.to_u32())
        }
    }

    /// reltuples of the scanned relation if the executor has it open (it does for scans).
    unsafe fn reltuples(&self, rti: u32) -> f64 {
        // SAFETY: es_relations has es_range_table_size slots, filled lazily.
        unsafe {
            let es = (*self.qd).estate;
            if es.is_null() || rti == 0 || rti as usize > (*es).es_range_table_size as usize {
                return -1.0;
            }
            let rel = *(*es).es_relations.add(rti as usize - 1);
            if rel.is_null() || (*rel).rd_rel.is_null() {
                return -1.0;
            }
            (*(*rel).rd_rel).reltuples as f64
        }
    }

    /// Resolves an expression evaluated at `plan` to a base-table column, following
    /// OUTER_VAR/INNER_VAR references down through child target lists.
    unsafe fn column(&self, plan: *mut Plan, e: *mut pg_sys::Expr, depth: u32) -> Option<Column> {
        if depth > 32 {
            return None;
        }
        // SAFETY: valid plan/expression nodes of the live statement.
        unsafe {
            let e = strip(e);
            if e.is_null() {
                return None;
            }
            match tag(e as _) {
                pg_sys::NodeTag::T_Var => {
                    let v = e as *mut pg_sys::Var;
                    if (*v).varlevelsup != 0 {
                        return None;
                    }
                    let child = match (*v).varno {
                        pg_sys::OUTER_VAR => (*plan).lefttree,
                        pg_sys::INNER_VAR => (*plan).righttree,
                        pg_sys::INDEX_VAR => return None,
                        rti if rti > 0 => {
                            return if (*v).varattno > 0 {
                                self.rte_relid(rti).map(|relid| Column {
                                    relid,
                                    attnum: (*v).varattno,
                                    funcid: 0,
                                })
                            } else {
                                None
                            };
                        }
                        _ => return None,
                    };
                    if child.is_null() {
                        return None;
                    }
                    let te = nth((*child).targetlist, (*v).varattno as i32 - 1)
                        as *mut pg_sys::TargetEntry;
                    if te.is_null() {
                        return None;
                    }
                    self.column(child, (*te).expr, depth + 1)
                }
                // f(col) such as lower(email): an expression-index candidate.
                pg_sys::NodeTag::T_FuncExpr => {
                    let f = e as *mut pg_sys::FuncExpr;
                    let arg = nth((*f).args, 0) as *mut pg_sys::Expr;
                    let c = self.column(plan, arg, depth + 1)?;
                    if c.funcid != 0 {
                        return None;
                    }
                    Some(Column {
                        funcid: (*f).funcid.to_u32(),
                        ..c
                    })
                }
                _ => None,
            }
        }
    }

    unsafe fn side(&self, plan: *mut Plan, e: *mut pg_sys::Expr) -> Side {
        // SAFETY: valid expression nodes.
        unsafe {
            let s = strip(e);
            if s.is_null() {
                return Side::Other;
            }
            match tag(s as _) {
                pg_sys::NodeTag::T_Const => Side::Constant,
                pg_sys::NodeTag::T_Param => {
                    if (*(s as *mut pg_sys::Param)).paramkind == pg_sys::ParamKind::PARAM_EXEC {
                        Side::OuterParam
                    } else {
                        Side::Constant
                    }
                }
                _ => match self.column(plan, s, 0) {
                    Some(c) => Side::Column(c),
                    None if pseudo_constant(s, 0) => Side::Constant,
                    None => Side::Other,
                },
            }
        }
    }

    /// Records every `column op something` inside a qual list (AND/OR trees flattened).
    unsafe fn quals(
        &mut self,
        plan: *mut Plan,
        quals: *mut pg_sys::List,
        kind: PredicateKind,
        sel: (f32, f32),
    ) {
        // SAFETY: iterating a valid List of expressions.
        unsafe {
            let group = self.next_group();
            for e in list::<pg_sys::Expr>(quals).iter_ptr() {
                self.qual(plan, e, kind, group, sel, 0);
            }
        }
    }

    unsafe fn qual(
        &mut self,
        plan: *mut Plan,
        e: *mut pg_sys::Expr,
        kind: PredicateKind,
        group: u8,
        sel: (f32, f32),
        depth: u32,
    ) {
        if e.is_null() || depth > 16 {
            return;
        }
        // SAFETY: valid expression nodes.
        unsafe {
            let (opno, args) = match tag(e as _) {
                pg_sys::NodeTag::T_BoolExpr => {
                    let b = e as *mut pg_sys::BoolExpr;
                    if (*b).boolop != pg_sys::BoolExprType::NOT_EXPR {
                        for arg in list::<pg_sys::Expr>((*b).args).iter_ptr() {
                            self.qual(plan, arg, kind, group, sel, depth + 1);
                        }
                    }
                    return;
                }
                pg_sys::NodeTag::T_OpExpr => {
                    let o = e as *mut pg_sys::OpExpr;
                    ((*o).opno.to_u32(), (*o).args)
                }
                pg_sys::NodeTag::T_ScalarArrayOpExpr => {
                    let o = e as *mut pg_sys::ScalarArrayOpExpr;
                    ((*o).opno.to_u32(), (*o).args)
                }
                _ => return,
            };
            if list::<pg_sys::Expr>(args).len() != 2 {
                return;
            }
            let l = self.side(plan, nth(args, 0) as _);
            let r = self.side(plan, nth(args, 1) as _);
            let rec =
                |c: Column, opno: u32, kind: PredicateKind, with_constant: bool| PredicateRec {
                    relid: c.relid,
                    opno,
                    funcid: c.funcid,
                    attnum: c.attnum,
                    kind: kind as u8,
                    group,
                    est_selectivity: sel.0,
                    actual_selectivity: sel.1,
                    with_constant,
                    _pad: [0; 3],
                };
            match (l, r) {
                (Side::Column(c), Side::Constant) => self.push(rec(c, opno, kind, true)),
                (Side::Constant, Side::Column(c)) => {
                    // `5 < a` is `a > 5`: record the commuted operator.
                    let com = pg_sys::get_commutator(pg_sys::Oid::from(opno)).to_u32();
                    self.push(rec(c, if com != 0 { com } else { opno }, kind, true));
                }
                (Side::Column(c), Side::OuterParam) => {
                    self.push(rec(c, opno, PredicateKind::Join, false))
                }
                (Side::OuterParam, Side::Column(c)) => {
                    self.push(rec(c, opno, PredicateKind::Join, false))
                }
                (Side::Column(a), Side::Column(b)) if a.relid != b.relid => {
                    self.push(rec(a, opno, PredicateKind::Join, false));
                    self.push(rec(b, opno, PredicateKind::Join, false));
                }
                _ => {}
            }
        }
    }

    /// Key columns of Sort/Agg/Group nodes (indexes into the input's target list).
    unsafe fn key_columns(
        &mut self,
        plan: *mut Plan,
        n: i32,
        idx: *mut pg_sys::AttrNumber,
        kind: PredicateKind,
    ) {
        // SAFETY: idx has n entries; the input plan's target list is valid.
        unsafe {
            let child = (*plan).lefttree;
            if child.is_null() || idx.is_null() {
                return;
            }
            let group = self.next_group();
            for i in 0..n.max(0) as usize {
                let te =
                    nth((*child).targetlist, *idx.add(i) as i32 - 1) as *mut pg_sys::TargetEntry;
                if te.is_null() {
                    continue;
                }
                if let Some(c) = self.column(child, (*te).expr, 0) {
                    self.push(PredicateRec {
                        relid: c.relid,
                        opno: 0,
                        funcid: c.funcid,
                        attnum: c.attnum,
                        kind: kind as u8,
                        group,
                        est_selectivity: -1.0,
                        actual_selectivity: -1.0,
                        with_constant: false,
                        _pad: [0; 3],
                    });
                }
            }
        }
    }

    /// (estimated, measured) fraction of the table's rows a scan node returns.
    unsafe fn scan_selectivity(&self, ps: *mut PlanState, rti: u32) -> (f32, f32) {
        // SAFETY: valid PlanState; instrument may be null.
        unsafe {
            let tuples = self.reltuples(rti);
            if tuples <= 0.0 {
                return (-1.0, -1.0);
            }
            let est = ((*(*ps).plan).plan_rows / tuples).clamp(0.0, 1.0) as f32;
            let ins = (*ps).instrument;
            let act = if ins.is_null() {
                -1.0
            } else {
                let loops = (*ins).nloops + if (*ins).running { 1.0 } else { 0.0 };
                let rows = (*ins).ntuples + (*ins).tuplecount;
                if loops > 0.0 {
                    ((rows / loops) / tuples).clamp(0.0, 1.0) as f32
                } else {
                    -1.0
                }
            };
            (est, act)
        }
    }

    unsafe fn planstate(&mut self, ps: *mut PlanState, depth: u32) {
        if ps.is_null() || depth > 64 || self.out.len() >= MAX_PREDICATES {
            return;
        }
        // SAFETY: walking the live PlanState tree and its plan nodes.
        unsafe {
            let plan = (*ps).plan;
            if plan.is_null() {
                return;
            }
            use pg_sys::NodeTag::*;
            match (*plan).type_ {
                T_SeqScan | T_SampleScan | T_TidScan | T_TidRangeScan => {
                    let rti = (*(plan as *mut pg_sys::Scan)).scanrelid;
                    let sel = self.scan_selectivity(ps, rti);
                    self.quals(plan, (*plan).qual, PredicateKind::Filter, sel);
                }
                T_IndexScan => {
                    let s = plan as *mut pg_sys::IndexScan;
                    let sel = self.scan_selectivity(ps, (*s).scan.scanrelid);
                    self.quals(plan, (*s).indexqualorig, PredicateKind::IndexCond, sel);
                    self.quals(plan, (*plan).qual, PredicateKind::Filter, sel);
                }
                T_IndexOnlyScan => {
                    let s = plan as *mut pg_sys::Scan;
                    let sel = self.scan_selectivity(ps, (*s).scanrelid);
                    self.quals(plan, (*plan).qual, PredicateKind::Filter, sel);
                }
                T_BitmapHeapScan => {
                    let s = plan as *mut pg_sys::BitmapHeapScan;
                    let sel = self.scan_selectivity(ps, (*s).scan.scanrelid);
                    self.quals(plan, (*s).bitmapqualorig, PredicateKind::IndexCond, sel);
                    self.quals(plan, (*plan).qual, PredicateKind::Filter, sel);
                }
                T_HashJoin => {
                    let j = plan as *mut pg_sys::HashJoin;
                    self.quals(plan, (*j).hashclauses, PredicateKind::Join, (-1.0, -1.0));
                    self.quals(plan, (*j).join.joinqual, PredicateKind::Join, (-1.0, -1.0));
                }
                T_MergeJoin => {
                    let j = plan as *mut pg_sys::MergeJoin;
                    self.quals(plan, (*j).mergeclauses, PredicateKind::Join, (-1.0, -1.0));
                    self.quals(plan, (*j).join.joinqual, PredicateKind::Join, (-1.0, -1.0));
                }
                T_NestLoop => {
                    let j = plan as *mut pg_sys::Join;
                    self.quals(plan, (*j).joinqual, PredicateKind::Join, (-1.0, -1.0));
                }
                T_Sort | T_IncrementalSort => {
                    let s = plan as *mut pg_sys::Sort;
                    self.key_columns(plan, (*s).numCols, (*s).sortColIdx, PredicateKind::Sort);
                }
                T_Agg => {
                    let a = plan as *mut pg_sys::Agg;
                    self.key_columns(plan, (*a).numCols, (*a).grpColIdx, PredicateKind::Group);
                }
                T_Group => {
                    let g = plan as *mut pg_sys::Group;
                    self.key_columns(plan, (*g).numCols, (*g).grpColIdx, PredicateKind::Group);
                }
                _ => {}
            }
            // Children.
            self.planstate((*ps).lefttree, depth + 1);
            self.planstate((*ps).righttree, depth + 1);
            match (*plan).type_ {
                T_Append => {
                    let a = ps as *mut pg_sys::AppendState;
                    for i in 0..(*a).as_nplans.max(0) as usize {
                        self.planstate(*(*a).appendplans.add(i), depth + 1);
                    }
                }
                T_MergeAppend => {
                    let a = ps as *mut pg_sys::MergeAppendState;
                    for i in 0..(*a).ms_nplans.max(0) as usize {
                        self.planstate(*(*a).mergeplans.add(i), depth + 1);
                    }
                }
                T_SubqueryScan => {
                    self.planstate((*(ps as *mut pg_sys::SubqueryScanState)).subplan, depth + 1);
                }
                _ => {}
            }
            for subplans in [(*ps).initPlan, (*ps).subPlan] {
                for sp in list::<pg_sys::SubPlanState>(subplans).iter_ptr() {
                    if !sp.is_null() {
                        self.planstate((*sp).planstate, depth + 1);
                    }
                }
            }
        }
    }
}
