#!/usr/bin/env bash
# carve's load-balancer data plane against HAProxy, in one run on this machine: the same two
# nginx backends on 127.0.0.1, wrk on 127.0.0.1, HTTP keep-alive and TCP; then resident
# memory with 10,000 idle client connections; and carve under load while one member joins
# and another drains. HAProxy runs with nbthread equal to carve's worker threads. carve's
# side is examples/lb_serve.rs: the data plane `carve lb` runs, over the nginx backends
# (carve lb's members are VMs).
# Usage: bench/lb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
for p in nginx-light haproxy wrk; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || apt-get install -y -q --no-install-recommends "$p" >/dev/null
done
cargo build --release --example lb_serve
threads=${LB_THREADS:-2}
duration=${BENCH_SECONDS:-15}
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /var/tmp/carve-bench-lb.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Three nginx backends answering a small page, keep-alive on (the third joins in the churn run).
backends=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$work/nginx$i"
  cat > "$work/nginx$i/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx$i/nginx.pid;
error_log $work/nginx$i/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$port;
    location / { return 200 "backend $i\n"; }
  }
}
CONF
  nginx -c "$work/nginx$i/nginx.conf" -g 'daemon off;' &
  pids+=($!)
  backends+=("127.0.0.1:$port")
done

carve_http=$(free_port); carve_tcp=$(free_port); ha_http=$(free_port); ha_tcp=$(free_port)
# HAProxy wants two descriptors per connection it may hold: fit maxconn under the hard
# limit, and hold that many idle clients (10,000 where the limit allows) on both proxies.
hard=$(ulimit -Hn)
haproxy_maxconn=$(( (hard - 100) / 2 ))
idle=${BENCH_IDLE:-$(( haproxy_maxconn < 10000 ? haproxy_maxconn - 50 : 10000 ))}
LB_THREADS=$threads target/release/examples/lb_serve http "127.0.0.1:$carve_http" "${backends[@]:0:2}" 2> "$work/carve-http.log" &
pids+=($!); carve_http_pid=$!
LB_THREADS=$threads target/release/examples/lb_serve tcp "127.0.0.1:$carve_tcp" "${backends[@]:0:2}" 2> "$work/carve-tcp.log" &
pids+=($!); carve_tcp_pid=$!
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $threads
  maxconn $haproxy_maxconn
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend http_in
  mode http
  bind 127.0.0.1:$ha_http
  default_backend http_pool
backend http_pool
  mode http
  balance roundrobin
  http-reuse always
  server b1 ${backends[0]} check
  server b2 ${backends[1]} check
frontend tcp_in
  mode tcp
  bind 127.0.0.1:$ha_tcp
  default_backend tcp_pool
backend tcp_pool
  mode tcp
  balance roundrobin
  server b1 ${backends[0]} check
  server b2 ${backends[1]} check
CONF
haproxy -f "$work/haproxy.cfg" &
pids+=($!); haproxy_pid=$!
sleep 3

report() { awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /^ +50%/ {p50=$2} /Non-2xx|Socket errors/ {err=err" "$0} END {printf "%s req/s, p50 %s, p99 %s%s\n", rps, p50, p99, err}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name url pid
  local before after
  before=$(cpu_ticks "$3")
  wrk -t2 -c64 -d"${duration}s" --latency "$2" > "$work/$1.txt"
  after=$(cpu_ticks "$3")
  local rps reqs
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$1.txt")
  reqs=$(awk '/requests in/ {print $1}' "$work/$1.txt")
  printf '   %-18s %s; CPU %.1f µs per request\n' "$1" "$(report < "$work/$1.txt")" \
    "$(python3 -c "print(($after - $before) * 1e6 / $(getconf CLK_TCK) / max(1, $reqs))")"
}
echo "== HTTP keep-alive (wrk -t2 -c64 -d${duration}s), proxies with $threads threads"
run carve-http "http://127.0.0.1:$carve_http/" "$carve_http_pid"
run haproxy-http "http://127.0.0.1:$ha_http/" "$haproxy_pid"
echo "== TCP (HTTP through a TCP pool; a new connection per wrk connection)"
run carve-tcp "http://127.0.0.1:$carve_tcp/" "$carve_tcp_pid"
run haproxy-tcp "http://127.0.0.1:$ha_tcp/" "$haproxy_pid"

echo "== carve HTTP while member 3 joins and member 1 drains, 5 s in (errors would show)"
churn=$(free_port)
LB_CHURN=5 LB_THREADS=$threads target/release/examples/lb_serve http "127.0.0.1:$churn" "${backends[@]}" 2> "$work/carve-churn.log" &
pids+=($!); churn_pid=$!
sleep 1
run carve-churn "http://127.0.0.1:$churn/" "$churn_pid"
grep -h "churn:" "$work/carve-churn.log" | sed 's/^/   /'

echo "== resident memory with $idle idle client connections"
python3 - "$carve_http" "$ha_http" "$carve_http_pid" "$haproxy_pid" "$idle" <<'PY'
import socket, sys, time
idle = int(sys.argv[5])
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
for port, pid, name in ((int(sys.argv[1]), sys.argv[3], "carve"), (int(sys.argv[2]), sys.argv[4], "haproxy")):
    before = rss(pid)
    conns = []
    for _ in range(idle):
        s = socket.create_connection(("127.0.0.1", port))
        conns.append(s)
    time.sleep(2)
    held = rss(pid)
    print(f"   {name:8} {before:.1f} MiB idle, {held:.1f} MiB with {idle} idle connections (+{held - before:.1f} MiB)")
    for s in conns:
        s.close()
    time.sleep(1)
PY
