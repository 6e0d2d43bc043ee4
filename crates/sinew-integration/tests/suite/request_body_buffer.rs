//! How much of a request body is kept for retries and mirrors, set the Envoy way: a
//! listener's `per_connection_buffer_limit_bytes` on a connection manager bounds it for
//! every route that sets no limit of its own. Bodies under it are retried and mirrored;
//! bodies over it reach the upstream once, whole, and are not mirrored. The real binary
//! on a bootstrap written here, an upstream that answers 503 on request, and a shadow.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use sinew_integration::envoy_kit::{self, http_listener};
use sinew_integration::{eventually, free_port, scratch_dir, TestClient, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_buffer_limit_decides_which_bodies_are_retried_and_mirrored() {
    let app = Upstream::start("app").await;
    let shadow = Upstream::start("shadow").await;
    let (limited, unlimited, admin_port) = (free_port(), free_port(), free_port());
    let retried = |l: envoy_kit::HttpListener| {
        l.route_field("retry_policy: { retry_on: 5xx, num_retries: 2 }")
            .route_field("request_mirror_policies: [{ cluster: shadow }]")
    };
    let text = envoy_kit::bootstrap(
        &[
            retried(
                http_listener("limited", limited, "app")
                    .listener_field("per_connection_buffer_limit_bytes: 1024"),
            ),
            retried(http_listener("unlimited", unlimited, "app")),
        ],
        &[("app", app.addr), ("shadow", shadow.addr)],
        admin_port,
    );
    let file = scratch_dir("request-body-buffer").join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    let _proxy = envoy_kit::start(&file, admin_port).await;

    let client = TestClient::http1();
    let fail = [("x-test-status", "503"), ("x-test-echo-body", "1")];
    let send = |port: u16, body: Bytes| {
        let client = &client;
        async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let r = client
                .send(Method::POST, addr, "/", &fail, body.clone())
                .await;
            assert_eq!(r.status, 503);
            assert_eq!(r.body, body, "the body arrives whole either way");
        }
    };
    let mirrored = |n: usize| {
        let shadow = &shadow;
        async move {
            eventually(Duration::from_secs(5), || shadow.requests() == n).await;
            // A copy that should not come would come within this.
            tokio::time::sleep(Duration::from_millis(200)).await;
            shadow.requests()
        }
    };

    send(limited, Bytes::from(vec![b's'; 1000])).await;
    assert_eq!(app.requests(), 3, "a body under the limit is retried");
    assert_eq!(mirrored(1).await, 1, "and mirrored");

    send(limited, Bytes::from(vec![b'b'; 4096])).await;
    assert_eq!(app.requests(), 4, "a body over the limit is sent once");
    assert_eq!(mirrored(1).await, 1, "and not mirrored");

    // Without the field, Sinew's default (64 KiB) keeps the same body.
    send(unlimited, Bytes::from(vec![b'b'; 4096])).await;
    assert_eq!(
        app.requests(),
        7,
        "retried where the listener sets no limit"
    );
    assert_eq!(mirrored(2).await, 2, "and mirrored");
}
