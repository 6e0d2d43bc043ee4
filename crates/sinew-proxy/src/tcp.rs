//! The TCP proxy: one upstream connection per downstream connection, bytes copied both
//! ways until either side closes or the connection sits idle too long.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sinew_upstream::Outcome;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::moment::SharedMoment;
use crate::snapshot::TcpProxy;

/// Bytes buffered in each direction of a proxied TCP connection.
const TCP_BUFFER: usize = 16 * 1024;

/// How many endpoints to try before giving up on a connection.
const CONNECT_ATTEMPTS: usize = 3;

pub(crate) async fn proxy(downstream: TcpStream, config: Arc<TcpProxy>) {
    let peer = downstream.peer_addr().ok();
    let mut upstream = None;
    let mut avoid = None;
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(cluster) = config.pick_cluster() else {
            break;
        };
        // The cluster's `max_connections` bounds proxied TCP connections too (UO).
        let Some(slot) = cluster.breakers().try_connection() else {
            tracing::debug!(cluster = %cluster.name, "TCP connection over the circuit breaker (UO)");
            continue;
        };
        let Some(endpoint) = cluster.pick(0, None, avoid.as_slice(), 1) else {
            tracing::debug!(cluster = %cluster.name, "no endpoint for TCP connection");
            continue;
        };
        let address = endpoint.state.address;
        let timeout = endpoint.state.settings().connect_timeout;
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                cluster.report(&endpoint, Outcome::Connected);
                if let Some(keepalive) = &endpoint.state.settings().tcp_keepalive {
                    sinew_upstream::socket::set_keepalive(&stream, keepalive);
                }
                upstream = Some((stream, endpoint, slot));
                break;
            }
            Ok(Err(e)) => tracing::debug!(%address, error = %e, "TCP upstream connect failed"),
            Err(_) => tracing::debug!(%address, "TCP upstream connect timed out"),
        }
        cluster.report(&endpoint, Outcome::ConnectFailure);
        avoid = Some(address);
    }
    let Some((upstream, _endpoint, _slot)) = upstream else {
        tracing::debug!(?peer, "no upstream for TCP connection; closing (UF)");
        return;
    };
    let activity = Arc::new(SharedMoment::now());
    let mut down = Tracked::new(downstream, activity.clone());
    let mut up = Tracked::new(upstream, activity.clone());
    // 16 KiB each way, as nginx's stream proxy_buffer_size and HAProxy's bufsize in the
    // benchmark; tokio's default of 8 KiB took twice the syscalls and 1.8x the CPU per
    // byte of HAProxy in bench/run's scenario (g).
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, TCP_BUFFER, TCP_BUFFER);
    tokio::pin!(copy);
    loop {
        let idle = activity.elapsed().unwrap_or_default();
        if idle >= config.idle_timeout {
            tracing::debug!(?peer, "TCP connection idle; closing");
            return;
        }
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!(?peer, error = %e, "TCP connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(config.idle_timeout - idle) => {}
        }
    }
}

/// A stream that records activity on every successful read or write.
struct Tracked {
    inner: TcpStream,
    activity: Arc<SharedMoment>,
}

impl Tracked {
    fn new(inner: TcpStream, activity: Arc<SharedMoment>) -> Self {
        Self { inner, activity }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.activity.mark();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            this.activity.mark();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
