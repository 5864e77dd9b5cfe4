#!/usr/bin/env bash
# Continuous data protection with real clients (qemu-img, QEMU's iSCSI driver):
#  1. an ext4 image made with `mke2fs -d` is written at T0; the operator bookmarks T1; a second
#     ext4 image is written after T1. The snapshot exported at T1 reads back as the first image:
#     `e2fsck -fn` finds it clean and `debugfs` shows its files; a write to it is refused; the
#     live volume still holds the second image.
#  2. WHEN as an RFC 3339 time and as an age; snapshot list and unexport.
#  3. restore to the bookmark brings the first image back; restoring to just before that
#     restore undoes it.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=cdp
need_cmd qemu-img qemu-io sha256sum mke2fs debugfs e2fsck
TARGET_IMPL=rewind
rewind_prepare
rewind_cli volume create cdp --size 64MiB >/dev/null
rewind_start
work=""; integ_mktemp work
SIZE=$((64 * 1024 * 1024))
URLBASE=iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX
URL=$URLBASE:cdp/0
sha() { head -c "$SIZE" "$1" | sha256sum | cut -d' ' -f1; }
read_url() { qemu-img convert -O raw "$1" "$2"; }

# two different ext4 images, built from directories without mounting anything
mkdir -p "$work/fs1/docs" "$work/fs2"
echo "first image" >"$work/fs1/hello.txt"
head -c 300000 /dev/urandom >"$work/fs1/docs/blob.bin"
echo "second image" >"$work/fs2/other.txt"
mke2fs -q -t ext4 -d "$work/fs1" -L first "$work/a.img" 64M
mke2fs -q -t ext4 -d "$work/fs2" -L second "$work/b.img" 64M

qemu-img convert -n -O raw "$work/a.img" "$URL"
rewind_cli bookmark cdp t1
sleep 1
qemu-img convert -n -O raw "$work/b.img" "$URL"
after_b=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
rewind_cli history cdp | tee "$work/history.txt"
grep -q "t1" "$work/history.txt" || fail "history does not list the bookmark"

rewind_cli snapshot export cdp --at @t1 | tee "$work/export.txt"
SNAP=$(tail -n 1 "$work/export.txt")
case $SNAP in "$REWIND_IQN_PREFIX:cdp.at."*) ;; *) fail "last line is not the snapshot's IQN: $SNAP" ;; esac
iscsi-ls "iscsi://127.0.0.1:$TARGET_PORT" | grep -F "$SNAP" >/dev/null || fail "SendTargets does not list $SNAP"
read_url "iscsi://127.0.0.1:$TARGET_PORT/$SNAP/0" "$work/view.img"
[ "$(sha "$work/view.img")" = "$(sha "$work/a.img")" ] || fail "the snapshot at T1 does not read as the first image"
e2fsck -fn "$work/view.img" >/dev/null || fail "e2fsck finds the snapshot's filesystem unclean"
[ "$(debugfs -R 'cat /hello.txt' "$work/view.img" 2>/dev/null)" = "first image" ] || fail "debugfs: /hello.txt is not the first image's"
debugfs -R 'dump /docs/blob.bin '"$work/blob.out" "$work/view.img" >/dev/null 2>&1
cmp -s "$work/blob.out" "$work/fs1/docs/blob.bin" || fail "debugfs: /docs/blob.bin differs"
log "  ok: the snapshot at T1 is the first filesystem (e2fsck clean, files match)"
if qemu-io -f raw -c "write -P 0x55 0 4096" "iscsi://127.0.0.1:$TARGET_PORT/$SNAP/0" >"$work/w.txt" 2>&1 \
    && ! grep -qi "error\|failed\|denied\|protect" "$work/w.txt"; then
    fail "a write to the read-only snapshot succeeded: $(cat "$work/w.txt")"
fi
log "  ok: a write to the snapshot is refused ($(head -n 1 "$work/w.txt"))"
read_url "$URL" "$work/live.img"
[ "$(sha "$work/live.img")" = "$(sha "$work/b.img")" ] || fail "the live volume does not hold the second image"
log "  ok: the live volume still holds the second image"

SNAP2=$(rewind_cli snapshot export cdp --at "$after_b" --name after | tail -n 1)
read_url "iscsi://127.0.0.1:$TARGET_PORT/$SNAP2/0" "$work/view2.img"
[ "$(sha "$work/view2.img")" = "$(sha "$work/b.img")" ] || fail "the snapshot at an RFC 3339 time after B does not read B"
rewind_cli snapshot export cdp --at "1s ago" >/dev/null
rewind_cli snapshot list | grep -F "$SNAP2" >/dev/null || fail "snapshot list does not show $SNAP2"
rewind_cli snapshot unexport "$SNAP2" >/dev/null
if rewind_cli snapshot list | grep -F "$SNAP2" >/dev/null; then fail "unexported snapshot still listed"; fi
log "  ok: WHEN as RFC 3339 time and as an age; list and unexport"

if out=$(rewind_cli snapshot export cdp --at "1h ago" 2>&1); then fail "a snapshot before history began was exported: $out"; fi
log "  ok: a time before history is refused: $out"

before_restore=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
sleep 1
rewind_cli restore cdp --to @t1
read_url "$URL" "$work/restored.img"
[ "$(sha "$work/restored.img")" = "$(sha "$work/a.img")" ] || fail "restore to the bookmark does not bring the first image back"
log "  ok: restore to the bookmark brings the first image back"
rewind_cli restore cdp --to "$before_restore"
read_url "$URL" "$work/undone.img"
[ "$(sha "$work/undone.img")" = "$(sha "$work/b.img")" ] || fail "undoing the restore does not bring the second image back"
log "  ok: the restore itself is journaled and can be undone"
rewind_stop
pass "bookmarks, snapshots and restore with qemu-img, ext4 checked with e2fsck and debugfs"
