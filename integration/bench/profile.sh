#!/usr/bin/env bash
# Profile rewind's write path: one journaled volume over a fully written 1 GiB file, qemu-img
# bench writes (4 KiB QD32 by default) over iSCSI while `perf record -g` samples the daemon.
# Prints the hottest functions (self time) and writes perf.data to OUT (default: a temp dir).
# usage: integration/bench/profile.sh [--nojournal] [--count N] [--size BYTES] [--depth N]
#                                     [--step BYTES] [--journal KEY=VALUE]... [--out DIR]
# --step: each write STEP bytes after the one before (qemu-img bench -S; bench.sh's
# write-4k-scatter is --step 1052672), instead of back to back.
# --journal: a `[journal]` setting for the daemon (e.g. dirty_cache_limit=1073741824), repeatable.
set -euo pipefail
INTEG_NAME=profile
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REWIND_BIN=${REWIND_BIN:-${CARGO_TARGET_DIR:-$(cd "$HERE/../.." && pwd)/target}/release/rewind}
# shellcheck source=integration/lib.sh
. "$HERE/../lib.sh"
JOURNAL=true COUNT=200000 SIZE=4096 DEPTH=32 OUT="" STEP=""
JOURNAL_SETTINGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --nojournal) JOURNAL=false ;;
        --count) COUNT=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --depth) DEPTH=$2; shift ;;
        --out) OUT=$2; shift ;;
        --step) STEP=$2; shift ;;
        --journal)
            [[ "$2" =~ ^[a-z_]+=[^[:space:]]+$ ]] || fail "--journal wants KEY=VALUE, got '$2'"
            JOURNAL_SETTINGS+=("$2"); shift ;;
        *) fail "unknown argument $1" ;;
    esac
    shift
done
integ_init
need_cmd perf qemu-img
integ_mktemp WORK
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
head -c "$GIB" /dev/urandom >"$WORK/vol.img"
REWIND_DATA=$WORK/data
printf '[[volume]]\nname = "vol"\npath = "%s"\njournal = %s\n' "$WORK/vol.img" "$JOURNAL" >"$WORK/rewind.toml"
if [ ${#JOURNAL_SETTINGS[@]} -gt 0 ]; then
    { echo; echo "[journal]"; printf '%s\n' "${JOURNAL_SETTINGS[@]}"; } >>"$WORK/rewind.toml"
fi
REWIND_SERVE_ARGS="--config $WORK/rewind.toml" RUST_LOG=warn target_start
if [ -d "$REWIND_DATA/volumes/vol/journal" ]; then journaled=true; else journaled=false; fi
[ "$journaled" = "$JOURNAL" ] || fail "the volume's journal is $journaled, the config says $JOURNAL"
URL="iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:vol/0"
STEP_ARGS=()
[ -z "$STEP" ] || STEP_ARGS=(-S "$STEP")
# warm up (first session, page cache), then profile a second run
qemu-img bench -w -t none -f raw -c 20000 -d "$DEPTH" -s "$SIZE" "${STEP_ARGS[@]}" "$URL" >/dev/null
perf record -F 999 -g --call-graph dwarf,16384 -p "$TARGET_PID" -o "$OUT/perf.data" 2>"$WORK/perf.err" &
PERF=$!
sleep 1
qemu-img bench -w -t none -f raw -c "$COUNT" -d "$DEPTH" -s "$SIZE" "${STEP_ARGS[@]}" "$URL"
kill -INT "$PERF"
wait "$PERF" || true
perf report -i "$OUT/perf.data" --no-children --percent-limit 1.5 --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -40
perf report -i "$OUT/perf.data" --children --percent-limit 4 --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -50 >"$OUT/children.txt"
log "perf data in $OUT/perf.data; inclusive times in $OUT/children.txt"
