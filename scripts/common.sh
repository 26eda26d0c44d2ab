# Shared settings and helpers for pg_perf's scripts. Sourced, never run directly.
# Everything is overridable from the environment so a developer can point at another server.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PGRX_VERSION=0.18.1
# Clusters live outside the repo (which may sit under /root, unreadable to postgres).
PERF_ROOT=${PERF_ROOT:-/var/tmp/pg_perf}
DEMO_PORT=${DEMO_PORT:-55432}
TEST_PORT=${TEST_PORT:-55433}
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

pgbin() { echo "$("$PG_CONFIG" --bindir)/$1"; }

# PostgreSQL refuses to run as root: when we are root, run server-side commands as postgres.
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# psql against one of our clusters: psql_at PORT [args...]
psql_at() {
    local port=$1
    shift
    "$(pgbin psql)" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}
