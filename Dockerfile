# Static musl build of kafka-sidecar in a minimal, non-root runtime image.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin kafka-sidecar

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="kafka-sidecar" \
      org.opencontainers.image.description="A protocol-aware Kafka proxy that runs beside an application"
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/kafka-sidecar /usr/local/bin/kafka-sidecar
USER 65532:65532
EXPOSE 9092 9080
ENTRYPOINT ["/usr/local/bin/kafka-sidecar"]
