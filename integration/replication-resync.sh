#!/usr/bin/env bash
# Resync cost at full size, with two real daemons (run by replication.sh; runs alone as well):
#  1. a fresh primary and secondary with a 1 GiB volume; qemu-img writes 256 MiB of random data
#     to the primary (4 MiB every 16 MiB); the initial sync brings the secondary to it;
#  2. the pairing and the secondary are stopped and 1% of the secondary's 64 KiB extents (164 of
#     16384, spread over the volume, in written and in never-written areas) are changed
#     directly in its volume file;
#  3. both are started again and the primary resyncs by digest: the script prints what the
#     resync moved, as a share of the volume, and checks that it shipped exactly the extents
#     changed, that it put under 3% of the volume on the wire, and that the secondary then
#     reads like the primary (SHA-256 through iSCSI).
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=replication-resync
need_cmd qemu-img sha256sum python3
[ -x "$REWIND_BIN" ] || fail "rewind binary not found at $REWIND_BIN (cargo build --release, or set REWIND_BIN)"
work=""; integ_mktemp work
SITES_DIR=$work
MIB=$((1024 * 1024))
VOLUME_BYTES=$GIB
EXTENT_BYTES=$((64 * 1024))
CHANGED=164 # 1% of the 16384 extents of 1 GiB, rounded up
printf 'replication-secret-for-tests\n' >"$work/secret"
chmod 600 "$work/secret"
REPL_PORT=$(free_port)

url() { echo "iscsi://127.0.0.1:$1/$REWIND_IQN_PREFIX:rep/0"; }
# primary_field EXPR: a Python expression over `s`, the primary's replication status
primary_field() {
    site_cli primary status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["replication"]["primary"][0]
print(eval(sys.argv[1]))' "$1"
}
caught_up() {
    local i
    for i in $(seq 1 240); do
        [ "$(primary_field 'bool(s["shipped_stamp"]) and s["lag_us"] == 0 and s["state"] == "streaming"')" = True ] \
            && return 0
        sleep 0.5; : "$i"
    done
    site_cli primary status || true
    fail "the secondary did not catch up"
}

site_configs "1GiB" "$REPL_PORT" "$work/secret"
site_start secondary
site_start primary
# shellcheck disable=SC2154  # PORT_* are set by site_start (printf -v)
PRIMARY_URL=$(url "$PORT_primary")

log "writing 256 MiB of random data to the 1 GiB primary (4 MiB every 16 MiB)"
truncate -s "$VOLUME_BYTES" "$work/data.raw"
for i in $(seq 0 63); do
    head -c $((4 * MIB)) /dev/urandom \
        | dd of="$work/data.raw" bs=$MIB seek=$((i * 16)) conv=notrunc status=none
done
qemu-img convert -n --target-is-zero -f raw -O raw "$work/data.raw" "$PRIMARY_URL"
rm -f "$work/data.raw"
t0=$SECONDS
site_cli primary replicate rep --to "127.0.0.1:$REPL_PORT" --interval 1s
caught_up
initial=$(primary_field 's["recent"][0]["wire_bytes"]')
log "initial sync: $initial bytes on the wire in $((SECONDS - t0))s"

# The pairing is stopped while the secondary is changed, then started again: a new pairing
# starts with a fresh status whose first update is the resync, which is what is measured.
site_cli primary replicate rep --stop
log "stopping the secondary; changing $CHANGED of its 64 KiB extents in its volume file"
# shellcheck disable=SC2154
stop_pid "$PID_secondary" 10
DATA_IMG=$work/secondary/volumes/rep/data.img
[ -f "$DATA_IMG" ] || fail "no volume file at $DATA_IMG"
# one extent in each run of 99 (spread over the whole volume), 16 bytes inverted at a random
# offset in it, so each one surely differs
python3 - "$DATA_IMG" "$CHANGED" "$EXTENT_BYTES" <<'EOF2'
import random, sys
path, n, ext = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    for i in range(n):
        e = i * 99 + random.randrange(99)
        f.seek(e * ext + random.randrange(ext - 16))
        pos = f.tell()
        old = f.read(16)
        f.seek(pos)
        f.write(bytes(b ^ 0xFF for b in old))
EOF2
log "restarting the secondary and the pairing: the primary resyncs by digest"
site_start secondary
# shellcheck disable=SC2154
SECONDARY_URL=$(url "$PORT_secondary")
site_cli primary replicate rep --to "127.0.0.1:$REPL_PORT" --interval 1s
caught_up
[ "$(primary_field 's["updates"]')" -eq 1 ] || fail "more than the resync was shipped: $(primary_field 's["recent"]')"
read -r kind extents data_bytes wire_bytes millis < <(primary_field \
    "' '.join(str(s['recent'][0][k]) for k in ('kind', 'extents', 'data_bytes', 'wire_bytes', 'millis'))")
[ "$kind" = resync ] || fail "the update after the restart is a $kind, not a resync"
pct() { python3 -c 'import sys; print(f"{int(sys.argv[1]) * 100 / int(sys.argv[2]):.2f}")' "$1" "$VOLUME_BYTES"; }
log "resync of the 1 GiB volume after $CHANGED changed extents ($(pct $((CHANGED * EXTENT_BYTES)))% of it):" \
    "$extents extents, $data_bytes data bytes ($(pct "$data_bytes")%)," \
    "$wire_bytes bytes on the wire ($(pct "$wire_bytes")% of the volume), ${millis} ms"
[ "$extents" -eq "$CHANGED" ] || fail "the resync shipped $extents extents, $CHANGED were changed"
[ $((wire_bytes * 100)) -lt $((VOLUME_BYTES * 3)) ] || fail "the resync moved 3% of the volume or more"
log "comparing the volumes (SHA-256 through iSCSI)"
want=$(site_sha_url "$PRIMARY_URL")
got=$(site_sha_url "$SECONDARY_URL")
[ "$want" = "$got" ] || fail "the secondary differs from the primary after the resync"
pass "resync of 1% of a 1 GiB volume: $extents extents, $(pct "$wire_bytes")% of the volume on the wire" \
    "(under 3%), the secondary equals the primary (sha256 $want)"
