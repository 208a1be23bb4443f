#!/usr/bin/env bash
# The database engines side by side: the API benchmark (wrk GET /api/v1/vms of a tenant with
# 100 VMs, and 50 concurrent creates until all run) on libvirt's test driver, with one carve
# on SQLite, one on PostgreSQL, and two clones on PostgreSQL behind carve's own HTTP balancer
# (examples/lb_serve.rs, the data plane `carve lb` runs). Every figure is reported as a ratio
# to the SQLite process of the same run. Usage: bench/db.sh [carve-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=$(realpath "${1:-target/release/carve}")
duration=${BENCH_SECONDS:-15}
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk >/dev/null
cargo build --release --example lb_serve -q
work=$(mktemp -d /var/tmp/carve-bench-db.XXXXXX)
chmod 0711 "$work"
pids=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  tests/pg-cluster.sh stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
pg=$(tests/pg-cluster.sh start "$work/pg" "$pg_port")
echo "PostgreSQL: a throwaway cluster on 127.0.0.1:$pg_port (fsync off, as in the tests)"

export CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_LIBVIRT_URI=test:///default CARVE_LIBVIRT_DOMAIN_TYPE=qemu CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=38000-38999 CARVE_QUOTA_MAX_VMS=1000 CARVE_QUOTA_MAX_VCPUS=1000
export CARVE_QUOTA_MAX_MEMORY_MIB=10000000 CARVE_QUOTA_MAX_DISK_GIB=100000
export CARVE_CAPACITY_CPU_OVERCOMMIT=100 CARVE_CAPACITY_MEMORY_OVERCOMMIT=100 CARVE_CAPACITY_DISK_OVERCOMMIT=100
# Each clone's test driver is its own in-memory hypervisor: the reconciler stays out of the
# way (the same for every engine) so clones do not report each other's VMs missing.
export CARVE_RECONCILER_INTERVAL_SECS=3600 RUST_LOG=warn

# serve NAME DATABASE_URL: starts carve on its own data directory; sets $served to its base URL.
serve() {
  local name=$1 url=$2 port
  port=$(free_port)
  mkdir -p "$work/$name"
  CARVE_DATA_DIR=$work/$name CARVE_DATABASE_URL=$url CARVE_HTTP_LISTEN=127.0.0.1:$port \
    "$carve" serve > /dev/null 2> "$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  served=http://127.0.0.1:$port
}
# shellcheck source=bench/seed.sh
. bench/seed.sh
report() { awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {printf "%s %s\n", rps, p99}'; }

# measure LABEL DATABASE_URL BASE FRONT: sets up a tenant with 100 VMs through the carve at
# BASE, then benchmarks through FRONT (the same carve, or the balancer over clones).
measure() {
  local label=$1 url=$2 base=$3 front=$4 admin start end n
  CARVE_DATA_DIR=$work/$label-admin CARVE_DATABASE_URL=$url "$carve" admin create-user --email admin@example.com --role admin <<< "bench admin password" >/dev/null
  admin=$(CARVE_DATA_DIR=$work/$label-admin CARVE_DATABASE_URL=$url "$carve" admin create-token --email admin@example.com --name bench)
  seed_tenant "$base" "$admin" '[]'
  # Through the balancer too: both clones answer before the clock starts.
  for _ in $(seq 1 600); do [ "$(seed_running "$front" "$token")" -ge 100 ] && break; sleep 0.1; done
  read -r rps p99 < <(wrk -t2 -c32 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$front/api/v1/vms" | report)
  start=$(date +%s.%N)
  seq 1 50 | xargs -P 50 -I{} curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    -X POST "$front/api/v1/vms" -d '{"name":"burst{}","plan":"small","image":"tiny"}'
  for _ in $(seq 1 1200); do
    n=$(seed_running "$front" "$token")
    [ "$n" -ge 150 ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  echo "$label $rps $p99 $(python3 -c "print(round($end - $start, 3))") $n" >> "$work/results"
  echo "   $label: GET /vms $rps req/s (p99 $p99); 50 concurrent creates running after $(python3 -c "print(round($end - $start, 2))") s ($n VMs running)"
}

echo "== one carve on SQLite"
serve sqlite "sqlite://$work/sqlite/carve.db"
measure sqlite "sqlite://$work/sqlite/carve.db" "$served" "$served"

echo "== one carve on PostgreSQL"
psql -qAt "$pg/postgres" -c 'CREATE DATABASE one'
serve pg-one "$pg/one"
measure postgresql "$pg/one" "$served" "$served"

echo "== two clones on PostgreSQL behind carve's balancer"
psql -qAt "$pg/postgres" -c 'CREATE DATABASE clones'
serve clone-1 "$pg/clones"
c1=$served
serve clone-2 "$pg/clones"
c2=$served
lb_port=$(free_port)
LB_THREADS=2 target/release/examples/lb_serve http "127.0.0.1:$lb_port" "${c1#http://}" "${c2#http://}" > /dev/null 2> "$work/lb.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$lb_port/healthz" >/dev/null && break; sleep 0.1; done
measure clones "$pg/clones" "$c1" "http://127.0.0.1:$lb_port"

echo "== ratios to one carve on SQLite (requests/s: higher is better; p99 and create time: lower is better)"
python3 - "$work/results" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    label, rps, p99, secs, n = line.split()
    ms = float(p99[:-2]) if p99.endswith("ms") else float(p99[:-2]) / 1000 if p99.endswith("us") else float(p99[:-1]) * 1000
    rows[label] = (float(rps), ms, float(secs))
base = rows["sqlite"]
print(f"{'':12} {'GET /vms req/s':>16} {'p99 ms':>8} {'50 creates s':>13}   ratios")
for label, (rps, ms, secs) in rows.items():
    print(f"{label:12} {rps:16.0f} {ms:8.2f} {secs:13.2f}   {rps / base[0]:.2f}x req/s, {ms / base[1]:.2f}x p99, {secs / base[2]:.2f}x create time")
PY
