//! The Grafana dashboard (deploy/grafana/sinew.json) against the real thing: a real
//! Prometheus scrapes a Sinew proxy that has carried every kind of traffic the panels
//! show (requests to clusters, retries, upstream timeouts, connect failures, 5xx answers,
//! circuit-breaker overflows, failed health checks, an outlier ejection, TLS handshake
//! errors, listener overflows, a failed reload), and every panel's every expression —
//! with Grafana's variables filled in as Grafana would — must evaluate, return series,
//! and show that traffic (some series above zero). Every `{{label}}` a legend names must
//! be a label of what the expression returns.
//!
//! A cheaper check runs first: every `sinew_*` name the dashboard uses is in a scrape.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sinew_integration::prometheus_kit::Prometheus;
use sinew_integration::tls_kit::TestCa;
use sinew_integration::{admin_kit, closed_port_addr, TestClient, TestProxy, Upstream};
use tokio::io::AsyncWriteExt;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/sinew.json"
);

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("read the dashboard"))
        .expect("the dashboard is JSON")
}

/// Every (panel title, expr, legendFormat) of the dashboard.
fn targets(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} queries nothing");
        for t in targets {
            all.push((
                title.clone(),
                t["expr"].as_str().expect("expr").to_string(),
                t["legendFormat"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    all
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("sinew_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn every_dashboard_expression_names_metrics_sinew_exports() {
    let dashboard = dashboard();
    let mut queries: Vec<(String, String)> = targets(&dashboard)
        .into_iter()
        .map(|(title, expr, _)| (title, expr))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        queries.push((
            v["name"].to_string(),
            v["query"].as_str().unwrap_or("").to_string(),
        ));
    }

    let up = Upstream::start("up").await;
    let (proxy, _addr) = sinew_integration::OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let scrape = admin_kit::metrics(admin.address).await;
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(exported.len() > 20, "a full scrape: {scrape}");
    for (title, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: `{expr}` names no Sinew metric");
        for name in names {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&name) || exported.contains(family),
                "{title}: `{expr}` names {name}, which Sinew does not export"
            );
        }
    }
}

/// What Grafana puts in place of the dashboard's variables: `$cluster` (a multi-value
/// variable with "All") becomes a regex matching every cluster, and `$__rate_interval`
/// Grafana's own value for a 1 s scrape interval is 4 × 1 s; a little more here, so that
/// a rate still spans a scrape after the last burst of traffic.
fn grafana_substitutes(expr: &str) -> String {
    expr.replace("$__rate_interval", "20s")
        .replace("${cluster}", ".*")
        .replace("$cluster", ".*")
}

/// The labels `{{name}}` a legend format uses.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

/// The proxy under the dashboard: a listener `web` whose routes reach every kind of
/// cluster (a healthy one with retries, a route with a short timeout, a dead one, three
/// with tight circuit breakers, one whose health check fails), a TLS listener `secure`, and a
/// listener `tight` that takes one connection at a time.
fn config(ups: &[SocketAddr; 3], dead: SocketAddr, ca: &TestCa) -> String {
    let cert = ca.issue("proxy", &["proxy.test"]);
    let [a, b, c] = ups;
    format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      # The requests held in flight outlive the default 15 s.
      request_timeout: 5m
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - name: slow
              match: {{prefix: /slow}}
              cluster: svc
              timeout: 100ms
            - name: dead
              match: {{prefix: /dead}}
              cluster: dead
            - name: limited
              match: {{prefix: /limited}}
              cluster: limited
            - name: unretried
              match: {{prefix: /unretried}}
              cluster: unretried
              retry: {{retry_on: [5xx], num_retries: 1}}
            - name: narrow-brief
              match: {{prefix: /narrow-brief}}
              cluster: narrow
              timeout: 500ms
            - name: narrow
              match: {{prefix: /narrow}}
              cluster: narrow
            - name: checked
              match: {{prefix: /checked}}
              cluster: checked
            - name: main
              match: {{prefix: /}}
              cluster: svc
              retry: {{retry_on: [5xx], num_retries: 1}}
  - name: secure
    address: 127.0.0.1:0
    tls: {{cert: '{cert}', key: '{key}'}}
    http:
      virtual_hosts:
        - name: secure
          domains: ['*']
          routes: [{{name: secure, match: {{prefix: /}}, cluster: svc}}]
  - name: tight
    address: 127.0.0.1:0
    max_connections: 1
    http:
      virtual_hosts:
        - name: tight
          domains: ['*']
          routes: [{{name: tight, match: {{prefix: /}}, cluster: svc}}]
clusters:
  - name: svc
    endpoints: [{{address: {a}}}, {{address: {b}}}]
    outlier_detection: {{consecutive_5xx: 2, interval: 100ms, base_ejection_time: 300ms, max_ejection_percent: 50}}
  - name: dead
    connect_timeout: 1s
    endpoints: [{{address: {dead}}}]
  - name: limited
    endpoints: [{{address: {c}}}]
    circuit_breakers: {{max_requests: 1}}
  - name: unretried
    endpoints: [{{address: {c}}}]
    circuit_breakers: {{max_retries: 0}}
  - name: narrow
    connect_timeout: 60s
    endpoints: [{{address: {c}}}]
    circuit_breakers: {{max_connections: 1, max_pending_requests: 2}}
  - name: checked
    endpoints: [{{address: {c}}}]
    health_checks:
      - {{timeout: 500ms, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {{path: /healthz}}}}
",
        cert = cert.cert_path(),
        key = cert.key_path(),
    )
}

/// One round of every kind of traffic the panels show, each request bounded.
async fn traffic(
    proxy: &TestProxy,
    admin: SocketAddr,
    web: SocketAddr,
    secure: SocketAddr,
    tight: SocketAddr,
    taken: SocketAddr,
) {
    let client = TestClient::http1();
    for _ in 0..20 {
        assert_eq!(client.get(web, "/", &[]).await.status, 200);
    }
    // a answers 503: retries (mostly on b) follow; two in a row eject a.
    for _ in 0..4 {
        client
            .get(
                web,
                "/",
                &[("x-test-status", "503"), ("x-test-target", "a")],
            )
            .await;
    }
    // A route timeout, a connect failure (503 on the route).
    let r = client
        .get(web, "/slow", &[("x-test-delay-ms", "400")])
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    let r = client.get(web, "/dead", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    // max_retries 0: the retry is not made; the 503 stands.
    let r = client
        .get(web, "/unretried", &[("x-test-status", "503")])
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    // max_requests 1 is held: one more overflows.
    assert_eq!(client.get(web, "/limited", &[]).await.status, 503);
    // `narrow`'s one connection is busy and one request waits: a second waits too (a
    // connection needed past max_connections) until its route timeout, and meanwhile a
    // third finds both pending places taken.
    let brief = {
        let client = client.clone();
        tokio::spawn(async move { client.get(web, "/narrow-brief", &[]).await.status })
    };
    wait_for_gauge(
        admin,
        "sinew_cluster_upstream_rq_pending_active",
        "narrow",
        2.0,
    )
    .await;
    assert_eq!(client.get(web, "/narrow", &[]).await.status, 503);
    assert_eq!(
        brief.await.unwrap(),
        504,
        "the pending request's route timeout"
    );
    // A handshake that is no TLS.
    let mut tcp = tokio::net::TcpStream::connect(secure).await.unwrap();
    let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
    )
    .await;
    // `tight` holds one connection (kept open by the caller): this one is closed at accept.
    let over = client.try_get(tight, "/", &[]).await;
    assert!(over.is_err(), "a second connection to `tight`: {over:?}");
    // A reload refused: a listener on a port another socket holds.
    let clash = format!(
        "listeners:\n  - {{name: clash, address: '{taken}', http: {{virtual_hosts: []}}}}\nclusters: []\n"
    );
    assert!(
        proxy.reload(&clash).await.is_err(),
        "a reload onto a taken port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_evaluates_in_prometheus_against_real_traffic() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    c.set_healthy(false); // cluster `checked` fails every check
    let ca = TestCa::new("dashboard");
    let proxy = TestProxy::start(&config(&[a.addr, b.addr, c.addr], closed_port_addr(), &ca)).await;
    let (web, secure, tight) = (
        proxy.addr("web").await,
        proxy.addr("secure").await,
        proxy.addr("tight").await,
    );
    let admin = admin_kit::start(&proxy).await;

    // In flight all through the evaluation, sent raw and never read: one request on
    // `limited` (its max_requests is 1, so the next overflows) and two on `narrow` (one
    // connection allowed: the second waits as pending); and one connection open on
    // `tight`.
    let mut held = Vec::new();
    for (path, gauge, value) in [
        ("/limited", "sinew_cluster_upstream_rq_active", 1.0),
        ("/narrow", "sinew_cluster_upstream_rq_active", 1.0),
        ("/narrow", "sinew_cluster_upstream_rq_pending_active", 1.0),
    ] {
        let mut stream = tokio::net::TcpStream::connect(web).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nx-test-delay-ms: 60000\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        held.push(stream);
        wait_for_gauge(admin.address, gauge, &path[1..], value).await;
    }
    let holder = tokio::net::TcpStream::connect(tight).await.unwrap();

    // Traffic before Prometheus' first scrape creates every series; traffic after it
    // moves them, so rates over the window are above zero.
    traffic(&proxy, admin.address, web, secure, tight, a.addr).await;
    let prom = Prometheus::start(admin.address, &[("sinew", "text")]).await;
    prom.wait_up("sinew").await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // one more scrape: a baseline
    tokio::time::sleep(Duration::from_millis(400)).await; // a's ejection is over
    traffic(&proxy, admin.address, web, secure, tight, a.addr).await;

    // Every expression: evaluates, returns series, one of them above zero, with the
    // labels its legend names. Polled: the last scrape may not be in yet.
    let dashboard = dashboard();
    let mut failures = Vec::new();
    for (title, expr, legend) in targets(&dashboard) {
        let promql = grafana_substitutes(&expr);
        let until = Instant::now() + Duration::from_secs(8);
        let verdict = loop {
            let v = prom.api("/api/v1/query", &[("query", &promql)]).await;
            let verdict = judge(&v, &legend_labels(&legend));
            if verdict.is_ok() || Instant::now() >= until {
                break verdict;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if let Err(why) = verdict {
            failures.push(format!("{title}: `{promql}`: {why}"));
        }
    }
    // The template variable: Grafana's `label_values(metric, label)` is the series API.
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        let query = v["query"].as_str().expect("a query variable");
        let (metric, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.split_once(','))
            .unwrap_or_else(|| panic!("{query}: not label_values(metric, label)"));
        let values = prom
            .api(
                &format!("/api/v1/label/{}/values", label.trim()),
                &[("match[]", metric.trim())],
            )
            .await;
        let values: BTreeSet<&str> = values["data"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let expected: BTreeSet<&str> =
            ["svc", "dead", "limited", "unretried", "narrow", "checked"].into();
        if values != expected {
            failures.push(format!("variable {query}: {values:?}, not {expected:?}"));
        }
    }
    drop((holder, held));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Waits until the admin API's `gauge{cluster}` reads `value`.
async fn wait_for_gauge(admin: SocketAddr, gauge: &str, cluster: &str, value: f64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = admin_kit::metrics(admin).await;
        if admin_kit::sample(&m, gauge, &[("cluster", cluster)]) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < until,
            "{gauge}{{cluster={cluster}}} never {value}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ok when a query answer has series, one of them finite and above zero, each carrying
/// every label in `labels`.
fn judge(answer: &Value, labels: &[String]) -> Result<(), String> {
    if answer["status"] != "success" {
        return Err(format!("refused: {answer}"));
    }
    let series = answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if series.is_empty() {
        return Err("no series".into());
    }
    for s in &series {
        for label in labels {
            if s["metric"].get(label).is_none() {
                return Err(format!(
                    "the legend's {{{{{label}}}}} is not a label of {s}"
                ));
            }
        }
    }
    let above_zero = series.iter().any(|s| {
        s["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v.is_finite() && v > 0.0)
    });
    if !above_zero {
        return Err(format!("nothing above zero: {series:?}"));
    }
    Ok(())
}
