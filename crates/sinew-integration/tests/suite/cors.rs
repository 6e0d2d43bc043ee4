//! Browser-origin filters and `X-Forwarded-For`, through the real binary with curl: CORS
//! preflights (allowed, from another origin, a route's override) and actual requests
//! (origin, credentials, exposed headers); CSRF's 403 and its additional origins and
//! per-route override; and the original client with 0, 1 and 2 trusted hops as the
//! upstream (`X-Forwarded-For`), authorization (RBAC `remote_ip`) and the access log see
//! it. Each in Sinew's YAML and in an Envoy bootstrap written for the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::{
    eventually, free_port, scratch_dir, shell, sinew_binary, wait_for_lines, ChildGuard, Upstream,
};

/// A response as curl printed it.
struct Curled {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Curled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_cors_headers(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.to_ascii_lowercase().starts_with("access-control-"))
    }

    /// Whether the upstream answered (its responses carry `x-upstream`).
    fn came_from_upstream(&self) -> bool {
        self.header("x-upstream").is_some()
    }
}

/// `curl -i` with `method`, `headers`, on `http://addr{path}`.
async fn curl(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Curled {
    let mut command = format!("curl -s -i --max-time 5 -X {method}");
    for (k, v) in headers {
        command.push_str(&format!(" -H '{k}: {v}'"));
    }
    command.push_str(&format!(" 'http://{addr}{path}'"));
    let out = shell(command.clone()).await;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response to {command}: {out:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    Curled {
        status,
        headers,
        body: body.to_string(),
    }
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir("cors").join(name)
}

/// Runs `sinew proxy -c` on `text` (written to `name`) and waits for `listeners`.
async fn start(name: &str, text: &str, listeners: &[SocketAddr]) -> ChildGuard {
    let file = scratch(name);
    std::fs::write(&file, text).unwrap();
    let check = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("sinew validate");
    assert!(
        check.status.success(),
        "{name} refused:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew proxy"),
    );
    for addr in listeners {
        let addr = *addr;
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok())
            .await,
            "nothing listens on {addr}"
        );
    }
    child
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

const APP: &str = "https://app.example";
const PARTNER: &str = "https://shop.partner.example";

fn preflight<'a>(origin: &'a str, method: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", "x-token"),
    ]
}

/// What both spellings of the CORS config must do, on a listener whose virtual host
/// allows `APP` with credentials, and whose route `/partner` allows `*.partner.example`
/// (methods reflected, no credentials).
async fn check_cors(web: SocketAddr) {
    // A preflight from an allowed origin: answered by the proxy.
    let r = curl("OPTIONS", web, "/api", &preflight(APP, "PUT")).await;
    assert_eq!(r.status, 200);
    assert!(!r.came_from_upstream(), "the proxy answers a preflight");
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET,PUT"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));

    // From another origin: no CORS header; it goes on upstream (Envoy's default).
    let r = curl(
        "OPTIONS",
        web,
        "/api",
        &preflight("https://evil.example", "PUT"),
    )
    .await;
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    assert!(r.came_from_upstream(), "{:?}", r.headers);

    // An actual request: the origin itself (never `*` with credentials) and the rest.
    let r = curl("GET", web, "/api", &[("origin", APP)]).await;
    assert_eq!(r.status, 200);
    assert!(r.came_from_upstream());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-trace"));
    let r = curl("GET", web, "/api", &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 200);
    assert!(!r.has_cors_headers(), "{:?}", r.headers);
    let r = curl("GET", web, "/api", &[]).await;
    assert!(!r.has_cors_headers(), "{:?}", r.headers);

    // The route's override: its origins, requested method reflected, no credentials;
    // the host's headers and max age.
    let r = curl("OPTIONS", web, "/partner/x", &preflight(PARTNER, "PATCH")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(PARTNER));
    assert_eq!(r.header("access-control-allow-methods"), Some("PATCH"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    let r = curl("OPTIONS", web, "/partner/x", &preflight(APP, "GET")).await;
    assert!(
        !r.has_cors_headers(),
        "the host's origin is not the route's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_in_sinew_yaml_answers_preflights_and_marks_actual_requests() {
    let app = Upstream::start("app").await;
    let web = loopback();
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: {web}
    http:
      virtual_hosts:
        - name: app
          domains: ['*']
          cors:
            allow_origin: [{{exact: '{APP}'}}]
            allow_methods: [GET, PUT]
            allow_headers: [x-token]
            expose_headers: [x-trace]
            max_age: 600
            allow_credentials: true
          routes:
            - match: {{prefix: /partner}}
              cluster: app
              cors:
                allow_origin: [{{suffix: .partner.example}}]
                allow_methods: ['*']
                allow_credentials: false
            - match: {{prefix: /}}
              cluster: app
clusters:
  - name: app
    endpoints: [{{address: {up}}}]
"#,
        up = app.addr,
    );
    let _proxy = start("cors.yaml", &yaml, &[web]).await;
    check_cors(web).await;
}

/// An Envoy listener `name` on `addr`: a connection manager with `filters` (YAML items,
/// the router appended) and `routes` (its `route_config`), both indented for it.
fn envoy_listener(
    name: &str,
    addr: SocketAddr,
    extra: &str,
    routes: &str,
    filters: &str,
) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{extra}          route_config:
{routes}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        port = addr.port(),
    )
}

fn envoy_bootstrap(listeners: &[String], upstream: SocketAddr) -> String {
    format!(
        "static_resources:\n  listeners:{}\n  clusters:\n  - name: app\n    type: STATIC\n    load_assignment:\n      cluster_name: app\n      \
         endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]\n",
        listeners.concat(),
        upstream.port()
    )
}

const CORS_FILTER: &str = r#"          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
"#;

/// The same policies as the YAML test's, in `typed_per_filter_config`.
fn typed_cors_routes() -> String {
    format!(
        r#"            virtual_hosts:
            - name: app
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{{ exact: "{APP}" }}]
                  allow_methods: "GET,PUT"
                  allow_headers: "x-token"
                  expose_headers: "x-trace"
                  max_age: "600"
                  allow_credentials: true
                  filter_enabled:
                    default_value: {{ numerator: 100, denominator: HUNDRED }}
                    runtime_key: cors.www.enabled
              routes:
              - match: {{ prefix: "/partner" }}
                route: {{ cluster: app }}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_origin_string_match: [{{ suffix: ".partner.example" }}]
                    allow_methods: "*"
                    allow_credentials: false
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_in_an_envoy_bootstrap_applies_only_with_the_filter_in_the_chain() {
    let app = Upstream::start("app").await;
    let (web, bare, old) = (loopback(), loopback(), loopback());
    // The deprecated `cors` field of a virtual host, read when no typed policy applies.
    let deprecated = r#"            virtual_hosts:
            - name: app
              domains: ["*"]
              cors:
                allow_origin_string_match: [{ prefix: "https://app." }]
                allow_methods: "GET"
                filter_enabled:
                  default_value: { numerator: 100, denominator: HUNDRED }
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
"#
    .to_string();
    let listeners = [
        envoy_listener("web", web, "", &typed_cors_routes(), CORS_FILTER),
        envoy_listener("bare", bare, "", &typed_cors_routes(), ""),
        envoy_listener("old", old, "", &deprecated, CORS_FILTER),
    ];
    let text = envoy_bootstrap(&listeners, app.addr);
    let _proxy = start("cors-envoy.yaml", &text, &[web, bare, old]).await;
    check_cors(web).await;

    // Without the filter in the chain the policies do nothing, as in Envoy.
    let r = curl("OPTIONS", bare, "/api", &preflight(APP, "PUT")).await;
    assert!(
        r.came_from_upstream() && !r.has_cors_headers(),
        "{:?}",
        r.headers
    );
    let r = curl("GET", bare, "/api", &[("origin", APP)]).await;
    assert!(!r.has_cors_headers(), "{:?}", r.headers);

    let r = curl("OPTIONS", old, "/api", &preflight(APP, "GET")).await;
    assert!(!r.came_from_upstream());
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
}

/// What both spellings of the CSRF config must do: the listener's policy with
/// `trusted.example` as an additional origin, off on route `/public`.
async fn check_csrf(web: SocketAddr) {
    let own = format!("http://{web}");
    let r = curl("POST", web, "/form", &[("origin", &own)]).await;
    assert_eq!(r.status, 200, "same origin");
    let r = curl("POST", web, "/form", &[("origin", "https://evil.example")]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "Invalid origin"));
    assert!(!r.came_from_upstream());
    let r = curl(
        "DELETE",
        web,
        "/form",
        &[("referer", "https://evil.example/page")],
    )
    .await;
    assert_eq!(r.status, 403, "Referer stands in for Origin");
    let r = curl("PUT", web, "/form", &[]).await;
    assert_eq!(r.status, 403, "no source origin at all");
    let r = curl(
        "POST",
        web,
        "/form",
        &[("origin", "https://trusted.example")],
    )
    .await;
    assert_eq!(r.status, 200, "an additional origin");
    let r = curl("GET", web, "/form", &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 200, "GET changes nothing");
    let r = curl(
        "POST",
        web,
        "/public/x",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 200, "the route's override turns it off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_in_sinew_yaml_refuses_other_origins_but_additional_ones() {
    let app = Upstream::start("app").await;
    let web = loopback();
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: {web}
    http:
      csrf:
        additional_origins: [{{exact: trusted.example}}]
      virtual_hosts:
        - name: app
          domains: ['*']
          routes:
            - match: {{prefix: /public}}
              cluster: app
              csrf: {{filter_enabled: 0}}
            - match: {{prefix: /}}
              cluster: app
clusters:
  - name: app
    endpoints: [{{address: {up}}}]
"#,
        up = app.addr,
    );
    let _proxy = start("csrf.yaml", &yaml, &[web]).await;
    check_csrf(web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_in_an_envoy_bootstrap_refuses_other_origins_with_a_per_route_override() {
    let app = Upstream::start("app").await;
    let web = loopback();
    let routes = r#"            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: { prefix: "/public" }
                route: { cluster: app }
                typed_per_filter_config:
                  envoy.filters.http.csrf:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
                    filter_enabled: { default_value: { numerator: 0, denominator: HUNDRED } }
                    shadow_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
              - match: { prefix: "/" }
                route: { cluster: app }
"#;
    let filter = r#"          - name: envoy.filters.http.csrf
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
              filter_enabled:
                default_value: { numerator: 100, denominator: HUNDRED }
                runtime_key: csrf.enabled
              additional_origins: [{ exact: trusted.example }]
"#;
    let text = envoy_bootstrap(&[envoy_listener("web", web, "", routes, filter)], app.addr);
    let _proxy = start("csrf-envoy.yaml", &text, &[web]).await;
    check_csrf(web).await;
}

/// The `X-Forwarded-For` every XFF request carries: a client, then two proxies.
const XFF: &str = "198.51.100.1, 203.0.113.10, 203.0.113.1";

/// The upstream's echo of `x-forwarded-for` for a request with [`XFF`].
async fn upstream_xff(addr: SocketAddr) -> Option<String> {
    let r = curl(
        "GET",
        addr,
        "/",
        &[("x-forwarded-for", XFF), ("x-test-echo", "1")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_in_an_envoy_bootstrap_names_the_client_by_trusted_hops() {
    let app = Upstream::start("app").await;
    let routes = r#"            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
"#;
    // Each listener lets in only the client it should find: RBAC's `remote_ip` is
    // Envoy's trusted client address.
    let only = |ip: &str| {
        format!(
            r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  client:
                    permissions: [{{ any: true }}]
                    principals: [{{ remote_ip: {{ address_prefix: {ip}, prefix_len: 32 }} }}]
"#
        )
    };
    let cases = [
        // (use_remote_address, xff_num_trusted_hops, client, XFF upstream)
        ("true", 0, "127.0.0.1", format!("{XFF}, 127.0.0.1")),
        ("true", 1, "203.0.113.1", format!("{XFF}, 127.0.0.1")),
        ("true", 2, "203.0.113.10", format!("{XFF}, 127.0.0.1")),
        ("false", 0, "203.0.113.1", XFF.to_string()),
        ("false", 1, "203.0.113.10", XFF.to_string()),
    ];
    let addrs: Vec<SocketAddr> = cases.iter().map(|_| loopback()).collect();
    let listeners: Vec<String> = cases
        .iter()
        .zip(&addrs)
        .enumerate()
        .map(|(i, ((remote, hops, client, _), addr))| {
            let extra = format!(
                "          use_remote_address: {remote}\n          xff_num_trusted_hops: {hops}\n"
            );
            envoy_listener(&format!("l{i}"), *addr, &extra, routes, &only(client))
        })
        .collect();
    let text = envoy_bootstrap(&listeners, app.addr);
    let _proxy = start("xff-envoy.yaml", &text, &addrs).await;
    for ((remote, hops, client, upstream), addr) in cases.iter().zip(&addrs) {
        let seen = upstream_xff(*addr).await;
        assert_eq!(
            seen.as_deref(),
            Some(upstream.as_str()),
            "use_remote_address {remote}, {hops} hops: XFF upstream"
        );
        // The same listener refuses a request whose XFF names another client.
        let other = curl(
            "GET",
            *addr,
            "/",
            &[("x-forwarded-for", "192.0.2.99, 192.0.2.98")],
        )
        .await;
        let expected = if *client == "127.0.0.1" { 200 } else { 403 };
        assert_eq!(
            other.status, expected,
            "use_remote_address {remote}, {hops} hops: client {client}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_in_sinew_yaml_logs_and_authorizes_the_client_two_hops_back() {
    let app = Upstream::start("app").await;
    let web = loopback();
    let dir = scratch_dir("cors-xff");
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let yaml = format!(
        r#"
listeners:
  - name: web
    address: {web}
    authorization:
      policies:
        - name: claimed
          action: DENY
          rules:
            - from: [{{source: {{remote_ip_blocks: [198.51.100.0/24]}}}}]
    http:
      use_remote_address: true
      xff_num_trusted_hops: 2
      access_log:
        - path: {log}
          format: "%DOWNSTREAM_REMOTE_ADDRESS% %RESPONSE_CODE%\n"
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
clusters:
  - name: app
    endpoints: [{{address: {up}}}]
"#,
        log = log.display(),
        up = app.addr,
    );
    let _proxy = start("xff.yaml", &yaml, &[web]).await;
    assert_eq!(
        upstream_xff(web).await.as_deref(),
        Some(format!("{XFF}, 127.0.0.1").as_str())
    );
    // Two hops back from the right is 203.0.113.10; 198.51.100.1 is only claimed.
    let denied = curl(
        "GET",
        web,
        "/",
        &[("x-forwarded-for", "198.51.100.7, 10.0.0.1")],
    )
    .await;
    assert_eq!(denied.status, 403);
    let lines = wait_for_lines(Path::new(&log), 2).await;
    assert_eq!(lines[0], "203.0.113.10:0 200", "{lines:?}");
    assert_eq!(lines[1], "198.51.100.7:0 403", "{lines:?}");
}
