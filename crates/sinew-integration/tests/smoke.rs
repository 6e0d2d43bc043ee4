//! The simplest path through the proxy, as a canary for the kit itself.

use sinew_integration::{TestClient, TestProxy, Upstream};

#[tokio::test]
async fn proxies_a_get_to_the_upstream() {
    let up = Upstream::start("alpha").await;
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
            - match: {{prefix: /}}
              cluster: alpha
clusters:
  - name: alpha
    endpoints: [{{address: {}}}]
",
        up.addr
    ))
    .await;
    let addr = proxy.addr("web").await;
    let reply = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "alpha\n");
    let reply = TestClient::http2().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2);
}
