//! The TCP proxy: one upstream connection per downstream connection, bytes copied both
//! ways until either side closes or the connection sits idle too long. Either side may
//! be TLS: a listener in mesh `mtls` terminates it, a cluster with `tls` or `mtls`
//! originates it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sinew_identity::PeerIdentity;
use sinew_upstream::Outcome;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::snapshot::{DownstreamTls, TcpProxy};
use crate::filters::authz::{RbacDenied, Verdict};
use crate::moment::SharedMoment;

/// Bytes buffered in each direction of a proxied TCP connection.
const TCP_BUFFER: usize = 16 * 1024;

/// How many endpoints to try before giving up on a connection.
const CONNECT_ATTEMPTS: usize = 3;

/// How long a TLS client has to finish its handshake on a TCP-proxy listener.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one accepted connection: its TLS first, if the listener takes any.
pub(crate) async fn serve(
    downstream: TcpStream,
    tls: Option<&DownstreamTls>,
    metrics: Option<&crate::metrics::ListenerMetrics>,
    config: Arc<TcpProxy>,
) {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let addresses = (
        downstream.peer_addr().unwrap_or(unknown),
        downstream.local_addr().unwrap_or(unknown),
    );
    let Some(tls) = tls else {
        return proxy(downstream, addresses, None, config).await;
    };
    if tls.plaintext_allowed {
        use crate::protocol::{first_byte, TLS_HANDSHAKE_RECORD};
        match first_byte(&downstream, HANDSHAKE_TIMEOUT).await {
            Some(TLS_HANDSHAKE_RECORD) => {}
            Some(_) => return proxy(downstream, addresses, None, config).await,
            None => return,
        }
    }
    let accept = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(downstream));
    let accepted = accept.await;
    if let Some(m) = metrics {
        match &accepted {
            Ok(Ok(_)) => m.tls_handshakes.inc(),
            _ => m.tls_errors.inc(),
        };
    }
    match accepted {
        Ok(Ok(stream)) => {
            let identity = super::admit::peer_identity(stream.get_ref().1);
            if let (Some(m), Some(id)) = (metrics, &identity) {
                m.peer_connection(id);
            }
            Box::pin(proxy(stream, addresses, identity, config)).await
        }
        Ok(Err(e)) => tracing::debug!(peer = %addresses.0, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(peer = %addresses.0, "TLS handshake timed out"),
    }
}

async fn proxy<D: AsyncRead + AsyncWrite + Unpin>(
    downstream: D,
    addresses: (SocketAddr, SocketAddr),
    peer_identity: Option<Arc<PeerIdentity>>,
    config: Arc<TcpProxy>,
) {
    let peer = addresses.0;
    let log_start = config
        .access_log
        .as_ref()
        .map(|_| (std::time::SystemTime::now(), std::time::Instant::now()));
    if let Some(authz) = &config.authorization {
        let (local_port, identity) = (addresses.1.port(), peer_identity.as_deref());
        if let Verdict::Denied(policy) = authz.check_connection(peer, local_port, identity) {
            tracing::debug!(%peer, policy = policy.as_deref().unwrap_or("-"), "TCP connection denied by authorization; closing");
            if let (Some(logs), Some(start)) = (&config.access_log, log_start) {
                let entry = tcp_entry(addresses, start, None, (0, 0), peer_identity.clone());
                logs.record(crate::filters::access_log::Entry {
                    flags: crate::stream::flags::ResponseFlags::RBAC_DENIED,
                    details: Some(RbacDenied(policy).details().into()),
                    ..entry
                });
            }
            return;
        }
    }
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
        let settings = endpoint.state.settings();
        let connected = sinew_upstream::connect::connect(
            address,
            settings.connect_timeout,
            settings.tls.as_ref(),
            settings.tcp_keepalive.as_ref(),
        );
        match connected.await {
            Ok(stream) => {
                cluster.report(&endpoint, Outcome::Connected);
                upstream = Some((stream, endpoint, slot, cluster.name.clone()));
                break;
            }
            Err(e) => tracing::debug!(%address, error = %e, "TCP upstream connect failed"),
        }
        cluster.report(&endpoint, Outcome::ConnectFailure);
        avoid = Some(address);
    }
    let Some((upstream, endpoint, _slot, cluster_name)) = upstream else {
        tracing::debug!(?peer, "no upstream for TCP connection; closing (UF)");
        if let (Some(logs), Some(start)) = (&config.access_log, log_start) {
            let entry = tcp_entry(addresses, start, None, (0, 0), peer_identity);
            logs.record(crate::filters::access_log::Entry {
                flags: crate::stream::flags::ResponseFlags::UPSTREAM_CONNECT_FAILURE,
                ..entry
            });
        }
        return;
    };
    let upstream_host = (endpoint.state.address, cluster_name);
    let activity = Arc::new(SharedMoment::now());
    let mut down = Tracked::new(downstream, activity.clone());
    let mut up = Tracked::new(upstream, activity.clone());
    // 16 KiB each way, as nginx's stream proxy_buffer_size and HAProxy's bufsize in the
    // benchmark; tokio's default of 8 KiB took twice the syscalls and 1.8x the CPU per
    // byte of HAProxy in bench/run's scenario (g).
    // In a block so the copy's borrows end before the access log reads the counts.
    {
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, TCP_BUFFER, TCP_BUFFER);
        tokio::pin!(copy);
        loop {
            let idle = activity.elapsed().unwrap_or_default();
            if idle >= config.idle_timeout {
                tracing::debug!(?peer, "TCP connection idle; closing");
                break;
            }
            tokio::select! {
                result = &mut copy => {
                    if let Err(e) = result {
                        tracing::debug!(?peer, error = %e, "TCP connection ended with an error");
                    }
                    break;
                }
                _ = tokio::time::sleep(config.idle_timeout - idle) => {}
            }
        }
    }
    if let (Some(logs), Some(start)) = (&config.access_log, log_start) {
        let counts = (down.bytes_read, down.bytes_written);
        logs.record(tcp_entry(
            addresses,
            start,
            Some(upstream_host),
            counts,
            peer_identity,
        ));
    }
}

/// A TCP connection's access-log entry: no HTTP fields, bytes as the client saw them.
fn tcp_entry(
    (downstream_remote, downstream_local): (SocketAddr, SocketAddr),
    (start, at): (std::time::SystemTime, std::time::Instant),
    upstream: Option<(std::net::SocketAddr, Arc<str>)>,
    (bytes_received, bytes_sent): (u64, u64),
    peer_identity: Option<Arc<PeerIdentity>>,
) -> crate::filters::access_log::Entry {
    let (upstream_host, upstream_cluster) = upstream.unzip();
    crate::filters::access_log::Entry {
        start,
        method: None,
        path: None,
        authority: None,
        tls: false,
        version: None,
        protocol: None,
        status: None,
        flags: Default::default(),
        details: None,
        bytes_received,
        bytes_sent,
        duration: at.elapsed(),
        response_duration: None,
        upstream_host,
        upstream_cluster,
        downstream_remote,
        downstream_local,
        peer_identity,
        request_headers: Vec::new(),
        response_headers: Vec::new(),
    }
}

/// A stream that records activity on every successful read or write.
struct Tracked<S> {
    inner: S,
    activity: Arc<SharedMoment>,
    /// For the access log's byte counts.
    bytes_read: u64,
    bytes_written: u64,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<SharedMoment>) -> Self {
        Self {
            inner,
            activity,
            bytes_read: 0,
            bytes_written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.activity.mark();
            this.bytes_read += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.activity.mark();
            this.bytes_written += n as u64;
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
