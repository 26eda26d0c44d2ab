#!/usr/bin/env bash
# Installs everything pg_perf needs to build, test and demo on a fresh Debian machine,
# skipping what is already there: PostgreSQL 15 + server headers, libclang (bindgen), sudo
# (cargo-pgrx's --runas uses it), valgrind (benchmarks), cargo-pgrx 0.18.1 and its init.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

want_pkgs=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang sudo pkg-config python3 python3-venv)
missing=()
for p in "${want_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them"
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$PG_CONFIG" ] || die "pg_config not found at $PG_CONFIG"
id postgres >/dev/null 2>&1 || die "the postgres user does not exist (postgresql-$PG_MAJOR should create it)"

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "cargo install cargo-pgrx $PGRX_VERSION (takes a few minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

pgrx_home=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "$pgrx_home/config.toml"; then
    log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi
