//! Virtual hosts and choosing one by the request's host (domain matching).
//!
//! Envoy's precedence: an exact domain, then the longest `*.suffix` wildcard, then the
//! longest `prefix.*` wildcard, then `*`. Wildcards are grouped by length, longest first, so a
//! lookup costs one hash probe per distinct length rather than a scan of every domain.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;

use sinew_config::{model, ConfigError};

use crate::headers::HeaderOps;
use crate::matcher::RouteMatcher;
use crate::route::Route;
use crate::{Errors, RequestView, Resolver, Target};

/// The compiled virtual hosts of one listener or route configuration. Immutable; share it.
#[derive(Debug)]
pub struct RouteTable {
    vhosts: Box<[VirtualHost]>,
    exact: HashMap<Box<str>, usize>,
    /// `*.foo.com` stored as `.foo.com`; the `*` must stand for at least one character.
    suffixes: Wildcards,
    /// `api.*` stored as `api.`.
    prefixes: Wildcards,
    any: Option<usize>,
}

/// Wildcard domains by the length of their fixed part, longest first.
type Wildcards = Vec<(usize, HashMap<Box<str>, usize>)>;

impl RouteTable {
    /// `path` is the config path of the virtual_hosts list, e.g. "listeners[0].http.virtual_hosts" or "route_configs[2].virtual_hosts".
    /// `resolve(cluster_name, metadata_match)` returns the Target for a cluster (+ subset); config validation already guaranteed the cluster exists.
    pub fn compile(
        vhosts: &[model::VirtualHost],
        path: &str,
        resolve: &mut dyn FnMut(&str, &BTreeMap<String, String>) -> Target,
    ) -> Result<RouteTable, Vec<ConfigError>> {
        let mut errors = Errors::default();
        let mut exact = HashMap::new();
        let mut suffixes: BTreeMap<usize, HashMap<Box<str>, usize>> = BTreeMap::new();
        let mut prefixes: BTreeMap<usize, HashMap<Box<str>, usize>> = BTreeMap::new();
        let mut any = None;
        let mut compiled = Vec::with_capacity(vhosts.len());
        for (i, vh) in vhosts.iter().enumerate() {
            let vp = format!("{path}[{i}]");
            // Validation rejects duplicate domains; should one slip through, the first wins
            // as it would in a scan in config order.
            for d in &vh.domains {
                let d = normalize_domain(d);
                if d == "*" {
                    any.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    suffixes
                        .entry(suffix.len())
                        .or_default()
                        .entry(suffix.into())
                        .or_insert(i);
                } else if let Some(prefix) = d.strip_suffix('*') {
                    prefixes
                        .entry(prefix.len())
                        .or_default()
                        .entry(prefix.into())
                        .or_insert(i);
                } else {
                    exact.entry(d.into_boxed_str()).or_insert(i);
                }
            }
            compiled.push(VirtualHost::compile(vh, &vp, &mut errors, resolve));
        }
        let longest_first = |m: BTreeMap<usize, HashMap<Box<str>, usize>>| -> Wildcards {
            m.into_iter().rev().collect()
        };
        let mut vhosts: Box<[VirtualHost]> = compiled
            .into_iter()
            .collect::<Option<_>>()
            .unwrap_or_default();
        for (id, route) in vhosts
            .iter_mut()
            .flat_map(|vh| vh.routes.iter_mut())
            .enumerate()
        {
            route.id = id;
        }
        let table = RouteTable {
            vhosts,
            exact,
            suffixes: longest_first(suffixes),
            prefixes: longest_first(prefixes),
            any,
        };
        errors.into_result(Some(table))
    }

    /// Host from Host header or :authority; port stripped (also for [v6]:port), case-insensitive.
    /// Order: exact, then longest `*.suffix` wildcard, then longest `prefix.*`, then `*`. Envoy semantics: `*.foo.com` matches `a.foo.com` and `a.b.foo.com` but not `foo.com`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = strip_port(host);
        // Hosts almost always arrive lowercase already; only the rest pay for a copy.
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let host = host.as_ref();
        let index = self
            .exact
            .get(host)
            .or_else(|| {
                self.suffixes
                    .iter()
                    .filter(|(len, _)| *len < host.len())
                    .find_map(|(len, m)| m.get(host.get(host.len() - len..)?))
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .filter(|(len, _)| *len < host.len())
                    .find_map(|(len, m)| m.get(host.get(..*len)?))
            })
            .or(self.any.as_ref())?;
        self.vhosts.get(*index)
    }

    /// All virtual hosts, in config order.
    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }
}

/// Lowercases a configured domain and brackets a bare IPv6 address, the way it arrives in a
/// Host header.
fn normalize_domain(d: &str) -> String {
    let d = d.to_ascii_lowercase();
    if d.parse::<Ipv6Addr>().is_ok() {
        format!("[{d}]")
    } else {
        d
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`. A bare IPv6 address (more than
/// one colon, no brackets) has no port to strip.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if !host[..colon].contains(':') => &host[..colon],
        _ => host,
    }
}

/// A compiled virtual host: its routes in config order and its header edits.
#[derive(Debug)]
pub struct VirtualHost {
    pub name: Arc<str>,
    /// Applied to requests routed through this virtual host, after the route's own.
    pub request_headers: HeaderOps,
    /// Applied to responses of this virtual host, after the route's own.
    pub response_headers: HeaderOps,
    /// `matchers[i]` decides for `routes[i]`. Matchers are small and scanned on every request;
    /// kept apart from the much larger routes they stay dense in cache.
    matchers: Box<[RouteMatcher]>,
    routes: Box<[Route]>,
}

impl VirtualHost {
    fn compile(
        vh: &model::VirtualHost,
        vp: &str,
        errors: &mut Errors,
        resolve: &mut Resolver<'_>,
    ) -> Option<VirtualHost> {
        let request_headers = HeaderOps::compile(
            &vh.request_headers,
            &format!("{vp}.request_headers"),
            errors,
        );
        let response_headers = HeaderOps::compile(
            &vh.response_headers,
            &format!("{vp}.response_headers"),
            errors,
        );
        let compiled: Vec<Option<(RouteMatcher, Route)>> = vh
            .routes
            .iter()
            .enumerate()
            .map(|(j, r)| {
                let name = match &r.name {
                    Some(n) => n.clone(),
                    None => format!("{}/{j}", vh.name),
                };
                Route::compile(r, name, &format!("{vp}.routes[{j}]"), errors, resolve)
            })
            .collect();
        let (matchers, routes): (Vec<_>, Vec<_>) = compiled
            .into_iter()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .unzip();
        Some(VirtualHost {
            name: vh.name.as_str().into(),
            request_headers: request_headers?,
            response_headers: response_headers?,
            matchers: matchers.into(),
            routes: routes.into(),
        })
    }

    /// First matching route, in config order.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&Route> {
        let head = crate::matcher::head(req.path.as_bytes());
        // One draw per request for every route's `percentage`, as Envoy draws one random
        // value per stream for its routes' `runtime_fraction`.
        let draw = std::cell::OnceCell::new();
        let i = self
            .matchers
            .iter()
            .position(|m| m.matches(req, head, &draw))?;
        self.routes.get(i)
    }

    /// All routes, in config order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::table;

    fn vhost_for<'a>(t: &'a crate::RouteTable, host: &str) -> Option<&'a str> {
        t.virtual_host(host).map(|v| &*v.name)
    }

    const DOMAINS: &str = "[
        {name: exact, domains: [api.foo.com, '[::1]', '10.0.0.1'], routes: []},
        {name: short-suffix, domains: ['*.com'], routes: []},
        {name: suffix, domains: ['*.foo.com'], routes: []},
        {name: long-suffix, domains: ['*.bar.foo.com'], routes: []},
        {name: dash-suffix, domains: ['*-dev.foo.com'], routes: []},
        {name: prefix, domains: ['api.*'], routes: []},
        {name: long-prefix, domains: ['api.internal.*'], routes: []},
        {name: any, domains: ['*'], routes: []},
    ]";

    #[test]
    fn exact_domain_beats_every_wildcard() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "api.foo.com"), Some("exact"));
    }

    #[test]
    fn suffix_wildcard_beats_prefix_and_longest_suffix_wins() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "www.foo.com"), Some("suffix"));
        assert_eq!(vhost_for(&t, "x.y.foo.com"), Some("suffix"));
        assert_eq!(vhost_for(&t, "a.bar.foo.com"), Some("long-suffix"));
        assert_eq!(vhost_for(&t, "web-dev.foo.com"), Some("dash-suffix"));
        assert_eq!(vhost_for(&t, "api.other.com"), Some("short-suffix"));
    }

    #[test]
    fn suffix_wildcard_does_not_match_the_bare_domain() {
        let t = table(DOMAINS);
        // `*.bar.foo.com` does not take `bar.foo.com`; `*.foo.com` does.
        assert_eq!(vhost_for(&t, "bar.foo.com"), Some("suffix"));
        // `*.foo.com` does not take `foo.com`; the shorter `*.com` does.
        assert_eq!(vhost_for(&t, "foo.com"), Some("short-suffix"));
    }

    #[test]
    fn prefix_wildcard_beats_any_and_longest_prefix_wins() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "api.example.org"), Some("prefix"));
        assert_eq!(vhost_for(&t, "api.internal.org"), Some("long-prefix"));
        assert_eq!(vhost_for(&t, "api."), Some("any"));
    }

    #[test]
    fn star_catches_everything_else() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "example.org"), Some("any"));
        assert_eq!(vhost_for(&t, ""), Some("any"));
    }

    #[test]
    fn without_star_unknown_hosts_have_no_virtual_host() {
        let t = table("[{name: only, domains: [a.com], routes: []}]");
        assert_eq!(vhost_for(&t, "a.com"), Some("only"));
        assert_eq!(vhost_for(&t, "b.com"), None);
    }

    #[test]
    fn ports_are_stripped_including_ipv6() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "api.foo.com:8443"), Some("exact"));
        assert_eq!(vhost_for(&t, "www.foo.com:80"), Some("suffix"));
        assert_eq!(vhost_for(&t, "[::1]:8080"), Some("exact"));
        assert_eq!(vhost_for(&t, "[::1]"), Some("exact"));
        assert_eq!(vhost_for(&t, "10.0.0.1:80"), Some("exact"));
        assert_eq!(vhost_for(&t, "[::2]:8080"), Some("any"));
    }

    #[test]
    fn bare_ipv6_domains_match_bracketed_hosts() {
        let t = table("[{name: v6, domains: ['::1'], routes: []}]");
        assert_eq!(vhost_for(&t, "[::1]:443"), Some("v6"));
    }

    #[test]
    fn domains_and_hosts_are_case_insensitive() {
        let t = table("[{name: mixed, domains: [Api.Example.COM, '*.Foo.Com'], routes: []}]");
        assert_eq!(vhost_for(&t, "api.example.com"), Some("mixed"));
        assert_eq!(vhost_for(&t, "API.EXAMPLE.COM:80"), Some("mixed"));
        assert_eq!(vhost_for(&t, "WWW.FOO.COM"), Some("mixed"));
    }

    #[test]
    fn non_ascii_hosts_do_not_panic_on_wildcard_slicing() {
        let t = table(DOMAINS);
        assert_eq!(vhost_for(&t, "é.foo.com"), Some("suffix"));
        assert_eq!(vhost_for(&t, "aé"), Some("any"));
        assert_eq!(vhost_for(&t, "éééééééééé"), Some("any"));
    }
}
