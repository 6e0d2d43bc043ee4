//! Circuit breakers (max connections, pending requests, requests, retries), retry budgets
//! and the retry host predicate, against real upstreams that stall or refuse.
//!
//! Each limit is shown to turn work away with 503 `upstream overflow` (flag UO) at once,
//! and to let work through again when what held it finishes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sinew_integration::{closed_port_addr, OneRoute, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy(endpoints: &[SocketAddr], route: &str, cluster: &str) -> (TestProxy, SocketAddr) {
    OneRoute::to(endpoints)
        .route(route)
        .cluster(cluster)
        .start()
        .await
}

/// Sends a GET on its own connection in the background; returns status, body, time taken.
fn spawn_get(
    addr: SocketAddr,
    headers: &'static [(&'static str, &'static str)],
) -> tokio::task::JoinHandle<(u16, String, Duration)> {
    tokio::spawn(async move {
        let started = Instant::now();
        let r = TestClient::http1().get(addr, "/", headers).await;
        (r.status.as_u16(), r.text(), started.elapsed())
    })
}

const SLOW: &[(&str, &str)] = &[("x-test-delay-ms", "600")];

#[tokio::test]
async fn max_requests_overflow_is_answered_503_at_once_and_recovers() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], "", "    circuit_breakers: {max_requests: 2}").await;
    let slow: Vec<_> = (0..2).map(|_| spawn_get(addr, SLOW)).collect();
    assert!(
        sinew_integration::eventually(Duration::from_secs(2), || up.requests() == 2).await,
        "both slow requests reach the upstream"
    );

    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream overflow");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "answered at once"
    );
    assert_eq!(up.requests(), 2, "the overflow never reached the upstream");

    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 200, "room again once the slow requests are done");
}

#[tokio::test]
async fn a_request_counts_until_its_response_body_has_streamed() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], "", "    circuit_breakers: {max_requests: 1}").await;
    // A response whose head arrives at once but whose body the client has not read: the
    // request is still in flight.
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-test-body-bytes: 8000000\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(
        r.status, 503,
        "the streaming response still holds the only slot"
    );
    drop(held);
    let client = TestClient::http1();
    let mut status = 0;
    for _ in 0..100 {
        status = client.get(addr, "/", &[]).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the slot comes back when the body is dropped");
}

#[tokio::test]
async fn at_the_connection_limit_requests_wait_as_pending_and_overflow_past_it() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "",
        "    circuit_breakers: {max_connections: 1, max_pending_requests: 1}",
    )
    .await;
    let first = spawn_get(addr, SLOW);
    assert!(sinew_integration::eventually(Duration::from_secs(2), || up.requests() == 1).await);
    // The only connection is busy: this one waits for it.
    let pending = spawn_get(addr, &[]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // And the pending queue is full: this one is turned away.
    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (503, "upstream overflow")
    );
    assert!(started.elapsed() < Duration::from_millis(300));

    assert_eq!(first.await.unwrap().0, 200);
    let (status, _, waited) = pending.await.unwrap();
    assert_eq!(
        status, 200,
        "the pending request got the connection when it came back"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "it waited: {waited:?}"
    );
    assert_eq!(
        up.connections(),
        1,
        "never more than one upstream connection"
    );

    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_request_pending_past_the_connect_timeout_overflows() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "",
        "    connect_timeout: 200ms\n    circuit_breakers: {max_connections: 1}",
    )
    .await;
    let slow = spawn_get(addr, &[("x-test-delay-ms", "1500")]);
    assert!(sinew_integration::eventually(Duration::from_secs(2), || up.requests() == 1).await);
    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream overflow");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(180) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
    assert_eq!(slow.await.unwrap().0, 200);
}

/// A route that retries a slow upstream on per-try timeouts: each try takes 200 ms, four
/// tries at most, with next to no backoff between them.
const RETRY_ON_TIMEOUT: &str = "              retry: {retry_on: [5xx], num_retries: 3, per_try_timeout: 200ms, base_backoff: 1ms, max_backoff: 1ms}";
const STALL: &[(&str, &str)] = &[("x-test-delay-ms", "5000")];

/// Starts a request that keeps retrying for about 800 ms, then, 100 ms in, a second one;
/// returns how long the second took and how many tries reached the upstream in all.
async fn second_request_under_retry_load(cluster: &str) -> (u16, Duration, usize) {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], RETRY_ON_TIMEOUT, cluster).await;
    let first = spawn_get(addr, STALL);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, took) = spawn_get(addr, STALL).await.unwrap();
    let (first_status, _, first_took) = first.await.unwrap();
    assert_eq!(first_status, 504);
    assert!(
        first_took >= Duration::from_millis(750),
        "the first retried: {first_took:?}"
    );
    (status, took, up.requests())
}

#[tokio::test]
async fn retries_over_max_retries_are_not_made() {
    // One retry in flight at a time: while the first request retries, the second gets
    // its first try's answer (504 after 200 ms) instead of retrying.
    let (status, took, tries) =
        second_request_under_retry_load("    circuit_breakers: {max_retries: 1}").await;
    assert_eq!(status, 504);
    assert!(took < Duration::from_millis(500), "no retry: {took:?}");
    assert_eq!(
        tries, 5,
        "four tries for the first request, one for the second"
    );

    // The default (3) leaves room for both to retry.
    let (status, took, tries) = second_request_under_retry_load("").await;
    assert_eq!(status, 504);
    assert!(took >= Duration::from_millis(750), "retried: {took:?}");
    assert_eq!(tries, 8);
}

#[tokio::test]
async fn a_retry_budget_replaces_max_retries_and_scales_with_load() {
    // max_retries 0 would forbid retrying; the budget's floor of one allows the first
    // request's retries but not the second's.
    let (_, took, tries) = second_request_under_retry_load(
        "    circuit_breakers: {max_retries: 0, retry_budget: {budget_percent: 0, min_retry_concurrency: 1}}",
    )
    .await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(tries, 5);

    // At 100% of two requests in flight, both may retry at once.
    let (_, took, tries) = second_request_under_retry_load(
        "    circuit_breakers: {max_retries: 0, retry_budget: {budget_percent: 100, min_retry_concurrency: 1}}",
    )
    .await;
    assert!(took >= Duration::from_millis(750), "{took:?}");
    assert_eq!(tries, 8);
}

/// Two endpoints that refuse connections and one that works, picked at random; each
/// request may try three times. Returns how many of `n` requests failed.
async fn failures_with_two_dead_endpoints(retry_extra: &str, n: usize) -> usize {
    let good = Upstream::start("good").await;
    let dead = [closed_port_addr(), closed_port_addr()];
    let (_p, addr) = proxy(
        &[dead[0], dead[1], good.addr],
        &format!(
            "              retry: {{retry_on: [connect-failure], num_retries: 2, base_backoff: 1ms, max_backoff: 1ms{retry_extra}}}"
        ),
        "    lb: random",
    )
    .await;
    let client = TestClient::http1();
    let mut failed = 0;
    for _ in 0..n {
        if client.get(addr, "/", &[]).await.status != 200 {
            failed += 1;
        }
    }
    failed
}

#[tokio::test]
async fn previous_hosts_keeps_retries_off_every_endpoint_already_tried() {
    // By default a retry avoids only the endpoint that just failed, so the third try can
    // go back to the first dead one; about one request in six fails that way.
    let failed = failures_with_two_dead_endpoints("", 200).await;
    assert!(
        failed > 0,
        "without the predicate some third tries repeat a dead endpoint"
    );
    // With `previous_hosts`, the third try can only be the live endpoint.
    let failed =
        failures_with_two_dead_endpoints(", retry_host_predicate: [previous_hosts]", 200).await;
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn tcp_proxy_connections_are_bounded_by_max_connections() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: tcp
    address: 127.0.0.1:0
    tcp: {{cluster: svc}}
clusters:
  - name: svc
    endpoints: [{{address: {}}}]
    circuit_breakers: {{max_connections: 1}}
",
        up.addr
    ))
    .await;
    let addr = proxy.addr("tcp").await;
    let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");

    // The second is closed without reaching the upstream.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second.write_all(request).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut rest))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(up.connections(), 1);

    drop(first);
    let mut ok = false;
    for _ in 0..50 {
        let mut again = TcpStream::connect(addr).await.unwrap();
        let _ = again.write_all(request).await;
        let mut buf = [0u8; 12];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), again.read_exact(&mut buf)).await
        {
            ok = &buf == b"HTTP/1.1 200";
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ok,
        "a connection is proxied again once the first has closed"
    );
}
