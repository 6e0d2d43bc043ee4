//! Fault injection per route, for chaos testing in production: a fixed delay and/or an
//! abort (an HTTP or gRPC status) for a share of requests, or only for requests that
//! carry given headers.
//!
//! It follows Envoy's `envoy.extensions.filters.http.fault.v3.HTTPFault`, set on the
//! route rather than as a filter. One simplification: a percentage is a plain number from
//! 0 to 100 (decimals allowed, to a millionth of the requests), not Envoy's
//! `FractionalPercent {numerator, denominator}`.

use serde::Deserialize;
use std::time::Duration;

use crate::duration;
use crate::header_match::HeaderMatch;

/// `routes[].fault`. Envoy: `HTTPFault`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjection {
    /// Envoy: `HTTPFault.delay`.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Envoy: `HTTPFault.abort`. When a request gets both, the delay comes first.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    /// Only requests for which every one of these holds get faults. Envoy: `HTTPFault.headers`.
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// At most this many requests are being delayed or aborted at once; past it, requests
    /// go through unharmed. Unset: no limit. Envoy: `HTTPFault.max_active_faults`.
    #[serde(default)]
    pub max_active_faults: Option<u32>,
}

/// Envoy: `FaultDelay`. Exactly one of `fixed_delay` and `header_delay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// Envoy: `FaultDelay.fixed_delay`.
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub fixed_delay: Option<Duration>,
    /// The delay comes from the request's `x-envoy-fault-delay-request` header
    /// (milliseconds); a request without it is not delayed. Envoy: `FaultDelay.header_delay`.
    #[serde(default)]
    pub header_delay: Option<HeaderControlled>,
    /// Share of requests delayed, 0 to 100. Required: Envoy's unset percentage is 0,
    /// which would make a fault that never fires. Envoy: `FaultDelay.percentage`.
    pub percentage: f64,
}

/// Envoy: `FaultAbort`. Exactly one of `http_status`, `grpc_status` and `header_abort`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// Answer with this status (200 to 599); a gRPC request gets it as a gRPC status.
    /// Envoy: `FaultAbort.http_status`.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Answer as gRPC does: HTTP 200 with this `grpc-status` (0 to 16).
    /// Envoy: `FaultAbort.grpc_status`.
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// The status comes from the request's `x-envoy-fault-abort-request` (HTTP) or
    /// `x-envoy-fault-abort-grpc-request` (gRPC) header; a request with neither is not
    /// aborted. Envoy: `FaultAbort.header_abort`.
    #[serde(default)]
    pub header_abort: Option<HeaderControlled>,
    /// Share of requests aborted, 0 to 100. Required, as for the delay.
    /// Envoy: `FaultAbort.percentage`.
    pub percentage: f64,
}

/// An empty marker, `{}`: the value comes from request headers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderControlled {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::load_str;

    /// A config with one route carrying `fault` (flow YAML); Ok(route's fault) or the
    /// diagnostics.
    fn load(fault: &str) -> Result<super::FaultInjection, String> {
        let yaml = format!(
            "{{listeners: [{{name: l, address: '127.0.0.1:0', http: {{virtual_hosts: [
                {{name: v, domains: ['*'], routes: [{{match: {{}}, cluster: c, fault: {fault}}}]}}]}}}}],
              clusters: [{{name: c, endpoints: []}}]}}"
        );
        let loaded = load_str("t.yaml", &yaml).map_err(|d| d.to_string())?;
        let http = loaded.config.listeners[0].http.clone().unwrap();
        Ok(http.virtual_hosts.unwrap()[0].routes[0]
            .fault
            .clone()
            .unwrap())
    }

    #[test]
    fn delay_abort_headers_and_limit_are_read() {
        let f = load(
            "{delay: {fixed_delay: 250ms, percentage: 12.5},
              abort: {http_status: 503, percentage: 0.5},
              headers: [{name: x-chaos, exact: 'on'}], max_active_faults: 3}",
        )
        .unwrap();
        let d = f.delay.unwrap();
        assert_eq!(d.fixed_delay, Some(Duration::from_millis(250)));
        assert_eq!(d.percentage, 12.5);
        let a = f.abort.unwrap();
        assert_eq!((a.http_status, a.percentage), (Some(503), 0.5));
        assert_eq!(f.headers[0].name, "x-chaos");
        assert_eq!(f.max_active_faults, Some(3));

        let f = load("{abort: {grpc_status: 14, percentage: 100}}").unwrap();
        assert_eq!(f.abort.unwrap().grpc_status, Some(14));
        let f = load("{abort: {header_abort: {}, percentage: 100}, delay: {header_delay: {}, percentage: 1}}").unwrap();
        assert!(f.abort.unwrap().header_abort.is_some());
        assert!(f.delay.unwrap().header_delay.is_some());
    }

    #[test]
    fn a_percentage_is_required_so_that_a_fault_cannot_silently_never_fire() {
        let e = load("{abort: {http_status: 503}}").unwrap_err();
        assert!(e.contains("missing field `percentage`"), "{e}");
    }

    #[test]
    fn bad_faults_are_reported_at_their_fields() {
        let p = "t.yaml:2:";
        let f = "listeners[0].http.virtual_hosts[0].routes[0].fault";
        let cases = [
            ("{}", format!("{f}: set `delay`, `abort` or both")),
            (
                "{delay: {percentage: 5}}",
                format!("{f}.delay: set one of `fixed_delay` or `header_delay`"),
            ),
            (
                "{delay: {fixed_delay: 1s, header_delay: {}, percentage: 5}}",
                format!("{f}.delay: set either `fixed_delay` or `header_delay`, not both"),
            ),
            (
                "{delay: {fixed_delay: 0, percentage: 5}}",
                format!("{f}.delay.fixed_delay: must be positive"),
            ),
            (
                "{delay: {fixed_delay: 1s, percentage: 100.5}}",
                format!("{f}.delay.percentage: 100.5 is not a percentage from 0 to 100"),
            ),
            (
                "{abort: {http_status: 503, grpc_status: 14, percentage: 5}}",
                format!(
                    "{f}.abort: set exactly one of `http_status`, `grpc_status` and `header_abort`"
                ),
            ),
            (
                "{abort: {http_status: 600, percentage: 5}}",
                format!("{f}.abort.http_status: must be between 200 and 599"),
            ),
            (
                "{abort: {grpc_status: 17, percentage: 5}}",
                format!("{f}.abort.grpc_status: must be a gRPC status code from 0 to 16"),
            ),
            (
                "{abort: {http_status: 503, percentage: -1}}",
                format!("{f}.abort.percentage: -1 is not a percentage from 0 to 100"),
            ),
            (
                "{abort: {http_status: 503, percentage: 1}, max_active_faults: 0}",
                format!("{f}.max_active_faults: must be at least 1"),
            ),
            (
                "{abort: {http_status: 503, percentage: 1}, headers: [{name: 'a b', exact: x, present: true}]}",
                format!("{f}.headers[0].name: \"a b\" is not a valid header name"),
            ),
        ];
        for (fault, want) in cases {
            let got = load(fault).unwrap_err();
            assert!(
                got.lines().any(|l| l.starts_with(p) && l.ends_with(&want)),
                "{fault}: want {want}\ngot {got}"
            );
        }
    }
}
