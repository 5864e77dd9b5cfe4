#!/usr/bin/env bash
# The container image, end to end: build the Dockerfile at the repository root, run it with the
# data directory on a named volume and port 3260 published on a free port of 127.0.0.1, then
#   1. iscsi-ls logs in and sees the default target,
#   2. qemu-img writes 16 MiB of random data and reads it back (sha256 must match),
#   3. `rewind --data /var/lib/rewind status` inside the container answers (and the image's
#      HEALTHCHECK passes); a bookmark taken after the write, then the data overwritten, then
#      `rewind snapshot export --at @bookmark` serves the old bytes as a read-only target,
#   4. the container stops cleanly on SIGTERM; restarted on the same volume hardened as
#      docs/compose.yaml runs it (--read-only, --cap-drop ALL --cap-add NET_BIND_SERVICE) and with
#      the HTTP admin API published, the data is still there and /healthz, /metrics and
#      /api/v1/status answer from the host.
#
# Engine: a Docker engine if one answers (`docker info`), otherwise podman (rootful, runc,
# cgroupfs: it needs no systemd and no daemon). With podman the base images the Dockerfile names
# are made locally when they are missing, so no image registry is needed:
#   debian:bookworm-slim  a `debootstrap --variant=minbase bookworm` tree (cached under
#                         ${XDG_CACHE_HOME:-~/.cache}/rewind-docker), imported with `podman import`
#   rust:1-bookworm       that image plus gcc/libc6-dev from Debian and this machine's Rust
#                         toolchain (the one `rustc` runs), laid out like the official image
# The builder stage still needs crates.io (the build runs with --network host).
#
# usage: integration/docker.sh [--prepare-only]
# env:   REWIND_DOCKER_ENGINE=docker|podman   force an engine
#        REWIND_DOCKER_IMAGE                   image tag to build (default rewind:test)
#        REWIND_DOCKER_NET=host                run with the host network instead of -p
#        REWIND_DEBIAN_MIRROR                  mirror for debootstrap (default: from apt sources)
#        REWIND_DOCKER_KEEP_IMAGE=0            remove the built image at the end
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init

IMAGE=${REWIND_DOCKER_IMAGE:-rewind:test}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/rewind-docker
MIB=1048576
PREPARE_ONLY=0
[ "${1:-}" = --prepare-only ] && PREPARE_ONLY=1

# ---- engine -----------------------------------------------------------------------------------
ENGINE=${REWIND_DOCKER_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if have docker && docker info >/dev/null 2>&1; then ENGINE=docker
    elif have podman; then ENGINE=podman
    else fail "neither a Docker engine nor podman is available (apt-get install podman runc)"
    fi
fi
ENGINE_FLAGS=()
if [ "$ENGINE" = podman ]; then
    # runc + cgroupfs work without systemd; the ulimits keep podman from asking for more than a
    # restricted host (or an unprivileged container host) allows
    ENGINE_FLAGS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    eng() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }
else
    eng() { docker "$@"; }
fi
log "engine: $ENGINE"

# ---- base images (podman only) ----------------------------------------------------------------
# the images the Dockerfile's FROM lines name
DEBIAN_IMAGE=$(awk '/^FROM/ && !/ AS builder/ {print $2; exit}' "$REPO_ROOT/Dockerfile")
RUST_IMAGE=$(awk '/^FROM/ && / AS builder/ {print $2; exit}' "$REPO_ROOT/Dockerfile")
[ -n "$DEBIAN_IMAGE" ] && [ -n "$RUST_IMAGE" ] || fail "cannot read the base images from the Dockerfile"

apt_mirror() {
    if [ -n "${REWIND_DEBIAN_MIRROR:-}" ]; then echo "$REWIND_DEBIAN_MIRROR"; return; fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v '^\s*#' | grep -oE '(https?|file)://[^ ]+' | grep -v security | head -n1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

image_exists() { eng image inspect "$1" >/dev/null 2>&1; }

make_debian_image() {
    local tree=$CACHE/bookworm-minbase
    need_cmd debootstrap
    if [ ! -e "$tree/.complete" ]; then
        rm -rf "$tree"
        mkdir -p "$CACHE"
        log "debootstrap --variant=minbase bookworm from $(apt_mirror) (cached in $tree)"
        debootstrap --variant=minbase bookworm "$tree" "$(apt_mirror)" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed"; }
        rm -rf "$tree/var/cache/apt/archives/"*.deb "$tree/var/lib/apt/lists/"*
        touch "$tree/.complete"
    fi
    log "importing $tree as $DEBIAN_IMAGE"
    tar --exclude=./.complete -C "$tree" -c . \
        | eng import --change 'CMD ["bash"]' - "docker.io/library/$DEBIAN_IMAGE" >/dev/null
}

make_rust_image() {
    local sysroot ctx
    sysroot=$(rustc --print sysroot) || fail "no Rust toolchain on this machine"
    integ_mktemp ctx
    log "making $RUST_IMAGE from $DEBIAN_IMAGE and the toolchain at $sysroot ($(rustc --version))"
    mkdir -p "$ctx/rust"
    # the toolchain without its documentation (share/)
    local d
    for d in bin lib libexec etc; do
        [ -e "$sysroot/$d" ] && cp -a "$sysroot/$d" "$ctx/rust/"
    done
    cat >"$ctx/Containerfile" <<EOF
FROM docker.io/library/$DEBIAN_IMAGE
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev pkg-config \\
    && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:\$PATH
RUN mkdir -p /usr/local/cargo/bin && cargo --version && rustc --version
EOF
    eng build "${ENGINE_FLAGS[@]}" --pull=never --network host --format docker \
        -t "docker.io/library/$RUST_IMAGE" "$ctx" >"$ctx/build.log" 2>&1 \
        || { tail -n 30 "$ctx/build.log" >&2; fail "building $RUST_IMAGE failed"; }
}

if [ "$ENGINE" = podman ]; then
    image_exists "docker.io/library/$DEBIAN_IMAGE" || make_debian_image
    image_exists "docker.io/library/$RUST_IMAGE" || make_rust_image
fi
[ "$PREPARE_ONLY" = 1 ] && { pass "base images ready: $DEBIAN_IMAGE, $RUST_IMAGE"; exit 0; }

# ---- build context ----------------------------------------------------------------------------
# The repository's files (tracked and new, not ignored) copied into a temp dir, plus, unless
# REWIND_DOCKER_VENDOR=0, the crates the build needs (`cargo vendor`) and a .cargo/config.toml
# pointing at them: the builder stage then needs no registry access. Nothing is written to the
# repository itself.
need_cmd git tar qemu-img iscsi-ls sha256sum python3
qemu-img --help 2>/dev/null | grep -w iscsi >/dev/null || fail "qemu-img has no iscsi driver (run integration/setup.sh)"
integ_mktemp WORK
CTX=$WORK/context
mkdir -p "$CTX"
(cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$CTX" -xf -
if [ "${REWIND_DOCKER_VENDOR:-1}" = 1 ]; then
    log "cargo vendor (build context: $CTX)"
    mkdir -p "$CTX/.cargo"
    (cd "$CTX" && cargo vendor --locked vendor >"$CTX/.cargo/config.toml" 2>"$WORK/vendor.log") \
        || { tail -n 20 "$WORK/vendor.log" >&2; fail "cargo vendor failed"; }
    grep -q vendored-sources "$CTX/.cargo/config.toml" || fail "cargo vendor wrote no source replacement"
fi

T0=$SECONDS
log "building $IMAGE"
BUILD_FLAGS=(--network host)
# podman keeps HEALTHCHECK only in the docker image format
[ "$ENGINE" = podman ] && BUILD_FLAGS+=(--pull=never --format docker)
eng build "${ENGINE_FLAGS[@]}" "${BUILD_FLAGS[@]}" \
    -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "image build failed"; }
BUILD_SECS=$((SECONDS - T0))
log "built $IMAGE in ${BUILD_SECS}s"
[ "${REWIND_DOCKER_KEEP_IMAGE:-1}" = 1 ] || integ_on_exit "eng rmi -f '$IMAGE' >/dev/null"

# ---- run --------------------------------------------------------------------------------------
CTR=rewind-test-$$
VOL=rewind-test-data-$$
eng volume create "$VOL" >/dev/null
integ_on_exit "eng volume rm -f '$VOL' >/dev/null"
integ_on_exit "eng rm -f '$CTR' >/dev/null 2>&1"
TARGET_PORT=$(free_port)
TARGET_IQN=$REWIND_IQN_PREFIX:vol0
TARGET_LUN=0
TARGET_URL="iscsi://127.0.0.1:$TARGET_PORT/$TARGET_IQN/$TARGET_LUN"

HTTP_PORT=$(free_port)
# ctr_start [RUN OPTIONS...]: run the image detached on the data volume, wait for its portal.
# podman's chatter about systemd health-check timers (there is no systemd here) goes to a log.
ctr_start() {
    local net=() deadline
    if [ "${REWIND_DOCKER_NET:-}" = host ]; then
        net=(--network host -e "REWIND_LISTEN=127.0.0.1:$TARGET_PORT" -e "REWIND_HTTP=127.0.0.1:$HTTP_PORT")
    else
        net=(-p "127.0.0.1:$TARGET_PORT:3260" -p "127.0.0.1:$HTTP_PORT:9260" -e REWIND_HTTP=0.0.0.0:9260)
    fi
    eng run -d --name "$CTR" "${ENGINE_FLAGS[@]}" "${net[@]}" -v "$VOL:/var/lib/rewind" "$@" "$IMAGE" \
        >/dev/null 2>>"$WORK/engine.log" || { cat "$WORK/engine.log" >&2; fail "could not start the container"; }
    deadline=$((SECONDS + INTEG_START_TIMEOUT))
    until port_open "$TARGET_PORT" && eng exec "$CTR" rewind status >/dev/null 2>&1; do
        if [ "$(eng inspect -f '{{.State.Running}}' "$CTR" 2>/dev/null)" != true ]; then
            eng logs "$CTR" 2>&1 | sed 's/^/    | /' >&2
            fail "container exited before serving"
        fi
        [ "$SECONDS" -lt "$deadline" ] || { eng logs "$CTR" 2>&1 | sed 's/^/    | /' >&2; fail "container not serving after ${INTEG_START_TIMEOUT}s"; }
        sleep 0.2
    done
    log "container $CTR serving $TARGET_URL"
}
# ctr_stop: SIGTERM (engine stop), expect a clean exit 0
ctr_stop() {
    local code
    eng stop -t 60 "$CTR" >/dev/null 2>>"$WORK/engine.log"
    code=$(eng inspect -f '{{.State.ExitCode}}' "$CTR")
    eng logs "$CTR" >"$WORK/ctr-$1.log" 2>&1 || true
    [ "$code" = 0 ] || { sed 's/^/    | /' "$WORK/ctr-$1.log" >&2; fail "container exited with $code on SIGTERM"; }
    grep -q stopped "$WORK/ctr-$1.log" || { sed 's/^/    | /' "$WORK/ctr-$1.log" >&2; fail "no clean shutdown in the log"; }
    eng rm "$CTR" >/dev/null 2>>"$WORK/engine.log"
    echo "[$INTEG_NAME]   ok: clean shutdown on SIGTERM (exit 0)"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

ctr_start

# 1. discovery and login with libiscsi
iscsi-ls -s "iscsi://127.0.0.1:$TARGET_PORT" >"$WORK/iscsi-ls.out" 2>&1 \
    || { sed 's/^/    | /' "$WORK/iscsi-ls.out" >&2; fail "iscsi-ls failed"; }
grep -q "$TARGET_IQN" "$WORK/iscsi-ls.out" || { cat "$WORK/iscsi-ls.out" >&2; fail "iscsi-ls did not list $TARGET_IQN"; }
echo "[$INTEG_NAME]   ok: iscsi-ls logged in and listed $TARGET_IQN"

# 2. write/read round trip with qemu-img
head -c $((16 * MIB)) /dev/urandom >"$WORK/a.raw"
qemu-img convert -n -f raw -O raw "$WORK/a.raw" "$TARGET_URL" 2>"$WORK/q.err" \
    || { cat "$WORK/q.err" >&2; fail "qemu-img write failed"; }
qemu-img dd -f raw -O raw bs=1M count=16 if="$TARGET_URL" of="$WORK/a.out" 2>"$WORK/q.err" \
    || { cat "$WORK/q.err" >&2; fail "qemu-img read failed"; }
[ "$(sha "$WORK/a.raw")" = "$(sha "$WORK/a.out")" ] || fail "sha256 mismatch after the round trip"
echo "[$INTEG_NAME]   ok: 16 MiB written and read back through the container: sha256 $(sha "$WORK/a.raw")"

# 3. the admin socket inside the container, and the image's HEALTHCHECK
eng exec "$CTR" rewind --data /var/lib/rewind status >"$WORK/status.out" 2>&1 \
    || { cat "$WORK/status.out" >&2; fail "rewind status failed in the container"; }
grep -q "$TARGET_IQN" "$WORK/status.out" || { cat "$WORK/status.out" >&2; fail "status does not show $TARGET_IQN"; }
echo "[$INTEG_NAME]   ok: rewind --data /var/lib/rewind status answers in the container"
if [ "$ENGINE" = podman ]; then
    podman healthcheck run "$CTR" >/dev/null 2>&1 || fail "the image's HEALTHCHECK failed"
    echo "[$INTEG_NAME]   ok: HEALTHCHECK passes"
else
    eng inspect -f '{{json .Config.Healthcheck}}' "$CTR" | grep -q status || fail "image has no HEALTHCHECK"
fi
[ "$(eng exec "$CTR" id -u)" = 10001 ] || fail "the daemon does not run as uid 10001"
echo "[$INTEG_NAME]   ok: runs as uid 10001"

# point in time through the container's CLI: bookmark, overwrite, export the bookmark as a view
eng exec "$CTR" rewind bookmark vol0 docker-test >"$WORK/cdp.out" 2>&1 \
    || { cat "$WORK/cdp.out" >&2; fail "rewind bookmark failed in the container"; }
head -c $((16 * MIB)) /dev/urandom >"$WORK/n.raw"
qemu-img convert -n -f raw -O raw "$WORK/n.raw" "$TARGET_URL" 2>"$WORK/q.err" \
    || { cat "$WORK/q.err" >&2; fail "qemu-img overwrite failed"; }
eng exec "$CTR" rewind snapshot export vol0 --at @docker-test --json >"$WORK/view.json" 2>"$WORK/cdp.out" \
    || { cat "$WORK/cdp.out" >&2; fail "rewind snapshot export failed in the container"; }
VIEW_IQN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target"])' <"$WORK/view.json") \
    || { cat "$WORK/view.json" >&2; fail "no target in the snapshot export answer"; }
qemu-img dd -f raw -O raw bs=1M count=16 if="iscsi://127.0.0.1:$TARGET_PORT/$VIEW_IQN/0" of="$WORK/v.out" \
    2>"$WORK/q.err" || { cat "$WORK/q.err" >&2; fail "reading the view $VIEW_IQN failed"; }
[ "$(sha "$WORK/a.raw")" = "$(sha "$WORK/v.out")" ] || fail "the view does not hold the bookmarked data"
qemu-img dd -f raw -O raw bs=1M count=16 if="$TARGET_URL" of="$WORK/n.out" 2>"$WORK/q.err" \
    || { cat "$WORK/q.err" >&2; fail "re-reading the volume failed"; }
[ "$(sha "$WORK/n.raw")" = "$(sha "$WORK/n.out")" ] || fail "the volume does not hold the new data"
cp "$WORK/n.raw" "$WORK/a.raw"   # what the volume holds now, for the restart check
echo "[$INTEG_NAME]   ok: bookmark, overwrite, snapshot export: $VIEW_IQN serves the bookmarked bytes"

# 4. SIGTERM; restart on the same volume, hardened, with the HTTP API
ctr_stop first
ctr_start --read-only --tmpfs /tmp --cap-drop ALL --cap-add NET_BIND_SERVICE
qemu-img dd -f raw -O raw bs=1M count=16 if="$TARGET_URL" of="$WORK/b.out" 2>"$WORK/q.err" \
    || { cat "$WORK/q.err" >&2; fail "qemu-img read after restart failed"; }
[ "$(sha "$WORK/a.raw")" = "$(sha "$WORK/b.out")" ] || fail "data changed across a container restart"
echo "[$INTEG_NAME]   ok: data survives a restart on the same volume (read-only root, only NET_BIND_SERVICE)"
if have curl; then
    H=http://127.0.0.1:$HTTP_PORT
    [ "$(curl -fsS "$H/healthz")" = ok ] || fail "/healthz did not answer ok"
    curl -fsS "$H/metrics" >"$WORK/metrics.txt" || fail "/metrics failed"
    for m in rewind_sessions rewind_logins_total rewind_bytes_total rewind_command_duration_seconds; do
        grep -q "^# TYPE $m " "$WORK/metrics.txt" || fail "/metrics has no $m"
    done
    grep -Eq '^rewind_bytes_total\{direction="read"\} [1-9]' "$WORK/metrics.txt" \
        || fail "/metrics does not count the bytes just read"
    curl -fsS "$H/api/v1/status" | grep -q "\"$TARGET_IQN\"" || fail "/api/v1/status does not list $TARGET_IQN"
    echo "[$INTEG_NAME]   ok: HTTP API from the host: /healthz, /metrics (bytes read counted), /api/v1/status"
else
    log "curl not installed: HTTP API checks skipped"
fi
ctr_stop second

pass "image $IMAGE (built in ${BUILD_SECS}s): login, I/O round trip, status, healthcheck, snapshot export, hardened restart, HTTP API"
