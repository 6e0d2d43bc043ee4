//! The admin API over real sockets: every endpoint, its errors, drain and health-check
//! failing, the config dump's redaction, reloads in `/server_info` and the metrics, and
//! log levels changed in the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use http::Method;
use sinew_integration::admin_kit::{self, value};
use sinew_integration::tls_kit::{TempDir, TestCa};
use sinew_integration::{
    eventually, free_port, sinew_binary, ChildGuard, OneRoute, TestClient, TestProxy, Upstream,
};

fn json(r: &sinew_integration::Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

async fn post(addr: std::net::SocketAddr, path: &str) -> sinew_integration::Reply {
    TestClient::http1()
        .send(Method::POST, addr, path, &[], bytes::Bytes::new())
        .await
}

#[tokio::test]
async fn ready_fails_after_healthcheck_fail_and_recovers_after_ok_while_traffic_flows() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let client = TestClient::http1();
    let ready = client.get(admin, "/ready", &[]).await;
    assert_eq!(
        (ready.status.as_u16(), ready.text().as_str()),
        (200, "LIVE\n")
    );
    assert_eq!(client.get(admin, "/healthz", &[]).await.status, 200);

    assert_eq!(post(admin, "/healthcheck/fail").await.status, 200);
    let ready = client.get(admin, "/ready", &[]).await;
    assert_eq!(
        (ready.status.as_u16(), ready.text().as_str()),
        (503, "FAILED\n")
    );
    assert_eq!(
        client.get(addr, "/", &[]).await.status,
        200,
        "a failed health check only tells load balancers; requests are still served"
    );
    let m = admin_kit::metrics(admin).await;
    assert_eq!(value(&m, "sinew_server_live", &[]), 0.0);

    assert_eq!(post(admin, "/healthcheck/ok").await.status, 200);
    assert_eq!(client.get(admin, "/ready", &[]).await.status, 200);
}

#[tokio::test]
async fn drain_closes_the_listeners_while_the_admin_api_keeps_answering() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let client = TestClient::http1();
    // One request in flight when the drain starts: it finishes.
    let slow = tokio::spawn(async move {
        TestClient::http1()
            .get(addr, "/", &[("x-test-delay-ms", "300")])
            .await
            .status
    });
    assert!(eventually(Duration::from_secs(2), || up.requests() == 1).await);

    let r = post(admin, "/drain?timeout=5s").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ready = client.get(admin, "/ready", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.text(), "DRAINING\n");
    assert_eq!(slow.await.unwrap(), 200, "the request in flight finished");
    let closed = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), closed)
        .await
        .expect("the listener's port closes");
    let info = json(&client.get(admin, "/server_info", &[]).await);
    assert_eq!(info["state"], "DRAINING");
}

#[tokio::test]
async fn unknown_paths_are_404_wrong_methods_405_and_bad_queries_400() {
    let up = Upstream::start("up").await;
    let (proxy, _addr) = OneRoute::to(&[up.addr]).start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let client = TestClient::http1();
    assert_eq!(client.get(admin, "/nope", &[]).await.status, 404);
    let wrong = client.get(admin, "/drain", &[]).await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("POST"));
    assert_eq!(post(admin, "/metrics").await.status, 405);
    let bad = post(admin, "/logging?level=loud").await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("level"), "{}", bad.text());
    assert_eq!(post(admin, "/logging").await.status, 400);
    assert_eq!(post(admin, "/drain?timeout=soon").await.status, 400);
    assert_eq!(
        client.get(admin, "/clusters?format=xml", &[]).await.status,
        400
    );
    assert_eq!(
        client.get(admin, "/ready", &[]).await.status,
        200,
        "none of the refused calls drained"
    );
    let index = client.get(admin, "/", &[]).await;
    assert!(index.text().contains("/config_dump"), "{}", index.text());
}

#[tokio::test]
async fn config_dump_shows_the_running_config_with_tls_private_keys_redacted() {
    let ca = TestCa::new("admin-dump");
    let cert = ca.issue("proxy", &["proxy.test"]);
    let up = Upstream::start("up").await;
    let config = OneRoute::to(&[up.addr]).listener(&format!(
        "    tls: {{cert: '{}', key: '{}'}}",
        cert.cert_path(),
        cert.key_path()
    ));
    let (proxy, _addr) = config.start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let r = TestClient::http1().get(admin, "/config_dump", &[]).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let dump = json(&r);
    assert_eq!(dump["version"], 1);
    let tls = &dump["config"]["listeners"][0]["tls"];
    assert_eq!(tls["cert"], cert.cert_path());
    assert_eq!(tls["key"], "[redacted]");
    assert!(!r.text().contains(cert.key_path()), "{}", r.text());
    assert_eq!(dump["config"]["clusters"][0]["name"], "svc");
}

#[tokio::test]
async fn reloads_bump_the_config_version_and_failed_ones_are_counted() {
    let up = Upstream::start("up").await;
    let config = OneRoute::to(&[up.addr]);
    let (proxy, _addr) = config.start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let client = TestClient::http1();
    let info = json(&client.get(admin, "/server_info", &[]).await);
    assert_eq!(info["config_version"], 1);
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    proxy.reload(&config.yaml()).await.unwrap();
    // Refused while compiling: a certificate that is not there.
    let bad = config
        .clone()
        .listener("    tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}");
    assert!(proxy.reload(&bad.yaml()).await.is_err());

    let info = json(&client.get(admin, "/server_info", &[]).await);
    assert_eq!(info["config_version"], 2);
    let m = admin_kit::metrics(admin).await;
    assert_eq!(value(&m, "sinew_server_config_version", &[]), 2.0);
    assert_eq!(value(&m, "sinew_server_reloads_total", &[]), 2.0);
    assert_eq!(value(&m, "sinew_server_reloads_failed_total", &[]), 1.0);
}

#[tokio::test]
async fn clusters_lists_endpoints_with_weight_health_and_requests_in_flight() {
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    let (proxy, addr) = OneRoute::to(&[good.addr, bad.addr])
        .cluster("    lb: round_robin\n    outlier_detection: {consecutive_5xx: 2, interval: 20ms, base_ejection_time: 10s}")
        .start()
        .await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    let client = TestClient::http1();
    for _ in 0..6 {
        client
            .get(
                addr,
                "/",
                &[("x-test-status", "500"), ("x-test-target", "bad")],
            )
            .await;
    }
    let bad_addr = bad.addr.to_string();
    let mut endpoints = serde_json::Value::Null;
    let mut ejected = false;
    for _ in 0..150 {
        endpoints =
            json(&client.get(admin, "/clusters", &[]).await)["clusters"][0]["endpoints"].clone();
        ejected = endpoints
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == bad_addr.as_str() && e["outlier_ejected"] == true);
        if ejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ejected, "bad is shown ejected: {endpoints}");
    let good_entry = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == good.addr.to_string().as_str())
        .unwrap();
    assert_eq!(good_entry["healthy"], true);
    assert_eq!(good_entry["weight"], 1);
    assert_eq!(good_entry["active_requests"], 0);

    let text = client.get(admin, "/clusters?format=text", &[]).await.text();
    assert!(
        text.contains(&format!(
            "svc::{bad_addr}::health_flags::/failed_outlier_check"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("svc::{}::health_flags::healthy", good.addr)),
        "{text}"
    );
}

#[tokio::test]
async fn stats_is_every_metric_sample_as_json() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let admin_server = admin_kit::start(&proxy).await;
    let admin = admin_server.address;
    TestClient::http1().get(addr, "/", &[]).await;
    let stats = json(&TestClient::http1().get(admin, "/stats", &[]).await);
    let ok = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["name"] == "sinew_cluster_upstream_rq_total" && s["labels"]["code_class"] == "2xx"
        })
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(ok["labels"]["cluster"], "svc");
    assert_eq!(ok["value"], 1.0);
}

#[tokio::test]
async fn the_binary_changes_its_log_level_through_logging() {
    let dir = TempDir::new("admin-logging");
    let admin_port = free_port();
    let config = dir.file("sinew.yaml");
    let yaml = format!(
        "{}admin: {{address: '127.0.0.1:{admin_port}'}}\n",
        OneRoute::to(&["127.0.0.1:9".parse().unwrap()]).yaml()
    );
    std::fs::write(&config, &yaml).unwrap();
    let stderr_path = dir.file("stderr");
    let child = Command::new(sinew_binary())
        .args(["proxy", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn sinew");
    let _guard = ChildGuard(child);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let client = TestClient::http1();
    let up = async {
        loop {
            if let Ok(r) = client.try_get(admin, "/ready", &[]).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ready = tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("admin up");
    assert_eq!(ready.status, 200);
    assert_eq!(client.get(admin, "/logging", &[]).await.text(), "warn\n");

    // At warn, a reload's "config applied" (info) is not logged; after ?sinew_proxy=info it is.
    let r = post(admin, "/logging?sinew_proxy=info").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "warn,sinew_proxy=info\n");
    assert_eq!(
        client.get(admin, "/logging", &[]).await.text(),
        "warn,sinew_proxy=info\n"
    );
    std::fs::write(&config, format!("{yaml}# changed\n")).unwrap();
    let logged = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&stderr_path).is_ok_and(|t| t.contains("config applied"))
    })
    .await;
    assert!(
        logged,
        "the reload is logged at info once sinew_proxy=info:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let m = admin_kit::metrics(admin).await;
    assert_eq!(value(&m, "sinew_server_config_version", &[]), 2.0);
}

#[tokio::test]
async fn an_embedded_proxy_without_log_control_answers_501_for_logging() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&OneRoute::to(&[up.addr]).yaml()).await;
    let admin = sinew_proxy::admin::AdminServer::start(
        proxy.proxy.clone(),
        "127.0.0.1:0".parse().unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        TestClient::http1()
            .get(admin.address, "/logging", &[])
            .await
            .status,
        501
    );
}
