//! LDS: a `Listener` becomes a model listener. Each filter chain's network filters are
//! RBAC filters (`rbac`) followed by the HTTP connection manager (whose HTTP filters may
//! be the local rate limit, JWT authentication, RBAC and the router) or the TCP proxy,
//! with an optional TLS transport socket (`tls_context`). Several chains, and the
//! default chain, become one listener's body and its `chains` (see `filter_chains`).

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use serde_json::{json, Map, Value};

pub(crate) use crate::convert::decode;
use crate::convert::{duration, socket_address};
use crate::filter_chains::{self, Chain, RdsWait};
use crate::{
    compression, cors, csrf, dubbo_proxy, jwt_authn, local_ratelimit, rbac, redis_proxy, route,
};
use crate::{Ctx, XdsError};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
/// The network filters a chain may end with, as errors name them.
const TERMINAL_FILTERS: &str =
    "the HTTP connection manager, the TCP proxy, the Redis proxy or the Dubbo proxy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// A mapped listener: the model's JSON shape, and the route configuration it waits for.
#[derive(Debug, Clone)]
pub struct MappedListener {
    pub name: String,
    pub json: Value,
    /// The RDS name its HTTP connection manager uses; the listener warms until it arrives.
    pub rds: Option<String>,
    /// How long it warms at most (`rds.config_source.initial_fetch_timeout`): then it
    /// serves without routes. None waits for ever.
    pub rds_fetch_timeout: Option<std::time::Duration>,
}

pub fn map(listener: &Listener) -> Result<MappedListener, XdsError> {
    let ctx = Ctx::new("listener", &listener.name);
    let mut rest = listener.clone();
    let name = std::mem::take(&mut rest.name);
    if name.is_empty() {
        return Err(ctx.error("name", "is required"));
    }
    rest.stat_prefix.clear();
    rest.metadata = None;
    // INBOUND/OUTBOUND is a hint for stats and tracing (a span's kind) in Envoy; it does
    // not change what traffic does.
    rest.traffic_direction = 0;
    let address = socket_address(&ctx, "address", rest.address.take())?;
    // Envoy's per-connection buffer limit is flow control (how much is read at once and
    // held before reading pauses), which Sinew's own bounded buffers make moot, and,
    // through a connection manager, the most of a request body the router keeps for
    // retries and mirrors: larger bodies are neither retried nor mirrored. That part is
    // the connection manager's `request_body_buffer_bytes`. (Envoy's filters that need a
    // body whole answer 413 past it; Sinew has none of them.)
    let body_buffer = rest
        .per_connection_buffer_limit_bytes
        .take()
        .map(|v| v.value);
    let chains = std::mem::take(&mut rest.filter_chains);
    let default = rest.default_filter_chain.take();
    let inspect_timeout = rest.listener_filters_timeout.take();
    // Envoy's default closes a connection whose listener filters time out; the other
    // choice would serve it with what the inspector could not yet tell.
    if std::mem::take(&mut rest.continue_on_listener_filters_timeout) {
        crate::report::note(ctx.error(
            "continue_on_listener_filters_timeout",
            "is not supported by Sinew: a connection that shows nothing in time is closed \
             (remove it to run on Sinew)",
        ))?;
    }
    for (i, f) in std::mem::take(&mut rest.listener_filters)
        .iter()
        .enumerate()
    {
        listener_filter(&ctx, &format!("listener_filters[{i}]"), f)?;
    }
    ctx.only_supported("", &rest)?;
    if chains.is_empty() && default.is_none() {
        return Err(ctx.error("filter_chains", "Sinew needs one filter chain"));
    }
    let listener_ip = address.parse::<SocketAddr>().ok().map(|a| a.ip());
    let mut chains = chains
        .iter()
        .enumerate()
        .map(|(i, c)| chain(&ctx, format!("filter_chains[{i}]"), c, listener_ip))
        .collect::<Result<Vec<_>, _>>()?;
    let mut default = default
        .map(|c| chain(&ctx, "default_filter_chain".into(), &c, listener_ip))
        .transpose()?;
    if chains.is_empty() {
        // Only a default: it is the one chain.
        chains.extend(default.take());
    }
    if let Some(limit) = body_buffer {
        for chain in chains.iter_mut().chain(default.iter_mut()) {
            if let Some(Value::Object(http)) = chain.filters.get_mut("http") {
                http.insert("request_body_buffer_bytes".into(), json!(limit));
            }
        }
    }
    let merged = filter_chains::assemble(&ctx, chains, default)?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("address".into(), json!(address));
    // Envoy's per-listener connection limit is a runtime key.
    if let Some(limit) =
        crate::runtime::connection_limit(&name).map_err(|e| ctx.error("name", e))?
    {
        out.insert("max_connections".into(), json!(limit));
    }
    if let Some(tls) = merged.tls {
        out.insert("tls".into(), tls);
    }
    out.extend(merged.filters);
    if !merged.chains.is_empty() {
        out.insert("chains".into(), Value::Array(merged.chains));
        if let Some(timeout) = inspect_timeout {
            out.insert("inspect_timeout".into(), json!(duration(&timeout)));
        }
    }
    let (rds, rds_fetch_timeout) = match merged.rds {
        Some((name, timeout)) => (Some(name), timeout),
        None => (None, None),
    };
    Ok(MappedListener {
        name,
        json: Value::Object(out),
        rds,
        rds_fetch_timeout,
    })
}

/// A listener filter: only the TLS inspector, which reads the SNI and tells TLS from
/// plaintext for `filter_chain_match` — what Sinew's listener does by itself.
fn listener_filter(ctx: &Ctx, path: &str, f: &ListenerFilter) -> Result<(), XdsError> {
    let is_inspector = match &f.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => any.type_url == TLS_INSPECTOR,
        None => f.name == "envoy.filters.listener.tls_inspector",
        Some(_) => false,
    };
    if !is_inspector {
        return Err(ctx.error(
            path,
            format!(
                "listener filter {:?} is not supported by Sinew (only the TLS inspector is)",
                f.name
            ),
        ));
    }
    if f.filter_disabled.is_some() {
        return Err(ctx.error(
            format!("{path}.filter_disabled"),
            "is not supported by Sinew",
        ));
    }
    Ok(())
}

/// One filter chain, mapped on its own; [`filter_chains::merge`] folds them together.
fn chain(
    ctx: &Ctx,
    path: String,
    chain: &FilterChain,
    listener_ip: Option<std::net::IpAddr>,
) -> Result<Chain, XdsError> {
    let mut chain = chain.clone();
    chain.name.clear();
    chain.metadata = None;
    let matched = filter_chains::chain_match(
        ctx,
        &format!("{path}.filter_chain_match"),
        chain.filter_chain_match.take(),
    )?;
    let filters = std::mem::take(&mut chain.filters);
    let tls = match chain.transport_socket.take() {
        Some(socket) => {
            crate::tls_context::downstream(ctx, &format!("{path}.transport_socket"), &socket)?
        }
        None => None,
    };
    ctx.only_supported(&path, &chain)?;
    let (filters, rds) = network_filters(ctx, &path, &filters, listener_ip)?;
    Ok(Chain {
        path,
        matched,
        tls,
        filters,
        rds,
    })
}

/// A chain's network filters: RBAC filters, then the HTTP connection manager or the TCP
/// proxy. Returns the listener's `http` or `tcp`, its `authorization`, and the routes it
/// waits for.
fn network_filters(
    ctx: &Ctx,
    chain_path: &str,
    filters: &[Filter],
    listener_ip: Option<std::net::IpAddr>,
) -> Result<(Map<String, Value>, Option<RdsWait>), XdsError> {
    let Some((terminal, before)) = filters.split_last() else {
        return Err(ctx.error(
            format!("{chain_path}.filters"),
            format!("Sinew needs a network filter: {TERMINAL_FILTERS}"),
        ));
    };
    let typed = |i: usize, f: &Filter| {
        let path = format!("{chain_path}.filters[{i}]");
        match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => Ok((path, any.clone())),
            _ => Err(ctx.error(format!("{path}.typed_config"), "is required")),
        }
    };
    let mut policies = rbac::Policies::default();
    let network_scope = rbac::Scope {
        http: false,
        listener_ip,
    };
    for (i, f) in before.iter().enumerate() {
        let (path, any) = typed(i, f)?;
        if any.type_url != rbac::NETWORK_TYPE_URL {
            return Err(ctx.error(
                path,
                format!("only RBAC filters may come before the last network filter ({TERMINAL_FILTERS}) in Sinew"),
            ));
        }
        rbac::map_network(
            ctx,
            &format!("{path}.typed_config"),
            &any,
            network_scope,
            &mut policies,
        )?;
    }
    let (path, typed) = typed(before.len(), terminal)?;
    let mut out = Map::new();
    let mut rds = None;
    match typed.type_url.as_str() {
        HCM => {
            let hcm: HttpConnectionManager = decode(ctx, &path, &typed)?;
            let http_scope = rbac::Scope {
                http: true,
                listener_ip,
            };
            let (http, names) = http_connection_manager(
                ctx,
                &format!("{path}.typed_config"),
                hcm,
                http_scope,
                &mut policies,
            )?;
            out.insert("http".into(), http);
            rds = names;
        }
        TCP_PROXY => {
            let tcp: TcpProxy = decode(ctx, &path, &typed)?;
            out.insert(
                "tcp".into(),
                tcp_proxy(ctx, &format!("{path}.typed_config"), tcp)?,
            );
        }
        redis_proxy::TYPE_URL => {
            let redis = decode(ctx, &path, &typed)?;
            out.insert(
                "redis".into(),
                redis_proxy::map(ctx, &format!("{path}.typed_config"), redis)?,
            );
        }
        dubbo_proxy::TYPE_URL => {
            let dubbo = decode(ctx, &path, &typed)?;
            out.insert(
                "rpc".into(),
                dubbo_proxy::map(ctx, &format!("{path}.typed_config"), dubbo)?,
            );
        }
        other => {
            return Err(ctx.error(
                format!("{path}.typed_config"),
                format!("network filter {other:?} is not supported by Sinew (the last network filter is {TERMINAL_FILTERS})"),
            ))
        }
    }
    if let Some(authorization) = policies.into_authorization() {
        out.insert("authorization".into(), authorization);
    }
    Ok((out, rds))
}

/// The connection manager's JSON, and the route configuration it waits for.
fn http_connection_manager(
    ctx: &Ctx,
    path: &str,
    mut hcm: HttpConnectionManager,
    scope: rbac::Scope,
    policies: &mut rbac::Policies,
) -> Result<(Value, Option<RdsWait>), XdsError> {
    let mut out = Map::new();
    hcm.stat_prefix.clear();
    // Sinew's listeners take HTTP/1.1 and HTTP/2 on one port whatever the codec says.
    hcm.codec_type = 0;
    let mut rds_name = None;
    match hcm.route_specifier.take() {
        Some(RouteSpecifier::Rds(rds)) => {
            let timeout = crate::convert::config_source(
                ctx,
                &format!("{path}.rds.config_source"),
                rds.config_source.as_ref(),
            )?;
            if rds.route_config_name.is_empty() {
                return Err(ctx.error(format!("{path}.rds.route_config_name"), "is required"));
            }
            out.insert("route_config".into(), json!(rds.route_config_name));
            rds_name = Some((rds.route_config_name, timeout));
        }
        Some(RouteSpecifier::RouteConfig(config)) => {
            let mapped = route::map(&config)
                .map_err(|e| ctx.error(format!("{path}.route_config.{}", e.field), e.message))?;
            out.insert("virtual_hosts".into(), mapped["virtual_hosts"].clone());
        }
        Some(_) => {
            return Err(ctx.error(format!("{path}.scoped_routes"), "is not supported by Sinew"))
        }
        None => return Err(ctx.error(format!("{path}.rds"), "rds or route_config is required")),
    }
    // Envoy applies the most specific local_ratelimit config (route, virtual host,
    // filter chain), and only through the filter: without it in this chain, route and
    // virtual-host configs limit nothing (set below, after the filters are read).
    out.insert("local_rate_limit_levels".into(), json!("most_specific"));
    let filters = std::mem::take(&mut hcm.http_filters);
    let mut rate_limited = false;
    let mut codings = compression::Filters::default();
    // Route and virtual-host CORS policies apply only with the filter in the chain.
    let mut cors_filter = false;
    for (i, filter) in filters.iter().enumerate() {
        let fpath = format!("{path}.http_filters[{i}]");
        // A disabled filter is enabled again only by a route's `FilterConfig`, which
        // Sinew refuses: it is as if absent (below).
        if !filter.disabled {
            match &filter.config_type {
                Some(http_filter::ConfigType::TypedConfig(any))
                    if any.type_url == cors::TYPE_URL =>
                {
                    cors::filter(ctx, &fpath, any)?;
                    cors_filter = true;
                    continue;
                }
                None if filter.name == cors::NAME => {
                    cors_filter = true;
                    continue;
                }
                Some(http_filter::ConfigType::TypedConfig(any))
                    if any.type_url == csrf::TYPE_URL =>
                {
                    if out.contains_key("csrf") {
                        return Err(
                            ctx.error(fpath, "a second csrf filter is not supported by Sinew")
                        );
                    }
                    let mapped = csrf::map(ctx, &format!("{fpath}.typed_config"), any)?;
                    out.insert("csrf".into(), mapped);
                    continue;
                }
                _ => {}
            }
        }
        if let Some(http_filter::ConfigType::TypedConfig(any)) = &filter.config_type {
            let coding = [
                compression::COMPRESSOR_TYPE_URL,
                compression::DECOMPRESSOR_TYPE_URL,
            ]
            .contains(&any.type_url.as_str());
            if coding {
                if filter.disabled {
                    // Enabled again only by a route's per-filter config, which Sinew refuses.
                    return Err(ctx.error(
                        format!("{fpath}.disabled"),
                        "is not supported by Sinew for the compressor and decompressor",
                    ));
                }
                let tpath = format!("{fpath}.typed_config");
                if any.type_url == compression::COMPRESSOR_TYPE_URL {
                    codings.compressor(ctx, &tpath, any)?;
                } else {
                    codings.decompressor(ctx, &tpath, any)?;
                }
                continue;
            }
            if any.type_url == local_ratelimit::TYPE_URL {
                if filter.disabled {
                    // Enabled again only by a route's `FilterConfig`, which Sinew refuses.
                    return Err(ctx.error(
                        format!("{fpath}.disabled"),
                        "is not supported by Sinew for local_ratelimit",
                    ));
                }
                if std::mem::replace(&mut rate_limited, true) {
                    return Err(ctx.error(
                        fpath,
                        "a second local_ratelimit filter is not supported by Sinew",
                    ));
                }
                let tpath = format!("{fpath}.typed_config");
                let config = local_ratelimit::decode(ctx, &tpath, any)?;
                let level = local_ratelimit::Level::Listener;
                if let Some(limit) = local_ratelimit::map(ctx, &tpath, config, level)? {
                    out.insert("local_rate_limit".into(), limit);
                }
                continue;
            }
            if any.type_url == rbac::HTTP_TYPE_URL {
                if filter.disabled {
                    // Enabled again only by a route's `RBACPerRoute`, which Sinew refuses.
                    return Err(ctx.error(
                        format!("{fpath}.disabled"),
                        "is not supported by Sinew for rbac",
                    ));
                }
                rbac::map_http(ctx, &format!("{fpath}.typed_config"), any, scope, policies)?;
                continue;
            }
            if any.type_url == jwt_authn::TYPE_URL {
                if filter.disabled {
                    return Err(ctx.error(
                        format!("{fpath}.disabled"),
                        "is not supported by Sinew for jwt_authn",
                    ));
                }
                if out.contains_key("jwt_authn") {
                    return Err(
                        ctx.error(fpath, "a second jwt_authn filter is not supported by Sinew")
                    );
                }
                let mapped = jwt_authn::map(ctx, &format!("{fpath}.typed_config"), any)?;
                out.insert("jwt_authn".into(), mapped);
                continue;
            }
        }
        // A disabled filter runs only where a route enables it (per-route config, which
        // Sinew refuses), and an optional one may be skipped by a proxy that lacks it.
        if filter.disabled || filter.is_optional {
            continue;
        }
        let is_router = match &filter.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => any.type_url == ROUTER,
            None => filter.name == "envoy.filters.http.router",
            Some(_) => false,
        };
        if !is_router {
            return Err(ctx.error(
                fpath,
                format!(
                    "HTTP filter {:?} is not supported by Sinew (only local_ratelimit, \
                     jwt_authn, rbac, compressor, decompressor, cors, csrf and the router are)",
                    filter.name
                ),
            ));
        }
        if i + 1 != filters.len() {
            return Err(ctx.error(fpath, "the router must be the last HTTP filter"));
        }
        if let Some(http_filter::ConfigType::TypedConfig(any)) = &filter.config_type {
            let mut router: envoy_types::pb::envoy::extensions::filters::http::router::v3::Router =
                decode(ctx, &fpath, any)?;
            // A child span per upstream call: Sinew records one span per request whatever
            // this says, and traffic is the same (docs/envoy-bootstrap.md).
            router.start_child_span = false;
            ctx.only_supported(format_args!("{fpath}.typed_config"), &router)?;
        }
    }
    if !rate_limited {
        out.insert("local_rate_limit_levels".into(), json!("disabled"));
    }
    codings.finish(&mut out);
    out.insert("cors".into(), json!(cors_filter));
    // X-Forwarded-For as Envoy handles it: untouched unless `use_remote_address`.
    let remote = hcm.use_remote_address.take().is_some_and(|b| b.value);
    out.insert("use_remote_address".into(), json!(remote));
    out.insert(
        "xff_num_trusted_hops".into(),
        json!(std::mem::take(&mut hcm.xff_num_trusted_hops)),
    );
    if std::mem::take(&mut hcm.skip_xff_append) && remote {
        out.insert("skip_xff_append".into(), json!(true));
    }
    if let Some(scheme) = hcm.scheme_header_transformation.take() {
        scheme_header_transformation(
            ctx,
            &format!("{path}.scheme_header_transformation"),
            scheme,
            &mut out,
        )?;
    }
    let logs = std::mem::take(&mut hcm.access_log);
    if let Some(logs) = crate::access_log::map(ctx, &format!("{path}.access_log"), logs)? {
        out.insert("access_log".into(), logs);
    }
    if let Some(kb) = hcm.max_request_headers_kb.take() {
        out.insert("max_request_headers_kb".into(), json!(kb.value));
    }
    if let Some(t) = hcm.request_headers_timeout.take() {
        out.insert("request_headers_timeout".into(), json!(duration(&t)));
    }
    if let Some(t) = hcm.stream_idle_timeout.take() {
        out.insert("stream_idle_timeout".into(), json!(duration(&t)));
    }
    // Envoy passes only the upgrades it is configured for (and answers others 403).
    let mut upgrades = Map::new();
    for (i, mut u) in std::mem::take(&mut hcm.upgrade_configs)
        .into_iter()
        .enumerate()
    {
        let upath = format!("{path}.upgrade_configs[{i}]");
        let on = u.enabled.take().is_none_or(|b| b.value);
        upgrades.insert(std::mem::take(&mut u.upgrade_type), json!(on));
        if !u.filters.is_empty() {
            return Err(ctx.error(
                format!("{upath}.filters"),
                "is not supported by Sinew (an upgrade goes through the listener's filters)",
            ));
        }
        ctx.only_supported(&upath, &u)?;
    }
    out.insert("upgrades".into(), Value::Object(upgrades));
    if let Some(tracing) = hcm.tracing.take() {
        let mapped = crate::trace::map(ctx, &format!("{path}.tracing"), tracing)?;
        out.insert("tracing".into(), mapped);
    }
    if let Some(mut common) = hcm.common_http_protocol_options.take() {
        if let Some(t) = common.idle_timeout.take() {
            out.insert("idle_timeout".into(), json!(duration(&t)));
        }
        let underscores = match std::mem::take(&mut common.headers_with_underscores_action) {
            0 => "allow",
            1 => "reject_request",
            2 => "drop_header",
            other => {
                return Err(ctx.error(
                    format!("{path}.common_http_protocol_options.headers_with_underscores_action"),
                    format!("{other} is not an action"),
                ))
            }
        };
        out.insert("headers_with_underscores".into(), json!(underscores));
        ctx.only_supported(format_args!("{path}.common_http_protocol_options"), &common)?;
    }
    if let Some(h2) = hcm.http2_protocol_options.take() {
        let mut http2 = Map::new();
        crate::protocol_options::http2(
            ctx,
            &format!("{path}.http2_protocol_options"),
            &h2,
            [
                "max_concurrent_streams",
                "initial_stream_window_size",
                "initial_connection_window_size",
            ],
            &mut http2,
        )?;
        out.insert("http2".into(), Value::Object(http2));
    }
    if let Some(h1) = hcm.http_protocol_options.take() {
        crate::protocol_options::http1_downstream(
            ctx,
            &format!("{path}.http_protocol_options"),
            &h1,
        )?;
    }
    // Path normalisation, which path matching in routes and RBAC policies sees.
    if let Some(normalize) = hcm.normalize_path.take() {
        out.insert("normalize_path".into(), json!(normalize.value));
    }
    if std::mem::take(&mut hcm.merge_slashes) {
        out.insert("merge_slashes".into(), json!(true));
    }
    let escaped = match std::mem::take(&mut hcm.path_with_escaped_slashes_action) {
        0 | 1 => "KEEP_UNCHANGED",
        2 => "REJECT_REQUEST",
        3 => "UNESCAPE_AND_REDIRECT",
        4 => "UNESCAPE_AND_FORWARD",
        other => {
            return Err(ctx.error(
                format!("{path}.path_with_escaped_slashes_action"),
                format!("{other} is not an action"),
            ))
        }
    };
    out.insert("path_with_escaped_slashes_action".into(), json!(escaped));
    if let Some(generate) = hcm.generate_request_id.take() {
        out.insert("generate_request_id".into(), json!(generate.value));
    }
    if !hcm.via.is_empty() {
        out.insert("via".into(), json!(std::mem::take(&mut hcm.via)));
    } else {
        // Envoy adds no Via unless asked; neither does a listener it configures.
        out.insert("via".into(), json!(""));
    }
    ctx.only_supported(path, &hcm)?;
    Ok((Value::Object(out), rds_name))
}

fn tcp_proxy(ctx: &Ctx, path: &str, mut tcp: TcpProxy) -> Result<Value, XdsError> {
    let mut out = Map::new();
    tcp.stat_prefix.clear();
    match tcp.cluster_specifier.take() {
        Some(ClusterSpecifier::Cluster(name)) => {
            out.insert("cluster".into(), json!(name));
        }
        Some(ClusterSpecifier::WeightedClusters(weighted)) => {
            let mut clusters = Vec::new();
            for (i, c) in weighted.clusters.iter().enumerate() {
                if c.metadata_match.is_some() {
                    return Err(ctx.error(
                        format!("{path}.weighted_clusters.clusters[{i}].metadata_match"),
                        "is not supported by Sinew",
                    ));
                }
                clusters.push(json!({"cluster": c.name, "weight": c.weight}));
            }
            out.insert("weighted_clusters".into(), Value::Array(clusters));
        }
        None => {
            return Err(ctx.error(
                format!("{path}.cluster"),
                "cluster or weighted_clusters is required",
            ))
        }
    }
    if let Some(t) = tcp.idle_timeout.take() {
        out.insert("idle_timeout".into(), json!(duration(&t)));
    }
    let logs = std::mem::take(&mut tcp.access_log);
    if let Some(logs) = crate::access_log::map(ctx, &format!("{path}.access_log"), logs)? {
        out.insert("access_log".into(), logs);
    }
    ctx.only_supported(path, &tcp)?;
    Ok(Value::Object(out))
}

/// `scheme_header_transformation`: `scheme_to_overwrite` sets the scheme forwarded
/// upstream (`:scheme` and `X-Forwarded-Proto`, as Envoy sets both); `match_upstream`
/// sets `:scheme` from the upstream connection, which Sinew does anyway.
fn scheme_header_transformation(
    ctx: &Ctx,
    path: &str,
    transformation: envoy_types::pb::envoy::config::core::v3::SchemeHeaderTransformation,
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    use envoy_types::pb::envoy::config::core::v3::scheme_header_transformation::Transformation;
    match transformation.transformation {
        Some(Transformation::SchemeToOverwrite(scheme)) => match scheme.as_str() {
            "http" | "https" => {
                out.insert("scheme_to_overwrite".into(), json!(scheme));
            }
            _ => {
                return Err(ctx.error(
                    format!("{path}.scheme_to_overwrite"),
                    format!("{scheme:?} is not a scheme Envoy takes: write http or https"),
                ))
            }
        },
        // `match_upstream` (or nothing): what Sinew's router does already.
        None => {}
    }
    Ok(())
}
