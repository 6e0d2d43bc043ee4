//! Authorization policies with Istio's `AuthorizationPolicy` semantics, for every HTTP
//! request (phase 1b, `on_access`, after JWT authentication and before routing) and
//! every TCP-proxy connection (before the upstream is dialled).
//!
//! The decision, as Istio makes it:
//! 1. AUDIT policies that match are logged and counted; they decide nothing.
//! 2. If any DENY policy matches: denied (HTTP 403 `RBAC: access denied`, or gRPC
//!    status 7 PERMISSION_DENIED; a TCP connection is closed).
//! 3. Else, if there are ALLOW policies and none matches: denied.
//! 4. Else allowed.
//!
//! A policy matches when one of its rules does; a rule when one of its sources, one of
//! its operations and all of its conditions do (an empty list matches); a source when
//! every field it sets does; a field when one of its values does and none of its
//! `not_` values does.
//!
//! On a TCP connection there is no request: a rule that reads one (request principals,
//! hosts, methods, paths, headers, JWT claims) never matches for ALLOW and AUDIT, and
//! for DENY matches as if those fields were absent — Istio's choice, which fails closed.
//!
//! Cost: policies are compiled once per config (patterns and CIDRs parsed, header names
//! made, metric handles looked up); a request reads them without a lock or allocation
//! (a JWT principal or claim rule formats its value), and a listener without policies
//! has no filter at all.

mod list_file;
pub(crate) mod matcher;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, Response, StatusCode};
use sinew_config::authz::{self as cfg, AuthzAction};
use sinew_config::ConfigError;
use sinew_stream::DownstreamRequest;

use crate::filters::router::headers::X_FORWARDED_FOR;
use crate::metrics::{Metrics, ShardedCounter};
use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;
use matcher::{Attributes, Compiler, HttpAttributes, Rule};

/// The body Envoy's RBAC filter answers with, kept so clients written for Envoy match it.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// A listener's policies, compiled.
pub struct Authorization {
    listener: Arc<str>,
    audit: Box<[Policy]>,
    deny: Box<[Policy]>,
    allow: Box<[Policy]>,
    /// `xff_num_trusted_hops`: where in `X-Forwarded-For` the original client is.
    xff_trusted_hops: u32,
    /// Denials because ALLOW policies exist and none matched.
    unmatched: Option<ShardedCounter>,
}

struct Policy {
    name: Arc<str>,
    rules: Box<[Rule]>,
    /// This policy's matches (`result` follows from its action).
    matched: Option<ShardedCounter>,
}

/// What a request or connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// By the DENY policy named, or (None) because no ALLOW policy matched.
    Denied(Option<Arc<str>>),
}

/// Rides on a denial's response so the access log can name the policy
/// (`%RESPONSE_CODE_DETAILS%`: `rbac_access_denied_matched_policy[name]`, as Envoy).
#[derive(Debug, Clone)]
pub struct RbacDenied(pub Option<Arc<str>>);

impl RbacDenied {
    /// Envoy's response code details for this denial.
    pub fn details(&self) -> String {
        format!(
            "rbac_access_denied_matched_policy[{}]",
            self.0.as_deref().unwrap_or("none")
        )
    }
}

impl Policy {
    /// `tcp`: drop HTTP-only rules unless `keep_http_rules` (DENY widens them instead).
    fn matches(&self, a: &Attributes, keep_http_rules: bool) -> bool {
        let tcp = a.http.is_none();
        self.rules
            .iter()
            .filter(|r| !(tcp && r.http_only && !keep_http_rules))
            .any(|r| r.matches(a))
    }
}

impl Authorization {
    /// Compiles a listener's policies; None when it has none. `watch`: start watching
    /// list files (false when only checking a config). Errors carry field paths under
    /// `path` (`listeners[0].authorization`).
    pub fn compile(
        config: &cfg::Authorization,
        path: &str,
        listener: &str,
        xff_trusted_hops: u32,
        metrics: Option<&Metrics>,
        watch: bool,
    ) -> Result<Option<Arc<Authorization>>, Vec<ConfigError>> {
        if config.policies.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let (mut audit, mut deny, mut allow) = (Vec::new(), Vec::new(), Vec::new());
        for (i, p) in config.policies.iter().enumerate() {
            let mut compiler = Compiler {
                errors: &mut errors,
                watch,
            };
            let rules = p
                .rules
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    Rule::compile(
                        &format!("{path}.policies[{i}].rules[{j}]"),
                        r,
                        &mut compiler,
                    )
                })
                .collect();
            let result = match p.action {
                AuthzAction::Allow => "allowed",
                AuthzAction::Deny => "denied",
                AuthzAction::Audit => "audited",
            };
            let policy = Policy {
                name: p.name.as_str().into(),
                rules,
                matched: metrics
                    .map(|m| m.authz_decisions(listener, &p.name, p.action.as_str(), result)),
            };
            match p.action {
                AuthzAction::Allow => allow.push(policy),
                AuthzAction::Deny => deny.push(policy),
                AuthzAction::Audit => audit.push(policy),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let unmatched = (!allow.is_empty())
            .then(|| metrics.map(|m| m.authz_decisions(listener, "-", "ALLOW", "denied")))
            .flatten();
        Ok(Some(Arc::new(Authorization {
            listener: listener.into(),
            audit: audit.into(),
            deny: deny.into(),
            allow: allow.into(),
            xff_trusted_hops,
            unmatched,
        })))
    }

    /// The decision for `a`, counted and (for AUDIT) logged.
    pub(crate) fn evaluate(&self, a: &Attributes) -> Verdict {
        for policy in self.audit.iter() {
            if policy.matches(a, false) {
                count(&policy.matched);
                tracing::info!(
                    listener = %self.listener,
                    policy = %policy.name,
                    peer = %a.peer,
                    remote = %a.remote,
                    method = a.http.as_ref().map_or("-", |h| h.method),
                    path = a.http.as_ref().map_or("-", |h| h.path),
                    "authorization AUDIT policy matched"
                );
            }
        }
        for policy in self.deny.iter() {
            if policy.matches(a, true) {
                count(&policy.matched);
                return Verdict::Denied(Some(policy.name.clone()));
            }
        }
        if self.allow.is_empty() {
            return Verdict::Allowed;
        }
        for policy in self.allow.iter() {
            if policy.matches(a, false) {
                count(&policy.matched);
                return Verdict::Allowed;
            }
        }
        count(&self.unmatched);
        Verdict::Denied(None)
    }

    /// Phase 1b for an HTTP request: the denial to answer with, if it is denied.
    pub(crate) fn check_request(
        &self,
        req: &DownstreamRequest,
        peer: SocketAddr,
        local_port: u16,
        identity: Option<&sinew_identity::PeerIdentity>,
        auth: Option<&sinew_identity::VerifiedClaims>,
    ) -> Option<Response<ResponseBody>> {
        let headers = req.headers();
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        let peer_ip = peer.ip().to_canonical();
        let attributes = Attributes {
            peer: peer_ip,
            remote: remote_address(headers, self.xff_trusted_hops).unwrap_or(peer_ip),
            port: local_port,
            identity,
            http: Some(HttpAttributes {
                method: req.method().as_str(),
                path: req.uri().path(),
                host,
                headers,
                auth,
            }),
        };
        match self.evaluate(&attributes) {
            Verdict::Allowed => None,
            Verdict::Denied(policy) => {
                tracing::debug!(
                    listener = %self.listener,
                    policy = policy.as_deref().unwrap_or("-"),
                    peer = %peer,
                    path = req.uri().path(),
                    "request denied by authorization"
                );
                Some(denied_reply(policy, is_grpc(headers)))
            }
        }
    }

    /// Whether some rule reads a request (hosts, methods, paths, headers, request
    /// principals, JWT claims): then an RPC listener decides per call, where its calls
    /// supply those, rather than once per connection, where they would be absent.
    pub(crate) fn reads_requests(&self) -> bool {
        [&self.audit, &self.deny, &self.allow]
            .iter()
            .flat_map(|list| list.iter())
            .any(|p| p.rules.iter().any(|r| r.http_only))
    }

    /// For an RPC call: the verdict on its connection's facts and the call read as a
    /// `POST` to `host` (its service) at `path` (`/<method>`) with `headers`. Calls carry
    /// no `X-Forwarded-For` to trust: the remote is the peer.
    pub(crate) fn check_call(
        &self,
        peer: SocketAddr,
        local_port: u16,
        identity: Option<&sinew_identity::PeerIdentity>,
        host: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Verdict {
        let peer = peer.ip().to_canonical();
        self.evaluate(&Attributes {
            peer,
            remote: peer,
            port: local_port,
            identity,
            http: Some(HttpAttributes {
                method: "POST",
                path,
                host,
                headers,
                auth: None,
            }),
        })
    }

    /// For a TCP-proxy connection: the verdict on its peer and the listener's port.
    pub(crate) fn check_connection(
        &self,
        peer: SocketAddr,
        local_port: u16,
        identity: Option<&sinew_identity::PeerIdentity>,
    ) -> Verdict {
        let peer = peer.ip().to_canonical();
        self.evaluate(&Attributes {
            peer,
            remote: peer,
            port: local_port,
            identity,
            http: None,
        })
    }
}

fn count(counter: &Option<ShardedCounter>) {
    if let Some(c) = counter {
        c.inc();
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// 403 `RBAC: access denied` (gRPC: status 7 in Trailers-Only form), flagged `RBAC`.
fn denied_reply(policy: Option<Arc<str>>, grpc: bool) -> Response<ResponseBody> {
    let mut reply = local_reply::error(
        StatusCode::FORBIDDEN,
        ResponseFlags::RBAC_DENIED,
        DENIED_BODY,
        grpc,
    );
    reply.extensions_mut().insert(RbacDenied(policy));
    reply
}

/// Envoy's original client with `use_remote_address` and `xff_num_trusted_hops: n`:
/// the address `n` entries from the right of `X-Forwarded-For` (every header line, in
/// order, read as one list). None when `n` is 0, there are fewer entries, or that entry
/// is not an address — the peer is the client then.
pub(crate) fn remote_address(headers: &HeaderMap, trusted_hops: u32) -> Option<IpAddr> {
    if trusted_hops == 0 {
        return None;
    }
    let mut seen = 0;
    for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let line = line.to_str().ok()?;
        for entry in line.rsplit(',') {
            seen += 1;
            if seen == trusted_hops {
                let entry = entry.trim();
                let entry = entry
                    .strip_prefix('[')
                    .and_then(|e| e.strip_suffix(']'))
                    .unwrap_or(entry);
                return entry.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
