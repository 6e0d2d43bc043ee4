//! CDS: a `Cluster` becomes a model cluster. An EDS cluster's endpoints come later from
//! its `ClusterLoadAssignment` (see [`crate::assemble`]); static and DNS clusters carry
//! theirs in `load_assignment`.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection};
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::endpoint;
use crate::{Ctx, XdsError};

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// In the cluster (`load_assignment`): static or DNS.
    Inline,
    /// From EDS, under this name (`eds_cluster_config.service_name`, else the cluster's).
    Eds(String),
}

/// A mapped cluster: the model's JSON shape (endpoints empty for EDS), and where its
/// endpoints come from.
#[derive(Debug, Clone)]
pub struct MappedCluster {
    pub name: String,
    pub json: Value,
    pub endpoints: Endpoints,
    /// EDS: how long the cluster waits for its endpoints before it serves without any
    /// (`eds_config.initial_fetch_timeout`); None waits for ever.
    pub fetch_timeout: Option<std::time::Duration>,
}

/// A DNS cluster's lookup family and resolvers. Envoy's default family is `AUTO` (the
/// IPv6 addresses when a name has any), so a cluster that does not say is `auto`.
fn map_dns(ctx: &Ctx, rest: &mut Cluster, out: &mut Map<String, Value>) -> Result<(), XdsError> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily;
    let family = match DnsLookupFamily::try_from(std::mem::take(&mut rest.dns_lookup_family)) {
        Ok(DnsLookupFamily::Auto) => "auto",
        Ok(DnsLookupFamily::V4Only) => "v4_only",
        Ok(DnsLookupFamily::V6Only) => "v6_only",
        Ok(DnsLookupFamily::V4Preferred) => "v4_preferred",
        Ok(DnsLookupFamily::All) => "all",
        Err(_) => return Err(ctx.error("dns_lookup_family", "is not a lookup family")),
    };
    out.insert("dns_lookup_family".into(), json!(family));

    // The servers to ask: the deprecated `dns_resolvers`, `dns_resolution_config`, or
    // the c-ares resolver's `resolvers` in `typed_dns_resolver_config`.
    let mut servers = Vec::new();
    for (i, address) in std::mem::take(&mut rest.dns_resolvers)
        .into_iter()
        .enumerate()
    {
        servers.push(crate::convert::socket_address(
            ctx,
            format_args!("dns_resolvers[{i}]"),
            Some(address),
        )?);
    }
    if let Some(mut resolution) = rest.dns_resolution_config.take() {
        for (i, address) in std::mem::take(&mut resolution.resolvers)
            .into_iter()
            .enumerate()
        {
            servers.push(crate::convert::socket_address(
                ctx,
                format_args!("dns_resolution_config.resolvers[{i}]"),
                Some(address),
            )?);
        }
        ctx.only_supported("dns_resolution_config", &resolution)?;
    }
    if let Some(typed) = rest.typed_dns_resolver_config.take() {
        use envoy_types::pb::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;
        let path = "typed_dns_resolver_config";
        let any = typed.typed_config.unwrap_or_default();
        let cares = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";
        if any.type_url != cares {
            return Err(ctx.error(
                format!("{path}.typed_config"),
                format!(
                    "{} is not supported by Sinew; the c-ares resolver's `resolvers` is",
                    any.type_url.trim_start_matches("type.googleapis.com/")
                ),
            ));
        }
        let mut config: CaresDnsResolverConfig = crate::convert::decode(ctx, path, &any)?;
        for (i, address) in std::mem::take(&mut config.resolvers)
            .into_iter()
            .enumerate()
        {
            servers.push(crate::convert::socket_address(
                ctx,
                format_args!("{path}.typed_config.resolvers[{i}]"),
                Some(address),
            )?);
        }
        // Asking the servers over TCP only, or the system's too when they fail, would
        // change which answers count; the options that only tune the query are refused
        // with them, so nothing is silently different.
        ctx.only_supported(format_args!("{path}.typed_config"), &config)?;
    }
    if !servers.is_empty() {
        out.insert("dns_resolvers".into(), json!(servers));
    }
    Ok(())
}

pub fn map(cluster: &Cluster) -> Result<MappedCluster, XdsError> {
    let ctx = Ctx::new("cluster", &cluster.name);
    let mut rest = cluster.clone();
    let name = std::mem::take(&mut rest.name);
    if name.is_empty() {
        return Err(ctx.error("name", "is required"));
    }
    rest.alt_stat_name.clear();
    rest.metadata = None;
    // Envoy's per-connection buffer limit on a cluster is flow control only: how much of
    // an upstream connection is read at once and held before reading pauses (the bodies
    // a request buffers are bounded by the listener's). Sinew bounds its upstream buffers
    // itself (HTTP/2 windows, its HTTP/1 codec's and the TCP proxy's fixed buffers), so
    // the limit would change pacing, never which bytes go where.
    rest.per_connection_buffer_limit_bytes = None;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));

    let kind = match rest.cluster_discovery_type.take() {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
            .map_err(|_| ctx.error("type", format!("unknown discovery type {t}")))?,
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            return Err(ctx.error(
                "cluster_type",
                "custom cluster types are not supported by Sinew",
            ))
        }
    };
    let mut fetch_timeout = None;
    let endpoints = match kind {
        DiscoveryType::Static => Endpoints::Inline,
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let logical = kind == DiscoveryType::LogicalDns;
            out.insert(
                "type".into(),
                json!(if logical { "logical_dns" } else { "dns" }),
            );
            if let Some(refresh) = rest.dns_refresh_rate.take() {
                out.insert("dns_refresh".into(), json!(duration(&refresh)));
            }
            map_dns(&ctx, &mut rest, &mut out)?;
            Endpoints::Inline
        }
        DiscoveryType::Eds => {
            let eds = rest.eds_cluster_config.take().unwrap_or_default();
            fetch_timeout = crate::convert::config_source(
                &ctx,
                "eds_cluster_config.eds_config",
                eds.eds_config.as_ref(),
            )?;
            let service = if eds.service_name.is_empty() {
                name.clone()
            } else {
                eds.service_name
            };
            Endpoints::Eds(service)
        }
        DiscoveryType::OriginalDst => {
            return Err(ctx.error("type", "ORIGINAL_DST clusters are not supported by Sinew"))
        }
    };
    if let Some(timeout) = rest.connect_timeout.take() {
        out.insert("connect_timeout".into(), json!(duration(&timeout)));
    }
    let lb = match rest.lb_policy {
        0 => "round_robin",
        1 => "least_request",
        2 => "ring_hash",
        3 => "random",
        5 => "maglev",
        other => {
            let name = LbPolicy::try_from(other)
                .map(|p| p.as_str_name().to_string())
                .unwrap_or_else(|_| format!("policy number {other}"));
            return Err(ctx.error(
                "lb_policy",
                format!(
                    "{name} is not supported by Sinew; use ROUND_ROBIN, LEAST_REQUEST, \
                     RING_HASH, RANDOM or MAGLEV"
                ),
            ));
        }
    };
    rest.lb_policy = 0;
    out.insert("lb".into(), json!(lb));

    // HTTP/2 to the upstream: the v3 `typed_extension_protocol_options` form and the
    // deprecated `http2_protocol_options` both ask for it; their stream limit and windows
    // are the pool's.
    let mut http2 = false;
    let mut pool = Map::new();
    const POOL_HTTP2: [&str; 3] = [
        "http2_max_concurrent_streams",
        "http2_initial_stream_window_size",
        "http2_initial_connection_window_size",
    ];
    if let Some(options) = rest.http2_protocol_options.take() {
        crate::protocol_options::http2(
            &ctx,
            "http2_protocol_options",
            &options,
            POOL_HTTP2,
            &mut pool,
        )?;
        http2 = true;
    }
    if let Some(options) = rest
        .typed_extension_protocol_options
        .remove("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    {
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
            explicit_http_config::ProtocolConfig, UpstreamProtocolOptions,
        };
        use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
        let path = "typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]";
        let mut options: HttpProtocolOptions = prost::Message::decode(options.value.as_slice())
            .map_err(|e| ctx.error(path, format!("does not decode: {e}")))?;
        match options.upstream_protocol_options.take() {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
                match explicit.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                        crate::protocol_options::http2(
                            &ctx,
                            &format!("{path}.explicit_http_config.http2_protocol_options"),
                            &h2,
                            POOL_HTTP2,
                            &mut pool,
                        )?;
                        http2 = true;
                    }
                    Some(ProtocolConfig::HttpProtocolOptions(h1)) => {
                        ctx.only_supported(
                            format_args!("{path}.explicit_http_config.http_protocol_options"),
                            &h1,
                        )?;
                    }
                    _ => {
                        return Err(ctx.error(
                            format!("{path}.explicit_http_config"),
                            "only HTTP/1.1 or HTTP/2 is supported by Sinew",
                        ))
                    }
                }
            }
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                out.insert("protocol".into(), json!("same_as_downstream"));
            }
            Some(_) => return Err(ctx.error(
                path,
                "only explicit_http_config or use_downstream_protocol_config is supported by Sinew",
            )),
            None => {}
        }
        if let Some(common) = options.common_http_protocol_options.take() {
            crate::protocol_options::common_upstream(
                &ctx,
                &format!("{path}.common_http_protocol_options"),
                &common,
                &mut pool,
            )?;
        }
        ctx.only_supported(path, &options)?;
    }
    if http2 {
        out.insert("protocol".into(), json!("http2"));
    }
    if !pool.is_empty() {
        out.insert("pool".into(), Value::Object(pool));
    }

    if let Some(breakers) = rest.circuit_breakers.take() {
        let mut breakers_rest = breakers.clone();
        let thresholds = std::mem::take(&mut breakers_rest.thresholds);
        ctx.only_supported("circuit_breakers", &breakers_rest)?;
        let mut mapped = Map::new();
        for (i, t) in thresholds.iter().enumerate() {
            let path = format!("circuit_breakers.thresholds[{i}]");
            if t.priority != 0 {
                return Err(ctx.error(
                    format!("{path}.priority"),
                    "only the DEFAULT priority is supported by Sinew",
                ));
            }
            let mut t = *t;
            for (key, value) in [
                ("max_connections", t.max_connections.take()),
                ("max_pending_requests", t.max_pending_requests.take()),
                ("max_requests", t.max_requests.take()),
                ("max_retries", t.max_retries.take()),
            ] {
                if let Some(v) = value {
                    mapped.insert(key.into(), json!(v.value));
                }
            }
            if let Some(budget) = t.retry_budget.take() {
                let mut b = Map::new();
                if let Some(p) = budget.budget_percent {
                    b.insert("budget_percent".into(), json!(p.value));
                }
                if let Some(m) = budget.min_retry_concurrency {
                    b.insert("min_retry_concurrency".into(), json!(m.value));
                }
                mapped.insert("retry_budget".into(), Value::Object(b));
            }
            t.track_remaining = false;
            ctx.only_supported(&path, &t)?;
        }
        out.insert("circuit_breakers".into(), Value::Object(mapped));
    }
    let checks = std::mem::take(&mut rest.health_checks);
    if !checks.is_empty() {
        let mut mapped = Vec::new();
        for (i, check) in checks.iter().enumerate() {
            mapped.push(crate::health_check::map(
                &ctx,
                &format!("health_checks[{i}]"),
                check,
            )?);
        }
        out.insert("health_checks".into(), Value::Array(mapped));
    }
    if let Some(outlier) = rest.outlier_detection.take() {
        out.insert(
            "outlier_detection".into(),
            outlier_detection(&ctx, &outlier)?,
        );
    }
    if let Some(common) = rest.common_lb_config.take() {
        let mut common = common.clone();
        if let Some(threshold) = common.healthy_panic_threshold.take() {
            out.insert("healthy_panic_threshold".into(), json!(threshold.value));
        }
        ctx.only_supported("common_lb_config", &common)?;
    }
    let inline = match rest.load_assignment.take() {
        Some(assignment) => endpoint::endpoints(assignment)
            .map_err(|e| ctx.error(format!("load_assignment.{}", e.field), e.message))?,
        None => Vec::new(),
    };
    if endpoints == Endpoints::Inline && inline.is_empty() {
        return Err(ctx.error("load_assignment", "a static or DNS cluster needs endpoints"));
    }
    out.insert("endpoints".into(), endpoint::to_json(&inline));
    if let Some(socket) = rest.transport_socket.take() {
        if let Some(tls) = crate::tls_context::upstream(&ctx, "transport_socket", &socket)? {
            out.insert("tls".into(), tls);
        }
    }
    ctx.only_supported("", &rest)?;
    Ok(MappedCluster {
        name,
        json: Value::Object(out),
        endpoints,
        fetch_timeout,
    })
}

fn outlier_detection(ctx: &Ctx, outlier: &OutlierDetection) -> Result<Value, XdsError> {
    let mut o = outlier.clone();
    let mut out = Map::new();
    let mut number = |key: &str, value: Option<u32>| {
        if let Some(v) = value {
            out.insert(key.into(), json!(v));
        }
    };
    number("consecutive_5xx", o.consecutive_5xx.take().map(|v| v.value));
    number(
        "max_ejection_percent",
        o.max_ejection_percent.take().map(|v| v.value),
    );
    number(
        "enforcing_consecutive_5xx",
        o.enforcing_consecutive_5xx.take().map(|v| v.value),
    );
    number(
        "enforcing_success_rate",
        o.enforcing_success_rate.take().map(|v| v.value),
    );
    number(
        "success_rate_minimum_hosts",
        o.success_rate_minimum_hosts.take().map(|v| v.value),
    );
    number(
        "success_rate_request_volume",
        o.success_rate_request_volume.take().map(|v| v.value),
    );
    number(
        "success_rate_stdev_factor",
        o.success_rate_stdev_factor.take().map(|v| v.value),
    );
    number(
        "consecutive_gateway_failure",
        o.consecutive_gateway_failure.take().map(|v| v.value),
    );
    number(
        "enforcing_consecutive_gateway_failure",
        o.enforcing_consecutive_gateway_failure
            .take()
            .map(|v| v.value),
    );
    number(
        "consecutive_local_origin_failure",
        o.consecutive_local_origin_failure.take().map(|v| v.value),
    );
    number(
        "enforcing_consecutive_local_origin_failure",
        o.enforcing_consecutive_local_origin_failure
            .take()
            .map(|v| v.value),
    );
    number(
        "enforcing_local_origin_success_rate",
        o.enforcing_local_origin_success_rate
            .take()
            .map(|v| v.value),
    );
    number(
        "failure_percentage_threshold",
        o.failure_percentage_threshold.take().map(|v| v.value),
    );
    number(
        "enforcing_failure_percentage",
        o.enforcing_failure_percentage.take().map(|v| v.value),
    );
    number(
        "enforcing_failure_percentage_local_origin",
        o.enforcing_failure_percentage_local_origin
            .take()
            .map(|v| v.value),
    );
    number(
        "failure_percentage_minimum_hosts",
        o.failure_percentage_minimum_hosts.take().map(|v| v.value),
    );
    number(
        "failure_percentage_request_volume",
        o.failure_percentage_request_volume.take().map(|v| v.value),
    );
    for (key, value) in [
        ("interval", o.interval.take()),
        ("base_ejection_time", o.base_ejection_time.take()),
        ("max_ejection_time", o.max_ejection_time.take()),
    ] {
        if let Some(d) = value {
            out.insert(key.into(), json!(duration(&d)));
        }
    }
    if std::mem::take(&mut o.split_external_local_origin_errors) {
        out.insert("split_external_local_origin_errors".into(), json!(true));
    }
    if let Some(v) = o.successful_active_health_check_uneject_host.take() {
        out.insert(
            "successful_active_health_check_uneject_host".into(),
            json!(v.value),
        );
    }
    ctx.only_supported("outlier_detection", &o)?;
    Ok(Value::Object(out))
}
