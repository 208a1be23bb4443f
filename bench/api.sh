#!/usr/bin/env bash
# API throughput: authenticated GET /api/v1/vms for a tenant with 100 VMs (wrk on 127.0.0.1),
# alone and during a flood of 200 concurrent wrong-password logins. carve runs on libvirt's
# test driver so the 100 VMs cost no guest CPU. Usage: bench/api.sh [carve-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
duration=${BENCH_SECONDS:-15}
# The flood must cost a real argon2 hash per attempt, so throttling is set out of the way;
# BENCH_THROTTLE=1 keeps carve's default limits instead.
if [ "${BENCH_THROTTLE:-0}" != 1 ]; then
  export CARVE_AUTH_MAX_FAILURES_PER_ACCOUNT=1000000000 CARVE_AUTH_MAX_FAILURES_PER_CLIENT=1000000000
fi
# shellcheck source=bench/common.sh
. bench/common.sh
bytes=$(api "$token" GET /vms | wc -c)
echo "tenant has $n running VMs; GET /api/v1/vms answers $bytes bytes"

cat > "$work/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"c@bench.example","password":"not the password"}'
LUA

echo "== GET /api/v1/vms alone (wrk -t2 -c32 -d${duration}s)"
wrk -t2 -c32 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/vms" | tee "$work/alone.txt" | report
echo "== GET /api/v1/vms during 200 concurrent wrong-password logins"
wrk -t1 -c200 -d"$((duration + 4))s" -s "$work/login.lua" --latency "$base/api/v1/tokens" > "$work/flood.txt" &
flood=$!
sleep 2
wrk -t1 -c8 -d"${duration}s" --latency -H "Authorization: Bearer $token" "$base/api/v1/vms" | tee "$work/during.txt" | report
wait $flood
echo "   the flood: $(report < "$work/flood.txt") ($(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/flood.txt" || true))"
