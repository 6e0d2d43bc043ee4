//! Fault injection per route (`routes[].fault`): aborts with an HTTP or gRPC status, fixed
//! and header-controlled delays, for a share of requests or only those carrying a header,
//! bounded by `max_active_faults` — each shown to act, and to stop acting once the fault
//! is reloaded away.

use std::time::{Duration, Instant};

use sinew_integration::grpc_kit::{GrpcClient, GrpcServer, Msg};
use sinew_integration::{tally, OneRoute, TestClient, TestProxy, Upstream};
use tonic::{Code, Request};

/// One route to `up` with `fault` (flow YAML) on it.
fn with_fault(up: &Upstream, fault: &str) -> OneRoute {
    OneRoute::to(&[up.addr]).route(&format!("              fault: {fault}"))
}

#[tokio::test]
async fn abort_answers_every_request_without_reaching_the_upstream_until_reloaded_away() {
    let up = Upstream::start("up").await;
    let faulty = with_fault(&up, "{abort: {http_status: 503, percentage: 100}}");
    let (proxy, addr) = faulty.start().await;
    let client = TestClient::http1();
    for _ in 0..5 {
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), "fault filter abort");
    }
    assert_eq!(up.requests(), 0, "an aborted request never goes upstream");

    proxy
        .reload(&OneRoute::to(&[up.addr]).yaml())
        .await
        .unwrap();
    for _ in 0..5 {
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "up\n");
    }
    assert_eq!(up.requests(), 5);
}

#[tokio::test]
async fn abort_percentage_aborts_about_that_share_of_requests() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(&up, "{abort: {http_status: 500, percentage: 30}}")
        .start()
        .await;
    let n = 600;
    let t = tally(
        &TestClient::http1(),
        addr,
        "/",
        &[],
        n,
        8,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(t.errors, 0, "{:?}", t.first_errors);
    // 30% of 600 is 180, with a standard deviation of about 11: 120..=240 is over 5 of them.
    assert!(
        (120..=240).contains(&t.non_2xx),
        "aborted {} of {n}",
        t.non_2xx
    );
    assert_eq!(up.requests(), n - t.non_2xx);
}

#[tokio::test]
async fn header_gated_fault_hits_only_requests_carrying_the_header() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(
        &up,
        "{abort: {http_status: 418, percentage: 100}, headers: [{name: x-chaos, exact: 'on'}]}",
    )
    .start()
    .await;
    let client = TestClient::http1();
    for _ in 0..5 {
        assert_eq!(
            client.get(addr, "/", &[("x-chaos", "on")]).await.status,
            418
        );
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
        assert_eq!(
            client.get(addr, "/", &[("x-chaos", "off")]).await.status,
            200
        );
    }
    assert_eq!(up.requests(), 10);
}

#[tokio::test]
async fn fixed_delay_holds_requests_then_lets_them_through() {
    let up = Upstream::start("up").await;
    let delay = Duration::from_millis(300);
    let (proxy, addr) = with_fault(&up, "{delay: {fixed_delay: 300ms, percentage: 100}}")
        .start()
        .await;
    let client = TestClient::http1();
    for _ in 0..3 {
        let started = Instant::now();
        let r = client.get(addr, "/", &[]).await;
        let took = started.elapsed();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "up\n");
        assert!(took >= delay, "{took:?}");
        assert!(took < delay * 5, "{took:?}");
    }
    // Reloaded to 0%: configured, never firing, no delay.
    proxy
        .reload(&with_fault(&up, "{delay: {fixed_delay: 300ms, percentage: 0}}").yaml())
        .await
        .unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
        assert!(started.elapsed() < Duration::from_millis(200));
    }
}

#[tokio::test]
async fn delay_comes_before_the_abort() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(
        &up,
        "{delay: {fixed_delay: 200ms, percentage: 100}, abort: {http_status: 503, percentage: 100}}",
    )
    .start()
    .await;
    let started = Instant::now();
    let r = TestClient::http1().get(addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn max_active_faults_lets_requests_past_the_limit_through_unharmed() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(
        &up,
        "{delay: {fixed_delay: 1s, percentage: 100}, max_active_faults: 2}",
    )
    .start()
    .await;
    let client = TestClient::http1();
    let timed = |client: TestClient| async move {
        let started = Instant::now();
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200);
        started.elapsed()
    };
    let round = || async {
        let tasks: Vec<_> = (0..6)
            .map(|_| tokio::spawn(timed(client.clone())))
            .collect();
        let mut delayed = 0;
        for t in tasks {
            if t.await.unwrap() >= Duration::from_millis(900) {
                delayed += 1;
            }
        }
        delayed
    };
    assert_eq!(
        round().await,
        2,
        "two delayed at once, the rest let through"
    );
    // The faults have ended: the next requests are delayed again.
    assert_eq!(round().await, 2);
}

#[tokio::test]
async fn header_controlled_faults_follow_envoy_s_request_headers() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(
        &up,
        "{delay: {header_delay: {}, percentage: 100}, abort: {header_abort: {}, percentage: 100}}",
    )
    .start()
    .await;
    let client = TestClient::http1();
    let r = client
        .get(addr, "/", &[("x-envoy-fault-abort-request", "429")])
        .await;
    assert_eq!(r.status, 429);
    let started = Instant::now();
    let r = client
        .get(addr, "/", &[("x-envoy-fault-delay-request", "250")])
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn header_controlled_faults_are_ignored_unless_configured() {
    let up = Upstream::start("up").await;
    let (_p, addr) = with_fault(&up, "{abort: {http_status: 503, percentage: 0}}")
        .start()
        .await;
    let r = TestClient::http1()
        .get(addr, "/", &[("x-envoy-fault-abort-request", "429")])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn grpc_clients_see_injected_aborts_as_grpc_statuses() {
    let server = GrpcServer::start().await;
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
            - match: {{prefix: /sinew.test.Grpc/}}
              cluster: grpc
              fault: {{abort: {{grpc_status: 8, percentage: 100}}}}
            - match: {{prefix: /sinew.test.Http/}}
              cluster: grpc
              fault: {{abort: {{http_status: 503, percentage: 100}}}}
            - match: {{prefix: /sinew.test.Echo/}}
              cluster: grpc
              fault: {{abort: {{grpc_status: 14, percentage: 100}}, headers: [{{name: x-chaos, present: true}}]}}
clusters:
  - name: grpc
    protocol: http2
    endpoints: [{{address: {}}}]
",
        server.addr
    ))
    .await;
    let mut client = GrpcClient::connect(proxy.addr("grpc").await).await;
    let status = client
        .unary("/sinew.test.Grpc/Unary", Request::new(Msg::new("a", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "fault filter abort");
    // An HTTP status is sent to a gRPC client as the matching gRPC status.
    let status = client
        .unary("/sinew.test.Http/Unary", Request::new(Msg::new("a", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "fault filter abort");
    assert_eq!(server.requests(), 0);

    // Gated by metadata: only calls that carry it fail.
    let mut chaotic = Request::new(Msg::new("a", 0));
    chaotic
        .metadata_mut()
        .insert("x-chaos", "1".parse().unwrap());
    let status = client
        .unary("/sinew.test.Echo/Unary", chaotic)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let reply = client
        .unary("/sinew.test.Echo/Unary", Request::new(Msg::new("calm", 0)))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().text, "echo: calm");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_bad_fault_is_refused_on_reload_and_the_last_config_keeps_serving() {
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let err = proxy
        .reload(&with_fault(&up, "{abort: {http_status: 700, percentage: 100}}").yaml())
        .await
        .unwrap_err();
    assert!(
        err.contains("routes[0].fault.abort.http_status: must be between 200 and 599"),
        "{err}"
    );
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);
}
