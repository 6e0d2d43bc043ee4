//! A bootstrap's `layered_runtime`, run by the real binary: a static layer's values
//! steer a mirror policy's `runtime_fraction` and set a listener's connection limit; the admin
//! layer changes them through `/runtime_modify`, and `/runtime` shows the layers.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sinew_integration::{
    eventually, free_port, scratch_dir, sinew_binary, start_proxy_file, TestClient, Upstream,
};

fn bootstrap(
    listener: u16,
    admin: u16,
    stable: SocketAddr,
    canary: SocketAddr,
    layers: &str,
) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route:
                  cluster: stable
                  request_mirror_policies:
                  - cluster: canary
                    runtime_fraction:
                      default_value: {{ numerator: 0, denominator: HUNDRED }}
                      runtime_key: mirror.canary
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{stable}{canary}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
layered_runtime:
  layers:
{layers}"#,
        stable = sinew_integration::envoy_static_cluster("stable", stable),
        canary = sinew_integration::envoy_static_cluster("canary", canary),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_layer_steers_a_mirror_fraction_and_a_connection_limit_and_the_admin_layer_changes_them(
) {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let (port, admin_port) = (free_port(), free_port());
    let listener = SocketAddr::from(([127, 0, 0, 1], port));
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let layers = "  - name: static\n    static_layer:\n      mirror.canary: 100\n      envoy:\n        resource_limits:\n          listener:\n            web:\n              connection_limit: 1\n  - name: admin\n    admin_layer: {}\n";
    let file = scratch_dir("runtime-layers").join("envoy.yaml");
    std::fs::write(
        &file,
        bootstrap(port, admin_port, stable.addr, canary.addr, layers),
    )
    .unwrap();
    let _proxy = start_proxy_file(&file);
    let admin_client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin_client.try_get(admin, "/ready", &[]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // connection_limit 1: while one connection is open, a second is closed at accept
    // without an answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = tokio::net::TcpStream::connect(listener).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut second = tokio::net::TcpStream::connect(listener).await.unwrap();
    let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("the second connection is closed, not left waiting");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the second connection was served"
    );
    drop((first, second));

    // The static layer's 100 overrides the mirror policy's default of 0: every request
    // is copied to canary.
    let client = TestClient::http1();
    let served = |client: &TestClient| {
        let client = client.clone();
        async move {
            // The limit is 1: a connection just closed may not be gone yet.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(reply) = client.try_get(listener, "/", &[]).await {
                    assert_eq!(reply.header("x-upstream"), Some("stable"));
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no request was served"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for _ in 0..5 {
        served(&client).await;
    }
    assert_eq!(stable.requests(), 6);
    assert!(
        eventually(Duration::from_secs(5), || canary.requests() == 6).await,
        "canary got {} copies of 6",
        canary.requests()
    );

    // The admin layer wins over the static one: at 0, nothing more is copied.
    let modified = admin_client
        .send(
            http::Method::POST,
            admin,
            "/runtime_modify?mirror.canary=0",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(modified.status, 200, "{}", modified.text());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = sinew_integration::admin_kit::metrics(admin).await;
        let reloads =
            sinew_integration::admin_kit::sample(&text, "sinew_server_reloads_total", &[]);
        if reloads.unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runtime change was never mapped and reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reloaded config reaches each worker on its own time (a request or two may
    // still be copied): wait until a request is not copied, then no request is.
    drop(client);
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = canary.requests();
        served(&client).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if canary.requests() == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests were still copied 10 s after the admin layer set 0"
        );
    }
    let copies = canary.requests();
    for _ in 0..5 {
        served(&client).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        canary.requests(),
        copies,
        "copies made after the admin layer's 0 was in force"
    );

    let shown = admin_client.get(admin, "/runtime", &[]).await;
    let json: serde_json::Value = serde_json::from_str(&shown.text()).unwrap();
    assert_eq!(json["layers"], serde_json::json!(["static", "admin"]));
    assert_eq!(
        json["entries"]["mirror.canary"],
        serde_json::json!({"final_value": "0", "layer_values": ["100", "0"]})
    );
}

#[test]
fn validate_refuses_runtime_keys_sinew_does_not_read_and_disk_layers() {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let layers = "  - name: static\n    static_layer:\n      overload.global_downstream_max_connections: 100\n      envoy.reloadable_features.some_flag: true\n  - name: disk\n    disk_layer: { symlink_root: /srv/runtime/current }\n";
    let file = scratch_dir("runtime-layers-validate").join("envoy.yaml");
    std::fs::write(&file, bootstrap(8080, 9901, upstream, upstream, layers)).unwrap();
    let out = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("layered_runtime.layers[0].static_layer: runtime key \"overload.global_downstream_max_connections\": Sinew does not read it"),
        "{stderr}"
    );
    assert!(
        stderr.contains("layered_runtime.layers[1].disk_layer: is not supported by Sinew"),
        "{stderr}"
    );
    assert!(!stderr.contains("some_flag"), "{stderr}");
    assert!(stderr.contains("2 problems to solve"), "{stderr}");
}
