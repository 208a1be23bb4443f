#!/usr/bin/env bash
# The panel: dashboard pages per second for a tenant with 100 VMs (wrk with a session
# cookie, 127.0.0.1), the gzipped size of every main page, and 1,000 concurrent event streams
# (extra resident memory of carve, and how long one VM state change takes to reach all of
# them). carve runs on libvirt's test driver so the VMs cost no guest CPU.
# Usage: bench/panel.sh [carve-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
duration=${BENCH_SECONDS:-15}
streams=${BENCH_STREAMS:-1000}
ulimit -n "$(ulimit -Hn)"
# One client address holds all the streams and wrk's connections.
export CARVE_HTTP_MAX_CONNECTIONS_PER_CLIENT=$((streams + 200)) CARVE_HTTP_MAX_EVENT_STREAMS=$((streams + 100))
export CARVE_HTTP_MAX_EVENT_STREAMS_PER_USER=$((streams + 100))
# shellcheck source=bench/common.sh
. bench/common.sh
echo "tenant has $n running VMs"

# Log in through the panel's form: the session cookie is what a browser holds.
jar=$work/cookies
csrf=$(curl -sf -c "$jar" "$base/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1)
curl -sf -b "$jar" -c "$jar" -o /dev/null -d "email=c%40bench.example&password=customer+password&csrf=$csrf" "$base/login"
session=$(awk '$6 == "carve_session" {print $7}' "$jar")
[ -n "$session" ] || { echo "login failed" >&2; exit 1; }
cookie="carve_session=$session"

echo "== dashboard of 100 VMs with a session cookie (wrk -t2 -c32 -d${duration}s)"
wrk -t2 -c32 -d"${duration}s" --latency -H "Cookie: $cookie" "$base/" | tee "$work/dashboard.txt" | report
grep -q "Non-2xx" "$work/dashboard.txt" && { grep "Non-2xx" "$work/dashboard.txt"; exit 1; }

echo "== page sizes (gzip -9, without images)"
vm=$(api "$token" GET /vms | field "[0]['id']")
sftp_id=$(api "$token" POST /sftp-accounts '{"username":"benchfiles","password":"a long password"}' | field "['id']")
largest=0
for page in / /vms/new "/vms/$vm" /sftp "/sftp/$sftp_id" /keys /tokens /account /activity /static/panel.css /static/panel.js; do
  raw=$(curl -sf -H "Cookie: $cookie" "$base$page" | wc -c)
  gz=$(curl -sf -H "Cookie: $cookie" "$base$page" | gzip -9 | wc -c)
  printf '   %-28s %7d bytes, %6d gzipped\n' "$page" "$raw" "$gz"
  [ "$gz" -gt "$largest" ] && largest=$gz
done
echo "   largest gzipped: $largest bytes (target: under 102400)"

echo "== $streams concurrent event streams"
python3 bench/panel_streams.py --base "$base" --cookie "$cookie" --token "$token" --vm "$vm" \
  --streams "$streams" --pid "$server"
