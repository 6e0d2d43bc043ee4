//! Mesh mTLS with SPIFFE identities over real sockets: a STRICT listener admitting only
//! SVIDs of its trust domain (refusing no certificate, another CA, another trust
//! domain, expired and not-yet-valid certificates), a PERMISSIVE port serving mTLS and
//! plaintext clients at once, the peer's identity reaching the access log and the
//! upstream (`x-forwarded-client-cert`), clusters originating mTLS and checking the
//! upstream's identity, the TCP proxy on both ends, and certificates rotated on disk
//! under load without a failed request. Outside peers: `openssl s_client`/`s_server`
//! and curl.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sinew_integration::tls_kit::{tls_get, CertFiles, TempDir, TestCa, Validity};
use sinew_integration::{
    admin_kit, eventually, shell, wait_for_lines, TestClient, TestProxy, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TRUST_DOMAIN: &str = "cluster.local";
const PROXY_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

/// The `mesh` block: the proxy's SVID (which also names `localhost`, so ordinary TLS
/// clients can verify it by host name) and the CA as the bundle.
fn mesh_yaml(ca: &TestCa, svid: &CertFiles) -> String {
    format!(
        "mesh:\n  trust_domain: {TRUST_DOMAIN}\n  identity: {{cert: '{}', key: '{}', bundle: '{}'}}\n",
        svid.cert_path(),
        svid.key_path(),
        ca.ca_path()
    )
}

/// An HTTP listener `inbound` in `mode` sending everything to `app`; the upstream is
/// told the client's URI SAN, and the access log records it.
async fn inbound_proxy(ca: &TestCa, mode: &str, app: SocketAddr, log: &Path) -> TestProxy {
    let svid = ca.issue_svid("proxy", PROXY_ID, &["localhost"], Validity::Current);
    TestProxy::start(&format!(
        "{mesh}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    mtls: {mode}
    http:
      forward_client_cert_details: sanitize_set
      set_current_client_cert_details: {{uri: true}}
      access_log:
        - path: '{log}'
          format: \"%DOWNSTREAM_PEER_URI_SAN% %RESPONSE_CODE%\\n\"
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
              request_headers: {{set: {{x-test-echo: '1'}}}}
clusters:
  - name: app
    endpoints: [{{address: {app}}}]
",
        mesh = mesh_yaml(ca, &svid),
        log = log.display(),
    ))
    .await
}

#[tokio::test]
async fn a_strict_listener_admits_an_svid_and_tells_the_log_and_the_upstream_who_it_was() {
    let ca = TestCa::new("mtls-strict");
    let dir = TempDir::new("mtls-strict-log");
    let log = dir.file("access.log");
    let app = Upstream::start("app").await;
    let proxy = inbound_proxy(&ca, "strict", app.addr, &log).await;
    let addr = proxy.addr("inbound").await;

    let client = ca.issue_svid("client", CLIENT_ID, &[], Validity::Current);
    for alpn in [&["h2"][..], &["http/1.1"][..]] {
        let (_, reply) = tls_get(
            addr,
            ca.client_config_with_cert(&client, alpn),
            "localhost",
            "/",
        )
        .await
        .expect("mTLS request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        let echoed = reply.text();
        let hash = sha256_hex(client.cert_der.as_ref());
        assert!(
            echoed.contains(&format!(
                "x-forwarded-client-cert: By={PROXY_ID};Hash={hash};URI={CLIENT_ID}"
            )),
            "{echoed}"
        );
    }
    let lines = wait_for_lines(&log, 2).await;
    assert_eq!(lines[0], format!("{CLIENT_ID} 200"));

    // The admin API lists the SVID (never its key) and metrics say when it expires.
    let admin = admin_kit::start(&proxy).await;
    let certs = TestClient::http1().get(admin.address, "/certs", &[]).await;
    assert_eq!(certs.status, 200);
    let certs: serde_json::Value = serde_json::from_str(&certs.text()).unwrap();
    let svid = &certs["certificates"][0];
    assert_eq!(svid["name"], "mesh");
    assert_eq!(svid["spiffe_id"], PROXY_ID);
    assert!(svid["expires_in_seconds"].as_i64().unwrap() > 300 * 86_400);
    assert!(!certs.to_string().contains("PRIVATE"), "{certs}");
    let metrics = admin_kit::metrics(admin.address).await;
    let expiry = admin_kit::sample(
        &metrics,
        "sinew_certificate_expiry_seconds",
        &[("certificate", "mesh"), ("spiffe_id", PROXY_ID)],
    );
    assert!(expiry.is_some_and(|s| s > 300.0 * 86_400.0), "{metrics}");
    let handshakes = admin_kit::value(
        &metrics,
        "sinew_listener_ssl_handshake_total",
        &[("listener", "inbound")],
    );
    assert_eq!(handshakes, 2.0);
}

#[tokio::test]
async fn a_strict_listener_refuses_every_client_that_is_not_an_svid_of_its_trust_domain() {
    let ca = TestCa::new("mtls-refuse");
    let dir = TempDir::new("mtls-refuse-log");
    let app = Upstream::start("app").await;
    let proxy = inbound_proxy(&ca, "strict", app.addr, &dir.file("a.log")).await;
    let addr = proxy.addr("inbound").await;

    // No certificate at all; plaintext HTTP.
    let none = tls_get(addr, ca.client_config(&["http/1.1"]), "localhost", "/").await;
    assert!(none.is_err(), "a client without a certificate got {none:?}");
    let plain = TestClient::http1().try_get(addr, "/", &[]).await;
    assert!(plain.is_err(), "a plaintext client got {plain:?}");

    let other_ca = TestCa::new("mtls-other-ca");
    let cases = [
        (
            "another CA",
            &other_ca,
            other_ca.issue_svid("c", CLIENT_ID, &[], Validity::Current),
        ),
        (
            "another trust domain",
            &ca,
            ca.issue_svid(
                "td",
                "spiffe://evil.example/ns/shop/sa/web",
                &[],
                Validity::Current,
            ),
        ),
        (
            "no SPIFFE ID",
            &ca,
            ca.issue_svid(
                "nospiffe",
                "https://example.com/web",
                &[],
                Validity::Current,
            ),
        ),
        (
            "expired",
            &ca,
            ca.issue_svid("expired", CLIENT_ID, &[], Validity::Expired),
        ),
        (
            "not yet valid",
            &ca,
            ca.issue_svid("future", CLIENT_ID, &[], Validity::NotYetValid),
        ),
    ];
    for (what, issuer, cert) in &cases {
        // The client trusts the proxy's CA, whoever signed its own certificate.
        let _ = issuer;
        let config = ca.client_config_with_cert(cert, &["http/1.1"]);
        let result = tls_get(addr, config, "localhost", "/").await;
        assert!(result.is_err(), "{what}: the proxy served {result:?}");
    }
    assert_eq!(app.requests(), 0, "no refused client reached the upstream");
}

#[tokio::test]
async fn a_permissive_port_serves_mtls_and_plaintext_clients_at_once() {
    let ca = TestCa::new("mtls-permissive");
    let dir = TempDir::new("mtls-permissive-log");
    let log = dir.file("access.log");
    let app = Upstream::start("app").await;
    let proxy = inbound_proxy(&ca, "permissive", app.addr, &log).await;
    let addr = proxy.addr("inbound").await;
    let client = ca.issue_svid("client", CLIENT_ID, &[], Validity::Current);

    let mtls = tls_get(
        addr,
        ca.client_config_with_cert(&client, &["h2"]),
        "localhost",
        "/",
    );
    let plain_client = TestClient::http1();
    let plain = plain_client.get(addr, "/", &[("x-forwarded-client-cert", "By=forged")]);
    let (mtls, plain) = tokio::join!(mtls, plain);
    let (_, mtls) = mtls.expect("mTLS client");
    assert_eq!(mtls.status, 200);
    assert!(mtls.text().contains(&format!("URI={CLIENT_ID}")));
    assert_eq!(plain.status, 200);
    assert!(
        !plain.text().contains("x-forwarded-client-cert"),
        "a plaintext client's XFCC is dropped: {}",
        plain.text()
    );
    let mut lines = wait_for_lines(&log, 2).await;
    lines.sort();
    assert_eq!(lines, vec!["- 200".to_string(), format!("{CLIENT_ID} 200")]);

    // An outside client: curl, plaintext and with a client certificate.
    // The proxy runs on this test's runtime: outside clients run off it.
    let curl = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["-sS", "--max-time", "10"])
                    .args(&args)
                    .output()
                    .map(|out| (args, out))
            })
            .await
            .unwrap()
            .expect("curl runs");
            let (args, out) = out;
            assert!(out.status.success(), "curl {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let plain = curl(&[&format!("http://{addr}/")]).await;
    assert!(plain.starts_with("GET / HTTP/1.1"), "{plain}");
    let port = addr.port().to_string();
    let secure = curl(&[
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        "--cacert",
        ca.ca_path(),
        "--cert",
        client.cert_path(),
        "--key",
        client.key_path(),
        &format!("https://localhost:{port}/"),
    ])
    .await;
    assert!(secure.contains(&format!("URI={CLIENT_ID}")), "{secure}");
}

/// An `openssl s_server` holding an SVID, answering every line with a fixed reply; it
/// asks for (and verifies) a client certificate and prints the peer's subject.
struct OpensslServer {
    addr: SocketAddr,
    child: std::process::Child,
}

impl OpensslServer {
    fn start(ca: &TestCa, svid: &CertFiles) -> OpensslServer {
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-naccept", "100", "-Verify", "1"])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", svid.cert_path(), "-key", svid.key_path()])
            .args(["-CAfile", ca.ca_path(), "-rev"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        OpensslServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy listener `mesh_in` in STRICT mTLS to `target`, and a plaintext TCP
/// listener `out` whose cluster originates mTLS to `mtls_target` expecting `identities`.
async fn tcp_mesh_proxy(
    ca: &TestCa,
    target: SocketAddr,
    mtls_target: SocketAddr,
    identities: &[&str],
) -> TestProxy {
    let svid = ca.issue_svid("tcp-proxy", PROXY_ID, &["localhost"], Validity::Current);
    TestProxy::start(&format!(
        "{mesh}
listeners:
  - name: mesh_in
    address: 127.0.0.1:0
    mtls: strict
    tcp: {{cluster: plain}}
  - name: out
    address: 127.0.0.1:0
    tcp: {{cluster: meshed}}
clusters:
  - name: plain
    endpoints: [{{address: {target}}}]
  - name: meshed
    mtls: {{identities: {ids:?}}}
    endpoints: [{{address: {mtls_target}}}]
",
        mesh = mesh_yaml(ca, &svid),
        ids = identities,
    ))
    .await
}

#[tokio::test]
async fn the_tcp_proxy_terminates_mtls_for_openssl_and_originates_it_to_an_openssl_server() {
    let ca = TestCa::new("mtls-tcp");
    let echo = sinew_integration::echo_server().await;
    let server_svid = ca.issue_svid("upstream", CLIENT_ID, &[], Validity::Current);
    let server = OpensslServer::start(&ca, &server_svid);
    let proxy = tcp_mesh_proxy(&ca, echo, server.addr, &[CLIENT_ID]).await;

    // Inbound: openssl s_client with an SVID, through the STRICT TCP listener to echo.
    let mesh_in = proxy.addr("mesh_in").await;
    let client = ca.issue_svid("client", CLIENT_ID, &[], Validity::Current);
    let out = shell(format!(
        "(printf 'hello mesh\\n'; sleep 1) | timeout 10 openssl s_client -quiet -no_ign_eof -connect {mesh_in} -cert {} -key {} -CAfile {} -verify_return_error 2>/dev/null",
        client.cert_path(),
        client.key_path(),
        ca.ca_path()
    ))
    .await;
    assert_eq!(out, "hello mesh\n");
    // Without a client certificate the proxy ends the handshake.
    let out = shell(format!(
        "(printf 'hello\\n'; sleep 1) | timeout 10 openssl s_client -quiet -no_ign_eof -connect {mesh_in} -CAfile {} 2>/dev/null",
        ca.ca_path()
    ))
    .await;
    assert_eq!(out, "");

    // Outbound: a plaintext client, mTLS from the proxy to openssl s_server (`-rev`
    // answers each line reversed), which verified the proxy's SVID.
    let out_addr = proxy.addr("out").await;
    let reply = eventually_reply(out_addr, b"abc\n").await;
    assert_eq!(reply, "cba\n");
}

/// Sends `line` through `addr` (retrying while openssl s_server starts) and returns
/// the first line back.
async fn eventually_reply(addr: SocketAddr, line: &[u8]) -> String {
    for _ in 0..50 {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let _ = stream.write_all(line).await;
            let mut buf = vec![0u8; 64];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await
            {
                if n > 0 {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}

#[tokio::test]
async fn a_cluster_refuses_an_upstream_whose_identity_is_not_the_one_expected() {
    let ca = TestCa::new("mtls-identity");
    let echo = sinew_integration::echo_server().await;
    let server_svid = ca.issue_svid("upstream", CLIENT_ID, &[], Validity::Current);
    let server = OpensslServer::start(&ca, &server_svid);
    let wrong = "spiffe://cluster.local/ns/shop/sa/payments";
    let proxy = tcp_mesh_proxy(&ca, echo, server.addr, &[wrong]).await;
    let out_addr = proxy.addr("out").await;
    // Give s_server time to listen, so a refusal is the identity's doing.
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            server.addr
        )
        .is_ok())
        .await
    );
    let reply = eventually_reply_once(out_addr, b"abc\n").await;
    assert_eq!(
        reply, "",
        "the proxy must not talk to {CLIENT_ID} when {wrong} is expected"
    );
    // The same upstream, expected as who it is, is reached: the refusal was the identity's.
    let right = tcp_mesh_proxy(&ca, echo, server.addr, &[CLIENT_ID]).await;
    let reply = eventually_reply_once(right.addr("out").await, b"abc\n").await;
    assert_eq!(reply, "cba\n");
}

async fn eventually_reply_once(addr: SocketAddr, line: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(line).await;
    let mut buf = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn http_traffic_crosses_two_proxies_over_mesh_mtls() {
    let ca = TestCa::new("mtls-hop");
    let dir = TempDir::new("mtls-hop-log");
    let app = Upstream::start("app").await;
    let inbound = inbound_proxy(&ca, "strict", app.addr, &dir.file("in.log")).await;
    let inbound_addr = inbound.addr("inbound").await;
    let client_svid = ca.issue_svid("outbound", CLIENT_ID, &[], Validity::Current);
    let outbound = TestProxy::start(&format!(
        "{mesh}
listeners:
  - name: out
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: api
clusters:
  - name: api
    protocol: http2
    mtls: {{identities: ['{PROXY_ID}']}}
    endpoints: [{{address: {inbound_addr}}}]
",
        mesh = mesh_yaml(&ca, &client_svid),
    ))
    .await;
    let out = outbound.addr("out").await;
    let reply = TestClient::http1().get(out, "/hello", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains(&format!("URI={CLIENT_ID}")),
        "{}",
        reply.text()
    );
}

/// Rotation under load: while HTTP/1.1, HTTP/2 and TCP clients keep making requests
/// and new connections, the proxy's SVID and then the bundle (root rollover: old and
/// new root, then the new root alone) are replaced on disk. Every request must succeed;
/// new handshakes must show the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_roots_rotate_on_disk_under_load_without_a_failed_request() {
    let old_ca = TestCa::new("rotate-old");
    let new_ca = TestCa::new("rotate-new");
    let dir = TempDir::new("rotate");
    let app = Upstream::start("app").await;
    let echo = sinew_integration::echo_server().await;

    // The proxy's files, replaced in place during the test.
    let cert = dir.file("svid.pem");
    let key = dir.file("svid.key");
    let bundle = dir.file("bundle.pem");
    let first = old_ca.issue_svid("first", PROXY_ID, &["localhost"], Validity::Current);
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    std::fs::copy(&old_ca.ca_pem, &bundle).unwrap();
    let proxy = TestProxy::start(&format!(
        "mesh:
  trust_domain: {TRUST_DOMAIN}
  identity: {{cert: '{}', key: '{}', bundle: '{}'}}
listeners:
  - name: web
    address: 127.0.0.1:0
    mtls: strict
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
  - name: tcp
    address: 127.0.0.1:0
    mtls: strict
    tcp: {{cluster: echo}}
clusters:
  - name: app
    endpoints: [{{address: {}}}]
  - name: echo
    endpoints: [{{address: {echo}}}]
",
        cert.display(),
        key.display(),
        bundle.display(),
        app.addr,
    ))
    .await;
    let web = proxy.addr("web").await;
    let tcp = proxy.addr("tcp").await;

    // Clients trust both roots and hold an SVID from the old CA, then (after the
    // rollover's first step) one from the new CA.
    let both_roots = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(old_ca.ca_der.clone()).unwrap();
        roots.add(new_ca.ca_der.clone()).unwrap();
        Arc::new(roots)
    };
    let old_client = old_ca.issue_svid("client-old", CLIENT_ID, &[], Validity::Current);
    let new_client = new_ca.issue_svid("client-new", CLIENT_ID, &[], Validity::Current);
    let client_config = move |client: &CertFiles, alpn: &str| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(both_roots.clone())
        .with_client_auth_cert(vec![client.cert_der.clone()], key_of(client))
        .unwrap();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        config
    };
    let use_new_client = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let configs = Arc::new([
        [
            client_config(&old_client, "http/1.1"),
            client_config(&old_client, "h2"),
        ],
        [
            client_config(&new_client, "http/1.1"),
            client_config(&new_client, "h2"),
        ],
    ]);
    let mut load = Vec::new();
    for worker in 0..3 {
        let (stop, ok, failed, configs, use_new) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            configs.clone(),
            use_new_client.clone(),
        );
        load.push(tokio::spawn(async move {
            // Bounded: at most 5,000 requests per worker, and the test stops them.
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let set = &configs[use_new.load(Ordering::SeqCst) as usize];
                let result = match worker {
                    0 | 1 => tls_get(web, set[worker].clone(), "localhost", "/")
                        .await
                        .and_then(|(_, r)| match r.status.as_u16() {
                            200 => Ok(()),
                            s => Err(format!("status {s}")),
                        }),
                    _ => tcp_tls_round_trip(tcp, set[0].clone()).await,
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failed.lock().unwrap().push(format!("worker {worker}: {e}"));
                        0
                    }
                };
            }
        }));
    }
    // One long-lived HTTP/2 connection, opened before any rotation, keeps its session
    // and makes requests throughout: a rotation never drops a connection.
    let persistent = {
        let (stop, failed) = (stop.clone(), failed.clone());
        let config = configs[0][1].clone();
        tokio::spawn(async move {
            let mut sender = h2_connection(web, config).await;
            let mut served = 0usize;
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let request = http::Request::builder()
                    .uri("https://localhost/")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match sender.send_request(request).await {
                    Ok(r) if r.status() == 200 => served += 1,
                    other => {
                        let e = format!("persistent connection: {:?}", other.map(|r| r.status()));
                        failed.lock().unwrap().push(e);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            served
        })
    };
    let served_serial = || async {
        let config = client_config(&old_client, "http/1.1");
        peer_serial(web, config).await
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let serial_before = served_serial().await;
    assert_eq!(serial_before, serial_of(&first));

    // 1. The SVID rotates (same CA): new handshakes show the new serial.
    let second = old_ca.issue_svid("second", PROXY_ID, &["localhost"], Validity::Current);
    replace(&second.key, &key);
    replace(&second.cert, &cert);
    let rotated = wait_for_serial(&served_serial, &serial_of(&second)).await;
    assert!(rotated, "the proxy never served the rotated certificate");

    // 2. Root rollover: the bundle holds both roots; clients move to new-CA SVIDs; the
    //    proxy's own SVID comes from the new CA; then the bundle drops the old root.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&old_ca.ca_pem).unwrap(),
        std::fs::read_to_string(&new_ca.ca_pem).unwrap()
    );
    write_replacing(&bundle, both.as_bytes());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    use_new_client.store(true, Ordering::SeqCst);
    let third = new_ca.issue_svid("third", PROXY_ID, &["localhost"], Validity::Current);
    replace(&third.key, &key);
    replace(&third.cert, &cert);
    assert!(wait_for_serial(&served_serial, &serial_of(&third)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_replacing(&bundle, &std::fs::read(&new_ca.ca_pem).unwrap());
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let persistent = persistent.await.unwrap();
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    eprintln!(
        "rotation under load: {ok} requests on new connections and {persistent} on one \
         kept connection succeeded, {} failed",
        failed.len()
    );
    assert!(
        persistent > 100,
        "the kept connection served only {persistent}"
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 100, "too little load to mean anything: {ok}");

    // After the rollover an old-CA client is refused: the old root is gone.
    let old = tls_get(
        web,
        client_config(&old_client, "http/1.1"),
        "localhost",
        "/",
    )
    .await;
    assert!(
        old.is_err(),
        "an old-root client was still admitted: {old:?}"
    );
}

/// An HTTP/2 connection over mTLS, driven in the background.
async fn h2_connection(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    sender
}

/// One round trip over a fresh mTLS connection to the TCP listener (an echo behind it).
async fn tcp_tls_round_trip(addr: SocketAddr, config: rustls::ClientConfig) -> Result<(), String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        tls.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"ping\n" {
            return Err(format!("echo gave {buf:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The serial of the certificate a fresh handshake to `addr` shows, in hex.
async fn peer_serial(addr: SocketAddr, config: rustls::ClientConfig) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    sinew_identity::PeerIdentity::from_der(leaf.as_ref())
        .unwrap()
        .serial
}

fn serial_of(cert: &CertFiles) -> String {
    sinew_identity::PeerIdentity::from_der(cert.cert_der.as_ref())
        .unwrap()
        .serial
}

async fn wait_for_serial<F, Fut>(served: &F, want: &str) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    for _ in 0..50 {
        if served().await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Replaces `to` by renaming a copy of `from` over it, as a secret volume is updated:
/// no reader ever sees half a file.
fn replace(from: &Path, to: &Path) {
    write_replacing(to, &std::fs::read(from).unwrap());
}

fn write_replacing(to: &Path, bytes: &[u8]) {
    let staged = to.with_extension("staged");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

fn key_of(cert: &CertFiles) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into())
}

fn sha256_hex(der: &[u8]) -> String {
    sinew_identity::PeerIdentity::from_der(der).unwrap().sha256
}

/// Authorization on the peer's SPIFFE identity, over real mTLS: on an HTTP listener by
/// principal and namespace per path (each caller's answers, denials included, counted
/// under its identity), and on a TCP listener by principal.
#[tokio::test]
async fn authorization_rules_match_the_mtls_peers_spiffe_principal_and_namespace() {
    let ca = TestCa::new("mtls-authz");
    let app = Upstream::start("app").await;
    let echo = sinew_integration::echo_server().await;
    let svid = ca.issue_svid("proxy", PROXY_ID, &["localhost"], Validity::Current);
    let proxy = TestProxy::start(&format!(
        "{mesh}
listeners:
  - name: inbound
    address: 127.0.0.1:0
    mtls: strict
    authorization:
      policies:
        - name: web-only-admin
          action: ALLOW
          rules:
            - from: [{{source: {{principals: ['cluster.local/ns/shop/sa/web']}}}}]
              to: [{{operation: {{paths: ['/admin/*']}}}}]
            - from: [{{source: {{namespaces: [shop]}}}}]
              to: [{{operation: {{paths: ['/public']}}}}]
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
  - name: tcp_in
    address: 127.0.0.1:0
    mtls: strict
    authorization:
      policies:
        - name: no-batch
          action: DENY
          rules:
            - from: [{{source: {{principals: ['*/sa/batch']}}}}]
    tcp: {{cluster: echo}}
clusters:
  - name: app
    endpoints: [{{address: {app}}}]
  - name: echo
    endpoints: [{{address: {echo}}}]
",
        mesh = mesh_yaml(&ca, &svid),
        app = app.addr,
    ))
    .await;
    let inbound = proxy.addr("inbound").await;
    let web = ca.issue_svid("web", CLIENT_ID, &[], Validity::Current);
    let batch = ca.issue_svid(
        "batch",
        "spiffe://cluster.local/ns/shop/sa/batch",
        &[],
        Validity::Current,
    );
    let other_ns = ca.issue_svid(
        "ops",
        "spiffe://cluster.local/ns/ops/sa/web",
        &[],
        Validity::Current,
    );
    for (who, cert, path, status) in [
        ("web", &web, "/admin/x", 200),
        ("batch", &batch, "/admin/x", 403),
        ("batch", &batch, "/public", 200),
        ("ops/web", &other_ns, "/public", 403),
        ("ops/web", &other_ns, "/admin/x", 403),
    ] {
        let config = ca.client_config_with_cert(cert, &["http/1.1"]);
        let (_, reply) = tls_get(inbound, config, "localhost", path)
            .await
            .expect("mTLS");
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{who} {path}: {}",
            reply.text()
        );
    }
    // Each caller's answers count under its identity, the refusals as well as the rest.
    let admin = admin_kit::start(&proxy).await;
    let metrics = admin_kit::metrics(admin.address).await;
    let answered = |id: &str, class: &str| {
        admin_kit::sample(
            &metrics,
            "sinew_listener_downstream_peer_rq_total",
            &[
                ("listener", "inbound"),
                ("peer_spiffe_id", id),
                ("code_class", class),
            ],
        )
        .unwrap_or(0.0)
    };
    let batch_id = "spiffe://cluster.local/ns/shop/sa/batch";
    let ops_id = "spiffe://cluster.local/ns/ops/sa/web";
    assert_eq!(answered(CLIENT_ID, "2xx"), 1.0, "{metrics}");
    assert_eq!(answered(batch_id, "2xx"), 1.0, "{metrics}");
    assert_eq!(answered(batch_id, "4xx"), 1.0, "{metrics}");
    assert_eq!(answered(ops_id, "4xx"), 2.0, "{metrics}");
    let tcp_in = proxy.addr("tcp_in").await;
    let round_trip =
        |cert: &CertFiles| tcp_tls_round_trip(tcp_in, ca.client_config_with_cert(cert, &[]));
    assert_eq!(round_trip(&web).await, Ok(()));
    assert!(round_trip(&batch).await.is_err(), "batch is denied on TCP");
}
