//! The simplest path through the proxy, as a canary for the kit itself.

use sinew_integration::{OneRoute, TestClient, Upstream};

#[tokio::test]
async fn proxies_a_get_to_the_upstream() {
    let up = Upstream::start("alpha").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let reply = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "alpha\n");
    let reply = TestClient::http2().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2);
}
