//! Hypothetical index definitions: one CREATE INDEX statement parsed and analyzed by
//! PostgreSQL itself into a [`HypoIndex`], refused exactly where CREATE INDEX would refuse
//! it (same SQLSTATEs and messages), plus the catalog lookups and errors that go with it.

use super::*;

pub(super) fn bad_index(detail: String) -> ! {
    PerfError::InvalidQuery {
        detail,
        hint: "Give each hypothetical index as a CREATE INDEX statement, e.g. \
               'CREATE INDEX ON orders (customer_id, created_at DESC) WHERE status = ''open'''."
            .into(),
    }
    .raise()
}

pub(super) fn resolve_index(name: &str) -> Oid {
    let oid = Spi::get_one_with_args::<Oid>(
        "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'i'",
        &[name.into()],
    )
    .ok()
    .flatten();
    oid.unwrap_or_else(|| {
        PerfError::InvalidArgument {
            what: format!("index \"{name}\" does not exist"),
            hint: "hide takes names of existing indexes (schema-qualified if needed).".into(),
        }
        .raise()
    })
}

pub(super) fn width_of(typ: Oid, avg: i32) -> AttrWidth {
    let mut typlen: i16 = 0;
    let mut byval = false;
    let mut align: std::ffi::c_char = b'i' as _;
    // SAFETY: plain catalog lookup.
    unsafe { pg_sys::get_typlenbyvalalign(typ, &mut typlen, &mut byval, &mut align) };
    let avg = if avg > 0 {
        avg
    } else {
        // SAFETY: plain catalog lookup.
        unsafe { pg_sys::get_typavgwidth(typ, -1) }
    };
    AttrWidth {
        avg_bytes: avg.max(1) as u32,
        typlen,
        align: TypeAlign::from_pg_code(align as u8 as char),
    }
}

extern "C-unwind" {
    /// parser/parse_utilcmd.h (not in pgrx's bindings): analyzes an IndexStmt's expressions
    /// and predicate against the table, as CREATE INDEX does.
    fn transformIndexStmt(
        relid: Oid,
        stmt: *mut pg_sys::IndexStmt,
        query_string: *const std::ffi::c_char,
    ) -> *mut pg_sys::IndexStmt;
}

/// An ERROR with PostgreSQL's own SQLSTATE and message (CREATE INDEX's refusals).
pub(super) fn pg_error(code: PgSqlErrorCode, message: String, detail: Option<String>) -> ! {
    let mut report = ErrorReport::new(code, message, "pg_perf");
    if let Some(d) = detail {
        report = report.set_detail(d);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// CREATE INDEX's errdetail_relkind_not_supported text.
pub(super) fn relkind_detail(relkind: u8) -> String {
    let what = match relkind {
        pg_sys::RELKIND_VIEW => "views",
        pg_sys::RELKIND_SEQUENCE => "sequences",
        pg_sys::RELKIND_FOREIGN_TABLE => "foreign tables",
        pg_sys::RELKIND_INDEX => "indexes",
        pg_sys::RELKIND_PARTITIONED_INDEX => "partitioned indexes",
        pg_sys::RELKIND_COMPOSITE_TYPE => "composite types",
        pg_sys::RELKIND_TOASTVALUE => "TOAST tables",
        _ => "this relation",
    };
    format!("This operation is not supported for {what}.")
}

/// The name of a relation, or an ERROR when it no longer exists (dropped concurrently).
pub(super) fn rel_name(relid: Oid) -> String {
    // SAFETY: syscache lookup; a NULL result is handled.
    unsafe {
        let n = pg_sys::get_rel_name(relid);
        if n.is_null() {
            pg_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", relid.to_u32()),
                None,
            );
        }
        CStr::from_ptr(n).to_string_lossy().into_owned()
    }
}

/// `schema.table`, quoted, for SQL text; an ERROR when the relation is gone.
pub(super) fn qualified_rel_name(relid: Oid) -> String {
    let table = rel_name(relid);
    // SAFETY: syscache lookups; a NULL result is handled.
    let nsp = unsafe {
        let n = pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid));
        if n.is_null() {
            pg_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation \"{table}\" has no schema any more"),
                None,
            );
        }
        CStr::from_ptr(n).to_string_lossy().into_owned()
    };
    format!("{}.{}", quote_identifier(&nsp), quote_identifier(&table))
}

pub(super) unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    // SAFETY: per the caller, `list` is NIL or a valid pointer list that outlives this call.
    unsafe { PgList::<T>::from_pg(list) }.iter_ptr().collect()
}

/// Parses one CREATE INDEX statement into a hypothetical index. It is refused exactly where
/// CREATE INDEX (DefineIndex, ComputeIndexAttrs, CheckPredicate, index_create in PG 15)
/// would refuse it, with the same SQLSTATEs and messages, and also when the caller may not
/// SELECT from the table (a hypothetical index needs no ownership, but must not reveal
/// anything about a table the caller cannot read). IF NOT EXISTS and ONLY are ignored.
/// Operator class options are refused: they can only be validated against a built index.
pub(super) fn parse_index(def: &str, oid: Oid) -> HypoIndex {
    let Ok(text) = CString::new(def) else {
        bad_index("the index definition contains a NUL byte".into())
    };
    // SAFETY: parser and catalog calls in the current memory context; every node pointer is
    // produced by PostgreSQL and checked for its tag or NULL before use.
    unsafe {
        let raw = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::pg_parse_query(text.as_ptr()));
        let Some(rawstmt) = raw.head().filter(|_| raw.len() == 1) else {
            bad_index(format!("\"{def}\" is not a single CREATE INDEX statement"));
        };
        let stmt = (*rawstmt).stmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_IndexStmt {
            bad_index(format!("\"{def}\" is not a CREATE INDEX statement"));
        }
        let istmt = stmt as *mut pg_sys::IndexStmt;
        let key_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexParams);
        let include_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexIncludingParams);
        if key_elems.is_empty() {
            pg_error(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                "must specify at least one column".into(),
                None,
            );
        }
        if key_elems.len() + include_elems.len() > pg_sys::INDEX_MAX_KEYS as usize {
            pg_error(
                PgSqlErrorCode::ERRCODE_TOO_MANY_COLUMNS,
                format!(
                    "cannot use more than {} columns in an index",
                    pg_sys::INDEX_MAX_KEYS
                ),
                None,
            );
        }
        let rel = pg_sys::table_openrv((*istmt).relation, pg_sys::AccessShareLock as i32);
        let relid = (*rel).rd_id;
        let relkind = (*(*rel).rd_rel).relkind as u8;
        let table = rel_name(relid);
        // Nothing about a table the caller cannot read.
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            let name = CString::new(table.clone()).unwrap_or_default();
            pg_sys::aclcheck_error(
                pg_sys::AclResult::ACLCHECK_NO_PRIV,
                pg_sys::get_relkind_objtype(relkind as std::ffi::c_char),
                name.as_ptr(),
            );
        }
        if !matches!(
            relkind,
            pg_sys::RELKIND_RELATION | pg_sys::RELKIND_MATVIEW | pg_sys::RELKIND_PARTITIONED_TABLE
        ) {
            pg_error(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("cannot create index on relation \"{table}\""),
                Some(relkind_detail(relkind)),
            );
        }
        if relkind == pg_sys::RELKIND_PARTITIONED_TABLE && (*istmt).concurrent {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("cannot create index on partitioned table \"{table}\" concurrently"),
                None,
            );
        }
        if (*(*rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP
            && !(*rel).rd_islocaltemp
        {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot create indexes on temporary tables of other sessions".into(),
                None,
            );
        }
        if pg_sys::IsSystemRelation(rel) && !pg_sys::allowSystemTableMods {
            pg_error(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied: \"{table}\" is a system catalog"),
                None,
            );
        }
        if !(*istmt).tableSpace.is_null() {
            pg_sys::get_tablespace_oid((*istmt).tableSpace, false);
        }
        let am_name: *const std::ffi::c_char = if (*istmt).accessMethod.is_null() {
            c"btree".as_ptr()
        } else {
            (*istmt).accessMethod as *const _
        };
        let am_text = CStr::from_ptr(am_name).to_string_lossy().into_owned();
        // get_index_am_oid refuses table access methods (42809) where DefineIndex would fail
        // with an internal error.
        let amoid = pg_sys::get_index_am_oid(am_name, false);
        let amroutine = pg_sys::GetIndexAmRoutineByAmId(amoid, false);
        let am_refuses = |what: &str| -> ! {
            pg_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("access method \"{am_text}\" does not support {what}"),
                None,
            )
        };
        if (*istmt).unique && !(*amroutine).amcanunique {
            am_refuses("unique indexes");
        }
        if !include_elems.is_empty() && !(*amroutine).amcaninclude {
            am_refuses("included columns");
        }
        if key_elems.len() > 1 && !(*amroutine).amcanmulticol {
            am_refuses("multicolumn indexes");
        }
        if !(*istmt).excludeOpNames.is_null() {
            bad_index("hypothetical indexes cannot be exclusion constraints".into());
        }
        // Storage parameters: validated by the access method, as CREATE INDEX does.
        let reloptions = pg_sys::transformRelOptions(
            pg_sys::Datum::from(0usize),
            (*istmt).options,
            std::ptr::null(),
            std::ptr::null_mut(),
            false,
            false,
        );
        pg_sys::index_reloptions((*amroutine).amoptions, reloptions, true);

        // Expressions and predicate, analyzed against the table (varno 1).
        let istmt = pg_guard_ffi_boundary(|| transformIndexStmt(relid, istmt, text.as_ptr()));
        let key_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexParams);
        let include_elems: Vec<*mut pg_sys::IndexElem> = list_ptrs((*istmt).indexIncludingParams);
        let predicate = (*istmt).whereClause;
        if !predicate.is_null() && guard::is_mutable(predicate) {
            pg_error(
                PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                "functions in index predicate must be marked IMMUTABLE".into(),
                None,
            );
        }

        let column = |elem: *mut pg_sys::IndexElem, key: bool| -> HypoColumn {
            let (mut attnum, mut expr) = (0i16, std::ptr::null_mut::<pg_sys::Node>());
            if !(*elem).name.is_null() {
                attnum = pg_sys::get_attnum(relid, (*elem).name);
                if attnum == 0 {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                        format!(
                            "column \"{}\" does not exist",
                            CStr::from_ptr((*elem).name).to_string_lossy()
                        ),
                        None,
                    );
                }
            } else {
                let e = (*elem).expr;
                if !e.is_null()
                    && (*e).type_ == pg_sys::NodeTag::T_Var
                    && (*(e as *mut pg_sys::Var)).varattno != 0
                {
                    // A parenthesized plain column is a plain column.
                    attnum = (*(e as *mut pg_sys::Var)).varattno;
                } else {
                    if !key {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                            "expressions are not supported in included columns".into(),
                            None,
                        );
                    }
                    if e.is_null() || guard::is_mutable(e) {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                            "functions in index expression must be marked IMMUTABLE".into(),
                            None,
                        );
                    }
                    expr = e;
                }
            }
            let (typ, typmod, mut collation) = if expr.is_null() {
                let (mut t, mut m, mut c) = (Oid::INVALID, 0i32, Oid::INVALID);
                if attnum > 0 {
                    pg_sys::get_atttypetypmodcoll(relid, attnum, &mut t, &mut m, &mut c);
                } else {
                    // A system column: refused below, once every column has been checked.
                    t = pg_sys::INT4OID;
                }
                (t, m, c)
            } else {
                (
                    pg_sys::exprType(expr),
                    pg_sys::exprTypmod(expr),
                    pg_sys::exprCollation(expr),
                )
            };
            let has = |l: *mut pg_sys::List| !PgList::<pg_sys::Node>::from_pg(l).is_empty();
            if !key {
                let refuse = |what: &str| -> ! {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_INVALID_OBJECT_DEFINITION,
                        format!("including column does not support {what}"),
                        None,
                    )
                };
                if has((*elem).collation) {
                    refuse("a collation");
                }
                if has((*elem).opclass) {
                    refuse("an operator class");
                }
                if (*elem).ordering != pg_sys::SortByDir::SORTBY_DEFAULT {
                    refuse("ASC/DESC options");
                }
                if (*elem).nulls_ordering != pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT {
                    refuse("NULLS FIRST/LAST options");
                }
            }
            if key {
                if has((*elem).collation) {
                    collation = pg_sys::get_collation_oid((*elem).collation, false);
                }
                if attnum >= 0 {
                    if pg_sys::type_is_collatable(typ) {
                        if collation == Oid::INVALID {
                            ErrorReport::new(
                                PgSqlErrorCode::ERRCODE_INDETERMINATE_COLLATION,
                                "could not determine which collation to use for index expression",
                                "pg_perf",
                            )
                            .set_hint("Use the COLLATE clause to set the collation explicitly.")
                            .report(PgLogLevel::ERROR);
                        }
                    } else if collation != Oid::INVALID {
                        pg_error(
                            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                            format!(
                                "collations are not supported by type {}",
                                CStr::from_ptr(pg_sys::format_type_be(typ)).to_string_lossy()
                            ),
                            None,
                        );
                    }
                }
            } else {
                collation = Oid::INVALID;
            }
            // Operator class: ResolveOpClass refuses a missing default with PostgreSQL's
            // message and hint.
            let opclass = if key && attnum >= 0 {
                pg_sys::ResolveOpClass((*elem).opclass, typ, am_name, amoid)
            } else {
                Oid::INVALID
            };
            if key && has((*elem).opclassopts) {
                bad_index(
                    "operator class options are not supported by hypothetical indexes".into(),
                );
            }
            if key && !(*amroutine).amcanorder {
                if (*elem).ordering != pg_sys::SortByDir::SORTBY_DEFAULT {
                    am_refuses("ASC/DESC options");
                }
                if (*elem).nulls_ordering != pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT {
                    am_refuses("NULLS FIRST/LAST options");
                }
            }
            let avg = if attnum > 0 {
                pg_sys::get_attavgwidth(relid, attnum)
            } else {
                0
            };
            let desc = (*elem).ordering == pg_sys::SortByDir::SORTBY_DESC;
            let nulls_first = match (*elem).nulls_ordering {
                pg_sys::SortByNulls::SORTBY_NULLS_FIRST => true,
                pg_sys::SortByNulls::SORTBY_NULLS_LAST => false,
                _ => desc,
            };
            HypoColumn {
                attnum,
                expr,
                typ,
                typmod,
                collation,
                opfamily: if opclass != Oid::INVALID {
                    pg_sys::get_opclass_family(opclass)
                } else {
                    Oid::INVALID
                },
                opcintype: if opclass != Oid::INVALID {
                    pg_sys::get_opclass_input_type(opclass)
                } else {
                    Oid::INVALID
                },
                desc,
                nulls_first,
                width: width_of(typ, avg),
            }
        };
        let keys: Vec<HypoColumn> = key_elems.iter().map(|&e| column(e, true)).collect();
        let include: Vec<HypoColumn> = include_elems.iter().map(|&e| column(e, false)).collect();

        // A unique index on a partitioned table must contain the partition key (DefineIndex).
        if (*istmt).unique && relkind == pg_sys::RELKIND_PARTITIONED_TABLE {
            let partattrs = Spi::get_one_with_args::<Vec<i16>>(
                "SELECT partattrs::int2[] FROM pg_catalog.pg_partitioned_table WHERE partrelid = $1",
                &[relid.into()],
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            for a in partattrs {
                if a == 0 {
                    pg_error(
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        "unsupported UNIQUE constraint with partition key definition".into(),
                        Some(
                            "UNIQUE constraints cannot be used when partition keys include \
                             expressions."
                                .into(),
                        ),
                    );
                }
                if !keys.iter().any(|c| c.attnum == a) {
                    let col = pg_sys::get_attname(relid, a, true);
                    let col = if col.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(col).to_string_lossy().into_owned()
                    };
                    pg_error(
                        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                        "unique constraint on partitioned table must include all partitioning \
                         columns"
                            .into(),
                        Some(format!(
                            "UNIQUE constraint on table \"{table}\" lacks column \"{col}\" which \
                             is part of the partition key."
                        )),
                    );
                }
            }
        }

        // System columns, also inside expressions and the predicate (DefineIndex).
        let mut attrs: *mut pg_sys::Bitmapset = std::ptr::null_mut();
        for c in keys.iter().chain(&include) {
            if c.attnum < 0 {
                attrs = pg_sys::bms_add_member(
                    attrs,
                    c.attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                );
            }
            if !c.expr.is_null() {
                pg_sys::pull_varattnos(c.expr, 1, &mut attrs);
            }
        }
        if !predicate.is_null() {
            pg_sys::pull_varattnos(predicate, 1, &mut attrs);
        }
        let mut member = -1;
        loop {
            member = pg_sys::bms_next_member(attrs, member);
            if member < 0 {
                break;
            }
            if member + pg_sys::FirstLowInvalidHeapAttributeNumber < 0 {
                pg_error(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "index creation on system columns is not supported".into(),
                    None,
                );
            }
        }

        let reltuples = (*(*rel).rd_rel).reltuples as f64;
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        let name = if (*istmt).idxname.is_null() {
            // Like PostgreSQL's own choice: table_col1_col2_idx ("expr" for expressions).
            let cols: Vec<String> = keys
                .iter()
                .map(|c| {
                    if c.attnum > 0 {
                        let n = pg_sys::get_attname(relid, c.attnum, true);
                        if n.is_null() {
                            "expr".into()
                        } else {
                            CStr::from_ptr(n).to_string_lossy().into_owned()
                        }
                    } else {
                        "expr".into()
                    }
                })
                .collect();
            format!("{table}_{}_idx", cols.join("_"))
        } else {
            CStr::from_ptr((*istmt).idxname)
                .to_string_lossy()
                .into_owned()
        };
        let name = CString::new(format!("<hypothetical>{name}")).unwrap_or_default();
        let predicate_selectivity = if predicate.is_null() {
            1.0
        } else {
            // Deparse the analyzed predicate and let the planner estimate its rows.
            let rname = CString::new(table.clone()).unwrap_or_default();
            let ctx = pg_sys::deparse_context_for(rname.as_ptr(), relid);
            let text = CStr::from_ptr(pg_sys::deparse_expression(predicate, ctx, false, false))
                .to_string_lossy()
                .into_owned();
            let q = format!(
                "SELECT 1 FROM ONLY {} WHERE {text}",
                qualified_rel_name(relid)
            );
            let planned = plan(&q);
            if reltuples > 0.0 {
                (planned.rows / reltuples).clamp(0.0, 1.0)
            } else {
                1.0
            }
        };
        HypoIndex {
            oid,
            name,
            relid,
            amoid,
            keys,
            include,
            predicate,
            predicate_selectivity,
            unique: (*istmt).unique,
            expr_stats: Vec::new(),
            distinct_keys: None,
        }
    }
}
