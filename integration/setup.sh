#!/usr/bin/env bash
# Install everything the rewind build and its integration tests need on Debian 12 (bookworm).
# Idempotent: packages that are already present are skipped. Run as root or with sudo available.
#
#   integration/setup.sh            build deps, Rust (if missing), libiscsi-bin, tgt, qemu-img with iscsi
#   REWIND_VM=0 integration/setup.sh   leaves out qemu-system-x86 and kmod (the VM initiator test)
#   REWIND_DOCKER=1 integration/setup.sh   adds podman, runc, debootstrap (container image test)
set -euo pipefail

# qemu-img only ships the iscsi:// block driver in this exact Debian build (module in qemu-block-extra).
QEMU_PIN=${QEMU_PIN:-1:7.2+dfsg-7+deb12u18+b3}

log() { echo "[setup] $*"; }
die() { echo "[setup] FAIL: $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and sudo is not available"
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

installed() { # pkg [version]
    local st ver
    st=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [ "$st" = "install ok installed" ] || return 1
    [ $# -lt 2 ] && return 0
    ver=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true)
    [ "$ver" = "$2" ]
}

APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq
    APT_UPDATED=1
}

apt_install() { # [apt-get options...] -- pkg...
    local opts=() pkgs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    pkgs=("$@")
    [ ${#pkgs[@]} -gt 0 ] || return 0
    apt_update_once
    log "apt-get install ${pkgs[*]}"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${opts[@]+"${opts[@]}"}" "${pkgs[@]}"
}

missing_of() { local p out=(); for p in "$@"; do installed "$p" || out+=("$p"); done; echo "${out[*]}"; }

# shellcheck source=/dev/null
[ -r /etc/os-release ] && . /etc/os-release
if [ "${VERSION_CODENAME:-}" != bookworm ]; then
    log "warning: written for Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}; continuing"
fi

# ---- base build dependencies and iSCSI clients ------------------------------------------
BASE=(build-essential pkg-config ca-certificates python3 iproute2 libiscsi-bin tgt)
read -r -a MISSING <<<"$(missing_of "${BASE[@]}")"
if [ ${#MISSING[@]} -gt 0 ]; then apt_install -- "${MISSING[@]}"; else log "base packages present"; fi

# ---- qemu-img with the iscsi block driver (pinned) ---------------------------------------
if installed qemu-utils "$QEMU_PIN" && installed qemu-block-extra "$QEMU_PIN"; then
    log "qemu-utils/qemu-block-extra $QEMU_PIN present"
else
    apt_install --allow-downgrades -- "qemu-utils=$QEMU_PIN" "qemu-block-extra=$QEMU_PIN"
fi
qemu-img --help 2>/dev/null | grep -w iscsi >/dev/null || die "qemu-img has no iscsi driver (qemu-block-extra $QEMU_PIN not effective?)"

# ---- VM initiator test (opt-in) -------------------------------------------------------------
if [ "${REWIND_VM:-1}" = 1 ]; then
    VM=(qemu-system-x86 kmod e2fsprogs xz-utils)
    read -r -a MISSING <<<"$(missing_of "${VM[@]}")"
    if [ ${#MISSING[@]} -gt 0 ]; then
        # qemu-system-x86 must match the pinned qemu-utils' qemu-system-common version
        PKGS=()
        for p in "${MISSING[@]}"; do
            if [ "$p" = qemu-system-x86 ]; then PKGS+=("qemu-system-x86=$QEMU_PIN"); else PKGS+=("$p"); fi
        done
        apt_install --allow-downgrades -- "${PKGS[@]}"
    else
        log "VM test packages present"
    fi
fi

# ---- container image test (opt-in) --------------------------------------------------------------
# docker.sh uses a Docker engine if one answers, else podman with locally made base images
if [ "${REWIND_DOCKER:-0}" = 1 ] && ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    read -r -a MISSING <<<"$(missing_of podman runc debootstrap)"
    if [ ${#MISSING[@]} -gt 0 ]; then apt_install -- "${MISSING[@]}"; else log "podman present"; fi
fi

# ---- Rust toolchain ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    log "cargo found in ~/.cargo/bin (add it to PATH: . \"\$HOME/.cargo/env\")"
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# rewind needs Rust >= 1.85 (Cargo.toml rust-version). Debian 12's `cargo`/`rustc` are 1.63;
# its `*-web` packages (kept current for the browsers' builds) are recent enough and come with
# rustfmt and clippy, so a machine without Rust gets those. A rustup toolchain is left alone.
RUST_MIN=1.85
rust_recent() { # is the cargo on PATH at least RUST_MIN?
    local v
    v=$(cargo --version 2>/dev/null | awk '{print $2}')
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$RUST_MIN" "$v" | sort -V | head -1)" = "$RUST_MIN" ]
}
if command -v cargo >/dev/null && rust_recent; then
    log "cargo present: $(cargo --version)"
    if command -v rustup >/dev/null; then
        # rustfmt/clippy are needed by run-all.sh; no-op when already installed
        rustup component add rustfmt clippy >/dev/null 2>&1 \
            || log "warning: 'rustup component add rustfmt clippy' failed (offline?)"
    fi
elif command -v rustup >/dev/null; then
    die "the rustup toolchain's cargo is older than $RUST_MIN: run 'rustup update stable'"
else
    if command -v cargo >/dev/null; then
        log "cargo $(cargo --version | awk '{print $2}') is older than $RUST_MIN; replacing it"
    else
        log "cargo not found"
    fi
    log "installing Debian's current Rust toolchain (cargo-web, rustc-web, rustfmt-web, rust-web-clippy)"
    apt_install -- cargo-web rustc-web rustfmt-web rust-web-clippy
    hash -r
    rust_recent || die "cargo is still older than $RUST_MIN after installing cargo-web ($(cargo --version 2>&1))"
    log "cargo present: $(cargo --version)"
fi

log "PASS: setup complete"
