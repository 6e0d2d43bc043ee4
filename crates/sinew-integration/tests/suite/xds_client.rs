//! The proxy steered over xDS by a control plane Sinew did not write: Python's grpcio
//! serving Envoy's types from the `envoy-data-plane` package (generated from Envoy's own
//! .proto files). Each variant — state of the world or delta, over ADS or a stream per
//! type — serves traffic from what it was sent, ACKs it, NACKs a listener with an HTTP
//! filter Sinew does not run (naming the resource and field) while the last good config
//! keeps serving, and then takes the next good update.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sinew_integration::python_xds::PythonControlPlane;
use sinew_integration::{admin_kit, free_port, sinew_binary, ChildGuard, TestClient, Upstream};

fn start_proxy(control_plane: &str, node: &str, variant: &str, streams: &str) -> ChildGuard {
    start_proxy_with_admin(control_plane, node, variant, streams).0
}

/// The proxy with an admin API (from a static `-c` file), and the admin's address.
fn start_proxy_with_admin(
    control_plane: &str,
    node: &str,
    variant: &str,
    streams: &str,
) -> (ChildGuard, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = std::env::temp_dir().join(format!("sinew-xds-admin-{node}-{}.yaml", admin.port()));
    std::fs::write(&file, format!("admin: {{address: '{admin}'}}\n")).unwrap();
    let child = Command::new(sinew_binary())
        .args(["proxy", "--xds", control_plane, "--node-id", node])
        .arg("-c")
        .arg(&file)
        .args(["--xds-variant", variant, "--xds-streams", streams])
        .stdout(Stdio::null())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start sinew");
    (ChildGuard(child), admin)
}

/// Waits until requests to `addr` are answered by the upstream called `name`.
async fn served_by(addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        match TestClient::http1().try_get(addr, "/", &[]).await {
            Ok(reply) if reply.status == 200 && reply.text().trim_end() == name => return,
            Ok(reply) => last = format!("{} {}", reply.status, reply.text()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} was not served by {name} within 15 s; last answer: {last}");
}

fn text<'a>(request: &'a Value, field: &str) -> &'a str {
    request[field].as_str().unwrap_or("")
}

fn is_ack(request: &Value, kind: &str, version: &str) -> bool {
    let acked = text(request, "type") == kind
        && request["error"].is_null()
        && !text(request, "nonce").is_empty();
    // Delta ACKs carry no version; state of the world ACKs carry the one accepted.
    acked && (request["stream"] == "delta" || text(request, "version") == version)
}

async fn steered(variant: &str, streams: &str) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut control_plane = PythonControlPlane::start(0);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    control_plane.push("1", port, &[a.addr], false);
    let node = format!("node-{variant}-{streams}");
    let (_proxy, admin) = start_proxy_with_admin(&control_plane.url(), &node, variant, streams);

    served_by(addr, "a").await;
    for kind in ["CDS", "EDS", "LDS", "RDS"] {
        control_plane
            .wait_for(&format!("ACKing {kind} version 1"), |r| {
                is_ack(r, kind, "1")
            })
            .await;
    }
    assert!(
        control_plane
            .requests()
            .iter()
            .any(|r| r["node"] == node.as_str()),
        "the node id reached the control plane"
    );
    let expected_streams = if streams == "ads" { "one" } else { "four" };
    let first_requests = control_plane
        .requests()
        .iter()
        .filter(|r| !r["node"].is_null())
        .count();
    assert_eq!(
        first_requests,
        if streams == "ads" { 1 } else { 4 },
        "{expected_streams} stream(s), each presenting the node once"
    );

    // A listener Sinew cannot run: NACKed by name and field, the old config serving on.
    control_plane.push("2", port, &[a.addr], true);
    let nack = control_plane
        .wait_for("NACKing LDS version 2", |r| {
            text(r, "type") == "LDS" && !r["error"].is_null()
        })
        .await;
    let error = text(&nack, "error");
    assert!(
        error.starts_with(
            "listener \"web\": filter_chains[0].filters[0].typed_config.http_filters[0]: "
        ) && error.contains("envoy.filters.http.lua"),
        "{error}"
    );
    if variant == "sotw" {
        assert_eq!(
            text(&nack, "version"),
            "1",
            "a NACK carries the last accepted version"
        );
    }
    for _ in 0..20 {
        let reply = TestClient::http1().get(addr, "/", &[]).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "a\n"));
    }

    // The next good update goes in.
    control_plane.push("3", port, &[b.addr], false);
    served_by(addr, "b").await;
    control_plane
        .wait_for("ACKing EDS version 3", |r| is_ack(r, "EDS", "3"))
        .await;

    // Counted: the NACKed listener, and the accepted updates with their apply time.
    let metrics = admin_kit::metrics(admin).await;
    let updates = |kind, result| {
        admin_kit::value(
            &metrics,
            "sinew_xds_updates_total",
            &[("type", kind), ("result", result)],
        )
    };
    assert_eq!(updates("LDS", "rejected"), 1.0);
    assert!(updates("EDS", "accepted") >= 2.0);
    let eds = [("type", "EDS")];
    assert!(admin_kit::value(&metrics, "sinew_xds_update_apply_seconds_count", &eds) >= 2.0);
    assert!(admin_kit::value(&metrics, "sinew_xds_update_apply_seconds_sum", &eds) > 0.0);
}

#[tokio::test]
async fn state_of_the_world_over_ads_from_a_python_control_plane() {
    steered("sotw", "ads").await;
}

#[tokio::test]
async fn delta_over_ads_from_a_python_control_plane() {
    steered("delta", "ads").await;
}

#[tokio::test]
async fn state_of_the_world_over_per_type_streams_from_a_python_control_plane() {
    steered("sotw", "per-type").await;
}

#[tokio::test]
async fn delta_over_per_type_streams_from_a_python_control_plane() {
    steered("delta", "per-type").await;
}

/// The control plane dies: the proxy serves on with what it has, reconnects with backoff,
/// tells the new one what it holds, and takes its updates; the connection metrics follow.
#[tokio::test]
async fn a_lost_control_plane_leaves_the_config_serving_and_the_proxy_reconnects() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut control_plane = PythonControlPlane::start(0);
    let xds_port = control_plane.port;
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    control_plane.push("1", port, &[a.addr], false);
    let (_proxy, admin) =
        start_proxy_with_admin(&control_plane.url(), "reconnecting", "sotw", "ads");
    served_by(addr, "a").await;
    control_plane
        .wait_for("ACKing EDS version 1", |r| is_ack(r, "EDS", "1"))
        .await;
    let connections = |metrics: &str, event| {
        admin_kit::value(metrics, "sinew_xds_connections_total", &[("event", event)])
    };
    let metrics = admin_kit::metrics(admin).await;
    assert_eq!(
        admin_kit::value(&metrics, "sinew_xds_streams_connected", &[]),
        1.0
    );
    assert_eq!(connections(&metrics, "connected"), 1.0);
    drop(control_plane);

    for _ in 0..20 {
        let reply = TestClient::http1().get(addr, "/", &[]).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "a\n"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The loss and the failed reconnects are counted.
    let metrics = admin_kit::metrics(admin).await;
    assert_eq!(
        admin_kit::value(&metrics, "sinew_xds_streams_connected", &[]),
        0.0
    );
    assert_eq!(connections(&metrics, "lost"), 1.0);
    assert!(connections(&metrics, "failed") >= 1.0, "{metrics}");

    let mut control_plane = PythonControlPlane::start(xds_port);
    let hello = control_plane
        .wait_for("opening a new stream", |r| r["node"] == "reconnecting")
        .await;
    assert_eq!(
        text(&hello, "version"),
        "1",
        "the new stream says what the proxy holds: {hello}"
    );
    control_plane.push("2", port, &[b.addr], false);
    served_by(addr, "b").await;
    let metrics = admin_kit::metrics(admin).await;
    assert_eq!(
        admin_kit::value(&metrics, "sinew_xds_streams_connected", &[]),
        1.0
    );
    assert_eq!(connections(&metrics, "connected"), 2.0);
}

/// Envoy's `initial_fetch_timeout`: a listener whose route configuration never comes,
/// and a cluster whose endpoints never come, stop warming when it runs out — the
/// listener answers 404 (no routes), then 503 (routes, no endpoints) — and take what
/// arrives late.
#[tokio::test]
async fn warming_stops_at_the_initial_fetch_timeout_and_late_resources_still_go_in() {
    let a = Upstream::start("a").await;
    let mut control_plane = PythonControlPlane::start(0);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let snapshot = |version: &str, withhold: &[&str]| {
        serde_json::json!({
            "version": version, "listener_port": port, "endpoints": [a.addr.to_string()],
            "bad": false, "withhold": withhold, "initial_fetch_timeout": "1s",
        })
    };
    control_plane.push_snapshot(snapshot("1", &["RDS", "EDS"]));
    let started = Instant::now();
    let _proxy = start_proxy(&control_plane.url(), "impatient", "sotw", "ads");
    let answer = || async {
        match TestClient::http1().try_get(addr, "/", &[]).await {
            Ok(reply) => reply.status.as_u16(),
            Err(_) => 0,
        }
    };
    let until = |expected: u16| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = answer().await;
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {expected} within 15 s; last {got}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    until(404).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the listener waited its second for routes: {:?}",
        started.elapsed()
    );
    // Routes arrive; the cluster waited out its endpoints too, so it has none.
    control_plane.push_snapshot(snapshot("2", &["EDS"]));
    until(503).await;
    control_plane.push_snapshot(snapshot("3", &[]));
    served_by(addr, "a").await;
}
