#!/usr/bin/env bash
# Throwaway clusters for the demo and the tests, owned by user postgres (PostgreSQL refuses
# to run as root), started with the pgrx-config/ fragments.
# Usage: scripts/cluster.sh start|stop|restart|status|psql NAME PORT [psql args...]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd=${1:?usage: cluster.sh start|stop|restart|status|psql NAME PORT}
name=${2:?cluster name}
port=${3:?port}
shift 3 || true
data="$PERF_ROOT/$name"
# A Rust backtrace in the server environment would be appended to every ERROR's DETAIL.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE
sock="$PERF_ROOT/sock"

init_cluster() {
    mkdir -p "$PERF_ROOT"
    chmod 755 "$PERF_ROOT"
    [ "$(id -u)" = 0 ] && chown postgres: "$PERF_ROOT"
    as_postgres mkdir -p "$sock"
    if [ ! -f "$data/PG_VERSION" ]; then
        log "initdb $data"
        as_postgres "$(pgbin initdb)" -D "$data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
        echo "include_dir = 'pg_perf.conf.d'" | as_postgres tee -a "$data/postgresql.conf" >/dev/null
    fi
    # Copy the fragments in on every start: the repo may not be readable by postgres,
    # and an edited fragment should take effect on the next start.
    as_postgres mkdir -p "$data/pg_perf.conf.d"
    for f in "$REPO_ROOT"/pgrx-config/*.conf; do
        as_postgres tee "$data/pg_perf.conf.d/$(basename "$f")" <"$f" >/dev/null
    done
    printf "port = %s\nunix_socket_directories = '%s'\nlisten_addresses = '127.0.0.1'\n" "$port" "$sock" |
        as_postgres tee "$data/pg_perf.conf.d/00-cluster.conf" >/dev/null
    # PERF_NO_PRELOAD=1: a cluster that has pg_perf installed but not preloaded, to check
    # that CREATE EXTENSION then fails cleanly instead of half-working.
    if [ "${PERF_NO_PRELOAD:-0}" = 1 ]; then
        echo "shared_preload_libraries = ''" | as_postgres tee "$data/pg_perf.conf.d/zz-no-preload.conf" >/dev/null
    else
        as_postgres rm -f "$data/pg_perf.conf.d/zz-no-preload.conf"
    fi
}

case "$cmd" in
start)
    init_cluster
    if as_postgres "$(pgbin pg_ctl)" -D "$data" status >/dev/null 2>&1; then
        log "cluster $name already running on port $port"
    else
        log "starting cluster $name on port $port"
        as_postgres "$(pgbin pg_ctl)" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null ||
            { tail -n 30 "$data/server.log" >&2; die "could not start $name"; }
    fi
    ;;
stop)
    if [ -f "$data/PG_VERSION" ] && as_postgres "$(pgbin pg_ctl)" -D "$data" status >/dev/null 2>&1; then
        log "stopping cluster $name"
        as_postgres "$(pgbin pg_ctl)" -D "$data" -m fast -w stop >/dev/null
    fi
    ;;
restart)
    init_cluster
    as_postgres "$(pgbin pg_ctl)" -D "$data" -l "$data/server.log" -m fast -w -t 60 restart >/dev/null ||
        { tail -n 30 "$data/server.log" >&2; die "could not restart $name"; }
    ;;
status)
    as_postgres "$(pgbin pg_ctl)" -D "$data" status
    ;;
destroy)
    "$0" stop "$name" "$port"
    rm -rf "$data"
    ;;
psql)
    psql_at "$port" "$@"
    ;;
*) die "unknown command $cmd" ;;
esac
