//! A panic in a request handler is a bug, but it must not cost the client its connection
//! with no answer (hyper drops a connection whose service panicked), nor leave no trace in
//! the log: it is answered 500 in the registry's JSON format and logged at ERROR with its
//! message (the default panic hook also prints where it happened).

use crate::registry::RegistryError;
use axum::body::Body;
use axum::http::Response;
use axum::response::IntoResponse;
use std::any::Any;
use tower_http::catch_panic::CatchPanicLayer;

type Answer = fn(Box<dyn Any + Send + 'static>) -> Response<Body>;

/// tower-http's panic catcher, answering as [`answer`] does.
pub fn layer() -> CatchPanicLayer<Answer> {
    CatchPanicLayer::custom(answer as Answer)
}

/// The answer to a request whose handler panicked.
fn answer(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    tracing::error!(panic = message, "a request handler panicked; answered 500");
    RegistryError::internal().into_response()
}
