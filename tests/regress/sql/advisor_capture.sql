-- perf.suggest_indexes() on the captured workload: typed literals are planned (not
-- silently left out), and what cannot be planned is reported.
SET client_min_messages = notice;
CREATE TABLE adv_t AS
  SELECT g AS id, g % 2000 AS account_id,
         timestamptz '2024-01-01' + g * interval '1 minute' AS created_at
  FROM generate_series(1, 60000) g;
ALTER TABLE adv_t ADD PRIMARY KEY (id);
CREATE TABLE adv_gone (x int);
VACUUM ANALYZE adv_t;
SELECT perf.reset_stats() IS NOT NULL AS reset;
SELECT count(*) FROM adv_t WHERE created_at >= timestamptz '2024-01-10' AND created_at < timestamptz '2024-01-10' + interval '1 hour';
SELECT count(*) FROM adv_t WHERE created_at >= date '2024-01-12' AND created_at < date '2024-01-12' + 1;
SELECT count(*) FROM adv_gone WHERE x = 1;
DROP TABLE adv_gone;
SELECT query FROM perf.statements WHERE query LIKE '%adv_t%' ORDER BY query;
-- both typed-literal statements are helped by one index on created_at (`date $2 + $3`,
-- ambiguous as written, is planned with the integer $3 stands for); the statement on the
-- dropped table is left out, with a NOTICE and the reason
SELECT action, index_ddl, jsonb_array_length(queries_helped) AS helped
  FROM perf.suggest_indexes() WHERE table_name = 'public.adv_t';
SELECT query, calls, reason FROM perf.advisor_skipped();
DROP TABLE adv_t;
