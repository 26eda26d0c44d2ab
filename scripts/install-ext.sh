#!/usr/bin/env bash
# Builds pg_perf and installs it into the PostgreSQL found by $PG_CONFIG.
# Usage: scripts/install-ext.sh [--release]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO_ROOT"
log "cargo pgrx install $*"
# target/ does not exist yet in a fresh clone (cargo creates it later than we write the log).
mkdir -p "$REPO_ROOT/target"
cargo pgrx install --pg-config "$PG_CONFIG" "$@" >"$REPO_ROOT/target/install.log" 2>&1 ||
    { tail -n 40 "$REPO_ROOT/target/install.log" >&2; die "cargo pgrx install failed"; }
