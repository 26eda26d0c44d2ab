//! The planner's view of a hypothetical index: the `IndexOptInfo` added to a relation's
//! index list by the `get_relation_info` hook, with its size estimated by `advisor::size`.

use super::*;

/// The OID of the table whose hypothetical indexes apply to the relation being planned:
/// itself, or for a partition any of its ancestors in this query.
pub(super) unsafe fn applies_to(
    root: *mut pg_sys::PlannerInfo,
    relid: Oid,
    rel: *mut pg_sys::RelOptInfo,
    target: Oid,
) -> bool {
    if relid == target {
        return true;
    }
    // SAFETY: append_rel_array has simple_rel_array_size entries when set.
    unsafe {
        let mut rti = (*rel).relid as usize;
        for _ in 0..32 {
            if (*root).append_rel_array.is_null() || rti >= (*root).simple_rel_array_size as usize {
                return false;
            }
            let app = *(*root).append_rel_array.add(rti);
            if app.is_null() {
                return false;
            }
            if (*app).parent_reloid == target {
                return true;
            }
            rti = (*app).parent_relid as usize;
        }
    }
    false
}

pub(super) unsafe fn oid_array(values: impl Iterator<Item = Oid>, n: usize) -> *mut Oid {
    // SAFETY: palloc of n Oids, filled below.
    unsafe {
        let p = pg_sys::palloc0(n.max(1) * std::mem::size_of::<Oid>()) as *mut Oid;
        for (i, v) in values.enumerate().take(n) {
            *p.add(i) = v;
        }
        p
    }
}

pub(super) unsafe fn bool_array(values: impl Iterator<Item = bool>, n: usize) -> *mut bool {
    // SAFETY: palloc of n bools, filled below.
    unsafe {
        let p = pg_sys::palloc0(n.max(1)) as *mut bool;
        for (i, v) in values.enumerate().take(n) {
            *p.add(i) = v;
        }
        p
    }
}

/// Builds the planner's view of a hypothetical index on `rel`.
pub(super) unsafe fn index_opt_info(
    relid: Oid,
    rel: *mut pg_sys::RelOptInfo,
    h: &HypoIndex,
) -> Option<*mut pg_sys::IndexOptInfo> {
    // SAFETY: planner structures handed to get_relation_info_hook; allocations in the
    // planner's memory context.
    unsafe {
        let varno = (*rel).relid as i32;
        let same_table = relid == h.relid;
        // A partition's columns can sit at other attnums: map by name; expressions and
        // predicates are only used on the table they were written for.
        if !same_table
            && (!h.predicate.is_null() || h.keys.iter().chain(&h.include).any(|c| c.attnum == 0))
        {
            return None;
        }
        let map_attnum = |attnum: i16| -> i16 {
            if same_table {
                return attnum;
            }
            let name = pg_sys::get_attname(h.relid, attnum, true);
            if name.is_null() {
                0
            } else {
                pg_sys::get_attnum(relid, name)
            }
        };
        let all: Vec<HypoColumn> = h.keys.iter().chain(&h.include).copied().collect();
        let ncols = all.len();
        let nkeys = h.keys.len();
        let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexOptInfo>())
            as *mut pg_sys::IndexOptInfo;
        (*info).type_ = pg_sys::NodeTag::T_IndexOptInfo;
        (*info).indexoid = h.oid;
        (*info).reltablespace = (*rel).reltablespace;
        (*info).rel = rel;
        (*info).ncolumns = ncols as i32;
        (*info).nkeycolumns = nkeys as i32;
        let keys = pg_sys::palloc0(ncols * std::mem::size_of::<i32>()) as *mut i32;
        let mut indexprs: *mut pg_sys::List = std::ptr::null_mut();
        let mut tlist: *mut pg_sys::List = std::ptr::null_mut();
        for (i, c) in all.iter().enumerate() {
            let expr: *mut pg_sys::Expr = if c.attnum > 0 {
                let a = map_attnum(c.attnum);
                if a <= 0 {
                    return None;
                }
                *keys.add(i) = a as i32;
                pg_sys::makeVar(varno, a, c.typ, c.typmod, c.collation, 0) as *mut pg_sys::Expr
            } else {
                let e = pg_sys::copyObjectImpl(c.expr as *const _) as *mut pg_sys::Node;
                pg_sys::ChangeVarNodes(e, 1, varno, 0);
                indexprs = pg_sys::lappend(indexprs, e as *mut _);
                e as *mut pg_sys::Expr
            };
            let te = pg_sys::makeTargetEntry(expr, (i + 1) as i16, std::ptr::null_mut(), false);
            tlist = pg_sys::lappend(tlist, te as *mut _);
        }
        (*info).indexkeys = keys;
        (*info).indexcollations = oid_array(h.keys.iter().map(|c| c.collation), nkeys);
        (*info).opfamily = oid_array(h.keys.iter().map(|c| c.opfamily), nkeys);
        (*info).opcintype = oid_array(h.keys.iter().map(|c| c.opcintype), nkeys);
        let amroutine = pg_sys::GetIndexAmRoutineByAmId(h.amoid, false);
        let is_btree = h.amoid == pg_sys::BTREE_AM_OID;
        if is_btree {
            (*info).sortopfamily = oid_array(h.keys.iter().map(|c| c.opfamily), nkeys);
            (*info).reverse_sort = bool_array(h.keys.iter().map(|c| c.desc), nkeys);
            (*info).nulls_first = bool_array(h.keys.iter().map(|c| c.nulls_first), nkeys);
        }
        (*info).opclassoptions =
            pg_sys::palloc0(ncols.max(1) * std::mem::size_of::<*mut pg_sys::bytea>())
                as *mut *mut pg_sys::bytea;
        // Index-only scans: btree returns every column; other AMs here do not.
        (*info).canreturn = bool_array(
            std::iter::repeat(is_btree && (*amroutine).amcanreturn.is_some()),
            ncols,
        );
        (*info).relam = h.amoid;
        (*info).indexprs = indexprs;
        (*info).indextlist = tlist;
        if !h.predicate.is_null() {
            let p = pg_sys::copyObjectImpl(h.predicate as *const _) as *mut pg_sys::Node;
            pg_sys::ChangeVarNodes(p, 1, varno, 0);
            let p = pg_sys::canonicalize_qual(p as *mut pg_sys::Expr, false);
            (*info).indpred = pg_sys::make_ands_implicit(p);
        }
        (*info).indrestrictinfo = std::ptr::null_mut();
        (*info).predOK = false;
        (*info).unique = h.unique;
        (*info).immediate = true;
        (*info).hypothetical = true;
        (*info).amcanorderbyop = (*amroutine).amcanorderbyop;
        (*info).amoptionalkey = (*amroutine).amoptionalkey;
        (*info).amsearcharray = (*amroutine).amsearcharray;
        (*info).amsearchnulls = (*amroutine).amsearchnulls;
        (*info).amhasgettuple = (*amroutine).amgettuple.is_some();
        (*info).amhasgetbitmap = (*amroutine).amgetbitmap.is_some();
        (*info).amcanparallel = (*amroutine).amcanparallel;
        (*info).amcanmarkpos = (*amroutine).ammarkpos.is_some();
        // SAFETY: both are the AM's cost estimator; IndexOptInfo stores it untyped.
        (*info).amcostestimate = std::mem::transmute::<
            pg_sys::amcostestimate_function,
            Option<unsafe extern "C-unwind" fn()>,
        >((*amroutine).amcostestimate);

        // Size: rows covered (a partial index only covers rows matching its predicate).
        let heap_rows = (*rel).tuples.max(0.0);
        let rows = if h.predicate.is_null() {
            heap_rows
        } else {
            (heap_rows * h.predicate_selectivity).max(1.0)
        };
        let est = estimate_size(h, rows, (*rel).pages as f64);
        (*info).pages = est.pages.min(u32::MAX as u64) as u32;
        (*info).tuples = if h.amoid == pg_sys::BRIN_AM_OID {
            est.tuples
        } else {
            rows
        };
        (*info).tree_height = if is_btree { est.tree_height as i32 } else { -1 };
        Some(info)
    }
}

/// Size of a hypothetical index covering `rows` heap rows (of a `heap_pages`-page table).
pub(super) fn estimate_size(h: &HypoIndex, rows: f64, heap_pages: f64) -> size::IndexSizeEstimate {
    let key_w: Vec<AttrWidth> = h.keys.iter().map(|c| c.width).collect();
    let inc_w: Vec<AttrWidth> = h.include.iter().map(|c| c.width).collect();
    if h.amoid == pg_sys::BRIN_AM_OID {
        size::estimate_brin(heap_pages, 128.0, &key_w)
    } else {
        // GIN and others: the btree model stands in for page counts.
        size::estimate_btree_with(&size::BtreeSizeInput {
            rows,
            key_widths: &key_w,
            include_widths: &inc_w,
            distinct_keys: h.distinct_keys.map(|d| d.min(rows)),
            fillfactor: 90.0,
        })
    }
}

/// pg_class.reltuples of a table.
pub(super) fn reltuples_of(relid: Oid) -> f64 {
    // SAFETY: plain relcache lookup, released right away.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(relid);
        if rel.is_null() {
            return 0.0;
        }
        let t = (*(*rel).rd_rel).reltuples as f64;
        pg_sys::RelationClose(rel);
        t
    }
}
