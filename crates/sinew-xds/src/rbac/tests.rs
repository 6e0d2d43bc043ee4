//! Envoy RBAC filters as Envoy's documentation and Istio's generated configs write them,
//! mapped to Sinew's policies; the normal form checked against the tree it comes from;
//! and what is refused, by field path.

use serde_json::json;
use sinew_config::authz::{Authorization, AuthzAction};

use super::*;
use crate::bootstrap::load_str;
use crate::test_fixtures::APP_CLUSTER;

fn http_bootstrap(filters: &str) -> String {
    crate::test_fixtures::http_listener(filters)
}

/// One HTTP RBAC filter with `rules` (indented under `typed_config`).
fn http_rbac(rules: &str) -> String {
    http_bootstrap(&format!(
        r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
{rules}"#
    ))
}

/// A TCP proxy listener at `address` whose chain starts with a network RBAC filter.
fn tcp_rbac(address: &str, rules: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: db
    address:
      socket_address: {{ address: {address}, port_value: 5432 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp
{rules}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db
          cluster: app
{APP_CLUSTER}"#
    )
}

fn authorization(text: &str) -> Authorization {
    let loaded = load_str("envoy.yaml", text).unwrap_or_else(|d| panic!("{d}"));
    loaded.loaded.config.listeners[0]
        .authorization
        .clone()
        .expect("authorization mapped")
}

fn error_of(text: &str) -> String {
    match load_str("envoy.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// The policies as JSON, for comparing whole shapes.
fn policies_json(a: &Authorization) -> Vec<serde_json::Value> {
    a.policies
        .iter()
        .map(|p| {
            let rules: Vec<serde_json::Value> = p
                .rules
                .iter()
                .map(|r| {
                    let ops: Vec<serde_json::Value> =
                        r.to.iter()
                            .map(|t| {
                                let o = &t.operation;
                                json!({"paths": o.paths, "not_paths": o.not_paths,
                                   "methods": o.methods, "hosts": o.hosts})
                            })
                            .collect();
                    let when: Vec<serde_json::Value> = r
                        .when
                        .iter()
                        .map(|c| json!([c.key, c.values, c.not_values]))
                        .collect();
                    json!({"to": ops, "when": when})
                })
                .collect();
            json!({"name": p.name, "action": p.action.as_str(), "rules": rules})
        })
        .collect()
}

#[test]
fn an_istio_shaped_allow_policy_maps_to_one_rule_per_alternative() {
    // What istiod generates for an AuthorizationPolicy allowing GET /api/* from one
    // service account or from 10.0.0.0/8 forwarded clients.
    let text = http_rbac(
        r#"              rules:
                action: ALLOW
                policies:
                  ns[shop]-policy[api]-rule[0]:
                    permissions:
                    - and_rules:
                        rules:
                        - or_rules:
                            rules:
                            - header: { name: ":method", string_match: { exact: GET } }
                        - or_rules:
                            rules:
                            - url_path: { path: { prefix: /api/ } }
                            - url_path: { path: { exact: /health } }
                    principals:
                    - and_ids:
                        ids:
                        - or_ids:
                            ids:
                            - authenticated: { principal_name: { exact: "spiffe://cluster.local/ns/shop/sa/web" } }
                            - remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 }"#,
    );
    let a = authorization(&text);
    let got = policies_json(&a);
    let op =
        |path: &str| json!({"paths": [path], "not_paths": [], "methods": ["GET"], "hosts": []});
    let when_principal = json!([["source.principal", ["cluster.local/ns/shop/sa/web"], []]]);
    let when_remote = json!([["remote.ip", ["10.0.0.0/8"], []]]);
    assert_eq!(
        got,
        vec![json!({
            "name": "ns[shop]-policy[api]-rule[0]",
            "action": "ALLOW",
            "rules": [
                {"to": [op("/api/*")], "when": when_principal},
                {"to": [op("/api/*")], "when": when_remote},
                {"to": [op("/health")], "when": when_principal},
                {"to": [op("/health")], "when": when_remote},
            ]
        })]
    );
}

#[test]
fn negations_are_pushed_to_the_leaves_and_log_rules_become_audit() {
    let text = http_rbac(
        r#"              rules:
                action: DENY
                policies:
                  no-admin-unless-internal:
                    permissions:
                    - not_rule:
                        or_rules:
                          rules:
                          - url_path: { path: { prefix: /public/ } }
                          - header: { name: x-debug, present_match: true }
                    principals:
                    - not_id: { direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }
              shadow_rules:
                action: LOG
                policies:
                  everything:
                    permissions: [{ any: true }]
                    principals: [{ any: true }]"#,
    );
    let a = authorization(&text);
    assert_eq!(a.policies[0].action, AuthzAction::Deny);
    assert_eq!(a.policies[1].action, AuthzAction::Audit);
    assert_eq!(a.policies[1].name, "shadow:everything");
    assert_eq!(
        a.policies[1].rules.len(),
        1,
        "any AND any is one empty rule"
    );
    assert_eq!(
        policies_json(&a)[1]["rules"][0],
        json!({"to": [], "when": []})
    );
    let rules = &policies_json(&a)[0]["rules"];
    assert_eq!(
        rules,
        &json!([{
            "to": [{"paths": [], "not_paths": ["/public/*"], "methods": [], "hosts": []}],
            "when": [
                ["request.headers[x-debug]", [], ["*"]],
                ["source.ip", [], ["127.0.0.1/32"]],
            ]
        }])
    );
}

#[test]
fn an_allow_filter_without_policies_allows_nothing_and_no_rules_enforce_nothing() {
    let a = authorization(&http_rbac("              rules: { action: ALLOW }"));
    assert_eq!(a.policies.len(), 1);
    assert_eq!(a.policies[0].action, AuthzAction::Allow);
    assert!(
        a.policies[0].rules.is_empty(),
        "matches nothing, so denies all"
    );
    let loaded = load_str("envoy.yaml", &http_rbac("")).unwrap();
    assert!(loaded.loaded.config.listeners[0].authorization.is_none());
}

#[test]
fn jwt_claims_in_istio_metadata_and_principal_patterns_map_to_conditions() {
    let text = http_rbac(
        r#"              rules:
                policies:
                  admins:
                    permissions: [{ any: true }]
                    principals:
                    - metadata:
                        filter: istio_authn
                        path: [{ key: request.auth.claims }, { key: groups }]
                        value: { list_match: { one_of: { string_match: { exact: admin } } } }
                    - metadata:
                        filter: istio_authn
                        path: [{ key: request.auth.principal }]
                        value: { string_match: { prefix: "https://idp/" } }
                    - authenticated: { principal_name: { suffix: /sa/ops } }
                    - authenticated: { principal_name: { prefix: "spiffe://" } }
                    - header: { name: Host, string_match: { exact: Shop.Example, ignore_case: true } }"#,
    );
    let a = authorization(&text);
    let got = policies_json(&a);
    let when = |i: usize| got[0]["rules"][i]["when"].clone();
    assert_eq!(
        when(0),
        json!([["request.auth.claims[groups]", ["admin"], []]])
    );
    assert_eq!(
        when(1),
        json!([["request.auth.principal", ["https://idp/*"], []]])
    );
    assert_eq!(when(2), json!([["source.principal", ["*/sa/ops"], []]]));
    assert_eq!(when(3), json!([["source.principal", ["*"], []]]));
    assert_eq!(
        got[0]["rules"][4]["to"][0]["hosts"],
        json!(["Shop.Example"])
    );
}

#[test]
fn a_network_rbac_filter_guards_a_tcp_proxy_and_folds_the_listener_address() {
    let rules = r#"          rules:
            action: DENY
            policies:
              outsiders:
                permissions:
                - and_rules:
                    rules:
                    - destination_port: 5432
                    - destination_ip: { address_prefix: 127.0.0.0, prefix_len: 8 }
                principals:
                - not_id: { source_ip: { address_prefix: 10.1.0.0, prefix_len: 16 } }
              elsewhere:
                permissions: [{ destination_ip: { address_prefix: 192.168.0.0, prefix_len: 16 } }]
                principals: [{ any: true }]"#;
    let a = authorization(&tcp_rbac("127.0.0.1", rules));
    let got = policies_json(&a);
    // The listener is on 127.0.0.1: the 192.168/16 destination never matches.
    assert_eq!(got[0]["name"], "elsewhere");
    assert_eq!(got[0]["rules"], json!([]));
    assert_eq!(
        got[1]["rules"],
        json!([{"to": [], "when": [["destination.port", ["5432"], []], ["source.ip", [], ["10.1.0.0/16"]]]}])
    );
    let e = error_of(&tcp_rbac("0.0.0.0", rules));
    assert!(
        e.contains("policies[\"elsewhere\"].permissions[0].destination_ip: the listener binds every local address"),
        "{e}"
    );
}

#[test]
fn what_sinew_cannot_express_is_refused_by_field() {
    let at = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config";
    let policy = |permission: &str| {
        http_rbac(&format!(
            "              rules:\n                policies:\n                  p:\n                    permissions: [{permission}]\n                    principals: [{{ any: true }}]"
        ))
    };
    for (permission, field, why) in [
        ("{ url_path: { path: { safe_regex: { regex: '/a.*' } } } }", "permissions[0].url_path.path.safe_regex", "is not supported by Sinew"),
        ("{ requested_server_name: { exact: a } }", "permissions[0].requested_server_name", "no such attribute"),
        ("{ and_rules: { rules: [{ url_path: { path: { prefix: /a } } }, { url_path: { path: { suffix: .json } } }] } }", "permissions[0].and_rules.rules[1].url_path.path", "paths are alternatives"),
        ("{ header: { name: ':path', exact_match: /x } }", "permissions[0].header.name", "with url_path"),
        ("{ header: { name: x-a, exact_match: 'a*b' } }", "permissions[0].header", "`*` as the wildcard"),
        ("{ metadata: { filter: envoy.filters.http.jwt_authn, path: [{ key: x }], value: { present_match: true } } }", "permissions[0].metadata.filter", "istio_authn"),
    ] {
        let e = error_of(&policy(permission));
        let want = format!("{at}.rules.policies[\"p\"].{field}");
        assert!(e.contains(&want) && e.contains(why), "{permission}: want {want} ({why}) in\n{e}");
    }
    let cel = http_rbac("              rules:\n                policies:\n                  p:\n                    permissions: [{ any: true }]\n                    principals: [{ any: true }]\n                    condition: { const_expr: { bool_value: true } }");
    assert!(error_of(&cel).contains("policies[\"p\"].condition: CEL conditions"));
    let header_on_tcp = tcp_rbac(
        "127.0.0.1",
        "          rules:\n            policies:\n              p:\n                permissions: [{ header: { name: x, present_match: true } }]\n                principals: [{ any: true }]",
    );
    let e = error_of(&header_on_tcp);
    assert!(
        e.contains("permissions[0].header: reads the HTTP request"),
        "{e}"
    );
    // Two ALLOW filters: Envoy requires both, Sinew's ALLOW policies are alternatives.
    let one = "          - name: envoy.filters.http.rbac\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n              rules: { action: ALLOW }\n";
    let e = error_of(&http_bootstrap(&format!("{one}{one}")));
    assert!(
        e.contains(
            "http_filters[1].typed_config.rules.action: a second RBAC filter with ALLOW rules"
        ),
        "{e}"
    );
    // 3 × 3 × ... alternatives: past MAX_RULES the policy is refused, not expanded.
    let or3 = "{ or_rules: { rules: [{ header: { name: a, exact_match: '1' } }, { header: { name: b, exact_match: '2' } }, { header: { name: c, exact_match: '3' } }] } }";
    let and6 = format!("{{ and_rules: {{ rules: [{}] }} }}", [or3; 6].join(", "));
    let e = error_of(&policy(&and6));
    assert!(
        e.contains("policies[\"p\"]: its and/or/not tree expands to more than 256"),
        "{e}"
    );
}

/// Evaluates a tree directly, with `truth` giving each leaf's value by its path.
fn evaluate(e: &Expr, truth: &dyn Fn(&str) -> bool) -> bool {
    match e {
        Expr::Const(b) => *b,
        Expr::Leaf(l) => truth(&l.path) != l.negated,
        Expr::All(v) => v.iter().all(|c| evaluate(c, truth)),
        Expr::Any(v) => v.iter().any(|c| evaluate(c, truth)),
        Expr::Not(inner) => !evaluate(inner, truth),
    }
}

#[test]
fn the_normal_form_matches_exactly_when_the_tree_does() {
    let leaf = |n: &str| Expr::leaf(n, Attribute::Path, "/");
    let not = |e: Expr| Expr::Not(Box::new(e));
    // not(a and (b or not c)) or (d and not(e or const false)) and not(not(a) or d)
    let tree = Expr::Any(vec![
        not(Expr::All(vec![
            leaf("a"),
            Expr::Any(vec![leaf("b"), not(leaf("c"))]),
        ])),
        Expr::All(vec![
            leaf("d"),
            not(Expr::Any(vec![leaf("e"), Expr::Const(false)])),
            not(Expr::Any(vec![not(leaf("a")), leaf("d")])),
        ]),
        Expr::All(vec![leaf("c"), Expr::Const(true), not(leaf("b"))]),
    ]);
    let nf = normal_form(&tree, false).expect("small");
    let names = ["a", "b", "c", "d", "e"];
    for bits in 0u32..32 {
        let truth = |p: &str| bits & (1 << names.iter().position(|n| *n == p).unwrap()) != 0;
        let direct = evaluate(&tree, &truth);
        let flat = nf
            .iter()
            .any(|and| and.iter().all(|l| truth(&l.path) != l.negated));
        assert_eq!(direct, flat, "assignment {bits:05b}");
    }
}
