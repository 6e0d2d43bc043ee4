//! The chaos test: constant load through Sinew to a cluster of three endpoints while the
//! endpoints are killed (SIGKILL: every connection they had dies with them) and
//! restarted on the same ports. With retries, outlier detection and active health checks
//! on, the client must see no failed request as long as one endpoint is up.
//!
//! The endpoints are real processes: the `sinew` binary serving a direct response, so a
//! kill is a real process death, not a task stopping. The figures (requests sent and
//! failed, p50/p99 before and during the faults) are printed; run with `--nocapture`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sinew_integration::{free_port, percentile, sinew_binary, ChildGuard, TestClient, TestProxy};

/// One endpoint: a `sinew` process on a fixed port that answers its name.
struct Endpoint {
    name: &'static str,
    addr: SocketAddr,
    config: std::path::PathBuf,
    process: Option<ChildGuard>,
}

impl Endpoint {
    fn new(name: &'static str, dir: &std::path::Path) -> Endpoint {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "
listeners:
  - name: up
    address: {addr}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              direct_response: {{status: 200, body: {name}}}
"
            ),
        )
        .unwrap();
        Endpoint {
            name,
            addr,
            config,
            process: None,
        }
    }

    async fn start(&mut self) {
        let child = Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start an endpoint");
        self.process = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(Instant::now() < deadline, "{} did not start", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: the process and all its connections go at once.
    fn kill(&mut self) {
        self.process = None;
    }
}

/// What one request saw: when it started (since the load began), how long it took, and
/// whether it succeeded.
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

fn summary(samples: &[&Sample]) -> (usize, usize, Duration, Duration) {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    (
        samples.len(),
        samples.iter().filter(|s| !s.ok).count(),
        percentile(&took, 0.50),
        percentile(&took, 0.99),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_endpoints_die_and_return_as_long_as_one_is_up() {
    let dir = std::env::temp_dir().join(format!("sinew-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut endpoints = [
        Endpoint::new("a", &dir),
        Endpoint::new("b", &dir),
        Endpoint::new("c", &dir),
    ];
    for e in endpoints.iter_mut() {
        e.start().await;
    }
    let list: String = endpoints
        .iter()
        .map(|e| format!("{{address: {}}}, ", e.addr))
        .collect();
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
              cluster: svc
              retry:
                retry_on: [5xx, connect-failure, reset]
                num_retries: 3
                per_try_timeout: 1s
                base_backoff: 5ms
                max_backoff: 20ms
                retry_host_predicate: [previous_hosts]
clusters:
  - name: svc
    connect_timeout: 250ms
    endpoints: [{list}]
    health_checks:
      - interval: 100ms
        timeout: 100ms
        unhealthy_threshold: 1
        healthy_threshold: 2
        http_health_check: {{path: /healthz}}
    outlier_detection:
      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 1s
      max_ejection_percent: 100
    # Every in-flight request to a dying endpoint needs a retry at once.
    circuit_breakers:
      retry_budget: {{budget_percent: 100, min_retry_concurrency: 32}}
"
    ))
    .await;
    let addr = proxy.addr("web").await;

    // Constant load: 8 clients with keep-alive connections, one request after another.
    const CLIENTS: usize = 8;
    const RUN: Duration = Duration::from_secs(8);
    const MAX_REQUESTS_PER_CLIENT: usize = 100_000;
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, samples, first_errors) =
                (stop.clone(), samples.clone(), first_errors.clone());
            tokio::spawn(async move {
                let client = TestClient::http1();
                let mut mine = Vec::new();
                for _ in 0..MAX_REQUESTS_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let outcome = client.try_get(addr, "/", &[]).await;
                    let ok = matches!(&outcome, Ok(r) if r.status == 200);
                    if !ok {
                        let mut errors = first_errors.lock().unwrap();
                        if errors.len() < 5 {
                            errors.push(match outcome {
                                Ok(r) => format!("{} {}", r.status, r.text()),
                                Err(e) => e,
                            });
                        }
                    }
                    mine.push(Sample {
                        at: started - began,
                        took: started.elapsed(),
                        ok,
                    });
                }
                samples.lock().unwrap().extend(mine);
            })
        })
        .collect();

    // The faults. At every moment at least one endpoint is up.
    let at = |secs: f64| tokio::time::sleep_until((began + Duration::from_secs_f64(secs)).into());
    at(1.0).await;
    endpoints[0].kill();
    at(2.5).await;
    endpoints[1].kill(); // only c is left
    at(4.0).await;
    endpoints[0].start().await;
    at(5.0).await;
    endpoints[1].start().await;
    at(5.5).await;
    endpoints[2].kill();
    at(7.0).await;
    endpoints[2].start().await;
    const FAULTS: (f64, f64) = (1.0, 7.0);
    at(RUN.as_secs_f64()).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("load clients stop")
            .unwrap();
    }

    let samples = samples.lock().unwrap();
    let all: Vec<&Sample> = samples.iter().collect();
    let before: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at < Duration::from_secs_f64(FAULTS.0))
        .collect();
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.at >= Duration::from_secs_f64(FAULTS.0) && s.at < Duration::from_secs_f64(FAULTS.1)
        })
        .collect();
    for (label, set) in [
        ("before the faults", &before),
        ("during the faults", &during),
        ("whole run", &all),
    ] {
        let (sent, failed, p50, p99) = summary(set);
        eprintln!(
            "chaos {label}: {sent} requests, {failed} failed, p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    let (sent, failed, _, _) = summary(&all);
    assert!(sent > 1000, "the load ran: {sent} requests");
    assert!(
        during.len() > sent / 3,
        "load kept flowing during the faults"
    );
    assert_eq!(
        failed,
        0,
        "failed requests; the first: {:?}",
        first_errors.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
