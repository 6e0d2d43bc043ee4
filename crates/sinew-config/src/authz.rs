//! Authorization policies, spelled as Istio's `AuthorizationPolicy` spells them, per
//! listener: `authorization: {policies: [{name, action, rules: [{from, to, when}]}]}`.
//!
//! The typed forms every string stands for — a principal or path pattern with its
//! wildcard, a CIDR, a `when` key — are parsed here, once, by the same functions that
//! validation and the data plane's compiler call, so a value that validates is a value
//! that compiles, and a bad one is reported at its field path.
//!
//! A source's `principals` and IP blocks may come from a file instead of the config
//! (`{from_file: path, refresh_interval: 5s}`): Istio Mixer's black and white lists.

use std::net::IpAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::duration;
use crate::ConfigError;

/// A listener's policies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[serde(default)]
    pub policies: Vec<AuthorizationPolicy>,
}

/// One policy: what it does when one of its rules matches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicy {
    pub name: String,
    /// Istio's default is ALLOW.
    #[serde(default)]
    pub action: AuthzAction,
    /// No rules: an ALLOW policy matches nothing (and so denies what no other ALLOW
    /// policy allows), a DENY or AUDIT policy never matches. A rule `{}` matches anything.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthzAction {
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
    /// Matches are logged and counted; the decision is left to the others.
    #[serde(rename = "AUDIT")]
    Audit,
}

impl AuthzAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzAction::Allow => "ALLOW",
            AuthzAction::Deny => "DENY",
            AuthzAction::Audit => "AUDIT",
        }
    }
}

/// A rule matches when each of its parts does: one of `from`, one of `to`, every `when`.
/// An empty part matches anything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<AuthzFrom>,
    #[serde(default)]
    pub to: Vec<AuthzTo>,
    #[serde(default)]
    pub when: Vec<AuthzCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzFrom {
    pub source: AuthzSource,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzTo {
    pub operation: AuthzOperation,
}

/// Who is asking. Every field set must match (AND); a field matches when any of its
/// values does (OR), and its `not_` form when none does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzSource {
    /// The peer certificate's SPIFFE principal, `<trust-domain>/ns/<ns>/sa/<sa>`.
    #[serde(default)]
    pub principals: ValueList,
    #[serde(default)]
    pub not_principals: ValueList,
    /// A verified JWT's `<iss>/<sub>`.
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// The namespace in the peer's SPIFFE ID.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// The direct peer's address: `10.0.0.1` or `10.0.0.0/8`, IPv4 or IPv6.
    #[serde(default)]
    pub ip_blocks: ValueList,
    #[serde(default)]
    pub not_ip_blocks: ValueList,
    /// The original client, from `X-Forwarded-For` and the listener's
    /// `xff_num_trusted_hops`.
    #[serde(default)]
    pub remote_ip_blocks: ValueList,
    #[serde(default)]
    pub not_remote_ip_blocks: ValueList,
}

/// What is asked for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzOperation {
    /// The request's Host / `:authority`, case-insensitive, with `*` wildcards.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// The listener's port.
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub not_ports: Vec<Port>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// The (normalised) path without its query: exact, `/prefix/*`, `*.suffix` or `*`.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// A condition on one attribute: it matches when one of `values` does (or `values` is
/// empty) and none of `not_values` does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzCondition {
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// A port, written as Istio writes it (`"8080"`) or as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a port number from 1 to 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(Port(p)),
                    _ => Err(E::custom(format!("{v} is not a port from 1 to 65535"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("{v:?} is not a port from 1 to 65535"))),
                }
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

/// Values written inline (`[a, b]`) or read from a file that is watched for changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueList {
    Inline(Vec<String>),
    File(ListFile),
}

impl Default for ValueList {
    fn default() -> Self {
        ValueList::Inline(Vec::new())
    }
}

impl ValueList {
    /// Whether nothing is configured (an empty inline list).
    pub fn is_empty(&self) -> bool {
        matches!(self, ValueList::Inline(v) if v.is_empty())
    }
}

/// A list kept in a file: one entry per line; blank lines and `#` comments are skipped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFile {
    pub from_file: String,
    /// How often the file's modification time is checked.
    #[serde(
        default = "default_refresh_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub refresh_interval: Duration,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(5)
}

impl<'de> Deserialize<'de> for ValueList {
    /// By hand: an untagged enum would say only "did not match any variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ValueList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of values or `{from_file: PATH, refresh_interval: 5s}`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ValueList, A::Error> {
                Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(ValueList::Inline)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ValueList, A::Error> {
                ListFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ValueList::File)
            }
        }
        d.deserialize_any(ListVisitor)
    }
}

/// A string pattern as Istio writes them: exact, `prefix*`, `*suffix`, or `*` (present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringPattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any value, but there must be one.
    Present,
}

/// Reads a pattern; `*` is only allowed alone, first or last.
pub fn parse_pattern(text: &str) -> Result<StringPattern, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text == "*" {
        return Ok(StringPattern::Present);
    }
    let stars = text.matches('*').count();
    let pattern = if stars == 0 {
        StringPattern::Exact(text.into())
    } else if stars == 1 && text.ends_with('*') {
        StringPattern::Prefix(text[..text.len() - 1].into())
    } else if stars == 1 && text.starts_with('*') {
        StringPattern::Suffix(text[1..].into())
    } else {
        return Err(format!(
            "{text:?}: `*` may only stand alone, first (suffix match) or last (prefix match)"
        ));
    };
    Ok(pattern)
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let address: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "{text:?}: the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        Ok(Cidr {
            address: address.to_canonical(),
            prefix_len,
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let shift = 32 - u32::from(self.prefix_len);
                let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - u32::from(self.prefix_len);
                let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A `when` key, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[name]` (the name lower-cased).
    RequestHeader(String),
    SourceIp,
    RemoteIp,
    SourcePrincipal,
    SourceNamespace,
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[a][b]`: the path of nested claim names.
    RequestAuthClaims(Vec<String>),
    DestinationPort,
}

impl ConditionKey {
    /// Whether the key reads the HTTP request (and so cannot match a TCP connection).
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            ConditionKey::RequestHeader(_)
                | ConditionKey::RequestAuthPrincipal
                | ConditionKey::RequestAuthAudiences
                | ConditionKey::RequestAuthPresenter
                | ConditionKey::RequestAuthClaims(_)
        )
    }
}

const KNOWN_KEYS: &str = "request.headers[NAME], source.ip, remote.ip, source.principal, \
source.namespace, request.auth.principal, request.auth.audiences, request.auth.presenter, \
request.auth.claims[NAME]..., destination.port";

pub fn parse_condition_key(key: &str) -> Result<ConditionKey, String> {
    let simple = match key {
        "source.ip" => Some(ConditionKey::SourceIp),
        "remote.ip" => Some(ConditionKey::RemoteIp),
        "source.principal" => Some(ConditionKey::SourcePrincipal),
        "source.namespace" => Some(ConditionKey::SourceNamespace),
        "request.auth.principal" => Some(ConditionKey::RequestAuthPrincipal),
        "request.auth.audiences" => Some(ConditionKey::RequestAuthAudiences),
        "request.auth.presenter" => Some(ConditionKey::RequestAuthPresenter),
        "destination.port" => Some(ConditionKey::DestinationPort),
        _ => None,
    };
    if let Some(k) = simple {
        return Ok(k);
    }
    let unknown = || format!("unknown key {key:?} (known: {KNOWN_KEYS})");
    if let Some(rest) = key.strip_prefix("request.headers") {
        let names = bracketed(rest).ok_or_else(unknown)?;
        return match names.as_slice() {
            [name] if !name.is_empty() && name.bytes().all(crate::token::is_tchar) => {
                Ok(ConditionKey::RequestHeader(name.to_ascii_lowercase()))
            }
            [name] => Err(format!("{name:?} is not a header name")),
            _ => Err(unknown()),
        };
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        let names = bracketed(rest).ok_or_else(unknown)?;
        if names.iter().any(String::is_empty) {
            return Err(format!("{key:?}: a claim name must not be empty"));
        }
        return Ok(ConditionKey::RequestAuthClaims(names));
    }
    Err(unknown())
}

/// `[a][b]` → `["a", "b"]`; None unless the whole text is one or more brackets.
fn bracketed(mut text: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    while !text.is_empty() {
        let inner = text.strip_prefix('[')?;
        let end = inner.find(']')?;
        names.push(inner[..end].to_string());
        text = &inner[end + 1..];
    }
    (!names.is_empty()).then_some(names)
}

/// Every error in a listener's `authorization` block. HTTP-only fields are allowed on a
/// TCP proxy's listener: Istio's rules for them there are applied when matching.
pub fn check(path: &str, authz: &Authorization, errors: &mut Vec<ConfigError>) {
    let mut names = std::collections::HashMap::new();
    for (i, policy) in authz.policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        if policy.name.is_empty() {
            errors.push(ConfigError::new(format!("{pp}.name"), "must not be empty"));
        } else if let Some(first) = names.insert(policy.name.as_str(), i) {
            errors.push(ConfigError::new(
                format!("{pp}.name"),
                format!(
                    "name {:?} is already used by {path}.policies[{first}]",
                    policy.name
                ),
            ));
        }
        for (j, rule) in policy.rules.iter().enumerate() {
            check_rule(&format!("{pp}.rules[{j}]"), rule, errors);
        }
    }
}

fn check_rule(p: &str, rule: &AuthzRule, errors: &mut Vec<ConfigError>) {
    let mut err = |path: String, message: String| errors.push(ConfigError::new(path, message));
    for (i, from) in rule.from.iter().enumerate() {
        let sp = format!("{p}.from[{i}].source");
        let s = &from.source;
        for (field, list) in [
            ("principals", &s.principals),
            ("not_principals", &s.not_principals),
        ] {
            check_value_list(&format!("{sp}.{field}"), list, parse_pattern, &mut err);
        }
        for (field, list) in [
            ("ip_blocks", &s.ip_blocks),
            ("not_ip_blocks", &s.not_ip_blocks),
            ("remote_ip_blocks", &s.remote_ip_blocks),
            ("not_remote_ip_blocks", &s.not_remote_ip_blocks),
        ] {
            check_value_list(&format!("{sp}.{field}"), list, Cidr::parse, &mut err);
        }
        for (field, list) in [
            ("request_principals", &s.request_principals),
            ("not_request_principals", &s.not_request_principals),
            ("namespaces", &s.namespaces),
            ("not_namespaces", &s.not_namespaces),
        ] {
            check_each(&format!("{sp}.{field}"), list, parse_pattern, &mut err);
        }
    }
    for (i, to) in rule.to.iter().enumerate() {
        let op = format!("{p}.to[{i}].operation");
        let o = &to.operation;
        for (field, list) in [
            ("hosts", &o.hosts),
            ("not_hosts", &o.not_hosts),
            ("methods", &o.methods),
            ("not_methods", &o.not_methods),
        ] {
            check_each(&format!("{op}.{field}"), list, parse_pattern, &mut err);
        }
        for (field, list) in [("paths", &o.paths), ("not_paths", &o.not_paths)] {
            check_each(&format!("{op}.{field}"), list, parse_path_pattern, &mut err);
        }
    }
    for (i, cond) in rule.when.iter().enumerate() {
        let cp = format!("{p}.when[{i}]");
        let key = match parse_condition_key(&cond.key) {
            Ok(k) => k,
            Err(e) => {
                err(format!("{cp}.key"), e);
                continue;
            }
        };
        if cond.values.is_empty() && cond.not_values.is_empty() {
            err(cp.clone(), "set `values`, `not_values` or both".into());
        }
        for (field, list) in [("values", &cond.values), ("not_values", &cond.not_values)] {
            let fp = format!("{cp}.{field}");
            match key {
                ConditionKey::SourceIp | ConditionKey::RemoteIp => {
                    check_each(&fp, list, Cidr::parse, &mut err)
                }
                ConditionKey::DestinationPort => check_each(&fp, list, parse_port, &mut err),
                _ => check_each(&fp, list, parse_pattern, &mut err),
            }
        }
    }
}

/// A path pattern: like [`parse_pattern`], and an exact or prefix path starts with `/`.
pub fn parse_path_pattern(text: &str) -> Result<StringPattern, String> {
    let pattern = parse_pattern(text)?;
    match &pattern {
        StringPattern::Exact(p) | StringPattern::Prefix(p) if !p.starts_with('/') => Err(format!(
            "{text:?}: a path starts with `/` (or `*` for a suffix match)"
        )),
        _ => Ok(pattern),
    }
}

pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{text:?} is not a port from 1 to 65535")),
    }
}

fn check_each<T>(
    path: &str,
    list: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
    err: &mut impl FnMut(String, String),
) {
    for (i, value) in list.iter().enumerate() {
        if let Err(e) = parse(value) {
            err(format!("{path}[{i}]"), e);
        }
    }
}

fn check_value_list<T>(
    path: &str,
    list: &ValueList,
    parse: impl Fn(&str) -> Result<T, String>,
    err: &mut impl FnMut(String, String),
) {
    match list {
        ValueList::Inline(values) => check_each(path, values, parse, err),
        ValueList::File(file) => {
            if file.from_file.is_empty() {
                err(format!("{path}.from_file"), "must not be empty".into());
            }
            if file.refresh_interval < Duration::from_millis(10) {
                err(
                    format!("{path}.refresh_interval"),
                    "must be at least 10ms".into(),
                );
            }
        }
    }
}

/// Reads a list file's text: one entry per line, `#` starts a comment. Every entry is
/// checked with `parse`; the first bad one refuses the whole file, naming its line.
pub fn parse_list<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        out.push(parse(entry).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

/// What the HTTP connection manager does with `%2F`, `%2f`, `%5C` and `%5c` in a path
/// (Envoy's `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum EscapedSlashesAction {
    #[default]
    #[serde(rename = "KEEP_UNCHANGED")]
    KeepUnchanged,
    /// 400.
    #[serde(rename = "REJECT_REQUEST")]
    RejectRequest,
    /// Decode them and redirect the client to the decoded path (307).
    #[serde(rename = "UNESCAPE_AND_REDIRECT")]
    UnescapeAndRedirect,
    /// Decode them and go on with the decoded path.
    #[serde(rename = "UNESCAPE_AND_FORWARD")]
    UnescapeAndForward,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_a_star_alone_first_or_last() {
        use StringPattern::*;
        assert_eq!(parse_pattern("*"), Ok(Present));
        assert_eq!(parse_pattern("a/b"), Ok(Exact("a/b".into())));
        assert_eq!(parse_pattern("td/ns/*"), Ok(Prefix("td/ns/".into())));
        assert_eq!(parse_pattern("*/sa/web"), Ok(Suffix("/sa/web".into())));
        assert!(parse_pattern("a*b").is_err());
        assert!(parse_pattern("*a*").is_err());
        assert!(parse_pattern("").is_err());
        assert!(parse_path_pattern("admin").is_err());
        assert_eq!(parse_path_pattern("*.png"), Ok(Suffix(".png".into())));
    }

    #[test]
    fn cidrs_contain_their_addresses_v4_and_v6() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.2").unwrap();
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.3".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0",
            "x",
            "10.0.0.0/",
            "1.2.3.4/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn condition_keys_are_read() {
        assert_eq!(
            parse_condition_key("request.headers[X-User]"),
            Ok(ConditionKey::RequestHeader("x-user".into()))
        );
        assert_eq!(
            parse_condition_key("request.auth.claims[realm][role]"),
            Ok(ConditionKey::RequestAuthClaims(vec![
                "realm".into(),
                "role".into()
            ]))
        );
        assert_eq!(
            parse_condition_key("destination.port"),
            Ok(ConditionKey::DestinationPort)
        );
        for bad in [
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "request.auth.claims[]",
            "request.auth.claims[a",
            "source.ips",
        ] {
            assert!(parse_condition_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_policy_is_reported_at_its_line_and_field() {
        let yaml = "\
listeners:
  - name: web
    address: 127.0.0.1:0
    authorization:
      policies:
        - name: p
          action: DENY
          rules:
            - from: [{source: {ip_blocks: [10.0.0.0/40]}}]
              to: [{operation: {paths: [admin]}}]
              when: [{key: 'request.header[x]', values: [a]}]
        - name: p
    tcp: {cluster: c}
clusters:
  - {name: c, endpoints: [{address: 127.0.0.1:1}]}
";
        let text = crate::load_str("authz.yaml", yaml).unwrap_err().to_string();
        for want in [
            "authz.yaml:9:44: listeners[0].authorization.policies[0].rules[0].from[0].source.ip_blocks[0]: \"10.0.0.0/40\": the prefix length",
            "authz.yaml:10:41: listeners[0].authorization.policies[0].rules[0].to[0].operation.paths[0]: \"admin\": a path starts with `/`",
            "authz.yaml:11:23: listeners[0].authorization.policies[0].rules[0].when[0].key: unknown key \"request.header[x]\"",
            "authz.yaml:12:11: listeners[0].authorization.policies[1].name: name \"p\" is already used",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let bad_action = yaml.replace("DENY", "REJECT");
        let text = crate::load_str("authz.yaml", &bad_action)
            .unwrap_err()
            .to_string();
        assert!(text.contains("authz.yaml:7:"), "{text}");
        assert!(text.contains("action"), "{text}");
    }

    #[test]
    fn list_files_skip_comments_and_name_the_bad_line() {
        let text = "# allowed clients\n10.0.0.0/8\n\n  127.0.0.1  # loopback\n";
        let list = parse_list(text, Cidr::parse).unwrap();
        assert_eq!(list.len(), 2);
        let err = parse_list("10.0.0.1\nnot-an-ip\n", Cidr::parse).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
