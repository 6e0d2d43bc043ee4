//! The overload manager, run by the real binary: a heap budget far below the proxy's heap
//! turns its actions on (requests answered 503 `envoy overloaded`, keep-alive off, new
//! connections closed), one far above leaves traffic alone, and `/metrics` shows the
//! pressure and each action's state. Driven with curl over loopback.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::admin_kit::sample;
use sinew_integration::{
    free_port, scratch_dir, shell, start_proxy_file, ChildGuard, TestClient, Upstream,
};

/// An Envoy bootstrap with one HTTP listener to `upstream`, an admin port and
/// `overload_manager` with the fixed heap monitor at `max_heap` and `actions`.
fn bootstrap(
    listener: u16,
    admin: u16,
    upstream: SocketAddr,
    max_heap: u64,
    actions: &str,
) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listener} }} }}
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
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{cluster}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
overload_manager:
  refresh_interval: 0.1s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: {max_heap}
  actions:
{actions}"#,
        cluster = sinew_integration::envoy_static_cluster("app", upstream),
    )
}

fn action(name: &str) -> String {
    format!(
        "  - name: envoy.overload_actions.{name}\n    triggers:\n    - name: envoy.resource_monitors.fixed_heap\n      threshold: {{ value: 0.95 }}\n"
    )
}

/// Starts the binary on `text` and waits for its admin API.
async fn start(label: &str, text: &str, admin: SocketAddr) -> ChildGuard {
    let file = scratch_dir(label).join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let proxy = start_proxy_file(&file);
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.try_get(admin, "/ready", &[]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy
}

/// `curl -si` on a URL: the status line, headers and body, or curl's own exit code.
async fn curl(url: String) -> String {
    shell(format!(
        "curl -si --max-time 5 {url}; echo \"curl exit $?\""
    ))
    .await
}

async fn metrics(admin: SocketAddr) -> String {
    TestClient::http1().get(admin, "/metrics", &[]).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heap_far_above_its_budget_answers_new_requests_503_and_shows_the_action_active() {
    let upstream = Upstream::start("app").await;
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    // 64 KiB: the proxy's heap is megabytes, so the pressure is far above 1.
    let text = bootstrap(
        port,
        admin_port,
        upstream.addr,
        64 * 1024,
        &action("stop_accepting_requests"),
    );
    let _proxy = start("overload-503", &text, admin).await;

    let out = curl(format!("http://127.0.0.1:{port}/")).await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("envoy overloaded"), "{out}");
    assert_eq!(
        upstream.requests(),
        0,
        "a refused request reaches no upstream"
    );

    let m = metrics(admin).await;
    let active = [("action", "stop_accepting_requests")];
    assert_eq!(
        sample(&m, "sinew_overload_action_active", &active),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "sinew_overload_action_scale_percent", &active),
        Some(100.0)
    );
    let pressure = sample(&m, "sinew_overload_pressure", &[("monitor", "fixed_heap")]).unwrap();
    assert!(pressure > 1.0, "pressure {pressure}");
    assert!(sample(&m, "sinew_overload_heap_used_bytes", &[]).unwrap() > 64.0 * 1024.0);
    assert!(
        sample(&m, "sinew_overload_rq_rejected_total", &[]).unwrap() >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heap_far_below_its_budget_serves_and_shows_every_action_inactive() {
    let upstream = Upstream::start("app").await;
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let actions = [
        "stop_accepting_requests",
        "disable_http_keepalive",
        "stop_accepting_connections",
        "reject_incoming_connections",
        "shrink_heap",
    ]
    .map(action)
    .concat();
    // 1 TiB.
    let text = bootstrap(port, admin_port, upstream.addr, 1 << 40, &actions);
    let _proxy = start("overload-200", &text, admin).await;

    let out = curl(format!("http://127.0.0.1:{port}/")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    let m = metrics(admin).await;
    for name in [
        "stop_accepting_requests",
        "disable_http_keepalive",
        "reject_incoming_connections",
    ] {
        assert_eq!(
            sample(&m, "sinew_overload_action_active", &[("action", name)]),
            Some(0.0),
            "{name}: {m}"
        );
    }
    let pressure = sample(&m, "sinew_overload_pressure", &[("monitor", "fixed_heap")]).unwrap();
    assert!(pressure > 0.0 && pressure < 0.01, "pressure {pressure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_off_closes_each_response_and_rejected_connections_get_no_answer() {
    let upstream = Upstream::start("app").await;
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let text = bootstrap(
        port,
        admin_port,
        upstream.addr,
        64 * 1024,
        &action("disable_http_keepalive"),
    );
    let proxy = start("overload-keepalive", &text, admin).await;
    let out = curl(format!("http://127.0.0.1:{port}/")).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    drop(proxy);

    // Sinew's own YAML this time: new connections are closed at accept.
    let (port, admin_port) = (free_port(), free_port());
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let yaml = format!(
        "admin: {{address: 127.0.0.1:{admin_port}}}
overload:
  refresh_interval: 100ms
  max_heap_size_bytes: 65536
  actions:
  - {{action: reject_incoming_connections, threshold: 0.95}}
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
clusters:
  - name: app
    endpoints: [{{address: {}}}]
",
        upstream.addr
    );
    let file = scratch_dir("overload-reject").join("sinew.yaml");
    std::fs::write(&file, yaml).unwrap();
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
    let out = curl(format!("http://127.0.0.1:{port}/")).await;
    assert!(!out.contains("HTTP/1.1"), "{out}");
    assert!(
        out.contains("curl exit 52") || out.contains("curl exit 56"),
        "{out}"
    );
    let m = metrics(admin).await;
    assert!(
        sample(&m, "sinew_overload_cx_rejected_total", &[]).unwrap() >= 1.0,
        "{m}"
    );
}
