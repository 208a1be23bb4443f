#!/usr/bin/env bash
# What the tests use besides carve: headless Chromium with its WebDriver, OpenSSH's server
# (a private sshd reaches the second libvirt host the multi-host tests make) and PostgreSQL
# (tests/with-postgres.sh runs a throwaway cluster of its own), as Debian packages;
# a virtualenv at /opt/carve-testenv (or $CARVETEST_VENV) with paramiko (a real SFTP
# client), selenium (drives Chromium) and schemathesis (API fuzzing), and axe-core (the npm
# package that checks the panel's accessibility) in its node_modules. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in chromium chromium-driver python3-venv openssh-client openssh-server postgresql postgresql-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm: Debian's package, unless a Node.js install already brings its own.
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  # Installing PostgreSQL must not make (and start) a system cluster: the tests run their own.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/carve-tests.conf
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
venv=${CARVETEST_VENV:-/opt/carve-testenv}
if ! "$venv/bin/python" -c 'import paramiko, schemathesis, selenium' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'paramiko>=3,<5' 'schemathesis>=4,<5' 'selenium>=4.20,<5'
fi
if [ ! -s "$venv/node_modules/axe-core/axe.min.js" ]; then
  npm install --prefix "$venv" --no-audit --no-fund --silent 'axe-core@^4.10'
fi
echo "test tools ready: $(chromium --version 2>/dev/null | head -n 1), $("$venv/bin/python" -c 'import paramiko, selenium; print("paramiko", paramiko.__version__, "selenium", selenium.__version__)'), axe-core $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$venv/node_modules/axe-core/package.json" | head -n 1)"
