//! Active health checks over real sockets: upstreams whose `/healthz` (and, for gRPC,
//! Python grpcio servers whose standard health service) fail on command, or that stop
//! accepting; each check is shown to take an
//! endpoint out of the balancer and to bring it back. Also the panic threshold, new
//! endpoints waiting for their first check, and health kept across a reload.
//!
//! Clusters balance round robin, so N requests in a row reach every eligible endpoint
//! when there are N of them: a probe of that size tells exactly who is in.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::grpc_kit::{GrpcClient, Msg, PythonHealthServer};
use sinew_integration::probe::{reached_ok as reached, set, wait_for};
use sinew_integration::{OneRoute, TestClient, Upstream};
use tonic::Request;

const HTTP_CHECK: &str = "    health_checks:
      - timeout: 500ms
        interval: 50ms
        unhealthy_threshold: 3
        healthy_threshold: 2
        http_health_check: {path: /healthz}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_takes_a_failing_endpoint_out_and_back_after_the_thresholds() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster(HTTP_CHECK)
        .start()
        .await;
    let client = TestClient::http1();
    assert_eq!(reached(&client, addr, 4).await, set(&["a", "b"]));

    let before = b.health_checks();
    b.set_healthy(false);
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    assert!(
        b.health_checks() >= before + 3,
        "out after fewer than unhealthy_threshold (3) failed checks: {} then {}",
        before,
        b.health_checks()
    );
    // Out means no traffic at all, while its checks go on.
    let tally =
        sinew_integration::tally(&client, addr, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!(tally.count("b"), 0, "{tally:?}");
    assert_eq!(tally.count("a"), 20, "{tally:?}");

    let before = b.health_checks();
    b.set_healthy(true);
    wait_for("b returns", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
    assert!(
        b.health_checks() >= before + 2,
        "back after fewer than healthy_threshold (2) passed checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_sends_and_expects_bytes() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // "GET /healthz HTTP/1.1\r\nHost: hc\r\n\r\n" out, "HTTP/1.1 200" back, in hex as Envoy.
    let send: String = b"GET /healthz HTTP/1.1\r\nHost: hc\r\n\r\n"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cluster = format!(
        "    health_checks:
      - timeout: 500ms
        interval: 50ms
        unhealthy_threshold: 1
        healthy_threshold: 1
        tcp_health_check:
          send: {{text: '{send}'}}
          receive: [{{text: '485454502f312e31'}}, {{text: '323030'}}]
"
    );
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster(&cluster)
        .start()
        .await;
    let client = TestClient::http1();
    assert_eq!(reached(&client, addr, 4).await, set(&["a", "b"]));
    assert!(b.health_checks() > 0, "the TCP check spoke to the upstream");

    b.set_healthy(false); // answers 503: "200" is not in the reply
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    b.set_healthy(true);
    wait_for("b returns", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_check_sees_refused_connections_and_the_restart() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster(
            "    health_checks:
      - {timeout: 300ms, interval: 50ms, unhealthy_threshold: 2, healthy_threshold: 2, tcp_health_check: {}}
",
        )
        .start()
        .await;
    let client = TestClient::http1();
    assert_eq!(reached(&client, addr, 4).await, set(&["a", "b"]));

    // Refuses new connections; the proxy's pooled connection to b would still work, so
    // only the check can tell.
    b.stop();
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    b.restart().await;
    wait_for("b returns", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}

/// Who answered `n` gRPC calls in a row through the proxy (the Python servers' names).
async fn reached_by_grpc(addr: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut client = GrpcClient::connect(addr).await;
    let mut who = BTreeSet::new();
    for _ in 0..n {
        let reply = client
            .unary("/sinew.test.Echo/Unary", Request::new(Msg::new("who", 0)))
            .await
            .expect("a gRPC answer");
        who.insert(reply.into_inner().text);
    }
    who
}

/// The servers are grpcio's own health service (`grpcio-health-checking`), not Sinew's
/// idea of it. No panic threshold: were the check's request or its reading of the
/// answer wrong, no endpoint would ever pass, and calls would fail rather than spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_check_follows_the_serving_status() {
    let a = PythonHealthServer::start("a", "sinew.test.Echo");
    let mut b = PythonHealthServer::start("b", "sinew.test.Echo");
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster(
            "    protocol: http2
    healthy_panic_threshold: 0
    health_checks:
      - timeout: 500ms
        interval: 50ms
        unhealthy_threshold: 1
        healthy_threshold: 1
        grpc_health_check: {service_name: sinew.test.Echo}
",
        )
        .start()
        .await;
    // Warming ran the first checks before the listener opened.
    assert_eq!(reached_by_grpc(addr, 4).await, set(&["a", "b"]));

    b.set_serving(false);
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached_by_grpc(addr, 2).await == set(&["a"])
    })
    .await;
    // Out means out: every call goes to a.
    assert_eq!(reached_by_grpc(addr, 10).await, set(&["a"]));
    b.set_serving(true);
    wait_for("b returns", Duration::from_secs(5), || async {
        reached_by_grpc(addr, 2).await == set(&["a", "b"])
    })
    .await;
}

/// A check of a service the server does not know (grpcio answers NOT_FOUND) fails: the
/// endpoint never takes traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_check_of_a_service_the_server_does_not_know_fails() {
    let a = PythonHealthServer::start("a", "sinew.test.Echo");
    let (_proxy, addr) = OneRoute::to(&[a.addr])
        .cluster(
            "    protocol: http2
    healthy_panic_threshold: 0
    health_checks:
      - {timeout: 500ms, interval: 50ms, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {service_name: sinew.test.Other}}
",
        )
        .start()
        .await;
    let mut client = GrpcClient::connect(addr).await;
    for _ in 0..5 {
        let status = client
            .unary("/sinew.test.Echo/Unary", Request::new(Msg::new("who", 0)))
            .await
            .expect_err("no healthy endpoint");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_endpoints_take_no_traffic_before_their_first_check_passes() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    b.set_healthy(false);
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster(HTTP_CHECK)
        .start()
        .await;
    let client = TestClient::http1();
    // The very first requests: warming ran the first round before the listener opened.
    let tally =
        sinew_integration::tally(&client, addr, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!(tally.count("b"), 0, "{tally:?}");
    assert_eq!(b.requests(), 0);
    // One pass is enough for a new endpoint (healthy_threshold is 2).
    b.set_healthy(true);
    wait_for("b joins", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_threshold_spreads_load_over_all_endpoints_when_too_few_are_healthy() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let check = "    health_checks:
      - {timeout: 300ms, interval: 50ms, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}
";
    let (_proxy, addr) = OneRoute::to(&addrs).cluster(check).start().await;
    let client = TestClient::http1();
    ups[1].set_healthy(false);
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached(&client, addr, 3).await == set(&["a", "c", "d"])
    })
    .await;
    // One healthy of four is 25%, under the default 50%: balance over all four.
    ups[2].set_healthy(false);
    ups[3].set_healthy(false);
    wait_for("panic spreads over all", Duration::from_secs(5), || async {
        reached(&client, addr, 4).await == set(&["a", "b", "c", "d"])
    })
    .await;
    // Two of four healthy again is 50%: out of panic, b (still failing) stays out.
    ups[2].set_healthy(true);
    ups[3].set_healthy(true);
    wait_for("panic ends", Duration::from_secs(5), || async {
        reached(&client, addr, 3).await == set(&["a", "c", "d"])
    })
    .await;

    // With panic disabled, the one healthy endpoint takes everything.
    let (_proxy, addr) = OneRoute::to(&addrs)
        .cluster(&format!("{check}    healthy_panic_threshold: 0\n"))
        .start()
        .await;
    ups[2].set_healthy(false);
    ups[3].set_healthy(false);
    wait_for("only a", Duration::from_secs(5), || async {
        reached(&client, addr, 4).await == set(&["a"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_kept_across_a_reload_keep_their_health() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let route = OneRoute::to(&[a.addr, b.addr]).cluster(HTTP_CHECK);
    let (proxy, addr) = route.start().await;
    let client = TestClient::http1();
    b.set_healthy(false);
    wait_for("b leaves", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    // New connection settings (so new endpoint states) and a check so slow it cannot
    // have run again: b must still be out, on what the old cluster knew.
    let slow = route.clone().cluster(
        "    connect_timeout: 2s
    health_checks:
      - {timeout: 500ms, interval: 1m, http_health_check: {path: /healthz}}
",
    );
    proxy.reload(&slow.yaml()).await.expect("reload");
    let tally =
        sinew_integration::tally(&client, addr, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!(tally.count("b"), 0, "{tally:?}");
    // And back on the fast check, b returns once it passes.
    proxy.reload(&route.yaml()).await.expect("reload");
    b.set_healthy(true);
    wait_for("b returns", Duration::from_secs(5), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}
