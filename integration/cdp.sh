#!/usr/bin/env bash
# Continuous data protection with real clients: qemu-img writes data A, the operator bookmarks,
# qemu-img overwrites with B; a view exported at the bookmark (and one at a time given as an age)
# reads A byte for byte while the live volume reads B; a restore to the bookmark brings A back,
# and a restore to the newest point before it (undoing the restore) brings B back.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=cdp
need_cmd qemu-img sha256sum
TARGET_IMPL=rewind
rewind_prepare
rewind_cli volume create cdp --size 64MiB >/dev/null
rewind_start
work=""; integ_mktemp work
SIZE=$((32 * 1024 * 1024))
head -c "$SIZE" /dev/urandom >"$work/a.img"
head -c "$SIZE" /dev/urandom >"$work/b.img"
URL=iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:cdp/0
sha() { head -c "$SIZE" "$1" | sha256sum | cut -d' ' -f1; }
read_url() { qemu-img convert -O raw "$1" "$2"; }

qemu-img convert -n -O raw "$work/a.img" "$URL"
rewind_cli bookmark cdp before-b
sleep 1
qemu-img convert -n -O raw "$work/b.img" "$URL"
after_b=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
rewind_cli history cdp | tee "$work/history.txt"
grep -q "before-b" "$work/history.txt" || fail "history does not list the bookmark"

rewind_cli view export cdp --bookmark before-b --name before-b
read_url "$URL" "$work/live.img"
[ "$(sha "$work/live.img")" = "$(sha "$work/b.img")" ] || fail "the live volume does not read B"
read_url "iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:cdp-before-b/0" "$work/view.img"
[ "$(sha "$work/view.img")" = "$(sha "$work/a.img")" ] || fail "the view at the bookmark does not read A"
log "  ok: view at the bookmark reads A while the live volume reads B"

rewind_cli view export cdp --at "$after_b" --name after-b >/dev/null
read_url "iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:cdp-after-b/0" "$work/view2.img"
[ "$(sha "$work/view2.img")" = "$(sha "$work/b.img")" ] || fail "the view at an RFC 3339 time after B does not read B"
rewind_cli view list | grep -q "cdp-after-b" || fail "view list does not show the view"
rewind_cli view remove "$REWIND_IQN_PREFIX:cdp-after-b" >/dev/null
if rewind_cli view list | grep -q "cdp-after-b"; then fail "removed view still listed"; fi
log "  ok: view by time, list and remove"

out=$(rewind_cli view export cdp --at "1h" 2>&1) && fail "a view before the volume existed was exported: $out"
log "  ok: a point before history is refused: $out"

before_restore=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
sleep 1
rewind_cli restore cdp --bookmark before-b
read_url "$URL" "$work/restored.img"
[ "$(sha "$work/restored.img")" = "$(sha "$work/a.img")" ] || fail "restore to the bookmark does not read A"
log "  ok: restore to the bookmark brings A back"
rewind_cli restore cdp --at "$before_restore"
read_url "$URL" "$work/undone.img"
[ "$(sha "$work/undone.img")" = "$(sha "$work/b.img")" ] || fail "undoing the restore does not bring B back"
log "  ok: the restore itself is journaled and can be undone"
rewind_stop
pass "bookmarks, views and restore with qemu-img"
