//! Identifier quoting for every capability: PostgreSQL's own `quote_identifier` (quotes
//! unless the name is lowercase letters, digits and underscores not starting with a digit
//! and not a non-unreserved keyword; always under `quote_all_identifiers`).
//!
//! Plain `cargo test` runs without a server, so unit tests of pure modules that render SQL
//! (`advisor::ddl`) get a Rust port of the same rule ([`fallback`], PostgreSQL 15's keyword
//! list); a `#[pg_test]` checks that it agrees with the server's.

/// `ident` quoted as PostgreSQL's `quote_identifier` (and SQL's `quote_ident`) quotes it.
#[cfg(not(test))]
pub fn quote_identifier(ident: &str) -> String {
    use pgrx::pg_sys;
    use std::ffi::{CStr, CString};
    // No identifier holds a NUL byte; quoting keeps such text inert all the same.
    let Ok(c) = CString::new(ident) else {
        return format!("\"{}\"", ident.replace('"', "\"\""));
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    // quote_identifier returns either its argument (no quoting needed) or a palloc'd quoted
    // copy; the result is copied into a Rust String before `c` is dropped, and only a copy
    // (a pointer other than `c`'s) is pfree'd.
    unsafe {
        let quoted = pg_sys::quote_identifier(c.as_ptr());
        let out = CStr::from_ptr(quoted).to_string_lossy().into_owned();
        if quoted != c.as_ptr() {
            pg_sys::pfree(quoted as *mut std::ffi::c_void);
        }
        out
    }
}

/// Under `cargo test` (no server): the Rust port of the same rule.
#[cfg(test)]
pub fn quote_identifier(ident: &str) -> String {
    fallback::quote_identifier(ident)
}

/// `schema.name`, each part quoted as needed.
pub fn quote_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_identifier(schema), quote_identifier(name))
}

/// PostgreSQL 15's `quote_identifier` in Rust, for tests without a server (without
/// `quote_all_identifiers`).
#[cfg(any(test, feature = "pg_test"))]
pub mod fallback {
    /// Keywords that `quote_identifier` quotes: every PostgreSQL 15 keyword that is not
    /// UNRESERVED (categories reserved, column-name and type/function-name), as listed by
    /// `SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'` on PostgreSQL 15. Sorted for
    /// binary search.
    pub(super) const QUOTED_KEYWORDS: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "between",
        "bigint",
        "binary",
        "bit",
        "boolean",
        "both",
        "case",
        "cast",
        "char",
        "character",
        "check",
        "coalesce",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "dec",
        "decimal",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "exists",
        "extract",
        "false",
        "fetch",
        "float",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "greatest",
        "group",
        "grouping",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "inout",
        "int",
        "integer",
        "intersect",
        "interval",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "least",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "national",
        "natural",
        "nchar",
        "none",
        "normalize",
        "not",
        "notnull",
        "null",
        "nullif",
        "numeric",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "out",
        "outer",
        "overlaps",
        "overlay",
        "placing",
        "position",
        "precision",
        "primary",
        "real",
        "references",
        "returning",
        "right",
        "row",
        "select",
        "session_user",
        "setof",
        "similar",
        "smallint",
        "some",
        "substring",
        "symmetric",
        "table",
        "tablesample",
        "then",
        "time",
        "timestamp",
        "to",
        "trailing",
        "treat",
        "trim",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "values",
        "varchar",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
        "xmlattributes",
        "xmlconcat",
        "xmlelement",
        "xmlexists",
        "xmlforest",
        "xmlnamespaces",
        "xmlparse",
        "xmlpi",
        "xmlroot",
        "xmlserialize",
        "xmltable",
    ];

    /// Left bare only when `ident` consists of lowercase ASCII letters, digits and
    /// underscores, does not start with a digit and is not a keyword that needs quoting;
    /// otherwise wrapped in double quotes with embedded double quotes doubled.
    pub fn quote_identifier(ident: &str) -> String {
        let safe = ident
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && ident
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && QUOTED_KEYWORDS.binary_search(&ident).is_err();
        if safe {
            ident.to_string()
        } else {
            format!("\"{}\"", ident.replace('"', "\"\""))
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn fallback_matches_postgres() {
        // Expected values from PostgreSQL 15's quote_ident().
        let cases = [
            ("abc", "abc"),
            ("_x1", "_x1"),
            ("Abc", "\"Abc\""),
            ("a b", "\"a b\""),
            ("1x", "\"1x\""),
            ("user", "\"user\""),
            ("between", "\"between\""),
            ("name", "name"),
            ("é", "\"é\""),
            ("a\"b", "\"a\"\"b\""),
            ("", "\"\""),
            ("select", "\"select\""),
            ("xmltable", "\"xmltable\""),
            ("abort", "abort"),
        ];
        for (input, expected) in cases {
            assert_eq!(fallback::quote_identifier(input), expected, "{input}");
        }
        let mut sorted = fallback::QUOTED_KEYWORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            fallback::QUOTED_KEYWORDS,
            "keyword list must stay sorted"
        );
        assert_eq!(fallback::QUOTED_KEYWORDS.len(), 77 + 51 + 23);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The server's quote_identifier and the Rust port agree on every keyword of the
    /// server's own list and on names that need quoting for other reasons.
    #[pg_test]
    fn fallback_agrees_with_postgres() {
        let mut words: Vec<String> = Spi::connect(|c| {
            let mut v = Vec::new();
            for row in c.select("SELECT word::text FROM pg_get_keywords()", None, &[])? {
                v.push(row.get::<String>(1)?.unwrap_or_default());
            }
            Ok::<_, pgrx::spi::Error>(v)
        })
        .unwrap();
        for extra in [
            "abc", "_x1", "Abc", "a b", "1x", "é", "a\"b", "", "x$y", "name", "with_ü", "t_1",
        ] {
            words.push(extra.to_string());
        }
        for w in &words {
            let server =
                Spi::get_one_with_args::<String>("SELECT quote_ident($1)", &[w.as_str().into()])
                    .unwrap()
                    .unwrap();
            assert_eq!(super::fallback::quote_identifier(w), server, "{w:?}");
            // The server path of the helper (this build has no cfg(test)).
            assert_eq!(super::quote_identifier(w), server, "{w:?}");
        }
    }
}
