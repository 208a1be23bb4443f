#!/usr/bin/env bash
# SFTP throughput: carve against OpenSSH's internal-sftp (its own sshd on a 127.0.0.1 port,
# chrooted user) with the same client (OpenSSH sftp) and cipher (aes128-gcm@openssh.com), in one
# run: 1 GiB upload and download, and 2,000 files of 4 KiB uploaded in one session.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q 'install ok installed' \
  || apt-get install -y -q --no-install-recommends openssh-server >/dev/null
cargo build --release --bin carve
exec python3 bench/sftp_bench.py --carve target/release/carve "$@"
