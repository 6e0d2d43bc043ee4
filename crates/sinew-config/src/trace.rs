//! Distributed tracing config for an HTTP listener (Envoy: the HTTP connection manager's
//! `tracing`, with the OpenTelemetry tracer as provider): how many requests start a
//! sampled trace, and where spans are exported over OTLP.

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
    /// Each export gives up after this long.
    #[serde(
        default = "default_export_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
}

impl Default for OtlpExporter {
    fn default() -> Self {
        Self {
            protocol: OtlpProtocol::default(),
            endpoint: None,
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
        let url = if given.contains("://") {
            given.to_string()
        } else {
            format!("http://{given}")
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("", &url));
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
