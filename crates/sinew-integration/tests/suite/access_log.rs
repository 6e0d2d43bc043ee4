//! Access logs over real sockets: Envoy's default line, every operator, JSON lines,
//! filters, a full queue that drops instead of blocking, a bad format refused at load with
//! file:line:col, TCP proxy connections, and (with the real binary) SIGUSR1 reopening the
//! file after logrotate's rename.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use sinew_integration::tls_kit::TempDir;
use sinew_integration::{
    closed_port_addr, eventually, free_port, read_lines, sinew_binary, wait_for_lines, ChildGuard,
    OneRoute, TestClient, TestProxy, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `access_log` YAML for the `http` block of [`OneRoute`] (6 spaces in).
fn http_log(path: &Path, rest: &str) -> String {
    format!(
        "      access_log:\n        - path: {}\n{rest}",
        path.display()
    )
}

#[tokio::test]
async fn default_format_is_envoys_line_field_by_field() {
    let dir = TempDir::new("alog-default");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&http_log(&log, ""))
        .start()
        .await;
    let reply = TestClient::http1()
        .send(
            Method::POST,
            addr,
            "/some/path?q=1",
            &[
                ("user-agent", "test-agent/1.0"),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-request-id", "req-42"),
                ("x-test-body-bytes", "100"),
            ],
            Bytes::from_static(b"hello"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let line = wait_for_lines(&log, 1).await.remove(0);

    // [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS RECEIVED SENT DURATION UPSTREAM-TIME
    // "XFF" "UA" "REQUEST-ID" "AUTHORITY" "UPSTREAM_HOST"
    let (time, rest) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] \""))
        .unwrap_or_else(|| panic!("no [time] in {line}"));
    assert_eq!(time.len(), "2016-04-15T20:17:00.310Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    let (request_line, rest) = rest.split_once("\" ").unwrap();
    assert_eq!(request_line, "POST /some/path?q=1 HTTP/1.1");
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    assert_eq!(fields[0], "200", "{line}");
    assert_eq!(fields[1], "-", "no response flags: {line}");
    assert_eq!(fields[2], "5", "bytes received: {line}");
    assert_eq!(fields[3], "100", "bytes sent: {line}");
    assert!(fields[4].parse::<u64>().is_ok(), "duration: {line}");
    assert_eq!(fields[5], "-", "no x-envoy-upstream-service-time: {line}");
    let quoted: Vec<&str> = fields[6]
        .split('"')
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert_eq!(
        quoted,
        [
            "10.1.2.3",
            "test-agent/1.0",
            "req-42",
            &addr.to_string(),
            &up.addr.to_string()
        ],
        "{line}"
    );
}

#[tokio::test]
async fn every_operator_renders_its_value() {
    let dir = TempDir::new("alog-ops");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    let format = "%START_TIME(%Y-%m-%d %s.%3f)%|%REQ(:METHOD)%|%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%|%REQ(:AUTHORITY)%|%REQ(:SCHEME)%|%REQ(USER-AGENT):4%|%RESP(X-UPSTREAM)%|%RESP(X-MISSING)%|%PROTOCOL%|%RESPONSE_CODE%|%RESPONSE_FLAGS%|%BYTES_RECEIVED%|%BYTES_SENT%|%DURATION%|%RESPONSE_DURATION%|%UPSTREAM_HOST%|%UPSTREAM_CLUSTER%|%DOWNSTREAM_REMOTE_ADDRESS%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%DOWNSTREAM_LOCAL_ADDRESS%|%HOSTNAME%|%REQ(X-REQUEST-ID)%|100%%\n";
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&http_log(&log, &format!("          format: {format:?}\n")))
        .start()
        .await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reply = TestClient::http1()
        .send(
            Method::PUT,
            addr,
            "/p?x=1",
            &[
                ("user-agent", "curl/8.0"),
                ("x-test-body-bytes", "1000"),
                ("x-test-delay-ms", "60"),
                ("x-test-echo", "1"),
            ],
            Bytes::from_static(b"0123456789"),
        )
        .await;
    assert_eq!(reply.status, 200);
    let line = wait_for_lines(&log, 1).await.remove(0);
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 23, "{line}");
    let (date, epoch) = f[0].split_once(' ').unwrap();
    assert_eq!(date.len(), 10, "{line}");
    let epoch: f64 = epoch.parse().unwrap();
    assert!((epoch as u64).abs_diff(before) <= 2, "{line}");
    assert_eq!(f[1], "PUT");
    assert_eq!(
        f[2], "/p?x=1",
        "fallback to :path when the first header is absent"
    );
    assert_eq!(f[3], addr.to_string());
    assert_eq!(f[4], "http");
    assert_eq!(f[5], "curl", "USER-AGENT cut to 4 bytes");
    assert_eq!(f[6], "up", "response header");
    assert_eq!(f[7], "-", "absent response header");
    assert_eq!(f[8], "HTTP/1.1");
    assert_eq!(f[9], "200");
    assert_eq!(f[10], "-");
    assert_eq!(f[11], "10");
    assert_eq!(
        f[12],
        reply.body.len().to_string(),
        "bytes sent = body length"
    );
    let duration: u64 = f[13].parse().unwrap();
    let response_duration: u64 = f[14].parse().unwrap();
    assert!(duration >= 60, "upstream waited 60 ms: {line}");
    assert!(
        response_duration >= 60 && response_duration <= duration,
        "{line}"
    );
    assert_eq!(f[15], up.addr.to_string());
    assert_eq!(f[16], "svc");
    assert!(
        f[17].starts_with("127.0.0.1:") && f[17] != "127.0.0.1:0",
        "{line}"
    );
    assert_eq!(f[18], "127.0.0.1");
    assert_eq!(f[19], addr.to_string());
    assert!(!f[20].is_empty() && f[20] != "-", "hostname: {line}");
    // The id Sinew generated is the one the upstream received.
    let echoed = reply
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: ").map(str::to_string))
        .expect("upstream got an x-request-id");
    assert_eq!(f[21], echoed, "{line}");
    assert_eq!(f[21].len(), 36, "a UUID: {line}");
    assert_eq!(f[22], "100%");
}

#[tokio::test]
async fn response_flags_and_upstream_host_are_logged_for_a_failed_connect() {
    let dir = TempDir::new("alog-flags");
    let log = dir.file("access.log");
    let dead = closed_port_addr();
    let (_proxy, addr) = OneRoute::to(&[dead])
        .http(&http_log(
            &log,
            "          format: \"%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %REQ(:PATH)%\\n\"\n",
        ))
        .start()
        .await;
    let reply = TestClient::http1().get(addr, "/x", &[]).await;
    assert_eq!(reply.status, 503);
    let line = wait_for_lines(&log, 1).await.remove(0);
    assert_eq!(line, format!("503 UF {dead} svc /x"));
}

/// Retries that run out on upstream 5xx answers: the client gets the last 503 and the
/// log says `URX`, as Envoy's does.
#[tokio::test]
async fn retries_exhausted_on_upstream_5xx_are_logged_urx() {
    let dir = TempDir::new("alog-urx");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&http_log(
            &log,
            "          format: \"%RESPONSE_CODE% %RESPONSE_FLAGS%\\n\"\n",
        ))
        .route("              retry: {retry_on: [5xx], num_retries: 2}")
        .start()
        .await;
    let reply = TestClient::http1()
        .get(addr, "/x", &[("x-test-status", "503")])
        .await;
    assert_eq!(reply.status, 503);
    assert_eq!(up.requests(), 3, "the first try and two retries");
    let line = wait_for_lines(&log, 1).await.remove(0);
    assert_eq!(line, "503 URX");
    // An answer that needed no retry carries no flag.
    TestClient::http1().get(addr, "/x", &[]).await;
    let lines = wait_for_lines(&log, 2).await;
    assert_eq!(lines[1], "200 -");
}

#[tokio::test]
async fn json_lines_parse_with_numbers_as_numbers_and_absent_values_as_null() {
    let dir = TempDir::new("alog-json");
    let log = dir.file("access.log");
    let up = Upstream::start("up").await;
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&http_log(
            &log,
            r#"          json_format:
            status: "%RESPONSE_CODE%"
            sent: "%BYTES_SENT%"
            duration: "%DURATION%"
            method: "%REQ(:METHOD)%"
            upstream: "%UPSTREAM_HOST%"
            missing: "%RESP(X-NOPE)%"
            line: "%REQ(:METHOD)% %REQ(:PATH)%"
            agent: "%REQ(USER-AGENT)%"
"#,
        ))
        .start()
        .await;
    let client = TestClient::http1();
    client
        .get(addr, "/a", &[("user-agent", "quote\" back\\slash")])
        .await;
    client.get(addr, "/b", &[("x-test-status", "404")]).await;
    let lines = wait_for_lines(&log, 2).await;
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let first = &objects[0];
    assert_eq!(first["status"], 200);
    assert_eq!(first["sent"], 3, "`up\\n`");
    assert!(first["duration"].is_u64());
    assert_eq!(first["method"], "GET");
    assert_eq!(first["upstream"], up.addr.to_string());
    assert!(first["missing"].is_null());
    assert_eq!(first["line"], "GET /a");
    assert_eq!(first["agent"], "quote\" back\\slash");
    assert_eq!(objects[1]["status"], 404);
}

#[tokio::test]
async fn filters_keep_only_the_entries_they_match() {
    let dir = TempDir::new("alog-filters");
    let errors = dir.file("errors.log");
    let slow = dir.file("slow.log");
    let client_errors = dir.file("4xx.log");
    let none = dir.file("none.log");
    let all = dir.file("all.log");
    let up = Upstream::start("up").await;
    let format = "          format: \"%RESPONSE_CODE% %REQ(:PATH)%\\n\"\n";
    let yaml = format!(
        "      access_log:
        - path: {errors}
{format}          filter: {{status_code_filter: {{comparison: {{op: GE, value: 500}}}}}}
        - path: {slow}
{format}          filter: {{duration_filter: {{comparison: {{op: GE, value: 150}}}}}}
        - path: {client_errors}
{format}          filter:
            and_filter:
              filters:
                - status_code_filter: {{comparison: {{op: GE, value: 400}}}}
                - status_code_filter: {{comparison: {{op: LE, value: 499}}}}
        - path: {none}
{format}          filter: {{runtime_filter: {{percent_sampled: 0}}}}
        - path: {all}
{format}          filter:
            or_filter:
              filters:
                - runtime_filter: {{percent_sampled: 100}}
                - status_code_filter: {{comparison: {{op: EQ, value: 200}}}}
",
        errors = errors.display(),
        slow = slow.display(),
        client_errors = client_errors.display(),
        none = none.display(),
        all = all.display(),
    );
    let (_proxy, addr) = OneRoute::to(&[up.addr]).http(&yaml).start().await;
    let client = TestClient::http1();
    client.get(addr, "/ok", &[]).await;
    client.get(addr, "/404", &[("x-test-status", "404")]).await;
    client.get(addr, "/503", &[("x-test-status", "503")]).await;
    client
        .get(addr, "/slow", &[("x-test-delay-ms", "200")])
        .await;
    assert_eq!(wait_for_lines(&all, 4).await.len(), 4);
    assert_eq!(wait_for_lines(&errors, 1).await, ["503 /503"]);
    assert_eq!(wait_for_lines(&slow, 1).await, ["200 /slow"]);
    assert_eq!(wait_for_lines(&client_errors, 1).await, ["404 /404"]);
    // The `all` log has every line, so the others have had their chance too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(read_lines(&errors).len(), 1);
    assert_eq!(read_lines(&slow).len(), 1);
    assert_eq!(read_lines(&client_errors).len(), 1);
    assert!(read_lines(&none).is_empty());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_entries_instead_of_blocking_requests() {
    let dir = TempDir::new("alog-fifo");
    let fifo = dir.file("fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils) must be installed");
    assert!(made.success());
    let up = Upstream::start("up").await;
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .http(&http_log(
            &fifo,
            "          format: \"%REQ(:PATH)%\\n\"\n          queue_size: 2\n",
        ))
        .start()
        .await;
    let dropped_before = sinew_proxy::filters::access_log::dropped_entries();
    // Nobody reads the FIFO: its writer blocks opening it, holding what it took (the
    // first entry and at most a queue's worth gathered after it); two more fill the
    // queue; the rest must be dropped while the requests go on unhindered.
    let client = TestClient::http1();
    let started = Instant::now();
    const REQUESTS: usize = 30;
    for i in 0..REQUESTS {
        let reply = client.get(addr, &format!("/{i}"), &[]).await;
        assert_eq!(reply.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests waited on the log: {:?}",
        started.elapsed()
    );
    let dropped = sinew_proxy::filters::access_log::dropped_entries() - dropped_before;
    assert!(dropped >= (REQUESTS - 5) as u64, "dropped {dropped}");
    // The admin API's metrics report them (a process-wide total, so at least these).
    let admin = sinew_integration::admin_kit::start(&proxy).await;
    let metrics = sinew_integration::admin_kit::metrics(admin.address).await;
    let reported =
        sinew_integration::admin_kit::value(&metrics, "sinew_access_log_dropped_total", &[]);
    assert!(
        reported >= dropped as f64,
        "reported {reported}, dropped {dropped}"
    );

    // Now read the FIFO: what was queued arrives, and together with the dropped it is
    // every request.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader_path: PathBuf = fifo.clone();
    std::thread::spawn(move || {
        let file = std::fs::File::open(reader_path).expect("open fifo");
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logged = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while (logged.len() as u64) + dropped < REQUESTS as u64 && Instant::now() < until {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            logged.push(line);
        }
    }
    assert_eq!(
        logged.len() as u64 + dropped,
        REQUESTS as u64,
        "logged {logged:?}, dropped {dropped}"
    );
    assert_eq!(
        logged[0], "/0",
        "the first entry was taken before the queue filled"
    );
    drop(proxy);
}

#[test]
fn a_bad_format_is_refused_at_load_with_file_line_column() {
    let yaml = "listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      access_log:
        - path: /dev/stdout
          format: \"%REQ(:METHOD)% %NOT_AN_OPERATOR%\"
        - json_format:
            ok: \"%DURATION%\"
            bad: \"%REQ(:BOGUS)%\"
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {prefix: /}
              direct_response: {status: 200}
";
    let err = sinew_config::load_str("t.yaml", yaml)
        .expect_err("bad formats are refused")
        .to_string();
    assert!(
        err.contains(
            "t.yaml:7:11: listeners[0].http.access_log[0].format: unknown operator %NOT_AN_OPERATOR%"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "t.yaml:10:13: listeners[0].http.access_log[1].json_format.bad: operator %REQ(:BOGUS)%"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tcp_proxy_connections_are_logged_with_upstream_and_bytes() {
    let dir = TempDir::new("alog-tcp");
    let log = dir.file("access.log");
    // An echo server as the upstream.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let yaml = format!(
        "
listeners:
  - name: tcp
    address: 127.0.0.1:0
    tcp:
      cluster: echo
      access_log:
        - path: {}
          format: \"%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESPONSE_FLAGS% %PROTOCOL%\\n\"
clusters:
  - name: echo
    endpoints: [{{address: {echo_addr}}}]
",
        log.display()
    );
    let proxy = TestProxy::start(&yaml).await;
    let addr: SocketAddr = proxy.addr("tcp").await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"hello world").await.unwrap();
    let mut back = [0u8; 11];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello world");
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    drop(s);
    let line = wait_for_lines(&log, 1).await.remove(0);
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f[0], echo_addr.to_string(), "{line}");
    assert_eq!(f[1], "echo");
    assert_eq!(f[2], "11");
    assert_eq!(f[3], "11");
    assert!(f[4].parse::<u64>().is_ok(), "{line}");
    assert_eq!(f[5], "-");
    assert_eq!(f[6], "-", "no HTTP protocol on a TCP connection");
}

/// logrotate's recipe: rename the file, SIGUSR1, and the next lines go to a new file.
#[tokio::test]
async fn sigusr1_reopens_the_file_after_a_rename() {
    let dir = TempDir::new("alog-rotate");
    let log = dir.file("access.log");
    let rotated = dir.file("access.log.1");
    let stderr_path = dir.file("stderr");
    let port = free_port();
    let config = dir.file("sinew.yaml");
    std::fs::write(
        &config,
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:{port}
    http:
      access_log:
        - path: {}
          format: \"%REQ(:PATH)%\\n\"
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              direct_response: {{status: 200, body: ok}}
",
            log.display()
        ),
    )
    .unwrap();
    let mut child = ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn sinew"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = TestClient::http1();
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    assert!(
        up,
        "sinew did not listen: {:?}",
        std::fs::read_to_string(&stderr_path)
    );

    client.get(addr, "/before", &[]).await;
    assert_eq!(wait_for_lines(&log, 1).await, ["/before"]);
    std::fs::rename(&log, &rotated).unwrap();
    // Until the signal, lines follow the renamed file (as with Envoy).
    client.get(addr, "/renamed", &[]).await;
    assert_eq!(wait_for_lines(&rotated, 2).await, ["/before", "/renamed"]);

    let status = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let noticed = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains("SIGUSR1")
    })
    .await;
    assert!(noticed, "{:?}", std::fs::read_to_string(&stderr_path));
    client.get(addr, "/after", &[]).await;
    assert_eq!(wait_for_lines(&log, 1).await, ["/after"]);
    assert_eq!(read_lines(&rotated), ["/before", "/renamed"]);
    assert!(child.exited().is_none(), "sinew is still running");
}

/// A request head the codec refuses never becomes a stream, yet it reaches the access
/// log as Envoy logs it: the status it was answered with, flag `DPE`, no method or path.
#[tokio::test]
async fn a_malformed_request_head_is_logged_with_dpe() {
    let dir = TempDir::new("alog-dpe");
    let log = dir.file("access.log");
    let (_proxy, addr) = OneRoute::to(&[closed_port_addr()])
        .http(&http_log(
            &log,
            "          format: \"%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:METHOD)% %REQ(:PATH)%\\n\"\n",
        ))
        .start()
        .await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"GET /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let line = wait_for_lines(&log, 1).await.remove(0);
    assert_eq!(line, "400 DPE - -");
}
