//! The HTTP connection manager: one downstream connection (HTTP/1.1 or HTTP/2, cleartext
//! or TLS), its timeouts, and the request handler every request on it goes through.

pub mod body;
mod fault;
pub mod flags;
mod forward;
mod handler;
pub(crate) mod head_guard;
pub mod headers;
pub mod local_reply;
pub(crate) mod logged;
mod mirror;
pub(crate) mod rate_limit;
mod replay;
pub(crate) mod stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::listener::ListenerSlot;
use crate::moment::SharedMoment;
use crate::snapshot::{HttpManager, ListenerConfig, ListenerKind};

/// What a request handler knows of its connection.
pub(crate) struct ConnContext {
    pub slot: Arc<ListenerSlot>,
    pub peer: SocketAddr,
    /// The peer's IP as a header value, for `X-Forwarded-For`.
    pub peer_ip_value: http::HeaderValue,
    pub tls: bool,
    /// Which request heads had bare LFs (HTTP/1 only).
    pub head_check: Arc<head_guard::HeadCheck>,
    /// Requests from their head to the end of their response body.
    active_requests: AtomicU32,
    /// When the last request finished (or the connection began).
    idle_since: SharedMoment,
    /// When bytes last moved on the connection, either way.
    pub io_activity: Arc<SharedMoment>,
    /// Response bodies handed to hyper and not yet done.
    bodies_in_flight: AtomicU32,
    /// The longest stream idle timeout among those bodies, in ms (`u64::MAX`: one has
    /// none); 0 when there are none.
    body_idle_ms: AtomicU64,
    /// Set when the connection is closed because its outstanding bodies stalled.
    pub stream_idle_fired: AtomicBool,
}

impl ConnContext {
    fn request_started(&self) {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.idle_since.mark();
        self.active_requests.fetch_sub(1, Ordering::Relaxed);
    }

    fn body_started(&self, idle: Duration) {
        let ms = if idle.is_zero() {
            u64::MAX
        } else {
            idle.as_millis().max(1) as u64
        };
        self.body_idle_ms.fetch_max(ms, Ordering::Relaxed);
        self.bodies_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn body_finished(&self) {
        if self.bodies_in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.body_idle_ms.store(0, Ordering::Relaxed);
        }
    }

    /// While response bodies are outstanding and all have an idle timeout: how long no
    /// bytes have moved on the connection, and the longest of those timeouts.
    fn body_stall(&self) -> Option<(Duration, Duration)> {
        if self.bodies_in_flight.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.body_idle_ms.load(Ordering::Relaxed) {
            0 | u64::MAX => None,
            ms => Some((
                self.io_activity.elapsed().unwrap_or_default(),
                Duration::from_millis(ms),
            )),
        }
    }

    /// How long the connection has had no request in flight, or None while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.active_requests.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.idle_since.elapsed()
    }
}

/// hyper's settings for a listener's downstream connections, built once per config:
/// a builder in each connection cost 0.5 KiB of RSS and two `Arc` timers per connection.
pub(crate) fn connection_builder(max_request_headers_bytes: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's header timer also runs while a keep-alive connection waits for its next
        // request, which would close idle connections early; the head guard times heads
        // instead (see `serve_io`).
        .header_read_timeout(None)
        // hyper answers 431 when the request head outgrows its buffer; it needs >= 8 KiB.
        .max_buf_size(max_request_headers_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_request_headers_bytes as u32);
    builder
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: &Arc<ListenerSlot>,
    config: &Arc<ListenerConfig>,
) {
    let ListenerKind::Http(manager) = &config.kind else {
        return;
    };
    match &config.tls {
        None => serve_io(stream, peer, slot.clone(), manager, false).await,
        // Boxed: inline, the TLS states (handshake, TLS stream) would size every
        // connection's task, cleartext ones too: 8,944 bytes a task instead of 4,128.
        Some(acceptor) => {
            let metrics = config.metrics.as_deref();
            Box::pin(serve_tls(stream, peer, slot, manager, acceptor, metrics)).await
        }
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    slot: &Arc<ListenerSlot>,
    manager: &HttpManager,
    acceptor: &tokio_rustls::TlsAcceptor,
    metrics: Option<&crate::metrics::ListenerMetrics>,
) {
    // The handshake shares the header deadline: a silent client holds nothing.
    let handshake = tokio::time::timeout(manager.request_headers_timeout, acceptor.accept(stream));
    let handshake = handshake.await;
    if let Some(m) = metrics {
        match &handshake {
            Ok(Ok(_)) => m.tls_handshakes.inc(),
            _ => m.tls_errors.inc(),
        };
    }
    match handshake {
        Ok(Ok(tls)) => serve_io(tls, peer, slot.clone(), manager, true).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_io<IO>(
    io: IO,
    peer: SocketAddr,
    slot: Arc<ListenerSlot>,
    manager: &HttpManager,
    tls: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_check = head_guard::HeadCheck::new();
    let io_activity = Arc::new(SharedMoment::now());
    let io = stream::IoActivity::new(io, io_activity.clone());
    let io = sinew_upstream::tap::ReadTap::new(io, head_guard::Scanner::new(head_check.clone()));
    let ctx = Arc::new(ConnContext {
        slot,
        peer,
        peer_ip_value: headers::client_address_value(peer.ip()),
        tls,
        head_check,
        active_requests: AtomicU32::new(0),
        idle_since: SharedMoment::now(),
        io_activity,
        bodies_in_flight: AtomicU32::new(0),
        body_idle_ms: AtomicU64::new(0),
        stream_idle_fired: AtomicBool::new(false),
    });
    let service_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = service_ctx.clone();
        // Boxed: hyper keeps a slot for the request future in every connection, idle or
        // not, sized to the future (5,392 bytes); boxed, the slot is a pointer and the
        // request's state exists only while the request does. With the TLS path boxed
        // (`serve`), RSS per idle keep-alive connection went from 25.7 to 19.4 KiB
        // (scenario h of bench/run), for one allocation per request.
        Box::pin(async move {
            let in_flight = stream::InFlight::start(ctx);
            let (response, idle) = handler::handle(req, &in_flight).await;
            Ok::<_, Infallible>(response.map(|body| stream::StreamBody::new(body, in_flight, idle)))
        })
    });
    let idle_timeout = manager.idle_timeout;
    let head_timeout = manager.request_headers_timeout;
    // While no head is in progress the loop still wakes this often, so a head that starts
    // during a long sleep is cut off within 1.5 × its timeout, at no cost per request.
    let head_check_interval = (head_timeout / 2).max(Duration::from_millis(10));
    let conn = manager
        .conn_builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    let mut drain = ctx.slot.drain.watch();
    loop {
        let head_wait = match ctx.head_check.head_in_progress_for() {
            Some(elapsed) if elapsed >= head_timeout => {
                tracing::debug!(%peer, "request head not received in time; closing");
                return;
            }
            Some(elapsed) => head_timeout - elapsed,
            None => head_check_interval,
        };
        let idle_wait = match ctx.idle_for() {
            Some(idle) if idle >= idle_timeout && !shutting_down => {
                // Graceful: HTTP/1.1 finishes the response in progress, HTTP/2 sends GOAWAY.
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                idle_timeout
            }
            Some(idle) => idle_timeout
                .saturating_sub(idle)
                .max(Duration::from_millis(10)),
            None => idle_timeout,
        };
        // Bodies outstanding and no bytes moving: the client stopped reading (or nothing
        // comes from upstream). Closing the connection ends those streams (see `stream`).
        let stall_wait = match ctx.body_stall() {
            Some((quiet, limit)) if quiet >= limit => {
                tracing::debug!(%peer, "stream idle timeout: no bytes moved; closing");
                ctx.stream_idle_fired.store(true, Ordering::Relaxed);
                return;
            }
            Some((quiet, limit)) => (limit - quiet).max(Duration::from_millis(10)),
            None => idle_timeout,
        };
        let wait = idle_wait.min(head_wait).min(stall_wait);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(wait) => {}
            // The proxy is draining: as at the idle timeout, finish what is in flight
            // (with `Connection: close` on HTTP/1.1), close at once if idle, GOAWAY on HTTP/2.
            _ = drain.draining(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}
