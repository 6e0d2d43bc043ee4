//! A request's life, as named phases: check its framing, find its virtual host and
//! route, apply its rate limits, inject the faults it asks for, then act — answer
//! directly, redirect, or forward upstream. Around them, when configured, its trace span
//! and its access-log entry.

use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use sinew_router::{Action, RequestView};

use super::body::ResponseBody;
use super::fault;
use super::flags::ResponseFlags;
use super::forward;
use super::local_reply;
use super::logged;
use super::rate_limit;
use super::ConnContext;
use crate::snapshot::{HttpManager, ListenerKind};
use crate::trace;

pub(crate) async fn handle(
    mut req: Request<Incoming>,
    conn: &ConnContext,
) -> Response<ResponseBody> {
    // The listener's config as of this request: a reload mid-connection applies to the
    // next request, and this one keeps what it started with.
    let config = conn.slot.config.load_full();
    let ListenerKind::Http(manager) = &config.kind else {
        return local_reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlags::NO_ROUTE,
            "listener is no longer HTTP",
            false,
        );
    };
    // Tracing: read and pass on the trace context; a sampled request gets a span.
    let span = match &manager.tracing {
        None => None,
        Some(tracer) => trace::start(tracer, &mut req, conn.peer, conn.tls),
    };
    let record_upstream = manager.access_log.is_some() || span.is_some();
    // Access log: take the request's half of the entry now, the response's at the end.
    let response = match &manager.access_log {
        None => phases(req, conn, manager, record_upstream).await,
        Some(logs) => {
            let started = logged::start(
                logs,
                &mut req,
                manager.generate_request_id,
                conn.peer,
                conn.slot.bound,
                conn.tls,
            );
            let response = phases(req, conn, manager, record_upstream).await;
            logged::finish(logs, started, response)
        }
    };
    if let (Some(span), Some(tracer)) = (span, &manager.tracing) {
        trace::finish(tracer, span, &response);
    }
    response
}

/// The phases, in order; every early return is a local reply.
async fn phases(
    req: Request<Incoming>,
    conn: &ConnContext,
    manager: &HttpManager,
    record_upstream: bool,
) -> Response<ResponseBody> {
    let grpc = is_grpc(req.headers());

    // Phase 1: framing. hyper rejects most malformed messages itself, but by the time it
    // hands over a request it has merged duplicate Content-Lengths and dropped one beside
    // chunked; the head guard saw the raw bytes and says whether this head was one of the
    // request-smuggling shapes (RFC 9112 §2.2, §6.1, §6.3).
    if req.version() <= Version::HTTP_11 {
        if let Some(problem) = conn.head_check.next_request_problem() {
            return local_reply::bad_request(problem);
        }
    }
    let host = match host_of(&req) {
        Some(h) => h,
        None if req.version() == Version::HTTP_11 => {
            return local_reply::bad_request("missing Host header");
        }
        None => "",
    };

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

    // Every response from here on is counted for its route at its head (metrics on).
    let route_metrics = routes.metrics.as_ref().and_then(|m| m.route(route.id));
    let counted = |response: Response<ResponseBody>| {
        if let Some(m) = route_metrics {
            m.count(response.status());
        }
        response
    };

    // Phase 3: rate limits.
    let quota = match &manager.rate_limits {
        None => None,
        Some(limits) => match limits.check(routes, vhost, route, &req, conn, grpc).await {
            Ok(quota) => quota,
            Err(refused) => return counted(refused),
        },
    };

    // Phase 4: faults (chaos testing): a delay, an abort, or nothing.
    let fault_flags = match &route.fault {
        Some(policy) => match fault::inject(policy, req.headers(), grpc).await {
            Ok(flags) => flags,
            Err(abort) => return counted(abort),
        },
        None => ResponseFlags::default(),
    };

    // Phase 5: act.
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
            let mut response = forward::forward(
                req,
                conn,
                manager,
                routes,
                vhost,
                route,
                grpc,
                record_upstream,
            )
            .await;
            fault::add_flags(&mut response, fault_flags);
            return counted(rate_limit::annotate(response, quota));
        }
    };
    route.response_headers.apply(response.headers_mut());
    vhost.response_headers.apply(response.headers_mut());
    fault::add_flags(&mut response, fault_flags);
    counted(rate_limit::annotate(response, quota))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Host without port comes from the router; here the raw authority is enough.
fn host_of(req: &Request<Incoming>) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
}
