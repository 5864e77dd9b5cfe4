#!/bin/sh
# Runs inside the initiator VM (busybox sh, root). Environment: PORTAL (10.0.2.2:PORT),
# TARGET_IQN, LUN. A real Linux initiator (kernel iscsi_tcp + open-iscsi) against the target:
#   1. SendTargets discovery must list TARGET_IQN
#   2. login without digests, mkfs.ext4, mount, write files, unmount, fsck, logout
#   3. login again (new session, new disk, no page cache), verify the files, logout
#   4. with HeaderDigest=CRC32C and DataDigest=CRC32C: login (both digests must be in effect),
#      verify, write more files, logout, login again, verify everything, logout
#   5. with RESIZE_TO (bytes) set: print "GUEST READY FOR RESIZE" while logged in and mounted
#      (the host then grows the volume), wait until the disk reports RESIZE_TO bytes after
#      I/O and a rescan, check the kernel saw the capacity-change unit attention, grow ext4
#      online with resize2fs, verify the files
# Prints "GUEST PASS" and exits 0, or "GUEST FAIL: reason" and exits 1.
set -u
MNT=/mnt/lun
say() { echo "[guest $(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { echo "GUEST FAIL: $*"; iscsiadm -m session -P 3 2>/dev/null | tail -n 30; exit 1; }
node() { iscsiadm -m node -T "$TARGET_IQN" -p "$PORTAL" "$@"; }

session() { # prints the sysfs dir of the session to TARGET_IQN
    for s in /sys/class/iscsi_session/session*; do
        [ "$(cat "$s/targetname" 2>/dev/null)" = "$TARGET_IQN" ] && { echo "$s"; return 0; }
    done
    return 1
}
disk() { # waits for the block device of LUN in the current session, prints /dev/sdX
    i=0
    while [ $i -lt 150 ]; do
        s=$(session) && for b in "$s"/device/target*/*:*:*:"$LUN"/block/*; do
            [ -e "$b" ] || continue
            d=/dev/$(basename "$b")
            [ -b "$d" ] && [ "$(cat "$b/size")" -gt 0 ] && { echo "$d"; return 0; }
        done
        sleep 0.2; i=$((i + 1))
    done
    return 1
}
login() { # login DIGEST(None|CRC32C): log in, check the negotiated digests, set DEV
    say "login ($TARGET_IQN at $PORTAL, digests $1)"
    node --login >/tmp/login.out 2>&1 || { cat /tmp/login.out; die "login failed"; }
    info=$(iscsiadm -m session -P 2 2>/dev/null)
    echo "$info" | grep -q "HeaderDigest: $1" || { echo "$info"; die "HeaderDigest is not $1"; }
    echo "$info" | grep -q "DataDigest: $1" || { echo "$info"; die "DataDigest is not $1"; }
    DEV=$(disk) || die "no disk for LUN $LUN appeared"
    say "LUN $LUN is $DEV ($(($(cat "/sys/block/${DEV#/dev/}/size") / 2048)) MiB), HeaderDigest=$1 DataDigest=$1"
}
logout() {
    node --logout >/tmp/logout.out 2>&1 || { cat /tmp/logout.out; die "logout failed"; }
    i=0
    while [ -b "$DEV" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ ! -b "$DEV" ] || die "$DEV still present after logout"
    say "logged out"
}
mount_fs() { mkdir -p "$MNT"; mount -t ext4 "$DEV" "$MNT" || die "mount $DEV failed"; }
umount_fs() {
    sync
    umount "$MNT" || die "umount failed"
    e2fsck -fn "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; die "e2fsck found problems"; }
}
write_files() { # write_files TAG: files whose checksums go to /tmp/manifest (guest RAM)
    mkdir -p "$MNT/$1/deep/er"
    echo "rewind end-to-end $1" >"$MNT/$1/hello.txt"
    seq 1 100000 >"$MNT/$1/seq.txt"
    dd if=/dev/urandom of="$MNT/$1/random.bin" bs=1M count=16 2>/dev/null || die "dd failed"
    dd if=/dev/urandom of="$MNT/$1/deep/er/odd.bin" bs=4093 count=257 2>/dev/null || die "dd failed"
    (cd "$MNT" && find "$1" -type f | sort | xargs sha256sum) >>/tmp/manifest || die "sha256sum failed"
    say "wrote $(find "$MNT/$1" -type f | wc -l) files under $1"
}
verify_files() {
    (cd "$MNT" && sha256sum -c /tmp/manifest) >/tmp/verify.out 2>&1 || { cat /tmp/verify.out; die "checksum mismatch"; }
    say "verified $(wc -l </tmp/manifest) files"
}

say "discovery at $PORTAL"
iscsiadm -m discovery -t sendtargets -p "$PORTAL" >/tmp/disc.out 2>&1 || { cat /tmp/disc.out; die "discovery failed"; }
cat /tmp/disc.out
grep -q " $TARGET_IQN\$" /tmp/disc.out || die "discovery did not list $TARGET_IQN"
# the target reports the portal it listens on (127.0.0.1:PORT on the host), which is this VM's
# own loopback; always use our own node record for the address we can reach
node >/dev/null 2>&1 || node -o new >/dev/null || die "cannot create the node record"

: >/tmp/manifest
login None
mkfs.ext4 -F -q -L rewind-e2e "$DEV" || die "mkfs.ext4 failed"
mount_fs
write_files plain
umount_fs
logout

login None
mount_fs
verify_files
umount_fs
logout

node -o update -n 'node.conn[0].iscsi.HeaderDigest' -v CRC32C || die "cannot set HeaderDigest"
node -o update -n 'node.conn[0].iscsi.DataDigest' -v CRC32C || die "cannot set DataDigest"
login CRC32C
mount_fs
verify_files
write_files crc32c
umount_fs
logout

login CRC32C
mount_fs
verify_files
if [ -n "${RESIZE_TO:-}" ]; then
    name=${DEV#/dev/}
    bytes() { echo $(($(cat "/sys/block/$name/size") * 512)); }
    before=$(bytes)
    echo "GUEST READY FOR RESIZE"
    i=0
    while [ "$(bytes)" != "$RESIZE_TO" ] && [ $i -lt 240 ]; do
        sleep 0.5
        dd if="$DEV" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null
        echo 1 >"/sys/block/$name/device/rescan"
        i=$((i + 1))
    done
    [ "$(bytes)" = "$RESIZE_TO" ] || die "the disk still has $(bytes) bytes; the target grew it to $RESIZE_TO"
    dmesg | grep -q "Capacity data has changed" || { dmesg | tail -n 20; die "the kernel did not report the capacity-change unit attention"; }
    fs_before=$(df -k "$MNT" | awk 'NR == 2 { print $2 }')
    resize2fs "$DEV" >/tmp/resize.out 2>&1 || { cat /tmp/resize.out; die "online resize2fs failed"; }
    fs_after=$(df -k "$MNT" | awk 'NR == 2 { print $2 }')
    [ "$fs_after" -gt "$fs_before" ] || die "ext4 did not grow ($fs_before KiB -> $fs_after KiB)"
    verify_files
    say "disk grew from $before to $(bytes) bytes (unit attention seen), ext4 grown online from $fs_before to $fs_after KiB"
fi
umount_fs
logout

# for the host: what the filesystem must contain
sed 's/^/MANIFEST /' /tmp/manifest
echo "GUEST PASS"
