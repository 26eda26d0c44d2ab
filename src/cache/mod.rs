//! Shared-memory result cache: `perf.cached()` / `perf.cached_json()` /
//! `perf.cached_json_text()` serve query results
//! from shared memory, invalidated at commit through change tracking (`crate::track`), fed
//! by statement-level triggers on the source tables. Design contract and guarantees: docs/cache-design.md.

pub mod api;
pub mod invalidate;
pub mod key;
pub mod ring;
pub mod store;

#[cfg(any(test, feature = "pg_test"))]
use pgrx::pg_schema;

// Shared memory is requested and attached through `crate::pg::shmem`
// (`store::request`/`startup`); invalidation comes from `crate::track`'s generations.

pgrx::extension_sql_file!(
    "../../sql/cache.sql",
    name = "cache_sql",
    requires = [
        cache::api::cached_json,
        cache::api::cache_invalidate_oid,
        cache::api::cache_flush,
        cache::invalidate::cache_invalidate_trigger
    ]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// `format:hits` of every entry cached for `query`, sorted. (perf.cache_stats() is
    /// cluster-wide, and #[pg_test]s run concurrently: per-entry counters are this test's.)
    fn entries(query: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT string_agg(format || ':' || hits, ',' ORDER BY format, hits) \
             FROM perf.cache_entries() WHERE query = '{}'",
            query.replace('\'', "''")
        ))
        .unwrap()
        .unwrap_or_default()
    }

    /// The json form serves jsonb's text rendering as `json`, from an entry of its own: a
    /// query cached in the jsonb form is a miss in the json form, then a hit.
    #[pg_test]
    fn json_text_form_is_its_own_entry_with_the_jsonb_text() {
        let q = "SELECT 1 AS n, 'a\"b' AS s, 2.50 AS x, 7 AS t";
        let literal = q.replace('\'', "''");
        let jsonb_call = format!("perf.cached_json('{literal}')");
        let text_call = format!("perf.cached_json_text('{literal}')");
        // Each statement calls its form twice: a miss that stores, then a hit.
        let (jsonb_text, jsonb_type) = Spi::get_two::<String, String>(&format!(
            "SELECT {jsonb_call}::text, pg_typeof({jsonb_call})::text"
        ))
        .unwrap();
        assert_eq!(entries(q), "jsonb:1");
        let (text, text_type) = Spi::get_two::<String, String>(&format!(
            "SELECT {text_call}::text, pg_typeof({text_call})::text"
        ))
        .unwrap();
        assert_eq!(
            entries(q),
            "json:1,jsonb:1",
            "the json form has its own entry"
        );
        assert_eq!(jsonb_type.as_deref(), Some("jsonb"));
        assert_eq!(text_type.as_deref(), Some("json"));
        assert_eq!(text, jsonb_text);
        // A result column named like the wrapper's row alias is still one column of the row.
        assert_eq!(
            text.as_deref(),
            Some(r#"[{"n": 1, "s": "a\"b", "t": 7, "x": 2.50}]"#)
        );
    }

    /// Settings that change the output are part of the key (read from the variables behind
    /// them): under another TimeZone the same call is another entry.
    #[pg_test]
    fn output_settings_separate_entries() {
        let q = "SELECT '2024-01-01 12:00+00'::timestamptz AS ts";
        let call = format!("perf.cached_json_text('{}')::text", q.replace('\'', "''"));
        Spi::run("SET TimeZone = 'UTC'").unwrap();
        let utc = Spi::get_one::<String>(&format!("SELECT {call}")).unwrap();
        Spi::run("SET TimeZone = 'Asia/Tokyo'").unwrap();
        let tokyo = Spi::get_one::<String>(&format!("SELECT {call}")).unwrap();
        assert_eq!(
            entries(q),
            "json:0,json:0",
            "another TimeZone must be another entry"
        );
        assert_eq!(
            utc.as_deref(),
            Some(r#"[{"ts": "2024-01-01T12:00:00+00:00"}]"#)
        );
        assert_eq!(
            tokyo.as_deref(),
            Some(r#"[{"ts": "2024-01-01T21:00:00+09:00"}]"#)
        );
        Spi::run("SET TimeZone = 'UTC'").unwrap();
        let again = Spi::get_one::<String>(&format!("SELECT {call}")).unwrap();
        assert_eq!(entries(q), "json:0,json:1", "back to UTC: the first entry");
        assert_eq!(again, utc);
    }
}
