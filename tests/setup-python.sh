#!/usr/bin/env bash
# The Python the tests use: paramiko (a real SFTP client) and schemathesis (API fuzzing),
# in a virtualenv at /opt/carve-testenv (or $CARVETEST_VENV). Idempotent.
set -euo pipefail
venv=${CARVETEST_VENV:-/opt/carve-testenv}
if ! "$venv/bin/python" -c 'import paramiko, schemathesis' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'paramiko>=3,<5' 'schemathesis>=4,<5'
fi
echo "setup-python: $("$venv/bin/python" -c 'import paramiko, schemathesis; print("paramiko", paramiko.__version__)')"
