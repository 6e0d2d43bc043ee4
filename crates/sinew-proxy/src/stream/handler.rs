//! A stream's life, as named phases through its listener's filter chain
//! (`crate::filters::chain`): the request as received (trace context, access log), its
//! framing checked, its virtual host and route found, the route's filters (rate limits,
//! faults), the router's action (a direct answer, a redirect, or the upstream call), and
//! the response back through the filters in reverse.

use http::header::{CONTENT_TYPE, HOST};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode, Version};
use sinew_router::{Action, RequestView};
use sinew_stream::DownstreamRequest;

use super::body::ResponseBody;
use super::conn::ConnContext;
use super::flags::ResponseFlags;
use super::local_reply;
use super::path_normalize::Normalized;
use crate::config::snapshot::{HttpManager, ListenerKind};
use crate::filters::chain::StreamState;
use crate::filters::router::forward;
use crate::filters::{Downstream, Routed};
use sinew_config::model::HeadersWithUnderscores;

/// Handles one request: its response, and the stream idle timeout that applies to it
/// (its route's, else its listener's; zero when off).
pub(crate) async fn handle(
    mut req: DownstreamRequest,
    conn: &ConnContext,
) -> (Response<ResponseBody>, Duration) {
    // The listener's config as of this request: a reload mid-connection applies to the
    // next request, and this one keeps what it started with.
    let listener = conn.slot.config();
    adopt_target_authority(&mut req);
    let kind = listener.body(conn.chain).map(|body| &body.kind);
    let Some(ListenerKind::Http(manager)) = kind else {
        let reply = local_reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::NO_ROUTE,
            "listener is no longer HTTP",
            false,
        );
        return (reply, Duration::ZERO);
    };
    let mut idle = manager.stream_idle_timeout;
    let filters = &manager.filters;
    // Phase 1: the request as received.
    let mut state = StreamState::default();
    // The request-phase filters (access log, span) see the original client, as Envoy's
    // downstream remote address: the peer, or an entry of `X-Forwarded-For` when the
    // listener trusts hops in front of it (`xff_num_trusted_hops`, `use_remote_address`).
    let client = match manager.client_hops {
        0 => conn.peer,
        hops => crate::filters::authz::remote_address(req.headers(), hops)
            .map_or(conn.peer, |ip| std::net::SocketAddr::new(ip, 0)),
    };
    let downstream = Downstream {
        peer: client,
        local: conn.slot.bound,
        tls: conn.tls,
        identity: conn.peer_identity.as_ref(),
    };
    filters.on_request(&mut req, downstream, &mut state);
    let http1 = req.version() <= Version::HTTP_11;
    let mut response = phases(req, conn, manager, &mut state, &mut idle).await;
    // `disable_http_keepalive` under overload: the HTTP/1 connection closes after this
    // response (HTTP/2 connections are sent GOAWAY by their driver).
    if http1 && crate::overload::closes_connection() {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Every answer to a peer counts for it, the refusals (no route, denied, malformed)
    // as much as the routed ones: they are what a per-peer view is for.
    if let Some(m) = conn.peer_requests.as_deref() {
        m.count(response.status());
    }
    // Phase 4b: the stream's end, whatever answered it.
    (filters.on_stream_end(response, state), idle)
}

/// The phases between the request's and the stream's end; every early return is a local
/// reply. `idle` starts as the listener's stream idle timeout and becomes the route's
/// once one is chosen.
async fn phases(
    mut req: DownstreamRequest,
    conn: &ConnContext,
    manager: &HttpManager,
    state: &mut StreamState,
    idle: &mut Duration,
) -> Response<ResponseBody> {
    let grpc = is_grpc(req.headers());

    // Overloaded (`stop_accepting_requests`): a new request is refused before anything
    // else is done for it, as Envoy does right after decoding the headers.
    if crate::overload::rejects_request() {
        return local_reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::OVERLOAD_MANAGER,
            "envoy overloaded",
            grpc,
        );
    }

    // Phase 1: framing. The HTTP/1 codec has refused every request-smuggling shape while
    // parsing the head (RFC 9112 §2.2, §6.1, §6.3) and `h2` the malformed HTTP/2 ones;
    // what is left is the authority the request is routed on.
    let authority = match routing_authority(&req) {
        Ok(Some(a)) => a,
        Ok(None) => return local_reply::bad_request("missing Host header"),
        Err(problem) => return local_reply::bad_request(problem),
    };
    // Phase 1: header names with underscores, when the listener refuses or drops them.
    if manager.headers_with_underscores != HeadersWithUnderscores::Allow {
        let underscored = |req: &DownstreamRequest| {
            req.headers()
                .keys()
                .find(|name| name.as_str().contains('_'))
                .cloned()
        };
        if manager.headers_with_underscores == HeadersWithUnderscores::RejectRequest {
            if underscored(&req).is_some() {
                return local_reply::error(
                    StatusCode::BAD_REQUEST,
                    ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                    "header name with underscores",
                    grpc,
                );
            }
        } else {
            while let Some(name) = underscored(&req) {
                req.headers_mut().remove(&name);
            }
        }
    }
    // Phase 1: the path normalised, so routing and authorization see one path.
    if !manager.path_options.is_off() {
        if let Some(reply) = normalize_path(&mut req, manager, grpc) {
            return reply;
        }
    }
    // Phase 1b: access (JWT authentication, authorization).
    let downstream = Downstream {
        peer: conn.peer,
        local: conn.slot.bound,
        tls: conn.tls,
        identity: conn.peer_identity.as_ref(),
    };
    if let Err(refused) = manager.filters.on_access(&mut req, downstream, state).await {
        return refused;
    }

    // Validated as a header value; a Host that is not text cannot name a virtual host.
    let host = authority.to_str().unwrap_or("");

    // Phase 2: route.
    let routes = &manager.routes;
    let Some(vhost) = routes.table.virtual_host(host) else {
        return local_reply::error(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            "no route",
            grpc,
        );
    };
    let view = RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let Some(route) = vhost.route(&view) else {
        return local_reply::error(
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            "no route",
            grpc,
        );
    };

    if let Some(route_idle) = route.idle_timeout {
        *idle = route_idle;
    }

    // Every response from here on goes back through the route phase's filters and is
    // counted for its route at its head (metrics on).
    let route_metrics = routes.metrics.as_ref().and_then(|m| m.route(route.id));
    let filters = &manager.filters;
    let finish = |mut response: Response<ResponseBody>, state: &mut StreamState| {
        filters.on_route_response(&mut response, state);
        if let Some(m) = route_metrics {
            m.count(response.status());
        }
        response
    };

    // Phase 2: the route's filters (rate limits, faults).
    let routed = Routed {
        virtual_hosts: routes.table.virtual_hosts(),
        vhost,
        route,
        grpc,
    };
    if let Err(refused) = filters.on_route(&req, &routed, conn.peer.ip(), state).await {
        return finish(refused, state);
    }

    // Phase 3: the router acts.
    let mut response = match &route.action {
        Action::DirectResponse {
            status,
            body,
            content_type,
        } => local_reply::direct(*status, body, content_type.as_ref()),
        Action::Redirect(redirect) => {
            let scheme = if conn.tls { "https" } else { "http" };
            let location = redirect.location(scheme, host, req.uri().path(), req.uri().query());
            local_reply::redirect(redirect.code, location)
        }
        Action::Cluster(_) | Action::Weighted(_) => {
            // Boxed: a future is copied whole into its parent when it is made, and so on
            // up, so forwarding's large state inline would be copied at every level
            // above it (`phases`, `handle`, the connection's box) for every request;
            // boxed, it is copied once and the levels above stay small.
            let response = Box::pin(forward::forward(
                req,
                authority,
                *idle,
                conn,
                manager,
                routes,
                vhost,
                route,
                grpc,
                state.records_upstream(),
            ))
            .await;
            return finish(response, state);
        }
    };
    route.response_headers.apply(response.headers_mut());
    vhost.response_headers.apply(response.headers_mut());
    finish(response, state)
}

/// Applies the listener's path normalisation to the request's path (its query kept);
/// the 400 or redirect that answers instead, if there is one.
fn normalize_path(
    req: &mut DownstreamRequest,
    manager: &HttpManager,
    grpc: bool,
) -> Option<Response<ResponseBody>> {
    let (path, redirect) = match manager.path_options.apply(req.uri().path()) {
        Normalized::Unchanged => return None,
        Normalized::Changed(path) => (path, false),
        // A gRPC client cannot follow a redirect; Envoy refuses it instead.
        Normalized::Reject | Normalized::Redirect(_) if grpc => {
            return Some(local_reply::error(
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "path with escaped slashes",
                true,
            ))
        }
        Normalized::Reject => {
            return Some(local_reply::error(
                StatusCode::BAD_REQUEST,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "path with escaped slashes",
                false,
            ))
        }
        Normalized::Redirect(path) => (path, true),
    };
    let with_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(path_and_query) = http::uri::PathAndQuery::try_from(with_query.as_str()) else {
        return Some(local_reply::bad_request("invalid path"));
    };
    if redirect {
        let Ok(location) = HeaderValue::from_str(path_and_query.as_str()) else {
            return Some(local_reply::bad_request("invalid path"));
        };
        return Some(local_reply::redirect(
            StatusCode::TEMPORARY_REDIRECT,
            location,
        ));
    }
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query = Some(path_and_query);
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            None
        }
        Err(_) => Some(local_reply::bad_request("invalid path")),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// The authority a request is routed on, which is also the one its upstream receives
/// (`forward.rs`), so that a client cannot be routed as one host and delivered as another.
///
/// HTTP/1.1 (RFC 9112 §3.2): exactly one `Host`, required; an absolute-form target's
/// authority wins over it (§3.2.2). HTTP/2 (RFC 9113 §8.3.1): `:authority`, or `Host`
/// when there is none; both present and different is malformed. HTTP/1.0 may omit Host.
fn routing_authority(req: &DownstreamRequest) -> Result<Option<HeaderValue>, &'static str> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let http11 = req.version() == Version::HTTP_11;
    let target_value = |target: &http::uri::Authority| {
        HeaderValue::from_str(target.as_str())
            .map(Some)
            .map_err(|_| "invalid request-target authority")
    };
    match (req.uri().authority(), host) {
        (Some(target), Some(host))
            if !target
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(host.as_bytes()) =>
        {
            if req.version() == Version::HTTP_2 {
                return Err("Host differs from :authority");
            }
            // HTTP/1 absolute form (normally already adopted by `adopt_target_authority`).
            target_value(target)
        }
        (_, Some(host)) => Ok(Some(host.clone())),
        (_, None) if http11 => Ok(None),
        (Some(target), None) => target_value(target),
        (None, None) => Ok(Some(HeaderValue::from_static(""))),
    }
}

/// RFC 9112 §3.2.2: an HTTP/1 absolute-form target's authority replaces `Host`. Done
/// before anything reads the request (trace, access log, routing), so all of them see
/// the authority the request is routed on. A missing or repeated Host is left for the
/// framing phase to refuse.
fn adopt_target_authority(req: &mut DownstreamRequest) {
    if req.version() > Version::HTTP_11 {
        return;
    }
    let Some(target) = req.uri().authority() else {
        return;
    };
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) if host.as_bytes() != target.as_str().as_bytes() => {}
        _ => return,
    }
    if let Ok(value) = HeaderValue::from_str(target.as_str()) {
        req.headers_mut().insert(HOST, value);
    }
}
