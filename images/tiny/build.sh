#!/usr/bin/env bash
# Builds the "tiny" image: a busybox root filesystem on a qcow2 disk, booted directly with the
# Debian cloud kernel and a small initramfs; it honours a NoCloud seed (see rootfs/etc/init.d/rcS).
# Only Debian packages are downloaded. Usage: images/tiny/build.sh OUT_DIR
set -euo pipefail
recipe=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}

kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel_pkg" ] || { echo "tiny: cannot find the Debian cloud kernel package (apt-get update?)" >&2; exit 1; }
busybox_ver=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)
[ -n "$busybox_ver" ] || { echo "tiny: busybox-static is not installed (run scripts/setup-host.sh)" >&2; exit 1; }

# The cache key: the recipe's files, the kernel package and busybox's version.
key=$( { cd "$recipe" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$kernel_pkg $busybox_ver"; } | sha256sum | cut -c1-16)
if [ -f "$out/image.toml" ] && [ "$(cat "$out/.recipe-key" 2>/dev/null)" = "$key" ]; then
  echo "tiny: up to date in $out"
  exit 0
fi

work=$(mktemp -d /var/tmp/carve-image-tiny.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download -q "$kernel_pkg" >/dev/null 2>&1 || apt-get download "$kernel_pkg"
dpkg-deb -x "$kernel_pkg"_*.deb kernel
version=${kernel_pkg#linux-image-}
moddir=kernel/lib/modules/$version
depmod -b kernel "$version"

# Modules in load order (dependencies first), as depmod resolves them.
modules_for() {
  for m in "$@"; do
    modprobe -d kernel -S "$version" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++'
}
boot_modules=$(modules_for virtio_pci virtio_blk)
late_modules=$(modules_for virtio_net isofs button evdev virtio_rng)

install_busybox() {
  local root=$1
  mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
}

copy_modules() {
  local dest=$1; shift
  mkdir -p "$dest"
  : > "$dest/load-order"
  for path in "$@"; do
    cp "$path" "$dest/"
    basename "$path" >> "$dest/load-order"
  done
}

# Initramfs: load the disk drivers, mount /dev/vda, hand over to its init.
mkdir -p initramfs/{dev,proc,sys,newroot,lib/modules}
install_busybox initramfs
copy_modules initramfs/lib/modules $boot_modules
install -m 0755 "$recipe/initramfs-init" initramfs/init
install -m 0755 "$recipe/probe" initramfs/probe
(cd initramfs && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) > initrd.img

# Root filesystem: busybox, the late modules, the seed handling.
mkdir -p rootfs/{dev,proc,sys,run,tmp,root,var/log,var/lib/cloud,srv,mnt,lib/modules}
install_busybox rootfs
copy_modules rootfs/lib/modules/boot $boot_modules
copy_modules rootfs/lib/modules/late $late_modules
cp -a "$recipe/rootfs/." rootfs/
chmod 1777 rootfs/tmp
chmod 0700 rootfs/root
chmod 0600 rootfs/etc/shadow
mkfs.ext4 -q -F -L carve-root -d rootfs -E root_owner=0:0 root.raw 256M
qemu-img convert -f raw -O qcow2 root.raw disk.qcow2

bb_version=${busybox_ver#*:}
bb_version=${bb_version%%-*}
mkdir -p "$out.new"
cp kernel/boot/vmlinuz-"$version" "$out.new/vmlinuz"
cp initrd.img disk.qcow2 "$out.new/"
cat > "$out.new/image.toml" <<TOML
# Made by images/tiny/build.sh; read by carve to register the image.
name = "tiny"
os = "busybox"
version = "$bb_version"
default_user = "root"
description = "busybox on the Debian cloud kernel $version; NoCloud seed; boots in seconds under TCG"
boot = "kernel"
disk = "disk.qcow2"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0 root=/dev/vda rw panic=10"
min_memory_mib = 96
TOML
echo "$key" > "$out.new/.recipe-key"
chmod 0755 "$out.new"
chmod 0644 "$out.new"/*
rm -rf "$out"
mv "$out.new" "$out"
echo "tiny: built in $out"
