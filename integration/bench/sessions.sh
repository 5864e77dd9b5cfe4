#!/usr/bin/env bash
# Resident memory of the daemon with a journal of ENTRIES entries and SESSIONS sessions writing
# at once, over iSCSI, against the bound docs/cdp.md ("Memory") states for the settings used.
#
# 1. One journaled 1 GiB volume over a fully written file, 512-byte journal chunks (so that
#    10 million entries are 5 GiB of old data), no timed merges, default journal settings
#    otherwise.
# 2. Fill: one session writes 64 KiB writes QD16 (qemu-img bench, wrapping over the volume)
#    until the journal holds ENTRIES entries (the /metrics gauge rewind_journal_entries).
# 3. SESSIONS qemu-img processes (one iSCSI session, so one port and partial journal, each)
#    each write 32 MiB of 64 KiB writes QD4 to a region of their own, at the same time.
# The daemon's VmRSS is sampled every 100 ms throughout; the table gives each phase's peak.
#
# usage: integration/bench/sessions.sh [--entries N] [--sessions N] [--no-build]
#        (~2 min at 10M entries; needs ENTRIES x 512 x 1.1 bytes of disk for the journal)
set -euo pipefail
INTEG_NAME=sessions
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=integration/lib.sh
. "$HERE/../lib.sh"
ENTRIES=10000000 SESSIONS=32 BUILD=true
while [ $# -gt 0 ]; do
    case "$1" in
        --entries) ENTRIES=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --no-build) BUILD=false ;;
        *) fail "unknown argument $1" ;;
    esac
    shift
done
[[ "$ENTRIES" =~ ^[0-9]+$ && "$SESSIONS" =~ ^[0-9]+$ && "$SESSIONS" -ge 1 && "$SESSIONS" -le 64 ]] ||
    fail "--entries wants a count, --sessions 1 to 64"
integ_init
need_cmd qemu-img python3
if $BUILD; then
    log "cargo build --release"
    (cd "$REPO_ROOT" && cargo build --release --locked) || fail "build failed"
fi
integ_mktemp WORK
CHUNK=512 PARTIAL=$((32 << 20)) PARTIAL_LIMIT=$((512 << 20)) DIRTY=$((64 << 20)) SLED_CACHE=$((64 << 20)) IN_FLIGHT=$((512 << 20))
REGION=$((32 << 20))
[ $((SESSIONS * REGION)) -le "$GIB" ] || fail "$SESSIONS sessions of 32 MiB do not fit the 1 GiB volume"
log "writing the 1 GiB backing file"
head -c "$GIB" /dev/urandom >"$WORK/vol.img"
REWIND_DATA=$WORK/data
HTTP_PORT=$(free_port)
cat >"$WORK/rewind.toml" <<EOF
[[volume]]
name = "vol"
path = "$WORK/vol.img"

[journal]
chunk_size = $CHUNK
partial_capacity = $PARTIAL
partial_limit = $PARTIAL_LIMIT
dirty_cache_limit = $DIRTY
# no timed merges: the fill rewrites the volume several times within a merge window, and a
# merge would keep only one entry per chunk and window
merge_interval = "0s"
EOF
REWIND_SERVE_ARGS="--config $WORK/rewind.toml --http 127.0.0.1:$HTTP_PORT" RUST_LOG=warn target_start
URL="iscsi://127.0.0.1:$TARGET_PORT/$REWIND_IQN_PREFIX:vol/0"

entries() {
    python3 - "$HTTP_PORT" <<'EOF'
import re, sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
m = re.search(r'^rewind_journal_entries\{volume="vol"\} (\S+)$', body, re.M)
print(int(float(m.group(1))) if m else -1)
EOF
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status"; }
# sample VmRSS into FILE every 100 ms until stopped
sample() { while kill -0 "$TARGET_PID" 2>/dev/null; do rss_kib >>"$1"; sleep 0.1; done; }
peak_mib() { sort -n "$1" | tail -1 | awk '{printf "%.0f", $1 / 1024}'; }

rss_start=$(rss_kib)
sample "$WORK/fill.rss" &
SAMPLER=$!
# Each 64 KiB write journals 128 chunk entries; write in rounds until the index holds ENTRIES.
fill_start=$SECONDS
per_round=$(((ENTRIES / 128 + 9) / 10 + 1))
have=$(entries)
while [ "$have" -lt "$ENTRIES" ]; do
    [ "$have" -ge 0 ] || fail "no rewind_journal_entries gauge for volume vol in /metrics"
    qemu-img bench -w -t none -f raw -c "$per_round" -d 16 -s 65536 "$URL" >/dev/null ||
        fail "qemu-img bench (fill) failed"
    sleep 0.5 # the last partial journal reaches the index at its next flush
    have=$(entries)
    log "journal entries: $have of $ENTRIES"
done
fill_s=$((SECONDS - fill_start))
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
rss_filled=$(rss_kib)

log "$SESSIONS sessions writing 32 MiB each at once"
sample "$WORK/sessions.rss" &
SAMPLER=$!
pids=()
for i in $(seq 0 $((SESSIONS - 1))); do
    qemu-img bench -w -t none -f raw -c $((REGION / 65536)) -d 4 -s 65536 -o $((i * REGION)) "$URL" \
        >"$WORK/session-$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
[ "$failed" -eq 0 ] || { tail -3 "$WORK"/session-*.log >&2; fail "$failed of $SESSIONS sessions failed"; }
target_alive
entries_after=$(entries)

# The bound of docs/cdp.md "Memory" for these settings (the fixed terms; sled's per-key term
# is what the fill phase shows).
PARTIALS=$((SESSIONS * 2 * PARTIAL))
[ "$PARTIALS" -le "$PARTIAL_LIMIT" ] || PARTIALS=$PARTIAL_LIMIT
bound_mib=$(((PARTIALS + 2 * DIRTY + SLED_CACHE + IN_FLIGHT) / 1048576 + 48))
echo
echo "Resident memory of rewind, $(date +%F), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM; 1 GiB volume, ${CHUNK}-byte chunks, no timed merges, journal settings otherwise the defaults:"
echo
echo "| phase | journal entries | peak VmRSS | time |"
echo "|---|---:|---:|---:|"
echo "| started | 0 | $((rss_start / 1024)) MiB | |"
echo "| fill: 64 KiB writes QD16, one session at a time | $have | $(peak_mib "$WORK/fill.rss") MiB | $fill_s s |"
echo "| $SESSIONS sessions writing 32 MiB each at once | $entries_after | $(peak_mib "$WORK/sessions.rss") MiB | |"
echo
echo "After the fill: $((rss_filled / 1024)) MiB. Stated bound for $SESSIONS sessions with these settings"
echo "(docs/cdp.md \"Memory\": partial journals, dirty cache, sled's page cache, write data in flight,"
echo "48 MiB of caches) plus sled's per-key term: $bound_mib MiB + the fill's growth."
peak_s=$(peak_mib "$WORK/sessions.rss")
[ "$peak_s" -le $((bound_mib + $(peak_mib "$WORK/fill.rss"))) ] ||
    fail "peak resident memory $peak_s MiB is above the stated bound"
pass "sessions bench done"
