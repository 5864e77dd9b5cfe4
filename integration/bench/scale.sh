#!/usr/bin/env bash
# The CDP journal at scale (examples/journal_scale.rs): fill a journal with ENTRIES entries
# (default 1000000) and measure view creation, view vs live reads, restore, crash recovery
# with a full partial journal, merge, journal bytes on disk per byte of old data, and VmRSS.
# usage: integration/bench/scale.sh [ENTRIES] [extra journal_scale arguments...]
#        e.g. integration/bench/scale.sh 10000000 --chunk 512 --write 64KiB
# env: SCALE_DIR (work directory, default under TMPDIR; needs ~ENTRIES x chunk x 1.1 bytes)
set -euo pipefail
INTEG_NAME=scale
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=integration/lib.sh
. "$HERE/../lib.sh"
ENTRIES=${1:-1000000}
[ $# -gt 0 ] && shift
integ_init
if [ -n "${SCALE_DIR:-}" ]; then DIR=$SCALE_DIR; else integ_mktemp DIR; fi
log "cargo build --release --example journal_scale"
(cd "$REPO_ROOT" && cargo build --release --locked --example journal_scale) || fail "build failed"
BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/journal_scale
log "filling $ENTRIES entries in $DIR"
"$BIN" --dir "$DIR/scale" --entries "$ENTRIES" "$@"
pass "scale run done"
