//! The control plane's service model, end to end: a real `sinew control` reading a
//! directory registry, a real `sinew proxy` fed by it over xDS, real upstreams. Each
//! traffic-policy field of `kind: Service` (docs/control.md) is shown to act on the
//! proxy's traffic: `subsets` send a route only to the instances with the subset's
//! labels; `lb` changes who gets the requests (`least_request` steers away from a busy
//! instance where `round_robin` takes turns); `outlier_detection` ejects an instance
//! that fails; `circuit_breakers` answer 503 past `max_requests` and `max_connections`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::probe::wait_for;
use sinew_integration::{
    admin_kit, free_port, scratch_dir, sinew_binary, start_control, tally, ChildGuard, TestClient,
    Upstream,
};
use tokio::io::AsyncWriteExt;

/// A control plane with a directory registry, and one proxy it steers. The proxy's one
/// listener (`edge`) routes everything to service `web`, whose document the test writes.
struct Mesh {
    dir: PathBuf,
    edge: SocketAddr,
    /// The proxy's admin API.
    admin: SocketAddr,
    _control: ChildGuard,
    _proxy: ChildGuard,
}

impl Mesh {
    fn start(label: &str, web: &str) -> Mesh {
        let dir = scratch_dir(label);
        std::fs::create_dir_all(dir.join("services")).unwrap();
        let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        write(&dir.join("services/web.yaml"), web);
        write(
            &dir.join("services/edge.yaml"),
            &format!(
                "kind: Listener\nname: edge\naddress: {edge}\nroutes: [{{prefix: /, service: web}}]\n"
            ),
        );
        write(
            &dir.join("control.yaml"),
            &format!("xds_address: {xds}\ndebounce: 50ms\nregistries: [{{directory: services}}]\n"),
        );
        write(
            &dir.join("proxy.yaml"),
            &format!("admin: {{address: '{admin}'}}\n"),
        );
        let control = start_control(&dir.join("control.yaml"));
        let proxy = Command::new(sinew_binary())
            .args([
                "proxy",
                "--xds",
                &format!("http://{xds}"),
                "--node-id",
                "edge",
            ])
            .arg("-c")
            .arg(dir.join("proxy.yaml"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew proxy");
        Mesh {
            dir,
            edge,
            admin,
            _control: control,
            _proxy: ChildGuard(proxy),
        }
    }

    /// Rewrites service `web`'s document.
    fn web(&self, text: &str) {
        write(&self.dir.join("services/web.yaml"), text);
    }

    /// Waits until `n` requests in a row are answered 200 by exactly the upstreams
    /// `names` (the directory is polled every 500 ms, then xDS carries the change).
    async fn until_served_by(&self, names: &[&str], n: usize) {
        let expected: std::collections::BTreeSet<String> =
            names.iter().map(|s| s.to_string()).collect();
        let client = TestClient::http1();
        let edge = self.edge;
        let mut last = Default::default();
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let mut who = std::collections::BTreeSet::new();
                for _ in 0..n {
                    who.insert(match client.try_get(edge, "/", &[]).await {
                        Ok(r) if r.status == 200 => r.text().trim_end().to_string(),
                        Ok(r) => r.status.as_u16().to_string(),
                        Err(_) => "unreachable".into(),
                    });
                }
                if who == expected {
                    return;
                }
                last = who;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "not served by exactly {names:?} within 20 s; last: {last:?}"
        );
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    // Write then rename, so a poll never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn instances(list: &[(&Upstream, &str)]) -> String {
    list.iter()
        .map(|(u, version)| {
            format!(
                "  - {{address: '{}', labels: {{version: {version}}}}}\n",
                u.addr
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_send_a_route_only_to_the_instances_with_their_labels() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let endpoints = instances(&[(&a, "v1"), (&b, "v1"), (&c, "v2")]);
    let web = |subsets: &str| format!("kind: Service\nname: web\nendpoints:\n{endpoints}{subsets}");
    let mesh = Mesh::start("model-subsets", &web(""));
    mesh.until_served_by(&["a", "b", "c"], 6).await;

    mesh.web(&web(
        "subsets: [{name: canary, labels: {version: v2}, weight: 1}]\n",
    ));
    mesh.until_served_by(&["c"], 6).await;
    let client = TestClient::http1();
    let only_c = tally(&client, mesh.edge, "/", &[], 30, 2, Duration::from_secs(10)).await;
    assert_eq!(only_c.count("c"), 30, "{only_c:?}");

    mesh.web(&web(
        "subsets: [{name: stable, labels: {version: v1}, weight: 1}]\n",
    ));
    mesh.until_served_by(&["a", "b"], 6).await;
    let stable = tally(&client, mesh.edge, "/", &[], 30, 2, Duration::from_secs(10)).await;
    assert_eq!(stable.count("c"), 0, "{stable:?}");

    // Two subsets split by weight: 3 to v1 for 1 to v2.
    mesh.web(&web(
        "subsets:\n  - {name: stable, labels: {version: v1}, weight: 3}\n  - {name: canary, labels: {version: v2}, weight: 1}\n",
    ));
    mesh.until_served_by(&["a", "b", "c"], 12).await;
    let split = tally(
        &client,
        mesh.edge,
        "/",
        &[],
        400,
        4,
        Duration::from_secs(20),
    )
    .await;
    let v2 = split.count("c") as f64 / 400.0;
    assert!((0.15..=0.35).contains(&v2), "v2 share {v2}: {split:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_least_request_steers_away_from_a_busy_instance_where_round_robin_does_not() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let web = |lb: &str| {
        format!(
            "kind: Service\nname: web\nlb: {lb}\nendpoints: [{{address: '{}'}}, {{address: '{}'}}]\n",
            a.addr, b.addr
        )
    };
    let mesh = Mesh::start("model-lb", &web("round_robin"));
    mesh.until_served_by(&["a", "b"], 4).await;

    // b is made busy: requests that land on it stay 30 s (a answers them at once), sent
    // raw from many connections (so over every proxy worker) and never read.
    let edge = mesh.edge;
    let busy = |n: usize| async move {
        let mut held = Vec::new();
        for _ in 0..n {
            let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
            s.write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\nx-test-delay-ms: 30000\r\nx-test-target: b\r\n\r\n",
            )
            .await
            .unwrap();
            held.push(s);
        }
        held
    };
    let client = TestClient::http1();
    let held = busy(16).await;
    wait_for("b holds requests", Duration::from_secs(5), || async {
        b.requests() >= 4
    })
    .await;
    // Round robin takes turns whatever b's load.
    let turns = tally(&client, mesh.edge, "/", &[], 40, 1, Duration::from_secs(10)).await;
    assert!(
        (15..=25).contains(&turns.count("b")),
        "round robin gives b its turn: {turns:?}"
    );
    drop(held);

    mesh.web(&web("least_request"));
    // The change has arrived when b, busy, stops being picked.
    let held = busy(16).await;
    wait_for(
        "least_request avoids busy b",
        Duration::from_secs(20),
        || async {
            let t = tally(&client, mesh.edge, "/", &[], 20, 1, Duration::from_secs(10)).await;
            t.count("a") == 20
        },
    )
    .await;
    let steered = tally(&client, mesh.edge, "/", &[], 40, 1, Duration::from_secs(10)).await;
    assert_eq!(steered.count("a"), 40, "{steered:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_an_instance_that_fails() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let web = format!(
        "kind: Service\nname: web\nendpoints: [{{address: '{}'}}, {{address: '{}'}}]\n\
         outlier_detection: {{consecutive_5xx: 3, interval: 100ms, base_ejection_time: 30s, max_ejection_percent: 50}}\n",
        a.addr, b.addr
    );
    let mesh = Mesh::start("model-outlier", &web);
    mesh.until_served_by(&["a", "b"], 4).await;
    let client = TestClient::http1();
    // b answers 500 to these; a answers 200.
    let fail_b = [("x-test-status", "500"), ("x-test-target", "b")];
    let mut from_b = 0;
    for _ in 0..20 {
        let r = client.get(mesh.edge, "/", &fail_b).await;
        if r.status == 500 {
            from_b += 1;
        }
    }
    // The third failure wakes the detector's task, which ejects b (as Envoy's main
    // thread does, not the request's): a request sent meanwhile on a busy machine may
    // still reach b, so one more failure is allowed, never the twenty.
    assert!(
        (3..=4).contains(&from_b),
        "b failed three times, then was ejected: {from_b}"
    );
    let after = tally(&client, mesh.edge, "/", &[], 30, 2, Duration::from_secs(10)).await;
    assert_eq!(after.count("a"), 30, "{after:?}");
    let m = admin_kit::metrics(mesh.admin).await;
    assert_eq!(
        admin_kit::value(
            &m,
            "sinew_cluster_outlier_detection_ejections_total",
            &[("cluster", "web")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_answer_503_past_max_requests_and_max_connections() {
    let a = Upstream::start("a").await;
    let web = |breakers: &str| {
        format!(
            "kind: Service\nname: web\nendpoints: [{{address: '{}'}}]\ncircuit_breakers: {breakers}\n",
            a.addr
        )
    };
    let mesh = Mesh::start("model-breakers", &web("{max_requests: 2}"));
    mesh.until_served_by(&["a"], 2).await;
    let client = TestClient::http1();
    let edge = mesh.edge;
    let hold = |n: usize| async move {
        let mut held = Vec::new();
        for _ in 0..n {
            let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nx-test-delay-ms: 30000\r\n\r\n")
                .await
                .unwrap();
            held.push(s);
        }
        held
    };
    let gauge = |name: &'static str, value: f64| {
        let admin = mesh.admin;
        move || async move {
            let m = admin_kit::metrics(admin).await;
            admin_kit::sample(&m, name, &[("cluster", "web")]) == Some(value)
        }
    };

    // Two in flight: the third is refused at once, without reaching a. The probes above
    // give their request slots back only after their answers are written, a moment the
    // client cannot see: wait for that, or one of them could pass for a held request
    // (and make the second held one overflow in its place).
    wait_for(
        "the probes' requests to end",
        Duration::from_secs(5),
        gauge("sinew_cluster_upstream_rq_active", 0.0),
    )
    .await;
    let held = hold(2).await;
    wait_for(
        "two requests in flight",
        Duration::from_secs(5),
        gauge("sinew_cluster_upstream_rq_active", 2.0),
    )
    .await;
    let before = a.requests();
    let r = client.get(mesh.edge, "/", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(a.requests(), before, "the overflow reached the upstream");
    let m = admin_kit::metrics(mesh.admin).await;
    assert_eq!(
        admin_kit::value(
            &m,
            "sinew_cluster_upstream_rq_overflow_total",
            &[("cluster", "web")]
        ),
        1.0
    );
    drop(held);
    wait_for(
        "nothing in flight",
        Duration::from_secs(5),
        gauge("sinew_cluster_upstream_rq_active", 0.0),
    )
    .await;
    assert_eq!(client.get(mesh.edge, "/", &[]).await.status, 200);

    // One connection, one waiting request: the next is refused. (Under the old limits
    // the probe would overflow max_requests instead: only the pending-overflow counter
    // tells the new limits have arrived.)
    mesh.web(&web("{max_connections: 1, max_pending_requests: 1}"));
    let pending_overflows = || async {
        let m = admin_kit::metrics(mesh.admin).await;
        admin_kit::value(
            &m,
            "sinew_cluster_upstream_rq_pending_overflow_total",
            &[("cluster", "web")],
        )
    };
    wait_for("the new limits refuse", Duration::from_secs(20), || async {
        let held = hold(2).await;
        let pending = gauge("sinew_cluster_upstream_rq_pending_active", 1.0);
        let mut waiting = false;
        for _ in 0..50 {
            if pending().await {
                waiting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = waiting && client.get(edge, "/", &[]).await.status == 503;
        drop(held);
        refused && pending_overflows().await >= 1.0
    })
    .await;
    // The held requests' one connection: a waited; a third was refused.
    let m = admin_kit::metrics(mesh.admin).await;
    assert!(
        admin_kit::value(
            &m,
            "sinew_cluster_upstream_cx_overflow_total",
            &[("cluster", "web")]
        ) >= 1.0,
        "{m}"
    );
}
