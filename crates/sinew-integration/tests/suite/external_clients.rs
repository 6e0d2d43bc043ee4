//! Clients written by others, as shipped by Debian: curl (HTTP/1.1 and h2c prior
//! knowledge) and h2load (package nghttp2-client) against an in-process Sinew.
//! A missing tool fails the test with the package to install; it never skips.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sinew_integration::{TestProxy, Upstream};

/// Runs `program args` off the runtime, killing it after `limit`.
async fn run(program: &'static str, package: &'static str, args: Vec<String>) -> Output {
    let limit = Duration::from_secs(30);
    tokio::task::spawn_blocking(move || {
        let mut child = match Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{program}` is not installed: run `apt-get install -y {package}` \
                 (scripts/test installs it)"
            ),
            Err(e) => panic!("cannot run {program}: {e}"),
        };
        let started = Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{program} {args:?} ran over {limit:?}; stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("the runner task panicked")
}

async fn proxy(up: &Upstream) -> TestProxy {
    TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{path: /hello}}
              direct_response: {{status: 200, body: \"hello from sinew\\n\"}}
            - match: {{prefix: /}}
              cluster: alpha
clusters:
  - name: alpha
    endpoints: [{{address: {}}}]
",
        up.addr
    ))
    .await
}

/// curl's body followed by a last line `<status> <http version>`.
async fn curl(extra: &[&str], url: String) -> (String, String) {
    let mut args: Vec<String> = [
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{http_version}",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    args.push(url);
    let out = run("curl", "curl", args).await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').expect("curl's -w line");
    (body.to_string(), last.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_answers_over_http11_and_h2c_prior_knowledge() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy(&up).await;
    let addr = proxy.addr("web").await;

    let (body, last) = curl(&[], format!("http://{addr}/")).await;
    assert_eq!((body.as_str(), last.as_str()), ("alpha\n", "200 1.1"));

    let (body, last) = curl(&["--http2-prior-knowledge"], format!("http://{addr}/")).await;
    assert_eq!((body.as_str(), last.as_str()), ("alpha\n", "200 2"));

    let (body, last) = curl(&["--http2-prior-knowledge"], format!("http://{addr}/hello")).await;
    assert_eq!(
        (body.as_str(), last.as_str()),
        ("hello from sinew\n", "200 2")
    );

    // A POST with a body, and the upstream's error status passed through.
    let (_, last) = curl(
        &["--data-binary", "some body", "-H", "x-test-status: 418"],
        format!("http://{addr}/"),
    )
    .await;
    assert_eq!(last, "418 1.1");
    assert_eq!(up.requests(), 3);
}

/// Parses h2load's `requests: N total, N started, N done, N succeeded, N failed, ...`.
fn h2load_counts(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no `requests:` line in h2load's output:\n{stdout}"));
    let count = |word: &str| -> u64 {
        line.split(',')
            .find_map(|part| {
                let part = part.trim().trim_start_matches("requests:").trim();
                let (n, w) = part.split_once(' ')?;
                (w == word).then(|| n.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no `{word}` count in {line:?}"))
    };
    (count("succeeded"), count("failed"), count("errored"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_completes_every_request_over_h2c_and_http11() {
    let up = Upstream::start("alpha").await;
    let proxy = proxy(&up).await;
    let addr = proxy.addr("web").await;

    let args = |extra: &[&str], n: &str| -> Vec<String> {
        extra
            .iter()
            .copied()
            .chain(["-n", n, "-c", "10", "-m", "10"])
            .map(str::to_string)
            .chain([format!("http://{addr}/")])
            .collect()
    };
    let out = run("h2load", "nghttp2-client", args(&[], "2000")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load failed:\n{stdout}");
    assert!(
        stdout.contains("h2c"),
        "HTTP/2 cleartext was used:\n{stdout}"
    );
    assert_eq!(h2load_counts(&stdout), (2000, 0, 0), "{stdout}");
    assert!(stdout.contains("2000 2xx"), "{stdout}");

    // The same tool over HTTP/1.1 (pipelined ten deep with -m 10).
    let out = run("h2load", "nghttp2-client", args(&["--h1"], "1000")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load --h1 failed:\n{stdout}");
    assert!(stdout.contains("http/1.1"), "HTTP/1.1 was used:\n{stdout}");
    assert_eq!(h2load_counts(&stdout), (1000, 0, 0), "{stdout}");
    assert!(up.requests() >= 3000);
}
