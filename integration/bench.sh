#!/usr/bin/env bash
# Throughput of rewind against tgt, measured in one run on one machine so that only ratios are
# compared (absolute numbers on a shared machine mean little).
#
#   1. Three backing files of the same size (default 1 GiB) on the same filesystem, each fully
#      written once with the same random data, so every benchmark write overwrites data that
#      already exists and rewind's journal pays its copy-on-write.
#   2. One private tgtd (LUN 1 on the first file) and one rewind daemon serving two volumes on
#      the other files: `cdp` (journaled, the default) and `nojournal` (`journal = false`).
#   3. Each round runs every workload against the three targets, in a rotating order:
#        qemu-img bench  4 KiB writes QD32, 4 KiB reads QD32, 128 KiB writes QD16,
#                        128 KiB reads QD16 (sequential, from offset 0), and 4 KiB writes
#                        QD32 scattered over the volume (each 1028 KiB after the one before)
#        iscsi-perf      random 4 KiB reads, QD32, for a fixed time
#      and the table shows the median of the rounds per workload and target, and the ratios
#      rewind/tgt of the medians; a second table the median and range of each round's own
#      ratio (a round runs the targets of a workload back to back, so its pair shares the
#      machine's state of that minute). After the 128 KiB writes, each round also times a dd copy of
#      one backing file with fdatasync: the disk's durable write rate, which bounds CDP writes.
#   4. Reads of the past: a read-only view of the `cdp` volume exported at the moment before
#      the first benchmark write (so every block the write workloads touched is read from the
#      journal) against the live volume, the read workloads only, same rounds and rotation; a
#      second table shows view/live.
#
# usage: integration/bench.sh [--quick] [--rounds N] [--size BYTES] [--write-docs] [--no-build]
#                             [--tgt-stock] [--only WORKLOAD[,WORKLOAD...]] [--journal KEY=VALUE]...
#        integration/bench.sh --scale [ENTRIES]     (journal at scale: integration/bench/scale.sh)
#   --quick       one round with short counts (a smoke test of the script, not a measurement)
#   --rounds N    rounds (default 5)
#   --write-docs  replace the results section of docs/benchmarks.md with this run's table
#   --no-build    use the existing release binary
#   --tgt-stock   leave tgt's login parameters at its defaults (by default tgt is set to offer
#                 rewind's: 256 KiB data segments, 16 MiB bursts, InitialR2T=No, ImmediateData)
#   --only W,...  run only these workloads (names as in the table, e.g. write-128k); not with
#                 --write-docs
#   --journal K=V a `[journal]` setting for the daemon (e.g. dirty_cache_limit=1073741824),
#                 repeatable; the run's setup line names them
# env: REWIND_BIN, CARGO_TARGET_DIR (binary location), BENCH_RESULTS (keep the raw TSV there)
# Needs root (tgtd), qemu-img with the iscsi driver, iscsi-perf (libiscsi-bin). Not part of
# run-all.sh.
set -euo pipefail
INTEG_NAME=bench
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "${1:-}" = --scale ]; then
    shift
    exec "$BENCH_DIR/bench/scale.sh" "$@"
fi
REWIND_BIN_SET=${REWIND_BIN:+1}
REWIND_BIN=${REWIND_BIN:-${CARGO_TARGET_DIR:-$(cd "$BENCH_DIR/.." && pwd)/target}/release/rewind}
# shellcheck source=integration/lib.sh
. "$BENCH_DIR/lib.sh"

ROUNDS=5 QUICK=0 WRITE_DOCS=0 BUILD=1 SIZE=$GIB TGT_STOCK=0 ONLY="" JOURNAL_SETTINGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --write-docs) WRITE_DOCS=1 ;;
        --no-build) BUILD=0 ;;
        --tgt-stock) TGT_STOCK=1 ;;
        --only) ONLY=$2; shift ;;
        --journal)
            [[ "$2" =~ ^[a-z_]+=[^[:space:]]+$ ]] || fail "--journal wants KEY=VALUE, got '$2'"
            JOURNAL_SETTINGS+=("$2"); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ "$ROUNDS" -ge 1 ] 2>/dev/null || fail "--rounds needs a positive number"

# Workloads: NAME TOOL SIZE DEPTH COUNT (qemu-img: requests; iscsi-perf: seconds). qemu-ws
# writes 4 KiB pieces SCATTER_STEP apart (qemu-img bench -S, wrapping at the end of the
# volume): 257 chunks, so that each write lands in another 64 KiB index extent of the journal
# and every 4 KiB slot is written once before any is written again.
SCATTER_STEP=$((257 * 4096))
if [ "$QUICK" = 1 ]; then
    WORKLOADS=(
        "write-4k qemu-w 4096 32 5000"
        "write-4k-scatter qemu-ws 4096 32 5000"
        "read-4k qemu-r 4096 32 5000"
        "write-128k qemu-w 131072 16 800"
        "read-128k qemu-r 131072 16 800"
        "randread-4k perf 4096 32 1"
    )
else
    WORKLOADS=(
        "write-4k qemu-w 4096 32 150000"
        "write-4k-scatter qemu-ws 4096 32 60000"
        "read-4k qemu-r 4096 32 150000"
        "write-128k qemu-w 131072 16 8000"
        "read-128k qemu-r 131072 16 8000"
        "randread-4k perf 4096 32 4"
    )
fi
if [ -n "$ONLY" ]; then
    [ "$WRITE_DOCS" = 0 ] || fail "--only and --write-docs do not go together (the docs table has every workload)"
    KEPT=()
    for wl in "${WORKLOADS[@]}"; do
        read -r name _ <<<"$wl"
        case ",$ONLY," in *",$name,"*) KEPT+=("$wl") ;; esac
    done
    [ ${#KEPT[@]} -gt 0 ] || fail "--only $ONLY names no workload (write-4k write-4k-scatter read-4k write-128k read-128k randread-4k)"
    WORKLOADS=("${KEPT[@]}")
fi
TARGETS=(tgt cdp nojournal)

integ_init
need_cmd qemu-img iscsi-perf tgtd tgtadm awk sort
qemu-img --help 2>/dev/null | grep -w iscsi >/dev/null || fail "qemu-img has no iscsi driver (run integration/setup.sh)"
[ "$(id -u)" -eq 0 ] || fail "tgtd must run as root"
if [ "$BUILD" = 1 ] && [ -z "${REWIND_BIN_SET:-}" ]; then
    log "cargo build --release"
    (cd "$REPO_ROOT" && cargo build --release --locked --bin rewind) || fail "release build failed"
fi
[ -x "$REWIND_BIN" ] || fail "rewind binary not found at $REWIND_BIN"

integ_mktemp WORK
RESULTS=${BENCH_RESULTS:-$WORK/results.tsv}
: >"$RESULTS"
# The CDP volume's journal gives up its oldest history when its filesystem falls below
# min_free_percent (10 %) free: the view of the run's start would then be gone.
free_pct=$(df -P "$WORK" | awk 'NR == 2 { printf "%d", 100 * $4 / $2 }')
need_mib=$(( (SIZE >> 20) * 3 + (SIZE >> 20) * 2 * ROUNDS ))
if [ "$free_pct" -lt 20 ]; then
    log "warning: only ${free_pct}% of the filesystem of $WORK is free; the run writes about" \
        "${need_mib} MiB and the journal drops its oldest history below 10% free"
fi

# ---- backing files ------------------------------------------------------------------------------
log "preparing three $((SIZE >> 20)) MiB backing files in $WORK (fully written)"
head -c "$SIZE" /dev/urandom >"$WORK/tgt.img"
cp --sparse=never --reflink=never "$WORK/tgt.img" "$WORK/cdp.img"
cp --sparse=never --reflink=never "$WORK/tgt.img" "$WORK/nojournal.img"
sync

# ---- tgt -------------------------------------------------------------------------------------
TGT_PID="" TGT_PORT=""
bench_tgt_start() {
    local logf=$WORK/tgtd.log i
    TGT_PORT=$(free_port)
    TGT_CTL=$(tgt_pick_ctl) || fail "no free tgtd control port"
    setsid tgtd -f --iscsi "portal=127.0.0.1:$TGT_PORT" -C "$TGT_CTL" >"$logf" 2>&1 &
    TGT_PID=$!
    wait_port "$TGT_PORT" "$TGT_PID" "$INTEG_START_TIMEOUT" "$logf" || fail "tgtd did not start"
    for i in $(seq 1 50); do tgt_ctl_free "$TGT_CTL" || break; sleep 0.1; : "$i"; done
    tgt --op new --mode target --tid 1 -T "$TGT_IQN"
    tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/tgt.img"
    tgt --op bind --mode target --tid 1 -I ALL
    # Offer what rewind offers (src/config.rs IscsiConfig defaults) so that both targets are
    # driven with the same PDU sizes; tgt's stock MaxRecvDataSegmentLength is 8 KiB.
    [ "$TGT_STOCK" = 1 ] && return 0
    local kv
    for kv in MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144 \
        MaxBurstLength=16776192 FirstBurstLength=16776192 InitialR2T=No ImmediateData=Yes; do
        tgt_param "${kv%%=*}" "${kv#*=}" || log "tgt refused $kv"
    done
}
bench_tgt_stop() {
    [ -n "$TGT_PID" ] || return 0
    TARGET_PID=$TGT_PID
    tgt_stop
    TGT_PID=""
}

# ---- rewind ----------------------------------------------------------------------------------
REWIND_DATA=$WORK/data
REWIND_PID="" REWIND_PORT=""
cat >"$WORK/rewind.toml" <<EOF
[[volume]]
name = "cdp"
path = "$WORK/cdp.img"

[[volume]]
name = "nojournal"
path = "$WORK/nojournal.img"
journal = false
EOF
if [ ${#JOURNAL_SETTINGS[@]} -gt 0 ]; then
    { echo; echo "[journal]"; printf '%s\n' "${JOURNAL_SETTINGS[@]}"; } >>"$WORK/rewind.toml"
fi
bench_rewind_start() {
    REWIND_SERVE_ARGS="--config $WORK/rewind.toml" rewind_start || fail "rewind did not start"
    REWIND_PID=$TARGET_PID REWIND_PORT=$TARGET_PORT
    TARGET_PID=""
}
bench_rewind_stop() {
    [ -n "$REWIND_PID" ] || return 0
    TARGET_PID=$REWIND_PID
    rewind_stop
    REWIND_PID=""
}
# Is the volume NAME journaled in the running daemon? (its journal directory exists)
rewind_journaled() { [ -d "$REWIND_DATA/volumes/$1/journal" ]; }

integ_on_exit bench_tgt_stop
integ_on_exit bench_rewind_stop
bench_tgt_start
bench_rewind_start
! rewind_journaled nojournal || fail "volume nojournal is journaled although the config says journal = false"
rewind_journaled cdp || fail "volume cdp is not journaled"

url_of() { # TARGET -> iscsi URL
    case "$1" in
        tgt) echo "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1" ;;
        cdp|live) echo "iscsi://127.0.0.1:$REWIND_PORT/$REWIND_IQN_PREFIX:cdp/0" ;;
        nojournal) echo "iscsi://127.0.0.1:$REWIND_PORT/$REWIND_IQN_PREFIX:nojournal/0" ;;
        view) echo "iscsi://127.0.0.1:$REWIND_PORT/$VIEW_IQN/0" ;;
    esac
}
alive() {
    kill -0 "$TGT_PID" 2>/dev/null || { sed 's/^/    | /' "$WORK/tgtd.log" >&2; fail "tgtd died"; }
    kill -0 "$REWIND_PID" 2>/dev/null || { sed 's/^/    | /' "$TARGET_LOG" >&2; fail "rewind died"; }
}

# run_one ROUND TARGET NAME TOOL SIZE DEPTH COUNT: one measurement, appended to RESULTS as
# round target workload iops MB/s
run_one() {
    local round=$1 t=$2 name=$3 tool=$4 size=$5 depth=$6 count=$7 url out secs iops mbps
    url=$(url_of "$t")
    out=$WORK/out.txt
    case "$tool" in
        qemu-w|qemu-ws|qemu-r)
            local w=()
            [ "$tool" = qemu-w ] && w=(-w)
            [ "$tool" = qemu-ws ] && w=(-w -S "$SCATTER_STEP")
            qemu-img bench "${w[@]}" -t none -f raw -c "$count" -d "$depth" -s "$size" "$url" >"$out" 2>&1 \
                || { sed 's/^/    | /' "$out" >&2; fail "qemu-img bench $name against $t failed"; }
            secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' "$out")
            [ -n "$secs" ] || { sed 's/^/    | /' "$out" >&2; fail "no timing in qemu-img output"; }
            iops=$(awk -v c="$count" -v s="$secs" 'BEGIN { printf "%.0f", c / s }')
            mbps=$(awk -v c="$count" -v s="$secs" -v b="$size" 'BEGIN { printf "%.1f", c * b / s / 1e6 }')
            ;;
        perf)
            iscsi-perf -r -m "$depth" -b $((size / 512)) -t "$count" "$url" >"$out" 2>&1 \
                || { tr '\r' '\n' <"$out" | sed 's/^/    | /' >&2; fail "iscsi-perf against $t failed"; }
            iops=$(tr '\r' '\n' <"$out" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -1)
            [ -n "$iops" ] || { tr '\r' '\n' <"$out" | sed 's/^/    | /' >&2; fail "no result in iscsi-perf output"; }
            mbps=$(awk -v i="$iops" -v b="$size" 'BEGIN { printf "%.1f", i * b / 1e6 }')
            ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$name" "$iops" "$mbps" >>"$RESULTS"
    printf '  %-12s %-10s %9s IOPS %9s MB/s\n' "$name" "$t" "$iops" "$mbps"
    alive
}

# disk_one ROUND: durable sequential writes of the backing filesystem, appended to RESULTS as
# target "disk", workload "durable-write": a copy of one backing file with dd (8 MiB blocks,
# one fdatasync at the end). It bounds what CDP writes can sustain: a write's old data is on
# disk before its new data may reach the volume.
disk_one() {
    local out=$WORK/dd.txt bytes secs mbps
    LC_ALL=C dd if="$WORK/tgt.img" of="$WORK/disk.tmp" bs=8M conv=fdatasync 2>"$out" \
        || { sed 's/^/    | /' "$out" >&2; fail "dd to the backing filesystem failed"; }
    rm -f "$WORK/disk.tmp"
    read -r bytes secs < <(sed -n 's/^\([0-9]*\) bytes .* copied, \([0-9.]*\) s.*/\1 \2/p' "$out") || true
    [ -n "$bytes" ] && [ -n "$secs" ] || { sed 's/^/    | /' "$out" >&2; fail "no timing in dd output"; }
    mbps=$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / s / 1e6 }')
    printf '%s	%s	%s	%s	%s
' "$1" disk durable-write - "$mbps" >>"$RESULTS"
    printf '  %-12s %-10s %9s      %9s MB/s
' durable-write disk - "$mbps"
}

# rounds TARGET...: every round runs each workload of WORKLOADS against the targets given,
# rotating their order from round to round (and, with the 128 KiB writes, measures the disk)
rounds() {
    local targets=("$@") r k t wl name tool size depth count
    for ((r = 1; r <= ROUNDS; r++)); do
        log "round $r/$ROUNDS (${targets[*]})"
        for wl in "${WORKLOADS[@]}"; do
            read -r name tool size depth count <<<"$wl"
            [ -n "${ONLY_READS:-}" ] && [ "${tool#qemu-w}" != "$tool" ] && continue
            for ((k = 0; k < ${#targets[@]}; k++)); do
                t=${targets[$(((k + r - 1) % ${#targets[@]}))]}
                run_one "$r" "$t" "$name" "$tool" "$size" "$depth" "$count"
            done
            if [ "$name" = write-128k ]; then disk_one "$r"; fi
        done
    done
}

# ---- the runs ----------------------------------------------------------------------------------
log "tgt on port $TGT_PORT, rewind on port $REWIND_PORT; $ROUNDS round(s)"
# The point the view of step 4 shows: before any benchmark write.
VIEW_AT=$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)
sleep 0.01
rounds "${TARGETS[@]}"

# ---- reads of the past -----------------------------------------------------------------------
VIEW_IQN=$(rewind_cli snapshot export cdp --at "$VIEW_AT" --name bench | tail -n 1)
case "$VIEW_IQN" in iqn.*) ;; *) fail "snapshot export printed no IQN: $VIEW_IQN" ;; esac
log "view of cdp at $VIEW_AT: $VIEW_IQN; $(rewind_cli history cdp | grep -i 'entries' | head -1 | sed 's/^ *//')"
ONLY_READS=1 rounds view live

# ---- the table ---------------------------------------------------------------------------------
median() { # TARGET WORKLOAD COLUMN(4=iops 5=MB/s)
    awk -F'\t' -v t="$1" -v w="$2" -v c="$3" '$2 == t && $3 == w { print $c }' "$RESULTS" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
# round_ratios A B WORKLOAD: the ratio A/B (IOPS) of each round that measured both, as
# "median (min-max)": each round runs the targets back to back, so a round's pair shares
# that minute's machine, unlike the medians of the columns.
round_ratios() {
    awk -F'\t' -v a="$1" -v b="$2" -v w="$3" '
        $3 == w && $2 == a { x[$1] = $4 }
        $3 == w && $2 == b { y[$1] = $4 }
        END { for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r] }' "$RESULTS" | sort -g \
        | awk '{ v[NR] = $1 }
            END {
                if (NR == 0) { print "-"; exit }
                m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                if (NR == 1) printf "%.2f\n", m; else printf "%.2f (%.2f-%.2f)\n", m, v[1], v[NR]
            }'
}
TABLE=$WORK/table.md
{
    echo "| workload | tgt IOPS | tgt MB/s | CDP IOPS | CDP MB/s | CDP/tgt | no-journal IOPS | no-journal MB/s | no-journal/tgt |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for wl in "${WORKLOADS[@]}"; do
        read -r name _ <<<"$wl"
        ti=$(median tgt "$name" 4) tm=$(median tgt "$name" 5)
        ci=$(median cdp "$name" 4) cm=$(median cdp "$name" 5)
        ni=$(median nojournal "$name" 4) nm=$(median nojournal "$name" 5)
        echo "| $name | $ti | $tm | $ci | $cm | $(ratio "$ci" "$ti") | $ni | $nm | $(ratio "$ni" "$ti") |"
    done
} >"$TABLE"
ROUND_TABLE=$WORK/round-table.md
{
    echo "| workload | CDP/tgt | no-journal/tgt |"
    echo "|---|---:|---:|"
    for wl in "${WORKLOADS[@]}"; do
        read -r name _ <<<"$wl"
        echo "| $name | $(round_ratios cdp tgt "$name") | $(round_ratios nojournal tgt "$name") |"
    done
} >"$ROUND_TABLE"
VIEW_TABLE=$WORK/view-table.md
{
    echo "| workload (reads) | live IOPS | live MB/s | view IOPS | view MB/s | view/live | view/live per round |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for wl in "${WORKLOADS[@]}"; do
        read -r name tool _ <<<"$wl"
        [ "${tool#qemu-w}" != "$tool" ] && continue
        li=$(median live "$name" 4) lm=$(median live "$name" 5)
        vi=$(median view "$name" 4) vm=$(median view "$name" 5)
        echo "| $name | $li | $lm | $vi | $vm | $(ratio "$vi" "$li") | $(round_ratios view live "$name") |"
    done
} >"$VIEW_TABLE"

DISK_MBPS=$(median disk durable-write 5)
DISK_LINE=""
if [ "$DISK_MBPS" != - ]; then
    DISK_LINE="Durable writes of the backing filesystem (dd of one backing file, 8 MiB blocks, one fdatasync; median): $DISK_MBPS MB/s. CDP 128 KiB writes ran at $(ratio "$(median cdp write-128k 5)" "$DISK_MBPS") of it, tgt's at $(ratio "$(median tgt write-128k 5)" "$DISK_MBPS") (tgt's writes stay in the page cache during a run)."
fi

MACHINE="$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r), $(df -T "$WORK" | awk 'NR == 2 { print $2 }') backing filesystem"
DATE=$(date -u +%Y-%m-%d)
SETUP="$ROUNDS round(s), medians; $((SIZE >> 20)) MiB preallocated, fully written backing files; qemu-img $(qemu-img --version | awk 'NR == 1 { print $3 }'), tgt $(tgtd --version 2>/dev/null | head -1 || echo '?')"
[ "$TGT_STOCK" = 1 ] && SETUP="$SETUP; tgt with its stock login parameters"
[ ${#JOURNAL_SETTINGS[@]} -gt 0 ] && SETUP="$SETUP; journal settings: ${JOURNAL_SETTINGS[*]}"
[ "$TGT_STOCK" = 0 ] && SETUP="$SETUP; tgt set to offer rewind's login parameters (256 KiB segments, InitialR2T=No)"
[ "$QUICK" = 1 ] && SETUP="$SETUP; --quick (smoke test, not a measurement)"
echo
echo "$DATE, $MACHINE"
echo "$SETUP"
echo
cat "$TABLE"
echo
echo "The same ratios per round (the targets of a round run back to back), median (range):"
echo
cat "$ROUND_TABLE"
[ -n "$DISK_LINE" ] && { echo; echo "$DISK_LINE"; }
echo
echo "Reads of a view exported at the start (every block the writes touched comes from the journal):"
echo
cat "$VIEW_TABLE"

if [ "$WRITE_DOCS" = 1 ]; then
    DOC=$REPO_ROOT/docs/benchmarks.md
    [ -f "$DOC" ] || fail "$DOC not found"
    {
        echo "<!-- bench:begin (written by integration/bench.sh --write-docs) -->"
        echo "Measured $DATE on $MACHINE."
        echo "$SETUP."
        echo
        cat "$TABLE"
        echo
        echo "The same ratios taken per round (each round runs the three targets of a workload back"
        echo "to back, so a pair shares that minute's machine), median and range of the rounds:"
        echo
        cat "$ROUND_TABLE"
        [ -n "$DISK_LINE" ] && { echo; echo "$DISK_LINE"; }
        echo
        echo "Reads of a view of the CDP volume exported before the first benchmark write (every"
        echo "block the write workloads touched is read from the journal), against the live volume:"
        echo
        cat "$VIEW_TABLE"
        echo "<!-- bench:end -->"
    } >"$WORK/section.md"
    awk -v sec="$WORK/section.md" '
        /^<!-- bench:begin/ { while ((getline l < sec) > 0) print l; skip = 1; next }
        /^<!-- bench:end -->/ { skip = 0; next }
        !skip { print }' "$DOC" >"$WORK/doc.md"
    grep -q '^<!-- bench:begin' "$DOC" || fail "$DOC has no <!-- bench:begin --> marker"
    cat "$WORK/doc.md" >"$DOC"
    log "updated $DOC"
fi
pass "benchmarks done"
