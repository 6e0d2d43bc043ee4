//! How an RPC call ended, in the terms its telemetry and HTTP's policies share: the
//! outcome classes the `sinew_rpc_calls` counter is labelled with, the HTTP status a
//! call counts as (for retry conditions, outlier detection, route metrics and the access
//! log's `%RESPONSE_CODE%`), and the protocol error an injected fault's abort becomes.

use std::sync::Arc;

use http::StatusCode;
use sinew_codec::rpc::{ProxyError, ResponseClass};
use sinew_router::Abort;

use crate::metrics::{Metrics, RpcCallMetrics, RPC_OUTCOMES};

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The upstream answered, with a response of this class.
    Upstream(ResponseClass),
    /// A one-way call went upstream: there is no answer to wait for.
    Sent,
    /// The proxy answered with the protocol's error.
    Proxy(ProxyError),
}

/// The `source` and `class` labels of `sinew_rpc_calls`, indexed by [`Ended::index`].
pub(crate) const OUTCOMES: [(&str, &str); RPC_OUTCOMES] = [
    ("upstream", "success"),
    ("upstream", "server_error"),
    ("upstream", "unavailable"),
    ("upstream", "timeout"),
    ("upstream", "error"),
    ("upstream", "oneway"),
    ("proxy", "no_route"),
    ("proxy", "unavailable"),
    ("proxy", "timeout"),
    ("proxy", "overloaded"),
    ("proxy", "denied"),
];

/// Looks up an RPC listener's handles (one counter per [`OUTCOMES`] entry, and the
/// call-time histogram), once per config.
pub(crate) fn call_metrics(
    metrics: &Metrics,
    listener: &str,
    protocol: &str,
) -> Arc<RpcCallMetrics> {
    metrics.rpc(listener, protocol, &OUTCOMES)
}

impl Ended {
    /// Its position in [`OUTCOMES`].
    pub(super) fn index(self) -> usize {
        match self {
            Ended::Upstream(ResponseClass::Success) => 0,
            Ended::Upstream(ResponseClass::ServerError) => 1,
            Ended::Upstream(ResponseClass::Unavailable) => 2,
            Ended::Upstream(ResponseClass::Timeout) => 3,
            Ended::Upstream(ResponseClass::Error) => 4,
            Ended::Sent => 5,
            Ended::Proxy(ProxyError::NoRoute) => 6,
            Ended::Proxy(ProxyError::Unavailable) => 7,
            Ended::Proxy(ProxyError::Timeout) => 8,
            Ended::Proxy(ProxyError::Overloaded) => 9,
            Ended::Proxy(ProxyError::Denied) => 10,
        }
    }
}

/// The HTTP status an upstream response class counts as, for retry conditions (`5xx`,
/// `gateway-error`, `retriable-status-codes`), outlier detection and the access log: a
/// server that cannot take the call is a 503, a timeout a 504, any other error a 500.
pub(super) fn upstream_status(class: ResponseClass) -> StatusCode {
    match class {
        ResponseClass::Success => StatusCode::OK,
        ResponseClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResponseClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ResponseClass::ServerError | ResponseClass::Error => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The HTTP status a proxy-made error is logged and counted as: what Envoy answers an
/// HTTP request with in the same case (no route 404, no upstream 503, a timeout 504, an
/// open circuit breaker 503, authorization 403). A rate limit's refusal says 429 itself.
pub(super) fn proxy_status(error: ProxyError) -> StatusCode {
    match error {
        ProxyError::NoRoute => StatusCode::NOT_FOUND,
        ProxyError::Unavailable | ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ProxyError::Denied => StatusCode::FORBIDDEN,
    }
}

/// The protocol error an injected abort answers a call with, and the status the call
/// is logged with (an HTTP abort's own status; a gRPC abort's status's HTTP meaning).
///
/// HTTP 503 and gRPC UNAVAILABLE are "unavailable", 504 and DEADLINE_EXCEEDED a timeout,
/// 429 and RESOURCE_EXHAUSTED "overloaded", 403 and PERMISSION_DENIED (and gRPC
/// UNAUTHENTICATED) "denied"; every other status is "unavailable": an RPC protocol has
/// fewer error kinds than HTTP has statuses, and a fault that stands for a failing
/// server is what an abort is for.
pub(super) fn abort_error(abort: Abort) -> (ProxyError, StatusCode) {
    let error = match abort {
        Abort::Http(status) => match status.as_u16() {
            504 => ProxyError::Timeout,
            429 => ProxyError::Overloaded,
            403 => ProxyError::Denied,
            _ => ProxyError::Unavailable,
        },
        Abort::Grpc(code) => match code {
            4 => ProxyError::Timeout,
            8 => ProxyError::Overloaded,
            7 | 16 => ProxyError::Denied,
            _ => ProxyError::Unavailable,
        },
    };
    let status = match abort {
        Abort::Http(status) => status,
        Abort::Grpc(8) => StatusCode::TOO_MANY_REQUESTS,
        Abort::Grpc(_) => proxy_status(error),
    };
    (error, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> (ProxyError, u16) {
        let (e, s) = abort_error(Abort::Http(StatusCode::from_u16(status).unwrap()));
        (e, s.as_u16())
    }

    #[test]
    fn http_aborts_map_onto_the_protocol_errors_and_keep_their_status() {
        assert_eq!(http(503), (ProxyError::Unavailable, 503));
        assert_eq!(http(504), (ProxyError::Timeout, 504));
        assert_eq!(http(429), (ProxyError::Overloaded, 429));
        assert_eq!(http(403), (ProxyError::Denied, 403));
        assert_eq!(http(500), (ProxyError::Unavailable, 500));
        assert_eq!(http(404), (ProxyError::Unavailable, 404));
        assert_eq!(http(401), (ProxyError::Unavailable, 401));
    }

    #[test]
    fn grpc_aborts_map_by_meaning_and_log_the_matching_http_status() {
        let grpc = |code| {
            let (e, s) = abort_error(Abort::Grpc(code));
            (e, s.as_u16())
        };
        assert_eq!(grpc(14), (ProxyError::Unavailable, 503));
        assert_eq!(grpc(4), (ProxyError::Timeout, 504));
        assert_eq!(grpc(8), (ProxyError::Overloaded, 429));
        assert_eq!(grpc(7), (ProxyError::Denied, 403));
        assert_eq!(grpc(16), (ProxyError::Denied, 403));
        assert_eq!(grpc(2), (ProxyError::Unavailable, 503));
    }

    #[test]
    fn every_outcome_has_its_own_label_set() {
        let all = [
            Ended::Upstream(ResponseClass::Success),
            Ended::Upstream(ResponseClass::ServerError),
            Ended::Upstream(ResponseClass::Unavailable),
            Ended::Upstream(ResponseClass::Timeout),
            Ended::Upstream(ResponseClass::Error),
            Ended::Sent,
            Ended::Proxy(ProxyError::NoRoute),
            Ended::Proxy(ProxyError::Unavailable),
            Ended::Proxy(ProxyError::Timeout),
            Ended::Proxy(ProxyError::Overloaded),
            Ended::Proxy(ProxyError::Denied),
        ];
        let indexes: Vec<usize> = all.iter().map(|e| e.index()).collect();
        assert_eq!(indexes, (0..OUTCOMES.len()).collect::<Vec<_>>());
        assert_eq!(
            OUTCOMES[Ended::Proxy(ProxyError::Denied).index()],
            ("proxy", "denied")
        );
        assert_eq!(
            OUTCOMES[Ended::Upstream(ResponseClass::Timeout).index()],
            ("upstream", "timeout")
        );
    }

    #[test]
    fn proxy_errors_count_as_envoys_local_replies() {
        assert_eq!(proxy_status(ProxyError::NoRoute), StatusCode::NOT_FOUND);
        assert_eq!(proxy_status(ProxyError::Denied), StatusCode::FORBIDDEN);
        assert_eq!(
            proxy_status(ProxyError::Timeout),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(upstream_status(ResponseClass::ServerError).as_u16(), 500);
    }
}
