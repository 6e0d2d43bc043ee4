//! Distributed tracing config for an HTTP listener (Envoy: the HTTP connection manager's
//! `tracing`, with the OpenTelemetry or Zipkin tracer as provider): how many requests
//! start a sampled trace, and where spans are exported, over OTLP or to Zipkin.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::ConfigError;

/// Tracing for one HTTP listener. Absent, the listener neither reads nor writes trace
/// context: `traceparent` and `b3` headers pass through untouched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// Percentage (0–100) of requests without a parent decision that are sampled. A
    /// parent's decision always wins. Envoy: `tracing.random_sampling`, default 100.
    #[serde(default = "default_random_sampling")]
    pub random_sampling: f64,
    /// `service.name` of the exported spans. Envoy: `OpenTelemetryConfig.service_name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Where spans go. Envoy: `provider` with `envoy.tracers.opentelemetry`.
    #[serde(default)]
    pub opentelemetry: OtlpExporter,
    /// Spans to a Zipkin collector instead (JSON v2), with B3 headers written upstream.
    /// Envoy: `provider` with `envoy.tracers.zipkin`.
    #[serde(default)]
    pub zipkin: Option<ZipkinExporter>,
    /// Finished spans waiting for export; past it new spans are dropped and counted,
    /// so a slow or dead collector never holds a request up.
    #[serde(default = "default_max_queued_spans")]
    pub max_queued_spans: usize,
}

/// An OTLP collector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporter {
    /// `grpc` (Envoy: `grpc_service`) or `http/protobuf` (Envoy: `http_service`), the
    /// values of OpenTelemetry's `OTEL_EXPORTER_OTLP_PROTOCOL`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// `http://host:port` (or `host:port`). Over `http/protobuf`, a URL without a path
    /// gets `/v1/traces`, as OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT` does.
    /// Default: the local collector, port 4317 for gRPC and 4318 for HTTP.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Send to this cluster's first endpoint instead of `endpoint`'s host and port (a
    /// path in `endpoint` is kept). Envoy: `grpc_service.envoy_grpc.cluster_name`,
    /// `http_service.http_uri.cluster`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Each export gives up after this long.
    #[serde(
        default = "default_export_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
}

/// A Zipkin collector, sent JSON v2 spans (`POST` of a list) over HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipkinExporter {
    /// `http://host:port/path`; default `http://127.0.0.1:9411/api/v2/spans`. A URL
    /// without a path gets `/api/v2/spans`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Send to this cluster's first endpoint instead of `endpoint`'s host and port (a
    /// path in `endpoint` is kept). Envoy: `collector_cluster` with
    /// `collector_endpoint` as the path.
    #[serde(default)]
    pub cluster: Option<String>,
    /// The `Host` of the export requests; default the collector's `host:port`. Envoy:
    /// `collector_hostname`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// New traces get 128-bit ids; false: 64-bit, as Envoy's Zipkin tracer makes unless
    /// `trace_id_128bit`.
    #[serde(default)]
    pub trace_id_128bit: bool,
    /// Each export gives up after this long.
    #[serde(
        default = "default_export_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
}

impl ZipkinExporter {
    /// The URL spans are posted to, or why `endpoint` is not one.
    pub fn url(&self) -> Result<String, String> {
        let given = self
            .endpoint
            .as_deref()
            .unwrap_or("http://127.0.0.1:9411")
            .trim();
        let (url, path) = http_url(given)?;
        Ok(match path {
            "" | "/" => format!("{}/api/v2/spans", url.trim_end_matches('/')),
            _ => url,
        })
    }
}

/// `given` as an `http://host:port[/path]` URL, with its path; refuses other schemes and
/// a missing port.
fn http_url(given: &str) -> Result<(String, &str), String> {
    let url = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let (scheme, rest) = given.split_once("://").unwrap_or(("http", given));
    if scheme != "http" {
        return Err(format!(
            "scheme {scheme:?} is not supported (only plain http:// to a local collector)"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    if authority.is_empty() || port.and_then(|p| p.parse::<u16>().ok()).is_none() {
        return Err(format!("{given:?} has no host:port"));
    }
    Ok((url, path))
}

/// `url` sent to `address` (`host:port`) instead of its own host and port: what an
/// exporter naming a `cluster` sends to.
pub fn with_address(url: &str, address: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("http://{address}{path}")
}

impl Default for OtlpExporter {
    fn default() -> Self {
        Self {
            protocol: OtlpProtocol::default(),
            endpoint: None,
            cluster: None,
            timeout: default_export_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpExporter {
    /// The URL the exporter sends to, or why `endpoint` is not one.
    pub fn url(&self) -> Result<String, String> {
        let given = match &self.endpoint {
            Some(e) => e.trim(),
            None => match self.protocol {
                OtlpProtocol::Grpc => "http://127.0.0.1:4317",
                OtlpProtocol::HttpProtobuf => "http://127.0.0.1:4318",
            },
        };
        let (url, path) = http_url(given)?;
        let no_path = matches!(path, "" | "/");
        Ok(match self.protocol {
            OtlpProtocol::HttpProtobuf if no_path => {
                format!("{}/v1/traces", url.trim_end_matches('/'))
            }
            _ => url,
        })
    }
}

fn default_random_sampling() -> f64 {
    100.0
}
fn default_service_name() -> String {
    "sinew".into()
}
fn default_max_queued_spans() -> usize {
    2048
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Validation of one listener's `tracing`.
pub fn check(path: &str, tracing: &Tracing, errors: &mut Vec<ConfigError>) {
    if !(0.0..=100.0).contains(&tracing.random_sampling) {
        errors.push(ConfigError::new(
            format!("{path}.random_sampling"),
            format!(
                "must be a percentage from 0 to 100, not {}",
                tracing.random_sampling
            ),
        ));
    }
    if tracing.service_name.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.service_name"),
            "must not be empty",
        ));
    }
    if tracing.max_queued_spans == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_queued_spans"),
            "must be at least 1",
        ));
    }
    if let Err(e) = tracing.opentelemetry.url() {
        errors.push(ConfigError::new(
            format!("{path}.opentelemetry.endpoint"),
            e,
        ));
    }
    if tracing.opentelemetry.timeout.is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.opentelemetry.timeout"),
            "must be more than 0",
        ));
    }
    if let Some(zipkin) = &tracing.zipkin {
        if tracing.opentelemetry != OtlpExporter::default() {
            errors.push(ConfigError::new(
                format!("{path}.zipkin"),
                "spans go to one collector: `opentelemetry` or `zipkin`, not both",
            ));
        }
        if let Err(e) = zipkin.url() {
            errors.push(ConfigError::new(format!("{path}.zipkin.endpoint"), e));
        }
        if zipkin.timeout.is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.zipkin.timeout"),
                "must be more than 0",
            ));
        }
    }
}

impl Tracing {
    /// The cluster the exporter sends to, if it names one, with its field path.
    pub fn exporter_cluster(&self) -> Option<(&'static str, &str)> {
        match &self.zipkin {
            Some(z) => z.cluster.as_deref().map(|c| ("zipkin.cluster", c)),
            None => (self.opentelemetry.cluster.as_deref()).map(|c| ("opentelemetry.cluster", c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter(protocol: OtlpProtocol, endpoint: Option<&str>) -> OtlpExporter {
        OtlpExporter {
            protocol,
            endpoint: endpoint.map(str::to_string),
            ..OtlpExporter::default()
        }
    }

    #[test]
    fn zipkin_endpoints_default_to_api_v2_spans_and_a_cluster_address_stands_in_for_the_host() {
        let zipkin = |endpoint: Option<&str>| ZipkinExporter {
            endpoint: endpoint.map(str::to_string),
            cluster: None,
            hostname: None,
            trace_id_128bit: false,
            timeout: default_export_timeout(),
        };
        assert_eq!(
            zipkin(None).url().unwrap(),
            "http://127.0.0.1:9411/api/v2/spans"
        );
        assert_eq!(
            zipkin(Some("zipkin:9411")).url().unwrap(),
            "http://zipkin:9411/api/v2/spans"
        );
        let custom = zipkin(Some("http://c:1/custom/spans")).url().unwrap();
        assert_eq!(custom, "http://c:1/custom/spans");
        assert_eq!(
            with_address(&custom, "10.0.0.7:9411"),
            "http://10.0.0.7:9411/custom/spans"
        );
        assert!(zipkin(Some("https://c:1")).url().is_err());
    }

    #[test]
    fn default_endpoints_are_the_local_collector() {
        assert_eq!(
            exporter(OtlpProtocol::Grpc, None).url().unwrap(),
            "http://127.0.0.1:4317"
        );
        assert_eq!(
            exporter(OtlpProtocol::HttpProtobuf, None).url().unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
    }

    #[test]
    fn http_endpoint_without_path_gets_v1_traces_and_with_path_is_kept() {
        let e = exporter(OtlpProtocol::HttpProtobuf, Some("127.0.0.1:9000"));
        assert_eq!(e.url().unwrap(), "http://127.0.0.1:9000/v1/traces");
        let e = exporter(
            OtlpProtocol::HttpProtobuf,
            Some("http://c:9000/otlp/traces"),
        );
        assert_eq!(e.url().unwrap(), "http://c:9000/otlp/traces");
    }

    #[test]
    fn tls_and_portless_endpoints_are_rejected() {
        assert!(exporter(OtlpProtocol::Grpc, Some("https://c:4317"))
            .url()
            .unwrap_err()
            .contains("https"));
        assert!(exporter(OtlpProtocol::Grpc, Some("http://c"))
            .url()
            .unwrap_err()
            .contains("no host:port"));
    }
}
