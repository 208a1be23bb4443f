#!/usr/bin/env bash
# Runs carve's benchmarks against their baselines in one go (see bench/README.md):
#   provisioning overhead vs virsh define + start, disk creation for 1 GiB vs 20 GiB bases,
#   resident memory of carve serve managing 100 VMs on the test driver.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
dpkg-query -W -f='${Status}' python3-libvirt 2>/dev/null | grep -q 'install ok installed' \
  || apt-get install -y -q --no-install-recommends python3-libvirt >/dev/null
cargo build --release --bin carve
work=${BENCH_DIR:-/var/tmp/carve-bench}
rm -rf "$work"
mkdir -p "$work"
chmod 0711 "$work"
/usr/bin/python3 bench/bench.py --carve target/release/carve --work "$work" \
  --images "${CARVE_IMAGE_DIR:-/var/lib/carve/images}" "$@"
