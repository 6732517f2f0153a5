# Herald: one image with every binary (herald-api, herald-scheduler,
# herald-worker, herald-sim); the deployment picks the command.
#
#   docker build -t herald .
#
# Stage 1 builds in the official Rust image (Debian bookworm), caching the
# registry and the target directory between builds (BuildKit).
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p herald-api -p herald-scheduler -p herald-worker -p herald-sim \
 && mkdir -p /out \
 && cp target/release/herald-api target/release/herald-scheduler \
       target/release/herald-worker target/release/herald-sim /out/

# Stage 2: the binaries on a slim Debian, as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/herald --create-home herald
COPY --from=build /out/ /usr/local/bin/
USER herald
WORKDIR /var/lib/herald
# Processes listen on all interfaces inside a container; the API on 8080, the
# metrics (and /healthz) on 9180-9183, the simulator on 7700/7701.
ENV HERALD__API__LISTEN=0.0.0.0:8080 \
    HERALD__API__METRICS_LISTEN=0.0.0.0:9180 \
    HERALD__SCHEDULER__METRICS_LISTEN=0.0.0.0:9181 \
    HERALD__WORKER__METRICS_LISTEN=0.0.0.0:9182 \
    HERALD__SIM__METRICS_LISTEN=0.0.0.0:9183 \
    HERALD__SIM__ADMIN_LISTEN=0.0.0.0:7701 \
    HERALD__SIM__DEVICE_LISTEN=0.0.0.0:7700 \
    HERALD__SIM__DATA_DIR=/var/lib/herald/sim \
    HERALD__TELEMETRY__LOG_FORMAT=json
EXPOSE 8080 9180 9181 9182 9183 7700 7701
CMD ["herald-api", "serve"]
