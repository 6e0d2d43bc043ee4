//! Upstream connection pools, counted from the upstream's side: HTTP/1.1 keep-alive reuse,
//! the idle cap and idle timeout, and HTTP/2 multiplexing within the configured and the
//! peer's stream limits.

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::{
    eventually, tally, OneRoute, TestClient, TestProxy, Upstream, UpstreamOptions,
};

/// A proxy routing everything to `up`; `cluster_extra` is appended to the cluster.
async fn proxy_to(up: &Upstream, cluster_extra: &str) -> (TestProxy, SocketAddr) {
    OneRoute::to(&[up.addr])
        .cluster(cluster_extra)
        .start()
        .await
}

#[tokio::test]
async fn sequential_http1_requests_reuse_one_upstream_connection() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "").await;
    let client = TestClient::http1();
    for i in 0..200 {
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.requests(), 200);
    assert_eq!(
        up.connections(),
        1,
        "every request should reuse the first connection"
    );
}

#[tokio::test]
async fn sequential_requests_from_new_downstream_connections_share_the_pool() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "").await;
    for _ in 0..20 {
        // A fresh client each time: a new downstream connection, the same upstream one.
        assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http1_load_opens_at_most_one_connection_per_concurrent_request() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "").await;
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[],
        2000,
        8,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert_eq!(up.requests(), 2000);
    assert!(
        (1..=8).contains(&up.connections()),
        "{} upstream connections for 8 concurrent clients",
        up.connections()
    );
}

/// A connection goes back to the pool when its response body ends, sometimes before its
/// connection task is ready for the next request; taken then, it must be waited for, not
/// closed and replaced. Under steady load from a fixed number of keep-alive clients, the
/// upstream sees no more connections than requests can be in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_on_two_workers_opens_no_more_connections_than_requests_in_flight() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "").await;
    let clients = 3;
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[],
        6000,
        clients,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert_eq!(up.requests(), 6000);
    assert!(
        (1..=clients).contains(&up.connections()),
        "{} upstream connections opened for {clients} keep-alive clients",
        up.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_idle_per_endpoint_bounds_the_connections_kept() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "    pool: {max_idle_per_endpoint: 2}").await;
    // Ten requests at once, each held 200 ms upstream: ten connections.
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[("x-test-delay-ms", "200")],
        10,
        10,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert_eq!(up.connections(), 10);
    // Once they are idle, only two stay open.
    let settled = eventually(Duration::from_secs(3), || up.open_connections() == 2).await;
    assert!(
        settled,
        "{} upstream connections still open, want 2",
        up.open_connections()
    );
    // The two kept ones serve the next requests.
    let client = TestClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    }
    assert_eq!(up.connections(), 10, "the idle connections were not reused");
}

#[tokio::test]
async fn pool_idle_timeout_closes_idle_upstream_connections() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "    pool: {idle_timeout: 300ms}").await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    assert_eq!(up.open_connections(), 1);
    let started = std::time::Instant::now();
    let closed = eventually(Duration::from_secs(4), || up.open_connections() == 0).await;
    assert!(closed, "the idle upstream connection was never closed");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed after {:?}, before its idle timeout",
        started.elapsed()
    );
    // A new connection serves the next request.
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn default_pool_keeps_idle_connections_open() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "").await;
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
    // Well within the default 60 s idle timeout, across a pruning tick (1 s).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(up.open_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_multiplexes_concurrent_requests_on_one_connection() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "    protocol: http2").await;
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[("x-test-delay-ms", "200")],
        50,
        50,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert_eq!(up.requests(), 50);
    assert_eq!(
        up.connections(),
        1,
        "50 concurrent requests from a cold pool should share one HTTP/2 connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_http2_upstream_multiplexes_concurrent_requests_on_one_connection() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "    protocol: http2").await;
    let client = TestClient::http1();
    let r = client.get(addr, "/", &[("x-test-echo", "1")]).await;
    assert!(r.text().contains("HTTP/2.0"), "{}", r.text());
    let t = tally(
        &client,
        addr,
        "/",
        &[("x-test-delay-ms", "200")],
        50,
        50,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pool_opens_more_connections_past_the_configured_stream_cap() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(
        &up,
        "    protocol: http2\n    pool: {http2_max_concurrent_streams: 5}",
    )
    .await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    let started = std::time::Instant::now();
    let t = tally(
        &client,
        addr,
        "/",
        &[("x-test-delay-ms", "300")],
        50,
        50,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert!(
        up.connections() >= 10,
        "50 concurrent requests at 5 streams per connection need 10 connections, got {}",
        up.connections()
    );
    // They ran side by side rather than queueing behind each other.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

/// An HTTP/2 upstream that allows 4 concurrent streams per connection.
async fn four_stream_upstream() -> Upstream {
    Upstream::start_with_options(
        "up",
        "127.0.0.1:0".parse().unwrap(),
        UpstreamOptions {
            h2_max_concurrent_streams: Some(4),
            ..UpstreamOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pool_honours_the_peers_max_concurrent_streams() {
    let up = four_stream_upstream().await;
    let (_proxy, addr) = proxy_to(&up, "    protocol: http2").await;
    let client = TestClient::http1();
    // The first connection learns the peer's SETTINGS.
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    // 20 requests that each stay 1.2 s upstream, started 40 ms apart: all 20 are in flight
    // together, and each new connection has its peer's SETTINGS before the next request.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * i)).await;
            client
                .get(addr, "/", &[("x-test-delay-ms", "1200")])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(
        up.connections() >= 5,
        "20 concurrent requests to a peer allowing 4 streams need 5 connections, got {}",
        up.connections()
    );
    // Nobody queued behind a full connection.
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pool_burst_past_the_peers_stream_limit_fails_no_request() {
    let up = four_stream_upstream().await;
    let (_proxy, addr) = proxy_to(&up, "    protocol: http2").await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    let t = tally(
        &client,
        addr,
        "/",
        &[("x-test-delay-ms", "300")],
        20,
        20,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    assert!(up.connections() >= 5, "{}", up.connections());
}

#[tokio::test]
async fn same_as_downstream_speaks_the_clients_protocol_upstream() {
    let up = Upstream::start("up").await;
    let (_proxy, addr) = proxy_to(&up, "    protocol: same_as_downstream").await;
    let echo = [("x-test-echo", "1")];
    let r = TestClient::http2().get(addr, "/", &echo).await;
    assert!(r.text().starts_with("GET / HTTP/2.0\n"), "{}", r.text());
    let r = TestClient::http1().get(addr, "/", &echo).await;
    assert!(r.text().starts_with("GET / HTTP/1.1\n"), "{}", r.text());
    // And the default is HTTP/1.1 whatever the client speaks.
    let up1 = Upstream::start("up1").await;
    let (_proxy1, addr1) = proxy_to(&up1, "").await;
    let r = TestClient::http2().get(addr1, "/", &echo).await;
    assert!(r.text().starts_with("GET / HTTP/1.1\n"), "{}", r.text());
}
