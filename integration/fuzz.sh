#!/usr/bin/env bash
# Bounded fuzzing: every cargo-fuzz target in protocol/fuzz/ runs for FUZZ_SECS seconds
# (default 60) with libFuzzer, seeded from protocol/fuzz/corpus-seeds/<target>/. A crash, a
# failed assertion, a sanitizer report or a leak fails the step; the input that did it is kept
# in protocol/fuzz/artifacts/<target>/.
#
# cargo-fuzz needs a nightly compiler; this builds the targets the way cargo-fuzz does, with the
# stable toolchain and RUSTC_BOOTSTRAP=1 (sanitizer-coverage instrumentation, AddressSanitizer
# when the toolchain ships its runtime). No cargo-fuzz install is needed. If the build cannot be
# done (no C++ compiler for libFuzzer, crates not reachable), the step is skipped with a message
# and exit 0, unless FUZZ_REQUIRED=1.
#
# env: FUZZ_SECS (60), FUZZ_TARGETS (default: all bins of protocol/fuzz), FUZZ_REQUIRED (0),
#      FUZZ_JOBS (1: libFuzzer processes per target)
set -euo pipefail
INTEG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INTEG_DIR/.." && pwd)
FUZZ_DIR=$REPO_ROOT/protocol/fuzz
SECS=${FUZZ_SECS:-60}
[ -d "$HOME/.cargo/bin" ] && case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) PATH=$HOME/.cargo/bin:$PATH ;; esac

log() { echo "[fuzz $(date +%T)] $*"; }
skip() {
    echo "[fuzz] SKIP: $*"
    if [ "${FUZZ_REQUIRED:-0}" = 1 ]; then exit 1; fi
    exit 0
}

command -v cargo >/dev/null || skip "no cargo"
command -v c++ >/dev/null || command -v clang++ >/dev/null || skip "no C++ compiler to build libFuzzer (apt-get install g++)"
host=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$host" ] || skip "cannot tell the host target"

# The instrumentation cargo-fuzz uses.
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
sysroot=$(rustc --print sysroot)
if ls "$sysroot/lib/rustlib/$host/lib/"*rt.asan.a >/dev/null 2>&1; then
    flags+=" -Zsanitizer=address"
    san=address
else
    san=none
fi
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/fuzz}

targets=${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | grep -v '^rewind-protocol-fuzz$')}
[ -n "$targets" ] || skip "no fuzz targets found in $FUZZ_DIR/Cargo.toml"

log "building fuzz targets ($targets) with sanitizer=$san, RUSTC_BOOTSTRAP=1"
bins=()
for t in $targets; do bins+=(--bin "$t"); done
mkdir -p "$CARGO_TARGET_DIR"
if ! RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" cargo build --manifest-path "$FUZZ_DIR/Cargo.toml" \
    --release --target "$host" "${bins[@]}" 2>"$CARGO_TARGET_DIR.build.log"; then
    tail -n 30 "$CARGO_TARGET_DIR.build.log" >&2 || true
    skip "the fuzz targets do not build here (see above)"
fi

failed=0
for t in $targets; do
    bin=$CARGO_TARGET_DIR/$host/release/$t
    [ -x "$bin" ] || { log "FAIL: $bin was not built"; failed=1; continue; }
    corpus=$(mktemp -d "${TMPDIR:-/tmp}/rewind-fuzz-$t.XXXXXX")
    seeds=$FUZZ_DIR/corpus-seeds/$t
    artifacts=$FUZZ_DIR/artifacts/$t
    mkdir -p "$artifacts"
    nseeds=0
    [ -d "$seeds" ] && nseeds=$(find "$seeds" -type f | wc -l)
    log "$t: ${SECS}s from $nseeds seed(s)"
    rc=0
    # Corpus dir first (libFuzzer writes new inputs there), then the read-only seeds.
    # shellcheck disable=SC2046
    # (-jobs makes libFuzzer write fuzz-N.log files into the working directory: run it there.)
    (cd "$corpus" && "$bin" -max_total_time="$SECS" -print_final_stats=1 -jobs="${FUZZ_JOBS:-1}" \
        -artifact_prefix="$artifacts/" -rss_limit_mb=2048 -max_len=65536 \
        "$corpus" $([ -d "$seeds" ] && echo "$seeds")) >"$corpus.log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' "$corpus.log" | sed "s/^/    $t: /" || true
    if [ "$rc" -ne 0 ]; then
        log "FAIL: $t (exit $rc); last lines of its log:"
        tail -n 40 "$corpus.log" >&2
        ls -1 "$artifacts" >&2 || true
        failed=1
    else
        log "ok: $t"
    fi
    rm -rf "$corpus" "$corpus.log"
    rmdir "$artifacts" 2>/dev/null || true
done
[ "$failed" -eq 0 ] || { echo "[fuzz] FAIL"; exit 1; }
echo "[fuzz] PASS: $(echo "$targets" | wc -w) target(s), ${SECS}s each"
