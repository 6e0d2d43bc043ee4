//! A cluster's `health_checks` (`config.core.v3.HealthCheck`) mapped onto Sinew's active
//! health checks, which use Envoy's names: timings, thresholds and the HTTP, TCP and gRPC
//! checkers map field for field. The mapped check always sets `answers_fail_at_once`, so
//! an endpoint that answers it is unhealthy leaves at once as in Envoy (Sinew's own
//! default counts it towards `unhealthy_threshold`).
//!
//! Refused by name, because each would change which endpoints take traffic or when:
//! per-state intervals (`unhealthy_interval`, `unhealthy_edge_interval`,
//! `healthy_edge_interval`), `initial_jitter`, custom checkers, HTTP checks that send a
//! body or match one, other methods than GET, HTTP/3, gRPC `initial_metadata`, TLS
//! options and transport socket matches for checks, and health event logs.

use envoy_types::pb::envoy::config::core::v3::health_check::{
    GrpcHealthCheck, HealthChecker, HttpHealthCheck, Payload, TcpHealthCheck,
};
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, HealthCheck};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use serde_json::{json, Map, Value};

use crate::convert::duration;
use crate::{Ctx, XdsError};

/// `health_checks[i]` as the model's JSON; `path` is `health_checks[i]`.
pub(crate) fn map(ctx: &Ctx, path: &str, check: &HealthCheck) -> Result<Value, XdsError> {
    let mut rest = check.clone();
    let mut out = Map::new();
    for (key, value) in [
        ("timeout", rest.timeout.take()),
        ("interval", rest.interval.take()),
        ("interval_jitter", rest.interval_jitter.take()),
    ] {
        if let Some(d) = value {
            out.insert(key.into(), json!(duration(&d)));
        }
    }
    for key in ["timeout", "interval"] {
        if !out.contains_key(key) {
            return Err(ctx.error(format!("{path}.{key}"), "is required"));
        }
    }
    let percent = std::mem::take(&mut rest.interval_jitter_percent);
    if percent != 0 {
        out.insert("interval_jitter_percent".into(), json!(percent));
    }
    // Envoy requires both thresholds; a file without them would not load there.
    for (key, value) in [
        ("unhealthy_threshold", rest.unhealthy_threshold.take()),
        ("healthy_threshold", rest.healthy_threshold.take()),
    ] {
        match value {
            Some(v) => out.insert(key.into(), json!(v.value)),
            None => return Err(ctx.error(format!("{path}.{key}"), "is required")),
        };
    }
    out.insert("answers_fail_at_once".into(), json!(true));

    // Sinew checks every endpoint at `interval` from the start: Envoy does the same once
    // the cluster has carried traffic, and before that waits `no_traffic_interval`
    // (default 60s) between checks, so Sinew's view is only ever fresher.
    rest.no_traffic_interval = None;
    rest.no_traffic_healthy_interval = None;
    // Sinew opens a connection per check (Envoy's `reuse_connection: false`); which
    // endpoints pass does not depend on it.
    rest.reuse_connection = None;
    // These only choose which check results Envoy logs; the log itself is refused.
    rest.always_log_health_check_failures = false;
    rest.always_log_health_check_success = false;

    match rest.health_checker.take() {
        Some(HealthChecker::HttpHealthCheck(http)) => {
            out.insert(
                "http_health_check".into(),
                http_check(ctx, &format!("{path}.http_health_check"), http)?,
            );
        }
        Some(HealthChecker::TcpHealthCheck(tcp)) => {
            out.insert(
                "tcp_health_check".into(),
                tcp_check(ctx, &format!("{path}.tcp_health_check"), tcp)?,
            );
        }
        Some(HealthChecker::GrpcHealthCheck(grpc)) => {
            out.insert(
                "grpc_health_check".into(),
                grpc_check(ctx, &format!("{path}.grpc_health_check"), grpc)?,
            );
        }
        Some(HealthChecker::CustomHealthCheck(custom)) => {
            return Err(ctx.error(
                format!("{path}.custom_health_check"),
                format!(
                    "custom health checkers ({}) are not supported by Sinew; \
                     http_health_check, tcp_health_check and grpc_health_check are",
                    custom.name
                ),
            ))
        }
        None => {
            return Err(ctx.error(
                path,
                "needs one of http_health_check, tcp_health_check and grpc_health_check",
            ))
        }
    }
    ctx.only_supported(path, &rest)?;
    Ok(Value::Object(out))
}

fn ranges(ctx: &Ctx, path: &str, ranges: &[Int64Range]) -> Result<Value, XdsError> {
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        // Envoy allows statuses 100 to 599 only; Sinew's validation says so too, but a
        // number that does not fit the model's type must be caught here.
        let fits = |n: i64| (100..=600).contains(&n);
        if !fits(r.start) || !fits(r.end) || r.start >= r.end {
            return Err(ctx.error(
                format!("{path}[{i}]"),
                "must be a range [start, end) with 100 <= start < end <= 600",
            ));
        }
        out.push(json!({"start": r.start, "end": r.end}));
    }
    Ok(Value::Array(out))
}

fn http_check(ctx: &Ctx, path: &str, http: HttpHealthCheck) -> Result<Value, XdsError> {
    use envoy_types::pb::envoy::config::core::v3::RequestMethod;
    use envoy_types::pb::envoy::r#type::v3::CodecClientType;
    let mut rest = http;
    let mut out = Map::new();
    let check_path = std::mem::take(&mut rest.path);
    if check_path.is_empty() {
        return Err(ctx.error(format!("{path}.path"), "is required"));
    }
    out.insert("path".into(), json!(check_path));
    let host = std::mem::take(&mut rest.host);
    if !host.is_empty() {
        out.insert("host".into(), json!(host));
    }
    let expected = std::mem::take(&mut rest.expected_statuses);
    if !expected.is_empty() {
        out.insert(
            "expected_statuses".into(),
            ranges(ctx, &format!("{path}.expected_statuses"), &expected)?,
        );
    }
    let retriable = std::mem::take(&mut rest.retriable_statuses);
    if !retriable.is_empty() {
        out.insert(
            "retriable_statuses".into(),
            ranges(ctx, &format!("{path}.retriable_statuses"), &retriable)?,
        );
    }
    // Envoy checks over HTTP/1.1 unless told otherwise, whatever the cluster speaks.
    let codec = match CodecClientType::try_from(std::mem::take(&mut rest.codec_client_type)) {
        Ok(CodecClientType::Http1) => "http1",
        Ok(CodecClientType::Http2) => "http2",
        _ => {
            return Err(ctx.error(
                format!("{path}.codec_client_type"),
                "only HTTP1 and HTTP2 are supported by Sinew",
            ))
        }
    };
    out.insert("codec_client_type".into(), json!(codec));
    match RequestMethod::try_from(std::mem::take(&mut rest.method)) {
        Ok(RequestMethod::MethodUnspecified | RequestMethod::Get) => {}
        _ => {
            return Err(ctx.error(
                format!("{path}.method"),
                "only GET is supported by Sinew's health checks",
            ))
        }
    }
    let headers = request_headers(
        ctx,
        &format!("{path}.request_headers_to_add"),
        std::mem::take(&mut rest.request_headers_to_add),
    )?;
    if !headers.is_empty() {
        out.insert("request_headers_to_add".into(), Value::Array(headers));
    }
    let remove = std::mem::take(&mut rest.request_headers_to_remove);
    if !remove.is_empty() {
        out.insert("request_headers_to_remove".into(), json!(remove));
    }
    ctx.only_supported(path, &rest)?;
    Ok(Value::Object(out))
}

/// Literal headers only: a value with `%` would be one of Envoy's formatters.
fn request_headers(
    ctx: &Ctx,
    path: &str,
    add: Vec<HeaderValueOption>,
) -> Result<Vec<Value>, XdsError> {
    let mut out = Vec::new();
    for (i, option) in add.into_iter().enumerate() {
        let opath = format!("{path}[{i}]");
        let mut option = option;
        let Some(mut header) = option.header.take() else {
            return Err(ctx.error(format!("{opath}.header"), "is required"));
        };
        let name = std::mem::take(&mut header.key);
        let value = std::mem::take(&mut header.value);
        if value.contains('%') {
            return Err(ctx.error(
                format!("{opath}.header.value"),
                "command operators (%...%) are not supported in health check headers by Sinew",
            ));
        }
        ctx.only_supported(format_args!("{opath}.header"), &header)?;
        // The check request has only Host and User-Agent of its own: appending to either
        // would send two, which Sinew does not; for any other name append and set agree.
        let append = match option.append.take() {
            Some(a) => a.value,
            None => option.append_action == 0,
        };
        option.append_action = match option.append_action {
            0 | 2 => 0,
            other => other,
        };
        let own = name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("user-agent");
        if append && own {
            return Err(ctx.error(
                format!("{opath}.append_action"),
                "appending to the check's own Host or User-Agent is not supported by Sinew; \
                 use OVERWRITE_IF_EXISTS_OR_ADD",
            ));
        }
        ctx.only_supported(&opath, &option)?;
        out.push(json!({"name": name, "value": value}));
    }
    Ok(out)
}

fn payload(ctx: &Ctx, path: &str, p: Payload) -> Result<Value, XdsError> {
    use envoy_types::pb::envoy::config::core::v3::health_check::payload::Payload as P;
    let hex = match p.payload {
        Some(P::Text(text)) => text,
        // Sinew's payloads are hex text, as Envoy's `text`; binary is written out as hex.
        Some(P::Binary(bytes)) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        None => return Err(ctx.error(path, "needs text or binary")),
    };
    Ok(json!({ "text": hex }))
}

fn tcp_check(ctx: &Ctx, path: &str, tcp: TcpHealthCheck) -> Result<Value, XdsError> {
    let mut rest = tcp;
    let mut out = Map::new();
    if let Some(send) = rest.send.take() {
        out.insert("send".into(), payload(ctx, &format!("{path}.send"), send)?);
    }
    let mut receive = Vec::new();
    for (i, p) in std::mem::take(&mut rest.receive).into_iter().enumerate() {
        receive.push(payload(ctx, &format!("{path}.receive[{i}]"), p)?);
    }
    if !receive.is_empty() {
        out.insert("receive".into(), Value::Array(receive));
    }
    ctx.only_supported(path, &rest)?;
    Ok(Value::Object(out))
}

fn grpc_check(ctx: &Ctx, path: &str, grpc: GrpcHealthCheck) -> Result<Value, XdsError> {
    let mut rest = grpc;
    let mut out = Map::new();
    let service = std::mem::take(&mut rest.service_name);
    if !service.is_empty() {
        out.insert("service_name".into(), json!(service));
    }
    let authority = std::mem::take(&mut rest.authority);
    if !authority.is_empty() {
        out.insert("authority".into(), json!(authority));
    }
    ctx.only_supported(path, &rest)?;
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use sinew_config::health::{HealthCheckCodec, HealthCheckHeader, StatusRange};
    use sinew_config::model::HealthCheck;
    use std::time::Duration;

    use crate::bootstrap::load_str;
    use crate::test_fixtures::http_listener;

    /// The test bootstrap with `checks` (YAML list items at the cluster's fields' depth)
    /// as the `app` cluster's `health_checks`.
    fn bootstrap(checks: &str) -> String {
        format!("{}    health_checks:\n{checks}", http_listener(""))
    }

    fn mapped(checks: &str) -> HealthCheck {
        let b = load_str("envoy.yaml", &bootstrap(checks)).unwrap_or_else(|d| panic!("{d}"));
        let clusters = &b.loaded.config.clusters;
        assert_eq!(clusters[0].health_checks.len(), 1);
        clusters[0].health_checks[0].clone()
    }

    fn error_of(checks: &str) -> String {
        match load_str("envoy.yaml", &bootstrap(checks)) {
            Ok(_) => panic!("accepted:\n{checks}"),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn an_http_check_maps_field_for_field_and_fails_at_once_on_an_unhealthy_answer() {
        let hc = mapped(
            r#"    - timeout: 0.5s
      interval: 2s
      interval_jitter: 0.1s
      interval_jitter_percent: 10
      no_traffic_interval: 60s
      reuse_connection: true
      unhealthy_threshold: 3
      healthy_threshold: 2
      http_health_check:
        path: /healthz
        host: health.internal
        expected_statuses: [{start: 200, end: 300}]
        retriable_statuses: [{start: 503, end: 504}]
        request_headers_to_add:
        - header: {key: x-check, value: envoy}
        - header: {key: user-agent, value: probe}
          append_action: OVERWRITE_IF_EXISTS_OR_ADD
        request_headers_to_remove: [x-remove-me]
"#,
        );
        assert_eq!(hc.timeout, Duration::from_millis(500));
        assert_eq!(hc.interval, Duration::from_secs(2));
        assert_eq!(hc.interval_jitter, Duration::from_millis(100));
        assert_eq!(hc.interval_jitter_percent, 10);
        assert_eq!((hc.unhealthy_threshold, hc.healthy_threshold), (3, 2));
        assert!(
            hc.answers_fail_at_once,
            "Envoy's rule for unhealthy answers"
        );
        let http = hc.http_health_check.unwrap();
        assert_eq!(http.path, "/healthz");
        assert_eq!(http.host.as_deref(), Some("health.internal"));
        assert_eq!(
            http.expected_statuses,
            [StatusRange {
                start: 200,
                end: 300
            }]
        );
        assert_eq!(
            http.retriable_statuses,
            [StatusRange {
                start: 503,
                end: 504
            }]
        );
        assert_eq!(
            http.codec_client_type,
            Some(HealthCheckCodec::Http1),
            "Envoy's default, whatever the cluster speaks"
        );
        assert_eq!(
            http.request_headers_to_add,
            [
                HealthCheckHeader {
                    name: "x-check".into(),
                    value: "envoy".into()
                },
                HealthCheckHeader {
                    name: "user-agent".into(),
                    value: "probe".into()
                }
            ]
        );
        assert_eq!(http.request_headers_to_remove, ["x-remove-me"]);
    }

    #[test]
    fn tcp_and_grpc_checks_map_with_binary_payloads_written_as_hex() {
        let hc = mapped(
            r#"    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      tcp_health_check:
        send: {text: "50494e47"}
        receive: [{binary: "UE9ORw=="}]
"#,
        );
        let tcp = hc.tcp_health_check.unwrap();
        assert_eq!(tcp.send.unwrap().text, "50494e47");
        assert_eq!(tcp.receive[0].text, "504f4e47", "PONG");

        let hc = mapped(
            r#"    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 1
      healthy_threshold: 1
      grpc_health_check: {service_name: svc, authority: svc.internal}
"#,
        );
        let grpc = hc.grpc_health_check.unwrap();
        assert_eq!(grpc.service_name, "svc");
        assert_eq!(grpc.authority.as_deref(), Some("svc.internal"));
        assert!(hc.answers_fail_at_once);
    }

    #[test]
    fn what_sinew_cannot_honour_is_refused_by_name() {
        let base = "    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n      healthy_threshold: 2\n";
        let http = "      http_health_check: {path: /healthz}\n";
        for (extra, checker, want) in [
            ("      unhealthy_interval: 5s\n", http, "health_checks[0].unhealthy_interval: is not supported by Sinew"),
            ("      unhealthy_edge_interval: 5s\n", http, "health_checks[0].unhealthy_edge_interval: is not supported"),
            ("      healthy_edge_interval: 5s\n", http, "health_checks[0].healthy_edge_interval: is not supported"),
            ("      initial_jitter: 1s\n", http, "health_checks[0].initial_jitter: is not supported"),
            ("      event_log_path: /tmp/hc.log\n", http, "health_checks[0].event_log_path: is not supported"),
            ("      tls_options: {alpn_protocols: [h2]}\n", http, "health_checks[0].tls_options: is not supported"),
            ("", "      http_health_check: {path: /healthz, method: POST}\n", "http_health_check.method: only GET"),
            ("", "      http_health_check: {path: /healthz, send: {text: '00'}}\n", "http_health_check.send: is not supported"),
            ("", "      http_health_check: {path: /healthz, receive: [{text: '00'}]}\n", "http_health_check.receive: is not supported"),
            ("", "      http_health_check: {path: /healthz, codec_client_type: HTTP3}\n", "http_health_check.codec_client_type: only HTTP1 and HTTP2"),
            ("", "      http_health_check: {path: /healthz, service_name_matcher: {exact: a}}\n", "http_health_check.service_name_matcher: is not supported"),
            ("", "      http_health_check: {path: /healthz, request_headers_to_add: [{header: {key: x-up, value: '%UPSTREAM_REMOTE_ADDRESS%'}}]}\n", "request_headers_to_add[0].header.value: command operators"),
            ("", "      http_health_check: {path: /healthz, request_headers_to_add: [{header: {key: host, value: h}}]}\n", "request_headers_to_add[0].append_action: appending to the check's own Host"),
            ("", "      grpc_health_check: {initial_metadata: [{header: {key: a, value: b}}]}\n", "grpc_health_check.initial_metadata: is not supported"),
            ("", "      tcp_health_check: {proxy_protocol_config: {}}\n", "tcp_health_check.proxy_protocol_config: is not supported"),
            ("", "      custom_health_check: {name: envoy.health_checkers.redis}\n", "custom health checkers (envoy.health_checkers.redis) are not supported"),
        ] {
            let e = error_of(&format!("{base}{extra}{checker}"));
            assert!(e.contains(want), "want {want:?} in:\n{e}");
        }
        let e = error_of("    - timeout: 1s\n      interval: 1s\n      unhealthy_threshold: 2\n      http_health_check: {path: /h}\n");
        assert!(
            e.contains("health_checks[0].healthy_threshold: is required"),
            "{e}"
        );
    }
}
