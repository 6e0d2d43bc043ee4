//! Tracing end to end: requests through the proxy with W3C and B3 contexts, the upstream
//! reading what the proxy propagated, and an OTLP collector in the test decoding the real
//! protobuf the proxy exported over gRPC and over HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use sinew_integration::admin_kit;
use sinew_integration::otlp_kit::{Collector, ReceivedSpan, Transport};
use sinew_integration::{closed_port_addr, OneRoute, TestClient, TestProxy, Upstream};

const WAIT: Duration = Duration::from_secs(10);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced(upstream: SocketAddr, tracing_yaml: &str) -> OneRoute {
    OneRoute::to(&[upstream]).http(tracing_yaml)
}

fn tracing_to(collector: &Collector, protocol: &str, sampling: f64) -> String {
    format!(
        "      tracing:
        random_sampling: {sampling}
        service_name: edge-proxy
        opentelemetry: {{protocol: {protocol}, endpoint: 'http://{}', timeout: 2s}}
",
        collector.addr
    )
}

/// What the upstream saw of one header, from its echo of the request head.
fn seen(echo: &str, header: &str) -> Option<String> {
    let prefix = format!("{header}: ");
    echo.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

/// `traceparent` as the upstream saw it: (trace id, span id, flags).
fn seen_traceparent(echo: &str) -> (String, String, String) {
    let tp = seen(echo, "traceparent").expect("the upstream got a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn echo_through(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut all = vec![("x-test-echo", "1")];
    all.extend_from_slice(headers);
    let reply = TestClient::http1().get(addr, path, &all).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

fn only_span(spans: &[ReceivedSpan]) -> &ReceivedSpan {
    assert_eq!(spans.len(), 1, "{spans:#?}");
    &spans[0]
}

#[tokio::test]
async fn grpc_export_carries_one_server_span_per_request_with_its_attributes() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 100.0))
        .start()
        .await;

    let echo = echo_through(addr, "/orders/42?x=1", &[]).await;
    let (trace_id, span_id, flags) = seen_traceparent(&echo);
    assert_eq!(flags, "01", "a new trace at 100% is sampled");

    let spans = collector.wait_for(1, WAIT).await;
    let span = only_span(&spans);
    assert_eq!(span.service_name, "edge-proxy");
    assert_eq!(span.trace_id_hex(), trace_id);
    assert_eq!(
        span.span_id_hex(),
        span_id,
        "the upstream's parent is the proxy's span"
    );
    assert!(
        span.span.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    assert_eq!(span.span.kind, SpanKind::Server as i32);
    assert_eq!(span.span.name, "GET");
    assert_eq!(
        span.attribute("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(span.attribute("url.path").as_deref(), Some("/orders/42"));
    assert_eq!(
        span.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(span.attribute("upstream_cluster").as_deref(), Some("svc"));
    assert_eq!(
        span.attribute("upstream_address"),
        Some(upstream.addr.to_string())
    );
    assert_eq!(
        span.attribute("client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(span.span.end_time_unix_nano >= span.span.start_time_unix_nano);
    assert!(span.span.start_time_unix_nano > 0);
}

#[tokio::test]
async fn http_protobuf_export_carries_the_span_too() {
    let collector = Collector::start(Transport::HttpProtobuf).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(
        upstream.addr,
        &tracing_to(&collector, "http/protobuf", 100.0),
    )
    .start()
    .await;

    let echo = echo_through(addr, "/over-http", &[]).await;
    let (trace_id, span_id, _) = seen_traceparent(&echo);
    let spans = collector.wait_for(1, WAIT).await;
    let span = only_span(&spans);
    assert_eq!(span.trace_id_hex(), trace_id);
    assert_eq!(span.span_id_hex(), span_id);
    assert_eq!(span.attribute("url.path").as_deref(), Some("/over-http"));
    assert_eq!(span.service_name, "edge-proxy");
}

#[tokio::test]
async fn w3c_parent_is_continued_and_wins_over_the_rate() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    // 0%: only the parent's decision can sample this request.
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 0.0))
        .start()
        .await;

    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let echo = echo_through(
        addr,
        "/",
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        ],
    )
    .await;
    let (trace_id, span_id, flags) = seen_traceparent(&echo);
    assert_eq!(trace_id, TRACE, "same trace");
    assert_ne!(span_id, CALLER_SPAN, "the proxy's own span");
    assert_eq!(flags, "01");
    assert_eq!(
        seen(&echo, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );

    let spans = collector.wait_for(1, WAIT).await;
    let span = only_span(&spans);
    assert_eq!(span.trace_id_hex(), TRACE);
    assert_eq!(span.parent_span_id_hex(), CALLER_SPAN);
    assert_eq!(span.span_id_hex(), span_id);
    assert_eq!(
        span.span.trace_state,
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
}

#[tokio::test]
async fn b3_single_and_multi_header_contexts_are_continued_in_their_own_format() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 0.0))
        .start()
        .await;

    // Single header, 64-bit trace id, sampled.
    let echo = echo_through(
        addr,
        "/single",
        &[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    )
    .await;
    let (trace_id, span_id, flags) = seen_traceparent(&echo);
    assert_eq!(trace_id, "000000000000000064fe8b2a57d3eff7");
    assert_eq!(flags, "01");
    assert_eq!(
        seen(&echo, "b3"),
        Some(format!("64fe8b2a57d3eff7-{span_id}-1-e457b5a2e4d86bd1")),
        "b3 is rewritten at the width it came, naming the proxy's span"
    );

    // Multi header, 128-bit, sampled.
    let echo = echo_through(
        addr,
        "/multi",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    let (multi_trace, multi_span, _) = seen_traceparent(&echo);
    assert_eq!(multi_trace, "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(
        seen(&echo, "x-b3-traceid").as_deref(),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(seen(&echo, "x-b3-spanid"), Some(multi_span.clone()));
    assert_eq!(
        seen(&echo, "x-b3-parentspanid").as_deref(),
        Some("a2fb4a1d1a96d312")
    );
    assert_eq!(seen(&echo, "x-b3-sampled").as_deref(), Some("1"));

    let spans = collector.wait_for(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let single = spans
        .iter()
        .find(|s| s.attribute("url.path").as_deref() == Some("/single"))
        .unwrap();
    assert_eq!(single.parent_span_id_hex(), "e457b5a2e4d86bd1");
    assert_eq!(single.span_id_hex(), span_id);
    let multi = spans
        .iter()
        .find(|s| s.attribute("url.path").as_deref() == Some("/multi"))
        .unwrap();
    assert_eq!(multi.trace_id_hex(), "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(multi.parent_span_id_hex(), "a2fb4a1d1a96d312");
    assert_eq!(multi.span_id_hex(), multi_span);
}

/// Sends a request whose parent says "sampled", and waits for its span: the export task
/// sends spans in order, so once it is in, every span queued before it is in too.
async fn flush_with_marker(addr: SocketAddr, collector: &Collector) -> Vec<ReceivedSpan> {
    let marker = format!("00-{TRACE}-{CALLER_SPAN}-01");
    echo_through(addr, "/marker", &[("traceparent", &marker)]).await;
    let until = Instant::now() + WAIT;
    loop {
        let spans = collector.spans();
        if spans
            .iter()
            .any(|s| s.attribute("url.path").as_deref() == Some("/marker"))
        {
            return spans
                .into_iter()
                .filter(|s| s.attribute("url.path").as_deref() != Some("/marker"))
                .collect();
        }
        assert!(Instant::now() < until, "the marker span never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_parent_that_did_not_sample_is_honoured_even_at_100_percent() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 100.0))
        .start()
        .await;

    let unsampled = format!("00-{TRACE}-{CALLER_SPAN}-00");
    for _ in 0..5 {
        let echo = echo_through(addr, "/quiet", &[("traceparent", &unsampled)]).await;
        let (trace_id, span_id, flags) = seen_traceparent(&echo);
        assert_eq!(trace_id, TRACE, "the context still propagates");
        assert_ne!(span_id, CALLER_SPAN);
        assert_eq!(flags, "00", "and says not sampled");
    }
    let echo = echo_through(addr, "/quiet", &[("b3", "0")]).await;
    assert_eq!(seen_traceparent(&echo).2, "00", "b3: 0 denies too");
    assert_eq!(
        seen(&echo, "b3").as_deref().map(|b| b.ends_with("-0")),
        Some(true)
    );

    let others = flush_with_marker(addr, &collector).await;
    assert!(
        others.is_empty(),
        "unsampled requests exported: {others:#?}"
    );
}

#[tokio::test]
async fn the_rate_samples_new_traces_none_all_or_about_half() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let client = TestClient::http1();

    // 0%: nothing but the marker.
    let (_none, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 0.0))
        .start()
        .await;
    for _ in 0..20 {
        let reply = client.get(addr, "/none", &[("x-test-echo", "1")]).await;
        assert_eq!(seen_traceparent(&reply.text()).2, "00");
    }
    assert!(flush_with_marker(addr, &collector).await.is_empty());

    // 50% of 400 new traces: binomial, standard deviation 10; allow 5 of them.
    let half = Collector::start(Transport::Grpc).await;
    let (_half, addr) = traced(upstream.addr, &tracing_to(&half, "grpc", 50.0))
        .start()
        .await;
    let mut flagged_sampled = 0;
    for _ in 0..400 {
        let reply = client.get(addr, "/half", &[("x-test-echo", "1")]).await;
        if seen_traceparent(&reply.text()).2 == "01" {
            flagged_sampled += 1;
        }
    }
    let exported = flush_with_marker(addr, &half).await.len();
    assert_eq!(
        exported, flagged_sampled,
        "exactly the requests propagated as sampled were exported"
    );
    assert!(
        (150..=250).contains(&exported),
        "{exported} of 400 sampled at 50%"
    );
}

#[tokio::test]
async fn malformed_context_starts_a_new_trace_and_never_fails_the_request() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 100.0))
        .start()
        .await;

    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("traceparent", "00-zzzz-00f067aa0ba902b7-01"),
            ("tracestate", "a=b"),
        ],
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        &[("b3", "not-a-b3-header-at-all")],
        &[("x-b3-traceid", "123"), ("x-b3-spanid", "also-bad")],
    ];
    for headers in cases {
        let echo = echo_through(addr, "/bad", headers).await;
        let (trace_id, _, flags) = seen_traceparent(&echo);
        assert_ne!(trace_id, "00000000000000000000000000000000", "{headers:?}");
        assert_eq!(flags, "01", "a fresh trace, sampled at 100%: {headers:?}");
        assert_eq!(seen(&echo, "tracestate"), None, "{headers:?}");
    }
    let spans = collector.wait_for(4, WAIT).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    assert!(spans.iter().all(|s| s.span.parent_span_id.is_empty()));
}

#[tokio::test]
async fn server_errors_mark_the_span_as_an_error() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = traced(upstream.addr, &tracing_to(&collector, "grpc", 100.0))
        .start()
        .await;
    let client = TestClient::http1();
    assert_eq!(
        client
            .get(addr, "/fail", &[("x-test-status", "503")])
            .await
            .status,
        503
    );
    assert_eq!(
        client
            .get(addr, "/missing", &[("x-test-status", "404")])
            .await
            .status,
        404
    );

    let spans = collector.wait_for(2, WAIT).await;
    let status_of = |path: &str| {
        let span = spans
            .iter()
            .find(|s| s.attribute("url.path").as_deref() == Some(path))
            .unwrap();
        span.span.status.clone().unwrap_or_default().code
    };
    assert_eq!(status_of("/fail"), OtlpStatus::Error as i32);
    assert_eq!(
        status_of("/missing"),
        OtlpStatus::Unset as i32,
        "4xx is the client's"
    );
}

/// A proxy whose collector is at `collector`, exporting with a 16-span queue, with an
/// admin API to read the span counters from.
async fn proxy_exporting_to(
    collector: SocketAddr,
    upstream: SocketAddr,
) -> (TestProxy, SocketAddr, sinew_proxy::admin::AdminServer) {
    let yaml = OneRoute::to(&[upstream])
        .http(&format!(
            "      tracing:
        random_sampling: 100
        max_queued_spans: 16
        opentelemetry: {{endpoint: 'http://{collector}', timeout: 1s}}
"
        ))
        .yaml();
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("web").await;
    let admin = admin_kit::start(&proxy).await;
    (proxy, addr, admin)
}

/// 300 requests all succeed, and in far less time than waiting on the collector even
/// once per request would take.
async fn all_succeed_promptly(addr: SocketAddr) {
    let client = TestClient::http1();
    let started = Instant::now();
    for _ in 0..300 {
        assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

/// Waits until the process's span counter `name` is above zero.
async fn counted(admin: SocketAddr, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = admin_kit::metrics(admin).await;
        if admin_kit::value(&metrics, name, &[]) > 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed 0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refusing_collector_fails_exports_but_never_requests() {
    let upstream = Upstream::start("a").await;
    let (_proxy, addr, admin) = proxy_exporting_to(closed_port_addr(), upstream.addr).await;
    all_succeed_promptly(addr).await;
    counted(admin.address, "sinew_tracing_spans_failed_total").await;
}

#[tokio::test]
async fn a_stalled_collector_fills_the_queue_and_spans_are_dropped_not_waited_for() {
    // Accepts connections and never answers: every export hangs to its timeout.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = stalled.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = stalled.accept().await {
            held.push(stream);
        }
    });
    let upstream = Upstream::start("a").await;
    let (_proxy, addr, admin) = proxy_exporting_to(collector, upstream.addr).await;
    all_succeed_promptly(addr).await;
    counted(admin.address, "sinew_tracing_spans_dropped_total").await;
}

#[tokio::test]
async fn listeners_without_tracing_pass_trace_headers_through_untouched() {
    let upstream = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[upstream.addr]).start().await;
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let echo = echo_through(addr, "/", &[("traceparent", &traceparent), ("b3", "0")]).await;
    assert_eq!(seen(&echo, "traceparent"), Some(traceparent));
    assert_eq!(seen(&echo, "b3").as_deref(), Some("0"));
}

#[tokio::test]
async fn a_bad_tracing_config_names_the_field() {
    let yaml = OneRoute::to(&[closed_port_addr()])
        .http(
            "      tracing:
        random_sampling: 150
        opentelemetry: {endpoint: 'https://collector:4317'}
",
        )
        .yaml();
    let errors = sinew_config::load_str("tracing.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("listeners[0].http.tracing.random_sampling"),
        "{errors}"
    );
    assert!(
        errors.contains("listeners[0].http.tracing.opentelemetry.endpoint"),
        "{errors}"
    );
    assert!(errors.contains("tracing.yaml:"), "file:line:col: {errors}");
}

#[tokio::test]
async fn a_reload_changes_the_rate_keeps_exporting_and_can_turn_tracing_off() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let route = traced(upstream.addr, &tracing_to(&collector, "grpc", 100.0));
    let (proxy, addr) = route.start().await;
    echo_through(addr, "/before", &[]).await;

    // Same collector, rate 0: new traces are no longer sampled, a sampled parent still is.
    let zero = traced(upstream.addr, &tracing_to(&collector, "grpc", 0.0));
    proxy.reload(&zero.yaml()).await.unwrap();
    let echo = echo_through(addr, "/unsampled", &[]).await;
    assert_eq!(seen_traceparent(&echo).2, "00");
    let others = flush_with_marker(addr, &collector).await;
    let paths: Vec<_> = others
        .iter()
        .filter_map(|s| s.attribute("url.path"))
        .collect();
    assert_eq!(paths, ["/before"], "{others:#?}");

    // Off: trace headers pass through as they came.
    proxy
        .reload(&OneRoute::to(&[upstream.addr]).yaml())
        .await
        .unwrap();
    let echo = echo_through(addr, "/off", &[("b3", "1")]).await;
    assert_eq!(seen(&echo, "traceparent"), None);
    assert_eq!(seen(&echo, "b3").as_deref(), Some("1"));
}

/// One export request a collector received: path, `Host`, `Content-Type`, JSON body.
type Export = (String, String, String, serde_json::Value);

/// A Zipkin collector for the test: takes `POST`s and keeps (path, `Host`,
/// `Content-Type`, body as JSON).
struct ZipkinCollector {
    addr: SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Export>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ZipkinCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ZipkinCollector {
    async fn start() -> ZipkinCollector {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let header = |name| {
                                    req.headers()
                                        .get(name)
                                        .and_then(|v: &http::HeaderValue| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string()
                                };
                                let path = req.uri().path().to_string();
                                let host = header(http::header::HOST);
                                let content_type = header(http::header::CONTENT_TYPE);
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let json = serde_json::from_slice(&body)
                                    .unwrap_or(serde_json::Value::Null);
                                kept.lock().unwrap().push((path, host, content_type, json));
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(202)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        ZipkinCollector {
            addr,
            received,
            task,
        }
    }

    /// Every span received so far, with the request that carried it.
    async fn wait_for_span(&self) -> Export {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((path, host, content_type, list)) = self.received.lock().unwrap().first() {
                return (
                    path.clone(),
                    host.clone(),
                    content_type.clone(),
                    list[0].clone(),
                );
            }
            assert!(
                Instant::now() < deadline,
                "no span reached the Zipkin collector"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An Envoy bootstrap whose connection manager has `tracing` with `provider`, and whose
/// clusters are `svc` (the upstream) and `collector` (at `collector`, HTTP/2 if asked).
fn traced_bootstrap(
    listen: SocketAddr,
    upstream: SocketAddr,
    provider: &str,
    collector: SocketAddr,
    http2: bool,
) -> String {
    let h2 = if http2 {
        "
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}"
    } else {
        ""
    };
    format!(
        "static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          tracing:
            random_sampling: {{value: 100}}
            provider:
{provider}
          route_config:
            virtual_hosts:
            - name: all
              domains: ['*']
              routes:
              - match: {{prefix: /}}
                route: {{cluster: svc}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              start_child_span: true
  clusters:
  - name: svc
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}
  - name: collector{h2}
    load_assignment:
      cluster_name: collector
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {collector_port}}}}}}}
",
        listen_port = listen.port(),
        upstream_port = upstream.port(),
        collector_port = collector.port(),
    )
}

fn run_bootstrap(name: &str, text: &str) -> (sinew_integration::ChildGuard, std::path::PathBuf) {
    let dir = sinew_integration::scratch_dir(name);
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, text).unwrap();
    (sinew_integration::start_proxy_file(&file), dir)
}

async fn serving(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstraps_zipkin_tracer_posts_json_spans_to_its_collector_cluster_and_sends_b3_upstream(
) {
    let collector = ZipkinCollector::start().await;
    let upstream = Upstream::start("a").await;
    let listen = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    let provider = "              name: envoy.tracers.zipkin
              typed_config:
                '@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: collector
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                collector_hostname: zipkin.test
                shared_span_context: false";
    let (_proxy, dir) = run_bootstrap(
        "zipkin-bootstrap",
        &traced_bootstrap(listen, upstream.addr, provider, collector.addr, false),
    );
    serving(listen).await;

    let echo = echo_through(listen, "/orders/7", &[]).await;
    // Envoy's Zipkin tracer: B3 headers upstream, and a 64-bit trace id for a new trace
    // (no trace_id_128bit).
    let trace_id = seen(&echo, "x-b3-traceid").expect("x-b3-traceid upstream");
    let span_id = seen(&echo, "x-b3-spanid").expect("x-b3-spanid upstream");
    assert_eq!(seen(&echo, "x-b3-sampled").as_deref(), Some("1"));
    assert_eq!(trace_id.len(), 16, "{trace_id}");
    let (w3c_trace, w3c_span, _) = seen_traceparent(&echo);
    assert_eq!(
        (w3c_trace, w3c_span),
        (format!("{trace_id:0>32}"), span_id.clone())
    );

    let (path, host, content_type, span) = collector.wait_for_span().await;
    assert_eq!(path, "/api/v2/spans");
    assert_eq!(host, "zipkin.test");
    assert_eq!(content_type, "application/json");
    assert_eq!(span["traceId"], trace_id.as_str());
    assert_eq!(span["id"], span_id.as_str());
    assert_eq!(span["kind"], "SERVER");
    assert_eq!(span["tags"]["url.path"], "/orders/7");
    assert_eq!(span["tags"]["http.response.status_code"], "200");
    assert!(span["timestamp"].as_u64().unwrap() > 0);
    assert!(span.get("parentId").is_none(), "{span}");

    // A caller's B3 context is continued: same trace, the caller's span as parent.
    collector.received.lock().unwrap().clear();
    let echo = echo_through(
        listen,
        "/",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(
        seen(&echo, "x-b3-traceid").as_deref(),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(
        seen(&echo, "x-b3-parentspanid").as_deref(),
        Some("a2fb4a1d1a96d312")
    );
    let (_, _, _, span) = collector.wait_for_span().await;
    assert_eq!(span["traceId"], "463ac35c9f6413ad48485a3953bb6124");
    assert_eq!(span["parentId"], "a2fb4a1d1a96d312");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstraps_opentelemetry_tracer_exports_over_grpc_to_its_collector_cluster() {
    let collector = Collector::start(Transport::Grpc).await;
    let upstream = Upstream::start("a").await;
    let listen = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    let provider = "              name: envoy.tracers.opentelemetry
              typed_config:
                '@type': type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {cluster_name: collector}
                  timeout: 0.250s
                service_name: front-envoy";
    let (_proxy, dir) = run_bootstrap(
        "otel-bootstrap",
        &traced_bootstrap(listen, upstream.addr, provider, collector.addr, true),
    );
    serving(listen).await;
    let echo = echo_through(listen, "/otel", &[]).await;
    let (trace_id, span_id, flags) = seen_traceparent(&echo);
    assert_eq!(flags, "01");
    assert!(
        seen(&echo, "x-b3-traceid").is_none(),
        "the OpenTelemetry tracer writes W3C only"
    );
    let spans = collector.wait_for(1, WAIT).await;
    let span = only_span(&spans);
    assert_eq!(span.service_name, "front-envoy");
    assert_eq!(
        (span.trace_id_hex(), span.span_id_hex()),
        (trace_id, span_id)
    );
    assert_eq!(span.attribute("url.path").as_deref(), Some("/otel"));
    let _ = std::fs::remove_dir_all(dir);
}
