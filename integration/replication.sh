#!/usr/bin/env bash
# Replication between two real daemons, checked with qemu-img (QEMU's iSCSI driver):
#  1. a secondary accepts volume `rep`; the primary replicates it every second;
#  2. qemu-img writes random data to the primary; once `rewind status` on the primary shows the
#     secondary caught up, the secondary's last shipped point (exported as a snapshot) and its
#     live read-only volume read back with the same SHA-256 as the primary;
#  3. a write to the secondary is refused until `rewind promote`, then accepted;
#  4. kill -9 in the middle of an update (the link is slowed down by integration/slow_link.py
#     so that the kill lands while the update is on its way, which the test checks):
#     a. the secondary, while it receives: after a restart it is still at the previous shipped
#        point (SHA-256 of its volume), the partial buffer is gone, and the link resumes and
#        catches up by itself;
#     b. the primary, while it ships: the secondary stays at the previous point; the restarted
#        primary resumes the pairing and catches up;
#     c. the secondary, while it applies (REWIND_TEST_ABORT_APPLYING aborts it half-way): at
#        start it applies the verified pending update again and reads exactly like the
#        primary's volume at that update's point; then it catches up;
#  5. a primary with the wrong secret is refused;
#  6. integration/replication-resync.sh: a digest resync of a 1 GiB volume whose secondary
#     differs in 1% of its extents moves under 3% of the volume (measured and printed).
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=replication
need_cmd qemu-img qemu-io sha256sum python3
[ -x "$REWIND_BIN" ] || fail "rewind binary not found at $REWIND_BIN (cargo build --release, or set REWIND_BIN)"
work=""; integ_mktemp work
SITES_DIR=$work
SIZE_MIB=64
MIB=$((1024 * 1024))
printf 'replication-secret-for-tests\n' >"$work/secret"
chmod 600 "$work/secret"
REPL_PORT=$(free_port)
LINK_PORT=$(free_port)
LINK_DOWN=$work/link.down

url() { echo "iscsi://127.0.0.1:$1/$REWIND_IQN_PREFIX:$2/0"; }

site_configs "${SIZE_MIB}MiB" "$REPL_PORT" "$work/secret"
site_start secondary "$work/secondary.toml"
site_start primary "$work/primary.toml"
# The primary reaches the secondary through a link of 16 MiB/s.
python3 "$(dirname "${BASH_SOURCE[0]}")/slow_link.py" "$LINK_PORT" "$REPL_PORT" $((16 * MIB)) "$LINK_DOWN" \
    >"$work/link.log" 2>&1 &
LINK_PID=$!
integ_on_exit stop_pid "$LINK_PID" 2
urls() {
    # shellcheck disable=SC2154  # PORT_* are set by site_start (printf -v)
    PRIMARY_URL=$(url "$PORT_primary" rep)
    # shellcheck disable=SC2154
    SECONDARY_URL=$(url "$PORT_secondary" rep)
}
urls

log "writing random data to the primary"
head -c $((SIZE_MIB / 2 * MIB)) /dev/urandom >"$work/data.raw"
qemu-img convert -n -f raw -O raw "$work/data.raw" "$PRIMARY_URL"
site_cli primary replicate rep --to "127.0.0.1:$LINK_PORT" --interval 1s

caught_up() {
    local i
    for i in $(seq 1 120); do
        if site_cli primary status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["replication"]["primary"][0]
sys.exit(0 if s["shipped_stamp"] and s["lag_us"] == 0 else 1)'; then return 0; fi
        sleep 0.5; : "$i"
    done
    site_cli primary status || true
    for side in primary secondary; do
        echo "--- last lines of the $side's log"
        grep -v ' INFO ' "$work/$side.log" | tail -15 || true
    done
    fail "the secondary did not catch up"
}
caught_up
log "overwriting 1 MiB at 5 MiB on the primary"
qemu-io -f raw -c "write -P 0x5a 5M 1M" "$PRIMARY_URL" >/dev/null
caught_up
site_cli primary status | sed -n '/REPLICATION/,$p'

want=$(site_sha_url "$PRIMARY_URL")
got=$(site_sha_url "$SECONDARY_URL")
[ "$want" = "$got" ] || fail "secondary volume differs from the primary"
point=$(site_cli secondary history rep --json | python3 -c '
import json, sys
h = json.load(sys.stdin)
print(max((b["name"] for b in h["bookmarks"] if b["name"].startswith("repl-")), key=lambda n: int(n[5:])))')
target=$(site_cli secondary snapshot export rep --at "@$point" --name last | tail -1)
snap=$(site_sha_url "iscsi://127.0.0.1:$PORT_secondary/$target/0")
[ "$snap" = "$want" ] || fail "snapshot $point on the secondary differs from the primary"
pass "shipped point $point on the secondary equals the primary (sha256 $want)"

# ---- kill -9 in the middle of an update ----------------------------------------------------
REPL_DIR=$work/secondary/volumes/rep/replication
json_field() { # NAME SIDE FIELD: a field of the first primary/secondary replication status
    site_cli "$1" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["replication"][sys.argv[1]][0]
v = s.get(sys.argv[2])
print("" if v is None else v)' "$2" "$3"
}
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
# wait_receiving: until the secondary has buffered at least 4 MiB of an update
wait_receiving() {
    local i
    for i in $(seq 1 600); do
        [ "$(size_of "$REPL_DIR/incoming.update")" -ge $((4 * MIB)) ] && return 0
        sleep 0.05; : "$i"
    done
    fail "no update arrived at the secondary"
}
kill9() { # NAME
    local pid_var="PID_$1"
    kill -KILL "${!pid_var}"
    wait "${!pid_var}" 2>/dev/null || true
}
# secondary_at_its_point NAME: the secondary reads exactly like the primary's volume at the
# point the secondary last applied (a snapshot exported on the primary at that point)
secondary_at_its_point() {
    local at target want got
    at=$(json_field secondary secondary applied)
    target=$(site_cli primary snapshot export rep --at "$at" --name "$1" | tail -1)
    want=$(site_sha_url "iscsi://127.0.0.1:$PORT_primary/$target/0")
    got=$(site_sha_url "$SECONDARY_URL")
    [ "$want" = "$got" ] || fail "the secondary differs from the primary's volume at its point $at"
}
expect_equal() {
    local a b
    a=$(site_sha_url "$PRIMARY_URL")
    b=$(site_sha_url "$SECONDARY_URL")
    [ "$a" = "$b" ] || fail "the secondary differs from the primary after catching up"
}

log "a. kill -9 the secondary while it receives a 40 MiB update"
prev_stamp=$(json_field secondary secondary applied_stamp)
qemu-io -f raw -c "write -P 0xa1 8M 40M" "$PRIMARY_URL" >/dev/null
wait_receiving
kill9 secondary
partial=$(size_of "$REPL_DIR/incoming.update")
[ "$partial" -gt 0 ] && [ "$partial" -lt $((40 * MIB)) ] || fail "the kill did not land mid-transfer ($partial bytes buffered)"
[ ! -e "$REPL_DIR/pending.update" ] || fail "the update was complete before the kill"
shipped=$(json_field primary primary shipped_stamp)
touch "$LINK_DOWN"
site_start secondary "$work/secondary.toml"
urls
[ ! -e "$REPL_DIR/incoming.update" ] || fail "the partial buffer was not discarded at start"
at=$(json_field secondary secondary applied_stamp)
[ "$at" = "$shipped" ] && [ "$at" -ge "$prev_stamp" ] \
    || fail "the secondary is at $at, the primary's last shipped point is $shipped"
secondary_at_its_point crash-a
rm -f "$LINK_DOWN"
caught_up
expect_equal
pass "secondary killed after $partial bytes of an update: at the last shipped point after restart, then caught up"

log "b. kill -9 the primary while it ships a 40 MiB update"
prev_stamp=$(json_field secondary secondary applied_stamp)
qemu-io -f raw -c "write -P 0xb2 16M 40M" "$PRIMARY_URL" >/dev/null
wait_receiving
kill9 primary
for i in $(seq 1 100); do
    [ -e "$REPL_DIR/incoming.update" ] || break
    sleep 0.1; : "$i"
done
[ ! -e "$REPL_DIR/incoming.update" ] || fail "the secondary kept a partial update"
[ ! -e "$REPL_DIR/pending.update" ] || fail "the update was complete before the kill"
json_field secondary secondary last_error | grep -F "not applied" >/dev/null \
    || fail "the secondary did not record the interrupted update"
[ "$(json_field secondary secondary applied_stamp)" -ge "$prev_stamp" ] || fail "the secondary went back"
touch "$LINK_DOWN"
site_start primary "$work/primary.toml"
urls
secondary_at_its_point crash-b
rm -f "$LINK_DOWN"
caught_up
expect_equal
pass "primary killed mid-update: the secondary stayed at its last complete point; the restarted primary resumed and caught up"

log "c. the secondary crashes while applying an update"
stop_pid "$PID_secondary" 10
REWIND_TEST_ABORT_APPLYING=100 site_start secondary "$work/secondary.toml"
qemu-io -f raw -c "write -P 0xc3 24M 32M" "$PRIMARY_URL" >/dev/null
for i in $(seq 1 600); do
    kill -0 "$PID_secondary" 2>/dev/null || break
    sleep 0.1; : "$i"
done
rc=0; wait "$PID_secondary" || rc=$?
[ "$rc" -eq 134 ] || fail "the secondary did not abort while applying (exit status $rc)"
grep -F "aborting while applying" "$work/secondary.log" >/dev/null || fail "no abort in the secondary's log"
[ -e "$REPL_DIR/pending.update" ] && [ -e "$REPL_DIR/pending.json" ] || fail "no pending update after the crash"
to=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["to"])' "$REPL_DIR/pending.json")
[ "$to" -gt "$(json_field primary primary shipped_stamp)" ] || fail "the crashed update was already shipped"
touch "$LINK_DOWN"
site_start secondary "$work/secondary.toml"
urls
[ ! -e "$REPL_DIR/pending.update" ] || fail "the pending update was not applied at start"
[ "$(json_field secondary secondary applied_stamp)" = "$to" ] || fail "the secondary is not at the update's point $to"
grep -F "applying an update a crash interrupted" "$work/secondary.log" >/dev/null || fail "no re-apply logged"
secondary_at_its_point crash-c
rm -f "$LINK_DOWN"
caught_up
expect_equal
pass "secondary crashed while applying: re-applied at start, reads like the primary at that update's point, then caught up"

if qemu-io -f raw -c "write -P 0x11 0 4k" "$SECONDARY_URL" >/dev/null 2>&1; then
    fail "the secondary accepted a write before promotion"
fi
site_cli primary replicate rep --stop
site_cli secondary promote rep
qemu-io -f raw -c "write -P 0x11 0 4k" "$SECONDARY_URL" >/dev/null || fail "promoted volume refused a write"
pass "secondary read-only until promoted, writable after"

printf 'a-different-secret-entirely\n' >"$work/wrong.secret"
chmod 600 "$work/wrong.secret"
sed "s#$work/secret#$work/wrong.secret#" "$work/primary.toml" >"$work/wrong.toml"
site_start wrong "$work/wrong.toml"
site_cli wrong replicate rep --to "127.0.0.1:$REPL_PORT" --interval 1s
for i in $(seq 1 40); do
    site_cli wrong status | grep -F "authentication failed" >/dev/null && break
    sleep 0.25; : "$i"
done
site_cli wrong status | grep -F "authentication failed" >/dev/null || fail "a wrong secret was not refused"
pass "a primary with the wrong secret is refused"

# 6. the cost of a digest resync at full size (1 GiB volume, 1% of its extents differ)
"$(dirname "${BASH_SOURCE[0]}")/replication-resync.sh"
