//! Probes for tests of which endpoints are in a cluster's balancer: health checks and
//! outlier detection take endpoints out and put them back, and these tell who is in.
//!
//! Clusters in those tests balance round robin, so `n` requests in a row reach every
//! eligible endpoint when there are `n` of them.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::TestClient;

/// Who answered `n` GETs in a row: the upstreams' `x-upstream` names, `-` for an answer
/// the proxy made itself.
pub async fn reached(client: &TestClient, addr: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut who = BTreeSet::new();
    for _ in 0..n {
        let reply = client.get(addr, "/", &[]).await;
        who.insert(reply.header("x-upstream").unwrap_or("-").to_string());
    }
    who
}

/// Like [`reached`], and every answer must be a 200.
pub async fn reached_ok(client: &TestClient, addr: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut who = BTreeSet::new();
    for _ in 0..n {
        let reply = client.get(addr, "/", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        who.insert(reply.header("x-upstream").unwrap_or("-").to_string());
    }
    who
}

/// The set of `names`, to compare with what [`reached`] returns.
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Polls the async `check` every 10 ms until it holds and returns how long that took;
/// panics naming `what` after `deadline`. (`crate::eventually` is the same for checks
/// that need no await.)
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
