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

/// A listener the proxies run, routing by path to services.
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
    pub routes: Vec<Route>,
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
        let name = sinew_config::SourceMap::index(&body).get("name");
        let position = sinew_config::Position {
            line: first_line + name.map_or(1, |p| p.line) - 1,
            column: name.map_or(1, |p| p.column),
        };
        out.push((position, resource));
    }
    Ok(out)
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
    fn a_bad_field_is_reported_with_its_position() {
        let err = parse("kind: Service\nname: a\nlb_policy: random\n").unwrap_err();
        assert!(
            err.starts_with("3:1: ") && err.contains("lb_policy"),
            "{err}"
        );
    }
}
