# syntax=docker/dockerfile:1
# Arc (arc-gateway) container image: a Rust build stage (clang and libbpf headers compile the
# XDP object of the default `xdp` feature), then a small distroless runtime running as non-root.
#   docker build -t arc-gateway .
#   docker run --rm -p 8080:8080 -p 8443:8443 -p 9090:9090 arc-gateway

FROM rust:1.95-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libbpf-dev gcc-multilib \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin arc-gateway \
 && install -D -m 0755 target/release/arc-gateway /out/arc-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/arc-gateway /usr/local/bin/arc-gateway
# The default configuration: every key with its default (arc.example.yaml), listening on all
# interfaces. Mount your own at /etc/arc/arc.yaml, or pass --config.
COPY arc.example.yaml /etc/arc/arc.yaml
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["arc-gateway"]
CMD ["--config", "/etc/arc/arc.yaml"]
