#!/usr/bin/env bash
# Custom images: POST /api/v1/images of a qcow2 base (debian-12's, about 180 MB) until carve
# has it registered (streamed to disk, SHA-256, header and `qemu-img info` + `check`), against
# the same file put on the host by hand in the same run: `cp` + `qemu-img info` + `qemu-img
# check` + `sha256sum`, and libvirt's own way, `virsh vol-create-as` + `vol-upload` into a dir
# pool. Medians over the rounds; ratios to each.
# Usage: bench/upload.sh [carve-binary] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
carve=${1:-target/release/carve}
rounds=${2:-5}
[ -x "$carve" ] || cargo build --release
images=${CARVE_IMAGE_DIR:-/var/lib/carve/images}
file=$images/debian-12/disk.qcow2
[ -f "$file" ] || ./images/build.sh "$images"
work=$(mktemp -d /var/tmp/carve-bench-upload.XXXXXX)
chmod 0711 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CARVE_DATA_DIR=$work/data CARVE_IMAGE_DIR=$images CARVE_LIBVIRT_URI=test:///default CARVE_LIBVIRT_DOMAIN_TYPE=qemu
export CARVE_HTTP_LISTEN=127.0.0.1:$port CARVE_SFTP_LISTEN=127.0.0.1:0 RUST_LOG=warn
export CARVE_NETWORK_FORWARD_PORTS=38400-38499 CARVE_LB_PORTS=38500-38599
echo "bench admin password" | "$carve" admin create-user --email admin@example.com --role admin >/dev/null
admin=$("$carve" admin create-token --email admin@example.com --name bench)
"$carve" serve 2> "$work/serve.log" &
server=$!
pool=bench-upload-$$
cleanup() {
  virsh -q -c qemu:///system pool-destroy "$pool" >/dev/null 2>&1 || true
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
base=http://127.0.0.1:$port
for _ in $(seq 1 600); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/pool" "$work/hand"
virsh -q -c qemu:///system pool-create-as "$pool" dir --target "$work/pool" >/dev/null
size=$(stat -c %s "$file")
now() { date +%s.%N; }
carve_t=() hand_t=() virsh_t=()
for i in $(seq 1 "$rounds"); do
  t0=$(now)
  id=$(curl -sf -X POST -T "$file" -H "Authorization: Bearer $admin" -H 'Content-Type: application/octet-stream' \
    "$base/api/v1/images?name=up$i&os=debian&boot=kernel&kernel_from=debian-12" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  t1=$(now)
  carve_t+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  curl -sf -X DELETE -H "Authorization: Bearer $admin" "$base/api/v1/images/$id" >/dev/null
  t0=$(now)
  cp "$file" "$work/hand/disk.qcow2" && sync -f "$work/hand/disk.qcow2"
  qemu-img info -f qcow2 --output=json "$work/hand/disk.qcow2" >/dev/null
  qemu-img check -q -f qcow2 "$work/hand/disk.qcow2"
  sha256sum "$work/hand/disk.qcow2" >/dev/null
  t1=$(now)
  hand_t+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  rm -f "$work/hand/disk.qcow2"
  t0=$(now)
  virsh -q -c qemu:///system vol-create-as "$pool" "up$i.qcow2" "$size" --format raw >/dev/null
  virsh -q -c qemu:///system vol-upload --pool "$pool" "up$i.qcow2" "$file"
  t1=$(now)
  virsh_t+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  virsh -q -c qemu:///system vol-delete --pool "$pool" "up$i.qcow2" >/dev/null
  printf 'round %d: carve %.2f s, cp + checks %.2f s, virsh vol-upload %.2f s\n' "$i" "${carve_t[-1]}" "${hand_t[-1]}" "${virsh_t[-1]}"
done
python3 - "$size" "${carve_t[*]}" "${hand_t[*]}" "${virsh_t[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1])
c, h, v = (statistics.median(map(float, a.split())) for a in sys.argv[2:5])
print(f"median of {size / 1e6:.0f} MB: carve {c:.2f} s ({size / c / 1e6:.0f} MB/s), cp + checks {h:.2f} s, "
      f"virsh vol-upload {v:.2f} s; ratio to cp + checks {c / h:.2f}, to vol-upload {c / v:.2f}")
PY
