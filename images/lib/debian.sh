#!/usr/bin/env bash
# Builds a Debian image from Debian packages with mmdebstrap: the Debian cloud kernel,
# systemd, the real cloud-init (NoCloud: hostname, SSH keys, user-data, root password hash),
# openssh-server, qemu-guest-agent, a getty on ttyS0, and the root filesystem grown to the
# VM's disk at every boot. Booted directly (the kernel and initramfs of the image, copied
# beside it). Cached by the recipe, this script, the shared files and the packages' versions.
# Usage: images/lib/debian.sh NAME SUITE OUT_DIR   (called by images/debian-*/build.sh)
set -euo pipefail
lib=$(cd "$(dirname "$0")" && pwd)
name=${1:?usage: debian.sh NAME SUITE OUT_DIR}
suite=${2:?usage: debian.sh NAME SUITE OUT_DIR}
out=${3:?usage: debian.sh NAME SUITE OUT_DIR}
recipe=$lib/../$name
mirror=${CARVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${CARVE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages=(linux-image-cloud-amd64 systemd-sysv udev dbus cloud-init openssh-server qemu-guest-agent
          ifupdown isc-dhcp-client netbase e2fsprogs sudo ca-certificates less procps iproute2)

command -v mmdebstrap >/dev/null || { echo "$name: mmdebstrap is not installed (run scripts/setup-host.sh)" >&2; exit 1; }
# The cache key: the recipe's files and the versions the suite offers now of every package
# the image holds (named in the last build's .packages; the requested ones before a first
# build), read from the mirror's indexes (the host's apt knows only its own release): main,
# then updates, then security, the last one seen winning.
index=$(mktemp -d /var/tmp/carve-index.XXXXXX)
trap 'rm -rf "$index"' EXIT
indexes_read=true
for part in "$suite/main" "$suite-updates/main" "$suite-security/main"; do
  from=$mirror
  [ "${part%%/*}" = "$suite-security" ] && from=$security
  if ! curl -fsS --max-time 120 "$from/dists/$part/binary-amd64/Packages.xz" -o "$index/part.xz" \
     || ! xz -dc "$index/part.xz" >> "$index/all"; then
    indexes_read=false
    break
  fi
done
if [ "$indexes_read" = false ] && [ -f "$out/image.toml" ]; then
  echo "$name: cannot read the package indexes of $suite; keeping the image built in $out"
  exit 0
fi
# key_for NAMES_FILE: the key of the recipe with the indexed versions of those packages.
key_for() {
  local versions=""
  if [ "$indexes_read" = true ]; then
    versions=$(awk 'NR == FNR { want[$1] = 1; next }
      $1 == "Package:" { p = $2 } $1 == "Version:" && (p in want) { v[p] = $2 }
      END { for (p in v) print p, v[p] }' "$1" "$index/all" | sort)
  fi
  { cd "$lib/.." && find "lib" "$name" -type f -print0 | sort -z | xargs -0 sha256sum
    echo "$suite $mirror $security"; echo "$versions"; } | sha256sum | cut -c1-16
}
if [ -f "$out/.packages" ]; then
  cp "$out/.packages" "$index/names"
else
  printf '%s\n' "${packages[@]}" > "$index/names"
fi
key=$(key_for "$index/names")
if [ -f "$out/image.toml" ] && [ "$(cat "$out/.recipe-key" 2>/dev/null)" = "$key" ]; then
  echo "$name: up to date in $out"
  exit 0
fi
started=$(date +%s)
work=$(mktemp -d /var/tmp/carve-image-debian.XXXXXX)
trap 'rm -rf "$work" "$index"' EXIT
root=$work/root
include=$(IFS=,; echo "${packages[*]}")
# --variant=minbase: only what the packages need; recommends stay out.
mmdebstrap --quiet --variant=minbase --include="$include" \
  --customize-hook="cp -a '$lib/debian-rootfs/.' \"\$1/\"" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
  --customize-hook='chroot "$1" systemctl enable serial-getty@ttyS0.service qemu-guest-agent.service >/dev/null 2>&1 || true' \
  "$suite" "$root" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
  "deb $security $suite-security main"
version=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')
[ -f "$root/boot/initrd.img-$version" ] || { echo "$name: the image has no initramfs for $version" >&2; exit 1; }
# The filesystem: what the files take and a quarter more, in whole MiB (cloud-init grows it
# to the VM's disk at boot).
used=$(du -sm --apparent-size "$root" | cut -f1)
size=$(( (used * 5 / 4 + 127) / 128 * 128 ))
mkfs.ext4 -q -F -L carve-root -d "$root" -E root_owner=0:0 "$work/root.raw" "${size}M"
qemu-img convert -c -f raw -O qcow2 "$work/root.raw" "$work/disk.qcow2"

mkdir -p "$out.new"
cp "$root/boot/vmlinuz-$version" "$out.new/vmlinuz"
cp "$root/boot/initrd.img-$version" "$out.new/initrd.img"
mv "$work/disk.qcow2" "$out.new/"
debian=$(cat "$root/etc/debian_version")
cat > "$out.new/image.toml" <<TOML
# Made by images/$name/build.sh; read by carve to register the image.
name = "$name"
os = "debian"
version = "$debian"
default_user = "debian"
description = "Debian $debian ($suite) with cloud-init, OpenSSH and the QEMU guest agent; kernel $version"
boot = "kernel"
disk = "disk.qcow2"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0 root=/dev/vda rw"
min_memory_mib = 256
guest_agent = true
TOML
# Every package the image holds, so a later update of any of them (a library too) rebuilds it.
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}\n' | sort > "$out.new/.packages"
key_for "$out.new/.packages" > "$out.new/.recipe-key"
chmod 0755 "$out.new"
chmod 0644 "$out.new"/*
rm -rf "$out"
mv "$out.new" "$out"
echo "$name: built in $out in $(( $(date +%s) - started )) s: filesystem ${size} MiB, base $(du -h "$out/disk.qcow2" | cut -f1)"
