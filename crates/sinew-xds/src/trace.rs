//! The connection manager's `tracing`: sampling and the provider, mapped onto the
//! listener's `tracing` — the OpenTelemetry tracer (`OpenTelemetryConfig`, OTLP over gRPC
//! or HTTP) and the Zipkin tracer (`ZipkinConfig`, JSON v2 over HTTP). A collector named
//! by cluster is reached at that cluster's first endpoint.

use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::http_uri::HttpUpstreamType;
use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType;
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, ZipkinConfig};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use serde_json::{json, Map, Value};

use crate::convert::{decode, duration};
use crate::{Ctx, XdsError};

const OPENTELEMETRY: &str = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";
const ZIPKIN: &str = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";

/// Maps `tracing` at `path` (the connection manager's field).
pub fn map(ctx: &Ctx, path: &str, mut tracing: Tracing) -> Result<Value, XdsError> {
    let mut out = Map::new();
    if let Some(percent) = tracing.random_sampling.take() {
        out.insert("random_sampling".into(), json!(percent.value));
    }
    // Sampling that Sinew does not have is accepted only at its default (all), where
    // it selects nothing.
    for (field, percent) in [
        ("client_sampling", tracing.client_sampling.take()),
        ("overall_sampling", tracing.overall_sampling.take()),
    ] {
        if percent.is_some_and(|p| p.value != 100.0) {
            return Err(ctx.error(
                format!("{path}.{field}"),
                "is not supported by Sinew except at 100 (random_sampling is)",
            ));
        }
    }
    // Span annotations only: what they change is in the exported spans, never in traffic.
    tracing.verbose = false;
    tracing.max_path_tag_length = None;
    // Sinew records one span per request whatever this says (docs/envoy-bootstrap.md).
    tracing.spawn_upstream_span = None;
    let Some(mut provider) = tracing.provider.take() else {
        return Err(ctx.error(
            format!("{path}.provider"),
            "is required by Sinew (the tracer that exports spans: OpenTelemetry or Zipkin)",
        ));
    };
    let ppath = format!("{path}.provider");
    let any = match provider.config_type.take() {
        Some(ConfigType::TypedConfig(any)) => any,
        None => {
            return Err(ctx.error(
                format!("{ppath}.typed_config"),
                "is required (an OpenTelemetryConfig or a ZipkinConfig)",
            ))
        }
    };
    match any.type_url.as_str() {
        OPENTELEMETRY => {
            let config: OpenTelemetryConfig = decode(ctx, &ppath, &any)?;
            opentelemetry(ctx, &format!("{ppath}.typed_config"), config, &mut out)?
        }
        ZIPKIN => {
            let config: ZipkinConfig = decode(ctx, &ppath, &any)?;
            zipkin(ctx, &format!("{ppath}.typed_config"), config, &mut out)?
        }
        other => {
            return Err(ctx.error(
                format!("{ppath}.typed_config"),
                format!(
                    "{} is not supported by Sinew; the OpenTelemetry and Zipkin tracers are",
                    other.trim_start_matches("type.googleapis.com/")
                ),
            ))
        }
    }
    ctx.only_supported(path, &tracing)?;
    Ok(Value::Object(out))
}

fn opentelemetry(
    ctx: &Ctx,
    path: &str,
    mut config: OpenTelemetryConfig,
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    let mut exporter = Map::new();
    match (config.grpc_service.take(), config.http_service.take()) {
        (Some(mut grpc), None) => {
            exporter.insert("protocol".into(), json!("grpc"));
            match grpc.target_specifier.take() {
                Some(TargetSpecifier::EnvoyGrpc(mut envoy)) => {
                    exporter.insert(
                        "cluster".into(),
                        json!(std::mem::take(&mut envoy.cluster_name)),
                    );
                    ctx.only_supported(format_args!("{path}.grpc_service.envoy_grpc"), &envoy)?;
                }
                _ => {
                    return Err(ctx.error(
                        format!("{path}.grpc_service"),
                        "only envoy_grpc (a cluster) is supported by Sinew",
                    ))
                }
            }
            if let Some(t) = grpc.timeout.take() {
                exporter.insert("timeout".into(), json!(duration(&t)));
            }
            ctx.only_supported(format_args!("{path}.grpc_service"), &grpc)?;
        }
        (None, Some(mut http)) => {
            exporter.insert("protocol".into(), json!("http/protobuf"));
            let mut uri = http.http_uri.take().unwrap_or_default();
            exporter.insert("endpoint".into(), json!(std::mem::take(&mut uri.uri)));
            if let Some(HttpUpstreamType::Cluster(cluster)) = uri.http_upstream_type.take() {
                exporter.insert("cluster".into(), json!(cluster));
            }
            if let Some(t) = uri.timeout.take() {
                exporter.insert("timeout".into(), json!(duration(&t)));
            }
            ctx.only_supported(format_args!("{path}.http_service.http_uri"), &uri)?;
            ctx.only_supported(format_args!("{path}.http_service"), &http)?;
        }
        (Some(_), Some(_)) => {
            return Err(ctx.error(
                format!("{path}.http_service"),
                "grpc_service and http_service are exclusive",
            ))
        }
        // Envoy's default: nowhere to send, so spans are not exported.
        (None, None) => {
            return Err(ctx.error(
                format!("{path}.grpc_service"),
                "is required by Sinew (or http_service): where spans are exported",
            ))
        }
    }
    if !config.service_name.is_empty() {
        out.insert(
            "service_name".into(),
            json!(std::mem::take(&mut config.service_name)),
        );
    }
    out.insert("opentelemetry".into(), Value::Object(exporter));
    ctx.only_supported(path, &config)
}

fn zipkin(
    ctx: &Ctx,
    path: &str,
    mut config: ZipkinConfig,
    out: &mut Map<String, Value>,
) -> Result<(), XdsError> {
    use envoy_types::pb::envoy::config::trace::v3::zipkin_config::CollectorEndpointVersion;
    let mut exporter = Map::new();
    if config.collector_cluster.is_empty() {
        return Err(ctx.error(format!("{path}.collector_cluster"), "is required"));
    }
    exporter.insert(
        "cluster".into(),
        json!(std::mem::take(&mut config.collector_cluster)),
    );
    if config.collector_endpoint.is_empty() {
        return Err(ctx.error(format!("{path}.collector_endpoint"), "is required"));
    }
    // The path, sent to the cluster's endpoint (its host and port stand in).
    let endpoint = std::mem::take(&mut config.collector_endpoint);
    exporter.insert(
        "endpoint".into(),
        json!(format!("http://collector:9411{endpoint}")),
    );
    match CollectorEndpointVersion::try_from(std::mem::take(&mut config.collector_endpoint_version))
    {
        Ok(CollectorEndpointVersion::HttpJson)
        | Ok(CollectorEndpointVersion::DeprecatedAndUnavailableDoNotUse) => {}
        _ => {
            return Err(ctx.error(
                format!("{path}.collector_endpoint_version"),
                "only HTTP_JSON is supported by Sinew",
            ))
        }
    }
    if !config.collector_hostname.is_empty() {
        exporter.insert(
            "hostname".into(),
            json!(std::mem::take(&mut config.collector_hostname)),
        );
    }
    if std::mem::take(&mut config.trace_id_128bit) {
        exporter.insert("trace_id_128bit".into(), json!(true));
    }
    // Whether Envoy's span reuses the caller's span id in the spans it reports: Sinew's
    // span is always its own, the caller's as parent (as `false` says); the ids sent
    // upstream and the traffic are the same either way.
    config.shared_span_context = None;
    // B3 alone, or B3 and W3C: Sinew writes both `traceparent` and B3 either way.
    config.trace_context_option = 0;
    out.insert("zipkin".into(), Value::Object(exporter));
    ctx.only_supported(path, &config)
}
