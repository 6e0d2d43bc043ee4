//! Request mirroring (`routes[].request_mirror_policies`): copies reach the shadow cluster
//! with `-shadow` on the host and the same method, path, headers and body; a share of
//! requests is copied; and a shadow that stalls, refuses connections or gets a body over
//! the cap costs the main request nothing — bounded in flight, and mirroring resumes when
//! the shadow is back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sinew_integration::{closed_port_addr, eventually, tally, OneRoute, TestClient, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a shadow server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    target: String,
    /// `Host`, or the `:authority` of an HTTP/2 request.
    host: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// A shadow server (HTTP/1.1 and h2c) that records every request it gets, whole.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: JoinHandle<()>,
}

impl Recorder {
    async fn start_on(addr: SocketAddr) -> Recorder {
        let listener = TcpListener::bind(addr).await.expect("bind recorder");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let host = req
                                .headers()
                                .get(http::header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_string)
                                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                                .unwrap_or_default();
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            log.lock().unwrap().push(Seen {
                                method: parts.method,
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map_or("/".into(), |p| p.to_string()),
                                host,
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(
                                "shadow answer, dropped by the proxy\n",
                            ))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, accept }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One route to `main` mirrored by `policy` (flow YAML of one policy, naming cluster
/// `shadow`) to a `shadow` cluster at `shadow`; `route_extra` goes on the route.
fn mirrored(main: &Upstream, shadow: SocketAddr, policy: &str, route_extra: &str) -> OneRoute {
    OneRoute::to(&[main.addr])
        .route(&format!(
            "              request_mirror_policies: [{policy}]\n{route_extra}"
        ))
        .cluster(&format!(
            "  - name: shadow\n    protocol: same_as_downstream\n    endpoints: [{{address: {shadow}}}]"
        ))
}

/// Waits until `count` stops changing for 300 ms (copies still on their way), at most 10 s.
async fn settled(count: impl Fn() -> usize) -> usize {
    let mut last = count();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::test]
async fn copies_reach_the_shadow_with_a_shadow_host_and_the_same_request() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(&main, shadow.addr, "{cluster: shadow}", "")
        .start()
        .await;
    let client = TestClient::http1();
    let r = client
        .send(
            Method::POST,
            addr,
            "/orders?id=7",
            &[("host", "api.example.com:8080"), ("x-custom", "kept")],
            Bytes::from_static(b"{\"item\": 1}"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "main\n",
        "the client gets the main upstream's answer"
    );
    let r = client.get(addr, "/plain", &[("host", "web")]).await;
    assert_eq!(r.text(), "main\n");

    assert!(eventually(Duration::from_secs(5), || shadow.count() == 2).await);
    let seen = shadow.seen();
    let post = seen.iter().find(|s| s.method == Method::POST).unwrap();
    assert_eq!(post.target, "/orders?id=7");
    assert_eq!(post.host, "api.example.com-shadow:8080");
    assert_eq!(post.headers["x-custom"], "kept");
    assert_eq!(post.body, "{\"item\": 1}");
    // The copy carries what the proxy adds to the main request too.
    assert!(post.headers.contains_key("x-forwarded-for"), "{post:?}");
    let get = seen.iter().find(|s| s.method == Method::GET).unwrap();
    assert_eq!(
        (get.target.as_str(), get.host.as_str()),
        ("/plain", "web-shadow")
    );
    assert!(get.body.is_empty());
    assert_eq!(main.requests(), 2);
}

#[tokio::test]
async fn http2_copies_carry_the_shadow_authority() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(&main, shadow.addr, "{cluster: shadow}", "")
        .start()
        .await;
    let r = sinew_integration::h2_request(addr, "http://grpc.internal:50051/x", &[]).await;
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || shadow.count() == 1).await);
    assert_eq!(shadow.seen()[0].host, "grpc.internal-shadow:50051");
}

#[tokio::test]
async fn disabling_the_host_suffix_keeps_the_host() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(
        &main,
        shadow.addr,
        "{cluster: shadow, disable_shadow_host_suffix_append: true}",
        "",
    )
    .start()
    .await;
    TestClient::http1()
        .get(addr, "/", &[("host", "web:81")])
        .await;
    assert!(eventually(Duration::from_secs(5), || shadow.count() == 1).await);
    assert_eq!(shadow.seen()[0].host, "web:81");
}

#[tokio::test]
async fn buffered_bodies_of_retried_routes_are_mirrored_too() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(
        &main,
        shadow.addr,
        "{cluster: shadow}",
        "              retry: {retry_on: [5xx]}",
    )
    .start()
    .await;
    let body = Bytes::from(vec![b'r'; 5000]);
    let r = TestClient::http1()
        .send(
            Method::PUT,
            addr,
            "/",
            &[("x-test-echo-body", "1")],
            body.clone(),
        )
        .await;
    assert_eq!(r.body, body);
    assert!(eventually(Duration::from_secs(5), || shadow.count() == 1).await);
    assert_eq!(shadow.seen()[0].body, body);
}

#[tokio::test]
async fn chunked_bodies_are_mirrored_whole_under_the_cap_and_not_at_all_over_it() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(
        &main,
        shadow.addr,
        "{cluster: shadow, max_body_bytes: 1000}",
        "",
    )
    .start()
    .await;
    // Three 400-byte chunks: no length known up front, over the cap only at the third.
    let chunks = [vec![b'a'; 400], vec![b'b'; 400], vec![b'c'; 400]];
    let over = chunked_post(addr, &chunks).await;
    assert_eq!(over.len(), 1200, "the main upstream got the whole body");
    assert!(over.starts_with(&[b'a'; 400]) && over.ends_with(&[b'c'; 400]));
    let under = chunked_post(addr, &chunks[..2]).await;
    assert_eq!(under.len(), 800);

    assert!(eventually(Duration::from_secs(5), || shadow.count() >= 1).await);
    assert_eq!(
        settled(|| shadow.count()).await,
        1,
        "only the body under the cap"
    );
    let seen = shadow.seen();
    assert_eq!(seen[0].body.len(), 800);
    assert_eq!(&seen[0].body[..], &under[..]);
}

#[tokio::test]
async fn bodies_over_the_cap_reach_the_main_upstream_intact_and_are_not_mirrored() {
    let main = Upstream::start("main").await;
    let shadow = Recorder::start_on("127.0.0.1:0".parse().unwrap()).await;
    let (_p, addr) = mirrored(&main, shadow.addr, "{cluster: shadow}", "")
        .start()
        .await;
    let client = TestClient::http1();
    // Over the default 64 KiB cap, with a Content-Length that says so up front.
    let big = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let r = client
        .send(
            Method::POST,
            addr,
            "/big",
            &[("x-test-echo-body", "1")],
            big.clone(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, big);
    // A small one afterwards is mirrored: mirroring itself still works.
    client
        .send(Method::POST, addr, "/small", &[], Bytes::from_static(b"s"))
        .await;
    assert!(eventually(Duration::from_secs(5), || shadow.count() >= 1).await);
    assert_eq!(settled(|| shadow.count()).await, 1);
    assert_eq!(shadow.seen()[0].target, "/small");
}

#[tokio::test]
async fn a_stalled_shadow_does_not_slow_the_main_request() {
    let main = Upstream::start("main").await;
    let shadow = Upstream::start_with_delay("shadow", Duration::from_secs(3)).await;
    let (_p, addr) = mirrored(&main, shadow.addr, "{cluster: shadow}", "")
        .start()
        .await;
    let client = TestClient::http1();
    for i in 0..10 {
        let started = Instant::now();
        let r = client
            .send(Method::POST, addr, "/", &[], Bytes::from_static(b"body"))
            .await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "main\n");
        assert!(
            took < Duration::from_millis(500),
            "request {i} took {took:?}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || shadow.requests() == 10).await,
        "the shadow got {} copies",
        shadow.requests()
    );
}

#[tokio::test]
async fn a_refusing_shadow_does_not_fail_the_main_request_and_mirroring_resumes_when_it_is_back() {
    let main = Upstream::start("main").await;
    let shadow_addr = closed_port_addr();
    let (_p, addr) = mirrored(&main, shadow_addr, "{cluster: shadow}", "")
        .start()
        .await;
    let client = TestClient::http1();
    let t = tally(&client, addr, "/", &[], 50, 4, Duration::from_secs(20)).await;
    assert_eq!((t.errors, t.non_2xx), (0, 0), "{:?}", t.first_errors);
    assert_eq!(t.count("main"), 50);

    let shadow = Upstream::start_on("shadow", shadow_addr).await;
    let t = tally(&client, addr, "/", &[], 20, 2, Duration::from_secs(20)).await;
    assert_eq!(t.count("main"), 20);
    assert!(
        eventually(Duration::from_secs(5), || shadow.requests() == 20).await,
        "the shadow got {} copies",
        shadow.requests()
    );
}

#[tokio::test]
async fn percentage_mirrors_about_that_share_of_requests() {
    let main = Upstream::start("main").await;
    let shadow = Upstream::start("shadow").await;
    let (_p, addr) = mirrored(&main, shadow.addr, "{cluster: shadow, percentage: 25}", "")
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
    assert_eq!(t.count("main"), n);
    let copies = settled(|| shadow.requests()).await;
    // 25% of 600 is 150, with a standard deviation of about 11: 95..=205 is 5 of them.
    assert!((95..=205).contains(&copies), "mirrored {copies} of {n}");
}

#[tokio::test]
async fn in_flight_copies_are_bounded_while_the_shadow_stalls_and_freed_by_the_timeout() {
    let main = Upstream::start("main").await;
    let shadow = Upstream::start("shadow").await;
    // Copies time out with the route's timeout; the main requests are fast.
    let (_p, addr) = mirrored(
        &main,
        shadow.addr,
        "{cluster: shadow, max_in_flight: 3}",
        "              timeout: 1s",
    )
    .start()
    .await;
    let client = TestClient::http1();
    // The stall is asked of the shadow only (`x-test-target`), through the copied headers.
    let stall = [("x-test-delay-ms", "5000"), ("x-test-target", "shadow")];
    let started = Instant::now();
    for _ in 0..12 {
        let r = client.get(addr, "/", &stall).await;
        assert_eq!(r.text(), "main\n");
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "too slow to test the bound"
    );
    assert!(eventually(Duration::from_secs(5), || shadow.requests() == 3).await);
    assert_eq!(
        settled(|| shadow.requests()).await,
        3,
        "3 in flight, 9 skipped"
    );

    // The stalled copies time out; copies flow again.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        client.get(addr, "/", &[]).await;
        if eventually(Duration::from_millis(200), || shadow.requests() > 3).await {
            break;
        }
        assert!(Instant::now() < until, "mirroring did not resume");
    }
}

#[tokio::test]
async fn reloading_the_mirror_away_stops_the_copies() {
    let main = Upstream::start("main").await;
    let shadow = Upstream::start("shadow").await;
    let (proxy, addr) = mirrored(&main, shadow.addr, "{cluster: shadow}", "")
        .start()
        .await;
    let client = TestClient::http1();
    client.get(addr, "/", &[]).await;
    assert!(eventually(Duration::from_secs(5), || shadow.requests() == 1).await);
    proxy
        .reload(&OneRoute::to(&[main.addr]).yaml())
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(client.get(addr, "/", &[]).await.text(), "main\n");
    }
    assert_eq!(settled(|| shadow.requests()).await, 1);
}

#[tokio::test]
async fn a_mirror_to_an_unknown_cluster_is_refused() {
    let main = Upstream::start("main").await;
    let yaml = OneRoute::to(&[main.addr])
        .route("              request_mirror_policies: [{cluster: nowhere}]")
        .yaml();
    let err = sinew_config::load_str("test.yaml", &yaml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes[0].request_mirror_policies[0].cluster: no cluster named \"nowhere\""),
        "{err}"
    );
}

/// POSTs `chunks` with chunked framing on a fresh connection, asking the upstream to
/// echo the body; returns the echoed body.
async fn chunked_post(addr: SocketAddr, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = b"POST /chunked HTTP/1.1\r\nHost: x\r\nx-test-echo-body: 1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for c in chunks {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text_end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..text_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    decode_body(&head, &out[text_end..])
}

/// The body of a response, by its Content-Length or chunked framing.
fn decode_body(head: &str, mut rest: &[u8]) -> Vec<u8> {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return rest.to_vec();
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
