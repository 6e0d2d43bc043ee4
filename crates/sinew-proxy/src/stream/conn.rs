//! What a stream knows of its downstream connection: the listener it came in on (and
//! through it the config in force), the peer, TLS, and the bookkeeping the connection's
//! loop uses for idle and stalled streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::slot::ListenerSlot;
use crate::moment::SharedMoment;

/// What a request handler knows of its connection.
pub(crate) struct ConnContext {
    pub slot: Arc<ListenerSlot>,
    /// The filter chain the connection took; None: the listener's default.
    pub chain: Option<usize>,
    pub peer: SocketAddr,
    /// The peer's IP as a header value, for `X-Forwarded-For`.
    pub peer_ip_value: http::HeaderValue,
    pub tls: bool,
    /// What the peer's verified client certificate says (mTLS), read once at the
    /// handshake; `None` for plaintext and for TLS without a client certificate.
    pub peer_identity: Option<Arc<sinew_identity::PeerIdentity>>,
    /// The listener's response counters for this peer's SPIFFE ID (metrics on).
    pub peer_requests: Option<Arc<crate::metrics::PeerRequestMetrics>>,
    /// Whether the connection loop times idleness from requests (HTTP/2). On HTTP/1 the
    /// codec times it itself, so requests skip the bookkeeping (and its clock read).
    tracks_idle: bool,
    /// Requests from their head to the end of their response body (when `tracks_idle`).
    active_requests: AtomicU32,
    /// When the last request finished (or the connection began).
    idle_since: SharedMoment,
    /// When bytes last moved on the connection, either way.
    pub io_activity: Arc<SharedMoment>,
    /// Response bodies handed to the codec and not yet done.
    bodies_in_flight: AtomicU32,
    /// The longest stream idle timeout among those bodies, in ms (`u64::MAX`: one has
    /// none); 0 when there are none.
    body_idle_ms: AtomicU64,
    /// Set when the connection is closed because its outstanding bodies stalled.
    pub stream_idle_fired: AtomicBool,
}

impl ConnContext {
    /// A connection's context, from its first request on. `tracks_idle`: see the field.
    /// `tls`: for a TLS connection, the client certificate's identity if it sent one.
    pub(crate) fn new(
        slot: Arc<ListenerSlot>,
        chain: Option<usize>,
        peer: SocketAddr,
        tls: Option<Option<Arc<sinew_identity::PeerIdentity>>>,
        tracks_idle: bool,
        io_activity: Arc<SharedMoment>,
    ) -> Self {
        let peer_identity = tls.clone().flatten();
        let peer_requests = peer_identity.as_ref().and_then(|identity| {
            let config = slot.config();
            config.metrics.as_ref()?.peer_requests(identity)
        });
        ConnContext {
            slot,
            chain,
            peer,
            peer_ip_value: crate::filters::router::headers::client_address_value(peer.ip()),
            tls: tls.is_some(),
            peer_identity,
            peer_requests,
            tracks_idle,
            active_requests: AtomicU32::new(0),
            idle_since: SharedMoment::now(),
            io_activity,
            bodies_in_flight: AtomicU32::new(0),
            body_idle_ms: AtomicU64::new(0),
            stream_idle_fired: AtomicBool::new(false),
        }
    }

    pub(crate) fn request_started(&self) {
        if self.tracks_idle {
            self.active_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn request_finished(&self) {
        if self.tracks_idle {
            self.idle_since.mark();
            self.active_requests.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn body_started(&self, idle: Duration) {
        let ms = if idle.is_zero() {
            u64::MAX
        } else {
            idle.as_millis().max(1) as u64
        };
        self.body_idle_ms.fetch_max(ms, Ordering::Relaxed);
        self.bodies_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn body_finished(&self) {
        if self.bodies_in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.body_idle_ms.store(0, Ordering::Relaxed);
        }
    }

    /// While response bodies are outstanding and all have an idle timeout: how long no
    /// bytes have moved on the connection, and the longest of those timeouts.
    pub(crate) fn body_stall(&self) -> Option<(Duration, Duration)> {
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
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.active_requests.load(Ordering::Relaxed) > 0 {
            return None;
        }
        self.idle_since.elapsed()
    }
}
