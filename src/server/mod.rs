//! The HTTP listener: accepting connections, their limits and timeouts, and a shutdown that
//! ends within a bound.
//!
//! `axum::serve` has no timeout on a request's headers and no connection limit: 20,060
//! half-sent requests held 20,000 descriptors, `accept` failed every second and `/v2/`
//! stopped answering. Its graceful shutdown waits for every connection, a half-sent request
//! included, for as long as it stays open. So connections are served here with hyper's
//! HTTP/1 connection builder (what `axum::serve` uses underneath; HTTP/1 only, as axum's
//! default features serve it) and kept in a table ([`connections`]) that knows which of
//! them are busy with a request and which only wait:
//!
//! - a request's headers must arrive within the header timeout, and a keep-alive connection
//!   may sit idle between requests for the idle timeout; a connection's read buffer is
//!   bounded by [`MAX_BUFFER`] (hyper may read once more past it before it gives up), so
//!   request headers of hundreds of KiB are refused (431);
//! - at most [`Limits::max_connections`] are open (fewer if the descriptor limit, raised to
//!   its hard limit at start-up, leaves less room: [`fd_limit`]); at the limit, the
//!   connections that have waited longest without sending a request are closed to make
//!   room for new ones, so a flood of slow clients cannot lock others out, and `accept`
//!   running out of descriptors closes waiting connections too instead of sleeping;
//! - on shutdown the listener is closed, waiting connections are closed at once, busy ones
//!   finish their answer (and then close) until the drain time is up, when whatever is
//!   left is dropped: that drops the requests' futures, and with them their Nix builds.

mod connections;
pub mod fd_limit;
mod io;
mod service;

use connections::Connections;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How connections are limited, in the domain's terms (the configuration maps its settings
/// into this at start-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (or a new connection) until its headers are complete.
    pub header_timeout: Duration,
    /// Between an answer and the next request; also how long a client may leave an answer
    /// unread.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// How often timeouts are checked: a quarter of the shorter one, within 50 ms to 1 s.
    fn tick(&self) -> Duration {
        (self.header_timeout.min(self.idle_timeout) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// The most a connection buffers: request headers of registry clients (a bearer token,
/// a few `Accept` lines) are a few KiB.
const MAX_BUFFER: usize = 64 * 1024;

/// How often running out of descriptors is logged, at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then lets busy connections finish
/// for at most `drain` and returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let open_files = fd_limit::raise_to_hard().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the open file limit");
        fd_limit::RESERVED * 4
    });
    let max_connections = limits.max_connections.min(fd_limit::connections_within(open_files));
    let limits = Limits { max_connections, ..limits };
    tracing::info!(
        max_connections,
        open_files,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        "accepting connections"
    );
    let connections = Connections::new(limits);
    let watchdog = tokio::spawn({
        let connections = connections.clone();
        async move {
            let mut tick = tokio::time::interval(limits.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let closed = connections.sweep();
                if closed > 0 {
                    tracing::debug!(closed, "closed connections past their timeout");
                }
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // Timeouts are the connection table's (hyper's would need a timer and only cover headers).
    http.header_read_timeout(None);
    // What a connection may buffer (hyper's default is about 400 KiB): a waiting connection
    // holds at most this much memory, and larger request headers are answered 431.
    http.max_buf_size(MAX_BUFFER);
    let stop = CancellationToken::new();
    let mut last_warning: Option<Instant> = None;

    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = connections.wait_for_room() => tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            },
        };
        match accepted {
            Ok((stream, peer)) => connections.add(|state, registration| {
                let io = TokioIo::new(io::TrackedStream::new(stream, state.clone()));
                let conn = http.serve_connection(io, service::AppService::new(app.clone(), state, peer));
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _registration = registration;
                    tokio::pin!(conn);
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(error = %e, "connection ended with an error");
                            }
                        }
                        () = stop.cancelled() => {
                            // Finish the answer in progress, then close.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                })
            }),
            Err(e) if out_of_descriptors(&e) => {
                let closed = connections.shed();
                if last_warning.is_none_or(|at| at.elapsed() > WARN_EVERY) {
                    tracing::warn!(error = %e, closed, open = connections.len(), "out of file descriptors: closed waiting connections");
                    last_warning = Some(Instant::now());
                }
                if closed == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // The client gave up before it was accepted.
            Err(e) if lost_before_accept(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    drop(listener);
    stop.cancel();
    let closed = connections.close_waiting();
    let busy = connections.len();
    tracing::info!(closed, busy, ?drain, "shutting down: closed waiting connections, finishing answers in progress");
    if tokio::time::timeout(drain, connections.wait_until_empty()).await.is_err() {
        let cut = connections.close_all();
        tracing::warn!(cut, "shutdown timeout: dropped requests still in progress");
    }
    watchdog.abort();
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn lost_before_accept(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
        || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// What a shutdown signal is.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
