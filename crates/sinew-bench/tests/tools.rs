//! The benchmark's load-side tools over real loopback sockets: the upstream's bodies over
//! HTTP/1.1 and TLS (curl), its TCP source read by `tcp-read`, and `hold` keeping its
//! connections open until its standard input closes. bench/run trusts these figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::ChildGuard;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sinew-bench"))
}

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/certs")
}

/// The value of `"key": "value"` in the one-line JSON the tools print.
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 4;
    let rest = json[start..].trim_start_matches('"');
    let end = rest.find(['"', ',', '}']).unwrap();
    &rest[..end]
}

struct Upstream {
    _child: ChildGuard,
    http: String,
    tls: String,
    tcp_source: String,
}

fn start_upstream() -> Upstream {
    let mut child = tool()
        .args(["upstream", "--http", "127.0.0.1:0", "--tls", "127.0.0.1:0"])
        .args(["--tcp-source", "127.0.0.1:0", "--cert"])
        .arg(certs().join("server.crt"))
        .arg("--key")
        .arg(certs().join("server.key"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sinew-bench upstream");
    let mut bound = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut bound)
        .unwrap();
    Upstream {
        http: field(&bound, "http").to_string(),
        tls: field(&bound, "tls").to_string(),
        tcp_source: field(&bound, "tcp_source").to_string(),
        _child: ChildGuard(child),
    }
}

/// One HTTP/1.1 request on a fresh connection; the whole response as text.
fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn the_upstream_serves_64_bytes_and_1_mib_over_http_and_tls() {
    let upstream = start_upstream();
    let small = get(&upstream.http, "/");
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(small.contains("content-length: 64\r\n"), "{small}");
    let large = get(&upstream.http, "/1m");
    assert!(
        large.contains("content-length: 1048576\r\n"),
        "{large:.200}"
    );
    assert_eq!(large.split("\r\n\r\n").nth(1).unwrap().len(), 1 << 20);

    let port = upstream.tls.rsplit(':').next().unwrap();
    let curl = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(certs().join("ca.crt"))
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("curl (apt-get install curl)");
    assert!(curl.status.success(), "{curl:?}");
    assert_eq!(curl.stdout.len(), 64);
}

#[test]
fn tcp_read_reports_the_bytes_the_source_sent() {
    let upstream = start_upstream();
    let out = tool()
        .args([
            "tcp-read",
            "--connect",
            &upstream.tcp_source,
            "--secs",
            "0.3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8(out.stdout).unwrap();
    let bytes: u64 = field(&json, "bytes").parse().unwrap();
    assert!(bytes > 1 << 20, "{json}");
}

#[test]
fn hold_keeps_its_connections_open_until_stdin_closes() {
    let upstream = start_upstream();
    let mut hold = ChildGuard(
        tool()
            .args(["hold", "--connect", &upstream.http, "--conns", "50"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hold.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(field(&line, "held"), "50");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        hold.exited().is_none(),
        "hold ended while its stdin was open"
    );
    drop(hold.0.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = hold.exited() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "hold did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

/// Runs `hold` to the point where it reports its connections held (or exits); its report
/// line (empty if it printed none) and the still-running child.
fn hold(args: &[&str]) -> (String, ChildGuard) {
    let mut hold = ChildGuard(
        tool()
            .arg("hold")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hold.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (line, hold)
}

/// Waits for `hold` to exit (it must within 10 s); its stderr.
fn finished(mut hold: ChildGuard) -> (std::process::ExitStatus, String) {
    drop(hold.0.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = hold.exited() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "hold did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    hold.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn hold_over_tls_holds_verified_sessions_and_refuses_cleartext_and_strangers() {
    let upstream = start_upstream();
    let ca = certs().join("ca.crt");
    let ca = ca.to_str().unwrap();

    // The TLS port speaks only TLS, so a held connection there made its request over TLS.
    let tls_args = [
        "--connect",
        &upstream.tls,
        "--conns",
        "30",
        "--tls",
        "--ca",
        ca,
    ];
    let (line, mut held) = hold(&tls_args);
    assert_eq!(field(&line, "held"), "30", "{line}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        held.exited().is_none(),
        "hold ended while its stdin was open"
    );
    let (status, stderr) = finished(held);
    assert!(status.success(), "{stderr}");

    // Without --tls, the same port cannot be held: cleartext is not what it speaks.
    let (line, cleartext) = hold(&["--connect", &upstream.tls, "--conns", "3"]);
    assert_eq!(line, "");
    let (status, _) = finished(cleartext);
    assert!(!status.success());

    // With --tls against the cleartext port, the handshake fails and says so.
    let (line, no_tls) = hold(&[
        "--connect",
        &upstream.http,
        "--conns",
        "3",
        "--tls",
        "--ca",
        ca,
    ]);
    assert_eq!(line, "");
    let (status, stderr) = finished(no_tls);
    assert!(!status.success());
    assert!(stderr.contains("TLS handshake"), "{stderr}");

    // A certificate not signed by the given CA is refused.
    let stranger = certs().join("server.crt");
    let (line, untrusted) = hold(&[
        "--connect",
        &upstream.tls,
        "--conns",
        "3",
        "--tls",
        "--ca",
        stranger.to_str().unwrap(),
    ]);
    assert_eq!(line, "");
    let (status, stderr) = finished(untrusted);
    assert!(!status.success());
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}

#[test]
fn hold_wants_tls_and_ca_together() {
    let out = tool()
        .args(["hold", "--connect", "127.0.0.1:1", "--tls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca"),
        "{out:?}"
    );
}
