//! JWT authentication (Envoy's `jwt_authn`, Istio's RequestAuthentication): a request's
//! bearer token is checked against its provider's keys in the access phase, before
//! routing; its claims go to `StreamState::request_auth` for authorization rules and, as
//! configured, upstream as headers.
//!
//! What a request needs comes from the first rule whose path matches; with no rules, as
//! Istio: any provider's valid token, or none at all (a token that is there must be
//! valid). A refusal is 401 with `WWW-Authenticate: Bearer realm="<url>"` (and
//! `error="invalid_token"` unless the token was missing) and Envoy's reason as the body;
//! 403 for an audience that is not allowed. gRPC requests get `UNAUTHENTICATED` (16) or
//! `PERMISSION_DENIED` (7) in gRPC's Trailers-Only form instead.
//!
//! Cost: a listener without `jwt_authn` has no filter; with it, a request without a token
//! costs the header lookups; a token costs two base64 decodes, two small JSON parses and
//! one signature check. Keys are parsed once per file or fetch ([`jwks`]) and read
//! without a lock ([`remote`]).
//!
//! - [`token`]: reading a token and checking its claims and signature.
//! - [`jwks`]: key sets.
//! - [`remote`]: fetching, caching and refreshing a remote key set.

pub(crate) mod jwks;
pub(crate) mod remote;
pub(crate) mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use sinew_config::jwt_authn as config;
use sinew_config::ConfigError;
use sinew_identity::VerifiedClaims;

use crate::metrics::{Metrics, ShardedCounter};
use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;
use jwks::KeySet;
use remote::{FetchCounters, RemoteJwks};
use token::{Expectations, JwtError, Token};

/// A listener's compiled `jwt_authn`.
pub(crate) struct JwtAuthn {
    providers: Vec<Provider>,
    rules: Vec<Rule>,
    /// Headers this filter writes (claims, payloads): removed from every request first,
    /// so a client cannot pass off its own as the proxy's.
    output_headers: Vec<HeaderName>,
    /// What a request gets when no provider's token was there and that was fine.
    passed_without_token: Option<ShardedCounter>,
    /// Refusals of requests that carried no token.
    refused_without_token: Option<ShardedCounter>,
}

struct Provider {
    name: String,
    issuer: String,
    /// Normalised, as tokens' audiences are compared.
    audiences: Vec<String>,
    keys: Keys,
    from_headers: Vec<(HeaderName, String)>,
    from_params: Vec<String>,
    forward: bool,
    forward_payload_header: Option<HeaderName>,
    claim_to_headers: Vec<(HeaderName, Vec<String>)>,
    clock_skew_seconds: i64,
    verified: Option<ShardedCounter>,
    refused: Option<ShardedCounter>,
    /// The provider's config, to keep its remote key set across reloads that leave it be.
    config: config::JwtProvider,
}

enum Keys {
    Local(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

struct Rule {
    path: PathMatch,
    requires: Option<Requirement>,
}

enum PathMatch {
    Prefix(String),
    Exact(String),
}

/// Envoy's requirement tree, with `allow_missing*` outside `requires_any` rewritten as
/// "any provider, or that".
enum Requirement {
    Provider(usize),
    Any { of: Vec<Requirement>, allow: Allow },
    All(Vec<Requirement>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Allow {
    /// Only a valid token.
    Nothing,
    /// No token at all is fine.
    Missing,
    /// No token, or a failing one, is fine.
    MissingOrFailed,
}

/// Where a provider found a token.
#[derive(Clone)]
enum Location {
    Header(HeaderName),
    Param(String),
}

/// A token a provider accepted, with what it proved.
struct Verified {
    provider: usize,
    token: String,
    location: Location,
    payload_b64: String,
    claims: Arc<VerifiedClaims>,
}

/// A refusal: why, and whose (for the metric).
struct Failure {
    error: JwtError,
    provider: Option<usize>,
}

impl Failure {
    fn missing() -> Self {
        Failure {
            error: JwtError::Missing,
            provider: None,
        }
    }
}

impl JwtAuthn {
    /// Authenticates a request: `Ok` with the claims of the token that was verified (or
    /// None when the request needs none and had none), or why it is refused
    /// ([`Refused::reply`] makes the reply).
    /// On success the request is edited for upstream: tokens removed unless forwarded,
    /// claims and payloads added as headers.
    pub(crate) fn authenticate<B>(
        &self,
        req: &mut Request<B>,
    ) -> Result<Option<Arc<VerifiedClaims>>, Refused> {
        for name in &self.output_headers {
            req.headers_mut().remove(name);
        }
        let path = req.uri().path();
        let Some(rule) = self.rules.iter().find(|r| r.path.matches(path)) else {
            return Ok(None);
        };
        let Some(requirement) = &rule.requires else {
            return Ok(None);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs() as i64;
        match self.evaluate(requirement, req, now) {
            Ok(verified) => {
                if verified.is_empty() {
                    if let Some(c) = &self.passed_without_token {
                        c.inc();
                    }
                    return Ok(None);
                }
                let claims = verified[0].claims.clone();
                for v in &verified {
                    let provider = &self.providers[v.provider];
                    if let Some(c) = &provider.verified {
                        c.inc();
                    }
                    provider.pass_on(req, v);
                }
                Ok(Some(claims))
            }
            Err(failure) => {
                let counter = match failure.provider {
                    Some(p) => self.providers[p].refused.as_ref(),
                    None => self.refused_without_token.as_ref(),
                };
                if let Some(c) = counter {
                    c.inc();
                }
                tracing::debug!(
                    reason = failure.error.message(),
                    "JWT authentication refused a request"
                );
                Err(Refused(failure.error))
            }
        }
    }

    fn evaluate<B>(
        &self,
        requirement: &Requirement,
        req: &Request<B>,
        now: i64,
    ) -> Result<Vec<Verified>, Failure> {
        match requirement {
            Requirement::Provider(p) => self.verify_with(*p, req, now).map(|v| vec![v]),
            Requirement::All(list) => {
                let mut all = Vec::new();
                for r in list {
                    all.extend(self.evaluate(r, req, now)?);
                }
                Ok(all)
            }
            Requirement::Any { of, allow } => {
                let mut failures = Vec::new();
                for r in of {
                    match self.evaluate(r, req, now) {
                        Ok(v) => return Ok(v),
                        Err(f) => failures.push(f),
                    }
                }
                let all_missing = failures.iter().all(|f| f.error.is_missing());
                match allow {
                    Allow::MissingOrFailed => return Ok(Vec::new()),
                    Allow::Missing if all_missing => return Ok(Vec::new()),
                    _ => {}
                }
                // The most telling reason: a real failure before "issuer not configured"
                // (another provider's token) before "missing".
                let rank = |f: &Failure| match f.error {
                    JwtError::Missing => 2,
                    JwtError::UnknownIssuer => 1,
                    _ => 0,
                };
                Err(failures
                    .into_iter()
                    .min_by_key(rank)
                    .unwrap_or_else(Failure::missing))
            }
        }
    }

    /// Finds provider `p`'s token and checks it.
    fn verify_with<B>(&self, p: usize, req: &Request<B>, now: i64) -> Result<Verified, Failure> {
        let provider = &self.providers[p];
        let fail = |error| Failure {
            error,
            provider: Some(p),
        };
        let Some((text, location)) = provider.find_token(req) else {
            return Err(Failure::missing());
        };
        let token = token::parse(&text).map_err(fail)?;
        token
            .check_claims(&Expectations {
                issuer: &provider.issuer,
                audiences: &provider.audiences,
                clock_skew_seconds: provider.clock_skew_seconds,
                now,
            })
            .map_err(|e| match e {
                // Not this provider's token: no count against it.
                JwtError::UnknownIssuer => Failure {
                    error: e,
                    provider: None,
                },
                e => fail(e),
            })?;
        let keys = match &provider.keys {
            Keys::Local(keys) => keys.clone(),
            Keys::Remote(remote) => match remote.keys() {
                Some(keys) => keys,
                None => {
                    remote.want_fresh_keys();
                    return Err(fail(JwtError::JwksFetchFail));
                }
            },
        };
        if let Err(e) = token.check_signature(&keys) {
            if let (JwtError::NoMatchingKey, Keys::Remote(remote), Some(kid)) =
                (e, &provider.keys, &token.kid)
            {
                if !keys.has_kid(kid) {
                    remote.want_fresh_keys();
                }
            }
            return Err(fail(e));
        }
        Ok(verified(p, &text, location, token))
    }

    /// The providers' remote key sets, for warming and for keeping across reloads.
    fn remotes(&self) -> impl Iterator<Item = (&Provider, &Arc<RemoteJwks>)> {
        self.providers.iter().filter_map(|p| match &p.keys {
            Keys::Remote(r) => Some((p, r)),
            Keys::Local(_) => None,
        })
    }

    /// Waits (at most each fetch's timeout) for the first fetch of every remote key set,
    /// so a proxy that starts while its issuer is up does not refuse its first requests.
    pub(crate) async fn warm(&self) {
        for (_, remote) in self.remotes() {
            remote.start();
            remote.first_attempt(remote.config.timeout).await;
        }
    }
}

fn verified(p: usize, text: &str, location: Location, token: Token<'_>) -> Verified {
    let payload_b64 = token.payload_b64.to_string();
    Verified {
        provider: p,
        token: text.to_string(),
        location,
        payload_b64,
        claims: Arc::new(VerifiedClaims {
            issuer: token.issuer.unwrap_or_default(),
            subject: token.subject.unwrap_or_default(),
            claims: token.claims,
        }),
    }
}

impl Provider {
    /// The first token in this provider's locations: headers, then query parameters.
    fn find_token<B>(&self, req: &Request<B>) -> Option<(String, Location)> {
        for (name, prefix) in &self.from_headers {
            for value in req.headers().get_all(name) {
                let Ok(value) = value.to_str() else { continue };
                let Some(head) = value.get(..prefix.len()) else {
                    continue;
                };
                if !head.eq_ignore_ascii_case(prefix) {
                    continue;
                }
                let token = value[prefix.len()..].trim();
                // A token is base64url and dots; what follows a space or a comma is not it.
                let token = token.split([' ', ',']).next().unwrap_or("");
                if !token.is_empty() {
                    return Some((token.to_string(), Location::Header(name.clone())));
                }
            }
        }
        if self.from_params.is_empty() {
            return None;
        }
        let query = req.uri().query()?;
        for param in &self.from_params {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if k == param && !v.is_empty() {
                        return Some((v.to_string(), Location::Param(param.clone())));
                    }
                }
            }
        }
        None
    }

    /// Edits an accepted request for upstream.
    fn pass_on<B>(&self, req: &mut Request<B>, v: &Verified) {
        if !self.forward {
            match &v.location {
                Location::Header(name) => remove_token_header(req.headers_mut(), name, &v.token),
                Location::Param(param) => remove_param(req, param),
            }
        }
        if let Some(name) = &self.forward_payload_header {
            if let Ok(value) = HeaderValue::from_str(&v.payload_b64) {
                req.headers_mut().insert(name.clone(), value);
            }
        }
        for (name, path) in &self.claim_to_headers {
            if let Some(value) = claim_header_value(&v.claims.claims, path) {
                req.headers_mut().insert(name.clone(), value);
            }
        }
    }
}

/// Removes the values of header `name` that carry `token` (others, if any, stay).
fn remove_token_header(headers: &mut HeaderMap, name: &HeaderName, token: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(name)
        .iter()
        .filter(|v| !v.to_str().is_ok_and(|s| s.contains(token)))
        .cloned()
        .collect();
    headers.remove(name);
    for value in kept {
        headers.append(name.clone(), value);
    }
}

/// Removes query parameter `param` from the request's URI.
fn remove_param<B>(req: &mut Request<B>, param: &str) {
    let uri = req.uri();
    let Some(query) = uri.query() else { return };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != param)
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    match path_and_query.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return,
    }
    if let Ok(new) = http::Uri::from_parts(parts) {
        *req.uri_mut() = new;
    }
}

/// A claim as a header value: a string as it is, a number or boolean as JSON writes it,
/// a list of those joined with commas; nothing for objects or what a header cannot hold.
fn claim_header_value(
    claims: &serde_json::Map<String, serde_json::Value>,
    path: &[String],
) -> Option<HeaderValue> {
    use serde_json::Value;
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for name in rest {
        value = value.get(name)?;
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match value {
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .join(","),
        v => scalar(v)?,
    };
    HeaderValue::from_str(&text).ok()
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused(JwtError);

impl Refused {
    /// The reply: Envoy's status, `WWW-Authenticate` and reason. `tls`: the request came
    /// over TLS (the realm's scheme).
    pub(crate) fn reply<B>(self, req: &Request<B>, tls: bool) -> Response<ResponseBody> {
        refusal(req, self.0, tls)
    }
}

fn refusal<B>(req: &Request<B>, error: JwtError, tls: bool) -> Response<ResponseBody> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    let forbidden = error == JwtError::AudienceNotAllowed;
    let mut reply = if grpc {
        let code = if forbidden { "7" } else { "16" };
        local_reply::grpc_error(
            HeaderValue::from_static(code),
            ResponseFlags::default(),
            error.message(),
        )
    } else {
        let status = if forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        local_reply::error(status, ResponseFlags::default(), error.message(), false)
    };
    if !forbidden {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let scheme = if tls { "https" } else { "http" };
        let mut challenge = format!("Bearer realm=\"{scheme}://{host}{}\"", req.uri().path());
        if !error.is_missing() {
            challenge.push_str(", error=\"invalid_token\"");
        }
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            reply
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, value);
        }
    }
    reply
}

/// Compiles a listener's `jwt_authn` (at `path`, for errors). Remote key sets of
/// providers whose config is unchanged in `previous` are kept, with what they fetched.
pub(crate) fn compile(
    j: &config::JwtAuthn,
    path: &str,
    listener: &str,
    previous: Option<&JwtAuthn>,
    metrics: Option<&Metrics>,
) -> Result<Arc<JwtAuthn>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut providers = Vec::with_capacity(j.providers.len());
    for (i, p) in j.providers.iter().enumerate() {
        let pp = format!("{path}.providers[{i}]");
        let keys = match (&p.local_jwks, &p.remote_jwks) {
            (Some(local), _) => match local_keys(local) {
                Ok(keys) => Keys::Local(Arc::new(keys)),
                Err((field, why)) => {
                    errors.push(ConfigError::new(format!("{pp}.local_jwks.{field}"), why));
                    continue;
                }
            },
            (None, Some(remote)) => {
                let kept = previous.and_then(|prev| {
                    prev.remotes()
                        .find(|(old, _)| {
                            old.name == p.name && old.config.remote_jwks == p.remote_jwks
                        })
                        .map(|(_, r)| r.clone())
                });
                match kept {
                    Some(r) => Keys::Remote(r),
                    None => {
                        let counters = metrics.map(|m| {
                            let (success, failure) = m.jwks_fetch(listener, &p.name);
                            FetchCounters { success, failure }
                        });
                        match RemoteJwks::new(remote, format!("{listener}/{}", p.name), counters) {
                            Ok(r) => Keys::Remote(Arc::new(r)),
                            Err((field, why)) => {
                                errors.push(ConfigError::new(
                                    format!("{pp}.remote_jwks.{field}"),
                                    why,
                                ));
                                continue;
                            }
                        }
                    }
                }
            }
            (None, None) => continue, // refused by validation
        };
        let header = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
        let mut from_headers: Vec<(HeaderName, String)> = p
            .from_headers
            .iter()
            .filter_map(|h| Some((header(&h.name)?, h.value_prefix.clone())))
            .collect();
        let mut from_params = p.from_params.clone();
        if from_headers.is_empty() && from_params.is_empty() {
            from_headers.push((AUTHORIZATION, "Bearer ".into()));
            from_params.push("access_token".into());
        }
        providers.push(Provider {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            audiences: p
                .audiences
                .iter()
                .map(|a| token::normalize_audience(a))
                .collect(),
            keys,
            from_headers,
            from_params,
            forward: p.forward,
            forward_payload_header: p.forward_payload_header.as_deref().and_then(header),
            claim_to_headers: p
                .claim_to_headers
                .iter()
                .filter_map(|c| {
                    Some((
                        header(&c.header_name)?,
                        c.claim_name.split('.').map(str::to_string).collect(),
                    ))
                })
                .collect(),
            clock_skew_seconds: i64::try_from(p.clock_skew_seconds).unwrap_or(i64::MAX),
            verified: metrics.map(|m| m.jwt_authn(listener, &p.name, "verified")),
            refused: metrics.map(|m| m.jwt_authn(listener, &p.name, "refused")),
            config: p.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let index = |name: &str| providers.iter().position(|p| p.name == name);
    let everyone = || {
        (0..providers.len())
            .map(Requirement::Provider)
            .collect::<Vec<_>>()
    };
    let rules = if j.rules.is_empty() {
        // Istio's RequestAuthentication: any provider's valid token, or none.
        vec![Rule {
            path: PathMatch::Prefix("/".into()),
            requires: Some(Requirement::Any {
                of: everyone(),
                allow: Allow::Missing,
            }),
        }]
    } else {
        j.rules
            .iter()
            .map(|r| Rule {
                path: match (&r.match_.prefix, &r.match_.path) {
                    (_, Some(exact)) => PathMatch::Exact(exact.clone()),
                    (Some(prefix), None) => PathMatch::Prefix(prefix.clone()),
                    (None, None) => PathMatch::Prefix("/".into()),
                },
                requires: r
                    .requires
                    .as_ref()
                    .map(|req| requirement(req, &index, &everyone)),
            })
            .collect()
    };
    let mut output_headers: Vec<HeaderName> = providers
        .iter()
        .flat_map(|p| {
            p.claim_to_headers
                .iter()
                .map(|(h, _)| h.clone())
                .chain(p.forward_payload_header.clone())
        })
        .collect();
    output_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    output_headers.dedup();
    Ok(Arc::new(JwtAuthn {
        providers,
        rules,
        output_headers,
        passed_without_token: metrics.map(|m| m.jwt_authn(listener, "", "no_token_allowed")),
        refused_without_token: metrics.map(|m| m.jwt_authn(listener, "", "refused")),
    }))
}

fn requirement(
    r: &config::JwtRequirement,
    index: &dyn Fn(&str) -> Option<usize>,
    everyone: &dyn Fn() -> Vec<Requirement>,
) -> Requirement {
    if let Some(name) = &r.provider_name {
        // Validation checked the name.
        return Requirement::Provider(index(name).unwrap_or(usize::MAX));
    }
    if let Some(list) = &r.requires_any {
        let of = list
            .iter()
            .filter(|c| allow(c) == Allow::Nothing)
            .map(|c| requirement(c, index, everyone))
            .collect();
        let allow = list
            .iter()
            .map(allow)
            .max_by_key(|a| *a as u8)
            .unwrap_or(Allow::Nothing);
        return Requirement::Any { of, allow };
    }
    if let Some(list) = &r.requires_all {
        return Requirement::All(
            list.iter()
                .map(|c| requirement(c, index, everyone))
                .collect(),
        );
    }
    // `allow_missing` or `allow_missing_or_failed` on its own: any provider, or that.
    Requirement::Any {
        of: everyone(),
        allow: allow(r),
    }
}

/// The `allow_*` flag of a requirement.
fn allow(r: &config::JwtRequirement) -> Allow {
    if r.allow_missing_or_failed == Some(true) {
        Allow::MissingOrFailed
    } else if r.allow_missing == Some(true) {
        Allow::Missing
    } else {
        Allow::Nothing
    }
}

/// The checks compiling makes (key sets that parse, CA files that load), for a config
/// that failed validation: one pass reports every error.
pub(crate) fn lint(j: &config::JwtAuthn, path: &str) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (i, p) in j.providers.iter().enumerate() {
        let pp = format!("{path}.providers[{i}]");
        if let Some(local) = &p.local_jwks {
            if local.filename.is_some() != local.inline.is_some() {
                if let Err((field, why)) = local_keys(local) {
                    errors.push(ConfigError::new(format!("{pp}.local_jwks.{field}"), why));
                }
            }
        }
        if let Some(ca) = p.remote_jwks.as_ref().and_then(|r| r.ca.as_ref()) {
            if let Err(why) = sinew_tls::pem::load_roots(ca) {
                errors.push(ConfigError::new(format!("{pp}.remote_jwks.ca"), why));
            }
        }
    }
    errors
}

/// A local key set, from its file or inline text.
fn local_keys(local: &config::LocalJwks) -> Result<KeySet, (&'static str, String)> {
    let (field, text) = match (&local.filename, &local.inline) {
        (Some(file), _) => (
            "filename",
            std::fs::read_to_string(file)
                .map_err(|e| ("filename", format!("cannot read {file:?}: {e}")))?,
        ),
        (None, Some(inline)) => ("inline", inline.clone()),
        (None, None) => return Err(("inline", "no key set".into())),
    };
    let parsed = jwks::parse(&text).map_err(|e| (field, e))?;
    // In a config, a key that cannot be used is a mistake to fix, not to skip.
    if !parsed.skipped.is_empty() {
        return Err((field, parsed.skipped.join("; ")));
    }
    Ok(parsed.set)
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
