//! A request is in flight until the last byte of its response body has gone, so a long
//! response is not "idle"; and Envoy's `stream_idle_timeout` (a route's `idle_timeout`)
//! ends a stream on which no bytes move either way: 408 before the response head, a reset
//! after it, counted and logged with flag `SI`. A client that stops reading no longer
//! holds the upstream connection forever.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sinew_integration::admin_kit::{self, sample};
use sinew_integration::raw::{read_response, read_to_close};
use sinew_integration::tls_kit::TempDir;
use sinew_integration::{eventually, wait_for_lines, OneRoute, TestClient, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers every request with a chunked body: `chunks` chunks of `x`,
/// one every `gap`, then either the last chunk or (with `stall`) nothing more, ever.
async fn trickling_upstream(chunks: usize, gap: Duration, stall: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await;
                for _ in 0..chunks {
                    if s.write_all(b"1\r\nx\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(gap).await;
                }
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

fn log_yaml(path: &Path) -> String {
    format!(
        "      access_log:\n        - path: {}\n          format: \"%RESPONSE_CODE% %RESPONSE_FLAGS%\\n\"\n",
        path.display()
    )
}

/// Reads a chunked response whole: its head, and how many body bytes came.
async fn read_chunked(s: &mut TcpStream) -> (String, usize) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.ends_with(b"0\r\n\r\n") {
        let n = tokio::time::timeout_at(until, s.read(&mut buf))
            .await
            .expect("the whole response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.matches('x').count())
}

#[tokio::test]
async fn a_response_streaming_longer_than_idle_timeout_keeps_its_connection() {
    let up = trickling_upstream(8, Duration::from_millis(200), false).await;
    let (_proxy, addr) = OneRoute::to(&[up])
        .http("      idle_timeout: 500ms")
        .start()
        .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // 1.6 s of body, three times the idle timeout, with bytes moving all along.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, bytes) = read_chunked(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(bytes, 8);
    // The connection was in use, not idle: it takes the next request.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let (head, bytes) = read_chunked(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(bytes, 8);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_frees_the_upstream() {
    let dir = TempDir::new("stream-idle-reader");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .http(&format!(
            "      stream_idle_timeout: 1s\n      request_headers_timeout: 300ms\n{}",
            log_yaml(&log)
        ))
        .start()
        .await;
    let admin = admin_kit::start(&proxy).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // 64 MB asked for, and never read: the socket buffers fill and bytes stop moving.
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nx-test-body-bytes: 67108864\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || up.requests() == 1).await,
        "the request never reached the upstream"
    );
    let freed = eventually(Duration::from_secs(10), || up.open_connections() == 0).await;
    assert!(
        freed,
        "the stalled stream still holds its upstream connection"
    );
    let lines = wait_for_lines(&log, 1).await;
    assert_eq!(lines, ["200 SI"]);
    let m = admin_kit::metrics(admin.address).await;
    let timeouts = sample(
        &m,
        "sinew_listener_downstream_rq_idle_timeout_total",
        &[("listener", "web")],
    );
    assert_eq!(timeouts, Some(1.0), "{m}");
    drop(s);
    // The proxy still serves.
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_gets_the_stream_reset() {
    let dir = TempDir::new("stream-idle-body");
    let log = dir.file("access.log");
    let up = trickling_upstream(2, Duration::from_millis(50), true).await;
    let (_proxy, addr) = OneRoute::to(&[up])
        .http(&format!(
            "      stream_idle_timeout: 500ms\n      request_headers_timeout: 300ms\n{}",
            log_yaml(&log)
        ))
        .start()
        .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (closed, got) = read_to_close(&mut s, Duration::from_secs(5)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(closed, "a stalled body was never cut: {got}");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the cut body must not look complete"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wait_for_lines(&log, 1).await, ["200 SI"]);
}

#[tokio::test]
async fn a_route_idle_timeout_answers_408_when_no_head_comes() {
    let dir = TempDir::new("stream-idle-head");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    // The listener allows a minute; the route's own idle_timeout, half a second. The
    // route has no request timeout, so only the idle timeout bounds the wait.
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&format!(
            "      stream_idle_timeout: 60s\n{}",
            log_yaml(&log)
        ))
        .route("              timeout: 0\n              idle_timeout: 500ms")
        .start()
        .await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nx-test-delay-ms: 4000\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let (head, body) = read_response(&mut s, Duration::from_secs(3)).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(body.trim(), "stream timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wait_for_lines(&log, 1).await, ["408 SI"]);
}
