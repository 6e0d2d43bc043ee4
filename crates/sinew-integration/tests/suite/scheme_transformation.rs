//! The connection manager's `scheme_header_transformation`, run by the real binary: with
//! `scheme_to_overwrite: https` the upstream sees `X-Forwarded-Proto: https` whatever the
//! client sent or its connection was; without it, the plaintext connection's `http`.
//! Requests sent with curl to an upstream that echoes what it received.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::{free_port, scratch_dir, shell, start_proxy_file, TestClient, Upstream};

fn listener(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{extra}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_to_overwrite_sets_the_forwarded_proto_the_upstream_sees() {
    let upstream = Upstream::start("app").await;
    let (overwritten, plain, admin_port) = (free_port(), free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let text = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n",
        listener(
            "overwritten",
            overwritten,
            "          scheme_header_transformation: { scheme_to_overwrite: https }\n"
        ),
        listener("plain", plain, ""),
        sinew_integration::envoy_static_cluster("app", upstream.addr),
    );
    let file = scratch_dir("scheme-transformation").join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let _proxy = start_proxy_file(&file);
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.try_get(admin, "/ready", &[]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let echo = |port: u16, proto: &str| {
        shell(format!(
            "curl -s --max-time 5 -H 'x-test-echo: 1' -H 'x-forwarded-proto: {proto}' http://127.0.0.1:{port}/x"
        ))
    };
    for sent in ["http", "gopher"] {
        let seen = echo(overwritten, sent).await;
        assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    }
    // Envoy's default (no trusted hops): from the downstream connection, plaintext.
    let seen = echo(plain, "https").await;
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
}
