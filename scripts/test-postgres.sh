#!/usr/bin/env bash
# Runs the whole Swift suite again with the catalog in PostgreSQL: a throwaway cluster
# (scripts/postgres.sh) on a free loopback port, each store of the suite in its own schema
# (DEPOT_TEST_CATALOG_POSTGRES, see Database.location(forPath:)). Tests of SQLite's own file
# behaviour (a deleted catalog.db, its file lock) are skipped there and say why.
# Arguments go to `swift test` (e.g. --filter Lineage).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/depot-pg.XXXXXX)
chmod 755 "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() { scripts/postgres.sh stop "$dir/data" || true; rm -rf "$dir"; }
trap cleanup EXIT
url=$(scripts/postgres.sh start "$dir/data" "$port")
echo "PostgreSQL catalog for the suite: $url"
DEPOT_TEST_CATALOG_POSTGRES="$url" swift test --disable-xctest "$@"
