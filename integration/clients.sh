#!/usr/bin/env bash
# Talk to the target with the libiscsi command line clients and check what they print:
#   iscsi-ls              SendTargets discovery lists our target, and its LUN is a disk
#   iscsi-inq             standard INQUIRY, VPD 0x00 (supported pages), 0x80 (serial), 0x83 (device id)
#   iscsi-readcapacity16  1 GiB, 512-byte blocks
# usage: integration/clients.sh          (TARGET_IMPL=tgt to run it against the reference target)
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
need_cmd iscsi-ls iscsi-inq iscsi-readcapacity16

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

target_alive
if [ "$FAILS" -ne 0 ]; then fail "$FAILS client check(s) failed against $TARGET_IMPL"; fi
pass "iscsi-ls, iscsi-inq and iscsi-readcapacity16 against $TARGET_IMPL"
