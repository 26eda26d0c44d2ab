# Shared by make-upgrade-sql.sh and upgrade-test.sh. Sourced after common.sh.
# sql/upgrades/previous names the previous release: "<version> <commit>".
read -r OLD_VERSION OLD_COMMIT <"$REPO_ROOT/sql/upgrades/previous"
NEW_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n 1)
UPGRADE_DIR="$REPO_ROOT/target/upgrade"
UPGRADE_SCRIPT="$REPO_ROOT/sql/pg_perf--$OLD_VERSION--$NEW_VERSION.sql"

# The install script of release VERSION built from COMMIT (cached under target/upgrade).
release_install_sql() {
    local version=$1 commit=$2 out="$UPGRADE_DIR/pg_perf--$1.sql"
    if [ ! -s "$out" ]; then
        log "generating the $version install script from $commit"
        local src="$UPGRADE_DIR/src-$version"
        rm -rf "$src"
        mkdir -p "$src"
        git -C "$REPO_ROOT" archive "$commit" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR="$UPGRADE_DIR/build" \
            cargo pgrx schema "pg$PG_MAJOR" --pg-config "$PG_CONFIG" --out "$out.tmp" >"$UPGRADE_DIR/schema-$version.log" 2>&1) ||
            { tail -n 30 "$UPGRADE_DIR/schema-$version.log" >&2; die "cargo pgrx schema failed for $commit"; }
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}
