//! The control plane at scale (`bench/xds-scale`): one `sinew control` following a real
//! etcd that holds N endpoints across S services, with P simulated proxies (Sinew's own
//! xDS client, one connection each, ACKing what they are sent). For each of R rounds it
//! registers one new instance in etcd and measures the time until every proxy has the
//! update (its handler accepted it, which is when the client ACKs), then reports the
//! control plane's RSS and CPU time.
//!
//! A benchmark, not a test: nothing here passes or fails on time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sinew_integration::etcd_kit::Etcd;
use sinew_integration::{free_port, percentile, start_control};
use sinew_xds_client::{
    ClientConfig, Kind, Mode, Node, ResourceHandler, Streams, Update, XdsClient,
};

struct Args {
    proxies: usize,
    endpoints: usize,
    services: usize,
    rounds: usize,
    delta: bool,
}

fn args() -> Args {
    let mut a = Args {
        proxies: 1000,
        endpoints: 10_000,
        services: 100,
        rounds: 5,
        delta: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = || {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .expect("a number")
        };
        match argv[i].as_str() {
            "--proxies" => a.proxies = value(),
            "--endpoints" => a.endpoints = value(),
            "--services" => a.services = value(),
            "--rounds" => a.rounds = value(),
            "--delta" => {
                a.delta = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}; see bench/README.md"),
        }
        i += 2;
    }
    a
}

/// What the simulated proxies saw, shared.
struct Seen {
    /// Proxies that have received endpoints at least once.
    synced: AtomicUsize,
    /// The marker being looked for, and when each proxy first saw it.
    marker: Mutex<Option<Vec<u8>>>,
    arrivals: Mutex<Vec<Instant>>,
}

struct SimulatedProxy {
    seen: Arc<Seen>,
    services: Vec<String>,
    synced: bool,
    /// Markers this proxy has already reported.
    reported: Vec<Vec<u8>>,
}

impl ResourceHandler for SimulatedProxy {
    async fn apply(&mut self, update: Update) -> Result<(), String> {
        if update.kind != Kind::Endpoint {
            return Ok(());
        }
        if !self.synced {
            self.synced = true;
            self.seen.synced.fetch_add(1, Ordering::Relaxed);
        }
        let marker = self.seen.marker.lock().unwrap().clone();
        if let Some(marker) = marker {
            if !self.reported.contains(&marker)
                && update.resources.iter().any(|r| {
                    r.resource
                        .value
                        .windows(marker.len())
                        .any(|w| w == marker.as_slice())
                })
            {
                self.reported.push(marker);
                self.seen.arrivals.lock().unwrap().push(Instant::now());
            }
        }
        Ok(())
    }

    fn wanted(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::Endpoint => self.services.clone(),
            _ => Vec::new(),
        }
    }
}

/// The control plane's resident memory (KiB) and CPU time (user + system, seconds).
fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    (rss, ticks / 100.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let etcd = Etcd::start();
    eprintln!("loading {} endpoints into etcd ...", a.endpoints);
    // Through etcd's JSON gateway, eight puts at a time.
    let etcd_addr: std::net::SocketAddr =
        etcd.endpoint.trim_start_matches("http://").parse().unwrap();
    let mut loaders = Vec::new();
    for worker in 0..8 {
        let (endpoints, services) = (a.endpoints, a.services);
        loaders.push(tokio::spawn(async move {
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let client = sinew_integration::TestClient::http1();
            for e in (worker..endpoints).step_by(8) {
                let key = format!("/sinew/services/service-{}/i-{e}", e % services);
                let address = format!(
                    "10.{}.{}.{}:8080",
                    (e >> 16) & 0xff,
                    (e >> 8) & 0xff,
                    e & 0xff
                );
                let value = format!(r#"{{"address": "{address}", "labels": {{"version": "v1"}}}}"#);
                let body = format!(r#"{{"key": "{}", "value": "{}"}}"#, b64(&key), b64(&value));
                let reply = client
                    .send(
                        http::Method::POST,
                        etcd_addr,
                        "/v3/kv/put",
                        &[],
                        bytes::Bytes::from(body),
                    )
                    .await;
                assert_eq!(reply.status, 200, "{}", reply.text());
            }
        }));
    }
    for l in loaders {
        l.await.expect("loader");
    }

    let dir = std::env::temp_dir().join(format!("sinew-xds-scale-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("services")).unwrap();
    std::fs::write(
        dir.join("services/edge.yaml"),
        "kind: Listener\nname: edge\naddress: 127.0.0.1:18999\nroutes: [{prefix: /, service: service-0}]\n",
    )
    .unwrap();
    let xds = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("control.yaml"),
        format!(
            "xds_address: {xds}\ndebounce: 100ms\nregistries:\n  - directory: services\n  - etcd: {{endpoints: ['{}']}}\n",
            etcd.endpoint
        ),
    )
    .unwrap();
    let control = start_control(&dir.join("control.yaml"));
    let pid = control.id();
    // Past start-up and the first build, with no proxy yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle, cpu_idle) = usage(pid);

    let seen = Arc::new(Seen {
        synced: AtomicUsize::new(0),
        marker: Mutex::new(None),
        arrivals: Mutex::new(Vec::new()),
    });
    let services: Vec<String> = (0..a.services).map(|s| format!("service-{s}")).collect();
    let started = Instant::now();
    let mut clients = Vec::new();
    for p in 0..a.proxies {
        let config = ClientConfig {
            servers: vec![format!("http://{xds}")],
            tls: None,
            tls_server_name: None,
            node: Node {
                id: format!("proxy-{p}"),
                ..Default::default()
            },
            mode: if a.delta {
                Mode::Delta
            } else {
                Mode::StateOfTheWorld
            },
            streams: Streams::Aggregated,
            connect_timeout: Duration::from_secs(10),
        };
        clients.push(XdsClient::start(
            config,
            SimulatedProxy {
                seen: seen.clone(),
                services: services.clone(),
                synced: false,
                reported: Vec::new(),
            },
        ));
    }
    while seen.synced.load(Ordering::Relaxed) < a.proxies {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "proxies did not sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sync_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_synced, cpu_synced) = usage(pid);

    let mut rounds = Vec::new();
    let cpu_before_rounds = cpu_synced;
    for round in 0..a.rounds {
        let ip = format!("10.254.{}.{}", round / 250, round % 250 + 1);
        *seen.marker.lock().unwrap() = Some(ip.clone().into_bytes());
        seen.arrivals.lock().unwrap().clear();
        let t0 = Instant::now();
        etcd.put(
            &format!("/sinew/services/service-0/marker-{round}"),
            &format!("{{\"address\": \"{ip}:8080\"}}"),
            None,
        );
        while seen.arrivals.lock().unwrap().len() < a.proxies {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "round {round}: not every proxy got the change"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut latencies: Vec<Duration> = seen
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0))
            .collect();
        latencies.sort();
        rounds.push((
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            *latencies.last().unwrap(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (rss_after, cpu_after) = usage(pid);
    let cpu_per_round = (cpu_after - cpu_before_rounds) / a.rounds as f64;

    println!(
        "# xds-scale: {} proxies ({}), {} endpoints in {} services, {} rounds\n",
        a.proxies,
        if a.delta {
            "delta"
        } else {
            "state of the world"
        },
        a.endpoints,
        a.services,
        a.rounds
    );
    println!("| round | half the proxies have it (p50) | p99 | every proxy has it (and ACKs) |");
    println!("| --- | --- | --- | --- |");
    for (i, (p50, p99, all)) in rounds.iter().enumerate() {
        let ms = |d: &Duration| d.as_millis();
        println!("| {i} | {} ms | {} ms | {} ms |", ms(p50), ms(p99), ms(all));
    }
    println!();
    println!("| control plane | value |");
    println!("| --- | --- |");
    println!(
        "| initial sync of every proxy | {} ms |",
        sync_time.as_millis()
    );
    println!(
        "| RSS idle / synced / after rounds | {} / {} / {} MiB |",
        rss_idle / 1024,
        rss_synced / 1024,
        rss_after / 1024
    );
    println!("| CPU: start-up / initial sync / per change | {cpu_idle:.2} s / {:.2} s / {cpu_per_round:.2} s |", cpu_synced - cpu_idle);
    drop(clients);
    drop(control);
    let _ = std::fs::remove_dir_all(&dir);
}
