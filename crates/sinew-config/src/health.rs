//! Endpoint health config: active health checks (`health_checks`), passive outlier
//! detection (`outlier_detection`) and the panic threshold (`healthy_panic_threshold`).
//!
//! Field names and defaults are Envoy's (`config.core.v3.HealthCheck`,
//! `config.cluster.v3.OutlierDetection`, `common_lb_config.healthy_panic_threshold`), so
//! xDS maps onto them one to one. Range checks live here too, called from `validate.rs`.

use serde::Deserialize;
use std::time::Duration;

use crate::duration;
use crate::ConfigError;

/// One active health check of a cluster's endpoints (Envoy's `HealthCheck`). Exactly one
/// of `http_health_check`, `tcp_health_check` and `grpc_health_check` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A check that has not succeeded within this time failed (Envoy `timeout`).
    #[serde(deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
    /// Time between checks of an endpoint (Envoy `interval`).
    #[serde(deserialize_with = "duration::deserialize")]
    pub interval: Duration,
    /// Up to this much random time is added to each interval (Envoy `interval_jitter`).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub interval_jitter: Duration,
    /// Also added to each interval: up to this percentage of `interval` (Envoy
    /// `interval_jitter_percent`; with `interval_jitter` both add up).
    #[serde(default)]
    pub interval_jitter_percent: u32,
    /// An endpoint whose answer says it is unhealthy (an HTTP status in neither
    /// `expected_statuses` nor `retriable_statuses`, a gRPC answer other than `SERVING`)
    /// is taken out at once, without waiting for `unhealthy_threshold`; connection
    /// failures and timeouts still count towards it. Envoy always works so; Sinew's
    /// default counts every failure. Envoy bootstraps and xDS set it.
    #[serde(default)]
    pub answers_fail_at_once: bool,
    /// Failed checks in a row before a healthy endpoint is marked unhealthy (Envoy
    /// `unhealthy_threshold`; Envoy requires it, Sinew defaults to 3).
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row before an unhealthy endpoint is marked healthy again (Envoy
    /// `healthy_threshold`; Envoy requires it, Sinew defaults to 2). A new endpoint needs
    /// only one, as in Envoy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default)]
    pub http_health_check: Option<HttpHealthCheck>,
    #[serde(default)]
    pub tcp_health_check: Option<TcpHealthCheck>,
    #[serde(default)]
    pub grpc_health_check: Option<GrpcHealthCheck>,
}

fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_healthy_threshold() -> u32 {
    2
}

/// An HTTP GET whose status must be in `expected_statuses` (Envoy `HttpHealthCheck`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    pub path: String,
    /// The Host (HTTP/2: `:authority`) sent; defaults to the cluster name, as in Envoy.
    #[serde(default)]
    pub host: Option<String>,
    /// Half-open ranges `[start, end)` of healthy statuses; default `[{start: 200, end: 201}]`.
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// Statuses that fail the check but count towards `unhealthy_threshold` even with
    /// `answers_fail_at_once` (Envoy `retriable_statuses`); `expected_statuses` wins where
    /// both hold a status.
    #[serde(default)]
    pub retriable_statuses: Vec<StatusRange>,
    /// The protocol of the check: `http1` or `http2` (h2c, or h2 over TLS). Unset: the
    /// cluster's `protocol` (Envoy `codec_client_type`, whose default is HTTP/1.1). A TLS
    /// connection that negotiates a protocol over ALPN speaks that one.
    #[serde(default)]
    pub codec_client_type: Option<HealthCheckCodec>,
    /// Headers added to each check request (Envoy `request_headers_to_add`), replacing
    /// any of the same name Sinew sends (`host`, `user-agent`).
    #[serde(default)]
    pub request_headers_to_add: Vec<HealthCheckHeader>,
    /// Headers left out of each check request (Envoy `request_headers_to_remove`): only
    /// `user-agent` is sent besides the Host, so that is the one this can remove.
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
}

/// The HTTP version an HTTP health check speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckCodec {
    Http1,
    Http2,
}

/// One header of a health check request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckHeader {
    pub name: String,
    pub value: String,
}

/// Statuses `start` (inclusive) to `end` (exclusive), as Envoy's `type.v3.Int64Range`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    pub start: u16,
    pub end: u16,
}

fn default_expected_statuses() -> Vec<StatusRange> {
    vec![StatusRange {
        start: 200,
        end: 201,
    }]
}

/// A TCP connect, optionally sending bytes and expecting bytes back (Envoy `TcpHealthCheck`).
/// Without `send` and `receive` a connection that opens is a pass.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {
    #[serde(default)]
    pub send: Option<Payload>,
    /// Each block must be found in the reply, in order, not necessarily next to each other.
    #[serde(default)]
    pub receive: Vec<Payload>,
}

/// Bytes to send or expect. `text` is HEX-encoded, as Envoy's `Payload.text`
/// (`"50494e47"` is `PING`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub text: String,
}

impl Payload {
    /// The bytes `text` stands for.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let t = self.text.as_bytes();
        if !t.len().is_multiple_of(2) {
            return Err("hex text must have an even number of digits".into());
        }
        t.chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or_else(|| {
                        format!(
                            "{:?} is not hex (text is hex-encoded, as in Envoy)",
                            self.text
                        )
                    })
            })
            .collect()
    }
}

/// `grpc.health.v1.Health/Check` over HTTP/2; healthy when the answer is `SERVING`
/// (Envoy `GrpcHealthCheck`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The `service` asked about; empty asks about the server as a whole.
    #[serde(default)]
    pub service_name: String,
    /// `:authority` sent; defaults to the cluster name, as in Envoy.
    #[serde(default)]
    pub authority: Option<String>,
}

/// Passive health checking: endpoints that fail requests are ejected for a while (Envoy
/// `OutlierDetection`, same names and defaults). Percentages are 0-100.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// 5xx answers in a row (with local-origin failures mapped to 503/504 unless split).
    pub consecutive_5xx: u32,
    /// Time between sweeps: success-rate and failure-percentage checks, and returns.
    #[serde(deserialize_with = "duration::deserialize")]
    pub interval: Duration,
    /// An ejection lasts this times the number of times the endpoint was ejected.
    #[serde(deserialize_with = "duration::deserialize")]
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_ejection_time: Duration,
    /// At most this share of the cluster is ejected at once (one endpoint always may be).
    pub max_ejection_percent: u32,
    pub enforcing_consecutive_5xx: u32,
    /// 502, 503 or 504 in a row.
    pub consecutive_gateway_failure: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    /// Count connect failures, resets and timeouts apart from upstream answers.
    pub split_external_local_origin_errors: bool,
    /// Local-origin failures in a row (only with `split_external_local_origin_errors`).
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    /// Ejected below mean − (this / 1000) × stdev of the cluster's success rates.
    pub success_rate_stdev_factor: u32,
    pub enforcing_success_rate: u32,
    /// Ejected at or above this failure percentage.
    pub failure_percentage_threshold: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    pub failure_percentage_minimum_hosts: u32,
    pub failure_percentage_request_volume: u32,
    /// A passed active health check returns an ejected endpoint at once.
    pub successful_active_health_check_uneject_host: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_local_origin_success_rate: 100,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
            failure_percentage_threshold: 85,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            failure_percentage_minimum_hosts: 5,
            failure_percentage_request_volume: 50,
            successful_active_health_check_uneject_host: true,
        }
    }
}

/// Envoy's `common_lb_config.healthy_panic_threshold` default: 50%.
pub fn default_healthy_panic_threshold() -> f64 {
    50.0
}

/// Range checks of a cluster's health fields; `p` is the cluster's path.
pub(crate) fn check(
    p: &str,
    health_checks: &[HealthCheck],
    outlier: Option<&OutlierDetection>,
    panic_threshold: f64,
    errors: &mut Vec<ConfigError>,
) {
    let mut err = |path: String, message: &str| errors.push(ConfigError::new(path, message));
    if health_checks.len() > 1 {
        err(
            format!("{p}.health_checks"),
            "only one health check per cluster is supported",
        );
    }
    for (i, hc) in health_checks.iter().enumerate() {
        let hp = format!("{p}.health_checks[{i}]");
        if hc.timeout.is_zero() {
            err(format!("{hp}.timeout"), "must be positive");
        }
        if hc.interval.is_zero() {
            err(format!("{hp}.interval"), "must be positive");
        }
        if hc.interval_jitter_percent > 100 {
            err(
                format!("{hp}.interval_jitter_percent"),
                "is a percentage: must be 0 to 100",
            );
        }
        if hc.unhealthy_threshold == 0 {
            err(format!("{hp}.unhealthy_threshold"), "must be at least 1");
        }
        if hc.healthy_threshold == 0 {
            err(format!("{hp}.healthy_threshold"), "must be at least 1");
        }
        let kinds = [
            hc.http_health_check.is_some(),
            hc.tcp_health_check.is_some(),
            hc.grpc_health_check.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            err(
                hp.clone(),
                "set exactly one of `http_health_check`, `tcp_health_check` and `grpc_health_check`",
            );
        }
        if let Some(http) = &hc.http_health_check {
            if !http.path.starts_with('/') {
                err(
                    format!("{hp}.http_health_check.path"),
                    "must start with `/`",
                );
            }
            if http.expected_statuses.is_empty() {
                err(
                    format!("{hp}.http_health_check.expected_statuses"),
                    "must list at least one range",
                );
            }
            let ranges = http
                .expected_statuses
                .iter()
                .enumerate()
                .map(|(j, r)| ("expected_statuses", j, r))
                .chain(
                    http.retriable_statuses
                        .iter()
                        .enumerate()
                        .map(|(j, r)| ("retriable_statuses", j, r)),
                );
            for (field, j, r) in ranges {
                if !(100..=600).contains(&r.start)
                    || !(100..=600).contains(&r.end)
                    || r.start >= r.end
                {
                    err(
                        format!("{hp}.http_health_check.{field}[{j}]"),
                        "must be a range [start, end) with 100 <= start < end <= 600",
                    );
                }
            }
            for (j, h) in http.request_headers_to_add.iter().enumerate() {
                let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if h.name.is_empty() || !h.name.chars().all(token) {
                    err(
                        format!("{hp}.http_health_check.request_headers_to_add[{j}].name"),
                        "is not a header name",
                    );
                }
                if h.value
                    .chars()
                    .any(|c| !c.is_ascii() || (c.is_ascii_control() && c != '\t'))
                {
                    err(
                        format!("{hp}.http_health_check.request_headers_to_add[{j}].value"),
                        "is not a header value",
                    );
                }
            }
        }
        if let Some(tcp) = &hc.tcp_health_check {
            let payloads = tcp
                .send
                .iter()
                .map(|s| (format!("{hp}.tcp_health_check.send.text"), s))
                .chain(
                    tcp.receive
                        .iter()
                        .enumerate()
                        .map(|(j, r)| (format!("{hp}.tcp_health_check.receive[{j}].text"), r)),
                );
            for (path, payload) in payloads {
                if let Err(e) = payload.bytes() {
                    err(path, &e);
                }
            }
        }
    }
    if let Some(od) = outlier {
        let op = format!("{p}.outlier_detection");
        if od.interval.is_zero() {
            err(format!("{op}.interval"), "must be positive");
        }
        if od.base_ejection_time.is_zero() {
            err(format!("{op}.base_ejection_time"), "must be positive");
        }
        if od.max_ejection_time < od.base_ejection_time {
            err(
                format!("{op}.max_ejection_time"),
                "must be at least base_ejection_time",
            );
        }
        let percents = [
            ("max_ejection_percent", od.max_ejection_percent),
            ("enforcing_consecutive_5xx", od.enforcing_consecutive_5xx),
            (
                "enforcing_consecutive_gateway_failure",
                od.enforcing_consecutive_gateway_failure,
            ),
            (
                "enforcing_consecutive_local_origin_failure",
                od.enforcing_consecutive_local_origin_failure,
            ),
            (
                "enforcing_local_origin_success_rate",
                od.enforcing_local_origin_success_rate,
            ),
            ("enforcing_success_rate", od.enforcing_success_rate),
            (
                "failure_percentage_threshold",
                od.failure_percentage_threshold,
            ),
            (
                "enforcing_failure_percentage",
                od.enforcing_failure_percentage,
            ),
            (
                "enforcing_failure_percentage_local_origin",
                od.enforcing_failure_percentage_local_origin,
            ),
        ];
        for (field, value) in percents {
            if value > 100 {
                err(format!("{op}.{field}"), "is a percentage: must be 0 to 100");
            }
        }
        let counts = [
            ("consecutive_5xx", od.consecutive_5xx),
            (
                "consecutive_gateway_failure",
                od.consecutive_gateway_failure,
            ),
            (
                "consecutive_local_origin_failure",
                od.consecutive_local_origin_failure,
            ),
            (
                "success_rate_request_volume",
                od.success_rate_request_volume,
            ),
            (
                "failure_percentage_request_volume",
                od.failure_percentage_request_volume,
            ),
        ];
        for (field, value) in counts {
            if value == 0 {
                err(format!("{op}.{field}"), "must be at least 1");
            }
        }
    }
    if !(0.0..=100.0).contains(&panic_threshold) {
        err(
            format!("{p}.healthy_panic_threshold"),
            "is a percentage: must be 0 to 100 (0 disables panic mode)",
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn errors(cluster_fields: &str) -> String {
        let yaml = format!(
            "clusters:\n  - name: c\n    endpoints: [{{address: 127.0.0.1:1}}]\n{cluster_fields}"
        );
        match load_str("t.yaml", &yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn outlier_detection_defaults_are_envoys() {
        let loaded = load_str(
            "t.yaml",
            "clusters:\n  - name: c\n    endpoints: []\n    outlier_detection: {}\n",
        )
        .unwrap();
        let c = &loaded.config.clusters[0];
        let od = c.outlier_detection.as_ref().unwrap();
        assert_eq!(od.consecutive_5xx, 5);
        assert_eq!(od.interval.as_secs(), 10);
        assert_eq!(od.base_ejection_time.as_secs(), 30);
        assert_eq!(od.max_ejection_time.as_secs(), 300);
        assert_eq!(od.max_ejection_percent, 10);
        assert_eq!(od.enforcing_consecutive_gateway_failure, 0);
        assert_eq!(od.success_rate_stdev_factor, 1900);
        assert_eq!(od.failure_percentage_threshold, 85);
        assert_eq!(od.enforcing_failure_percentage, 0);
        assert_eq!(c.healthy_panic_threshold, 50.0);
        assert!(c.health_checks.is_empty());
    }

    #[test]
    fn accepts_each_kind_of_health_check() {
        for kind in [
            "http_health_check: {path: /healthz, expected_statuses: [{start: 200, end: 300}]}",
            "tcp_health_check: {send: {text: '50494e47'}, receive: [{text: '504f4e47'}]}",
            "grpc_health_check: {service_name: svc}",
        ] {
            let out = errors(&format!(
                "    health_checks:\n      - {{timeout: 1s, interval: 5s, {kind}}}\n"
            ));
            assert_eq!(out, "", "{kind}");
        }
    }

    #[test]
    fn rejects_bad_health_checks_with_their_paths() {
        let out = errors(
            "    health_checks:\n      - timeout: 0\n        interval: 1s\n        healthy_threshold: 0\n        tcp_health_check: {send: {text: 'PING'}}\n        http_health_check: {path: x, expected_statuses: [{start: 300, end: 200}]}\n",
        );
        for want in [
            "clusters[0].health_checks[0].timeout: must be positive",
            "clusters[0].health_checks[0].healthy_threshold: must be at least 1",
            "clusters[0].health_checks[0]: set exactly one of",
            "clusters[0].health_checks[0].tcp_health_check.send.text: \"PING\" is not hex",
            "clusters[0].health_checks[0].http_health_check.path: must start with `/`",
            "clusters[0].health_checks[0].http_health_check.expected_statuses[0]: must be a range",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }

    #[test]
    fn rejects_bad_retriable_statuses_jitter_percent_and_check_headers() {
        let out = errors(
            "    health_checks:\n      - timeout: 1s\n        interval: 1s\n        interval_jitter_percent: 101\n        http_health_check: {path: /h, retriable_statuses: [{start: 504, end: 503}], request_headers_to_add: [{name: 'bad name', value: ok}, {name: x-ok, value: \"a\\nb\"}]}\n",
        );
        for want in [
            "health_checks[0].interval_jitter_percent: is a percentage",
            "http_health_check.retriable_statuses[0]: must be a range",
            "http_health_check.request_headers_to_add[0].name: is not a header name",
            "http_health_check.request_headers_to_add[1].value: is not a header value",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }

    #[test]
    fn rejects_out_of_range_outlier_fields_and_panic_threshold() {
        let out = errors(
            "    outlier_detection: {max_ejection_percent: 101, consecutive_5xx: 0, base_ejection_time: 10s, max_ejection_time: 1s}\n    healthy_panic_threshold: 120\n",
        );
        for want in [
            "outlier_detection.max_ejection_percent: is a percentage",
            "outlier_detection.consecutive_5xx: must be at least 1",
            "outlier_detection.max_ejection_time: must be at least base_ejection_time",
            "clusters[0].healthy_panic_threshold: is a percentage",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }
}
