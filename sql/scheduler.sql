-- The job scheduler's catalog: jobs and their run history.
-- Written only through perf.schedule()/perf.alter_job()/perf.unschedule()/perf.run_job(),
-- which check who owns a job; the scheduler worker is the only other writer.
-- PUBLIC may read, and row-level security shows each role only the jobs it owns
-- (or whose owner role it is a member of); superusers see all.

CREATE TABLE perf.jobs (
    jobid          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    schedule       text NOT NULL,
    command        text NOT NULL,
    kind           text NOT NULL DEFAULT 'sql'
                   CHECK (kind IN ('sql', 'maintenance', 'stats_snapshot', 'partition_maintenance',
                                   'matview_refresh')),
    timezone       text NOT NULL,
    max_runtime    interval,
    retries        integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    backoff        interval NOT NULL DEFAULT '30 seconds',
    window_start   time,
    window_end     time,
    enabled        boolean NOT NULL DEFAULT true,
    owner          oid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Scheduled runs count from here: set when the job is created and when its
    -- schedule, time zone or window changes (so a changed schedule does not catch up).
    schedule_since timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE perf.job_runs (
    runid          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jobid          bigint NOT NULL REFERENCES perf.jobs ON DELETE CASCADE,
    trigger        text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'retry', 'change')),
    attempt        integer NOT NULL DEFAULT 1,
    status         text NOT NULL
                   CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    scheduled_for  timestamptz NOT NULL,
    queued_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at     timestamptz,
    finished_at    timestamptz,
    pid            integer,
    sqlstate       text,
    error          text,
    command_tag    text,
    rows           bigint
);
CREATE INDEX job_runs_jobid_runid ON perf.job_runs (jobid, runid DESC);
CREATE INDEX job_runs_active ON perf.job_runs (status) WHERE status IN ('pending', 'running');

REVOKE ALL ON perf.jobs, perf.job_runs FROM PUBLIC;
GRANT SELECT ON perf.jobs, perf.job_runs TO PUBLIC;
ALTER TABLE perf.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE perf.job_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY jobs_owner ON perf.jobs FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, owner, 'USAGE'));
CREATE POLICY job_runs_owner ON perf.job_runs FOR SELECT
    USING (EXISTS (SELECT 1 FROM perf.jobs j WHERE j.jobid = job_runs.jobid));
-- pg_dump keeps the jobs and their history (and ALTER EXTENSION UPDATE keeps every table's rows).
SELECT pg_catalog.pg_extension_config_dump('perf.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('perf.job_runs', '');

-- One row per job: when it runs next, how its last run went, how many runs in a row failed.
CREATE VIEW perf.jobs_status WITH (security_invoker = true) AS
SELECT j.jobid,
       j.name,
       j.kind,
       j.schedule,
       j.timezone,
       j.enabled,
       j.owner::regrole AS owner,
       CASE WHEN j.enabled THEN
           perf.job_next_run(j.schedule, j.timezone,
                             greatest(j.schedule_since, ls.last_slot),
                             j.schedule_since, j.window_start, j.window_end)
       END AS next_run,
       lr.started_at AS last_run,
       lr.status AS last_status,
       lr.finished_at - lr.started_at AS last_duration,
       le.finished_at AS last_error_at,
       le.sqlstate AS last_sqlstate,
       le.error AS last_error,
       (SELECT count(*) FROM perf.job_runs f
         WHERE f.jobid = j.jobid AND f.status = 'failed'
           AND f.runid > coalesce((SELECT max(s.runid) FROM perf.job_runs s
                                    WHERE s.jobid = j.jobid AND s.status = 'succeeded'), 0)
       ) AS consecutive_failures,
       EXISTS (SELECT 1 FROM perf.job_runs a
                WHERE a.jobid = j.jobid AND a.status IN ('pending', 'running')) AS running
  FROM perf.jobs j
  LEFT JOIN LATERAL (SELECT max(r.scheduled_for) AS last_slot FROM perf.job_runs r
                      WHERE r.jobid = j.jobid AND r.trigger = 'schedule') ls ON true
  LEFT JOIN LATERAL (SELECT r.started_at, r.finished_at, r.status FROM perf.job_runs r
                      WHERE r.jobid = j.jobid AND r.status <> 'skipped'
                      ORDER BY r.runid DESC LIMIT 1) lr ON true
  LEFT JOIN LATERAL (SELECT r.finished_at, r.sqlstate, r.error FROM perf.job_runs r
                      WHERE r.jobid = j.jobid AND r.status = 'failed'
                      ORDER BY r.runid DESC LIMIT 1) le ON true;
GRANT SELECT ON perf.jobs_status TO PUBLIC;

-- What maintenance runs did, one row per action: by a `maintenance` job's run (runid), or
-- by a perf.run_maintenance() call (token).
CREATE TABLE perf.maintenance_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    runid       bigint REFERENCES perf.job_runs ON DELETE CASCADE,
    token       bigint,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    action      text NOT NULL,
    object      text NOT NULL,
    reason      text NOT NULL,
    status      text NOT NULL,
    error       text,
    duration_ms float8
);
CREATE INDEX maintenance_log_runid ON perf.maintenance_log (runid);
CREATE INDEX maintenance_log_token ON perf.maintenance_log (token);
REVOKE ALL ON perf.maintenance_log FROM PUBLIC;
GRANT SELECT ON perf.maintenance_log TO perf_reader;
SELECT pg_catalog.pg_extension_config_dump('perf.maintenance_log', '');

-- Snapshots of this database's perf.statements counters (job kind `stats_snapshot`), and
-- the change between consecutive snapshots per statement: trends over time.
CREATE TABLE perf.statement_snapshots (
    taken_at        timestamptz NOT NULL,
    userid          oid NOT NULL,
    toplevel        boolean NOT NULL,
    queryid         bigint NOT NULL,
    calls           bigint NOT NULL,
    rows            bigint NOT NULL,
    total_exec_time float8 NOT NULL,
    shared_blks_hit bigint NOT NULL,
    shared_blks_read bigint NOT NULL,
    p95_exec_time   float8,
    PRIMARY KEY (taken_at, userid, toplevel, queryid)
);
REVOKE ALL ON perf.statement_snapshots FROM PUBLIC;
GRANT SELECT ON perf.statement_snapshots TO perf_reader;
SELECT pg_catalog.pg_extension_config_dump('perf.statement_snapshots', '');

-- Saves a snapshot now; returns the statements saved. Needs perf_admin (a `stats_snapshot`
-- job runs it as its owner, so the same rule applies to jobs). The check runs here, as the
-- caller; only then does perf._stats_snapshot_save() write as the table's owner.
CREATE FUNCTION perf.stats_snapshot() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM perf._require_role('perf_admin', 'perf.stats_snapshot()');
    RETURN perf._stats_snapshot_save();
END $$;

-- The writer behind perf.stats_snapshot(): SECURITY DEFINER so that nobody needs INSERT on
-- perf.statement_snapshots; EXECUTE only for perf_admin (PUBLIC calls perf.stats_snapshot(),
-- whose check names the role to grant).
CREATE FUNCTION perf._stats_snapshot_save() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE n bigint;
BEGIN
    INSERT INTO perf.statement_snapshots
    SELECT now(), s.userid, s.toplevel, s.queryid, s.calls, s.rows, s.total_exec_time,
           s.shared_blks_hit, s.shared_blks_read, s.p95_exec_time
      FROM perf.statements s
     WHERE s.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
REVOKE EXECUTE ON FUNCTION perf._stats_snapshot_save() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION perf._stats_snapshot_save() TO perf_admin;

CREATE VIEW perf.statement_trends AS
SELECT taken_at, userid::regrole AS role, toplevel, queryid,
       calls - lag(calls) OVER w AS calls,
       rows - lag(rows) OVER w AS rows,
       total_exec_time - lag(total_exec_time) OVER w AS total_exec_time_ms,
       (total_exec_time - lag(total_exec_time) OVER w)
           / nullif(calls - lag(calls) OVER w, 0) AS mean_exec_time_ms,
       shared_blks_read - lag(shared_blks_read) OVER w AS shared_blks_read,
       p95_exec_time
  FROM perf.statement_snapshots
WINDOW w AS (PARTITION BY userid, toplevel, queryid ORDER BY taken_at);
GRANT SELECT ON perf.statement_trends TO perf_reader;
