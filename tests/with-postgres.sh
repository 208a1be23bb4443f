#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (its own directory and a free port on
# 127.0.0.1, stopped and removed afterwards) named in CARVETEST_POSTGRES, so the tests run
# against PostgreSQL: tests/with-postgres.sh cargo test --test api
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /var/tmp/carve-pg-XXXXXX)
chmod 711 "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
  "$here/pg-cluster.sh" stop "$dir/cluster" || true
  rm -rf "$dir"
}
trap cleanup EXIT
CARVETEST_POSTGRES=$("$here/pg-cluster.sh" start "$dir/cluster" "$port")
export CARVETEST_POSTGRES
echo "with-postgres: a throwaway cluster on 127.0.0.1:$port ($dir)"
"$@"
