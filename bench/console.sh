#!/usr/bin/env bash
# The console: keystroke-to-echo round trips through carve's WebSocket against the same
# through `virsh console` on the same VM in the same run (1,000 each, alternately a letter
# and a backspace at the guest's shell), and the resident memory 200 idle consoles add to
# carve. carve runs on real libvirt with one tiny guest (software emulation).
# Usage: bench/console.sh [carve-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
[ -x "$carve" ] || cargo build --release
[ -x /opt/carve-testenv/bin/python ] || ./tests/setup-test-tools.sh >/dev/null
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /var/tmp/carve-bench-console.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_HTTP_LISTEN=127.0.0.1:$port CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=38600-38699 CARVE_LB_PORTS=38700-38799
export CARVE_HTTP_MAX_CONNECTIONS_PER_CLIENT=1000 CARVE_LIBVIRT_DOMAIN_TYPE=qemu RUST_LOG=warn
# The 200 idle consoles are one user's.
export CARVE_CONSOLE_MAX_OPEN_PER_USER=1000
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
vm=
cleanup() {
  [ -n "$vm" ] && curl -sf -X DELETE -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/api/v1/vms/$vm" >/dev/null && sleep 3
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
base=http://127.0.0.1:$port
for _ in $(seq 1 600); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
api() { curl -sf -H "Authorization: Bearer $admin" -H 'content-type: application/json' -X "$1" "$base/api/v1$2" ${3:+-d "$3"}; }
api POST /plans '{"name":"small","vcpus":1,"memory_mib":128,"disk_gib":1}' >/dev/null
vm=$(api POST /vms '{"name":"bench","plan":"small","image":"tiny","root_password":"bench console password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["vm"]["id"])')
for _ in $(seq 1 300); do
  [ "$(api GET "/vms/$vm" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = running ] && break
  sleep 0.5
done
domain=$(virsh -c qemu:///system list --name | grep "$vm")
/opt/carve-testenv/bin/python bench/console_bench.py "$base" "$admin" "$vm" "$domain" "$server" "bench console password"
