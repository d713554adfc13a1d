# Multi-stage build of arc-gateway: a Rust builder, then a small non-root runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# clang + libbpf headers compile the XDP program (feature `xdp`, on by default).
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libbpf-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --features xdp --bin arc-gateway \
 && install -D target/release/arc-gateway /out/arc-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/arc-gateway /usr/local/bin/arc-gateway
COPY arc.example.yaml /etc/arc/arc.yaml
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/arc-gateway"]
CMD ["--config", "/etc/arc/arc.yaml"]
