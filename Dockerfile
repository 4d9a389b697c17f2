# syntax=docker/dockerfile:1
# The `payouts` image: one binary for every role (`payouts`, `payouts serve <service>`,
# `payouts gateway`, `payouts config check`). Build: docker build -t payouts:0.1.0 .

# Build stage: the workspace's release binary, nothing else. Cargo's registry and the target
# directory are cache mounts, so a rebuild recompiles only what changed.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin payouts \
    && install -D target/release/payouts /out/payouts

# Runtime stage: distroless with glibc and CA certificates (MongoDB and Stripe over TLS),
# no shell, no package manager; runs as the distroless non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/payouts /usr/local/bin/payouts
USER 65532:65532
# 3000: HTTP gateway, 50051: gRPC services, 9464: Prometheus metrics.
EXPOSE 3000 50051 9464
# gRPC listens on loopback by default: the image's default command runs everything in one
# process, and whoever reaches a gRPC port without mutual TLS could credit earnings, feed
# Stripe events, approve payouts and move money. The all-in-one process calls its services in
# process, so it needs no gRPC port outside the pod. To listen on 0.0.0.0 set GRPC_ADDR
# together with GRPC_TLS_CERT_FILE/KEY_FILE/CA_FILE (the binary refuses a non-loopback
# GRPC_ADDR without mutual TLS unless PAYOUTS_ALLOW_PLAINTEXT_GRPC=true); the Helm chart does
# both. The HTTP gateway authenticates every route itself (Stripe signatures, admin tokens,
# the cron token), so it may listen on every address.
ENV GATEWAY_ADDR=0.0.0.0:3000 GRPC_ADDR=127.0.0.1:50051 METRICS_ADDR=0.0.0.0:9464 LOG_FORMAT=json
ENTRYPOINT ["payouts"]
