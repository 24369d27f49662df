#!/bin/sh
# In the guest, after switch_root: run out/cmd.sh, then power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc 2>/dev/null
ip link set lo up 2>/dev/null
modprobe tls 2>/dev/null
ulimit -n 65536
sh @OUT@/out/cmd.sh > @OUT@/out/log.txt 2>&1
echo "rc=$?" >> @OUT@/out/log.txt
sync
echo o > /proc/sysrq-trigger
sleep 5
