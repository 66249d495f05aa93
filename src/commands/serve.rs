//! `nixery` (no subcommand): open storage, load popularity data, serve until SIGINT/SIGTERM,
//! then exit within `NIXERY_SHUTDOWN_TIMEOUT`.
//!
//! The shutdown timeout is split in two: answers in progress may finish during the first
//! part ([`crate::server::serve`]'s drain); what is still running then is dropped, which
//! stops its Nix builds, and the second part ([`nix_stop_grace`] and a second) is for Nix to
//! stop its builders (SIGTERM, then SIGKILL) and be reaped, so that no Nix process outlives
//! the server.

use crate::archive::Archiver;
use crate::config::{Config, StorageConfig};
use crate::metrics::Metrics;
use crate::popularity::Popularity;
use crate::storage::{Filesystem, Gcs, S3, Storage};
use crate::{AppState, builder};
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{setting}: {source}")]
    Storage { setting: String, source: crate::storage::SetupError },
    #[error("NIX_POPULARITY_URL: {0}")]
    Popularity(#[from] crate::popularity::PopularityError),
    #[error("cannot start the compression threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot write the Nix expressions to a temporary directory: {0}")]
    Expressions(std::io::Error),
    #[error("cannot listen on {addr} (NIXERY_HOST, PORT): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    NixVersion(#[from] crate::nix::version::VersionError),
    #[error(transparent)]
    Access(#[from] crate::registry::guard::GuardError),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let nix_version = crate::nix::version::require_supported().await?;
    tracing::info!(%nix_version, "found a supported Nix");
    let popularity = load_popularity(config.build.popularity_url.as_deref()).await?;
    let storage = open_storage(&config.storage).await?;
    let metrics = Arc::new(Metrics::default());
    let storage = Arc::new(storage);
    let archiver = Archiver::new(config.archive).map_err(ServeError::Workers)?;
    let builder = builder::Builder::new(
        &config.build.policy,
        config.cache,
        config.lifecycle,
        archiver,
        storage.clone(),
        popularity,
        metrics.clone(),
    )
    .map_err(ServeError::Expressions)?
    .with_artifacts(config.artifacts.clone());
    let _collections = collect_periodically(&config, &storage, &metrics);
    let guard = Arc::new(crate::registry::Guard::open(&config.access, storage.clone(), metrics.clone()).await?);
    let app = crate::app(AppState { builder, storage, metrics, guard });

    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    let nix = &config.build.policy.nix;
    tracing::info!(
        %addr,
        source = ?config.build.policy.source,
        archive = ?config.archive,
        storage = ?config.storage,
        local_builds = nix.local_builds,
        max_nix_jobs = nix.max_jobs,
        signing = config.artifacts.signing.is_some(),
        registry_name = config.artifacts.registry_name.as_deref(),
        access = %config.access,
        lifecycle = ?config.lifecycle,
        "nixery serving"
    );
    let stop_grace = nix_stop_grace(config.shutdown_timeout);
    let drain = config.shutdown_timeout.saturating_sub(stop_grace + Duration::from_secs(1));
    crate::server::serve(listener, app, config.connections, drain, crate::server::shutdown_signal()).await;
    crate::nix::stop_all(stop_grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long Nix builds get to stop at shutdown before SIGKILL: Nix's own grace, or a
/// quarter of a short shutdown timeout.
fn nix_stop_grace(shutdown_timeout: Duration) -> Duration {
    crate::nix::TERM_GRACE.min(shutdown_timeout / 4)
}

/// Garbage collection every `NIXERY_GC_INTERVAL` (once for the fleet), unless it is zero;
/// stopped when the returned guard is dropped.
fn collect_periodically(config: &Config, storage: &Arc<Storage>, metrics: &Arc<Metrics>) -> Option<AbortOnDrop> {
    let lifecycle = config.lifecycle;
    if lifecycle.gc_interval.is_zero() {
        return None;
    }
    let collector = crate::gc::Collector::new(storage.clone(), lifecycle.gc());
    let leases = crate::lease::Leases::new(storage.clone(), lifecycle.build_lease);
    let task = crate::gc::periodic::spawn(collector, leases, lifecycle.gc_interval, metrics.clone());
    Some(AbortOnDrop(task))
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens the configured backend; the filesystem clears its staging leftovers.
pub(crate) async fn open_storage(config: &StorageConfig) -> Result<Storage, ServeError> {
    let (setting, opened) = match config {
        StorageConfig::Filesystem(path) => {
            (format!("STORAGE_PATH {}", path.display()), Filesystem::open(path).await.map(Storage::Filesystem))
        }
        StorageConfig::Gcs(gcs) => {
            (format!("GCS_BUCKET {}", gcs.bucket), Gcs::new(gcs.clone()).await.map(Storage::Gcs))
        }
        StorageConfig::S3(s3) => (format!("NIXERY_S3_BUCKET {}", s3.bucket), S3::new(s3.clone()).map(Storage::S3)),
    };
    opened.map_err(|source| ServeError::Storage { setting, source })
}

/// Popularity data from `NIX_POPULARITY_URL`, or none.
pub async fn load_popularity(location: Option<&str>) -> Result<Popularity, crate::popularity::PopularityError> {
    match location {
        Some(location) => {
            let p = Popularity::load(location).await?;
            tracing::info!(location, "loaded popularity data");
            Ok(p)
        }
        None => Ok(Popularity::default()),
    }
}
