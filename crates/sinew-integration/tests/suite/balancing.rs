//! Each load-balancing policy, through the proxy, over three real upstreams: how requests
//! spread, and for the hashing policies, how they stick.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sinew_integration::{tally, TestClient, TestProxy, Upstream};

struct Setup {
    proxy: TestProxy,
    addr: SocketAddr,
    _ups: Vec<Upstream>,
}

/// A proxy whose only route goes to cluster `svc` over `ups` with `lb`. `weights` may be
/// empty (all 1); `route_extra` is appended to the route (e.g. its hash policy).
async fn setup(ups: Vec<Upstream>, lb: &str, weights: &[u32], route_extra: &str) -> Setup {
    let endpoints: String = ups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            format!(
                "      - {{address: {}, weight: {}}}\n",
                u.addr,
                weights.get(i).copied().unwrap_or(1)
            )
        })
        .collect();
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
              cluster: svc
{route_extra}
clusters:
  - name: svc
    lb: {lb}
    endpoints:
{endpoints}"
    ))
    .await;
    let addr = proxy.addr("web").await;
    Setup {
        proxy,
        addr,
        _ups: ups,
    }
}

async fn three() -> Vec<Upstream> {
    vec![
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_splits_exactly_evenly() {
    let s = setup(three().await, "round_robin", &[], "").await;
    let t = tally(
        &TestClient::http1(),
        s.addr,
        "/",
        &[],
        600,
        6,
        Duration::from_secs(20),
    )
    .await;
    for name in ["a", "b", "c"] {
        assert_eq!(t.count(name), 200, "{t:?}");
    }
    // Sequential requests visit the endpoints in turn.
    let client = TestClient::http1();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(client.get(s.addr, "/", &[]).await.text());
    }
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
    assert_ne!(seen[0], seen[2]);
    assert_eq!(seen[0..3], seen[3..6], "{seen:?}");
    drop(s.proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smooth_weighted_follows_weights_5_1_1_and_interleaves() {
    let s = setup(three().await, "smooth_weighted", &[5, 1, 1], "").await;
    let t = tally(
        &TestClient::http1(),
        s.addr,
        "/",
        &[],
        700,
        7,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        (t.count("a"), t.count("b"), t.count("c")),
        (500, 100, 100),
        "{t:?}"
    );
    // nginx's sequence for 5,1,1 is a a b a c a a: the heavy endpoint never runs five times in a
    // row, as plain weighted round robin (a a a a a b c) would.
    let client = TestClient::http1();
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(client.get(s.addr, "/", &[]).await.text().trim());
    }
    assert_eq!(seq.matches('b').count(), 2, "{seq}");
    assert_eq!(seq.matches('c').count(), 2, "{seq}");
    assert!(!seq.contains("aaaaa"), "not smooth: {seq}");
    assert!(
        !seq.contains("bc") && !seq.contains("cb"),
        "not smooth: {seq}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_roughly_evenly() {
    let s = setup(three().await, "random", &[], "").await;
    let t = tally(
        &TestClient::http1(),
        s.addr,
        "/",
        &[],
        3000,
        10,
        Duration::from_secs(20),
    )
    .await;
    // Expected 1000 each, standard deviation about 26.
    for name in ["a", "b", "c"] {
        let n = t.count(name);
        assert!((850..=1150).contains(&n), "{name}: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_follows_endpoint_weights() {
    let s = setup(three().await, "random", &[4, 1, 1], "").await;
    let t = tally(
        &TestClient::http1(),
        s.addr,
        "/",
        &[],
        3000,
        10,
        Duration::from_secs(20),
    )
    .await;
    // Expected 2000 / 500 / 500.
    assert!((1850..=2150).contains(&t.count("a")), "{t:?}");
    assert!((400..=600).contains(&t.count("b")), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_few_requests_to_a_slow_endpoint() {
    let ups = vec![
        Upstream::start_with_delay("slow", Duration::from_millis(100)).await,
        Upstream::start("fast1").await,
        Upstream::start("fast2").await,
    ];
    let s = setup(ups, "least_request", &[], "").await;
    let t = tally(
        &TestClient::http1(),
        s.addr,
        "/",
        &[],
        600,
        12,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(t.errors + t.non_2xx, 0, "{t:?}");
    // Round robin or random would give the slow endpoint a third (200). Least request sees
    // its requests pile up and sends most elsewhere.
    let slow = t.count("slow");
    assert!(slow < 60, "slow endpoint got {slow} of 600: {t:?}");
    assert!(t.count("fast1") > 200 && t.count("fast2") > 200, "{t:?}");
}

/// For each key, the set of upstreams that answered it; asserts each key stuck to one.
fn sticky(answers: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, usize> {
    let mut per_upstream = BTreeMap::new();
    for (key, ups) in answers {
        assert_eq!(ups.len(), 1, "key {key} reached several endpoints: {ups:?}");
        *per_upstream
            .entry(ups.iter().next().unwrap().clone())
            .or_insert(0) += 1;
    }
    per_upstream
}

/// Sends 3 rounds of one request per key, each with the headers `headers_for(key)`.
async fn by_key(
    addr: SocketAddr,
    keys: usize,
    headers_for: impl Fn(usize) -> (String, String),
) -> BTreeMap<String, BTreeSet<String>> {
    let client = TestClient::http1();
    let mut answers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for _round in 0..3 {
        for k in 0..keys {
            let (name, value) = headers_for(k);
            let r = client.get(addr, "/", &[(&name, &value)]).await;
            assert_eq!(r.status, 200);
            answers
                .entry(value)
                .or_default()
                .insert(r.text().trim().to_string());
        }
    }
    answers
}

#[tokio::test]
async fn ring_hash_on_a_header_sticks_per_value_and_spreads_values() {
    let s = setup(
        three().await,
        "ring_hash",
        &[],
        "              hash_policy: [{header: x-user}]",
    )
    .await;
    let answers = by_key(s.addr, 60, |k| ("x-user".into(), format!("user-{k}"))).await;
    let spread = sticky(&answers);
    assert_eq!(spread.len(), 3, "all endpoints get keys: {spread:?}");
    assert!(spread.values().all(|&n| n >= 5), "{spread:?}");
}

#[tokio::test]
async fn ring_hash_falls_through_hash_policies_to_the_first_that_applies() {
    let s = setup(
        three().await,
        "ring_hash",
        &[],
        "              hash_policy: [{header: x-user}, {cookie: session}]",
    )
    .await;
    let client = TestClient::http1();
    // With no x-user, the cookie decides; the same cookie keeps its endpoint.
    let mut by_cookie = BTreeMap::new();
    for k in 0..30 {
        let cookie = format!("session=s{k}");
        let first = client.get(s.addr, "/", &[("cookie", &cookie)]).await.text();
        for _ in 0..2 {
            let again = client.get(s.addr, "/", &[("cookie", &cookie)]).await.text();
            assert_eq!(first, again, "cookie {cookie}");
        }
        by_cookie.insert(k, first);
    }
    let distinct: BTreeSet<_> = by_cookie.values().collect();
    assert!(distinct.len() >= 2, "{by_cookie:?}");
}

#[tokio::test]
async fn maglev_on_a_cookie_sticks_per_value_and_spreads_values() {
    let s = setup(
        three().await,
        "maglev",
        &[],
        "              hash_policy: [{cookie: session}]",
    )
    .await;
    let answers = by_key(s.addr, 60, |k| {
        ("cookie".into(), format!("theme=dark; session=sess-{k}"))
    })
    .await;
    let spread = sticky(&answers);
    assert_eq!(spread.len(), 3, "all endpoints get keys: {spread:?}");
    assert!(spread.values().all(|&n| n >= 5), "{spread:?}");
}

#[tokio::test]
async fn maglev_on_source_ip_sticks_per_client_address() {
    let s = setup(
        three().await,
        "maglev",
        &[],
        "              hash_policy: [{source_ip: true}]",
    )
    .await;
    let mut per_ip: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for last in 2..=21u8 {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        // A new client (so new connections) each round: stickiness must not come from
        // keep-alive.
        for _round in 0..3 {
            let client = TestClient::http1_from(IpAddr::V4(ip));
            let r = client.get(s.addr, "/", &[("x-test-echo", "1")]).await;
            assert_eq!(r.status, 200);
            assert!(
                r.text().contains(&format!("x-forwarded-for: {ip}")),
                "request did not come from {ip}:\n{}",
                r.text()
            );
            per_ip
                .entry(ip)
                .or_default()
                .insert(r.header("x-upstream").unwrap().to_string());
        }
    }
    let mut spread = BTreeSet::new();
    for (ip, ups) in &per_ip {
        assert_eq!(ups.len(), 1, "{ip} reached several endpoints: {ups:?}");
        spread.extend(ups.iter().cloned());
    }
    assert!(spread.len() >= 2, "20 clients all hashed to {spread:?}");
}
