//! HTTP filters: what a stream goes through between its protocol and its upstream, each
//! in its own folder with its compiled config, its code and its tests.
//!
//! - [`trace`]: reads and passes on the trace context; a sampled stream gets a span.
//! - [`access_log`]: takes the request's half of a log entry before the stream is
//!   handled and writes the entry when its response body ends.
//! - [`rate_limit`]: local token buckets (listener, virtual host, route) and the global
//!   (Redis) limit.
//! - [`fault`]: the route's delays and aborts.
//! - [`cors`]: CORS preflights answered and actual cross-origin responses marked, from the
//!   route's and virtual host's policies.
//! - [`csrf`]: state-changing requests from another origin refused.
//! - [`jwt_authn`]: JWT authentication, in the access phase before routing.
//! - [`authz`]: authorization policies (Istio's `AuthorizationPolicy`), at the access
//!   phase.
//! - [`compression`]: response compression and request/response decompression
//!   (gzip, brotli, zstd).
//! - [`router`]: the route's action — a direct response, a redirect, or the upstream call.
//!
//! The chain that runs them, in its named phases, is in [`chain`].

pub mod access_log;
pub mod authz;
pub(crate) mod chain;
pub(crate) mod compression;
pub(crate) mod cors;
pub(crate) mod csrf;
pub(crate) mod fault;
pub(crate) mod jwt_authn;
pub(crate) mod rate_limit;
pub mod router;
pub mod trace;

use std::net::SocketAddr;
use std::sync::Arc;

use sinew_identity::PeerIdentity;

use sinew_router::{Route, VirtualHost};

/// Where a stream came from, as filters see it.
#[derive(Clone, Copy)]
pub(crate) struct Downstream<'a> {
    pub peer: SocketAddr,
    /// The listener's address the stream came in on.
    pub local: SocketAddr,
    pub tls: bool,
    /// What the client's certificate says (mTLS).
    pub identity: Option<&'a Arc<PeerIdentity>>,
}

/// The route a stream matched, as the route phase's filters see it.
pub(crate) struct Routed<'a> {
    /// The route table's virtual hosts, in order (rate-limit buckets are kept by position).
    pub virtual_hosts: &'a [VirtualHost],
    pub vhost: &'a VirtualHost,
    pub route: &'a Route,
    pub grpc: bool,
}
