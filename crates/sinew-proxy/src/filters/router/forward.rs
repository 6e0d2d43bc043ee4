//! Forwarding a request upstream: header rewriting, the body (streamed, or buffered when
//! it may be replayed), endpoint choice, attempts with retries and backoff, timeouts,
//! and protocol upgrades such as WebSocket.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use sinew_codec::http1::client::ClientError;
use sinew_router::{Action, Route, VirtualHost};
use sinew_stream::RequestBody as DownstreamBody;
use sinew_upstream::{BodyError, Outcome, RequestBody, SendError, UpstreamBody};

use super::client_cert;
use super::headers;
use super::mirror;
use super::replay::HeadCopy;
use super::tunnel::tunnel;
use super::upstream_request::{build_request, wire_protocol, Prepared};
use crate::config::snapshot::{HttpManager, RouteSet};
use crate::stream::body::ResponseBody;
use crate::stream::conn::ConnContext;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;
use crate::stream::upstream_info::UpstreamInfo;
use sinew_stream::DownstreamRequest;

/// Why an attempt got no usable response.
enum Failure {
    NoHealthyUpstream,
    /// A circuit breaker of the cluster is full.
    Overflow,
    Connect,
    /// The peer closed or reset the connection before a response.
    Reset,
    /// The response was not valid HTTP.
    Protocol,
    PerTryTimeout,
    BodyTooLarge,
    /// The downstream client went away mid-body.
    Downstream,
    /// The request body could not be decompressed (the decompression filter).
    Undecodable,
}

impl Failure {
    fn reply(&self, grpc: bool) -> Response<ResponseBody> {
        let (status, flags, message) = match self {
            Failure::NoHealthyUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::NO_HEALTHY_UPSTREAM,
                "no healthy upstream",
            ),
            Failure::Overflow => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UPSTREAM_OVERFLOW,
                "upstream overflow",
            ),
            Failure::Connect => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UPSTREAM_CONNECT_FAILURE,
                "upstream connect error",
            ),
            Failure::Reset => (
                StatusCode::SERVICE_UNAVAILABLE,
                ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                "upstream connection terminated",
            ),
            Failure::Protocol => (
                StatusCode::BAD_GATEWAY,
                ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
                "upstream protocol error",
            ),
            Failure::PerTryTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                ResponseFlags::UPSTREAM_TIMEOUT,
                "upstream request timeout",
            ),
            Failure::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ResponseFlags::REQUEST_BODY_TOO_LARGE,
                "request body too large",
            ),
            Failure::Downstream => (
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
                "downstream request body incomplete",
            ),
            Failure::Undecodable => (
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "request body cannot be decompressed",
            ),
        };
        let mut reply = local_reply::error(status, flags, message, grpc);
        if matches!(self, Failure::Downstream) {
            // The body's framing broke: nothing after it on this connection can be trusted.
            reply
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        reply
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward(
    mut req: DownstreamRequest,
    // The authority the request was routed on: the upstream gets this one, whatever the
    // request's headers say after hop-by-hop removal and the route's edits.
    routed_authority: HeaderValue,
    // The stream idle timeout (zero: none): the wait for the response head is bounded by
    // it too when the request timeout would not end it first.
    stream_idle: Duration,
    conn: &ConnContext,
    manager: &HttpManager,
    routes: &RouteSet,
    vhost: &VirtualHost,
    route: &Route,
    grpc: bool,
    // The access log or a sampled span wants the upstream host and cluster.
    record_upstream: bool,
) -> Response<ResponseBody> {
    let upgrade = is_upgrade(&req);
    if upgrade && manager.upgrades.is_some() {
        let kind = req
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split([',', '/']).next())
            .unwrap_or("")
            .trim();
        if !manager.upgrade_allowed(route, kind) {
            // As Envoy answers an upgrade it is not configured for.
            return local_reply::error(
                StatusCode::FORBIDDEN,
                ResponseFlags::default(),
                "upgrade not allowed",
                grpc,
            );
        }
    }
    // The codec hands the connection over only to a request that asked to switch.
    let downstream_upgrade = if upgrade {
        req.extensions_mut().remove::<sinew_stream::OnUpgrade>()
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let downstream_version = parts.version;
    let downstream_h2 = downstream_version == Version::HTTP_2;

    if let (Some(limit), Some(length)) = (
        manager.max_request_body_bytes,
        content_length(&parts.headers),
    ) {
        if length > limit {
            return Failure::BodyTooLarge.reply(grpc);
        }
    }

    let mut timeout = route.timeout.unwrap_or(manager.request_timeout);
    if grpc {
        if let Some(deadline) = parts.headers.get("grpc-timeout").and_then(grpc_timeout) {
            timeout = if timeout.is_zero() {
                deadline
            } else {
                timeout.min(deadline)
            };
        }
    }
    let hash = route.hash(&parts.headers, conn.peer.ip());

    let via = if downstream_h2 {
        manager.via_http2.as_ref()
    } else {
        manager.via_http1.as_ref()
    };
    let mut headers = parts.headers;
    headers::prepare_request(
        &mut headers,
        upgrade,
        manager.generate_request_id,
        &conn.peer_ip_value,
        conn.tls,
        manager.forwarding,
        via,
    );
    client_cert::apply(
        &mut headers,
        manager.forward_client_cert,
        manager.client_cert_details,
        conn.peer_identity.as_deref(),
        manager.local_uri_san.as_deref(),
    );
    // Envoy's order, the same as for responses: the route's edits, then its host's.
    route.request_headers.apply(&mut headers);
    vhost.request_headers.apply(&mut headers);

    let path_and_query = match route.rewrite_path(parts.uri.path(), parts.uri.query()) {
        Some(rewritten) => PathAndQuery::try_from(rewritten).ok(),
        None => parts.uri.path_and_query().cloned(),
    }
    .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = match route.host_rewrite() {
        Some(rewritten) => rewritten.clone(),
        None => routed_authority,
    };

    let mut body = match prepare_body(body, manager, route).await {
        Ok(b) => b,
        Err(f) => return f.reply(grpc),
    };

    let prepared = Prepared {
        method: parts.method,
        uri: Uri::from(path_and_query),
        headers,
        scheme: manager.forwarding.scheme,
    };
    if !route.mirrors.is_empty() && !upgrade {
        let shadow = mirror::Source::new(&prepared, &authority, downstream_h2, timeout);
        mirror::send_copies(
            &route.mirrors,
            routes,
            &shadow,
            &mut body,
            manager.request_body_buffer_bytes,
        );
    }
    // Boxed: the attempts' state (the pool's send, retries, circuit-breaker slots) is
    // large, and inline it would be copied whole each time the request's future moves
    // (into the timeout, into hyper's task); boxed, those moves copy a pointer.
    let attempts = Box::pin(attempts(
        prepared,
        authority,
        body,
        downstream_h2,
        upgrade,
        routes,
        route,
        hash,
        grpc,
        record_upstream,
    ));
    let exchange = async {
        if timeout.is_zero() {
            return attempts.await;
        }
        match tokio::time::timeout(timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err({
                count_route_timeout(routes, route);
                local_reply::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    ResponseFlags::UPSTREAM_TIMEOUT,
                    "upstream request timeout",
                    grpc,
                )
            }),
        }
    };
    // The stream idle timeout bounds the wait too, when the request timeout would not.
    let idle_bound = !stream_idle.is_zero() && (timeout.is_zero() || timeout > stream_idle);
    let idle_bound = idle_bound.then_some(stream_idle);
    // One await site: two would each keep a copy of `exchange`'s state in this future.
    let response = match crate::stream::in_flight::head_or_idle(exchange, conn, idle_bound).await {
        Some(r) => r,
        None => Err(crate::stream::in_flight::idle_before_head(conn, grpc)),
    };
    let mut response = match response {
        Ok(r) => r,
        Err(local) => return local,
    };
    // The response speaks the downstream connection's version, as in Envoy: an HTTP/1.0
    // upstream must not make an HTTP/1.1 client give up keep-alive.
    *response.version_mut() = downstream_version;

    let switching_protocols = upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching_protocols {
        if let (Some(downstream), Some(upstream)) =
            (downstream_upgrade, response.body_mut().take_upgraded())
        {
            tunnel(downstream, upstream, &conn.slot);
        }
    }
    headers::prepare_response(response.headers_mut(), switching_protocols, via);
    route.response_headers.apply(response.headers_mut());
    vhost.response_headers.apply(response.headers_mut());
    response.map(ResponseBody::Upstream)
}

/// Tries endpoints until one answers acceptably or the retry policy says stop.
#[allow(clippy::too_many_arguments)]
async fn attempts(
    prepared: Prepared,
    authority: HeaderValue,
    body: RequestBody,
    downstream_h2: bool,
    upgrade: bool,
    routes: &RouteSet,
    route: &Route,
    hash: Option<u64>,
    grpc: bool,
    // Whether the access log wants the upstream host and cluster: inserting them into
    // empty extensions allocates, which plain requests should not pay for.
    log_upstream: bool,
) -> Result<Response<UpstreamBody>, Response<ResponseBody>> {
    let policy = route.retry.as_ref();
    // A streamed body can be sent once only.
    let max_retries = match (policy, body.try_clone().is_some()) {
        (Some(p), true) => p.num_retries,
        _ => 0,
    };
    // The first try sends the head itself; retries send copies of what it was.
    let copy = (max_retries > 0).then(|| HeadCopy::of(&prepared));
    let mut prepared = Some(prepared);
    let mut body = Some(body);
    // Endpoints already tried; it grows only when a retry follows.
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_slot: Option<sinew_upstream::Slot> = None;
    let mut attempt = 0u32;
    // A weighted route picks its cluster once per request, as Envoy does: retries stay
    // in the cluster the request went to.
    let target = match &route.action {
        Action::Cluster(t) => *t,
        Action::Weighted(w) => w.pick(),
        _ => unreachable!("only cluster actions are forwarded"),
    };
    let (cluster, subset) = routes.target(target);
    let cluster_metrics = routes.metrics.as_ref().and_then(|m| m.target(target));
    loop {
        let last_try = attempt >= max_retries;
        let protocol = wire_protocol(cluster.protocol, downstream_h2, upgrade);
        let Some(request_slot) = cluster.breakers().try_request() else {
            return Err(Failure::Overflow.reply(grpc));
        };
        // By default a retry avoids the endpoint that just failed; `previous_hosts`
        // makes it avoid every one tried.
        let avoid: &[SocketAddr] = match policy {
            Some(p) if p.avoid_all_previous_hosts => &tried,
            _ => tried.last().map_or(&[], std::slice::from_ref),
        };
        let redraws = policy.map_or(1, |p| p.host_selection_attempts);
        let Some(endpoint) = cluster.pick(subset, hash, avoid, redraws) else {
            return Err(Failure::NoHealthyUpstream.reply(grpc));
        };
        let address = endpoint.state.address;

        let parts = match (prepared.take(), &copy) {
            (Some(first), _) => first,
            (None, Some(copy)) => copy.to_prepared(),
            (None, None) => unreachable!("a retry has a copy of the head"),
        };
        // The last attempt takes the body; earlier ones share it.
        let this_body = if last_try {
            body.take().expect("present until the last try")
        } else {
            body.as_ref()
                .and_then(RequestBody::try_clone)
                .expect("replayable")
        };
        let tls = endpoint.state.settings().tls.is_some();
        let request = build_request(parts, &authority, this_body, protocol, tls);

        let sent_at = cluster_metrics.map(|_| std::time::Instant::now());
        let sent = endpoint.state.send(request, protocol, cluster.breakers());
        let outcome = match policy.and_then(|p| p.per_try_timeout) {
            Some(t) => match tokio::time::timeout(t, sent).await {
                Ok(result) => result.map_err(classify),
                Err(_) => Err(Failure::PerTryTimeout),
            },
            None => sent.await.map_err(classify),
        };
        if let Some(o) = upstream_outcome(&outcome) {
            cluster.report(&endpoint, o);
        }
        if let (Some(m), Some(sent_at)) = (cluster_metrics, sent_at) {
            match &outcome {
                Ok(r) => m.response(r.status(), sent_at.elapsed()),
                Err(Failure::Connect) => {
                    m.connect_failures.inc();
                }
                Err(Failure::PerTryTimeout) => {
                    m.timeouts.inc();
                }
                Err(_) => {}
            }
        }
        drop(endpoint);
        // A retry's place under the limit is held for its own attempt only.
        drop(retry_slot.take());

        let retry = match (&outcome, policy) {
            (_, None) => false,
            (Ok(r), Some(p)) => p.retry_on_status(r.status()),
            (Err(Failure::Connect), Some(p)) => p.retry_on_connect_failure(),
            (Err(Failure::Reset), Some(p)) => p.retry_on_reset(),
            (Err(Failure::PerTryTimeout), Some(p)) => p.retry_on_per_try_timeout(),
            (Err(_), Some(_)) => false,
        };
        // A retry takes a place under the cluster's retry limit (or budget); when there is
        // none, the answer in hand stands, as in Envoy.
        if retry && !last_try {
            retry_slot = cluster.breakers().try_retry();
        }
        if !retry || last_try || retry_slot.is_none() {
            return match outcome {
                Ok(mut r) => {
                    r.body_mut().hold(request_slot);
                    // Envoy's URX: the policy wanted another try and none was left.
                    if retry && last_try && attempt > 0 {
                        r.extensions_mut()
                            .insert(ResponseFlags::RETRY_LIMIT_EXCEEDED);
                    }
                    if log_upstream {
                        r.extensions_mut()
                            .insert(UpstreamInfo::new(address, cluster));
                    }
                    Ok(r)
                }
                Err(f) => {
                    let mut reply = f.reply(grpc);
                    if log_upstream {
                        reply
                            .extensions_mut()
                            .insert(UpstreamInfo::new(address, cluster));
                    }
                    if retry && last_try && attempt > 0 {
                        if let Some(flags) = reply.extensions_mut().get_mut::<ResponseFlags>() {
                            *flags = *flags | ResponseFlags::RETRY_LIMIT_EXCEEDED;
                        }
                    }
                    Err(reply)
                }
            };
        }
        tried.push(address);
        attempt += 1;
        if let Some(m) = cluster_metrics {
            m.retries.inc();
        }
        if let Some(p) = policy {
            tokio::time::sleep(p.backoff(attempt)).await;
        }
    }
}

/// A whole-request timeout, counted on the route's cluster (on none for a weighted
/// route: which of its clusters the attempt in flight went to is not known here).
#[cold]
fn count_route_timeout(routes: &RouteSet, route: &Route) {
    if let (Some(m), Action::Cluster(t)) = (&routes.metrics, &route.action) {
        if let Some(c) = m.target(*t) {
            c.timeouts.inc();
        }
    }
}

/// What an attempt says about the endpoint, for outlier detection (nothing when the
/// fault was on this side: a body too large, a client gone).
fn upstream_outcome(outcome: &Result<Response<UpstreamBody>, Failure>) -> Option<Outcome> {
    Some(match outcome {
        Ok(r) => Outcome::Status(r.status().as_u16()),
        Err(Failure::Connect) => Outcome::ConnectFailure,
        Err(Failure::Reset) => Outcome::Reset,
        Err(Failure::Protocol) => Outcome::Status(502),
        Err(Failure::PerTryTimeout) => Outcome::Timeout,
        Err(_) => return None,
    })
}

fn classify(e: SendError) -> Failure {
    match e {
        SendError::Connect(_) => Failure::Connect,
        SendError::Overflow => Failure::Overflow,
        SendError::Http1(e) => match e {
            ClientError::RequestBody(body) => match body.downcast_ref::<BodyError>() {
                Some(e) => body_failure(e),
                None => Failure::Downstream,
            },
            // Nothing, or part of a head, before the connection ended: Envoy's reset
            // before response headers (503 UC), which a retry policy may retry.
            ClientError::NoResponse(_) | ClientError::HeadCut(_) => Failure::Reset,
            ClientError::Malformed(_) | ClientError::UnsolicitedSwitch => Failure::Protocol,
        },
        SendError::Http2(e) => {
            if let Some(body) = find_cause::<BodyError>(&e) {
                return body_failure(body);
            }
            if e.is_malformed_response() {
                Failure::Protocol
            } else {
                // A reset, a REFUSED_STREAM or GOAWAY (the upstream did not process the
                // request: `is_retryable`), the connection failing: Envoy's reset before
                // response headers, which a retry policy may retry.
                Failure::Reset
            }
        }
    }
}

/// The request body's failure: too large (the listener's limit, or a decompressed body
/// past its bound), not decodable, or cut short by the client.
fn body_failure(e: &BodyError) -> Failure {
    match e {
        BodyError::TooLarge => Failure::BodyTooLarge,
        BodyError::Downstream(sinew_stream::BodyError::Filter { too_large, .. }) => {
            if *too_large {
                Failure::BodyTooLarge
            } else {
                Failure::Undecodable
            }
        }
        BodyError::Downstream(_) => Failure::Downstream,
    }
}

fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// Chooses how the body travels: buffered when a retry may need it again, else streamed.
async fn prepare_body(
    body: DownstreamBody,
    manager: &HttpManager,
    route: &Route,
) -> Result<RequestBody, Failure> {
    if body.is_end_stream() {
        return Ok(RequestBody::Empty);
    }
    let limit = manager.max_request_body_bytes;
    if let Some(policy) = &route.retry {
        let cap = policy
            .max_buffered_body_bytes
            .unwrap_or(manager.request_body_buffer_bytes) as u64;
        let exact = body.size_hint().exact();
        if exact.is_some_and(|n| n <= cap && limit.is_none_or(|l| n <= l)) {
            let collected = body.collect().await.map_err(|_| Failure::Downstream)?;
            return Ok(RequestBody::Full(Some(collected.to_bytes())));
        }
    }
    Ok(RequestBody::streaming(body, limit))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let v = value.as_bytes();
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    // Digits only (gRPC's TimeoutValue): Rust's integer parser would also take a `+`.
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_status_and_envoy_flag() {
        let cases = [
            (Failure::NoHealthyUpstream, 503, "UH"),
            (Failure::Overflow, 503, "UO"),
            (Failure::Connect, 503, "UF"),
            (Failure::Reset, 503, "UC"),
            (Failure::Protocol, 502, "UPE"),
            (Failure::PerTryTimeout, 504, "UT"),
            (Failure::BodyTooLarge, 413, "RBL"),
            (Failure::Downstream, 400, "DC"),
            (Failure::Undecodable, 400, "DPE"),
        ];
        for (failure, status, flag) in cases {
            let reply = failure.reply(false);
            assert_eq!(reply.status(), status);
            let flags = reply.extensions().get::<ResponseFlags>().copied().unwrap();
            assert_eq!(flags.to_string(), flag);
        }
        let close = Failure::Downstream.reply(false);
        assert_eq!(close.headers()[http::header::CONNECTION], "close");
    }

    #[test]
    fn failures_reach_grpc_clients_as_grpc_statuses() {
        let cases = [
            (Failure::NoHealthyUpstream, "14"),
            (Failure::Connect, "14"),
            (Failure::PerTryTimeout, "4"),
            (Failure::BodyTooLarge, "8"),
        ];
        for (failure, code) in cases {
            let reply = failure.reply(true);
            assert_eq!(reply.status(), 200, "gRPC errors ride on HTTP 200");
            assert_eq!(reply.headers()["grpc-status"], code);
            assert_eq!(reply.headers()["content-type"], "application/grpc");
        }
    }

    #[test]
    fn parses_grpc_timeouts() {
        let t = |s: &'static str| grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5x"), None);
        assert_eq!(t("123456789S"), None);
    }

    /// Fuzzing (docs/fuzzing.md): any header value gives a timeout or none, never a panic
    /// or an overflow, and exactly the well-formed ones (1 to 8 digits, then a unit) give
    /// one, of the value they say.
    #[test]
    fn fuzz_grpc_timeout() {
        use sinew_fuzz::proptest::prelude::*;
        const UNITS: &[u8] = b"HMSmun";
        let well_formed = |v: &[u8]| {
            v.len() >= 2
                && v.len() <= 9
                && v[..v.len() - 1].iter().all(u8::is_ascii_digit)
                && UNITS.contains(&v[v.len() - 1])
        };
        let alphabet = prop::sample::select(b"0123456789+- .HMSmunxh\t".to_vec());
        sinew_fuzz::run(
            "fuzz_grpc_timeout",
            1,
            (
                prop::collection::vec(alphabet, 0..12),
                0u64..100_000_000,
                0..UNITS.len(),
            ),
            |(raw, n, unit)| {
                if let Ok(value) = HeaderValue::from_bytes(&raw) {
                    let got = grpc_timeout(&value);
                    prop_assert_eq!(got.is_some(), well_formed(&raw), "{:?}", value);
                }
                let text = format!("{n}{}", UNITS[unit] as char);
                let want = match UNITS[unit] {
                    b'H' => Duration::from_secs(n * 3600),
                    b'M' => Duration::from_secs(n * 60),
                    b'S' => Duration::from_secs(n),
                    b'm' => Duration::from_millis(n),
                    b'u' => Duration::from_micros(n),
                    _ => Duration::from_nanos(n),
                };
                let value = HeaderValue::from_str(&text).expect("digits and a unit");
                prop_assert_eq!(grpc_timeout(&value), Some(want));
                Ok(())
            },
        );
    }

    /// Found by fuzz_grpc_timeout: Rust's integer parser takes a leading `+`, so `+5S`
    /// is read as five seconds; the gRPC spec's TimeoutValue is digits only.
    #[test]
    fn grpc_timeout_regression_a_sign_is_not_a_digit() {
        assert_eq!(grpc_timeout(&HeaderValue::from_static("+5S")), None);
    }
}
