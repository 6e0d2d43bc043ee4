//! Compiling a config into the immutable snapshot the data plane runs on.
//!
//! Compiling is where a config is proven whole: regexes compile, certificates load,
//! every route resolves to a cluster and subset. A config that fails here never serves
//! a request; the snapshot that was running keeps running.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use sinew_balance::{Balancer, Policy};
use sinew_config::model::{self, Listener};
use sinew_config::{ConfigError, Diagnostics, LoadedConfig};
use sinew_router::{RouteTable, Target};
use sinew_upstream::{Cluster, ClusterBuilder};

use crate::filters::rate_limit::HttpRateLimits;
use crate::metrics::Metrics;
use crate::net::connection_rate_limit::ConnectionRateLimit;

use super::snapshot::*;
use crate::filters::access_log::AccessLogs;
use crate::filters::chain::FilterChain;
use crate::filters::trace::Tracer;

/// Compiles `loaded` into a snapshot. Clusters named as in `previous` keep their
/// endpoints' pooled connections.
/// `metrics` is where handles come from; none are made when it is None or the config
/// turns metrics off.
pub fn compile(
    loaded: &LoadedConfig,
    previous: Option<&Snapshot>,
    version: u64,
    metrics: Option<&Metrics>,
) -> Result<Snapshot, Diagnostics> {
    let config = &loaded.config;
    let metrics = metrics.filter(|_| model::StatsConfig::enabled(&config.stats_config));
    let mut errors: Vec<ConfigError> = Vec::new();

    let mesh = match super::tls::mesh_identity(config, previous) {
        Ok(mesh) => mesh,
        Err(e) => return Err(loaded.diagnostics(vec![e])),
    };
    let mut builders: Vec<ClusterBuilder> = config
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| ClusterBuilder::new(c, format!("clusters[{i}]")).with_mesh(mesh.clone()))
        .collect();
    let cluster_index: HashMap<String, usize> = builders
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name().to_string(), i))
        .collect();

    // Route tables, with targets as (cluster index, subset) until clusters are built.
    let compile_table = |vhosts: &[model::VirtualHost],
                         path: &str,
                         builders: &mut Vec<ClusterBuilder>| {
        let mut targets: Vec<(usize, usize)> = Vec::new();
        let mut resolve = |name: &str, selector: &std::collections::BTreeMap<String, String>| {
            let ci = cluster_index[name];
            let si = builders[ci].subset(selector);
            let t = (ci, si);
            Target(match targets.iter().position(|x| *x == t) {
                Some(i) => i,
                None => {
                    targets.push(t);
                    targets.len() - 1
                }
            })
        };
        let table = RouteTable::compile(vhosts, path, &mut resolve);
        table.map(|table| (table, targets))
    };
    let mut named_tables = HashMap::new();
    for (i, rc) in config.route_configs.iter().enumerate() {
        match compile_table(
            &rc.virtual_hosts,
            &format!("route_configs[{i}].virtual_hosts"),
            &mut builders,
        ) {
            Ok(t) => {
                named_tables.insert(rc.name.clone(), t);
            }
            Err(e) => errors.extend(e),
        }
    }
    // Each body that serves connections: a listener's own, and each of its chains.
    let bodies = sinew_config::chains::bodies(&config.listeners);
    let mut listener_tables = Vec::new();
    for body in &bodies {
        let (inline, section) = inline_virtual_hosts(&body.listener);
        match inline {
            Some(vhosts) => {
                match compile_table(
                    vhosts,
                    &format!("{}.{section}.virtual_hosts", body.path),
                    &mut builders,
                ) {
                    Ok(t) => listener_tables.push(Some(t)),
                    Err(e) => {
                        errors.extend(e);
                        listener_tables.push(None);
                    }
                }
            }
            None => listener_tables.push(None),
        }
    }

    let previous_clusters: HashMap<&str, &Arc<Cluster>> = previous
        .map(|p| p.clusters.iter().map(|c| (&*c.name, c)).collect())
        .unwrap_or_default();
    let mut clusters = Vec::with_capacity(builders.len());
    for b in builders {
        let prev = previous_clusters.get(b.name()).map(|c| c.as_ref());
        match b.build(prev) {
            Ok(c) => clusters.push(c),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(loaded.diagnostics(errors));
    }

    let mut cluster_metrics = HashMap::new();
    let mut resolve_set = |(table, targets): (RouteTable, Vec<(usize, usize)>)| {
        let targets: Vec<(Arc<Cluster>, usize)> = targets
            .into_iter()
            .map(|(c, s)| (clusters[c].clone(), s))
            .collect();
        let metrics = metrics.map(|m| m.route_set(&table, &targets, &mut cluster_metrics));
        Arc::new(RouteSet {
            table,
            targets,
            metrics,
        })
    };
    let named_sets: HashMap<String, Arc<RouteSet>> = named_tables
        .into_iter()
        .map(|(name, t)| (name, resolve_set(t)))
        .collect();

    let mut compiled: Vec<(usize, Option<usize>, ListenerConfig)> = Vec::new();
    for (body, inline) in bodies.iter().zip(listener_tables) {
        let (path, l) = (body.path.clone(), &*body.listener);
        let before = previous
            .and_then(|p| p.listeners.iter().find(|x| *x.name == *l.name))
            .and_then(|x| x.body(body.chain));
        let tls_before = before.and_then(|b| b.tls.as_ref());
        let tls = match super::tls::downstream_tls(l, mesh.as_ref(), tls_before) {
            Ok(tls) => tls,
            Err((field, message)) => {
                errors.push(ConfigError::new(format!("{path}.{field}"), message));
                continue;
            }
        };
        let authorization = match compile_authorization(l, &path, metrics, true) {
            Ok(a) => a,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        let kind = if let Some(http) = &l.http {
            let routes = match (inline, &http.route_config) {
                (Some(t), _) => resolve_set(t),
                (None, Some(name)) => named_sets[name].clone(),
                (None, None) => unreachable!("validation requires route_config or virtual_hosts"),
            };
            let vhosts = match &http.virtual_hosts {
                Some(v) => &v[..],
                None => config
                    .route_configs
                    .iter()
                    .find(|rc| Some(&rc.name) == http.route_config.as_ref())
                    .map_or(&[][..], |rc| &rc.virtual_hosts[..]),
            };
            let jwt_before = before.and_then(|b| match &b.kind {
                ListenerKind::Http(m) => m.filters.jwt_authn().map(|j| &**j),
                ListenerKind::Tcp(_)
                | ListenerKind::Rpc(_)
                | ListenerKind::Redis(_)
                | ListenerKind::Closed => None,
            });
            let jwt = match &http.jwt_authn {
                Some(j) => {
                    let jp = format!("{path}.http.jwt_authn");
                    match crate::filters::jwt_authn::compile(j, &jp, &l.name, jwt_before, metrics) {
                        Ok(jwt) => Some(jwt),
                        Err(e) => {
                            errors.extend(e);
                            continue;
                        }
                    }
                }
                None => None,
            };
            let before = before.and_then(|b| match &b.kind {
                ListenerKind::Http(m) => m.filters.rate_limits().map(|r| &**r),
                ListenerKind::Tcp(_)
                | ListenerKind::Rpc(_)
                | ListenerKind::Redis(_)
                | ListenerKind::Closed => None,
            });
            let rate_limits = crate::filters::rate_limit::compile(http, vhosts, before);
            let vp = vhosts_path(config, &path, http);
            let (cors, csrf) = match origin_filters(http, &path, vhosts, &vp) {
                Ok(filters) => filters,
                Err(e) => {
                    // A route configuration shared by listeners reports its errors once.
                    for e in e {
                        if !errors.contains(&e) {
                            errors.push(e);
                        }
                    }
                    continue;
                }
            };
            let local_uri_san = tls.as_ref().and_then(|t| t.local_uri_san.clone());
            let mut manager = http_manager(http, routes, rate_limits, l, local_uri_san, config);
            manager.filters = manager.filters.with_jwt_authn(jwt);
            manager.filters = manager.filters.with_authorization(authorization);
            let compressor = http.compression.as_ref().map(|c| {
                Arc::new(crate::filters::compression::Compressor::compile(
                    c, &l.name, metrics,
                ))
            });
            let decompressor = http.decompression.as_ref().map(|d| {
                Arc::new(crate::filters::compression::Decompressor::compile(
                    d, &l.name, metrics,
                ))
            });
            manager.filters = manager.filters.with_compression(compressor, decompressor);
            manager.filters = manager.filters.with_origin_filters(cors, csrf);
            ListenerKind::Http(Arc::new(manager))
        } else if let Some(tcp) = &l.tcp {
            let (names, weights): (Vec<&str>, Vec<u32>) =
                match (&tcp.cluster, &tcp.weighted_clusters) {
                    (Some(c), _) => (vec![c.as_str()], vec![1]),
                    (None, Some(w)) => w.iter().map(|w| (w.cluster.as_str(), w.weight)).unzip(),
                    (None, None) => {
                        unreachable!("validation requires cluster or weighted_clusters")
                    }
                };
            ListenerKind::Tcp(Arc::new(TcpProxy {
                clusters: names
                    .iter()
                    .map(|n| clusters[cluster_index[*n]].clone())
                    .collect(),
                balancer: Balancer::new(&Policy::Random, &weights),
                idle_timeout: tcp.idle_timeout,
                access_log: AccessLogs::compile(tcp.access_log.as_deref()),
                authorization,
            }))
        } else if let Some(rpc) = &l.rpc {
            let routes = match (inline, &rpc.route_config) {
                (Some(t), _) => resolve_set(t),
                (None, Some(name)) => named_sets[name].clone(),
                (None, None) => unreachable!("validation requires route_config or virtual_hosts"),
            };
            let vhosts = match &rpc.virtual_hosts {
                Some(v) => &v[..],
                None => config
                    .route_configs
                    .iter()
                    .find(|rc| Some(&rc.name) == rpc.route_config.as_ref())
                    .map_or(&[][..], |rc| &rc.virtual_hosts[..]),
            };
            let limits_before = before.and_then(|b| match &b.kind {
                ListenerKind::Rpc(r) => r.rate_limits.as_deref(),
                ListenerKind::Http(_)
                | ListenerKind::Tcp(_)
                | ListenerKind::Redis(_)
                | ListenerKind::Closed => None,
            });
            let codec = crate::rpc::codec(rpc.protocol);
            ListenerKind::Rpc(Arc::new(RpcProxy {
                codec,
                routes,
                request_timeout: rpc.request_timeout,
                idle_timeout: rpc.idle_timeout,
                authorize_calls: authorization.as_ref().is_some_and(|a| a.reads_requests()),
                authorization,
                rate_limits: crate::filters::rate_limit::compile_rpc(rpc, vhosts, limits_before),
                access_log: AccessLogs::compile(rpc.access_log.as_deref()),
                metrics: metrics.map(|m| crate::rpc::call_metrics(m, &l.name, codec.name())),
                listener: l.name.as_str().into(),
            }))
        } else if let Some(redis) = &l.redis {
            let redis_metrics = metrics.map(|m| m.redis(&l.name, &crate::redis::METRIC_CLASSES));
            ListenerKind::Redis(Arc::new(crate::redis::RedisProxy::compile(
                redis,
                |name| clusters[cluster_index[name]].clone(),
                authorization,
                redis_metrics,
            )))
        } else {
            unreachable!("validation requires http, tcp, rpc or redis");
        };
        compiled.push((body.index, body.chain, shell(l, before, metrics, tls, kind)));
    }
    if !errors.is_empty() {
        return Err(loaded.diagnostics(errors));
    }
    let mut compiled = compiled.into_iter().peekable();
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for (i, l) in config.listeners.iter().enumerate() {
        let mut own = None;
        let mut chains = Vec::with_capacity(l.chains.len());
        while let Some((_, chain, body)) = compiled.next_if(|(index, ..)| *index == i) {
            match chain {
                None => own = Some(body),
                Some(j) => chains.push(super::snapshot::Chain {
                    matcher: crate::net::chains::ChainMatcher::compile(&l.chains[j].matcher),
                    config: body,
                }),
            }
        }
        let mut own = own.unwrap_or_else(|| {
            let before = previous.and_then(|p| p.listeners.iter().find(|x| *x.name == *l.name));
            shell(l, before.map(|b| &**b), metrics, None, ListenerKind::Closed)
        });
        own.chains_read_hello = crate::net::chains::reads_hello(&chains);
        own.chains_sniff = crate::net::chains::sniffs(&chains);
        own.chains = chains.into();
        listeners.push(Arc::new(own));
    }
    Ok(Snapshot {
        version,
        listeners,
        clusters,
        drain_timeout: config.drain_timeout,
        metrics_enabled: metrics.is_some(),
        mesh: config.mesh.clone().zip(mesh),
    })
}

/// The virtual hosts a listener body writes inline (HTTP or RPC), and which section
/// holds them.
fn inline_virtual_hosts(l: &Listener) -> (Option<&Vec<model::VirtualHost>>, &'static str) {
    match (&l.http, &l.rpc) {
        (Some(h), _) => (h.virtual_hosts.as_ref(), "http"),
        (None, Some(r)) => (r.virtual_hosts.as_ref(), "rpc"),
        (None, None) => (None, "http"),
    }
}

/// A listener body's compiled config around its `tls` and `kind`: the listener-wide
/// settings come from `l` (a chain's are unset: its listener's apply).
fn shell(
    l: &model::Listener,
    before: Option<&ListenerConfig>,
    metrics: Option<&Metrics>,
    tls: Option<super::snapshot::DownstreamTls>,
    kind: ListenerKind,
) -> ListenerConfig {
    ListenerConfig {
        name: l.name.as_str().into(),
        address_text: l.address.clone(),
        address: l.address.parse().expect("validated"),
        max_connections: l.max_connections,
        connection_rate_limit: l.connection_rate_limit.as_ref().map(|c| {
            ConnectionRateLimit::compile(c, before.and_then(|b| b.connection_rate_limit.as_ref()))
        }),
        tcp_keepalive: l
            .tcp_keepalive
            .as_ref()
            .map(sinew_upstream::socket::keepalive),
        tls,
        kind,
        metrics: metrics.map(|m| m.listener(&l.name)),
        chains: Arc::new([]),
        inspect_timeout: l.inspect_timeout,
        chains_read_hello: false,
        chains_sniff: false,
    }
}

/// The checks compiling makes — regexes, header values, certificates — run on a config
/// that failed validation, so one pass reports every error. Routes resolve to a stand-in
/// target here: references were already checked (and found wanting) by validation.
pub fn lint(loaded: &LoadedConfig) -> Vec<ConfigError> {
    let config = &loaded.config;
    let mut errors = Vec::new();
    let mesh = super::tls::mesh_identity(config, None).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let mut stand_in = |_: &str, _: &std::collections::BTreeMap<String, String>| Target(0);
    for (i, rc) in config.route_configs.iter().enumerate() {
        let path = format!("route_configs[{i}].virtual_hosts");
        if let Err(e) = RouteTable::compile(&rc.virtual_hosts, &path, &mut stand_in) {
            errors.extend(e);
        }
    }
    for body in sinew_config::chains::bodies(&config.listeners) {
        let (p, l) = (&body.path, &*body.listener);
        if let (Some(vhosts), section) = inline_virtual_hosts(l) {
            let path = format!("{p}.{section}.virtual_hosts");
            if let Err(e) = RouteTable::compile(vhosts, &path, &mut stand_in) {
                errors.extend(e);
            }
        }
        if let Some(j) = l.http.as_ref().and_then(|h| h.jwt_authn.as_ref()) {
            let path = format!("{p}.http.jwt_authn");
            errors.extend(crate::filters::jwt_authn::lint(j, &path));
        }
        if let Some(http) = &l.http {
            // Origin regexes; a route configuration's are checked with its first listener.
            let path = p.clone();
            let vhosts = match &http.virtual_hosts {
                Some(v) => &v[..],
                None => config
                    .route_configs
                    .iter()
                    .find(|rc| Some(&rc.name) == http.route_config.as_ref())
                    .map_or(&[][..], |rc| &rc.virtual_hosts[..]),
            };
            if let Err(e) = origin_filters(http, &path, vhosts, &vhosts_path(config, &path, http)) {
                let new: Vec<ConfigError> = e.into_iter().filter(|e| !errors.contains(e)).collect();
                errors.extend(new);
            }
        }
        // Validation has reported bad values already; what only compiling finds is a
        // list file that cannot be read or has a bad line.
        if let Err(e) = compile_authorization(l, p, None, false) {
            errors.extend(e.into_iter().filter(|e| e.path.ends_with(".from_file")));
        }
        if let Err((field, message)) = super::tls::downstream_tls(l, mesh.as_ref(), None) {
            errors.push(ConfigError::new(format!("{p}.{field}"), message));
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        let builder = ClusterBuilder::new(c, format!("clusters[{i}]")).with_mesh(mesh.clone());
        if let Err(e) = builder.build(None) {
            errors.extend(e);
        }
    }
    errors
}

/// A listener's authorization policies (list files read, and watched when `watch`).
fn compile_authorization(
    l: &Listener,
    path: &str,
    metrics: Option<&Metrics>,
    watch: bool,
) -> Result<Option<Arc<crate::filters::authz::Authorization>>, Vec<ConfigError>> {
    let Some(config) = &l.authorization else {
        return Ok(None);
    };
    let hops = l.http.as_ref().map_or(0, client_hops);
    crate::filters::authz::Authorization::compile(
        config,
        &format!("{path}.authorization"),
        &l.name,
        hops,
        metrics,
        watch,
    )
}

/// Where a listener's original client is in `X-Forwarded-For`, counted from the right
/// (0: the peer). Envoy: with `use_remote_address`, the `xff_num_trusted_hops`-th entry;
/// without it, the one after those (the last entry when no hop is trusted).
fn client_hops(http: &model::HttpConnectionManager) -> u32 {
    match http.use_remote_address {
        Some(false) => http.xff_num_trusted_hops.saturating_add(1),
        Some(true) | None => http.xff_num_trusted_hops,
    }
}

/// The CORS and CSRF filters of a listener whose route table is `vhosts` (at `vhosts_path`).
/// A listener's CORS and CSRF filters, when it has them.
type OriginFilters = (
    Option<Arc<crate::filters::cors::Cors>>,
    Option<Arc<crate::filters::csrf::Csrf>>,
);

fn origin_filters(
    http: &model::HttpConnectionManager,
    path: &str,
    vhosts: &[model::VirtualHost],
    vhosts_path: &str,
) -> Result<OriginFilters, Vec<ConfigError>> {
    let cors = if http.cors {
        crate::filters::cors::Cors::compile(vhosts, vhosts_path)
    } else {
        Ok(None)
    };
    let csrf = crate::filters::csrf::Csrf::compile(
        http.csrf.as_ref(),
        &format!("{path}.http.csrf"),
        vhosts,
        vhosts_path,
    );
    match (cors, csrf) {
        (Ok(cors), Ok(csrf)) => Ok((cors, csrf)),
        (cors, csrf) => Err(cors
            .err()
            .into_iter()
            .flatten()
            .chain(csrf.err().into_iter().flatten())
            .collect()),
    }
}

/// Where a listener's virtual hosts are in the config, for error paths.
fn vhosts_path(config: &model::Config, path: &str, http: &model::HttpConnectionManager) -> String {
    match &http.virtual_hosts {
        Some(_) => format!("{path}.http.virtual_hosts"),
        None => config
            .route_configs
            .iter()
            .position(|rc| Some(&rc.name) == http.route_config.as_ref())
            .map_or_else(
                || format!("{path}.http.route_config"),
                |k| format!("route_configs[{k}].virtual_hosts"),
            ),
    }
}

fn http_manager(
    http: &model::HttpConnectionManager,
    routes: Arc<RouteSet>,
    rate_limits: Option<Arc<HttpRateLimits>>,
    l: &Listener,
    local_uri_san: Option<String>,
    config: &model::Config,
) -> HttpManager {
    let via = |version: &str| {
        (!http.via.is_empty())
            .then(|| HeaderValue::from_str(&format!("{version} {}", http.via)).ok())
            .flatten()
    };
    let tracer = http.tracing.as_ref().and_then(|t| {
        // Validation has checked the endpoint; this cannot fail on a validated config.
        // An exporter naming a cluster sends to its first endpoint (validation has
        // checked that the cluster exists).
        let collector = t.exporter_cluster().and_then(|(_, name)| {
            let cluster = config.clusters.iter().find(|c| c.name == name)?;
            cluster.endpoints.first().map(|e| e.address.as_str())
        });
        Tracer::compile(t, collector)
            .map_err(|e| tracing::error!(listener = %l.name, "tracing is off: {e}"))
            .ok()
    });
    HttpManager {
        routes,
        max_request_headers_bytes: http.max_request_headers_kb as usize * 1024,
        max_request_body_bytes: http.max_request_body_bytes,
        request_body_buffer_bytes: http
            .request_body_buffer_bytes
            .unwrap_or(model::DEFAULT_REQUEST_BODY_BUFFER_BYTES)
            as usize,
        request_headers_timeout: http.request_headers_timeout,
        idle_timeout: http.idle_timeout,
        stream_idle_timeout: http.stream_idle_timeout,
        request_timeout: http.request_timeout,
        generate_request_id: http.generate_request_id,
        forwarding: crate::filters::router::headers::Forwarding::of(http),
        client_hops: client_hops(http),
        tls: l.tls.is_some() || l.mtls.is_some(),
        via_http1: via("1.1"),
        via_http2: via("2"),
        http1_settings: http1_settings(
            http.max_request_headers_kb as usize * 1024,
            http.request_headers_timeout,
            http.idle_timeout,
        ),
        http2: http2_settings(http.max_request_headers_kb as usize * 1024, &http.http2),
        forward_client_cert: http.forward_client_cert_details,
        client_cert_details: http.set_current_client_cert_details,
        local_uri_san,
        filters: FilterChain::new(
            tracer,
            AccessLogs::compile(http.access_log.as_deref()),
            http.generate_request_id,
            rate_limits,
        ),
        path_options: crate::stream::path_normalize::PathOptions {
            normalize: http.normalize_path,
            merge_slashes: http.merge_slashes,
            escaped_slashes: http.path_with_escaped_slashes_action,
        },
        upgrades: http.upgrades.as_ref().map(sinew_router::upgrade_list),
        headers_with_underscores: http.headers_with_underscores,
    }
}

/// The codec's settings for a listener's HTTP/2 connections: its defaults (hyper's, which
/// served HTTP/2 before), with the listener's header limit and its `http2` options.
fn http2_settings(
    max_request_headers_bytes: usize,
    options: &sinew_config::model::Http2Options,
) -> sinew_codec::http2::ServerSettings {
    let defaults = sinew_codec::http2::ServerSettings::default();
    sinew_codec::http2::ServerSettings {
        max_header_list_size: u32::try_from(max_request_headers_bytes).unwrap_or(u32::MAX),
        max_concurrent_streams: options
            .max_concurrent_streams
            .unwrap_or(defaults.max_concurrent_streams),
        initial_stream_window: options
            .initial_stream_window_size
            .unwrap_or(defaults.initial_stream_window),
        initial_connection_window: options
            .initial_connection_window_size
            .unwrap_or(defaults.initial_connection_window),
        ..defaults
    }
}

/// How long an HTTP/1 connection is quiet between requests before the codec hands it
/// back to the connection loop, whose task is then 800 bytes where it was 1,848 with
/// the driver inline, and which holds no parser, timer or hand-back slot (bench
/// scenario h: 4.2 KB per idle connection became 2.9). A hand-back and resume costs
/// about 1.6 µs (the driver boxed, a timer and the drain watch registered anew): handed
/// back after every request, scenario a went from 15.9 to 17.5 µs per request; a request
/// that follows its predecessor within this time never pays it.
const IDLE_HANDOFF: Duration = Duration::from_millis(50);

/// The codec's settings for a listener's HTTP/1 connections.
fn http1_settings(
    max_request_headers_bytes: usize,
    request_headers_timeout: Duration,
    idle_timeout: Duration,
) -> sinew_codec::http1::server::ServerSettings {
    sinew_codec::http1::server::ServerSettings {
        limits: sinew_codec::http1::HeadLimits {
            max_head_bytes: max_request_headers_bytes,
            ..sinew_codec::http1::HeadLimits::default()
        },
        header_read_timeout: Some(request_headers_timeout),
        idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
        // The connection loop (`protocol::serve_http1`) keeps connections quiet this long
        // itself, in less memory than the codec's driver (see IDLE_HANDOFF).
        idle_handoff: Some(IDLE_HANDOFF),
        ..sinew_codec::http1::server::ServerSettings::default()
    }
}

/// Waits (briefly) for each new global rate limiter's first connection to Redis, so a
/// proxy that starts while Redis is up counts its first requests.
pub(crate) async fn warm_rate_limits(snapshot: &Snapshot) {
    for listener in snapshot.listener_bodies() {
        if let ListenerKind::Http(m) = &listener.kind {
            if let Some(limits) = m.filters.rate_limits() {
                limits.warm().await;
            }
        }
    }
}

/// Waits (briefly) for the first fetch of each new remote JWKS, so a proxy that starts
/// while its token issuer is up does not refuse its first authenticated requests.
pub(crate) async fn warm_jwks(snapshot: &Snapshot) {
    for listener in snapshot.listener_bodies() {
        if let ListenerKind::Http(m) = &listener.kind {
            if let Some(jwt) = m.filters.jwt_authn() {
                jwt.warm().await;
            }
        }
    }
}
