#!/usr/bin/env bash
# Boot a throw-away QEMU guest with a real Linux iSCSI initiator (Debian kernel iscsi_tcp plus
# open-iscsi) and run a guest script against a target listening on the host's 127.0.0.1:PORT.
# QEMU user networking maps the guest's 10.0.2.2 to the host's loopback; nothing else is used.
#
# usage: run-guest.sh --port PORT --target IQN [--lun N] [--script FILE] [--timeout S]
#                     [--env KEY=VALUE]... [--iscsid-opt 'key = value']... [--log FILE]
#                     [--prepare-only]
#   --script defaults to guest/e2e-guest.sh. The script sees PORTAL=10.0.2.2:PORT, TARGET_IQN,
#   LUN, INITIATOR_NAME and every --env. The console log goes to --log and to stdout.
# exit status: the guest script's exit code; 124 timeout; 125 the guest stopped without a
#   result (panic, init failure); 2 usage; 3 host-side preparation failed.
# env: VM_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rewind-vm), VM_KERNEL_PKG,
#      VM_MEMORY (MiB, default 768), VM_SMP (default 2)
set -euo pipefail
VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=integration/vm/prepare.sh
. "$VM_DIR/prepare.sh"

PORT="" IQN="" LUN=0 SCRIPT=$VM_DIR/guest/e2e-guest.sh TIMEOUT=600 LOG="" PREP_ONLY=0
ENVS=() OPTS=()
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --port) PORT=${2:?}; shift 2 ;;
        --target) IQN=${2:?}; shift 2 ;;
        --lun) LUN=${2:?}; shift 2 ;;
        --script) SCRIPT=${2:?}; shift 2 ;;
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --env) ENVS+=("${2:?}"); shift 2 ;;
        --iscsid-opt) OPTS+=("${2:?}"); shift 2 ;;
        --log) LOG=${2:?}; shift 2 ;;
        --prepare-only) PREP_ONLY=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run-guest.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$PREP_ONLY" = 0 ] && { [ -z "$PORT" ] || [ -z "$IQN" ]; }; then usage >&2; exit 2; fi
[ -f "$SCRIPT" ] || { echo "run-guest.sh: no script $SCRIPT" >&2; exit 2; }

T0=$SECONDS
mkdir -p "$VM_CACHE"
(
    # one preparation at a time per cache
    flock 9
    vm_host_tools
    vm_kernel
    vm_initramfs "$VM_DIR/guest"
    echo "$VM_KERNEL $VM_INITRAMFS" >"$VM_CACHE/.last"
) 9>"$VM_CACHE/.lock" || exit 3
read -r KERNEL BASE_CPIO <"$VM_CACHE/.last"
if [ "$PREP_ONLY" = 1 ]; then echo "kernel $KERNEL"; echo "initramfs $BASE_CPIO"; exit 0; fi
BUSYBOX=$VM_CACHE/root-busybox-static/bin/busybox

RUN=$(mktemp -d "${TMPDIR:-/tmp}/rewind-vm.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM

# per-run archive appended to the base initramfs: the kernel unpacks both, in order
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
mkdir -p "$RUN/root/test"
install -m 0755 "$SCRIPT" "$RUN/root/test/run.sh"
{
    echo "export PORTAL=$(quote "10.0.2.2:$PORT") TARGET_IQN=$(quote "$IQN") LUN=$(quote "$LUN")"
    echo "export INITIATOR_NAME=$(quote "iqn.2026-11.dev.rewind.test:vm-$$")"
    for e in "${ENVS[@]+"${ENVS[@]}"}"; do echo "export ${e%%=*}=$(quote "${e#*=}")"; done
} >"$RUN/root/test/test.env"
for o in "${OPTS[@]+"${OPTS[@]}"}"; do echo "$o"; done >"$RUN/root/test/iscsid.conf.extra"
(cd "$RUN/root" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$RUN/run.cpio"
cat "$BASE_CPIO" "$RUN/run.cpio" >"$RUN/initrd"

ACCEL=(-accel "tcg,thread=multi" -cpu max)
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
    ACCEL=(-accel kvm -cpu host)
fi
QEMU=(qemu-system-x86_64 -nodefaults -no-user-config -no-reboot -display none -monitor none
    -machine pc "${ACCEL[@]}" -m "${VM_MEMORY:-768}" -smp "${VM_SMP:-2}"
    -kernel "$KERNEL" -initrd "$RUN/initrd"
    -append "console=ttyS0 rdinit=/init panic=-1 oops=panic quiet loglevel=4 8250.nr_uarts=1 random.trust_cpu=on"
    -netdev "user,id=net0,ipv6=off" -device "virtio-net-pci,netdev=net0,romfile="
    -serial stdio)
LOG=${LOG:-$RUN/console.log}
: >"$LOG"
T1=$SECONDS
vm_log "booting the guest (${ACCEL[1]}, timeout ${TIMEOUT}s) against 127.0.0.1:$PORT $IQN LUN $LUN"
set +e
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | sed -u 's/\r//g' | tee -a "$LOG"
QRC=${PIPESTATUS[0]}
set -e
T2=$SECONDS

RESULT=$(sed -n 's/^VM-RESULT \([0-9][0-9]*\)$/\1/p' "$LOG" | tail -n1)
if [ -n "$RESULT" ]; then RC=$RESULT
elif grep -q 'Kernel panic' "$LOG"; then RC=125
elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then RC=124
else RC=125
fi
vm_log "guest result: ${RESULT:-none} -> exit $RC (prepare $((T1 - T0))s, vm $((T2 - T1))s)"
exit "$RC"
