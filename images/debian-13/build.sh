#!/usr/bin/env bash
# Builds the "debian-13" image: Debian trixie (see images/lib/debian.sh).
# Usage: images/debian-13/build.sh OUT_DIR
exec "$(dirname "$0")/../lib/debian.sh" debian-13 trixie "${1:?usage: build.sh OUT_DIR}"
