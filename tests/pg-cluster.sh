#!/bin/sh
# A throwaway PostgreSQL cluster for the tests: its own directory and port on 127.0.0.1, run
# as the postgres user (PostgreSQL refuses root), never touching a system cluster.
#   tests/pg-cluster.sh start DIR PORT   -> prints the URL to export as CARVETEST_POSTGRES
#   tests/pg-cluster.sh stop DIR
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { runuser -u postgres -- "$@"; }
case "$1" in
start)
    dir=$2 port=$3
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        # A random password: other users of the machine cannot reach the test databases.
        umask 077
        head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$dir.password"
        chown postgres: "$dir.password"
        as_pg "$bin/initdb" -D "$dir" -U carve --auth=scram-sha-256 --pwfile="$dir.password" \
            -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 \
            || { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    # Many test apps each hold a small pool: room for them, and fsync off (a test cluster).
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
    echo "postgres://carve:$(cat "$dir.password")@127.0.0.1:$port"
    ;;
stop)
    dir=$2
    [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
    ;;
*)
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
