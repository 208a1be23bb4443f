#!/usr/bin/env bash
# API throughput: authenticated GET /api/v1/vms for a tenant with 100 VMs (wrk on 127.0.0.1),
# alone and during a flood of 200 concurrent wrong-password logins. carve runs on libvirt's
# test driver so the 100 VMs cost no guest CPU. Usage: bench/api.sh [carve-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
duration=${BENCH_SECONDS:-15}
work=$(mktemp -d /var/tmp/carve-bench-api.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_LIBVIRT_URI=test:///default CARVE_LIBVIRT_DOMAIN_TYPE=qemu CARVE_HTTP_LISTEN=127.0.0.1:$port
export CARVE_NETWORK_FORWARD_PORTS=38000-38999 CARVE_QUOTA_MAX_VMS=1000 CARVE_QUOTA_MAX_VCPUS=1000
export CARVE_QUOTA_MAX_MEMORY_MIB=10000000 CARVE_QUOTA_MAX_DISK_GIB=100000
export CARVE_CAPACITY_CPU_OVERCOMMIT=100 CARVE_CAPACITY_MEMORY_OVERCOMMIT=100 CARVE_CAPACITY_DISK_OVERCOMMIT=100
export RUST_LOG=warn
# The flood must cost a real argon2 hash per attempt, so throttling is set out of the way;
# BENCH_THROTTLE=1 keeps carve's default limits instead.
if [ "${BENCH_THROTTLE:-0}" != 1 ]; then
  export CARVE_AUTH_MAX_FAILURES_PER_ACCOUNT=1000000000 CARVE_AUTH_MAX_FAILURES_PER_CLIENT=1000000000
fi
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
echo "carve pid $server" >&2
base=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
api() { curl -sf -H "Authorization: Bearer $1" -H 'content-type: application/json' -X "$2" "$base/api/v1$3" ${4:+-d "$4"}; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
api "$admin" POST /plans '{"name":"small","vcpus":1,"memory_mib":128,"disk_gib":1}' >/dev/null
tenant=$(api "$admin" POST /tenants '{"name":"bench"}' | field "['id']")
api "$admin" POST /users "{\"email\":\"c@bench.example\",\"password\":\"customer password\",\"role\":\"customer\",\"tenant_id\":\"$tenant\"}" >/dev/null
token=$(curl -sf -H 'content-type: application/json' "$base/api/v1/tokens" -d '{"email":"c@bench.example","password":"customer password"}' | field "['token']")
for i in $(seq 1 100); do api "$token" POST /vms "{\"name\":\"vm$i\",\"plan\":\"small\",\"image\":\"tiny\",\"ports\":[22,80]}" >/dev/null; done
for _ in $(seq 1 300); do
  n=$(api "$token" GET /vms | python3 -c 'import json,sys; print(sum(v["state"]=="running" for v in json.load(sys.stdin)))')
  [ "$n" = 100 ] && break
  sleep 0.2
done
bytes=$(api "$token" GET /vms | wc -c)
echo "tenant has $n running VMs; GET /api/v1/vms answers $bytes bytes"

cat > "$work/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"c@bench.example","password":"not the password"}'
LUA
report() { awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /^ +50%/ {p50=$2} END {printf "%s req/s, p50 %s, p99 %s\n", rps, p50, p99}'; }

echo "== GET /api/v1/vms alone (wrk -t2 -c32 -d${duration}s)"
wrk -t2 -c32 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/vms" | tee "$work/alone.txt" | report
echo "== GET /api/v1/vms during 200 concurrent wrong-password logins"
wrk -t1 -c200 -d"$((duration + 4))s" -s "$work/login.lua" --latency "$base/api/v1/tokens" > "$work/flood.txt" &
flood=$!
sleep 2
wrk -t1 -c8 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/vms" | tee "$work/during.txt" | report
wait $flood
echo "   the flood: $(report < "$work/flood.txt") ($(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/flood.txt" || true))"
