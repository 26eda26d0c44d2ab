#!/usr/bin/env bash
# Installs pg_partman 5.x's SQL extension files (no background worker, no Python scripts) from a
# source checkout into this PostgreSQL's share directory, for bench/partition_bench.sh only:
# pg_perf never depends on pg_partman. Debian 12 ships 4.7.2; 5.x is built from source.
#
# Usage: bench/install-partman.sh DIR   (DIR: github.com/pgpartman/pg_partman at a 5.x tag,
#                                        e.g. git clone -b v5.1.0 https://github.com/pgpartman/pg_partman)
# It replaces any pg_partman.control installed before (the 4.7.2 version scripts stay, but
# CREATE EXTENSION then makes 5.x).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

src=${1:-}
[ -n "$src" ] && [ -f "$src/pg_partman.control" ] || die "usage: $0 PG_PARTMAN_SOURCE_DIR"
make -C "$src" NO_BGW=1 PG_CONFIG="$PG_CONFIG" >/dev/null
version=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$src/pg_partman.control")
dest="$("$PG_CONFIG" --sharedir)/extension"
install -m 644 "$src/pg_partman.control" "$src/sql/pg_partman--$version.sql" "$dest/"
log "pg_partman $version installed into $dest"
