//! One proxy applying large EDS updates (`bench/eds-apply`): a real `sinew proxy` steered
//! by a real `sinew control` (directory registry) holds a cluster of N endpoints; each
//! round rewrites that service's file with N different endpoints, and the control plane
//! pushes the new assignment. Meanwhile a steady load of keep-alive requests flows
//! through the same proxy to another cluster (one real upstream).
//!
//! Reported: the proxy's own apply time for each EDS update (its
//! `sinew_xds_update_apply_seconds` histogram: from the handler receiving the decoded
//! response to the new config serving), and the latency of the traffic in the windows
//! around the updates against the rest of the run.
//!
//! A benchmark, not a test: nothing here passes or fails on time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sinew_integration::{
    admin_kit, free_port, percentile, scratch_dir, sinew_binary, start_control, ChildGuard,
    TestClient, Upstream,
};

struct Args {
    endpoints: usize,
    rounds: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        endpoints: 10_000,
        rounds: 10,
        concurrency: 4,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = || {
            pair.get(1)
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match pair[0].as_str() {
            "--endpoints" => a.endpoints = value(),
            "--rounds" => a.rounds = value(),
            "--concurrency" => a.concurrency = value(),
            other => panic!("unknown argument {other}; see bench/README.md"),
        }
    }
    a
}

/// The big service's file: `n` endpoints, different ones each round.
fn big_service(n: usize, round: usize) -> String {
    let mut out = String::from("kind: Service\nname: big\nendpoints:\n");
    for e in 0..n {
        let port = 20000 + (round % 2) * 10000 + e % 10000;
        out.push_str(&format!(
            "  - {{address: '10.{}.{}.{}:{port}'}}\n",
            (e >> 16) & 0xff,
            (e >> 8) & 0xff,
            e & 0xff
        ));
    }
    out
}

/// `sum` and `count` of the proxy's EDS apply-time histogram.
async fn eds_applied(admin: SocketAddr) -> (f64, u64) {
    let text = admin_kit::metrics(admin).await;
    let series = |name| admin_kit::sample(&text, name, &[("type", "EDS")]).unwrap_or(0.0);
    (
        series("sinew_xds_update_apply_seconds_sum"),
        series("sinew_xds_update_apply_seconds_count") as u64,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let web = Upstream::start("web").await;
    let dir = scratch_dir("eds-apply");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let xds = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("services/web.yaml"),
        format!(
            "kind: Service\nname: web\nendpoints: [{{address: '{}'}}]\n",
            web.addr
        ),
    )
    .unwrap();
    std::fs::write(dir.join("services/big.yaml"), big_service(a.endpoints, 0)).unwrap();
    std::fs::write(
        dir.join("services/edge.yaml"),
        format!(
            "kind: Listener\nname: edge\naddress: '{edge}'\nnodes: [edge]\nroutes:\n  - {{prefix: /big, service: big}}\n  - {{prefix: /, service: web}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("control.yaml"),
        format!("xds_address: {xds}\ndebounce: 20ms\nregistries:\n  - directory: services\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("proxy.yaml"),
        format!("admin: {{address: '{admin}'}}\n"),
    )
    .unwrap();
    let _control = start_control(&dir.join("control.yaml"));
    let _proxy = ChildGuard(
        std::process::Command::new(sinew_binary())
            .args(["--workers", "1", "proxy", "--node-id", "edge", "--xds"])
            .arg(format!("http://{xds}"))
            .arg("-c")
            .arg(dir.join("proxy.yaml"))
            .stdout(std::process::Stdio::null())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("sinew proxy"),
    );
    let client = TestClient::http1();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.try_get(edge, "/", &[]).await {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < until, "the proxy never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, synced) = eds_applied(admin).await;
    eprintln!(
        "synced ({synced} EDS updates applied); load and {} rounds ...",
        a.rounds
    );

    // Steady load: `concurrency` keep-alive clients, each request timed with its start.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..a.concurrency {
        let (stop, samples) = (stop.clone(), samples.clone());
        load.push(tokio::spawn(async move {
            let client = TestClient::http1();
            let mut mine = Vec::new();
            // Bounded in count as well as time.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && mine.len() < 2_000_000 {
                let at = Instant::now();
                let r = client.try_get(edge, "/", &[]).await;
                let took = at.elapsed();
                if matches!(r, Ok(ref r) if r.status == 200) {
                    mine.push((at, took));
                }
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut windows = Vec::new();
    let mut applies = Vec::new();
    let (mut sum, mut count) = eds_applied(admin).await;
    for round in 1..=a.rounds {
        let text = big_service(a.endpoints, round);
        let written = Instant::now();
        std::fs::write(dir.join("services/big.yaml"), text).unwrap();
        let deadline = written + Duration::from_secs(20);
        loop {
            let (s, c) = eds_applied(admin).await;
            if c > count {
                applies.push(Duration::from_secs_f64((s - sum) / (c - count) as f64));
                (sum, count) = (s, c);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no EDS update applied"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The window: from the file write (the control plane reads, builds and pushes)
        // to 100 ms after the proxy reports it applied.
        windows.push((written, Instant::now() + Duration::from_millis(100)));
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }

    let samples = samples.lock().unwrap().clone();
    let (mut during, mut outside): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (at, took) in samples {
        let end = at + took;
        if windows.iter().any(|(from, to)| at < *to && end > *from) {
            during.push(took);
        } else {
            outside.push(took);
        }
    }
    during.sort();
    outside.sort();
    applies.sort();
    println!(
        "\n{} endpoints per EDS update, {} rounds, {} load connections\n",
        a.endpoints, a.rounds, a.concurrency
    );
    println!("| EDS apply time (proxy's histogram) | ms |");
    println!("| --- | --- |");
    println!("| median | {} |", ms(percentile(&applies, 0.5)));
    println!(
        "| max | {} |",
        ms(*applies.last().unwrap_or(&Duration::ZERO))
    );
    println!();
    println!("| traffic through the proxy | requests | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, d) in [
        ("outside the updates", &outside),
        ("during the updates", &during),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            d.len(),
            ms(percentile(d, 0.5)),
            ms(percentile(d, 0.99)),
            ms(percentile(d, 0.999)),
            ms(*d.last().unwrap_or(&Duration::ZERO))
        );
    }
    let ratio = percentile(&during, 0.99).as_secs_f64()
        / percentile(&outside, 0.99).as_secs_f64().max(1e-9);
    println!("\np99 during / p99 outside: {ratio:.2}");
}
