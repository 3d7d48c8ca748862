//! The HTTP server every HTTP listener of ours runs on (the dashboard, the metrics endpoint),
//! so that no peer can hold the gateway's descriptors or memory by opening connections and
//! never finishing them.
//!
//! Guarantees, per listener:
//! - at most [`Limits::max_connections`] connections at once, and
//!   [`Limits::max_connections_per_peer`] from one address (loopback exempt from the latter:
//!   every local client shares it, and no LAN peer can come from it), counted by
//!   [`Admission`]; a connection over either cap gets a minimal `503 Service Unavailable` with
//!   `Retry-After` and `Connection: close` at once, its request unread (over TLS it is just
//!   closed: a plain answer would be unreadable, and a handshake is what the cap saves);
//! - a request's headers (a keep-alive connection's next request too) must arrive within
//!   [`Limits::header_timeout`] (hyper's `header_read_timeout`), and a TLS handshake within
//!   the same time;
//! - a connection on which no byte moves either way for [`Limits::idle_timeout`] (a request
//!   body that never comes, a response its peer never reads) is closed;
//! - the accept loop backs off when the process is out of descriptors ([`listener::accept`]);
//! - at shutdown it stops accepting, asks every connection to finish its request (hyper's
//!   graceful shutdown) and waits for them for at most [`DRAIN`].
//!
//! Refusals and timeouts are counted per listener (`serial2mqtt_http_*` in `/metrics`).

pub mod auth;
pub mod throttle;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::listener::{self, Admission};
use crate::pacing::{RateLimit, LOG_EVERY};

/// How long shutdown waits for the connections' last requests.
pub const DRAIN: Duration = Duration::from_secs(2);
/// The most a request's head may take in memory (hyper's read buffer; its floor is 8 KiB):
/// a browser's request with its cookie is well under 4 KiB.
const MAX_BUF: usize = 16 * 1024;

/// A listener's certificate chain and private key (PEM), re-read for each connection so that
/// a renewed certificate needs no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, the server's certificate first.
    pub cert: std::path::PathBuf,
    /// Its private key.
    pub key: std::path::PathBuf,
}

pub use crate::listener::Limits;

/// Serves `router` on `listener` within `limits` (over TLS with `tls`) until `shutdown`; `name`
/// is the listener's name in log lines and metrics (`dashboard`, `metrics`). Each request
/// carries the peer's address as axum's [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    tls: Option<TlsFiles>,
    router: Router,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(name, limits.caps());
    let connections = TaskTracker::new();
    let mut log = RateLimit::new(LOG_EVERY);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener::accept(&listener, name, &mut log) => accepted,
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(full) => {
                metrics::counter!("serial2mqtt_http_refused_total", "listener" => name)
                    .increment(1);
                if tls.is_none() {
                    refuse(&stream, name, &full, limits.header_timeout);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _ticket = ticket;
            match tls {
                None => connection(stream, peer, name, limits, router, stop).await,
                Some(tls) => {
                    if let Some(stream) = handshake(stream, peer, name, &tls, limits).await {
                        connection(stream, peer, name, limits, router, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        debug!(
            listener = name,
            "{name}: {} connection(s) still open after {DRAIN:?}; leaving them",
            connections.len()
        );
    }
}

/// The answer to a connection over a cap: written at once (a fresh socket's send buffer takes
/// it whole), never waited for, and the request never read.
fn refuse(stream: &TcpStream, name: &str, full: &listener::Full, retry: Duration) {
    let retry = retry.as_secs().max(1);
    let body = format!("{name}: {full}; try again in {retry} s\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {retry}\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// The TLS handshake within the header timeout, with the certificate and key read again (so a
/// renewed certificate needs no restart, as on the broker's listener).
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    name: &'static str,
    tls: &TlsFiles,
    limits: Limits,
) -> Option<rumqttc::tokio_rustls::server::TlsStream<TcpStream>> {
    let config = match crate::tls::server_config(&tls.cert, &tls.key, None, false) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(listener = name, "{name} TLS: {e}");
            return None;
        }
    };
    let acceptor = rumqttc::tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            debug!(listener = name, %peer, "{name}: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            timed_out(name, peer, "no TLS handshake");
            None
        }
    }
}

fn timed_out(name: &'static str, peer: SocketAddr, what: &str) {
    metrics::counter!("serial2mqtt_http_timeouts_total", "listener" => name).increment(1);
    debug!(listener = name, %peer, "{name}: closed a connection from {peer}: {what}");
}

/// HTTP/1.1 on one connection until it ends, times out, or idles; at shutdown, its request
/// is finished first.
async fn connection<S>(
    io: S,
    peer: SocketAddr,
    name: &'static str,
    limits: Limits,
    router: Router,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let epoch = Instant::now();
    let moved = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: io,
        moved: Arc::clone(&moved),
        epoch,
    };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    let conn = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let last = epoch + Duration::from_millis(moved.load(Ordering::Relaxed));
        tokio::select! {
            ended = conn.as_mut() => {
                match ended {
                    Err(e) if e.is_timeout() => timed_out(name, peer, "no request headers in time"),
                    Err(e) => debug!(listener = name, %peer, "{name}: connection from {peer} ended: {e}"),
                    Ok(()) => {}
                }
                return;
            }
            _ = shutdown.cancelled(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = tokio::time::sleep_until(last + limits.idle_timeout) => {
                let last = epoch + Duration::from_millis(moved.load(Ordering::Relaxed));
                if last + limits.idle_timeout <= Instant::now() {
                    timed_out(name, peer, "idle");
                    return;
                }
            }
        }
    }
}

/// A connection's stream that notes when a byte last moved either way (milliseconds after
/// `epoch`), for the idle timeout.
struct Watched<S> {
    inner: S,
    moved: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.moved
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
