//! Graceful drain, in-process (`Proxy::drain`) and in the binary (SIGTERM): listeners
//! close; an HTTP/1.1 request in flight completes with `Connection: close`; an idle
//! keep-alive connection closes at once; HTTP/2 gets GOAWAY and finishes its stream; TCP
//! proxy connections run until the deadline; whatever is left at the deadline is cut; the
//! drain ends as soon as the last connection does.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sinew_integration::raw::read_to_close;
use sinew_integration::tls_kit::TempDir;
use sinew_integration::{free_port, sinew_binary, ChildGuard, OneRoute, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response off `stream` (within 10 s), its head lowercased for matching.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let (head, body) = sinew_integration::raw::read_response(stream, Duration::from_secs(10)).await;
    (head.to_ascii_lowercase(), body)
}

/// Sends a GET that the upstream answers after `delay_ms`.
async fn send_slow_get(stream: &mut TcpStream, delay_ms: u64) {
    let request = format!("GET / HTTP/1.1\r\nHost: a\r\nx-test-delay-ms: {delay_ms}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Waits until the upstream has the request, so it is really in flight.
async fn until_upstream_has(up: &Upstream, requests: usize) {
    let arrived =
        sinew_integration::eventually(Duration::from_secs(5), || up.requests() >= requests).await;
    assert!(arrived, "the request never reached the upstream");
}

async fn is_refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn http1_request_in_flight_completes_with_connection_close_and_drain_ends_with_it() {
    let up = Upstream::start("alpha").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stream, 800).await;
    until_upstream_has(&up, 1).await;

    let drain = tokio::spawn({
        let proxy = proxy.proxy.clone();
        async move { proxy.drain(Duration::from_secs(10)).await }
    });
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.lines().any(|l| l == "connection: close"),
        "the last response says so: {head}"
    );
    assert_eq!(body, "alpha\n");
    let (closed, rest) = read_to_close(&mut stream, Duration::from_secs(2)).await;
    assert!(closed && rest.is_empty(), "and the connection then closes");

    let report = tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .expect("the drain ends when its last connection does, long before its deadline")
        .unwrap();
    assert!(report.finished, "{report:?}");
    assert_eq!(report.cut, 0);
    assert!(report.took < Duration::from_secs(3), "{report:?}");
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_at_once() {
    drain_closes_an_idle_connection_at_once(Duration::ZERO).await;
}

/// Quiet past the codec's hand-back delay (50 ms), the connection waits in the
/// connection loop's small state, which must hear the drain as well.
#[tokio::test]
async fn a_connection_idle_past_the_codecs_hand_back_is_closed_at_once() {
    drain_closes_an_idle_connection_at_once(Duration::from_millis(300)).await;
}

async fn drain_closes_an_idle_connection_at_once(quiet: Duration) {
    let up = Upstream::start("alpha").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stream, 0).await;
    let (head, _) = read_response(&mut stream).await;
    assert!(head.contains("connection: keep-alive") || !head.contains("connection: close"));
    tokio::time::sleep(quiet).await;

    let started = Instant::now();
    let report = proxy.proxy.drain(Duration::from_secs(10)).await;
    let (closed, rest) = read_to_close(&mut stream, Duration::from_secs(1)).await;
    assert!(closed, "the idle connection must be closed promptly");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(report.finished && report.cut == 0, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing to wait for: took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn new_connections_are_refused_once_drain_starts_and_reloads_too() {
    let up = Upstream::start("alpha").await;
    let route = OneRoute::to(&[up.addr]);
    let (proxy, addr) = route.start().await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut busy, 1500).await;
    until_upstream_has(&up, 1).await;

    let drain = tokio::spawn({
        let proxy = proxy.proxy.clone();
        async move { proxy.drain(Duration::from_secs(10)).await }
    });
    let refused = {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if is_refused(addr).await {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert!(refused, "the port still accepts while draining");
    assert!(!drain.is_finished(), "the slow request is still in flight");
    let err = proxy
        .reload(&route.yaml())
        .await
        .expect_err("no new config");
    assert!(err.contains("draining"), "{err}");

    let (head, _) = read_response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(drain.await.unwrap().finished);
    assert!(is_refused(addr).await, "and stays closed");
}

#[tokio::test]
async fn http2_client_gets_goaway_and_its_stream_in_flight_completes() {
    let up = Upstream::start("alpha").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    // nghttp (nghttp2-client) prints every frame it receives.
    let mut nghttp = Command::new("nghttp");
    nghttp
        .args(["-v", "-H", "x-test-delay-ms: 1000"])
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = match nghttp.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run nghttp ({e}); install the Debian package nghttp2-client"),
    };
    until_upstream_has(&up, 1).await;
    let report = proxy.proxy.drain(Duration::from_secs(10)).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nghttp failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let goaway = stdout.find("recv GOAWAY").expect("GOAWAY received");
    let status = stdout.find(":status: 200").expect("the stream got its 200");
    assert!(
        goaway < status,
        "GOAWAY came while the stream was in flight:\n{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("alpha") || stdout.contains("\nalpha\n"),
        "{stdout}"
    );
    assert!(report.finished && report.cut == 0, "{report:?}");
    assert!(report.took < Duration::from_secs(5), "{report:?}");
}

#[tokio::test]
async fn request_still_in_flight_at_the_deadline_is_cut() {
    let up = Upstream::start("alpha").await;
    let (proxy, addr) = OneRoute::to(&[up.addr]).start().await;
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stuck, 10_000).await;
    until_upstream_has(&up, 1).await;

    let started = Instant::now();
    let report = proxy.proxy.drain(Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(!report.finished, "{report:?}");
    assert_eq!(report.cut, 1, "{report:?}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "resolves at the deadline: {took:?}"
    );
    let (closed, got) = read_to_close(&mut stuck, Duration::from_secs(1)).await;
    assert!(closed, "the stuck connection is closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
}

async fn echo_round_trip(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut got = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(got, text.as_bytes());
}

#[tokio::test]
async fn tcp_proxy_connection_runs_until_the_deadline_then_is_cut() {
    let echo = sinew_integration::echo_server().await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: tcp
    address: 127.0.0.1:0
    tcp: {{cluster: echo}}
clusters:
  - name: echo
    endpoints: [{{address: {echo}}}]
"
    ))
    .await;
    let addr = proxy.addr("tcp").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    echo_round_trip(&mut stream, "before").await;

    let started = Instant::now();
    let drain = tokio::spawn({
        let proxy = proxy.proxy.clone();
        async move { proxy.drain(Duration::from_millis(800)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_round_trip(&mut stream, "while draining").await;
    assert!(is_refused(addr).await, "no new TCP connections");

    let (closed, _) = read_to_close(&mut stream, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(closed, "cut at the deadline");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(2),
        "cut at about 800 ms: {took:?}"
    );
    let report = drain.await.unwrap();
    assert!(!report.finished && report.cut == 1, "{report:?}");
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

fn config(listen: &str, up: &Upstream, drain_timeout: &str) -> String {
    format!(
        "
drain_timeout: {drain_timeout}
listeners:
  - name: web
    address: {listen}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{{match: {{prefix: /}}, cluster: svc}}]
clusters:
  - name: svc
    endpoints: [{{address: {}}}]
",
        up.addr
    )
}

/// Starts `sinew proxy -c FILE extra...` on `yaml` and waits until `addr` accepts.
async fn start_binary(
    dir: &TempDir,
    yaml: &str,
    addr: SocketAddr,
    extra: &[&str],
) -> (ChildGuard, std::path::PathBuf) {
    let file = dir.file("sinew.yaml");
    std::fs::write(&file, yaml).unwrap();
    let log = dir.file("log");
    let child = Command::new(sinew_binary())
        .args(["proxy", "-c"])
        .arg(&file)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn sinew");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.exited() {
            panic!(
                "sinew exited with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "sinew never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, log)
}

fn signal(child: &ChildGuard, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for the process to exit; returns its status.
async fn exit_of(
    child: &mut ChildGuard,
    within: Duration,
    log: &std::path::Path,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.exited() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "sinew still running {within:?} after the signal; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0_with_the_port_closed() {
    let up = Upstream::start("alpha").await;
    let dir = TempDir::new("drain-bin");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (mut child, log) =
        start_binary(&dir, &config(&addr.to_string(), &up, "10s"), addr, &[]).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stream, 1000).await;
    until_upstream_has(&up, 1).await;
    signal(&child, "-TERM");

    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.lines().any(|l| l == "connection: close"), "{head}");
    assert_eq!(body, "alpha\n");
    let status = exit_of(&mut child, Duration::from_secs(5), &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "log:\n{text}");
    assert!(text.contains("draining"), "{text}");
    assert!(is_refused(addr).await, "the port is closed");
}

#[tokio::test]
async fn a_second_sigterm_while_draining_exits_at_once() {
    let up = Upstream::start("alpha").await;
    let dir = TempDir::new("drain-bin2");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (mut child, log) =
        start_binary(&dir, &config(&addr.to_string(), &up, "60s"), addr, &[]).await;

    let mut stuck = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stuck, 30_000).await;
    until_upstream_has(&up, 1).await;
    signal(&child, "-TERM");
    // The first signal starts a drain that would last a minute.
    let started_draining = sinew_integration::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("draining")
    })
    .await;
    assert!(started_draining);
    assert!(child.exited().is_none(), "still draining");

    let started = Instant::now();
    signal(&child, "-INT");
    let status = exit_of(&mut child, Duration::from_secs(2), &log).await;
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(2));
    let (closed, _) = read_to_close(&mut stuck, Duration::from_secs(2)).await;
    assert!(closed, "its connections went with it");
}

#[tokio::test]
async fn drain_timeout_flag_overrides_the_config_and_cuts_what_is_left() {
    let up = Upstream::start("alpha").await;
    let dir = TempDir::new("drain-bin3");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let yaml = config(&addr.to_string(), &up, "60s");
    let (mut child, log) = start_binary(&dir, &yaml, addr, &["--drain-timeout", "300ms"]).await;

    let mut stuck = TcpStream::connect(addr).await.unwrap();
    send_slow_get(&mut stuck, 30_000).await;
    until_upstream_has(&up, 1).await;
    let started = Instant::now();
    signal(&child, "-TERM");
    let status = exit_of(&mut child, Duration::from_secs(3), &log).await;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "a drain cut at its deadline still exits 0:\n{text}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "300 ms, not the config's 60 s: {took:?}"
    );
    assert!(
        without_ansi(&text).contains("cut=1"),
        "the log says what was cut:\n{text}"
    );
    let (closed, got) = read_to_close(&mut stuck, Duration::from_secs(2)).await;
    assert!(closed && got.is_empty());
}

/// The log without its colour codes (`ESC [ ... m`).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
