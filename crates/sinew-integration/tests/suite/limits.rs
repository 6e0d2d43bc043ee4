//! Per-listener limits: request header size (431), request body size (413, by
//! Content-Length and while streaming a chunked body), the header-read timeout against a
//! client that sends its head slowly, and the connection limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use sinew_integration::raw::read_to_close;
use sinew_integration::{OneRoute, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response off `stream`, within 5 s.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    sinew_integration::raw::read_response(stream, Duration::from_secs(5)).await
}

async fn proxy_with(up: &Upstream, listener_extra: &str, http_extra: &str) -> TestProxy {
    let config = OneRoute::to(&[up.addr])
        .listener(listener_extra)
        .http(http_extra);
    config.start().await.0
}

#[tokio::test]
async fn request_headers_over_the_limit_get_431() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy_with(&up, "", "      max_request_headers_kb: 16").await;
    let addr = proxy.addr("web").await;

    let under = "u".repeat(8 * 1024);
    let reply = TestClient::http1()
        .get(addr, "/", &[("x-big", under.as_str())])
        .await;
    assert_eq!(reply.status, 200, "8 KiB of headers fit in 16");

    let over = "o".repeat(24 * 1024);
    let reply = TestClient::http1()
        .get(addr, "/", &[("x-big", over.as_str())])
        .await;
    assert_eq!(reply.status, 431, "HTTP/1.1: {}", reply.text());

    let reply = TestClient::http2()
        .get(addr, "/", &[("x-big", under.as_str())])
        .await;
    assert_eq!(reply.status, 200, "HTTP/2: 8 KiB of headers fit in 16");
    let reply = TestClient::http2()
        .get(addr, "/", &[("x-big", over.as_str())])
        .await;
    assert_eq!(reply.status, 431, "HTTP/2: {}", reply.text());
    assert_eq!(
        up.requests(),
        2,
        "only the requests within the limit went upstream"
    );
}

#[tokio::test]
async fn request_body_over_the_limit_by_content_length_gets_413() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy_with(&up, "", "      max_request_body_bytes: 1000").await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();

    let reply = client
        .send(Method::POST, addr, "/", &[], Bytes::from(vec![b'a'; 1000]))
        .await;
    assert_eq!(reply.status, 200, "exactly the limit is fine");
    let reply = client
        .send(Method::POST, addr, "/", &[], Bytes::from(vec![b'a'; 1001]))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(
        up.requests(),
        1,
        "the oversized request never went upstream"
    );

    let reply = TestClient::http2()
        .send(Method::POST, addr, "/", &[], Bytes::from(vec![b'a'; 5000]))
        .await;
    assert_eq!(reply.status, 413, "HTTP/2: {}", reply.text());
}

/// A chunked POST sent in `chunks` of `size` bytes, 50 ms apart; returns the response.
async fn chunked_post(addr: SocketAddr, chunks: usize, size: usize) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..chunks {
        let chunk = format!("{size:x}\r\n{}\r\n", "c".repeat(size));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    read_response(&mut stream).await
}

#[tokio::test]
async fn streamed_chunked_body_over_the_limit_gets_413() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy_with(&up, "", "      max_request_body_bytes: 1000").await;
    let addr = proxy.addr("web").await;

    let (head, body) = chunked_post(addr, 3, 300).await;
    assert!(head.starts_with("HTTP/1.1 200"), "900 bytes fit: {head}");
    assert_eq!(body, "alpha\n");

    let (head, body) = chunked_post(addr, 4, 300).await;
    assert!(
        head.starts_with("HTTP/1.1 413"),
        "1200 streamed bytes exceed 1000: {head}\n{body}"
    );
}

#[tokio::test]
async fn silent_tls_client_is_cut_off_by_the_header_timeout() {
    // The TLS handshake shares the header deadline, so a client that connects and says
    // nothing holds no connection for long.
    let up = Upstream::start("alpha").await;
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/certs");
    let tls = format!(
        "    tls: {{cert: '{}', key: '{}'}}",
        certs.join("server.crt").display(),
        certs.join("server.key").display()
    );
    let proxy = proxy_with(&up, &tls, "      request_headers_timeout: 300ms").await;
    let mut stream = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "a silent TLS client was not cut off");
    assert!(
        rest.is_empty(),
        "nothing is sent to a client that never said hello"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "cut off at about the 300 ms deadline, took {took:?}"
    );
}

#[tokio::test]
async fn slow_request_head_is_cut_off_by_the_header_timeout() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy_with(&up, "", "      request_headers_timeout: 1s").await;
    let addr = proxy.addr("web").await;

    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    // A byte every 200 ms, for at most 6 s: the head never completes in time.
    let writer = tokio::spawn(async move {
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: {}", "s".repeat(100));
        for b in head.bytes().take(30) {
            if write.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), read.read(&mut chunk)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    };
    let took = started.elapsed();
    writer.abort();
    assert!(closed, "a trickling client must be cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut off at about the 1 s header timeout, took {took:?}"
    );
    // The proxy closes the connection without a 408 (see the closing note); one would be fine.
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "nothing, or a 408: {text:?}"
    );
    assert_eq!(up.requests(), 0);
    // A prompt client on the same listener is served.
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
}

async fn get_on(stream: &mut TcpStream) -> (String, String) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_response(stream).await
}

#[tokio::test]
async fn third_connection_over_max_connections_is_closed_while_two_are_served() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy_with(&up, "    max_connections: 2", "").await;
    let addr = proxy.addr("web").await;

    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(get_on(&mut first).await.1, "alpha\n");
    assert_eq!(get_on(&mut second).await.1, "alpha\n");

    // The third is accepted by the kernel and closed by the proxy at once, unanswered.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let (closed, got) = read_to_close(&mut third, Duration::from_secs(2)).await;
    assert!(closed, "the third connection must be closed");
    assert!(
        got.is_empty(),
        "and not served: {:?}",
        String::from_utf8_lossy(&got)
    );
    let listener = proxy.proxy.listener("web").await.unwrap();
    assert_eq!(
        listener.rejected_connections(),
        1,
        "the rejection is counted"
    );
    assert_eq!(listener.active_connections(), 2);

    // The two keep being served on the same connections.
    for _ in 0..3 {
        assert_eq!(get_on(&mut first).await.1, "alpha\n");
        assert_eq!(get_on(&mut second).await.1, "alpha\n");
    }

    // Closing one frees a place.
    drop(first);
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !served && Instant::now() < deadline {
        let mut next = TcpStream::connect(addr).await.unwrap();
        let _ = next.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let (_, got) = read_to_close(&mut next, Duration::from_millis(300)).await;
        served = got.starts_with(b"HTTP/1.1 200");
        if !served {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(served, "a place frees up when a connection closes");
}
