-- What-if planner and index advisor hardening (issue #10): statements without a plan,
-- hypothetical indexes refused exactly where CREATE INDEX refuses them (same SQLSTATE and
-- message), privileges of plain roles, and user code that must never run.
-- hard_try() shows the SQLSTATE and message of an error, or 'ok'.
CREATE FUNCTION hard_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE FUNCTION hard_index(idx text) RETURNS text LANGUAGE sql AS $$
  SELECT hard_try(format('SELECT * FROM perf.whatif(%L, ARRAY[%L])',
                         'SELECT * FROM hard_t WHERE v = 5', idx))
$$;
CREATE TABLE hard_t (v int, w text, arr int[]);
INSERT INTO hard_t SELECT g, 'w' || g, ARRAY[g] FROM generate_series(1, 20000) g;
ANALYZE hard_t;

-- statements without a plan are refused, not dereferenced (these crashed the backend)
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT 1 INTO hard_x')$$);
SELECT hard_try($$SELECT * FROM perf.suggest_indexes(ARRAY['SELECT 1 INTO hard_x'])$$);
CREATE TABLE hard_notify (a int);
CREATE RULE hard_notify_r AS ON INSERT TO hard_notify DO INSTEAD NOTIFY hard_channel;
SELECT hard_try($$SELECT * FROM perf.whatif('INSERT INTO hard_notify VALUES (1)')$$);
CREATE TABLE hard_nothing (a int);
CREATE RULE hard_nothing_r AS ON INSERT TO hard_nothing DO INSTEAD NOTHING;
SELECT hard_try($$SELECT * FROM perf.whatif('INSERT INTO hard_nothing VALUES (1)')$$);
SELECT hard_try($$SELECT * FROM perf.suggest_indexes(ARRAY['INSERT INTO hard_nothing VALUES (1)'])$$);
SELECT hard_try($$SELECT * FROM perf.whatif('CREATE TABLE hard_y (a int)')$$);
-- zero columns plan; NULL array elements are refused (not XX000)
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT FROM hard_t')$$);
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT 1', ARRAY[NULL])$$);
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT 1', hide => ARRAY[NULL])$$);
SELECT hard_try($$SELECT * FROM perf.suggest_indexes(ARRAY[NULL])$$);

-- 33 key columns (this crashed too), and 32 + 1 INCLUDE column
SELECT hard_index('CREATE INDEX ON hard_t (' || string_agg('v', ', ') || ')')
  FROM generate_series(1, 33);
SELECT hard_index('CREATE INDEX ON hard_t (' || string_agg('v', ', ') || ') INCLUDE (w)')
  FROM generate_series(1, 32);
SELECT hard_index('CREATE INDEX ON hard_t (' || string_agg('v', ', ') || ')')
  FROM generate_series(1, 32);

-- relations CREATE INDEX refuses
CREATE VIEW hard_view AS SELECT * FROM hard_t;
CREATE SEQUENCE hard_seq;
CREATE FOREIGN DATA WRAPPER hard_fdw;
CREATE SERVER hard_server FOREIGN DATA WRAPPER hard_fdw;
CREATE FOREIGN TABLE hard_foreign (v int) SERVER hard_server;
CREATE TYPE hard_composite AS (v int);
CREATE INDEX hard_real_idx ON hard_t (w);
CREATE MATERIALIZED VIEW hard_matview AS SELECT v FROM hard_t;
SELECT hard_index('CREATE INDEX ON hard_view (v)');
SELECT hard_index('CREATE INDEX ON hard_seq (last_value)');
SELECT hard_index('CREATE INDEX ON hard_foreign (v)');
SELECT hard_index('CREATE INDEX ON hard_composite (v)');
SELECT hard_index('CREATE INDEX ON hard_real_idx (w)');
SELECT hard_index('CREATE INDEX ON pg_catalog.pg_class (relname)');
SELECT hard_index('CREATE INDEX ON pg_catalog.pg_authid (rolname)');
SELECT hard_index('CREATE INDEX ON hard_nosuch (v)');
SELECT hard_index('CREATE INDEX ON hard_matview (v)');
CREATE TABLE hard_parted (v int, w int) PARTITION BY RANGE (v);
CREATE TABLE hard_parted_1 PARTITION OF hard_parted FOR VALUES FROM (0) TO (100);
CREATE TABLE hard_parted_expr (v int) PARTITION BY RANGE ((v + 1));
SELECT hard_index('CREATE UNIQUE INDEX ON hard_parted (w)');
SELECT hard_index('CREATE UNIQUE INDEX ON hard_parted_expr (v)');
SELECT hard_index('CREATE UNIQUE INDEX ON hard_parted (w, v)');
SELECT hard_index('CREATE INDEX CONCURRENTLY ON hard_parted (w)');
SELECT hard_index('CREATE INDEX CONCURRENTLY ON hard_parted_1 (w)');

-- access methods and their capabilities
SELECT hard_index('CREATE INDEX ON hard_t USING heap (v)');
SELECT hard_index('CREATE INDEX ON hard_t USING nosuch (v)');
SELECT hard_index('CREATE UNIQUE INDEX ON hard_t USING hash (v)');
SELECT hard_index('CREATE INDEX ON hard_t USING hash (v) INCLUDE (w)');
SELECT hard_index('CREATE INDEX ON hard_t USING hash (v, w)');
SELECT hard_index('CREATE INDEX ON hard_t USING hash (v DESC)');
SELECT hard_index('CREATE INDEX ON hard_t USING hash (v NULLS FIRST)');
SELECT hard_index('CREATE INDEX ON hard_t USING gin (v)');
SELECT hard_index('CREATE INDEX ON hard_t USING gin (arr)');

-- storage parameters, tablespace, collations, operator classes
SELECT hard_index('CREATE INDEX ON hard_t (v) WITH (nonsense = 1)');
SELECT hard_index('CREATE INDEX ON hard_t (v) WITH (fillfactor = 5)');
SELECT hard_index('CREATE INDEX ON hard_t USING brin (v) WITH (pages_per_range = 0)');
SELECT hard_index('CREATE INDEX ON hard_t (v) WITH (fillfactor = 70)');
SELECT hard_index('CREATE INDEX ON hard_t (v) TABLESPACE hard_nosuch');
SELECT hard_index('CREATE INDEX ON hard_t (v COLLATE "C")');
SELECT hard_index('CREATE INDEX ON hard_t (w COLLATE hard_nosuch)');
SELECT hard_index('CREATE INDEX ON hard_t (w COLLATE "C")');
SELECT hard_index('CREATE INDEX ON hard_t (v text_ops)');
SELECT hard_index('CREATE INDEX ON hard_t (v int4_ops (foo = 1))');

-- columns: unknown, system, INCLUDE restrictions
SELECT hard_index('CREATE INDEX ON hard_t (nosuch)');
SELECT hard_index('CREATE INDEX ON hard_t (ctid)');
SELECT hard_index('CREATE INDEX ON hard_t ((ctid::text))');
SELECT hard_index('CREATE INDEX ON hard_t (v) WHERE xmin::text = ''1''');
SELECT hard_index('CREATE INDEX ON hard_t (v) INCLUDE ((v + 1))');
SELECT hard_index('CREATE INDEX ON hard_t (v) INCLUDE (w COLLATE "C")');
SELECT hard_index('CREATE INDEX ON hard_t (v) INCLUDE (w text_pattern_ops)');
SELECT hard_index('CREATE INDEX ON hard_t (v) INCLUDE (w DESC)');
SELECT hard_index('CREATE INDEX ON hard_t (v) INCLUDE (w NULLS LAST)');

-- expressions and predicates: IMMUTABLE only, boolean predicates, no subqueries
SELECT hard_index('CREATE INDEX ON hard_t ((v + random()::int))');
SELECT hard_index('CREATE INDEX ON hard_t ((nextval(''hard_seq'')))');
SELECT hard_index('CREATE INDEX ON hard_t (v) WHERE v > random()');
SELECT hard_index('CREATE INDEX ON hard_t (v) WHERE v');
SELECT hard_index('CREATE INDEX ON hard_t (v) WHERE v > (SELECT 1)');
SELECT hard_index('CREATE INDEX ON hard_t ((v)) WHERE v > 10');
-- an expression whose sample fails (division by zero) falls back to default estimates
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT * FROM hard_t WHERE 1 / (v - v) = 1',
                                            ARRAY['CREATE INDEX ON hard_t ((1 / (v - v)))'])$$);
SELECT last_value, is_called FROM hard_seq;
SELECT hard_try($$SELECT * FROM perf.whatif_index_size('CREATE INDEX ON hard_view (v)')$$);

-- a plain role: what-if on a table it may read (plain columns read pg_statistic through
-- the syscache), refused on one it may not read
CREATE ROLE hard_plain;
CREATE TABLE hard_secret (v int);
INSERT INTO hard_secret SELECT generate_series(1, 1000);
ANALYZE hard_secret;
GRANT SELECT ON hard_t TO hard_plain;
GRANT USAGE ON SCHEMA perf TO hard_plain;
SET ROLE hard_plain;
SELECT cost_after < cost_before AS faster, indexes_used
  FROM perf.whatif('SELECT * FROM hard_t WHERE v = 5', ARRAY['CREATE INDEX ON hard_t (v)']);
SELECT indexes_used
  FROM perf.whatif('SELECT * FROM hard_t WHERE lower(w) = ''w5''',
                   ARRAY['CREATE INDEX ON hard_t (lower(w))']);
SELECT pages > 0 AS sized FROM perf.whatif_index_size('CREATE INDEX ON hard_t (v, w)');
SELECT hard_try($$SELECT * FROM perf.whatif('SELECT 1', ARRAY['CREATE INDEX ON hard_secret (v)'])$$);
SELECT hard_try($$SELECT * FROM perf.whatif_index_size('CREATE INDEX ON hard_secret (v)')$$);
RESET ROLE;

-- A plain role's functions are never executed by a superuser's advice: hard_f is marked
-- IMMUTABLE but counts its calls in a sequence; hard_g is VOLATILE, writes a log table and
-- would grant its owner CREATEDB.
CREATE TABLE hard_log (n int);
CREATE SEQUENCE hard_calls;
GRANT INSERT ON hard_log TO hard_plain;
GRANT ALL ON hard_calls TO hard_plain;
GRANT CREATE ON SCHEMA public TO hard_plain;
SET ROLE hard_plain;
CREATE FUNCTION hard_f(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('hard_calls');
  RETURN $1;
END $$;
CREATE FUNCTION hard_g(int) RETURNS int VOLATILE LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO hard_log VALUES ($1);
  EXECUTE 'ALTER ROLE hard_plain CREATEDB';
  RETURN $1;
END $$;
-- the role's own workload (captured), run as itself
SELECT count(*) FROM hard_t WHERE hard_f(v) = 5;
SELECT count(*) FROM hard_t WHERE hard_f(v) = 5;
-- planning folds hard_f0() (no arguments, so no $n either): the superuser's advice must
-- not plan this statement
CREATE FUNCTION hard_f0() RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('hard_calls');
  RETURN 5;
END $$;
SELECT count(*) FROM hard_t WHERE v = hard_f0();
SELECT count(*) FROM hard_t WHERE v = hard_f0();
-- estimating && on a range type calls its subtype_diff (user code): a statement over a
-- range type of the role's (through a view: no constant in the text) is not planned either
CREATE FUNCTION hard_diff(a int, b int) RETURNS float8 IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('hard_calls');
  RETURN a - b;
END $$;
CREATE TYPE hard_range AS RANGE (subtype = int4, subtype_diff = hard_diff);
CREATE TABLE hard_r AS SELECT hard_range(g, g + 10) AS r FROM generate_series(1, 2000) g;
ANALYZE hard_r;
CREATE VIEW hard_rv AS SELECT * FROM hard_r WHERE r && '[100,200)'::hard_range;
SELECT count(*) FROM hard_rv;
SELECT count(*) FROM hard_rv;
RESET ROLE;
SELECT last_value AS calls_before FROM hard_calls \gset
SELECT hard_index('CREATE INDEX ON hard_t (hard_g(v))');
SELECT hard_index('CREATE INDEX ON hard_t (v) WHERE hard_g(v) > 0');
SELECT cost_after < cost_before AS faster, indexes_used
  FROM perf.whatif('SELECT * FROM hard_t WHERE hard_f(v) = 5',
                   ARRAY['CREATE INDEX ON hard_t (hard_f(v))']);
SELECT count(*) >= 0 AS advised
  FROM perf.suggest_indexes(ARRAY['SELECT * FROM hard_t WHERE hard_f(v) = 5',
                                  'SELECT * FROM hard_t WHERE hard_g(v) = 5']);
SELECT count(*) >= 0 AS advised FROM perf.suggest_indexes();
SELECT last_value = :calls_before AS hard_f_not_called FROM hard_calls;
SELECT count(*) AS hard_g_calls FROM hard_log;
SELECT rolcreatedb FROM pg_roles WHERE rolname = 'hard_plain';

-- queries_helped: a plain role sees only its own statement texts (superuser's hidden)
CREATE TABLE hard_q AS SELECT g AS v, 'w' || g AS w FROM generate_series(1, 20000) g;
ANALYZE hard_q;
GRANT SELECT ON hard_q TO hard_plain;
\set ECHO none
\o /dev/null
SELECT format('SELECT count(*) FROM hard_q WHERE v = %s AND w IS NOT NULL', g)
  FROM generate_series(1, 100) g \gexec
\o
\set ECHO all
CREATE INDEX hard_secret_idx ON hard_secret (v);
SET ROLE hard_plain;
-- nothing about a table the role may not read (the superuser's INSERT wrote it)
SELECT count(*) AS secret_rows FROM perf.suggest_indexes() WHERE table_name = 'public.hard_secret';
SELECT index_ddl,
       queries_helped::text LIKE '%IS NOT NULL%' AS leaked,
       queries_helped::text LIKE '%<insufficient privilege>%' AS hidden
  FROM perf.suggest_indexes() WHERE table_name = 'public.hard_q';
RESET ROLE;
SELECT index_ddl, queries_helped::text LIKE '%IS NOT NULL%' AS superuser_sees
  FROM perf.suggest_indexes() WHERE table_name = 'public.hard_q';
SELECT action, index_ddl FROM perf.suggest_indexes() WHERE table_name = 'public.hard_secret';

SET client_min_messages = warning;
DROP TABLE hard_r CASCADE;
DROP TYPE hard_range;
DROP FUNCTION hard_diff(int, int);
DROP TABLE hard_t, hard_q, hard_parted, hard_parted_expr, hard_notify, hard_nothing, hard_secret, hard_log CASCADE;
DROP SEQUENCE hard_seq, hard_calls;
DROP TYPE hard_composite;
DROP FOREIGN DATA WRAPPER hard_fdw CASCADE;
DROP FUNCTION hard_f(int), hard_f0(), hard_g(int), hard_try(text), hard_index(text);
REVOKE ALL ON SCHEMA perf FROM hard_plain;
REVOKE ALL ON SCHEMA public FROM hard_plain;
DROP ROLE hard_plain;
RESET client_min_messages;
