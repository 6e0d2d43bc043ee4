//! Timeouts (route, listener default, per try, connect, downstream idle) and retries
//! (`retry_on` conditions, `num_retries`, backoff, body replay), with the errors the proxy
//! makes when it gives up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use sinew_integration::{closed_port_addr, OneRoute, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with one route (`route_extra` appended to it) to cluster `svc` over `endpoints`;
/// `http_extra` goes into the listener's `http` block, `cluster_extra` into the cluster.
async fn proxy(
    endpoints: &[SocketAddr],
    route_extra: &str,
    http_extra: &str,
    cluster_extra: &str,
) -> (TestProxy, SocketAddr) {
    OneRoute::to(endpoints)
        .route(route_extra)
        .http(http_extra)
        .cluster(cluster_extra)
        .start()
        .await
}

// ---------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn route_timeout_answers_504_when_the_upstream_is_slower() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], "              timeout: 200ms", "", "").await;
    let client = TestClient::http1();
    let started = Instant::now();
    let r = client.get(addr, "/", &[("x-test-delay-ms", "3000")]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    assert!(took >= Duration::from_millis(180), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // Faster than the timeout is fine.
    let r = client.get(addr, "/", &[("x-test-delay-ms", "20")]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn listener_request_timeout_applies_when_the_route_sets_none() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      request_timeout: 200ms
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /unbounded}}
              cluster: svc
              timeout: 0s
            - match: {{prefix: /}}
              cluster: svc
clusters:
  - name: svc
    endpoints: [{{address: {}}}]
",
        up.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let started = Instant::now();
    let r = client.get(addr, "/", &[("x-test-delay-ms", "3000")]).await;
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1500));
    // A route's `timeout: 0s` turns the default off.
    let r = client
        .get(addr, "/unbounded", &[("x-test-delay-ms", "500")])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn per_try_timeout_moves_on_to_another_endpoint() {
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(3)).await;
    let fast = Upstream::start("fast").await;
    let (_p, addr) = proxy(
        &[slow.addr, fast.addr],
        "              retry: {retry_on: [5xx], num_retries: 1, per_try_timeout: 200ms, base_backoff: 5ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    for i in 0..6 {
        let started = Instant::now();
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "fast\n");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        slow.requests() >= 2,
        "round robin should have tried the slow one"
    );
}

#[tokio::test]
async fn per_try_timeout_without_retries_left_answers_504() {
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(3)).await;
    let (_p, addr) = proxy(
        &[slow.addr],
        "              retry: {retry_on: [5xx], num_retries: 1, per_try_timeout: 100ms, base_backoff: 5ms}",
        "",
        "",
    )
    .await;
    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(slow.requests(), 2);
}

/// A loopback address whose connects hang: a listener with a backlog of 0 whose queue is
/// already full, so the kernel drops further SYNs instead of refusing them. Keep the
/// returned listener and fillers alive while the address is in use.
async fn black_hole() -> (tokio::net::TcpListener, Vec<TcpStream>, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
    assert!(
        probe.is_err(),
        "this kernel completes connects to a full backlog-0 listener; cannot simulate a hanging connect"
    );
    (listener, fillers, addr)
}

#[tokio::test]
async fn connect_timeout_gives_up_on_an_endpoint_that_never_accepts() {
    let (listener, _fillers, black_hole) = black_hole().await;
    let (_p, addr) = proxy(&[black_hole], "", "", "    connect_timeout: 200ms").await;
    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error");
    assert!(took >= Duration::from_millis(180), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_queued_behind_a_failed_connect_fail_with_it() {
    // One HTTP/2 connection attempt runs per endpoint at a time; requests that waited
    // for it must fail when it fails, not each wait out a connect timeout in turn.
    let (_listener, _fillers, black_hole) = black_hole().await;
    let (_p, addr) = proxy(
        &[black_hole],
        "",
        "",
        "    protocol: http2\n    connect_timeout: 300ms",
    )
    .await;
    let client = TestClient::http1();
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..6).map(|_| client.get(addr, "/", &[]))).await;
    let took = started.elapsed();
    for r in &replies {
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "upstream connect error");
    }
    // Six attempts in turn would take 1.8 s.
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

/// Sends one request on a raw socket and reads its response (Content-Length framing).
async fn raw_exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn downstream_idle_timeout_closes_an_idle_keep_alive_connection() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], "", "      idle_timeout: 300ms", "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let response = raw_exchange(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Activity keeps it open: a second request 150 ms later is served.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let response = raw_exchange(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let idle_since = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut byte))
        .await
        .expect("the idle connection was not closed within 3 s");
    assert!(matches!(read, Ok(0) | Err(_)), "got data: {read:?}");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(250),
        "closed after only {idle:?}"
    );
}

#[tokio::test]
async fn downstream_idle_timeout_does_not_cut_a_slow_request() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(&[up.addr], "", "      idle_timeout: 200ms", "").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let response = raw_exchange(
        &mut s,
        b"GET / HTTP/1.1\r\nHost: x\r\nx-test-delay-ms: 600\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_failure_is_retried_on_the_live_endpoint() {
    let live = Upstream::start("live").await;
    let (_p, addr) = proxy(
        &[closed_port_addr(), live.addr],
        "              retry: {retry_on: [connect-failure], num_retries: 1, base_backoff: 5ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    for i in 0..10 {
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "live\n");
    }
    assert_eq!(live.requests(), 10);
}

#[tokio::test]
async fn five_xx_is_retried_exactly_num_retries_times_then_the_upstream_answer_is_returned() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [5xx], num_retries: 3, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let r = TestClient::http1()
        .get(addr, "/", &[("x-test-status", "503")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "up\n", "the upstream's own 503 comes back");
    assert_eq!(r.header("x-upstream"), Some("up"));
    assert_eq!(up.requests(), 4, "1 try + 3 retries");
    // A success is not retried.
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.requests(), 5);
    // Nor is a 4xx.
    let r = TestClient::http1()
        .get(addr, "/", &[("x-test-status", "404")])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(up.requests(), 6);
}

#[tokio::test]
async fn five_xx_retry_succeeds_on_a_healthy_endpoint() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    let (_p, addr) = proxy(
        &[bad.addr, good.addr],
        "              retry: {retry_on: [5xx], num_retries: 1, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let failing = [("x-test-status", "500"), ("x-test-target", "bad")];
    for _ in 0..6 {
        let r = client.get(addr, "/", &failing).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "good\n");
    }
    assert!(
        bad.requests() >= 3,
        "round robin tried the bad endpoint first"
    );
}

#[tokio::test]
async fn gateway_error_retries_502_503_504_but_not_500() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [gateway-error], num_retries: 1, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let mut expected = 0;
    for (status, tries) in [(500, 1), (502, 2), (503, 2), (504, 2)] {
        let s = status.to_string();
        let r = client.get(addr, "/", &[("x-test-status", &s)]).await;
        assert_eq!(r.status.as_u16(), status);
        expected += tries;
        assert_eq!(up.requests(), expected, "after a {status}");
    }
}

#[tokio::test]
async fn retriable_status_codes_retry_only_the_listed_codes() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [retriable-status-codes], retriable_status_codes: [409], num_retries: 2, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let r = client.get(addr, "/", &[("x-test-status", "409")]).await;
    assert_eq!(r.status, 409);
    assert_eq!(up.requests(), 3);
    let r = client.get(addr, "/", &[("x-test-status", "503")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.requests(), 4, "503 is not in the list");
}

#[tokio::test]
async fn reset_is_retried_on_another_endpoint() {
    let flaky = Upstream::start("flaky").await;
    let good = Upstream::start("good").await;
    let (_p, addr) = proxy(
        &[flaky.addr, good.addr],
        "              retry: {retry_on: [reset], num_retries: 1, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let resetting = [("x-test-close", "1"), ("x-test-target", "flaky")];
    for i in 0..6 {
        let r = client.get(addr, "/", &resetting).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "good\n");
    }
    assert!(flaky.requests() >= 2);
    // `reset` does not cover answered 5xx.
    let r = client
        .get(
            addr,
            "/",
            &[("x-test-status", "503"), ("x-test-target", "flaky")],
        )
        .await;
    let r2 = client
        .get(
            addr,
            "/",
            &[("x-test-status", "503"), ("x-test-target", "flaky")],
        )
        .await;
    assert!(
        r.status == 503 || r2.status == 503,
        "one of two round-robin requests hit the 503 and was not retried"
    );
}

#[tokio::test]
async fn without_a_retry_policy_failures_get_specific_503s() {
    let up = Upstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - {{match: {{prefix: /closed}}, cluster: closed}}
            - {{match: {{prefix: /empty}}, cluster: empty}}
            - {{match: {{prefix: /}}, cluster: up}}
clusters:
  - name: up
    endpoints: [{{address: {}}}]
  - name: closed
    endpoints: [{{address: {}}}]
  - name: empty
    endpoints: []
",
        up.addr,
        closed_port_addr()
    ))
    .await;
    let addr = proxy.addr("web").await;
    for client in [TestClient::http1(), TestClient::http2()] {
        let before = up.requests();
        let r = client.get(addr, "/", &[("x-test-close", "1")]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "upstream connection terminated");
        assert_eq!(up.requests(), before + 1, "not retried");

        let r = client.get(addr, "/closed", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "upstream connect error");

        let r = client.get(addr, "/empty", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "no healthy upstream");

        let before = up.requests();
        let r = client.get(addr, "/", &[("x-test-status", "503")]).await;
        assert_eq!(r.status, 503);
        assert_eq!(up.requests(), before + 1, "not retried");
    }
}

#[tokio::test]
async fn retries_back_off_between_tries() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [5xx], num_retries: 4, base_backoff: 100ms, max_backoff: 100ms}",
        "",
        "",
    )
    .await;
    let started = Instant::now();
    let r = TestClient::http1()
        .get(addr, "/", &[("x-test-status", "503")])
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(up.requests(), 5);
    // Four waits, each uniform in [0, 100 ms] (full jitter): their sum is under 20 ms with
    // probability below 1e-4, and can never pass 400 ms.
    assert!(took >= Duration::from_millis(20), "no backoff: {took:?}");
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

#[tokio::test]
async fn max_backoff_caps_the_wait() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [5xx], num_retries: 3, base_backoff: 2s, max_backoff: 50ms}",
        "",
        "",
    )
    .await;
    let started = Instant::now();
    let r = TestClient::http1()
        .get(addr, "/", &[("x-test-status", "503")])
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(up.requests(), 4);
    // Uncapped, the three waits would be up to 2 s, 4 s and 8 s.
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_small_request_body_is_replayed_on_retry() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    let (_p, addr) = proxy(
        &[bad.addr, good.addr],
        "              retry: {retry_on: [5xx], num_retries: 1, base_backoff: 2ms}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let payload = Bytes::from((0..3000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    for i in 0..4 {
        let r = client
            .send(
                Method::POST,
                addr,
                "/",
                &[
                    ("x-test-echo-body", "1"),
                    ("x-test-status", "503"),
                    ("x-test-target", "bad"),
                ],
                payload.clone(),
            )
            .await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-upstream"), Some("good"));
        assert_eq!(
            r.body, payload,
            "request {i}: the body reached the retry intact"
        );
    }
    assert!(
        bad.requests() >= 2,
        "round robin tried the bad endpoint first"
    );
}

#[tokio::test]
async fn a_body_over_the_buffer_cap_is_not_retried() {
    let up = Upstream::start("up").await;
    let (_p, addr) = proxy(
        &[up.addr],
        "              retry: {retry_on: [5xx], num_retries: 2, base_backoff: 2ms, max_buffered_body_bytes: 1024}",
        "",
        "",
    )
    .await;
    let client = TestClient::http1();
    let fail = [("x-test-status", "503"), ("x-test-echo-body", "1")];
    let small = Bytes::from(vec![b's'; 100]);
    let r = client
        .send(Method::POST, addr, "/", &fail, small.clone())
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, small);
    assert_eq!(up.requests(), 3, "a buffered body is retried");
    let big = Bytes::from(vec![b'b'; 4096]);
    let r = client
        .send(Method::POST, addr, "/", &fail, big.clone())
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, big, "the streamed body still arrives whole");
    assert_eq!(up.requests(), 4, "a streamed body is sent once only");
}
