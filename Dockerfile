# nixery-rs as a container: the server binary plus a current Nix (Debian trixie's nix-bin,
# 2.26, single-user; nixpkgs requires Nix 2.18 or later and the server refuses older ones).
# Serves nixos-unstable by default; set NIXERY_CHANNEL / NIXERY_PKGS_REPO / NIXERY_PKGS_PATH
# and STORAGE_PATH (mount a volume there) as for Nixery. Binary caches and their keys are
# Nix's own settings: add them to /etc/nix/nix.conf or pass NIX_CONFIG.
FROM rust:1.95-trixie AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY nix nix
COPY benches benches
RUN cargo build --release --locked

FROM debian:trixie-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nix-bin git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Nix's build sandbox needs namespaces an unprivileged container cannot create, so builds run
# unsandboxed here (nix-bin's own nix.conf turns the sandbox on). The nix-command feature is
# passed on the command line where the server needs it, so no experimental feature is
# enabled; substituters keep Nix's default, cache.nixos.org with its key.
RUN echo 'sandbox = false' > /etc/nix/nix.conf
# Runs as an ordinary user (deploy/nixery.yaml: runAsNonRoot). Single-user Nix needs only
# a /nix it owns; the storage directory and $HOME (Nix's caches) are its own too. Without
# root Nix uses no build users; substitutes from a binary cache, what most images are made
# of, need none.
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
