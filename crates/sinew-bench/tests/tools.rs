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

/// Runs `load` with `args`; its exit status, its JSON line and its stderr.
fn load(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = tool().arg("load").args(args).output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn count(json: &str, key: &str) -> u64 {
    field(json, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {json}: {e}"))
}

#[test]
fn load_counts_requests_over_keep_alive_cleartext() {
    let upstream = start_upstream();
    let (status, json, stderr) =
        load(&["--connect", &upstream.http, "--conns", "4", "--secs", "0.3"]);
    assert!(status.success(), "{stderr}");
    assert!(count(&json, "requests") > 100, "{json}");
    assert_eq!(count(&json, "errors"), 0, "{json}");
    assert_eq!(count(&json, "full_handshakes"), 0, "{json}");
}

#[test]
fn load_resumes_tls_sessions_only_when_asked_and_counts_each_kind() {
    let upstream = start_upstream();
    let ca = certs().join("ca.crt");
    let ca = ca.to_str().unwrap();
    let base = [
        "--connect",
        &upstream.tls,
        "--conns",
        "4",
        "--secs",
        "0.5",
        "--close",
        "--ca",
        ca,
    ];

    // Resumption off: every request had a full handshake of its own.
    let (status, json, stderr) = load(&base);
    assert!(status.success(), "{stderr}");
    let requests = count(&json, "requests");
    assert!(requests > 20, "{json}");
    assert_eq!(count(&json, "errors"), 0, "{json}");
    assert_eq!(count(&json, "resumed_handshakes"), 0, "{json}");
    assert_eq!(count(&json, "full_handshakes"), requests, "{json}");
    assert!(field(&json, "negotiated").starts_with("TLS13_"), "{json}");

    // Resumption on: the upstream (rustls, a session cache) resumes all but each
    // connection's first few.
    let mut resuming = base.to_vec();
    resuming.push("--resume");
    let (status, json, stderr) = load(&resuming);
    assert!(status.success(), "{stderr}");
    let (full, resumed) = (
        count(&json, "full_handshakes"),
        count(&json, "resumed_handshakes"),
    );
    assert_eq!(full + resumed, count(&json, "requests"), "{json}");
    assert!(resumed > 20 && full <= 8, "{json}");

    // A server certificate the CA did not sign: every handshake fails, and the tool says so.
    let stranger = certs().join("server.crt");
    let mut untrusted = base.to_vec();
    untrusted[8] = stranger.to_str().unwrap();
    let (status, json, stderr) = load(&untrusted);
    assert!(!status.success());
    assert_eq!(count(&json, "requests"), 0, "{json}");
    assert!(stderr.contains("TLS handshake"), "{stderr}");
}

/// A TLS server on 127.0.0.1 that requires a client certificate signed by the example
/// CA and answers every GET on a kept-alive connection; it counts the connections whose
/// client presented one.
fn mtls_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = certs();
    let pem = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let provider = sinew_tls::pem::provider();
    let roots = sinew_tls::pem::parse_roots(&pem("ca.crt"), "ca").unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            sinew_tls::pem::parse_certs(&pem("server.crt"), "cert").unwrap(),
            sinew_tls::pem::parse_key(&pem("server.key"), "key").unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let with_cert = Arc::new(AtomicUsize::new(0));
    let seen = with_cert.clone();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, seen) = (config.clone(), seen.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 1024];
                let mut counted = false;
                while let Ok(n) = tls.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !counted && tls.conn.peer_certificates().is_some() {
                        seen.fetch_add(1, Ordering::SeqCst);
                        counted = true;
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                        && tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, with_cert)
}

#[test]
fn load_presents_its_client_certificate_when_given_one() {
    use std::sync::atomic::Ordering;
    let (addr, with_cert) = mtls_server();
    let ca = certs().join("ca.crt");
    let client_cert = certs().join("mesh-web.crt");
    let client_key = certs().join("mesh-web.key");
    let mut args = vec!["--connect", &addr, "--conns", "2", "--secs", "0.3"];
    args.extend(["--ca", ca.to_str().unwrap()]);

    // Without a certificate the server refuses every handshake.
    let (status, json, _) = load(&args);
    assert!(!status.success());
    assert_eq!(count(&json, "requests"), 0, "{json}");
    assert_eq!(with_cert.load(Ordering::SeqCst), 0);

    args.extend(["--cert", client_cert.to_str().unwrap()]);
    args.extend(["--key", client_key.to_str().unwrap()]);
    let (status, json, stderr) = load(&args);
    assert!(status.success(), "{stderr}");
    assert!(count(&json, "requests") > 10, "{json}");
    assert_eq!(count(&json, "errors"), 0, "{json}");
    // Keep-alive: two connections, two handshakes, each with the client's certificate.
    assert_eq!(count(&json, "full_handshakes"), 2, "{json}");
    assert_eq!(with_cert.load(Ordering::SeqCst), 2);
}
