//! The connection manager's `scheme_header_transformation`, run by the real binary: with
//! `scheme_to_overwrite: https` the upstream sees `X-Forwarded-Proto: https` whatever the
//! client sent or its connection was; without it, the plaintext connection's `http`.
//! Requests sent with curl to an upstream that echoes what it received.

use sinew_integration::envoy_kit::{self, http_listener};
use sinew_integration::{free_port, scratch_dir, shell, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_to_overwrite_sets_the_forwarded_proto_the_upstream_sees() {
    let upstream = Upstream::start("app").await;
    let (overwritten, plain, admin_port) = (free_port(), free_port(), free_port());
    let text = envoy_kit::bootstrap(
        &[
            http_listener("overwritten", overwritten, "app")
                .manager_field("scheme_header_transformation: { scheme_to_overwrite: https }"),
            http_listener("plain", plain, "app"),
        ],
        &[("app", upstream.addr)],
        admin_port,
    );
    let file = scratch_dir("scheme-transformation").join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let _proxy = envoy_kit::start(&file, admin_port).await;
    let echo = |port: u16, proto: &str| {
        shell(format!(
            "curl -s --max-time 5 -H 'x-test-echo: 1' -H 'x-forwarded-proto: {proto}' http://127.0.0.1:{port}/x"
        ))
    };
    for sent in ["http", "gopher"] {
        let seen = echo(overwritten, sent).await;
        assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    }
    // Envoy's default (no trusted hops): from the downstream connection, plaintext.
    let seen = echo(plain, "https").await;
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
}
