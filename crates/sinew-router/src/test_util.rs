//! Helpers for tests: route tables from compact YAML, and requests to route.

use std::collections::BTreeMap;

use sinew_config::ConfigError;

use crate::{RequestView, RouteTable, Target};

pub(crate) const CLUSTERS: [&str; 3] = ["a", "b", "c"];

/// Loads `virtual_hosts` (flow YAML) through the real config loader, so that tests only use
/// configs that pass validation, and returns what compiling makes of them.
pub(crate) fn compile(
    vhosts: &str,
    resolve: &mut dyn FnMut(&str, &BTreeMap<String, String>) -> Target,
) -> Result<RouteTable, Vec<ConfigError>> {
    let clusters: Vec<String> = CLUSTERS
        .iter()
        .map(|c| format!("{{name: {c}, endpoints: []}}"))
        .collect();
    let yaml = format!(
        "{{listeners: [{{name: l, address: '127.0.0.1:0', http: {{virtual_hosts: {vhosts}}}}}], clusters: [{}]}}",
        clusters.join(", ")
    );
    let loaded = sinew_config::load_str("t.yaml", &yaml).unwrap_or_else(|d| panic!("{d}"));
    let http = loaded.config.listeners[0].http.as_ref().unwrap();
    RouteTable::compile(
        http.virtual_hosts.as_ref().unwrap(),
        "listeners[0].http.virtual_hosts",
        resolve,
    )
}

/// Target `i` is cluster `CLUSTERS[i]`; subsets are not told apart.
pub(crate) fn by_cluster(name: &str, _: &BTreeMap<String, String>) -> Target {
    Target(CLUSTERS.iter().position(|c| *c == name).unwrap())
}

pub(crate) fn table(vhosts: &str) -> RouteTable {
    compile(vhosts, &mut by_cluster).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The errors of a config that must not compile.
pub(crate) fn errors(vhosts: &str) -> Vec<ConfigError> {
    match compile(vhosts, &mut by_cluster) {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    }
}

/// A table with one catch-all virtual host holding `routes`, and its only route's name or
/// the first route.
pub(crate) fn one_route(route: &str) -> RouteTable {
    table(&format!("[{{name: v, domains: ['*'], routes: [{route}]}}]"))
}

pub(crate) fn first_route(t: &RouteTable) -> &crate::Route {
    &t.virtual_hosts()[0].routes()[0]
}

pub(crate) struct Request {
    method: http::Method,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
}

impl Request {
    pub(crate) fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
        }
    }
}

pub(crate) fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (uri, None),
    };
    Request {
        method: method.parse().unwrap(),
        path: path.to_string(),
        query,
        headers: header_map(headers),
    }
}

pub(crate) fn header_map(headers: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    map
}
