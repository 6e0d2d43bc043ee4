//! A policy's rules, compiled: patterns and CIDRs parsed once, header names made, and
//! each rule marked when it reads the HTTP request, for Istio's treatment of such rules
//! on a TCP connection.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use sinew_config::authz::{
    self as cfg, parse_path_pattern, parse_pattern, Cidr, ConditionKey, StringPattern, ValueList,
};
use sinew_config::ConfigError;
use sinew_identity::{PeerIdentity, VerifiedClaims};

use super::list_file::WatchedList;

/// What a request or connection is matched on.
pub(crate) struct Attributes<'a> {
    /// The direct peer.
    pub peer: IpAddr,
    /// The original client (from trusted `X-Forwarded-For` hops, else the peer).
    pub remote: IpAddr,
    /// The listener's port.
    pub port: u16,
    pub identity: Option<&'a PeerIdentity>,
    /// None for a TCP connection.
    pub http: Option<HttpAttributes<'a>>,
}

pub(crate) struct HttpAttributes<'a> {
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    /// The authority the request is routed on.
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub auth: Option<&'a VerifiedClaims>,
}

impl Attributes<'_> {
    fn principal(&self) -> Option<&str> {
        self.identity.and_then(PeerIdentity::principal)
    }

    fn namespace(&self) -> Option<&str> {
        self.identity
            .and_then(|i| i.spiffe.as_ref())
            .and_then(|s| s.namespace())
    }
}

/// A string matcher; `Present` (`*`) needs a value to be there.
#[derive(Debug)]
pub(crate) enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Present,
}

impl From<StringPattern> for StrMatch {
    fn from(p: StringPattern) -> Self {
        match p {
            StringPattern::Exact(s) => StrMatch::Exact(s.into()),
            StringPattern::Prefix(s) => StrMatch::Prefix(s.into()),
            StringPattern::Suffix(s) => StrMatch::Suffix(s.into()),
            StringPattern::Present => StrMatch::Present,
        }
    }
}

impl StrMatch {
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(s) => value == &**s,
            StrMatch::Prefix(s) => value.starts_with(&**s),
            StrMatch::Suffix(s) => value.ends_with(&**s),
            StrMatch::Present => true,
        }
    }

    /// For hosts, which are case-insensitive.
    fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StrMatch::Exact(s) => v.eq_ignore_ascii_case(s.as_bytes()),
            StrMatch::Prefix(s) => {
                v.len() >= s.len() && v[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Suffix(s) => {
                v.len() >= s.len() && v[v.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StrMatch::Present => true,
        }
    }
}

/// A field's values: inline, or a watched list file's current contents.
pub(crate) enum Values<T: 'static> {
    Inline(Box<[T]>),
    File(Arc<WatchedList<T>>),
}

impl<T: Send + Sync> Values<T> {
    fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        match self {
            Values::Inline(v) => v.iter().any(f),
            Values::File(list) => list.current().iter().any(f),
        }
    }
}

/// A field and its `not_` form. Unset halves are None and match anything; a value that
/// is absent (no peer certificate, no header) matches no positive value and no negative
/// one.
pub(crate) struct Field<T: 'static> {
    yes: Option<Values<T>>,
    no: Option<Values<T>>,
}

impl<T: Send + Sync> Field<T> {
    fn is_set(&self) -> bool {
        self.yes.is_some() || self.no.is_some()
    }

    fn check<A: Copy>(&self, attribute: Option<A>, matches: impl Fn(&T, A) -> bool) -> bool {
        if let Some(yes) = &self.yes {
            match attribute {
                Some(a) if yes.any(|t| matches(t, a)) => {}
                _ => return false,
            }
        }
        if let (Some(no), Some(a)) = (&self.no, attribute) {
            if no.any(|t| matches(t, a)) {
                return false;
            }
        }
        true
    }

    /// Like `check`, for an attribute that may have several values (claims, headers):
    /// positive when any value matches any pattern, negative when any does.
    fn check_many<'v, I: Iterator<Item = &'v str>>(
        &self,
        values: impl Fn() -> I,
        matches: impl Fn(&T, &str) -> bool,
    ) -> bool {
        if let Some(yes) = &self.yes {
            if !values().any(|v| yes.any(|t| matches(t, v))) {
                return false;
            }
        }
        if let Some(no) = &self.no {
            if values().any(|v| no.any(|t| matches(t, v))) {
                return false;
            }
        }
        true
    }
}

/// How a compile step reads one value, and where a list file is opened.
pub(crate) struct Compiler<'a> {
    pub errors: &'a mut Vec<ConfigError>,
    /// Watch list files for changes (false when only checking a config).
    pub watch: bool,
}

impl Compiler<'_> {
    fn inline<T>(
        &mut self,
        path: &str,
        values: &[String],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Values<T>> {
        if values.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            match parse(v) {
                Ok(t) => out.push(t),
                Err(e) => self
                    .errors
                    .push(ConfigError::new(format!("{path}[{i}]"), e)),
            }
        }
        Some(Values::Inline(out.into()))
    }

    fn field<T: Send + Sync>(
        &mut self,
        path: &str,
        (yes_name, yes): (&str, &[String]),
        (no_name, no): (&str, &[String]),
        parse: impl Fn(&str) -> Result<T, String> + Copy,
    ) -> Field<T> {
        Field {
            yes: self.inline(&format!("{path}.{yes_name}"), yes, parse),
            no: self.inline(&format!("{path}.{no_name}"), no, parse),
        }
    }

    fn list<T: Send + Sync + 'static>(
        &mut self,
        path: &str,
        list: &ValueList,
        parse: fn(&str) -> Result<T, String>,
    ) -> Option<Values<T>> {
        match list {
            ValueList::Inline(values) => self.inline(path, values, parse),
            ValueList::File(file) => match WatchedList::open(file, parse, self.watch) {
                Ok(list) => Some(Values::File(list)),
                Err(e) => {
                    self.errors
                        .push(ConfigError::new(format!("{path}.from_file"), e));
                    None
                }
            },
        }
    }

    fn listed_field<T: Send + Sync + 'static>(
        &mut self,
        path: &str,
        (yes_name, yes): (&str, &ValueList),
        (no_name, no): (&str, &ValueList),
        parse: fn(&str) -> Result<T, String>,
    ) -> Field<T> {
        Field {
            yes: self.list(&format!("{path}.{yes_name}"), yes, parse),
            no: self.list(&format!("{path}.{no_name}"), no, parse),
        }
    }
}

fn pattern(text: &str) -> Result<StrMatch, String> {
    parse_pattern(text).map(StrMatch::from)
}

fn path_pattern(text: &str) -> Result<StrMatch, String> {
    parse_path_pattern(text).map(StrMatch::from)
}

fn port(text: &str) -> Result<u16, String> {
    cfg::parse_port(text)
}

pub(crate) struct Source {
    principals: Field<StrMatch>,
    request_principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    ip_blocks: Field<Cidr>,
    remote_ip_blocks: Field<Cidr>,
}

pub(crate) struct Operation {
    hosts: Field<StrMatch>,
    ports: Field<u16>,
    methods: Field<StrMatch>,
    paths: Field<StrMatch>,
}

enum ConditionValues {
    Text(Field<StrMatch>),
    Ip(Field<Cidr>),
    Port(Field<u16>),
}

pub(crate) struct Condition {
    key: ConditionKey,
    header: Option<HeaderName>,
    values: ConditionValues,
}

/// One rule: any of `from`, any of `to`, all of `when` (empty lists match).
pub(crate) struct Rule {
    from: Box<[Source]>,
    to: Box<[Operation]>,
    when: Box<[Condition]>,
    /// It reads the HTTP request (request principals, hosts, methods, paths, headers,
    /// JWT claims).
    pub http_only: bool,
}

impl Rule {
    pub(crate) fn compile(path: &str, rule: &cfg::AuthzRule, c: &mut Compiler) -> Rule {
        let from: Box<[Source]> = rule
            .from
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let p = format!("{path}.from[{i}].source");
                let s = &f.source;
                Source {
                    principals: c.listed_field(
                        &p,
                        ("principals", &s.principals),
                        ("not_principals", &s.not_principals),
                        pattern,
                    ),
                    request_principals: c.field(
                        &p,
                        ("request_principals", &s.request_principals),
                        ("not_request_principals", &s.not_request_principals),
                        pattern,
                    ),
                    namespaces: c.field(
                        &p,
                        ("namespaces", &s.namespaces),
                        ("not_namespaces", &s.not_namespaces),
                        pattern,
                    ),
                    ip_blocks: c.listed_field(
                        &p,
                        ("ip_blocks", &s.ip_blocks),
                        ("not_ip_blocks", &s.not_ip_blocks),
                        Cidr::parse,
                    ),
                    remote_ip_blocks: c.listed_field(
                        &p,
                        ("remote_ip_blocks", &s.remote_ip_blocks),
                        ("not_remote_ip_blocks", &s.not_remote_ip_blocks),
                        Cidr::parse,
                    ),
                }
            })
            .collect();
        let to: Box<[Operation]> = rule
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p = format!("{path}.to[{i}].operation");
                let o = &t.operation;
                let ports = |v: &[cfg::Port]| v.iter().map(|p| p.0.to_string()).collect::<Vec<_>>();
                Operation {
                    hosts: c.field(
                        &p,
                        ("hosts", &o.hosts),
                        ("not_hosts", &o.not_hosts),
                        pattern,
                    ),
                    ports: c.field(
                        &p,
                        ("ports", &ports(&o.ports)),
                        ("not_ports", &ports(&o.not_ports)),
                        port,
                    ),
                    methods: c.field(
                        &p,
                        ("methods", &o.methods),
                        ("not_methods", &o.not_methods),
                        pattern,
                    ),
                    paths: c.field(
                        &p,
                        ("paths", &o.paths),
                        ("not_paths", &o.not_paths),
                        path_pattern,
                    ),
                }
            })
            .collect();
        let mut when = Vec::with_capacity(rule.when.len());
        for (i, cond) in rule.when.iter().enumerate() {
            let p = format!("{path}.when[{i}]");
            let key = match cfg::parse_condition_key(&cond.key) {
                Ok(k) => k,
                Err(e) => {
                    c.errors.push(ConfigError::new(format!("{p}.key"), e));
                    continue;
                }
            };
            let header = match &key {
                ConditionKey::RequestHeader(name) => {
                    match HeaderName::from_bytes(name.as_bytes()) {
                        Ok(h) => Some(h),
                        Err(_) => {
                            c.errors.push(ConfigError::new(
                                format!("{p}.key"),
                                format!("{name:?} is not a header name"),
                            ));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let lists = (
                ("values", &cond.values[..]),
                ("not_values", &cond.not_values[..]),
            );
            let values = match key {
                ConditionKey::SourceIp | ConditionKey::RemoteIp => {
                    ConditionValues::Ip(c.field(&p, lists.0, lists.1, Cidr::parse))
                }
                ConditionKey::DestinationPort => {
                    ConditionValues::Port(c.field(&p, lists.0, lists.1, port))
                }
                _ => ConditionValues::Text(c.field(&p, lists.0, lists.1, pattern)),
            };
            when.push(Condition {
                key,
                header,
                values,
            });
        }
        let http_only = from.iter().any(|s| s.request_principals.is_set())
            || to
                .iter()
                .any(|o| o.hosts.is_set() || o.methods.is_set() || o.paths.is_set())
            || when.iter().any(|c| c.key.http_only());
        Rule {
            from,
            to,
            when: when.into(),
            http_only,
        }
    }

    /// Whether the rule matches. On a TCP connection (`a.http` None) HTTP-only fields
    /// are skipped: callers drop HTTP-only rules of ALLOW and AUDIT policies first, so
    /// this only widens DENY rules, as Istio does.
    pub(crate) fn matches(&self, a: &Attributes) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }
}

/// On a TCP connection an HTTP-only field is skipped (it matches).
fn http_field(a: &Attributes, f: impl FnOnce(&HttpAttributes) -> bool) -> bool {
    a.http.as_ref().is_none_or(f)
}

impl Source {
    fn matches(&self, a: &Attributes) -> bool {
        self.ip_blocks.check(Some(a.peer), |c, ip| c.contains(ip))
            && self
                .remote_ip_blocks
                .check(Some(a.remote), |c, ip| c.contains(ip))
            && self.principals.check(a.principal(), |m, p| m.matches(p))
            && self.namespaces.check(a.namespace(), |m, ns| m.matches(ns))
            && (!self.request_principals.is_set()
                || http_field(a, |h| {
                    let principal = h.auth.map(VerifiedClaims::principal);
                    self.request_principals
                        .check(principal.as_deref(), |m, p| m.matches(p))
                }))
    }
}

impl Operation {
    fn matches(&self, a: &Attributes) -> bool {
        self.ports.check(Some(a.port), |p, port| *p == port)
            && http_field(a, |h| {
                self.methods.check(Some(h.method), |m, v| m.matches(v))
                    && self.paths.check(Some(h.path), |m, v| m.matches(v))
                    && self.hosts.check(Some(h.host), |m, host| {
                        m.matches_ignore_case(host)
                            || host_without_port(host).is_some_and(|h| m.matches_ignore_case(h))
                    })
            })
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`; None without a port.
fn host_without_port(host: &str) -> Option<&str> {
    let colon = host.rfind(':')?;
    let (name, port) = (&host[..colon], &host[colon + 1..]);
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':'))
        .then_some(name)
}

impl Condition {
    fn matches(&self, a: &Attributes) -> bool {
        let text = |f: &Field<StrMatch>, v: Option<&str>| f.check(v, |m, v| m.matches(v));
        match (&self.key, &self.values) {
            (ConditionKey::SourceIp, ConditionValues::Ip(f)) => {
                f.check(Some(a.peer), |c, ip| c.contains(ip))
            }
            (ConditionKey::RemoteIp, ConditionValues::Ip(f)) => {
                f.check(Some(a.remote), |c, ip| c.contains(ip))
            }
            (ConditionKey::DestinationPort, ConditionValues::Port(f)) => {
                f.check(Some(a.port), |p, port| *p == port)
            }
            (ConditionKey::SourcePrincipal, ConditionValues::Text(f)) => text(f, a.principal()),
            (ConditionKey::SourceNamespace, ConditionValues::Text(f)) => text(f, a.namespace()),
            (ConditionKey::RequestHeader(_), ConditionValues::Text(f)) => http_field(a, |h| {
                let name = self.header.as_ref().expect("compiled with the key");
                let values = || {
                    h.headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                };
                f.check_many(values, |m, v| m.matches(v))
            }),
            (ConditionKey::RequestAuthPrincipal, ConditionValues::Text(f)) => http_field(a, |h| {
                let principal = h.auth.map(VerifiedClaims::principal);
                text(f, principal.as_deref())
            }),
            (ConditionKey::RequestAuthAudiences, ConditionValues::Text(f)) => {
                http_field(a, |h| claim_values(f, h.auth, &["aud"]))
            }
            (ConditionKey::RequestAuthPresenter, ConditionValues::Text(f)) => {
                http_field(a, |h| claim_values(f, h.auth, &["azp"]))
            }
            (ConditionKey::RequestAuthClaims(path), ConditionValues::Text(f)) => {
                http_field(a, |h| {
                    let names: Vec<&str> = path.iter().map(String::as_str).collect();
                    claim_values(f, h.auth, &names)
                })
            }
            // Compiled together; other pairs cannot be made.
            _ => false,
        }
    }
}

/// A claim's values against a condition; no token, or no such claim, is an absent value.
fn claim_values(f: &Field<StrMatch>, auth: Option<&VerifiedClaims>, path: &[&str]) -> bool {
    let values = auth.map(|c| c.values(path)).unwrap_or_default();
    if values.is_empty() {
        return f.check(None::<&str>, |m, v| m.matches(v));
    }
    f.check_many(|| values.iter().copied(), |m, v| m.matches(v))
}
