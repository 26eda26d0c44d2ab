-- The SQL surface of the foundation: install, version, settings, reserved prefix.
CREATE EXTENSION pg_perf;
SELECT extname, extrelocatable, nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'pg_perf';
SELECT perf.version() ~ '^[0-9]+\.[0-9]+\.[0-9]+$' AS version_is_semver;
SHOW perf.enabled;
SELECT name, value, unit, context FROM perf.settings() WHERE name = 'perf.enabled';
-- every perf.* GUC is listed, with a description
SELECT count(*) = (SELECT count(*) FROM pg_settings WHERE name LIKE 'perf.%') AS all_listed,
       bool_and(description <> '') AS all_described
  FROM perf.settings();
-- the prefix is reserved: typos are errors, not silent placeholders
SET perf.nonsense = 1;
SET perf.enabled = off;
SHOW perf.enabled;
RESET perf.enabled;
-- the schema is fixed
ALTER EXTENSION pg_perf SET SCHEMA public;
