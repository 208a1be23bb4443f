#!/usr/bin/env bash
# Scale groups: the time from raising a group's `desired` by one to the new member taking
# traffic through the pool, against the time from creating a plain VM (same plan, image and
# user-data) to its forwarded port answering HTTP, alternately in the same run on real
# libvirt (tiny guests, software emulation). The pool checks every second with rise 1.
# Usage: bench/scale.sh [carve-binary] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
rounds=${2:-5}
[ -x "$carve" ] || cargo build --release
work=$(mktemp -d /var/tmp/carve-bench-scale.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_HTTP_LISTEN=127.0.0.1:$port CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=38400-38499 CARVE_LB_PORTS=38500-38599
export CARVE_LIBVIRT_DOMAIN_TYPE=qemu RUST_LOG=warn
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
cleanup() {
  python3 bench/scale_bench.py cleanup "http://127.0.0.1:$port" "$admin" || true
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
python3 bench/scale_bench.py run "http://127.0.0.1:$port" "$admin" "$rounds"
