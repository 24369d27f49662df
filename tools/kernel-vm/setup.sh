#!/bin/sh
# Prepare build/kernel-vm: Debian's 6.1 kernel and modules, and an initramfs
# (busybox) that mounts the host's / over 9p with a tmpfs overlay.
set -e
KVER=${KVER:-6.1.0-56-amd64}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$HERE/../.." && pwd)/build/kernel-vm
DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 busybox-static kmod cpio >/dev/null
mkdir -p "$OUT/out" "$OUT/initramfs/bin" "$OUT/initramfs/mods"
cd "$OUT"
[ -d root/boot ] || { apt-get download "linux-image-$KVER" && dpkg-deb -x linux-image-$KVER*.deb root; }
/sbin/depmod -b "$OUT/root" "$KVER"
M=root/lib/modules/$KVER/kernel
for p in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko \
         drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko \
         drivers/virtio/virtio_pci.ko net/9p/9pnet.ko net/9p/9pnet_virtio.ko \
         fs/netfs/netfs.ko fs/fscache/fscache.ko fs/9p/9p.ko fs/overlayfs/overlay.ko; do
    cp "$M/$p" initramfs/mods/
done
cp /bin/busybox initramfs/bin/
sed "s|@OUT@|$OUT|g; s|@KVER@|$KVER|g" "$HERE/init" > initramfs/init
chmod +x initramfs/init
(cd initramfs && mkdir -p proc sys dev lower upper newroot && find . | cpio -o -H newc 2>/dev/null | gzip > ../initramfs.gz)
sed "s|@OUT@|$OUT|g" "$HERE/guest.sh" > guest.sh
echo "ready: $OUT"
