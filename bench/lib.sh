# Shared helpers for pg_perf's benchmarks. Sourced, never run directly.
#
# The project's rule (see bench/README.md): this machine's throughput swings ±40% between
# runs, so speed is reported only as side-by-side ratios or as CPU instruction counts from
# callgrind on a single-user backend. These helpers implement the second method:
#
#   bench_parse_install_n N args    `[--no-install] [N]` arguments (BENCH_INSTALL, N)
#   bench_init                      temp dir (owned by postgres) + cleanup trap
#   bench_prepare_template DIR FN   initdb, start a private server, run FN (which connects
#                                   with bench_psql or -h $BENCH_TMP -p $BENCH_PORT), stop it
#   bench_copy TEMPLATE [opts]      fresh copy of a template with options in postgresql.conf
#   bench_single TEMPLATE SQL OUT   plain single-user run on a fresh copy (pre-flight checks)
#   bench_callgrind_total ...       total instructions of one single-user run on a fresh copy
#   bench_instr_per_stmt ...        (total(2N) - total(N)) / N, both runs side by side
#   bench_pct X BASE                "+4.71%"
#
# Everything lives under one temp dir ($BENCH_TMP) that is removed on exit; nothing uses
# /var/tmp/pg_perf or the demo/test ports, and the private server listens on a unix socket
# in $BENCH_TMP only (no TCP), so it cannot collide with other clusters on this machine.

source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

BENCH_DIR="$REPO_ROOT/bench"
BENCH_OUT=${BENCH_OUT:-$BENCH_DIR/out}
# Port number of the briefly started setup server. Only names its socket file in $BENCH_TMP.
BENCH_PORT=${BENCH_PORT:-57101}
# How many callgrind runs go side by side (instruction counts do not depend on it).
BENCH_JOBS=${BENCH_JOBS:-$(nproc)}
BENCH_TMP=
_bench_servers=()
_bench_pids=()

# Creates $BENCH_TMP (readable and writable by postgres) and installs the cleanup trap.
bench_init() {
    [ -n "$BENCH_TMP" ] && return 0
    BENCH_TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/pg_perf-bench.XXXXXX")
    chmod 755 "$BENCH_TMP"
    [ "$(id -u)" = 0 ] && chown postgres: "$BENCH_TMP"
    trap _bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$BENCH_OUT"
}

_bench_cleanup() {
    local rc=$? pid data
    for pid in "${_bench_pids[@]}"; do
        _bench_kill_tree "$pid"
    done
    for pid in "${_bench_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for data in "${_bench_servers[@]}"; do
        as_postgres "$(pgbin pg_ctl)" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    done
    if [ -n "$BENCH_TMP" ]; then
        if [ "${BENCH_KEEP_TMP:-0}" = 1 ]; then log "kept $BENCH_TMP"; else rm -rf "$BENCH_TMP"; fi
    fi
    exit "$rc"
}

# Kills one process we started and everything below it, by pid, children first (so nothing
# is re-parented out of reach). SIGKILL: a backend under valgrind may not react to SIGTERM
# for a long time, and these runs have nothing worth saving.
_bench_kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        _bench_kill_tree "$child"
    done
    kill -KILL "$1" 2>/dev/null || true
}

# bench_usage: prints the calling script's header comment (from line 2 to the `source` line).
bench_usage() {
    sed -n '2,/^source/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
}

# bench_parse_install_n DEFAULT_N [args...]: the arguments of the instruction-count benchmarks,
# `[--no-install] [N]`. Sets BENCH_INSTALL (1 unless --no-install) and N (default
# $BENCH_N, else DEFAULT_N); -h prints the usage and exits.
bench_parse_install_n() {
    BENCH_INSTALL=1
    N=${BENCH_N:-$1}
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --no-install) BENCH_INSTALL=0 ;;
        -h | --help) bench_usage; exit 0 ;;
        -*) bench_usage; die "unknown option $1" ;;
        *) N=$1 ;;
        esac
        shift
    done
    [[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
}

# Installs valgrind if it is missing.
bench_require_valgrind() {
    command -v valgrind >/dev/null && return 0
    log "installing valgrind"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
    fi
    command -v valgrind >/dev/null || die "could not install valgrind"
}

# Builds and installs a release build of pg_perf (benchmarks must never measure a debug build).
bench_install_release() {
    log "installing a release build of pg_perf"
    bash "$REPO_ROOT/scripts/install-ext.sh" --release
}

# Describes the pg_perf library that the benchmark will load: path, size, date, and which
# build it is (by comparing it with cargo's outputs; release builds carry debug info too, so
# DWARF says nothing). Benchmarks must never be reported from a debug build.
bench_describe_pg_perf() {
    local so target kind="unknown build (matches neither target/release nor target/debug)" sum p
    so="$("$PG_CONFIG" --pkglibdir)/pg_perf.so"
    [ -f "$so" ] || { echo "pg_perf.so not installed"; return 0; }
    target=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
    sum=$(sha256sum <"$so")
    for p in release debug; do
        if [ -f "$target/$p/libpg_perf.so" ] && [ "$(sha256sum <"$target/$p/libpg_perf.so")" = "$sum" ]; then
            kind="$p build"
            [ "$p" = debug ] && kind="DEBUG build: numbers are not meaningful"
            break
        fi
    done
    printf '%s, %s bytes, installed %s, %s\n' "$so" "$(stat -c %s "$so")" \
        "$(date -u -r "$so" '+%Y-%m-%d %H:%M UTC')" "$kind"
}

# Checksum of the installed pg_perf.so, to notice a concurrent reinstall during a run.
bench_pg_perf_sum() {
    local so
    so="$("$PG_CONFIG" --pkglibdir)/pg_perf.so"
    if [ -f "$so" ]; then sha256sum "$so" | cut -c1-16; else echo missing; fi
}

# Commit of the working tree (read-only: no index refresh, no locks).
bench_describe_repo() {
    local rev dirty=""
    rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return 0; }
    if [ -n "$(GIT_OPTIONAL_LOCKS=0 git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        dirty=" (working tree has uncommitted changes)"
    fi
    echo "$rev$dirty"
}

# bench_server_start DATA [postgres -c options...]: starts a private server on a unix socket in
# $BENCH_TMP (no TCP). The data dir is registered for cleanup.
bench_server_start() {
    local data=$1
    shift
    _bench_servers+=("$data")
    as_postgres "$(pgbin pg_ctl)" -D "$data" -l "$BENCH_TMP/server.log" -w -t 120 \
        -o "-p $BENCH_PORT -c listen_addresses='' -c unix_socket_directories='$BENCH_TMP' $*" start >/dev/null ||
        { tail -n 30 "$BENCH_TMP/server.log" >&2; die "could not start the setup server"; }
}

bench_server_stop() {
    as_postgres "$(pgbin pg_ctl)" -D "$1" -m fast -w -t 120 stop >/dev/null
}

# bench_psql [psql args...]: psql as postgres against the setup server.
bench_psql() {
    as_postgres "$(pgbin psql)" -X -q -v ON_ERROR_STOP=1 -h "$BENCH_TMP" -p "$BENCH_PORT" -U postgres -d postgres "$@"
}

# bench_prepare_template DATA SETUP_FN [postgres -c options for the setup server...]
# initdb DATA, start it, call SETUP_FN (which may use bench_psql, or pgbench with
# -h "$BENCH_TMP" -p "$BENCH_PORT"), checkpoint and stop it cleanly. The result is the
# template that every measured run gets a fresh copy of.
bench_prepare_template() {
    local data=$1 setup_fn=$2
    shift 2
    log "initdb $data"
    as_postgres "$(pgbin initdb)" -D "$data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
    bench_server_start "$data" "$@"
    "$setup_fn"
    bench_psql -c CHECKPOINT
    bench_server_stop "$data"
    # State that preloaded libraries dumped at shutdown (pg_stat_statements.stat, pg_perf's
    # file, ...) would be loaded by every measured run of that library only: remove it, so
    # every configuration starts empty. Core's own pgstat.stat stays.
    find "$data/pg_stat" -mindepth 1 ! -name pgstat.stat -print -delete | sed 's/^/removed /' >&2
}

# Determinism. Callgrind counts are exact, but glibc's vectorised string functions take a
# different number of instructions depending on how their arguments are aligned, and the
# alignment of everything on the stack shifts with the size of argv and the environment. A
# different environment (one more exported variable) or a longer -c option moved a
# statement's count by up to ~0.08%. So every measured backend gets the same argv and the same
# environment: `env -i`, cwd = a data dir of fixed-length name, `-D .`, and the
# configuration's options written into the copy's postgresql.conf instead of passed as -c.
_BENCH_ENV=(PATH=/usr/bin:/bin LANG=C.UTF-8)

# _bench_conf_lines [postgres options...]: `-c name=value`, `-cname=value` or `--name=value`
# as postgresql.conf lines.
_bench_conf_lines() {
    local opt kv
    while [ $# -gt 0 ]; do
        opt=$1
        shift
        case "$opt" in
        -c) kv=${1:?"-c needs name=value"}; shift ;;
        -c*) kv=${opt#-c} ;;
        --*=*) kv=${opt#--} ;;
        *) die "unsupported postgres option '$opt' (use -c name=value)" ;;
        esac
        [[ "$kv" == *=* ]] || die "bad option '$kv' (expected name=value)"
        local name=${kv%%=*} value=${kv#*=}
        printf "%s = '%s'\n" "${name//-/_}" "${value//\'/\'\'}"
    done
}

# bench_copy TEMPLATE [postgres options...]: a fresh copy of the template in $BENCH_TMP
# (owned by postgres, fixed-length name) with the options appended to its postgresql.conf.
# Prints its path.
bench_copy() {
    local template=$1 data
    shift
    data=$(as_postgres mktemp -d "$BENCH_TMP/run.XXXXXX")
    as_postgres cp -a "$template/." "$data/"
    {
        echo "# bench options"
        _bench_conf_lines "$@"
    } | as_postgres tee -a "$data/postgresql.conf" >/dev/null
    echo "$data"
}

# _bench_backend DATA [wrapper...]: the single-user backend command line, run as postgres.
_bench_backend() {
    local data=$1
    shift
    as_postgres env -i -C "$data" "${_BENCH_ENV[@]}" "$@" "$(pgbin postgres)" --single -D . postgres
}

# bench_single TEMPLATE SQL_FILE STDOUT_FILE [postgres options...]: one single-user run
# without valgrind on a fresh copy of TEMPLATE. Fails if the backend reports an error.
bench_single() {
    local template=$1 sql=$2 out=$3 data
    shift 3
    local err="$out.stderr"
    data=$(bench_copy "$template" "$@")
    _bench_backend "$data" <"$sql" >"$out" 2>"$err" ||
        { cat "$err" >&2; die "single-user backend failed ($*)"; }
    rm -rf "$data"
    _bench_check_stderr "$err" "$*" strict
}

# _bench_check_stderr FILE DESC [strict]: dies if the backend logged an error (or, when
# strict, a warning: a misspelt option only gets a WARNING, and would silently measure the
# defaults); otherwise repeats warnings to stderr.
_bench_check_stderr() {
    local bad='(ERROR|FATAL|PANIC):  |^TRAP:|server process .* was terminated'
    [ "${3:-}" = strict ] && bad="$bad|WARNING:  "
    if grep -qE "$bad" "$1"; then
        grep -m 5 -E "$bad" "$1" >&2 || true
        die "single-user backend reported a problem ($2); see $1 (BENCH_KEEP_TMP=1 keeps it)"
    fi
    grep -m 3 'WARNING:  ' "$1" >&2 || true
}

# bench_callgrind_total TEMPLATE SQL_FILE OUT_PREFIX [postgres options...]
# Runs `postgres --single` on a fresh copy of TEMPLATE under callgrind, stdin = SQL_FILE,
# stdout to /dev/null. Writes OUT_PREFIX.out (callgrind), OUT_PREFIX.log (valgrind),
# OUT_PREFIX.stderr (postgres) and OUT_PREFIX.total (total Ir); the copy is removed after.
# OUT_PREFIX must be in a directory postgres can write to (under $BENCH_TMP).
bench_callgrind_total() {
    local template=$1 sql=$2 prefix=$3 data
    shift 3
    data=$(bench_copy "$template" "$@")
    # setarch -R: no address-space randomisation, for the same reason as above.
    _bench_backend "$data" setarch "$(uname -m)" -R \
        valgrind --tool=callgrind --dump-instr=no --collect-atstart=yes \
        --callgrind-out-file="$prefix.out" --log-file="$prefix.log" \
        <"$sql" >/dev/null 2>"$prefix.stderr" ||
        { tail -n 20 "$prefix.stderr" "$prefix.log" >&2; die "callgrind run failed ($*)"; }
    rm -rf "$data"
    _bench_check_stderr "$prefix.stderr" "$*"
    local total
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$prefix.out")
    [[ "$total" =~ ^[0-9]+$ ]] || die "no instruction total in $prefix.out"
    echo "$total" >"$prefix.total"
}

# bench_instr_per_stmt TEMPLATE SQL_N SQL_2N N NAME [postgres options...]
# Runs SQL_N and SQL_2N (the first N statements of SQL_2N must be SQL_N) under callgrind side
# by side, keeps the callgrind files as $BENCH_OUT/NAME.{N,2N}.out and sets BENCH_INSTR
# (instructions per statement, (total(2N) - total(N)) / N), BENCH_TOTAL_N and BENCH_TOTAL_2N.
# Startup, shutdown and first-use costs cancel out. Call it in the main shell (not in $(...)
# or <(...)): its background runs must be visible to the cleanup trap.
bench_instr_per_stmt() {
    local template=$1 sql_n=$2 sql_2n=$3 n=$4 name=$5
    shift 5
    local p1="$BENCH_TMP/$name.N" p2="$BENCH_TMP/$name.2N" pid rc=0
    BENCH_INSTR= BENCH_TOTAL_N= BENCH_TOTAL_2N=
    if [ "$BENCH_JOBS" -ge 2 ]; then
        # Background subshells inherit the traps; only the main shell may clean up.
        (trap - EXIT INT TERM; bench_callgrind_total "$template" "$sql_n" "$p1" "$@") &
        _bench_pids+=($!)
        (trap - EXIT INT TERM; bench_callgrind_total "$template" "$sql_2n" "$p2" "$@") &
        _bench_pids+=($!)
        for pid in "${_bench_pids[@]}"; do
            wait "$pid" || rc=$?
        done
        _bench_pids=()
        [ "$rc" = 0 ] || die "callgrind runs for $name failed"
    else
        bench_callgrind_total "$template" "$sql_n" "$p1" "$@"
        bench_callgrind_total "$template" "$sql_2n" "$p2" "$@"
    fi
    cp "$p1.out" "$BENCH_OUT/$name.N.out"
    cp "$p2.out" "$BENCH_OUT/$name.2N.out"
    BENCH_TOTAL_N=$(cat "$p1.total")
    BENCH_TOTAL_2N=$(cat "$p2.total")
    BENCH_INSTR=$(awk -v a="$BENCH_TOTAL_N" -v b="$BENCH_TOTAL_2N" -v n="$n" 'BEGIN { printf "%.1f\n", (b - a) / n }')
}

# bench_pct X BASE: "+4.71%" style difference of X relative to BASE.
bench_pct() {
    awk -v x="$1" -v b="$2" 'BEGIN { printf "%+.2f%%\n", (x / b - 1) * 100 }'
}
