//! The HTTP connection manager: one downstream connection (HTTP/1.1 or HTTP/2, cleartext
//! or TLS), its timeouts, and the request handler every request on it goes through.
//!
//! HTTP/1 connections are read and written by Sinew's codec (`sinew_codec::http1`), which
//! parses each head once with every request-smuggling defence and holds no buffer while
//! a connection is idle; HTTP/2 connections by the codec's HTTP/2 driver
//! (`sinew_codec::http2`), which runs every stream on the connection's own task. Which
//! one a connection speaks comes from ALPN, or from its first bytes (`sniff`). Either way
//! a request reaches the handler as a `Request<sinew_stream::RequestBody>`.

mod io_activity;
mod sniff;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use sinew_codec::http1::server::{self as http1_server};
use sinew_codec::http2;
use sinew_stream::{ConnRead, ConnWrite, RequestBody};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::slot::ListenerSlot;
use crate::config::snapshot::{HttpManager, ListenerConfig, ListenerKind};
use crate::filters::access_log::logged;
use crate::filters::Downstream;
use crate::moment::SharedMoment;
use crate::stream::conn::ConnContext;
use crate::stream::handler;
use crate::stream::in_flight::{InFlight, StreamBody};
use io_activity::IoActivity;
use sinew_stream::DownstreamRequest;
use sniff::Sniffed;

/// Serves one accepted connection until it closes.
/// `config` is the listener body that serves it: the listener's own, or the filter
/// chain `chain` took.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    slot: &Arc<ListenerSlot>,
    config: &ListenerConfig,
    chain: Option<usize>,
) {
    let ListenerKind::Http(manager) = &config.kind else {
        return;
    };
    let on = (slot.clone(), chain);
    let Some(tls) = &config.tls else {
        return serve_io(stream, peer, on, manager, None, None).await;
    };
    if tls.plaintext_allowed {
        // PERMISSIVE: within the header deadline, the first byte tells a TLS handshake
        // record from plaintext (HTTP never starts with 0x16).
        match first_byte(&stream, manager.request_headers_timeout).await {
            Some(TLS_HANDSHAKE_RECORD) => {}
            Some(_) => return serve_io(stream, peer, on, manager, None, None).await,
            None => return,
        }
    }
    // Boxed: inline, the TLS states (handshake, TLS stream) would size every
    // connection's task, cleartext ones too.
    let metrics = config.metrics.as_deref();
    Box::pin(serve_tls(stream, peer, on, manager, &tls.acceptor, metrics)).await
}

/// The content type of a TLS record that carries a handshake (RFC 8446 §5.1).
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = sinew_tls::client_hello::HANDSHAKE_RECORD;

/// The connection's first byte, without consuming it; `None` when the peer closes or
/// says nothing within `timeout`.
pub(crate) async fn first_byte(stream: &TcpStream, timeout: Duration) -> Option<u8> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut byte)).await {
        Ok(Ok(1)) => Some(byte[0]),
        _ => None,
    }
}

/// Where a connection is served: its listener's slot and the chain it took.
type ServedOn = (Arc<ListenerSlot>, Option<usize>);

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    on: ServedOn,
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
        Ok(Ok(tls)) => {
            let connection = tls.get_ref().1;
            let alpn = match connection.alpn_protocol() {
                Some(b"h2") => Some(true),
                Some(_) => Some(false),
                None => None,
            };
            let identity = crate::net::admit::peer_identity(connection);
            if let (Some(m), Some(id)) = (metrics, &identity) {
                m.peer_connection(id);
            }
            serve_io(tls, peer, on, manager, Some(identity), alpn).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// A connection's two halves, boxed so that cleartext and TLS connections give requests
/// of one type. TCP splits without a lock; other streams through tokio's split.
pub(crate) trait IntoHalves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_halves(self, prefix: Bytes, activity: &Arc<SharedMoment>) -> (ConnRead, ConnWrite);
}

impl IntoHalves for TcpStream {
    fn into_halves(self, prefix: Bytes, activity: &Arc<SharedMoment>) -> (ConnRead, ConnWrite) {
        let (read, write) = self.into_split();
        box_halves(read, write, prefix, activity)
    }
}

impl IntoHalves for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_halves(self, prefix: Bytes, activity: &Arc<SharedMoment>) -> (ConnRead, ConnWrite) {
        let (read, write) = tokio::io::split(self);
        box_halves(read, write, prefix, activity)
    }
}

fn box_halves<R, W>(
    read: R,
    write: W,
    prefix: Bytes,
    activity: &Arc<SharedMoment>,
) -> (ConnRead, ConnWrite)
where
    R: AsyncRead + Unpin + Send + Sync + 'static,
    W: AsyncWrite + Unpin + Send + Sync + 'static,
{
    let read = IoActivity::new(prefix, read, activity.clone());
    let write = IoActivity::new(Bytes::new(), write, activity.clone());
    (Box::new(read), Box::new(write))
}

/// `tls`: for a TLS connection, the client certificate's identity if it sent one.
/// `h2`: what ALPN chose (Some(true) for h2), or None when the client offered nothing
/// and the first bytes decide.
async fn serve_io<IO: IntoHalves>(
    mut io: IO,
    peer: SocketAddr,
    (slot, chain): ServedOn,
    manager: &HttpManager,
    tls: Option<Option<Arc<sinew_identity::PeerIdentity>>>,
    h2: Option<bool>,
) {
    let sniffed = match h2 {
        Some(true) => Sniffed::Http2(Bytes::new()),
        Some(false) => Sniffed::Http1(Bytes::new()),
        // Before its first byte a connection is idle: it has the idle timeout to speak.
        None => {
            let wait = match manager.idle_timeout {
                Duration::ZERO => Duration::from_secs(365 * 86_400),
                idle => idle,
            };
            sniff::sniff(&mut io, wait).await
        }
    };
    let tracks_idle = matches!(sniffed, Sniffed::Http2(_));
    let io_activity = Arc::new(SharedMoment::now());
    // Built in place: a `ConnContext` held in a local would stay in the connection's
    // future for its whole life.
    let ctx = Arc::new(ConnContext::new(
        slot,
        chain,
        peer,
        tls,
        tracks_idle,
        io_activity,
    ));
    match sniffed {
        Sniffed::Http1(prefix) => serve_http1(io, prefix, ctx, manager).await,
        Sniffed::Http2(prefix) => {
            let io = IoActivity::new(prefix, io, ctx.io_activity.clone());
            // Boxed: the HTTP/2 connection's state inline would size every
            // connection's future, HTTP/1 ones too.
            Box::pin(serve_http2(io, ctx, manager)).await
        }
        Sniffed::Nothing => {}
    }
}

/// Answers one request: the handler's response, wrapped so that the connection knows
/// when its stream ends.
async fn answer(ctx: Arc<ConnContext>, req: DownstreamRequest) -> Response<StreamBody> {
    let in_flight = InFlight::start(ctx);
    let (response, idle) = handler::handle(req, &in_flight).await;
    response.map(|body| StreamBody::new(body, in_flight, idle))
}

/// How often a connection's loop looks for stalled response bodies: often enough that a
/// stall is cut within 1.5 × its timeout of the default head timeout, at no cost per
/// request.
fn stall_check_interval(manager: &HttpManager) -> Duration {
    (manager.request_headers_timeout / 2).max(Duration::from_millis(10))
}

/// Whether a connection's outstanding bodies have moved no bytes for their idle timeout
/// (the client stopped reading, or nothing comes from upstream); else how long to wait
/// before asking again.
fn stall_deadline(ctx: &ConnContext, interval: Duration) -> Result<Duration, ()> {
    match ctx.body_stall() {
        Some((quiet, limit)) if quiet >= limit => {
            tracing::debug!(peer = %ctx.peer, "stream idle timeout: no bytes moved; closing");
            ctx.stream_idle_fired.store(true, Ordering::Relaxed);
            Err(())
        }
        Some((quiet, limit)) => Ok((limit - quiet).max(Duration::from_millis(10)).min(interval)),
        None => Ok(interval),
    }
}

/// An HTTP/1 connection: served by the codec while requests come, and once it has been
/// quiet for a moment (`idle_handoff` in the codec's settings) held as the codec's
/// `IdleConn` — its halves and an empty buffer slot — while this waits for the next
/// bytes, the rest of the idle timeout or the drain. The codec's state (parser, timers, the exchange) lives in a box
/// that exists only while it runs, so an idle connection's task is small: the proxy
/// holds thousands of them.
async fn serve_http1<IO: IntoHalves>(
    io: IO,
    prefix: Bytes,
    ctx: Arc<ConnContext>,
    manager: &HttpManager,
) {
    let (read, write) = io.into_halves(prefix, &ctx.io_activity);
    let mut conn = http1_server::IdleConn::new(read, write);
    // The codec hands a connection back once it has been quiet for `idle_handoff`: the
    // rest of the idle timeout is this loop's to time.
    let idle_rest = match manager.idle_timeout {
        Duration::ZERO => Duration::from_secs(365 * 86_400),
        idle => idle.saturating_sub(manager.http1_settings.idle_handoff.unwrap_or_default()),
    };
    loop {
        // Boxed: see the function's doc.
        conn = match Box::pin(serve_http1_active(conn, &ctx, manager)).await {
            Some(idle) => idle,
            None => return,
        };
        let mut drain = ctx.slot.drain.watch();
        let woken = tokio::select! {
            next = poll_fn(|cx| conn.poll_next_bytes(cx)) => match next {
                Ok(true) => continue,
                // The client closed, or the socket failed: nothing to say to it.
                Ok(false) | Err(_) => return,
            },
            _ = tokio::time::sleep(idle_rest) => "idle timeout",
            _ = drain.draining() => "draining",
        };
        tracing::debug!(peer = %ctx.peer, reason = woken, "closing an idle connection");
        let _ = conn.close().await;
        return;
    }
}

/// The codec serving `conn` until it is idle again (returned) or closed (None), with a
/// look every so often for response bodies that stalled.
async fn serve_http1_active(
    conn: http1_server::IdleConn<ConnRead, ConnWrite>,
    ctx: &Arc<ConnContext>,
    manager: &HttpManager,
) -> Option<http1_server::IdleConn<ConnRead, ConnWrite>> {
    let service_ctx = ctx.clone();
    let service = move |req: Request<http1_server::RequestBody<ConnRead>>| {
        // Boxed: inline, the request's state would size the codec's future whether a
        // request is in progress or not.
        Box::pin(answer(service_ctx.clone(), req.map(RequestBody::Http1)))
    };
    // The proxy is draining: the codec closes the connection after the exchange in
    // progress (answered with `Connection: close`), or at once if it finds it idle.
    let mut drain = ctx.slot.drain.watch();
    let shutdown = async move { drain.draining().await };
    let conn = http1_server::resume(conn, service, manager.http1_settings, shutdown);
    tokio::pin!(conn);
    let interval = stall_check_interval(manager);
    loop {
        let Ok(wait) = stall_deadline(ctx, interval) else {
            return None;
        };
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Ok(http1_server::Ended::Idle(idle)) => return Some(idle),
                    Ok(http1_server::Ended::Closed) => {}
                    Ok(http1_server::Ended::BadRequest { status, .. }) => {
                        refused_head(ctx, manager, status);
                    }
                    Err(e) => {
                        tracing::debug!(peer = %ctx.peer, error = %e, "downstream connection ended with an error");
                    }
                }
                return None;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A request head the codec refused (it answered with `status` and closed): it never
/// became a stream, so it goes to the listener's access log from here, flagged `DPE`
/// as Envoy logs a downstream protocol error.
fn refused_head(ctx: &ConnContext, manager: &HttpManager, status: http::StatusCode) {
    tracing::debug!(peer = %ctx.peer, %status, "malformed request head refused");
    if let Some(logs) = manager.filters.access_logs() {
        let downstream = Downstream {
            peer: ctx.peer,
            local: ctx.slot.bound,
            tls: ctx.tls,
            identity: ctx.peer_identity.as_ref(),
        };
        logged::refused_head(logs, status, downstream);
    }
}

async fn serve_http2<IO>(io: IO, ctx: Arc<ConnContext>, manager: &HttpManager)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_ctx = ctx.clone();
    let service = move |req: Request<http2::RecvBody>| {
        // Boxed: each stream's future is one allocation in the connection's set of
        // streams; inline, the largest request's state would size every stream's.
        Box::pin(answer(service_ctx.clone(), req.map(RequestBody::Http2)))
    };
    let idle_timeout = manager.idle_timeout;
    let interval = stall_check_interval(manager);
    // GOAWAY (graceful: the streams in progress finish) once this is set. The driver
    // polls it whenever the loop below polls the connection, which it does right after
    // setting it, so it needs no waker.
    let go_away = AtomicBool::new(false);
    // `disable_http_keepalive` saturated under overload does the same.
    let shutdown = poll_fn(|_| {
        if go_away.load(Ordering::Relaxed) || crate::overload::keepalive_disabled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let conn = http2::serve(io, service, manager.http2, shutdown);
    tokio::pin!(conn);
    let mut shutting_down = false;
    let mut drain = ctx.slot.drain.watch();
    loop {
        let idle_wait = match ctx.idle_for() {
            Some(idle) if idle >= idle_timeout && !shutting_down => {
                go_away.store(true, Ordering::Relaxed);
                shutting_down = true;
                idle_timeout
            }
            Some(idle) => idle_timeout
                .saturating_sub(idle)
                .max(Duration::from_millis(10)),
            None => idle_timeout,
        };
        let Ok(stall_wait) = stall_deadline(&ctx, interval) else {
            return;
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %ctx.peer, error = %e, "downstream connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(idle_wait.min(stall_wait)) => {}
            // The proxy is draining: GOAWAY, as at the idle timeout.
            _ = drain.draining(), if !shutting_down => {
                go_away.store(true, Ordering::Relaxed);
                shutting_down = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns (here: an async fn's future, never polled).
    fn size_of_output<A, F>(_: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every open connection is a task holding this future, idle or not: it must stay
    /// small (bench scenario h measures the whole per-connection cost). Before the
    /// exchange and HTTP/2 were boxed it was 3,984 bytes; with the codec's driver inline
    /// for the connection's life, 1,848; now that the driver is boxed only while it runs,
    /// 800.
    #[test]
    fn a_connections_future_stays_under_1_kib() {
        type Slot = &'static Arc<ListenerSlot>;
        type Config = &'static ListenerConfig;
        let conn = size_of_output(|(s, p, slot, c): (TcpStream, SocketAddr, Slot, Config)| {
            serve(s, p, slot, c, None)
        });
        assert!(conn <= 1024, "a connection's future is {conn} bytes");
    }

    /// A request's future is copied whole into its box, once per request; forwarding's
    /// state is boxed apart so it is not copied again at every level above it. It was
    /// 5,376 bytes before.
    #[test]
    fn a_requests_future_stays_under_3_5_kib() {
        let answered =
            size_of_output(|(ctx, req): (Arc<ConnContext>, DownstreamRequest)| answer(ctx, req));
        assert!(answered <= 3584, "a request's future is {answered} bytes");
    }
}
