-- Partition sets (issue #14): create + premake, time passing (perf.partition_now), retention
-- by drop / detach / schema, draining the default partition, integer and hash sets,
-- converting a populated table, and bad input refused with a SQLSTATE, nothing half-done.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET perf.partition_notice_interval = 0;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_part_other;
CREATE ROLE regress_part_other;
-- perf_admin, so that what is tested below is the table-owner rule, not the role check
GRANT perf_admin TO regress_part_other;
RESET client_min_messages;
CREATE SCHEMA part_archive;

CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

-- 1. A new daily set: default partition, today, 4 days ahead.
SET perf.partition_now = '2024-03-10 12:00+00';
CREATE TABLE ev (id bigserial, at timestamptz NOT NULL, v int CHECK (v >= 0)) PARTITION BY RANGE (at);
CREATE INDEX ev_at_idx ON ev (at);
GRANT SELECT ON ev TO regress_part_other;
SELECT action, object, detail FROM perf.partition_table('ev', 'at', '1 day', retention => '3 days') ORDER BY 2;
SELECT partition, bounds, is_default FROM perf.partitions WHERE parent = 'ev'::regclass ORDER BY 2;
-- New partitions carry the parent's indexes, constraints and grants.
SELECT count(*) AS indexes FROM pg_index WHERE indrelid = 'ev_p20240312'::regclass;
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'ev_p20240312'::regclass ORDER BY 1;
SELECT has_table_privilege('regress_part_other', 'ev_p20240312', 'SELECT') AS granted;
-- Running it again changes nothing.
SELECT count(*) AS actions FROM perf.partition_maintenance('ev');

-- 2. Rows that landed in the default partition are moved out before their partition is
--    attached; time passes: new partitions premade, old ones dropped.
INSERT INTO ev (at, v) SELECT '2024-03-11'::timestamptz + g * interval '3 hours', g FROM generate_series(0, 95) g;
-- Two rows older than the retention: no partition is made for them, they stay in the default.
INSERT INTO ev (at, v) VALUES ('2024-03-01 10:00+00', 1000), ('2024-03-02 10:00+00', 1000);
SELECT rows_in_default FROM perf.partitions WHERE parent = 'ev'::regclass AND is_default;
SELECT count(*), sum(v) FROM ev;
SET perf.partition_now = '2024-03-13 06:00+00';
SELECT action, object, detail FROM perf.partition_maintenance('ev') ORDER BY 1, 2;
SELECT count(*), sum(v) FROM ev;
SELECT rows_in_default FROM perf.partitions WHERE parent = 'ev'::regclass AND is_default;
SET perf.partition_now = '2024-03-15 06:00+00';
SELECT action, object FROM perf.partition_maintenance('ev') ORDER BY 1, 2;
SELECT partition FROM perf.partitions WHERE parent = 'ev'::regclass ORDER BY partition::text;

-- 2b. Draining rows of non-adjacent intervals (a gap between them) with a NULL key in the
--     default: a partition for each interval that has rows, the NULL row stays, and the
--     temporary CHECK that spares each ATTACH a scan of the default is gone afterwards.
CREATE TABLE gap (id int, at timestamptz) PARTITION BY RANGE (at);
SET perf.partition_now = '2024-03-10 12:00+00';
SELECT count(*) FROM perf.partition_table('gap', 'at', '1 week', premake => 1);
INSERT INTO gap VALUES (1, '2024-02-01 00:00+00'), (2, '2024-02-04 23:59:59.999999+00'),
                       (3, '2024-02-19 10:00+00'), (4, NULL), (5, '2024-03-11 00:00+00'),
                       (6, 'infinity'), (7, '-infinity');
SELECT action, object, detail FROM perf.partition_maintenance('gap') ORDER BY 1, 2;
SELECT id, tableoid::regclass FROM gap ORDER BY id;
SELECT conname FROM pg_constraint WHERE conrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'gap'::regclass);
-- The parent got its statistics; its partitions were not all analyzed again (an empty one
-- still has never been: reltuples -1).
SELECT count(*) > 0 AS parent_stats FROM pg_stats WHERE tablename = 'gap' AND inherited;
SELECT reltuples FROM pg_class WHERE oid = 'gap_p20240304'::regclass;
SELECT count(*) AS actions FROM perf.partition_maintenance('gap');
-- The same with an index on the column (the default's intervals are found through it), and
-- a retention: rows older than it are reported and stay, as NULL and infinity do.
CREATE TABLE gapi (id int, at timestamptz) PARTITION BY RANGE (at);
CREATE INDEX ON gapi (at);
SELECT count(*) FROM perf.partition_table('gapi', 'at', '1 week', premake => 1, retention => '8 weeks');
INSERT INTO gapi SELECT id, at FROM gap;
INSERT INTO gapi VALUES (8, '2023-11-01 00:00+00');
SELECT action, object, detail FROM perf.partition_maintenance('gapi') ORDER BY 1, 2;
SELECT id, tableoid::regclass FROM gapi ORDER BY id;
SELECT action, object, detail FROM perf.partition_maintenance('gapi') ORDER BY 1, 2;
-- The keys of rows grouped by date_bin / month, as maintenance and conversion compute them,
-- equal the exact key of every row (numeric arithmetic), at boundaries and 1 us before them,
-- for fixed steps with a start off midnight, months, a DST time zone and a date column.
CREATE TABLE keys_ts (at timestamptz);
INSERT INTO keys_ts SELECT t + d FROM generate_series('2023-12-20 00:00+00'::timestamptz, '2024-04-10', '1 day') t,
    (VALUES (interval '0'), (interval '-1 microsecond'), (interval '1 hour 30 minutes'), (interval '2 hours')) v(d);
CREATE TABLE keys_date (at date);
INSERT INTO keys_date SELECT generate_series('2023-12-20'::date, '2024-04-10', '1 day');
SELECT k.step, k.tz, k.tbl,
       (SELECT array_agg(x.b ORDER BY x.b) || array_agg(x.n ORDER BY x.b)
          FROM perf._partition_bucket_counts(k.c, k.tbl) x)
       = (SELECT array_agg(b ORDER BY b) || array_agg(n ORDER BY b)
            FROM (SELECT b, count(*) AS n
                    FROM (SELECT perf._partition_bucket(k.c, at::text) AS b
                            FROM keys_ts WHERE k.tbl = 'keys_ts'::regclass
                          UNION ALL
                          SELECT perf._partition_bucket(k.c, at::text) FROM keys_date
                           WHERE k.tbl = 'keys_date'::regclass) r
                   GROUP BY b) g) AS same
  FROM (SELECT v.step, v.tz, v.tbl,
               jsonb_populate_record(NULL::perf.partition_config, jsonb_build_object(
                   'parent', v.tbl, 'control', 'at', 'control_type',
                   CASE WHEN v.tbl = 'keys_date'::regclass THEN 'date' ELSE 'timestamptz' END,
                   'kind', 'time', 'step_months', v.months, 'step_seconds', v.secs, 'tz', v.tz,
                   'anchor', extract(epoch FROM v.anchor), 'premake', 1)) AS c
          FROM (VALUES ('6 hours', 0, 21600, 'UTC', '2024-01-01 03:00'::timestamp, 'keys_ts'::regclass),
                       ('1 week', 0, 604800, 'America/New_York', '2024-01-01', 'keys_ts'),
                       ('1 day', 0, 86400, 'Europe/Berlin', '2024-01-01', 'keys_ts'),
                       ('1 month', 1, NULL, 'Europe/Berlin', '2024-01-01', 'keys_ts'),
                       ('3 months', 3, NULL, 'UTC', '2023-11-01', 'keys_ts'),
                       ('2 days', 0, 172800, 'UTC', '2024-01-01', 'keys_date'),
                       ('1 month', 1, NULL, 'UTC', '2024-01-01', 'keys_date')) v(step, months, secs, tz, anchor, tbl)) k
 ORDER BY 1, 2, 3;
DROP TABLE keys_ts, keys_date;

-- 2c. Settings change later: premake grows (maintenance makes the partitions), retention is
--     cleared and set again; bad values are refused (22023) and leave the set unchanged.
CREATE TABLE alt (at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE alt2 (at timestamptz NOT NULL) PARTITION BY RANGE (at);
SET perf.partition_now = '2024-03-10 12:00+00';
SELECT count(*) FROM perf.partition_table('alt', 'at', '1 day', premake => 1, retention => '2 days');
SELECT perf.alter_partition_set('alt', premake => 3, clear_retention => true);
SELECT premake, retention, retention_mode FROM perf.partition_sets WHERE parent = 'alt'::regclass;
SELECT action, object FROM perf.partition_maintenance('alt') ORDER BY 2;
SELECT perf.alter_partition_set('alt', retention => '1 day', retention_mode => 'detach');
SELECT pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('alt', retention => '-1 day')$$) AS negative,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('alt', retention => 'soon')$$) AS bad_retention,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('alt', premake => -1)$$) AS bad_premake,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('alt', retention_mode => 'shred')$$) AS bad_mode,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('alt', retention => '1 day', clear_retention => true)$$) AS both,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('pg_class')$$) AS not_a_set,
       pg_temp.sqlstate_of($$SELECT perf.alter_partition_set(NULL)$$) AS null_parent,
       pg_temp.sqlstate_of($$SELECT perf.partition_table('alt2', 'at', '1 day', retention => '-3 days')$$) AS negative_at_creation;
SELECT premake, retention, retention_mode FROM perf.partition_sets WHERE parent = 'alt'::regclass;
SELECT count(*) AS alt2_partitions FROM pg_inherits WHERE inhparent = 'alt2'::regclass;
DROP TABLE alt2;

-- 3. Retention by detaching, and by moving to a schema.
CREATE TABLE ev2 (at date NOT NULL) PARTITION BY RANGE (at);
SET perf.partition_now = '2024-01-15';
SELECT count(*) FROM perf.partition_table('ev2', 'at', '1 month', premake => 1, retention => '1 month',
                                          retention_mode => 'detach', default_partition => false);
SET perf.partition_now = '2024-04-15';
SELECT action, object, detail FROM perf.partition_maintenance('ev2') ORDER BY 1, 2;
SELECT relispartition FROM pg_class WHERE oid = 'ev2_p20240101'::regclass;
CREATE TABLE ev3 (id int, at timestamp NOT NULL) PARTITION BY RANGE (at);
SET perf.partition_now = '2024-01-01 10:00';
SELECT count(*) FROM perf.partition_table('ev3', 'at', '6 hours', premake => 2, retention => '6 hours',
                                          retention_mode => 'schema:part_archive');
SET perf.partition_now = '2024-01-02 01:00';
SELECT action, object, detail FROM perf.partition_maintenance('ev3') ORDER BY 1, 2;

-- 4. Integer ranges (ahead of the largest value), start in the past, hash sets.
CREATE TABLE items (id bigint NOT NULL, name text) PARTITION BY RANGE (id);
SELECT action, object, detail FROM perf.partition_table('items', 'id', '1000', premake => 2, default_partition => false) ORDER BY 2;
INSERT INTO items SELECT g, 'x' FROM generate_series(0, 2500) g;
SELECT action, object FROM perf.partition_maintenance('items') ORDER BY 1, 2;
CREATE TABLE past (at timestamptz NOT NULL) PARTITION BY RANGE (at);
SET perf.partition_now = '2024-03-10 12:00+00';
SELECT count(*) AS partitions FROM perf.partition_table('past', 'at', '1 month', premake => 1, start => '2023-11-20')
 WHERE action = 'create';
SELECT partition FROM perf.partitions WHERE parent = 'past'::regclass ORDER BY partition::text;
CREATE TABLE h (id int, v text) PARTITION BY HASH (id);
SELECT action, object, detail FROM perf.partition_table('h', 'id', 4) ORDER BY 2;
SELECT pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('h', premake => 2)$$) AS hash_premake;
SELECT parent, "column", kind, "interval", partitions FROM perf.partition_sets ORDER BY parent::text;

-- 5. Long names are shortened, the suffix kept, and quoted.
CREATE TABLE "A very long ""quoted"" table name that goes on and on and on" (at date NOT NULL) PARTITION BY RANGE (at);
SELECT object FROM perf.partition_table('"A very long ""quoted"" table name that goes on and on and on"', 'at', '1 day', premake => 0)
 ORDER BY 1;

-- 6. Converting a populated plain table: every row, index, constraint, default, grant kept.
CREATE TABLE conv (id serial, at timestamptz NOT NULL DEFAULT '2024-03-10', v int CHECK (v > 0), PRIMARY KEY (id, at));
CREATE INDEX conv_v_idx ON conv (v);
GRANT SELECT ON conv TO regress_part_other;
INSERT INTO conv (at, v) SELECT '2024-02-20'::timestamptz + g * interval '10 minutes', g FROM generate_series(1, 3000) g;
SELECT count(*), sum(hashtext(c::text)) FROM conv c;
SET perf.partition_batch_rows = 500;
SELECT action, object, detail FROM perf.partition_table('conv', 'at', '1 week', premake => 1) ORDER BY 1, 2;
SELECT count(*), sum(hashtext(c::text)) FROM conv c;
SELECT relkind FROM pg_class WHERE oid = 'conv'::regclass;
SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'conv'::regclass ORDER BY indexrelid::regclass::text;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'conv'::regclass ORDER BY 1;
SELECT has_table_privilege('regress_part_other', 'conv', 'SELECT') AS granted;
INSERT INTO conv (v) VALUES (1) RETURNING id, at;

-- 7. Bad input: clear errors with a SQLSTATE, nothing half-done.
CREATE FUNCTION pg_temp.err(stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE stmt;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE TABLE badtype (k text NOT NULL) PARTITION BY RANGE (k);
CREATE TABLE fresh (at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE already (at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE already_p1 PARTITION OF already FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE nulls (at timestamptz, v int);
INSERT INTO nulls VALUES ('2024-03-01', 1), (NULL, 2);
CREATE TABLE infs (at timestamptz, v int);
INSERT INTO infs VALUES ('2024-03-01', 1), ('infinity', 2);
CREATE TABLE uniq (id int PRIMARY KEY, at timestamptz NOT NULL);
CREATE TABLE trig (at timestamptz NOT NULL);
CREATE FUNCTION pg_temp.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER trig_noop BEFORE INSERT ON trig FOR EACH ROW EXECUTE FUNCTION pg_temp.noop();
CREATE TABLE viewed (at timestamptz NOT NULL);
CREATE VIEW viewed_v AS SELECT * FROM viewed;
SELECT pg_temp.err(s) FROM (VALUES
    ($$SELECT perf.partition_table('badtype', 'k', '1 day')$$),
    ($$SELECT perf.partition_table('ev', 'at', '1 day')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 fortnight')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 month 2 days')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '-1 day')$$),
    ($$SELECT perf.partition_table('fresh', 'nope', '1 day')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 day', premake => -1)$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 day', retention_mode => 'shred')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 day', retention_mode => 'schema:no_such_schema')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 day', retention => 'soon')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 day', start => 'yesterdayish')$$),
    ($$SELECT perf.partition_table('fresh', 'at', '1 second', start => '1900-01-01')$$),
    ($$SELECT perf.partition_table('fresh', 'at', NULL)$$),
    ($$SELECT perf.partition_table('fresh', 'at', 3)$$),
    ($$SELECT perf.partition_table('items', 'id', 'abc')$$),
    ($$SELECT perf.partition_table('already', 'at', '1 day')$$),
    ($$SELECT perf.partition_table('nulls', 'at', '1 day', default_partition => false)$$),
    ($$SELECT perf.partition_table('infs', 'at', '1 day', default_partition => false)$$),
    ($$SELECT perf.partition_table('uniq', 'at', '1 day')$$),
    ($$SELECT perf.partition_table('trig', 'at', '1 day')$$),
    ($$SELECT perf.partition_table('viewed', 'at', '1 day')$$),
    ($$SELECT perf.partition_table('viewed_v', 'at', '1 day')$$),
    ($$SELECT perf.partition_maintenance('fresh')$$)) v(s);
SELECT relkind, (SELECT count(*) FROM nulls) AS rows FROM pg_class WHERE oid = 'nulls'::regclass;
SELECT relkind, (SELECT count(*) FROM infs) AS rows FROM pg_class WHERE oid = 'infs'::regclass;
SELECT count(*) AS sets FROM perf.partition_config
 WHERE parent::text IN ('fresh', 'nulls', 'uniq', 'badtype', 'already', 'trig', 'viewed');
SELECT count(*) AS leftovers FROM pg_class
 WHERE relname ~ '^(fresh|nulls|uniq|badtype|already|trig|viewed)_(p[0-9]{4,}|default|perf_new)';
-- Not the owner: refused; the configuration is not writable by others either.
SET ROLE regress_part_other;
SELECT pg_temp.sqlstate_of($$SELECT perf.partition_table('fresh', 'at', '1 day')$$) AS partition_table;
SELECT pg_temp.sqlstate_of($$SELECT perf.partition_maintenance('ev')$$) AS maintenance;
SELECT pg_temp.sqlstate_of($$SELECT perf.alter_partition_set('ev', premake => 9)$$) AS alter_set;
SELECT pg_temp.sqlstate_of($$SELECT perf._partition_config_put('fresh'::regclass, '{}', false)$$) AS config_put;
SELECT pg_temp.sqlstate_of($$DELETE FROM perf.partition_config$$) AS config_delete;
SELECT count(*) AS my_sets FROM perf.partition_maintenance();
RESET ROLE;
SELECT pg_temp.sqlstate_of($$SET perf.partition_lock_timeout = 0$$) AS lock_timeout_0;
SELECT * FROM perf.partition_progress;

-- 8. Forgetting a set leaves its partitions alone.
SELECT perf.partition_forget('h');
SELECT count(*) FROM perf.partition_sets WHERE parent = 'h'::regclass;
SELECT count(*) FROM pg_inherits WHERE inhparent = 'h'::regclass;

-- 9. A member of the owning role makes a set: its partitions belong to the table's owner,
--    as maintenance's do (which runs as the owner and must be able to drop them later).
CREATE ROLE regress_part_owner;
GRANT regress_part_owner TO regress_part_other;
GRANT CREATE ON SCHEMA public TO regress_part_owner;
CREATE TABLE owned (at timestamptz NOT NULL) PARTITION BY RANGE (at);
ALTER TABLE owned OWNER TO regress_part_owner;
SET ROLE regress_part_other;
SELECT count(*) AS partitions FROM perf.partition_table('owned', 'at', '1 day', premake => 1);
SELECT current_user;
RESET ROLE;
SELECT DISTINCT relowner::regrole AS owner FROM pg_class
 WHERE oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'owned'::regclass);
DROP TABLE owned;
REVOKE CREATE ON SCHEMA public FROM regress_part_owner;
DROP ROLE regress_part_owner;
-- A premake that fails halfway (a table already has its third partition's name): nothing
-- is left behind, neither partitions nor the set.
SET perf.partition_now = '2024-03-10 12:00+00';
CREATE TABLE clash (at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE clash_p20240312 (at timestamptz NOT NULL);
SELECT pg_temp.err($$SELECT perf.partition_table('clash', 'at', '1 day', premake => 4)$$);
SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'clash'::regclass) AS partitions,
       (SELECT count(*) FROM perf.partition_config WHERE parent = 'clash'::regclass) AS sets;
DROP TABLE clash, clash_p20240312;

DROP VIEW viewed_v;
DROP TABLE ev, gap, gapi, alt, ev2, ev3, items, past, h, conv, badtype, fresh, already, nulls, infs, uniq, trig, viewed,
    "A very long ""quoted"" table name that goes on and on and on";
DROP TABLE ev2_p20240101, ev2_p20240201;
SET client_min_messages = warning;
DROP SCHEMA part_archive CASCADE;
DROP ROLE regress_part_other;
