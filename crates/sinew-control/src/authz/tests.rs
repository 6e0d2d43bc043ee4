//! The round trip: a service's policies → the RBAC `sinew control` sends → the proxy's
//! own RBAC mapping (`sinew_xds`) → listener policies, decided over a grid of requests
//! and connections and compared with the service's policies decided on the traffic
//! bound for that service. The decision follows the proxy's (Istio's) rules, written
//! out here over the config types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use sinew_config::authz::{
    parse_condition_key, parse_path_pattern, parse_pattern, Authorization, AuthzAction, AuthzRule,
    Cidr, ConditionKey, StringPattern, ValueList,
};

use super::*;
use crate::services::{parse, Resource};
use crate::snapshot::{Built, Catalog};

/// What a request or connection is judged on.
#[derive(Debug, Clone)]
struct Req {
    principal: Option<&'static str>,
    peer: IpAddr,
    port: u16,
    /// None: a TCP connection.
    http: Option<Http>,
}

#[derive(Debug, Clone)]
struct Http {
    method: &'static str,
    path: &'static str,
    host: &'static str,
    user: Option<&'static str>,
    /// A verified JWT: its principal and `aud`.
    jwt: Option<(&'static str, &'static str)>,
}

fn matches(pattern: &StringPattern, value: &str, ignore_case: bool) -> bool {
    let (v, p) = if ignore_case {
        (value.to_ascii_lowercase(), pattern_lower(pattern))
    } else {
        (value.to_string(), pattern.clone())
    };
    match &p {
        StringPattern::Exact(s) => v == *s,
        StringPattern::Prefix(s) => v.starts_with(s.as_str()),
        StringPattern::Suffix(s) => v.ends_with(s.as_str()),
        StringPattern::Present => true,
    }
}

fn pattern_lower(p: &StringPattern) -> StringPattern {
    match p {
        StringPattern::Exact(s) => StringPattern::Exact(s.to_ascii_lowercase()),
        StringPattern::Prefix(s) => StringPattern::Prefix(s.to_ascii_lowercase()),
        StringPattern::Suffix(s) => StringPattern::Suffix(s.to_ascii_lowercase()),
        StringPattern::Present => StringPattern::Present,
    }
}

/// A field and its `not_` form against the values an attribute has (none: absent).
fn check<T>(yes: &[T], no: &[T], values: &[&str], m: impl Fn(&T, &str) -> bool) -> bool {
    if !yes.is_empty() && !values.iter().any(|v| yes.iter().any(|t| m(t, v))) {
        return false;
    }
    no.is_empty() || !values.iter().any(|v| no.iter().any(|t| m(t, v)))
}

fn texts(list: &[String]) -> Vec<StringPattern> {
    list.iter().map(|t| parse_pattern(t).unwrap()).collect()
}

fn inline(list: &ValueList) -> Vec<String> {
    match list {
        ValueList::Inline(v) => v.clone(),
        ValueList::File(_) => panic!("no list files here"),
    }
}

fn cidrs(list: &[String]) -> Vec<Cidr> {
    list.iter().map(|t| Cidr::parse(t).unwrap()).collect()
}

fn ip_check(yes: &[String], no: &[String], ip: IpAddr) -> bool {
    let text = ip.to_string();
    check(&cidrs(yes), &cidrs(no), &[text.as_str()], |c, v| {
        c.contains(v.parse().unwrap())
    })
}

fn opt(v: Option<&str>) -> Vec<&str> {
    v.into_iter().collect()
}

fn rule_http_only(rule: &AuthzRule) -> bool {
    http_only(rule)
}

fn rule_matches(rule: &AuthzRule, r: &Req) -> bool {
    let http = r.http.as_ref();
    let from = rule.from.is_empty()
        || rule.from.iter().any(|f| {
            let s = &f.source;
            ip_check(&inline(&s.ip_blocks), &inline(&s.not_ip_blocks), r.peer)
                && ip_check(
                    &inline(&s.remote_ip_blocks),
                    &inline(&s.not_remote_ip_blocks),
                    r.peer,
                )
                && check(
                    &texts(&inline(&s.principals)),
                    &texts(&inline(&s.not_principals)),
                    &opt(r.principal),
                    |p, v| matches(p, v, false),
                )
                && http.is_none_or(|h| {
                    check(
                        &texts(&s.request_principals),
                        &texts(&s.not_request_principals),
                        &opt(h.jwt.map(|j| j.0)),
                        |p, v| matches(p, v, false),
                    )
                })
        });
    let to = rule.to.is_empty()
        || rule.to.iter().any(|t| {
            let o = &t.operation;
            let port = r.port.to_string();
            let ports = |l: &[sinew_config::authz::Port]| {
                l.iter().map(|p| p.0.to_string()).collect::<Vec<_>>()
            };
            check(
                &ports(&o.ports),
                &ports(&o.not_ports),
                &[port.as_str()],
                |p, v| p == v,
            ) && http.is_none_or(|h| {
                let paths = |l: &[String]| {
                    l.iter()
                        .map(|p| parse_path_pattern(p).unwrap())
                        .collect::<Vec<_>>()
                };
                let host_only = h.host.split(':').next().unwrap();
                check(
                    &texts(&o.methods),
                    &texts(&o.not_methods),
                    &[h.method],
                    |p, v| matches(p, v, false),
                ) && check(&paths(&o.paths), &paths(&o.not_paths), &[h.path], |p, v| {
                    matches(p, v, false)
                }) && check(&texts(&o.hosts), &texts(&o.not_hosts), &[h.host], |p, v| {
                    matches(p, v, true) || matches(p, host_only, true)
                })
            })
        });
    let when = rule.when.iter().all(|c| {
        let key = parse_condition_key(&c.key).unwrap();
        let text = |values: &[&str]| {
            check(&texts(&c.values), &texts(&c.not_values), values, |p, v| {
                matches(p, v, false)
            })
        };
        match key {
            ConditionKey::SourceIp | ConditionKey::RemoteIp => {
                ip_check(&c.values, &c.not_values, r.peer)
            }
            ConditionKey::DestinationPort => {
                let port = r.port.to_string();
                check(&c.values, &c.not_values, &[port.as_str()], |p, v| p == v)
            }
            ConditionKey::SourcePrincipal => text(&opt(r.principal)),
            ConditionKey::SourceNamespace => unreachable!("refused before"),
            ConditionKey::RequestHeader(name) => http.is_none_or(|h| {
                assert_eq!(name, "x-user", "the grid sends only x-user");
                text(&opt(h.user))
            }),
            ConditionKey::RequestAuthPrincipal => {
                http.is_none_or(|h| text(&opt(h.jwt.map(|j| j.0))))
            }
            ConditionKey::RequestAuthAudiences => {
                http.is_none_or(|h| text(&opt(h.jwt.map(|j| j.1))))
            }
            ConditionKey::RequestAuthPresenter => http.is_none_or(|_| text(&[])),
            ConditionKey::RequestAuthClaims(path) => http.is_none_or(|h| {
                if path == ["aud"] {
                    text(&opt(h.jwt.map(|j| j.1)))
                } else {
                    text(&[])
                }
            }),
        }
    });
    from && to && when
}

/// Istio's decision: DENY wins, then an ALLOW must match if there are any. On a TCP
/// connection, ALLOW and AUDIT rules that read the request are dropped.
fn allowed(a: Option<&Authorization>, r: &Req) -> bool {
    let Some(a) = a else { return true };
    let tcp = r.http.is_none();
    let policy_matches = |p: &sinew_config::authz::AuthorizationPolicy| {
        p.rules.iter().any(|rule| {
            if tcp && p.action != AuthzAction::Deny && rule_http_only(rule) {
                return false;
            }
            rule_matches(rule, r)
        })
    };
    if a.policies
        .iter()
        .any(|p| p.action == AuthzAction::Deny && policy_matches(p))
    {
        return false;
    }
    let allows: Vec<_> = a
        .policies
        .iter()
        .filter(|p| p.action == AuthzAction::Allow)
        .collect();
    allows.is_empty() || allows.iter().any(|p| policy_matches(p))
}

/// Which AUDIT policies match (by the name they have at the end).
fn audited(a: Option<&Authorization>, r: &Req, rename: impl Fn(&str) -> String) -> Vec<String> {
    let Some(a) = a else { return Vec::new() };
    let tcp = r.http.is_none();
    let mut names: Vec<String> = a
        .policies
        .iter()
        .filter(|p| p.action == AuthzAction::Audit)
        .filter(|p| {
            p.rules
                .iter()
                .any(|rule| !(tcp && rule_http_only(rule)) && rule_matches(rule, r))
        })
        .map(|p| rename(&p.name))
        .collect();
    names.sort();
    names
}

fn catalog(yaml: &str) -> Catalog {
    let mut c = Catalog::default();
    for r in parse(yaml).unwrap_or_else(|e| panic!("{e}")) {
        match r {
            Resource::Service(s) => {
                c.services.insert(s.name.clone(), s);
            }
            Resource::Listener(l) => {
                c.listeners.insert(l.name.clone(), l);
            }
        }
    }
    c
}

/// What the proxy makes of what `sinew control` sends: each listener's policies.
fn mapped(c: &Catalog) -> BTreeMap<String, Option<Authorization>> {
    let built = Built::new(c);
    assert!(built.problems.is_empty(), "{:?}", built.problems);
    let assembled = crate::snapshot::assembled_by_a_proxy(&built, "node");
    assert!(assembled.warming.is_empty(), "{:?}", assembled.warming);
    let errors = sinew_config::validate(&assembled.config);
    assert!(errors.is_empty(), "{errors:?}");
    assembled
        .config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.authorization.clone()))
        .collect()
}

const WEB: &str = "cluster.local/ns/shop/sa/web";
const BATCH: &str = "cluster.local/ns/shop/sa/batch";

/// Every combination of the attributes the policies below read.
fn grid(port: u16, paths: &[&'static str]) -> Vec<Req> {
    let mut out = Vec::new();
    for principal in [
        None,
        Some(WEB),
        Some(BATCH),
        Some("other.td/ns/shop/sa/web"),
    ] {
        for peer in ["127.0.0.1", "10.1.2.3"] {
            let peer: IpAddr = peer.parse().unwrap();
            out.push(Req {
                principal,
                peer,
                port,
                http: None,
            });
            for method in ["GET", "POST"] {
                for path in paths {
                    for host in ["shop.local", "Evil.Example:8080"] {
                        for user in [None, Some("alice")] {
                            for jwt in [None, Some(("issuer/alice", "shop"))] {
                                out.push(Req {
                                    principal,
                                    peer,
                                    port,
                                    http: Some(Http {
                                        method,
                                        path,
                                        host,
                                        user,
                                        jwt,
                                    }),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// The service a request goes to: the first route whose prefix its path has.
fn routed<'a>(l: &'a Listener, path: &str) -> Option<&'a str> {
    l.routes
        .iter()
        .find(|r| path.starts_with(r.prefix.as_deref().unwrap_or("/")))
        .map(|r| r.service.as_str())
}

/// Compares, for every request of the grid, the service's decision with the listener's.
fn assert_round_trip(yaml: &str, paths: &[&'static str]) -> usize {
    let c = catalog(yaml);
    let mapped = mapped(&c);
    let mut compared = 0;
    for l in c.listeners.values() {
        let port: u16 = l.address.rsplit(':').next().unwrap().parse().unwrap();
        let listener_policies = mapped[&l.name].as_ref();
        let single = {
            let mut names: Vec<&str> = l.routes.iter().map(|r| r.service.as_str()).collect();
            names.extend(l.tcp.as_deref());
            names.sort();
            names.dedup();
            (names.len() == 1).then(|| names[0])
        };
        for r in grid(port, paths) {
            let service = match (&r.http, &l.tcp) {
                (None, None) | (Some(_), Some(_)) => continue,
                (None, Some(s)) => Some(s.as_str()),
                // On a one-service listener every request is judged by its policies.
                (Some(h), None) => single.or_else(|| routed(l, h.path)),
            };
            let authz = service
                .and_then(|s| c.services.get(s))
                .and_then(|s| s.authorization.as_ref());
            let want = allowed(authz, &r);
            let got = allowed(listener_policies, &r);
            assert_eq!(
                want, got,
                "listener {:?}, service {service:?}: {r:?}\nmapped: {listener_policies:#?}",
                l.name
            );
            let rename = |name: &str| format!("{}/{name}", service.unwrap_or(""));
            assert_eq!(
                audited(authz, &r, rename),
                audited(listener_policies, &r, |n| n.to_string()),
                "AUDIT matches differ on {:?}: {r:?}",
                l.name
            );
            compared += 1;
        }
    }
    compared
}

const SHARED: &str = "kind: Service
name: orders
authorization:
  policies:
    - name: web-reads
      rules:
        - from: [{source: {principals: ['cluster.local/ns/shop/sa/web']}}]
          to: [{operation: {methods: [GET]}}]
    - name: inside-writes
      rules:
        - from: [{source: {ip_blocks: [10.0.0.0/8], not_principals: ['other.td/*']}}]
          to: [{operation: {paths: [/orders/1, '/orders/admin*', '/*', '*'], methods: [POST]}}]
    - name: no-alice
      action: DENY
      rules:
        - when: [{key: 'request.headers[x-user]', values: [alice]}]
          to: [{operation: {paths: [/orders/1]}}]
    - name: watch-posts
      action: AUDIT
      rules:
        - to: [{operation: {methods: [POST]}}]
---
kind: Service
name: admin
authorization:
  policies:
    - name: nobody
---
kind: Service
name: catalog
authorization:
  policies:
    - name: mesh-only
      action: DENY
      rules:
        - from: [{source: {not_principals: ['cluster.local/ns/shop/*']}}]
        - to: [{operation: {not_hosts: ['shop.*', '*.local']}}]
---
kind: Service
name: web
---
kind: Listener
name: edge
address: 127.0.0.1:8080
routes:
  - {prefix: /orders/admin, service: admin}
  - {prefix: /orders, service: orders}
  - {prefix: /catalog, service: catalog}
  - {prefix: /orders/shadowed, service: catalog}
  - {prefix: /, service: web}
---
kind: Listener
name: no-catch-all
address: 127.0.0.1:8081
routes:
  - {prefix: /orders, service: orders}
  - {prefix: /catalog, service: web}
";

const PATHS: &[&str] = &[
    "/",
    "/orders",
    "/orders/1",
    "/orders/admin/keys",
    "/ordersx",
    "/catalog/a.png",
    "/orders/shadowed/1",
    "/web",
];

#[test]
fn policies_of_services_sharing_a_listener_apply_to_their_own_routes_only() {
    let compared = assert_round_trip(SHARED, PATHS);
    assert_eq!(
        compared,
        2 * 8 * 2 * PATHS.len() * 8,
        "every request of the grid, on both listeners"
    );
    // The open policy is there because orders has ALLOW policies and web none.
    let c = catalog(SHARED);
    let edge = mapped(&c)["edge"].clone().unwrap();
    assert!(edge.policies.iter().any(|p| p.name == UNRESTRICTED));
    assert!(edge
        .policies
        .iter()
        .any(|p| p.name == "orders/no-alice" && p.action == AuthzAction::Deny));
}

const SINGLE: &str = "kind: Service
name: static
authorization:
  policies:
    - name: images-and-jwt
      rules:
        - to: [{operation: {paths: ['*.png'], hosts: ['shop.local'], ports: ['9090']}}]
        - from: [{source: {request_principals: ['issuer/*']}}]
          when:
            - {key: request.auth.audiences, values: [shop]}
            - {key: destination.port, values: ['9090']}
        - to: [{operation: {ports: [1]}}]
    - name: never-on-this-port
      action: DENY
      rules:
        - when: [{key: destination.port, values: ['1']}]
    - name: no-plaintext-posts
      action: DENY
      rules:
        - from: [{source: {not_principals: ['*']}}]
          to: [{operation: {methods: [POST], not_paths: ['/public/*']}}]
    - name: remote
      action: AUDIT
      rules:
        - when: [{key: remote.ip, values: [127.0.0.0/8]}, {key: source.principal, not_values: ['*/sa/batch']}]
---
kind: Listener
name: files
address: 127.0.0.1:9090
routes:
  - {prefix: /, service: static}
  - {path_regex: '/x.*', service: static}
";

#[test]
fn a_listener_of_one_service_carries_its_policies_whole_with_ports_decided() {
    let paths = ["/", "/a.png", "/public/a.png", "/x", "/public/form"];
    assert_eq!(assert_round_trip(SINGLE, &paths), 8 * 2 * paths.len() * 8);
}

const TCP: &str = "kind: Service
name: ledger
authorization:
  policies:
    - name: batch-only
      rules:
        - from: [{source: {principals: ['cluster.local/ns/shop/sa/batch']}}]
        - from: [{source: {principals: ['cluster.local/ns/shop/sa/web']}}]
          to: [{operation: {methods: [GET]}}]
    - name: no-outsiders
      action: DENY
      rules:
        - from: [{source: {ip_blocks: [10.0.0.0/8]}}]
          to: [{operation: {paths: [/admin]}}]
    - name: seen
      action: AUDIT
      rules:
        - from: [{source: {principals: ['*']}}]
        - when: [{key: 'request.headers[x-user]', values: ['*']}]
---
kind: Listener
name: ledger
address: 127.0.0.1:7000
tcp: ledger
";

#[test]
fn a_tcp_listener_gets_network_rbac_with_istios_rules_for_http_fields() {
    let compared = assert_round_trip(TCP, &["/"]);
    assert_eq!(compared, 8, "TCP connections only");
    let mapped = mapped(&catalog(TCP));
    let ledger = mapped["ledger"].as_ref().unwrap();
    // The DENY rule's path is dropped: every connection from 10/8 is refused.
    let deny = ledger
        .policies
        .iter()
        .find(|p| p.action == AuthzAction::Deny)
        .unwrap();
    assert_eq!(deny.rules.len(), 1);
    assert!(deny.rules[0].to.is_empty(), "{deny:?}");
}

#[test]
fn an_allow_policy_without_rules_denies_and_no_policies_send_no_filter() {
    let yaml = "kind: Service
name: closed
authorization: {policies: [{name: nothing}]}
---
kind: Service
name: open
authorization: {policies: []}
---
kind: Listener
name: a
address: 127.0.0.1:1000
routes: [{prefix: /, service: closed}]
---
kind: Listener
name: b
address: 127.0.0.1:1001
routes: [{prefix: /, service: open}]
";
    let mapped = mapped(&catalog(yaml));
    let a = mapped["a"].as_ref().unwrap();
    assert_eq!(a.policies.len(), 1);
    assert!(a.policies[0].rules.is_empty());
    assert!(mapped["b"].is_none());
    assert_round_trip(yaml, &["/"]);
}

fn problems(yaml: &str) -> Vec<String> {
    Built::new(&catalog(yaml)).problems
}

#[test]
fn what_cannot_be_scoped_or_is_too_big_leaves_the_listener_out_with_a_reason() {
    let suffix = "kind: Service
name: a
authorization: {policies: [{name: p, rules: [{to: [{operation: {paths: ['*.png']}}]}]}]}
---
kind: Listener
name: l
address: 127.0.0.1:1
routes: [{prefix: /a, service: a}, {prefix: /, service: b}]
";
    let p = problems(suffix);
    assert!(
        p.len() == 1 && p[0].starts_with("listener \"l\": service \"a\": authorization.policies[0].rules[0].to[0].operation: path \"*.png\" is a suffix"),
        "{p:?}"
    );
    let regex = suffix.replace("'*.png'", "/a/1").replace(
        "{prefix: /, service: b}",
        "{path_regex: '/b.*', service: b}",
    );
    let p = problems(&regex);
    assert!(p.len() == 1 && p[0].contains("path_regex"), "{p:?}");
    let principals: Vec<String> = (0..20).map(|i| format!("'td/ns/a/sa/{i}'")).collect();
    let big = format!(
        "kind: Service
name: a
authorization:
  policies:
    - name: p
      rules:
        - from: [{{source: {{principals: [{0}]}}}}]
          to: [{{operation: {{methods: [{0}]}}}}]
---
kind: Listener
name: l
address: 127.0.0.1:1
routes: [{{prefix: /, service: a}}]
",
        principals.join(", ")
    );
    let p = problems(&big);
    assert!(
        p.len() == 1 && p[0].contains("more than 256 rules"),
        "{p:?}"
    );
}

#[test]
fn a_listener_that_cannot_be_built_keeps_its_last_good_version() {
    let good = "kind: Service
name: a
authorization: {policies: [{name: p, rules: [{to: [{operation: {paths: ['/a/*']}}]}]}]}
---
kind: Listener
name: l
address: 127.0.0.1:1
routes: [{prefix: /a, service: a}, {prefix: /, service: b}]
";
    let first = Built::new(&catalog(good));
    let bad = good.replace("'/a/*'", "'*.png'");
    let mut next = Built::new(&catalog(&bad));
    assert!(next.listeners.is_empty());
    next.carry_over(&first);
    assert_eq!(next.listeners.len(), 1);
    assert_eq!(next.listeners[0].1.version, first.listeners[0].1.version);
    assert!(
        next.problems[0].ends_with("(its last good version keeps serving)"),
        "{:?}",
        next.problems
    );
    // A listener never built is not opened.
    let mut fresh = Built::new(&catalog(&bad));
    fresh.carry_over(&Built::default());
    assert!(fresh.listeners.is_empty());
}

#[test]
fn route_scopes_follow_first_match() {
    let c = catalog(SHARED);
    let scopes = route_scopes(&c.listeners["edge"]);
    let scope = |prefix: &str, not: &[&str]| {
        Some(RouteScope {
            prefix: prefix.into(),
            not_prefixes: not.iter().map(|s| s.to_string()).collect(),
        })
    };
    assert_eq!(
        scopes,
        vec![
            scope("/orders/admin", &[]),
            scope("/orders", &["/orders/admin"]),
            scope("/catalog", &[]),
            None,
            scope(
                "/",
                &["/orders/admin", "/orders", "/catalog", "/orders/shadowed"]
            ),
        ]
    );
}
