//! gRPC through Sinew: a tonic server behind an HTTP/2 cluster, a tonic client in front.
//! Messages and trailers of all four call kinds cross intact, and the errors the proxy
//! makes itself reach the client as gRPC statuses.

use std::time::{Duration, Instant};

use sinew_integration::grpc_kit::{GrpcClient, GrpcServer, Msg};
use sinew_integration::TestProxy;
use tonic::{Code, Request};

struct Setup {
    _proxy: TestProxy,
    server: GrpcServer,
    client: GrpcClient,
}

/// Routes by service name: `Echo` to the server, `Timed` to it with a 300 ms route
/// timeout, `Patient` with a 5 s one, `Empty` to a cluster with no endpoints, `Dead` to
/// an endpoint nobody listens on; anything else has no route.
async fn setup() -> Setup {
    let server = GrpcServer::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: grpc
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /sinew.test.Echo/}}
              cluster: grpc
            - match: {{prefix: /sinew.test.Timed/}}
              cluster: grpc
              timeout: 300ms
            - match: {{prefix: /sinew.test.Patient/}}
              cluster: grpc
              timeout: 5s
            - match: {{prefix: /sinew.test.Empty/}}
              cluster: empty
            - match: {{prefix: /sinew.test.Dead/}}
              cluster: dead
clusters:
  - name: grpc
    protocol: http2
    endpoints: [{{address: {server}}}]
  - name: empty
    protocol: http2
    endpoints: []
  - name: dead
    protocol: http2
    connect_timeout: 1s
    endpoints: [{{address: {dead}}}]
",
        server = server.addr,
    ))
    .await;
    let client = GrpcClient::connect(proxy.addr("grpc").await).await;
    Setup {
        _proxy: proxy,
        server,
        client,
    }
}

/// A status the proxy made itself: the code, and a `grpc-message` it wrote (tonic would
/// infer 404 → Unimplemented and 503 → Unavailable from a bare HTTP error too, but then
/// says "grpc-status header missing"; so the message tells the two apart).
fn assert_proxy_status(status: &tonic::Status, code: Code, words: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        !status.message().contains("grpc-status header missing"),
        "a bare HTTP error, not a gRPC status: {status:?}"
    );
    assert!(
        status.message().contains(words),
        "the proxy's own grpc-message should mention {words:?}: {status:?}"
    );
}

fn trailer<T>(resp: &tonic::Response<T>, name: &str) -> Option<String> {
    resp.metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn unary_call_passes_message_and_trailers() {
    let mut s = setup().await;
    let resp = s
        .client
        .unary("/sinew.test.Echo/Unary", Request::new(Msg::new("hi", 0)))
        .await
        .expect("unary call");
    // tonic merges the trailers into the response metadata of a unary call.
    assert_eq!(trailer(&resp, "x-trailer").as_deref(), Some("Unary"));
    assert_eq!(resp.into_inner(), Msg::new("echo: hi", 0));
    assert_eq!(s.server.requests(), 1);
}

#[tokio::test]
async fn server_streaming_passes_every_message_then_trailers() {
    let mut s = setup().await;
    let resp = s
        .client
        .server_streaming(
            "/sinew.test.Echo/ServerStream",
            Request::new(Msg::new("", 50)),
        )
        .await
        .expect("server streaming call");
    let mut stream = resp.into_inner();
    let mut got = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream message") {
        got.push(msg);
    }
    let expected: Vec<Msg> = (0..50).map(|i| Msg::new(format!("item {i}"), i)).collect();
    assert_eq!(got, expected);
    let trailers = stream
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers present");
    assert_eq!(
        trailers.get("x-trailer").and_then(|v| v.to_str().ok()),
        Some("ServerStream")
    );
}

#[tokio::test]
async fn client_streaming_delivers_every_message_upstream() {
    let mut s = setup().await;
    let msgs: Vec<Msg> = (0..20).map(|i| Msg::new(format!("m{i}"), i)).collect();
    let resp = s
        .client
        .client_streaming(
            "/sinew.test.Echo/ClientStream",
            Request::new(futures_util::stream::iter(msgs)),
        )
        .await
        .expect("client streaming call");
    assert_eq!(trailer(&resp, "x-trailer").as_deref(), Some("ClientStream"));
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(resp.into_inner(), Msg::new(expected.join(","), 20));
}

#[tokio::test]
async fn bidi_streaming_answers_each_message_before_the_next_is_sent() {
    let mut s = setup().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let resp = s
        .client
        .streaming("/sinew.test.Echo/Bidi", Request::new(outbound))
        .await
        .expect("bidi call");
    let mut inbound = resp.into_inner();
    // Lock-step: a proxy that buffered either direction would hang here.
    for i in 0..10u32 {
        tx.send(Msg::new(format!("ping {i}"), i)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .expect("reply to each message before the next is sent")
            .expect("bidi message")
            .expect("stream still open");
        assert_eq!(reply, Msg::new(format!("echo: ping {i}"), i));
    }
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("end of stream")
        .expect("clean end");
    assert!(end.is_none());
    let trailers = inbound
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers present");
    assert_eq!(
        trailers.get("x-trailer").and_then(|v| v.to_str().ok()),
        Some("Bidi")
    );
}

#[tokio::test]
async fn application_error_status_reaches_the_client_unchanged() {
    let mut s = setup().await;
    let status = s
        .client
        .unary("/sinew.test.Echo/Fail", Request::new(Msg::new("x", 0)))
        .await
        .expect_err("the server fails the call");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "app says no");
    assert_eq!(
        status
            .metadata()
            .get("x-app-detail")
            .and_then(|v| v.to_str().ok()),
        Some("42")
    );
}

#[tokio::test]
async fn error_status_after_streamed_messages_arrives_in_trailers() {
    let mut s = setup().await;
    let resp = s
        .client
        .server_streaming(
            "/sinew.test.Echo/StreamThenFail",
            Request::new(Msg::new("", 3)),
        )
        .await
        .expect("call starts");
    let mut stream = resp.into_inner();
    for i in 0..3u32 {
        let msg = stream.message().await.expect("message").expect("present");
        assert_eq!(msg, Msg::new(format!("item {i}"), i));
    }
    let status = stream.message().await.expect_err("ends with an error");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "enough");
    assert_eq!(
        status
            .metadata()
            .get("x-trailer")
            .and_then(|v| v.to_str().ok()),
        Some("StreamThenFail")
    );
}

#[tokio::test]
async fn no_route_is_unimplemented() {
    let mut s = setup().await;
    let status = s
        .client
        .unary("/sinew.test.Nowhere/Unary", Request::new(Msg::new("x", 0)))
        .await
        .expect_err("no route");
    assert_proxy_status(&status, Code::Unimplemented, "route");
    assert_eq!(s.server.requests(), 0);
}

#[tokio::test]
async fn cluster_without_endpoints_is_unavailable() {
    let mut s = setup().await;
    let status = s
        .client
        .unary("/sinew.test.Empty/Unary", Request::new(Msg::new("x", 0)))
        .await
        .expect_err("no endpoint");
    assert_proxy_status(&status, Code::Unavailable, "upstream");
}

#[tokio::test]
async fn dead_endpoint_is_unavailable() {
    let mut s = setup().await;
    let status = s
        .client
        .unary("/sinew.test.Dead/Unary", Request::new(Msg::new("x", 0)))
        .await
        .expect_err("connect failure");
    assert_proxy_status(&status, Code::Unavailable, "upstream");
}

#[tokio::test]
async fn upstream_slower_than_route_timeout_is_deadline_exceeded() {
    let mut s = setup().await;
    let started = Instant::now();
    let status = s
        .client
        .unary("/sinew.test.Timed/Unary", Request::new(Msg::new("x", 3000)))
        .await
        .expect_err("route timeout");
    let took = started.elapsed();
    assert_proxy_status(&status, Code::DeadlineExceeded, "timeout");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(2500),
        "cut at the 300 ms route timeout, took {took:?}"
    );
}

#[tokio::test]
async fn grpc_timeout_shorter_than_route_timeout_cuts_the_call_at_the_deadline() {
    let mut s = setup().await;
    // The kit's client sends the deadline as `grpc-timeout` but does not enforce it (see
    // GrpcClient): only the proxy can end this call early (route timeout 5 s, upstream
    // answers after 3 s).
    let mut req = Request::new(Msg::new("x", 3000));
    req.set_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let status = s
        .client
        .unary("/sinew.test.Patient/Unary", req)
        .await
        .expect_err("deadline");
    let took = started.elapsed();
    assert_proxy_status(&status, Code::DeadlineExceeded, "timeout");
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(2000),
        "cut at the 400 ms deadline, took {took:?}"
    );

    // And a deadline longer than the upstream's delay lets the call through.
    let mut req = Request::new(Msg::new("y", 100));
    req.set_timeout(Duration::from_secs(3));
    let resp = s
        .client
        .unary("/sinew.test.Patient/Unary", req)
        .await
        .expect("within the deadline");
    assert_eq!(resp.into_inner().text, "echo: y");
}
