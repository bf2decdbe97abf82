# kafka-sidecar: a static musl build in an image that holds only the binary and CA certificates.
# Build: docker build -t kafka-sidecar:0.1.0 .
#
# `--target runtime-prebuilt` makes the same image from a statically linked binary built
# elsewhere, without the Rust image: the build context then holds prebuilt/kafka-sidecar and
# prebuilt/ca-certificates.crt, their modes as in the image (tests/image.rs builds and runs it so).

FROM rust:1.95.0-slim-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The tests' support crate is a workspace member and dev-dependency: cargo reads its manifest.
COPY tests/support ./tests/support
# Symbols stripped: a quarter of the binary, and nothing in the image reads them.
RUN CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --target x86_64-unknown-linux-musl --bin kafka-sidecar \
 && install -D -m 0555 target/x86_64-unknown-linux-musl/release/kafka-sidecar /out/kafka-sidecar

# Everything of the image but its two files.
FROM scratch AS runtime-base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kafka-sidecar" \
      org.opencontainers.image.description="A protocol-aware Kafka proxy that runs beside an application" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# 9092: bootstrap listener; 9101-9199: broker N on 9100 + N; 9080: metrics and health.
EXPOSE 9092 9101-9199 9080
USER 65532:65532
ENTRYPOINT ["/kafka-sidecar"]

FROM runtime-base AS runtime-prebuilt
COPY prebuilt/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY prebuilt/kafka-sidecar /kafka-sidecar

# The image users build: the last stage, so the default target.
FROM runtime-base AS runtime
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/kafka-sidecar /kafka-sidecar
