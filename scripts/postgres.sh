#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks (Debian's `postgresql`, no systemd):
#   scripts/postgres.sh start DIR PORT   initdb (once) and start on 127.0.0.1:PORT; prints the URL
#   scripts/postgres.sh stop DIR         stop it (fast shutdown)
# initdb refuses to run as root, so as root the cluster runs as the `postgres` user (created by
# the Debian package) or `nobody`. Durability is off (fsync, full-page writes): it is for tests
# that are thrown away, never for data. Connections: up to 400 (the suite opens many catalogs).
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        local user=postgres
        id "$user" > /dev/null 2>&1 || user=nobody
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    port=${3:?usage: $0 start DIR PORT}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        owner=postgres
        id "$owner" > /dev/null 2>&1 || owner=nobody
        chown "$owner" "$dir"
        chmod 700 "$dir"
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir" -A trust -U depot --no-sync --locale=C -E UTF8 > "$dir.initdb.log" 2>&1 \
            || { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    as_owner "$bin/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" -o \
        "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=400" \
        start > /dev/null
    echo "postgres://depot@127.0.0.1:$port/postgres"
    ;;
stop)
    [ -f "$dir/postmaster.pid" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop > /dev/null
    ;;
*)
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
