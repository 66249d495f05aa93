//! One log line per request, at INFO, when its answer's head is ready:
//!
//! ```text
//! INFO nixery::request: method=GET path=/v2/shell/git/manifests/latest status=200 latency_ms=812.4 image=shell/git
//! ```
//!
//! `latency_ms` is the time until the answer's head (a blob's bytes may take longer to
//! arrive); `image` is the image a manifest or tag list was asked for, which the handler
//! puts into the answer's extensions ([`RequestedImage`]; the registry defines it, so this
//! layer around the registry depends on it and not the other way round). Successful health probes are
//! logged at DEBUG: an orchestrator sends one every few seconds.
//!
//! This replaces tower-http's `TraceLayer`, whose default output is a span and DEBUG events:
//! here there is no span and one event, whose fields are recorded as they are (the method,
//! path and image are formatted straight into the log line), so a busy server does not
//! allocate per request to log it. The line goes to a non-blocking writer (see `main`).
//!
//! Only the path is logged: no query string and no header, so credentials (the
//! `Authorization` header, a token some client puts in the query) never reach the log.

use crate::registry::RequestedImage;
use axum::http::{Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// Logs every request that passes through it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestLogLayer;

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B, R> tower::Service<Request<B>> for RequestLog<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = LogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> LogFuture<S::Future> {
        // Both clones share their bytes (a standard method is a constant).
        let method = request.method().clone();
        let uri = request.uri().clone();
        LogFuture { inner: self.inner.call(request), method, uri, started: Instant::now() }
    }
}

pin_project! {
    /// A request's answer, logged when it is ready.
    pub struct LogFuture<F> {
        #[pin]
        inner: F,
        method: Method,
        uri: Uri,
        started: Instant,
    }
}

impl<F, R, E> Future for LogFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        let (status, image) = match &answer {
            Ok(response) => (response.status(), response.extensions().get::<RequestedImage>()),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        log(this.method, this.uri, status, this.started.elapsed().as_secs_f64() * 1000.0, image);
        Poll::Ready(answer)
    }
}

/// Milliseconds, to the microsecond.
struct Millis(f64);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

fn log(method: &Method, uri: &Uri, status: StatusCode, latency: f64, image: Option<&RequestedImage>) {
    let (path, status, latency_ms) = (uri.path(), status.as_u16(), Millis(latency));
    if status == 200 && matches!(path, "/healthz" | "/readyz") {
        tracing::debug!(target: "nixery::request", %method, %path, status, %latency_ms);
        return;
    }
    match image {
        Some(RequestedImage(image)) => {
            tracing::info!(target: "nixery::request", %method, %path, status, %latency_ms, %image)
        }
        None => tracing::info!(target: "nixery::request", %method, %path, status, %latency_ms),
    }
}
