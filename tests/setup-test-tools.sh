#!/usr/bin/env bash
# What the tests use besides carve: headless Chromium with its WebDriver (Debian packages),
# and a virtualenv at /opt/carve-testenv (or $CARVETEST_VENV) with paramiko (a real SFTP
# client), selenium (drives Chromium) and schemathesis (API fuzzing). Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in chromium chromium-driver python3-venv; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
venv=${CARVETEST_VENV:-/opt/carve-testenv}
if ! "$venv/bin/python" -c 'import paramiko, schemathesis, selenium' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'paramiko>=3,<5' 'schemathesis>=4,<5' 'selenium>=4.20,<5'
fi
echo "test tools ready: $(chromium --version 2>/dev/null | head -n 1), $("$venv/bin/python" -c 'import paramiko, selenium; print("paramiko", paramiko.__version__, "selenium", selenium.__version__)')"
