//! The configuration model: listeners, route configurations, clusters and endpoints.
//!
//! It follows Envoy's resources one to one so that xDS can fill it later; the YAML is a
//! friendlier spelling of the same thing. Everything here is plain data: compiling it
//! into matchers, balancers and TLS contexts is the data plane's job.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::access_log::{AccessLog, AccessLogFilter};
use crate::duration;
pub use crate::rate_limit::*;
pub use crate::socket::{TcpKeepalive, UpstreamConnectionOptions};

pub use crate::admin::{Admin, StatsConfig, StatsMatcher};
pub use crate::circuit_breaker::{CircuitBreakers, RetryBudget};
pub use crate::fault::{FaultAbort, FaultDelay, FaultInjection, HeaderControlled};
pub use crate::header_match::HeaderMatch;
pub use crate::health::{HealthCheck, OutlierDetection};
pub use crate::jwt_authn::JwtAuthn;
pub use crate::mirror::RequestMirrorPolicy;
pub use crate::origin::{Cors, Csrf, StringMatch};
pub use crate::trace::{OtlpExporter, OtlpProtocol, Tracing, ZipkinExporter};

/// A whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Route configurations that HTTP listeners name with `route_config`.
    #[serde(default)]
    pub route_configs: Vec<RouteConfig>,
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// How long a drain (SIGTERM, Ctrl-C) lets connections finish (Envoy: `--drain-time-s`).
    #[serde(
        default = "crate::socket::default_drain_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub drain_timeout: Duration,
    /// The admin HTTP server; none when absent (Envoy: bootstrap `admin`).
    #[serde(default)]
    pub admin: Option<Admin>,
    /// `{stats_matcher: {reject_all: true}}` turns metrics off (Envoy: bootstrap `stats_config`).
    #[serde(default)]
    pub stats_config: Option<StatsConfig>,
    /// The proxy's workload identity, for mesh mTLS (`mtls` on listeners and clusters).
    #[serde(default)]
    pub mesh: Option<crate::tls::Mesh>,
    /// Actions taken when the heap passes a budget (Envoy: bootstrap `overload_manager`).
    #[serde(default)]
    pub overload: Option<crate::overload::Overload>,
}

/// One listening socket and what runs on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `ip:port`; IPv6 as `[::1]:8080`.
    pub address: String,
    /// At most this many downstream connections at once; further ones are closed at accept.
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub connection_rate_limit: Option<ConnectionRateLimit>,
    /// Keepalive on accepted sockets; off when unset.
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// TLS termination. Without it the listener is cleartext.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Mesh mTLS with the proxy's SVID (needs `mesh`); exclusive with `tls`.
    #[serde(default)]
    pub mtls: Option<crate::tls::MtlsMode>,
    /// An HTTP connection manager (HTTP/1.1 and HTTP/2 on one port).
    #[serde(default)]
    pub http: Option<HttpConnectionManager>,
    /// A TCP proxy to a cluster or weighted clusters.
    #[serde(default)]
    pub tcp: Option<TcpProxy>,
    /// Request/response RPC (SOFA Bolt, Dubbo): calls routed by service and method.
    #[serde(default)]
    pub rpc: Option<RpcProxy>,
    /// A Redis proxy: commands routed by key prefix, keys sharded over a cluster's
    /// endpoints (see `redis.rs`).
    #[serde(default)]
    pub redis: Option<crate::redis::RedisProxy>,
    /// Authorization policies for every request (HTTP) or connection (TCP); see `authz.rs`.
    #[serde(default)]
    pub authorization: Option<crate::authz::Authorization>,
    /// Filter chains chosen per connection by TLS or plaintext, SNI and ALPN (see
    /// `chains.rs`); the fields above are then the default chain.
    #[serde(default)]
    pub chains: Vec<ListenerChain>,
    /// How long a connection has to show what chooses its chain (its ClientHello);
    /// then it is closed (Envoy: `listener_filters_timeout`).
    #[serde(
        default = "default_inspect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub inspect_timeout: Duration,
}

fn default_inspect_timeout() -> Duration {
    Duration::from_secs(15)
}

/// One filter chain of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerChain {
    /// Which connections take this chain; empty: every one (a catch-all).
    #[serde(rename = "match", default)]
    pub matcher: crate::chain_match::ChainMatch,
    /// TLS termination. Without it, a TLS connection is passed through as it came (needs
    /// `tcp`).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    #[serde(default)]
    pub http: Option<HttpConnectionManager>,
    #[serde(default)]
    pub tcp: Option<TcpProxy>,
    /// Request/response RPC (SOFA Bolt, Dubbo): calls routed by service and method.
    #[serde(default)]
    pub rpc: Option<RpcProxy>,
    #[serde(default)]
    pub redis: Option<crate::redis::RedisProxy>,
    #[serde(default)]
    pub authorization: Option<crate::authz::Authorization>,
}

/// Certificates for a listener that terminates TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain (the first certificate; more in `certificates`), a file or
    /// `{pem: TEXT}`, or an SDS secret with the chain and its key.
    #[serde(default)]
    pub cert: Option<crate::tls::PemSource>,
    /// PEM private key of `cert`, a file or `{pem: TEXT}`.
    #[serde(default)]
    pub key: Option<crate::tls::KeySource>,
    /// Further certificates, chosen per handshake by SNI and by the signature schemes
    /// the client accepts; the first of all is the default.
    #[serde(default)]
    pub certificates: Vec<crate::tls::CertificateFiles>,
    /// The oldest and newest TLS versions accepted.
    #[serde(default)]
    pub min_version: Option<crate::tls::TlsVersion>,
    #[serde(default)]
    pub max_version: Option<crate::tls::TlsVersion>,
    /// Session resumption with stateless tickets (keys rotated every 6 hours).
    #[serde(default = "default_true")]
    pub session_tickets: bool,
    /// Sessions kept for resumption by id (TLS 1.2) and for stateful tickets.
    #[serde(default = "default_session_cache")]
    pub session_cache_size: usize,
    /// ALPN protocols offered, in order of preference.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    /// PEM bundle of CAs that client certificates are verified against (or an SDS
    /// validation context, whose name matchers add to `match_subject_alt_names`);
    /// without it no client certificate is asked for.
    #[serde(default)]
    pub client_ca: Option<crate::tls::PemSource>,
    /// Refuse clients without a certificate (else one is verified if sent).
    #[serde(default)]
    pub require_client_certificate: bool,
    /// A client certificate must have one of these names (none: any).
    #[serde(default)]
    pub match_subject_alt_names: Vec<crate::tls::SanMatch>,
    /// Also take plaintext clients on this port, told apart from TLS by the first bytes
    /// (as `mtls: permissive` does with the mesh identity): what an Envoy listener with a
    /// `tls` and a `raw_buffer` filter chain does.
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_session_cache() -> usize {
    4096
}

fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

/// The HTTP connection manager of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConnectionManager {
    /// Name of an entry in `route_configs`; exclusive with `virtual_hosts`.
    #[serde(default)]
    pub route_config: Option<String>,
    /// Inline virtual hosts; exclusive with `route_config`.
    #[serde(default)]
    pub virtual_hosts: Option<Vec<VirtualHost>>,
    /// Request headers (all of them, in KiB) larger than this get 431.
    #[serde(default = "default_max_request_headers_kb")]
    pub max_request_headers_kb: u32,
    /// Request bodies larger than this get 413 (buffered or streamed).
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// The most of a request body kept in memory so that a retry can send it again or a
    /// mirror can copy it, on routes that set no limit of their own (a retry's
    /// `max_buffered_body_bytes`, a mirror's `max_body_bytes`). Absent: 64 KiB. Envoy:
    /// the listener's `per_connection_buffer_limit_bytes`.
    #[serde(default)]
    pub request_body_buffer_bytes: Option<u32>,
    /// A client must send its whole request head within this time.
    #[serde(
        default = "default_request_headers_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_headers_timeout: Duration,
    /// A downstream connection with no request in flight is closed after this.
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub idle_timeout: Duration,
    /// A stream (request and response) with no bytes moving either way for this long is
    /// ended: 408 before the response head, reset after (Envoy's `stream_idle_timeout`).
    /// A route's `idle_timeout` overrides it. `0` disables it.
    #[serde(
        default = "default_stream_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub stream_idle_timeout: Duration,
    /// Whole-request timeout applied when a route sets none. `0` disables it.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// Generate `x-request-id` when a request has none.
    #[serde(default = "default_true")]
    pub generate_request_id: bool,
    /// The pseudonym added to `Via` (`1.1 sinew`). Empty disables `Via`.
    #[serde(default = "default_via")]
    pub via: String,
    /// The protocol upgrades (`Upgrade:` values such as `websocket`, any case) passed
    /// upstream, each on or off unless a route says otherwise; others are refused with
    /// 403. Absent: every upgrade passes. Envoy: `upgrade_configs`.
    #[serde(default)]
    pub upgrades: Option<BTreeMap<String, bool>>,
    /// What a request header whose name has an underscore gets: passed (`allow`), the
    /// request refused with 400 (`reject_request`), or the header removed
    /// (`drop_header`). Envoy: `common_http_protocol_options.headers_with_underscores_action`.
    #[serde(default)]
    pub headers_with_underscores: HeadersWithUnderscores,
    /// Treat the client as trusted: keep its `X-Forwarded-*` and append to them. When false,
    /// incoming `X-Forwarded-For` is replaced by the client's address.
    #[serde(default = "default_true")]
    pub trust_forwarded_headers: bool,
    #[serde(default)]
    pub local_rate_limit: Option<LocalRateLimit>,
    /// How the listener's, virtual hosts' and routes' `local_rate_limit`s combine.
    #[serde(default)]
    pub local_rate_limit_levels: LocalRateLimitLevels,
    #[serde(default)]
    pub global_rate_limit: Option<GlobalRateLimit>,
    /// Access logs for this listener's requests (Envoy: `access_log`); off when unset.
    #[serde(default)]
    pub access_log: Option<Vec<AccessLog>>,
    /// Trace context propagation, spans and OTLP export (Envoy: `tracing`); off when unset.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// What the upstream is told of the client certificate (`x-forwarded-client-cert`).
    #[serde(default)]
    pub forward_client_cert_details: crate::tls::ForwardClientCert,
    /// The fields of this hop's `x-forwarded-client-cert` entry besides `By` and `Hash`.
    #[serde(default)]
    pub set_current_client_cert_details: crate::tls::ClientCertDetails,
    /// JWT authentication of requests (Envoy: `jwt_authn`; Istio: RequestAuthentication);
    /// off when unset. See `jwt_authn.rs`.
    #[serde(default)]
    pub jwt_authn: Option<JwtAuthn>,
    /// Envoy's `normalize_path`: dot segments removed (RFC 3986 §5.2.4) and
    /// percent-encoded unreserved characters decoded before routing and authorization.
    #[serde(default)]
    pub normalize_path: bool,
    /// Envoy's `merge_slashes`: `//` in a path becomes `/`.
    #[serde(default)]
    pub merge_slashes: bool,
    /// Envoy's `path_with_escaped_slashes_action` for `%2F` and `%5C` in a path.
    #[serde(default)]
    pub path_with_escaped_slashes_action: crate::authz::EscapedSlashesAction,
    /// Envoy's `xff_num_trusted_hops`: the original client (authorization's `remote.ip`)
    /// is the address this many entries from the right of `X-Forwarded-For`; 0 (or too
    /// few entries) means the peer.
    #[serde(default)]
    pub xff_num_trusted_hops: u32,
    /// Response compression (Envoy's compressor filter); off when unset.
    #[serde(default)]
    pub compression: Option<crate::compression::Compression>,
    /// Request and response decompression (Envoy's decompressor filter); off when unset.
    #[serde(default)]
    pub decompression: Option<crate::compression::Decompression>,
    /// Envoy's `use_remote_address`, with Envoy's `X-Forwarded-For` handling in place of
    /// `trust_forwarded_headers`: `true` appends the peer (unless `skip_xff_append`) and
    /// the original client is the peer, or the `xff_num_trusted_hops`-th entry from the
    /// right; `false` leaves the header as it came and the original client is the entry
    /// `xff_num_trusted_hops + 1` from the right. Unset: Sinew's own handling.
    #[serde(default)]
    pub use_remote_address: Option<bool>,
    /// Envoy's `skip_xff_append` (with `use_remote_address: true`).
    #[serde(default)]
    pub skip_xff_append: bool,
    /// Whether the `cors` policies of virtual hosts and routes apply (the CORS filter is in
    /// the chain). Listeners mapped from Envoy set it from `http_filters`.
    #[serde(default = "default_true")]
    pub cors: bool,
    /// CSRF protection (Envoy's `csrf` filter); virtual hosts and routes may override it.
    /// Off when unset, and then their `csrf` does nothing either.
    #[serde(default)]
    pub csrf: Option<Csrf>,
    /// What the listener announces to HTTP/2 clients (Envoy's `http2_protocol_options`).
    #[serde(default)]
    pub http2: Http2Options,
    /// The scheme every request is forwarded with, whatever the client or the upstream
    /// connection: the upstream's `:scheme` (HTTP/2) and `X-Forwarded-Proto` (Envoy:
    /// `scheme_header_transformation.scheme_to_overwrite`). Unset: `:scheme` follows the
    /// upstream connection (TLS or not) and `X-Forwarded-Proto` the downstream one.
    #[serde(default)]
    pub scheme_to_overwrite: Option<Scheme>,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// HTTP/2 settings a listener announces; each unset one keeps Sinew's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Options {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond are refused. Default 200.
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much of each request body a client may send
    /// before the service reads it. Default 1 MiB.
    #[serde(default)]
    pub initial_stream_window_size: Option<u32>,
    /// The receive window of a connection, all its streams together. Default 1 MiB.
    #[serde(default)]
    pub initial_connection_window_size: Option<u32>,
}

/// HTTP/2's bounds for a window size (RFC 9113 §6.9.1): at least the protocol's initial
/// 65,535 bytes (Envoy's lower bound too), at most 2^31 − 1.
pub const HTTP2_WINDOW_RANGE: std::ops::RangeInclusive<u32> = 65_535..=0x7fff_ffff;

fn default_max_request_headers_kb() -> u32 {
    60
}
fn default_request_headers_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_stream_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_true() -> bool {
    true
}
fn default_via() -> String {
    "sinew".into()
}

/// A TCP proxy listener's target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProxy {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    /// A connection with no bytes either way for this long is closed.
    #[serde(
        default = "default_tcp_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub idle_timeout: Duration,
    /// Access logs for this listener's connections (Envoy: tcp_proxy `access_log`).
    #[serde(default)]
    pub access_log: Option<Vec<AccessLog>>,
}

fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// A named set of virtual hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

/// Routes chosen by the request's Host / `:authority`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    /// `example.com`, `*.example.com`, `api.*` or `*`. Exact beats suffix beats prefix beats `*`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub request_headers: HeaderActions,
    #[serde(default)]
    pub response_headers: HeaderActions,
    #[serde(default)]
    pub local_rate_limit: Option<LocalRateLimit>,
    /// The CORS policy of its routes (each route's own takes precedence field by field).
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Replaces the listener's CSRF policy for its routes.
    #[serde(default)]
    pub csrf: Option<Csrf>,
}

/// One route: a match and what to do with what matches. First match wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub match_: RouteMatch,
    // Exactly one action.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    #[serde(default)]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Only endpoints whose metadata has all these labels (e.g. `version: v2`).
    #[serde(default)]
    pub metadata_match: BTreeMap<String, String>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Whole-request timeout, including retries. `0` disables it.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub timeout: Option<Duration>,
    /// The listener's `stream_idle_timeout` for this route's streams (Envoy's route
    /// `idle_timeout`). `0` disables it.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// What ring hash and Maglev hash on; the first policy that yields a key is used.
    #[serde(default)]
    pub hash_policy: Vec<HashPolicy>,
    #[serde(default)]
    pub request_headers: HeaderActions,
    #[serde(default)]
    pub response_headers: HeaderActions,
    #[serde(default)]
    pub local_rate_limit: Option<LocalRateLimit>,
    #[serde(default)]
    pub fault: Option<FaultInjection>,
    #[serde(default)]
    pub request_mirror_policies: Vec<RequestMirrorPolicy>,
    /// Turns the listener's `upgrades` on or off for this route (a type the listener
    /// does not list stays refused). Envoy: `RouteAction.upgrade_configs`.
    #[serde(default)]
    pub upgrades: BTreeMap<String, bool>,
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Replaces the virtual host's or listener's CSRF policy.
    #[serde(default)]
    pub csrf: Option<Csrf>,
}

/// What a request must look like to take a route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix (the default, `/`, matches everything).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Exact path (without the query string).
    #[serde(default)]
    pub path: Option<String>,
    /// Regular expression that must match the whole path.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Any of these methods.
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    #[serde(default)]
    pub query: Vec<QueryMatch>,
    /// The route matches only this share of the requests that meet its other conditions,
    /// a percentage from 0 to 100 (Envoy: `runtime_fraction`); the others go on to the
    /// next route. One draw per request serves every route of its virtual host, as in
    /// Envoy. Unset: every request.
    #[serde(default)]
    pub percentage: Option<f64>,
}

/// A condition on one query parameter. With no condition the parameter must be present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

/// A cluster and its share of traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    #[serde(default)]
    pub metadata_match: BTreeMap<String, String>,
}

/// Answer with a redirect. Unset parts keep the request's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Replace the whole path.
    #[serde(default)]
    pub path: Option<String>,
    /// Replace the matched prefix.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_code")]
    pub code: u16,
}

fn default_redirect_code() -> u16 {
    301
}

/// Answer directly, without an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// Path and host rewriting before the request goes upstream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replace the matched prefix (needs `match.prefix`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Replace every match of `pattern` in the path with `substitution` (`$1` for groups).
    #[serde(default)]
    pub regex: Option<RegexRewrite>,
    /// Replace the Host / `:authority`.
    #[serde(default)]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// When and how to try again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Any of `5xx`, `gateway-error`, `connect-failure`, `reset`, `retriable-status-codes`.
    pub retry_on: Vec<String>,
    #[serde(default = "default_num_retries")]
    pub num_retries: u32,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    /// First backoff interval; each next one doubles, with full jitter, up to `max_backoff`.
    #[serde(
        default = "default_base_backoff",
        deserialize_with = "duration::deserialize"
    )]
    pub base_backoff: Duration,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub max_backoff: Option<Duration>,
    /// A request body is kept for replay only up to this size; larger ones are not retried.
    /// Absent: the listener's `request_body_buffer_bytes`.
    #[serde(default)]
    pub max_buffered_body_bytes: Option<u32>,
    /// `previous_hosts`: a retry avoids every endpoint this request has already tried,
    /// not only the last one. Envoy: `retry_host_predicate`.
    #[serde(default)]
    pub retry_host_predicate: Vec<String>,
    /// How many times a pick may be redrawn to satisfy the host predicate. Envoy:
    /// `host_selection_retry_max_attempts`.
    #[serde(default = "default_host_selection_attempts")]
    pub host_selection_retry_max_attempts: u32,
}

fn default_num_retries() -> u32 {
    1
}
/// How much of a request body a retry or a mirror keeps when neither the route nor the
/// listener says (`request_body_buffer_bytes`).
pub const DEFAULT_REQUEST_BODY_BUFFER_BYTES: u32 = 64 * 1024;

fn default_base_backoff() -> Duration {
    Duration::from_millis(25)
}
fn default_host_selection_attempts() -> u32 {
    3
}

/// An RPC listener: each call is routed by the same route tables as HTTP requests, read
/// as a request to the service (the virtual host's `domains`) at path `/<method>`, with
/// the call's headers (Bolt's header map) and `version` and `group` as headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcProxy {
    pub protocol: RpcProtocol,
    /// Name of an entry in `route_configs`; exclusive with `virtual_hosts`.
    #[serde(default)]
    pub route_config: Option<String>,
    #[serde(default)]
    pub virtual_hosts: Option<Vec<VirtualHost>>,
    /// A call's timeout when its route sets none. `0` disables it.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// A client connection with no call in flight is closed after this. `0` disables it.
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub idle_timeout: Duration,
    /// A token bucket for every call of the listener, applied before the virtual
    /// hosts' and routes' `local_rate_limit` (calls over it get the protocol's
    /// "overloaded" error).
    #[serde(default)]
    pub local_rate_limit: Option<LocalRateLimit>,
    /// One line per call, with the HTTP access log's formats and filters
    /// (`%REQ(:AUTHORITY)%` is the service, `%REQ(:PATH)%` `/<method>`).
    #[serde(default)]
    pub access_log: Option<Vec<AccessLog>>,
}

/// The RPC protocols an `rpc` listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcProtocol {
    /// SOFA Bolt v1 (SOFARPC).
    Bolt,
    /// Dubbo's `dubbo` protocol with Hessian 2.0 bodies.
    Dubbo,
}

/// One way to derive the hash key of a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub source_ip: bool,
}

/// Header edits. Names are case-insensitive.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderActions {
    /// Appended, keeping values already there.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Replacing values already there.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderActions {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// A group of upstream endpoints and how to reach them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// `static` (IP addresses), `dns` (names re-resolved every `dns_refresh`) or
    /// `logical_dns` (one name, its first address).
    #[serde(default, rename = "type")]
    pub discovery: Discovery,
    /// Which address families a name's answer contributes (Envoy's
    /// `dns_lookup_family`).
    #[serde(default)]
    pub dns_lookup_family: DnsLookupFamily,
    #[serde(
        default = "default_dns_refresh",
        deserialize_with = "duration::deserialize"
    )]
    pub dns_refresh: Duration,
    /// `ip:port` of the DNS servers a `dns` cluster asks (Envoy's cluster
    /// `dns_resolvers`); empty: the system resolver.
    #[serde(default)]
    pub dns_resolvers: Vec<String>,
    #[serde(default)]
    pub lb: LbPolicy,
    /// Ring hash only.
    #[serde(default = "default_min_ring")]
    pub ring_size: usize,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connect_timeout: Duration,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Mesh mTLS to the endpoints with the proxy's SVID (needs `mesh`); exclusive with
    /// `tls`.
    #[serde(default)]
    pub mtls: Option<crate::tls::ClusterMtls>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// Active health checks (Envoy `health_checks`); see `health.rs`.
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// Passive health checking (Envoy `outlier_detection`).
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Percent (Envoy `common_lb_config.healthy_panic_threshold`, default 50; 0 disables).
    #[serde(default = "crate::health::default_healthy_panic_threshold")]
    pub healthy_panic_threshold: f64,
    #[serde(default)]
    pub upstream_connection_options: UpstreamConnectionOptions,
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_min_ring() -> usize {
    1024
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    #[default]
    Static,
    /// Every address a name resolves to is an endpoint (Envoy's `STRICT_DNS`).
    Dns,
    /// The one endpoint is the first address its name resolves to, the answer of the
    /// moment (Envoy's `LOGICAL_DNS`: for a large DNS-balanced service, where every
    /// answer would be an endpoint too many).
    LogicalDns,
}

impl Discovery {
    /// Whether endpoints are host names that the cluster resolves.
    pub fn resolves_names(self) -> bool {
        matches!(self, Discovery::Dns | Discovery::LogicalDns)
    }
}

/// What happens to request headers whose names have underscores (which some servers,
/// such as CGI gateways, cannot tell from dashes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscores {
    #[default]
    Allow,
    RejectRequest,
    DropHeader,
}

/// Which addresses of a name's answer a DNS cluster uses, as Envoy's
/// `dns_lookup_family` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsLookupFamily {
    /// Every address, IPv4 and IPv6.
    #[default]
    All,
    /// The IPv6 addresses when the name has any, else the IPv4 ones (Envoy's default).
    Auto,
    V4Only,
    V6Only,
    /// The IPv4 addresses when the name has any, else the IPv6 ones.
    V4Preferred,
}

impl DnsLookupFamily {
    /// Keeps the addresses of `answer` this family takes, in the answer's order.
    pub fn pick(self, answer: &mut Vec<std::net::SocketAddr>) {
        let has_v4 = answer.iter().any(|a| a.is_ipv4());
        let has_v6 = answer.iter().any(|a| a.is_ipv6());
        let keep_v4 = match self {
            DnsLookupFamily::All => return,
            DnsLookupFamily::V4Only => true,
            DnsLookupFamily::V6Only => false,
            DnsLookupFamily::Auto => !has_v6,
            DnsLookupFamily::V4Preferred => has_v4,
        };
        answer.retain(|a| a.is_ipv4() == keep_v4);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    SmoothWeighted,
    Random,
    LeastRequest,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// The same protocol the downstream request came in with.
    SameAsDownstream,
}

/// One upstream address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port`, or `host:port` for `dns` clusters.
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Labels such as `version: v2`, matched by `metadata_match`.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// TLS to the upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Server name sent in SNI and verified in the certificate. Required unless
    /// `match_subject_alt_names` says who the upstream is, or `verify` is off; unset, no
    /// SNI is sent.
    #[serde(default)]
    pub sni: Option<String>,
    /// Trusted CA certificates: a PEM file, `{pem: TEXT}`, or an SDS validation context
    /// (whose name matchers add to `match_subject_alt_names`). Required unless `verify`
    /// is off.
    #[serde(default)]
    pub ca: Option<crate::tls::PemSource>,
    /// Whether the upstream's certificate is verified (against `ca`, then `sni` or
    /// `match_subject_alt_names`). `false` accepts any certificate, as Envoy does for an
    /// `UpstreamTlsContext` without a `validation_context`: the connection is encrypted
    /// but the upstream is not authenticated. A warning is logged when such a cluster is
    /// loaded.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// ALPN offered; defaults from `protocol` (h2 for http2, http/1.1 otherwise).
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// PEM client certificate chain presented to the upstream (with `key`), a file or
    /// `{pem: TEXT}`, or an SDS secret with the chain and its key.
    #[serde(default)]
    pub cert: Option<crate::tls::PemSource>,
    /// PEM private key of `cert`, a file or `{pem: TEXT}`.
    #[serde(default)]
    pub key: Option<crate::tls::KeySource>,
    /// The upstream's certificate must have one of these names; when set, they replace
    /// the host-name check against `sni` (as Envoy's `match_typed_subject_alt_names`).
    #[serde(default)]
    pub match_subject_alt_names: Vec<crate::tls::SanMatch>,
    /// The oldest and newest TLS versions offered (`TLSv1_2`, `TLSv1_3`; unset: both).
    #[serde(default)]
    pub min_version: Option<crate::tls::TlsVersion>,
    #[serde(default)]
    pub max_version: Option<crate::tls::TlsVersion>,
}

/// Per-endpoint connection pooling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle HTTP/1.1 connections kept per endpoint.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// An idle pooled connection is closed after this.
    #[serde(
        default = "default_pool_idle",
        deserialize_with = "duration::deserialize"
    )]
    pub idle_timeout: Duration,
    /// Streams per HTTP/2 connection, further capped by the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
    #[serde(default = "default_h2_streams")]
    pub http2_max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE announced on HTTP/2 connections to the endpoints:
    /// how much of each response body an endpoint may send before Sinew reads it. Unset:
    /// 512 KiB. Envoy: `http2_protocol_options.initial_stream_window_size`.
    #[serde(default)]
    pub http2_initial_stream_window_size: Option<u32>,
    /// The receive window of each upstream HTTP/2 connection, all its streams together.
    /// Unset: 5 MiB. Envoy: `http2_protocol_options.initial_connection_window_size`.
    #[serde(default)]
    pub http2_initial_connection_window_size: Option<u32>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: default_max_idle(),
            idle_timeout: default_pool_idle(),
            http2_max_concurrent_streams: default_h2_streams(),
            http2_initial_stream_window_size: None,
            http2_initial_connection_window_size: None,
        }
    }
}

fn default_max_idle() -> usize {
    64
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_h2_streams() -> u32 {
    100
}
