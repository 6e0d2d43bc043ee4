//! What a finished RPC call leaves behind: its outcome counter and latency, its route's
//! status-class counter (as an HTTP request's), and its access-log line, written with
//! the HTTP log's formats: `%REQ(:AUTHORITY)%` is the service, `%REQ(:PATH)%` the
//! `/<method>`, `%PROTOCOL%` the protocol's name, `%RESPONSE_CODE%` the status the call
//! counts as (see [`super::outcome`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, StatusCode};
use sinew_codec::rpc::ProxyError;
use sinew_identity::PeerIdentity;
use sinew_upstream::Cluster;

use super::outcome::Ended;
use crate::config::snapshot::RpcProxy;
use crate::filters::access_log::Entry;
use crate::filters::authz::RbacDenied;
use crate::stream::flags::ResponseFlags;

/// The client connection a call came on, shared by its calls.
pub(super) struct Caller {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// What the client's certificate says (mTLS).
    pub identity: Option<Arc<PeerIdentity>>,
}

/// What a call leaves for its metrics and access log, filled in as it goes.
pub(super) struct Trail<'a> {
    pub ended: Ended,
    /// The HTTP status the call counts as (see [`super::outcome`]).
    pub status: StatusCode,
    pub flags: ResponseFlags,
    /// An authorization denial's policy, for `%RESPONSE_CODE_DETAILS%`.
    pub denied: Option<RbacDenied>,
    pub route_id: Option<usize>,
    /// The last endpoint tried and its cluster.
    pub upstream: Option<(SocketAddr, &'a Arc<Cluster>)>,
}

impl Trail<'_> {
    pub(super) fn new() -> Self {
        Trail {
            ended: Ended::Proxy(ProxyError::Unavailable),
            status: StatusCode::SERVICE_UNAVAILABLE,
            flags: ResponseFlags::default(),
            denied: None,
            route_id: None,
            upstream: None,
        }
    }
}

/// The call's own fields a record names.
pub(super) struct Call<'a> {
    pub service: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub started: Instant,
    /// The request frame's bytes and the answer's.
    pub received: usize,
    pub sent: usize,
}

/// Counts and logs a finished call.
pub(super) fn finish(config: &RpcProxy, caller: &Caller, call: Call<'_>, trail: Trail<'_>) {
    let took = call.started.elapsed();
    if let Some(m) = &config.metrics {
        m.calls[trail.ended.index()].inc();
        m.time.observe(took);
    }
    if let (Some(m), Some(id)) = (&config.routes.metrics, trail.route_id) {
        if let Some(route) = m.route(id) {
            route.count(trail.status);
        }
    }
    let Some(logs) = &config.access_log else {
        return;
    };
    logs.record(Entry {
        start: SystemTime::now() - took,
        method: None,
        path: PathAndQuery::try_from(call.path).ok(),
        authority: HeaderValue::from_str(call.service).ok(),
        tls: caller.tls,
        version: None,
        protocol: Some(config.codec.name()),
        status: Some(trail.status.as_u16()),
        flags: trail.flags,
        details: trail.denied.map(|d| d.details().into()),
        bytes_received: call.received as u64,
        bytes_sent: call.sent as u64,
        duration: took,
        response_duration: Some(took),
        upstream_host: trail.upstream.map(|(host, _)| host),
        upstream_cluster: trail.upstream.map(|(_, cluster)| cluster.name.clone()),
        downstream_remote: caller.peer,
        downstream_local: caller.local,
        peer_identity: caller.identity.clone(),
        request_headers: logs.capture_request_headers(call.headers),
        response_headers: Vec::new(),
    });
}
