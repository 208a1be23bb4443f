#!/usr/bin/env bash
# Real OS images: POST /api/v1/vms of a Debian VM (debian-12, or the image named) with an SSH key until `ssh` runs a command
# in it, against the same image started by hand in the same run: a fresh overlay and a NoCloud
# seed made with qemu-img and genisoimage, carve's own domain XML (renamed, new paths and port)
# defined and started with virsh, until `ssh` answers. The guest's boot is the same; what
# differs is carve's work. Real libvirt, software emulation here.
# Usage: bench/debian.sh [carve-binary] [rounds] [image]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
rounds=${2:-2}
export BENCH_IMAGE=${3:-debian-12}
[ -x "$carve" ] || cargo build --release
[ -f "${CARVE_IMAGE_DIR:-/var/lib/carve/images}/$BENCH_IMAGE/image.toml" ] || ./images/build.sh
work=$(mktemp -d /var/tmp/carve-bench-debian.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
export CARVE_HTTP_LISTEN=127.0.0.1:$port CARVE_SFTP_LISTEN=127.0.0.1:0
export CARVE_NETWORK_FORWARD_PORTS=38200-38299 CARVE_LB_PORTS=38300-38399
export CARVE_LIBVIRT_DOMAIN_TYPE=qemu RUST_LOG=warn
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
cleanup() {
  python3 bench/debian_bench.py cleanup "http://127.0.0.1:$port" "$admin" "$work" || true
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
python3 bench/debian_bench.py run "http://127.0.0.1:$port" "$admin" "$work" "$rounds"
