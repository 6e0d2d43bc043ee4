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
    ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew proxy"),
    )
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
