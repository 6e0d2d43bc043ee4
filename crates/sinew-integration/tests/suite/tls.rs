//! TLS at both ends: a listener terminating TLS with ALPN (h2 and http/1.1), and clusters
//! that speak TLS to their upstreams with SNI and CA verification. Certificates come from
//! a throwaway CA made with rcgen.

use http::Version;
use sinew_integration::tls_kit::{tls_get, TestCa, TlsUpstream};
use sinew_integration::{TestClient, TestProxy, Upstream};

/// A proxy with a TLS listener for `proxy.test`; `/echo` makes the upstream echo the
/// request head it got.
async fn tls_listener(ca: &TestCa, upstream: &Upstream) -> TestProxy {
    let cert = ca.issue("proxy", &["proxy.test"]);
    TestProxy::start(&format!(
        "
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls: {{cert: '{cert}', key: '{key}'}}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /echo}}
              cluster: plain
              request_headers: {{set: {{x-test-echo: '1'}}}}
            - match: {{prefix: /}}
              cluster: plain
clusters:
  - name: plain
    endpoints: [{{address: {up}}}]
",
        cert = cert.cert_path(),
        key = cert.key_path(),
        up = upstream.addr,
    ))
    .await
}

#[tokio::test]
async fn tls_listener_speaks_http2_when_the_client_offers_h2() {
    let ca = TestCa::new("alpn-h2");
    let up = Upstream::start("plain").await;
    let proxy = tls_listener(&ca, &up).await;
    let addr = proxy.addr("secure").await;

    let (alpn, reply) = tls_get(
        addr,
        ca.client_config(&["h2", "http/1.1"]),
        "proxy.test",
        "/echo",
    )
    .await
    .expect("TLS request");
    assert_eq!(alpn.as_deref(), Some("h2"));
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echoed = reply.text();
    assert!(echoed.starts_with("GET /echo "), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-proto: https"),
        "the upstream is told the client came over TLS: {echoed}"
    );
}

#[tokio::test]
async fn tls_listener_speaks_http11_when_the_client_offers_only_http11() {
    let ca = TestCa::new("alpn-h1");
    let up = Upstream::start("plain").await;
    let proxy = tls_listener(&ca, &up).await;
    let addr = proxy.addr("secure").await;

    let (alpn, reply) = tls_get(addr, ca.client_config(&["http/1.1"]), "proxy.test", "/")
        .await
        .expect("TLS request");
    assert_eq!(alpn.as_deref(), Some("http/1.1"));
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "plain\n");

    // No ALPN at all means HTTP/1.1 too.
    let (alpn, reply) = tls_get(addr, ca.client_config(&[]), "proxy.test", "/")
        .await
        .expect("TLS request without ALPN");
    assert_eq!(alpn, None);
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.text(), "plain\n");

    // A client that does not trust the CA fails the handshake: the listener really is TLS.
    let other = TestCa::new("alpn-untrusted");
    let refused = tls_get(addr, other.client_config(&["h2"]), "proxy.test", "/").await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn listener_with_a_missing_cert_file_is_refused_with_its_field_path() {
    let ca = TestCa::new("bad-cert");
    let good = ca.issue("proxy", &["proxy.test"]);
    let missing = ca.dir.file("no-such-cert.pem");
    let yaml = format!(
        "
listeners:
  - name: secure
    address: 127.0.0.1:0
    tls: {{cert: '{cert}', key: '{key}'}}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              direct_response: {{status: 200}}
",
        cert = missing.display(),
        key = good.key_path(),
    );
    let loaded = sinew_config::load_str("tls.yaml", &yaml).expect("the YAML itself is fine");
    let checked = sinew_proxy::check(&loaded).expect_err("a missing cert is an error");
    let text = checked.to_string();
    assert!(text.contains("listeners[0].tls.cert"), "{text}");
    assert!(text.contains("no-such-cert.pem"), "names the file: {text}");
    let started = sinew_proxy::Proxy::start(&loaded).await;
    let text = started
        .err()
        .expect("the proxy refuses to start")
        .to_string();
    assert!(text.contains("listeners[0].tls.cert"), "{text}");
}

/// A proxy whose cleartext listener forwards to a TLS upstream with this `tls` block.
async fn tls_cluster(upstream: &TlsUpstream, protocol: &str, tls: &str) -> TestProxy {
    TestProxy::start(&format!(
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
              cluster: secure
clusters:
  - name: secure
    protocol: {protocol}
    connect_timeout: 2s
    tls: {tls}
    endpoints: [{{address: {up}}}]
",
        up = upstream.addr,
    ))
    .await
}

#[tokio::test]
async fn upstream_tls_with_matching_sni_and_ca_succeeds() {
    let ca = TestCa::new("up-ok");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let up = TlsUpstream::start("secure", &cert, &["h2", "http/1.1"]).await;
    let proxy = tls_cluster(
        &up,
        "http1",
        &format!("{{sni: upstream.test, ca: '{}'}}", ca.ca_path()),
    )
    .await;
    let reply = TestClient::http1()
        .get(proxy.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/1.1 alpn=http/1.1");
    assert!(up.handshakes() >= 1);
}

#[tokio::test]
async fn upstream_tls_http2_is_negotiated_with_alpn() {
    let ca = TestCa::new("up-h2");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let up = TlsUpstream::start("secure", &cert, &["h2", "http/1.1"]).await;
    let proxy = tls_cluster(
        &up,
        "http2",
        &format!("{{sni: upstream.test, ca: '{}'}}", ca.ca_path()),
    )
    .await;
    let addr = proxy.addr("web").await;
    // Downstream HTTP/1.1, upstream HTTP/2 over TLS.
    let reply = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/2.0 alpn=h2");
    // Several requests share the one multiplexed connection.
    for _ in 0..5 {
        let reply = TestClient::http1().get(addr, "/", &[]).await;
        assert_eq!(reply.text(), "secure HTTP/2.0 alpn=h2");
    }
    assert_eq!(up.handshakes(), 1, "one TLS connection for all requests");
}

#[tokio::test]
async fn upstream_tls_with_the_wrong_sni_is_a_connect_failure() {
    let ca = TestCa::new("up-sni");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let up = TlsUpstream::start("secure", &cert, &["h2", "http/1.1"]).await;
    let proxy = tls_cluster(
        &up,
        "http1",
        &format!("{{sni: elsewhere.test, ca: '{}'}}", ca.ca_path()),
    )
    .await;
    let reply = TestClient::http1()
        .get(proxy.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(up.handshakes(), 0, "the certificate did not fit the name");
}

/// Sinew's own YAML: a CA written into the config (`ca: {pem: ...}`) verifies as the
/// file would, and `verify: false` reaches an upstream no CA here signed.
#[tokio::test]
async fn upstream_tls_takes_an_inline_ca_and_verify_false_reaches_an_untrusted_upstream() {
    let ca = TestCa::new("up-inline");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let up = TlsUpstream::start("secure", &cert, &["h2", "http/1.1"]).await;
    let pem = std::fs::read_to_string(ca.ca_path()).unwrap();
    let inline = tls_cluster(
        &up,
        "http1",
        &format!("{{sni: upstream.test, ca: {{pem: {pem:?}}}}}"),
    )
    .await;
    let reply = TestClient::http1()
        .get(inline.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/1.1 alpn=http/1.1");

    let stranger = TestCa::new("up-inline-stranger");
    let pem = std::fs::read_to_string(stranger.ca_path()).unwrap();
    let wrong = tls_cluster(
        &up,
        "http1",
        &format!("{{sni: upstream.test, ca: {{pem: {pem:?}}}}}"),
    )
    .await;
    let reply = TestClient::http1()
        .get(wrong.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 503, "an inline CA that did not sign it");

    let open = tls_cluster(&up, "http1", "{verify: false}").await;
    let reply = TestClient::http1()
        .get(open.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "secure HTTP/1.1 alpn=http/1.1");
}

#[tokio::test]
async fn upstream_tls_signed_by_an_untrusted_ca_is_a_connect_failure() {
    let ca = TestCa::new("up-ca");
    let cert = ca.issue("upstream", &["upstream.test"]);
    let up = TlsUpstream::start("secure", &cert, &["h2", "http/1.1"]).await;
    let stranger = TestCa::new("up-ca-stranger");
    let proxy = tls_cluster(
        &up,
        "http1",
        &format!("{{sni: upstream.test, ca: '{}'}}", stranger.ca_path()),
    )
    .await;
    let reply = TestClient::http1()
        .get(proxy.addr("web").await, "/", &[])
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(up.handshakes(), 0, "the chain did not verify");
}
