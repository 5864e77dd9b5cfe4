# shellcheck shell=bash
# shellcheck disable=SC2034  # TARGET_* and friends are read by the scripts that source this file
# Shared helpers for the rewind integration tests. Source it; do not execute it.
#
# Target under test: TARGET_IMPL=rewind (default) or TARGET_IMPL=tgt (the reference target tgtd,
# used to validate the scripts themselves). target_start sets:
#   TARGET_PORT  TCP port on 127.0.0.1       TARGET_IQN   target name
#   TARGET_LUN   LUN of the disk             TARGET_SIZE  disk size in bytes
#   TARGET_PID   server process id           TARGET_LOG   server log file
#   TARGET_URL   iscsi://127.0.0.1:PORT/IQN/LUN
# target_stop stops it again; it also runs from the EXIT trap installed by integ_init.
#
# Environment: REWIND_BIN (default <repo>/target/release/rewind), TARGET_IMPL,
#              INTEG_KEEP=1 keeps temp dirs, INTEG_START_TIMEOUT (seconds, default 30).

INTEG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$INTEG_DIR/.." && pwd)
REWIND_BIN=${REWIND_BIN:-$REPO_ROOT/target/release/rewind}
TARGET_IMPL=${TARGET_IMPL:-rewind}
INTEG_START_TIMEOUT=${INTEG_START_TIMEOUT:-30}
REWIND_IQN_PREFIX=iqn.2026-11.dev.rewind
GIB=1073741824

INTEG_NAME=${INTEG_NAME:-$(basename "$0" .sh)}
INTEG_CLEANUPS=()
INTEG_TMPDIRS=()
TARGET_PID="" TARGET_PORT="" TARGET_IQN="" TARGET_LUN="" TARGET_SIZE="" TARGET_LOG="" TARGET_URL=""
TGT_CTL=""

log()  { echo "[$INTEG_NAME $(date +%T)] $*"; }
pass() { echo "[$INTEG_NAME] PASS: $*"; }
fail() { echo "[$INTEG_NAME] FAIL: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
need_cmd() { local c; for c in "$@"; do have "$c" || fail "missing command '$c' (run integration/setup.sh)"; done; }

# ---- cleanup ----------------------------------------------------------------------------------
# integ_on_exit CMD...: run CMD at exit (last registered runs first)
integ_on_exit() { INTEG_CLEANUPS+=("$*"); }
integ_cleanup() {
    local rc=$? i d
    trap - EXIT INT TERM
    for ((i = ${#INTEG_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${INTEG_CLEANUPS[i]}" || true
    done
    target_stop || true
    for d in "${INTEG_TMPDIRS[@]+"${INTEG_TMPDIRS[@]}"}"; do
        if [ "${INTEG_KEEP:-0}" = 1 ]; then log "keeping $d"; else rm -rf "$d"; fi
    done
    return "$rc"
}
integ_init() {
    trap integ_cleanup EXIT
    trap 'echo "[$INTEG_NAME] interrupted" >&2; exit 130' INT TERM
}
# integ_mktemp VAR: create a temp dir that is removed at exit and store its path in VAR
# (not DIR=$(...): a command substitution runs in a subshell and would lose the registration)
integ_mktemp() { # VAR
    local _integ_tmp
    _integ_tmp=$(mktemp -d "${TMPDIR:-/tmp}/rewind-integ.XXXXXX")
    INTEG_TMPDIRS+=("$_integ_tmp")
    printf -v "$1" '%s' "$_integ_tmp"
}

# ---- ports ------------------------------------------------------------------------------------
port_open() { # PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
free_port() { # prints a TCP port that is currently free on 127.0.0.1
    if have python3; then
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
        return
    fi
    local p i
    for i in $(seq 1 200); do
        p=$(( (RANDOM % 20000) + 30000 ))
        port_open "$p" || { echo "$p"; return 0; }
        : "$i"
    done
    return 1
}
# wait_port PORT PID TIMEOUT LOGFILE: wait until PORT accepts connections while PID is alive
wait_port() {
    local port=$1 pid=$2 timeout=$3 logf=$4 deadline
    deadline=$(( SECONDS + timeout ))
    while ! port_open "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "[$INTEG_NAME] server (pid $pid) exited before listening on $port; log:" >&2
            sed 's/^/    | /' "$logf" >&2 || true
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "[$INTEG_NAME] server not listening on 127.0.0.1:$port after ${timeout}s; log:" >&2
            sed 's/^/    | /' "$logf" >&2 || true
            return 1
        fi
        sleep 0.1
    done
}
# stop_pid PID [grace seconds]: SIGTERM, wait, then SIGKILL
stop_pid() {
    local pid=$1 grace=${2:-10} i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "[$INTEG_NAME] pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---- rewind -----------------------------------------------------------------------------------
REWIND_DATA=""
# rewind_cli ARGS...: run the rewind CLI against the data dir of this test
rewind_cli() { "$REWIND_BIN" --data "$REWIND_DATA" "$@"; }
# rewind_prepare: choose a fresh data dir (REWIND_DATA) so volumes can be created before serving
rewind_prepare() {
    [ -x "$REWIND_BIN" ] || fail "rewind binary not found at $REWIND_BIN (cargo build --release, or set REWIND_BIN)"
    if [ -z "$REWIND_DATA" ]; then
        local d
        integ_mktemp d
        REWIND_DATA=$d/data
    fi
}
rewind_start() {
    rewind_prepare
    TARGET_PORT=$(free_port)
    TARGET_LOG=$(dirname "$REWIND_DATA")/rewind.log
    TARGET_IQN=$REWIND_IQN_PREFIX:vol0
    TARGET_LUN=0
    TARGET_SIZE=$GIB
    log "starting $REWIND_BIN --data $REWIND_DATA serve --listen 127.0.0.1:$TARGET_PORT"
    # REWIND_SERVE_ARGS: extra `serve` arguments, e.g. "--config FILE"
    # shellcheck disable=SC2086  # word splitting of the extra arguments is intended
    RUST_LOG=${RUST_LOG:-info} "$REWIND_BIN" --data "$REWIND_DATA" serve --listen "127.0.0.1:$TARGET_PORT" \
        ${REWIND_SERVE_ARGS:-} >"$TARGET_LOG" 2>&1 &
    TARGET_PID=$!
    wait_port "$TARGET_PORT" "$TARGET_PID" "$INTEG_START_TIMEOUT" "$TARGET_LOG" || { rewind_stop; return 1; }
}
rewind_stop() {
    [ -n "$TARGET_PID" ] || return 0
    stop_pid "$TARGET_PID" 10
    TARGET_PID=""
}

# ---- tgt (reference target) -------------------------------------------------------------------
# tgtd listens on TARGET_PORT and is managed through its own control socket number TGT_CTL, so it
# never touches a system tgtd. tgt reserves LUN 0 for a controller device, so the disk is LUN 1.
TGT_IQN=${TGT_IQN:-iqn.2026-11.dev.rewind.test:tgt}
tgt_ctl_free() { # N -> 0 if no tgtd answers on control port N
    ! tgtadm -C "$1" --op show --mode sys >/dev/null 2>&1
}
tgt_pick_ctl() {
    local c i
    for i in $(seq 1 100); do
        c=$(( (RANDOM % 9000) + 1000 ))
        tgt_ctl_free "$c" && [ ! -e "/var/run/tgtd/socket.$c" ] && { echo "$c"; return 0; }
        : "$i"
    done
    return 1
}
tgt() { tgtadm -C "$TGT_CTL" --lld iscsi "$@"; }
# tgt_start [SIZE_BYTES]: private tgtd with one target (TGT_IQN) and a sparse backing file on LUN 1
tgt_start() {
    local size=${1:-$GIB} d
    need_cmd tgtd tgtadm
    [ "$(id -u)" -eq 0 ] || fail "tgtd must run as root"
    integ_mktemp d
    TARGET_PORT=$(free_port)
    TGT_CTL=$(tgt_pick_ctl) || fail "no free tgtd control port"
    TARGET_LOG=$d/tgtd.log
    TARGET_IQN=$TGT_IQN
    TARGET_LUN=1
    TARGET_SIZE=$size
    TGT_BACKING=$d/lun1.img
    truncate -s "$size" "$TGT_BACKING"
    log "starting tgtd on 127.0.0.1:$TARGET_PORT (control port $TGT_CTL)"
    setsid tgtd -f --iscsi "portal=127.0.0.1:$TARGET_PORT" -C "$TGT_CTL" >"$TARGET_LOG" 2>&1 &
    TARGET_PID=$!
    wait_port "$TARGET_PORT" "$TARGET_PID" "$INTEG_START_TIMEOUT" "$TARGET_LOG" || { tgt_stop; return 1; }
    # the listener is up before the control socket at times
    local i
    for i in $(seq 1 50); do tgt_ctl_free "$TGT_CTL" || break; sleep 0.1; : "$i"; done
    tgt --op new --mode target --tid 1 -T "$TARGET_IQN"
    tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$TGT_BACKING"
    tgt --op bind --mode target --tid 1 -I ALL
}
# tgt_param NAME VALUE: set a target parameter, e.g. HeaderDigest CRC32C,None
tgt_param() { tgt --op update --mode target --tid 1 -n "$1" -v "$2"; }
tgt_stop() {
    [ -n "$TARGET_PID" ] || return 0
    if kill -0 "$TARGET_PID" 2>/dev/null; then
        # tgtd ignores SIGTERM: take it offline and delete it through its control socket
        tgtadm -C "$TGT_CTL" --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
        tgtadm -C "$TGT_CTL" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
        tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1 || true
        local i
        for i in $(seq 1 50); do kill -0 "$TARGET_PID" 2>/dev/null || break; sleep 0.1; : "$i"; done
    fi
    stop_pid "$TARGET_PID" 2
    rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"
    TARGET_PID=""
}

# ---- implementation-neutral entry points --------------------------------------------------------
target_start() {
    case "$TARGET_IMPL" in
        rewind) rewind_start ;;
        tgt) tgt_start "$GIB" ;;
        *) fail "unknown TARGET_IMPL=$TARGET_IMPL (rewind|tgt)" ;;
    esac || fail "could not start $TARGET_IMPL"
    TARGET_URL="iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN/$TARGET_LUN"
    log "$TARGET_IMPL is up: $TARGET_URL (pid $TARGET_PID)"
}
target_stop() {
    [ -n "$TARGET_PID" ] || return 0
    log "stopping $TARGET_IMPL (pid $TARGET_PID)"
    case "$TARGET_IMPL" in
        rewind) rewind_stop ;;
        tgt) tgt_stop ;;
    esac
}
# target_alive: fail unless the server process is still running
target_alive() {
    kill -0 "$TARGET_PID" 2>/dev/null || { sed 's/^/    | /' "$TARGET_LOG" >&2 || true; fail "$TARGET_IMPL died"; }
}

# ---- named daemons (the sites of the replication tests) ------------------------------------
# SITES_DIR (set by the script) holds each site's data directory NAME/, its log NAME.log and,
# by default, its config NAME.toml.
site_start() { # NAME [CONFIG] -> sets PID_<NAME>, PORT_<NAME> (the environment passes through)
    local name=$1 config=${2:-$SITES_DIR/$1.toml} port pid
    port=$(free_port)
    RUST_LOG=${RUST_LOG:-info} "$REWIND_BIN" --data "$SITES_DIR/$name" serve --listen "127.0.0.1:$port" \
        --config "$config" >>"$SITES_DIR/$name.log" 2>&1 &
    pid=$!
    integ_on_exit stop_pid "$pid" 10
    wait_port "$port" "$pid" "$INTEG_START_TIMEOUT" "$SITES_DIR/$name.log"
    printf -v "PID_$name" '%s' "$pid"
    printf -v "PORT_$name" '%s' "$port"
}
# site_configs SIZE PORT SECRET_FILE: $SITES_DIR/secondary.toml (accepts volume `rep` on
# 127.0.0.1:PORT) and $SITES_DIR/primary.toml, each with a volume `rep` of SIZE
site_configs() {
    cat >"$SITES_DIR/secondary.toml" <<EOT
[[volume]]
name = "rep"
size = "$1"
[replication]
listen = "127.0.0.1:$2"
volumes = ["rep"]
secret_file = "$3"
EOT
    cat >"$SITES_DIR/primary.toml" <<EOT
[[volume]]
name = "rep"
size = "$1"
[replication]
secret_file = "$3"
EOT
}
site_cli() { local name=$1; shift; "$REWIND_BIN" --data "$SITES_DIR/$name" "$@"; }
# site_sha_url URL: SHA-256 of a whole disk read through qemu-img's iSCSI driver
site_sha_url() { qemu-img convert -O raw "$1" "$SITES_DIR/dump.raw" && sha256sum "$SITES_DIR/dump.raw" | cut -d' ' -f1; }
