-- Statement capture as seen from SQL: normalized texts and counts, predicates, argument
-- errors, index health. (Timings vary run to run, so only their presence is checked.)
SELECT perf.reset_stats() >= 0 AS reset;
CREATE TABLE accounts (id int PRIMARY KEY, email text, status text, balance int);
INSERT INTO accounts
SELECT g, 'u' || g || '@x', CASE WHEN g % 50 = 0 THEN 'closed' ELSE 'open' END, g
  FROM generate_series(1, 1000) g;
ANALYZE accounts;
SELECT balance FROM accounts WHERE id = 1;
SELECT balance FROM accounts WHERE id = 2;
SELECT count(*) FROM accounts WHERE status = 'closed' AND balance > 10;
SELECT count(*) FROM accounts WHERE lower(email) = 'u1@x';
SELECT status, count(*) FROM accounts GROUP BY status ORDER BY status;

-- constants are replaced by $n; the same shape is one entry
SELECT query, calls, rows, toplevel, total_exec_time > 0 AS timed,
       p50_exec_time IS NOT NULL AS has_p50
  FROM perf.statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND query ~ 'accounts' AND query !~ 'perf\.'
 ORDER BY query;

-- the columns each statement filters, joins, sorts and groups on (pg_perf's own tables left
-- out: the scheduler's worker may run its jobs in this database meanwhile)
SELECT relation, column_expr, operator, operator_class, kind, with_constant
  FROM perf.predicates WHERE relation::text NOT LIKE 'perf.%' ORDER BY 1, 2, 5, 3;
SELECT relation, columns, operator_classes, kind, queries
  FROM perf.predicate_stats WHERE relation::text NOT LIKE 'perf.%' ORDER BY 2, 4;

-- arguments are checked
SELECT count(*) > 0 AS ranked FROM perf.slow_queries(10, 'calls');
SELECT * FROM perf.slow_queries(-1);
SELECT * FROM perf.slow_queries(10, 'nope');
SELECT * FROM perf.why_slow(0);

-- index health: identical and prefix-covered indexes, never-used indexes
CREATE INDEX accounts_status_idx ON accounts (status);
CREATE INDEX accounts_status_balance_idx ON accounts (status, balance);
CREATE INDEX accounts_status_idx2 ON accounts (status);
CREATE UNIQUE INDEX accounts_email_key ON accounts (email);
SELECT index, covered_by, reason, drop_ddl FROM perf.duplicate_indexes() ORDER BY 1, 2;
SELECT index, relation, drop_ddl FROM perf.unused_indexes() ORDER BY 1;
SELECT relation, statements_filtering, filtered_columns FROM perf.table_access;

-- resetting statistics is for perf_admin (and superusers): a plain role is refused (42501)
CREATE ROLE regress_stats_plain;
SET ROLE regress_stats_plain;
DO $$ BEGIN PERFORM perf.reset_stats();
EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'refused: %', SQLERRM; END $$;
RESET ROLE;
DROP ROLE regress_stats_plain;
SELECT perf.reset_stats(queryid => 1) AS removed_none;

-- query ids: a repeated statement text (other constants) is answered from this
-- backend's memo; the cluster runs with perf.verify_query_ids = on, so a memoized id that
-- differed from core's jumble would show up here as a WARNING
SELECT capacity FROM perf.query_id_memo();
CREATE TEMP TABLE memo_before AS SELECT hits FROM perf.query_id_memo();
SELECT 1 + 1 AS n;
SELECT 2 + 3 AS n;
SELECT (SELECT hits FROM perf.query_id_memo()) - (SELECT hits FROM memo_before) AS memo_hits;
SELECT id FROM accounts ORDER BY 1 LIMIT 1;
SELECT id FROM accounts ORDER BY 1 LIMIT 2;
