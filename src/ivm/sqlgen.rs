//! The SQL of an incremental view, generated from its analysed query (pure Rust, no
//! server: unit-tested with plain `cargo test`).
//!
//! Objects, all in the view's schema and owned by its creator:
//! - the view: a table with the visible columns in the query's order, then the hidden
//!   `__ivm_count__` (rows in the group; the group goes at 0) and, per sum/avg, the hidden
//!   non-NULL count `__ivm_cnt_<i>__` (and for avg the sum `__ivm_sum_<i>__`);
//! - the log `__ivm_<oid>_log`: one row per group per writing statement (compact deltas
//!   aggregated inside the trigger), or a reset marker written by TRUNCATE;
//! - trigger functions `__ivm_<oid>_{ins,upd,del,trunc}` (statement-level, transition
//!   tables) and the apply function `__ivm_<oid>_apply(wait boolean)`, all SECURITY DEFINER
//!   with `search_path = pg_catalog, pg_temp` (every name in them is qualified).

/// A GROUP BY key of the query (also a visible column).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Column name in the view.
    pub name: String,
    /// The expression over the source's columns (unqualified column names).
    pub expr: String,
    /// Its type, as SQL.
    pub typ: String,
    /// The expression can never be NULL (a NOT NULL column): plain `=` matches groups.
    pub not_null: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// An aggregate of the select list.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub name: String,
    pub kind: AggKind,
    /// The argument expression ("" for count(*)).
    pub arg: String,
    /// The aggregate's result type.
    pub typ: String,
    /// The type its running sum is kept in (sum: the result type; avg: numeric/float8).
    pub sum_typ: String,
}

/// A visible column, in the query's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Key(usize),
    Agg(usize),
}

/// Everything needed to generate the view's SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Quoted schema of the view (its helper objects go there too).
    pub schema: String,
    /// Quoted, qualified view name.
    pub view: String,
    /// Quoted, qualified source table.
    pub source: String,
    /// The WHERE clause over the source, if any.
    pub quals: Option<String>,
    pub keys: Vec<Key>,
    pub aggs: Vec<Agg>,
    pub cols: Vec<Col>,
    /// The view's OID, naming its helper objects.
    pub oid: u32,
}

/// `ident` always double-quoted.
pub fn qi(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Constant first half of the two-key advisory lock that serializes appliers
/// ('perf' in ASCII); the second half is the view's OID.
pub const LOCK_CLASS: i32 = 0x7065_7266;

impl Spec {
    fn obj(&self, suffix: &str) -> String {
        format!(
            "{}.{}",
            self.schema,
            qi(&format!("__ivm_{}_{suffix}", self.oid))
        )
    }
    pub fn log(&self) -> String {
        self.obj("log")
    }
    /// The plain view of the query that pins the source's columns (see api.rs).
    pub fn guard(&self) -> String {
        self.obj("def")
    }
    pub fn func(&self, which: &str) -> String {
        self.obj(which)
    }
    fn n_keys(&self) -> String {
        (1..=self.keys.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn where_sql(&self) -> String {
        match &self.quals {
            Some(q) => format!(" WHERE ({q})"),
            None => String::new(),
        }
    }
    /// `a.col` matches `b.col` as GROUP BY does (NULLs together).
    fn matches(&self, pairs: impl Iterator<Item = (String, String, bool)>) -> String {
        let parts: Vec<String> = pairs
            .map(|(a, b, not_null)| {
                if not_null {
                    format!("{a} = {b}")
                } else {
                    format!("({a} = {b} OR ({a} IS NULL AND {b} IS NULL))")
                }
            })
            .collect();
        parts.join(" AND ")
    }
    fn view_key_match(&self, v: &str, g: &str) -> String {
        self.matches(self.keys.iter().enumerate().map(|(j, k)| {
            (
                format!("{v}.{}", qi(&k.name)),
                format!("{g}.k_{j}"),
                k.not_null,
            )
        }))
    }

    /// CREATE TABLE of the view.
    pub fn create_view(&self) -> String {
        let mut cols = Vec::new();
        for c in &self.cols {
            match *c {
                Col::Key(j) => {
                    cols.push(format!("{} {}", qi(&self.keys[j].name), self.keys[j].typ))
                }
                Col::Agg(i) => {
                    cols.push(format!("{} {}", qi(&self.aggs[i].name), self.aggs[i].typ))
                }
            }
        }
        cols.push("__ivm_count__ bigint NOT NULL".into());
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::Sum => cols.push(format!("__ivm_cnt_{i}__ bigint NOT NULL")),
                AggKind::Avg => {
                    cols.push(format!("__ivm_sum_{i}__ {}", a.sum_typ));
                    cols.push(format!("__ivm_cnt_{i}__ bigint NOT NULL"));
                }
                _ => {}
            }
        }
        format!("CREATE TABLE {} ({})", self.view, cols.join(", "))
    }

    /// The unique index on the view's keys (NULLs equal, as GROUP BY treats them).
    pub fn create_index(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|k| qi(&k.name)).collect();
        format!(
            "CREATE UNIQUE INDEX {} ON {} ({}) NULLS NOT DISTINCT",
            qi(&format!("__ivm_{}_keys", self.oid)),
            self.view,
            keys.join(", ")
        )
    }

    /// CREATE TABLE of the delta log.
    pub fn create_log(&self) -> String {
        let mut cols = Vec::new();
        for (j, k) in self.keys.iter().enumerate() {
            cols.push(format!("k_{j} {}", k.typ));
        }
        cols.push("__cnt bigint NOT NULL".into());
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::CountStar => {}
                AggKind::Count => cols.push(format!("c_{i} bigint")),
                AggKind::Sum | AggKind::Avg => {
                    cols.push(format!("s_{i} {}", a.sum_typ));
                    cols.push(format!("c_{i} bigint"));
                }
                AggKind::Min | AggKind::Max => {
                    // The extreme of the statement's new rows, and of its old rows.
                    cols.push(format!("m_{i} {}", a.typ));
                    cols.push(format!("d_{i} {}", a.typ));
                }
            }
        }
        cols.push("__del boolean NOT NULL DEFAULT false".into());
        cols.push("__reset boolean NOT NULL DEFAULT false".into());
        format!(
            "CREATE TABLE {} ({}) WITH (autovacuum_vacuum_scale_factor = 0, \
             autovacuum_vacuum_threshold = 1000)",
            self.log(),
            cols.join(", ")
        )
    }

    /// The view's columns in table order (visible, then hidden), for INSERT lists.
    fn all_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self
            .cols
            .iter()
            .map(|c| match *c {
                Col::Key(j) => qi(&self.keys[j].name),
                Col::Agg(i) => qi(&self.aggs[i].name),
            })
            .collect();
        cols.push("__ivm_count__".into());
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::Sum => cols.push(format!("__ivm_cnt_{i}__")),
                AggKind::Avg => {
                    cols.push(format!("__ivm_sum_{i}__"));
                    cols.push(format!("__ivm_cnt_{i}__"));
                }
                _ => {}
            }
        }
        cols
    }

    /// SELECT computing the whole view from the source (values in `all_columns` order).
    pub fn full_select(&self) -> String {
        let mut sel: Vec<String> = Vec::new();
        // GROUP BY 1..n needs the keys first: select them first, reorder in the INSERT.
        for k in &self.keys {
            sel.push(k.expr.clone());
        }
        let mut vals: Vec<String> = Vec::new();
        for c in &self.cols {
            match *c {
                Col::Key(j) => vals.push(format!("k_{j}")),
                Col::Agg(i) => vals.push(format!("a_{i}")),
            }
        }
        vals.push("__ivm_rows".into());
        let mut aggs_sel = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let e = match a.kind {
                AggKind::CountStar => "count(*)".to_string(),
                AggKind::Count => format!("count({})", a.arg),
                AggKind::Sum => format!("sum({})", a.arg),
                AggKind::Avg => format!("avg({})", a.arg),
                AggKind::Min => format!("min({})", a.arg),
                AggKind::Max => format!("max({})", a.arg),
            };
            aggs_sel.push(format!("{e} AS a_{i}"));
            match a.kind {
                AggKind::Sum => {
                    aggs_sel.push(format!("count({}) AS c_{i}", a.arg));
                    vals.push(format!("c_{i}"));
                }
                AggKind::Avg => {
                    aggs_sel.push(format!("sum({})::{} AS s_{i}", a.arg, a.sum_typ));
                    aggs_sel.push(format!("count({}) AS c_{i}", a.arg));
                    vals.push(format!("s_{i}"));
                    vals.push(format!("c_{i}"));
                }
                _ => {}
            }
        }
        let keys_as: Vec<String> = sel
            .iter()
            .enumerate()
            .map(|(j, e)| format!("{e} AS k_{j}"))
            .collect();
        format!(
            "SELECT {} FROM (SELECT {}, count(*) AS __ivm_rows, {} FROM {}{} GROUP BY {}) __ivm_f",
            vals.join(", "),
            keys_as.join(", "),
            aggs_sel.join(", "),
            self.source,
            self.where_sql(),
            self.n_keys()
        )
    }

    /// INSERT of the whole view (the initial computation).
    pub fn populate(&self) -> String {
        format!(
            "INSERT INTO {} ({}) {}",
            self.view,
            self.all_columns().join(", "),
            self.full_select()
        )
    }

    /// INSERT into the log of the deltas of `table` (a transition table), +1 for new rows,
    /// -1 for old ones.
    fn delta_insert(&self, table: &str, positive: bool) -> String {
        let neg = if positive { "" } else { "-" };
        let mut cols = Vec::new();
        let mut sel = Vec::new();
        for (j, k) in self.keys.iter().enumerate() {
            cols.push(format!("k_{j}"));
            sel.push(k.expr.clone());
        }
        cols.push("__cnt".into());
        sel.push(format!("{neg}count(*)"));
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::CountStar => {}
                AggKind::Count => {
                    cols.push(format!("c_{i}"));
                    sel.push(format!("{neg}count({})", a.arg));
                }
                AggKind::Sum | AggKind::Avg => {
                    cols.push(format!("s_{i}"));
                    sel.push(format!("{neg}(sum({})::{})", a.arg, a.sum_typ));
                    cols.push(format!("c_{i}"));
                    sel.push(format!("{neg}count({})", a.arg));
                }
                AggKind::Min | AggKind::Max => {
                    let f = if a.kind == AggKind::Min { "min" } else { "max" };
                    cols.push(format!("{}_{i}", if positive { "m" } else { "d" }));
                    sel.push(format!("{f}({})", a.arg));
                }
            }
        }
        if !positive {
            cols.push("__del".into());
            sel.push("true".into());
        }
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM {table}{} GROUP BY {}",
            self.log(),
            cols.join(", "),
            sel.join(", "),
            self.where_sql(),
            self.n_keys()
        )
    }

    fn trigger_function(&self, which: &str, body: &str) -> String {
        let body = format!("#variable_conflict use_column\nBEGIN\n{body};\nRETURN NULL;\nEND");
        format!(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS {}",
            self.func(which),
            dollar_quote(&body)
        )
    }

    /// The trigger functions and their CREATE TRIGGER statements (functions first).
    pub fn triggers(&self) -> Vec<String> {
        let ins = self.delta_insert("__ivm_new", true);
        let del = self.delta_insert("__ivm_old", false);
        let upd = format!("{del};\n{ins}");
        let trunc = format!(
            "INSERT INTO {} (__cnt, __reset) VALUES (0, true)",
            self.log()
        );
        let mut out = vec![
            self.trigger_function("ins", &ins),
            self.trigger_function("upd", &upd),
            self.trigger_function("del", &del),
            self.trigger_function("trunc", &trunc),
        ];
        for which in ["ins", "upd", "del", "trunc"] {
            let (event, referencing, each) = match which {
                "ins" => ("INSERT", "REFERENCING NEW TABLE AS __ivm_new ", "STATEMENT"),
                "upd" => (
                    "UPDATE",
                    "REFERENCING OLD TABLE AS __ivm_old NEW TABLE AS __ivm_new ",
                    "STATEMENT",
                ),
                "del" => ("DELETE", "REFERENCING OLD TABLE AS __ivm_old ", "STATEMENT"),
                _ => ("TRUNCATE", "", "STATEMENT"),
            };
            out.push(format!(
                "CREATE TRIGGER {} AFTER {event} ON {} {referencing}FOR EACH {each} \
                 EXECUTE FUNCTION {}()",
                qi(&format!("__ivm_{}_{which}", self.oid)),
                self.source,
                self.func(which)
            ));
        }
        // Writers fire the triggers; nobody may attach these functions to other tables.
        for which in ["ins", "upd", "del", "trunc"] {
            out.push(format!(
                "REVOKE ALL ON FUNCTION {}() FROM PUBLIC",
                self.func(which)
            ));
        }
        out
    }

    fn merge(&self) -> String {
        let mut gsel = Vec::new();
        for j in 0..self.keys.len() {
            gsel.push(format!("k_{j}"));
        }
        gsel.push("sum(__cnt)::bigint AS __cnt".into());
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::CountStar => {}
                AggKind::Count => gsel.push(format!("sum(c_{i})::bigint AS c_{i}")),
                AggKind::Sum | AggKind::Avg => {
                    gsel.push(format!("sum(s_{i})::{} AS s_{i}", a.sum_typ));
                    gsel.push(format!("sum(c_{i})::bigint AS c_{i}"));
                }
                AggKind::Min => gsel.push(format!("min(m_{i}) AS m_{i}")),
                AggKind::Max => gsel.push(format!("max(m_{i}) AS m_{i}")),
            }
        }
        let add = |old: &str, delta: &str| {
            format!(
                "CASE WHEN {delta} IS NULL THEN {old} WHEN {old} IS NULL THEN {delta} \
                 ELSE {old} + {delta} END"
            )
        };
        let mut set = vec!["__ivm_count__ = v.__ivm_count__ + g.__cnt".to_string()];
        let mut ins_vals: Vec<String> = Vec::new();
        for c in &self.cols {
            match *c {
                Col::Key(j) => ins_vals.push(format!("g.k_{j}")),
                Col::Agg(i) => {
                    let a = &self.aggs[i];
                    let col = qi(&a.name);
                    let (upd, ins) = match a.kind {
                        AggKind::CountStar => (format!("v.{col} + g.__cnt"), "g.__cnt".to_string()),
                        AggKind::Count => (format!("v.{col} + g.c_{i}"), format!("g.c_{i}")),
                        AggKind::Sum => (
                            format!(
                                "CASE WHEN v.__ivm_cnt_{i}__ + g.c_{i} = 0 THEN NULL ELSE {} END",
                                add(&format!("v.{col}"), &format!("g.s_{i}"))
                            ),
                            format!("CASE WHEN g.c_{i} = 0 THEN NULL ELSE g.s_{i} END"),
                        ),
                        AggKind::Avg => {
                            let s = add(&format!("v.__ivm_sum_{i}__"), &format!("g.s_{i}"));
                            let n = format!("(v.__ivm_cnt_{i}__ + g.c_{i})");
                            (
                                format!(
                                    "CASE WHEN {n} = 0 THEN NULL ELSE (({s}) / {n})::{} END",
                                    a.typ
                                ),
                                format!(
                                    "CASE WHEN g.c_{i} = 0 THEN NULL ELSE (g.s_{i} / g.c_{i})::{} END",
                                    a.typ
                                ),
                            )
                        }
                        AggKind::Min => (format!("least(v.{col}, g.m_{i})"), format!("g.m_{i}")),
                        AggKind::Max => (format!("greatest(v.{col}, g.m_{i})"), format!("g.m_{i}")),
                    };
                    set.push(format!("{col} = {upd}"));
                    ins_vals.push(ins);
                }
            }
        }
        ins_vals.push("g.__cnt".into());
        for (i, a) in self.aggs.iter().enumerate() {
            match a.kind {
                AggKind::Sum => {
                    set.push(format!("__ivm_cnt_{i}__ = v.__ivm_cnt_{i}__ + g.c_{i}"));
                    ins_vals.push(format!("g.c_{i}"));
                }
                AggKind::Avg => {
                    let s = add(&format!("v.__ivm_sum_{i}__"), &format!("g.s_{i}"));
                    set.push(format!(
                        "__ivm_sum_{i}__ = CASE WHEN v.__ivm_cnt_{i}__ + g.c_{i} = 0 THEN NULL ELSE {s} END"
                    ));
                    set.push(format!("__ivm_cnt_{i}__ = v.__ivm_cnt_{i}__ + g.c_{i}"));
                    ins_vals.push(format!("CASE WHEN g.c_{i} = 0 THEN NULL ELSE g.s_{i} END"));
                    ins_vals.push(format!("g.c_{i}"));
                }
                _ => {}
            }
        }
        format!(
            "MERGE INTO {view} v USING (SELECT {gsel} FROM unnest(__ivm_batch) GROUP BY {nk}) g \
             ON {on} \
             WHEN MATCHED AND v.__ivm_count__ + g.__cnt <= 0 THEN DELETE \
             WHEN MATCHED THEN UPDATE SET {set} \
             WHEN NOT MATCHED AND g.__cnt > 0 THEN INSERT ({cols}) VALUES ({vals})",
            view = self.view,
            gsel = gsel.join(", "),
            nk = self.n_keys(),
            on = self.view_key_match("v", "g"),
            set = set.join(", "),
            cols = self.all_columns().join(", "),
            vals = ins_vals.join(", ")
        )
    }

    fn has_min_max(&self) -> bool {
        self.aggs
            .iter()
            .any(|a| matches!(a.kind, AggKind::Min | AggKind::Max))
    }

    /// Recomputes min/max of the groups that lost a row holding their extreme (a deleted
    /// value at or beyond the stored min/max, which the MERGE already widened with the
    /// inserted rows), from the source. Other groups that lost rows keep theirs: the row
    /// holding it is still there.
    fn recompute_min_max(&self) -> String {
        let keys: Vec<String> = (0..self.keys.len()).map(|j| format!("k_{j}")).collect();
        let src_match = self.matches(self.keys.iter().enumerate().map(|(j, k)| {
            (
                format!("({})", k.expr),
                format!("__ivm_a.k_{j}"),
                k.not_null,
            )
        }));
        let mut aggs = Vec::new();
        let mut set = Vec::new();
        let mut dsel = Vec::new();
        let mut lost = Vec::new();
        for (i, a) in self.aggs.iter().enumerate() {
            let (f, cmp) = match a.kind {
                AggKind::Min => ("min", "<="),
                AggKind::Max => ("max", ">="),
                _ => continue,
            };
            let col = qi(&a.name);
            aggs.push(format!("{f}({}) AS m_{i}", a.arg));
            set.push(format!("{col} = r.m_{i}"));
            dsel.push(format!("{f}(d_{i}) AS d_{i}"));
            lost.push(format!(
                "(__ivm_d.d_{i} IS NOT NULL AND (w.{col} IS NULL OR __ivm_d.d_{i} {cmp} w.{col}))"
            ));
        }
        let quals = match &self.quals {
            Some(q) => format!("({q}) AND "),
            None => String::new(),
        };
        let qualified = |alias: &str| {
            keys.iter()
                .map(|k| format!("{alias}.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "UPDATE {view} v SET {set} FROM (SELECT {akeys}, __ivm_m.* FROM \
             (SELECT {dkeys} FROM (SELECT {plain}, {dsel} FROM unnest(__ivm_batch) WHERE __del \
                                   GROUP BY {nk}) __ivm_d \
                JOIN {view} w ON {wmatch} WHERE {lost}) __ivm_a \
             CROSS JOIN LATERAL (SELECT {aggs} FROM {src} WHERE {quals}{src_match}) __ivm_m) r \
             WHERE {on}",
            view = self.view,
            set = set.join(", "),
            akeys = qualified("__ivm_a"),
            dkeys = qualified("__ivm_d"),
            plain = keys.join(", "),
            dsel = dsel.join(", "),
            nk = self.n_keys(),
            wmatch = self.view_key_match("w", "__ivm_d"),
            lost = lost.join(" OR "),
            aggs = aggs.join(", "),
            src = self.source,
            on = self.view_key_match("v", "r"),
        )
    }

    /// One statement, one snapshot: consumes every visible delta and recomputes the view.
    pub fn full_refresh(&self) -> String {
        format!(
            "WITH __ivm_dl AS (DELETE FROM {log}), __ivm_dv AS (DELETE FROM {view} RETURNING 1) \
             INSERT INTO {view} ({cols}) SELECT * FROM ({full}) __ivm_n \
             WHERE (SELECT count(*) FROM __ivm_dv) >= 0",
            log = self.log(),
            view = self.view,
            cols = self.all_columns().join(", "),
            full = self.full_select()
        )
    }

    /// The apply function: `wait` blocks for a concurrent applier, else returns -1 at once.
    /// Returns the number of log rows consumed.
    pub fn apply_function(&self) -> String {
        let lock = format!("{LOCK_CLASS}, {}", self.oid as i32);
        let mut body = format!(
            "#variable_conflict use_column\nDECLARE __ivm_batch {log}[]; __ivm_n bigint;\nBEGIN\n\
             IF __ivm_wait THEN PERFORM pg_catalog.pg_advisory_xact_lock({lock});\n\
             ELSIF NOT pg_catalog.pg_try_advisory_xact_lock({lock}) THEN RETURN -1; END IF;\n\
             WITH d AS (DELETE FROM {log} RETURNING *) SELECT array_agg(d) INTO __ivm_batch FROM d;\n\
             IF __ivm_batch IS NULL THEN RETURN 0; END IF;\n\
             __ivm_n := cardinality(__ivm_batch);\n\
             IF EXISTS (SELECT 1 FROM unnest(__ivm_batch) WHERE __reset) THEN\n{full};\nRETURN __ivm_n;\nEND IF;\n\
             {merge};\n",
            log = self.log(),
            full = self.full_refresh(),
            merge = self.merge(),
        );
        if self.has_min_max() {
            body.push_str(&format!(
                "IF EXISTS (SELECT 1 FROM unnest(__ivm_batch) WHERE __del) THEN\n{};\nEND IF;\n",
                self.recompute_min_max()
            ));
        }
        body.push_str("RETURN __ivm_n;\nEND");
        format!(
            "CREATE FUNCTION {}(__ivm_wait boolean) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS {}",
            self.func("apply"),
            dollar_quote(&body)
        )
    }
}

/// `body` dollar-quoted with a tag that does not occur in it.
pub fn dollar_quote(body: &str) -> String {
    let mut tag = "$ivm$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$ivm{n}$");
    }
    format!("{tag}{body}{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            schema: qi("public"),
            view: format!("{}.{}", qi("public"), qi("v")),
            source: format!("{}.{}", qi("public"), qi("t")),
            quals: Some("x > 0".into()),
            keys: vec![Key {
                name: "g".into(),
                expr: "g".into(),
                typ: "integer".into(),
                not_null: false,
            }],
            aggs: vec![
                Agg {
                    name: "n".into(),
                    kind: AggKind::CountStar,
                    arg: String::new(),
                    typ: "bigint".into(),
                    sum_typ: String::new(),
                },
                Agg {
                    name: "a".into(),
                    kind: AggKind::Avg,
                    arg: "x".into(),
                    typ: "numeric".into(),
                    sum_typ: "numeric".into(),
                },
                Agg {
                    name: "m".into(),
                    kind: AggKind::Max,
                    arg: "x".into(),
                    typ: "integer".into(),
                    sum_typ: String::new(),
                },
            ],
            cols: vec![Col::Agg(0), Col::Key(0), Col::Agg(1), Col::Agg(2)],
            oid: 4242,
        }
    }

    #[test]
    fn view_table_has_visible_then_hidden_columns() {
        let s = spec();
        assert_eq!(
            s.create_view(),
            "CREATE TABLE \"public\".\"v\" (\"n\" bigint, \"g\" integer, \"a\" numeric, \
             \"m\" integer, __ivm_count__ bigint NOT NULL, __ivm_sum_1__ numeric, \
             __ivm_cnt_1__ bigint NOT NULL)"
        );
    }

    #[test]
    fn populate_groups_by_keys_first() {
        let p = spec().populate();
        assert!(p.contains("GROUP BY 1) __ivm_f"), "{p}");
        assert!(
            p.contains("SELECT a_0, k_0, a_1, a_2, __ivm_rows, s_1, c_1 FROM"),
            "{p}"
        );
        assert!(p.contains("WHERE (x > 0)"), "{p}");
    }

    #[test]
    fn nullable_keys_match_nulls() {
        let s = spec();
        assert_eq!(
            s.view_key_match("v", "g"),
            "(v.\"g\" = g.k_0 OR (v.\"g\" IS NULL AND g.k_0 IS NULL))"
        );
    }

    #[test]
    fn triggers_log_negative_deltas_for_old_rows() {
        let t = spec().triggers();
        assert!(t[2].contains("-count(*)"), "{}", t[2]);
        assert!(t[2].contains("__del"), "{}", t[2]);
        assert!(!t[0].contains("__del"), "{}", t[0]);
        assert!(t.iter().any(|s| s.contains("AFTER TRUNCATE")));
    }

    #[test]
    fn apply_recomputes_min_max_only_when_present() {
        let mut s = spec();
        assert!(s.apply_function().contains("CROSS JOIN LATERAL"));
        s.aggs.pop();
        s.cols.pop();
        assert!(!s.apply_function().contains("CROSS JOIN LATERAL"));
    }

    #[test]
    fn dollar_quote_avoids_tags_in_body() {
        assert_eq!(dollar_quote("x"), "$ivm$x$ivm$");
        assert_eq!(dollar_quote("'$ivm$'"), "$ivm1$'$ivm$'$ivm1$");
    }
}
