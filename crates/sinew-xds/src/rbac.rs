//! Envoy's RBAC filters — the HTTP filter `envoy.filters.http.rbac` and the network filter
//! `envoy.filters.network.rbac` — mapped onto the listener's `authorization` policies
//! (Istio's `AuthorizationPolicy` model, docs/security.md).
//!
//! Envoy's policy is a tree: permissions and principals nest `and_*`, `or_*` and `not_*`
//! to any depth, and a policy matches when one permission and one principal do. Sinew's
//! rules are flat: a rule matches when all of its parts do (`when` conditions, and one
//! operation's paths, methods and hosts), and a policy when any rule does. Every tree is
//! therefore rewritten into that shape — negations pushed down to the leaves, then
//! AND distributed over OR (disjunctive normal form) — so each AND of leaves becomes one
//! rule and the policy matches exactly when Envoy's would. The model needed no
//! extension; what it cannot say is refused by field path:
//! - two positive path (or method, or host) matchers that must both hold, as Sinew's
//!   operation lists are ORed and these have no `when` key;
//! - a tree whose normal form has more than [`MAX_RULES`] rules (deep ANDs of ORs);
//! - matchers with no Sinew attribute: regex, `contains`, ranges, `requested_server_name`,
//!   `destination_ip` on a listener bound to every address, filter state, CEL conditions,
//!   custom matchers, and metadata other than Istio's JWT keys.
//!
//! Leaves map as Istio's own translation would, read backwards: headers to
//! `request.headers[..]` (`:method` and `:authority` to methods and hosts), `url_path` to
//! paths, `authenticated.principal_name` (a `spiffe://` URI) to `source.principal`,
//! `direct_remote_ip`/`source_ip` to `source.ip`, `remote_ip` to `remote.ip`,
//! `destination_port` to `destination.port`, and `metadata` of filter `istio_authn` to
//! `request.auth.*`. ALLOW, DENY and LOG rules become ALLOW, DENY and AUDIT policies;
//! `shadow_rules` become AUDIT policies (their matches are logged, nothing is enforced).
//!
//! Envoy runs each RBAC filter in turn and a request must pass every one; Sinew's
//! policies of one listener are decided together (DENY wins, then one ALLOW must match),
//! which is the same for any number of DENY and LOG filters and at most one enforcing
//! ALLOW filter. Two ALLOW filters (both must allow) are refused.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    rbac::EnforcementType, Rbac as NetworkRbac,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    list_matcher, metadata_matcher::path_segment::Segment, path_matcher, string_matcher,
    value_matcher, MetadataMatcher, PathMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};
use sinew_config::authz::{parse_condition_key, parse_path_pattern, parse_pattern, Cidr};

use crate::{Ctx, XdsError};

pub(crate) const HTTP_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub(crate) const NETWORK_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// The most rules one Envoy policy may become. An AND of n ORs of m leaves is m^n rules;
/// past this, the policy is refused rather than compiled into something slow.
pub(crate) const MAX_RULES: usize = 256;

/// Where a filter runs, for the leaves that depend on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope {
    /// An HTTP filter (sees the request) rather than a network filter.
    pub http: bool,
    /// The address the listener binds; None or unspecified (`0.0.0.0`) when every
    /// local address may be the destination.
    pub listener_ip: Option<IpAddr>,
}

/// The policies of every RBAC filter on one listener, gathered as its filters are mapped.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    policies: Vec<Value>,
    /// Each policy name and the field path that defined it.
    names: BTreeMap<String, String>,
    /// The filter whose ALLOW rules are enforced, if one is.
    allow_filter: Option<String>,
}

impl Policies {
    /// The listener's `authorization`, if any RBAC filter made a policy.
    pub(crate) fn into_authorization(self) -> Option<Value> {
        (!self.policies.is_empty()).then(|| json!({ "policies": self.policies }))
    }

    fn add(
        &mut self,
        ctx: &Ctx,
        path: &str,
        name: String,
        action: &str,
        rules: Vec<Value>,
    ) -> Result<(), XdsError> {
        if let Some(first) = self.names.insert(name.clone(), path.to_string()) {
            return Err(ctx.error(
                path,
                format!("policy name {name:?} is already used at {first}; Sinew needs the names of one listener's policies to differ"),
            ));
        }
        self.policies
            .push(json!({"name": name, "action": action, "rules": rules}));
        Ok(())
    }
}

/// The HTTP filter's config `any`, found at `path` (its `typed_config`).
pub(crate) fn map_http(
    ctx: &Ctx,
    path: &str,
    any: &Any,
    scope: Scope,
    out: &mut Policies,
) -> Result<(), XdsError> {
    let mut config: HttpRbac = decode_at(ctx, path, any)?;
    // Names of statistics only.
    config.rules_stat_prefix.clear();
    config.shadow_rules_stat_prefix.clear();
    config.track_per_rule_stats = false;
    let rules = config.rules.take();
    let shadow = config.shadow_rules.take();
    ctx.only_supported(path, &config)?;
    both(ctx, path, rules, shadow, scope, out)
}

/// The network filter's config `any`, found at `path` (its `typed_config`).
pub(crate) fn map_network(
    ctx: &Ctx,
    path: &str,
    any: &Any,
    scope: Scope,
    out: &mut Policies,
) -> Result<(), XdsError> {
    let mut config: NetworkRbac = decode_at(ctx, path, any)?;
    config.stat_prefix.clear();
    config.shadow_rules_stat_prefix.clear();
    if config.enforcement_type == EnforcementType::Continuous as i32 {
        return Err(ctx.error(
            format!("{path}.enforcement_type"),
            "CONTINUOUS is not supported by Sinew (a connection is checked once, when it opens)",
        ));
    }
    config.enforcement_type = 0;
    let rules = config.rules.take();
    let shadow = config.shadow_rules.take();
    ctx.only_supported(path, &config)?;
    both(ctx, path, rules, shadow, scope, out)
}

/// Decodes the filter config at `path` (already the `typed_config`).
fn decode_at<M: prost::Message + Default>(ctx: &Ctx, path: &str, any: &Any) -> Result<M, XdsError> {
    M::decode(any.value.as_slice())
        .map_err(|e| ctx.error(path, format!("is not a valid RBAC config: {e}")))
}

fn both(
    ctx: &Ctx,
    path: &str,
    rules: Option<Rules>,
    shadow: Option<Rules>,
    scope: Scope,
    out: &mut Policies,
) -> Result<(), XdsError> {
    // No `rules`: Envoy enforces nothing.
    if let Some(rules) = rules {
        rule_set(ctx, &format!("{path}.rules"), rules, false, scope, out)?;
    }
    if let Some(shadow) = shadow {
        rule_set(
            ctx,
            &format!("{path}.shadow_rules"),
            shadow,
            true,
            scope,
            out,
        )?;
    }
    Ok(())
}

/// One `RBAC` message: its policies, in name order (Envoy's map has none to keep).
fn rule_set(
    ctx: &Ctx,
    path: &str,
    mut rules: Rules,
    shadow: bool,
    scope: Scope,
    out: &mut Policies,
) -> Result<(), XdsError> {
    let action = Action::try_from(rules.action)
        .map_err(|_| ctx.error(format!("{path}.action"), "is not ALLOW, DENY or LOG"))?;
    let model_action = match (shadow, action) {
        (true, _) | (false, Action::Log) => "AUDIT",
        (false, Action::Allow) => "ALLOW",
        (false, Action::Deny) => "DENY",
    };
    let mut policies: Vec<(String, Policy)> =
        std::mem::take(&mut rules.policies).into_iter().collect();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    rules.action = 0;
    ctx.only_supported(path, &rules)?;
    if model_action == "ALLOW" {
        if let Some(first) = out.allow_filter.replace(path.to_string()) {
            return Err(ctx.error(
                format!("{path}.action"),
                format!("a second RBAC filter with ALLOW rules (the first is at {first}): Envoy needs a request to pass both, and Sinew's ALLOW policies on one listener are alternatives"),
            ));
        }
        if policies.is_empty() {
            // Envoy allows nothing then; an ALLOW policy without rules matches nothing.
            out.add(
                ctx,
                path,
                "envoy-rbac-allow-nothing".into(),
                "ALLOW",
                Vec::new(),
            )?;
        }
    }
    for (name, policy) in policies {
        let ppath = format!("{path}.policies[{name:?}]");
        let mapped = policy_rules(ctx, &ppath, policy, scope)?;
        let name = if shadow {
            format!("shadow:{name}")
        } else {
            name
        };
        out.add(ctx, &ppath, name, model_action, mapped)?;
    }
    Ok(())
}

/// One policy as the model's rules: (any permission) AND (any principal), normalised.
fn policy_rules(
    ctx: &Ctx,
    path: &str,
    mut policy: Policy,
    scope: Scope,
) -> Result<Vec<Value>, XdsError> {
    if policy.condition.is_some() || policy.checked_condition.is_some() {
        return Err(ctx.error(
            format!("{path}.condition"),
            "CEL conditions are not supported by Sinew",
        ));
    }
    let permissions = std::mem::take(&mut policy.permissions);
    let principals = std::mem::take(&mut policy.principals);
    ctx.only_supported(path, &policy)?;
    for (field, empty) in [
        ("permissions", permissions.is_empty()),
        ("principals", principals.is_empty()),
    ] {
        if empty {
            return Err(ctx.error(
                format!("{path}.{field}"),
                "needs at least one entry (`any: true` matches everything)",
            ));
        }
    }
    let permissions = permissions
        .into_iter()
        .enumerate()
        .map(|(i, p)| permission(ctx, &format!("{path}.permissions[{i}]"), p, scope))
        .collect::<Result<Vec<_>, _>>()?;
    let principals = principals
        .into_iter()
        .enumerate()
        .map(|(i, p)| principal_expr(ctx, &format!("{path}.principals[{i}]"), p, scope))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = Expr::All(vec![Expr::Any(permissions), Expr::Any(principals)]);
    let conjunctions = normal_form(&tree, false).ok_or_else(|| {
        ctx.error(
            path,
            format!("its and/or/not tree expands to more than {MAX_RULES} rules in Sinew's flat policy form; split it into several policies"),
        )
    })?;
    conjunctions
        .into_iter()
        .map(|leaves| rule(ctx, leaves))
        .collect()
}

/// What a leaf compares.
#[derive(Debug, Clone, PartialEq)]
enum Attribute {
    /// A `when` condition's key (`source.ip`, `request.headers[x-user]`, ...).
    When(String),
    /// Operation fields, which have no `when` key.
    Path,
    Method,
    Host,
}

/// A comparison of one attribute with one value (an Istio pattern, a CIDR or a port),
/// or its negation.
#[derive(Debug, Clone)]
struct Leaf {
    /// Where the matcher is, for errors about combining it.
    path: String,
    attribute: Attribute,
    value: String,
    negated: bool,
}

#[derive(Debug)]
enum Expr {
    Const(bool),
    Leaf(Leaf),
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
}

impl Expr {
    fn leaf(path: &str, attribute: Attribute, value: impl Into<String>) -> Expr {
        Expr::Leaf(Leaf {
            path: path.to_string(),
            attribute,
            value: value.into(),
            negated: false,
        })
    }

    fn negated_if(self, negate: bool) -> Expr {
        if negate {
            Expr::Not(Box::new(self))
        } else {
            self
        }
    }
}

/// `expr` (negated when `negate`) as an OR of ANDs of leaves; None past [`MAX_RULES`].
fn normal_form(expr: &Expr, negate: bool) -> Option<Vec<Vec<Leaf>>> {
    match expr {
        Expr::Const(value) => Some(if *value != negate {
            vec![Vec::new()]
        } else {
            Vec::new()
        }),
        Expr::Leaf(leaf) => {
            let mut leaf = leaf.clone();
            leaf.negated ^= negate;
            Some(vec![vec![leaf]])
        }
        Expr::Not(inner) => normal_form(inner, !negate),
        Expr::All(children) | Expr::Any(children) => {
            // De Morgan: a negated AND is an OR of negations, and the other way round.
            let conjunctive = matches!(expr, Expr::All(_)) != negate;
            if conjunctive {
                let mut product: Vec<Vec<Leaf>> = vec![Vec::new()];
                for child in children {
                    let alternatives = normal_form(child, negate)?;
                    if product.len().saturating_mul(alternatives.len()) > MAX_RULES {
                        return None;
                    }
                    product = product
                        .iter()
                        .flat_map(|left| {
                            alternatives.iter().map(move |right| {
                                let mut both = left.clone();
                                both.extend(right.iter().cloned());
                                both
                            })
                        })
                        .collect();
                }
                Some(product)
            } else {
                let mut sum = Vec::new();
                for child in children {
                    sum.extend(normal_form(child, negate)?);
                    if sum.len() > MAX_RULES {
                        return None;
                    }
                }
                Some(sum)
            }
        }
    }
}

/// An AND of leaves as one model rule: `when` conditions, and one operation for paths,
/// methods and hosts.
fn rule(ctx: &Ctx, leaves: Vec<Leaf>) -> Result<Value, XdsError> {
    let mut when = Vec::new();
    let mut operation = Map::new();
    for leaf in leaves {
        let list = if leaf.negated { "not_values" } else { "values" };
        let field = match &leaf.attribute {
            Attribute::When(key) => {
                when.push(json!({ "key": key, list: [leaf.value] }));
                continue;
            }
            Attribute::Path => "paths",
            Attribute::Method => "methods",
            Attribute::Host => "hosts",
        };
        let key = if leaf.negated {
            format!("not_{field}")
        } else {
            field.to_string()
        };
        let Value::Array(values) = operation.entry(key).or_insert_with(|| json!([])) else {
            unreachable!("operation fields are lists")
        };
        if values
            .iter()
            .any(|v| v.as_str() == Some(leaf.value.as_str()))
        {
            continue;
        }
        if !leaf.negated && !values.is_empty() {
            return Err(ctx.error(
                leaf.path,
                format!("must hold together with another {} matcher (through and_rules, and_ids or a not over an OR); Sinew's {field} are alternatives, so this has no equivalent", &field[..field.len() - 1]),
            ));
        }
        values.push(json!(leaf.value));
    }
    let mut out = Map::new();
    if !operation.is_empty() {
        out.insert("to".into(), json!([{ "operation": operation }]));
    }
    if !when.is_empty() {
        out.insert("when".into(), Value::Array(when));
    }
    Ok(Value::Object(out))
}

fn permission(ctx: &Ctx, path: &str, p: Permission, scope: Scope) -> Result<Expr, XdsError> {
    use permission::Rule;
    let set = |field: &str, rules: Vec<Permission>| -> Result<Vec<Expr>, XdsError> {
        rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| permission(ctx, &format!("{path}.{field}.rules[{i}]"), r, scope))
            .collect()
    };
    Ok(match p.rule {
        Some(Rule::Any(true)) => Expr::Const(true),
        Some(Rule::AndRules(s)) => Expr::All(set("and_rules", s.rules)?),
        Some(Rule::OrRules(s)) => Expr::Any(set("or_rules", s.rules)?),
        Some(Rule::NotRule(inner)) => Expr::Not(Box::new(permission(
            ctx,
            &format!("{path}.not_rule"),
            *inner,
            scope,
        )?)),
        Some(Rule::Header(h)) => header(ctx, &format!("{path}.header"), h, scope)?,
        Some(Rule::UrlPath(m)) => url_path(ctx, &format!("{path}.url_path"), m, scope)?,
        Some(Rule::DestinationIp(range)) => {
            let at = format!("{path}.destination_ip");
            let cidr = Cidr::parse(&cidr_text(&range)).map_err(|e| ctx.error(&at, e))?;
            match scope.listener_ip.filter(|ip| !ip.is_unspecified()) {
                // The listener's address is the only destination its connections have.
                Some(ip) => Expr::Const(cidr.contains(ip)),
                None => return Err(ctx.error(
                    at,
                    "the listener binds every local address, and Sinew's policies have no destination address attribute",
                )),
            }
        }
        Some(Rule::DestinationPort(port)) => {
            let at = format!("{path}.destination_port");
            port_leaf(ctx, &at, port)?
        }
        Some(Rule::DestinationPortRange(range)) => {
            let at = format!("{path}.destination_port_range");
            // Small ranges are ORs of ports; large ones are refused.
            let (start, end) = (range.start.max(0), range.end.max(0));
            if end.saturating_sub(start) > 64 {
                return Err(ctx.error(
                    at,
                    "Sinew lists ports one by one: a range of more than 64 is not supported",
                ));
            }
            let ports = (start..end)
                .map(|p| port_leaf(ctx, &at, p as u32))
                .collect::<Result<Vec<_>, _>>()?;
            Expr::Any(ports)
        }
        Some(Rule::Metadata(m)) => metadata(ctx, &format!("{path}.metadata"), m, scope)?,
        Some(Rule::Any(false)) => return Err(ctx.error(format!("{path}.any"), "must be true")),
        Some(other) => {
            let field = match other {
                Rule::RequestedServerName(_) => "requested_server_name",
                Rule::Matcher(_) => "matcher",
                Rule::UriTemplate(_) => "uri_template",
                _ => "sourced_metadata",
            };
            return Err(ctx.error(
                format!("{path}.{field}"),
                "is not supported by Sinew (its policies have no such attribute)",
            ));
        }
        None => return Err(ctx.error(path, "a rule is required")),
    })
}

fn principal_expr(ctx: &Ctx, path: &str, p: Principal, scope: Scope) -> Result<Expr, XdsError> {
    use principal::Identifier;
    let set = |field: &str, ids: Vec<Principal>| -> Result<Vec<Expr>, XdsError> {
        ids.into_iter()
            .enumerate()
            .map(|(i, id)| principal_expr(ctx, &format!("{path}.{field}.ids[{i}]"), id, scope))
            .collect()
    };
    let ip = |field: &str, key: &str, range: CidrRange| -> Result<Expr, XdsError> {
        let at = format!("{path}.{field}");
        let text = cidr_text(&range);
        Cidr::parse(&text).map_err(|e| ctx.error(&at, e))?;
        Ok(Expr::leaf(&at, Attribute::When(key.into()), text))
    };
    Ok(match p.identifier {
        Some(Identifier::Any(true)) => Expr::Const(true),
        Some(Identifier::AndIds(s)) => Expr::All(set("and_ids", s.ids)?),
        Some(Identifier::OrIds(s)) => Expr::Any(set("or_ids", s.ids)?),
        Some(Identifier::NotId(inner)) => Expr::Not(Box::new(principal_expr(
            ctx,
            &format!("{path}.not_id"),
            *inner,
            scope,
        )?)),
        Some(Identifier::Authenticated(a)) => {
            let at = format!("{path}.authenticated.principal_name");
            let value = match a.principal_name {
                None => "*".to_string(),
                Some(m) => spiffe_principal(ctx, &at, m)?,
            };
            Expr::leaf(&at, Attribute::When("source.principal".into()), value)
        }
        Some(Identifier::SourceIp(range)) => ip("source_ip", "source.ip", range)?,
        Some(Identifier::DirectRemoteIp(range)) => ip("direct_remote_ip", "source.ip", range)?,
        Some(Identifier::RemoteIp(range)) => ip("remote_ip", "remote.ip", range)?,
        Some(Identifier::Header(h)) => header(ctx, &format!("{path}.header"), h, scope)?,
        Some(Identifier::UrlPath(m)) => url_path(ctx, &format!("{path}.url_path"), m, scope)?,
        Some(Identifier::Metadata(m)) => metadata(ctx, &format!("{path}.metadata"), m, scope)?,
        Some(Identifier::Any(false)) => {
            return Err(ctx.error(format!("{path}.any"), "must be true"))
        }
        Some(other) => {
            let field = match other {
                Identifier::FilterState(_) => "filter_state",
                Identifier::Custom(_) => "custom",
                _ => "sourced_metadata",
            };
            return Err(ctx.error(
                format!("{path}.{field}"),
                "is not supported by Sinew (its policies have no such attribute)",
            ));
        }
        None => return Err(ctx.error(path, "an identifier is required")),
    })
}

fn port_leaf(ctx: &Ctx, path: &str, port: u32) -> Result<Expr, XdsError> {
    let valid = u16::try_from(port).ok().filter(|p| *p > 0);
    let Some(port) = valid else {
        return Err(ctx.error(path, format!("{port} is not a port from 1 to 65535")));
    };
    Ok(Expr::leaf(
        path,
        Attribute::When("destination.port".into()),
        port.to_string(),
    ))
}

/// `address_prefix/prefix_len`; an unset length is 0, as in Envoy.
fn cidr_text(range: &CidrRange) -> String {
    let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
    format!("{}/{len}", range.address_prefix)
}

/// Refuses a leaf that reads the request in a network filter, which has none.
fn needs_http(ctx: &Ctx, path: &str, scope: Scope) -> Result<(), XdsError> {
    if scope.http {
        Ok(())
    } else {
        Err(ctx.error(
            path,
            "reads the HTTP request, which a network RBAC filter never sees (use the HTTP RBAC filter)",
        ))
    }
}

fn header(ctx: &Ctx, path: &str, h: HeaderMatcher, scope: Scope) -> Result<Expr, XdsError> {
    needs_http(ctx, path, scope)?;
    if h.treat_missing_header_as_empty {
        return Err(ctx.error(
            format!("{path}.treat_missing_header_as_empty"),
            "is not supported by Sinew",
        ));
    }
    let name = h.name.to_ascii_lowercase();
    let attribute =
        match name.as_str() {
            ":method" => Attribute::Method,
            ":authority" | "host" => Attribute::Host,
            ":path" => return Err(ctx.error(
                format!("{path}.name"),
                "`:path` (with its query) is not supported by Sinew: match the path with url_path",
            )),
            _ => {
                let key = format!("request.headers[{name}]");
                parse_condition_key(&key).map_err(|e| ctx.error(format!("{path}.name"), e))?;
                Attribute::When(key)
            }
        };
    // Hosts are compared case-insensitively by Sinew whatever the matcher says.
    let ignore_case_ok = attribute == Attribute::Host;
    let (value, absent) = match h.header_match_specifier {
        None | Some(HeaderMatchSpecifier::PresentMatch(true)) => ("*".to_string(), false),
        Some(HeaderMatchSpecifier::PresentMatch(false)) => ("*".to_string(), true),
        Some(HeaderMatchSpecifier::ExactMatch(v)) => (pattern(ctx, path, Kind::Exact, v)?, false),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => (pattern(ctx, path, Kind::Prefix, v)?, false),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => (pattern(ctx, path, Kind::Suffix, v)?, false),
        Some(HeaderMatchSpecifier::StringMatch(m)) => (
            string_pattern(ctx, &format!("{path}.string_match"), m, ignore_case_ok)?,
            false,
        ),
        Some(other) => {
            let field = match other {
                HeaderMatchSpecifier::SafeRegexMatch(_) => "safe_regex_match",
                HeaderMatchSpecifier::RangeMatch(_) => "range_match",
                _ => "contains_match",
            };
            return Err(ctx.error(
                format!("{path}.{field}"),
                "is not supported by Sinew (exact, prefix, suffix and present are)",
            ));
        }
    };
    Ok(Expr::leaf(path, attribute, value).negated_if(h.invert_match != absent))
}

fn url_path(ctx: &Ctx, path: &str, m: PathMatcher, scope: Scope) -> Result<Expr, XdsError> {
    needs_http(ctx, path, scope)?;
    let Some(path_matcher::Rule::Path(m)) = m.rule else {
        return Err(ctx.error(format!("{path}.path"), "is required"));
    };
    let at = format!("{path}.path");
    let value = string_pattern(ctx, &at, m, false)?;
    parse_path_pattern(&value).map_err(|e| ctx.error(&at, e))?;
    Ok(Expr::leaf(&at, Attribute::Path, value))
}

/// Istio's encoding of JWT attributes as dynamic metadata of filter `istio_authn`:
/// `request.auth.principal`, `.audiences`, `.presenter` and `request.auth.claims` with
/// the claim's (nested) name as the following path segments.
fn metadata(ctx: &Ctx, path: &str, m: MetadataMatcher, scope: Scope) -> Result<Expr, XdsError> {
    needs_http(ctx, path, scope)?;
    if m.filter != "istio_authn" {
        return Err(ctx.error(
            format!("{path}.filter"),
            "only Istio's JWT metadata (filter `istio_authn`) is supported by Sinew",
        ));
    }
    let keys: Vec<&str> = m
        .path
        .iter()
        .map(|s| match &s.segment {
            Some(Segment::Key(k)) => k.as_str(),
            None => "",
        })
        .collect();
    let key = match keys.as_slice() {
        ["request.auth.claims", claim @ ..] if !claim.is_empty() => {
            let names: String = claim.iter().map(|c| format!("[{c}]")).collect();
            format!("request.auth.claims{names}")
        }
        [one @ ("request.auth.principal" | "request.auth.audiences" | "request.auth.presenter")] => {
            one.to_string()
        }
        _ => {
            return Err(ctx.error(
                format!("{path}.path"),
                "Sinew reads request.auth.principal, .audiences, .presenter and request.auth.claims/NAME... here",
            ))
        }
    };
    parse_condition_key(&key).map_err(|e| ctx.error(format!("{path}.path"), e))?;
    let at = format!("{path}.value");
    let value = m.value.ok_or_else(|| ctx.error(&at, "is required"))?;
    // A claim may be a list: Istio matches any element (`list_match.one_of`).
    let value = match value.match_pattern {
        Some(value_matcher::MatchPattern::ListMatch(list)) => match list.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(one)) => *one,
            None => return Err(ctx.error(format!("{at}.list_match"), "needs one_of")),
        },
        other => envoy_types::pb::envoy::r#type::matcher::v3::ValueMatcher {
            match_pattern: other,
        },
    };
    let text = match value.match_pattern {
        Some(value_matcher::MatchPattern::StringMatch(s)) => string_pattern(ctx, &at, s, false)?,
        Some(value_matcher::MatchPattern::PresentMatch(true)) => "*".to_string(),
        _ => {
            return Err(ctx.error(
                at,
                "Sinew compares JWT attributes as strings (string_match or present_match)",
            ))
        }
    };
    Ok(Expr::leaf(path, Attribute::When(key), text).negated_if(m.invert))
}

/// `authenticated.principal_name`: Envoy matches the peer's URI SAN, `spiffe://td/ns/..`;
/// Sinew's `source.principal` is the same ID without its scheme, as Istio writes it.
fn spiffe_principal(ctx: &Ctx, path: &str, m: StringMatcher) -> Result<String, XdsError> {
    const SCHEME: &str = "spiffe://";
    let not_spiffe = || {
        ctx.error(
            path,
            "Sinew matches peers by SPIFFE ID: the value must start with spiffe:// (or be a suffix of one)",
        )
    };
    if m.ignore_case {
        return Err(ctx.error(format!("{path}.ignore_case"), "is not supported by Sinew"));
    }
    match m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => {
            let id = v.strip_prefix(SCHEME).ok_or_else(not_spiffe)?;
            pattern(ctx, path, Kind::Exact, id.to_string())
        }
        // Every SPIFFE principal starts with the scheme.
        Some(string_matcher::MatchPattern::Prefix(v)) if SCHEME.starts_with(v.as_str()) => {
            Ok("*".into())
        }
        Some(string_matcher::MatchPattern::Prefix(v)) => {
            let id = v.strip_prefix(SCHEME).ok_or_else(not_spiffe)?;
            pattern(ctx, path, Kind::Prefix, id.to_string())
        }
        Some(string_matcher::MatchPattern::Suffix(v)) if v.contains("://") => Err(not_spiffe()),
        Some(string_matcher::MatchPattern::Suffix(v)) => pattern(ctx, path, Kind::Suffix, v),
        _ => Err(ctx.error(path, "Sinew matches principals by exact, prefix or suffix")),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
}

/// A string matcher as an Istio pattern (`v`, `v*`, `*v`, `*`).
fn string_pattern(
    ctx: &Ctx,
    path: &str,
    m: StringMatcher,
    ignore_case_ok: bool,
) -> Result<String, XdsError> {
    if m.ignore_case && !ignore_case_ok {
        return Err(ctx.error(format!("{path}.ignore_case"), "is not supported by Sinew"));
    }
    let (kind, value) = match m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(v)) => (Kind::Exact, v),
        Some(string_matcher::MatchPattern::Prefix(v)) => (Kind::Prefix, v),
        Some(string_matcher::MatchPattern::Suffix(v)) => (Kind::Suffix, v),
        Some(string_matcher::MatchPattern::SafeRegex(_)) => {
            return Err(ctx.error(
                format!("{path}.safe_regex"),
                "is not supported by Sinew (exact, prefix and suffix are)",
            ))
        }
        Some(string_matcher::MatchPattern::Contains(_)) => {
            return Err(ctx.error(
                format!("{path}.contains"),
                "is not supported by Sinew (exact, prefix and suffix are)",
            ))
        }
        Some(string_matcher::MatchPattern::Custom(_)) => {
            return Err(ctx.error(format!("{path}.custom"), "is not supported by Sinew"))
        }
        None => return Err(ctx.error(path, "a match pattern is required")),
    };
    pattern(ctx, path, kind, value)
}

/// Writes `value` as a pattern of `kind`. `*` is Istio's wildcard, so a value with one
/// cannot be written; an empty prefix or suffix is any value.
fn pattern(ctx: &Ctx, path: &str, kind: Kind, value: String) -> Result<String, XdsError> {
    if value.contains('*') {
        return Err(ctx.error(
            path,
            format!("{value:?}: Sinew's patterns use `*` as the wildcard, so a value containing one cannot be matched"),
        ));
    }
    let text = match kind {
        Kind::Exact => value,
        _ if value.is_empty() => "*".into(),
        Kind::Prefix => format!("{value}*"),
        Kind::Suffix => format!("*{value}"),
    };
    parse_pattern(&text).map_err(|e| ctx.error(path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests;
