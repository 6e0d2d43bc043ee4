//! Outlier detection over real sockets: upstreams told to answer 5xx or 502, to close the
//! connection mid-exchange, or that refuse connections, get ejected; each ejection is
//! shown to end, the second one of an endpoint to last longer, and max_ejection_percent to
//! keep the rest in service. Success-rate and failure-percentage ejection run over an
//! interval's traffic.
//!
//! Clusters balance round robin, so N requests in a row reach every eligible endpoint
//! when there are N of them: a probe of that size tells exactly who is in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sinew_integration::probe::{reached, set, wait_for};
use sinew_integration::{closed_port_addr, tally, OneRoute, TestClient, Upstream};

/// Sends requests with `headers` until `upstream` has answered `count` of them with a
/// 5xx (or, with `upstream` "-", until `count` requests failed without reaching anyone).
async fn fail(
    client: &TestClient,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    upstream: &str,
    count: usize,
) {
    let mut seen = 0;
    for _ in 0..100 {
        let reply = client.get(addr, "/", headers).await;
        if reply.status.is_server_error() && reply.header("x-upstream").unwrap_or("-") == upstream {
            seen += 1;
            if seen == count {
                return;
            }
        }
    }
    panic!("{upstream} answered only {seen} of {count} failures in 100 requests");
}

const FAIL_B: &[(&str, &str)] = &[("x-test-status", "500"), ("x-test-target", "b")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_ejects_an_endpoint_until_base_ejection_time_passes() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster("    outlier_detection: {consecutive_5xx: 3, interval: 20ms, base_ejection_time: 400ms}\n")
        .start()
        .await;
    let client = TestClient::http1();
    // Two 5xx and a success: the count starts over, no ejection.
    fail(&client, addr, FAIL_B, "b", 2).await;
    assert_eq!(reached(&client, addr, 2).await, set(&["a", "b"]));
    fail(&client, addr, FAIL_B, "b", 2).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        reached(&client, addr, 2).await,
        set(&["a", "b"]),
        "not yet ejected"
    );

    fail(&client, addr, FAIL_B, "b", 3).await;
    let ejected = Instant::now();
    wait_for("b ejected", Duration::from_secs(1), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    wait_for("b returns", Duration::from_secs(3), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
    let out = ejected.elapsed();
    assert!(
        out >= Duration::from_millis(400) && out < Duration::from_millis(1200),
        "ejected for {out:?}, base_ejection_time is 400ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ejection_of_the_same_endpoint_lasts_twice_as_long() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster("    outlier_detection: {consecutive_5xx: 3, interval: 20ms, base_ejection_time: 400ms, max_ejection_time: 10s}\n")
        .start()
        .await;
    let client = TestClient::http1();
    let mut lengths = Vec::new();
    for _ in 0..2 {
        fail(&client, addr, FAIL_B, "b", 3).await;
        let ejected = Instant::now();
        wait_for("b ejected", Duration::from_secs(1), || async {
            reached(&client, addr, 2).await == set(&["a"])
        })
        .await;
        wait_for("b returns", Duration::from_secs(4), || async {
            reached(&client, addr, 2).await == set(&["a", "b"])
        })
        .await;
        lengths.push(ejected.elapsed());
    }
    assert!(lengths[0] < Duration::from_millis(800), "{lengths:?}");
    assert!(lengths[1] >= Duration::from_millis(800), "{lengths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_keeps_the_rest_in_service() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let (_proxy, addr) = OneRoute::to(&addrs)
        .cluster("    outlier_detection: {consecutive_5xx: 3, interval: 20ms, base_ejection_time: 300ms, max_ejection_percent: 40}\n")
        .start()
        .await;
    let client = TestClient::http1();
    // Every endpoint fails: each reaches the threshold, but 2 of 3 would be over 40%.
    let t = tally(
        &client,
        addr,
        "/",
        &[("x-test-status", "500")],
        30,
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(t.non_2xx, 30);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let left = reached(&client, addr, 3).await;
    assert_eq!(left.len(), 2, "exactly one ejected: {left:?}");
    wait_for(
        "the ejected one returns",
        Duration::from_secs(3),
        || async { reached(&client, addr, 3).await.len() == 3 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_failures_eject_when_enforced_and_other_5xx_do_not_count() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster("    outlier_detection: {consecutive_5xx: 1000, consecutive_gateway_failure: 3, enforcing_consecutive_gateway_failure: 100, interval: 20ms, base_ejection_time: 300ms}\n")
        .start()
        .await;
    let client = TestClient::http1();
    fail(&client, addr, FAIL_B, "b", 5).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        reached(&client, addr, 2).await,
        set(&["a", "b"]),
        "500 is not a gateway error"
    );

    let bad_gateway = &[("x-test-status", "502"), ("x-test-target", "b")];
    fail(&client, addr, bad_gateway, "b", 3).await;
    wait_for("b ejected", Duration::from_secs(1), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    wait_for("b returns", Duration::from_secs(3), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_eject_an_endpoint_that_comes_back_once_it_listens() {
    let a = Upstream::start("a").await;
    let dead = closed_port_addr();
    let (_proxy, addr) = OneRoute::to(&[a.addr, dead])
        .cluster("    outlier_detection: {consecutive_5xx: 3, interval: 20ms, base_ejection_time: 300ms}\n")
        .start()
        .await;
    let client = TestClient::http1();
    // Connect failures count as 503s (not split): three of them eject the endpoint.
    fail(&client, addr, &[], "-", 3).await;
    wait_for("dead endpoint ejected", Duration::from_secs(1), || async {
        reached(&client, addr, 4).await == set(&["a"])
    })
    .await;
    let t = tally(&client, addr, "/", &[], 20, 2, Duration::from_secs(10)).await;
    assert_eq!(t.count("a"), 20, "no request fails while it is out: {t:?}");

    let _revived = Upstream::start_on("c", dead).await;
    wait_for("it returns", Duration::from_secs(3), || async {
        reached(&client, addr, 2).await == set(&["a", "c"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_eject_as_local_origin_failures_when_split() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (_proxy, addr) = OneRoute::to(&[a.addr, b.addr])
        .cluster("    outlier_detection: {split_external_local_origin_errors: true, consecutive_local_origin_failure: 3, consecutive_5xx: 1000, interval: 20ms, base_ejection_time: 300ms}\n")
        .start()
        .await;
    let client = TestClient::http1();
    // Answers, even 5xx, are not local-origin failures.
    fail(&client, addr, FAIL_B, "b", 5).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(reached(&client, addr, 2).await, set(&["a", "b"]));

    // b closes the connection without answering: the proxy sees a reset.
    let close_b = &[("x-test-close", "1"), ("x-test-target", "b")];
    fail(&client, addr, close_b, "-", 3).await;
    wait_for("b ejected", Duration::from_secs(1), || async {
        reached(&client, addr, 2).await == set(&["a"])
    })
    .await;
    wait_for("b returns", Duration::from_secs(3), || async {
        reached(&client, addr, 2).await == set(&["a", "b"])
    })
    .await;
}

/// Sends batches with `headers` until a batch no longer reaches `upstream`.
async fn until_ejected(
    client: &TestClient,
    addr: SocketAddr,
    headers: &[(&str, &str)],
    upstream: &str,
) {
    let start = Instant::now();
    loop {
        let t = tally(client, addr, "/", headers, 50, 2, Duration::from_secs(10)).await;
        if t.count(upstream) == 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{upstream} never ejected: {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_ejects_the_endpoint_that_stands_out_and_it_returns() {
    let names = ["a", "b", "c", "d", "e"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::start(n).await);
    }
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let (_proxy, addr) = OneRoute::to(&addrs)
        .cluster("    outlier_detection: {consecutive_5xx: 1000, interval: 200ms, base_ejection_time: 400ms, success_rate_minimum_hosts: 5, success_rate_request_volume: 10}\n")
        .start()
        .await;
    let client = TestClient::http1();
    until_ejected(
        &client,
        addr,
        &[("x-test-status", "500"), ("x-test-target", "e")],
        "e",
    )
    .await;
    assert_eq!(reached(&client, addr, 5).await, set(&["a", "b", "c", "d"]));
    wait_for("e returns", Duration::from_secs(3), || async {
        reached(&client, addr, 5).await == set(&names)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_percentage_ejects_past_the_threshold_and_it_returns() {
    let names = ["a", "b", "c"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::start(n).await);
    }
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let (_proxy, addr) = OneRoute::to(&addrs)
        .cluster("    outlier_detection: {consecutive_5xx: 1000, interval: 200ms, base_ejection_time: 400ms, enforcing_success_rate: 0, enforcing_failure_percentage: 100, failure_percentage_minimum_hosts: 3, failure_percentage_request_volume: 10, failure_percentage_threshold: 50}\n")
        .start()
        .await;
    let client = TestClient::http1();
    until_ejected(
        &client,
        addr,
        &[("x-test-status", "503"), ("x-test-target", "c")],
        "c",
    )
    .await;
    assert_eq!(reached(&client, addr, 3).await, set(&["a", "b"]));
    wait_for("c returns", Duration::from_secs(3), || async {
        reached(&client, addr, 3).await == set(&names)
    })
    .await;
}
