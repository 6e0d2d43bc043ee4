//! Per-endpoint connection pools: an endpoint's live state ([`EndpointState`]), where its
//! open connections wait between requests, and how a connection is taken out and comes
//! back. Opening connections and sending on them is `send.rs`'s; the response body hands
//! its HTTP/1.1 connection back through `PoolReturn`.
//!
//! HTTP/1.1: idle connections wait in a small stack (LIFO, so the warmest one is reused
//! and the coldest ones age out); a connection returns when its response body ends.
//! No task watches an idle connection: one the upstream closed is found (and dropped)
//! when it is taken out.
//! HTTP/2: connections are shared; each carries at most the smaller of the configured
//! stream cap and the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
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

use sinew_codec::http1::client::{CheckIn, ClientConn};
use sinew_codec::http2::Client as Http2Client;
use sinew_config::model::PoolConfig;
use sinew_stream::{ConnRead, ConnWrite};

use crate::breaker::Slot;
use crate::connect::UpstreamTls;
use crate::health::EndpointHealth;

/// How to open and pool connections to a cluster's endpoints.
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub tls: Option<UpstreamTls>,
    pub pool: PoolConfig,
    /// `upstream_connection_options.tcp_keepalive`, compiled; None: off.
    pub tcp_keepalive: Option<socket2::TcpKeepalive>,
}

/// An open HTTP/1.1 connection and its place under the cluster's connection limit,
/// which it holds for as long as it lives.
pub(crate) struct Http1Conn {
    pub(crate) conn: ClientConn<ConnRead, ConnWrite>,
    pub(crate) slot: Slot,
}

/// Where an HTTP/1 connection goes when its response has ended cleanly: back to its
/// endpoint's pool, with the place it holds under the cluster's connection limit. If the
/// body ends any other way, this drops with it and the slot is freed.
pub(crate) struct PoolReturn {
    pub(crate) endpoint: Arc<EndpointState>,
    pub(crate) slot: Slot,
}

impl CheckIn<ConnRead, ConnWrite> for PoolReturn {
    fn check_in(self, conn: ClientConn<ConnRead, ConnWrite>) {
        self.endpoint.check_in(Http1Conn {
            conn,
            slot: self.slot,
        });
    }
}

/// Counts a stream against its HTTP/2 connection's limit until dropped.
pub(crate) struct StreamPermit(pub(crate) Arc<AtomicU32>);

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

struct IdleHttp1 {
    conn: Http1Conn,
    since: Instant,
}

struct SharedHttp2 {
    client: Http2Client,
    /// Streams this pool has handed out on the connection and not yet seen end.
    streams: Arc<AtomicU32>,
}

/// The live state of one endpoint address: its pools and its load. It outlives config
/// reloads that keep the endpoint, so pooled connections survive them.
pub struct EndpointState {
    pub address: SocketAddr,
    pub(crate) settings: Arc<ConnectSettings>,
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
pub(crate) struct WorkerPool {
    idle_http1: Mutex<Vec<IdleHttp1>>,
    /// Woken when an HTTP/1.1 connection comes back to the pool, for requests waiting at
    /// the cluster's connection limit.
    pub(crate) http1_returned: tokio::sync::Notify,
    http2: Mutex<Vec<SharedHttp2>>,
    /// Held while an HTTP/2 connection is being opened, so requests that arrive during
    /// the handshake wait for it rather than each opening their own. Holds when the
    /// last attempt failed, so waiters behind a failure fail at once instead of in turn.
    pub(crate) http2_connecting: tokio::sync::Mutex<Option<Instant>>,
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
    pub(crate) fn pool(&self) -> &WorkerPool {
        &self.pools[sinew_runtime::index() % self.pools.len()]
    }

    pub fn settings(&self) -> &Arc<ConnectSettings> {
        &self.settings
    }

    /// A pooled HTTP/1.1 connection that is still usable, if one is idle.
    pub(crate) fn check_out_http1(&self) -> Option<Http1Conn> {
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

    /// A stream on the open HTTP/2 connection carrying the fewest, past its cap if need be.
    pub(crate) fn least_loaded_http2(&self) -> Option<(Http2Client, StreamPermit)> {
        let conns = self.pool().http2.lock().unwrap_or_else(|e| e.into_inner());
        let conn = conns
            .iter()
            .filter(|c| !c.client.is_closed())
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some((conn.client.clone(), StreamPermit(conn.streams.clone())))
    }

    /// A stream on an open HTTP/2 connection that is under its stream limit, if any.
    pub(crate) fn check_out_http2(&self) -> Option<(Http2Client, StreamPermit)> {
        let cap = self.settings.pool.http2_max_concurrent_streams;
        let mut conns = self.pool().http2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.client.is_closed());
        for conn in conns.iter() {
            // The peer's SETTINGS_MAX_CONCURRENT_STREAMS as `h2` last heard it: a peer
            // that lowers it later is respected from then on.
            let peer_limit = u32::try_from(conn.client.max_send_streams()).unwrap_or(u32::MAX);
            let limit = cap.min(peer_limit);
            let taken = conn
                .streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
            if taken {
                return Some((conn.client.clone(), StreamPermit(conn.streams.clone())));
            }
        }
        None
    }

    /// Offers a newly opened HTTP/2 connection to this worker's later requests, with one
    /// stream taken for the request that opened it.
    pub(crate) fn share_http2(&self, client: Http2Client) -> StreamPermit {
        let streams = Arc::new(AtomicU32::new(1));
        let permit = StreamPermit(streams.clone());
        self.pool()
            .http2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SharedHttp2 { client, streams });
        permit
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
                .retain(|c| !c.client.is_closed());
        }
    }
}
