//! The `nixery` binary: read the configuration, open storage, load popularity data, serve
//! until SIGINT or SIGTERM.

use nixery::config::Config;
use nixery::metrics::Metrics;
use nixery::popularity::Popularity;
use nixery::storage::{Filesystem, Storage};
use nixery::{AppState, build};
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let storage = Filesystem::open(&config.storage_path)
        .await
        .map_err(|e| format!("STORAGE_PATH {}: {e}", config.storage_path.display()))?;
    let popularity = match &config.popularity_url {
        Some(location) => Popularity::load(location)
            .await
            .map_err(|e| format!("NIX_POPULARITY_URL: {e}"))?,
        None => Popularity::default(),
    };
    let metrics = Arc::new(Metrics::default());
    let storage = Arc::new(Storage::Filesystem(storage));
    let builder = build::Builder::new(&config, storage.clone(), popularity, metrics.clone());
    let app = nixery::app(AppState {
        builder,
        storage,
        metrics,
    });

    let addr = std::net::SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (PORT): {e}"))?;
    tracing::info!(%addr, source = ?config.source, storage = %config.storage_path.display(), "nixery serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server error: {e}"))
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
