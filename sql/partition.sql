-- Partition sets: perf.partition_table(), perf.partition_maintenance(), their views.
-- Design and lock order: README.md, "Partitioning". Everything here runs as the caller;
-- only perf._partition_config_put() (Rust, src/partition/config.rs) writes the config table,
-- after checking that the caller owns the table.

-- One row per partition set. Keys are numeric: for integer sets the value itself; for time
-- sets the epoch of the wall-clock time in the set's time zone (so that daily partitions of
-- a timestamptz column stay aligned to local midnight, whatever the session's TimeZone).
CREATE TABLE perf.partition_config (
    parent            regclass PRIMARY KEY,
    control           name NOT NULL,
    control_type      regtype NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('time', 'integer', 'hash')),
    step              text,            -- the interval as given ('1 day', '10000')
    step_months       integer,         -- time sets: a step of whole months ...
    step_seconds      numeric,         -- ... or of a fixed length; integer sets: the step
    anchor            numeric,         -- key of one partition boundary (all others follow)
    tz                text,            -- time zone time-set boundaries are computed in
    premake           integer NOT NULL DEFAULT 4 CHECK (premake BETWEEN 0 AND 10000),
    retention         text,            -- interval (time) or integer distance; NULL = keep all
    retention_mode    text NOT NULL DEFAULT 'drop'
                      CHECK (retention_mode IN ('drop', 'detach') OR retention_mode LIKE 'schema:_%'),
    CHECK (kind <> 'time' OR (control_type IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                              AND tz IS NOT NULL AND anchor IS NOT NULL
                              AND (step_months > 0 OR (coalesce(step_months, 0) = 0 AND step_seconds >= 1)))),
    CHECK (kind <> 'integer' OR (control_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype)
                                 AND anchor IS NOT NULL AND step_seconds >= 1)),
    CHECK (kind <> 'hash' OR hash_partitions BETWEEN 1 AND 1024),
    default_partition boolean NOT NULL DEFAULT true,
    hash_partitions   integer,
    template          regclass,        -- new partitions copy its storage parameters
    created           timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON perf.partition_config FROM PUBLIC;
GRANT SELECT ON perf.partition_config TO perf_reader;
SELECT pg_catalog.pg_extension_config_dump('perf.partition_config', '');

-- The time partition maintenance treats as now: perf.partition_now if set, else now().
CREATE FUNCTION perf.partition_now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('perf.partition_now', true), '')::timestamptz, now())
$$;

-- A relation name of at most 63 bytes made of the parent's name and a suffix: the parent's
-- part is shortened (by whole characters), never the suffix that makes the name unique.
CREATE FUNCTION perf._partition_name(base text, suffix text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    WHILE octet_length(base || suffix) > 63 LOOP
        base := left(base, -1);
    END LOOP;
    RETURN base || suffix;
END $$;

-- Key (see perf.partition_config) of a wall-clock timestamp / the timestamp of a key.
CREATE FUNCTION perf._partition_ts_key(ts timestamp) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT extract(epoch FROM ts) $$;
CREATE FUNCTION perf._partition_key_ts(k numeric) RETURNS timestamp
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT 'epoch'::timestamp + k * interval '1 second' $$;

-- SQL expression giving the key of the partition holding the value of expression `x`.
CREATE FUNCTION perf._partition_bucket_expr(c perf.partition_config, x text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF c.kind = 'integer' THEN
        RETURN format('(%s + floor((%s - %s)::numeric / %s) * %s)', c.anchor, x, c.anchor,
                      c.step_seconds, c.step_seconds);
    END IF;
    RETURN perf._partition_local_bucket_expr(c, perf._partition_local_expr(c, x));
END $$;

-- A time set's value `x` as the wall-clock timestamp keys are computed from.
CREATE FUNCTION perf._partition_local_expr(c perf.partition_config, x text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE c.control_type
               WHEN 'timestamptz'::regtype THEN format('(%s AT TIME ZONE %L)', x, c.tz)
               ELSE format('(%s)::timestamp', x) END
$$;

-- SQL condition: the value of the control column `col` (quoted) can be held by a range
-- partition: not NULL, and for time sets not 'infinity' / '-infinity' (those, like NULLs, can
-- only sit in the default partition; they must never make maintenance fail).
CREATE FUNCTION perf._partition_holdable(c perf.partition_config, col text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN c.kind = 'time' THEN format('isfinite(%s)', col)
                ELSE format('%s IS NOT NULL', col) END
$$;

-- Time sets: SQL expression giving the key of the partition holding the wall-clock timestamp
-- expression `loc` (numeric arithmetic: exact, but costly per row; see
-- perf._partition_bucket_counts for a scan).
CREATE FUNCTION perf._partition_local_bucket_expr(c perf.partition_config, loc text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a timestamp := perf._partition_key_ts(c.anchor);
BEGIN
    IF c.step_months > 0 THEN
        RETURN format('extract(epoch FROM %L::timestamp + (floor(((extract(year FROM %s) * 12 + extract(month FROM %s)) - %s) / %s) * %s) * interval ''1 month'')',
                      a, loc, loc, extract(year FROM a) * 12 + extract(month FROM a),
                      c.step_months, c.step_months);
    END IF;
    RETURN format('(%s + floor((extract(epoch FROM %s) - %s) / %s) * %s)', c.anchor, loc,
                  c.anchor, c.step_seconds, c.step_seconds);
END $$;

-- The rows of `src` (ONLY that table) by the key of the partition each belongs in: one row
-- per key with its count, and one with key NULL counting the rows no partition can hold
-- (NULL, infinity: see perf._partition_holdable). Time
-- sets group first by a cheap integer expression that never splits a partition's interval
-- (date_bin on the interval, or the month), and compute the exact key once per group: the
-- key of every row (numeric arithmetic) cost ~1.3 us a row, 130 ms per 100,000 rows.
CREATE FUNCTION perf._partition_bucket_counts(c perf.partition_config, src regclass)
RETURNS TABLE (b numeric, n bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    loc text;
    g text;
BEGIN
    IF c.kind = 'integer' THEN
        RETURN QUERY EXECUTE format('SELECT %s, count(*) FROM ONLY %s GROUP BY 1',
                                    perf._partition_bucket_expr(c, quote_ident(c.control)), src);
        RETURN;
    END IF;
    loc := perf._partition_local_expr(c, quote_ident(c.control));
    IF c.step_months > 0 THEN
        g := format('date_trunc(''month'', %s)', loc);
    ELSE
        g := format('date_bin(%L::interval, %s, %L::timestamp)', c.step_seconds || ' seconds', loc,
                    perf._partition_key_ts(c.anchor));
    END IF;
    g := format('CASE WHEN %s THEN %s END', perf._partition_holdable(c, quote_ident(c.control)), g);
    RETURN QUERY EXECUTE format('SELECT %s, sum(n)::bigint FROM (SELECT %s AS g, count(*) AS n FROM ONLY %s GROUP BY 1) s GROUP BY 1',
                                perf._partition_local_bucket_expr(c, 'g'), g, src);
END $$;

-- Key of the partition holding `v` (a value of the control column, as text).
CREATE FUNCTION perf._partition_bucket(c perf.partition_config, v text) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
DECLARE
    k numeric;
BEGIN
    EXECUTE 'SELECT ' || perf._partition_bucket_expr(c, format('%L::%s', v, c.control_type)) INTO k;
    RETURN k;
END $$;

-- The key following `k`.
CREATE FUNCTION perf._partition_next(c perf.partition_config, k numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN c.kind = 'time' AND c.step_months > 0
                THEN perf._partition_ts_key(perf._partition_key_ts(k) + make_interval(months => c.step_months))
                ELSE k + c.step_seconds END
$$;

-- A key as a literal of the control column's type (for FOR VALUES and CHECK).
CREATE FUNCTION perf._partition_literal(c perf.partition_config, k numeric) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.kind = 'integer' THEN k::bigint::text
        WHEN c.control_type = 'timestamptz'::regtype
            THEN format('%L::timestamptz', (perf._partition_key_ts(k) AT TIME ZONE c.tz)::text)
        ELSE format('%L::%s', perf._partition_key_ts(k)::text, c.control_type) END
$$;

-- The name suffix of the partition starting at key `k`: _pYYYYMMDD[_HH24MI[SS]] or _pN.
CREATE FUNCTION perf._partition_suffix(c perf.partition_config, k numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN c.kind = 'integer' THEN
            '_p' || CASE WHEN k < 0 THEN 'm' || (-k)::bigint::text ELSE k::bigint::text END
        WHEN c.step_months > 0 OR c.step_seconds % 86400 = 0 THEN
            '_p' || to_char(perf._partition_key_ts(k), 'YYYYMMDD')
        WHEN c.step_seconds % 60 = 0 THEN
            '_p' || to_char(perf._partition_key_ts(k), 'YYYYMMDD_HH24MI')
        ELSE '_p' || to_char(perf._partition_key_ts(k), 'YYYYMMDD_HH24MISS') END
$$;

-- Bound literal of a partition bound expression ('2024-01-01 00:00:00+00' or 100): the
-- text between the quotes, NULL for MINVALUE/MAXVALUE.
CREATE FUNCTION perf._partition_unquote(b text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN b LIKE '''%''' THEN replace(substr(b, 2, length(b) - 2), '''''', '''')
                WHEN b ~ '^-?[0-9]+$' THEN b END
$$;

-- The exact key of a bound value (not rounded to a partition boundary).
CREATE FUNCTION perf._partition_bucket_key(c perf.partition_config, v text) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN v IS NULL THEN NULL
        WHEN c.kind = 'integer' THEN v::numeric
        WHEN c.control_type = 'timestamptz'::regtype
            THEN perf._partition_ts_key(v::timestamptz AT TIME ZONE c.tz)
        WHEN c.control_type = 'date'::regtype THEN perf._partition_ts_key(v::date::timestamp)
        ELSE perf._partition_ts_key(v::timestamp) END
$$;

-- Every partition of a set: its bounds as keys (NULL for the default / non-range ones).
CREATE FUNCTION perf._partition_children(c perf.partition_config)
RETURNS TABLE (relid oid, lo numeric, hi numeric, is_default boolean)
LANGUAGE sql STABLE AS $$
    SELECT i.inhrelid, perf._partition_bucket_key(c, perf._partition_unquote(m[1])),
           perf._partition_bucket_key(c, perf._partition_unquote(m[2])), b = 'DEFAULT'
      FROM pg_inherits i
      JOIN pg_class k ON k.oid = i.inhrelid
     CROSS JOIN LATERAL pg_get_expr(k.relpartbound, k.oid) b
     CROSS JOIN LATERAL regexp_match(b, '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') m
     WHERE i.inhparent = c.parent
$$;

-- Key of the partition holding key k (k: a value's key, see perf.partition_config).
CREATE FUNCTION perf._partition_floor(c perf.partition_config, k numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN c.kind = 'time' AND c.step_months > 0 THEN
            perf._partition_ts_key(perf._partition_key_ts(c.anchor) + make_interval(months =>
                (floor(((extract(year FROM perf._partition_key_ts(k)) * 12 + extract(month FROM perf._partition_key_ts(k)))
                        - (extract(year FROM perf._partition_key_ts(c.anchor)) * 12 + extract(month FROM perf._partition_key_ts(c.anchor))))
                       / c.step_months) * c.step_months)::int))
        ELSE c.anchor + floor((k - c.anchor) / c.step_seconds) * c.step_seconds END
$$;

-- Column list of a table (for INSERT ... SELECT that does not depend on column order).
CREATE FUNCTION perf._partition_columns(rel regclass) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
      FROM pg_attribute
     WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
$$;

-- Sets lock_timeout for lock attempt n (0-based): perf.partition_lock_timeout doubled at each
-- retry, up to 64 times it. A short first wait keeps the queue behind a waiting lock short;
-- the growing ones make sure a lock held by queries longer than the first wait is still
-- obtained (the attempt waits longer than them, new queries queue behind it).
CREATE FUNCTION perf._partition_lock_timeout(n integer) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('lock_timeout',
                      (extract(epoch FROM current_setting('perf.partition_lock_timeout')::interval) * 1000 * power(2, least(n, 6)))::bigint || 'ms',
                      true)
$$;

-- Sleeps before lock attempt n+1 (randomized, growing, at most ~2 s).
CREATE FUNCTION perf._partition_backoff(n integer) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_sleep(least(2.0, 0.02 * power(2, least(n, 10))) * (0.5 + random()))
$$;

-- Grants on `dst` everything granted on `src` (the owner's own rights come with ownership).
CREATE FUNCTION perf._partition_copy_grants(src regclass, dst regclass) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
               FROM pg_class p, aclexplode(p.relacl) a
              WHERE p.oid = src AND a.grantee <> p.relowner
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, dst,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.grantee::regrole::text) END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;

-- Creates the standalone table that becomes the partition [lo, hi) of set c: same columns,
-- defaults, CHECK and NOT NULL constraints, storage and comments as the parent, the
-- template's storage parameters and the parent's grants, plus a CHECK constraint matching
-- the bounds so that ATTACH PARTITION skips its validation scan. Returns it.
CREATE FUNCTION perf._partition_standalone(c perf.partition_config, lo numeric, hi numeric)
RETURNS regclass
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    nsp text;
    relname text;
    opts text[];
    t regclass;
BEGIN
    SELECT n.nspname, perf._partition_name(p.relname, perf._partition_suffix(c, lo))
      INTO nsp, relname
      FROM pg_class p JOIN pg_namespace n ON n.oid = p.relnamespace
     WHERE p.oid = c.parent;
    IF c.template IS NOT NULL THEN
        SELECT reloptions INTO opts FROM pg_class WHERE oid = c.template;
    END IF;
    -- The CHECK in the same statement: no second catalog update and validation scan.
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   'INCLUDING STORAGE INCLUDING COMMENTS INCLUDING GENERATED, '
                   'CONSTRAINT perf_partition_bound CHECK (%I IS NOT NULL AND %I >= %s AND %I < %s))%s',
                   nsp, relname, c.parent, c.control, c.control, perf._partition_literal(c, lo),
                   c.control, perf._partition_literal(c, hi),
                   CASE WHEN opts IS NULL THEN ''
                        ELSE format(' WITH (%s)', array_to_string(opts, ', ')) END);
    t := format('%I.%I', nsp, relname)::regclass;
    PERFORM perf._partition_copy_grants(c.parent, t);
    RETURN t;
END $$;

-- Moves the rows of the default partition `d` that belong in [lo, hi) into table t.
CREATE FUNCTION perf._partition_move(c perf.partition_config, d regclass, t regclass,
                                     lo numeric, hi numeric) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cols text := perf._partition_columns(c.parent);
    n bigint;
BEGIN
    EXECUTE format('WITH m AS (DELETE FROM ONLY %s WHERE %I >= %s AND %I < %s RETURNING %s) '
                   'INSERT INTO %s (%s) SELECT %s FROM m',
                   d, c.control, perf._partition_literal(c, lo), c.control,
                   perf._partition_literal(c, hi), cols, t, cols, cols);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- The keys of the intervals the non-NULL rows of default partition `d` belong in, found by
-- walking a btree index on the control column (one probe per interval: min() of the rows
-- from the next interval on), or NULL when `d` has no such index (then group with
-- perf._partition_bucket_counts, which scans the table).
CREATE FUNCTION perf._partition_default_keys(c perf.partition_config, d regclass) RETURNS numeric[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    keys numeric[];
    value_of_key text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                     JOIN pg_am a ON a.oid = x.relam
                    WHERE i.indrelid = d AND i.indisvalid AND i.indpred IS NULL AND a.amname = 'btree'
                      AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                                          WHERE attrelid = d AND attname = c.control)) THEN
        RETURN NULL;
    END IF;
    -- A key as a value of the control column's type (so that the index can be used).
    value_of_key := CASE
        WHEN c.kind = 'integer' THEN format('(k)::%s', c.control_type)
        WHEN c.control_type = 'timestamptz'::regtype THEN format('(perf._partition_key_ts(k) AT TIME ZONE %L)', c.tz)
        ELSE format('perf._partition_key_ts(k)::%s', c.control_type) END;
    EXECUTE format('WITH RECURSIVE s(k) AS ('
                   '  SELECT (SELECT %1$s FROM (SELECT min(%2$I) AS v FROM ONLY %3$s WHERE %5$s) m)'
                   '  UNION ALL'
                   '  SELECT (SELECT %1$s FROM (SELECT min(%2$I) AS v FROM ONLY %3$s WHERE %2$I >= n.nv AND %5$s) m)'
                   '    FROM s CROSS JOIN LATERAL (SELECT %4$s AS nv FROM (SELECT perf._partition_next($1, s.k) AS k) x) n'
                   '   WHERE s.k IS NOT NULL)'
                   'SELECT coalesce(array_agg(k ORDER BY k), ''{}'') FROM s WHERE k IS NOT NULL',
                   perf._partition_bucket_expr(c, 'm.v'), c.control, d, value_of_key,
                   perf._partition_holdable(c, quote_ident(c.control)))
        INTO keys USING c;
    RETURN keys;
END $$;

-- A CHECK expression for the default partition saying it holds no row of the ranges
-- [los[i], his[i]) (merged into runs of adjacent ranges), or NULL when there is one range only
-- (one ATTACH scans the default once anyway) or more than 32 runs (a long expression would
-- cost more per row than the scans it saves).
CREATE FUNCTION perf._partition_drained_check(c perf.partition_config, los numeric[], his numeric[])
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN cardinality(los) > 1 AND count(*) <= 32 THEN
               string_agg(format('(%1$I < %2$s OR %1$I >= %3$s)', c.control,
                                 perf._partition_literal(c, r.lo), perf._partition_literal(c, r.hi)),
                          ' AND ' ORDER BY r.lo) END
      FROM (SELECT min(g.lo) AS lo, max(g.hi) AS hi
              FROM (SELECT x.lo, x.hi, sum(x.brk) OVER (ORDER BY x.lo) AS grp
                      FROM (SELECT u.lo, u.hi,
                                   CASE WHEN u.lo = lag(u.hi) OVER (ORDER BY u.lo) THEN 0 ELSE 1 END AS brk
                              FROM unnest(los, his) u(lo, hi)) x) g
             GROUP BY g.grp) r
$$;

-- Maintenance of one set; see perf.partition_maintenance(). `from_key`: also create the
-- partitions from this key on (partition_table's start).
CREATE FUNCTION perf._partition_maintain_set(c perf.partition_config, from_key numeric DEFAULT NULL,
                                             owner name DEFAULT NULL)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    retries int := current_setting('perf.partition_lock_retries')::int;
    saved_timeout text := current_setting('lock_timeout');
    now_ts timestamptz := perf.partition_now();
    d regclass;
    ch_lo numeric[];
    ch_hi numeric[];
    ch_rel oid[];
    b_lo numeric[] := '{}';
    b_rows bigint[] := '{}';
    cur numeric;
    k numeric;
    k2 numeric;
    cutoff numeric;
    maxval text;
    attempt int;
    n bigint;
    moved bigint := 0;
    in_default bigint := 0;
    total int := 0;
    ahead int := 0;
    new_lo numeric[] := '{}';
    new_hi numeric[] := '{}';
    new_rows bigint[] := '{}';
    new_rel regclass[] := '{}';
    expired oid[] := '{}';
    expired_name text[] := '{}';
    has_rows boolean;
    rows_to_move boolean := false;
    count_expired boolean := false;
    drained_check text;
    expired_rows bigint := 0;
    locked boolean := false;
    saved_role text := current_setting('role');
    owner_name name := owner;
    i int;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf._partition_maintain_set()');
    IF c.kind = 'hash' THEN
        RETURN;
    END IF;

    -- Everything runs as the table's owner (so the DDL, the triggers that moving rows fires
    -- and any function the control column's type brings run with the owner's rights, never
    -- a superuser scheduler's, and new partitions belong to the owner).
    IF owner_name IS NULL THEN
        SELECT r.rolname INTO owner_name FROM pg_class k JOIN pg_roles r ON r.oid = k.relowner
         WHERE k.oid = c.parent;
    END IF;
    IF owner_name IS DISTINCT FROM current_user AND pg_has_role(owner_name, 'MEMBER') THEN
        PERFORM set_config('role', owner_name, true);
    END IF;
    -- The analysis (steps 2-5) runs first without any lock: a no-op run, the common case,
    -- reads the catalogs and returns. When there is work, step 1 is taken and the analysis
    -- done again under it, since another session may have changed the set meanwhile.
    <<analysis>>
    LOOP
    IF locked THEN
        -- 1. SHARE UPDATE EXCLUSIVE on the parent: conflicts with no reader or writer, only
        --    with DDL, VACUUM/ANALYZE and another maintenance of the same set (serialized).
        PERFORM set_config('lock_timeout', current_setting('perf.partition_lock_timeout'), true);
        attempt := 0;
        LOOP
            BEGIN
                PERFORM perf._partition_lock_timeout(attempt);
                EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', c.parent);
                EXIT;
            EXCEPTION WHEN lock_not_available THEN
                attempt := attempt + 1;
                IF attempt >= retries THEN RAISE; END IF;
                PERFORM perf._partition_backoff(attempt);
            END;
        END LOOP;
        b_lo := '{}'; b_rows := '{}'; in_default := 0; total := 0; ahead := 0; rows_to_move := false;
        count_expired := false;
        new_lo := '{}'; new_hi := '{}'; new_rows := '{}'; expired := '{}'; expired_name := '{}';
        expired_rows := 0;
    END IF;

    SELECT array_agg(x.lo ORDER BY x.lo) FILTER (WHERE x.lo IS NOT NULL),
           array_agg(x.hi ORDER BY x.lo) FILTER (WHERE x.lo IS NOT NULL),
           array_agg(x.relid ORDER BY x.lo) FILTER (WHERE x.lo IS NOT NULL),
           (array_agg(x.relid) FILTER (WHERE x.is_default))[1]
      INTO ch_lo, ch_hi, ch_rel, d
      FROM perf._partition_children(c) x;
    ch_lo := coalesce(ch_lo, '{}');
    ch_hi := coalesce(ch_hi, '{}');
    ch_rel := coalesce(ch_rel, '{}');

    -- 2. Where "now" is: the clock for time sets, the largest value for integer sets.
    IF c.kind = 'time' THEN
        cur := perf._partition_floor(c, perf._partition_ts_key(now_ts AT TIME ZONE c.tz));
    ELSE
        EXECUTE format('SELECT max(%I)::numeric FROM %s', c.control, c.parent) INTO maxval;
        cur := coalesce(perf._partition_floor(c, maxval::numeric), c.anchor);
    END IF;

    -- Retention cutoff: partitions ending at or before it have expired.
    IF c.retention IS NOT NULL THEN
        IF c.kind = 'time' THEN
            cutoff := perf._partition_bucket_key(c, (now_ts - c.retention::interval)::text);
        ELSE
            cutoff := cur - c.retention::numeric;
        END IF;
    END IF;

    -- 3. Rows sitting in the default partition, by the partition they belong in. Without the
    --    lock, only whether any of them will get a partition (those older than the retention
    --    will not): one probe, so that the grouping scan runs once, under the lock.
    IF d IS NOT NULL AND NOT locked THEN
        -- A default partition without a single page holds no row, not even an uncommitted one.
        IF pg_relation_size(d) > 0 THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s WHERE %s%s)', d,
                           perf._partition_holdable(c, quote_ident(c.control)),
                           CASE WHEN cutoff IS NULL THEN ''
                                ELSE format(' AND %I >= %s', c.control,
                                            perf._partition_literal(c, perf._partition_floor(c, cutoff))) END)
                INTO STRICT rows_to_move;
            -- Otherwise what it holds is older than the retention: counted after step 4.
            count_expired := NOT rows_to_move AND cutoff IS NOT NULL;
        END IF;
    ELSIF d IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM ONLY %s)', d) INTO STRICT has_rows;
        IF has_rows THEN
            b_lo := perf._partition_default_keys(c, d);
            IF b_lo IS NOT NULL THEN
                -- Found through an index: the count of each interval is known once its rows
                -- are moved (NULL until then); the total, for progress, by one count.
                b_rows := array_fill(NULL::bigint, ARRAY[cardinality(b_lo)]);
                EXECUTE format('SELECT count(*) FROM ONLY %s WHERE %s', d,
                               perf._partition_holdable(c, quote_ident(c.control)))
                    INTO in_default;
            ELSE
                SELECT coalesce(array_agg(x.b ORDER BY x.b), '{}'), coalesce(array_agg(x.n ORDER BY x.b), '{}')
                  INTO b_lo, b_rows
                  FROM perf._partition_bucket_counts(c, d) x WHERE x.b IS NOT NULL;
                SELECT coalesce(sum(x), 0) INTO in_default FROM unnest(b_rows) x;
            END IF;
        END IF;
    END IF;

    -- 4. Partitions to create: from from_key (or now) to premake ahead of now, and those
    --    for rows in the default; never a range an existing partition (ours or not) covers.
    k := least(cur, coalesce(from_key, cur));
    -- Fast path (the common case): every partition from now to premake ahead exists.
    IF k = cur AND (SELECT count(*) FROM unnest(ch_lo) x
                     WHERE x >= cur AND x <= CASE WHEN c.kind = 'time' AND c.step_months > 0
                         THEN perf._partition_ts_key(perf._partition_key_ts(cur) + make_interval(months => c.step_months * c.premake))
                         ELSE cur + c.step_seconds * c.premake END) = c.premake + 1 THEN
        ahead := c.premake + 1;
    END IF;
    LOOP
        IF k >= cur THEN
            EXIT WHEN ahead > c.premake;
            ahead := ahead + 1;
        END IF;
        total := total + 1;
        IF total > 10000 THEN
            RAISE EXCEPTION 'partition set % would need more than 10000 new partitions', c.parent
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Use a later start, a longer interval or a smaller premake.';
        END IF;
        k2 := perf._partition_next(c, k);
        IF k <> ALL (ch_lo) AND k <> ALL (b_lo) AND k2 > coalesce(cutoff, k2 - 1) AND NOT EXISTS (SELECT FROM unnest(ch_lo, ch_hi) e(lo, hi)
                                            WHERE e.lo < k2 AND e.hi > k) THEN
            new_lo := new_lo || k;
            new_hi := new_hi || k2;
            new_rows := new_rows || 0::bigint;
        END IF;
        k := k2;
    END LOOP;
    FOR i IN 1 .. cardinality(b_lo) LOOP
        k2 := perf._partition_next(c, b_lo[i]);
        IF k2 <= cutoff THEN
            -- Rows older than the retention: no partition is made for them (it would be
            -- removed again at once, and may clash with one retention detached); they stay
            -- in the default partition, reported below and in perf.partitions.
            IF b_rows[i] IS NULL THEN
                count_expired := true;
            ELSE
                expired_rows := expired_rows + b_rows[i];
            END IF;
            CONTINUE;
        END IF;
        IF NOT EXISTS (SELECT FROM unnest(ch_lo, ch_hi) e(lo, hi) WHERE e.lo < k2 AND e.hi > b_lo[i]) THEN
            new_lo := new_lo || b_lo[i];
            new_hi := new_hi || k2;
            new_rows := new_rows || b_rows[i];
        END IF;
    END LOOP;
    IF count_expired THEN
        -- Every row below the partition holding the cutoff is in an expired interval (the
        -- intervals found through an index, or the unlocked pass, have no count of their own).
        EXECUTE format('SELECT count(*) FROM ONLY %s WHERE %s AND %I < %s', d,
                       perf._partition_holdable(c, quote_ident(c.control)), c.control,
                       perf._partition_literal(c, perf._partition_floor(c, cutoff)))
            INTO expired_rows;
    END IF;

    -- 5. Retention: partitions wholly older than the cutoff.
    IF c.retention IS NOT NULL THEN
        FOR i IN 1 .. cardinality(ch_rel) LOOP
            IF ch_hi[i] <= cutoff THEN
                expired := expired || ch_rel[i];
                expired_name := expired_name || ch_rel[i]::regclass::text;
            END IF;
        END LOOP;
    END IF;

    IF cardinality(new_lo) = 0 AND cardinality(expired) = 0 AND NOT rows_to_move THEN
        IF expired_rows > 0 THEN
            RETURN QUERY SELECT c.parent, 'keep'::text, d::text,
                                format('%s rows older than the retention (%s) left in the default partition',
                                       expired_rows, c.retention);
        END IF;
        PERFORM set_config('lock_timeout', saved_timeout, true);
        IF current_setting('role') IS DISTINCT FROM saved_role THEN  -- (never SET inside a job's restricted context)
            PERFORM set_config('role', saved_role, true);
        END IF;
        RETURN;  -- nothing to do: the common case, a few catalog reads and no lock
    END IF;
    EXIT analysis WHEN locked;
    locked := true;
    END LOOP analysis;
    IF expired_rows > 0 THEN
        RETURN QUERY SELECT c.parent, 'keep'::text, d::text,
                            format('%s rows older than the retention (%s) left in the default partition',
                                   expired_rows, c.retention);
    END IF;

    -- 6. Standalone tables; rows in the default moved into them (no lock stronger than
    --    ROW EXCLUSIVE on the default: readers and writers carry on).
    FOR i IN 1 .. cardinality(new_lo) LOOP
        new_rel := new_rel || perf._partition_standalone(c, new_lo[i], new_hi[i]);
        IF new_rows[i] IS NULL OR new_rows[i] > 0 THEN
            attempt := 0;
            LOOP
                BEGIN
                    PERFORM perf._partition_lock_timeout(attempt);
                    n := perf._partition_move(c, d, new_rel[i], new_lo[i], new_hi[i]);
                    EXIT;
                EXCEPTION WHEN lock_not_available THEN
                    attempt := attempt + 1;
                    IF attempt >= retries THEN RAISE; END IF;
                    PERFORM perf._partition_backoff(attempt);
                END;
            END LOOP;
            moved := moved + n;
            new_rows[i] := n;
            PERFORM perf._partition_progress(c.parent, 'moving rows', moved, in_default, 0);
        END IF;
    END LOOP;

    -- 7. Short exclusive part, all or nothing per attempt, locks in one order: parent
    --    (ACCESS EXCLUSIVE when retention must detach or drop, else SHARE when there is a
    --    default partition), then the default partition, then the new tables. A lock not granted within perf.partition_lock_timeout rolls the attempt back,
    --    which releases the locks it took, so queued sessions go ahead before the retry.
    attempt := 0;
    LOOP
        BEGIN
            PERFORM perf._partition_lock_timeout(attempt);
            n := 0;
            IF cardinality(expired) > 0 THEN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', c.parent);
            ELSIF d IS NOT NULL AND cardinality(new_rel) > 0 THEN
                -- Writers wait (readers do not): an INSERT that routed a row to the default
                -- partition before the ATTACH would otherwise fail the default's new
                -- partition constraint after it.
                EXECUTE format('LOCK TABLE %s IN SHARE MODE', c.parent);
            END IF;
            drained_check := NULL;
            IF d IS NOT NULL AND cardinality(new_rel) > 0 THEN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', d);
                -- Rows written to the default since step 6.
                FOR i IN 1 .. cardinality(new_rel) LOOP
                    n := n + perf._partition_move(c, d, new_rel[i], new_lo[i], new_hi[i]);
                END LOOP;
                -- Each ATTACH scans the whole default partition to prove it holds no row of
                -- the new range, unless the default's own CHECK constraints imply that. One
                -- CHECK excluding the runs of adjacent new ranges (validated by one scan,
                -- dropped below) lets every ATTACH skip its scan.
                drained_check := perf._partition_drained_check(c, new_lo, new_hi);
                IF drained_check IS NOT NULL THEN
                    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT perf_partition_drained CHECK (%s)',
                                   d, drained_check);
                END IF;
            END IF;
            FOR i IN 1 .. cardinality(new_rel) LOOP
                EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
                               c.parent, new_rel[i], perf._partition_literal(c, new_lo[i]),
                               perf._partition_literal(c, new_hi[i]));
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT perf_partition_bound', new_rel[i]);
                IF in_default > 0 THEN
                    PERFORM perf._partition_progress(c.parent, 'attaching', moved + n, in_default, i);
                END IF;
            END LOOP;
            IF drained_check IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT perf_partition_drained', d);
            END IF;
            FOR i IN 1 .. cardinality(expired) LOOP
                IF c.retention_mode = 'drop' THEN
                    EXECUTE format('DROP TABLE %s', expired[i]::regclass);
                ELSE
                    EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', c.parent, expired[i]::regclass);
                    IF c.retention_mode LIKE 'schema:%' THEN
                        EXECUTE format('ALTER TABLE %s SET SCHEMA %I', expired[i]::regclass,
                                       substr(c.retention_mode, 8));
                    END IF;
                END IF;
            END LOOP;
            moved := moved + n;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= retries THEN RAISE; END IF;
            PERFORM perf._partition_backoff(attempt);
        END;
    END LOOP;

    RETURN QUERY
    SELECT c.parent, 'create', x.rel::text,
           format('FROM (%s) TO (%s)', perf._partition_literal(c, x.lo), perf._partition_literal(c, x.hi))
           || CASE WHEN x.n > 0 THEN format(', %s rows moved from the default partition', x.n) ELSE '' END
      FROM unnest(new_rel, new_lo, new_hi, new_rows) x(rel, lo, hi, n);
    RETURN QUERY
    SELECT c.parent, CASE WHEN c.retention_mode = 'drop' THEN 'drop'
                          WHEN c.retention_mode = 'detach' THEN 'detach' ELSE 'move' END,
           CASE WHEN c.retention_mode = 'drop' THEN x.name ELSE x.rel::regclass::text END,
           CASE WHEN c.retention_mode = 'drop' THEN 'retention ' || c.retention
                WHEN c.retention_mode = 'detach' THEN 'detached, retention ' || c.retention
                ELSE 'detached and moved to schema ' || substr(c.retention_mode, 8) END
      FROM unnest(expired, expired_name) x(rel, name);
    IF moved > 0 THEN
        RETURN QUERY SELECT c.parent, 'drain'::text, d::text,
                            format('%s rows moved out of the default partition', moved);
    END IF;
    -- Partitioned parents are never auto-analyzed: their statistics after rows moved or
    -- partitions left (new empty partitions change nothing). The parent's only: autovacuum
    -- analyzes the partitions that received rows, and ANALYZE of the parent would read every
    -- partition of the set again.
    IF moved > 0 OR cardinality(expired) > 0 THEN
        PERFORM perf._partition_analyze_parent(c.parent);
        RETURN QUERY SELECT c.parent, 'analyze'::text, c.parent::text, NULL::text;
    END IF;
    PERFORM perf._partition_progress_done();
    PERFORM set_config('lock_timeout', saved_timeout, true);
    IF current_setting('role') IS DISTINCT FROM saved_role THEN  -- (never SET inside a job's restricted context)
        PERFORM set_config('role', saved_role, true);
    END IF;
END $$;

-- Premakes future partitions, applies retention, drains rows that landed in the default
-- partition into proper partitions (moved out before the partition covering them is
-- attached, so "updated partition constraint for default partition would be violated" cannot
-- happen), ANALYZEs the parents it changed. For one set, or every set the caller may manage
-- (parent NULL): then a set that fails is reported as an 'error' row and the others go on.
-- "Now" is perf.partition_now() (SET perf.partition_now = '2030-01-01' to rehearse).
-- One transaction: the scheduler calls it once per set (perf.partition_maintenance(parent)),
-- each in its own transaction, so no set's locks are held while another is processed.
CREATE FUNCTION perf.partition_maintenance(parent regclass DEFAULT NULL)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    c perf.partition_config;
    r record;
    want regclass := parent;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.partition_maintenance()');
    IF want IS NOT NULL THEN
        SELECT * INTO c FROM perf.partition_config WHERE partition_config.parent = want;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'table % is not a partition set', want
                USING ERRCODE = 'undefined_object',
                      HINT = 'Create one with perf.partition_table().';
        END IF;
        IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = want), 'MEMBER') THEN
            RAISE EXCEPTION 'must be owner of table % to maintain its partitions', want
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run it as the table''s owner, or let the scheduler run it.';
        END IF;
        RETURN QUERY SELECT * FROM perf._partition_maintain_set(c);
        RETURN;
    END IF;
    FOR r IN SELECT f AS cfg, o.rolname AS owner
               FROM perf.partition_config f JOIN pg_class k ON k.oid = f.parent
               JOIN pg_roles o ON o.oid = k.relowner
              WHERE pg_has_role(k.relowner, 'MEMBER')
              ORDER BY f.parent::oid
    LOOP
        c := r.cfg;
        BEGIN
            RETURN QUERY SELECT * FROM perf._partition_maintain_set(c, NULL, r.owner);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_perf: partition maintenance of % failed: %', c.parent, SQLERRM;
            RETURN QUERY SELECT c.parent, 'error'::text, c.parent::text,
                                format('%s (SQLSTATE %s)', SQLERRM, SQLSTATE);
        END;
    END LOOP;
END $$;

-- Converts the plain table c.parent into a partitioned table of the same name (see
-- perf.partition_table() and README.md, "Converting a populated table", for the locks).
-- Runs as the table's owner. Every refusal happens before anything is changed, and it all
-- runs in the caller's transaction: an ERROR at any point leaves the table as it was.
CREATE FUNCTION perf._partition_convert(c perf.partition_config, start_key numeric)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    old regclass := c.parent;
    retries int := current_setting('perf.partition_lock_retries')::int;
    batch_rows bigint := current_setting('perf.partition_batch_rows')::bigint;
    saved_timeout text := current_setting('lock_timeout');
    saved_role text := current_setting('role');
    nsp text;
    pname text;
    owner_name name;
    tmpname text;
    newrel regclass;
    cols text;
    total bigint;
    moved bigint := 0;
    nblocks bigint;
    per_batch bigint;
    b bigint := 0;
    n bigint;
    nulls bigint;
    attempt int;
    keys numeric[];
    k numeric;
    k2 numeric;
    cur numeric;
    ahead int := 0;
    parts int := 0;
    opts text[];
    made text[] := '{}';
    ren_from text[] := '{}';
    ren_to text[] := '{}';
    ren_con boolean[] := '{}';
    def text;
    prefix text;
    pos int;
    tmp text;
    r record;
    i int;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf._partition_convert()');
    SELECT n2.nspname, k.relname, ro.rolname INTO nsp, pname, owner_name
      FROM pg_class k JOIN pg_namespace n2 ON n2.oid = k.relnamespace
      JOIN pg_roles ro ON ro.oid = k.relowner WHERE k.oid = old;
    -- Refusals first: nothing has been changed yet.
    IF EXISTS (SELECT FROM pg_inherits WHERE inhrelid = old OR inhparent = old) THEN
        RAISE EXCEPTION 'table % is part of an inheritance tree', old
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = old AND NOT tgisinternal) THEN
        RAISE EXCEPTION 'table % has triggers, which conversion does not carry over', old
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Drop the triggers, convert, and create them again on the partitioned table.';
    END IF;
    IF EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite w ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
                WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = old AND w.ev_class <> old) THEN
        RAISE EXCEPTION 'views or rules depend on table %', old
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Drop the dependent views, convert, and create them again.';
    END IF;
    IF EXISTS (SELECT FROM pg_constraint WHERE confrelid = old AND contype = 'f') THEN
        RAISE EXCEPTION 'foreign keys of other tables reference table %', old
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Drop those foreign keys, convert, and add them again.';
    END IF;
    IF EXISTS (SELECT FROM pg_policy WHERE polrelid = old)
       OR (SELECT relrowsecurity FROM pg_class WHERE oid = old) THEN
        RAISE EXCEPTION 'table % uses row-level security, which conversion does not carry over', old
            USING ERRCODE = 'feature_not_supported';
    END IF;
    FOR r IN SELECT x.indexrelid::regclass AS idx FROM pg_index x
              WHERE x.indrelid = old AND x.indisunique
                AND NOT (SELECT attnum FROM pg_attribute WHERE attrelid = old AND attname = c.control) = ANY (x.indkey)
    LOOP
        RAISE EXCEPTION 'unique index % does not include the partitioning column "%"', r.idx, c.control
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'A unique index or primary key of a partitioned table must include the partitioning column.';
    END LOOP;

    IF owner_name IS DISTINCT FROM current_user AND pg_has_role(owner_name, 'MEMBER') THEN
        PERFORM set_config('role', owner_name, true);
    END IF;
    PERFORM set_config('lock_timeout', current_setting('perf.partition_lock_timeout'), true);
    attempt := 0;
    LOOP
        BEGIN
            PERFORM perf._partition_lock_timeout(attempt);
            EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', old);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= retries THEN RAISE; END IF;
            PERFORM perf._partition_backoff(attempt);
        END;
    END LOOP;
    IF NOT c.default_partition THEN
        -- One scan: rows with infinity (n) and with NULL (nulls), refused in that order.
        EXECUTE format('SELECT count(*) FILTER (WHERE %1$I IS NOT NULL AND NOT %2$s), count(*) FILTER (WHERE %1$I IS NULL) FROM ONLY %3$s',
                       c.control, perf._partition_holdable(c, quote_ident(c.control)), old)
            INTO n, nulls;
        IF n > 0 THEN
            RAISE EXCEPTION 'table % has % rows with infinity in "%", which no range partition can hold', old, n, c.control
                USING ERRCODE = 'check_violation',
                      HINT = 'Use default_partition => true, or fix those rows first.';
        END IF;
        IF nulls > 0 THEN
            RAISE EXCEPTION 'table % has % rows with NULL in "%", which no partition can hold', old, nulls, c.control
                USING ERRCODE = 'not_null_violation',
                      HINT = 'Use default_partition => true, or fix those rows first.';
        END IF;
    END IF;

    -- The new partitioned table, with the columns, defaults, CHECK and NOT NULL constraints,
    -- identity, storage, comments and extended statistics of the old one.
    PERFORM perf._partition_progress(old, 'scanning', 0, 0, 0);
    tmpname := perf._partition_name(pname, '_perf_new');
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED '
                   'INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS) '
                   'PARTITION BY RANGE (%I)', nsp, tmpname, old, c.control);
    newrel := format('%I.%I', nsp, tmpname)::regclass;
    -- Indexes and the constraints they back, under temporary names (renamed at the end).
    FOR r IN SELECT x.indexrelid, ic.relname AS idxname, co.conname, co.oid AS conoid
               FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
               LEFT JOIN pg_constraint co ON co.conindid = x.indexrelid AND co.conrelid = old
              WHERE x.indrelid = old ORDER BY x.indexrelid
    LOOP
        tmp := perf._partition_name(r.idxname, '_perf_new');
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', newrel, tmp, pg_get_constraintdef(r.conoid));
            ren_from := ren_from || tmp;
            ren_to := ren_to || r.conname::text;
            ren_con := ren_con || true;
        ELSE
            def := pg_get_indexdef(r.indexrelid);
            prefix := format('INDEX %I ON %I.%I ', r.idxname, nsp, pname);
            pos := position(prefix IN def);
            IF pos = 0 THEN
                RAISE EXCEPTION 'cannot copy index % of table %', r.idxname, old
                    USING ERRCODE = 'feature_not_supported', DETAIL = def;
            END IF;
            EXECUTE overlay(def PLACING format('INDEX %I ON %s ', tmp, newrel) FROM pos FOR length(prefix));
            ren_from := ren_from || tmp;
            ren_to := ren_to || r.idxname::text;
            ren_con := ren_con || false;
        END IF;
    END LOOP;
    -- Foreign keys to other tables (their names are per table: kept).
    FOR r IN SELECT conname, oid FROM pg_constraint WHERE conrelid = old AND contype = 'f' LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', newrel, r.conname, pg_get_constraintdef(r.oid));
    END LOOP;
    PERFORM perf._partition_copy_grants(old, newrel);

    -- Partitions: one per interval that has rows, the premade ones ahead of now (or of the
    -- largest value), the ones from `start` on, and the default.
    c.parent := newrel;
    SELECT coalesce(sum(x.n), 0), coalesce(array_agg(x.b) FILTER (WHERE x.b IS NOT NULL), '{}')
      INTO total, keys
      FROM perf._partition_bucket_counts(c, old) x;
    IF c.kind = 'time' THEN
        cur := perf._partition_bucket(c, perf.partition_now()::text);
    ELSE
        cur := coalesce((SELECT max(x) FROM unnest(keys) x), c.anchor);
    END IF;
    k := least(cur, coalesce(start_key, cur));
    LOOP
        IF k >= cur THEN
            EXIT WHEN ahead > c.premake;
            ahead := ahead + 1;
        END IF;
        keys := keys || k;
        k := perf._partition_next(c, k);
    END LOOP;
    IF cardinality(keys) > 10000 THEN
        RAISE EXCEPTION 'converting % would need % partitions', old, cardinality(keys)
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Use a longer interval.';
    END IF;
    IF c.template IS NOT NULL THEN
        SELECT reloptions INTO opts FROM pg_class WHERE oid = c.template;
    END IF;
    FOR k IN SELECT DISTINCT x FROM unnest(keys) x ORDER BY 1 LOOP
        tmp := format('%I.%I', nsp, perf._partition_name(pname, perf._partition_suffix(c, k)));
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)%s', tmp, newrel,
                       perf._partition_literal(c, k), perf._partition_literal(c, perf._partition_next(c, k)),
                       CASE WHEN opts IS NULL THEN '' ELSE format(' WITH (%s)', array_to_string(opts, ', ')) END);
        PERFORM perf._partition_copy_grants(old, tmp::regclass);
        made := made || tmp;
        parts := parts + 1;
        PERFORM perf._partition_progress(old, 'creating partitions', 0, total, parts);
    END LOOP;
    IF c.default_partition THEN
        tmp := format('%I.%I', nsp, perf._partition_name(pname, '_default'));
        EXECUTE format('CREATE TABLE %s PARTITION OF %s DEFAULT', tmp, newrel);
        PERFORM perf._partition_copy_grants(old, tmp::regclass);
        made := made || tmp;
    END IF;

    -- Rows, in batches of table blocks (TID range scans: each block is read once). Readers
    -- of the old table still see every row until the end (the deletes are not committed);
    -- writers only wait if they update or delete a row already moved.
    cols := perf._partition_columns(old);
    nblocks := pg_relation_size(old) / current_setting('block_size')::bigint;
    per_batch := greatest(1, batch_rows * nblocks / greatest(total, 1));
    WHILE b < nblocks LOOP
        EXECUTE format('WITH m AS (DELETE FROM ONLY %s WHERE ctid >= %L::tid AND ctid < %L::tid RETURNING %s) '
                       'INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM m',
                       old, format('(%s,0)', b), format('(%s,0)', b + per_batch), cols, newrel, cols, cols);
        GET DIAGNOSTICS n = ROW_COUNT;
        moved := moved + n;
        b := b + per_batch;
        PERFORM perf._partition_progress(old, 'moving rows', moved, total, parts);
    END LOOP;

    -- The swap: ACCESS EXCLUSIVE on the old table (bounded wait, retried), rows written
    -- since moved, sequences handed over, old table dropped, names swapped.
    attempt := 0;
    LOOP
        BEGIN
            PERFORM perf._partition_lock_timeout(attempt);
            EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', old);
            PERFORM perf._partition_progress(old, 'swapping names', moved, total, parts);
            -- Intervals of rows written meanwhile that have no partition yet.
            SELECT coalesce(array_agg(x.b) FILTER (WHERE x.b IS NOT NULL), '{}') INTO keys
              FROM perf._partition_bucket_counts(c, old) x;
            FOR k IN SELECT x FROM unnest(keys) x
                      WHERE NOT EXISTS (SELECT FROM perf._partition_children(c) e
                                         WHERE e.lo <= x AND e.hi > x) LOOP
                tmp := format('%I.%I', nsp, perf._partition_name(pname, perf._partition_suffix(c, k)));
                EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)', tmp, newrel,
                               perf._partition_literal(c, k), perf._partition_literal(c, perf._partition_next(c, k)));
                PERFORM perf._partition_copy_grants(old, tmp::regclass);
                made := made || tmp;
            END LOOP;
            EXECUTE format('WITH m AS (DELETE FROM ONLY %s RETURNING %s) '
                           'INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM m',
                           old, cols, newrel, cols, cols);
            GET DIAGNOSTICS n = ROW_COUNT;
            -- Sequences owned by the old columns (serial) now belong to the new ones;
            -- identity sequences continue where the old ones were.
            FOR r IN SELECT d.objid::regclass AS seq, a.attname, d.deptype
                       FROM pg_depend d
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                        AND d.refobjid = old AND d.deptype IN ('a', 'i')
                        AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S'
            LOOP
                IF r.deptype = 'a' THEN
                    EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', r.seq, newrel, r.attname);
                ELSE
                    EXECUTE format('SELECT setval(%L, last_value, is_called) FROM %s',
                                   pg_get_serial_sequence(newrel::text, r.attname), r.seq);
                END IF;
            END LOOP;
            EXECUTE format('DROP TABLE %s', old);
            EXECUTE format('ALTER TABLE %s RENAME TO %I', newrel, pname);
            FOR i IN 1 .. cardinality(ren_from) LOOP
                IF ren_con[i] THEN
                    EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', newrel, ren_from[i], ren_to[i]);
                ELSE
                    EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', nsp, ren_from[i], ren_to[i]);
                END IF;
            END LOOP;
            moved := moved + n;
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= retries THEN RAISE; END IF;
            PERFORM perf._partition_backoff(attempt);
        END;
    END LOOP;

    PERFORM perf._partition_config_put(newrel, to_jsonb(c)::text, false);
    EXECUTE format('ANALYZE %s', newrel);
    PERFORM perf._partition_progress_done();
    PERFORM set_config('lock_timeout', saved_timeout, true);
    IF current_setting('role') IS DISTINCT FROM saved_role THEN  -- (never SET inside a job's restricted context)
        PERFORM set_config('role', saved_role, true);
    END IF;
    RETURN QUERY SELECT newrel, 'create'::text, x::regclass::text, NULL::text FROM unnest(made) x;
    RETURN QUERY SELECT newrel, 'convert'::text, newrel::text,
                        format('%s rows moved into %s partitions', moved, cardinality(made));
END $$;

-- The first partitions of a new, empty set (from `from_key` or now to premake ahead, then
-- the default): CREATE TABLE ... PARTITION OF, one statement each. It takes ACCESS EXCLUSIVE on
-- the parent, which is fine for a table without partitions (nothing can be reading it);
-- maintenance later attaches partitions without that lock. Runs as the parent's owner (as
-- maintenance does), so the partitions belong to it even when a member of the owning role
-- calls: maintenance must be able to drop or detach them later.
-- Why one statement per partition and not something faster (measured, bench/README.md):
-- each CREATE TABLE ... PARTITION OF rebuilds the parent's partition descriptor, parsing the
-- bound of every partition already there, so n partitions cost O(n^2) inside PostgreSQL
-- whatever issues the DDL; ATTACH PARTITION does the same and more (the table is created
-- first), one multi-statement EXECUTE was slower, and the default partition is made last so
-- that no CREATE has to check it. This function adds next to nothing to that DDL.
CREATE FUNCTION perf._partition_create_initial(c perf.partition_config, nsp text, pname text, from_key numeric)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    saved_role text := current_setting('role');
    owner_name name;
    cur numeric;
    k numeric;
    k2 numeric;
    ahead int := 0;
    total int := 0;
    opts text := '';
    grants boolean;
    t text;
    lo text;
    hi text;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf._partition_create_initial()');
    IF c.template IS NOT NULL THEN
        SELECT coalesce(format(' WITH (%s)', array_to_string(reloptions, ', ')), '') INTO opts
          FROM pg_class WHERE oid = c.template;
    END IF;
    SELECT k.relacl IS NOT NULL, r.rolname INTO grants, owner_name
      FROM pg_class k JOIN pg_roles r ON r.oid = k.relowner WHERE k.oid = c.parent;
    IF c.kind = 'time' THEN
        cur := perf._partition_floor(c, perf._partition_ts_key(perf.partition_now() AT TIME ZONE c.tz));
    ELSE
        cur := c.anchor;
    END IF;
    k := least(cur, coalesce(from_key, cur));
    -- Count first: refuse before creating anything.
    k2 := k;
    LOOP
        IF k2 >= cur THEN
            EXIT WHEN ahead > c.premake;
            ahead := ahead + 1;
        END IF;
        total := total + 1;
        IF total > 10000 THEN
            RAISE EXCEPTION 'partition set % would need more than 10000 new partitions', c.parent
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Use a later start, a longer interval or a smaller premake.';
        END IF;
        k2 := perf._partition_next(c, k2);
    END LOOP;
    IF owner_name IS DISTINCT FROM current_user AND pg_has_role(owner_name, 'MEMBER') THEN
        PERFORM set_config('role', owner_name, true);
    END IF;
    ahead := 0;
    LOOP
        IF k >= cur THEN
            EXIT WHEN ahead > c.premake;
            ahead := ahead + 1;
        END IF;
        k2 := perf._partition_next(c, k);
        t := format('%I.%I', nsp, perf._partition_name(pname, perf._partition_suffix(c, k)));
        lo := perf._partition_literal(c, k);
        hi := perf._partition_literal(c, k2);
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%s) TO (%s)%s', t, c.parent, lo, hi, opts);
        IF grants THEN
            PERFORM perf._partition_copy_grants(c.parent, t::regclass);
        END IF;
        "set" := c.parent;
        action := 'create';
        object := t::regclass::text;
        detail := format('FROM (%s) TO (%s)', lo, hi);
        RETURN NEXT;
        k := k2;
    END LOOP;
    IF c.default_partition THEN
        t := format('%I.%I', nsp, perf._partition_name(pname, '_default'));
        EXECUTE format('CREATE TABLE %s PARTITION OF %s DEFAULT%s', t, c.parent, opts);
        IF grants THEN
            PERFORM perf._partition_copy_grants(c.parent, t::regclass);
        END IF;
        RETURN QUERY SELECT c.parent, 'create'::text, t::regclass::text, 'DEFAULT'::text;
    END IF;
    IF current_setting('role') IS DISTINCT FROM saved_role THEN  -- (never SET inside a job's restricted context)
        PERFORM set_config('role', saved_role, true);
    END IF;
END $$;

-- Refuses (22023) settings a set cannot run with: premake outside 0..10000, an unknown
-- retention_mode, a retention that is not a non-negative interval (time sets) or whole
-- number (integer sets). c.kind must be set; the mode and premake are checked for any kind.
CREATE FUNCTION perf._partition_check_settings(c perf.partition_config) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    iv interval;
BEGIN
    IF c.premake < 0 OR c.premake > 10000 THEN
        RAISE EXCEPTION 'premake must be between 0 and 10000, not %', c.premake
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT (c.retention_mode IN ('drop', 'detach') OR c.retention_mode LIKE 'schema:_%') THEN
        RAISE EXCEPTION 'invalid retention_mode "%"', c.retention_mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''drop'', ''detach'' or ''schema:<name>''.';
    END IF;
    IF c.retention IS NULL OR c.kind IS NULL OR c.kind = 'hash' THEN
        RETURN;
    END IF;
    IF c.kind = 'integer' THEN
        IF c.retention !~ '^\s*[0-9]+\s*$' THEN
            RAISE EXCEPTION 'invalid retention "%"', c.retention
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An integer partition set takes a whole number: how far below the largest value partitions are kept.';
        END IF;
        RETURN;
    END IF;
    BEGIN
        iv := c.retention::interval;
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'invalid retention "%"', c.retention
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A time partition set takes an interval such as ''30 days''.';
    END;
    IF iv < interval '0' THEN
        RAISE EXCEPTION 'invalid retention "%": it must not be negative', c.retention
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A negative retention would remove partitions that are not old, including today''s.';
    END IF;
END $$;

-- Makes `parent` a managed partition set.
--   Range by time (timestamptz, timestamp, date column; interval '1 day', '1 month', ...) or
--   by integer (smallint/integer/bigint column; interval '100000'). premake: partitions kept
--   ahead of now (time) or of the largest value (integer). retention: partitions wholly
--   older than this (an interval, or an integer distance below the largest value) are
--   dropped, detached ('detach') or detached and moved to a schema ('schema:<name>').
--   start: first partition's lower bound (older partitions for existing rows are made by
--   draining). default_partition: a DEFAULT partition catches rows no partition covers.
--   template: a table whose storage parameters new partitions copy.
-- parent must be an empty partitioned table PARTITION BY RANGE (column) without partitions,
-- or a plain table, which is converted (see README: which locks are taken when).
CREATE FUNCTION perf.partition_table(parent regclass, "column" text, "interval" text,
                                     premake integer DEFAULT 4, retention text DEFAULT NULL,
                                     retention_mode text DEFAULT 'drop', start text DEFAULT NULL,
                                     default_partition boolean DEFAULT true,
                                     template regclass DEFAULT NULL)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    p regclass := $1;
    col text := $2;
    step text := $3;
    c perf.partition_config;
    kind "char";
    typ regtype;
    iv interval;
    start_key numeric;
    nsp text;
    pname text;
    keydef text;
    is_plain boolean;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.partition_table()');
    IF p IS NULL OR col IS NULL OR step IS NULL THEN
        RAISE EXCEPTION 'parent, column and interval must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT k.relkind, n.nspname, k.relname INTO kind, nsp, pname
      FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace WHERE k.oid = p;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p USING ERRCODE = 'wrong_object_type',
            HINT = 'Pass a plain table (to convert) or an empty partitioned table.';
    END IF;
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = p), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', p USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run perf.partition_table() as the table''s owner.';
    END IF;
    IF EXISTS (SELECT FROM perf.partition_config f WHERE f.parent = p) THEN
        RAISE EXCEPTION 'table % is already a partition set', p USING ERRCODE = 'duplicate_object',
            HINT = 'Change its premake, retention or template with perf.alter_partition_set().';
    END IF;
    SELECT a.atttypid::regtype INTO typ FROM pg_attribute a
     WHERE a.attrelid = p AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF typ IS NULL THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', col, p
            USING ERRCODE = 'undefined_column';
    END IF;
    c.parent := p;
    c.created := now();
    c.control := col;
    c.control_type := typ;
    c.step := step;
    c.tz := current_setting('TimeZone');
    c.retention := retention;
    c.retention_mode := coalesce(retention_mode, 'drop');
    c.default_partition := coalesce(default_partition, true);
    c.template := template;
    c.premake := coalesce(premake, 4);
    PERFORM perf._partition_check_settings(c);
    IF typ IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
        c.kind := 'time';
        BEGIN
            iv := step::interval;
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'invalid partition interval "%"', step
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A time column takes an interval such as ''1 day'' or ''1 month''.';
        END;
        IF iv <= interval '0' OR (extract(year FROM iv) * 12 + extract(month FROM iv) <> 0
                                  AND iv <> make_interval(months => (extract(year FROM iv) * 12 + extract(month FROM iv))::int))
           OR (extract(year FROM iv) * 12 + extract(month FROM iv) < 0)
           OR (typ = 'date'::regtype AND extract(epoch FROM iv)::numeric % 86400 <> 0
               AND extract(year FROM iv) * 12 + extract(month FROM iv) = 0) THEN
            RAISE EXCEPTION 'invalid partition interval "%"', step
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a positive interval of whole months (''1 month'', ''1 year'') or of fixed length (''1 day'', ''6 hours''), not a mix; whole days for a date column.';
        END IF;
        c.step_months := (extract(year FROM iv) * 12 + extract(month FROM iv))::int;
        IF c.step_months = 0 THEN
            c.step_seconds := extract(epoch FROM iv);
            IF c.step_seconds < 1 OR c.step_seconds <> trunc(c.step_seconds) THEN
                RAISE EXCEPTION 'invalid partition interval "%"', step
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Use whole seconds, at least ''1 second''.';
            END IF;
        END IF;
        PERFORM perf._partition_check_settings(c);
        -- Anchor: the start given, else now truncated to the interval's natural unit.
        IF start IS NOT NULL THEN
            BEGIN
                start_key := perf._partition_bucket_key(c, start);
            EXCEPTION WHEN others THEN
                RAISE EXCEPTION 'invalid start "%" for a % column', start, typ
                    USING ERRCODE = 'invalid_parameter_value';
            END;
            IF c.step_months > 0 THEN
                start_key := perf._partition_ts_key(date_trunc('month', perf._partition_key_ts(start_key)));
            END IF;
        ELSE
            start_key := perf._partition_ts_key(date_trunc(
                CASE WHEN c.step_months % 12 = 0 AND c.step_months > 0 THEN 'year'
                     WHEN c.step_months % 3 = 0 AND c.step_months > 0 THEN 'quarter'
                     WHEN c.step_months > 0 THEN 'month'
                     WHEN c.step_seconds % 604800 = 0 THEN 'week'
                     WHEN c.step_seconds % 86400 = 0 OR 86400 % c.step_seconds = 0 THEN 'day'
                     WHEN c.step_seconds % 3600 = 0 OR 3600 % c.step_seconds = 0 THEN 'hour'
                     WHEN c.step_seconds % 60 = 0 OR 60 % c.step_seconds = 0 THEN 'minute'
                     ELSE 'second' END,
                perf._partition_key_ts(perf._partition_bucket_key(c, perf.partition_now()::text))));
        END IF;
        c.anchor := start_key;
    ELSIF typ IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        c.kind := 'integer';
        IF step !~ '^\s*[0-9]+\s*$' OR step::numeric <= 0 OR step::numeric > 9223372036854775807 THEN
            RAISE EXCEPTION 'invalid partition interval "%"', step
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An integer column takes a positive whole number, such as ''100000''.';
        END IF;
        c.step_seconds := step::numeric;
        PERFORM perf._partition_check_settings(c);
        IF start IS NOT NULL AND start !~ '^\s*-?[0-9]+\s*$' THEN
            RAISE EXCEPTION 'invalid start "%" for a % column', start, typ
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        c.anchor := coalesce(start::numeric, 0);
        start_key := c.anchor;
    ELSE
        RAISE EXCEPTION 'cannot partition on column "%" of type %', col, typ
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'Range partition sets take a timestamptz, timestamp, date, smallint, integer or bigint column; use perf.partition_table(parent, column, hash_partitions) for hash partitioning.';
    END IF;

    is_plain := kind = 'r';
    IF NOT is_plain THEN
        keydef := pg_get_partkeydef(p);
        IF keydef IS DISTINCT FROM format('RANGE (%s)', quote_ident(col)) THEN
            RAISE EXCEPTION 'table % is partitioned by %, not by RANGE (%)', p, keydef, quote_ident(col)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Create the table with PARTITION BY RANGE on the control column.';
        END IF;
        IF EXISTS (SELECT FROM pg_inherits WHERE inhparent = p) THEN
            RAISE EXCEPTION 'table % is already partitioned', p
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'perf.partition_table() takes a partitioned table without partitions, or a plain table to convert.';
        END IF;
    END IF;

    IF is_plain THEN
        RETURN QUERY SELECT * FROM perf._partition_convert(c, CASE WHEN start IS NOT NULL THEN start_key END);
        RETURN;
    END IF;

    PERFORM perf._partition_config_put(p, to_jsonb(c)::text, false);
    RETURN QUERY SELECT * FROM perf._partition_create_initial(c, nsp, pname,
                                                              CASE WHEN start IS NOT NULL THEN start_key END);
END $$;

-- Hash partitioning: `partitions` partitions of an empty table PARTITION BY HASH (column).
CREATE FUNCTION perf.partition_table(parent regclass, "column" text, hash_partitions integer)
RETURNS TABLE ("set" regclass, action text, object text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    p regclass := $1;
    col text := $2;
    n int := $3;
    c perf.partition_config;
    nsp text;
    pname text;
    t text;
    i int;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.partition_table()');
    IF p IS NULL OR col IS NULL OR n IS NULL THEN
        RAISE EXCEPTION 'parent, column and hash_partitions must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF n < 1 OR n > 1024 THEN
        RAISE EXCEPTION 'hash_partitions must be between 1 and 1024, not %', n
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT n2.nspname, k.relname INTO nsp, pname
      FROM pg_class k JOIN pg_namespace n2 ON n2.oid = k.relnamespace WHERE k.oid = p;
    IF pg_get_partkeydef(p) IS DISTINCT FROM format('HASH (%s)', quote_ident(col)) THEN
        RAISE EXCEPTION 'table % is not partitioned BY HASH (%)', p, quote_ident(col)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Create it with PARTITION BY HASH on that column first.';
    END IF;
    IF EXISTS (SELECT FROM pg_inherits WHERE inhparent = p) THEN
        RAISE EXCEPTION 'table % is already partitioned', p
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    c.parent := p;
    c.created := now();
    c.control := col;
    c.control_type := (SELECT atttypid FROM pg_attribute WHERE attrelid = p AND attname = col);
    c.kind := 'hash';
    c.hash_partitions := n;
    c.premake := 0;
    c.retention_mode := 'drop';
    c.default_partition := false;
    PERFORM perf._partition_config_put(p, to_jsonb(c)::text, false);
    FOR i IN 0 .. n - 1 LOOP
        t := format('%I.%I', nsp, perf._partition_name(pname, '_h' || i));
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                       t, p, n, i);
        RETURN QUERY SELECT p, 'create'::text, t::regclass::text, format('MODULUS %s, REMAINDER %s', n, i);
    END LOOP;
END $$;

-- Changes a set's premake, retention, retention_mode or template (NULL: unchanged;
-- clear_retention / clear_template: back to keep everything / no template). The next
-- maintenance applies them. Checked as perf.partition_table() checks them; the caller must own
-- the table (and the template).
CREATE FUNCTION perf.alter_partition_set(parent regclass, premake integer DEFAULT NULL,
                                         retention text DEFAULT NULL, retention_mode text DEFAULT NULL,
                                         template regclass DEFAULT NULL,
                                         clear_retention boolean DEFAULT false,
                                         clear_template boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_variable
DECLARE
    c perf.partition_config;
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.alter_partition_set()');
    IF parent IS NULL OR clear_retention IS NULL OR clear_template IS NULL THEN
        RAISE EXCEPTION 'parent, clear_retention and clear_template must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO c FROM perf.partition_config f WHERE f.parent = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not a partition set', parent USING ERRCODE = 'undefined_object',
            HINT = 'Make it one with perf.partition_table(); perf.partition_sets lists the sets.';
    END IF;
    IF (retention IS NOT NULL AND clear_retention) OR (template IS NOT NULL AND clear_template) THEN
        RAISE EXCEPTION 'a setting cannot be both given and cleared'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass either retention or clear_retention => true (template or clear_template => true).';
    END IF;
    IF c.kind = 'hash' AND (premake IS NOT NULL OR retention IS NOT NULL OR retention_mode IS NOT NULL) THEN
        RAISE EXCEPTION 'hash partition set % has no premake or retention', parent
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A hash set has a fixed number of partitions.';
    END IF;
    c.premake := coalesce(premake, c.premake);
    c.retention := CASE WHEN clear_retention THEN NULL ELSE coalesce(retention, c.retention) END;
    c.retention_mode := coalesce(retention_mode, c.retention_mode);
    c.template := CASE WHEN clear_template THEN NULL ELSE coalesce(template, c.template) END;
    PERFORM perf._partition_check_settings(c);
    PERFORM perf._partition_config_put(c.parent, to_jsonb(c)::text, false);
END $$;

-- Stops managing a set (its partitions stay as they are).
CREATE FUNCTION perf.partition_forget(parent regclass) RETURNS void
LANGUAGE sql VOLATILE STRICT AS $$
    SELECT perf._require_role('perf_admin', 'perf.partition_forget()');
    SELECT perf._partition_config_put($1, NULL, true)
$$;

-- Exact row count of one table (not its partitions).
CREATE FUNCTION perf._partition_count(rel regclass) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM ONLY %s', rel) INTO n;
    RETURN n;
END $$;

-- Partition sets with their settings and totals.
CREATE VIEW perf.partition_sets AS
SELECT f.parent, f.control AS "column", f.control_type, f.kind, f.step AS "interval",
       f.premake, f.retention, f.retention_mode, f.default_partition, f.template,
       (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = f.parent) AS partitions,
       (SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0)
          FROM pg_inherits i WHERE i.inhparent = f.parent) AS total_bytes,
       (SELECT coalesce(sum(greatest(k.reltuples, 0)), 0)::bigint
          FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid
         WHERE i.inhparent = f.parent AND k.relpartbound IS NOT NULL
           AND pg_get_expr(k.relpartbound, k.oid) = 'DEFAULT') AS rows_in_default_estimate
  FROM perf.partition_config f
 WHERE EXISTS (SELECT FROM pg_class k WHERE k.oid = f.parent);
GRANT SELECT ON perf.partition_sets TO perf_reader;

-- Every partition of every set: bounds, estimated rows, size; for the default partition,
-- the exact number of rows in it (counted only when the catalog estimate is not zero).
CREATE VIEW perf.partitions AS
SELECT f.parent, i.inhrelid::regclass AS partition,
       pg_get_expr(k.relpartbound, k.oid) AS bounds,
       greatest(k.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(k.oid) AS bytes,
       pg_size_pretty(pg_total_relation_size(k.oid)) AS size,
       pg_get_expr(k.relpartbound, k.oid) = 'DEFAULT' AS is_default,
       CASE WHEN pg_get_expr(k.relpartbound, k.oid) = 'DEFAULT' AND has_table_privilege(k.oid, 'SELECT')
            THEN perf._partition_count(k.oid::regclass) END AS rows_in_default
  FROM perf.partition_config f
  JOIN pg_inherits i ON i.inhparent = f.parent
  JOIN pg_class k ON k.oid = i.inhrelid;
GRANT SELECT ON perf.partitions TO perf_reader;

-- Long partition work running now in this database (see progress.rs).
CREATE VIEW perf.partition_progress AS
SELECT p.pid, p.relid::regclass AS relation, p.phase, p.rows_done, p.rows_total,
       p.partitions_done, p.started
  FROM perf.partition_progress_all() p
 WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database());
GRANT SELECT ON perf.partition_progress TO perf_reader;
