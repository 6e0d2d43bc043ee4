//! CORS (Envoy's `envoy.filters.http.cors`): the proxy answers a browser's preflight
//! itself and marks the responses to actual cross-origin requests, from the `cors` policy
//! of the request's route and virtual host.
//!
//! The two policies merge field by field, the route's first, as Envoy's filter reads
//! them; the merge is done once when the config is compiled, into one policy per route,
//! kept in an array indexed by the route's position in its table. A request whose route
//! has no policy costs one array read; nothing is locked or allocated.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//!   allowed origin is answered 200 with `Access-Control-Allow-Origin` (the origin itself),
//!   `-Allow-Credentials`, `-Allow-Methods`, `-Allow-Headers`, `-Max-Age` and, when asked,
//!   `-Allow-Private-Network`. From an origin not allowed it goes on upstream
//!   (`forward_not_matching_preflights`, the default) or is answered 200 without them.
//! - An actual request from an allowed origin gets `Access-Control-Allow-Origin`,
//!   `-Allow-Credentials` and `-Expose-Headers` on its response, whoever made it.
//! - A request from an origin not allowed gets no CORS header.

pub(crate) mod matcher;

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use sinew_config::model;
use sinew_config::ConfigError;
use sinew_router::{Percentage, Route};

use crate::stream::body::ResponseBody;
use matcher::StringMatcher;

static REQUEST_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-request-private-network");
static ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// A listener's CORS policies, one per route of its table (by `Route::id`).
pub(crate) struct Cors {
    by_route: Box<[Option<Arc<Policy>>]>,
}

/// One route's policy, merged with its virtual host's.
#[derive(Debug)]
pub(crate) struct Policy {
    origins: Box<[StringMatcher]>,
    allow_methods: Option<Reflect>,
    allow_headers: Option<Reflect>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    forward_not_matching_preflights: bool,
    enabled: Percentage,
    shadow: Percentage,
}

/// A preflight answer's value: fixed, or (`*`) the one the request asked for.
#[derive(Debug)]
enum Reflect {
    Fixed(HeaderValue),
    Requested,
}

/// What an actual request from an allowed origin leaves for its response.
pub(crate) struct Allowed {
    policy: Arc<Policy>,
    origin: HeaderValue,
}

impl Cors {
    /// The policies of `vhosts` (the route table's, in order). None when no virtual host
    /// or route has one: the filter is then left out of the chain.
    pub(crate) fn compile(
        vhosts: &[model::VirtualHost],
        path: &str,
    ) -> Result<Option<Arc<Cors>>, Vec<ConfigError>> {
        // Each configured policy's matchers are checked where they are written, so an
        // error names the policy that has it, once, not every route that inherits it.
        let mut errors = Vec::new();
        for (i, vh) in vhosts.iter().enumerate() {
            let vp = format!("{path}[{i}]");
            if let Some(c) = &vh.cors {
                check_origins(c, &format!("{vp}.cors"), &mut errors);
            }
            for (j, r) in vh.routes.iter().enumerate() {
                if let Some(c) = &r.cors {
                    check_origins(c, &format!("{vp}.routes[{j}].cors"), &mut errors);
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut by_route = Vec::new();
        for vh in vhosts {
            // Routes without a policy of their own share their host's.
            let host = vh.cors.as_ref().map(|c| Arc::new(Policy::compile(c)));
            for r in &vh.routes {
                by_route.push(match &r.cors {
                    Some(own) => Some(Arc::new(Policy::compile(&merge(own, vh.cors.as_ref())))),
                    None => host.clone(),
                });
            }
        }
        if by_route.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Arc::new(Cors {
            by_route: by_route.into(),
        })))
    }

    /// Phase 2: a preflight this filter answers is `Err`; an actual request from an
    /// allowed origin returns what its response needs.
    // The refusal is the reply itself, handed straight back to the client; the
    // chain's other filters return `Response` by value the same way.
    #[allow(clippy::result_large_err)]
    pub(crate) fn on_request<B>(
        &self,
        req: &Request<B>,
        route: &Route,
    ) -> Result<Option<Allowed>, Response<ResponseBody>> {
        let Some(policy) = self.by_route.get(route.id).and_then(Option::as_ref) else {
            return Ok(None);
        };
        policy.on_request(req)
    }
}

/// A route's policy over its virtual host's: each field the route leaves unset (an
/// empty list, no value) comes from the host's, as Envoy reads them. `filter_enabled`
/// and `shadow_enabled` are the most specific policy's, set or not.
fn merge(own: &model::Cors, host: Option<&model::Cors>) -> model::Cors {
    let Some(host) = host else {
        return own.clone();
    };
    let list = |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
    model::Cors {
        allow_origin: if own.allow_origin.is_empty() {
            host.allow_origin.clone()
        } else {
            own.allow_origin.clone()
        },
        allow_methods: list(&own.allow_methods, &host.allow_methods),
        allow_headers: list(&own.allow_headers, &host.allow_headers),
        expose_headers: list(&own.expose_headers, &host.expose_headers),
        max_age: own.max_age.or(host.max_age),
        allow_credentials: own.allow_credentials.or(host.allow_credentials),
        allow_private_network_access: own
            .allow_private_network_access
            .or(host.allow_private_network_access),
        forward_not_matching_preflights: own
            .forward_not_matching_preflights
            .or(host.forward_not_matching_preflights),
        filter_enabled: own.filter_enabled,
        shadow_enabled: own.shadow_enabled,
    }
}

fn check_origins(c: &model::Cors, path: &str, errors: &mut Vec<ConfigError>) {
    for (i, m) in c.allow_origin.iter().enumerate() {
        if let Err(e) = StringMatcher::compile(m, &format!("{path}.allow_origin[{i}]")) {
            errors.push(e);
        }
    }
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(",")).ok()
}

fn reflect(list: &[String]) -> Option<Reflect> {
    if list.len() == 1 && list[0] == "*" {
        return Some(Reflect::Requested);
    }
    joined(list).map(Reflect::Fixed)
}

impl Policy {
    /// `c`'s matchers were checked (`check_origins`); one that does not compile now is
    /// left out.
    fn compile(c: &model::Cors) -> Policy {
        let origins = c
            .allow_origin
            .iter()
            .filter_map(|m| StringMatcher::compile(m, "").ok())
            .collect();
        Policy {
            origins,
            allow_methods: reflect(&c.allow_methods),
            allow_headers: reflect(&c.allow_headers),
            expose_headers: joined(&c.expose_headers),
            max_age: c.max_age.map(HeaderValue::from),
            credentials: c.allow_credentials.unwrap_or(false),
            private_network: c.allow_private_network_access.unwrap_or(false),
            forward_not_matching_preflights: c.forward_not_matching_preflights.unwrap_or(true),
            enabled: Percentage::from_percent(c.filter_enabled.unwrap_or(100.0)),
            shadow: Percentage::from_percent(c.shadow_enabled.unwrap_or(0.0)),
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        // Envoy: a matcher that matches `*` allows every origin.
        self.origins
            .iter()
            .any(|m| m.matches("*") || m.matches(origin))
    }

    // The refusal is the reply itself, handed straight back to the client; the
    // chain's other filters return `Response` by value the same way.
    #[allow(clippy::result_large_err)]
    fn on_request<B>(
        self: &Arc<Self>,
        req: &Request<B>,
    ) -> Result<Option<Allowed>, Response<ResponseBody>> {
        // Drawn once per request (Envoy draws at each look; a policy at 0% or 100%, the
        // usual case, behaves the same).
        let enabled = self.enabled.sample();
        if !enabled && !self.shadow.sample() {
            return Ok(None);
        }
        let headers = req.headers();
        let origin = match headers.get(ORIGIN) {
            Some(o) if !o.is_empty() => o,
            _ => return Ok(None),
        };
        let allowed = self.origin_allowed(origin);
        if !enabled {
            // Shadow mode: the origin is checked and nothing changes.
            return Ok(None);
        }
        let requested_method = headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty());
        let (true, Some(requested_method)) = (req.method() == Method::OPTIONS, requested_method)
        else {
            return Ok(allowed.then(|| Allowed {
                policy: self.clone(),
                origin: origin.clone(),
            }));
        };
        if !allowed && self.forward_not_matching_preflights {
            return Ok(None);
        }
        Err(self.preflight(req, origin, allowed, requested_method))
    }

    /// The answer to a preflight.
    fn preflight<B>(
        &self,
        req: &Request<B>,
        origin: &HeaderValue,
        allowed: bool,
        requested_method: &HeaderValue,
    ) -> Response<ResponseBody> {
        let mut r = Response::new(ResponseBody::empty());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        if allowed {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        match &self.allow_methods {
            Some(Reflect::Fixed(v)) => {
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, v.clone());
            }
            Some(Reflect::Requested) => {
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, requested_method.clone());
            }
            None => {}
        }
        match &self.allow_headers {
            Some(Reflect::Fixed(v)) => {
                h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
            }
            Some(Reflect::Requested) => {
                if let Some(asked) = req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
            }
            None => {}
        }
        if let Some(max_age) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        if self.private_network
            && req
                .headers()
                .get(&REQUEST_PRIVATE_NETWORK)
                .is_some_and(|v| v == "true")
        {
            h.insert(&ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        r
    }
}

/// Phase 4a: the response to an actual request from an allowed origin.
pub(crate) fn add_headers(response: &mut Response<ResponseBody>, allowed: Allowed) {
    let h = response.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed.origin);
    if allowed.policy.credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(expose) = &allowed.policy.expose_headers {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
}

#[cfg(test)]
mod tests;
