//! Data model of the index advisor: what it knows about tables, existing indexes and the
//! captured workload, and what it proposes.
//!
//! Everything here is plain Rust (no pgrx types) so candidate generation, sizing and
//! selection can be unit-tested with `cargo test`. The pgrx side fills these structs from
//! `pg_class`, `pg_stats`, `pg_index`, `pg_stat_user_tables`/`pg_stat_user_indexes` and the
//! predicates captured by the stats hook.
//!
//! Invariants the rest of the advisor relies on:
//! - A column is identified by `(table, attnum)`; its name and sizing fields are descriptive.
//! - An expression is identified by its SQL text after [`normalize_sql`]; both the captured
//!   predicates and existing index expressions must come from the same deparser so that the
//!   same expression yields the same text.
//! - Floating point inputs may be NaN, negative or infinite (catalog estimates are only
//!   estimates); consumers sanitize them with [`finite_or`] instead of trusting them.

use std::fmt;

/// `pg_stat_statements.queryid` of a normalized query.
pub type QueryId = i64;

/// OID of a table (`pg_class.oid`).
pub type TableId = u32;

/// Storage alignment of a type (`pg_type.typalign`), which decides padding inside index
/// tuples and therefore index size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeAlign {
    /// `c`: 1-byte alignment (bool, "char", packed short varlena).
    Char,
    /// `s`: 2-byte alignment (int2).
    Short,
    /// `i`: 4-byte alignment (int4, date, most varlena types).
    Int,
    /// `d`: 8-byte alignment (int8, float8, timestamp).
    Double,
}

impl TypeAlign {
    /// Maps `pg_type.typalign`; an unknown code is treated as the strictest alignment so
    /// size estimates err on the large side.
    pub fn from_pg_code(code: char) -> TypeAlign {
        match code {
            'c' => TypeAlign::Char,
            's' => TypeAlign::Short,
            'i' => TypeAlign::Int,
            _ => TypeAlign::Double,
        }
    }

    /// Alignment in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            TypeAlign::Char => 1,
            TypeAlign::Short => 2,
            TypeAlign::Int => 4,
            TypeAlign::Double => 8,
        }
    }
}

/// A table column with the type facts needed to size index entries on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnRef {
    /// `pg_attribute.attnum` (1-based; system columns are never indexed by the advisor).
    pub attnum: i16,
    /// Column name as stored in the catalog (unquoted).
    pub name: String,
    /// Type name as `format_type` prints it (`integer`, `text`, `jsonb`, `integer[]`, ...);
    /// used to pick GIN operator classes and to know whether btree deduplication applies.
    pub type_name: String,
    /// `pg_type.typlen`: fixed width in bytes, -1 for varlena, -2 for cstring.
    pub typlen: i16,
    /// `pg_type.typalign`.
    pub typalign: TypeAlign,
    /// `pg_stats.avg_width` (bytes as stored, varlena header included); 0 when unknown.
    pub avg_width: u32,
}

/// An indexable expression such as `lower(email)` or `to_tsvector('english', body)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpressionRef {
    /// Deparsed SQL of the expression, without an outer pair of parentheses.
    pub sql: String,
    /// Result type name as `format_type` prints it.
    pub type_name: String,
    /// `pg_type.typlen` of the result type.
    pub typlen: i16,
    /// `pg_type.typalign` of the result type.
    pub typalign: TypeAlign,
    /// Expected average width of the result in bytes (e.g. the underlying column's
    /// `avg_width` for `lower(email)`); 0 when unknown.
    pub avg_width: u32,
    /// Columns the expression reads; an index-only scan would need all of them.
    pub referenced_attnums: Vec<i16>,
}

/// What an index key (or a predicate) is on: a plain column or an expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyTarget {
    /// A plain table column.
    Column(ColumnRef),
    /// An expression over the table's columns.
    Expression(ExpressionRef),
}

/// Identity of a [`KeyTarget`], ignoring descriptive fields such as widths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetIdentity {
    /// A column, by attnum.
    Column(i16),
    /// An expression, by normalized SQL text.
    Expression(String),
}

impl KeyTarget {
    /// The identity used to compare targets coming from different sources.
    pub fn identity(&self) -> TargetIdentity {
        match self {
            KeyTarget::Column(c) => TargetIdentity::Column(c.attnum),
            KeyTarget::Expression(e) => TargetIdentity::Expression(normalize_sql(&e.sql)),
        }
    }

    /// Whether two targets denote the same column or expression.
    pub fn same_as(&self, other: &KeyTarget) -> bool {
        self.identity() == other.identity()
    }

    /// Result type name of the column or expression.
    pub fn type_name(&self) -> &str {
        match self {
            KeyTarget::Column(c) => &c.type_name,
            KeyTarget::Expression(e) => &e.type_name,
        }
    }

    /// Sizing facts of one value of this target.
    pub fn attr_width(&self) -> AttrWidth {
        match self {
            KeyTarget::Column(c) => AttrWidth {
                avg_bytes: c.avg_width,
                typlen: c.typlen,
                align: c.typalign,
            },
            KeyTarget::Expression(e) => AttrWidth {
                avg_bytes: e.avg_width,
                typlen: e.typlen,
                align: e.typalign,
            },
        }
    }

    /// Human-readable text (column name or expression SQL), unquoted; for reasons and
    /// logs, not for SQL (use `ddl` for that).
    pub fn display_text(&self) -> &str {
        match self {
            KeyTarget::Column(c) => &c.name,
            KeyTarget::Expression(e) => &e.sql,
        }
    }

    /// Columns an index-only scan needs to have in the index to evaluate this target.
    pub fn referenced_attnums(&self) -> Vec<i16> {
        match self {
            KeyTarget::Column(c) => vec![c.attnum],
            KeyTarget::Expression(e) => e.referenced_attnums.clone(),
        }
    }
}

/// Sizing facts of one index attribute: how many bytes a value takes and how it is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttrWidth {
    /// Average stored width in bytes (varlena header included); 0 when unknown.
    pub avg_bytes: u32,
    /// `pg_type.typlen`: fixed width, -1 varlena, -2 cstring.
    pub typlen: i16,
    /// `pg_type.typalign`.
    pub align: TypeAlign,
}

impl AttrWidth {
    /// A fixed-width type such as int4 (`fixed(4, TypeAlign::Int)`).
    pub fn fixed(bytes: i16, align: TypeAlign) -> AttrWidth {
        AttrWidth {
            avg_bytes: u32::try_from(bytes).unwrap_or(0),
            typlen: bytes,
            align,
        }
    }

    /// A varlena type (text, numeric, jsonb) whose values average `avg_bytes` as stored.
    pub fn varlena(avg_bytes: u32) -> AttrWidth {
        AttrWidth {
            avg_bytes,
            typlen: -1,
            align: TypeAlign::Int,
        }
    }
}

/// Sort direction of an index key or an ORDER BY item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SortDirection {
    /// `DESC` when true.
    pub descending: bool,
    /// `NULLS FIRST` when true. PostgreSQL's default is NULLS LAST for ASC and NULLS
    /// FIRST for DESC; see [`SortDirection::with_default_nulls`].
    pub nulls_first: bool,
}

impl SortDirection {
    /// `ASC NULLS LAST`, the default for a btree key.
    pub const ASC: SortDirection = SortDirection {
        descending: false,
        nulls_first: false,
    };

    /// A direction with PostgreSQL's default NULLS placement.
    pub fn with_default_nulls(descending: bool) -> SortDirection {
        SortDirection {
            descending,
            nulls_first: descending,
        }
    }

    /// The direction a backward index scan produces.
    pub fn reversed(self) -> SortDirection {
        SortDirection {
            descending: !self.descending,
            nulls_first: !self.nulls_first,
        }
    }

    /// Whether NULLS placement differs from the default for this direction.
    pub fn has_non_default_nulls(self) -> bool {
        self.nulls_first != self.descending
    }
}

/// Index access method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexMethod {
    /// B-tree: equality, range, ORDER BY, LIKE prefix (with pattern opclasses).
    Btree,
    /// Hash (existing indexes only; never proposed).
    Hash,
    /// GIN: containment on jsonb, arrays, tsvector.
    Gin,
    /// GiST (existing indexes only).
    Gist,
    /// SP-GiST (existing indexes only).
    SpGist,
    /// BRIN: block ranges, for large tables whose column follows physical order.
    Brin,
    /// Any other access method, by `pg_am.amname`.
    Other(String),
}

impl IndexMethod {
    /// Maps `pg_am.amname`.
    pub fn from_am_name(name: &str) -> IndexMethod {
        match name {
            "btree" => IndexMethod::Btree,
            "hash" => IndexMethod::Hash,
            "gin" => IndexMethod::Gin,
            "gist" => IndexMethod::Gist,
            "spgist" => IndexMethod::SpGist,
            "brin" => IndexMethod::Brin,
            other => IndexMethod::Other(other.to_string()),
        }
    }

    /// `pg_am.amname` of the method.
    pub fn am_name(&self) -> &str {
        match self {
            IndexMethod::Btree => "btree",
            IndexMethod::Hash => "hash",
            IndexMethod::Gin => "gin",
            IndexMethod::Gist => "gist",
            IndexMethod::SpGist => "spgist",
            IndexMethod::Brin => "brin",
            IndexMethod::Other(name) => name,
        }
    }
}

/// One key of an index: target, order and (non-default) operator class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexKey {
    /// Column or expression.
    pub target: KeyTarget,
    /// Order (meaningful for btree only).
    pub direction: SortDirection,
    /// Operator class when it is not the type's default (`jsonb_path_ops`,
    /// `text_pattern_ops`); `None` for the default. Existing indexes must be filled the
    /// same way or they would not be recognized as equivalent.
    pub opclass: Option<String>,
}

impl IndexKey {
    /// An ascending key with the default operator class.
    pub fn asc(target: KeyTarget) -> IndexKey {
        IndexKey {
            target,
            direction: SortDirection::ASC,
            opclass: None,
        }
    }
}

/// How a query uses a target in a GIN-able containment predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainmentOperator {
    /// `@>` on jsonb or arrays.
    Contains,
    /// `<@` on arrays (or jsonb).
    ContainedBy,
    /// `?`, `?|`, `?&` on jsonb (key exists); not supported by `jsonb_path_ops`.
    KeyExists,
    /// `&&` on arrays.
    Overlaps,
    /// `@@` on tsvector (text search match).
    TextSearchMatch,
    /// `@?` / `@@` with a jsonpath on jsonb.
    JsonPathMatch,
}

/// Data kind behind a GIN-able predicate, which decides the operator class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GinOperandKind {
    /// `jsonb`.
    Jsonb,
    /// Any array type.
    Array,
    /// `tsvector` (usually an expression `to_tsvector(...)`).
    TsVector,
}

impl GinOperandKind {
    /// Infers the kind from a `format_type` name; `None` when GIN has no default opclass
    /// the advisor knows for it.
    pub fn from_type_name(type_name: &str) -> Option<GinOperandKind> {
        let t = type_name.trim();
        if t == "jsonb" {
            Some(GinOperandKind::Jsonb)
        } else if t == "tsvector" {
            Some(GinOperandKind::TsVector)
        } else if t.ends_with("[]") {
            Some(GinOperandKind::Array)
        } else {
            None
        }
    }
}

/// Operator class of a predicate, which decides which index methods can serve it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PredicateOperator {
    /// `=`, `IN (...)`, `IS NULL` (btree equality).
    Equality,
    /// `<`, `<=`, `>`, `>=`, `BETWEEN`.
    Range,
    /// A GIN-able containment operator.
    Containment {
        /// The operator used.
        operator: ContainmentOperator,
        /// Data kind of the left operand.
        operand: GinOperandKind,
    },
    /// `LIKE 'abc%'` (left-anchored pattern).
    LikePrefix {
        /// True when the column's collation is not `C`, so a btree needs
        /// `text_pattern_ops`/`varchar_pattern_ops` to serve the pattern.
        needs_pattern_opclass: bool,
    },
}

/// A constant that a predicate compares with and that matches few rows: a partial index
/// `WHERE <predicate_sql>` stays small. Only useful when the query text keeps the constant
/// (or the planner is given it), because a partial index is used only if the query's
/// WHERE clause provably implies the index predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct RareConstant {
    /// Deparsed predicate, e.g. `status = 'failed'::text`.
    pub predicate_sql: String,
    /// Fraction of the table's rows that satisfy it (`pg_stats.most_common_freqs`).
    pub selectivity: f64,
}

/// One predicate of a query on one table.
#[derive(Debug, Clone, PartialEq)]
pub struct PredicateUse {
    /// Column or expression the predicate constrains.
    pub target: KeyTarget,
    /// What kind of comparison it is.
    pub operator: PredicateOperator,
    /// Estimated fraction of rows passing this predicate (planner clause selectivity).
    pub selectivity: f64,
    /// Set when the predicate compares with a constant that matches few rows.
    pub rare_constant: Option<RareConstant>,
}

/// An ORDER BY or GROUP BY item of a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SortItem {
    /// Column or expression.
    pub target: KeyTarget,
    /// Requested direction (GROUP BY items use ASC).
    pub direction: SortDirection,
}

/// What one query does with one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableAccess {
    /// The table.
    pub table: TableId,
    /// Restrictions on this table (WHERE clauses that mention only this table).
    pub predicates: Vec<PredicateUse>,
    /// Columns of this table compared by equality with another table's columns; an index
    /// on them serves the inner side of a nested loop.
    pub join_columns: Vec<ColumnRef>,
    /// ORDER BY items that are all on this table (empty otherwise).
    pub order_by: Vec<SortItem>,
    /// GROUP BY items on this table.
    pub group_by: Vec<SortItem>,
    /// Every column of this table the query reads (select list, predicates, joins,
    /// ordering); `None` when unknown or `SELECT *`, which rules out INCLUDE variants.
    pub referenced_columns: Option<Vec<ColumnRef>>,
}

/// One normalized query of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryShape {
    /// `pg_stat_statements` query id.
    pub query_id: QueryId,
    /// Weight: calls in the workload period; the workload cost is Σ calls × cost per call.
    pub calls: f64,
    /// `LIMIT n` of the query when present: an index in ORDER BY order avoids the sort.
    pub limit: Option<u64>,
    /// Per-table usage.
    pub tables: Vec<TableAccess>,
}

impl QueryShape {
    /// Whether the query reads the table.
    pub fn touches(&self, table: TableId) -> bool {
        self.tables.iter().any(|t| t.table == table)
    }
}

/// Per-column statistics that matter for BRIN, btree deduplication and GIN sizing.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStats {
    /// Column number.
    pub attnum: i16,
    /// `pg_stats.correlation`: physical vs logical order (-1..1); BRIN needs |c| near 1.
    pub correlation: Option<f64>,
    /// `pg_stats.n_distinct`: positive = count, negative = fraction of rows.
    pub n_distinct: Option<f64>,
    /// Average number of GIN keys per row (array elements, lexemes, jsonb paths), when
    /// known from `pg_stats` element statistics.
    pub gin_entries_per_row: Option<f64>,
    /// Number of distinct GIN keys, when known.
    pub gin_distinct_keys: Option<f64>,
}

/// A table the workload reads.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Table OID.
    pub id: TableId,
    /// Schema name (unquoted).
    pub schema: String,
    /// Table name (unquoted).
    pub name: String,
    /// `pg_class.reltuples` (-1 when never analyzed).
    pub reltuples: f64,
    /// `pg_class.relpages`.
    pub relpages: f64,
    /// Average row width in bytes (sum of `pg_stats.avg_width`).
    pub avg_row_width: f64,
    /// Rows inserted during the workload period.
    pub inserts: f64,
    /// Rows updated during the workload period.
    pub updates: f64,
    /// Rows deleted during the workload period.
    pub deletes: f64,
    /// Fraction of updates that were HOT (`n_tup_hot_upd / n_tup_upd`); HOT updates do
    /// not touch indexes.
    pub hot_update_fraction: f64,
    /// True when the table only receives inserts (no updates/deletes), so physical order
    /// stays correlated with insertion-ordered columns.
    pub is_append_only: bool,
    /// Column statistics by attnum.
    pub column_stats: Vec<ColumnStats>,
}

impl TableInfo {
    /// Statistics of a column, if captured.
    pub fn stats_for(&self, attnum: i16) -> Option<&ColumnStats> {
        self.column_stats.iter().find(|s| s.attnum == attnum)
    }

    /// Row count to size indexes with; falls back to a page-based guess when the table
    /// was never analyzed (`reltuples = -1`).
    pub fn row_estimate(&self) -> f64 {
        let rows = finite_or(self.reltuples, -1.0);
        if rows >= 0.0 {
            return rows;
        }
        let pages = finite_or(self.relpages, 0.0).max(0.0);
        let width = finite_or(self.avg_row_width, 0.0).max(1.0);
        // 28 bytes of heap tuple header and line pointer per row, 8 KB pages.
        pages * (8192.0 / (width + 28.0)).floor().max(1.0)
    }

    /// Heap bytes per row (page-based when possible): the denominator of the
    /// write-overhead ratio "index entry size / row size".
    pub fn heap_bytes_per_row(&self) -> f64 {
        let rows = self.row_estimate();
        let pages = finite_or(self.relpages, 0.0);
        if rows >= 1.0 && pages >= 1.0 {
            return (pages * 8192.0 / rows).max(1.0);
        }
        finite_or(self.avg_row_width, 0.0).max(1.0) + 28.0
    }

    /// Heap rows per heap page (used by the GIN posting-list compression estimate).
    pub fn rows_per_page(&self) -> f64 {
        let rows = self.row_estimate();
        let pages = finite_or(self.relpages, 0.0);
        if rows >= 1.0 && pages >= 1.0 {
            (rows / pages).max(1.0)
        } else {
            (8192.0 / self.heap_bytes_per_row()).max(1.0)
        }
    }

    /// Index entries written per workload period: inserts and non-HOT updates add an
    /// entry to every index; deletes cost half an entry because the entry is only removed
    /// later, in bulk, by VACUUM.
    pub fn index_writes(&self) -> f64 {
        let ins = finite_or(self.inserts, 0.0).max(0.0);
        let upd = finite_or(self.updates, 0.0).max(0.0);
        let del = finite_or(self.deletes, 0.0).max(0.0);
        let hot = finite_or(self.hot_update_fraction, 0.0).clamp(0.0, 1.0);
        ins + upd * (1.0 - hot) + 0.5 * del
    }
}

/// An index that exists in the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingIndex {
    /// Index OID.
    pub id: u32,
    /// Table it is on.
    pub table: TableId,
    /// Schema of the index (unquoted).
    pub schema: String,
    /// Index name (unquoted).
    pub name: String,
    /// Access method.
    pub method: IndexMethod,
    /// Key columns/expressions in order.
    pub keys: Vec<IndexKey>,
    /// INCLUDE columns.
    pub include: Vec<ColumnRef>,
    /// Deparsed partial-index predicate.
    pub predicate: Option<String>,
    /// `pg_index.indisunique`.
    pub is_unique: bool,
    /// `pg_index.indisprimary`.
    pub is_primary: bool,
    /// Backs a UNIQUE/PRIMARY KEY/EXCLUDE constraint (cannot be dropped with DROP INDEX).
    pub backs_constraint: bool,
    /// `pg_relation_size` of the index.
    pub size_bytes: u64,
    /// `pg_stat_user_indexes.idx_scan`.
    pub scans: i64,
}

impl ExistingIndex {
    /// The comparable shape of this index.
    pub fn shape(&self) -> IndexShape<'_> {
        IndexShape {
            table: self.table,
            method: &self.method,
            keys: &self.keys,
            include: &self.include,
            predicate: self.predicate.as_deref(),
        }
    }
}

/// Partial-index predicate of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct PartialPredicate {
    /// Deparsed SQL of the predicate.
    pub sql: String,
    /// Fraction of the table's rows it keeps, which sizes the index.
    pub selectivity: f64,
}

/// An index the advisor may propose (btree, GIN or BRIN).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexCandidate {
    /// Table the index is on.
    pub table: TableId,
    /// Access method: `Btree`, `Gin` or `Brin`.
    pub method: IndexMethod,
    /// Keys in order, with direction and non-default opclass (e.g. `jsonb_path_ops`).
    pub keys: Vec<IndexKey>,
    /// INCLUDE columns (btree only) that enable index-only scans.
    pub include: Vec<ColumnRef>,
    /// Partial-index predicate.
    pub predicate: Option<PartialPredicate>,
}

impl IndexCandidate {
    /// The comparable shape of this candidate.
    pub fn shape(&self) -> IndexShape<'_> {
        IndexShape {
            table: self.table,
            method: &self.method,
            keys: &self.keys,
            include: &self.include,
            predicate: self.predicate.as_ref().map(|p| p.sql.as_str()),
        }
    }

    /// A canonical identity: two candidates with equal signatures are the same index for
    /// the planner (a btree and its fully reversed key order serve the same scans).
    pub fn signature(&self) -> CandidateSignature {
        let mut directions: Vec<SortDirection> = self.keys.iter().map(|k| k.direction).collect();
        if self.method != IndexMethod::Btree {
            // Only btree keys have an order.
            directions.fill(SortDirection::ASC);
        } else if directions.first().is_some_and(|d| d.descending) {
            for d in &mut directions {
                *d = d.reversed();
            }
        }
        let mut include: Vec<i16> = self.include.iter().map(|c| c.attnum).collect();
        include.sort_unstable();
        include.dedup();
        CandidateSignature {
            table: self.table,
            method: self.method.clone(),
            keys: self
                .keys
                .iter()
                .zip(directions)
                .map(|(k, d)| (k.target.identity(), d, k.opclass.clone()))
                .collect(),
            include,
            predicate: self.predicate.as_ref().map(|p| normalize_sql(&p.sql)),
        }
    }

    /// Fraction of table rows the index holds (1 for a full index).
    pub fn row_fraction(&self) -> f64 {
        self.predicate
            .as_ref()
            .map_or(1.0, |p| finite_or(p.selectivity, 1.0).clamp(0.0, 1.0))
    }
}

impl fmt::Display for IndexCandidate {
    /// A short unquoted description such as `btree (customer_id, created_at DESC)
    /// INCLUDE (total) WHERE status = 'failed'`, for reasons and logs (not SQL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.method.am_name())?;
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(key.target.display_text())?;
            if let Some(opclass) = &key.opclass {
                write!(f, " {opclass}")?;
            }
            if key.direction.descending {
                f.write_str(" DESC")?;
            }
            if key.direction.has_non_default_nulls() {
                f.write_str(if key.direction.nulls_first {
                    " NULLS FIRST"
                } else {
                    " NULLS LAST"
                })?;
            }
        }
        f.write_str(")")?;
        if !self.include.is_empty() {
            let names: Vec<&str> = self.include.iter().map(|c| c.name.as_str()).collect();
            write!(f, " INCLUDE ({})", names.join(", "))?;
        }
        if let Some(p) = &self.predicate {
            write!(f, " WHERE {}", p.sql)?;
        }
        Ok(())
    }
}

/// Canonical, hashable identity of a candidate (see [`IndexCandidate::signature`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CandidateSignature {
    /// Table.
    pub table: TableId,
    /// Access method.
    pub method: IndexMethod,
    /// Keys as (target identity, canonical direction, opclass).
    pub keys: Vec<(TargetIdentity, SortDirection, Option<String>)>,
    /// INCLUDE attnums, sorted.
    pub include: Vec<i16>,
    /// Normalized predicate.
    pub predicate: Option<String>,
}

/// A borrowed view of an index (existing or candidate) used for coverage checks.
#[derive(Debug, Clone, Copy)]
pub struct IndexShape<'a> {
    /// Table.
    pub table: TableId,
    /// Access method.
    pub method: &'a IndexMethod,
    /// Keys in order.
    pub keys: &'a [IndexKey],
    /// INCLUDE columns.
    pub include: &'a [ColumnRef],
    /// Partial predicate SQL.
    pub predicate: Option<&'a str>,
}

impl IndexShape<'_> {
    /// True when `self` makes `narrower` redundant: same table and method, equal partial
    /// predicate, and every scan `narrower` supports is supported by `self`:
    /// - btree: `narrower`'s keys are a prefix of `self`'s keys (same targets and
    ///   opclasses, with the same or the fully reversed sort order, since a backward scan
    ///   yields the reverse order), and `narrower`'s INCLUDE columns are among `self`'s
    ///   keys or INCLUDE columns;
    /// - GIN: every key of `narrower` is a key of `self` with the same opclass, or
    ///   `self` uses the default `jsonb_ops` where `narrower` uses `jsonb_path_ops`
    ///   (`jsonb_ops` supports every operator `jsonb_path_ops` does);
    /// - other methods: identical key lists.
    ///
    /// An index with no keys covers nothing and is covered by nothing.
    pub fn covers(&self, narrower: &IndexShape<'_>) -> bool {
        if self.table != narrower.table
            || self.method != narrower.method
            || narrower.keys.is_empty()
            || self.keys.is_empty()
        {
            return false;
        }
        let same_predicate = match (self.predicate, narrower.predicate) {
            (None, None) => true,
            (Some(a), Some(b)) => normalize_sql(a) == normalize_sql(b),
            _ => false,
        };
        if !same_predicate {
            return false;
        }
        match self.method {
            IndexMethod::Btree => {
                if narrower.keys.len() > self.keys.len() {
                    return false;
                }
                let prefix = &self.keys[..narrower.keys.len()];
                let targets_match = prefix.iter().zip(narrower.keys).all(|(wide, narrow)| {
                    wide.target.same_as(&narrow.target) && wide.opclass == narrow.opclass
                });
                let same_order = prefix
                    .iter()
                    .zip(narrower.keys)
                    .all(|(w, n)| w.direction == n.direction);
                let reversed_order = prefix
                    .iter()
                    .zip(narrower.keys)
                    .all(|(w, n)| w.direction == n.direction.reversed());
                let include_ok = narrower.include.iter().all(|inc| {
                    self.include.iter().any(|c| c.attnum == inc.attnum)
                        || self.keys.iter().any(
                            |k| matches!(&k.target, KeyTarget::Column(c) if c.attnum == inc.attnum),
                        )
                });
                targets_match && (same_order || reversed_order) && include_ok
            }
            IndexMethod::Gin => narrower.keys.iter().all(|narrow| {
                self.keys.iter().any(|wide| {
                    wide.target.same_as(&narrow.target)
                        && (wide.opclass == narrow.opclass
                            || (wide.opclass.is_none()
                                && narrow.opclass.as_deref() == Some("jsonb_path_ops")))
                })
            }),
            _ => {
                self.keys.len() == narrower.keys.len()
                    && self
                        .keys
                        .iter()
                        .zip(narrower.keys)
                        .all(|(a, b)| a.target.same_as(&b.target) && a.opclass == b.opclass)
            }
        }
    }

    /// True when `self` already gives `other`'s benefit, so that proposing `other` next to
    /// `self` would be redundant: `self` [covers](IndexShape::covers) `other` (e.g. `other` is
    /// a prefix of `self`), or `other` is a BRIN whose leading column leads a btree `self`
    /// with the same (or no) partial predicate: the btree serves every range the BRIN does.
    pub fn makes_redundant(&self, other: &IndexShape<'_>) -> bool {
        if self.covers(other) {
            return true;
        }
        let predicate_ok = match (self.predicate, other.predicate) {
            (None, _) => true,
            (Some(a), Some(b)) => normalize_sql(a) == normalize_sql(b),
            (Some(_), None) => false,
        };
        *other.method == IndexMethod::Brin
            && *self.method == IndexMethod::Btree
            && self.table == other.table
            && predicate_ok
            && match (self.keys.first(), other.keys.first()) {
                (Some(a), Some(b)) => a.target.same_as(&b.target),
                _ => false,
            }
    }
}

/// Everything the advisor reads: tables, existing indexes and the captured workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// Tables referenced by the queries.
    pub tables: Vec<TableInfo>,
    /// Existing indexes on those tables.
    pub existing_indexes: Vec<ExistingIndex>,
    /// Queries with their weights.
    pub queries: Vec<QueryShape>,
}

impl Workload {
    /// Looks up a table by OID.
    pub fn table(&self, id: TableId) -> Option<&TableInfo> {
        self.tables.iter().find(|t| t.id == id)
    }
}

/// Canonical text of an SQL fragment for comparisons: runs of whitespace outside quotes
/// become one space, and whitespace next to punctuation outside quotes is dropped, so
/// `lower( email )` and `lower(email)` compare equal. Quoted literals and identifiers are
/// kept byte for byte.
pub fn normalize_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut pending_space = false;
    for ch in sql.trim().chars() {
        if let Some(q) = quote {
            out.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space {
            let prev_is_word = out
                .chars()
                .last()
                .is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '\'' || p == '"');
            let next_is_word = ch.is_alphanumeric() || ch == '_' || ch == '\'' || ch == '"';
            if prev_is_word && next_is_word {
                out.push(' ');
            }
            pending_space = false;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
        }
        out.push(ch);
    }
    out
}

/// `value` when finite, otherwise `fallback`: catalog and planner numbers may be NaN or
/// infinite, and arithmetic on them must not poison a whole result.
pub fn finite_or(value: f64, fallback: f64) -> f64 {
    if value.is_finite() {
        value
    } else {
        fallback
    }
}

#[cfg(test)]
impl ColumnRef {
    /// A `bigint` column, for tests that need a column and nothing particular about it.
    pub(crate) fn test_bigint(attnum: i16, name: &str) -> Self {
        ColumnRef {
            attnum,
            name: name.into(),
            type_name: "bigint".into(),
            typlen: 8,
            typalign: TypeAlign::Double,
            avg_width: 8,
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn col(attnum: i16, name: &str) -> ColumnRef {
        ColumnRef {
            attnum,
            name: name.to_string(),
            type_name: "integer".to_string(),
            typlen: 4,
            typalign: TypeAlign::Int,
            avg_width: 4,
        }
    }

    fn btree(keys: Vec<IndexKey>) -> IndexCandidate {
        IndexCandidate {
            table: 1,
            method: IndexMethod::Btree,
            keys,
            include: vec![],
            predicate: None,
        }
    }

    #[test]
    fn normalize_sql_collapses_space_outside_quotes() {
        assert_eq!(normalize_sql(" lower( email ) "), "lower(email)");
        assert_eq!(normalize_sql("status  =  'a  b'"), "status='a  b'");
        assert_eq!(normalize_sql("x IS  NOT NULL"), "x IS NOT NULL");
        assert_eq!(normalize_sql("'unterminated"), "'unterminated");
    }

    #[test]
    fn reversed_btree_has_same_signature() {
        let a = btree(vec![
            IndexKey::asc(KeyTarget::Column(col(1, "a"))),
            IndexKey {
                target: KeyTarget::Column(col(2, "b")),
                direction: SortDirection::with_default_nulls(true),
                opclass: None,
            },
        ]);
        let mut b = a.clone();
        for k in &mut b.keys {
            k.direction = k.direction.reversed();
        }
        assert_eq!(a.signature(), b.signature());
        let mut c = a.clone();
        c.keys[1].direction = SortDirection::ASC;
        assert_ne!(a.signature(), c.signature());
    }

    #[test]
    fn btree_prefix_coverage_respects_order_opclass_and_predicate() {
        let wide = btree(vec![
            IndexKey::asc(KeyTarget::Column(col(1, "a"))),
            IndexKey::asc(KeyTarget::Column(col(2, "b"))),
        ]);
        let narrow = btree(vec![IndexKey {
            target: KeyTarget::Column(col(1, "a")),
            direction: SortDirection::with_default_nulls(true),
            opclass: None,
        }]);
        assert!(wide.shape().covers(&narrow.shape()));
        assert!(!narrow.shape().covers(&wide.shape()));

        let mut pattern = narrow.clone();
        pattern.keys[0].opclass = Some("text_pattern_ops".into());
        assert!(!wide.shape().covers(&pattern.shape()));

        let mut partial = narrow.clone();
        partial.predicate = Some(PartialPredicate {
            sql: "b = 1".into(),
            selectivity: 0.01,
        });
        assert!(!wide.shape().covers(&partial.shape()));

        let mut with_include = narrow.clone();
        with_include.include = vec![col(2, "b")];
        assert!(wide.shape().covers(&with_include.shape()));
        with_include.include = vec![col(3, "c")];
        assert!(!wide.shape().covers(&with_include.shape()));
    }

    #[test]
    fn gin_default_opclass_covers_path_ops() {
        let doc = ColumnRef {
            attnum: 3,
            name: "doc".into(),
            type_name: "jsonb".into(),
            typlen: -1,
            typalign: TypeAlign::Int,
            avg_width: 80,
        };
        let mut ops = btree(vec![IndexKey::asc(KeyTarget::Column(doc))]);
        ops.method = IndexMethod::Gin;
        let mut path = ops.clone();
        path.keys[0].opclass = Some("jsonb_path_ops".into());
        assert!(ops.shape().covers(&path.shape()));
        assert!(!path.shape().covers(&ops.shape()));
    }

    #[test]
    fn table_estimates_survive_garbage_numbers() {
        let t = TableInfo {
            id: 1,
            schema: "public".into(),
            name: "t".into(),
            reltuples: f64::NAN,
            relpages: f64::INFINITY,
            avg_row_width: -5.0,
            inserts: f64::NAN,
            updates: -1.0,
            deletes: 10.0,
            hot_update_fraction: 7.0,
            is_append_only: false,
            column_stats: vec![],
        };
        assert!(t.row_estimate().is_finite());
        assert!(t.heap_bytes_per_row() >= 1.0);
        assert!(t.rows_per_page() >= 1.0);
        assert_eq!(t.index_writes(), 5.0);
    }
}
