//! Metrics: each one moves when its event happens, read through the admin API's
//! `/metrics` over a real socket.

use std::time::Duration;

use sinew_integration::admin_kit::{self, sample, value};
use sinew_integration::{closed_port_addr, eventually, OneRoute, TestClient, TestProxy, Upstream};

async fn scrape_until(
    admin: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = admin_kit::metrics(admin).await;
        if check(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn requests_count_by_route_and_cluster_status_class_with_their_duration() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    for _ in 0..3 {
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    }
    let r = client
        .get(
            addr,
            "/",
            &[("x-test-status", "404"), ("x-test-delay-ms", "30")],
        )
        .await;
    assert_eq!(r.status, 404);

    let m = admin_kit::metrics(admin.address).await;
    let route = [("virtual_host", "all"), ("route", "all/0")];
    let class = |c| [route[0], route[1], ("code_class", c)];
    assert_eq!(value(&m, "sinew_vhost_route_rq_total", &class("2xx")), 3.0);
    assert_eq!(value(&m, "sinew_vhost_route_rq_total", &class("4xx")), 1.0);
    let cluster = |c| [("cluster", "svc"), ("code_class", c)];
    assert_eq!(
        value(&m, "sinew_cluster_upstream_rq_total", &cluster("2xx")),
        3.0
    );
    assert_eq!(
        value(&m, "sinew_cluster_upstream_rq_total", &cluster("4xx")),
        1.0
    );
    let svc = [("cluster", "svc")];
    assert_eq!(
        value(&m, "sinew_cluster_upstream_rq_time_seconds_count", &svc),
        4.0
    );
    let sum = value(&m, "sinew_cluster_upstream_rq_time_seconds_sum", &svc);
    assert!(
        sum >= 0.030,
        "the delayed response took 30 ms at least: sum {sum}"
    );
    let within_25ms = [("cluster", "svc"), ("le", "0.025")];
    assert_eq!(
        value(
            &m,
            "sinew_cluster_upstream_rq_time_seconds_bucket",
            &within_25ms
        ),
        3.0,
        "the 30 ms response is not within 25 ms"
    );
    assert_eq!(value(&m, "sinew_cluster_membership_total", &svc), 1.0);
    assert_eq!(value(&m, "sinew_cluster_membership_healthy", &svc), 1.0);
}

#[tokio::test]
async fn listener_connections_are_counted_accepted_active_and_closed() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let web = [("listener", "web")];
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    scrape_until(admin.address, "one connection active", |m| {
        sample(m, "sinew_listener_downstream_cx_active", &web) == Some(1.0)
            && sample(m, "sinew_listener_downstream_cx_total", &web) == Some(1.0)
    })
    .await;
    drop(conn);
    scrape_until(admin.address, "the connection closed", |m| {
        sample(m, "sinew_listener_downstream_cx_active", &web) == Some(0.0)
            && sample(m, "sinew_listener_downstream_cx_destroy_total", &web) == Some(1.0)
    })
    .await;
}

#[tokio::test]
async fn connect_failures_retries_and_timeouts_are_counted_on_the_cluster() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[closed_port_addr(), up.addr])
        .route("              retry: {retry_on: [connect-failure, 5xx], num_retries: 3, per_try_timeout: 100ms, base_backoff: 1ms}")
        .cluster("    lb: round_robin")
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    for _ in 0..4 {
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    }
    // A response slower than the per-try timeout, on every try: 504.
    let slow = client.get(addr, "/", &[("x-test-delay-ms", "300")]).await;
    assert_eq!(slow.status, 504);

    let m = admin_kit::metrics(admin.address).await;
    let svc = [("cluster", "svc")];
    let connect = value(&m, "sinew_cluster_upstream_cx_connect_fail_total", &svc);
    let retries = value(&m, "sinew_cluster_upstream_rq_retry_total", &svc);
    let timeouts = value(&m, "sinew_cluster_upstream_rq_timeout_total", &svc);
    assert!(
        connect >= 2.0,
        "round robin sends half the first tries to the closed port: {connect}"
    );
    assert!(
        retries >= connect,
        "every connect failure was retried: {retries} < {connect}"
    );
    assert!(
        timeouts >= 1.0,
        "the slow request timed out per try: {timeouts}"
    );
}

#[tokio::test]
async fn circuit_breaker_overflows_are_read_from_the_breakers() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .cluster("    circuit_breakers: {max_requests: 1}")
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let slow = tokio::spawn(async move {
        TestClient::http1()
            .get(addr, "/", &[("x-test-delay-ms", "500")])
            .await
            .status
    });
    assert!(eventually(Duration::from_secs(2), || up.requests() == 1).await);
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    let m = admin_kit::metrics(admin.address).await;
    let svc = [("cluster", "svc")];
    assert_eq!(
        value(&m, "sinew_cluster_upstream_rq_overflow_total", &svc),
        1.0
    );
    assert_eq!(value(&m, "sinew_cluster_upstream_rq_active", &svc), 1.0);
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test]
async fn outlier_ejections_and_healthy_membership_follow_the_endpoints() {
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    let (proxy, addr) = OneRoute::to(&[good.addr, bad.addr])
        .cluster("    lb: round_robin\n    outlier_detection: {consecutive_5xx: 3, interval: 20ms, base_ejection_time: 10s}")
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    for _ in 0..10 {
        client
            .get(
                addr,
                "/",
                &[("x-test-status", "500"), ("x-test-target", "bad")],
            )
            .await;
    }
    let svc = [("cluster", "svc")];
    let m = scrape_until(admin.address, "bad is ejected", |m| {
        sample(m, "sinew_cluster_outlier_detection_ejections_total", &svc) == Some(1.0)
    })
    .await;
    assert_eq!(value(&m, "sinew_cluster_membership_total", &svc), 2.0);
    assert_eq!(value(&m, "sinew_cluster_membership_healthy", &svc), 1.0);
}

#[tokio::test]
async fn active_health_check_results_are_counted() {
    let up = Upstream::start("up").await;
    let (proxy, _addr) = OneRoute::to(&[up.addr])
        .cluster(
            "    health_checks:
      - timeout: 500ms
        interval: 30ms
        unhealthy_threshold: 2
        healthy_threshold: 1
        http_health_check: {path: /healthz}",
        )
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let svc = [("cluster", "svc")];
    scrape_until(admin.address, "checks pass", |m| {
        sample(m, "sinew_cluster_health_check_success_total", &svc).is_some_and(|v| v >= 2.0)
    })
    .await;
    up.set_healthy(false);
    scrape_until(admin.address, "checks fail and the endpoint leaves", |m| {
        sample(m, "sinew_cluster_health_check_failure_total", &svc).is_some_and(|v| v >= 2.0)
            && sample(m, "sinew_cluster_membership_healthy", &svc) == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn counters_survive_a_reload_that_keeps_the_names() {
    let up = Upstream::start("up").await;
    let config = OneRoute::to(&[up.addr]);
    let (proxy, addr) = config.start().await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    client.get(addr, "/", &[]).await;
    // Same names, a changed setting: the counters carry on.
    proxy
        .reload(&config.clone().http("      idle_timeout: 30s").yaml())
        .await
        .unwrap();
    client.get(addr, "/", &[]).await;
    let m = admin_kit::metrics(admin.address).await;
    let ok = [("cluster", "svc"), ("code_class", "2xx")];
    assert_eq!(value(&m, "sinew_cluster_upstream_rq_total", &ok), 2.0);
    let route = [("route", "all/0"), ("code_class", "2xx")];
    assert_eq!(value(&m, "sinew_vhost_route_rq_total", &route), 2.0);
    assert_eq!(value(&m, "sinew_server_config_version", &[]), 2.0);
    assert_eq!(
        value(&m, "sinew_server_reloads_total", &[]),
        2.0,
        "start + reload"
    );
}

#[tokio::test]
async fn reject_all_keeps_no_request_metrics() {
    let up = Upstream::start("up").await;
    let yaml =
        OneRoute::to(&[up.addr]).yaml() + "stats_config: {stats_matcher: {reject_all: true}}\n";
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("web").await;
    let admin = admin_kit::start(&proxy).await;
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
    let m = admin_kit::metrics(admin.address).await;
    assert!(
        m.contains("sinew_server_uptime_seconds "),
        "server metrics stay:\n{m}"
    );
    for gone in [
        "sinew_cluster_upstream_rq_total{",
        "sinew_vhost_route_rq_total{",
        "sinew_listener_downstream_cx_total{",
        "sinew_cluster_membership_total{",
    ] {
        assert!(!m.contains(gone), "{gone} is kept with metrics off:\n{m}");
    }
}

#[tokio::test]
async fn openmetrics_is_served_when_asked_for_and_the_text_format_otherwise() {
    let up = Upstream::start("up").await;
    let (proxy, _addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    let text = client.get(admin.address, "/metrics", &[]).await;
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!text.text().contains("# EOF"));
    assert!(text
        .text()
        .contains("# TYPE sinew_cluster_upstream_rq_total counter"));
    let om = client
        .get(
            admin.address,
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().ends_with("# EOF\n"));
    assert!(om
        .text()
        .contains("# TYPE sinew_cluster_upstream_rq counter"));
}

#[tokio::test]
async fn tls_handshakes_and_their_failures_are_counted_per_listener() {
    use sinew_integration::tls_kit::{tls_get, TestCa};
    use tokio::io::AsyncWriteExt;

    let ca = TestCa::new("metrics-tls");
    let cert = ca.issue("proxy", &["proxy.test"]);
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .listener(&format!(
            "    tls: {{cert: '{}', key: '{}'}}",
            cert.cert_path(),
            cert.key_path()
        ))
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let (_, reply) = tls_get(addr, ca.client_config(&["http/1.1"]), "proxy.test", "/")
        .await
        .expect("TLS request");
    assert_eq!(reply.status, 200);
    // Not TLS at all: the handshake fails.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let web = [("listener", "web")];
    scrape_until(admin.address, "one handshake and one failure", |m| {
        sample(m, "sinew_listener_ssl_handshake_total", &web) == Some(1.0)
            && sample(m, "sinew_listener_ssl_handshake_error_total", &web) == Some(1.0)
    })
    .await;
}

/// Mirrored copies are requests to the shadow cluster, and count as its requests (as in
/// Envoy); the main cluster counts only the requests it answered.
#[tokio::test]
async fn mirrored_copies_count_in_the_shadow_clusters_request_metrics() {
    let main = Upstream::start("main").await;
    let shadow = Upstream::start("shadow").await;
    let (proxy, addr) = OneRoute::to(&[main.addr])
        .route("              request_mirror_policies: [{cluster: shadow}]")
        .cluster(&format!(
            "  - name: shadow\n    endpoints: [{{address: {}}}]",
            shadow.addr
        ))
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    }
    let shadow_2xx = [("cluster", "shadow"), ("code_class", "2xx")];
    let m = scrape_until(admin.address, "5 shadow requests counted", |m| {
        sample(m, "sinew_cluster_upstream_rq_total", &shadow_2xx) == Some(5.0)
    })
    .await;
    assert_eq!(shadow.requests(), 5);
    let main_2xx = [("cluster", "svc"), ("code_class", "2xx")];
    assert_eq!(value(&m, "sinew_cluster_upstream_rq_total", &main_2xx), 5.0);
}

/// `/stats/prometheus` (Envoy's path for the same exposition) over a real socket: the
/// Prometheus text format, every sample under a family declared with `# HELP` and
/// `# TYPE`, the families the traffic touched present with their counts, and the whole
/// accepted by Prometheus' own parser and linter (`promtool check metrics`, from Debian's
/// `prometheus` package).
#[tokio::test]
async fn stats_prometheus_is_prometheus_text_that_promtool_accepts() {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    let failed = client.get(addr, "/", &[("x-test-status", "503")]).await;
    assert_eq!(failed.status, 503);

    let r = client.get(admin.address, "/stats/prometheus", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    assert!(!text.contains("# EOF"), "OpenMetrics, not the text format");

    // Families by name with their declared type and help.
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(types.insert(name, kind).is_none(), "declared twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().expect("# HELP name"));
        }
    }
    for (family, kind) in [
        ("sinew_server_uptime_seconds", "gauge"),
        ("sinew_server_reloads_total", "counter"),
        ("sinew_listener_downstream_cx_total", "counter"),
        ("sinew_listener_downstream_cx_active", "gauge"),
        ("sinew_vhost_route_rq_total", "counter"),
        ("sinew_cluster_upstream_rq_total", "counter"),
        ("sinew_cluster_upstream_rq_time_seconds", "histogram"),
        ("sinew_cluster_membership_healthy", "gauge"),
    ] {
        assert_eq!(types.get(family), Some(&kind), "{family} in:\n{text}");
    }
    // Every sample: `name{labels} value`, under a declared family with help.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| types.get(f) == Some(&"histogram"))
            .unwrap_or(name);
        assert!(
            types.contains_key(family) && helped.contains(family),
            "{line}: no # TYPE and # HELP for {family}"
        );
    }
    let svc = |class| [("cluster", "svc"), ("code_class", class)];
    assert_eq!(
        value(&text, "sinew_cluster_upstream_rq_total", &svc("2xx")),
        1.0
    );
    assert_eq!(
        value(&text, "sinew_cluster_upstream_rq_total", &svc("5xx")),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "sinew_cluster_upstream_rq_time_seconds_count",
            &[("cluster", "svc")]
        ),
        2.0
    );
    // The same exposition as /metrics (the uptime and memory gauges move between reads).
    let metrics = admin_kit::metrics(admin.address).await;
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(families(&text), families(&metrics));

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's package `prometheus` (scripts/test does)")
        });
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = promtool.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 1 is a parse error; 3 means it parsed and the linter has findings. The one
    // known finding is a gauge named with `_total`, after Envoy's `membership_total`.
    let findings: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let known =
        [r#"sinew_cluster_membership_total non-counter metrics should not have "_total" suffix"#];
    assert!(
        out.status.success() || (out.status.code() == Some(3) && findings == known),
        "promtool check metrics: {:?}\n{said}",
        out.status
    );
}
