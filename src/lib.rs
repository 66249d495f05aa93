//! nixery-rs: a container registry that builds images from Nix packages on demand.
//!
//! `docker pull registry.example/shell/git` answers with an image holding bash, coreutils
//! and git, built when first asked for. The modules follow the pipeline:
//! [`image`] (names → specs) and [`pkgsource`] (tags → pinned revisions) → [`plan`]
//! ([`nix`]: realise, runtime graph; [`layers`]: grouping) → [`archive`] (deterministic tar,
//! [`compression`] on every core) → [`storage`] → [`manifest`] (one per platform, and an
//! [`index`] of them when several are configured), orchestrated by [`builder`] behind the caches
//! of [`cache`], and served by [`registry`] through [`server`] (connections, shutdown), with
//! [`ops`] around it (request log, panics, health); [`web`] draws pages for people from what
//! [`activity`] recorded. [`auth`] (htpasswd, Docker token auth, who may build),
//! [`package_policy`] and [`rate_limit`] decide who may pull and what gets built.
//! [`popcount`] computes popularity data from a [`binary_cache`]'s narinfo files.

pub mod activity;
pub mod archive;
pub mod artifact;
pub mod auth;
pub mod binary_cache;
pub mod builder;
pub mod cache;
pub mod commands;
pub mod compression;
pub mod config;
pub mod digest;
pub mod flight;
pub mod gc;
pub mod image;
pub mod index;
pub mod layers;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod nix;
pub mod ops;
pub mod ownership;
pub mod package_policy;
pub mod pkgsource;
pub mod plan;
pub mod popcount;
pub mod popularity;
pub mod rate_limit;
pub mod redact;
pub mod registry;
pub mod retention;
pub mod sbom;
pub mod server;
pub mod signing;
pub mod storage;
pub mod web;

use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub builder: builder::Builder,
    pub storage: Arc<storage::Storage>,
    pub metrics: Arc<metrics::Metrics>,
    /// Who may pull and build ([`auth`], [`rate_limit`]).
    pub guard: Arc<registry::Guard>,
}

impl AppState {
    /// A server's state for `config` on in-memory storage, without popularity data: what the
    /// unit tests of the HTTP layer run against (no sockets, no emulators).
    #[cfg(test)]
    pub(crate) fn in_memory(config: &config::Config) -> AppState {
        let storage = Arc::new(storage::Storage::Memory(storage::Memory::new()));
        let metrics = Arc::new(metrics::Metrics::default());
        let archiver = archive::Archiver::new(config.archive).expect("compression workers start");
        let policy = &config.build.policy;
        let builder = builder::Builder::new(
            policy,
            config.cache,
            config.lifecycle,
            archiver,
            storage.clone(),
            Default::default(),
            metrics.clone(),
        )
        .expect("the Nix expressions are written");
        let guard = Arc::new(registry::Guard::open_to_all(metrics.clone()));
        AppState { builder, storage, metrics, guard }
    }
}

/// The whole HTTP application: the registry, the health endpoints, and around both the
/// request log and the panic handler.
pub fn app(state: AppState) -> axum::Router {
    let health = ops::health::router(state.storage.clone());
    ops::layers(registry::router().merge(web::router()).with_state(state).merge(health))
}
