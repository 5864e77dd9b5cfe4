#!/usr/bin/env bash
# Replication between two real daemons, checked with qemu-img (QEMU's iSCSI driver):
#  1. a secondary accepts volume `rep`; the primary replicates it every second;
#  2. qemu-img writes random data to the primary; once `rewind status` on the primary shows the
#     secondary caught up, the secondary's last shipped point (exported as a snapshot) and its
#     live read-only volume read back with the same SHA-256 as the primary;
#  3. a write to the secondary is refused until `rewind promote`, then accepted;
#  4. a primary with the wrong secret is refused.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=replication
need_cmd qemu-img qemu-io sha256sum python3
[ -x "$REWIND_BIN" ] || fail "rewind binary not found at $REWIND_BIN (cargo build --release, or set REWIND_BIN)"
work=""; integ_mktemp work
SIZE_MIB=32
printf 'replication-secret-for-tests\n' >"$work/secret"
chmod 600 "$work/secret"
REPL_PORT=$(free_port)

start() { # NAME CONFIG -> sets PID_<NAME>, PORT_<NAME>
    local name=$1 config=$2 port pid
    port=$(free_port)
    RUST_LOG=${RUST_LOG:-info} "$REWIND_BIN" --data "$work/$name" serve --listen "127.0.0.1:$port" \
        --config "$config" >"$work/$name.log" 2>&1 &
    pid=$!
    integ_on_exit stop_pid "$pid" 10
    wait_port "$port" "$pid" "$INTEG_START_TIMEOUT" "$work/$name.log"
    printf -v "PID_$name" '%s' "$pid"
    printf -v "PORT_$name" '%s' "$port"
}
cli() { local name=$1; shift; "$REWIND_BIN" --data "$work/$name" "$@"; }
url() { echo "iscsi://127.0.0.1:$1/$REWIND_IQN_PREFIX:$2/0"; }
sha_url() { qemu-img convert -O raw "$1" "$work/dump.raw" && sha256sum "$work/dump.raw" | cut -d' ' -f1; }

cat >"$work/secondary.toml" <<EOT
[[volume]]
name = "rep"
size = "${SIZE_MIB}MiB"
[replication]
listen = "127.0.0.1:$REPL_PORT"
volumes = ["rep"]
secret_file = "$work/secret"
EOT
cat >"$work/primary.toml" <<EOT
[[volume]]
name = "rep"
size = "${SIZE_MIB}MiB"
[replication]
secret_file = "$work/secret"
EOT
start secondary "$work/secondary.toml"
start primary "$work/primary.toml"
# shellcheck disable=SC2154  # PORT_* are set by start (printf -v)
PRIMARY_URL=$(url "$PORT_primary" rep)
# shellcheck disable=SC2154

SECONDARY_URL=$(url "$PORT_secondary" rep)

log "writing random data to the primary"
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$work/data.raw"
qemu-img convert -n -f raw -O raw "$work/data.raw" "$PRIMARY_URL"
cli primary replicate rep --to "127.0.0.1:$REPL_PORT" --interval 1s

caught_up() {
    local i
    for i in $(seq 1 120); do
        if cli primary status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["replication"]["primary"][0]
sys.exit(0 if s["shipped_stamp"] and s["lag_us"] == 0 else 1)'; then return 0; fi
        sleep 0.5; : "$i"
    done
    cli primary status || true
    fail "the secondary did not catch up"
}
caught_up
log "overwriting 1 MiB at 5 MiB on the primary"
qemu-io -f raw -c "write -P 0x5a 5M 1M" "$PRIMARY_URL" >/dev/null
caught_up
cli primary status | sed -n '/REPLICATION/,$p'

want=$(sha_url "$PRIMARY_URL")
got=$(sha_url "$SECONDARY_URL")
[ "$want" = "$got" ] || fail "secondary volume differs from the primary"
point=$(cli secondary history rep --json | python3 -c '
import json, sys
h = json.load(sys.stdin)
print(max((b["name"] for b in h["bookmarks"] if b["name"].startswith("repl-")), key=lambda n: int(n[5:])))')
target=$(cli secondary snapshot export rep --at "@$point" --name last | tail -1)
snap=$(sha_url "iscsi://127.0.0.1:$PORT_secondary/$target/0")
[ "$snap" = "$want" ] || fail "snapshot $point on the secondary differs from the primary"
pass "shipped point $point on the secondary equals the primary (sha256 $want)"

if qemu-io -f raw -c "write -P 0x11 0 4k" "$SECONDARY_URL" >/dev/null 2>&1; then
    fail "the secondary accepted a write before promotion"
fi
cli primary replicate rep --stop
cli secondary promote rep
qemu-io -f raw -c "write -P 0x11 0 4k" "$SECONDARY_URL" >/dev/null || fail "promoted volume refused a write"
pass "secondary read-only until promoted, writable after"

printf 'a-different-secret-entirely\n' >"$work/wrong.secret"
chmod 600 "$work/wrong.secret"
sed "s#$work/secret#$work/wrong.secret#" "$work/primary.toml" >"$work/wrong.toml"
start wrong "$work/wrong.toml"
cli wrong replicate rep --to "127.0.0.1:$REPL_PORT" --interval 1s
for i in $(seq 1 40); do
    cli wrong status | grep -F "authentication failed" >/dev/null && break
    sleep 0.25; : "$i"
done
cli wrong status | grep -F "authentication failed" >/dev/null || fail "a wrong secret was not refused"
pass "a primary with the wrong secret is refused"
