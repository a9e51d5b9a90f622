# Sentinel in a container: built in one stage, run from a small one as a non-root user.
#
#   docker build --build-arg SENTINEL_BUILD_COMMIT="$(git rev-parse --short HEAD)" -t sentinel .
#   docker run --rm -p 8080:8080 sentinel
#
# The image serves deploy/docker/config.yaml (public/ on :8080, the admin listener on
# loopback :9901 for the health check). Mount your own config over /etc/sentinel/config.yaml,
# or a directory on /etc/sentinel (a mounted file that is replaced, as Kubernetes does with a
# ConfigMap, is picked up by the hot reload).

FROM rust:1-bookworm AS build
WORKDIR /src
# The manifest and lockfile first: the dependency layer is rebuilt only when they change.
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches ./benches
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src
COPY src ./src
ARG SENTINEL_BUILD_COMMIT=""
ENV SENTINEL_BUILD_COMMIT=${SENTINEL_BUILD_COMMIT}
RUN cargo build --release --locked --bin sentinel \
    && strip target/release/sentinel

FROM debian:bookworm-slim AS runtime
# The binary links only glibc (rustls and aws-lc are inside it); CA certificates are for
# backends verified against the system's trust store.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sentinel \
    && useradd --system --uid 10001 --gid sentinel --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin sentinel
COPY --from=build /src/target/release/sentinel /usr/local/bin/sentinel
COPY deploy/docker/config.yaml /etc/sentinel/config.yaml
COPY public /srv/sentinel/public
USER sentinel:sentinel
EXPOSE 8080
# `--probe` is the binary's own HTTP check: the image carries no curl.
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["sentinel", "--probe", "http://127.0.0.1:9901/healthz"]
# SIGTERM drains (server.drain_timeout_ms); give `docker stop -t` at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sentinel"]
CMD ["--config", "/etc/sentinel/config.yaml"]
