#!/usr/bin/env bash
# Builds the "debian-12" image: Debian bookworm (see images/lib/debian.sh).
# Usage: images/debian-12/build.sh OUT_DIR
exec "$(dirname "$0")/../lib/debian.sh" debian-12 bookworm "${1:?usage: build.sh OUT_DIR}"
