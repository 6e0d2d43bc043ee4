//! HTTP/1.1 behaviour seen on the wire: `Expect: 100-continue`, pipelining, chunked
//! request bodies. Raw sockets, so nothing a client library smooths over is hidden.

use std::time::Duration;

use sinew_integration::{OneRoute, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to(up: &Upstream) -> TestProxy {
    OneRoute::to(&[up.addr]).start().await.0
}

/// Reads until `needle` has been seen `count` times, or fails after a deadline.
async fn read_until(stream: &mut TcpStream, needle: &str, count: usize) -> String {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.matches(needle).count() >= count {
            return text;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {count}× {needle:?}; got:\n{text}"))
            .expect("read");
        assert!(n > 0, "connection closed early; got:\n{text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_sent() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let interim = read_until(&mut s, "HTTP/1.1 100 Continue\r\n\r\n", 1).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"hello").await.unwrap();
    let rest = read_until(&mut s, "up\n", 1).await;
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
}

#[tokio::test]
async fn pipelined_requests_get_responses_in_order() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\nx-test-echo: 1\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: x\r\nx-test-echo: 1\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: x\r\nx-test-echo: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_until(&mut s, "HTTP/1.1 200 OK", 3).await;
    let text = read_until_complete(&mut s, text, "GET /three").await;
    let one = text.find("GET /one").expect("first response");
    let two = text.find("GET /two").expect("second response");
    let three = text.find("GET /three").expect("third response");
    assert!(one < two && two < three, "{text}");
}

async fn read_until_complete(s: &mut TcpStream, mut text: String, needle: &str) -> String {
    if !text.contains(needle) {
        text.push_str(&read_until(s, needle, 1).await);
    }
    text
}

#[tokio::test]
async fn chunked_request_body_is_forwarded_with_its_length() {
    let up = Upstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-test-echo: 1\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let text = read_until(&mut s, "POST /upload", 1).await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    // The upstream saw a chunked body (hyper forwards an unknown length as chunked).
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert_eq!(up.requests(), 1);
}

/// The header timeout guards a request head in progress, not the wait for the next one:
/// an idle keep-alive connection lives until `idle_timeout`, as in Envoy.
#[tokio::test]
async fn header_timeout_does_not_close_an_idle_keep_alive_connection() {
    let up = Upstream::start("up").await;
    let (proxy, _) = OneRoute::to(&[up.addr])
        .http("      request_headers_timeout: 300ms\n      idle_timeout: 60s")
        .start()
        .await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut s, "up\n", 1).await;
    // Idle well past the header timeout, then use the connection again.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let again = read_until(&mut s, "up\n", 1).await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");

    // A head that starts but never finishes is still cut off.
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled request head was not cut off");
}

/// An HTTP/1.0 upstream (Python's `http.server`, which answers `HTTP/1.0` and closes)
/// must not make the proxy answer an HTTP/1.1 client in HTTP/1.0: the response speaks
/// the downstream connection's version, and that connection stays open.
#[tokio::test]
async fn an_http10_upstream_is_answered_to_an_http11_client_in_http11() {
    let dir = sinew_integration::scratch_dir("http10-upstream");
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    let port = sinew_integration::free_port();
    let _server = sinew_integration::ChildGuard(
        std::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 is needed (Debian package python3)"),
    );
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let up = async {
        while TcpStream::connect(upstream).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .expect("python3 -m http.server did not start");
    let (proxy, _) = OneRoute::to(&[upstream]).start().await;
    let mut s = TcpStream::connect(proxy.addr("web").await).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) =
            sinew_integration::raw::read_response(&mut s, Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "hello\n");
    }
}

#[tokio::test]
async fn header_names_with_underscores_are_passed_refused_or_dropped_as_the_listener_says() {
    let upstream = sinew_integration::Upstream::start("a").await;
    let header = [
        ("x-test-echo", "1"),
        ("x_custom_id", "7"),
        ("x-custom-id", "8"),
    ];
    let client = sinew_integration::TestClient::http1();
    for (action, status, seen_underscored) in [
        ("allow", 200, true),
        ("reject_request", 400, false),
        ("drop_header", 200, false),
    ] {
        let (_proxy, addr) = sinew_integration::OneRoute::to(&[upstream.addr])
            .http(&format!("      headers_with_underscores: {action}\n"))
            .start()
            .await;
        let reply = client.get(addr, "/", &header).await;
        assert_eq!(reply.status.as_u16(), status, "{action}: {}", reply.text());
        if status == 200 {
            let echo = reply.text().to_ascii_lowercase();
            assert_eq!(
                echo.contains("x_custom_id: 7"),
                seen_underscored,
                "{action}: {echo}"
            );
            assert!(
                echo.contains("x-custom-id: 8"),
                "{action}: the dashed header stays"
            );
        }
    }
}
