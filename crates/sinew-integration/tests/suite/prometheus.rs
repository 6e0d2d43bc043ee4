//! A real Prometheus (Debian's `prometheus`) scrapes Sinew's admin API — once in the
//! Prometheus text format and once in OpenMetrics — while known traffic goes through
//! the proxy; its query API must then report what that traffic implies: the request
//! count, the request rate, and a p99 latency that matches the upstream's delay.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sinew_integration::prometheus_kit::Prometheus;
use sinew_integration::{admin_kit, OneRoute, TestClient, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_both_formats_and_sees_the_traffic_sent() {
    const DELAY_MS: u64 = 60;
    const CLIENTS: usize = 4;
    const TRAFFIC: Duration = Duration::from_secs(5);

    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin = admin_kit::start(&proxy).await;
    let prom = Prometheus::start(
        admin.address,
        &[("text", "text"), ("openmetrics", "openmetrics")],
    )
    .await;
    for job in ["text", "openmetrics"] {
        prom.wait_up(job).await;
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
    let rate = prom
        .query(
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
        let seen = prom
            .query_until(&count, Duration::from_secs(4), |v| v == total)
            .await;
        assert_eq!(seen, Some(total), "{count}");
    }

    // The p99 of a DELAY_MS upstream falls in the bucket above it: (0.05, 0.1] s.
    let p99 = prom
        .query(
        "histogram_quantile(0.99, sum by (le) (rate(sinew_cluster_upstream_rq_time_seconds_bucket{job=\"openmetrics\",cluster=\"svc\"}[10s])))",
    )
    .await
    .expect("a p99");
    assert!(
        p99 > DELAY_MS as f64 / 1000.0 - 0.010 && p99 <= 0.1,
        "p99 {p99} s for a {DELAY_MS} ms upstream"
    );
    let p50 = prom
        .query(
        "histogram_quantile(0.5, sum by (le) (rate(sinew_cluster_upstream_rq_time_seconds_bucket{job=\"text\",cluster=\"svc\"}[10s])))",
    )
    .await
    .expect("a p50");
    assert!(
        p50 > 0.05 && p50 <= 0.1,
        "p50 {p50} s for a {DELAY_MS} ms upstream"
    );
}
