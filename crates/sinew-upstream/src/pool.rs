//! Per-endpoint connection pools and sending one request on them.
//!
//! HTTP/1.1: idle connections wait in a small stack (LIFO, so the warmest one is reused
//! and the coldest ones age out); a connection returns when its response body ends.
//! Requests go out through Sinew's codec (`sinew_codec::http1::client`), driven by the
//! request's own task: no task per connection, no channel per request. No task watches
//! an idle connection either: one the upstream closed is found (and dropped) when it is
//! taken out.
//! HTTP/2: connections are shared; each carries at most the smaller of the configured
//! stream cap and the peer's SETTINGS_MAX_CONCURRENT_STREAMS, and a new connection is
//! opened when every one is full.
//!
//! Pools are per worker (see `sinew-runtime`): a request takes a connection that its own
//! worker opened, whose connection task runs on its own thread, so no request hands work
//! to another core. The pool takes a short mutex per checkout, which only its own worker
//! ever takes (so it is never contended); it guards this endpoint's idle list on that
//! worker, never config, and is held for a push or a pop. Circuit breakers and the
//! least-request count stay per endpoint and cluster, across workers, as Envoy's do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sinew_codec::http1::client::{self as http1_client, ClientConn, ClientError, ClientSettings};
use sinew_config::model::PoolConfig;

use crate::body::{PoolReturn, RequestBody, StreamPermit, UpstreamBody};
use crate::breaker::{CircuitBreakers, Slot};
use crate::connect::{connect, ConnectError, UpstreamTls};
use crate::h2_settings::{PeerSettings, SettingsParser};
use crate::health::EndpointHealth;
use crate::tap::ReadTap;
use sinew_stream::{ConnRead, ConnWrite};

/// How to open and pool connections to a cluster's endpoints.
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub tls: Option<UpstreamTls>,
    pub pool: PoolConfig,
    /// `upstream_connection_options.tcp_keepalive`, compiled; None: off.
    pub tcp_keepalive: Option<socket2::TcpKeepalive>,
}

/// Which HTTP version to speak upstream for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireProtocol {
    Http1,
    Http2,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (nothing was sent).
    Connect(ConnectError),
    /// An HTTP/1.1 exchange failed: the connection failed or closed before a response,
    /// the response was malformed, or the request body failed.
    Http1(ClientError),
    /// An HTTP/2 stream failed while the request was out, or the response was malformed.
    Http2(hyper::Error),
    /// The cluster's circuit breakers turned the request away (nothing was sent).
    Overflow,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "{e}"),
            SendError::Http1(e) => write!(f, "{e}"),
            SendError::Http2(e) => write!(f, "{e}"),
            SendError::Overflow => write!(f, "circuit breaker overflow"),
        }
    }
}

/// An open HTTP/1.1 connection and its place under the cluster's connection limit,
/// which it holds for as long as it lives.
pub(crate) struct Http1Conn {
    pub(crate) conn: ClientConn<ConnRead, ConnWrite>,
    pub(crate) slot: Slot,
}

struct IdleHttp1 {
    conn: Http1Conn,
    since: Instant,
}

struct SharedHttp2 {
    sender: http2::SendRequest<RequestBody>,
    streams: Arc<AtomicU32>,
    peer: Arc<PeerSettings>,
}

/// The live state of one endpoint address: its pools and its load. It outlives config
/// reloads that keep the endpoint, so pooled connections survive them.
pub struct EndpointState {
    pub address: SocketAddr,
    settings: Arc<ConnectSettings>,
    /// Requests in flight (least-request balancing reads it).
    pub active_requests: AtomicU64,
    /// Active-check and outlier state (see `health.rs`).
    pub health: EndpointHealth,
    /// One pool per worker, indexed by `sinew_runtime::index()`.
    pools: Box<[WorkerPool]>,
}

/// One worker's connections to one endpoint. Aligned to a cache line so that two workers'
/// pools never share one.
#[repr(align(64))]
struct WorkerPool {
    idle_http1: Mutex<Vec<IdleHttp1>>,
    /// Woken when an HTTP/1.1 connection comes back to the pool, for requests waiting at
    /// the cluster's connection limit.
    http1_returned: tokio::sync::Notify,
    http2: Mutex<Vec<SharedHttp2>>,
    /// Held while an HTTP/2 connection is being opened, so requests that arrive during
    /// the handshake wait for it rather than each opening their own. Holds when the
    /// last attempt failed, so waiters behind a failure fail at once instead of in turn.
    http2_connecting: tokio::sync::Mutex<Option<Instant>>,
}

impl WorkerPool {
    fn new() -> Self {
        Self {
            idle_http1: Mutex::new(Vec::new()),
            http1_returned: tokio::sync::Notify::new(),
            http2: Mutex::new(Vec::new()),
            http2_connecting: tokio::sync::Mutex::new(None),
        }
    }
}

impl EndpointState {
    pub fn new(address: SocketAddr, settings: Arc<ConnectSettings>) -> Self {
        Self {
            address,
            settings,
            active_requests: AtomicU64::new(0),
            health: EndpointHealth::default(),
            pools: (0..sinew_runtime::count())
                .map(|_| WorkerPool::new())
                .collect(),
        }
    }

    /// The calling worker's pool.
    fn pool(&self) -> &WorkerPool {
        &self.pools[sinew_runtime::index() % self.pools.len()]
    }

    pub fn settings(&self) -> &Arc<ConnectSettings> {
        &self.settings
    }

    /// Sends one request to this endpoint, on a pooled connection when one is free. New
    /// connections and waiting for one count against `breakers`.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        protocol: WireProtocol,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match protocol {
            WireProtocol::Http1 => self.send_http1(request, breakers).await,
            WireProtocol::Http2 => self.send_http2(request, breakers).await,
        }
    }

    async fn send_http1(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // Connecting is rare and its future is large: boxed, it does not grow the future
        // of every request that finds a pooled connection (see `send`).
        let Http1Conn { conn, slot } = match self.check_out_http1() {
            Some(c) => c,
            None => Box::pin(self.connect_or_wait_http1(breakers)).await?,
        };
        *request.version_mut() = Version::HTTP_11;
        let home = PoolReturn {
            endpoint: self.clone(),
            slot,
        };
        // The codec's default limits on response heads are hyper's (64 KiB, 100 fields).
        let response = http1_client::send_request(conn, request, ClientSettings::default(), home)
            .await
            .map_err(SendError::Http1)?;
        Ok(response.map(UpstreamBody::http1))
    }

    fn check_out_http1(&self) -> Option<Http1Conn> {
        let timeout = self.settings.pool.idle_timeout;
        let mut idle = self
            .pool()
            .idle_http1
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Expired connections, and those the upstream closed while they idled, are
        // dropped (and their slots freed).
        while let Some(mut idle_conn) = idle.pop() {
            if idle_conn.since.elapsed() < timeout && idle_conn.conn.conn.is_usable_now() {
                return Some(idle_conn.conn);
            }
        }
        None
    }

    /// Returns a connection whose response just ended; a full pool closes it instead.
    pub(crate) fn check_in(&self, conn: Http1Conn) {
        let mut idle = self
            .pool()
            .idle_http1
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.settings.pool.max_idle_per_endpoint {
            idle.push(IdleHttp1 {
                conn,
                since: Instant::now(),
            });
            drop(idle);
            self.pool().http1_returned.notify_one();
        }
    }

    /// No pooled connection was free: open one, or — at the cluster's connection limit —
    /// wait as a pending request for one to come back, up to the connect timeout.
    async fn connect_or_wait_http1(
        &self,
        breakers: &CircuitBreakers,
    ) -> Result<Http1Conn, SendError> {
        let _pending = breakers.try_pending().ok_or(SendError::Overflow)?;
        let deadline = tokio::time::Instant::now() + self.settings.connect_timeout;
        loop {
            if let Some(slot) = breakers.try_connection() {
                return self.connect_http1(slot).await.map_err(SendError::Connect);
            }
            if let Some(conn) = self.check_out_http1() {
                return Ok(conn);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SendError::Overflow);
            }
            // A connection to another endpoint closing frees a slot without waking us,
            // so look again every few milliseconds as well.
            let recheck = tokio::time::sleep_until(
                (tokio::time::Instant::now() + Duration::from_millis(5)).min(deadline),
            );
            tokio::select! {
                _ = self.pool().http1_returned.notified() => {}
                _ = recheck => {}
            }
        }
    }

    /// Opens an HTTP/1.1 connection that holds `slot` of the cluster's connection limit
    /// for as long as it lives.
    async fn connect_http1(&self, slot: Slot) -> Result<Http1Conn, ConnectError> {
        let io = connect(
            self.address,
            self.settings.connect_timeout,
            self.settings.tls.as_ref(),
            self.settings.tcp_keepalive.as_ref(),
        )
        .await?;
        let (read, write) = io.into_halves();
        Ok(Http1Conn {
            conn: ClientConn::new(read, write),
            slot,
        })
    }

    async fn send_http2(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
        breakers: &CircuitBreakers,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (mut sender, permit) = match self.check_out_http2() {
            Some(found) => found,
            None => Box::pin(self.check_out_or_connect_http2(breakers)).await?,
        };
        *request.version_mut() = Version::HTTP_2;
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http2)?;
        Ok(response.map(|b| UpstreamBody::http2(b, permit)))
    }

    async fn check_out_or_connect_http2(
        &self,
        breakers: &CircuitBreakers,
    ) -> Result<(http2::SendRequest<RequestBody>, StreamPermit), SendError> {
        let _pending = breakers.try_pending().ok_or(SendError::Overflow)?;
        let waiting_since = Instant::now();
        let mut last_failure = self.pool().http2_connecting.lock().await;
        if let Some(found) = self.check_out_http2() {
            return Ok(found);
        }
        if last_failure.is_some_and(|failed| failed >= waiting_since) {
            return Err(SendError::Connect(ConnectError::FailedWhileWaiting));
        }
        let Some(slot) = breakers.try_connection() else {
            // At the cluster's connection limit, streams share the open connections past
            // their cap: the HTTP/2 client queues them until the peer allows more.
            return self.least_loaded_http2().ok_or(SendError::Overflow);
        };
        let result = self.connect_http2(slot).await;
        *last_failure = result.is_err().then(Instant::now);
        result.map_err(SendError::Connect)
    }

    fn least_loaded_http2(&self) -> Option<(http2::SendRequest<RequestBody>, StreamPermit)> {
        let conns = self.pool().http2.lock().unwrap_or_else(|e| e.into_inner());
        let conn = conns
            .iter()
            .filter(|c| !c.sender.is_closed())
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some((conn.sender.clone(), StreamPermit(conn.streams.clone())))
    }

    fn check_out_http2(&self) -> Option<(http2::SendRequest<RequestBody>, StreamPermit)> {
        let cap = self.settings.pool.http2_max_concurrent_streams;
        let mut conns = self.pool().http2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.sender.is_closed());
        for conn in conns.iter() {
            let limit = cap.min(conn.peer.max_concurrent_streams.load(Ordering::Relaxed));
            let taken = conn
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
            if taken {
                return Some((conn.sender.clone(), StreamPermit(conn.streams.clone())));
            }
        }
        None
    }

    async fn connect_http2(
        &self,
        slot: Slot,
    ) -> Result<(http2::SendRequest<RequestBody>, StreamPermit), ConnectError> {
        let io = connect(
            self.address,
            self.settings.connect_timeout,
            self.settings.tls.as_ref(),
            self.settings.tcp_keepalive.as_ref(),
        )
        .await?;
        if self.settings.tls.is_some() && io.alpn() != Some(b"h2") {
            return Err(ConnectError::NoH2);
        }
        let peer = PeerSettings::new();
        let io = ReadTap::new(io, SettingsParser::new(peer.clone()));
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        let address = self.address;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%address, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        // Share the connection only once its stream limit is known (one round trip).
        tokio::time::timeout(self.settings.connect_timeout, peer.seen.notified())
            .await
            .map_err(|_| ConnectError::Timeout)?;
        let streams = Arc::new(AtomicU32::new(1));
        let permit = StreamPermit(streams.clone());
        self.pool()
            .http2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SharedHttp2 {
                sender: sender.clone(),
                streams,
                peer,
            });
        Ok((sender, permit))
    }

    /// Closes idle HTTP/1.1 connections past the idle timeout and forgets dead HTTP/2 ones.
    pub fn prune(&self) {
        let timeout = self.settings.pool.idle_timeout;
        for pool in &self.pools {
            pool.idle_http1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|c| c.since.elapsed() < timeout);
            pool.http2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|c| !c.sender.is_closed());
        }
    }
}
