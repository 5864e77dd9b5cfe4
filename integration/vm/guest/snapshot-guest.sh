#!/bin/sh
# Runs inside the initiator VM (busybox sh, root) against a rewind snapshot target
# (TARGET_IQN, read-only): discovery lists it, the kernel sees a write-protected disk, its ext4
# mounts read-only, and every file's checksum is printed for the host to compare.
set -u
MNT=/mnt/snap
say() { echo "[guest $(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { echo "GUEST FAIL: $*"; exit 1; }
node() { iscsiadm -m node -T "$TARGET_IQN" -p "$PORTAL" "$@"; }

iscsiadm -m discovery -t sendtargets -p "$PORTAL" >/tmp/disc.out 2>&1 || { cat /tmp/disc.out; die "discovery failed"; }
grep -q " $TARGET_IQN\$" /tmp/disc.out || { cat /tmp/disc.out; die "discovery did not list $TARGET_IQN"; }
node >/dev/null 2>&1 || node -o new >/dev/null || die "cannot create the node record"
say "login to the snapshot $TARGET_IQN"
node --login >/tmp/login.out 2>&1 || { cat /tmp/login.out; die "login failed"; }
DEV=""
i=0
while [ -z "$DEV" ] && [ $i -lt 150 ]; do
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname" 2>/dev/null)" = "$TARGET_IQN" ] || continue
        for b in "$s"/device/target*/*:*:*:"$LUN"/block/*; do
            [ -e "$b" ] && [ -b "/dev/$(basename "$b")" ] && DEV=/dev/$(basename "$b")
        done
    done
    [ -n "$DEV" ] || { sleep 0.2; i=$((i + 1)); }
done
[ -n "$DEV" ] || die "no disk appeared for the snapshot"
ro=$(cat "/sys/block/${DEV#/dev/}/ro")
[ "$ro" = 1 ] || die "the kernel does not see $DEV as write-protected (ro=$ro)"
say "$DEV is write-protected"
mkdir -p "$MNT"
mount -t ext4 -o ro,noload "$DEV" "$MNT" || die "read-only mount of $DEV failed"
if touch "$MNT/should-fail" 2>/dev/null; then die "a file could be created on the snapshot"; fi
(cd "$MNT" && find . -type f ! -path './lost+found/*' | sed 's|^\./||' | sort | xargs sha256sum) | sed 's/^/SNAPFILE /'
umount "$MNT" || die "umount failed"
node --logout >/dev/null 2>&1 || die "logout failed"
echo "GUEST PASS"
