-- Views and index-health functions over pg_perf's statement statistics.
-- Identifiers are shown through regclass/quote_ident, so output is safe to paste into SQL.

-- Every recorded statement (all databases), pg_stat_statements-style, plus p50/p95/p99.
CREATE VIEW perf.statements AS
    SELECT * FROM perf.query_stats(true);

-- Which columns each statement of this database filters, joins, sorts and groups on.
CREATE VIEW perf.predicates AS
SELECT p.queryid,
       p.relid::regclass AS relation,
       CASE WHEN p.funcid <> 0
            THEN format('%s(%s)', p.funcid::regproc, quote_ident(a.attname))
            ELSE quote_ident(a.attname) END AS column_expr,
       o.oprname::text AS operator,
       CASE
           WHEN p.kind IN ('sort', 'group') THEN p.kind
           WHEN EXISTS (SELECT 1 FROM pg_amop am JOIN pg_am m ON m.oid = am.amopmethod
                         WHERE am.amopopr = p.opno AND m.amname = 'btree' AND am.amopstrategy = 3)
                THEN 'equality'
           WHEN EXISTS (SELECT 1 FROM pg_amop am JOIN pg_am m ON m.oid = am.amopmethod
                         WHERE am.amopopr = p.opno AND m.amname = 'btree')
                THEN 'range'
           WHEN EXISTS (SELECT 1 FROM pg_amop am JOIN pg_am m ON m.oid = am.amopmethod
                         WHERE am.amopopr = p.opno AND m.amname IN ('gin', 'gist'))
                THEN 'containment'
           WHEN o.oprname IN ('~~', '~~*', '~', '~*') THEN 'pattern'
           ELSE 'other'
       END AS operator_class,
       p.kind,
       p.node_group,
       p.position,
       p.with_constant,
       p.est_selectivity,
       p.actual_selectivity,
       p.calls,
       p.total_time_ms
  FROM perf.query_predicates() p
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = p.relid AND a.attnum = p.attnum
  LEFT JOIN pg_catalog.pg_operator o ON o.oid = p.opno;

-- Predicates aggregated per (relation, AND-ed column set, operators, kind) over the workload:
-- what pg_qualstats reports, and what the index advisor reads.
CREATE VIEW perf.predicate_stats AS
WITH per_node AS (
    -- AND-ed filters are a set (sorted by name, so equal sets aggregate together);
    -- sort and group keys keep their order, which decides an index's column order.
    SELECT queryid, relation, kind, node_group,
           string_agg(column_expr, ', ' ORDER BY CASE WHEN kind IN ('sort', 'group') THEN position END, column_expr) AS columns,
           string_agg(coalesce(operator, '-'), ', ' ORDER BY CASE WHEN kind IN ('sort', 'group') THEN position END, column_expr) AS operators,
           string_agg(operator_class, ', ' ORDER BY CASE WHEN kind IN ('sort', 'group') THEN position END, column_expr) AS operator_classes,
           bool_and(with_constant) AS with_constants,
           min(est_selectivity) AS est_selectivity,
           min(actual_selectivity) AS actual_selectivity,
           max(calls) AS calls,
           max(total_time_ms) AS total_time_ms
      FROM perf.predicates
     GROUP BY queryid, relation, kind, node_group)
SELECT relation, columns, operators, operator_classes, kind,
       count(DISTINCT queryid) AS queries,
       sum(calls)::bigint AS calls,
       sum(total_time_ms) AS total_time_ms,
       avg(est_selectivity) AS avg_est_selectivity,
       avg(actual_selectivity) AS avg_actual_selectivity
  FROM per_node
 GROUP BY relation, columns, operators, operator_classes, kind
 ORDER BY sum(total_time_ms) DESC;

-- Per table: sequential vs index scans, rows read per sequential scan, write rates, size,
-- and how many recorded statements filter on it.
CREATE VIEW perf.table_access AS
SELECT s.relid::regclass AS relation,
       s.n_live_tup,
       s.seq_scan,
       s.seq_tup_read,
       CASE WHEN s.seq_scan > 0 THEN s.seq_tup_read / s.seq_scan END AS rows_per_seq_scan,
       s.idx_scan,
       s.idx_tup_fetch,
       CASE WHEN s.seq_scan + coalesce(s.idx_scan, 0) > 0
            THEN round(100.0 * s.seq_scan / (s.seq_scan + coalesce(s.idx_scan, 0)), 1) END
           AS seq_scan_pct,
       s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
       pg_total_relation_size(s.relid) AS total_bytes,
       coalesce(q.statements, 0) AS statements_filtering,
       q.filtered_columns
  FROM pg_catalog.pg_stat_user_tables s
  LEFT JOIN (SELECT relation::oid AS relid,
                    count(DISTINCT queryid) AS statements,
                    string_agg(DISTINCT column_expr, ', ') AS filtered_columns
               FROM perf.predicates
              WHERE kind IN ('filter', 'index_cond')
              GROUP BY relation) q ON q.relid = s.relid
 WHERE s.schemaname <> 'perf';  -- pg_perf's own bookkeeping tables

-- Indexes never scanned since statistics were last reset, that don't enforce a constraint.
CREATE FUNCTION perf.unused_indexes(min_bytes bigint DEFAULT 0)
RETURNS TABLE (index regclass, relation regclass, index_bytes bigint, idx_scan bigint,
               reason text, drop_ddl text)
LANGUAGE sql STABLE AS $$
    SELECT perf._require_role('perf_reader', 'perf.unused_indexes()');
    SELECT i.indexrelid::regclass,
           i.indrelid::regclass,
           pg_relation_size(i.indexrelid),
           s.idx_scan,
           format('never used for a scan since statistics were reset (%s)',
                  coalesce((SELECT d.stats_reset::text FROM pg_catalog.pg_stat_database d
                             WHERE d.datname = current_database()), 'cluster creation')),
           format('DROP INDEX CONCURRENTLY %s;', i.indexrelid::regclass)
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
     WHERE s.idx_scan = 0
       AND s.schemaname <> 'perf'  -- pg_perf's own tables (the scheduler's job history)
       AND i.indisvalid
       AND NOT i.indisunique
       AND NOT i.indisprimary
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid)
       AND pg_relation_size(i.indexrelid) >= min_bytes
     ORDER BY pg_relation_size(i.indexrelid) DESC, 1
$$;

-- Indexes made redundant by another index on the same table: identical definitions, or
-- (btree) a non-unique index whose keys are a leading prefix of another's.
CREATE FUNCTION perf.duplicate_indexes()
RETURNS TABLE (index regclass, covered_by regclass, relation regclass, reason text,
               index_bytes bigint, drop_ddl text)
LANGUAGE sql STABLE AS $$
    SELECT perf._require_role('perf_reader', 'perf.duplicate_indexes()');
    WITH idx AS (
        SELECT i.indexrelid, i.indrelid, c.relam, i.indnkeyatts AS nkeys, i.indnatts AS natts,
               i.indisunique OR i.indisprimary AS is_unique,
               i.indkey::int2[] AS keys, i.indclass::oid[] AS classes,
               i.indcollation::oid[] AS colls, i.indoption::int2[] AS opts,
               coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS exprs,
               coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS pred,
               EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid)
                   AS backs_constraint
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE i.indisvalid
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
           AND c.relnamespace::regnamespace::text NOT LIKE 'pg_toast%'),
    pairs AS (
        SELECT a.*, b.indexrelid AS other, b.backs_constraint AS other_backs, b.is_unique AS other_unique,
               (a.nkeys = b.nkeys AND a.natts = b.natts AND a.keys = b.keys AND a.exprs = b.exprs
                AND a.classes = b.classes AND a.colls = b.colls AND a.opts = b.opts) AS identical
          FROM idx a JOIN idx b
            ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid AND a.relam = b.relam
           AND a.pred = b.pred)
    SELECT p.indexrelid::regclass, p.other::regclass, p.indrelid::regclass,
           CASE WHEN p.identical THEN format('same definition as %s', p.other::regclass)
                ELSE format('its keys are a leading prefix of %s', p.other::regclass) END,
           pg_relation_size(p.indexrelid),
           format('DROP INDEX CONCURRENTLY %s;', p.indexrelid::regclass)
      FROM pairs p
     WHERE (p.identical
            -- of two identical indexes, keep the one backing a constraint, else the older
            AND NOT p.backs_constraint
            AND (p.other_backs
                 OR (p.other_unique AND NOT p.is_unique)
                 OR (p.other_unique = p.is_unique AND p.indexrelid > p.other)))
        OR (NOT p.identical
            AND p.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
            AND NOT p.is_unique AND NOT p.backs_constraint
            AND p.exprs = '' AND p.natts = p.nkeys
            AND p.nkeys < (SELECT b.nkeys FROM idx b WHERE b.indexrelid = p.other)
            AND p.keys[0:p.nkeys - 1] = (SELECT b.keys[0:p.nkeys - 1] FROM idx b WHERE b.indexrelid = p.other)
            AND p.classes[0:p.nkeys - 1] = (SELECT b.classes[0:p.nkeys - 1] FROM idx b WHERE b.indexrelid = p.other)
            AND p.colls[0:p.nkeys - 1] = (SELECT b.colls[0:p.nkeys - 1] FROM idx b WHERE b.indexrelid = p.other)
            AND p.opts[0:p.nkeys - 1] = (SELECT b.opts[0:p.nkeys - 1] FROM idx b WHERE b.indexrelid = p.other)
            AND (SELECT b.exprs FROM idx b WHERE b.indexrelid = p.other) = '')
     ORDER BY 3, 1
$$;

-- Who reads what (README.md, "Roles and privileges"): every role its own statements (the
-- text-visibility rule is applied inside perf.query_stats()), perf_reader the per-table view.
-- perf.reset_stats() is for perf_admin: it checks inside (perf._require_role), so EXECUTE
-- stays with PUBLIC and a refusal names the role to grant.
GRANT SELECT ON perf.statements, perf.predicates, perf.predicate_stats TO PUBLIC;
GRANT SELECT ON perf.table_access TO perf_reader;
