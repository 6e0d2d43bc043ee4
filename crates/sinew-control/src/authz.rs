//! Per-service authorization policies, sent to the proxies as Envoy RBAC.
//!
//! A `Service` carries `authorization:` in the proxy's own schema (Istio's
//! AuthorizationPolicy; `sinew_config::authz`), checked by the same functions the proxy
//! uses plus what RBAC over xDS cannot carry ([`crate::policy_check`]). Each listener that reaches the
//! service gets RBAC filters whose policies match exactly the traffic bound for it:
//!
//! - a TCP listener (`tcp: SERVICE`) carries its service's policies as network RBAC
//!   filters before the TCP proxy, with Istio's rules for HTTP-only fields on TCP
//!   already applied (an ALLOW or AUDIT rule that reads the request never matches; a
//!   DENY rule matches as if those fields were absent);
//! - an HTTP listener whose routes all go to one service carries that service's
//!   policies as HTTP RBAC filters in the connection manager;
//! - an HTTP listener shared by several services scopes each rule to its service's
//!   routes: routes match by path prefix, first match wins, so "bound for S" is "the path
//!   starts with one of S's prefixes and with no earlier route's longer one", an
//!   operation of `paths` and `not_paths` that is ANDed into every rule. Services with no
//!   ALLOW policy (and requests no route takes) get one ALLOW policy of their own,
//!   `unrestricted-services`, so another service's ALLOW policies do not deny them.
//!
//! Why not Envoy's per-route `RBACPerRoute`: the proxy decides authorization once per
//! request, before routing, from the listener's policies; a path-scoped rule is decided
//! by the same normalised path the router then matches, so the scoping is exact.
//!
//! Each Sinew policy becomes one Envoy policy named `SERVICE/POLICY` whose principal is
//! the OR of its rules, each rule an AND of its sources, operations and conditions
//! (every attribute Sinew has is a principal identifier in Envoy: SPIFFE URI SANs,
//! addresses, headers, the URL path and Istio's JWT metadata). Ports are the listener's
//! own port, so port fields are decided here. ALLOW, DENY and AUDIT policies go into
//! three filters (ALLOW, DENY and LOG): the proxy's RBAC mapping (`sinew_xds::rbac`)
//! reads them back as the same policies, DENY winning and an ALLOW set that matches
//! nothing denying.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher::path_segment::Segment, metadata_matcher::PathSegment,
    path_matcher, string_matcher, value_matcher, ListMatcher, MetadataMatcher, PathMatcher,
    StringMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use sinew_config::authz::{
    parse_condition_key, parse_path_pattern, parse_pattern, Authorization, AuthzAction,
    AuthzCondition, AuthzOperation, AuthzRule, AuthzSource, Cidr, ConditionKey, StringPattern,
    ValueList,
};

use crate::policy_check::NAMESPACES;
use crate::services::{Listener, Service};

/// The most rules one policy may become in the proxy's flat form (the RBAC mapping's
/// limit, `sinew_xds::rbac::MAX_RULES`): past it the proxy would refuse the listener.
pub const MAX_RULES: usize = 256;

/// The name of the ALLOW policy that keeps services without ALLOW policies open on a
/// listener shared with one that has some. Policy names made here are `SERVICE/NAME`,
/// which always hold a `/`, so this one cannot collide.
pub const UNRESTRICTED: &str = "unrestricted-services";

/// The traffic of one service on one HTTP listener: the routes that take it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteScope {
    /// The route's path prefix.
    pub prefix: String,
    /// Longer prefixes of earlier routes, which take their paths first.
    pub not_prefixes: Vec<String>,
}

/// An expression over Envoy principal identifiers, simplified as it is built.
#[derive(Debug, Clone)]
enum Node {
    Any,
    Nothing,
    Leaf(Box<principal::Identifier>),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

fn and(parts: Vec<Node>) -> Node {
    let mut kept = Vec::new();
    for p in parts {
        match p {
            Node::Any => {}
            Node::Nothing => return Node::Nothing,
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => Node::Any,
        1 => kept.pop().expect("one"),
        _ => Node::And(kept),
    }
}

fn or(parts: Vec<Node>) -> Node {
    let mut kept = Vec::new();
    for p in parts {
        match p {
            Node::Nothing => {}
            Node::Any => return Node::Any,
            other => kept.push(other),
        }
    }
    match kept.len() {
        0 => Node::Nothing,
        1 => kept.pop().expect("one"),
        _ => Node::Or(kept),
    }
}

fn not(n: Node) -> Node {
    match n {
        Node::Any => Node::Nothing,
        Node::Nothing => Node::Any,
        other => Node::Not(Box::new(other)),
    }
}

fn leaf(identifier: principal::Identifier) -> Node {
    Node::Leaf(Box::new(identifier))
}

/// A field and its `not_` form: one of `yes` (when set) and none of `no`.
fn field<T>(
    yes: &[T],
    no: &[T],
    mut make: impl FnMut(&T) -> Result<Node, String>,
) -> Result<Node, String> {
    let mut parts = Vec::new();
    if !yes.is_empty() {
        parts.push(or(yes.iter().map(&mut make).collect::<Result<_, _>>()?));
    }
    if !no.is_empty() {
        parts.push(not(or(no
            .iter()
            .map(&mut make)
            .collect::<Result<_, _>>()?)));
    }
    Ok(and(parts))
}

impl Node {
    fn into_principal(self) -> Principal {
        use principal::{Identifier, Set};
        let identifier = match self {
            Node::Any => Identifier::Any(true),
            Node::Nothing => Identifier::NotId(Box::new(Principal {
                identifier: Some(Identifier::Any(true)),
            })),
            Node::Leaf(id) => *id,
            Node::Not(inner) => Identifier::NotId(Box::new(inner.into_principal())),
            Node::And(ids) => Identifier::AndIds(Set {
                ids: ids.into_iter().map(Node::into_principal).collect(),
            }),
            Node::Or(ids) => Identifier::OrIds(Set {
                ids: ids.into_iter().map(Node::into_principal).collect(),
            }),
        };
        Principal {
            identifier: Some(identifier),
        }
    }

    /// How many rules the proxy's normal form makes of it (as `sinew_xds::rbac`
    /// counts, stopping at the same limit); None past [`MAX_RULES`].
    fn rules(&self, negate: bool) -> Option<usize> {
        match self {
            Node::Any => Some(usize::from(!negate)),
            Node::Nothing => Some(usize::from(negate)),
            Node::Leaf(_) => Some(1),
            Node::Not(inner) => inner.rules(!negate),
            Node::And(children) | Node::Or(children) => {
                let conjunctive = matches!(self, Node::And(_)) != negate;
                let mut total: usize = usize::from(conjunctive);
                for child in children {
                    let n = child.rules(negate)?;
                    total = if conjunctive {
                        total.checked_mul(n).filter(|t| *t <= MAX_RULES)?
                    } else {
                        Some(total + n).filter(|t| *t <= MAX_RULES)?
                    };
                }
                Some(total)
            }
        }
    }
}

fn string_matcher(pattern: &StringPattern, ignore_case: bool) -> StringMatcher {
    use string_matcher::MatchPattern;
    let match_pattern = match pattern {
        StringPattern::Exact(v) => MatchPattern::Exact(v.clone()),
        StringPattern::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringPattern::Suffix(v) => MatchPattern::Suffix(v.clone()),
        StringPattern::Present => MatchPattern::Prefix(String::new()),
    };
    StringMatcher {
        match_pattern: Some(match_pattern),
        ignore_case,
    }
}

/// A peer's SPIFFE ID: Envoy matches the URI SAN (`spiffe://...`), Sinew the principal
/// (the ID without its scheme).
fn principal_leaf(text: &str) -> Result<Node, String> {
    use string_matcher::MatchPattern;
    let pattern = parse_pattern(text)?;
    let principal_name = match pattern {
        StringPattern::Present => None,
        StringPattern::Exact(v) => Some(MatchPattern::Exact(format!("spiffe://{v}"))),
        StringPattern::Prefix(v) => Some(MatchPattern::Prefix(format!("spiffe://{v}"))),
        StringPattern::Suffix(v) => Some(MatchPattern::Suffix(v)),
    };
    Ok(leaf(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: principal_name.map(|m| StringMatcher {
                match_pattern: Some(m),
                ignore_case: false,
            }),
        },
    )))
}

fn cidr(text: &str) -> Result<CidrRange, String> {
    let c = Cidr::parse(text)?;
    Ok(CidrRange {
        address_prefix: c.address.to_string(),
        prefix_len: Some(UInt32Value {
            value: u32::from(c.prefix_len),
        }),
    })
}

fn header_leaf(name: &str, text: &str, ignore_case: bool) -> Result<Node, String> {
    let pattern = parse_pattern(text)?;
    let specifier = match pattern {
        StringPattern::Present => HeaderMatchSpecifier::PresentMatch(true),
        other => HeaderMatchSpecifier::StringMatch(string_matcher(&other, ignore_case)),
    };
    Ok(leaf(principal::Identifier::Header(HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    })))
}

fn path_leaf(pattern: &StringPattern) -> Node {
    leaf(principal::Identifier::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(string_matcher(pattern, false))),
    }))
}

/// Istio's JWT attributes, as the dynamic metadata of filter `istio_authn`; claims and
/// audiences may be lists, matched when any element is. Envoy deprecates the principal's
/// `metadata` for `sourced_metadata`, but it is what Istio sends and the proxy maps.
#[allow(deprecated)]
fn metadata_leaf(keys: &[&str], text: &str, list: bool) -> Result<Node, String> {
    let pattern = parse_pattern(text)?;
    let value = ValueMatcher {
        match_pattern: Some(match pattern {
            StringPattern::Present => value_matcher::MatchPattern::PresentMatch(true),
            other => value_matcher::MatchPattern::StringMatch(string_matcher(&other, false)),
        }),
    };
    let value = if list {
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
                ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(value))),
                },
            ))),
        }
    } else {
        value
    };
    Ok(leaf(principal::Identifier::Metadata(MetadataMatcher {
        filter: "istio_authn".into(),
        path: keys
            .iter()
            .map(|k| PathSegment {
                segment: Some(Segment::Key((*k).to_string())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    })))
}

/// What a rule is read in.
#[derive(Clone, Copy)]
struct Where<'a> {
    /// The listener's port (what `ports` and `destination.port` compare).
    port: u16,
    /// A TCP proxy: no request to read.
    tcp: bool,
    /// The routes of the service, on a listener shared with others.
    scopes: Option<&'a [RouteScope]>,
}

/// Whether the rule reads the HTTP request (as the proxy marks its rules).
fn http_only(rule: &AuthzRule) -> bool {
    rule.from.iter().any(|f| {
        !f.source.request_principals.is_empty() || !f.source.not_request_principals.is_empty()
    }) || rule.to.iter().any(|t| {
        let o = &t.operation;
        [
            &o.hosts,
            &o.not_hosts,
            &o.methods,
            &o.not_methods,
            &o.paths,
            &o.not_paths,
        ]
        .iter()
        .any(|l| !l.is_empty())
    }) || rule
        .when
        .iter()
        .any(|c| parse_condition_key(&c.key).is_ok_and(|k| k.http_only()))
}

/// One rule as a node; None when it can never match here.
fn rule_node(rule: &AuthzRule, deny: bool, at: Where) -> Result<Option<Node>, String> {
    if at.tcp && !deny && http_only(rule) {
        return Ok(None);
    }
    let mut parts = Vec::new();
    if !rule.from.is_empty() {
        let sources = rule
            .from
            .iter()
            .enumerate()
            .map(|(i, f)| {
                source_node(&f.source, at.tcp).map_err(|e| format!("from[{i}].source: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parts.push(or(sources));
    }
    let default_op = AuthzOperation::default();
    let ops: Vec<&AuthzOperation> = if rule.to.is_empty() {
        vec![&default_op]
    } else {
        rule.to.iter().map(|t| &t.operation).collect()
    };
    let mut alternatives = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let ports_match = (op.ports.is_empty() || op.ports.iter().any(|p| p.0 == at.port))
            && !op.not_ports.iter().any(|p| p.0 == at.port);
        if !ports_match {
            continue;
        }
        let scopes: Vec<Option<&RouteScope>> = match at.scopes {
            Some(list) => list.iter().map(Some).collect(),
            None => vec![None],
        };
        for scope in scopes {
            let node =
                operation_node(op, scope, at.tcp).map_err(|e| format!("to[{i}].operation: {e}"))?;
            alternatives.push(node);
        }
    }
    parts.push(or(alternatives));
    for (i, cond) in rule.when.iter().enumerate() {
        parts.push(condition_node(cond, at).map_err(|e| format!("when[{i}]: {e}"))?);
    }
    Ok(match and(parts) {
        Node::Nothing => None,
        node => Some(node),
    })
}

fn source_node(s: &AuthzSource, tcp: bool) -> Result<Node, String> {
    let inline = |list: &ValueList| -> Result<Vec<String>, String> {
        match list {
            ValueList::Inline(v) => Ok(v.clone()),
            ValueList::File(_) => Err("a list file cannot be sent".into()),
        }
    };
    if !s.namespaces.is_empty() || !s.not_namespaces.is_empty() {
        return Err(NAMESPACES.into());
    }
    let mut parts = vec![
        field(&inline(&s.principals)?, &inline(&s.not_principals)?, |v| {
            principal_leaf(v)
        })?,
        field(&inline(&s.ip_blocks)?, &inline(&s.not_ip_blocks)?, |v| {
            Ok(leaf(principal::Identifier::DirectRemoteIp(cidr(v)?)))
        })?,
        field(
            &inline(&s.remote_ip_blocks)?,
            &inline(&s.not_remote_ip_blocks)?,
            |v| Ok(leaf(principal::Identifier::RemoteIp(cidr(v)?))),
        )?,
    ];
    // On TCP only a DENY rule gets here, and Istio matches it as if this were absent.
    if !tcp {
        parts.push(field(
            &s.request_principals,
            &s.not_request_principals,
            |v| metadata_leaf(&["request.auth.principal"], v, false),
        )?);
    }
    Ok(and(parts))
}

/// `paths` within a route's prefix: each pattern narrowed to it, or dropped when it
/// cannot match there. A suffix can only be narrowed to the prefix `/`, which every
/// request path has.
fn narrowed(paths: &[String], prefix: &str) -> Result<Vec<StringPattern>, String> {
    if paths.is_empty() {
        return Ok(vec![StringPattern::Prefix(prefix.to_string())]);
    }
    let mut out = Vec::new();
    for text in paths {
        let narrowed = match parse_path_pattern(text)? {
            StringPattern::Present => Some(StringPattern::Prefix(prefix.to_string())),
            StringPattern::Exact(e) => e.starts_with(prefix).then_some(StringPattern::Exact(e)),
            StringPattern::Prefix(p) if p.starts_with(prefix) => Some(StringPattern::Prefix(p)),
            StringPattern::Prefix(p) if prefix.starts_with(p.as_str()) => {
                Some(StringPattern::Prefix(prefix.to_string()))
            }
            StringPattern::Prefix(_) => None,
            StringPattern::Suffix(s) if prefix == "/" => Some(StringPattern::Suffix(s)),
            StringPattern::Suffix(_) => {
                return Err(format!(
                    "path {text:?} is a suffix, and this service is routed by the prefix {prefix:?} on a listener shared with other services: Envoy RBAC as Sinew maps it cannot say both (route the service by its own listener, or use exact or prefix paths)"
                ))
            }
        };
        out.extend(narrowed);
    }
    Ok(out)
}

fn operation_node(
    op: &AuthzOperation,
    scope: Option<&RouteScope>,
    tcp: bool,
) -> Result<Node, String> {
    if tcp {
        // Only DENY rules get here: their HTTP fields are skipped (ports were decided).
        return Ok(Node::Any);
    }
    let mut parts = vec![
        field(&op.hosts, &op.not_hosts, |v| {
            header_leaf(":authority", v, true)
        })?,
        field(&op.methods, &op.not_methods, |v| {
            header_leaf(":method", v, false)
        })?,
    ];
    let paths: Vec<StringPattern> = match scope {
        Some(scope) => {
            let narrowed = narrowed(&op.paths, &scope.prefix)?;
            if narrowed.is_empty() {
                return Ok(Node::Nothing);
            }
            narrowed
        }
        None => op
            .paths
            .iter()
            .map(|p| parse_path_pattern(p))
            .collect::<Result<_, _>>()?,
    };
    let mut not_paths: Vec<StringPattern> = op
        .not_paths
        .iter()
        .map(|p| parse_path_pattern(p))
        .collect::<Result<_, _>>()?;
    if let Some(scope) = scope {
        not_paths.extend(
            scope
                .not_prefixes
                .iter()
                .map(|p| StringPattern::Prefix(p.clone())),
        );
    }
    parts.push(field(&paths, &not_paths, |p| Ok(path_leaf(p)))?);
    Ok(and(parts))
}

fn condition_node(cond: &AuthzCondition, at: Where) -> Result<Node, String> {
    let key = parse_condition_key(&cond.key)?;
    if at.tcp && key.http_only() {
        // A DENY rule's HTTP condition on TCP: skipped, as Istio does.
        return Ok(Node::Any);
    }
    let (yes, no) = (&cond.values, &cond.not_values);
    match key {
        ConditionKey::DestinationPort => {
            let port = at.port.to_string();
            let holds = (yes.is_empty() || yes.iter().any(|v| v.trim() == port))
                && !no.iter().any(|v| v.trim() == port);
            Ok(if holds { Node::Any } else { Node::Nothing })
        }
        ConditionKey::SourceIp => field(yes, no, |v| {
            Ok(leaf(principal::Identifier::DirectRemoteIp(cidr(v)?)))
        }),
        ConditionKey::RemoteIp => field(yes, no, |v| {
            Ok(leaf(principal::Identifier::RemoteIp(cidr(v)?)))
        }),
        ConditionKey::SourcePrincipal => field(yes, no, |v| principal_leaf(v)),
        ConditionKey::SourceNamespace => Err(NAMESPACES.into()),
        ConditionKey::RequestHeader(name) => field(yes, no, |v| header_leaf(&name, v, false)),
        ConditionKey::RequestAuthPrincipal => field(yes, no, |v| {
            metadata_leaf(&["request.auth.principal"], v, false)
        }),
        ConditionKey::RequestAuthPresenter => field(yes, no, |v| {
            metadata_leaf(&["request.auth.presenter"], v, false)
        }),
        ConditionKey::RequestAuthAudiences => field(yes, no, |v| {
            metadata_leaf(&["request.auth.audiences"], v, true)
        }),
        ConditionKey::RequestAuthClaims(path) => {
            let mut keys = vec!["request.auth.claims"];
            keys.extend(path.iter().map(String::as_str));
            field(yes, no, |v| metadata_leaf(&keys, v, true))
        }
    }
}

/// The policies of one listener, by action, as Envoy policies.
#[derive(Debug, Default)]
pub struct ListenerPolicies {
    pub allow: BTreeMap<String, Policy>,
    pub deny: BTreeMap<String, Policy>,
    pub audit: BTreeMap<String, Policy>,
}

impl ListenerPolicies {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.audit.is_empty()
    }

    /// The RBAC configs to run, in order: DENY, ALLOW, LOG (each only when it has
    /// policies; an ALLOW config is there whenever one service has an ALLOW policy).
    pub fn rule_sets(self) -> Vec<Rules> {
        [
            (Action::Deny, self.deny),
            (Action::Allow, self.allow),
            (Action::Log, self.audit),
        ]
        .into_iter()
        .filter(|(_, policies)| !policies.is_empty())
        .map(|(action, policies)| Rules {
            action: action as i32,
            policies: policies.into_iter().collect(),
            ..Default::default()
        })
        .collect()
    }

    fn add(&mut self, service: &str, authz: &Authorization, at: Where) -> Result<(), String> {
        for (i, policy) in authz.policies.iter().enumerate() {
            let pp = format!("service {service:?}: authorization.policies[{i}]");
            let deny = policy.action == AuthzAction::Deny;
            let mut rules = Vec::new();
            for (j, rule) in policy.rules.iter().enumerate() {
                if let Some(node) =
                    rule_node(rule, deny, at).map_err(|e| format!("{pp}.rules[{j}].{e}"))?
                {
                    rules.push(node);
                }
            }
            let node = or(rules);
            if node.rules(false).is_none() {
                return Err(format!(
                    "{pp}: its rules expand to more than {MAX_RULES} rules in the proxy's flat form (sources × operations × values); split the policy"
                ));
            }
            let name = format!("{service}/{}", policy.name);
            let envoy = envoy_policy(node);
            let set = match policy.action {
                AuthzAction::Allow => &mut self.allow,
                AuthzAction::Deny => &mut self.deny,
                AuthzAction::Audit => &mut self.audit,
            };
            if set.insert(name.clone(), envoy).is_some() {
                return Err(format!("{pp}: the policy name {name:?} is used twice"));
            }
        }
        Ok(())
    }
}

fn envoy_policy(node: Node) -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![node.into_principal()],
        ..Default::default()
    }
}

fn has_policies(service: Option<&Service>) -> Option<&Authorization> {
    service
        .and_then(|s| s.authorization.as_ref())
        .filter(|a| !a.policies.is_empty())
}

/// Which traffic of an HTTP listener goes to which service: each route's scope (None
/// for a route that earlier ones shadow), in route order.
pub fn route_scopes(l: &Listener) -> Vec<Option<RouteScope>> {
    let mut earlier: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for r in &l.routes {
        let prefix = r.prefix.clone().unwrap_or_else(|| "/".into());
        if earlier.iter().any(|p| prefix.starts_with(p.as_str())) {
            out.push(None);
        } else {
            out.push(Some(RouteScope {
                not_prefixes: earlier
                    .iter()
                    .filter(|p| p.starts_with(prefix.as_str()))
                    .cloned()
                    .collect(),
                prefix: prefix.clone(),
            }));
        }
        earlier.push(prefix);
    }
    out
}

/// The policies of the services an HTTP listener routes to, scoped to their traffic.
pub fn http_listener(
    l: &Listener,
    services: &BTreeMap<String, Service>,
    port: u16,
) -> Result<ListenerPolicies, String> {
    let mut out = ListenerPolicies::default();
    let names: std::collections::BTreeSet<&str> =
        l.routes.iter().map(|r| r.service.as_str()).collect();
    let guarded: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| has_policies(services.get(*n)).is_some())
        .collect();
    if guarded.is_empty() {
        return Ok(out);
    }
    if names.len() == 1 {
        // Every request of the listener is bound for this one service.
        let service = guarded[0];
        let authz = has_policies(services.get(service)).expect("guarded");
        let at = Where {
            port,
            tcp: false,
            scopes: None,
        };
        out.add(service, authz, at)?;
        return Ok(out);
    }
    if let Some(r) = l.routes.iter().find(|r| r.path_regex.is_some()) {
        return Err(format!(
            "routes by path_regex (to {:?}) beside services with authorization policies ({}): policies are scoped to a service's routes by path prefix",
            r.service,
            guarded.join(", ")
        ));
    }
    let scopes = route_scopes(l);
    let scopes_of = |service: &str| -> Vec<RouteScope> {
        l.routes
            .iter()
            .zip(&scopes)
            .filter(|(r, _)| r.service == service)
            .filter_map(|(_, s)| s.clone())
            .collect()
    };
    let mut open = Vec::new();
    let mut any_allow = false;
    for name in &names {
        let service_scopes = scopes_of(name);
        let authz = has_policies(services.get(*name));
        let has_allow =
            authz.is_some_and(|a| a.policies.iter().any(|p| p.action == AuthzAction::Allow));
        any_allow |= has_allow;
        if !has_allow {
            for scope in &service_scopes {
                open.push(operation_node(
                    &AuthzOperation::default(),
                    Some(scope),
                    false,
                )?);
            }
        }
        if let Some(authz) = authz {
            if service_scopes.is_empty() {
                // Every route to it is shadowed: no traffic is bound for it here.
                continue;
            }
            let at = Where {
                port,
                tcp: false,
                scopes: Some(&service_scopes),
            };
            out.add(name, authz, at)?;
        }
    }
    if any_allow {
        // Requests no route takes are answered 404 as before, not 403.
        let prefixes: Vec<StringPattern> = l
            .routes
            .iter()
            .map(|r| StringPattern::Prefix(r.prefix.clone().unwrap_or_else(|| "/".into())))
            .collect();
        open.push(not(or(prefixes.iter().map(path_leaf).collect())));
        out.allow
            .insert(UNRESTRICTED.to_string(), envoy_policy(or(open)));
    }
    Ok(out)
}

/// The policies of a TCP listener's service, as Istio applies them to connections.
pub fn tcp_listener(
    service: &str,
    services: &BTreeMap<String, Service>,
    port: u16,
) -> Result<ListenerPolicies, String> {
    let mut out = ListenerPolicies::default();
    if let Some(authz) = has_policies(services.get(service)) {
        let at = Where {
            port,
            tcp: true,
            scopes: None,
        };
        out.add(service, authz, at)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
