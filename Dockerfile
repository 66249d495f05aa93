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
# Runs as an ordinary user (deploy/nixery.yaml: runAsNonRoot). Single-user Nix needs only
# a /nix it owns; the storage directory and $HOME (Nix's caches) are its own too. Without
# root Nix uses no build users, and it sandboxes builds only where the runtime allows user
# namespaces (most pods do not: Nix then builds unsandboxed, `sandbox-fallback`);
# substitutes from a binary cache, what most images are made of, are unaffected.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/nixery nixery \
 && mkdir -p /nix /var/lib/nixery \
 && chown -R nixery:nixery /nix /var/lib/nixery
COPY --from=build /src/target/release/nixery /usr/local/bin/nixery
ENV STORAGE_PATH=/var/lib/nixery \
    NIXERY_STORAGE_BACKEND=filesystem \
    PORT=8080 \
    HOME=/home/nixery
USER 10001:10001
VOLUME /var/lib/nixery
EXPOSE 8080
CMD ["nixery"]
