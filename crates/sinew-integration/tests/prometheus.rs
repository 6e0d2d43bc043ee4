//! A real Prometheus (Debian's `prometheus`) scrapes Sinew's admin API — once in the
//! Prometheus text format and once in OpenMetrics — while known traffic goes through
//! the proxy; its query API must then report what that traffic implies: the request
//! count, the request rate, and a p99 latency that matches the upstream's delay.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{admin_kit, free_port, ChildGuard, OneRoute, TestClient, Upstream};

/// Starts Prometheus scraping `target` every second, as two jobs: `text` asks for the
/// Prometheus text format, `openmetrics` for OpenMetrics.
async fn start_prometheus(dir: &TempDir, target: SocketAddr) -> (ChildGuard, SocketAddr) {
    let config = dir.file("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: text
    metrics_path: /metrics
    params: {{format: [text]}}
    static_configs: [{{targets: ['{target}']}}]
  - job_name: openmetrics
    metrics_path: /metrics
    params: {{format: [openmetrics]}}
    static_configs: [{{targets: ['{target}']}}]
"
        ),
    )
    .unwrap();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.file("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.file("prometheus.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `prometheus` ({e}): install Debian's package `prometheus` (scripts/test does)")
        });
    let guard = ChildGuard(child);
    let client = TestClient::http1();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.try_get(listen, "/-/ready", &[]).await {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < until,
            "prometheus not ready in 10 s:\n{}",
            std::fs::read_to_string(dir.file("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (guard, listen)
}

/// Percent-encodes a PromQL expression for a query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a PromQL query whose result is one sample; None when it has none.
async fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let r = TestClient::http1()
        .get(
            prometheus,
            &format!("/api/v1/query?query={}", encode(promql)),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{promql}: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let result = v["data"]["result"].as_array()?;
    assert!(result.len() <= 1, "{promql}: more than one series: {v}");
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits until `promql` returns a value for which `ok` holds; returns the last value.
async fn query_until(
    prometheus: SocketAddr,
    promql: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> Option<f64> {
    let until = Instant::now() + within;
    loop {
        let v = query(prometheus, promql).await;
        if v.is_some_and(&ok) || Instant::now() >= until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_formats_and_sees_the_traffic_sent() {
    const DELAY_MS: u64 = 60;
    const CLIENTS: usize = 4;
    const TRAFFIC: Duration = Duration::from_secs(5);

    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let dir = TempDir::new("prometheus");
    let (_prometheus, prom) = start_prometheus(&dir, admin.address).await;
    for job in ["text", "openmetrics"] {
        let up_query = format!("up{{job=\"{job}\"}}");
        // Prometheus hands its scrapers their targets after up to 5 s (its discovery
        // manager's update interval), then scrapes within one interval.
        let v = query_until(prom, &up_query, Duration::from_secs(10), |v| v == 1.0).await;
        if v != Some(1.0) {
            let targets = TestClient::http1().get(prom, "/api/v1/targets", &[]).await;
            panic!(
                "job {job} does not scrape Sinew (up = {v:?}); targets: {}",
                targets.text()
            );
        }
    }

    // Known traffic: CLIENTS clients in a loop, each request delayed DELAY_MS upstream.
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let client = TestClient::http1();
                let delay = DELAY_MS.to_string();
                while started.elapsed() < TRAFFIC {
                    let r = client.get(addr, "/", &[("x-test-delay-ms", &delay)]).await;
                    assert_eq!(r.status, 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Near the end of the traffic, the rate over the last 3 s against the client's own.
    tokio::time::sleep(TRAFFIC - Duration::from_millis(800)).await;
    let client_rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let rate = query(
        prom,
        "sum(rate(sinew_cluster_upstream_rq_total{job=\"text\",cluster=\"svc\",code_class=\"2xx\"}[3s]))",
    )
    .await
    .expect("a rate");
    for c in clients {
        c.await.unwrap();
    }
    let total = sent.load(Ordering::Relaxed) as f64;
    assert!(total > 100.0, "enough traffic to judge: {total}");
    assert!(
        (rate - client_rate).abs() <= 0.35 * client_rate,
        "Prometheus' rate {rate:.1}/s is not the {client_rate:.1}/s sent"
    );

    // Every request, counted exactly, in both formats once the last scrape is in.
    for job in ["text", "openmetrics"] {
        let count = format!(
            "sum(sinew_cluster_upstream_rq_total{{job=\"{job}\",cluster=\"svc\",code_class=\"2xx\"}})"
        );
        let seen = query_until(prom, &count, Duration::from_secs(4), |v| v == total).await;
        assert_eq!(seen, Some(total), "{count}");
    }

    // The p99 of a DELAY_MS upstream falls in the bucket above it: (0.05, 0.1] s.
    let p99 = query(
        prom,
        "histogram_quantile(0.99, sum by (le) (rate(sinew_cluster_upstream_rq_time_seconds_bucket{job=\"openmetrics\",cluster=\"svc\"}[10s])))",
    )
    .await
    .expect("a p99");
    assert!(
        p99 > DELAY_MS as f64 / 1000.0 - 0.010 && p99 <= 0.1,
        "p99 {p99} s for a {DELAY_MS} ms upstream"
    );
    let p50 = query(
        prom,
        "histogram_quantile(0.5, sum by (le) (rate(sinew_cluster_upstream_rq_time_seconds_bucket{job=\"text\",cluster=\"svc\"}[10s])))",
    )
    .await
    .expect("a p50");
    assert!(
        p50 > 0.05 && p50 <= 0.1,
        "p50 {p50} s for a {DELAY_MS} ms upstream"
    );
}
