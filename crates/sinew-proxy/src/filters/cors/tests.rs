use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use sinew_config::model;
use sinew_router::{RouteTable, Target};

use super::*;

/// A table of one virtual host `api` with routes `/a` (its own policy when `route` is
/// some) and `/b` (none), the host's policy `host`.
fn setup(host: Option<&str>, route: Option<&str>) -> (RouteTable, Option<Arc<Cors>>) {
    let yaml = format!(
        "[{{name: api, domains: ['*'], {} routes: [
            {{match: {{prefix: /a}}, direct_response: {{status: 200}} {}}},
            {{match: {{prefix: /b}}, direct_response: {{status: 200}}}}]}}]",
        host.map(|h| format!("cors: {h},")).unwrap_or_default(),
        route.map(|r| format!(", cors: {r}")).unwrap_or_default(),
    );
    let vhosts: Vec<model::VirtualHost> = serde_yaml_ng::from_str(&yaml).unwrap();
    let table = RouteTable::compile(&vhosts, "vh", &mut |_, _| Target(0)).unwrap();
    let cors = Cors::compile(&vhosts, "vh").unwrap();
    (table, cors)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(()).unwrap()
}

/// What the filter does to `req`: the preflight answer's headers (Err), or the headers it
/// adds to a response (Ok).
fn run(table: &RouteTable, cors: &Cors, req: &Request<()>) -> Result<HeaderMap, HeaderMap> {
    let vhost = table.virtual_host("api.example").unwrap();
    let view = sinew_router::RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: None,
        headers: req.headers(),
    };
    let route = vhost.route(&view).unwrap();
    match cors.on_request(req, route) {
        Err(reply) => {
            assert_eq!(reply.status(), 200);
            Err(reply.headers().clone())
        }
        Ok(allowed) => {
            let mut response = Response::new(ResponseBody::empty());
            if let Some(allowed) = allowed {
                add_headers(&mut response, allowed);
            }
            Ok(response.headers().clone())
        }
    }
}

const POLICY: &str = "{allow_origin: [{exact: 'https://app.example'}], allow_methods: [GET, PUT],
    allow_headers: [x-token], expose_headers: [x-trace], max_age: 600, allow_credentials: true}";

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_with_every_allow_header() {
    let (table, cors) = setup(Some(POLICY), None);
    let req = request(
        "OPTIONS",
        "/a",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
        ],
    );
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap_err();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET,PUT");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-max-age"], "600");
}

#[test]
fn a_preflight_from_another_origin_goes_upstream_unless_told_to_answer_it() {
    let (table, cors) = setup(Some(POLICY), None);
    let req = request(
        "OPTIONS",
        "/a",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ],
    );
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap();
    assert!(h.is_empty(), "forwarded, nothing added: {h:?}");

    let policy = "{allow_origin: [{exact: 'https://app.example'}], allow_methods: [GET],
        forward_not_matching_preflights: false}";
    let (table, cors) = setup(Some(policy), None);
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap_err();
    assert!(
        !h.contains_key("access-control-allow-origin"),
        "answered without allowing: {h:?}"
    );
}

#[test]
fn an_actual_request_from_an_allowed_origin_gets_origin_credentials_and_exposed_headers() {
    let (table, cors) = setup(Some(POLICY), None);
    let req = request("GET", "/a", &[("origin", "https://app.example")]);
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-trace");

    let other = request("GET", "/a", &[("origin", "https://evil.example")]);
    assert!(run(&table, cors.as_ref().unwrap(), &other)
        .unwrap()
        .is_empty());
    let none = request("GET", "/a", &[]);
    assert!(run(&table, cors.as_ref().unwrap(), &none)
        .unwrap()
        .is_empty());
}

#[test]
fn a_route_policy_overrides_its_host_field_by_field() {
    let route = "{allow_origin: [{suffix: '.other'}], allow_methods: ['*']}";
    let (table, cors) = setup(Some(POLICY), Some(route));
    let cors = cors.unwrap();
    let pre = |path: &str, origin: &str| {
        request(
            "OPTIONS",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", "PATCH"),
            ],
        )
    };
    // /a: the route's origins and methods (`*` reflects the request's), the host's rest.
    let h = run(&table, &cors, &pre("/a", "https://x.other")).unwrap_err();
    assert_eq!(h["access-control-allow-origin"], "https://x.other");
    assert_eq!(h["access-control-allow-methods"], "PATCH");
    assert_eq!(h["access-control-allow-headers"], "x-token");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(run(&table, &cors, &pre("/a", "https://app.example")).is_ok());
    // /b: the host's.
    let h = run(&table, &cors, &pre("/b", "https://app.example")).unwrap_err();
    assert_eq!(h["access-control-allow-methods"], "GET,PUT");
}

#[test]
fn a_disabled_or_shadow_policy_adds_nothing() {
    for policy in [
        "{allow_origin: [{prefix: ''}], filter_enabled: 0}",
        "{allow_origin: [{prefix: ''}], filter_enabled: 0, shadow_enabled: 100}",
    ] {
        let (table, cors) = setup(Some(policy), None);
        let req = request(
            "OPTIONS",
            "/a",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert!(run(&table, cors.as_ref().unwrap(), &req)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn a_matcher_that_matches_star_allows_every_origin() {
    let (table, cors) = setup(Some("{allow_origin: [{exact: '*'}]}"), None);
    let req = request("GET", "/b", &[("origin", "https://any.example")]);
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap();
    assert_eq!(h["access-control-allow-origin"], "https://any.example");
    assert!(!h.contains_key("access-control-allow-credentials"));
}

#[test]
fn private_network_access_is_granted_only_when_asked_and_allowed() {
    let policy =
        "{allow_origin: [{exact: 'https://app.example'}], allow_private_network_access: true}";
    let (table, cors) = setup(Some(policy), None);
    let req = request(
        "OPTIONS",
        "/a",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-private-network", "true"),
        ],
    );
    let h = run(&table, cors.as_ref().unwrap(), &req).unwrap_err();
    assert_eq!(h["access-control-allow-private-network"], "true");
}

#[test]
fn no_policy_anywhere_leaves_the_filter_out() {
    let (_, cors) = setup(None, None);
    assert!(cors.is_none());
}

#[test]
fn a_bad_origin_regex_is_reported_once_at_the_policy_that_has_it() {
    let vhosts: Vec<model::VirtualHost> = serde_yaml_ng::from_str(
        "[{name: api, domains: ['*'], cors: {allow_origin: [{regex: '('}]}, routes: [
            {match: {prefix: /a}, direct_response: {status: 200}},
            {match: {prefix: /b}, direct_response: {status: 200}}]}]",
    )
    .unwrap();
    let errors = Cors::compile(&vhosts, "vh").err().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "vh[0].cors.allow_origin[0].regex");
}
