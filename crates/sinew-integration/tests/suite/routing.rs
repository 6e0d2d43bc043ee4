//! Routing through a running proxy: virtual hosts by Host and `:authority`, route matching,
//! the actions (cluster, weighted clusters, subsets, redirect, direct response), rewrites,
//! header edits and the headers every proxied request gets. DNS clusters too.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use sinew_integration::{h2_request, tally, TestClient, TestProxy, Upstream};

/// A direct-response route answering `body`.
fn answer(prefix: &str, body: &str) -> String {
    format!("{{match: {{prefix: '{prefix}'}}, direct_response: {{status: 200, body: '{body}'}}}}")
}

// ---------------------------------------------------------------------------------------
// Virtual hosts
// ---------------------------------------------------------------------------------------

async fn vhost_proxy(with_default: bool) -> TestProxy {
    let default = if with_default {
        format!(
            "        - name: any\n          domains: ['*']\n          routes: [{}]\n",
            answer("/", "any")
        )
    } else {
        String::new()
    };
    TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: exact
          domains: ['api.example.com', '[::1]']
          routes: [{exact}]
        - name: suffix
          domains: ['*.example.com']
          routes: [{suffix}]
        - name: longer-suffix
          domains: ['*.eu.example.com']
          routes: [{longer}]
        - name: prefix
          domains: ['shop.*']
          routes: [{prefix}]
{default}",
        exact = answer("/", "exact"),
        suffix = answer("/", "suffix"),
        longer = answer("/", "longer-suffix"),
        prefix = answer("/", "prefix"),
    ))
    .await
}

#[tokio::test]
async fn virtual_hosts_match_exact_then_suffix_then_prefix_then_default() {
    let proxy = vhost_proxy(true).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    for (host, expected) in [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8080", "exact"),
        ("[::1]:9000", "exact"),
        ("a.example.com", "suffix"),
        ("a.b.example.com:1", "suffix"),
        ("x.eu.example.com", "longer-suffix"),
        // `*.example.com` needs at least one character before the dot.
        ("example.com", "any"),
        ("shop.local", "prefix"),
        ("shop.local:443", "prefix"),
        // A suffix wildcard beats a prefix wildcard.
        ("shop.example.com", "suffix"),
        ("shopping.local", "any"),
        ("other.org", "any"),
    ] {
        let r = client.get(addr, "/", &[("host", host)]).await;
        assert_eq!(r.status, 200, "Host {host}");
        assert_eq!(r.text(), expected, "Host {host}");
    }
}

#[tokio::test]
async fn http2_authority_selects_the_virtual_host() {
    let proxy = vhost_proxy(true).await;
    let addr = proxy.addr("web").await;
    for (authority, expected) in [
        ("api.example.com", "exact"),
        ("api.example.com:8443", "exact"),
        ("a.example.com", "suffix"),
        ("shop.local:80", "prefix"),
        ("nowhere.test", "any"),
    ] {
        let r = h2_request(addr, &format!("http://{authority}/"), &[]).await;
        assert_eq!(r.version, http::Version::HTTP_2);
        assert_eq!(r.text(), expected, ":authority {authority}");
    }
}

#[tokio::test]
async fn unknown_host_without_a_default_virtual_host_is_404() {
    let proxy = vhost_proxy(false).await;
    let addr = proxy.addr("web").await;
    let r = TestClient::http1()
        .get(addr, "/", &[("host", "other.org")])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route");
    let r = TestClient::http1()
        .get(addr, "/", &[("host", "api.example.com")])
        .await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------
// Route matching
// ---------------------------------------------------------------------------------------

async fn match_proxy() -> TestProxy {
    let direct = |m: &str, body: &str| {
        format!("            - match: {m}\n              direct_response: {{status: 200, body: '{body}'}}\n")
    };
    let routes = [
        direct("{path: /exact}", "path-exact"),
        direct("{path_regex: '/items/[0-9]+'}", "path-regex"),
        direct("{prefix: /api/, methods: [POST, PUT]}", "method-post-put"),
        direct(
            "{prefix: /h, headers: [{name: x-exact, exact: 'yes'}]}",
            "header-exact",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-prefix, prefix: abc}]}",
            "header-prefix",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-regex, regex: 'v[0-9]+'}]}",
            "header-regex",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-present}]}",
            "header-present",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-want-absent, exact: '1'}, {name: x-gone, present: false}]}",
            "header-absent",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-want-invert, exact: '1'}, {name: x-inv, exact: 'no', invert: true}]}",
            "header-invert",
        ),
        direct(
            "{prefix: /h, headers: [{name: x-a, exact: '1'}, {name: x-b, exact: '2'}]}",
            "header-all",
        ),
        direct("{prefix: /q, query: [{name: a, exact: '1'}]}", "query-exact"),
        direct(
            "{prefix: /q, query: [{name: b, regex: '[0-9]+'}]}",
            "query-regex",
        ),
        direct("{prefix: /q, query: [{name: c}]}", "query-present"),
        direct("{prefix: /first}", "first"),
        direct("{prefix: /first/second}", "second"),
        direct("{prefix: /api/}", "api-any-method"),
        direct("{prefix: /}", "fallback"),
    ]
    .concat();
    TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
{routes}"
    ))
    .await
}

/// A request (method, path and query, headers) and the route body it should get.
type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn routes_match_on_path_method_headers_and_query_first_match_wins() {
    let proxy = match_proxy().await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let cases: &[Case] = &[
        (Method::GET, "/exact", &[], "path-exact"),
        (Method::GET, "/exact?x=1", &[], "path-exact"),
        (Method::GET, "/exact/more", &[], "fallback"),
        (Method::GET, "/exac", &[], "fallback"),
        (Method::GET, "/items/42", &[], "path-regex"),
        // The regex must match the whole path.
        (Method::GET, "/items/42/x", &[], "fallback"),
        (Method::GET, "/items/abc", &[], "fallback"),
        (Method::GET, "/x/items/42", &[], "fallback"),
        (Method::POST, "/api/thing", &[], "method-post-put"),
        (Method::PUT, "/api/thing", &[], "method-post-put"),
        (Method::GET, "/api/thing", &[], "api-any-method"),
        (Method::DELETE, "/api/thing", &[], "api-any-method"),
        (Method::GET, "/h", &[("x-exact", "yes")], "header-exact"),
        (Method::GET, "/h", &[("x-exact", "yes!")], "fallback"),
        (Method::GET, "/h", &[("x-exact", "YES")], "fallback"),
        (
            Method::GET,
            "/h",
            &[("x-prefix", "abcdef")],
            "header-prefix",
        ),
        (Method::GET, "/h", &[("x-prefix", "xabc")], "fallback"),
        (Method::GET, "/h", &[("x-regex", "v12")], "header-regex"),
        (Method::GET, "/h", &[("x-regex", "xv12")], "fallback"),
        (Method::GET, "/h", &[("x-regex", "v12x")], "fallback"),
        (Method::GET, "/h", &[("x-present", "")], "header-present"),
        (
            Method::GET,
            "/h",
            &[("x-present", "anything")],
            "header-present",
        ),
        (
            Method::GET,
            "/h",
            &[("x-want-absent", "1")],
            "header-absent",
        ),
        (
            Method::GET,
            "/h",
            &[("x-want-absent", "1"), ("x-gone", "here")],
            "fallback",
        ),
        (
            Method::GET,
            "/h",
            &[("x-want-invert", "1"), ("x-inv", "yes")],
            "header-invert",
        ),
        (
            Method::GET,
            "/h",
            &[("x-want-invert", "1"), ("x-inv", "no")],
            "fallback",
        ),
        // Every header condition of a route must hold.
        (
            Method::GET,
            "/h",
            &[("x-a", "1"), ("x-b", "2")],
            "header-all",
        ),
        (Method::GET, "/h", &[("x-a", "1"), ("x-b", "3")], "fallback"),
        (Method::GET, "/h", &[("x-a", "1")], "fallback"),
        (Method::GET, "/q?a=1", &[], "query-exact"),
        (Method::GET, "/q?z=0&a=1", &[], "query-exact"),
        (Method::GET, "/q?a=2", &[], "fallback"),
        (Method::GET, "/q?b=123", &[], "query-regex"),
        (Method::GET, "/q?b=12x", &[], "fallback"),
        (Method::GET, "/q?c", &[], "query-present"),
        (Method::GET, "/q?c=anything", &[], "query-present"),
        (Method::GET, "/q?cc=1", &[], "fallback"),
        (Method::GET, "/q", &[], "fallback"),
        // Both routes match /first/second; the earlier one wins.
        (Method::GET, "/first/second", &[], "first"),
        (Method::GET, "/first", &[], "first"),
    ];
    for (method, path, headers, expected) in cases {
        let r = client
            .send(method.clone(), addr, path, headers, Bytes::new())
            .await;
        assert_eq!(r.status, 200, "{method} {path} {headers:?}");
        assert_eq!(r.text(), *expected, "{method} {path} {headers:?}");
    }
}

#[tokio::test]
async fn request_matching_no_route_is_404() {
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{}]
",
        answer("/only", "only")
    ))
    .await;
    let addr = proxy.addr("web").await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let r = client.get(addr, "/elsewhere", &[]).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.text(), "no route");
        assert_eq!(client.get(addr, "/only", &[]).await.text(), "only");
    }
}

// ---------------------------------------------------------------------------------------
// Redirects and direct responses
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn redirects_build_the_location_from_the_request_and_the_route() {
    let proxy = TestProxy::start(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {path: /old}
              redirect: {path: /new, code: 302}
            - match: {prefix: /secure}
              redirect: {scheme: https}
            - match: {prefix: /moved/}
              redirect: {host: new.example.org, prefix_rewrite: /v2/, code: 308}
            - match: {prefix: /port}
              redirect: {host: other.test, port: 8443, code: 307}
            - match: {prefix: /strip}
              redirect: {path: /clean, strip_query: true, code: 303}
",
    )
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let host = [("host", "site.test:8080")];
    for (path, code, location) in [
        ("/old", 302, "http://site.test:8080/new"),
        ("/old?x=1", 302, "http://site.test:8080/new?x=1"),
        // A new scheme drops the request's port: it belonged to plain HTTP.
        ("/secure/page?a=b", 301, "https://site.test/secure/page?a=b"),
        ("/moved/a/b?q=1", 308, "http://new.example.org/v2/a/b?q=1"),
        ("/port/x", 307, "http://other.test:8443/port/x"),
        ("/strip?secret=1", 303, "http://site.test:8080/clean"),
    ] {
        let r = client.get(addr, path, &host).await;
        assert_eq!(r.status.as_u16(), code, "{path}");
        assert_eq!(r.header("location"), Some(location), "{path}");
    }
    // Over HTTP/2 the authority plays the Host's part.
    let r = h2_request(addr, "http://h2.test:81/old", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://h2.test:81/new"));
}

#[tokio::test]
async fn direct_responses_carry_status_body_and_content_type() {
    let proxy = TestProxy::start(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {path: /json}
              direct_response: {status: 503, body: '{\"down\":true}', content_type: application/json}
            - match: {path: /text}
              direct_response: {status: 200, body: hello}
            - match: {path: /empty}
              direct_response: {status: 204}
",
    )
    .await;
    let addr = proxy.addr("web").await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let r = client.get(addr, "/json", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "{\"down\":true}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let r = client.get(addr, "/text", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        let r = client.get(addr, "/empty", &[]).await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// What the upstream sees
// ---------------------------------------------------------------------------------------

/// The request head an upstream echoed: (request line, lowercase header lines).
fn echoed(text: &str) -> (String, Vec<(String, String)>) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (first, headers)
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn single_cluster(up: &Upstream, routes: &str, vhost_extra: &str) -> String {
    format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
{vhost_extra}
          routes:
{routes}
clusters:
  - name: up
    endpoints: [{{address: {}}}]
",
        up.addr
    )
}

#[tokio::test]
async fn path_and_host_rewrites_reach_the_upstream() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "
            - match: {prefix: /app/}
              cluster: up
              rewrite: {prefix: /}
            - match: {prefix: /users/}
              cluster: up
              rewrite: {regex: {pattern: '^/users/([0-9]+)/profile$', substitution: '/profile/$1'}}
            - match: {prefix: /host}
              cluster: up
              rewrite: {host: backend.internal}
            - match: {prefix: /}
              cluster: up
",
        "",
    ))
    .await;
    let addr = proxy.addr("web").await;
    // HTTP/1.1 names the host in Host; HTTP/2 in :authority (a different Host beside it
    // would be malformed, RFC 9113 §8.3.1).
    let echo = [("x-test-echo", "1"), ("host", "front.test")];
    let client = TestClient::http1();
    for h2 in [false, true] {
        let get = |path: &'static str| {
            let client = &client;
            async move {
                if h2 {
                    let uri = format!("http://front.test{path}");
                    h2_request(addr, &uri, &echo[..1]).await
                } else {
                    client.get(addr, path, &echo).await
                }
            }
        };
        let r = get("/app/x/y?z=1").await;
        assert!(r.text().starts_with("GET /x/y?z=1 "), "{}", r.text());
        let r = get("/users/42/profile?v=2").await;
        assert!(r.text().starts_with("GET /profile/42?v=2 "), "{}", r.text());
        // A path the regex does not match goes up unchanged.
        let r = get("/users/abc/profile").await;
        assert!(
            r.text().starts_with("GET /users/abc/profile "),
            "{}",
            r.text()
        );
        let r = get("/host/a").await;
        let (line, headers) = echoed(&r.text());
        assert!(line.starts_with("GET /host/a "), "{line}");
        assert_eq!(
            values(&headers, "host"),
            ["backend.internal"],
            "{}",
            r.text()
        );
        let r = get("/plain").await;
        let (_, headers) = echoed(&r.text());
        assert_eq!(values(&headers, "host"), ["front.test"], "{}", r.text());
    }
}

#[tokio::test]
async fn request_and_response_headers_are_edited_per_route_and_virtual_host() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "
            - match: {prefix: /edited}
              cluster: up
              request_headers:
                add: {x-route-add: route}
                set: {x-route-set: route}
                remove: [x-route-remove]
              response_headers:
                add: {x-resp-route-add: route}
                set: {x-resp-route-set: route}
                remove: [x-resp-route-remove]
            - match: {prefix: /}
              cluster: up
",
        "
          request_headers:
            add: {x-vh-add: vhost}
            set: {x-vh-set: vhost}
            remove: [x-vh-remove]
          response_headers:
            add: {x-resp-vh-add: vhost}
            set: {x-resp-vh-set: vhost}
            remove: [x-resp-vh-remove]",
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let sent = [
        ("x-test-echo", "1"),
        ("x-route-add", "client"),
        ("x-route-set", "client"),
        ("x-route-remove", "client"),
        ("x-vh-add", "client"),
        ("x-vh-set", "client"),
        ("x-vh-remove", "client"),
        ("x-test-response-header", "x-resp-route-set: upstream"),
        ("x-test-response-header", "x-resp-route-remove: upstream"),
        ("x-test-response-header", "x-resp-vh-set: upstream"),
        ("x-test-response-header", "x-resp-vh-remove: upstream"),
        ("x-test-response-header", "x-resp-route-add: upstream"),
    ];
    let r = client.get(addr, "/edited", &sent).await;
    assert_eq!(r.status, 200);
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-route-add"), ["client", "route"]);
    assert_eq!(values(&seen, "x-route-set"), ["route"]);
    assert!(values(&seen, "x-route-remove").is_empty());
    assert_eq!(values(&seen, "x-vh-add"), ["client", "vhost"]);
    assert_eq!(values(&seen, "x-vh-set"), ["vhost"]);
    assert!(values(&seen, "x-vh-remove").is_empty());

    let all = |name: &str| -> Vec<&str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("x-resp-route-add"), ["upstream", "route"]);
    assert_eq!(all("x-resp-route-set"), ["route"]);
    assert!(all("x-resp-route-remove").is_empty());
    assert_eq!(all("x-resp-vh-add"), ["vhost"]);
    assert_eq!(all("x-resp-vh-set"), ["vhost"]);
    assert!(all("x-resp-vh-remove").is_empty());

    // The other route gets only the virtual host's edits.
    let r = client.get(addr, "/other", &sent).await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-route-add"), ["client"]);
    assert_eq!(values(&seen, "x-route-set"), ["client"]);
    assert_eq!(values(&seen, "x-route-remove"), ["client"]);
    assert_eq!(values(&seen, "x-vh-set"), ["vhost"]);
    assert!(values(&seen, "x-vh-remove").is_empty());
    assert_eq!(r.header("x-resp-route-set"), Some("upstream"));
    assert!(r.header("x-resp-route-add").is_some());
    assert_eq!(r.header("x-resp-vh-add"), Some("vhost"));

    // Direct responses get the response edits too.
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "
            - match: {prefix: /}
              direct_response: {status: 200, body: direct}
              response_headers: {add: {x-resp-route-add: route}}
",
        "
          response_headers: {set: {x-resp-vh-set: vhost}}",
    ))
    .await;
    let r = client.get(proxy.addr("web").await, "/", &[]).await;
    assert_eq!(r.header("x-resp-route-add"), Some("route"));
    assert_eq!(r.header("x-resp-vh-set"), Some("vhost"));
}

#[tokio::test]
async fn virtual_host_header_actions_run_after_the_routes_as_documented() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "
            - match: {prefix: /}
              cluster: up
              request_headers: {set: {x-level: route}}
              response_headers: {set: {x-level: route}}
",
        "
          request_headers: {set: {x-level: vhost}}
          response_headers: {set: {x-level: vhost}}",
    ))
    .await;
    let r = TestClient::http1()
        .get(proxy.addr("web").await, "/", &[("x-test-echo", "1")])
        .await;
    // docs/config.md, Header actions: "A route's actions run first, then its virtual host's."
    assert_eq!(r.header("x-level"), Some("vhost"), "response side");
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-level"), ["vhost"], "request side");
}

#[tokio::test]
async fn request_id_is_generated_when_missing_and_kept_when_present() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "            - {match: {prefix: /}, cluster: up}\n",
        "",
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = client.get(addr, "/", &[("x-test-echo", "1")]).await;
        let (_, seen) = echoed(&r.text());
        let id = values(&seen, "x-request-id");
        assert_eq!(id.len(), 1, "{}", r.text());
        let id = id[0].to_string();
        assert_eq!(id.len(), 36, "UUID-shaped: {id}");
        assert_eq!(id.matches('-').count(), 4, "UUID-shaped: {id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");
    let r = client
        .get(
            addr,
            "/",
            &[("x-test-echo", "1"), ("x-request-id", "abc-123")],
        )
        .await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-request-id"), ["abc-123"]);
}

#[tokio::test]
async fn forwarded_headers_and_via_are_added() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "            - {match: {prefix: /}, cluster: up}\n",
        "",
    ))
    .await;
    let addr = proxy.addr("web").await;
    let r = TestClient::http1()
        .get(addr, "/", &[("x-test-echo", "1")])
        .await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&seen, "via"), ["1.1 sinew"]);
    assert_eq!(r.header("via"), Some("1.1 sinew"));

    // A trusted client's chain is appended to, and its proto kept.
    let r = TestClient::http1()
        .get(
            addr,
            "/",
            &[
                ("x-test-echo", "1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("via", "1.0 edge"),
            ],
        )
        .await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(values(&seen, "via").join(", "), "1.0 edge, 1.1 sinew");

    // HTTP/2 downstream: `Via: 2 sinew`.
    let r = TestClient::http2()
        .get(addr, "/", &[("x-test-echo", "1")])
        .await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "via"), ["2 sinew"]);
    assert_eq!(r.header("via"), Some("2 sinew"));
}

#[tokio::test]
async fn untrusted_clients_forwarded_for_is_replaced() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(
        &single_cluster(&up, "            - {match: {prefix: /}, cluster: up}\n", "").replace(
            "    http:\n",
            "    http:\n      trust_forwarded_headers: false\n",
        ),
    )
    .await;
    let r = TestClient::http1()
        .get(
            proxy.addr("web").await,
            "/",
            &[
                ("x-test-echo", "1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    let (_, seen) = echoed(&r.text());
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
}

/// Sends `request` on a new connection and reads until the peer closes: (head, body).
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the response did not end with the connection")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    (head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&single_cluster(
        &up,
        "            - {match: {prefix: /}, cluster: up}\n",
        "",
    ))
    .await;
    // Raw bytes, so no client library drops a header before it reaches the wire.
    let request = "GET / HTTP/1.1\r\nHost: x\r\nx-test-echo: 1\r\n\
                   Connection: close, x-secret\r\nx-secret: 1\r\n\
                   Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nx-kept: 1\r\n\
                   x-test-response-header: x-private: 1\r\n\
                   x-test-response-header: keep-alive: timeout=9\r\n\
                   x-test-response-header: proxy-connection: keep-alive\r\n\
                   x-test-response-header: connection: x-private\r\n\r\n";

    // Control: straight to the upstream, every header travels both ways.
    let (head, body) = raw_exchange(up.addr, request).await;
    for present in [
        "x-secret: 1",
        "keep-alive: timeout=5",
        "proxy-connection: keep-alive",
    ] {
        assert!(
            body.contains(present),
            "the test did not send {present}:\n{body}"
        );
    }
    assert!(
        head.contains("x-private: 1"),
        "upstream did not send x-private:\n{head}"
    );
    assert!(head.contains("keep-alive: timeout=9"), "{head}");
    assert!(head.contains("proxy-connection: keep-alive"), "{head}");

    // Through the proxy, none do.
    let (head, body) = raw_exchange(proxy.addr("web").await, request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (_, seen) = echoed(&body);
    for gone in ["x-secret", "keep-alive", "proxy-connection"] {
        assert!(values(&seen, gone).is_empty(), "{gone} forwarded:\n{body}");
    }
    assert!(
        !values(&seen, "connection")
            .iter()
            .any(|v| v.contains("x-secret")),
        "{body}"
    );
    assert_eq!(values(&seen, "x-kept"), ["1"]);
    for gone in ["x-private:", "keep-alive:", "proxy-connection:"] {
        assert!(!head.contains(gone), "{gone} returned:\n{head}");
    }
    assert!(head.contains("x-upstream: up"), "{head}");
}

// ---------------------------------------------------------------------------------------
// Where requests go
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn metadata_subset_reaches_only_matching_endpoints() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /, headers: [{{name: x-canary, exact: '1'}}]}}
              cluster: svc
              metadata_match: {{version: v2}}
            - match: {{prefix: /}}
              cluster: svc
clusters:
  - name: svc
    endpoints:
      - {{address: {}, metadata: {{version: v1}}}}
      - {{address: {}, metadata: {{version: v2}}}}
",
        v1.addr, v2.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let canary = tally(
        &client,
        addr,
        "/",
        &[("x-canary", "1")],
        40,
        4,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(canary.count("v2"), 40, "{canary:?}");
    let all = tally(&client, addr, "/", &[], 40, 4, Duration::from_secs(10)).await;
    assert_eq!(all.count("v1"), 20, "{all:?}");
    assert_eq!(all.count("v2"), 20, "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_80_20_within_3_percent_over_10000_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              weighted_clusters:
                - {{cluster: a, weight: 80}}
                - {{cluster: b, weight: 20}}
clusters:
  - name: a
    endpoints: [{{address: {}}}]
  - name: b
    endpoints: [{{address: {}}}]
",
        a.addr, b.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[],
        10_000,
        20,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    let share = t.count("a") as f64 / 10_000.0;
    assert!((0.77..=0.83).contains(&share), "a got {share:.3}: {t:?}");
    assert_eq!(t.count("a") + t.count("b"), 10_000, "{t:?}");
    // Keep-alive held: far fewer upstream connections than requests.
    assert!(
        a.connections() + b.connections() <= 60,
        "{} + {}",
        a.connections(),
        b.connections()
    );
}

#[tokio::test]
async fn dns_cluster_resolves_localhost() {
    let up = Upstream::start("named").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{{match: {{prefix: /}}, cluster: named}}]
clusters:
  - name: named
    type: dns
    dns_refresh: 1s
    endpoints: [{{address: 'localhost:{}'}}]
",
        up.addr.port()
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    // Resolution may finish just after start; give it a short, bounded while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = client.get(addr, "/", &[]).await;
        if r.status == 200 {
            assert_eq!(r.text(), "named\n");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "DNS cluster never served: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up.requests() >= 1);
}
