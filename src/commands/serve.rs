//! `nixery` (no subcommand): open storage, load popularity data, serve until SIGINT/SIGTERM.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::popularity::Popularity;
use crate::storage::{Filesystem, Storage};
use crate::{AppState, build};
use std::sync::Arc;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("STORAGE_PATH {path}: {source}")]
    Storage { path: String, source: crate::storage::StorageError },
    #[error("NIX_POPULARITY_URL: {0}")]
    Popularity(#[from] crate::popularity::PopularityError),
    #[error("cannot write the Nix expressions to a temporary directory: {0}")]
    Expressions(std::io::Error),
    #[error("cannot listen on {addr} (NIXERY_HOST, PORT): {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let popularity = load_popularity(config.build.popularity_url.as_deref()).await?;
    let storage = Filesystem::open(&config.storage_path)
        .await
        .map_err(|source| ServeError::Storage { path: config.storage_path.display().to_string(), source })?;
    let metrics = Arc::new(Metrics::default());
    let storage = Arc::new(Storage::Filesystem(storage));
    let builder = build::Builder::new(&config.build, storage.clone(), popularity, metrics.clone())
        .map_err(ServeError::Expressions)?;
    let app = crate::app(AppState { builder, storage, metrics });

    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!(%addr, source = ?config.build.source, storage = %config.storage_path.display(), "nixery serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await.map_err(ServeError::Serve)
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
