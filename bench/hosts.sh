#!/usr/bin/env bash
# Many hosts: provisioning (POST /vms to libvirt reporting it running) on a second libvirt host
# (an unprivileged user's session daemon over a private sshd on 127.0.0.1) against the local
# host, and against raw virsh on each (vol-create-as, vol-upload, define, start) in the same
# run; then evacuating a disk with 1 GiB written against virsh vol-download | vol-upload.
# Real libvirt, software emulation, the tiny image.
# Usage: bench/hosts.sh [carve-binary] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
rounds=${2:-3}
[ -x "$carve" ] || cargo build --release
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssh-server >/dev/null
work=$(mktemp -d /var/tmp/carve-bench-hosts.XXXXXX)
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
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
  # The storage pool carve made for this throwaway data directory.
  pool=$(python3 -c "import hashlib,sys; print('carve-' + hashlib.sha256(sys.argv[1].encode()).hexdigest()[:12])" "$work/data/vms")
  virsh -q -c qemu:///system pool-destroy "$pool" >/dev/null 2>&1 || true
  virsh -q -c qemu:///system pool-undefine "$pool" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
python3 bench/hosts_bench.py "http://127.0.0.1:$port" "$admin" "$rounds"
