# rewind: an iSCSI target with continuous data protection.
#
#   docker build -t rewind .
#   docker run -d --name rewind -p 3260:3260 -v rewind-data:/var/lib/rewind rewind
#   docker exec rewind rewind status
#
# Runs as the unprivileged user `rewind` (uid 10001). The binary carries the file capability
# cap_net_bind_service so it can bind port 3260 (below 1024) without root; the container needs
# NET_BIND_SERVICE in its bounding set, which Docker and podman grant by default (add
# `--cap-add NET_BIND_SERVICE` if you drop all capabilities, and do not combine it with
# `--security-opt no-new-privileges`, which ignores file capabilities). On SIGTERM it flushes
# every volume before exiting: run it with `--stop-timeout 60`. See docs/operations.md.

# ---- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit / buildah cache mounts).
# Cargo decides by modification time whether a crate changed, and COPY keeps the context's
# times: a checkout older than the cached build would be taken as built. The touch makes the
# workspace crates rebuild every time (the dependencies stay cached).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/lib.rs src/main.rs protocol/src/lib.rs \
    && cargo build --release --locked --bin rewind \
    && install -D -m 0755 target/release/rewind /out/rewind \
    && strip --strip-debug /out/rewind

# ---- run ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="rewind" \
      org.opencontainers.image.description="iSCSI target with continuous data protection" \
      org.opencontainers.image.licenses="Apache-2.0"

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rewind \
    && useradd --system --uid 10001 --gid rewind --home-dir /var/lib/rewind \
        --no-create-home --shell /usr/sbin/nologin rewind \
    && install -d -o rewind -g rewind -m 0750 /var/lib/rewind

COPY --from=builder /out/rewind /usr/local/bin/rewind
RUN setcap cap_net_bind_service=+ep /usr/local/bin/rewind \
    && rewind --version

# Configuration: environment (below), or a TOML file named by REWIND_CONFIG (mount it read-only;
# a `listen` in the file is overridden by REWIND_LISTEN, so set that to the same portals).
# REWIND_HTTP=ADDR:PORT turns on the HTTP admin API (/metrics, /healthz, /api/v1); off by default.
ENV REWIND_DATA=/var/lib/rewind \
    REWIND_LISTEN=0.0.0.0:3260 \
    REWIND_LOG_FORMAT=text \
    RUST_LOG=info

USER 10001:10001
VOLUME ["/var/lib/rewind"]
EXPOSE 3260

# Healthy while the daemon answers on its admin socket (DATA/rewind.sock).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["rewind", "status"]

ENTRYPOINT ["rewind"]
CMD ["serve"]
