//! `sinew proxy -c envoy.yaml` with a cluster's `health_checks` in Envoy's spelling, run
//! by the real binary against two real upstreams: an endpoint whose `/healthz` answers
//! 503 leaves the balancer on that one answer (Envoy takes an endpoint that says it is
//! unhealthy out at once, whatever `unhealthy_threshold` says), one that stops accepting
//! leaves after `unhealthy_threshold` failed connects, and each comes back after
//! `healthy_threshold` passes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sinew_integration::probe::set;
use sinew_integration::{eventually, free_port, scratch_dir, TestClient, Upstream};

/// A listener on `listener` routing everything to cluster `app` at `endpoints`, checked
/// as Envoy's documentation writes a check.
fn bootstrap(listener: SocketAddr, endpoints: &[SocketAddr]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
                a.port()
            )
        })
        .collect();
    format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
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
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    connect_timeout: 0.25s
    type: STATIC
    lb_policy: ROUND_ROBIN
    health_checks:
    - timeout: 0.25s
      interval: 0.3s
      interval_jitter: 0.01s
      no_traffic_interval: 0.3s
      unhealthy_threshold: 3
      healthy_threshold: 2
      http_health_check:
        path: /healthz
        expected_statuses: [{{ start: 200, end: 300 }}]
        codec_client_type: HTTP1
        request_headers_to_add:
        - header: {{ key: x-health-check, value: envoy-style }}
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
{endpoints}"#,
        lport = listener.port(),
    )
}

/// Who answers `n` requests in a row (round robin: every endpoint in, for `n` of them);
/// failed requests count for nobody.
async fn reached(client: &TestClient, addr: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut who = BTreeSet::new();
    for _ in 0..n {
        let reply = client.get(addr, "/", &[]).await;
        if reply.status == 200 {
            who.insert(reply.header("x-upstream").unwrap_or("-").to_string());
        }
    }
    who
}

/// Polls (every 20 ms, for at most `deadline`) until the requests reach exactly `want`.
async fn until_reached(client: &TestClient, addr: SocketAddr, want: &[&str], deadline: Duration) {
    let start = Instant::now();
    loop {
        let got = reached(client, addr, 4).await;
        if got == set(want) {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "still reaching {got:?} after {deadline:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_health_check_takes_an_endpoint_out_on_a_503_and_after_refused_connects_and_back()
{
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = scratch_dir("envoy-health-checks").join("envoy.yaml");
    std::fs::write(&file, bootstrap(listener, &[a.addr, b.addr])).unwrap();
    let _proxy = sinew_integration::start_proxy_file(&file);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            listener
        )
        .is_ok())
        .await,
        "nothing listens on {listener}"
    );
    let client = TestClient::http1();
    until_reached(&client, listener, &["a", "b"], Duration::from_secs(10)).await;
    assert!(a.health_checks() >= 1 && b.health_checks() >= 1);

    // b says it is unhealthy: one answer is enough, as in Envoy.
    let before = b.health_checks();
    b.set_healthy(false);
    until_reached(&client, listener, &["a"], Duration::from_secs(5)).await;
    let failed = b.health_checks() - before;
    assert!(
        failed < 3,
        "out after {failed} unhealthy answers: it should not wait for unhealthy_threshold (3)"
    );
    // Out means no traffic at all while its checks go on.
    let t =
        sinew_integration::tally(&client, listener, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!((t.count("a"), t.count("b")), (20, 0), "{t:?}");

    // Healthy again: back after healthy_threshold (2) passes.
    let before = b.health_checks();
    b.set_healthy(true);
    until_reached(&client, listener, &["a", "b"], Duration::from_secs(5)).await;
    assert!(
        b.health_checks() >= before + 2,
        "back after fewer than healthy_threshold (2) passes"
    );

    // b stops accepting: refused connects count towards unhealthy_threshold, and b
    // leaves. Until then a request sent to b fails (503): wait until none does.
    b.stop();
    let stopped = Instant::now();
    loop {
        let t =
            sinew_integration::tally(&client, listener, "/", &[], 10, 2, Duration::from_secs(10))
                .await;
        if (t.count("a"), t.errors, t.non_2xx) == (10, 0, 0) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "b never left: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t =
        sinew_integration::tally(&client, listener, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!((t.count("a"), t.errors, t.non_2xx), (20, 0, 0), "{t:?}");

    // It accepts again and passes: back.
    b.restart().await;
    until_reached(&client, listener, &["a", "b"], Duration::from_secs(5)).await;
}
