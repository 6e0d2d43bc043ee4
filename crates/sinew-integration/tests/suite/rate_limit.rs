//! Rate limits over real sockets: local token buckets at the route, virtual-host and
//! listener levels (keyed by client IP or a header), connection-rate limits at accept,
//! the gRPC form of a refusal, and global limits shared by two proxies through a real
//! `redis-server` — fixed and sliding windows, and what happens when Redis dies or
//! stalls. Each mechanism is shown to refuse and then to let requests through again.
//!
//! Token buckets refill at fill-interval boundaries on a clock the test does not control,
//! so a burst may straddle one refill: counts are asserted with that slack.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sinew_integration::redis_kit::RedisServer;
use sinew_integration::{h2_request, OneRoute, Reply, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `n` GETs one after another; returns every reply.
async fn burst(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<Reply> {
    let mut replies = Vec::new();
    for _ in 0..n {
        replies.push(client.get(addr, path, headers).await);
    }
    replies
}

fn oks(replies: &[Reply]) -> usize {
    replies.iter().filter(|r| r.status == 200).count()
}

fn refused(replies: &[Reply]) -> Option<&Reply> {
    replies.iter().find(|r| r.status == 429)
}

/// Polls with single requests until one gets 200, at most `deadline`.
async fn recovers(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    deadline: Duration,
) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if client.get(addr, path, headers).await.status == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

const BUCKET_3_PER_SECOND: &str =
    "{token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 1s}";

#[tokio::test]
async fn route_bucket_answers_429_with_ratelimit_headers_after_the_burst_and_recovers_after_refill()
{
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .route(&format!(
            "              local_rate_limit: {BUCKET_3_PER_SECOND}}}"
        ))
        .start()
        .await;
    let client = TestClient::http1();
    let replies = burst(&client, addr, "/", &[], 8).await;
    let ok = oks(&replies);
    assert!((3..=6).contains(&ok), "{ok} of 8 got through a bucket of 3");
    let over = refused(&replies).expect("a request over the burst gets 429");
    assert_eq!(over.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = over
        .header("x-ratelimit-reset")
        .expect("reset header")
        .parse()
        .unwrap();
    assert_eq!(reset, 1, "the next fill is within the 1s interval");
    assert_eq!(over.text(), "rate limited");
    // Allowed responses carry no headers unless asked for.
    assert!(replies[0].header("x-ratelimit-limit").is_none());

    assert!(
        recovers(&client, addr, "/", &[], Duration::from_secs(3)).await,
        "the bucket refills"
    );
}

#[tokio::test]
async fn draft_version_03_headers_count_down_on_allowed_responses() {
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .route("              local_rate_limit: {token_bucket: {max_tokens: 100, tokens_per_fill: 1, fill_interval: 1h}, enable_x_ratelimit_headers: DRAFT_VERSION_03}")
        .start()
        .await;
    let client = TestClient::http1();
    let replies = burst(&client, addr, "/", &[], 3).await;
    let remaining: Vec<&str> = replies
        .iter()
        .map(|r| r.header("x-ratelimit-remaining").unwrap())
        .collect();
    assert_eq!(remaining, ["99", "98", "97"]);
    assert_eq!(replies[0].header("x-ratelimit-limit"), Some("100"));
}

#[tokio::test]
async fn client_ip_buckets_limit_each_client_separately() {
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&format!(
            "      local_rate_limit: {BUCKET_3_PER_SECOND}, key: client_ip}}"
        ))
        .start()
        .await;
    let first = TestClient::http1_from(IpAddr::from([127, 0, 0, 2]));
    let second = TestClient::http1_from(IpAddr::from([127, 0, 0, 3]));
    let replies = burst(&first, addr, "/", &[], 8).await;
    assert!(
        refused(&replies).is_some(),
        "the first client runs its bucket dry"
    );
    assert_eq!(
        second.get(addr, "/", &[]).await.status,
        200,
        "the second client has its own"
    );
    assert!(recovers(&first, addr, "/", &[], Duration::from_secs(3)).await);
}

#[tokio::test]
async fn header_buckets_limit_each_value_separately_and_requests_without_it_share_one() {
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .route(&format!(
            "              local_rate_limit: {BUCKET_3_PER_SECOND}, key: {{header: x-user}}}}"
        ))
        .start()
        .await;
    let client = TestClient::http1();
    let alice = burst(&client, addr, "/", &[("x-user", "alice")], 8).await;
    assert!(refused(&alice).is_some(), "alice runs her bucket dry");
    assert_eq!(
        client.get(addr, "/", &[("x-user", "bob")]).await.status,
        200,
        "bob has his own"
    );
    let anonymous = burst(&client, addr, "/", &[], 8).await;
    assert!(
        refused(&anonymous).is_some(),
        "requests without the header share one bucket"
    );
    assert!(
        recovers(
            &client,
            addr,
            "/",
            &[("x-user", "alice")],
            Duration::from_secs(3)
        )
        .await
    );
}

fn two_vhosts(listener_limit: &str, vhost_limit: &str, up: SocketAddr) -> String {
    format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
{listener_limit}
      virtual_hosts:
        - name: one
          domains: [one.test]
{vhost_limit}
          routes:
            - match: {{prefix: /a}}
              cluster: svc
            - match: {{prefix: /b}}
              cluster: svc
        - name: two
          domains: [two.test]
          routes:
            - match: {{prefix: /}}
              cluster: svc
clusters:
  - name: svc
    endpoints: [{{address: {up}}}]
"
    )
}

#[tokio::test]
async fn virtual_host_bucket_is_shared_by_its_routes_and_not_by_other_hosts() {
    let up = Upstream::start("a").await;
    let proxy = TestProxy::start(&two_vhosts(
        "",
        &format!("          local_rate_limit: {BUCKET_3_PER_SECOND}}}"),
        up.addr,
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let mut replies = burst(&client, addr, "/a", &[("host", "one.test")], 4).await;
    replies.extend(burst(&client, addr, "/b", &[("host", "one.test")], 4).await);
    assert!(
        (3..=6).contains(&oks(&replies)),
        "/a and /b share one bucket of 3: {}",
        oks(&replies)
    );
    assert_eq!(replies.last().unwrap().status, 429);
    assert_eq!(
        burst(&client, addr, "/", &[("host", "two.test")], 5)
            .await
            .iter()
            .filter(|r| r.status == 200)
            .count(),
        5
    );
    assert!(
        recovers(
            &client,
            addr,
            "/b",
            &[("host", "one.test")],
            Duration::from_secs(3)
        )
        .await
    );
}

#[tokio::test]
async fn listener_bucket_covers_every_virtual_host() {
    let up = Upstream::start("a").await;
    let proxy = TestProxy::start(&two_vhosts(
        &format!("      local_rate_limit: {BUCKET_3_PER_SECOND}}}"),
        "",
        up.addr,
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let mut replies = burst(&client, addr, "/a", &[("host", "one.test")], 4).await;
    replies.extend(burst(&client, addr, "/", &[("host", "two.test")], 4).await);
    assert!((3..=6).contains(&oks(&replies)), "{}", oks(&replies));
    assert_eq!(replies.last().unwrap().status, 429);
    assert!(
        recovers(
            &client,
            addr,
            "/",
            &[("host", "two.test")],
            Duration::from_secs(3)
        )
        .await
    );
}

#[tokio::test]
async fn most_specific_levels_let_a_virtual_host_limit_replace_the_listeners() {
    let up = Upstream::start("a").await;
    let roomy = "{token_bucket: {max_tokens: 100, tokens_per_fill: 100, fill_interval: 1s}}";
    let client = TestClient::http1();
    for (levels, one_test_oks) in [("every_level", 3..=6), ("most_specific", 10..=10)] {
        let proxy = TestProxy::start(&two_vhosts(
            &format!(
                "      local_rate_limit: {BUCKET_3_PER_SECOND}}}\n      local_rate_limit_levels: {levels}"
            ),
            &format!("          local_rate_limit: {roomy}"),
            up.addr,
        ))
        .await;
        let addr = proxy.addr("web").await;
        let one = burst(&client, addr, "/a", &[("host", "one.test")], 10).await;
        assert!(
            one_test_oks.contains(&oks(&one)),
            "{levels}: one.test has its own roomy bucket; {} of 10 answered",
            oks(&one)
        );
        // two.test has no limit of its own: the listener's applies in either mode.
        let two = burst(&client, addr, "/", &[("host", "two.test")], 10).await;
        assert!(oks(&two) <= 6, "{levels}: {} of 10 answered", oks(&two));
        assert_eq!(two.last().unwrap().status, 429, "{levels}");
    }
}

#[tokio::test]
async fn reload_keeps_an_unchanged_bucket_and_starts_a_changed_one_full() {
    let up = Upstream::start("a").await;
    let slow = "              local_rate_limit: {token_bucket: {max_tokens: 2, fill_interval: 1h}}";
    let config = OneRoute::to(&[up.addr]).route(slow);
    let (proxy, addr) = config.start().await;
    let client = TestClient::http1();
    assert!(refused(&burst(&client, addr, "/", &[], 3).await).is_some());
    proxy.reload(&config.yaml()).await.expect("reload");
    assert_eq!(
        client.get(addr, "/", &[]).await.status,
        429,
        "same limit, same (empty) bucket"
    );
    let changed = OneRoute::to(&[up.addr]).route(
        "              local_rate_limit: {token_bucket: {max_tokens: 3, fill_interval: 1h}}",
    );
    proxy.reload(&changed.yaml()).await.expect("reload");
    assert_eq!(
        client.get(addr, "/", &[]).await.status,
        200,
        "a new limit starts full"
    );
}

/// Opens a connection and sends one request; whether a response came back.
async fn one_request_on_a_new_connection(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    matches!(read, Ok(Ok(_))) && buf.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn connection_rate_limit_closes_excess_connections_at_accept_then_recovers() {
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .listener(&format!(
            "    connection_rate_limit: {BUCKET_3_PER_SECOND}}}"
        ))
        .start()
        .await;
    let mut served = 0;
    for _ in 0..8 {
        served += usize::from(one_request_on_a_new_connection(addr).await);
    }
    assert!(
        (3..=6).contains(&served),
        "{served} of 8 connections served with 3 tokens"
    );
    let until = Instant::now() + Duration::from_secs(3);
    let mut recovered = false;
    while !recovered && Instant::now() < until {
        recovered = one_request_on_a_new_connection(addr).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "new connections are served once the bucket refills"
    );
}

#[tokio::test]
async fn grpc_clients_over_the_limit_get_grpc_status_unavailable() {
    let up = Upstream::start("a").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .route("              local_rate_limit: {token_bucket: {max_tokens: 1, fill_interval: 1h}}")
        .start()
        .await;
    let uri = format!("http://{addr}/pkg.Svc/Method");
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let _first = h2_request(addr, &uri, &grpc).await;
    let over = h2_request(addr, &uri, &grpc).await;
    assert_eq!(over.status, 200, "gRPC errors ride on HTTP 200");
    assert_eq!(over.header("grpc-status"), Some("14"));
    assert_eq!(over.header("grpc-message"), Some("rate limited"));
    assert_eq!(over.header("x-ratelimit-limit"), Some("1"));
}

// ---- Global limits through Redis ----

fn global_config(
    up: SocketAddr,
    redis: SocketAddr,
    domain: &str,
    extra: &str,
    limit: u32,
    unit: &str,
) -> String {
    OneRoute::to(&[up])
        .http(&format!(
            "      global_rate_limit:
        domain: {domain}
        redis: {{address: '{redis}', timeout: 25ms}}
{extra}
        descriptors:
          - rate_limit: {{requests_per_unit: {limit}, unit: {unit}}}"
        ))
        .yaml()
}

#[tokio::test]
async fn two_proxies_sharing_one_redis_share_one_limit() {
    let redis = RedisServer::start();
    let up = Upstream::start("a").await;
    let config = global_config(
        up.addr,
        redis.addr,
        "shared",
        "        window: fixed",
        5,
        "hour",
    );
    let one = TestProxy::start(&config).await;
    let two = TestProxy::start(&config).await;
    let (a, b) = (one.addr("web").await, two.addr("web").await);
    let client = TestClient::http1();
    let mut statuses = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 { a } else { b };
        statuses.push(client.get(addr, "/", &[]).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429, 429, 429],
        "5 per hour between both proxies"
    );
    let over = client.get(b, "/", &[]).await;
    assert_eq!(over.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));

    // Recovery: the window's counter goes (as it does when the hour turns).
    redis.command(&["FLUSHALL"]);
    assert_eq!(client.get(a, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn fixed_window_recovers_at_the_next_window_and_keys_count_separately() {
    let redis = RedisServer::start();
    let up = Upstream::start("a").await;
    let config = OneRoute::to(&[up.addr])
        .http(&format!(
            "      global_rate_limit:
        domain: fixed
        redis: {{address: '{}'}}
        descriptors:
          - key: {{header: x-user}}
            rate_limit: {{requests_per_unit: 3, unit: second}}",
            redis.addr
        ))
        .yaml();
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let alice = burst(&client, addr, "/", &[("x-user", "alice")], 8).await;
    assert!((3..=6).contains(&oks(&alice)), "{}", oks(&alice));
    assert!(refused(&alice).is_some());
    assert_eq!(
        client.get(addr, "/", &[("x-user", "bob")]).await.status,
        200
    );
    assert!(
        recovers(
            &client,
            addr,
            "/",
            &[("x-user", "alice")],
            Duration::from_secs(3)
        )
        .await
    );
}

#[tokio::test]
async fn sliding_window_remembers_the_previous_window_where_fixed_forgets_it() {
    let redis = RedisServer::start();
    let up = Upstream::start("a").await;
    let sliding = TestProxy::start(&global_config(
        up.addr,
        redis.addr,
        "sliding",
        "        window: sliding",
        10,
        "hour",
    ))
    .await;
    let fixed = TestProxy::start(&global_config(
        up.addr,
        redis.addr,
        "fixed",
        "        window: fixed",
        10,
        "hour",
    ))
    .await;
    // A busy previous hour, written straight into Redis: the counter of window
    // `now / 3600000 - 1` of descriptor 0 in each domain.
    let time = redis.command(&["TIME"]);
    let seconds: u64 = time.split(' ').next().unwrap().parse().unwrap();
    let previous_window = seconds / 3600 - 1;
    for domain in ["sliding", "fixed"] {
        redis.command(&[
            "SET",
            &format!("sinew:{domain}:0::{previous_window}"),
            "1000000",
        ]);
    }
    let client = TestClient::http1();
    assert_eq!(
        client.get(fixed.addr("web").await, "/", &[]).await.status,
        200,
        "a fixed window starts afresh"
    );
    assert_eq!(
        client.get(sliding.addr("web").await, "/", &[]).await.status,
        429,
        "a sliding window still sees the last hour"
    );

    // Recovery: with the previous window quiet, the sliding window lets requests through.
    redis.command(&["DEL", &format!("sinew:sliding:0::{previous_window}")]);
    let replies = burst(&client, sliding.addr("web").await, "/", &[], 12).await;
    assert_eq!(oks(&replies), 10, "10 per sliding hour");
}

fn assert_quick(started: Instant, what: &str) {
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "{what} took {took:?}");
}

#[tokio::test]
async fn redis_killed_fails_open_by_default_and_closed_when_configured_then_limiting_resumes() {
    let mut redis = RedisServer::start();
    let up = Upstream::start("a").await;
    let open = TestProxy::start(&global_config(up.addr, redis.addr, "open", "", 2, "hour")).await;
    let closed = TestProxy::start(&global_config(
        up.addr,
        redis.addr,
        "closed",
        "        failure_mode_deny: true",
        2,
        "hour",
    ))
    .await;
    let (open, closed) = (open.addr("web").await, closed.addr("web").await);
    let client = TestClient::http1();
    assert!(
        refused(&burst(&client, open, "/", &[], 3).await).is_some(),
        "limiting acts while Redis is up"
    );

    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(client.get(open, "/", &[]).await.status, 200, "fail open");
        assert_quick(started, "a fail-open answer");
        let started = Instant::now();
        assert_eq!(
            client.get(closed, "/", &[]).await.status,
            500,
            "fail closed"
        );
        assert_quick(started, "a fail-closed answer");
    }

    redis.restart();
    let until = Instant::now() + Duration::from_secs(10);
    let mut resumed = false;
    while !resumed && Instant::now() < until {
        resumed = client.get(open, "/", &[]).await.status == 429;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "limiting resumes once Redis is back");
    assert_eq!(
        client.get(closed, "/", &[]).await.status,
        200,
        "fail-closed proxy serves again"
    );
}

#[tokio::test]
async fn redis_paused_answers_within_the_timeout_either_way_then_limiting_resumes() {
    let redis = RedisServer::start();
    let up = Upstream::start("a").await;
    let open = TestProxy::start(&global_config(up.addr, redis.addr, "open", "", 2, "hour")).await;
    let closed = TestProxy::start(&global_config(
        up.addr,
        redis.addr,
        "closed",
        "        failure_mode_deny: true",
        2,
        "hour",
    ))
    .await;
    let (open, closed) = (open.addr("web").await, closed.addr("web").await);
    let client = TestClient::http1();
    assert_eq!(client.get(closed, "/", &[]).await.status, 200);

    redis.pause();
    let mut worst = Duration::ZERO;
    for _ in 0..6 {
        let started = Instant::now();
        assert_eq!(client.get(open, "/", &[]).await.status, 200, "fail open");
        worst = worst.max(started.elapsed());
        let started = Instant::now();
        assert_eq!(
            client.get(closed, "/", &[]).await.status,
            500,
            "fail closed"
        );
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "slowest answer while Redis was paused: {worst:?}"
    );

    redis.resume();
    let until = Instant::now() + Duration::from_secs(10);
    let mut resumed = false;
    while !resumed && Instant::now() < until {
        resumed = client.get(open, "/", &[]).await.status == 429;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "limiting resumes once Redis answers again");
}
