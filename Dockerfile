# nixery-rs as a container: the server binary plus Nix (Debian's nix-bin, single-user).
# Serves nixos-unstable by default; set NIXERY_CHANNEL / NIXERY_PKGS_REPO / NIXERY_PKGS_PATH
# and STORAGE_PATH (mount a volume there) as for Nixery.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY nix nix
COPY benches benches
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nix-bin git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/nixery /usr/local/bin/nixery
ENV STORAGE_PATH=/var/lib/nixery \
    NIXERY_STORAGE_BACKEND=filesystem \
    PORT=8080
VOLUME /var/lib/nixery
EXPOSE 8080
CMD ["nixery"]
