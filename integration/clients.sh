#!/usr/bin/env bash
# Talk to the target with the libiscsi command line clients and check what they print:
#   iscsi-ls              SendTargets discovery lists our target, and its LUN is a disk
#   iscsi-inq             standard INQUIRY, VPD 0x00 (supported pages), 0x80 (serial), 0x83 (device id)
#   iscsi-readcapacity16  1 GiB, 512-byte blocks
#   qemu-img info         the disk through QEMU's iSCSI driver (README tour)
# and, against rewind, the rest of the README tour that needs no root: `rewind volume create`
# and `volume resize` (grow; a new session sees the size; shrinking refused) against the running
# daemon, `volume list [--json]`, `completions` (also into a closed pipe) and
# `--log-format json` (every line the daemon logs parses as JSON).
# usage: integration/clients.sh          (TARGET_IMPL=tgt to run it against the reference target)
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
need_cmd iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-img

FAILS=0
OUT=""
integ_mktemp WORK

# run NAME CMD...: run a client, keep its output in $OUT (file) and show it on failure
run() {
    local name=$1; shift
    OUT=$WORK/$name.out
    if ! "$@" >"$OUT" 2>&1; then
        echo "    \$ $*" >&2; sed 's/^/    | /' "$OUT" >&2
        check_fail "$name: '$1' exited non-zero"
        return 1
    fi
}
check_fail() { echo "[$INTEG_NAME] FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
# expect NAME ERE DESCRIPTION: the last output must contain a line matching ERE
expect() {
    if grep -Eq -- "$2" "$OUT"; then
        echo "[$INTEG_NAME]   ok: $1: $3"
    else
        check_fail "$1: expected $3 (/$2/) in:"; sed 's/^/    | /' "$OUT" >&2
    fi
}
re_escape() { printf '%s' "$1" | sed 's/[][\.*^$/+?(){}|]/\\&/g'; }

if [ "$TARGET_IMPL" = rewind ]; then
    # The README's `--log-format json`, checked on the daemon's log at the end.
    REWIND_SERVE_ARGS="${REWIND_SERVE_ARGS:-} --log-format json"
fi
target_start
IQN_RE=$(re_escape "$TARGET_IQN")
PORTAL="iscsi://127.0.0.1:$TARGET_PORT"

# ---- discovery ------------------------------------------------------------------------------
if run discovery iscsi-ls "$PORTAL"; then
    expect discovery "^Target:$IQN_RE Portal:[^ ]*:$TARGET_PORT," "target $TARGET_IQN with portal port $TARGET_PORT"
fi
if run discovery-luns iscsi-ls -s "$PORTAL"; then
    expect discovery-luns "^Target:$IQN_RE " "target $TARGET_IQN"
    expect discovery-luns "^Lun:${TARGET_LUN}[[:space:]]+Type:DIRECT_ACCESS" "LUN $TARGET_LUN listed as DIRECT_ACCESS"
fi

# ---- INQUIRY -----------------------------------------------------------------------------------
if run inquiry iscsi-inq "$TARGET_URL"; then
    expect inquiry '^Peripheral Qualifier:CONNECTED$' "peripheral qualifier CONNECTED"
    expect inquiry '^Peripheral Device Type:DIRECT_ACCESS$' "device type DIRECT_ACCESS (SBC disk)"
    expect inquiry '^Vendor:[[:print:]]*[^[:space:]]' "a non-blank vendor id"
    expect inquiry '^Product:[[:print:]]*[^[:space:]]' "a non-blank product id"
    expect inquiry '^CmdQue:1$' "command queuing (CmdQue=1)"
fi
if run vpd-00 iscsi-inq -e 1 -c 0 "$TARGET_URL"; then
    expect vpd-00 '^Page:0x80 UNIT_SERIAL_NUMBER' "VPD 0x80 in the supported pages"
    expect vpd-00 '^Page:0x83 DEVICE_IDENTIFICATION' "VPD 0x83 in the supported pages"
fi
if run vpd-80 iscsi-inq -e 1 -c 128 "$TARGET_URL"; then
    expect vpd-80 '^Unit Serial Number:\[ *[[:graph:]]+.*\]' "a non-blank unit serial number"
fi
if run vpd-83 iscsi-inq -e 1 -c 131 "$TARGET_URL"; then
    expect vpd-83 '^Page Code:\(0x83\) DEVICE_IDENTIFICATION' "page code 0x83"
    expect vpd-83 '^DEVICE DESIGNATOR #0' "at least one designator"
    expect vpd-83 '^Association:\(0\) LOGICAL_UNIT' "a designator associated with the logical unit"
    expect vpd-83 '^Designator Type:\((1|2|3|8)\) ' "a T10, EUI-64, NAA or SCSI name designator"
fi

# ---- READ CAPACITY (16) -------------------------------------------------------------------------
BLOCKS=$((TARGET_SIZE / 512))
if run readcap16 iscsi-readcapacity16 "$TARGET_URL"; then
    expect readcap16 '^LOGICAL BLOCK LENGTH IN BYTES:512$' "block size 512"
    expect readcap16 "^RETURNED LOGICAL BLOCK ADDRESS:$((BLOCKS - 1))\$" "last LBA $((BLOCKS - 1))"
    expect readcap16 "^Total size:$TARGET_SIZE\$" "total size $TARGET_SIZE bytes (1 GiB)"
fi

# ---- README tour ----------------------------------------------------------------------------
if run qemu-img-info qemu-img info "$TARGET_URL"; then
    expect qemu-img-info '^file format: raw$' "format raw"
    expect qemu-img-info "^virtual size: .*\($TARGET_SIZE bytes\)\$" "virtual size $TARGET_SIZE bytes"
fi

if [ "$TARGET_IMPL" = rewind ]; then
    DB_SIZE=$((64 * 1024 * 1024))
    DB_IQN=$REWIND_IQN_PREFIX:db
    if run volume-create rewind_cli volume create db --size 64MiB; then
        expect volume-create "now served as $(re_escape "$DB_IQN")\$" "db served at once by the running daemon"
    fi
    if run volume-create-served iscsi-readcapacity16 "iscsi://127.0.0.1:$TARGET_PORT/$DB_IQN/0"; then
        expect volume-create-served "^Total size:$DB_SIZE\$" "the new target answers with $DB_SIZE bytes"
    fi
    GROWN=$((2 * DB_SIZE))
    if run volume-resize rewind_cli volume resize db --size 128MiB; then
        expect volume-resize "^volume db grew from $DB_SIZE to $GROWN bytes" "db grown on the running daemon"
    fi
    if run volume-resize-served iscsi-readcapacity16 "iscsi://127.0.0.1:$TARGET_PORT/$DB_IQN/0"; then
        expect volume-resize-served "^Total size:$GROWN\$" "a new session sees $GROWN bytes"
    fi
    OUT=$WORK/volume-shrink.out
    if rewind_cli volume resize db --size 64MiB >"$OUT" 2>&1; then
        check_fail "volume-shrink: shrinking db was accepted"
    else
        expect volume-shrink "only grow" "shrinking refused with a reason"
    fi
    DB_SIZE=$GROWN
    if run volume-list rewind_cli volume list; then
        expect volume-list '^NAME +SIZE +BLOCK' "a header"
        expect volume-list "^db +$DB_SIZE +512 " "db, $DB_SIZE bytes, 512-byte blocks"
        expect volume-list "^vol0 +$TARGET_SIZE +512 " "vol0"
    fi
    if run volume-list-json rewind_cli volume list --json; then
        # shellcheck disable=SC2016  # $1 and the rest are for python
        run volume-list-json-parsed python3 -c 'import json, sys
vols = {v["name"]: v for v in json.load(open(sys.argv[1]))}
assert vols["db"]["size"] == int(sys.argv[2]) and vols["db"]["block_size"] == 512, vols
assert vols["vol0"]["size"] == int(sys.argv[3]), vols
print("volumes:", " ".join(sorted(vols)))' "$OUT" "$DB_SIZE" "$TARGET_SIZE" &&
            expect volume-list-json-parsed '^volumes: db vol0$' "a JSON array with db and vol0 and their sizes"
    fi
    if run completions "$REWIND_BIN" completions bash; then
        expect completions '^[[:space:]]*complete -F _rewind .* rewind$' "a bash completion script"
        COMPLETIONS=$OUT
        # shellcheck disable=SC2016
        run completions-loaded bash -c '. "$1" && complete -p rewind' _ "$COMPLETIONS" &&
            expect completions-loaded '^complete .* rewind$' "bash loads it and completes rewind"
    fi
    # Into a reader that closes early (`| head -1`, and `| true`, which is gone before rewind
    # writes): no panic on the broken pipe, a successful exit.
    # shellcheck disable=SC2016
    if run completions-head bash -c 'set -o pipefail
"$1" completions bash 2>"$2" | head -1 >/dev/null; echo "head: exit $?"
{ sleep 0.3; "$1" completions bash 2>>"$2"; } | true; echo "closed: exit $?"
cat "$2"' _ "$REWIND_BIN" "$WORK/completions-head.err"; then
        expect completions-head '^head: exit 0$' "exit 0 into head -1"
        expect completions-head '^closed: exit 0$' "exit 0 into a closed pipe"
        if grep -q 'panicked' "$OUT"; then check_fail "completions-head: panic on the broken pipe"; fi
    fi
    # Every line the daemon logged so far is a JSON object with a level and a message.
    # shellcheck disable=SC2016
    run log-json python3 -c 'import json, sys
n = 0
for line in open(sys.argv[1]):
    if line.strip():
        rec = json.loads(line)
        assert rec["level"] and rec["timestamp"] and "fields" in rec, rec
        n += 1
assert n > 0, "no log lines"
print("json log lines:", n)' "$TARGET_LOG" && expect log-json "^json log lines: [1-9]" "every daemon log line is a JSON object"
fi

target_alive
if [ "$FAILS" -ne 0 ]; then fail "$FAILS client check(s) failed against $TARGET_IMPL"; fi
pass "iscsi-ls, iscsi-inq, iscsi-readcapacity16, qemu-img and the README tour against $TARGET_IMPL"
