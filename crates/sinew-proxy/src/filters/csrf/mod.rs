//! CSRF protection (Envoy's `envoy.filters.http.csrf`): a request that changes state
//! (`POST`, `PUT`, `DELETE`, `PATCH`, Envoy's list) must come from a page of the host it is
//! sent to, or of one of the policy's `additional_origins`. The source is the host and
//! port of `Origin`, or of `Referer` when there is no `Origin`; the destination is the
//! request's `Host` (`:authority`). A mismatch, or no source at all, is refused with 403
//! `Invalid origin`.
//!
//! The listener's policy turns the filter on; a virtual host's or route's replaces it
//! (the most specific one wins, whole). The policy for each route is chosen once when the
//! config is compiled and kept in an array indexed by the route's position.

use std::sync::Arc;

use http::header::{HOST, ORIGIN, REFERER};
use http::{Method, Request, Response, StatusCode};
use sinew_config::model;
use sinew_config::ConfigError;
use sinew_router::{Percentage, Route};

use super::cors::matcher::StringMatcher;
use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;

/// A listener's CSRF policies, one per route of its table (by `Route::id`).
pub(crate) struct Csrf {
    by_route: Box<[Arc<Policy>]>,
}

#[derive(Debug)]
struct Policy {
    enabled: Percentage,
    shadow: Percentage,
    additional_origins: Box<[StringMatcher]>,
}

impl Csrf {
    /// The listener's policy `listener` (at `path`) with the overrides of `vhosts` (at
    /// `vhosts_path`); None when the listener has none (the filter is not in its chain).
    pub(crate) fn compile(
        listener: Option<&model::Csrf>,
        path: &str,
        vhosts: &[model::VirtualHost],
        vhosts_path: &str,
    ) -> Result<Option<Arc<Csrf>>, Vec<ConfigError>> {
        let Some(listener) = listener else {
            return Ok(None);
        };
        let mut errors = Vec::new();
        let mut compile = |c: &model::Csrf, at: &str| match Policy::compile(c, at) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                errors.extend(e);
                Arc::new(Policy::off())
            }
        };
        let base = compile(listener, path);
        let mut by_route = Vec::new();
        for (i, vh) in vhosts.iter().enumerate() {
            let vp = format!("{vhosts_path}[{i}]");
            let host = match &vh.csrf {
                Some(c) => compile(c, &format!("{vp}.csrf")),
                None => base.clone(),
            };
            for (j, r) in vh.routes.iter().enumerate() {
                by_route.push(match &r.csrf {
                    Some(c) => compile(c, &format!("{vp}.routes[{j}].csrf")),
                    None => host.clone(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Arc::new(Csrf {
            by_route: by_route.into(),
        })))
    }

    /// Phase 2: `Err` is the 403 for a request from another origin.
    // The refusal is the reply itself, handed straight back to the client; the
    // chain's other filters return `Response` by value the same way.
    #[allow(clippy::result_large_err)]
    pub(crate) fn check<B>(
        &self,
        req: &Request<B>,
        route: &Route,
        grpc: bool,
    ) -> Result<(), Response<ResponseBody>> {
        let Some(policy) = self.by_route.get(route.id) else {
            return Ok(());
        };
        let enabled = policy.enabled.sample();
        if !enabled && !policy.shadow.sample() {
            return Ok(());
        }
        if !changes_state(req.method()) || policy.valid(req) || !enabled {
            return Ok(());
        }
        Err(local_reply::error(
            StatusCode::FORBIDDEN,
            ResponseFlags::default(),
            "Invalid origin",
            grpc,
        ))
    }
}

/// Envoy's list of methods the filter checks.
fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    )
}

/// The host and port of an absolute URL (`https://a.example:8443/x` is
/// `a.example:8443`); a value that is not one is taken whole, as Envoy does (`null`).
fn host_and_port(value: &str) -> &str {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value;
    };
    if scheme.is_empty() || rest.is_empty() {
        return value;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

impl Policy {
    fn compile(c: &model::Csrf, path: &str) -> Result<Policy, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut origins = Vec::new();
        for (i, m) in c.additional_origins.iter().enumerate() {
            match StringMatcher::compile(m, &format!("{path}.additional_origins[{i}]")) {
                Ok(m) => origins.push(m),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Policy {
            enabled: Percentage::from_percent(c.filter_enabled),
            shadow: Percentage::from_percent(c.shadow_enabled),
            additional_origins: origins.into(),
        })
    }

    fn off() -> Policy {
        Policy {
            enabled: Percentage::NONE,
            shadow: Percentage::NONE,
            additional_origins: Box::new([]),
        }
    }

    /// Whether the request's source origin is its destination or an additional origin.
    fn valid<B>(&self, req: &Request<B>) -> bool {
        let headers = req.headers();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let Some(source) = text(ORIGIN).or_else(|| text(REFERER)).map(host_and_port) else {
            return false;
        };
        if source.is_empty() {
            return false;
        }
        let target = text(HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        if target.is_some_and(|t| t == source) {
            return true;
        }
        self.additional_origins.iter().any(|m| m.matches(source))
    }
}

#[cfg(test)]
mod tests;
