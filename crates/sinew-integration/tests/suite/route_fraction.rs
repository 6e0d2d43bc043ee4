//! A route's `runtime_fraction`, run by the real binary: a first route at 0 % never
//! takes a request and the next route gets them all; a first route whose runtime key a
//! static layer sets to 100 % takes every one. Requests sent with curl.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::{free_port, scratch_dir, shell, start_proxy_file, TestClient, Upstream};

fn listener(name: &str, port: u16, key: &str) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: /
                  runtime_fraction:
                    default_value: {{ numerator: 0, denominator: HUNDRED }}
                    runtime_key: {key}
                route: {{ cluster: canary }}
              - match: {{ prefix: / }}
                route: {{ cluster: stable }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_zero_percent_never_matches_and_one_at_a_hundred_always_does() {
    let stable = Upstream::start("stable").await;
    let canary = Upstream::start("canary").await;
    let (zero, hundred, admin_port) = (free_port(), free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let text = format!(
        "static_resources:\n  listeners:\n{}{}  clusters:\n{}{}admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\nlayered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      routing.hundred.canary: 100\n",
        listener("zero", zero, "routing.zero.canary"),
        listener("hundred", hundred, "routing.hundred.canary"),
        sinew_integration::envoy_static_cluster("stable", stable.addr),
        sinew_integration::envoy_static_cluster("canary", canary.addr),
    );
    let file = scratch_dir("route-fraction").join("envoy.yaml");
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
    let bodies = |port: u16| {
        shell(format!(
            "for i in $(seq 1 20); do curl -s --max-time 5 http://127.0.0.1:{port}/; echo; done"
        ))
    };
    let zero_bodies = bodies(zero).await;
    assert_eq!(
        zero_bodies.lines().filter(|l| *l == "stable").count(),
        20,
        "{zero_bodies}"
    );
    let hundred_bodies = bodies(hundred).await;
    assert_eq!(
        hundred_bodies.lines().filter(|l| *l == "canary").count(),
        20,
        "{hundred_bodies}"
    );
}
