//! Metrics: what the proxy counts, with Prometheus names and labels, and their
//! exposition for the admin API's `/metrics` and `/stats`.
//!
//! Names follow Envoy's stats with a `sinew_` prefix and the dimensions Envoy puts in the
//! stat name as labels: Envoy's `cluster.a.upstream_rq_2xx` is
//! `sinew_cluster_upstream_rq_total{cluster="a",code_class="2xx"}`. docs/metrics.md lists
//! every one.
//!
//! Cost: prometheus-client's `Family` takes a lock to find a label set's metric, so every
//! handle a request needs is looked up once, when a config is compiled into its snapshot
//! ([`Metrics::listener`], [`Metrics::route_set`]), and kept there: the request path only
//! does relaxed atomic adds on handles it already holds. The families keep each metric by
//! its labels, so a reload that keeps a listener, route or cluster name gets the same
//! counters back. What can be read rather than counted (endpoints, circuit-breaker
//! overflows, health-check results, uptime) is read at scrape time ([`scrape`]).
//! With `stats_config: {stats_matcher: {reject_all: true}}` no handle is made: every
//! handle slot is `None` and the request path does no metric work.

mod histogram;
mod shard;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sinew_router::RouteTable;
use sinew_upstream::Cluster;

pub use histogram::{LatencyHistogram, BOUNDS_SECONDS};
pub use shard::ShardedCounter;

/// A metric's labels, in a fixed order per family.
pub type Labels = Vec<(&'static str, String)>;

/// Status classes, index `status / 100 - 1`.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// Every metric family the proxy keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    listener_cx: Family<Labels, ShardedCounter>,
    listener_cx_active: Family<Labels, Gauge>,
    listener_cx_destroy: Family<Labels, ShardedCounter>,
    listener_ssl_handshake: Family<Labels, ShardedCounter>,
    listener_ssl_error: Family<Labels, ShardedCounter>,
    listener_peer_cx: Family<Labels, ShardedCounter>,
    listener_peer_rq: Family<Labels, ShardedCounter>,
    listener_rq_idle_timeout: Family<Labels, ShardedCounter>,
    route_rq: Family<Labels, ShardedCounter>,
    cluster_rq: Family<Labels, ShardedCounter>,
    cluster_rq_time: Family<Labels, LatencyHistogram>,
    cluster_cx_connect_fail: Family<Labels, ShardedCounter>,
    cluster_rq_retry: Family<Labels, ShardedCounter>,
    cluster_rq_timeout: Family<Labels, ShardedCounter>,
    xds_updates: Family<Labels, Counter>,
    xds_apply_time: Family<Labels, LatencyHistogram>,
    xds_streams_connected: Gauge,
    xds_connections: Family<Labels, Counter>,
    sds_updates: Family<Labels, Counter>,
    jwt_authn: Family<Labels, ShardedCounter>,
    http_coding: Family<Labels, ShardedCounter>,
    jwks_fetch: Family<Labels, Counter>,
    authz_decisions: Family<Labels, ShardedCounter>,
    redis_commands: Family<Labels, ShardedCounter>,
    redis_errors: Family<Labels, ShardedCounter>,
    redis_latency: Family<Labels, LatencyHistogram>,
    rpc_calls: Family<Labels, ShardedCounter>,
    rpc_call_time: Family<Labels, LatencyHistogram>,
    pub reloads_succeeded: Counter,
    pub reloads_failed: Counter,
    pub config_version: Gauge,
    pub started: Instant,
}

impl Metrics {
    /// The families, registered; `scrape` adds what is read at scrape time.
    pub fn new(scrape: impl prometheus_client::collector::Collector) -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            listener_cx: Family::default(),
            listener_cx_active: Family::default(),
            listener_cx_destroy: Family::default(),
            listener_ssl_handshake: Family::default(),
            listener_ssl_error: Family::default(),
            listener_peer_cx: Family::default(),
            listener_peer_rq: Family::default(),
            listener_rq_idle_timeout: Family::default(),
            route_rq: Family::default(),
            cluster_rq: Family::default(),
            cluster_rq_time: Family::default(),
            cluster_cx_connect_fail: Family::default(),
            cluster_rq_retry: Family::default(),
            cluster_rq_timeout: Family::default(),
            xds_updates: Family::default(),
            xds_apply_time: Family::default(),
            xds_streams_connected: Gauge::default(),
            xds_connections: Family::default(),
            sds_updates: Family::default(),
            jwt_authn: Family::default(),
            http_coding: Family::default(),
            jwks_fetch: Family::default(),
            authz_decisions: Family::default(),
            redis_commands: Family::default(),
            redis_errors: Family::default(),
            redis_latency: Family::default(),
            rpc_calls: Family::default(),
            rpc_call_time: Family::default(),
            reloads_succeeded: Counter::default(),
            reloads_failed: Counter::default(),
            config_version: Gauge::default(),
            started: Instant::now(),
        };
        let r = &mut registry;
        r.register(
            "sinew_listener_downstream_cx",
            "Connections accepted",
            m.listener_cx.clone(),
        );
        r.register(
            "sinew_listener_downstream_cx_active",
            "Connections open now",
            m.listener_cx_active.clone(),
        );
        r.register(
            "sinew_listener_downstream_cx_destroy",
            "Connections closed",
            m.listener_cx_destroy.clone(),
        );
        r.register(
            "sinew_listener_ssl_handshake",
            "TLS handshakes completed",
            m.listener_ssl_handshake.clone(),
        );
        r.register(
            "sinew_listener_ssl_handshake_error",
            "TLS handshakes that failed or timed out",
            m.listener_ssl_error.clone(),
        );
        r.register(
            "sinew_listener_downstream_peer_cx",
            "Connections whose client proved a SPIFFE identity (mesh mTLS or a verified client certificate), by listener and the peer's SPIFFE ID",
            m.listener_peer_cx.clone(),
        );
        r.register(
            "sinew_listener_downstream_peer_rq",
            "Responses to requests whose client proved a SPIFFE identity, by listener, the peer's SPIFFE ID and status class",
            m.listener_peer_rq.clone(),
        );
        r.register(
            "sinew_listener_downstream_rq_idle_timeout",
            "Streams ended by stream_idle_timeout (or a route's idle_timeout): no bytes moved either way for that long",
            m.listener_rq_idle_timeout.clone(),
        );
        r.register(
            "sinew_redis_commands",
            "Redis commands a redis listener received, by listener and command class",
            m.redis_commands.clone(),
        );
        r.register(
            "sinew_redis_command_errors",
            "Redis commands answered with an error the proxy made (refused, malformed, shard unavailable or timed out), by listener and command class",
            m.redis_errors.clone(),
        );
        r.register(
            "sinew_redis_command_time_seconds",
            "Time from reading a Redis command to having its whole reply, by listener and command class",
            m.redis_latency.clone(),
        );
        r.register(
            "sinew_rpc_calls",
            "RPC calls an rpc listener received, by listener, protocol, who answered (upstream or proxy) and how the call ended",
            m.rpc_calls.clone(),
        );
        r.register(
            "sinew_rpc_call_time_seconds",
            "Time from reading an RPC call to having its answer (the upstream's response or the proxy's error), by listener and protocol",
            m.rpc_call_time.clone(),
        );
        r.register(
            "sinew_vhost_route_rq",
            "Requests by virtual host, route and response status class, counted at the response head",
            m.route_rq.clone(),
        );
        r.register(
            "sinew_cluster_upstream_rq",
            "Upstream responses by status class (each attempt, retries included)",
            m.cluster_rq.clone(),
        );
        r.register(
            "sinew_cluster_upstream_rq_time_seconds",
            "Time from sending an upstream request to its response head",
            m.cluster_rq_time.clone(),
        );
        r.register(
            "sinew_cluster_upstream_cx_connect_fail",
            "Upstream connection attempts that failed",
            m.cluster_cx_connect_fail.clone(),
        );
        r.register(
            "sinew_cluster_upstream_rq_retry",
            "Retries made",
            m.cluster_rq_retry.clone(),
        );
        r.register(
            "sinew_cluster_upstream_rq_timeout",
            "Requests that timed out (per-try or whole-request timeout)",
            m.cluster_rq_timeout.clone(),
        );
        r.register(
            "sinew_xds_updates",
            "xDS responses handled, by resource type and result (accepted and ACKed, or rejected and NACKed)",
            m.xds_updates.clone(),
        );
        r.register(
            "sinew_xds_update_apply_seconds",
            "Time from an xDS response's arrival to its config serving (mapping, checks and the swap), for accepted updates",
            m.xds_apply_time.clone(),
        );
        r.register(
            "sinew_xds_streams_connected",
            "xDS streams connected to a control plane now (one for ADS, one per type otherwise)",
            m.xds_streams_connected.clone(),
        );
        r.register(
            "sinew_xds_connections",
            "xDS connection events: connected, failed (could not connect), lost (a connected stream ended)",
            m.xds_connections.clone(),
        );
        r.register(
            "sinew_sds_updates",
            "Versions of SDS secrets received (on the xDS stream or from a file), by secret and result (accepted and in force, or rejected and the last good one kept)",
            m.sds_updates.clone(),
        );
        r.register(
            "sinew_jwt_authn",
            "JWT authentication outcomes by listener, provider and result (verified, refused, no_token_allowed)",
            m.jwt_authn.clone(),
        );
        r.register(
            "sinew_http_compression",
            "HTTP bodies compressed or decompressed by a listener's compression filters",
            m.http_coding.clone(),
        );
        r.register(
            "sinew_jwt_jwks_fetch",
            "Remote JWKS fetches by listener, provider and result (success, failure)",
            m.jwks_fetch.clone(),
        );
        r.register(
            "sinew_authz_decisions",
            "Authorization policy matches by listener, policy and action, with the result they led to (policy \"-\": denied because no ALLOW policy matched)",
            m.authz_decisions.clone(),
        );
        r.register(
            "sinew_server_reloads",
            "Config reloads applied",
            m.reloads_succeeded.clone(),
        );
        r.register(
            "sinew_server_reloads_failed",
            "Config reloads refused (the running config kept serving)",
            m.reloads_failed.clone(),
        );
        r.register(
            "sinew_server_config_version",
            "Version of the running config (1 at start, +1 per applied reload)",
            m.config_version.clone(),
        );
        registry.register_collector(Box::new(scrape));
        Metrics { registry, ..m }
    }

    /// Counts one xDS response of `kind` (`LDS`, `CDS`, ...), and times it when accepted.
    pub fn xds_update(&self, kind: &str, accepted: bool, took: Duration) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.xds_updates
            .get_or_create(&vec![
                ("type", kind.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
        if accepted {
            self.xds_apply_time
                .get_or_create(&vec![("type", kind.to_string())])
                .observe(took);
        }
    }

    /// Counts an xDS stream's connection event (`connected`, `failed`, `lost`) and keeps
    /// the number of connected streams.
    /// A version of the SDS secret `secret` was put in force or rejected.
    pub fn sds_update(&self, secret: &str, accepted: bool) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.sds_updates
            .get_or_create(&vec![
                ("secret", secret.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn xds_connection(&self, event: &str) {
        match event {
            "connected" => {
                self.xds_streams_connected.inc();
            }
            "lost" => {
                self.xds_streams_connected.dec();
            }
            _ => {}
        }
        self.xds_connections
            .get_or_create(&vec![("event", event.to_string())])
            .inc();
    }

    /// The counter of one JWT authentication outcome: `result` is `verified` or `refused`
    /// for a provider, and `no_token_allowed` or `refused` (no token) with `provider` "".
    pub fn jwt_authn(&self, listener: &str, provider: &str, result: &str) -> ShardedCounter {
        self.jwt_authn
            .get_or_create(&vec![
                ("listener", listener.to_string()),
                ("provider", provider.to_string()),
                ("result", result.to_string()),
            ])
            .clone()
    }

    /// The counter of bodies a listener's compression filters coded with `algorithm`:
    /// `action` is `compressed`, `decompressed_request` or `decompressed_response`.
    pub fn http_coding(&self, listener: &str, algorithm: &str, action: &str) -> ShardedCounter {
        self.http_coding
            .get_or_create(&vec![
                ("listener", listener.to_string()),
                ("algorithm", algorithm.to_string()),
                ("action", action.to_string()),
            ])
            .clone()
    }

    /// The success and failure counters of a provider's remote JWKS fetches.
    pub fn jwks_fetch(&self, listener: &str, provider: &str) -> (Counter, Counter) {
        let counter = |result: &str| {
            self.jwks_fetch
                .get_or_create(&vec![
                    ("listener", listener.to_string()),
                    ("provider", provider.to_string()),
                    ("result", result.to_string()),
                ])
                .clone()
        };
        (counter("success"), counter("failure"))
    }

    /// One listener's handles.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let l: Labels = vec![("listener", name.to_string())];
        Arc::new(ListenerMetrics {
            accepted: self.listener_cx.get_or_create(&l).clone(),
            active: self.listener_cx_active.get_or_create(&l).clone(),
            closed: self.listener_cx_destroy.get_or_create(&l).clone(),
            tls_handshakes: self.listener_ssl_handshake.get_or_create(&l).clone(),
            tls_errors: self.listener_ssl_error.get_or_create(&l).clone(),
            peers: self.listener_peer_cx.clone(),
            peer_requests: self.listener_peer_rq.clone(),
            name: name.to_string(),
            stream_idle_timeouts: self.listener_rq_idle_timeout.get_or_create(&l).clone(),
        })
    }

    /// The counter of one authorization policy's matches (`result`: `allowed`, `denied`
    /// or `audited`).
    pub fn authz_decisions(
        &self,
        listener: &str,
        policy: &str,
        action: &str,
        result: &str,
    ) -> ShardedCounter {
        let labels: Labels = vec![
            ("listener", listener.to_string()),
            ("policy", policy.to_string()),
            ("action", action.to_string()),
            ("result", result.to_string()),
        ];
        self.authz_decisions.get_or_create(&labels).clone()
    }

    /// A Redis listener's handles, per command class (`crate::redis` names the classes).
    pub fn redis(&self, listener: &str, classes: &[&str; 4]) -> Arc<RedisMetrics> {
        let labels = |class: &str| -> Labels {
            vec![
                ("listener", listener.to_string()),
                ("class", class.to_string()),
            ]
        };
        Arc::new(RedisMetrics {
            commands: classes.map(|c| self.redis_commands.get_or_create(&labels(c)).clone()),
            errors: classes.map(|c| self.redis_errors.get_or_create(&labels(c)).clone()),
            time: classes.map(|c| self.redis_latency.get_or_create(&labels(c)).clone()),
        })
    }

    /// An RPC listener's handles: one counter per (source, class) of `outcomes`
    /// (`crate::rpc` names them), and the call-time histogram.
    pub fn rpc<const N: usize>(
        &self,
        listener: &str,
        protocol: &str,
        outcomes: &[(&str, &str); N],
    ) -> Arc<RpcMetrics<N>> {
        let base = || -> Labels {
            vec![
                ("listener", listener.to_string()),
                ("protocol", protocol.to_string()),
            ]
        };
        Arc::new(RpcMetrics {
            calls: outcomes.map(|(source, class)| {
                let mut labels = base();
                labels.push(("source", source.to_string()));
                labels.push(("class", class.to_string()));
                self.rpc_calls.get_or_create(&labels).clone()
            }),
            time: self.rpc_call_time.get_or_create(&base()).clone(),
        })
    }

    /// One cluster's per-request handles.
    pub fn cluster(&self, name: &str) -> Arc<ClusterMetrics> {
        let l: Labels = vec![("cluster", name.to_string())];
        Arc::new(ClusterMetrics {
            responses: CODE_CLASSES.map(|class| {
                let labels: Labels = vec![
                    ("cluster", name.to_string()),
                    ("code_class", class.to_string()),
                ];
                self.cluster_rq.get_or_create(&labels).clone()
            }),
            time: self.cluster_rq_time.get_or_create(&l).clone(),
            connect_failures: self.cluster_cx_connect_fail.get_or_create(&l).clone(),
            retries: self.cluster_rq_retry.get_or_create(&l).clone(),
            timeouts: self.cluster_rq_timeout.get_or_create(&l).clone(),
        })
    }

    /// The handles of a route table's routes (by `Route::id`) and targets (by `Target`).
    pub fn route_set(
        &self,
        table: &RouteTable,
        targets: &[(Arc<Cluster>, usize)],
        clusters: &mut HashMap<Arc<str>, Arc<ClusterMetrics>>,
    ) -> RouteSetMetrics {
        let routes = table
            .virtual_hosts()
            .iter()
            .flat_map(|vh| vh.routes().iter().map(move |r| (vh, r)))
            .map(|(vh, r)| RouteMetrics {
                responses: CODE_CLASSES.map(|class| {
                    let labels: Labels = vec![
                        ("virtual_host", vh.name.to_string()),
                        ("route", r.name.to_string()),
                        ("code_class", class.to_string()),
                    ];
                    self.route_rq.get_or_create(&labels).clone()
                }),
            })
            .collect();
        let targets = targets
            .iter()
            .map(|(c, _)| {
                clusters
                    .entry(c.name.clone())
                    .or_insert_with(|| self.cluster(&c.name))
                    .clone()
            })
            .collect();
        RouteSetMetrics { routes, targets }
    }

    /// Prometheus text format 0.0.4, or OpenMetrics 1.0 when `openmetrics`.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; a collector's error would only cut it short.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if openmetrics {
            out
        } else {
            openmetrics_to_prometheus_text(&out)
        }
    }
}

/// prometheus-client writes OpenMetrics. The 0.0.4 text format differs in what matters
/// here in three ways: a counter's TYPE and HELP name the sample (`x_total`), not the
/// family (`x`); there is no `# EOF`; and `# UNIT` does not exist.
fn openmetrics_to_prometheus_text(om: &str) -> String {
    let mut counters: std::collections::HashSet<&str> = Default::default();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name);
            }
        }
    }
    let mut out = String::with_capacity(om.len() + counters.len() * 12);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# TYPE ")
            .map(|r| ("# TYPE ", r))
            .or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(kind);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A listener's counters; the connection path holds them through its config.
#[derive(Debug)]
pub struct ListenerMetrics {
    pub accepted: ShardedCounter,
    pub active: Gauge,
    pub closed: ShardedCounter,
    pub tls_handshakes: ShardedCounter,
    pub tls_errors: ShardedCounter,
    pub stream_idle_timeouts: ShardedCounter,
    /// Connections by the peer's SPIFFE ID: one label set per workload that calls.
    peers: Family<Labels, ShardedCounter>,
    /// Responses by the peer's SPIFFE ID and status class.
    peer_requests: Family<Labels, ShardedCounter>,
    name: String,
}

/// One peer's response counters on one listener, by status class: looked up once per
/// connection, so each request only adds.
#[derive(Debug)]
pub struct PeerRequestMetrics {
    responses: [ShardedCounter; 5],
}

impl PeerRequestMetrics {
    #[inline]
    pub fn count(&self, status: StatusCode) {
        self.responses[class_index(status)].inc();
    }
}

impl ListenerMetrics {
    /// Counts a connection whose client proved `identity`, under its SPIFFE ID (once per
    /// connection, after the handshake; nothing for a certificate without one).
    pub fn peer_connection(&self, identity: &sinew_identity::PeerIdentity) {
        if let Some(spiffe) = &identity.spiffe {
            let labels: Labels = vec![
                ("listener", self.name.clone()),
                ("peer_spiffe_id", spiffe.as_str().to_string()),
            ];
            self.peers.get_or_create(&labels).inc();
        }
    }

    /// The response counters for requests from `identity` (None for a certificate
    /// without a SPIFFE ID); called once per connection.
    pub fn peer_requests(
        &self,
        identity: &sinew_identity::PeerIdentity,
    ) -> Option<Arc<PeerRequestMetrics>> {
        let spiffe = identity.spiffe.as_ref()?;
        let responses = CODE_CLASSES.map(|class| {
            let labels: Labels = vec![
                ("listener", self.name.clone()),
                ("peer_spiffe_id", spiffe.as_str().to_string()),
                ("code_class", class.to_string()),
            ];
            self.peer_requests.get_or_create(&labels).clone()
        });
        Some(Arc::new(PeerRequestMetrics { responses }))
    }

    /// Counts a connection open until the returned guard drops (also when the
    /// connection's task is cut at a drain deadline).
    pub fn connection(self: &Arc<Self>) -> ConnectionCount {
        self.accepted.inc();
        self.active.inc();
        ConnectionCount(self.clone())
    }
}

/// Counts one connection as active until dropped.
pub struct ConnectionCount(Arc<ListenerMetrics>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.active.dec();
        self.0.closed.inc();
    }
}

/// A route's responses by status class.
#[derive(Debug)]
pub struct RouteMetrics {
    responses: [ShardedCounter; 5],
}

impl RouteMetrics {
    #[inline]
    pub fn count(&self, status: StatusCode) {
        self.responses[class_index(status)].inc();
    }
}

/// A Redis listener's counters, indexed by command class.
#[derive(Debug)]
pub struct RedisMetrics {
    pub commands: [ShardedCounter; 4],
    pub errors: [ShardedCounter; 4],
    pub time: [LatencyHistogram; 4],
}

/// How many ways an RPC call can end (`crate::rpc` names them).
pub const RPC_OUTCOMES: usize = 11;

/// An RPC listener's handles, one counter per call outcome.
pub type RpcCallMetrics = RpcMetrics<RPC_OUTCOMES>;

/// An RPC listener's counters, indexed by call outcome.
#[derive(Debug)]
pub struct RpcMetrics<const N: usize> {
    pub calls: [ShardedCounter; N],
    pub time: LatencyHistogram,
}

/// A cluster's per-request counters.
#[derive(Debug)]
pub struct ClusterMetrics {
    responses: [ShardedCounter; 5],
    time: LatencyHistogram,
    pub connect_failures: ShardedCounter,
    pub retries: ShardedCounter,
    pub timeouts: ShardedCounter,
}

impl ClusterMetrics {
    /// An upstream response head arrived `took` after the request went out.
    #[inline]
    pub fn response(&self, status: StatusCode, took: Duration) {
        self.responses[class_index(status)].inc();
        self.time.observe(took);
    }
}

/// Handles for one route table: per route (by `Route::id`) and per target.
pub struct RouteSetMetrics {
    routes: Box<[RouteMetrics]>,
    targets: Box<[Arc<ClusterMetrics>]>,
}

impl RouteSetMetrics {
    #[inline]
    pub fn route(&self, id: usize) -> Option<&RouteMetrics> {
        self.routes.get(id)
    }

    #[inline]
    pub fn target(&self, t: sinew_router::Target) -> Option<&Arc<ClusterMetrics>> {
        self.targets.get(t.0)
    }
}

/// Resident memory in bytes: `VmRSS` of `/proc/self/status` (kB). `/proc/self/statm`
/// counts the same in pages, but its page size is not in the file and needs libc to ask.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_sample_in_the_prometheus_text_format() {
        let om = "# HELP a_rq Requests.\n# TYPE a_rq counter\na_rq_total{x=\"1\"} 2\n\
                  # HELP b Bytes.\n# TYPE b gauge\n# UNIT b bytes\nb 3\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(om),
            "# HELP a_rq_total Requests.\n# TYPE a_rq_total counter\na_rq_total{x=\"1\"} 2\n\
             # HELP b Bytes.\n# TYPE b gauge\nb 3\n"
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(class_index(StatusCode::OK), 1);
        assert_eq!(class_index(StatusCode::SWITCHING_PROTOCOLS), 0);
        assert_eq!(class_index(StatusCode::SERVICE_UNAVAILABLE), 4);
    }
}
