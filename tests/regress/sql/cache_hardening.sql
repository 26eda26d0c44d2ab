-- Result cache hardening (issue #10): bad arguments, privileges on pg_perf's own state,
-- settings that change a query's meaning, and a transaction's own uncommitted DDL.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_cache_plain;
CREATE ROLE regress_cache_plain;
-- perf_admin, so that what is tested below is the table-owner rule (the role check itself is
-- tested in stats.sql and tests/integration/test_roles.py); it gives no write privilege.
GRANT perf_admin TO regress_cache_plain;
RESET client_min_messages;

-- The SQLSTATE a statement fails with ('ok' if it does not fail).
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

CREATE TABLE hard (id int PRIMARY KEY, v int);
INSERT INTO hard SELECT g, g * 10 FROM generate_series(1, 5) g;
SELECT perf.cache_track('hard');
GRANT SELECT ON hard TO regress_cache_plain;

-- NULL arguments and a negative TTL: clear errors with their own SQLSTATE, never XX000.
SELECT perf.cached_json(NULL);
SELECT perf.cached_json_text(NULL, '[]');
SELECT perf.cached_json('SELECT 1 AS one', NULL);
SELECT * FROM perf.cached(NULL::hard, NULL);
SELECT perf.cached_json('SELECT 1 AS one', '[]', '-1 second');
SELECT perf.cached_json_text('SELECT 1 AS one', '[]', '1 day -25 hours');
SELECT perf.cache_track(NULL);
SELECT perf.cache_untrack(NULL);
SELECT stmt, pg_temp.sqlstate_of(stmt) AS sqlstate FROM (VALUES
    ('SELECT perf.cached_json(NULL)'),
    ('SELECT perf.cached_json_text(''SELECT 1'', NULL)'),
    ('SELECT perf.cached_json(''SELECT 1'', ''[]'', ''-5 minutes'')'),
    ('SELECT perf.cache_track(NULL)'),
    ('SELECT perf.cache_untrack(NULL)'),
    ('SELECT perf.cached_json(''SELECT 1'', ''[]'', ''0'')'),
    ('SELECT perf.cached_json(''SELECT 1'', ''[]'', NULL)')) s(stmt);
SELECT perf.cache_invalidate(NULL) IS NULL AS invalidate_null_is_null;

-- pg_perf's own state: no table or view of schema perf is writable by PUBLIC, tracking is
-- derived from the trigger (only the table's owner can change it), and only a table's
-- owner can invalidate its entries.
SELECT c.relname, a.privilege_type
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'perf'::regnamespace AND a.grantee = 0 AND a.privilege_type <> 'SELECT'
 ORDER BY 1, 2;
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = 'perf'::regnamespace AND c.relkind IN ('r', 'p')
   AND (has_table_privilege('regress_cache_plain', c.oid, 'INSERT')
        OR has_table_privilege('regress_cache_plain', c.oid, 'UPDATE')
        OR has_table_privilege('regress_cache_plain', c.oid, 'DELETE')
        OR has_table_privilege('regress_cache_plain', c.oid, 'TRUNCATE'));
SELECT relid::regclass FROM perf.cache_tracked WHERE relid = 'hard'::regclass;
SET ROLE regress_cache_plain;
SELECT count(*) > 0 AS plain_reads_tracking FROM perf.cache_tracked;
DELETE FROM perf.cache_tracked WHERE relid = 'hard'::regclass;
INSERT INTO perf.cache_tracked VALUES ('hard'::regclass);
SELECT perf.cache_invalidate('hard');
SELECT perf.cache_untrack('hard');
SELECT perf.cached_json('SELECT v FROM hard WHERE id = $1', '[1]');
RESET ROLE;
SELECT relid::regclass FROM perf.cache_tracked WHERE relid = 'hard'::regclass;
SELECT perf.cache_invalidate('hard') >= 0 AS owner_invalidates;

-- Settings that change what a query means are part of the key.
CREATE TEMP TABLE flips (setting text, result jsonb);
SET transform_null_equals = off;
INSERT INTO flips SELECT 'transform_null_equals off', perf.cached_json('SELECT NULL = NULL AS eq');
SET transform_null_equals = on;
INSERT INTO flips SELECT 'transform_null_equals on', perf.cached_json('SELECT NULL = NULL AS eq');
RESET transform_null_equals;
-- (dollar quoting: the query text itself is the same under both settings)
SET escape_string_warning = off;
INSERT INTO flips SELECT 'standard_conforming_strings on', perf.cached_json($q$SELECT length('a\nb') AS n$q$);
SET standard_conforming_strings = off;
INSERT INTO flips SELECT 'standard_conforming_strings off', perf.cached_json($q$SELECT length('a\nb') AS n$q$);
RESET standard_conforming_strings;
RESET escape_string_warning;
INSERT INTO flips SELECT 'array_nulls on', perf.cached_json('SELECT ''{NULL}''::text[] AS a');
SET array_nulls = off;
INSERT INTO flips SELECT 'array_nulls off', perf.cached_json('SELECT ''{NULL}''::text[] AS a');
RESET array_nulls;
INSERT INTO flips SELECT 'quote_all_identifiers off', perf.cached_json('SELECT quote_ident(''abc'') AS q');
SET quote_all_identifiers = on;
INSERT INTO flips SELECT 'quote_all_identifiers on', perf.cached_json('SELECT quote_ident(''abc'') AS q');
RESET quote_all_identifiers;
SELECT * FROM flips;

-- A transaction's own uncommitted DDL is never answered from entries made before it.
CREATE TEMP TABLE q AS SELECT 'SELECT id, v FROM hard WHERE id <= $1 ORDER BY id' AS text;
SELECT perf.cached_json((SELECT text FROM q), '[2]');
SELECT perf.cached_json((SELECT text FROM q), '[2]');
BEGIN;
ALTER TABLE hard ALTER COLUMN v TYPE text USING 'v' || v;
SELECT perf.cached_json((SELECT text FROM q), '[2]');
ROLLBACK;
SELECT perf.cached_json((SELECT text FROM q), '[2]');
BEGIN;
ALTER TABLE hard ADD COLUMN extra int DEFAULT 7;
SELECT perf.cached_json('SELECT * FROM hard WHERE id = $1', '[1]');
ROLLBACK;
SELECT perf.cached_json('SELECT * FROM hard WHERE id = $1', '[1]');
SELECT perf.cached_json('SELECT * FROM hard WHERE id = $1', '[1]');
-- the invalidation trigger disabled, then a write that fires no trigger
BEGIN;
ALTER TABLE hard DISABLE TRIGGER pg_perf_cache_invalidate;
UPDATE hard SET v = -1 WHERE id = 1;
SELECT perf.cached_json((SELECT text FROM q), '[2]');
ROLLBACK;
-- a role's cached rows after REVOKE in the same transaction: the role gets the error
SET ROLE regress_cache_plain;
SELECT perf.cached_json('SELECT v FROM hard WHERE id = $1', '[3]');
SELECT perf.cached_json('SELECT v FROM hard WHERE id = $1', '[3]');
RESET ROLE;
BEGIN;
REVOKE SELECT ON hard FROM regress_cache_plain;
SET ROLE regress_cache_plain;
SELECT perf.cached_json('SELECT v FROM hard WHERE id = $1', '[3]');
ROLLBACK;
-- a same-named table created in a schema earlier on the search path, in this transaction
CREATE SCHEMA hard_first;
SET search_path = hard_first, public;
SELECT perf.cached_json('SELECT count(*) AS n FROM hard');
SELECT perf.cached_json('SELECT count(*) AS n FROM hard');
BEGIN;
CREATE TABLE hard_first.hard (id int);
SELECT perf.cached_json('SELECT count(*) AS n FROM hard');
ROLLBACK;
RESET search_path;
DROP SCHEMA hard_first;

DROP TABLE hard;
DROP ROLE regress_cache_plain;
