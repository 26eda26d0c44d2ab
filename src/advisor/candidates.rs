//! Candidate generation: turns each query's use of each table into the indexes that could
//! serve it, then removes duplicates and anything an existing index already provides.
//!
//! Per query and table the generator proposes:
//! - a single-column btree for every sargable column or expression (equality, range,
//!   join key, LIKE prefix with a pattern opclass when the collation needs one);
//! - multicolumn btrees with the equality columns first (most selective first), then one
//!   range column, or the ORDER BY / GROUP BY columns in the query's direction so that
//!   `ORDER BY ... LIMIT` reads the index in order instead of sorting;
//! - INCLUDE variants when the query reads few other columns, enabling index-only scans;
//! - partial indexes `WHERE <rare constant predicate>` when a predicate keeps less than
//!   ~5% of the rows;
//! - GIN for containment operators (`jsonb_path_ops` when only `@>`/jsonpath operators
//!   are used, `jsonb_ops` otherwise; default opclasses for arrays and tsvector);
//! - BRIN for range predicates on large tables whose column follows physical order.
//!
//! Which of these is worth building is decided by `selection` with real planner costs;
//! this module only has to make sure the good index is among the candidates and that no
//! candidate duplicates an existing index.

use std::collections::HashMap;

use super::model::{
    finite_or, CandidateSignature, ColumnRef, ContainmentOperator, ExistingIndex, GinOperandKind,
    IndexCandidate, IndexKey, IndexMethod, KeyTarget, PartialPredicate, PredicateOperator, QueryId,
    SortDirection, SortItem, TableAccess, TableInfo, Workload,
};

/// Why a candidate exists; decides how selection treats it (single-column btrees are the
/// seeds Extend grows, the rest are atomic options) and how the reason is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// One plain column, default opclass, no INCLUDE, not partial.
    SingleColumn,
    /// Several key columns (equality first, then range or sort).
    MultiColumn,
    /// Has INCLUDE columns for index-only scans.
    Covering,
    /// Has a partial-index predicate.
    Partial,
    /// Has an expression key such as `lower(email)`.
    Expression,
    /// Btree with a pattern opclass for `LIKE 'prefix%'`.
    PatternMatch,
    /// GIN for containment operators.
    Gin,
    /// BRIN for correlated range scans.
    Brin,
}

/// A candidate with the queries that motivated it.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedCandidate {
    /// The index.
    pub candidate: IndexCandidate,
    /// Its kind.
    pub kind: CandidateKind,
    /// Queries whose shape produced it, in workload order, without duplicates.
    pub source_queries: Vec<QueryId>,
}

/// Thresholds of candidate generation.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSettings {
    /// A constant predicate keeping at most this fraction of rows gets partial-index
    /// candidates.
    pub rare_value_max_selectivity: f64,
    /// Tables smaller than this get no BRIN candidates (BRIN only pays off when a btree
    /// would be large).
    pub brin_min_rows: f64,
    /// Minimum |correlation| of a column with physical order for BRIN.
    pub brin_min_correlation: f64,
    /// Minimum |correlation| for BRIN when the table also gets updates or deletes, which
    /// erode physical order over time.
    pub brin_min_correlation_not_append_only: f64,
    /// Maximum key columns of a generated btree.
    pub max_key_columns: usize,
    /// Maximum INCLUDE columns of a covering variant.
    pub max_include_columns: usize,
    /// Maximum total average width of INCLUDE columns, in bytes.
    pub max_include_bytes: u32,
}

impl Default for CandidateSettings {
    fn default() -> Self {
        CandidateSettings {
            rare_value_max_selectivity: 0.05,
            brin_min_rows: 1_000_000.0,
            brin_min_correlation: 0.9,
            brin_min_correlation_not_append_only: 0.95,
            max_key_columns: 4,
            max_include_columns: 3,
            max_include_bytes: 64,
        }
    }
}

/// Generates candidates for the whole workload with default settings.
pub fn generate_candidates(workload: &Workload) -> Vec<GeneratedCandidate> {
    generate_candidates_with(workload, &CandidateSettings::default())
}

/// Generates candidates for the whole workload: deduplicated, in workload order, none of
/// them covered by an existing index.
pub fn generate_candidates_with(
    workload: &Workload,
    settings: &CandidateSettings,
) -> Vec<GeneratedCandidate> {
    let mut sink = CandidateSink::default();
    for query in &workload.queries {
        for access in &query.tables {
            // A table missing from the model cannot be sized or costed; skip it.
            let Some(table) = workload.table(access.table) else {
                continue;
            };
            generate_for_access(access, table, settings, query.query_id, &mut sink);
        }
    }
    sink.candidates
        .into_iter()
        .filter(|g| covering_existing_index(&g.candidate, &workload.existing_indexes).is_none())
        .collect()
}

/// The existing index that makes `candidate` redundant, if any (see
/// [`super::model::IndexShape::makes_redundant`]: it covers the candidate, or the candidate
/// is a BRIN on the leading column of a btree).
pub fn covering_existing_index<'a>(
    candidate: &IndexCandidate,
    existing: &'a [ExistingIndex],
) -> Option<&'a ExistingIndex> {
    let shape = candidate.shape();
    existing
        .iter()
        .find(|index| index.shape().makes_redundant(&shape))
}

/// Collects candidates, merging duplicates by signature.
#[derive(Default)]
struct CandidateSink {
    by_signature: HashMap<CandidateSignature, usize>,
    candidates: Vec<GeneratedCandidate>,
}

impl CandidateSink {
    fn add(&mut self, candidate: IndexCandidate, query: QueryId) {
        if candidate.keys.is_empty() {
            return;
        }
        let signature = candidate.signature();
        if let Some(&i) = self.by_signature.get(&signature) {
            if let Some(existing) = self.candidates.get_mut(i) {
                if !existing.source_queries.contains(&query) {
                    existing.source_queries.push(query);
                }
            }
            return;
        }
        self.by_signature.insert(signature, self.candidates.len());
        self.candidates.push(GeneratedCandidate {
            kind: classify(&candidate),
            candidate,
            source_queries: vec![query],
        });
    }
}

/// Kind of a candidate from its features, most specific first.
pub fn classify(candidate: &IndexCandidate) -> CandidateKind {
    match candidate.method {
        IndexMethod::Gin => return CandidateKind::Gin,
        IndexMethod::Brin => return CandidateKind::Brin,
        _ => {}
    }
    if candidate.predicate.is_some() {
        CandidateKind::Partial
    } else if !candidate.include.is_empty() {
        CandidateKind::Covering
    } else if candidate.keys.iter().any(|k| k.opclass.is_some()) {
        CandidateKind::PatternMatch
    } else if candidate
        .keys
        .iter()
        .any(|k| matches!(k.target, KeyTarget::Expression(_)))
    {
        CandidateKind::Expression
    } else if candidate.keys.len() > 1 {
        CandidateKind::MultiColumn
    } else {
        CandidateKind::SingleColumn
    }
}

/// Everything one query needs from one table, grouped by how an index can serve it.
struct AccessNeeds {
    /// Equality targets, most selective first, then join columns.
    equality: Vec<KeyTarget>,
    /// Range targets with their selectivity.
    range: Vec<KeyTarget>,
    /// LIKE-prefix targets with the opclass they need.
    like_prefix: Vec<(KeyTarget, Option<String>)>,
    /// ORDER BY items not pinned by an equality predicate.
    order_by: Vec<SortItem>,
    /// GROUP BY items not pinned by an equality predicate.
    group_by: Vec<SortItem>,
}

fn collect_needs(access: &TableAccess) -> AccessNeeds {
    let mut equality: Vec<(KeyTarget, f64)> = Vec::new();
    for p in &access.predicates {
        if p.operator == PredicateOperator::Equality {
            push_unique_weighted(&mut equality, &p.target, finite_or(p.selectivity, 1.0));
        }
    }
    // Most selective first: the prefix narrows the scan fastest and is most likely to be
    // reusable by other queries filtering on that column. Ties keep query order.
    equality.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut equality: Vec<KeyTarget> = equality.into_iter().map(|(t, _)| t).collect();
    for column in &access.join_columns {
        push_unique(&mut equality, &KeyTarget::Column(column.clone()));
    }

    let mut range = Vec::new();
    let mut like_prefix: Vec<(KeyTarget, Option<String>)> = Vec::new();
    for p in &access.predicates {
        match &p.operator {
            PredicateOperator::Range if !equality.iter().any(|e| e.same_as(&p.target)) => {
                push_unique(&mut range, &p.target);
            }
            PredicateOperator::LikePrefix {
                needs_pattern_opclass,
            } => {
                let opclass = needs_pattern_opclass
                    .then(|| pattern_opclass(p.target.type_name()))
                    .flatten();
                if !like_prefix.iter().any(|(t, _)| t.same_as(&p.target)) {
                    like_prefix.push((p.target.clone(), opclass));
                }
            }
            _ => {}
        }
    }
    // An ORDER BY item compared by equality is constant within the result; it needs no
    // place in the index order.
    let not_pinned = |items: &[SortItem]| -> Vec<SortItem> {
        items
            .iter()
            .filter(|s| !equality.iter().any(|e| e.same_as(&s.target)))
            .cloned()
            .collect()
    };
    AccessNeeds {
        order_by: not_pinned(&access.order_by),
        group_by: not_pinned(&access.group_by),
        equality,
        range,
        like_prefix,
    }
}

/// Btree opclass that supports `LIKE 'prefix%'` under a non-C collation.
fn pattern_opclass(type_name: &str) -> Option<String> {
    match type_name.trim() {
        "text" => Some("text_pattern_ops".to_string()),
        t if t == "character varying" || t.starts_with("character varying(") => {
            Some("varchar_pattern_ops".to_string())
        }
        t if t == "character" || t.starts_with("character(") || t == "bpchar" => {
            Some("bpchar_pattern_ops".to_string())
        }
        _ => None,
    }
}

fn push_unique(list: &mut Vec<KeyTarget>, target: &KeyTarget) {
    if !list.iter().any(|t| t.same_as(target)) {
        list.push(target.clone());
    }
}

fn push_unique_weighted(list: &mut Vec<(KeyTarget, f64)>, target: &KeyTarget, weight: f64) {
    match list.iter_mut().find(|(t, _)| t.same_as(target)) {
        Some(entry) => entry.1 = entry.1.min(weight),
        None => list.push((target.clone(), weight)),
    }
}

fn btree(table: &TableInfo, keys: Vec<IndexKey>) -> IndexCandidate {
    IndexCandidate {
        table: table.id,
        method: IndexMethod::Btree,
        keys,
        include: Vec::new(),
        predicate: None,
    }
}

fn sort_keys(items: &[SortItem]) -> Vec<IndexKey> {
    items
        .iter()
        .map(|s| IndexKey {
            target: s.target.clone(),
            direction: s.direction,
            opclass: None,
        })
        .collect()
}

/// Multicolumn key lists for one access: equality prefix, then one range column, the
/// ORDER BY columns, the GROUP BY columns or a LIKE prefix column. `excluded` removes a
/// target (the rare-constant column of a partial index, which is constant inside it).
fn composite_key_lists(
    needs: &AccessNeeds,
    excluded: Option<&KeyTarget>,
    max_keys: usize,
) -> Vec<Vec<IndexKey>> {
    let keep = |t: &KeyTarget| excluded.is_none_or(|x| !x.same_as(t));
    let prefix: Vec<IndexKey> = needs
        .equality
        .iter()
        .filter(|t| keep(t))
        .take(max_keys.saturating_sub(1).max(1))
        .map(|t| IndexKey::asc(t.clone()))
        .collect();
    let with_tail = |tail: Vec<IndexKey>| -> Vec<IndexKey> {
        let mut keys = prefix.clone();
        keys.extend(tail);
        keys.truncate(max_keys.max(1));
        keys
    };

    let mut lists = Vec::new();
    if !prefix.is_empty() {
        lists.push(prefix.clone());
    }
    for r in needs.range.iter().filter(|t| keep(t)) {
        // A range column that is also the first ORDER BY item takes its direction, so the
        // range and the sort variant are one candidate rendered the way the query reads.
        let direction = needs
            .order_by
            .first()
            .filter(|s| s.target.same_as(r))
            .map_or(SortDirection::ASC, |s| s.direction);
        lists.push(with_tail(vec![IndexKey {
            target: r.clone(),
            direction,
            opclass: None,
        }]));
    }
    for items in [&needs.order_by, &needs.group_by] {
        let items: Vec<SortItem> = items.iter().filter(|s| keep(&s.target)).cloned().collect();
        if !items.is_empty() {
            lists.push(with_tail(sort_keys(&items)));
        }
    }
    for (target, opclass) in needs.like_prefix.iter().filter(|(t, _)| keep(t)) {
        lists.push(with_tail(vec![IndexKey {
            target: target.clone(),
            direction: SortDirection::ASC,
            opclass: opclass.clone(),
        }]));
    }
    lists
}

fn generate_for_access(
    access: &TableAccess,
    table: &TableInfo,
    settings: &CandidateSettings,
    query: QueryId,
    sink: &mut CandidateSink,
) {
    let needs = collect_needs(access);
    let max_keys = settings.max_key_columns.max(1);
    let mut btrees: Vec<IndexCandidate> = Vec::new();

    // Single-column btrees: the seeds Extend starts from.
    for target in needs.equality.iter().chain(&needs.range) {
        btrees.push(btree(table, vec![IndexKey::asc(target.clone())]));
    }
    if let Some(first) = needs.order_by.first() {
        btrees.push(btree(table, sort_keys(std::slice::from_ref(first))));
    }
    // Multicolumn orderings (single-key lists from here are already present and merge).
    for keys in composite_key_lists(&needs, None, max_keys) {
        btrees.push(btree(table, keys));
    }

    // INCLUDE variants for index-only scans.
    let mut covering = Vec::new();
    if let Some(referenced) = &access.referenced_columns {
        for candidate in &btrees {
            if let Some(include) = include_columns(candidate, referenced, settings) {
                covering.push(IndexCandidate {
                    include,
                    ..candidate.clone()
                });
            }
        }
    }

    for candidate in btrees.into_iter().chain(covering) {
        sink.add(candidate, query);
    }

    add_partial_candidates(access, &needs, table, settings, query, sink);
    add_gin_candidates(access, table, query, sink);
    add_brin_candidates(&needs, table, settings, query, sink);
}

/// INCLUDE columns that would make `candidate` cover every column the query reads from
/// the table, when there are few and narrow enough to be worth storing.
fn include_columns(
    candidate: &IndexCandidate,
    referenced: &[ColumnRef],
    settings: &CandidateSettings,
) -> Option<Vec<ColumnRef>> {
    let in_keys = |attnum: i16| {
        candidate
            .keys
            .iter()
            .any(|k| matches!(&k.target, KeyTarget::Column(c) if c.attnum == attnum))
    };
    let mut include: Vec<ColumnRef> = Vec::new();
    for column in referenced {
        if !in_keys(column.attnum) && !include.iter().any(|c| c.attnum == column.attnum) {
            include.push(column.clone());
        }
    }
    let width: u32 = include
        .iter()
        .map(|c| if c.avg_width == 0 { 32 } else { c.avg_width })
        .fold(0u32, u32::saturating_add);
    let ok = !include.is_empty()
        && include.len() <= settings.max_include_columns
        && width <= settings.max_include_bytes;
    ok.then_some(include)
}

fn add_partial_candidates(
    access: &TableAccess,
    needs: &AccessNeeds,
    table: &TableInfo,
    settings: &CandidateSettings,
    query: QueryId,
    sink: &mut CandidateSink,
) {
    for p in &access.predicates {
        let Some(rare) = &p.rare_constant else {
            continue;
        };
        let selectivity = finite_or(rare.selectivity, 1.0);
        if p.operator != PredicateOperator::Equality
            || !(0.0..=settings.rare_value_max_selectivity).contains(&selectivity)
            || rare.predicate_sql.trim().is_empty()
        {
            continue;
        }
        let predicate = PartialPredicate {
            sql: rare.predicate_sql.clone(),
            selectivity,
        };
        let mut lists = composite_key_lists(needs, Some(&p.target), settings.max_key_columns);
        if lists.is_empty() {
            // Nothing else to order by: index the rare column itself; the index is tiny
            // and answers "rows with this value" directly.
            lists.push(vec![IndexKey::asc(p.target.clone())]);
        }
        for keys in lists {
            sink.add(
                IndexCandidate {
                    table: table.id,
                    method: IndexMethod::Btree,
                    keys,
                    include: Vec::new(),
                    predicate: Some(predicate.clone()),
                },
                query,
            );
        }
    }
}

fn add_gin_candidates(
    access: &TableAccess,
    table: &TableInfo,
    query: QueryId,
    sink: &mut CandidateSink,
) {
    // Operators used per target, so the opclass fits all of this query's uses.
    let mut per_target: Vec<(KeyTarget, GinOperandKind, Vec<ContainmentOperator>)> = Vec::new();
    for p in &access.predicates {
        let PredicateOperator::Containment { operator, operand } = &p.operator else {
            continue;
        };
        match per_target.iter_mut().find(|(t, _, _)| t.same_as(&p.target)) {
            Some((_, _, ops)) => ops.push(*operator),
            None => per_target.push((p.target.clone(), *operand, vec![*operator])),
        }
    }
    for (target, operand, ops) in per_target {
        let opclass = match operand {
            // jsonb_path_ops is smaller and faster but supports only @>, @? and @@.
            GinOperandKind::Jsonb
                if ops.iter().all(|op| {
                    matches!(
                        op,
                        ContainmentOperator::Contains | ContainmentOperator::JsonPathMatch
                    )
                }) =>
            {
                Some("jsonb_path_ops".to_string())
            }
            _ => None,
        };
        sink.add(
            IndexCandidate {
                table: table.id,
                method: IndexMethod::Gin,
                keys: vec![IndexKey {
                    target,
                    direction: SortDirection::ASC,
                    opclass,
                }],
                include: Vec::new(),
                predicate: None,
            },
            query,
        );
    }
}

fn add_brin_candidates(
    needs: &AccessNeeds,
    table: &TableInfo,
    settings: &CandidateSettings,
    query: QueryId,
    sink: &mut CandidateSink,
) {
    if table.row_estimate() < settings.brin_min_rows {
        return;
    }
    let min_correlation = if table.is_append_only {
        settings.brin_min_correlation
    } else {
        settings
            .brin_min_correlation_not_append_only
            .max(settings.brin_min_correlation)
    };
    for target in &needs.range {
        let KeyTarget::Column(column) = target else {
            continue;
        };
        let correlation = table
            .stats_for(column.attnum)
            .and_then(|s| s.correlation)
            .map_or(0.0, |c| finite_or(c, 0.0));
        if correlation.abs() > min_correlation {
            sink.add(
                IndexCandidate {
                    table: table.id,
                    method: IndexMethod::Brin,
                    keys: vec![IndexKey::asc(target.clone())],
                    include: Vec::new(),
                    predicate: None,
                },
                query,
            );
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::advisor::model::{
        ColumnStats, ExpressionRef, PredicateUse, QueryShape, RareConstant, TypeAlign,
    };

    fn col(attnum: i16, name: &str, type_name: &str) -> ColumnRef {
        let (typlen, typalign, avg_width) = match type_name {
            "bigint" | "timestamp with time zone" => (8, TypeAlign::Double, 8),
            "integer" => (4, TypeAlign::Int, 4),
            "jsonb" => (-1, TypeAlign::Int, 120),
            _ => (-1, TypeAlign::Int, 12),
        };
        ColumnRef {
            attnum,
            name: name.to_string(),
            type_name: type_name.to_string(),
            typlen,
            typalign,
            avg_width,
        }
    }

    fn pred(target: KeyTarget, operator: PredicateOperator, selectivity: f64) -> PredicateUse {
        PredicateUse {
            target,
            operator,
            selectivity,
            rare_constant: None,
        }
    }

    fn table(rows: f64, append_only: bool, stats: Vec<ColumnStats>) -> TableInfo {
        TableInfo {
            id: 10,
            schema: "public".into(),
            name: "orders".into(),
            reltuples: rows,
            relpages: rows / 60.0,
            avg_row_width: 100.0,
            inserts: 0.0,
            updates: 0.0,
            deletes: 0.0,
            hot_update_fraction: 0.0,
            is_append_only: append_only,
            column_stats: stats,
        }
    }

    fn access(predicates: Vec<PredicateUse>) -> TableAccess {
        TableAccess {
            table: 10,
            predicates,
            join_columns: vec![],
            order_by: vec![],
            group_by: vec![],
            referenced_columns: None,
        }
    }

    fn workload(t: TableInfo, accesses: Vec<TableAccess>) -> Workload {
        Workload {
            tables: vec![t],
            existing_indexes: vec![],
            queries: accesses
                .into_iter()
                .enumerate()
                .map(|(i, a)| QueryShape {
                    query_id: i as i64 + 1,
                    calls: 10.0,
                    limit: None,
                    tables: vec![a],
                })
                .collect(),
        }
    }

    fn key_names(c: &IndexCandidate) -> Vec<String> {
        c.keys
            .iter()
            .map(|k| {
                let mut s = k.target.display_text().to_string();
                if k.direction.descending {
                    s.push_str(" DESC");
                }
                s
            })
            .collect()
    }

    fn find<'a>(
        cands: &'a [GeneratedCandidate],
        method: IndexMethod,
        keys: &[&str],
        partial: bool,
    ) -> Option<&'a GeneratedCandidate> {
        cands.iter().find(|g| {
            g.candidate.method == method
                && key_names(&g.candidate) == keys
                && g.candidate.predicate.is_some() == partial
                && g.candidate.include.is_empty()
        })
    }

    #[test]
    fn equality_columns_come_before_range_and_sort() {
        let customer = col(2, "customer_id", "bigint");
        let created = col(3, "created_at", "timestamp with time zone");
        let region = col(4, "region", "text");
        let mut a = access(vec![
            pred(
                KeyTarget::Column(region.clone()),
                PredicateOperator::Equality,
                0.2,
            ),
            pred(
                KeyTarget::Column(customer.clone()),
                PredicateOperator::Equality,
                0.001,
            ),
            pred(
                KeyTarget::Column(created.clone()),
                PredicateOperator::Range,
                0.1,
            ),
        ]);
        a.order_by = vec![SortItem {
            target: KeyTarget::Column(created.clone()),
            direction: SortDirection::with_default_nulls(true),
        }];
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a]));
        assert!(find(&c, IndexMethod::Btree, &["customer_id"], false).is_some());
        assert!(find(&c, IndexMethod::Btree, &["region"], false).is_some());
        assert!(find(&c, IndexMethod::Btree, &["created_at"], false).is_some());
        assert!(find(&c, IndexMethod::Btree, &["customer_id", "region"], false).is_some());
        assert!(find(
            &c,
            IndexMethod::Btree,
            &["customer_id", "region", "created_at DESC"],
            false
        )
        .is_some());
        // The range and the sort variant on created_at are one candidate, in the
        // query's direction.
        let n = c
            .iter()
            .filter(|g| key_names(&g.candidate).len() == 3)
            .count();
        assert_eq!(n, 1);
        assert!(c.iter().all(|g| g.candidate.method == IndexMethod::Btree));
    }

    #[test]
    fn mixed_sort_directions_are_kept() {
        let a_col = col(2, "a", "integer");
        let b_col = col(3, "b", "integer");
        let mut a = access(vec![]);
        a.order_by = vec![
            SortItem {
                target: KeyTarget::Column(a_col),
                direction: SortDirection::ASC,
            },
            SortItem {
                target: KeyTarget::Column(b_col),
                direction: SortDirection::with_default_nulls(true),
            },
        ];
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a]));
        assert!(find(&c, IndexMethod::Btree, &["a", "b DESC"], false).is_some());
        assert_eq!(classify(&c[0].candidate), CandidateKind::SingleColumn);
    }

    #[test]
    fn rare_constant_gives_partial_index_and_common_does_not() {
        let status = col(5, "status", "text");
        let created = col(3, "created_at", "timestamp with time zone");
        let mut rare = pred(
            KeyTarget::Column(status.clone()),
            PredicateOperator::Equality,
            0.02,
        );
        rare.rare_constant = Some(RareConstant {
            predicate_sql: "status = 'failed'".into(),
            selectivity: 0.02,
        });
        let mut a = access(vec![rare.clone()]);
        a.order_by = vec![SortItem {
            target: KeyTarget::Column(created),
            direction: SortDirection::with_default_nulls(true),
        }];
        let mut common = rare;
        common.rare_constant = Some(RareConstant {
            predicate_sql: "status = 'ok'".into(),
            selectivity: 0.9,
        });
        let b = access(vec![common]);
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a, b]));
        let partial = find(&c, IndexMethod::Btree, &["created_at DESC"], true)
            .expect("partial on created_at");
        assert_eq!(partial.kind, CandidateKind::Partial);
        assert_eq!(
            partial.candidate.predicate.as_ref().map(|p| p.sql.as_str()),
            Some("status = 'failed'")
        );
        assert!(c.iter().all(|g| g
            .candidate
            .predicate
            .as_ref()
            .is_none_or(|p| p.sql.contains("failed"))));
    }

    #[test]
    fn expression_and_like_prefix_candidates() {
        let email = col(6, "email", "text");
        let lower = KeyTarget::Expression(ExpressionRef {
            sql: "lower(email)".into(),
            type_name: "text".into(),
            typlen: -1,
            typalign: TypeAlign::Int,
            avg_width: 20,
            referenced_attnums: vec![6],
        });
        let a = access(vec![pred(lower, PredicateOperator::Equality, 1e-5)]);
        let b = access(vec![pred(
            KeyTarget::Column(email),
            PredicateOperator::LikePrefix {
                needs_pattern_opclass: true,
            },
            0.01,
        )]);
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a, b]));
        let expr = find(&c, IndexMethod::Btree, &["lower(email)"], false).expect("expression");
        assert_eq!(expr.kind, CandidateKind::Expression);
        let like = c
            .iter()
            .find(|g| g.kind == CandidateKind::PatternMatch)
            .expect("pattern opclass");
        assert_eq!(
            like.candidate.keys[0].opclass.as_deref(),
            Some("text_pattern_ops")
        );
    }

    #[test]
    fn gin_opclass_depends_on_operators() {
        let doc = col(7, "doc", "jsonb");
        let contains = PredicateOperator::Containment {
            operator: ContainmentOperator::Contains,
            operand: GinOperandKind::Jsonb,
        };
        let exists = PredicateOperator::Containment {
            operator: ContainmentOperator::KeyExists,
            operand: GinOperandKind::Jsonb,
        };
        let a = access(vec![pred(
            KeyTarget::Column(doc.clone()),
            contains.clone(),
            0.01,
        )]);
        let b = access(vec![
            pred(KeyTarget::Column(doc.clone()), contains, 0.01),
            pred(KeyTarget::Column(doc), exists, 0.01),
        ]);
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a, b]));
        let gins: Vec<Option<&str>> = c
            .iter()
            .filter(|g| g.kind == CandidateKind::Gin)
            .map(|g| g.candidate.keys[0].opclass.as_deref())
            .collect();
        assert_eq!(gins, vec![Some("jsonb_path_ops"), None]);
        assert!(c.iter().all(|g| g.candidate.method == IndexMethod::Gin));
    }

    #[test]
    fn brin_only_for_large_correlated_tables() {
        let created = col(3, "created_at", "timestamp with time zone");
        let stats = |corr: f64| {
            vec![ColumnStats {
                attnum: 3,
                correlation: Some(corr),
                n_distinct: Some(-1.0),
                gin_entries_per_row: None,
                gin_distinct_keys: None,
            }]
        };
        let a = || {
            access(vec![pred(
                KeyTarget::Column(created.clone()),
                PredicateOperator::Range,
                0.01,
            )])
        };
        let has_brin = |t: TableInfo| {
            generate_candidates(&workload(t, vec![a()]))
                .iter()
                .any(|g| g.kind == CandidateKind::Brin)
        };
        assert!(has_brin(table(5e6, true, stats(0.99))));
        assert!(has_brin(table(5e6, true, stats(-0.93))));
        assert!(!has_brin(table(5e6, false, stats(0.93))));
        assert!(!has_brin(table(5e6, true, stats(0.5))));
        assert!(!has_brin(table(1e5, true, stats(0.99))));
        assert!(!has_brin(table(5e6, true, stats(f64::NAN))));
    }

    #[test]
    fn covering_variant_when_few_columns_are_read() {
        let customer = col(2, "customer_id", "bigint");
        let total = col(8, "total", "bigint");
        let mut a = access(vec![pred(
            KeyTarget::Column(customer.clone()),
            PredicateOperator::Equality,
            0.001,
        )]);
        a.referenced_columns = Some(vec![customer.clone(), total.clone()]);
        let mut wide = a.clone();
        wide.referenced_columns = Some(
            (10..20)
                .map(|i| col(i, &format!("c{i}"), "bigint"))
                .chain([customer])
                .collect(),
        );
        let c = generate_candidates(&workload(table(1e5, false, vec![]), vec![a, wide]));
        let cov: Vec<&GeneratedCandidate> = c
            .iter()
            .filter(|g| g.kind == CandidateKind::Covering)
            .collect();
        assert_eq!(cov.len(), 1);
        assert_eq!(cov[0].candidate.include, vec![total]);
        assert_eq!(cov[0].source_queries, vec![1]);
    }

    #[test]
    fn duplicates_merge_and_existing_prefix_is_never_proposed() {
        let id = col(1, "id", "bigint");
        let customer = col(2, "customer_id", "bigint");
        let created = col(3, "created_at", "timestamp with time zone");
        let a = access(vec![pred(
            KeyTarget::Column(id.clone()),
            PredicateOperator::Equality,
            1e-6,
        )]);
        let b = access(vec![
            pred(
                KeyTarget::Column(customer.clone()),
                PredicateOperator::Equality,
                1e-3,
            ),
            pred(
                KeyTarget::Column(created.clone()),
                PredicateOperator::Range,
                0.1,
            ),
        ]);
        let c_access = access(vec![pred(
            KeyTarget::Column(customer.clone()),
            PredicateOperator::Equality,
            1e-3,
        )]);
        let mut w = workload(table(1e5, false, vec![]), vec![a, b, c_access]);
        let all = generate_candidates(&w);
        let single = find(&all, IndexMethod::Btree, &["customer_id"], false).expect("single");
        assert_eq!(single.source_queries, vec![2, 3]);

        w.existing_indexes = vec![
            ExistingIndex {
                id: 100,
                table: 10,
                schema: "public".into(),
                name: "orders_pkey".into(),
                method: IndexMethod::Btree,
                keys: vec![IndexKey::asc(KeyTarget::Column(id))],
                include: vec![],
                predicate: None,
                is_unique: true,
                is_primary: true,
                backs_constraint: true,
                size_bytes: 1,
                scans: 10,
            },
            ExistingIndex {
                id: 101,
                table: 10,
                schema: "public".into(),
                name: "orders_customer_created_idx".into(),
                method: IndexMethod::Btree,
                keys: vec![
                    IndexKey::asc(KeyTarget::Column(customer)),
                    IndexKey::asc(KeyTarget::Column(created)),
                ],
                include: vec![],
                predicate: None,
                is_unique: false,
                is_primary: false,
                backs_constraint: false,
                size_bytes: 1,
                scans: 10,
            },
        ];
        let left = generate_candidates(&w);
        assert!(find(&left, IndexMethod::Btree, &["id"], false).is_none());
        assert!(find(&left, IndexMethod::Btree, &["customer_id"], false).is_none());
        assert!(find(
            &left,
            IndexMethod::Btree,
            &["customer_id", "created_at"],
            false
        )
        .is_none());
        // created_at alone is not a prefix of (customer_id, created_at).
        assert!(find(&left, IndexMethod::Btree, &["created_at"], false).is_some());
    }

    #[test]
    fn unknown_table_and_empty_shapes_are_ignored() {
        let mut w = workload(table(1e5, false, vec![]), vec![access(vec![])]);
        w.queries[0].tables[0].table = 999;
        assert!(generate_candidates(&w).is_empty());
        let w = workload(table(f64::NAN, false, vec![]), vec![access(vec![])]);
        assert!(generate_candidates(&w).is_empty());
    }
}
