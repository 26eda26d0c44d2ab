-- The scheduler's SQL surface: perf.schedule()/alter_job()/unschedule()/run_job(),
-- perf.job_next_run(), validation with SQLSTATEs, ownership. Jobs here never come due
-- (disabled or yearly), so the output does not depend on the worker.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END $$;
SET perf.scheduler_timezone = 'UTC';
SELECT perf.schedule('r_yearly', '0 0 1 1 *', 'SELECT 1') > 0 AS scheduled;
SELECT perf.schedule('r_secs', '*/10 * * * * *', 'SELECT 1', enabled => false) > 0 AS seconds_field;
SELECT perf.schedule('r_every', '5 minutes', 'SELECT 1', enabled => false) > 0 AS interval;
SELECT perf.schedule('r_daily', '@daily', 'VACUUM', timezone => 'Europe/Berlin',
                     max_runtime => '10 minutes', retries => 2, backoff => '1 minute',
                     window_start => '01:00', window_end => '05:00', enabled => false) > 0 AS options;
SELECT name, schedule, command, kind, timezone, max_runtime, retries, backoff, window_start,
       window_end, enabled, owner::regrole
  FROM perf.jobs WHERE name LIKE 'r\_%' ORDER BY name;
SELECT name, kind, enabled, next_run IS NOT NULL AS has_next, last_run, consecutive_failures, running
  FROM perf.jobs_status WHERE name LIKE 'r\_%' ORDER BY name;
-- next run times: cron in a time zone (across the DST change of 2026-03-29 in Berlin),
-- intervals from their anchor, windows
SELECT perf.job_next_run('0 3 * * *', 'Europe/Berlin', '2026-03-28 12:00+00', '2026-01-01 00:00+00');
SELECT perf.job_next_run('0 3 * * *', 'Europe/Berlin', '2026-03-29 12:00+00', '2026-01-01 00:00+00');
SELECT perf.job_next_run('30 seconds', 'UTC', '2026-01-01 00:00:10+00', '2026-01-01 00:00:00+00');
SELECT perf.job_next_run('*/10 * * * *', 'UTC', '2026-01-01 12:00+00', '2026-01-01 00:00+00', '03:00', '04:00');
SELECT perf.job_next_run('nonsense', 'UTC', now(), now()) IS NULL AS invalid_is_null;
-- bad input: a clear error with its SQLSTATE, and nothing created
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '61 * * * *', 'SELECT 1')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '5 fortnights', 'SELECT 1')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', timezone => 'Mars/Olympus')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_yearly', '* * * * *', 'SELECT 1')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'BEGIN; VACUUM; COMMIT')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1; SAVEPOINT a')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'ROLLBACK')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELEC 1')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', '  ;  ')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', kind => 'reboot')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', kind => 'maintenance')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', retries => -1)$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', backoff => '0 seconds')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', window_start => '01:00')$$);
SELECT pg_temp.try($$SELECT perf.schedule('r_bad', '* * * * *', 'SELECT 1', max_runtime => '0')$$);
SELECT pg_temp.try($$SELECT perf.schedule('', '* * * * *', 'SELECT 1')$$);
SELECT count(*) AS half_created FROM perf.jobs WHERE name IN ('r_bad', '');
-- alter_job changes only what is given; the command is checked again
SELECT perf.alter_job('r_yearly', schedule => '0 0 1 7 *', retries => 3);
SELECT schedule, command, retries FROM perf.jobs WHERE name = 'r_yearly';
SELECT pg_temp.try($$SELECT perf.alter_job('r_yearly', command => 'COMMIT')$$);
SELECT pg_temp.try($$SELECT perf.alter_job('r_yearly', schedule => 'every day')$$);
SELECT pg_temp.try($$SELECT perf.alter_job('nope', enabled => false)$$);
SELECT pg_temp.try($$SELECT perf.unschedule('nope')$$);
SELECT pg_temp.try($$SELECT perf.run_job('nope')$$);
SELECT perf.alter_job('r_daily', clear_window => true, clear_max_runtime => true);
SELECT window_start, window_end, max_runtime FROM perf.jobs WHERE name = 'r_daily';
-- another role sees only its own jobs and cannot touch the catalog or others' jobs
CREATE ROLE r_sched_other;
GRANT perf_admin TO r_sched_other;  -- the job-owner rule is tested here, not the role check
SET ROLE r_sched_other;
SELECT count(*) AS visible FROM perf.jobs WHERE name = 'r_yearly';
SELECT pg_temp.try($$SELECT perf.alter_job('r_yearly', enabled => false)$$);
SELECT pg_temp.try($$SELECT perf.unschedule('r_yearly')$$);
SELECT pg_temp.try($$SELECT perf.run_job('r_yearly')$$);
SELECT pg_temp.try($$INSERT INTO perf.jobs (name, schedule, command, timezone, owner)
                     VALUES ('x', '* * * * *', 'SELECT 1', 'UTC', 10)$$);
SELECT pg_temp.try($$UPDATE perf.jobs SET owner = 10$$);
SELECT pg_temp.try($$DELETE FROM perf.job_runs$$);
SELECT perf.schedule('r_other', '0 0 1 1 *', 'SELECT 1', enabled => false) > 0 AS own_job;
SELECT name, owner::regrole FROM perf.jobs ORDER BY name;
SELECT name FROM perf.jobs_status ORDER BY name;
SELECT perf.unschedule('r_other');
RESET ROLE;
SELECT perf.unschedule(name) FROM perf.jobs WHERE name LIKE 'r\_%' ORDER BY name;
SELECT count(*) AS left_over FROM perf.jobs WHERE name LIKE 'r\_%';
DROP ROLE r_sched_other;
RESET perf.scheduler_timezone;
