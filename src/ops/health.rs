//! Liveness and readiness, for Kubernetes' probes.
//!
//! - `GET /healthz` (liveness): the process answers HTTP. Nothing else is checked: a storage
//!   outage is no reason to restart the server, and a restart would not fix it.
//! - `GET /readyz` (readiness): the storage answers ([`Storage::ping`](crate::storage::Storage::ping):
//!   the directories are there, or the bucket answers). Otherwise 503 with the registry's
//!   JSON error (`UNAVAILABLE`) and the reason, so the replica is taken out of its Service
//!   until the storage is back.
//!
//! A check that hangs (a hard-mounted NFS server that went away blocks `stat` in a blocking
//! thread for as long as it is gone) answers 503 after [`CHECK_TIMEOUT`], and while it
//! hangs no second check is started: probes keep answering 503 at once instead of piling
//! up blocked threads.

use crate::registry::{Code, RegistryError};
use crate::storage::Storage;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a storage check may take before the answer is 503.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

struct Health {
    storage: Arc<Storage>,
    /// A storage check is running (perhaps hanging).
    checking: Arc<AtomicBool>,
}

/// `/healthz` and `/readyz`.
pub fn router(storage: Arc<Storage>) -> Router {
    let health = Arc::new(Health { storage, checking: Arc::new(AtomicBool::new(false)) });
    Router::new().route("/healthz", get(live)).route("/readyz", get(ready)).with_state(health)
}

async fn live() -> Response {
    Json(json!({ "status": "alive" })).into_response()
}

async fn ready(State(health): State<Arc<Health>>) -> Response {
    match check(&health).await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            tracing::warn!(reason, "not ready");
            RegistryError::new(StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, reason).into_response()
        }
    }
}

/// Pings the storage, at most one ping at a time and at most [`CHECK_TIMEOUT`] long.
async fn check(health: &Health) -> Result<(), String> {
    if health.checking.swap(true, Ordering::AcqRel) {
        return Err("the storage has not answered the previous check yet".to_owned());
    }
    // The ping runs as a task of its own: if it hangs past the timeout, it still clears
    // the flag when it ends, and no second one starts meanwhile.
    let storage = health.storage.clone();
    let checking = health.checking.clone();
    let ping = tokio::spawn(async move {
        let result = storage.ping().await;
        checking.store(false, Ordering::Release);
        result
    });
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the storage is not reachable: {e}")),
        Ok(Err(_)) => {
            health.checking.store(false, Ordering::Release);
            Err("the storage check failed".to_owned())
        }
        Err(_) => Err(format!("the storage did not answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}
