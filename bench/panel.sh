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
awk '/Requests\/sec/ {rps=$2}
  /^ +99%/ {v=$2; ms=v+0; if (v ~ /us$/) ms/=1000; else if (v ~ /ms$/) ms+=0; else if (v ~ /s$/) ms*=1000; p99=ms}
  END {printf "   targets: at least 5000 pages/s: %s; p99 under 20 ms: %s\n", (rps >= 5000 ? "met" : "MISSED"), (p99 < 20 ? "met" : "MISSED")}' "$work/dashboard.txt"

echo "== page sizes (gzip -9, without images)"
vm=$(api "$token" GET /vms | field "[0]['id']")
sftp_id=$(api "$token" POST /sftp-accounts '{"username":"benchfiles","password":"a long password"}' | field "['id']")
pool=$(api "$token" POST /pools '{"name":"web","protocol":"http"}' | field "['id']")
# The admin's pages, with the admin's own session.
admin_jar=$work/admin-cookies
csrf=$(curl -sf -c "$admin_jar" "$base/login" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -n 1)
curl -sf -b "$admin_jar" -c "$admin_jar" -o /dev/null -d "email=admin%40example.com&password=bench+admin+password&csrf=$csrf" "$base/login"
admin_cookie="carve_session=$(awk '$6 == "carve_session" {print $7}' "$admin_jar")"
largest=0
largest_page=
size_of() {
  local who=$1 page=$2 raw gz
  raw=$(curl -sf -H "Cookie: $who" "$base$page" | wc -c)
  gz=$(curl -sf -H "Cookie: $who" "$base$page" | gzip -9 | wc -c)
  printf '   %-34s %7d bytes, %6d gzipped\n' "$page" "$raw" "$gz"
  if [ "$gz" -gt "$largest" ]; then largest=$gz; largest_page=$page; fi
}
for page in / /vms/new "/vms/$vm" /sftp "/sftp/$sftp_id" /keys /tokens /account /activity \
  /pools "/pools/$pool" /static/panel.css /static/panel.js /static/console.js /static/xterm/xterm.js \
  /static/xterm/xterm.css /static/xterm/addon-fit.js; do
  size_of "$cookie" "$page"
done
for page in /admin/tenants "/admin/tenants/$tenant" /admin/users /admin/plans /admin/images /admin/hosts \
  /admin/vms /admin/operations /admin/audit; do
  size_of "$admin_cookie" "$page"
done
verdict=met; [ "$largest" -lt 102400 ] || verdict=MISSED
echo "   largest gzipped: $largest bytes, $largest_page (target: under 102400: $verdict)"

echo "== $streams concurrent event streams"
python3 bench/panel_streams.py --base "$base" --cookie "$cookie" --token "$token" --vm "$vm" \
  --streams "$streams" --pid "$server"
