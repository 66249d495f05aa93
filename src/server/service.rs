//! The application as hyper calls it: every request marks its connection busy until its
//! answer has been sent in full (or abandoned), so that only waiting connections are ever
//! closed to make room, and shutdown lets answers finish.

use super::connections::{ConnState, RequestGuard};
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response};
use axum::routing::future::RouteFuture;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

/// The router, serving one connection.
#[derive(Clone)]
pub struct AppService {
    router: Router,
    connection: Arc<ConnState>,
    /// The client's address, given to handlers as axum's `ConnectInfo`.
    peer: SocketAddr,
}

impl AppService {
    pub fn new(router: Router, connection: Arc<ConnState>, peer: SocketAddr) -> Self {
        AppService { router, connection, peer }
    }
}

impl hyper::service::Service<Request<Incoming>> for AppService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, mut request: Request<Incoming>) -> TrackedFuture {
        request.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        let guard = self.connection.begin_request();
        // A Router is always ready; a clone shares its routes.
        let inner = tower::Service::call(&mut self.router.clone(), request);
        TrackedFuture { inner, guard: Some(guard) }
    }
}

pin_project! {
    /// The router's answer, handing the request's guard on to the body.
    pub struct TrackedFuture {
        #[pin]
        inner: RouteFuture<Infallible>,
        guard: Option<RequestGuard>,
    }
}

impl Future for TrackedFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, guard })))
    }
}

pin_project! {
    /// An answer's body; the connection stays busy until it has been sent or dropped.
    pub struct TrackedBody {
        #[pin]
        inner: Body,
        guard: Option<RequestGuard>,
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
