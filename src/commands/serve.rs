//! `nixery` (no subcommand): open storage, load popularity data, serve until SIGINT/SIGTERM.

use crate::archive::Archiver;
use crate::config::{Config, StorageConfig};
use crate::metrics::Metrics;
use crate::popularity::Popularity;
use crate::storage::{Filesystem, Gcs, S3, Storage};
use crate::{AppState, build};
use std::sync::Arc;

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
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    NixVersion(#[from] crate::nix::version::VersionError),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let nix_version = crate::nix::version::require_supported().await?;
    tracing::info!(%nix_version, "found a supported Nix");
    let popularity = load_popularity(config.build.popularity_url.as_deref()).await?;
    let storage = open_storage(&config.storage).await?;
    let metrics = Arc::new(Metrics::default());
    let storage = Arc::new(storage);
    let archiver = Archiver::new(config.archive).map_err(ServeError::Workers)?;
    let builder =
        build::Builder::new(&config.build.policy, config.cache, archiver, storage.clone(), popularity, metrics.clone())
            .map_err(ServeError::Expressions)?;
    let app = crate::app(AppState { builder, storage, metrics });

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
        "nixery serving"
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await.map_err(ServeError::Serve)
}

/// Opens the configured backend; the filesystem clears its staging leftovers.
async fn open_storage(config: &StorageConfig) -> Result<Storage, ServeError> {
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

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
