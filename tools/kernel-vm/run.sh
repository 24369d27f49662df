#!/bin/sh
# Usage: run.sh 'command' -- run it in the 6.1 guest (setup.sh first).
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "$HERE/../.." && pwd)/build/kernel-vm
KVER=${KVER:-6.1.0-56-amd64}
printf '%s\n' "$1" > "$OUT/out/cmd.sh"
rm -f "$OUT/out/log.txt"
if grep -qE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then ACCEL="-enable-kvm -cpu host"; else ACCEL="-cpu max"; fi
timeout "${VM_TIMEOUT:-1800}" qemu-system-x86_64 $ACCEL -smp "${VM_CPUS:-2}" -m "${VM_MEM:-6G}" \
  -kernel "$OUT/root/boot/vmlinuz-$KVER" -initrd "$OUT/initramfs.gz" \
  -append "console=ttyS0 loglevel=3 panic=-1" -nic none -nographic -no-reboot \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$OUT/out,mount_tag=vmout,security_model=none" \
  > "$OUT/out/console.txt" 2>&1
echo "qemu rc=$?"
cat "$OUT/out/log.txt" 2>/dev/null
