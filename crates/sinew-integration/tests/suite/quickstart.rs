//! The quickstart as a newcomer meets it: the release binary run with no arguments, and
//! the curl lines it prints, run as printed. It binds fixed ports (127.0.0.1:8080, 18081
//! and 18082) by design, so this is the one test that does not use port 0.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sinew_integration::{sinew_binary, TestClient};

const GATEWAY: &str = "127.0.0.1:8080";

/// Kills the quickstart when the test ends, however it ends.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start() -> Running {
        for port in [8080, 18081, 18082] {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "127.0.0.1:{port} is taken; the quickstart needs it (is another sinew running?)"
            );
        }
        let mut child = Command::new(sinew_binary())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the sinew binary");
        let collect = |mut pipe: Box<dyn Read + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Waits until the banner is printed and the gateway answers.
    async fn wait_ready(&mut self) {
        let addr: SocketAddr = GATEWAY.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the quickstart exited with {status}\n{}", self.output());
            }
            let printed = self.stdout.lock().unwrap().contains("Press Ctrl-C");
            if printed && tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the quickstart was not ready within 15 s\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs a printed shell line with `sh -c`, bounded in time; returns its stdout.
async fn shell(line: String) -> String {
    tokio::task::spawn_blocking(move || {
        let mut child = match Command::new("sh")
            .arg("-c")
            .arg(&line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run sh: {e}"),
        };
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("`{line}` ran over 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("not found"),
            "`{line}`: {stderr}\ncurl is missing: run `apt-get install -y curl`"
        );
        assert!(out.status.success(), "`{line}` failed: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("runner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_and_its_printed_curl_lines_work() {
    let mut qs = Running::start();
    qs.wait_ready().await;
    let addr: SocketAddr = GATEWAY.parse().unwrap();

    // The banner says where the config is and what to try.
    let banner = qs.stdout.lock().unwrap().clone();
    assert!(banner.contains("quickstart.yaml"), "{banner}");
    let lines: Vec<String> = banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl ") || l.starts_with("for "))
        .map(str::to_string)
        .collect();
    assert!(lines.len() >= 4, "curl lines printed:\n{banner}");

    // Every printed line works as printed, and says what it promises.
    for line in lines {
        let out = shell(line.clone()).await;
        if line.contains(":9901/") {
            // The admin API's lines.
            let expected = [
                ("/ready", "LIVE"),
                ("/metrics", "sinew_cluster_upstream_rq_total{"),
                ("/clusters", "\"name\": \"blue\""),
                ("/logging", "sinew_proxy=debug"),
            ];
            let (_, want) = expected
                .iter()
                .find(|(path, _)| line.contains(path))
                .unwrap_or_else(|| panic!("an admin line this test does not know: {line}"));
            assert!(out.contains(want), "{line}: {out}");
        } else if line.contains("/green") {
            assert_eq!(out, "green\n", "{line}");
        } else if line.contains("/hello") {
            assert_eq!(out, "hello from sinew\n", "{line}");
        } else if line.starts_with("for ") {
            // `sort | uniq -c` of 20 requests: counts of blue and/or green adding up to 20.
            let total: u32 = out
                .lines()
                .map(|l| {
                    let (n, name) = l.trim().split_once(' ').expect("count and name");
                    assert!(name == "blue" || name == "green", "{line}: {out}");
                    n.parse::<u32>().expect("count")
                })
                .sum();
            assert_eq!(total, 20, "{line}: {out}");
        } else {
            assert!(out == "blue\n" || out == "green\n", "{line}: {out:?}");
        }
    }

    // The 80/20 split, over 1000 requests, within 5 points.
    let client = TestClient::http1();
    let (mut blue, mut green) = (0u32, 0u32);
    for _ in 0..1000 {
        let reply = client.get(addr, "/", &[]).await;
        assert_eq!(reply.status, 200);
        match reply.text().as_str() {
            "blue\n" => blue += 1,
            "green\n" => green += 1,
            other => panic!("neither blue nor green: {other:?}"),
        }
    }
    let green_share = f64::from(green) / 1000.0;
    assert!(
        (0.15..=0.25).contains(&green_share),
        "green got {green} of 1000 (blue {blue}); expected about 20%"
    );

    // h2c on the same port, and the direct routes.
    let h2 = TestClient::http2();
    let reply = h2.get(addr, "/green", &[]).await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.text(), "green\n");
    let reply = h2.get(addr, "/hello", &[]).await;
    assert_eq!(reply.text(), "hello from sinew\n");
    let reply = client.get(addr, "/blue", &[]).await;
    assert_eq!(reply.text(), "blue\n");
    assert_eq!(reply.header("x-served-by"), Some("sinew"));

    assert!(
        qs.child.try_wait().unwrap().is_none(),
        "still running\n{}",
        qs.output()
    );
}
