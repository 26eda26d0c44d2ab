-- pg_perf's roles (see README.md, "Roles and privileges", and src/pg/privilege.rs).
--   perf_reader: monitoring reads (metrics, health, cache and index statistics, plans).
--   perf_admin:  changes to the database or to pg_perf's state; a member of perf_reader.
-- Roles belong to the cluster, not to a database or the extension: they are created here
-- only if missing (a second database, or CREATE EXTENSION after DROP EXTENSION, finds them),
-- and DROP EXTENSION leaves them. Memberships granted to them survive a re-install. They
-- are NOLOGIN groups: GRANT them to the roles that log in.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'perf_reader') THEN
        CREATE ROLE perf_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'perf_admin') THEN
        CREATE ROLE perf_admin NOLOGIN;
    END IF;
    IF NOT pg_catalog.pg_has_role('perf_admin', 'perf_reader', 'MEMBER') THEN
        GRANT perf_reader TO perf_admin;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles
                WHERE rolname IN ('perf_reader', 'perf_admin') AND (rolcanlogin OR rolsuper)) THEN
        RAISE WARNING 'pg_perf: an existing role perf_reader or perf_admin can log in or is a superuser'
            USING HINT = 'They are meant as NOLOGIN groups: ALTER ROLE ... NOLOGIN NOSUPERUSER.';
    END IF;
END
$roles$;
