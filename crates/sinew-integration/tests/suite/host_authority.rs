//! The authority a request is routed on is the one its upstream receives: a client must
//! not be routed as one virtual host and delivered as another (RFC 9112 §3.2, §3.2.2;
//! RFC 9113 §8.3.1).

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::raw::read_response;
use sinew_integration::{h2_request, TestProxy, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Virtual host `a` goes to upstream `alpha`, `b` to `beta`; both echo the request head.
async fn two_hosts() -> (TestProxy, SocketAddr, Upstream, Upstream) {
    let alpha = Upstream::start("alpha").await;
    let beta = Upstream::start("beta").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: a
          domains: [a]
          routes:
            - match: {{prefix: /}}
              cluster: alpha
              request_headers: {{set: {{x-test-echo: '1'}}}}
        - name: b
          domains: [b]
          routes:
            - match: {{prefix: /}}
              cluster: beta
              request_headers: {{set: {{x-test-echo: '1'}}}}
clusters:
  - name: alpha
    endpoints: [{{address: {}}}]
  - name: beta
    endpoints: [{{address: {}}}]
",
        alpha.addr, beta.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    (proxy, addr, alpha, beta)
}

async fn raw(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream, Duration::from_secs(5)).await
}

/// The `host:` lines the upstream saw, from its echo.
fn hosts_seen(echo: &str) -> Vec<&str> {
    echo.lines()
        .filter_map(|l| l.strip_prefix("host: "))
        .collect()
}

#[tokio::test]
async fn absolute_form_target_authority_wins_over_host_and_replaces_it() {
    let (_proxy, addr, alpha, beta) = two_hosts().await;
    let (head, body) = raw(addr, b"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(hosts_seen(&body), ["a"], "upstream saw:\n{body}");
    assert_eq!((alpha.requests(), beta.requests()), (1, 0));
}

#[tokio::test]
async fn two_host_headers_are_400() {
    let (_proxy, addr, alpha, beta) = two_hosts().await;
    let (head, _) = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (head, _) = raw(addr, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(alpha.requests() + beta.requests(), 0);
}

#[tokio::test]
async fn http11_absolute_form_without_host_is_400() {
    let (_proxy, addr, alpha, _beta) = two_hosts().await;
    let (head, _) = raw(addr, b"GET http://a/ HTTP/1.1\r\nX: y\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(alpha.requests(), 0);
}

#[tokio::test]
async fn connection_naming_host_does_not_strip_the_routed_host() {
    let (_proxy, addr, alpha, _beta) = two_hosts().await;
    let (head, body) = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, x-gone\r\nX-Gone: 1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(hosts_seen(&body), ["a"], "upstream saw:\n{body}");
    assert!(!body.contains("x-gone"), "{body}");
    assert_eq!(alpha.requests(), 1);
}

#[tokio::test]
async fn http2_authority_and_a_different_host_is_malformed() {
    let (_proxy, addr, alpha, beta) = two_hosts().await;
    let reply = h2_request(addr, "http://a/", &[("host", "b")]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(alpha.requests() + beta.requests(), 0);
    // The same authority in both is fine, and is what the upstream gets.
    let reply = h2_request(addr, "http://a/", &[("host", "a")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(hosts_seen(&reply.text()), ["a"], "{}", reply.text());
}

/// A request with no authority at all (HTTP/1.0 without Host) forwarded over HTTP/2 goes
/// out without `:authority` (RFC 9113 §8.3.1), its path intact; it used to fail with 503
/// because the URI could not be built.
#[tokio::test]
async fn a_request_without_authority_crosses_an_http2_hop_with_its_path() {
    let back = TestProxy::start(
        "
listeners:
  - name: back
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {path: /kept/path}
              direct_response: {status: 200, body: path kept}
",
    )
    .await;
    let back_addr = back.addr("back").await;
    let front = TestProxy::start(&format!(
        "
listeners:
  - name: front
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: back
clusters:
  - name: back
    protocol: http2
    endpoints: [{{address: {back_addr}}}]
"
    ))
    .await;
    let addr = front.addr("front").await;
    let (head, body) = raw(addr, b"GET /kept/path HTTP/1.0\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    assert_eq!(body, "path kept");
}
