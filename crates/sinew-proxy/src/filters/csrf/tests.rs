use http::Request;
use sinew_config::model;
use sinew_router::{RouteTable, Target};

use super::*;

/// A listener policy `listener` over one virtual host (policy `host`) with routes `/a`
/// (policy `route`) and `/b`.
fn setup(listener: &str, host: Option<&str>, route: Option<&str>) -> (RouteTable, Arc<Csrf>) {
    let yaml = format!(
        "[{{name: api, domains: ['*'], {} routes: [
            {{match: {{prefix: /a}}, direct_response: {{status: 200}} {}}},
            {{match: {{prefix: /b}}, direct_response: {{status: 200}}}}]}}]",
        host.map(|h| format!("csrf: {h},")).unwrap_or_default(),
        route.map(|r| format!(", csrf: {r}")).unwrap_or_default(),
    );
    let vhosts: Vec<model::VirtualHost> = serde_yaml_ng::from_str(&yaml).unwrap();
    let table = RouteTable::compile(&vhosts, "vh", &mut |_, _| Target(0)).unwrap();
    let listener: model::Csrf = serde_yaml_ng::from_str(listener).unwrap();
    let csrf = Csrf::compile(Some(&listener), "csrf", &vhosts, "vh")
        .unwrap()
        .unwrap();
    (table, csrf)
}

/// The status the filter answers `method path` with (200: it lets the request go on).
fn status(table: &RouteTable, csrf: &Csrf, method: &str, path: &str, h: &[(&str, &str)]) -> u16 {
    let mut r = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example:8080");
    for (k, v) in h {
        r = r.header(*k, *v);
    }
    let req = r.body(()).unwrap();
    let vhost = table.virtual_host("api.example").unwrap();
    let view = sinew_router::RequestView {
        method: req.method(),
        path: req.uri().path(),
        query: None,
        headers: req.headers(),
    };
    let route = vhost.route(&view).unwrap();
    match csrf.check(&req, route, false) {
        Ok(()) => 200,
        Err(reply) => reply.status().as_u16(),
    }
}

#[test]
fn a_mutating_request_from_its_own_host_passes_and_from_another_is_refused() {
    let (t, c) = setup("{}", None, None);
    let own = [("origin", "https://api.example:8080")];
    let other = [("origin", "https://evil.example")];
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        assert_eq!(status(&t, &c, method, "/a", &own), 200, "{method}");
        assert_eq!(status(&t, &c, method, "/a", &other), 403, "{method}");
    }
    for method in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(status(&t, &c, method, "/a", &other), 200, "{method}");
    }
}

#[test]
fn referer_stands_in_for_a_missing_origin_and_no_source_is_refused() {
    let (t, c) = setup("{}", None, None);
    let referer = [("referer", "http://api.example:8080/page?x=1")];
    assert_eq!(status(&t, &c, "POST", "/a", &referer), 200);
    let elsewhere = [("referer", "http://evil.example/page")];
    assert_eq!(status(&t, &c, "POST", "/a", &elsewhere), 403);
    assert_eq!(status(&t, &c, "POST", "/a", &[]), 403);
    assert_eq!(status(&t, &c, "POST", "/a", &[("origin", "null")]), 403);
}

#[test]
fn additional_origins_match_the_source_host_and_port() {
    let (t, c) = setup(
        "{additional_origins: [{suffix: '.trusted.example'}]}",
        None,
        None,
    );
    let ok = [("origin", "https://app.trusted.example")];
    assert_eq!(status(&t, &c, "POST", "/a", &ok), 200);
    let no = [("origin", "https://app.trusted.example.evil")];
    assert_eq!(status(&t, &c, "POST", "/a", &no), 403);
}

#[test]
fn the_most_specific_policy_replaces_the_others_whole() {
    let other = [("origin", "https://evil.example")];
    let (t, c) = setup("{}", Some("{filter_enabled: 0}"), Some("{}"));
    assert_eq!(status(&t, &c, "POST", "/a", &other), 403, "the route's");
    assert_eq!(status(&t, &c, "POST", "/b", &other), 200, "the host's: off");
    let (t, c) = setup("{filter_enabled: 0, shadow_enabled: 100}", None, None);
    assert_eq!(
        status(&t, &c, "POST", "/b", &other),
        200,
        "shadow: checked only"
    );
}

#[test]
fn host_and_port_reads_absolute_urls_and_keeps_anything_else_whole() {
    assert_eq!(
        host_and_port("https://a.example:8443/x?y"),
        "a.example:8443"
    );
    assert_eq!(host_and_port("http://user@a.example"), "a.example");
    assert_eq!(host_and_port("http://[::1]:80"), "[::1]:80");
    assert_eq!(host_and_port("null"), "null");
}
