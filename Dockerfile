# nixery-rs as a container: the server binary plus a current Nix (Debian trixie's nix-bin,
# 2.26, single-user; nixpkgs requires Nix 2.18 or later and the server refuses older ones),
# run by tini as an ordinary user (10001). README.md, "Container image", says how to run it;
# deploy/ has a Kubernetes example. tests/integration/container_image.rs builds this file
# and pulls from the container with docker and skopeo.
#
# Serves nixos-unstable by default; set NIXERY_CHANNEL / NIXERY_PKGS_REPO / NIXERY_PKGS_PATH
# as for Nixery. Binary caches and their keys are Nix's own settings: NIX_CONFIG, or a
# nix.conf mounted over /etc/nix/nix.conf (keep `sandbox = false` in it).

FROM rust:1.95-trixie AS build
WORKDIR /src
# The dependencies first, in a layer of their own that only Cargo.toml and Cargo.lock
# decide: the crate's own files are stubs here (the benches Cargo.toml declares must exist
# for cargo to read it), and what was built of the stubs is removed afterwards. A rebuild
# after a change to the sources then compiles only the crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in $(awk '/^\[\[bench\]\]/ { b = 1 } b && /^name *=/ { gsub(/^name *= *"|"$/, ""); print; b = 0 }' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$bench.rs"; \
    done \
 && cargo build --release --locked --bin nixery \
 && rm -rf src target/release/nixery target/release/nixery.d \
      target/release/deps/nixery-* target/release/deps/libnixery-* target/release/.fingerprint/nixery-*
# src/nix/exprs.rs includes nix/*.nix at compile time.
COPY nix nix
COPY src src
RUN cargo build --release --locked --bin nixery

FROM debian:trixie-slim
# nix-bin: Nix; git: `git ls-remote` resolves channel and repository tags; ca-certificates:
# HTTPS to GitHub and binary caches; tini: PID 1 (below). --no-install-recommends leaves out
# nix-setup-systemd (the nix-daemon units and the /etc/nix/nix.conf it owns) and git's
# recommendations (less, openssh-client, patch). The dpkg excludes of Debian's slim images
# already keep docs, man pages and translations out. More files nothing here runs are
# kept out the same way (65 MB of 233): nix-bin and git depend on perl, but neither Nix's
# commands nor `git ls-remote`/`git fetch` run it, so perl's library (only perl-base's
# remains) goes, with git's web interface, contrib scripts, and its server, mail and
# push-over-HTTP programs. The packages stay installed; a derived image that needs perl
# removes /etc/dpkg/dpkg.cfg.d/nixery-unused and reinstalls perl-modules-5.40 and
# libperl5.40.
RUN printf 'path-exclude %s\n' \
      '/usr/share/perl/*' '/usr/lib/*/perl/*' \
      '/usr/share/gitweb/*' '/usr/share/git-core/contrib/*' \
      '/usr/lib/git-core/git-daemon' '/usr/lib/git-core/git-http-backend' \
      '/usr/lib/git-core/git-http-push' '/usr/lib/git-core/git-imap-send' \
      '/usr/lib/git-core/git-shell' '/usr/bin/git-shell' \
      '/usr/lib/git-core/scalar' '/usr/bin/scalar' \
      > /etc/dpkg/dpkg.cfg.d/nixery-unused \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nix-bin git ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
# Nix's build sandbox needs user and mount namespaces, which an unprivileged container
# cannot create, so builds run unsandboxed; build users need root, so none are used. (The
# nix-command feature is passed on the command line where the server needs it, so no
# experimental feature is enabled; substituters keep Nix's default, cache.nixos.org.)
# The store holds only what builds need now (the server's GC roots keep an image's paths
# until its layers are stored, README "The server's Nix store"), so Nix may collect it
# whenever a build finds less than 1 GiB free, down to 4 GiB free.
RUN mkdir -p /etc/nix \
 && printf '%s\n' 'sandbox = false' 'build-users-group =' 'min-free = 1G' 'max-free = 4G' > /etc/nix/nix.conf
# An ordinary user owns /nix (single-user Nix), the registry's storage and its $HOME (Nix's
# caches). The store and Nix's state directory exist here, so a Docker named volume at /nix
# starts as a copy of them, ownership included.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/nixery --shell /usr/sbin/nologin nixery \
 && mkdir -p /nix/store /nix/var/nix /var/lib/nixery \
 && chown -R 10001:10001 /nix /var/lib/nixery
COPY --from=build /src/target/release/nixery /usr/local/bin/nixery
# NIX_REMOTE=local: Nix opens the store at /nix as it is, creating what is missing (store,
# database, state directories) in an empty, writable /nix (a fresh volume, an emptyDir),
# and fails with "Permission denied" if it cannot. Unset, Nix would see no /nix/var/nix in
# such a volume and, as an ordinary user, silently use a chroot store under
# ~/.local/share/nix/root whose builds cannot run here.
#
# NIXERY_SHUTDOWN_TIMEOUT=8: `docker stop` sends SIGTERM and SIGKILL 10 s later. Within 8 s
# the server lets answers in progress finish (5 s), stops the Nix builds that are left (2 s
# for Nix to stop its builders, SIGKILL after) and exits, leaving 2 s for the runtime.
# Kubernetes gives 30 s by default: deploy/nixery.yaml sets 20 (plus its 5 s preStop pause).
ENV STORAGE_PATH=/var/lib/nixery \
    NIXERY_STORAGE_BACKEND=filesystem \
    NIXERY_SHUTDOWN_TIMEOUT=8 \
    NIX_REMOTE=local \
    PORT=8080 \
    HOME=/home/nixery \
    USER=nixery
USER 10001:10001
WORKDIR /home/nixery
VOLUME ["/nix", "/var/lib/nixery"]
EXPOSE 8080
# tini as PID 1: it passes SIGTERM to the server and reaps orphans. A builder whose Nix was
# killed (SIGKILL after the stop grace) runs in a session of its own and is re-parented to
# PID 1 when it ends; the server waits only for its own children, so under the server as
# PID 1 each such builder would stay a zombie. -s: the same also under `docker run --init`.
ENTRYPOINT ["/usr/bin/tini", "-s", "--"]
CMD ["nixery"]
