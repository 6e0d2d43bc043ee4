//! Runs every config in examples/ and checks that it does what it exists to show: a
//! redirect answers with its status and Location, a TLS listener completes a handshake
//! with the example CA and answers, a canary split splits, a limit limits. Each example
//! has its own test below; `every_example_has_a_check` fails when a file in examples/ has
//! none.
//!
//! An example runs as it is written except for its addresses: listeners and the admin API
//! bind port 0, and the upstreams it expects on 127.0.0.1:19001-19003 (or
//! `localhost:19001`) are the test's own on ephemeral ports, so these tests run in
//! parallel and beside anything else on the machine. The upstreams are the integration
//! kit's, named after the port the example gives them: an answer from "19002" came from
//! the endpoint the example calls 127.0.0.1:19002.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use sinew_integration::grpc_kit::{GrpcClient, GrpcServer, Msg};
use sinew_integration::otlp_kit::{Collector, Transport};
use sinew_integration::probe::{self, reached, set};
use sinew_integration::raw::{read_response, read_to_close};
use sinew_integration::tls_kit::{tls_get, CertFiles, TestCa, TlsUpstream};
use sinew_integration::{admin_kit, eventually, scratch_dir, tally};
use sinew_integration::{Reply, TestClient, TestProxy, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every example in examples/ that a test below runs and checks.
const CHECKED: &[&str] = &[
    "access-log.yaml",
    "admin-and-metrics.yaml",
    "basic-proxy.yaml",
    "connection-limits.yaml",
    "direct-response.yaml",
    "dns-cluster.yaml",
    "fault-and-mirror.yaml",
    "grpc.yaml",
    "header-and-query-routing.yaml",
    "header-manipulation.yaml",
    "health-checks.yaml",
    "http2-upstream.yaml",
    "ipv6-listener.yaml",
    "keepalive-and-drain.yaml",
    "load-balancers.yaml",
    "mesh-mtls.yaml",
    "path-and-host-rewrite.yaml",
    "rate-limits.yaml",
    "redirect.yaml",
    "regex-routing.yaml",
    "retries-and-timeouts.yaml",
    "shared-route-config.yaml",
    "subset-by-version.yaml",
    "tcp-proxy.yaml",
    "tls-termination.yaml",
    "tracing.yaml",
    "upstream-tls.yaml",
    "virtual-hosts.yaml",
    "weighted-canary.yaml",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_has_a_check() {
    let files: BTreeSet<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let checked: BTreeSet<String> = CHECKED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        files, checked,
        "examples/ and the checks in this file differ: give every example a test here"
    );
}

/// The three upstreams the examples expect, on ephemeral ports, named after the ports
/// the examples give them.
async fn upstreams() -> [Upstream; 3] {
    [
        Upstream::start("19001").await,
        Upstream::start("19002").await,
        Upstream::start("19003").await,
    ]
}

fn addrs(ups: &[Upstream; 3]) -> [SocketAddr; 3] {
    [ups[0].addr, ups[1].addr, ups[2].addr]
}

/// An example running in this process, and its config as loaded.
struct Example {
    proxy: TestProxy,
    config: sinew_config::Config,
}

impl Example {
    /// Starts `file` with its upstream ports 19001-19003 moved to `upstreams`, every other
    /// 18000-19999 port of 127.0.0.1, [::1] or localhost moved to 0, certificate paths
    /// made absolute, and each `(from, to)` of `replace` applied.
    async fn start(file: &str, upstreams: [SocketAddr; 3], replace: &[(&str, String)]) -> Example {
        assert!(CHECKED.contains(&file), "{file} is not in CHECKED");
        let text = std::fs::read_to_string(repo().join("examples").join(file))
            .unwrap_or_else(|e| panic!("examples/{file}: {e}"));
        let certs = repo().join("examples/certs/");
        let mut yaml =
            rebase(&text, upstreams).replace("examples/certs/", &certs.to_string_lossy());
        for (from, to) in replace {
            assert!(yaml.contains(from), "{file} no longer mentions {from}");
            yaml = yaml.replace(from, to);
        }
        let config = sinew_config::load_str(file, &yaml)
            .unwrap_or_else(|d| panic!("{d}"))
            .config;
        Example {
            proxy: TestProxy::start(&yaml).await,
            config,
        }
    }

    async fn addr(&self, listener: &str) -> SocketAddr {
        self.proxy.addr(listener).await
    }
}

/// The example's text with its addresses moved (see [`Example::start`]).
fn rebase(yaml: &str, upstreams: [SocketAddr; 3]) -> String {
    const HOSTS: [&str; 3] = ["127.0.0.1:", "[::1]:", "localhost:"];
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while !rest.is_empty() {
        let Some(host) = HOSTS.iter().find(|h| rest.starts_with(**h)) else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        out.push_str(host);
        rest = &rest[host.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<u16>() {
            Ok(p @ 19001..=19003) => {
                out.push_str(&upstreams[usize::from(p - 19001)].port().to_string())
            }
            Ok(18000..=19999) => out.push('0'),
            _ => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out
}

/// Which upstream answered: its `x-upstream` name, or `-` for an answer the proxy made.
fn from(reply: &Reply) -> &str {
    reply.header("x-upstream").unwrap_or("-")
}

/// The values of header `name` in an upstream's echo of a request (`x-test-echo: 1`).
fn echoed<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .collect()
}

/// The request line in an upstream's echo: `GET /path?query HTTP/1.1`.
fn request_line(echo: &str) -> &str {
    echo.lines().next().unwrap_or("")
}

/// A TLS client that trusts only the example CA (examples/certs/ca.crt).
fn trusting_the_example_ca(alpn: &[&str]) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca = repo().join("examples/certs/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).unwrap_or_else(|e| panic!("{ca:?}: {e}")))
        .expect("the example CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config
}

/// Writes `request` on a new connection to `addr` and reads one response (head, body).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_response(&mut s, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_errors_as_json_lines_and_leaves_successes_out() {
    let ups = upstreams().await;
    let log = scratch_dir("example-access-log").join("errors.log");
    let ex = Example::start(
        "access-log.yaml",
        addrs(&ups),
        &[(
            "/tmp/sinew-access-errors.log",
            log.to_string_lossy().into_owned(),
        )],
    )
    .await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let fine = client.get(web, "/fine", &[]).await;
    assert_eq!((fine.status, from(&fine)), (StatusCode::OK, "19001"));
    let gone = client.get(web, "/gone", &[("x-test-status", "404")]).await;
    assert_eq!(gone.status, 404);
    let logged = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(r#""path":"/gone""#))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged,
        "no JSON line for the 404 in {}: {text:?}",
        log.display()
    );
    // One writer, in order: had the 200 passed the filter, its line would be there first.
    assert_eq!(text.lines().count(), 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.trim()).expect("a JSON line");
    assert_eq!(line["status"], 404, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["upstream"], ups[0].addr.to_string(), "{line}");
    // The TCP listener carries bytes to the same upstream.
    let (head, body) = raw_exchange(
        ex.addr("tcp").await,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "19001\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_metrics_serves_readiness_metrics_and_cluster_state() {
    let ups = upstreams().await;
    let ex = Example::start("admin-and-metrics.yaml", addrs(&ups), &[]).await;
    let admin = ex
        .config
        .admin
        .as_ref()
        .expect("the example has an admin API");
    let address = admin.socket_address().expect("validated");
    let server = sinew_proxy::admin::AdminServer::start(ex.proxy.proxy.clone(), address, None)
        .await
        .unwrap_or_else(|e| panic!("admin on {address}: {e}"));
    let client = TestClient::http1();
    let reply = client.get(ex.addr("public").await, "/", &[]).await;
    assert_eq!((reply.status, from(&reply)), (StatusCode::OK, "19001"));
    let ready = client.get(server.address, "/ready", &[]).await;
    assert_eq!(
        (ready.status, ready.text().trim()),
        (StatusCode::OK, "LIVE")
    );
    let metrics = admin_kit::metrics(server.address).await;
    let counted = admin_kit::value(
        &metrics,
        "sinew_cluster_upstream_rq_total",
        &[("cluster", "app"), ("code_class", "2xx")],
    );
    assert_eq!(counted, 1.0, "the request above is counted");
    let clusters = client
        .get(server.address, "/clusters?format=text", &[])
        .await
        .text();
    assert!(
        clusters.contains(&format!("app::{}::", ups[0].addr)),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_proxy_alternates_between_its_two_upstreams() {
    let ups = upstreams().await;
    let ex = Example::start("basic-proxy.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let mut order = Vec::new();
    for _ in 0..4 {
        let r = client.get(web, "/hello", &[]).await;
        assert_eq!(r.status, 200);
        order.push(from(&r).to_string());
    }
    assert!(
        order[0] != order[1] && order[0] == order[2] && order[1] == order[3],
        "round robin alternates: {order:?}"
    );
    let both: BTreeSet<String> = order.into_iter().collect();
    assert_eq!(both, set(&["19001", "19002"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_large_bodies_large_heads_and_extra_connections() {
    let ups = upstreams().await;
    let ex = Example::start("connection-limits.yaml", addrs(&ups), &[]).await;
    let addr = ex.addr("limited").await;
    let (head, _) = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The body's length is declared over max_request_body_bytes (1 MiB): refused unread.
    let (head, _) = raw_exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A 20 KB header is over max_request_headers_kb (16).
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (head, _) = raw_exchange(addr, big.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // max_connections: 100 held open; the 101st is closed as it is accepted.
    let slot = ex.proxy.proxy.listener("limited").await.expect("listener");
    probe::wait_for(
        "the connections above closed",
        Duration::from_secs(5),
        || {
            let active = slot.active_connections();
            async move { active == 0 }
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    probe::wait_for("100 connections accepted", Duration::from_secs(5), || {
        let active = slot.active_connections();
        async move { active == 100 }
    })
    .await;
    let mut extra = TcpStream::connect(addr).await.expect("connect");
    let (closed, got) = read_to_close(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "the 101st connection got {got:?}");
    // The ones held still serve.
    held[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut held[0], Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_answers_from_the_proxy_with_its_status_body_and_type() {
    let ex = Example::start(
        "direct-response.yaml",
        [SocketAddr::from(([127, 0, 0, 1], 1)); 3],
        &[],
    )
    .await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let cases: [(&str, u16, &str, Option<&str>); 4] = [
        ("/healthz", 200, "ok\n", Some("text/plain")),
        (
            "/robots.txt",
            200,
            "User-agent: *\nDisallow: /\n",
            Some("text/plain; charset=utf-8"),
        ),
        ("/teapot", 418, "", None),
        (
            "/anything",
            404,
            r#"{"error": "not found"}"#,
            Some("application/json"),
        ),
    ];
    for (path, status, body, content_type) in cases {
        let r = client.get(web, path, &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.text(), body, "{path}");
        if content_type.is_some() {
            assert_eq!(r.header("content-type"), content_type, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_cluster_reaches_its_upstream_by_name() {
    let ups = upstreams().await;
    let ex = Example::start("dns-cluster.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    for _ in 0..4 {
        let r = client.get(web, "/", &[]).await;
        assert_eq!(
            (r.status, from(&r)),
            (StatusCode::OK, "19001"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_and_mirror_injects_aborts_and_delays_and_copies_orders_to_the_shadow() {
    let ups = upstreams().await;
    let ex = Example::start("fault-and-mirror.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();

    let aborted = client.get(web, "/orders", &[("x-chaos", "abort")]).await;
    assert_eq!(aborted.status, 503);
    assert!(
        aborted.text().contains("fault filter abort"),
        "{}",
        aborted.text()
    );
    assert_eq!(
        ups[0].requests(),
        0,
        "an aborted request never goes upstream"
    );

    let chosen = client
        .get(web, "/lab/", &[("x-envoy-fault-abort-request", "429")])
        .await;
    assert_eq!(chosen.status, 429);
    let started = Instant::now();
    let delayed = client
        .get(web, "/lab/", &[("x-envoy-fault-delay-request", "400")])
        .await;
    assert_eq!((delayed.status, from(&delayed)), (StatusCode::OK, "19001"));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    let order = client
        .send(
            Method::POST,
            web,
            "/orders",
            &[("content-type", "application/json")],
            Bytes::from_static(br#"{"id": 1}"#),
        )
        .await;
    assert_eq!((order.status, from(&order)), (StatusCode::OK, "19001"));
    let copied = eventually(Duration::from_secs(5), || ups[1].requests() == 1).await;
    assert!(copied, "the order was not copied to the shadow (19002)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_the_greeter_to_an_http2_cluster_and_refuses_other_services_in_grpc() {
    let server = GrpcServer::start().await;
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
    let ex = Example::start("grpc.yaml", [server.addr, nowhere, nowhere], &[]).await;
    let mut client = GrpcClient::connect(ex.addr("grpc").await).await;
    let reply = client
        .unary(
            "/helloworld.Greeter/Unary",
            tonic::Request::new(Msg::new("sinew", 0)),
        )
        .await
        .expect("the greeter answers through the proxy");
    assert_eq!(reply.into_inner().text, "echo: sinew");
    assert_eq!(server.requests(), 1);
    let refused = client
        .unary(
            "/unknown.Service/Method",
            tonic::Request::new(Msg::new("x", 0)),
        )
        .await
        .expect_err("no route");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    assert_eq!(
        server.requests(),
        1,
        "an unrouted call never reaches the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_routing_picks_each_route_by_its_conditions() {
    let ups = upstreams().await;
    let ex = Example::start("header-and-query-routing.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    /// Method, path, headers, the upstream that answers (or "-" for the proxy), status.
    type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str, u16);
    let cases: &[Case] = &[
        (Method::GET, "/", &[("x-beta", "1")], "19002", 200),
        (Method::GET, "/?beta=true", &[], "19002", 200),
        (Method::GET, "/?beta=yes", &[], "19001", 200),
        (Method::GET, "/", &[("user-agent", "probe/1.0")], "-", 204),
        (Method::DELETE, "/items/1", &[], "-", 403),
        (
            Method::DELETE,
            "/items/1",
            &[("x-admin-token", "t")],
            "19003",
            200,
        ),
        (
            Method::GET,
            "/",
            &[("x-client", "internal-billing")],
            "19003",
            200,
        ),
        (
            Method::GET,
            "/",
            &[("x-client", "internal-42")],
            "19001",
            200,
        ),
        (Method::GET, "/search?page=2", &[], "19003", 200),
        (Method::GET, "/search?page=two", &[], "19001", 200),
        (Method::GET, "/?debug=1", &[], "-", 400),
        (Method::GET, "/", &[], "19001", 200),
    ];
    for (method, path, headers, upstream, status) in cases {
        let r = client
            .send(method.clone(), web, path, headers, Bytes::new())
            .await;
        assert_eq!(
            (r.status.as_u16(), from(&r)),
            (*status, *upstream),
            "{method} {path} {headers:?}: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_manipulation_edits_headers_up_and_down_per_host_and_route() {
    let ups = upstreams().await;
    let ex = Example::start("header-manipulation.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let r = client
        .get(
            web,
            "/",
            &[
                ("x-test-echo", "1"),
                ("x-internal-debug", "1"),
                ("x-tenant", "spoofed"),
                ("x-test-response-header", "server: upstream/1.0"),
                ("x-test-response-header", "x-powered-by: php"),
            ],
        )
        .await;
    assert_eq!((r.status, from(&r)), (StatusCode::OK, "19001"));
    let echo = r.text();
    assert!(echoed(&echo, "x-internal-debug").is_empty(), "{echo}");
    assert_eq!(echoed(&echo, "x-tenant"), ["public"], "{echo}");
    assert_eq!(echoed(&echo, "x-proxied-by"), ["sinew"], "{echo}");
    assert!(echoed(&echo, "x-api").is_empty(), "{echo}");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-powered-by"), None);
    assert_eq!(r.header("cache-control"), None);

    let api = client.get(web, "/api/items", &[("x-test-echo", "1")]).await;
    let echo = api.text();
    assert_eq!(echoed(&echo, "x-api"), ["true"], "{echo}");
    assert_eq!(echoed(&echo, "x-proxied-by"), ["sinew"], "{echo}");
    assert_eq!(api.header("cache-control"), Some("no-store"));
    assert_eq!(api.header("x-frame-options"), Some("DENY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_failing_endpoint_out_and_back_and_outliers_are_ejected() {
    let ups = upstreams().await;
    let ex = Example::start("health-checks.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let everyone = set(&["19001", "19002", "19003"]);
    probe::wait_for(
        "every upstream health-checked",
        Duration::from_secs(10),
        || {
            let checked = ups.iter().all(|u| u.health_checks() > 0);
            async move { checked }
        },
    )
    .await;
    assert_eq!(reached(&client, web, 3).await, everyone);

    // Two failed checks (2 s apart) take 19003 out; two passes bring it back.
    ups[2].set_healthy(false);
    probe::wait_for("19003 leaves", Duration::from_secs(15), || {
        let client = client.clone();
        async move { reached(&client, web, 6).await == set(&["19001", "19002"]) }
    })
    .await;
    ups[2].set_healthy(true);
    probe::wait_for("19003 returns", Duration::from_secs(15), || {
        let client = client.clone();
        let everyone = everyone.clone();
        async move { reached(&client, web, 3).await == everyone }
    })
    .await;

    // Three 5xx in a row from 19001 eject it (for 10 s).
    let failing = [("x-test-target", "19001"), ("x-test-status", "503")];
    let mut fives = 0;
    for _ in 0..9 {
        if client.get(web, "/", &failing).await.status == 503 {
            fives += 1;
        }
    }
    assert_eq!(fives, 3, "19001 answered every third request");
    probe::wait_for("19001 is ejected", Duration::from_secs(5), || {
        let client = client.clone();
        async move { reached(&client, web, 6).await == set(&["19002", "19003"]) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_speaks_h2c_up_or_the_clients_own_protocol() {
    let ups = upstreams().await;
    let ex = Example::start("http2-upstream.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let echo = [("x-test-echo", "1")];
    let h1 = TestClient::http1();
    let h2 = TestClient::http2();
    let cases = [
        (&h1, "/", "19001", "HTTP/2.0"),
        (&h2, "/", "19001", "HTTP/2.0"),
        (&h1, "/mirror-protocol/", "19002", "HTTP/1.1"),
        (&h2, "/mirror-protocol/", "19002", "HTTP/2.0"),
    ];
    for (client, path, upstream, version) in cases {
        let r = client.get(web, path, &echo).await;
        assert_eq!(from(&r), upstream, "{path}");
        let line = r.text();
        assert!(
            request_line(&line).ends_with(version),
            "{path} over {:?} reached the upstream as {:?}",
            r.version,
            request_line(&line)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_serves_on_loopback_v6_and_matches_an_ipv6_literal_domain() {
    let ups = upstreams().await;
    let ex = Example::start("ipv6-listener.yaml", addrs(&ups), &[]).await;
    let addr = ex.addr("web-v6").await;
    assert!(addr.is_ipv6(), "{addr}");
    let client = TestClient::http1();
    let by_address = client.get(addr, "/", &[]).await;
    assert_eq!(
        (by_address.status, from(&by_address)),
        (StatusCode::OK, "19001")
    );
    assert_eq!(by_address.header("x-virtual-host"), Some("by-address"));
    let other = client.get(addr, "/", &[("host", "example.com")]).await;
    assert_eq!((other.status, from(&other)), (StatusCode::OK, "19001"));
    assert_eq!(other.header("x-virtual-host"), None);
}

/// Keepalive timers of established sockets matching an `ss` filter such as `sport = :80`.
fn keepalive_timers(filter: &str) -> Vec<Option<Duration>> {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( {filter} )"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run ss ({e}); install the Debian package iproute2"));
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let start = line.find("timer:(keepalive,")? + "timer:(keepalive,".len();
            let value = line[start..].split(',').next()?;
            // `1min`, `59sec`, `1min2sec`, `988ms`.
            let (mut total, mut number) = (Duration::ZERO, 0u64);
            let mut unit = String::new();
            for c in value.chars().chain(std::iter::once('0')) {
                if c.is_ascii_digit() {
                    total += match unit.as_str() {
                        "min" => Duration::from_secs(number * 60),
                        "sec" => Duration::from_secs(number),
                        "ms" => Duration::from_millis(number),
                        _ => Duration::ZERO,
                    };
                    if !unit.is_empty() {
                        number = 0;
                        unit.clear();
                    }
                    number = number * 10 + u64::from(c as u8 - b'0');
                } else {
                    unit.push(c);
                }
            }
            Some(total)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_and_drain_probes_both_sides_and_drains_what_is_in_flight() {
    let ups = upstreams().await;
    let ex = Example::start("keepalive-and-drain.yaml", addrs(&ups), &[]).await;
    let addr = ex.addr("public").await;
    // One keep-alive connection in, one pooled connection up, both left idle.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut held, Duration::from_secs(5)).await;
    assert!(
        head.starts_with("HTTP/1.1 200") && body == "19001\n",
        "{head}"
    );
    // keepalive_time 60s downstream, 30s upstream (the kernel's default is 7200 s). The
    // timer shows once the socket is quiet, its last segment acknowledged.
    let downstream = format!("sport = :{}", addr.port());
    let upstream = format!("dport = :{}", ups[0].addr.port());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (down, up) = (keepalive_timers(&downstream), keepalive_timers(&upstream));
        let secs = Duration::from_secs;
        if matches!(down[..], [Some(t)] if t > secs(30) && t <= secs(60))
            && matches!(up[..], [Some(t)] if t > Duration::ZERO && t <= secs(30))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keepalive timers: accepted socket {down:?}, pooled upstream socket {up:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Drain with the example's drain_timeout: a request in flight finishes, then the port
    // is closed.
    assert_eq!(ex.proxy.proxy.drain_timeout(), Duration::from_secs(20));
    let in_flight = tokio::spawn(async move {
        TestClient::http1()
            .get(addr, "/", &[("x-test-delay-ms", "500")])
            .await
    });
    probe::wait_for(
        "the slow request is upstream",
        Duration::from_secs(5),
        || {
            let n = ups[0].requests();
            async move { n == 2 }
        },
    )
    .await;
    let report = ex.proxy.proxy.drain(ex.proxy.proxy.drain_timeout()).await;
    assert!(report.finished && report.cut == 0, "{report:?}");
    let slow = in_flight.await.unwrap();
    assert_eq!(slow.status, 200);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers_each_policy_picks_as_it_promises() {
    let ups = upstreams().await;
    let ex = Example::start("load-balancers.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let picks = |path: &'static str, headers: &'static [(&'static str, &'static str)], n: usize| {
        let client = client.clone();
        async move {
            let mut who = Vec::new();
            for _ in 0..n {
                let r = client.get(web, path, headers).await;
                assert_eq!(r.status, 200, "{path}: {}", r.text());
                who.push(from(&r).to_string());
            }
            who
        }
    };
    let count = |who: &[String], name: &str| who.iter().filter(|w| *w == name).count();
    let distinct = |who: &[String]| who.iter().cloned().collect::<BTreeSet<_>>();

    let rr = picks("/round-robin/", &[], 6).await;
    assert_eq!(distinct(&rr[..3]).len(), 3, "{rr:?}");
    assert_eq!(rr[..3], rr[3..], "a repeating cycle: {rr:?}");

    let sw = picks("/smooth-weighted/", &[], 8).await;
    assert_eq!(
        (
            count(&sw, "19001"),
            count(&sw, "19002"),
            count(&sw, "19003")
        ),
        (5, 2, 1),
        "{sw:?}"
    );

    // Reaching all three in 30 picks fails by chance about once in 60,000 runs.
    let random = picks("/random/", &[], 30).await;
    assert_eq!(distinct(&random).len(), 3, "{random:?}");

    // Least request: with one endpoint busy, two candidates always include an idle one.
    let before = [ups[0].requests(), ups[1].requests(), ups[2].requests()];
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .get(web, "/least-request/", &[("x-test-delay-ms", "1500")])
                .await
        }
    });
    let mut busy = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while busy.is_none() {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        busy = ups
            .iter()
            .zip(before)
            .find(|(u, n)| u.requests() > *n)
            .map(|(u, _)| u.name);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = busy.unwrap();
    let quick = picks("/least-request/", &[], 12).await;
    assert_eq!(count(&quick, busy), 0, "{busy} is busy: {quick:?}");
    assert_eq!(slow.await.unwrap().status, 200);

    let alice = picks("/ring-hash/", &[("x-user-id", "alice")], 6).await;
    assert_eq!(distinct(&alice).len(), 1, "{alice:?}");
    let session = picks("/ring-hash/", &[("cookie", "session=s1")], 6).await;
    assert_eq!(distinct(&session).len(), 1, "{session:?}");
    let mut users = BTreeSet::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        let r = client
            .get(web, "/ring-hash/", &[("x-user-id", &user)])
            .await;
        users.insert(from(&r).to_string());
    }
    assert!(users.len() > 1, "20 users, all on {users:?}");

    // Maglev on the client's address: each address sticks, different ones spread.
    let mut by_client = BTreeSet::new();
    for last in 2..22u8 {
        let from_ip = TestClient::http1_from(IpAddr::from([127, 0, 0, last]));
        let mut mine = BTreeSet::new();
        for _ in 0..3 {
            mine.insert(from(&from_ip.get(web, "/maglev/", &[]).await).to_string());
        }
        assert_eq!(mine.len(), 1, "127.0.0.{last} moved: {mine:?}");
        by_client.extend(mine);
    }
    assert!(by_client.len() > 1, "20 clients, all on {by_client:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_host_rewrite_changes_what_the_upstream_sees() {
    let ups = upstreams().await;
    let ex = Example::start("path-and-host-rewrite.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let original_host = web.to_string();
    let cases = [
        (
            "/api/v1/users?id=7",
            "19001",
            "GET /users?id=7 HTTP/1.1",
            "api.internal",
        ),
        (
            "/u/42/profile",
            "19002",
            "GET /profile/42 HTTP/1.1",
            original_host.as_str(),
        ),
        (
            "/static/app.js",
            "19003",
            "GET /assets/app.js HTTP/1.1",
            "cdn.internal",
        ),
        (
            "/other",
            "19001",
            "GET /other HTTP/1.1",
            original_host.as_str(),
        ),
    ];
    for (path, upstream, line, host) in cases {
        let r = client.get(web, path, &[("x-test-echo", "1")]).await;
        let echo = r.text();
        assert_eq!(from(&r), upstream, "{path}");
        assert_eq!(request_line(&echo), line, "{path}");
        assert_eq!(echoed(&echo, "host"), [host], "{path}: {echo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_give_each_api_key_its_own_bucket_of_three() {
    let ups = upstreams().await;
    let ex = Example::start("rate-limits.yaml", addrs(&ups), &[]).await;
    let addr = ex.addr("limited").await;
    let client = TestClient::http1();
    // The bucket holds 3 and gains 3 a second: in a burst of 8, the first 3 pass and at
    // most one refill can fall inside it, so at least 2 are refused.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let r = client.get(addr, "/api/", &[("x-api-key", "k1")]).await;
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
        }
    }
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 2,
        "{statuses:?}"
    );
    let refused = refused.expect("a 429");
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    // k2 has a bucket of its own; paths outside /api have no per-key limit at all.
    let k2 = client.get(addr, "/api/", &[("x-api-key", "k2")]).await;
    assert_eq!((k2.status, from(&k2)), (StatusCode::OK, "19001"));
    for _ in 0..5 {
        let r = client.get(addr, "/", &[("x-api-key", "k1")]).await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_answers_each_rule_with_its_status_and_location() {
    let ups = upstreams().await;
    let ex = Example::start("redirect.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let cases = [
        (
            "/old/page?x=1",
            None,
            301,
            format!("http://{web}/new/page?x=1"),
        ),
        ("/login", None, 308, "https://127.0.0.1:18443/login".into()),
        (
            "/docs?v=2",
            None,
            302,
            "http://docs.example.com/?v=2".into(),
        ),
        (
            "/about?utm=x",
            None,
            301,
            format!("http://{web}/company/about"),
        ),
        (
            "/a",
            Some("example.com"),
            301,
            "http://www.example.com/a".into(),
        ),
    ];
    for (path, host, status, location) in cases {
        let headers: Vec<(&str, &str)> = host.map(|h| ("host", h)).into_iter().collect();
        let r = client.get(web, path, &headers).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{path}");
    }
    let proxied = client.get(web, "/", &[]).await;
    assert_eq!((proxied.status, from(&proxied)), (StatusCode::OK, "19001"));
    assert_eq!(ups[0].requests(), 1, "only the last request went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_routing_matches_the_whole_path() {
    let ups = upstreams().await;
    let ex = Example::start("regex-routing.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let cases = [
        ("/users/42", 200, "19001"),
        ("/users/42/posts", 404, "-"),
        ("/img/logo.png", 200, "19002"),
        ("/img/logo.pngx", 404, "-"),
        ("/api/v3/orders", 200, "19003"),
        ("/api/v0/orders", 404, "-"),
        ("/elsewhere", 404, "-"),
    ];
    for (path, status, upstream) in cases {
        let r = client.get(web, path, &[]).await;
        assert_eq!((r.status.as_u16(), from(&r)), (status, upstream), "{path}");
        if status == 404 {
            assert_eq!(r.text(), "no such page\n");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_timeouts_retry_elsewhere_and_cut_a_slow_request() {
    let ups = upstreams().await;
    let ex = Example::start("retries-and-timeouts.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    // 19001 answers 503; round robin sends it a first try in every three requests, and
    // each of those is retried on another endpoint.
    let failing = [("x-test-target", "19001"), ("x-test-status", "503")];
    for _ in 0..6 {
        let r = client.get(web, "/", &failing).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(from(&r), "19001");
        if ups[0].requests() > 0 {
            break;
        }
    }
    assert!(ups[0].requests() > 0, "19001 was never tried");
    // POST /orders retries a 429 (its body is kept to be sent again).
    let limited = [("x-test-target", "19002"), ("x-test-status", "429")];
    for _ in 0..6 {
        let r = client
            .send(
                Method::POST,
                web,
                "/orders",
                &limited,
                Bytes::from_static(b"{\"item\": 1}"),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_ne!(from(&r), "19002");
        if ups[1].requests() > 0 {
            break;
        }
    }
    assert!(ups[1].requests() > 0, "19002 was never tried");
    // Every upstream slower than the route's 3 s: cut at 3 s with a 504.
    let started = Instant::now();
    let r = client.get(web, "/", &[("x-test-delay-ms", "6000")]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_route_config_routes_both_listeners_alike_with_their_own_settings() {
    let ups = upstreams().await;
    let ex = Example::start("shared-route-config.yaml", addrs(&ups), &[]).await;
    let client = TestClient::http1();
    let public = ex.addr("public").await;
    let internal = ex.addr("internal").await;
    for addr in [public, internal] {
        assert_eq!(from(&client.get(addr, "/api/", &[]).await), "19002");
        assert_eq!(from(&client.get(addr, "/", &[]).await), "19001");
    }
    let claimed = [("x-test-echo", "1"), ("x-forwarded-for", "203.0.113.9")];
    let echo = client.get(public, "/", &claimed).await.text();
    assert_eq!(echoed(&echo, "x-forwarded-for"), ["127.0.0.1"], "{echo}");
    assert_eq!(echoed(&echo, "via"), ["1.1 sinew"], "{echo}");
    let echo = client.get(internal, "/", &claimed).await.text();
    assert_eq!(
        echoed(&echo, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"],
        "{echo}"
    );
    assert!(echoed(&echo, "via").is_empty(), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_by_version_sends_v2_requests_to_v2_endpoints_only() {
    let ups = upstreams().await;
    let ex = Example::start("subset-by-version.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    assert_eq!(reached(&client, web, 6).await, set(&["19001"]));
    let mut v2 = BTreeSet::new();
    for _ in 0..6 {
        let r = client.get(web, "/", &[("x-version", "v2")]).await;
        v2.insert(from(&r).to_string());
    }
    assert_eq!(v2, set(&["19002", "19003"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_carries_bytes_both_ways_and_splits_connections_three_to_one() {
    let ups = upstreams().await;
    let ex = Example::start("tcp-proxy.yaml", addrs(&ups), &[]).await;
    // 64 KiB up and the same back, byte for byte, through tcp-single to 19002.
    let payload: String = (0..65_536u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nx-test-echo-body: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    let (head, body) = raw_exchange(ex.addr("tcp-single").await, request.as_bytes()).await;
    assert!(head.contains("x-upstream: 19002"), "{head}");
    assert!(body == payload, "the echo differs from what was sent");

    let split = ex.addr("tcp-split").await;
    let (mut primary, mut secondary) = (0, 0);
    for _ in 0..60 {
        let (head, _) = raw_exchange(
            split,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if head.contains("x-upstream: 19001") {
            primary += 1;
        } else if head.contains("x-upstream: 19002") {
            secondary += 1;
        } else {
            panic!("{head}");
        }
    }
    // 3:1 of 60 is 45; 33..=57 is more than 3.5 standard deviations either side.
    assert!(
        (33..=57).contains(&primary) && secondary > 0,
        "primary {primary}, secondary {secondary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_completes_a_handshake_with_the_example_ca_and_answers() {
    let ups = upstreams().await;
    let ex = Example::start("tls-termination.yaml", addrs(&ups), &[]).await;
    let https = ex.addr("https").await;
    for (offer, chosen) in [
        (&["h2", "http/1.1"][..], "h2"),
        (&["http/1.1"][..], "http/1.1"),
    ] {
        let (alpn, reply) = tls_get(https, trusting_the_example_ca(offer), "localhost", "/")
            .await
            .unwrap_or_else(|e| panic!("TLS to the example listener: {e}"));
        assert_eq!(alpn.as_deref(), Some(chosen));
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (StatusCode::OK, "19001\n")
        );
        assert_eq!(
            reply.header("strict-transport-security"),
            Some("max-age=31536000")
        );
    }
    // Another CA's client does not trust the example certificate.
    let other = TestCa::new("examples-other-ca");
    let refused = tls_get(https, other.client_config(&["h2"]), "localhost", "/").await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mtls_admits_a_workload_svid_and_refuses_a_client_without_one() {
    let ups = upstreams().await;
    let ex = Example::start("mesh-mtls.yaml", addrs(&ups), &[]).await;
    let inbound = ex.addr("inbound").await;
    let certs = repo().join("examples/certs");
    let web = CertFiles::from_pem(&certs.join("mesh-web.crt"), &certs.join("mesh-web.key"));
    let mut with_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(example_roots())
    .with_client_auth_cert(
        vec![web.cert_der.clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(web.key_der.clone().into()),
    )
    .expect("the example SVID");
    with_cert.alpn_protocols = vec![b"h2".to_vec()];
    let (_, reply) = tls_get(inbound, with_cert, "localhost", "/")
        .await
        .expect("mTLS with the example SVID");
    assert_eq!(reply.status, StatusCode::OK);
    let without_cert = trusting_the_example_ca(&["h2"]);
    let refused = tls_get(inbound, without_cert, "localhost", "/").await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
}

fn example_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca = repo().join("examples/certs/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca).unwrap_or_else(|e| panic!("{ca:?}: {e}")))
        .expect("the example CA");
    roots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_continues_the_callers_trace_and_exports_sampled_spans() {
    let ups = upstreams().await;
    let collector = Collector::start(Transport::Grpc).await;
    let ex = Example::start(
        "tracing.yaml",
        addrs(&ups),
        &[("127.0.0.1:4317", collector.addr.to_string())],
    )
    .await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();

    // B3 with sampled=0: continued upstream as `trace-span-0-parent`, the proxy's span
    // under the caller's, and no span exported.
    let unsampled = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0";
    let echo = client
        .get(web, "/", &[("b3", unsampled), ("x-test-echo", "1")])
        .await
        .text();
    let b3 = echoed(&echo, "b3");
    let &[b3] = b3.as_slice() else {
        panic!("b3 upstream: {echo}")
    };
    let parts: Vec<&str> = b3.split('-').collect();
    assert!(
        matches!(parts[..], ["80f198ee56343ba864fe8b2a57d3eff7", span, "0", "e457b5a2e4d86bd1"] if span.len() == 16 && span != "e457b5a2e4d86bd1"),
        "b3 upstream: {b3}"
    );

    // W3C, sampled: the proxy's span becomes the upstream's parent, and is exported.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo = client
        .get(web, "/", &[("traceparent", caller), ("x-test-echo", "1")])
        .await
        .text();
    let seen = echoed(&echo, "traceparent");
    let &[seen] = seen.as_slice() else {
        panic!("traceparent upstream: {echo}")
    };
    assert!(
        seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && seen != caller,
        "{seen}"
    );
    let proxy_span = &seen[36..52];
    let spans = collector.wait_for(1, Duration::from_secs(10)).await;
    let span = spans
        .iter()
        .find(|s| s.trace_id_hex() == "4bf92f3577b34da6a3ce929d0e0e4736")
        .unwrap_or_else(|| panic!("no span of the caller's trace: {spans:?}"));
    assert_eq!(span.service_name, "example-gateway");
    assert_eq!(span.span_id_hex(), proxy_span);
    assert_eq!(span.parent_span_id_hex(), "00f067aa0ba902b7");
    // Spans leave in order, so the unsampled request's would have come first.
    assert!(
        spans
            .iter()
            .all(|s| s.trace_id_hex() != "80f198ee56343ba864fe8b2a57d3eff7"),
        "an unsampled request was exported: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_upstream_against_the_example_ca() {
    let certs = repo().join("examples/certs/");
    let example_cert = CertFiles::from_pem(&certs.join("server.crt"), &certs.join("server.key"));
    let secure = TlsUpstream::start("secure", &example_cert, &["http/1.1"]).await;
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
    let ex = Example::start("upstream-tls.yaml", [secure.addr, nowhere, nowhere], &[]).await;
    let client = TestClient::http1();
    let r = client.get(ex.addr("web").await, "/", &[]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::OK, "secure HTTP/1.1 alpn=http/1.1")
    );
    assert!(secure.handshakes() > 0);

    // An upstream whose certificate (for localhost too) another CA signed is refused.
    let other = TestCa::new("examples-impostor");
    let impostor_cert = other.issue("impostor", &["localhost"]);
    let impostor = TlsUpstream::start("impostor", &impostor_cert, &["http/1.1"]).await;
    let ex = Example::start("upstream-tls.yaml", [impostor.addr, nowhere, nowhere], &[]).await;
    let r = client.get(ex.addr("web").await, "/", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(impostor.handshakes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_are_chosen_by_exact_then_suffix_then_prefix_then_any() {
    let ups = upstreams().await;
    let ex = Example::start("virtual-hosts.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let client = TestClient::http1();
    let cases = [
        ("example.com", 200, "19001"),
        ("WWW.Example.com", 200, "19001"),
        ("shop.example.com", 200, "19002"),
        ("a.eu.example.com", 200, "19002"),
        ("api.example.org:8080", 200, "19003"),
        ("other.net", 404, "-"),
        ("example.com.evil", 404, "-"),
    ];
    for (host, status, upstream) in cases {
        let r = client
            .get(web, "/", &[("host", host), ("x-test-echo", "1")])
            .await;
        assert_eq!((r.status.as_u16(), from(&r)), (status, upstream), "{host}");
        let region = echoed(&r.text(), "x-region").concat();
        let eu = host == "a.eu.example.com";
        assert_eq!(region == "eu", eu, "{host}: x-region {region:?}");
        if status == 404 {
            assert_eq!(r.text(), "unknown host\n");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_canary_splits_requests_eighty_to_twenty() {
    let ups = upstreams().await;
    let ex = Example::start("weighted-canary.yaml", addrs(&ups), &[]).await;
    let web = ex.addr("web").await;
    let t = tally(
        &TestClient::http1(),
        web,
        "/",
        &[],
        400,
        4,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!((t.errors, t.non_2xx), (0, 0), "{:?}", t.first_errors);
    // 80% of 400 is 320 with a standard deviation of 8: 290..=350 is about 3.75 of them.
    let stable = t.count("19001");
    assert!(
        (290..=350).contains(&stable) && stable + t.count("19002") == 400,
        "{t:?}"
    );
}
