//! The service model `sinew control` serves: services with their endpoints and traffic
//! policy, and listeners that route to them. It is a small set of YAML resources
//! (docs/control.md); registries add endpoints to services by name.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One YAML document of the watched directory, by its `kind`.
#[derive(Debug, Clone)]
pub enum Resource {
    Service(Service),
    Listener(Listener),
}

/// A service: where its instances are and how traffic to it behaves.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Instances written in the file; registries add more.
    #[serde(default)]
    pub endpoints: Vec<Instance>,
    /// `round_robin` (default), `least_request`, `random`, `ring_hash` or `maglev`.
    #[serde(default)]
    pub lb: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Whole-request timeout of routes to this service.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<Retries>,
    /// Traffic split by instance labels (e.g. 90% to `version: v1`, 10% to `version: v2`).
    #[serde(default)]
    pub subsets: Vec<Subset>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub circuit_breakers: Option<CircuitBreakers>,
    /// A token bucket, in each proxy, on every route to this service.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Who may call this service: the proxy's `authorization` schema (Istio's
    /// AuthorizationPolicy), sent to the proxies as Envoy RBAC scoped to the traffic
    /// bound for this service ([`crate::authz`]).
    #[serde(default, serialize_with = "debug_text")]
    pub authorization: Option<sinew_config::authz::Authorization>,
    /// Mesh mTLS to this service: callers present their own SVID and accept only the
    /// identities named.
    #[serde(default)]
    pub mtls: Option<ServiceMtls>,
}

/// How callers reach a service over mesh mTLS (Istio's `ISTIO_MUTUAL`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMtls {
    /// The SPIFFE IDs the service's instances may hold (`match_typed_subject_alt_names`);
    /// at least one: a certificate from the mesh's roots alone says nothing of which
    /// service it is.
    pub identities: Vec<String>,
}

/// A listener's mesh mTLS, with the proxy's own SVID (SDS `default`) and the mesh roots
/// (SDS `ROOTCA`), as an Istio sidecar's inbound port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMtls {
    /// Only mesh clients, with an SVID.
    Strict,
    /// Mesh clients and plaintext ones on the same port, told apart by the first bytes.
    Permissive,
}

/// The policies have no `Serialize`; their debug text is as stable, within one release,
/// as the JSON versions are hashed from (and the release is hashed in too).
fn debug_text<S: serde::Serializer>(
    value: &Option<sinew_config::authz::Authorization>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(a) => s.serialize_some(&format!("{a:?}")),
        None => s.serialize_none(),
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// `ip:port`.
    pub address: String,
    /// Labels such as `version: v2` and `zone: a`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Envoy's retry conditions: `5xx`, `gateway-error`, `connect-failure`, `reset`, ...
    pub retry_on: Vec<String>,
    #[serde(default = "one")]
    pub num_retries: u32,
    #[serde(default, with = "opt_duration")]
    pub per_try_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_5xx: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    #[serde(default)]
    pub max_requests: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// Envoy's token bucket: it starts full with `max_tokens`, and every `fill_interval`
/// `tokens_per_fill` more are added, up to `max_tokens`. Each request takes one; without
/// one the proxy answers 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max_tokens: u32,
    #[serde(default = "one")]
    pub tokens_per_fill: u32,
    /// Required: there is no default.
    #[serde(with = "opt_duration")]
    pub fill_interval: Option<Duration>,
}

/// A listener the proxies run: HTTP routing by path to services, (`tcp`) every
/// connection to one service, or (`dubbo`) Dubbo calls to the service their interface
/// names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `ip:port` the proxies listen on.
    pub address: String,
    /// Node ids or node clusters that run it; every proxy when empty.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Host names it answers (default `*`).
    #[serde(default = "any_domain")]
    pub domains: Vec<String>,
    /// HTTP routes, first match wins; either these or `tcp`.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// A TCP proxy: every connection goes to this service.
    #[serde(default)]
    pub tcp: Option<String>,
    /// A Dubbo proxy for these services (each named by its interface, as Dubbo's
    /// registries name them): a call goes to the service of its interface, and there to
    /// the instances whose `version` and `group` labels are the call's.
    #[serde(default)]
    pub dubbo: Vec<String>,
    /// TLS termination with files on the proxy's disk (a certificate, and the CA that
    /// client certificates are verified against): the peer's SPIFFE ID is then what
    /// `principals` match.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Mesh mTLS with the proxy's own SVID; instead of `tls`.
    #[serde(default)]
    pub mtls: Option<ListenerMtls>,
}

/// A listener's certificate and client verification, as paths on the proxy's machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// PEM roots client certificates are verified against (the mesh CA's `ca.crt`).
    #[serde(default)]
    pub client_ca: Option<String>,
    /// Refuse clients without a certificate.
    #[serde(default)]
    pub require_client_certificate: bool,
}

fn any_domain() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix (default `/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// A regular expression the whole path must match, instead of a prefix.
    #[serde(default)]
    pub path_regex: Option<String>,
    pub service: String,
}

impl Listener {
    pub fn runs_on(&self, node_id: &str, node_cluster: &str) -> bool {
        self.nodes.is_empty()
            || self
                .nodes
                .iter()
                .any(|n| n == node_id || (!node_cluster.is_empty() && n == node_cluster))
    }
}

/// Durations spelled as Sinew writes them (`250ms`, `5s`).
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        sinew_config::duration::deserialize_opt(d)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}

/// Every resource in one YAML text (documents separated by `---` lines), or the first
/// error as `line:column: field: message`.
pub fn parse(text: &str) -> Result<Vec<Resource>, String> {
    Ok(parse_located(text)?.into_iter().map(|(_, r)| r).collect())
}

/// [`parse`], with where each resource is: the line and column of its `name` (or of its
/// document's start), so a later check can point at the resource it is about.
pub fn parse_located(text: &str) -> Result<Vec<(sinew_config::Position, Resource)>, String> {
    let mut out = Vec::new();
    for (first_line, document) in documents(text) {
        #[derive(Deserialize)]
        struct Kind {
            kind: String,
        }
        let at = |line: usize, column: usize| format!("{}:{column}", first_line + line - 1);
        let kind: Option<Kind> = serde_yaml_ng::from_str(&document).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            format!("{}: {e}", at(line, column))
        })?;
        let Some(kind) = kind else { continue };
        // The kind is read; the rest is read as that resource, with the `kind` line
        // blanked so positions stay true and the resource refuses unknown fields.
        let body: String = document
            .lines()
            .map(|l| if l.starts_with("kind:") { "" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        let located = |path: String, e: serde_yaml_ng::Error| {
            let map = sinew_config::SourceMap::index(&body);
            let (line, column) = map
                .lookup(&path)
                .map(|p| (p.line, p.column))
                .or_else(|| e.location().map(|l| (l.line(), l.column())))
                .unwrap_or((1, 1));
            let field = if path == "." || path.is_empty() {
                String::new()
            } else {
                format!("{path}: ")
            };
            format!("{}: {field}{e}", at(line, column))
        };
        let resource = match kind.kind.as_str() {
            "Service" => {
                serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(&body))
                    .map(Resource::Service)
            }
            "Listener" => {
                serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(&body))
                    .map(Resource::Listener)
            }
            other => {
                return Err(format!(
                    "{}: kind: {other:?} is not a resource (Service or Listener)",
                    at(1, 1)
                ))
            }
        };
        let resource = resource.map_err(|e| {
            let path = e.path().to_string();
            located(path, e.into_inner())
        })?;
        // What the types cannot say: a policy's values, a listener's shape.
        let problem = match &resource {
            Resource::Service(s) => s
                .authorization
                .as_ref()
                .and_then(|a| {
                    crate::policy_check::check("authorization", a)
                        .into_iter()
                        .next()
                })
                .or_else(|| service_identities(s)),
            Resource::Listener(l) => listener_shape(l),
        };
        if let Some(e) = problem {
            let map = sinew_config::SourceMap::index(&body);
            let position = map
                .lookup(&e.path)
                .unwrap_or(sinew_config::Position { line: 1, column: 1 });
            return Err(format!(
                "{}: {}: {}",
                at(position.line, position.column),
                e.path,
                e.message
            ));
        }
        let name = sinew_config::SourceMap::index(&body).get("name");
        let position = sinew_config::Position {
            line: first_line + name.map_or(1, |p| p.line) - 1,
            column: name.map_or(1, |p| p.column),
        };
        out.push((position, resource));
    }
    Ok(out)
}

/// A service's mTLS identities are SPIFFE IDs.
fn service_identities(s: &Service) -> Option<sinew_config::ConfigError> {
    let identities = &s.mtls.as_ref()?.identities;
    if identities.is_empty() {
        return Some(sinew_config::ConfigError::new(
            "mtls.identities",
            "name at least one SPIFFE ID the service's instances hold",
        ));
    }
    identities.iter().enumerate().find_map(|(i, id)| {
        sinew_identity::SpiffeId::parse(id).err().map(|e| {
            sinew_config::ConfigError::new(
                format!("mtls.identities[{i}]"),
                format!("{id:?} is not a SPIFFE ID: {e}"),
            )
        })
    })
}

/// A listener is HTTP (routes), TCP (one service) or Dubbo (services), exactly one; its TLS is
/// files (`tls`) or the mesh's (`mtls`), not both.
fn listener_shape(l: &Listener) -> Option<sinew_config::ConfigError> {
    use sinew_config::ConfigError;
    if l.tls.is_some() && l.mtls.is_some() {
        return Some(ConfigError::new(
            "mtls",
            "a listener terminates TLS with files (`tls`) or with the proxy's mesh identity \
             (`mtls`), not both",
        ));
    }
    let kinds = [!l.routes.is_empty(), l.tcp.is_some(), !l.dubbo.is_empty()];
    if kinds.iter().filter(|&&k| k).count() > 1 {
        let field = if l.tcp.is_some() { "tcp" } else { "dubbo" };
        return Some(ConfigError::new(
            field,
            "a listener routes HTTP (`routes`), proxies TCP to one service (`tcp`) or \
             proxies Dubbo to services (`dubbo`): one of them",
        ));
    }
    if let Some(i) = l.dubbo.iter().position(String::is_empty) {
        return Some(ConfigError::new(
            format!("dubbo[{i}]"),
            "must name a service",
        ));
    }
    match (&l.tcp, l.routes.is_empty() && l.dubbo.is_empty()) {
        (None, true) => Some(ConfigError::new(
            "routes",
            "a listener needs routes (HTTP), `tcp: SERVICE` or `dubbo: [SERVICE, ...]`",
        )),
        (Some(service), true) if service.is_empty() => {
            Some(ConfigError::new("tcp", "must name a service"))
        }
        _ => None,
    }
}

/// The documents of a YAML stream with the line each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" {
            out.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    out.push((start, current));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_listeners_parse_from_one_file() {
        let resources = parse(
            "kind: Service
name: reviews
lb: least_request
timeout: 2s
endpoints:
  - {address: 127.0.0.1:9001, labels: {version: v1}}
subsets:
  - {name: v1, labels: {version: v1}, weight: 90}
  - {name: v2, labels: {version: v2}, weight: 10}
---
kind: Listener
name: edge
address: 127.0.0.1:8080
routes: [{prefix: /, service: reviews}]
",
        )
        .unwrap();
        assert_eq!(resources.len(), 2);
        let Resource::Service(s) = &resources[0] else {
            panic!()
        };
        assert_eq!(s.timeout, Some(Duration::from_secs(2)));
        assert_eq!(s.endpoints[0].weight, 1);
        let Resource::Listener(l) = &resources[1] else {
            panic!()
        };
        assert!(l.runs_on("any", ""));
    }

    #[test]
    fn a_rate_limit_needs_its_fill_interval() {
        let resources =
            parse("kind: Service\nname: a\nrate_limit: {max_tokens: 10, fill_interval: 1s}\n")
                .unwrap();
        let Resource::Service(s) = &resources[0] else {
            panic!()
        };
        let limit = s.rate_limit.as_ref().unwrap();
        assert_eq!(
            (limit.max_tokens, limit.tokens_per_fill, limit.fill_interval),
            (10, 1, Some(Duration::from_secs(1)))
        );
        let err = parse("kind: Service\nname: a\nrate_limit: {max_tokens: 10}\n").unwrap_err();
        assert!(
            err.starts_with("3:") && err.contains("rate_limit") && err.contains("fill_interval"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_policy_is_refused_at_its_line_column_and_field() {
        let text = "kind: Service\nname: a\n---\nkind: Service\nname: b\nauthorization:\n  policies:\n    - name: p\n      rules:\n        - from: [{source: {ip_blocks: [10.0.0.0/40]}}]\n";
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with("10:40: authorization.policies[0].rules[0].from[0].source.ip_blocks[0]: \"10.0.0.0/40\""),
            "{err}"
        );
        let err =
            parse(&text.replace("ip_blocks: [10.0.0.0/40]", "namespaces: [shop]")).unwrap_err();
        assert!(
            err.starts_with("10:") && err.contains("source.namespaces: namespaces cannot"),
            "{err}"
        );
        let err =
            parse(&text.replace("- name: p\n", "- name: p\n      action: REJECT\n")).unwrap_err();
        assert!(err.starts_with("9:") && err.contains("action"), "{err}");
        let good = parse(&text.replace("10.0.0.0/40", "10.0.0.0/8")).unwrap();
        let Resource::Service(s) = &good[1] else {
            panic!()
        };
        assert_eq!(s.authorization.as_ref().unwrap().policies[0].name, "p");
    }

    #[test]
    fn a_listener_is_http_tcp_or_dubbo() {
        let tcp = parse("kind: Listener\nname: l\naddress: 127.0.0.1:1\ntcp: db\n").unwrap();
        let Resource::Listener(l) = &tcp[0] else {
            panic!()
        };
        assert_eq!(l.tcp.as_deref(), Some("db"));
        let err = parse("kind: Listener\nname: l\naddress: 127.0.0.1:1\n").unwrap_err();
        assert!(err.contains("routes: a listener needs routes"), "{err}");
        let err = parse(
            "kind: Listener\nname: l\naddress: 127.0.0.1:1\ntcp: db\nroutes: [{service: a}]\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("4:") && err.contains("one of them"),
            "{err}"
        );
        let dubbo =
            parse("kind: Listener\nname: l\naddress: 127.0.0.1:1\ndubbo: [com.a.B]\n").unwrap();
        let Resource::Listener(l) = &dubbo[0] else {
            panic!()
        };
        assert_eq!(l.dubbo, ["com.a.B"]);
        let err =
            parse("kind: Listener\nname: l\naddress: 127.0.0.1:1\ndubbo: [com.a.B]\ntcp: db\n")
                .unwrap_err();
        assert!(err.contains("one of them"), "{err}");
    }

    #[test]
    fn a_bad_field_is_reported_with_its_position() {
        let err = parse("kind: Service\nname: a\nlb_policy: random\n").unwrap_err();
        assert!(
            err.starts_with("3:1: ") && err.contains("lb_policy"),
            "{err}"
        );
    }
}
