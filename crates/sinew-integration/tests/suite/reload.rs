//! Reloading config: in-process (a changed route, a refused config, reloads under constant
//! load with zero failures, listeners added and removed) and in the `sinew` binary (file
//! change, an invalid file, SIGHUP).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{
    eventually, free_port, sinew_binary, ChildGuard, TestClient, TestProxy, Upstream,
};

/// Two clusters; the `/` route goes to `target`. `connect_timeout` varies the clusters'
/// connection settings, so a reload that changes it builds new pools.
fn config(listen: &str, a: &Upstream, b: &Upstream, target: &str, connect_timeout: &str) -> String {
    format!(
        "
listeners:
  - name: web
    address: {listen}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: {target}
clusters:
  - name: a
    connect_timeout: {connect_timeout}
    endpoints: [{{address: {}}}]
  - name: b
    connect_timeout: {connect_timeout}
    endpoints: [{{address: {}}}]
",
        a.addr, b.addr
    )
}

#[tokio::test]
async fn reload_with_a_changed_route_applies_to_new_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = TestProxy::start(&config("127.0.0.1:0", &a, &b, "a", "1s")).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.text(), "a\n");
    let version = proxy
        .reload(&config("127.0.0.1:0", &a, &b, "b", "1s"))
        .await
        .expect("valid reload");
    assert!(version >= 2);
    // The same keep-alive connection sees the new route on its next request.
    assert_eq!(client.get(addr, "/", &[]).await.text(), "b\n");
    assert_eq!(
        proxy.addr("web").await,
        addr,
        "the listener kept its socket"
    );
    assert_eq!(TestClient::http2().get(addr, "/", &[]).await.text(), "b\n");
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let good = config("127.0.0.1:0", &a, &b, "a", "1s");
    let proxy = TestProxy::start(&good).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();

    // A regex that does not compile: found only when the data plane compiles the config.
    let bad_regex = good.replace("{prefix: /}", "{path_regex: '/(unclosed'}");
    let err = proxy.reload(&bad_regex).await.expect_err("must be refused");
    assert!(
        err.contains("match.path_regex") && err.contains("regex"),
        "{err}"
    );
    assert_eq!(client.get(addr, "/", &[]).await.text(), "a\n");

    // A route to a cluster that does not exist.
    let bad_ref = config("127.0.0.1:0", &a, &b, "nowhere", "1s");
    let err = proxy.reload(&bad_ref).await.expect_err("must be refused");
    assert!(err.contains("no cluster named \"nowhere\""), "{err}");
    assert_eq!(client.get(addr, "/", &[]).await.text(), "a\n");

    // Not YAML at all.
    let err = proxy
        .reload("listeners: [")
        .await
        .expect_err("must be refused");
    assert!(!err.is_empty());
    assert_eq!(client.get(addr, "/", &[]).await.text(), "a\n");

    // A good one still goes through afterwards.
    proxy
        .reload(&config("127.0.0.1:0", &a, &b, "b", "1s"))
        .await
        .unwrap();
    assert_eq!(client.get(addr, "/", &[]).await.text(), "b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_constant_load_fail_no_request() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let configs = [
        config("127.0.0.1:0", &a, &b, "a", "1s"),
        config("127.0.0.1:0", &a, &b, "b", "2s"),
    ];
    let proxy = TestProxy::start(&configs[0]).await;
    let addr = proxy.addr("web").await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let stop = stop.clone();
        let ok = ok.clone();
        // Half the clients speak HTTP/2; some requests linger upstream so reloads land
        // while they are in flight.
        let client = if task % 2 == 0 {
            TestClient::http1()
        } else {
            TestClient::http2()
        };
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0u32;
            // Bounded in count as well as by the stop flag.
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                n += 1;
                let delay = if n % 10 == 9 { "20" } else { "0" };
                match client
                    .try_get(addr, "/", &[("x-test-delay-ms", delay)])
                    .await
                {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e),
                }
            }
            failures
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy
            .reload(&configs[(i + 1) % 2])
            .await
            .unwrap_or_else(|e| panic!("reload {i} refused: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("load task stuck")
                .unwrap(),
        );
    }
    let served = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed; first: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 500, "only {served} requests in ~3 s");
    assert!(a.requests() > 0 && b.requests() > 0);
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let base = config("127.0.0.1:0", &a, &b, "a", "1s");
    let proxy = TestProxy::start(&base).await;
    let first = proxy.addr("web").await;
    let with_second = base.replace(
        "clusters:",
        "  - name: second
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{match: {prefix: /}, cluster: b}]
clusters:",
    );
    proxy.reload(&with_second).await.unwrap();
    let second = proxy.addr("second").await;
    let client = TestClient::http1();
    assert_eq!(client.get(second, "/", &[]).await.text(), "b\n");
    assert_eq!(client.get(first, "/", &[]).await.text(), "a\n");

    proxy.reload(&base).await.unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(second).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the removed listener still accepts");
    assert_eq!(client.get(first, "/", &[]).await.text(), "a\n");
}

#[tokio::test]
async fn a_reload_whose_port_is_taken_is_refused_whole() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let proxy = TestProxy::start(&config("127.0.0.1:0", &a, &b, "a", "1s")).await;
    let addr = proxy.addr("web").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let next = config("127.0.0.1:0", &a, &b, "b", "1s").replace(
        "clusters:",
        &format!(
            "  - name: second
    address: 127.0.0.1:{port}
    tcp: {{cluster: a}}
clusters:"
        ),
    );
    let err = proxy.reload(&next).await.expect_err("port in use");
    assert!(err.contains("cannot listen on"), "{err}");
    // Nothing of it applied: the route still goes to a.
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.text(), "a\n");
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// `sinew proxy -c FILE` with its log in `dir/log`.
struct Running {
    child: ChildGuard,
    log: std::path::PathBuf,
}

impl Running {
    fn start(dir: &TempDir, file: &std::path::Path) -> Running {
        let log = dir.file("log");
        let child = Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sinew");
        Running {
            child: ChildGuard(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.exited() {
            panic!("sinew exited with {status}; log:\n{}", self.log());
        }
    }
}

/// Polls `addr` until it answers `want`, or fails after `within`.
async fn wait_for_body(run: &mut Running, addr: SocketAddr, want: &str, within: Duration) {
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        run.assert_running();
        match tokio::time::timeout(Duration::from_secs(2), client.try_get(addr, "/", &[])).await {
            Ok(Ok(r)) if r.text() == want => return,
            Ok(Ok(r)) => last = format!("{} {}", r.status, r.text()),
            Ok(Err(e)) => last = e,
            Err(_) => last = "no answer in 2 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{addr} never answered {want:?} (last: {last}); log:\n{}",
        run.log()
    );
}

/// Replaces a file's content in one step, as editors that write a temp file and rename do.
fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn binary_reloads_a_changed_file_and_keeps_serving_through_an_invalid_one() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("reload-bin");
    let file = dir.file("sinew.yaml");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    std::fs::write(&file, config(&listen, &a, &b, "a", "1s")).unwrap();
    let mut run = Running::start(&dir, &file);
    wait_for_body(&mut run, addr, "a\n", Duration::from_secs(10)).await;

    // An edited file is picked up within about a second.
    write_atomically(&file, &config(&listen, &a, &b, "b", "1s"));
    wait_for_body(&mut run, addr, "b\n", Duration::from_secs(3)).await;

    // An invalid file is refused and logged; the running config keeps serving.
    let invalid = config(&listen, &a, &b, "b", "1s").replace("{prefix: /}", "{path_regex: '('}");
    write_atomically(&file, &invalid);
    let refused = eventually(Duration::from_secs(4), || {
        run.log().contains("config refused")
    })
    .await;
    assert!(refused, "no refusal logged:\n{}", run.log());
    assert!(
        run.log().contains("path_regex"),
        "the error names the field:\n{}",
        run.log()
    );
    run.assert_running();
    let client = TestClient::http1();
    for _ in 0..5 {
        assert_eq!(client.get(addr, "/", &[]).await.text(), "b\n");
    }

    // And a fixed file is taken again.
    write_atomically(&file, &config(&listen, &a, &b, "a", "1s"));
    wait_for_body(&mut run, addr, "a\n", Duration::from_secs(3)).await;
    run.assert_running();
}

#[tokio::test]
async fn binary_reloads_on_sighup_even_when_the_file_is_unchanged() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("reload-hup");
    let file = dir.file("sinew.yaml");
    let listen = format!("127.0.0.1:{}", free_port());
    let addr: SocketAddr = listen.parse().unwrap();
    std::fs::write(&file, config(&listen, &a, &b, "a", "1s")).unwrap();
    let mut run = Running::start(&dir, &file);
    wait_for_body(&mut run, addr, "a\n", Duration::from_secs(10)).await;

    // A second listener on a port we hold: the file's reload is refused (port in use).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second: SocketAddr = taken.local_addr().unwrap();
    let next = config(&listen, &a, &b, "b", "1s").replace(
        "clusters:",
        &format!(
            "  - name: second
    address: {second}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{{match: {{prefix: /}}, cluster: b}}]
clusters:"
        ),
    );
    write_atomically(&file, &next);
    let refused = eventually(Duration::from_secs(4), || {
        run.log().contains("cannot listen on")
    })
    .await;
    assert!(refused, "no refusal logged:\n{}", run.log());
    wait_for_body(&mut run, addr, "a\n", Duration::from_secs(2)).await;

    // Free the port. The file has not changed, so only SIGHUP makes sinew try again.
    drop(taken);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        TestClient::http1().get(addr, "/", &[]).await.text(),
        "a\n",
        "reloaded without a change or a signal"
    );
    let status = Command::new("kill")
        .args(["-HUP", &run.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    wait_for_body(&mut run, addr, "b\n", Duration::from_secs(3)).await;
    wait_for_body(&mut run, second, "b\n", Duration::from_secs(3)).await;
    run.assert_running();
}
