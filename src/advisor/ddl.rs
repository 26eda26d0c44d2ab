//! SQL text for the advisor's proposals: `CREATE INDEX CONCURRENTLY` for chosen
//! candidates and `DROP INDEX CONCURRENTLY` for drop candidates, with deterministic index
//! names and identifiers quoted by PostgreSQL's own `quote_identifier` ([`crate::pg::quote`]).
//!
//! Identifiers are always quoted here; expressions and partial predicates are SQL
//! fragments and are spliced as they are, so they must come from PostgreSQL's own
//! deparser (`deparse_expression` / `pg_get_expr`), never from user-supplied text. As a
//! second line of defence, fragments with statement separators, comments or unbalanced
//! quotes/parentheses are refused with [`DdlError::UnsafeFragment`].

use std::fmt;

use super::model::{ExistingIndex, IndexCandidate, IndexKey, IndexMethod, KeyTarget, TableInfo};
use crate::pg::quote::{quote_identifier, quote_qualified};

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`), in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a statement could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DdlError {
    /// The candidate has no key.
    NoKeys,
    /// The candidate's table is not the table given for rendering.
    WrongTable {
        /// Table of the candidate.
        candidate_table: u32,
        /// Table passed in.
        given_table: u32,
    },
    /// INCLUDE columns on an access method that does not support them.
    IncludeNotSupported {
        /// The access method.
        method: String,
    },
    /// An expression or predicate that does not look like a single deparsed expression.
    UnsafeFragment {
        /// The offending fragment.
        fragment: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An empty identifier (table, schema, column or index name).
    EmptyIdentifier,
}

impl fmt::Display for DdlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DdlError::NoKeys => f.write_str("index candidate has no key columns"),
            DdlError::WrongTable {
                candidate_table,
                given_table,
            } => write!(
                f,
                "index candidate is on table {candidate_table}, not on table {given_table}"
            ),
            DdlError::IncludeNotSupported { method } => {
                write!(f, "access method {method} does not support INCLUDE columns")
            }
            DdlError::UnsafeFragment { fragment, problem } => {
                write!(f, "refusing SQL fragment {fragment:?}: {problem}")
            }
            DdlError::EmptyIdentifier => f.write_str("empty identifier"),
        }
    }
}

impl std::error::Error for DdlError {}

/// Deterministic index name `<table>_<keys>[_incl_<cols>][_<predicate words>][_<opclass>]
/// [_gin|_brin]_idx`, lowercased, non-alphanumerics folded to `_`, at most 63 bytes;
/// longer names are cut and given an 8-hex-digit hash of the full name so that distinct
/// long names stay distinct.
pub fn index_name(candidate: &IndexCandidate, table_name: &str) -> String {
    let mut pieces: Vec<String> = vec![name_piece(table_name)];
    for key in &candidate.keys {
        pieces.push(match &key.target {
            KeyTarget::Column(c) => name_piece(&c.name),
            KeyTarget::Expression(e) => fragment_words(&e.sql),
        });
    }
    if !candidate.include.is_empty() {
        pieces.push("incl".to_string());
        pieces.extend(candidate.include.iter().map(|c| name_piece(&c.name)));
    }
    if let Some(p) = &candidate.predicate {
        pieces.push(fragment_words(&p.sql));
    }
    for key in &candidate.keys {
        if let Some(opclass) = &key.opclass {
            pieces.push(name_piece(opclass));
        }
    }
    match candidate.method {
        IndexMethod::Btree => {}
        ref other => pieces.push(name_piece(other.am_name())),
    }
    pieces.retain(|p| !p.is_empty());
    let stem = pieces.join("_");
    fit_identifier(&stem, "_idx")
}

/// [`index_name`], made unique against names already taken in the schema by appending
/// 1, 2, ... to the stem (as PostgreSQL's `ChooseRelationName` does).
pub fn choose_index_name(candidate: &IndexCandidate, table_name: &str, taken: &[String]) -> String {
    let base = index_name(candidate, table_name);
    if !taken.contains(&base) {
        return base;
    }
    let stem = base.strip_suffix("_idx").unwrap_or(&base).to_string();
    for n in 1..=10_000u32 {
        let name = fit_identifier(&stem, &format!("_idx{n}"));
        if !taken.contains(&name) {
            return name;
        }
    }
    // 10,000 collisions: fall back to a hash of everything taken, which is unique in
    // practice and keeps this function total.
    let mut all = base.clone();
    for t in taken {
        all.push_str(t);
    }
    fit_identifier(&format!("{}_{:08x}", stem, fnv1a(&all) as u32), "_idx")
}

/// `stem + suffix` within 63 bytes; when too long, the stem is cut at a character
/// boundary and an 8-hex-digit hash of the full name is inserted before the suffix.
fn fit_identifier(stem: &str, suffix: &str) -> String {
    let full = format!("{stem}{suffix}");
    if full.len() <= MAX_IDENTIFIER_BYTES {
        return full;
    }
    let hash = format!("_{:08x}", fnv1a(&full) as u32);
    let room = MAX_IDENTIFIER_BYTES.saturating_sub(hash.len() + suffix.len());
    let mut cut = room.min(stem.len());
    while cut > 0 && !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = stem.get(..cut).unwrap_or("").trim_end_matches('_');
    format!("{head}{hash}{suffix}")
}

/// FNV-1a (64-bit): stable across Rust versions and platforms, unlike `DefaultHasher`,
/// so names stay the same between releases.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Lowercased name piece: alphanumerics kept, everything else folded into single `_`.
fn name_piece(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            out.extend(ch.to_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Words of an SQL fragment for a name: identifiers and literal contents, without cast
/// type names (`lower((email)::text)` -> `lower_email`, `status = 'failed'::text` ->
/// `status_failed`).
fn fragment_words(sql: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut skip_next_word = false;
    while let Some(&ch) = chars.get(i) {
        if ch == '\'' || ch == '"' {
            let mut j = i + 1;
            let mut text = String::new();
            while let Some(&c) = chars.get(j) {
                if c == ch {
                    break;
                }
                text.push(c);
                j += 1;
            }
            if !skip_next_word {
                words.push(name_piece(&text));
            }
            skip_next_word = false;
            i = j + 1;
        } else if ch == ':' && chars.get(i + 1) == Some(&':') {
            skip_next_word = true;
            i += 2;
        } else if ch.is_alphanumeric() || ch == '_' {
            let mut j = i;
            let mut word = String::new();
            while let Some(&c) = chars.get(j) {
                if !(c.is_alphanumeric() || c == '_') {
                    break;
                }
                word.push(c);
                j += 1;
            }
            if !skip_next_word {
                words.push(name_piece(&word));
            }
            skip_next_word = false;
            i = j;
        } else {
            i += 1;
        }
    }
    words.retain(|w| !w.is_empty());
    words.join("_")
}

/// Checks that an SQL fragment is plausibly one expression: no `;`, no comments, no NUL,
/// balanced quotes and parentheses (outside literals).
fn check_fragment(sql: &str) -> Result<(), DdlError> {
    let fail = |problem: &'static str| {
        Err(DdlError::UnsafeFragment {
            fragment: sql.to_string(),
            problem,
        })
    };
    if sql.trim().is_empty() {
        return fail("empty");
    }
    let mut quote: Option<char> = None;
    let mut depth: i64 = 0;
    let mut prev = '\0';
    for ch in sql.chars() {
        if ch == '\0' {
            return fail("contains NUL");
        }
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            prev = ch;
            continue;
        }
        match ch {
            '\'' | '"' => quote = Some(ch),
            ';' => return fail("contains a statement separator"),
            '-' if prev == '-' => return fail("contains a comment"),
            '*' if prev == '/' => return fail("contains a comment"),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return fail("unbalanced parentheses");
                }
            }
            _ => {}
        }
        // A closing quote followed by an opening one ('it''s') re-enters the literal.
        prev = ch;
    }
    if quote.is_some() {
        return fail("unterminated quote");
    }
    if depth != 0 {
        return fail("unbalanced parentheses");
    }
    Ok(())
}

/// Whether `sql` needs no extra parentheses in an index key list: it is one function call
/// `name(...)` or already wrapped in one pair of parentheses, closing at the very end.
fn is_self_delimited(sql: &str) -> bool {
    let Some(open) = sql.find('(') else {
        return false;
    };
    let name = sql.get(..open).unwrap_or("");
    let name_ok = name.is_empty()
        || (name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'));
    if !name_ok {
        return false;
    }
    // Find the parenthesis matching `open`, skipping literals.
    let mut depth = 0i64;
    let mut quote: Option<char> = None;
    for (i, ch) in sql.char_indices().skip_while(|(i, _)| *i < open) {
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => quote = Some(ch),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1 == sql.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// An operator class name, possibly `schema.name`, quoted part by part.
fn quote_opclass(opclass: &str) -> String {
    match opclass.rsplit_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
            quote_qualified(schema, name)
        }
        _ => quote_identifier(opclass),
    }
}

fn render_key(key: &IndexKey, method: &IndexMethod) -> Result<String, DdlError> {
    let mut text = match &key.target {
        KeyTarget::Column(c) => {
            if c.name.is_empty() {
                return Err(DdlError::EmptyIdentifier);
            }
            quote_identifier(&c.name)
        }
        KeyTarget::Expression(e) => {
            let sql = e.sql.trim();
            check_fragment(sql)?;
            if is_self_delimited(sql) {
                sql.to_string()
            } else {
                format!("({sql})")
            }
        }
    };
    if let Some(opclass) = &key.opclass {
        text.push(' ');
        text.push_str(&quote_opclass(opclass));
    }
    // Only btree keys have an order; other methods reject ASC/DESC.
    if *method == IndexMethod::Btree {
        if key.direction.descending {
            text.push_str(" DESC");
        }
        if key.direction.has_non_default_nulls() {
            text.push_str(if key.direction.nulls_first {
                " NULLS FIRST"
            } else {
                " NULLS LAST"
            });
        }
    }
    Ok(text)
}

/// The key list of a candidate as it appears between the parentheses of CREATE INDEX.
///
/// # Errors
/// [`DdlError::NoKeys`] for an empty key list, [`DdlError::EmptyIdentifier`] for an
/// unnamed column, [`DdlError::UnsafeFragment`] for a suspicious expression.
pub fn render_key_list(candidate: &IndexCandidate) -> Result<String, DdlError> {
    if candidate.keys.is_empty() {
        return Err(DdlError::NoKeys);
    }
    let keys: Result<Vec<String>, DdlError> = candidate
        .keys
        .iter()
        .map(|k| render_key(k, &candidate.method))
        .collect();
    Ok(keys?.join(", "))
}

/// `CREATE INDEX CONCURRENTLY <name> ON <schema>.<table> USING <method> (<keys>)
/// [INCLUDE (...)] [WHERE ...]`.
///
/// # Errors
/// [`DdlError::WrongTable`] when `table` is not the candidate's table,
/// [`DdlError::IncludeNotSupported`] for INCLUDE on a non-btree method, and the errors of
/// [`render_key_list`] for keys and the partial predicate.
pub fn create_index_sql(
    candidate: &IndexCandidate,
    table: &TableInfo,
    index_name: &str,
) -> Result<String, DdlError> {
    if candidate.table != table.id {
        return Err(DdlError::WrongTable {
            candidate_table: candidate.table,
            given_table: table.id,
        });
    }
    if index_name.is_empty() || table.schema.is_empty() || table.name.is_empty() {
        return Err(DdlError::EmptyIdentifier);
    }
    let mut sql = format!(
        "CREATE INDEX CONCURRENTLY {} ON {} USING {} ({})",
        quote_identifier(index_name),
        quote_qualified(&table.schema, &table.name),
        quote_identifier(candidate.method.am_name()),
        render_key_list(candidate)?
    );
    if !candidate.include.is_empty() {
        if candidate.method != IndexMethod::Btree {
            return Err(DdlError::IncludeNotSupported {
                method: candidate.method.am_name().to_string(),
            });
        }
        let mut cols = Vec::with_capacity(candidate.include.len());
        for c in &candidate.include {
            if c.name.is_empty() {
                return Err(DdlError::EmptyIdentifier);
            }
            cols.push(quote_identifier(&c.name));
        }
        sql.push_str(" INCLUDE (");
        sql.push_str(&cols.join(", "));
        sql.push(')');
    }
    if let Some(p) = &candidate.predicate {
        let predicate = p.sql.trim();
        check_fragment(predicate)?;
        sql.push_str(" WHERE ");
        sql.push_str(predicate);
    }
    Ok(sql)
}

/// `DROP INDEX CONCURRENTLY <schema>.<name>` for a drop candidate.
///
/// # Errors
/// [`DdlError::EmptyIdentifier`] when the schema or index name is empty.
pub fn drop_index_sql(index: &ExistingIndex) -> Result<String, DdlError> {
    if index.schema.is_empty() || index.name.is_empty() {
        return Err(DdlError::EmptyIdentifier);
    }
    Ok(format!(
        "DROP INDEX CONCURRENTLY {}",
        quote_qualified(&index.schema, &index.name)
    ))
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::advisor::model::{
        ColumnRef, ExpressionRef, PartialPredicate, SortDirection, TypeAlign,
    };

    fn col(attnum: i16, name: &str) -> ColumnRef {
        ColumnRef::test_bigint(attnum, name)
    }

    fn table(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            id: 5,
            schema: schema.into(),
            name: name.into(),
            reltuples: 1.0,
            relpages: 1.0,
            avg_row_width: 1.0,
            inserts: 0.0,
            updates: 0.0,
            deletes: 0.0,
            hot_update_fraction: 0.0,
            is_append_only: false,
            column_stats: vec![],
        }
    }

    fn btree(keys: Vec<IndexKey>) -> IndexCandidate {
        IndexCandidate {
            table: 5,
            method: IndexMethod::Btree,
            keys,
            include: vec![],
            predicate: None,
        }
    }

    fn expr(sql: &str) -> KeyTarget {
        KeyTarget::Expression(ExpressionRef {
            sql: sql.into(),
            type_name: "text".into(),
            typlen: -1,
            typalign: TypeAlign::Int,
            avg_width: 10,
            referenced_attnums: vec![],
        })
    }

    #[test]
    fn create_index_renders_all_parts() {
        let mut c = btree(vec![
            IndexKey::asc(KeyTarget::Column(col(2, "customer_id"))),
            IndexKey {
                target: KeyTarget::Column(col(3, "created_at")),
                direction: SortDirection::with_default_nulls(true),
                opclass: None,
            },
        ]);
        c.include = vec![col(4, "Total")];
        c.predicate = Some(PartialPredicate {
            sql: "status = 'failed'::text".into(),
            selectivity: 0.01,
        });
        let name = index_name(&c, "orders");
        assert_eq!(
            name,
            "orders_customer_id_created_at_incl_total_status_failed_idx"
        );
        let sql = create_index_sql(&c, &table("Sales", "orders"), &name).expect("renders");
        assert_eq!(
            sql,
            "CREATE INDEX CONCURRENTLY orders_customer_id_created_at_incl_total_status_failed_idx \
             ON \"Sales\".orders USING btree (customer_id, created_at DESC) \
             INCLUDE (\"Total\") WHERE status = 'failed'::text"
        );
    }

    #[test]
    fn nulls_ordering_only_when_not_default() {
        let key = |descending, nulls_first| IndexKey {
            target: KeyTarget::Column(col(1, "a")),
            direction: SortDirection {
                descending,
                nulls_first,
            },
            opclass: None,
        };
        let list = render_key_list(&btree(vec![
            key(false, false),
            key(false, true),
            key(true, true),
            key(true, false),
        ]))
        .expect("renders");
        assert_eq!(list, "a, a NULLS FIRST, a DESC, a DESC NULLS LAST");
    }

    #[test]
    fn expressions_gin_and_brin() {
        let lower = btree(vec![IndexKey::asc(expr("lower((email)::text)"))]);
        assert_eq!(index_name(&lower, "users"), "users_lower_email_idx");
        assert_eq!(
            create_index_sql(&lower, &table("public", "users"), "users_lower_email_idx")
                .expect("renders"),
            "CREATE INDEX CONCURRENTLY users_lower_email_idx ON public.users USING btree \
             (lower((email)::text))"
        );
        let arith = btree(vec![IndexKey::asc(expr("a + b"))]);
        assert_eq!(render_key_list(&arith).expect("renders"), "(a + b)");
        let wrapped = btree(vec![IndexKey::asc(expr("(a + b)"))]);
        assert_eq!(render_key_list(&wrapped).expect("renders"), "(a + b)");
        let two_groups = btree(vec![IndexKey::asc(expr("(a) + (b)"))]);
        assert_eq!(
            render_key_list(&two_groups).expect("renders"),
            "((a) + (b))"
        );
        let two_calls = btree(vec![IndexKey::asc(expr("f(a) || g(b)"))]);
        assert_eq!(
            render_key_list(&two_calls).expect("renders"),
            "(f(a) || g(b))"
        );

        let gin = IndexCandidate {
            method: IndexMethod::Gin,
            keys: vec![IndexKey {
                target: KeyTarget::Column(col(4, "prefs")),
                direction: SortDirection::with_default_nulls(true),
                opclass: Some("jsonb_path_ops".into()),
            }],
            ..btree(vec![])
        };
        assert_eq!(
            index_name(&gin, "users"),
            "users_prefs_jsonb_path_ops_gin_idx"
        );
        assert_eq!(
            create_index_sql(&gin, &table("public", "users"), "g").expect("renders"),
            "CREATE INDEX CONCURRENTLY g ON public.users USING gin (prefs jsonb_path_ops)"
        );
        let tsv = IndexCandidate {
            method: IndexMethod::Gin,
            keys: vec![IndexKey::asc(expr(
                "to_tsvector('english'::regconfig, body)",
            ))],
            ..btree(vec![])
        };
        assert_eq!(
            index_name(&tsv, "docs"),
            "docs_to_tsvector_english_body_gin_idx"
        );
        let brin = IndexCandidate {
            method: IndexMethod::Brin,
            keys: vec![IndexKey::asc(KeyTarget::Column(col(3, "created_at")))],
            ..btree(vec![])
        };
        assert_eq!(
            create_index_sql(
                &brin,
                &table("public", "events"),
                "events_created_at_brin_idx"
            )
            .expect("renders"),
            "CREATE INDEX CONCURRENTLY events_created_at_brin_idx ON public.events USING brin \
             (created_at)"
        );
        let mut bad = brin.clone();
        bad.include = vec![col(1, "id")];
        assert!(matches!(
            create_index_sql(&bad, &table("public", "events"), "x"),
            Err(DdlError::IncludeNotSupported { .. })
        ));
    }

    #[test]
    fn long_names_are_truncated_with_hash_and_stay_distinct() {
        let long = "a_very_long_column_name_that_goes_on_and_on";
        let c1 = btree(vec![
            IndexKey::asc(KeyTarget::Column(col(1, long))),
            IndexKey::asc(KeyTarget::Column(col(2, "first"))),
        ]);
        let c2 = btree(vec![
            IndexKey::asc(KeyTarget::Column(col(1, long))),
            IndexKey::asc(KeyTarget::Column(col(2, "second"))),
        ]);
        let n1 = index_name(&c1, "table_with_long_name");
        let n2 = index_name(&c2, "table_with_long_name");
        assert!(n1.len() <= MAX_IDENTIFIER_BYTES && n2.len() <= MAX_IDENTIFIER_BYTES);
        assert!(n1.ends_with("_idx") && n1.starts_with("table_with_long_name_a_very"));
        assert_ne!(n1, n2);
        assert_eq!(n1, index_name(&c1, "table_with_long_name"), "deterministic");

        // Multibyte names are cut on a character boundary.
        let wide = btree(vec![IndexKey::asc(KeyTarget::Column(col(
            1,
            &"ü".repeat(60),
        )))]);
        let n = index_name(&wide, "t");
        assert!(n.len() <= MAX_IDENTIFIER_BYTES, "{n}");
        assert!(n.starts_with("t_ü"));
        assert_eq!(quote_identifier(&n), format!("\"{n}\""));
    }

    #[test]
    fn colliding_names_get_a_number() {
        let c = btree(vec![IndexKey::asc(KeyTarget::Column(col(1, "a")))]);
        assert_eq!(choose_index_name(&c, "t", &[]), "t_a_idx");
        let taken = vec!["t_a_idx".to_string(), "t_a_idx1".to_string()];
        assert_eq!(choose_index_name(&c, "t", &taken), "t_a_idx2");
    }

    #[test]
    fn unsafe_fragments_are_refused() {
        for bad in [
            "a = 1; DROP TABLE x",
            "a = 1 -- comment",
            "a /* c */ = 1",
            "a = 'open",
            "f(a",
            "a)",
            "",
        ] {
            let mut c = btree(vec![IndexKey::asc(KeyTarget::Column(col(1, "a")))]);
            c.predicate = Some(PartialPredicate {
                sql: bad.into(),
                selectivity: 0.1,
            });
            assert!(
                matches!(
                    create_index_sql(&c, &table("public", "t"), "i"),
                    Err(DdlError::UnsafeFragment { .. })
                ),
                "{bad:?}"
            );
            let e = btree(vec![IndexKey::asc(expr(bad))]);
            assert!(render_key_list(&e).is_err(), "{bad:?}");
        }
        // Semicolons and dashes inside literals are fine.
        let mut ok = btree(vec![IndexKey::asc(KeyTarget::Column(col(1, "a")))]);
        ok.predicate = Some(PartialPredicate {
            sql: "note = 'a;b -- c''d'".into(),
            selectivity: 0.1,
        });
        assert!(create_index_sql(&ok, &table("public", "t"), "i").is_ok());
        assert_eq!(
            create_index_sql(&ok, &table("public", "other"), "i").map(|_| ()),
            Ok(())
        );
        let mut wrong = ok.clone();
        wrong.table = 6;
        assert!(matches!(
            create_index_sql(&wrong, &table("public", "t"), "i"),
            Err(DdlError::WrongTable { .. })
        ));
        assert_eq!(render_key_list(&btree(vec![])), Err(DdlError::NoKeys));
    }

    #[test]
    fn drop_index_is_qualified_and_quoted() {
        let index = ExistingIndex {
            id: 1,
            table: 5,
            schema: "App".into(),
            name: "order".into(),
            method: IndexMethod::Btree,
            keys: vec![],
            include: vec![],
            predicate: None,
            is_unique: false,
            is_primary: false,
            backs_constraint: false,
            size_bytes: 0,
            scans: 0,
        };
        assert_eq!(
            drop_index_sql(&index).expect("renders"),
            "DROP INDEX CONCURRENTLY \"App\".\"order\""
        );
        let unnamed = ExistingIndex {
            name: String::new(),
            ..index
        };
        assert_eq!(drop_index_sql(&unnamed), Err(DdlError::EmptyIdentifier));
    }
}
