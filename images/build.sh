#!/usr/bin/env bash
# Builds every guest image recipe under images/ into OUT (default /var/lib/carve/images).
# Idempotent and cached: a recipe whose inputs have not changed is not built again.
# Usage: images/build.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${CARVE_IMAGE_DIR:-/var/lib/carve/images}}
mkdir -p "$out"
chmod 0755 "$out"
for recipe in "$here"/*/build.sh; do
  name=$(basename "$(dirname "$recipe")")
  "$recipe" "$out/$name"
done
