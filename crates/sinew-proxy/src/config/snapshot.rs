//! The immutable snapshot the data plane runs on: listeners, their HTTP connection
//! managers or TCP proxies, routes and clusters, as compiled from a config
//! ([`super::compile`]). Replaced whole on reload; read without locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use sinew_balance::{Balancer, PickContext};
use sinew_router::{RouteTable, Target};
use sinew_upstream::Cluster;
use tokio_rustls::TlsAcceptor;

use crate::filters::chain::FilterChain;
use crate::metrics::{ListenerMetrics, RouteSetMetrics};
use crate::net::connection_rate_limit::ConnectionRateLimit;

/// Everything the data plane needs, compiled; replaced whole on reload.
pub struct Snapshot {
    pub version: u64,
    pub listeners: Vec<Arc<ListenerConfig>>,
    pub clusters: Vec<Arc<Cluster>>,
    pub drain_timeout: Duration,
    /// False under `stats_config: {stats_matcher: {reject_all: true}}`: no handles below.
    pub metrics_enabled: bool,
    /// The proxy's mesh identity and the config it was loaded from (kept by the next
    /// compile while that config is unchanged).
    pub mesh: Option<(sinew_config::tls::Mesh, Arc<sinew_tls::MeshIdentity>)>,
}

/// One listener's compiled config. Cloning copies handles, not what they point to.
#[derive(Clone)]
pub struct ListenerConfig {
    pub name: Arc<str>,
    /// As written in the config; a listener keeps its socket across reloads while this
    /// stays the same (so port 0 keeps its port).
    pub address_text: String,
    pub address: SocketAddr,
    pub max_connections: Option<u32>,
    pub connection_rate_limit: Option<Arc<ConnectionRateLimit>>,
    /// Keepalive set on each accepted socket; None leaves the kernel's default (off).
    pub tcp_keepalive: Option<socket2::TcpKeepalive>,
    pub tls: Option<DownstreamTls>,
    pub kind: ListenerKind,
    /// None when metrics are off.
    pub metrics: Option<Arc<ListenerMetrics>>,
    /// Filter chains chosen per connection (`net::chains`); empty without. Each is a
    /// body of its own (its `tls` and `kind`); this config's are the default's.
    pub chains: Arc<[Chain]>,
    /// How long a connection has to show what chooses its chain.
    pub inspect_timeout: Duration,
    /// Whether choosing needs the whole ClientHello (a chain names servers or ALPN), not
    /// just the first byte.
    pub chains_read_hello: bool,
    /// Whether choosing needs a plaintext connection's protocol (a chain names
    /// `protocols`).
    pub chains_sniff: bool,
}

impl ListenerConfig {
    /// The body that serves a connection which took chain `chain` (None: the default):
    /// None when a reload since removed that chain.
    pub fn body(&self, chain: Option<usize>) -> Option<&ListenerConfig> {
        match chain {
            None => Some(self),
            Some(i) => self.chains.get(i).map(|c| &c.config),
        }
    }
}

/// One chain: what it matches, and the listener body that serves what it takes.
pub struct Chain {
    pub matcher: crate::net::chains::ChainMatcher,
    pub config: ListenerConfig,
}

impl AsRef<crate::net::chains::ChainMatcher> for Chain {
    fn as_ref(&self) -> &crate::net::chains::ChainMatcher {
        &self.matcher
    }
}

/// A listener's TLS termination.
#[derive(Clone)]
pub struct DownstreamTls {
    pub acceptor: TlsAcceptor,
    /// PERMISSIVE mTLS: a connection whose first byte is not a TLS handshake record is
    /// served in plaintext.
    pub plaintext_allowed: bool,
    /// The first URI SAN of the listener's certificate (XFCC's `By`).
    pub local_uri_san: Option<String>,
    /// The listener's certificates (the default first), for the admin API and metrics.
    pub certs: Vec<Arc<sinew_tls::RotatingCert>>,
    /// A gateway listener's ticket keys and session cache, kept across reloads.
    pub(crate) resumption: Option<super::resumption::SessionResumption>,
}

impl Snapshot {
    /// Every listener body: each listener's default, then its chains'.
    pub fn listener_bodies(&self) -> impl Iterator<Item = &ListenerConfig> {
        self.listeners
            .iter()
            .flat_map(|l| std::iter::once(&**l).chain(l.chains.iter().map(|c| &c.config)))
    }

    /// Every certificate the proxy presents, once each, named by where it is used:
    /// `mesh` (the SVID), `listener/<name>`, `cluster/<name>`.
    pub fn certificates(&self) -> Vec<(String, Arc<sinew_tls::RotatingCert>)> {
        let mut found: Vec<(String, Arc<sinew_tls::RotatingCert>)> = Vec::new();
        let mut add = |name: String, cert: &Arc<sinew_tls::RotatingCert>| {
            if !found.iter().any(|(_, c)| Arc::ptr_eq(c, cert)) {
                found.push((name, cert.clone()));
            }
        };
        if let Some((_, mesh)) = &self.mesh {
            add("mesh".into(), &mesh.cert);
        }
        for l in &self.listeners {
            let bodies = std::iter::once((format!("listener/{}", l.name), &**l)).chain(
                l.chains
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("listener/{}/chains[{i}]", l.name), &c.config)),
            );
            for (name, body) in bodies {
                if let Some(tls) = &body.tls {
                    for (j, cert) in tls.certs.iter().enumerate() {
                        match j {
                            0 => add(name.clone(), cert),
                            _ => add(format!("{name}[{j}]"), cert),
                        }
                    }
                }
            }
        }
        for c in &self.clusters {
            if let Some(cert) = c.client_certificate() {
                add(format!("cluster/{}", c.name), cert);
            }
        }
        found
    }
}

#[derive(Clone)]
pub enum ListenerKind {
    Http(Arc<HttpManager>),
    Tcp(Arc<TcpProxy>),
    Rpc(Arc<RpcProxy>),
    /// A Redis (RESP) proxy.
    Redis(Arc<crate::redis::RedisProxy>),
    /// A listener with chains and no default: what no chain takes is closed.
    Closed,
}

/// A route table with the clusters its targets point at.
pub struct RouteSet {
    pub table: RouteTable,
    pub(crate) targets: Vec<(Arc<Cluster>, usize)>,
    /// Per-route and per-target metric handles; None when metrics are off.
    pub metrics: Option<RouteSetMetrics>,
}

impl RouteSet {
    /// The cluster and subset a route target stands for.
    pub fn target(&self, t: Target) -> (&Arc<Cluster>, usize) {
        let (c, s) = &self.targets[t.0];
        (c, *s)
    }
}

/// The HTTP connection manager of one listener.
pub struct HttpManager {
    pub routes: Arc<RouteSet>,
    pub max_request_headers_bytes: usize,
    pub max_request_body_bytes: Option<u64>,
    /// How much of a request body retries and mirrors keep on routes that set no limit.
    pub request_body_buffer_bytes: usize,
    pub request_headers_timeout: Duration,
    pub idle_timeout: Duration,
    /// Zero when off.
    pub stream_idle_timeout: Duration,
    pub request_timeout: Duration,
    pub generate_request_id: bool,
    /// What happens to `X-Forwarded-For` and `-Proto` on the way upstream.
    pub forwarding: crate::filters::router::headers::Forwarding,
    /// Where the original client is in `X-Forwarded-For`: this many entries from the
    /// right (Envoy's trusted client address); 0: the peer. Filters that run before the
    /// router see it as the downstream address (the access log, the span).
    pub client_hops: u32,
    pub tls: bool,
    /// `Via` values for HTTP/1.1 and HTTP/2 requests; None when `via` is empty.
    pub via_http1: Option<HeaderValue>,
    pub via_http2: Option<HeaderValue>,
    /// The HTTP/1 codec's connection settings.
    pub http1_settings: sinew_codec::http1::server::ServerSettings,
    /// The HTTP/2 driver's connection settings.
    pub http2: sinew_codec::http2::ServerSettings,
    /// The HTTP filters every stream goes through (tracing, access log, rate limits,
    /// faults; the router last).
    pub filters: FilterChain,
    /// What the upstream learns of the client certificate (`x-forwarded-client-cert`).
    pub forward_client_cert: sinew_config::tls::ForwardClientCert,
    pub client_cert_details: sinew_config::tls::ClientCertDetails,
    /// This proxy's URI SAN on the listener (XFCC's `By`), when it has one.
    pub local_uri_san: Option<String>,
    /// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
    pub path_options: crate::stream::path_normalize::PathOptions,
    /// The upgrade types passed (lower case) and whether each is on; None: every one.
    pub upgrades: Option<sinew_router::UpgradeList>,
    pub headers_with_underscores: sinew_config::model::HeadersWithUnderscores,
}

impl HttpManager {
    /// Whether an upgrade to `kind` (the `Upgrade` header's first protocol) may go
    /// upstream on `route`: the listener must list it, and the route's switch wins over
    /// the listener's.
    pub fn upgrade_allowed(&self, route: &sinew_router::Route, kind: &str) -> bool {
        let Some(listed) = &self.upgrades else {
            return true;
        };
        let find = |list: &[(Box<str>, bool)]| {
            list.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(kind))
                .map(|(_, on)| *on)
        };
        match find(listed) {
            None => false,
            Some(on) => find(&route.upgrades).unwrap_or(on),
        }
    }
}

/// A TCP proxy's targets.
pub struct TcpProxy {
    pub clusters: Vec<Arc<Cluster>>,
    pub(crate) balancer: Balancer,
    pub idle_timeout: Duration,
    /// None when the listener has no `access_log`.
    pub access_log: Option<Arc<crate::filters::access_log::AccessLogs>>,
    /// The listener's authorization policies; None when it has none.
    pub authorization: Option<Arc<crate::filters::authz::Authorization>>,
}

/// An RPC listener: its protocol's codec and the routes its calls take.
pub struct RpcProxy {
    pub codec: &'static dyn sinew_codec::rpc::RpcCodec,
    pub routes: Arc<RouteSet>,
    /// Zero when off.
    pub request_timeout: Duration,
    /// Zero when off.
    pub idle_timeout: Duration,
    /// The listener's authorization policies; None when it has none.
    pub authorization: Option<Arc<crate::filters::authz::Authorization>>,
    /// Whether the policies are checked per call (some rule reads a request: a path, a
    /// header...) rather than once per connection.
    pub authorize_calls: bool,
    /// The listener's, virtual hosts' and routes' local rate limits; None when none has
    /// one.
    pub rate_limits: Option<Arc<crate::filters::rate_limit::HttpRateLimits>>,
    /// None when the listener has no `access_log`.
    pub access_log: Option<Arc<crate::filters::access_log::AccessLogs>>,
    /// None when metrics are off.
    pub metrics: Option<Arc<crate::metrics::RpcCallMetrics>>,
    /// The listener's name, for logs.
    pub listener: Arc<str>,
}

impl TcpProxy {
    /// Chooses a cluster by weight.
    pub fn pick_cluster(&self) -> Option<&Arc<Cluster>> {
        let i = self.balancer.pick(&PickContext::none())?;
        self.clusters.get(i)
    }
}
