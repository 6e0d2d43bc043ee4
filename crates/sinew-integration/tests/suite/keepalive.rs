//! TCP keepalive, read off Sinew's real sockets with `ss` (iproute2): a listener's
//! `tcp_keepalive` on the sockets it accepts, a cluster's
//! `upstream_connection_options.tcp_keepalive` on the connections it opens (pooled HTTP and
//! TCP proxy), and neither where it is not configured.
//!
//! `ss -o` shows a socket's keepalive timer as `timer:(keepalive,36sec,0)`. With
//! `keepalive_time: 1s` and `keepalive_interval: 37s`, the first probe goes after a second
//! of quiet and the timer is then re-armed to the interval, so seeing it between 30 s and
//! 37 s proves both took effect (the kernel's defaults are 7200 s and 75 s). The probe
//! count cannot be seen this way; a unit test in `sinew_upstream::socket` reads it back.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sinew_integration::{OneRoute, TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEEPALIVE: &str = "{keepalive_time: 1s, keepalive_interval: 37s, keepalive_probes: 3}";

/// The keepalive timers of established TCP sockets matching an `ss` filter such as
/// `sport = :8080`; None for a socket without one.
fn keepalive_timers(filter: &str) -> Vec<Option<Duration>> {
    let out = match Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( {filter} )"))
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("cannot run ss ({e}); install the Debian package iproute2"),
    };
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let start = line.find("timer:(keepalive,")? + "timer:(keepalive,".len();
            let value = line[start..].split(',').next()?;
            Some(parse_ss_time(value))
        })
        .collect()
}

/// `1min16sec`, `36sec`, `988ms`.
fn parse_ss_time(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while chars.peek().is_some_and(|c| !c.is_ascii_digit()) {
            unit.push(chars.next().unwrap());
        }
        let n: u64 = number.parse().unwrap_or(0);
        number.clear();
        total += match unit.as_str() {
            "min" => Duration::from_secs(n * 60),
            "sec" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            other => panic!("unknown ss time unit {other:?} in {text:?}"),
        };
    }
    total
}

/// Polls `ss` until the one socket matching `filter` shows a keepalive timer re-armed to
/// the 37 s interval (after its first probe); panics with what it saw otherwise.
async fn assert_probed_at_the_interval(filter: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        seen = keepalive_timers(filter);
        if let [Some(timer)] = seen[..] {
            if timer > Duration::from_secs(25) && timer <= Duration::from_secs(37) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no keepalive timer at the 37 s interval on `{filter}`; last seen: {seen:?}");
}

fn assert_no_keepalive(filter: &str) {
    let timers = keepalive_timers(filter);
    assert!(!timers.is_empty(), "no socket matches `{filter}`");
    assert!(
        timers.iter().all(Option::is_none),
        "keepalive where none is configured on `{filter}`: {timers:?}"
    );
}

/// One request on a raw connection that then stays open and idle.
async fn one_request(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stream
}

#[tokio::test]
async fn listener_keepalive_is_set_on_accepted_sockets_and_only_there() {
    let up = Upstream::start("alpha").await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: with
    address: 127.0.0.1:0
    tcp_keepalive: {KEEPALIVE}
    http:
      virtual_hosts: [{{name: all, domains: ['*'], routes: [{{match: {{prefix: /}}, cluster: svc}}]}}]
  - name: without
    address: 127.0.0.1:0
    http:
      virtual_hosts: [{{name: all, domains: ['*'], routes: [{{match: {{prefix: /}}, cluster: svc}}]}}]
clusters:
  - name: svc
    endpoints: [{{address: {}}}]
",
        up.addr
    ))
    .await;
    let with = proxy.addr("with").await;
    let without = proxy.addr("without").await;
    let client_with = one_request(with).await;
    let client_without = one_request(without).await;
    let client_port = client_with.local_addr().unwrap().port();

    // Sinew's side of the connection: its local port is the listener's.
    assert_probed_at_the_interval(&format!(
        "sport = :{} and dport = :{client_port}",
        with.port()
    ))
    .await;
    assert_no_keepalive(&format!(
        "sport = :{} and dport = :{}",
        without.port(),
        client_without.local_addr().unwrap().port()
    ));
    // The client's own socket is untouched: keepalive is per socket, not per connection.
    assert_no_keepalive(&format!("sport = :{client_port}"));
}

#[tokio::test]
async fn cluster_keepalive_is_set_on_pooled_upstream_connections() {
    let with_up = Upstream::start("with").await;
    let without_up = Upstream::start("without").await;
    let (_with_proxy, with) = OneRoute::to(&[with_up.addr])
        .cluster(&format!(
            "    upstream_connection_options:\n      tcp_keepalive: {KEEPALIVE}"
        ))
        .start()
        .await;
    let (_without_proxy, without) = OneRoute::to(&[without_up.addr]).start().await;
    let client = TestClient::http1();
    assert_eq!(client.get(with, "/", &[]).await.status, 200);
    assert_eq!(client.get(without, "/", &[]).await.status, 200);

    // Sinew's pooled connection is the one whose peer is the upstream's port.
    assert_probed_at_the_interval(&format!("dport = :{}", with_up.addr.port())).await;
    assert_no_keepalive(&format!("dport = :{}", without_up.addr.port()));
    // The upstream's accepted end has none: only Sinew's side was asked for it.
    assert_no_keepalive(&format!("sport = :{}", with_up.addr.port()));
}

#[tokio::test]
async fn cluster_keepalive_is_set_on_tcp_proxy_upstream_connections() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: tcp
    address: 127.0.0.1:0
    tcp: {{cluster: raw}}
clusters:
  - name: raw
    endpoints: [{{address: {server_addr}}}]
    upstream_connection_options:
      tcp_keepalive: {KEEPALIVE}
"
    ))
    .await;
    let _client = TcpStream::connect(proxy.addr("tcp").await).await.unwrap();
    let (_accepted, _) = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .expect("the proxy connects upstream")
        .unwrap();
    assert_probed_at_the_interval(&format!("dport = :{}", server_addr.port())).await;
}

#[test]
fn parses_ss_times() {
    assert_eq!(parse_ss_time("1min16sec"), Duration::from_secs(76));
    assert_eq!(parse_ss_time("36sec"), Duration::from_secs(36));
    assert_eq!(parse_ss_time("988ms"), Duration::from_millis(988));
}
