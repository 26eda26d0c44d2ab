-- The result cache as seen from SQL: hits and invalidation, typed rows, refusals, errors.
-- (Multi-session behaviour is covered by tests/integration/test_cache.py.)
SELECT perf.cache_flush() >= 0 AS flushed;
CREATE TABLE products (id int PRIMARY KEY, name text, price int);
INSERT INTO products SELECT g, 'p' || g, g * 100 FROM generate_series(1, 20) g;
SELECT perf.cache_track('products');
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'products'::regclass;

CREATE TEMP TABLE before AS SELECT hits, misses, stores FROM perf.cache_stats();
SELECT perf.cached_json('SELECT id, name FROM products WHERE id = $1', '[3]');
SELECT perf.cached_json('SELECT id, name FROM products WHERE id = $1', '[3]');
SELECT s.hits - b.hits AS hits, s.misses - b.misses AS misses, s.stores - b.stores AS stores
  FROM perf.cache_stats() s, before b;

-- a committed write invalidates; the next call sees it
UPDATE products SET name = 'renamed' WHERE id = 3;
SELECT perf.cached_json('SELECT id, name FROM products WHERE id = $1', '[3]');

-- the json form: its own entry (a miss, then a hit), the same text as the jsonb form's
CREATE TEMP TABLE before_text AS SELECT hits, misses, stores FROM perf.cache_stats();
SELECT perf.cached_json_text('SELECT id, name, price FROM products WHERE id <= $1 ORDER BY id', '[2]');
SELECT perf.cached_json_text('SELECT id, name, price FROM products WHERE id <= $1 ORDER BY id', '[2]');
SELECT s.hits - b.hits AS hits, s.misses - b.misses AS misses, s.stores - b.stores AS stores
  FROM perf.cache_stats() s, before_text b;
SELECT pg_typeof(perf.cached_json_text('SELECT 1 AS one')) AS text_form,
       pg_typeof(perf.cached_json('SELECT 1 AS one')) AS jsonb_form;
SELECT perf.cached_json_text('SELECT id, name, price FROM products WHERE id <= $1 ORDER BY id', '[2]')::text
     = perf.cached_json('SELECT id, name, price FROM products WHERE id <= $1 ORDER BY id', '[2]')::text
       AS same_text;
-- a committed write invalidates the json form too
UPDATE products SET price = 1 WHERE id = 2;
SELECT perf.cached_json_text('SELECT id, name, price FROM products WHERE id <= $1 ORDER BY id', '[2]');
UPDATE products SET price = 200 WHERE id = 2;

-- a result column named t is a column of each row, not the row
SELECT perf.cached_json('SELECT 7 AS t, 8 AS u');

-- typed rows
SELECT * FROM perf.cached(NULL::products, 'SELECT * FROM products WHERE id <= $1 ORDER BY id', '[2]');

-- own uncommitted writes are seen (the cache is bypassed), then rolled back
BEGIN;
DELETE FROM products WHERE id = 3;
SELECT perf.cached_json('SELECT id, name FROM products WHERE id = $1', '[3]');
ROLLBACK;
SELECT perf.cached_json('SELECT id, name FROM products WHERE id = $1', '[3]');

-- refusals: executed directly, counted, an error only in strict mode
CREATE TEMP TABLE refusals_before AS SELECT reason, count FROM perf.cache_refusals();
SELECT jsonb_array_length(perf.cached_json('SELECT random() AS r')) AS rows;
SELECT perf.cached_json('SELECT id FROM products WHERE id = $1 FOR UPDATE', '[1]');
CREATE TABLE untracked (x int);
SELECT perf.cached_json('SELECT count(*) FROM untracked');
SELECT r.reason, r.count - b.count AS new
  FROM perf.cache_refusals() r JOIN refusals_before b USING (reason)
 WHERE r.count > b.count ORDER BY 1;
SET perf.cache_strict = on;
SELECT perf.cached_json('SELECT now()');
RESET perf.cache_strict;

-- bad input
SELECT perf.cached_json('SELECT 1; SELECT 2');
SELECT perf.cached_json_text('SELECT 1; SELECT 2');
SELECT perf.cached_json('UPDATE products SET price = 0');
SELECT perf.cached_json('SELECT * FROM products WHERE id = $1');
SELECT perf.cached_json('SELECT * FROM products WHERE id = $1', '{"a": 1}');
SELECT perf.cached_json_text('SELECT * FROM products WHERE id = $1', '{"a": 1}');
SELECT perf.cached_json('SELECT * FROM products WHERE id = $1', '["x"]');
SELECT perf.cache_track('pg_class');
CREATE TEMP TABLE scratch (x int);
SELECT perf.cache_track('scratch');

-- entries and explicit invalidation. Unrelated DDL (CREATE TABLE untracked) keeps them
-- valid; entries made before this session created another temporary table were made under
-- other keys (temporary relation names are part of the key) and were invalidated by the
-- writes above.
SELECT query, params, format, valid, relations = ARRAY['products'::regclass::oid] AS on_products
  FROM perf.cache_entries() WHERE relations <> '{}' ORDER BY query, params, format, valid;
SELECT perf.cache_invalidate('products') > 0 AS invalidated;
SELECT count(*) AS entries_left FROM perf.cache_entries() WHERE relations <> '{}';
SELECT perf.cache_untrack('products');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'products'::regclass;
