//! `sinew proxy -c envoy.yaml`: the Envoy bootstraps in examples/envoy/, run by the real
//! binary against real upstreams — static listeners and clusters, weighted clusters,
//! retries, local rate limits, a JSON file, reload, `sinew validate`, and `dynamic_resources` over ADS
//! from `sinew control`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::{
    closed_port_addr, eventually, free_port, scratch_dir, sinew_binary, start_control, tally,
    ChildGuard, TestClient, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/envoy")
        .join(name);
    std::fs::read_to_string(path).expect("the example")
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir("envoy-bootstrap").join(name)
}

fn start(config: &Path) -> ChildGuard {
    sinew_integration::start_proxy_file(config)
}

async fn wait_for_port(addr: SocketAddr) {
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok())
        .await,
        "nothing listens on {addr}"
    );
}

fn port_value(text: &str, from: u16, to: u16) -> String {
    text.replace(&format!("port_value: {from}"), &format!("port_value: {to}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_proxy_example_splits_retries_and_reloads() {
    let service1 = Upstream::start("service1").await;
    let service2 = Upstream::start("service2").await;
    let dead = closed_port_addr();
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut text = example("front-proxy.yaml");
    for (from, to) in [
        (18100, listener.port()),
        (19901, admin.port()),
        (19001, service1.addr.port()),
        (19002, service2.addr.port()),
        (19003, dead.port()),
    ] {
        text = port_value(&text, from, to);
    }
    let file = scratch("front-proxy.yaml");
    std::fs::write(&file, &text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    let client = TestClient::http1();

    let reply = client.get(listener, "/service/2/x", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream"), Some("service2"));

    // service1 has a dead endpoint: round robin sends every other first try there, and
    // the route's retry policy (connect-failure) takes each to the live one. Two at a
    // time stay under the cluster's default limit of three retries in flight (with
    // more, the overflow is answered 503, as in Envoy).
    let t = tally(&client, listener, "/", &[], 400, 2, Duration::from_secs(30)).await;
    assert_eq!((t.errors, t.non_2xx), (0, 0), "{:?}", t.first_errors);
    let share = t.count("service1") as f64 / 400.0;
    assert!(
        (0.65..=0.92).contains(&share),
        "service1 got {share:.2} of the traffic, weighted 80%: {t:?}"
    );
    assert!(t.count("service2") > 0, "{t:?}");

    let ready = client.get(admin, "/ready", &[]).await;
    assert_eq!(ready.status, 200, "the bootstrap's admin listener");

    // The file is watched like a Sinew config: /service/2 now goes to service1.
    std::fs::write(
        &file,
        text.replace(
            "route: { cluster: service2, timeout: 5s }",
            "route: { cluster: service1, timeout: 5s }",
        ),
    )
    .unwrap();
    let mut moved = false;
    for _ in 0..100 {
        let reply = client.get(listener, "/service/2/x", &[]).await;
        if reply.header("x-upstream") == Some("service1") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "the reloaded route never took effect");

    // A broken bootstrap is refused and the running one keeps serving.
    std::fs::write(
        &file,
        text.replace("lb_policy: ROUND_ROBIN", "lb_policy: NOPE"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // (That route has no retries, so half its requests meet service1's dead endpoint.)
    let t = tally(
        &client,
        listener,
        "/service/2/x",
        &[],
        20,
        1,
        Duration::from_secs(10),
    )
    .await;
    assert!(t.count("service1") > 0 && t.count("service2") == 0, "{t:?}");
}

/// The local rate limit example on free ports, sending to `service1`; returns its text
/// and its listener's address.
fn local_ratelimit_example(service1: &Upstream) -> (String, SocketAddr) {
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut text = example("local-ratelimit.yaml");
    for (from, to) in [
        (18200, listener.port()),
        (19911, admin.port()),
        (19001, service1.addr.port()),
    ] {
        text = port_value(&text, from, to);
    }
    (text, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_ratelimit_example_limits_per_route_in_place_of_the_filter_chain() {
    let service1 = Upstream::start("service1").await;
    let (text, listener) = local_ratelimit_example(&service1);
    let file = scratch("local-ratelimit.yaml");
    std::fs::write(&file, &text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    let client = TestClient::http1();

    // The buckets refill once a minute, so the counts are exact.
    let mut api = Vec::new();
    for _ in 0..4 {
        api.push(client.get(listener, "/api/x", &[]).await.status.as_u16());
    }
    assert_eq!(api, [200, 200, 429, 429], "/api has its own bucket of 2");
    // /api took nothing from the filter chain's bucket of 5: its config replaced it.
    let mut rest = Vec::new();
    for _ in 0..6 {
        rest.push(client.get(listener, "/", &[]).await);
    }
    let statuses: Vec<u16> = rest.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    assert_eq!(rest[0].header("x-ratelimit-limit"), Some("5"));
    assert_eq!(rest[0].header("x-ratelimit-remaining"), Some("4"));
    assert_eq!(rest[5].header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_local_ratelimit_configs_limit_nothing_without_the_filter() {
    let service1 = Upstream::start("service1").await;
    let (mut text, listener) = local_ratelimit_example(&service1);
    // Envoy applies typed_per_filter_config only through the filter it configures: with
    // the router alone in the chain, /api's bucket of 2 limits nothing.
    let filter_start = text
        .find("          - name: envoy.filters.http.local_ratelimit")
        .expect("the example's filter");
    let router = text
        .find("          - name: envoy.filters.http.router")
        .expect("the example's router");
    text.replace_range(filter_start..router, "");
    let file = scratch("local-ratelimit-without-filter.yaml");
    std::fs::write(&file, &text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    let client = TestClient::http1();
    let mut api = Vec::new();
    for _ in 0..4 {
        api.push(client.get(listener, "/api/x", &[]).await.status.as_u16());
    }
    assert_eq!(api, [200; 4], "no local_ratelimit filter, no limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bootstrap_runs_a_tcp_proxy() {
    let service3 = Upstream::start("service3").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let text = example("tcp-proxy.json")
        .replace(
            "\"port_value\": 18101",
            &format!("\"port_value\": {}", listener.port()),
        )
        .replace(
            "\"port_value\": 19003",
            &format!("\"port_value\": {}", service3.addr.port()),
        );
    let file = scratch("tcp-proxy.json");
    std::fs::write(&file, text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    let mut stream = tokio::net::TcpStream::connect(listener).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("x-upstream: service3"), "{answer}");
}

#[test]
fn validate_names_the_file_line_and_field_of_a_bootstrap_error() {
    let text = example("front-proxy.yaml").replace("num_retries: 2", "num_retries: two");
    let line = text
        .lines()
        .position(|l| l.contains("num_retries"))
        .unwrap()
        + 1;
    let file = scratch("bad.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:{line}:", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("num_retries"), "{stderr}");

    std::fs::write(&file, example("front-proxy.yaml")).unwrap();
    let out = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_bootstrap_is_steered_by_sinew_control() {
    let web = Upstream::start("web").await;
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let control_file = scratch("control.yaml");
    let dir = control_file.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(dir.join("services")).unwrap();
    std::fs::write(
        dir.join("services/web.yaml"),
        format!(
            "kind: Service\nname: web\nendpoints: [{{address: '{}'}}]\n",
            web.addr
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("services/edge.yaml"),
        format!(
            "kind: Listener\nname: edge\naddress: '{edge}'\nnodes: [edge-1]\nroutes:\n  - {{prefix: /, service: web}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        &control_file,
        format!("xds_address: {xds}\nregistries:\n  - directory: services\n"),
    )
    .unwrap();
    let _control = start_control(&control_file);

    let admin = free_port();
    let text = port_value(
        &port_value(&example("ads.yaml"), 18000, xds.port()),
        19902,
        admin,
    );
    let bootstrap = dir.join("ads.yaml");
    std::fs::write(&bootstrap, text).unwrap();
    let _proxy = start(&bootstrap);
    // The listener comes from the control plane, for node edge-1 (the bootstrap's node).
    wait_for_port(edge).await;
    let client = TestClient::http1();
    let mut answered = false;
    for _ in 0..100 {
        if let Ok(reply) = client.try_get(edge, "/", &[]).await {
            if reply.header("x-upstream") == Some("web") {
                answered = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered,
        "traffic never reached web through the xDS listener"
    );
}

/// A connection manager's inline routes: everything to the cluster `app`.
const ROUTES_TO_APP: &str = r#"          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app }
"#;

/// `static_resources.clusters` with the one static cluster `app` at `upstream`.
fn app_cluster(upstream: SocketAddr) -> String {
    format!(
        "  clusters:\n  - name: app\n    type: STATIC\n    load_assignment:\n      cluster_name: app\n      \
         endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]\n",
        upstream.port()
    )
}

/// An Envoy HTTP listener on `listener` routing everything to `upstream`, with the RBAC
/// filter Istio would generate for "GET /public/* from anyone, and nothing with an
/// `x-evil` header".
fn rbac_bootstrap(listener: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          normalize_path: true
          merge_slashes: true
{ROUTES_TO_APP}          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  no-evil:
                    permissions: [{{ header: {{ name: x-evil, present_match: true }} }}]
                    principals: [{{ any: true }}]
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  public-reads:
                    permissions:
                    - and_rules:
                        rules:
                        - header: {{ name: ":method", string_match: {{ exact: GET }} }}
                        - url_path: {{ path: {{ prefix: /public/ }} }}
                    principals:
                    - direct_remote_ip: {{ address_prefix: 127.0.0.0, prefix_len: 8 }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{cluster}"#,
        lport = listener.port(),
        cluster = app_cluster(upstream),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_filter_in_a_bootstrap_allows_one_path_and_denies_another() {
    let app = Upstream::start("app").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = scratch("rbac.yaml");
    std::fs::write(&file, rbac_bootstrap(listener, app.addr)).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    let client = TestClient::http1();

    let allowed = client.get(listener, "/public/page", &[]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(allowed.header("x-upstream"), Some("app"));
    let denied = client.get(listener, "/private/page", &[]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), "RBAC: access denied");
    // The DENY filter wins over the ALLOW one, as a request must pass both in Envoy.
    let evil = client
        .get(listener, "/public/page", &[("x-evil", "1")])
        .await;
    assert_eq!(evil.status, 403);
    // And from an outside client: a POST to the public path is not a GET.
    let out = sinew_integration::shell(format!(
        "curl -s -o /dev/null -w '%{{http_code}} ' http://{listener}/public/page; \
         curl -s -o /dev/null -w '%{{http_code}} ' -X POST http://{listener}/public/page; \
         curl -s -o /dev/null -w '%{{http_code}} ' --path-as-is 'http://{listener}/public/../private/x'; \
         curl -s -o /dev/null -w '%{{http_code}}' --path-as-is 'http://{listener}//public//page'"
    ))
    .await;
    assert_eq!(
        out, "200 403 403 200",
        "curl: GET, POST, a dot-dot escape (normalize_path), and doubled slashes (merge_slashes)"
    );
}

/// A TLS transport socket whose certificate is the static secret `secret`.
fn tls_chain(matched: &str, secret: &str) -> String {
    format!(
        r#"
    - filter_chain_match: {matched}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs: [{{ name: {secret} }}]
      filters: *filters"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_chains_by_server_name_serve_their_certificates_and_a_raw_buffer_chain_serves_plaintext(
) {
    use sinew_integration::tls_kit::{CertFiles, TestCa};
    let ca = TestCa::new("envoy-sni");
    // The chains' server names are not the certificates' names: the chain decides.
    let alpha = ca.issue("alpha", &["alpha.internal"]);
    let beta = ca.issue("beta", &["beta.internal"]);
    let fallback = ca.issue("fallback", &["fallback.internal"]);
    let app = Upstream::start("app").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let secret = |name: &str, c: &CertFiles| {
        format!(
            "  - name: {name}\n    tls_certificate:\n      certificate_chain: {{ filename: '{}' }}\n      private_key: {{ filename: '{}' }}\n",
            c.cert_path(),
            c.key_path()
        )
    };
    let text = format!(
        r#"
static_resources:
  listeners:
  - name: gw
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ transport_protocol: raw_buffer }}
      filters: &filters
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gw
{ROUTES_TO_APP}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{a}{b}{d}
{cluster}  secrets:
{s1}{s2}{s3}"#,
        lport = listener.port(),
        cluster = app_cluster(app.addr),
        a = tls_chain("{ server_names: [a.example] }", "alpha"),
        b = tls_chain("{ server_names: [b.example, '*.b.example'] }", "beta"),
        d = tls_chain("{ transport_protocol: tls }", "fallback"),
        s1 = secret("alpha", &alpha),
        s2 = secret("beta", &beta),
        s3 = secret("fallback", &fallback),
    );
    let file = scratch("server-names.yaml");
    std::fs::write(&file, &text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;

    for (sni, cn) in [
        ("a.example", "CN=alpha.internal"),
        ("b.example", "CN=beta.internal"),
        ("x.b.example", "CN=beta.internal"),
        ("alpha.internal", "CN=fallback.internal"),
        ("other.example", "CN=fallback.internal"),
    ] {
        let out = sinew_integration::shell(format!(
            "(sleep 0.3) | timeout 10 openssl s_client -connect {listener} -servername {sni} -CAfile '{}' 2>&1",
            ca.ca_path()
        ))
        .await;
        let served = out
            .lines()
            .find_map(|l| l.strip_prefix("subject="))
            .map(|s| s.trim().replace(" = ", "="))
            .unwrap_or_else(|| format!("no certificate in: {out}"));
        assert_eq!(served, cn, "SNI {sni}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // TLS and plaintext on one port (the raw_buffer chain): HTTPS with SNI (-k: the
    // chain, not the certificate, names a.example) and plain HTTP both reach the app.
    let out = sinew_integration::shell(format!(
        "curl -s -k -o /dev/null -w '%{{http_code}} ' --resolve a.example:{port}:127.0.0.1 https://a.example:{port}/; \
         curl -s -o /dev/null -w '%{{http_code}}' http://{listener}/",
        port = listener.port(),
    ))
    .await;
    assert_eq!(
        out, "200 200",
        "HTTPS through the a.example chain, then plaintext"
    );
}

/// Envoy's access loggers in a bootstrap, in the spellings real files use: a file
/// logger with a `log_format` text source behind a status filter (`and_filter` with
/// `not_health_check_filter`), a stdout logger with a JSON format, the file logger's
/// deprecated plain `format`, and a stderr logger on a TCP proxy with Envoy's default
/// format. Each writes what its filter passes, where it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstraps_file_stdout_and_stderr_access_logs_write_what_their_filters_pass() {
    let app = Upstream::start("app").await;
    let echo = sinew_integration::echo_server().await;
    let (web, tcp) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let dir = scratch_dir("envoy-access-log");
    let (errors_log, every_log) = (dir.join("errors.log"), dir.join("every.log"));
    let file = dir.join("access-log.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {web_port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          access_log:
          - name: envoy.access_loggers.file
            filter:
              and_filter:
                filters:
                - not_health_check_filter: {{}}
                - status_code_filter: {{ comparison: {{ op: GE, value: {{ default_value: 400, runtime_key: errors }} }} }}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {errors}
              log_format:
                text_format_source:
                  inline_string: "error %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n"
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {every}
              format: "every %REQ(:PATH)% %RESPONSE_CODE%\n"
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                json_format: {{ method: "%REQ(:METHOD)%", path: "%REQ(:PATH)%", code: "%RESPONSE_CODE%" }}
{ROUTES_TO_APP}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {tcp_port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
          access_log:
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
{cluster}  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {echo_port} }} }} }} }}] }}]
"#,
            web_port = web.port(),
            tcp_port = tcp.port(),
            echo_port = echo.port(),
            errors = errors_log.display(),
            every = every_log.display(),
            cluster = app_cluster(app.addr),
        ),
    )
    .unwrap();
    let check = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (stdout_file, stderr_file) = (dir.join("stdout"), dir.join("stderr"));
    let _proxy = ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&stdout_file).unwrap())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(web).await;
    wait_for_port(tcp).await;
    let client = TestClient::http1();
    assert_eq!(client.get(web, "/fine", &[]).await.status, 200);
    let missing = client
        .get(web, "/missing", &[("x-test-status", "404")])
        .await;
    assert_eq!(missing.status, 404);
    let mut stream = tokio::net::TcpStream::connect(tcp).await.unwrap();
    stream.write_all(b"ping\n").await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    drop(stream);

    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let written = eventually(Duration::from_secs(5), || {
        read(&every_log).lines().count() == 2
            && read(&stdout_file).lines().count() == 2
            && read(&stderr_file).contains("127.0.0.1")
    })
    .await;
    assert!(
        written,
        "every: {:?}\nstdout: {:?}\nstderr: {:?}",
        read(&every_log),
        read(&stdout_file),
        read(&stderr_file)
    );
    assert_eq!(read(&errors_log), "error GET /missing 404\n");
    assert_eq!(read(&every_log), "every /fine 200\nevery /missing 404\n");
    let json: Vec<serde_json::Value> = read(&stdout_file)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(json[0]["path"], "/fine");
    assert_eq!(json[1]["code"], 404);
    // Envoy's default format, for the TCP connection: the upstream host it went to.
    assert!(
        read(&stderr_file).contains(&format!("\"{echo}\"")),
        "{}",
        read(&stderr_file)
    );
}

/// A static cluster `name` with one endpoint at `addr`, in Envoy's spelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstraps_grpc_route_match_and_request_mirror_policies_route_and_copy() {
    let grpc = Upstream::start("grpc").await;
    let web = Upstream::start("web").await;
    let shadow = Upstream::start("shadow").await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = scratch("grpc-and-mirror.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: /, grpc: {{}} }}
                route: {{ cluster: grpc }}
              - match: {{ prefix: / }}
                route:
                  cluster: web
                  request_mirror_policies:
                  - cluster: shadow
                    runtime_fraction: {{ default_value: {{ numerator: 100 }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{grpc}{web}{shadow}"#,
            port = listen.port(),
            grpc = sinew_integration::envoy_static_cluster("grpc", grpc.addr),
            web = sinew_integration::envoy_static_cluster("web", web.addr),
            shadow = sinew_integration::envoy_static_cluster("shadow", shadow.addr),
        ),
    )
    .unwrap();
    let _proxy = start(&file);
    wait_for_port(listen).await;
    let client = TestClient::http1();
    let who =
        |reply: &sinew_integration::Reply| reply.header("x-upstream").unwrap_or("-").to_string();
    for (content_type, expected) in [
        ("application/grpc", "grpc"),
        ("application/grpc+proto", "grpc"),
        ("application/grpc-web", "web"),
        ("text/plain", "web"),
    ] {
        let reply = client
            .get(listen, "/svc/Method", &[("content-type", content_type)])
            .await;
        assert_eq!(
            (reply.status.as_u16(), who(&reply)),
            (200, expected.to_string()),
            "{content_type}"
        );
    }
    // Each of the two requests the web route took was copied to the shadow (fire and
    // forget: the copies arrive on their own time).
    assert!(
        eventually(Duration::from_secs(5), || shadow.requests() == 2).await,
        "the shadow got {} copies",
        shadow.requests()
    );
    assert_eq!((grpc.requests(), web.requests()), (2, 2));
}

/// `text` as a YAML block scalar (`|`) whose lines are indented by `indent` spaces, as
/// Envoy's examples write PEM inline.
fn block_scalar(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let lines: String = text.lines().map(|l| format!("{pad}{l}\n")).collect();
    format!("|\n{lines}")
}

/// Starts `sinew proxy -c config` with its stderr (the log) in `log`.
fn start_logging(config: &Path, log: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("start sinew proxy"),
    )
}

/// An HTTP connection manager on `listener` routing `/<cluster>` prefixes to clusters of
/// that name, then `clusters` (each `- name: ...`, indented as list items under
/// `clusters:`).
fn routes_to_clusters(listener: SocketAddr, names: &[&str], clusters: &str) -> String {
    let routes: String = names
        .iter()
        .map(|n| format!("              - match: {{ prefix: \"/{n}\" }}\n                route: {{ cluster: {n} }}\n"))
        .collect();
    format!(
        r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        lport = listener.port(),
    )
}

/// A static cluster `name` at `upstream` whose transport socket is this
/// `UpstreamTlsContext` body (indented to sit under `typed_config`).
fn tls_cluster(name: &str, upstream: SocketAddr, context: &str) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{context}"#,
        port = upstream.port(),
    )
}

/// `openssl s_server -www` on a free port with `cert` (plus `extra` flags): it answers
/// any GET with a page saying which TLS version the handshake took ("Protocol  :
/// TLSv1.2").
async fn openssl_server(cert: &str, key: &str, extra: &str) -> (ChildGuard, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut args = vec!["s_server", "-www", "-quiet", "-cert", cert, "-key", key];
    args.extend(extra.split_whitespace());
    let accept = addr.to_string();
    args.extend(["-accept", &accept]);
    let child = ChildGuard(
        Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    wait_for_port(addr).await;
    (child, addr)
}

/// What curl gets for `path` through `listener`: the body and then the status.
async fn curl_through(listener: SocketAddr, path: &str) -> String {
    sinew_integration::shell(format!(
        "curl -s --max-time 10 -w ' %{{http_code}}' http://{listener}{path}"
    ))
    .await
}

/// A listener's certificate and key written into the bootstrap (`inline_string`, as
/// Envoy's front-proxy and tls examples do): curl, trusting only the CA, verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_serves_tls_from_an_inline_certificate_and_key_that_curl_verifies() {
    use sinew_integration::tls_kit::TestCa;
    let ca = TestCa::new("envoy-inline");
    let cert = ca.issue("proxy", &["proxy.test"]);
    let app = Upstream::start("app").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let read = |p: &str| std::fs::read_to_string(p).expect("PEM");
    let text = format!(
        r#"
static_resources:
  listeners:
  - name: https
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain:
                inline_string: {chain}              private_key:
                inline_string: {key}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: https
{ROUTES_TO_APP}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{cluster}"#,
        lport = listener.port(),
        chain = block_scalar(&read(cert.cert_path()), 18),
        key = block_scalar(&read(cert.key_path()), 18),
        cluster = app_cluster(app.addr),
    );
    let file = scratch("inline-listener.yaml");
    std::fs::write(&file, &text).unwrap();
    let log = scratch("inline-listener.log");
    let _proxy = start_logging(&file, &log);
    wait_for_port(listener).await;
    let port = listener.port();
    let out = sinew_integration::shell(format!(
        "curl -sS --max-time 10 --cacert '{ca}' --resolve proxy.test:{port}:127.0.0.1 -w ' %{{http_code}}' https://proxy.test:{port}/ 2>&1",
        ca = ca.ca_path(),
    ))
    .await;
    assert_eq!(
        out, "app\n 200",
        "curl --cacert verifies the inline certificate"
    );
    // A client trusting another CA is refused: the inline certificate is the one served.
    let other = TestCa::new("envoy-inline-other");
    let refused = sinew_integration::shell(format!(
        "curl -s --max-time 10 --cacert '{ca}' --resolve proxy.test:{port}:127.0.0.1 -o /dev/null -w '%{{http_code}}' https://proxy.test:{port}/; echo \" exit=$?\"",
        ca = other.ca_path(),
    ))
    .await;
    assert_eq!(
        refused.trim(),
        "000 exit=60",
        "curl exit 60: peer certificate not trusted"
    );
    let key_line = read(cert.key_path()).lines().nth(1).unwrap().to_string();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains(&key_line),
        "the key is never logged:\n{logged}"
    );
}

/// Upstream `tls_params`: a cluster capped at TLS 1.2 takes 1.2 from a server that would
/// speak 1.3 (which a cluster without `tls_params` gets), and a cluster asking for at
/// least 1.3 cannot reach a server that speaks only 1.2. The server is `openssl
/// s_server`, which reports the version it negotiated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_params_set_the_versions_a_cluster_offers() {
    use sinew_integration::tls_kit::TestCa;
    let ca = TestCa::new("envoy-tls-params");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let (_both, both) = openssl_server(cert.cert_path(), cert.key_path(), "").await;
    let (_only12, only12) = openssl_server(cert.cert_path(), cert.key_path(), "-tls1_2").await;
    let context = |params: &str| {
        format!(
            "        sni: upstream.test\n        common_tls_context:\n{params}          validation_context:\n            trusted_ca: {{ filename: '{}' }}\n",
            ca.ca_path()
        )
    };
    let max12 = "          tls_params: { tls_maximum_protocol_version: TLSv1_2 }\n";
    let min13 = "          tls_params: { tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }\n";
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let clusters = [
        tls_cluster("max12", both, &context(max12)),
        tls_cluster("unset", both, &context("")),
        tls_cluster("min13", only12, &context(min13)),
        tls_cluster("max12only", only12, &context(max12)),
    ]
    .concat();
    let text = routes_to_clusters(
        listener,
        &["max12only", "max12", "unset", "min13"],
        &clusters,
    );
    let file = scratch("tls-params.yaml");
    std::fs::write(&file, &text).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;

    let protocol = |page: &str| {
        page.lines()
            .find_map(|l| l.trim().strip_prefix("Protocol  : "))
            .map(str::to_string)
            .unwrap_or_else(|| format!("no protocol in: {page}"))
    };
    let page = curl_through(listener, "/max12").await;
    assert!(page.ends_with(" 200"), "{page}");
    assert_eq!(
        protocol(&page),
        "TLSv1.2",
        "capped at 1.2 against a 1.3 server"
    );
    let page = curl_through(listener, "/unset").await;
    assert_eq!(
        protocol(&page),
        "TLSv1.3",
        "without tls_params Sinew offers 1.3 too"
    );
    let page = curl_through(listener, "/max12only").await;
    assert_eq!(protocol(&page), "TLSv1.2", "{page}");
    let failed = curl_through(listener, "/min13").await;
    assert!(
        failed.ends_with(" 503"),
        "TLS 1.3 only cannot reach a TLS 1.2 server: {failed}"
    );
}

/// An `UpstreamTlsContext` without a `validation_context` verifies nothing, as in Envoy:
/// the cluster reaches an upstream whose certificate is self-signed (and names another
/// host), and a warning says so once when the cluster is loaded. The same upstream with
/// a `trusted_ca` that did not sign it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_without_validation_context_is_reached_unverified_and_a_wrong_ca_is_refused() {
    use sinew_integration::tls_kit::{CertFiles, TestCa, TlsUpstream};
    let dir = scratch_dir("envoy-unverified");
    let (cert, key) = (dir.join("self.pem"), dir.join("self.key"));
    let made = sinew_integration::shell(format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
         -subj /CN=self-signed.example -addext subjectAltName=DNS:self-signed.example \
         -keyout '{}' -out '{}' 2>/dev/null && echo made",
        key.display(),
        cert.display()
    ))
    .await;
    assert_eq!(made.trim(), "made");
    let self_signed = CertFiles::from_pem(&cert, &key);
    let up = TlsUpstream::start("secure", &self_signed, &["http/1.1"]).await;
    let other = TestCa::new("envoy-unverified-ca");
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let clusters = [
        // As Envoy's tls-sni example writes it: SNI, nothing else.
        tls_cluster("open", up.addr, "        sni: upstream.test\n"),
        tls_cluster(
            "checked",
            up.addr,
            &format!(
                "        sni: self-signed.example\n        common_tls_context:\n          validation_context:\n            trusted_ca: {{ filename: '{}' }}\n",
                other.ca_path()
            ),
        ),
    ]
    .concat();
    let text = routes_to_clusters(listener, &["open", "checked"], &clusters);
    let file = scratch("unverified.yaml");
    std::fs::write(&file, &text).unwrap();
    let log = scratch("unverified.log");
    let _proxy = start_logging(&file, &log);
    wait_for_port(listener).await;

    let reply = curl_through(listener, "/open").await;
    assert_eq!(reply, "secure HTTP/1.1 alpn=http/1.1 200", "{reply}");
    let refused = curl_through(listener, "/checked").await;
    assert!(
        refused.ends_with(" 503"),
        "a CA that did not sign it: {refused}"
    );
    assert_eq!(
        up.handshakes(),
        1,
        "only the unverified cluster completed a handshake"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("upstream certificates are not verified"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning, for the one cluster:\n{logged}"
    );
    assert!(warnings[0].contains("open"), "{}", warnings[0]);
}
