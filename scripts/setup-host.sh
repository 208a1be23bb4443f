#!/usr/bin/env bash
# Installs and starts what carve needs on a Debian 12 host: libvirt, QEMU, passt and the
# tools that build guest images. Idempotent: safe to run again.
set -euo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "setup-host: run as root" >&2; exit 1; }; }
need_root

export DEBIAN_FRONTEND=noninteractive
sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ] && ! grep -q 'bookworm-backports' "$sources"; then
  # qemu-utils 10.x comes from backports on these machines; libvirt and QEMU must match it.
  sed -i '0,/^Suites: bookworm bookworm-updates$/s//Suites: bookworm bookworm-updates bookworm-backports/' "$sources"
fi

packages=(libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 libvirt-dev
  libvirt-clients pkg-config passt kmod cpio busybox-static genisoimage e2fsprogs
  qemu-utils curl xz-utils sqlite3 openssh-client rclone mmdebstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends -t bookworm-backports "${missing[@]}"
fi

# systemd may not be PID 1 (containers, CI): start the daemons by hand when they are not up.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
virsh -c qemu:///system version >/dev/null
echo "setup-host: libvirt is ready ($(virsh -c qemu:///system version | awk '/Running hypervisor/ {print $3, $4}'))"
