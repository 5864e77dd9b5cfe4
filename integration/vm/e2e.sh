#!/usr/bin/env bash
# End-to-end test with a real Linux initiator: start the target on a free port, boot the
# initiator VM (run-guest.sh) and run guest/e2e-guest.sh in it: discovery, login without and
# with CRC32C header+data digests, mkfs.ext4, write, re-login, verify checksums.
# With TARGET_IMPL=tgt the backing file is also checked on the host with e2fsck and debugfs.
# usage: integration/vm/e2e.sh      (run by run-all.sh unless REWIND_VM=0)
# env:   TARGET_IMPL, REWIND_BIN (see ../lib.sh), VM_TIMEOUT (seconds, default 900), VM_CACHE
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
INTEG_NAME=vm-e2e
integ_init
START=$SECONDS
integ_mktemp WORK

target_start
if [ "$TARGET_IMPL" = tgt ]; then
    # tgt only offers None unless configured; let the initiator choose
    tgt_param HeaderDigest CRC32C,None
    tgt_param DataDigest CRC32C,None
fi

rc=0
RESIZE=()
if [ "$TARGET_IMPL" = rewind ]; then
    # The guest stops while logged in; the volume grows under it (`rewind volume resize`).
    RESIZE_TO=$((TARGET_SIZE + 64 * 1024 * 1024))
    RESIZE=(--env "RESIZE_TO=$RESIZE_TO")
fi
: >"$WORK/console.log"
"$INTEG_DIR/vm/run-guest.sh" --port "$TARGET_PORT" --target "$TARGET_IQN" --lun "$TARGET_LUN" \
    "${RESIZE[@]}" --timeout "${VM_TIMEOUT:-900}" --log "$WORK/console.log" &
VM_PID=$!
if [ "$TARGET_IMPL" = rewind ]; then
    while kill -0 "$VM_PID" 2>/dev/null && ! grep -qx 'GUEST READY FOR RESIZE' "$WORK/console.log"; do
        sleep 0.5
    done
    if grep -qx 'GUEST READY FOR RESIZE' "$WORK/console.log"; then
        rewind_cli volume resize vol0 --size "$RESIZE_TO" || fail "rewind volume resize failed"
    fi
fi
wait "$VM_PID" || rc=$?
target_alive
[ "$rc" -eq 0 ] || fail "initiator VM failed (exit $rc; 124 = timeout, 125 = guest crashed)"
grep -qx 'GUEST PASS' "$WORK/console.log" || fail "the guest exited 0 but did not report GUEST PASS"

if [ "$TARGET_IMPL" = rewind ]; then
    # A past point through the same real initiator: snapshot the volume as the guest left it,
    # wipe the live volume, and mount the snapshot read-only in a second guest.
    SNAP=$(rewind_cli snapshot export vol0 --at "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)" --name vm | tail -n 1)
    qemu-io -f raw -c "write -z 0 64M" "iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN/$TARGET_LUN" >/dev/null \
        || fail "could not wipe the live volume"
    rc=0
    "$INTEG_DIR/vm/run-guest.sh" --port "$TARGET_PORT" --target "$SNAP" --lun 0 \
        --script "$INTEG_DIR/vm/guest/snapshot-guest.sh" --timeout "${VM_TIMEOUT:-900}" \
        --log "$WORK/snapshot.log" || rc=$?
    [ "$rc" -eq 0 ] || fail "snapshot guest failed (exit $rc)"
    grep -qx 'GUEST PASS' "$WORK/snapshot.log" || fail "the snapshot guest did not report GUEST PASS"
    diff <(grep '^MANIFEST ' "$WORK/console.log" | awk '{print $2, $3}' | sort -k2) \
         <(grep '^SNAPFILE ' "$WORK/snapshot.log" | awk '{print $2, $3}' | sort -k2) \
        || fail "the snapshot's files differ from what the guest wrote"
    log "snapshot $SNAP: write-protected, mounted read-only, $(grep -c '^SNAPFILE ' "$WORK/snapshot.log") files as written"
fi

if [ "$TARGET_IMPL" = tgt ] && have debugfs; then
    # the guest's checksums must match what is really in the backing file
    target_stop
    e2fsck -fn "$TGT_BACKING" >"$WORK/fsck.out" 2>&1 || { cat "$WORK/fsck.out"; fail "host e2fsck of the backing file failed"; }
    n=0
    while read -r _ sum path; do
        got=$(debugfs -R "cat /$path" "$TGT_BACKING" 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$got" = "$sum" ] || fail "host check: /$path has sha256 $got, the guest wrote $sum"
        n=$((n + 1))
    done < <(grep '^MANIFEST ' "$WORK/console.log")
    [ "$n" -gt 0 ] || fail "no MANIFEST lines from the guest"
    log "host check: $n files in the backing file match the guest's checksums"
fi
pass "real Linux initiator (open-iscsi) against $TARGET_IMPL, plain and CRC32C digests$([ "$TARGET_IMPL" = rewind ] && echo ", volume grown while mounted, snapshot mounted read-only") ($((SECONDS - START))s)"
