//! What operators and orchestrators need from the server, around the registry itself:
//! one log line per request ([`request_log`]), a 500 in the registry's format instead of a
//! dropped connection when a handler panics ([`panics`]), and liveness and readiness
//! endpoints for Kubernetes ([`health`]).

pub mod health;
pub mod panics;
pub mod request_log;

/// Wraps the whole application: panics are caught inside the request log, so the log line
/// of a request whose handler panicked says 500.
pub fn layers(app: axum::Router) -> axum::Router {
    app.layer(panics::layer()).layer(request_log::RequestLogLayer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AppState;
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// Log lines written on this thread while the guard lives.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish();
            (logs, tracing::subscriber::set_default(subscriber))
        }

        /// The lines that mention `needle`.
        fn lines(&self, needle: &str) -> Vec<String> {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            text.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
        }
    }

    fn app() -> axum::Router {
        let config = Config::parse_from(["nixery", "--pkgs-path", "/"]).unwrap();
        crate::app(AppState::in_memory(&config))
    }

    async fn get(app: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn every_request_gets_one_line_with_its_image_if_any() {
        let (logs, _guard) = Logs::capture();
        let app = app();
        get(&app, "/v2/").await;
        get(&app, "/v2/shell/hello/tags/list").await;
        get(&app, "/v2/bad..name/manifests/latest").await;
        get(&app, "/nowhere").await;
        get(&app, "/healthz").await;

        let one = |path: &str| {
            let lines = logs.lines(&format!(" path={path} "));
            assert_eq!(lines.len(), 1, "{lines:?}");
            lines.into_iter().next().unwrap()
        };
        let base = one("/v2/");
        assert!(base.contains(" INFO nixery::request: method=GET path=/v2/ status=200 latency_ms="), "{base}");
        assert!(!base.contains("image="), "{base}");
        assert!(one("/v2/shell/hello/tags/list").ends_with(" image=shell/hello"));
        assert!(one("/v2/bad..name/manifests/latest").contains(" status=400 "));
        assert!(one("/nowhere").contains(" status=404 "));
        assert!(one("/healthz").contains(" DEBUG "), "a successful probe is not worth an INFO line");
    }

    /// Credentials arrive in the `Authorization` header (and, from some clients, a query
    /// string): the request line logs the path only.
    #[tokio::test]
    async fn credentials_never_reach_the_request_log() {
        let (logs, _guard) = Logs::capture();
        let app = app();
        let request = Request::get("/v2/hello/tags/list?access_token=SECRET-QUERY")
            .header("Authorization", "Bearer SECRET-TOKEN")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap();
        let basic = Request::get("/v2/").header("Authorization", "Basic U0VDUkVULUJBU0lD").body(Body::empty()).unwrap();
        app.oneshot(basic).await.unwrap();
        assert_eq!(logs.lines(" path=/v2/hello/tags/list ").len(), 1);
        assert_eq!(logs.lines(" path=/v2/ ").len(), 1);
        for secret in ["SECRET", "U0VDUkVU", "Bearer", "Basic"] {
            assert!(logs.lines(secret).is_empty(), "{secret} is logged: {:?}", logs.lines(secret));
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_registry_format_and_is_logged() {
        let (logs, _guard) = Logs::capture();
        async fn buggy_handler() -> &'static str {
            panic!("a bug in a handler")
        }
        let buggy = axum::Router::new().route("/boom", axum::routing::get(buggy_handler));
        let app = layers(buggy);
        let (status, body) = get(&app, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
        let panic = logs.lines("panicked");
        assert!(panic.len() == 1 && panic[0].contains("ERROR") && panic[0].contains("a bug in a handler"), "{panic:?}");
        assert_eq!(logs.lines(" path=/boom status=500 ").len(), 1);
        // The server goes on answering.
        assert_eq!(get(&app, "/boom").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn liveness_and_readiness_answer_with_a_reachable_storage() {
        let app = app();
        let (status, body) = get(&app, "/healthz").await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("alive")));
        let (status, body) = get(&app, "/readyz").await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));
    }
}
