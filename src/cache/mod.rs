//! Every cache of the server, with its keys, in one place.
//!
//! Serving a manifest by tag is three questions, each answered by a cache here before any
//! work is done:
//!
//! 1. **Which package set does the tag mean now?** [`sources::SourceCache`]: a moving
//!    reference (the channel's branch, a git branch, `latest`, a local path) is resolved to a
//!    pinned [`SourceRevision`](crate::pkgsource::SourceRevision) at most once per
//!    `NIXERY_SOURCE_TTL` (with `git ls-remote` for remotes; a path gets a new generation, so
//!    it is evaluated again). A full commit needs no resolution and never expires. Concurrent
//!    resolutions of one reference share one `git` call; a failure is not remembered.
//! 2. **Was this image already built from that revision?** [`manifests::ManifestCache`]:
//!    manifests by [`ManifestKey`] (pinned source, architecture, packages, manifest format,
//!    and the [`Recipe`] of everything configured that changes layers). A bounded map in
//!    memory (`NIXERY_MANIFEST_CACHE_MIB`, least recently/frequently used evicted) answers
//!    repeated requests with pre-rendered bytes and headers; storage
//!    (`manifests/<hex of the key>`) keeps manifests of commits across restarts and for
//!    other replicas. A key never changes meaning (it names a commit and everything that
//!    decides the bytes, with a version), so entries never expire: only the resolution of a
//!    moving tag does. A path's revision is a generation of this process, so its manifests
//!    live in memory only (by digest they are stored like every other).
//! 3. **Was this layer already archived?** [`layers`]: `builds/<content key>` records which
//!    blob a layer's store paths became (concurrent builds share one archive job, see
//!    [`crate::builder`]).
//!
//! A warm request (fresh resolution, manifest in memory) runs no Nix, no git and no storage
//! I/O: two map look-ups and a response whose body and headers are shared, not rendered.
//! (Once per tenth of `NIXERY_RETENTION` a manifest's answer also records that it was
//! served, [`crate::retention`].)
//!
//! Storage is itself a cache that garbage collection empties ([`crate::gc`]): [`recipes`]
//! keeps, for every digest served, how it is made again.
//!
//! # Metrics
//!
//! `nixery_manifest_requests_total{cache=...}` counts manifest requests by tag that were
//! answered with a manifest, by what answering them took:
//! - `warm`: the tag's resolution was fresh (or a commit) and the manifest in memory;
//! - `stale`: the tag's resolution had expired (or was never made) and was run again; the
//!   revision it gave had its manifest in memory (the source had not moved);
//! - `stored`: not in memory, read from storage (after a restart, or built by a replica);
//! - `cold`: built (Nix ran; layers may still come from their records).
//!
//! `nixery_source_resolutions_total` counts resolutions run (`git ls-remote` calls and path
//! re-reads), `nixery_source_resolution_failures_total` those that failed.
//!
//! # Extending
//!
//! A multi-architecture index is cached like a manifest: its key is a [`ManifestKey`] whose
//! [`DocumentKind`] names the index and its platforms (the format names the index type:
//! Docker manifest list or OCI index), and the cached value is the same pre-rendered
//! document; each platform's manifest has its own key. A
//! setting that changes layer bytes (compression) is a field of [`Recipe`], which every key
//! includes; a change to what keys mean bumps [`ManifestKey::VERSION`].

pub mod artifacts;
pub mod key;
pub mod layers;
pub mod manifests;
pub mod recipes;
pub mod sources;

pub use key::{DocumentKind, ManifestKey, Recipe};
pub use manifests::{CachedManifest, ManifestCache};
pub use sources::{Freshness, KnownRevision, SourceCache};

use std::time::Duration;

/// How the caches behave (the configuration maps its settings into this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a moving reference's resolution is used (`NIXERY_SOURCE_TTL`); zero resolves
    /// on every request.
    pub source_ttl: Duration,
    /// Bytes of manifests kept in memory (`NIXERY_MANIFEST_CACHE_MIB`).
    pub manifest_memory: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy { source_ttl: Duration::from_secs(60), manifest_memory: 64 << 20 }
    }
}

/// How a manifest request was answered (see the module docs' metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Warm,
    Stale,
    Stored,
    Cold,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Warm, Outcome::Stale, Outcome::Stored, Outcome::Cold];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Warm => "warm",
            Outcome::Stale => "stale",
            Outcome::Stored => "stored",
            Outcome::Cold => "cold",
        }
    }
}
