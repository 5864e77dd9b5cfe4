#!/usr/bin/env bash
# Crash recovery with an independent client. CRASH_ROUNDS (default 20) rounds of:
#   qemu-io (QEMU's iSCSI driver) writes patterns, some with FUA, some followed by a flush, while
#   integration/crash_oracle.py keeps the oracle and bookmarks points with `rewind bookmark`;
#   the daemon is killed with SIGKILL at a random moment (often in the middle of writes);
#   `rewind verify` checks the journal offline (torn tails allowed, corruption not);
#   the daemon restarts and qemu-img reads the volume and the bookmarks' views back:
#   - every write acknowledged before a completed flush (or with FUA) is there;
#   - every 512-byte cell reads as one write's pattern, never a torn mix, never older than the
#     last durable write, never a write that was not issued;
#   - every bookmark's view reads what the volume could read at the bookmark, and once seen it
#     reads the same in every later round (a couple of old bookmarks are re-read each round);
#   - points in time across the history, exported with `snapshot export --at RFC3339` and read
#     by qemu-img: this round's before its first write, between every two qemu-io runs (exact:
#     every write of the one, none of the next), inside every run (the writes up to the
#     acknowledgement read by then, maybe the next few: the view must read one such prefix,
#     and the chosen prefixes must not go back in time), and after the kill (the live volume);
#     a round has about two per qemu-io run, and at most CRASH_POINTS (default 40; 0 = all) are
#     read: the first, the last, the one in the run the kill cut and an evenly spaced sample of
#     the others; CRASH_RECHECK (default 4) earlier points again, which must read as they did;
#     the oldest retained point, which reads as the empty volume. See `points`/`history_check`
#     in the oracle.
# At the end, after a clean stop: `rewind verify` of the journal and `rewind verify --bookmark
# --image` of a view dump (equal: exit 0; one byte changed: exit 1).
# Partial journals are 256 KiB (CRASH_PARTIAL_CAPACITY) so they rotate often: kills hit them
# while written, copied into the primary or adopted whole as primary segments.
# A process crash, not a power cut: the page cache survives, as it does for kill -9.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=crash
need_cmd qemu-io qemu-img python3 stdbuf
TARGET_IMPL=rewind
ROUNDS=${CRASH_ROUNDS:-20}
VOL=crash
ORACLE=$INTEG_DIR/crash_oracle.py
HOT_MIB=4
RECHECK=${CRASH_RECHECK:-4} # older points in time read again each round
POINTS=${CRASH_POINTS:-40}  # at most this many of a round's points in time (0 = all of them)
rewind_prepare
rewind_cli volume create "$VOL" --size 64MiB >/dev/null
work=""; integ_mktemp work
STATE=$work/oracle.json
# Small partial journals (default 8 MiB) so that kills land in every stage of their life: being
# written, rotated, copied into the primary (small ones), or adopted whole as a primary segment.
printf '[journal]\npartial_capacity = %s\n' "${CRASH_PARTIAL_CAPACITY:-262144}" >"$work/rewind.toml"
REWIND_SERVE_ARGS="--config $work/rewind.toml"

url_of() { echo "iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:$1/0"; }
dump() { # URL FILE: the first HOT_MIB MiB
    qemu-img dd -f raw -O raw bs=1M count="$HOT_MIB" if="$1" of="$2" 2>&1 | grep -v '^$' || true
    [ -s "$2" ] || fail "could not read $1"
}

rewind_start
for round in $(seq 1 "$ROUNDS"); do
    kill_after=$(python3 -c "import random; print(round(random.uniform(0.2, 2.0), 2))")
    python3 "$ORACLE" drive --state "$STATE" --url "$(url_of "$VOL")" --rewind "$REWIND_BIN" \
        --data "$REWIND_DATA" --volume "$VOL" --pid "$TARGET_PID" --kill-after "$kill_after" \
        --round "$round" --seed "$round"
    # SIGKILL was sent: reap it (137 = killed by signal 9; 127 = already reaped by bash).
    rc=0; wait "$TARGET_PID" 2>/dev/null || rc=$?
    case $rc in 137 | 127) ;; *) fail "round $round: the daemon ended with status $rc, not by SIGKILL" ;; esac
    TARGET_PID=""
    # Offline journal check of what the crash left (before recovery touches it).
    out=$(rewind_cli verify "$VOL" 2>&1) || { echo "$out" >&2; fail "round $round: verify after the crash: journal not intact"; }
    printf '%s\n' "$out" | while IFS= read -r l; do echo "    verify: $l"; done
    rewind_start >/dev/null
    dump "$(url_of "$VOL")" "$work/live.img"
    views=()
    # The bookmarks made this round, and two older ones again.
    new=$(python3 "$ORACLE" bookmarks --state "$STATE" --pending)
    old=$(python3 "$ORACLE" bookmarks --state "$STATE" | tr ' ' '\n' | grep -vxF -f <(echo "$new" | tr ' ' '\n' | grep . || echo "#") | shuf -n 2 || true)
    for b in $new $old; do
        [ -n "$b" ] || continue
        rewind_cli snapshot export "$VOL" --at "@$b" --name "$b" >/dev/null \
            || fail "round $round: bookmark $b cannot be exported"
        dump "$(url_of "$VOL.$b")" "$work/view-$b.img"
        # Snapshots outlive restarts: unexport, so a later round can export the bookmark again.
        rewind_cli snapshot unexport "$REWIND_IQN_PREFIX:$VOL.$b" >/dev/null
        views+=(--view "$b=$work/view-$b.img")
    done
    # Points in time across the history: this round's (before its first write, between two
    # qemu-io runs, inside them, after the kill; up to CRASH_POINTS of them), older rounds' again,
    # and the oldest retained point. Each is exported as a view and read by qemu-img.
    oldest=$(rewind_cli history "$VOL" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["oldest"])')
    pts=$(python3 "$ORACLE" points --state "$STATE" --oldest "$oldest" --recheck "$RECHECK" --max "$POINTS") \
        || fail "round $round: the oracle could not choose points in time"
    points=()
    while read -r name at; do
        [ -n "$name" ] || continue
        rewind_cli snapshot export "$VOL" --at "$at" --name "$name" >/dev/null </dev/null \
            || fail "round $round: point $name ($at) cannot be exported"
        dump "$(url_of "$VOL.$name")" "$work/point-$name.img" </dev/null
        rewind_cli snapshot unexport "$REWIND_IQN_PREFIX:$VOL.$name" >/dev/null </dev/null
        points+=(--point "$name=$work/point-$name.img")
    done <<<"$pts"
    python3 "$ORACLE" check --state "$STATE" --live "$work/live.img" --url "$(url_of "$VOL")" \
        "${views[@]+"${views[@]}"}" "${points[@]+"${points[@]}"}" \
        || fail "round $round: data after the crash does not match the oracle"
    rm -f "$work"/point-*.img
    target_alive
done

# Final: a clean stop, then verify offline, and compare a bookmark's view with its image.
last=$(python3 "$ORACLE" bookmarks --state "$STATE" | tr ' ' '\n' | grep . | tail -n 1 || true)
if [ -n "$last" ]; then
    rewind_cli snapshot export "$VOL" --at "@$last" --name "final-$last" >/dev/null
    dump "$(url_of "$VOL.final-$last")" "$work/final.img"
fi
rewind_stop
rewind_cli verify "$VOL" || fail "verify after a clean stop: journal not intact"
if [ -n "$last" ]; then
    rewind_cli verify "$VOL" --bookmark "$last" --image "$work/final.img" \
        || fail "verify --bookmark $last --image: the view differs from what qemu-img read"
    printf '\x01' | dd of="$work/final.img" bs=1 seek=1234567 conv=notrunc status=none
    rc=0; rewind_cli verify "$VOL" --bookmark "$last" --image "$work/final.img" >"$work/mismatch.txt" || rc=$?
    [ "$rc" -eq 1 ] || { cat "$work/mismatch.txt"; fail "verify did not report a changed byte (exit $rc)"; }
    grep -q "MISMATCH extent 1048576+1048576" "$work/mismatch.txt" || fail "verify did not name the changed extent"
    log "  ok: verify --image finds the one changed extent"
fi
pass "$ROUNDS crash rounds: durable writes kept, nothing torn, bookmarks and points in time as the oracle says, journal intact"
