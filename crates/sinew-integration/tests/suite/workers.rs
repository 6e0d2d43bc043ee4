//! Per-core workers (`--workers N`): each worker accepts on its own SO_REUSEPORT socket,
//! serves the connections it accepted, and keeps its own upstream pool.

use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::{eventually, free_port, sinew_binary, ChildGuard, TestClient, Upstream};

/// The `sinew proxy --workers N` binary on a config with one listener on `port` to `up`.
fn start(workers: usize, port: u16, up: &Upstream, dir: &std::path::Path) -> ChildGuard {
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: up
clusters:
  - name: up
    endpoints:
      - address: {}
",
            up.addr
        ),
    )
    .unwrap();
    ChildGuard(
        Command::new(sinew_binary())
            .args(["--workers", &workers.to_string(), "proxy", "-c"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew"),
    )
}

/// Listening TCP sockets bound to 127.0.0.1:`port`, from /proc/net/tcp (state 0A).
fn listening_sockets(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_worker_accepts_on_its_own_socket_and_keeps_its_own_upstream_pool() {
    let up = Upstream::start("up").await;
    let dir = sinew_integration::scratch_dir("workers");
    let port = free_port();
    let proxy = start(2, port, &up, &dir);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        eventually(Duration::from_secs(10), || listening_sockets(port) == 2).await,
        "two workers listen on two sockets, found {}",
        listening_sockets(port)
    );
    let names = thread_names(proxy.id());
    for worker in ["sinew-worker-0", "sinew-worker-1"] {
        assert!(names.iter().any(|n| n == worker), "{worker} in {names:?}");
    }

    // One request per new client connection, one after another: the kernel spreads the
    // connections over both sockets, and each worker reuses the one upstream connection
    // its own pool holds. A pool shared by the workers would need only one.
    let client = TestClient::http1();
    for i in 0..64 {
        let r = client.get(addr, "/", &[("connection", "close")]).await;
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(up.requests(), 64);
    assert!(
        (2..=4).contains(&up.connections()),
        "{} upstream connections: each of the two workers should open and reuse its own",
        up.connections()
    );
}

#[tokio::test]
async fn one_worker_listens_on_one_socket() {
    let up = Upstream::start("up").await;
    let dir = sinew_integration::scratch_dir("workers");
    let port = free_port();
    let _proxy = start(1, port, &up, &dir);
    assert!(
        eventually(Duration::from_secs(10), || listening_sockets(port) == 1).await,
        "one worker, one socket"
    );
    let r = TestClient::http1()
        .get(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "/", &[])
        .await;
    assert_eq!(r.status, 200);
}
