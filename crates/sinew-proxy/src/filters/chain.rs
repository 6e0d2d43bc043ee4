//! A listener's HTTP filter chain, and the named phases a stream passes through it in.
//!
//! The chain is compiled with the listener's config: a list of filters in the order they
//! see a request, each holding its own compiled config. A stream goes through it in four
//! phases (the stream layer, `stream::handler`, calls them):
//!
//! 1. **request** — the request as received, before routing: the trace context is read
//!    and passed on, the access log takes the request's half of its entry.
//! 2. **route** — once a route is chosen: CORS, CSRF, rate limits, then faults. A filter
//!    may answer here instead of letting the stream go on (a CORS preflight's 200, CSRF's
//!    403, 429, an injected abort).
//! 3. the router acts on the route (`router`): a direct response, a redirect, or the
//!    upstream call. It is the chain's last filter; it is not in this list because every
//!    chain ends with it.
//! 4. **response**, in reverse order: route-phase filters annotate the response (fault
//!    flags, `x-ratelimit-*` headers, CORS's `Access-Control-*`); then, at the **end** of the stream, the access log
//!    wraps the body to log when it ends and the span is finished.
//!
//! Filters are an enum rather than boxed trait objects: a stream's future holds every
//! filter's state inline and calls them without an allocation or an indirect call, and
//! the compiler sees the whole chain. A new filter (authorization, JWT, RPC-aware ones)
//! is a variant here, a folder beside the others, and its phases below.

use std::net::IpAddr;
use std::sync::Arc;

use http::Response;
use sinew_stream::DownstreamRequest;

use super::access_log::logged::{self, Started};
use super::access_log::AccessLogs;
use super::authz::Authorization;
use super::compression::{Compressor, Decompressor, Negotiated};
use super::cors::{self, Cors};
use super::csrf::Csrf;
use super::fault;
use super::jwt_authn::JwtAuthn;
use super::rate_limit::{self, HttpRateLimits, Quota};
use super::trace::{self, ActiveSpan, Tracer};
use super::{Downstream, Routed};
use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;

/// One HTTP filter, with its compiled config (handles: a clone shares it).
#[derive(Clone)]
pub(crate) enum HttpFilter {
    Trace(Arc<Tracer>),
    AccessLog {
        logs: Arc<AccessLogs>,
        /// The listener generates `x-request-id` when a request has none: the log must
        /// record the one the upstream will see.
        generate_request_id: bool,
    },
    RateLimit(Arc<HttpRateLimits>),
    /// The route's `fault` policy (per route, as Envoy's per-route fault config).
    Fault,
    /// JWT authentication, in the access phase (before authorization).
    JwtAuthn(Arc<JwtAuthn>),
    /// The listener's authorization policies, checked at the access phase.
    Authorization(Arc<Authorization>),
    /// Response compression: reads `Accept-Encoding` in the request phase, compresses
    /// in the response phase.
    Compression(Arc<Compressor>),
    /// Request and response decompression.
    Decompression(Arc<Decompressor>),
    /// The CORS policies of the route table, at the route phase (present only when some
    /// virtual host or route has one).
    Cors(Arc<Cors>),
    /// CSRF protection, at the route phase.
    Csrf(Arc<Csrf>),
}

/// A listener's filters, in request order.
#[derive(Clone)]
pub struct FilterChain {
    filters: Arc<[HttpFilter]>,
}

/// What the filters keep between their phases, for one stream: a slot per filter kind.
#[derive(Default)]
pub(crate) struct StreamState {
    span: Option<ActiveSpan>,
    log: Option<Started>,
    quota: Option<Quota>,
    fault_flags: ResponseFlags,
    cors: Option<cors::Allowed>,
    /// The claims of the request's verified JWT, for authorization rules and headers.
    pub(crate) request_auth: Option<Arc<sinew_identity::VerifiedClaims>>,
    /// The encoding the client accepts, for the response (compression on).
    compress: Option<Negotiated>,
}

impl StreamState {
    /// Whether a filter wants to know which upstream answered (`UpstreamInfo` in the
    /// response's extensions): the access log does, and a sampled span.
    pub(crate) fn records_upstream(&self) -> bool {
        self.log.is_some() || self.span.is_some()
    }
}

impl FilterChain {
    /// The chain for a listener: tracing first (its span covers everything), then the
    /// access log, rate limits, faults — Envoy's usual `http_filters` order.
    pub(crate) fn new(
        tracer: Option<Arc<Tracer>>,
        access_logs: Option<Arc<AccessLogs>>,
        generate_request_id: bool,
        rate_limits: Option<Arc<HttpRateLimits>>,
    ) -> Self {
        let mut filters = Vec::with_capacity(4);
        filters.extend(tracer.map(HttpFilter::Trace));
        filters.extend(access_logs.map(|logs| HttpFilter::AccessLog {
            logs,
            generate_request_id,
        }));
        filters.extend(rate_limits.map(HttpFilter::RateLimit));
        filters.push(HttpFilter::Fault);
        Self {
            filters: filters.into(),
        }
    }

    /// Adds the listener's authorization policies; they run in the access phase, after
    /// the filters that establish who is asking (JWT).
    pub(crate) fn with_authorization(self, authz: Option<Arc<Authorization>>) -> Self {
        let Some(authz) = authz else {
            return self;
        };
        let mut filters = self.filters.to_vec();
        filters.push(HttpFilter::Authorization(authz));
        Self {
            filters: filters.into(),
        }
    }

    /// Adds compression and decompression last (nearest the router), compression first:
    /// a response is decompressed before it is compressed, as with Envoy's
    /// `[compressor, decompressor, router]`.
    pub(crate) fn with_compression(
        self,
        compressor: Option<Arc<Compressor>>,
        decompressor: Option<Arc<Decompressor>>,
    ) -> Self {
        if compressor.is_none() && decompressor.is_none() {
            return self;
        }
        let mut filters = self.filters.to_vec();
        filters.extend(compressor.map(HttpFilter::Compression));
        filters.extend(decompressor.map(HttpFilter::Decompression));
        Self {
            filters: filters.into(),
        }
    }

    /// Adds the CORS and CSRF filters, first in the route phase (Envoy's usual order: a
    /// preflight is answered, and a forged request refused, before a rate limit counts it).
    pub(crate) fn with_origin_filters(
        self,
        cors: Option<Arc<Cors>>,
        csrf: Option<Arc<Csrf>>,
    ) -> Self {
        if cors.is_none() && csrf.is_none() {
            return self;
        }
        let mut filters = self.filters.to_vec();
        let at = filters
            .iter()
            .position(|f| matches!(f, HttpFilter::RateLimit(_) | HttpFilter::Fault))
            .unwrap_or(filters.len());
        let added = cors
            .map(HttpFilter::Cors)
            .into_iter()
            .chain(csrf.map(HttpFilter::Csrf));
        filters.splice(at..at, added);
        Self {
            filters: filters.into(),
        }
    }

    /// The listener's rate limits, if it has any (kept across reloads by `compile`).
    pub fn rate_limits(&self) -> Option<&Arc<HttpRateLimits>> {
        self.filters.iter().find_map(|f| match f {
            HttpFilter::RateLimit(limits) => Some(limits),
            _ => None,
        })
    }

    /// The chain with JWT authentication (when `jwt` is some), placed after tracing and
    /// the access log (which see every request, refused ones too) and before the filters
    /// that follow it in the access phase (authorization reads its claims).
    pub(crate) fn with_jwt_authn(self, jwt: Option<Arc<JwtAuthn>>) -> Self {
        let Some(jwt) = jwt else { return self };
        let mut filters: Vec<HttpFilter> = self.filters.iter().map(HttpFilter::clone).collect();
        let at = filters
            .iter()
            .position(|f| !matches!(f, HttpFilter::Trace(_) | HttpFilter::AccessLog { .. }))
            .unwrap_or(filters.len());
        filters.insert(at, HttpFilter::JwtAuthn(jwt));
        Self {
            filters: filters.into(),
        }
    }

    /// The listener's JWT authentication, if it has any (its remote key sets are kept
    /// across reloads by `compile`).
    pub(crate) fn jwt_authn(&self) -> Option<&Arc<JwtAuthn>> {
        self.filters.iter().find_map(|f| match f {
            HttpFilter::JwtAuthn(jwt) => Some(jwt),
            _ => None,
        })
    }

    /// The listener's access logs, if it has any.
    pub(crate) fn access_logs(&self) -> Option<&Arc<AccessLogs>> {
        self.filters.iter().find_map(|f| match f {
            HttpFilter::AccessLog { logs, .. } => Some(logs),
            _ => None,
        })
    }

    /// Phase 1, before routing: every filter sees the request as received and may edit
    /// its headers (the trace context, a generated request id).
    pub(crate) fn on_request(
        &self,
        req: &mut DownstreamRequest,
        downstream: Downstream,
        state: &mut StreamState,
    ) {
        for filter in self.filters.iter() {
            match filter {
                HttpFilter::Trace(tracer) => {
                    state.span = trace::start(tracer, req, downstream.peer, downstream.tls);
                }
                HttpFilter::AccessLog {
                    logs,
                    generate_request_id,
                } => {
                    state.log = Some(logged::start(logs, req, *generate_request_id, downstream));
                }
                HttpFilter::Compression(c) => state.compress = c.on_request(req),
                HttpFilter::Decompression(d) => d.on_request(req),
                HttpFilter::RateLimit(_)
                | HttpFilter::Fault
                | HttpFilter::JwtAuthn(_)
                | HttpFilter::Authorization(_)
                | HttpFilter::Cors(_)
                | HttpFilter::Csrf(_) => {}
            }
        }
    }

    /// Phase 1b, access: once the request's authority is known and before it is routed,
    /// who is asking is established (JWT authentication) and checked (authorization).
    /// `Err` is a local reply (401, 403) that ends the stream here.
    pub(crate) async fn on_access(
        &self,
        req: &mut DownstreamRequest,
        downstream: Downstream<'_>,
        state: &mut StreamState,
    ) -> Result<(), Response<ResponseBody>> {
        for filter in self.filters.iter() {
            match filter {
                HttpFilter::JwtAuthn(jwt) => {
                    state.request_auth = jwt
                        .authenticate(req)
                        .map_err(|refused| refused.reply(req, downstream.tls))?;
                }
                HttpFilter::Authorization(authz) => {
                    if let Some(denied) = authz.check_request(
                        req,
                        downstream.peer,
                        downstream.local.port(),
                        downstream.identity.map(|identity| &**identity),
                        state.request_auth.as_deref(),
                    ) {
                        return Err(denied);
                    }
                }
                HttpFilter::Trace(_)
                | HttpFilter::AccessLog { .. }
                | HttpFilter::RateLimit(_)
                | HttpFilter::Fault
                | HttpFilter::Compression(_)
                | HttpFilter::Decompression(_)
                | HttpFilter::Cors(_)
                | HttpFilter::Csrf(_) => {}
            }
        }
        Ok(())
    }

    /// Phase 2, once a route is chosen: `Err` is a local reply that ends the stream here.
    pub(crate) async fn on_route(
        &self,
        req: &DownstreamRequest,
        routed: &Routed<'_>,
        client: IpAddr,
        state: &mut StreamState,
    ) -> Result<(), Response<ResponseBody>> {
        for filter in self.filters.iter() {
            match filter {
                HttpFilter::RateLimit(limits) => {
                    state.quota = limits.check(routed, req, client).await?;
                }
                HttpFilter::Cors(cors) => {
                    state.cors = cors.on_request(req, routed.route)?;
                }
                HttpFilter::Csrf(csrf) => csrf.check(req, routed.route, routed.grpc)?,
                HttpFilter::Fault => {
                    if let Some(policy) = &routed.route.fault {
                        state.fault_flags =
                            fault::inject(policy, req.headers(), routed.grpc).await?;
                    }
                }
                HttpFilter::Trace(_)
                | HttpFilter::AccessLog { .. }
                | HttpFilter::JwtAuthn(_)
                | HttpFilter::Authorization(_)
                | HttpFilter::Compression(_)
                | HttpFilter::Decompression(_) => {}
            }
        }
        Ok(())
    }

    /// Phase 4a, in reverse order: the route-phase filters annotate the response the
    /// route produced (whether the router or a filter made it).
    pub(crate) fn on_route_response(
        &self,
        response: &mut Response<ResponseBody>,
        state: &mut StreamState,
    ) {
        for filter in self.filters.iter().rev() {
            match filter {
                HttpFilter::Fault => fault::add_flags(response, state.fault_flags),
                HttpFilter::Cors(_) => {
                    if let Some(allowed) = state.cors.take() {
                        cors::add_headers(response, allowed);
                    }
                }
                HttpFilter::RateLimit(_) => {
                    if let Some(quota) = state.quota.take() {
                        rate_limit::add_headers(response, quota);
                    }
                }
                HttpFilter::Compression(c) => {
                    if let Some(negotiated) = state.compress.take() {
                        c.on_response(negotiated, response);
                    }
                }
                HttpFilter::Decompression(d) => d.on_response(response),
                HttpFilter::Trace(_)
                | HttpFilter::AccessLog { .. }
                | HttpFilter::JwtAuthn(_)
                | HttpFilter::Authorization(_)
                | HttpFilter::Csrf(_) => {}
            }
        }
    }

    /// Phase 4b, in reverse order, on every response the stream gets, local replies
    /// before routing included: the access log takes over the body, the span ends.
    pub(crate) fn on_stream_end(
        &self,
        mut response: Response<ResponseBody>,
        mut state: StreamState,
    ) -> Response<ResponseBody> {
        for filter in self.filters.iter().rev() {
            match filter {
                HttpFilter::AccessLog { logs, .. } => {
                    if let Some(started) = state.log.take() {
                        response = logged::finish(logs, started, response);
                    }
                }
                HttpFilter::Trace(tracer) => {
                    if let Some(span) = state.span.take() {
                        trace::finish(tracer, span, &response);
                    }
                }
                HttpFilter::RateLimit(_)
                | HttpFilter::Fault
                | HttpFilter::JwtAuthn(_)
                | HttpFilter::Authorization(_)
                | HttpFilter::Compression(_)
                | HttpFilter::Decompression(_)
                | HttpFilter::Cors(_)
                | HttpFilter::Csrf(_) => {}
            }
        }
        response
    }
}
