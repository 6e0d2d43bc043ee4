//! The mesh CA in `sinew control` over real sockets: an outside client (Python's
//! grpcio, `cryptography` and the `spiffe` package) gets an SVID on a CSR and the
//! trust bundle over SDS; Kubernetes tokens checked by TokenReview against recorded
//! answers; and two `sinew proxy` processes that get their certificates from the CA,
//! renew them at half-life and live through a root rollover, under constant HTTP/1.1,
//! HTTP/2 and TCP load with no failed request and no connection dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{free_port, shell, sinew_binary, ChildGuard, TestClient, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TRUST_DOMAIN: &str = "cluster.local";
const API_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const OTHER_ID: &str = "spiffe://cluster.local/ns/shop/sa/other";

use crate::mesh_kit::{start_mesh_proxy, tokens, wait_for_port};

/// Starts `sinew control` with `ca_block` and waits until its port takes connections.
async fn start_control(dir: &TempDir, ca_block: &str) -> (ChildGuard, SocketAddr) {
    start_control_with(dir, "", ca_block).await
}

/// [`start_control`] with more top-level config (`registries`, `debounce`, ...), each
/// line ending in a newline.
async fn start_control_with(dir: &TempDir, more: &str, ca_block: &str) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let config = dir.file("control.yaml");
    std::fs::write(
        &config,
        format!("xds_address: 127.0.0.1:{port}\n{more}ca:\n{ca_block}"),
    )
    .unwrap();
    let child = ChildGuard(
        Command::new(sinew_binary())
            .args(["control", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew control"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr).await;
    (child, addr)
}

/// [`start_control`] as the mesh CA (in `ca_dir`, with the workload tokens of `list`)
/// that also serves the service model `services`, from a directory registry.
async fn start_control_serving(
    dir: &TempDir,
    ca_dir: &Path,
    list: &Path,
    services: &str,
) -> (ChildGuard, SocketAddr) {
    let services_dir = dir.file("services");
    std::fs::create_dir_all(&services_dir).unwrap();
    std::fs::write(services_dir.join("services.yaml"), services).unwrap();
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  dir: {}\n  tokens: {}\n",
        ca_dir.display(),
        list.display()
    );
    start_control_with(
        dir,
        "debounce: 100ms\nregistries: [{directory: services}]\n",
        &block,
    )
    .await
}

async fn python_client(
    control: SocketAddr,
    bundle: &Path,
    token: &Path,
    out: &TempDir,
) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ca/python_ca_client.py");
    let output = shell(format!(
        "python3 {script} {control} {} {} {} 2>&1",
        bundle.display(),
        token.display(),
        out.path.display()
    ))
    .await;
    serde_json::from_str(output.trim()).unwrap_or_else(|_| panic!("python client: {output}"))
}

/// An outside client proves itself with a per-workload token, gets a certificate for
/// that identity only (not the names its CSR asked for), uses it for mTLS to fetch the
/// bundle over SDS, and is refused with a wrong token or a garbage CSR. The root the CA
/// made on first start is kept: a restarted CA serves the same one.
#[tokio::test]
async fn an_outside_client_gets_an_svid_on_a_csr_and_the_bundle_over_sds() {
    let dir = TempDir::new("mesh-ca-python");
    let (list, files) = tokens(&dir, &[WEB_ID]);
    let ca_dir = dir.file("ca");
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  dir: {}\n  tokens: {}\n  workload_lifetime: 2h\n",
        ca_dir.display(),
        list.display()
    );
    let (control, addr) = start_control(&dir, &block).await;
    let root = ca_dir.join("ca.crt");
    let first_root = std::fs::read(&root).expect("the root is written on first start");
    let got = python_client(addr, &root, &files[0], &dir).await;
    assert_eq!(got["spiffe_id"], WEB_ID, "{got}");
    assert_eq!(
        got["dns_names"],
        serde_json::json!([]),
        "the CSR's names are not granted: {got}"
    );
    assert_eq!(got["chain"], 2, "{got}");
    let life = got["seconds_of_life"].as_i64().unwrap();
    assert!(
        (3500..=3600).contains(&life),
        "the client asked for 1h of 2h: {got}"
    );
    assert_eq!(got["sds_secrets"], serde_json::json!(["ROOTCA"]), "{got}");
    assert_eq!(got["bundle_certificates"], 1, "{got}");
    assert_eq!(got["bad_token"], "UNAUTHENTICATED", "{got}");
    assert_eq!(got["bad_csr"], "INVALID_ARGUMENT", "{got}");

    drop(control);
    let (_control, addr) = start_control(&dir, &block).await;
    assert_eq!(
        std::fs::read(&root).unwrap(),
        first_root,
        "a restart keeps the root"
    );
    let again = python_client(addr, &root, &files[0], &dir).await;
    assert_eq!(again["spiffe_id"], WEB_ID, "{again}");
}

/// A stand-in Kubernetes API server that answers TokenReviews as a real one does
/// (answers recorded from the API's documented shape): `good-token` is the service
/// account shop/api for audience `sinew`; anything else is not authenticated.
async fn token_review_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&request).to_string();
                let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                let review: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let status = if text.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews")
                    && review["spec"]["token"] == "good-token"
                {
                    serde_json::json!({
                        "authenticated": true,
                        "user": {
                            "username": "system:serviceaccount:shop:api",
                            "uid": "6e5c6a3e-0b7b-4b4e-9a53-4a3f0c5a1d10",
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]
                        },
                        "audiences": ["sinew"]
                    })
                } else {
                    serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
                };
                let answer = serde_json::json!({
                    "kind": "TokenReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": null},
                    "spec": review["spec"],
                    "status": status,
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// A Kubernetes service-account token is checked by TokenReview: the one the API
/// server authenticates gets `spiffe://<td>/ns/<ns>/sa/<sa>`; another is refused.
#[tokio::test]
async fn kubernetes_service_account_tokens_are_checked_by_token_review() {
    let dir = TempDir::new("mesh-ca-k8s");
    let api = token_review_server().await;
    let ca_dir = dir.file("ca");
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  dir: {}\n  kubernetes: {{api_server: 'http://{api}', audiences: [sinew]}}\n",
        ca_dir.display()
    );
    let (_control, addr) = start_control(&dir, &block).await;
    let good = dir.file("good.token");
    std::fs::write(&good, "good-token").unwrap();
    let got = python_client(addr, &ca_dir.join("ca.crt"), &good, &dir).await;
    assert_eq!(got["spiffe_id"], API_ID, "{got}");
    assert_eq!(got["bad_token"], "UNAUTHENTICATED", "{got}");
}

/// `openssl req -x509`: a P-256 root CA written as `<stem>.crt` and `<stem>.key`.
async fn openssl_root(dir: &TempDir, stem: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.file(&format!("{stem}.crt")),
        dir.file(&format!("{stem}.key")),
    );
    shell(format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj '/O=cluster.local/CN={stem}' -keyout {} -out {} \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>&1",
        key.display(),
        cert.display()
    ))
    .await;
    assert!(cert.exists() && key.exists(), "openssl made no root");
    (cert, key)
}

fn write_replacing(to: &Path, bytes: &[u8]) {
    let staged = to.with_extension("staged");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// A `sinew proxy` process fed by the CA (and SDS over `--xds https://`).
struct MeshProxy {
    _child: ChildGuard,
    admin: SocketAddr,
}

impl MeshProxy {
    /// `ca_extra` is added to the `mesh.ca` map (e.g. `, sds_socket: '/path'`).
    async fn start(
        dir: &TempDir,
        name: &str,
        control: SocketAddr,
        (bundle, token, ca_extra): (&Path, &Path, &str),
        body: &str,
    ) -> MeshProxy {
        let (child, admin) =
            start_mesh_proxy(dir, name, control, (bundle, token, ca_extra), body).await;
        MeshProxy {
            _child: child,
            admin,
        }
    }

    /// The serial of the mesh certificate in force, from `/certs`.
    async fn serial(&self) -> String {
        let reply = TestClient::http1().get(self.admin, "/certs", &[]).await;
        let certs: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
        certs["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "mesh")
            .map(|c| c["serial"].as_str().unwrap().to_string())
            .expect("a mesh certificate")
    }

    async fn metric(&self, line_start: &str) -> f64 {
        let reply = TestClient::http1().get(self.admin, "/metrics", &[]).await;
        reply
            .text()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (up to `within`) for the serial to differ from `from`; returns the new one.
    async fn serial_change(&self, from: &str, within: Duration) -> Option<String> {
        let until = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < until {
            let now = self.serial().await;
            if now != from {
                return Some(now);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

async fn tcp_round_trip(addr: SocketAddr) -> Result<(), String> {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tcp.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"ping\n" {
            return Err(format!("echo gave {buf:?}"));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Two proxies get their SVIDs from the CA, renew them at half-life, and go through a
/// root rollover (new root trusted, then signing, then the old root dropped), while
/// HTTP/1.1 and HTTP/2 clients (through `web` to `api` over mesh mTLS) and TCP clients
/// (a new mTLS connection between the proxies for each) keep up a steady load. Every
/// request must succeed, and one kept-alive connection must serve throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_renew_and_roll_over_roots_from_the_ca_under_load_without_a_failed_request() {
    let dir = TempDir::new("mesh-ca-rotate");
    let (list, files) = tokens(&dir, &[API_ID, WEB_ID]);
    let (old_root, old_key) = openssl_root(&dir, "root-a").await;
    let (new_root, new_key) = openssl_root(&dir, "root-b").await;
    let signing_cert = dir.file("signing.crt");
    let signing_key = dir.file("signing.key");
    let extra = dir.file("trusted-roots.pem");
    std::fs::copy(&old_root, &signing_cert).unwrap();
    std::fs::copy(&old_key, &signing_key).unwrap();
    std::fs::write(&extra, "").unwrap();
    // What proxies are given to start with: both roots, as a proxy deployed during a
    // rollover would be (SDS then sends the bundle in force).
    let bootstrap_bundle = dir.file("bootstrap-bundle.pem");
    std::fs::write(
        &bootstrap_bundle,
        [
            std::fs::read(&old_root).unwrap(),
            std::fs::read(&new_root).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  cert: {}\n  key: {}\n  trusted_roots: {}\n  tokens: {}\n  workload_lifetime: 16s\n",
        signing_cert.display(),
        signing_key.display(),
        extra.display(),
        list.display()
    );
    let (_control, control) = start_control(&dir, &block).await;

    let app = Upstream::start("app").await;
    let echo = sinew_integration::echo_server().await;
    let (api_http, api_tcp, web_http, web_tcp) =
        (free_port(), free_port(), free_port(), free_port());
    let api = MeshProxy::start(
        &dir,
        "api",
        control,
        (&bootstrap_bundle, &files[0], ""),
        &format!(
            "listeners:
  - name: inbound
    address: 127.0.0.1:{api_http}
    mtls: strict
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
  - name: inbound-tcp
    address: 127.0.0.1:{api_tcp}
    mtls: strict
    tcp: {{cluster: echo}}
clusters:
  - name: app
    endpoints: [{{address: {}}}]
  - name: echo
    endpoints: [{{address: {echo}}}]
",
            app.addr
        ),
    )
    .await;
    let web = MeshProxy::start(
        &dir,
        "web",
        control,
        (&bootstrap_bundle, &files[1], ""),
        &format!(
            "listeners:
  - name: out
    address: 127.0.0.1:{web_http}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: api
  - name: out-tcp
    address: 127.0.0.1:{web_tcp}
    tcp: {{cluster: api-tcp}}
clusters:
  - name: api
    protocol: http2
    mtls: {{identities: ['{API_ID}']}}
    endpoints: [{{address: 127.0.0.1:{api_http}}}]
  - name: api-tcp
    mtls: {{identities: ['{API_ID}']}}
    endpoints: [{{address: 127.0.0.1:{api_tcp}}}]
"
        ),
    )
    .await;
    let web_addr: SocketAddr = format!("127.0.0.1:{web_http}").parse().unwrap();
    let web_tcp_addr: SocketAddr = format!("127.0.0.1:{web_tcp}").parse().unwrap();
    wait_for_port(web_addr).await;
    let first = TestClient::http1().get(web_addr, "/", &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..3usize {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let http1 = TestClient::http1();
            // Bounded: at most 20,000 requests per worker; the test stops them sooner.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let result = match worker {
                    0 => http1.try_get(web_addr, "/", &[]).await.and_then(|r| {
                        match r.status.as_u16() {
                            200 => Ok(()),
                            s => Err(format!("HTTP/1.1 status {s}")),
                        }
                    }),
                    1 => {
                        let r =
                            sinew_integration::h2_request(web_addr, "http://web.mesh/", &[]).await;
                        match r.status.as_u16() {
                            200 => Ok(()),
                            s => Err(format!("HTTP/2 status {s}")),
                        }
                    }
                    _ => tcp_round_trip(web_tcp_addr).await,
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        failed.lock().unwrap().push(format!("worker {worker}: {e}"));
                        0
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // One client connection kept open from before the first renewal to the end.
    let persistent = {
        let (stop, failed) = (stop.clone(), failed.clone());
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(web_tcp_addr).await.unwrap();
            let mut served = 0usize;
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut buf = [0u8; 5];
                let round = async {
                    stream.write_all(b"ping\n").await?;
                    stream.read_exact(&mut buf).await
                };
                match tokio::time::timeout(Duration::from_secs(5), round).await {
                    Ok(Ok(_)) if &buf == b"ping\n" => served += 1,
                    other => {
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("kept connection: {other:?}"));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            served
        })
    };

    // 1. Renewal at half-life (16 s certificates: within 8 s), on both proxies.
    let (api_first, web_first) = (api.serial().await, web.serial().await);
    let api_renewed = api.serial_change(&api_first, Duration::from_secs(12)).await;
    let web_renewed = web.serial_change(&web_first, Duration::from_secs(12)).await;
    assert!(
        api_renewed.is_some() && web_renewed.is_some(),
        "no renewal within 12 s"
    );

    // 2. Rollover: trust the new root, let SDS carry it, then sign with it.
    let sds_before = api
        .metric("sinew_xds_updates_total{type=\"SDS\",result=\"accepted\"}")
        .await;
    std::fs::write(
        dir.file("trusted.staged"),
        std::fs::read(&new_root).unwrap(),
    )
    .unwrap();
    std::fs::rename(dir.file("trusted.staged"), &extra).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sds_after = api
        .metric("sinew_xds_updates_total{type=\"SDS\",result=\"accepted\"}")
        .await;
    assert!(
        sds_after > sds_before,
        "the new bundle did not reach the proxy over SDS ({sds_before} → {sds_after})"
    );
    write_replacing(&signing_key, &std::fs::read(&new_key).unwrap());
    write_replacing(&signing_cert, &std::fs::read(&new_root).unwrap());
    write_replacing(&extra, &std::fs::read(&old_root).unwrap());
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (api_mark, web_mark) = (api.serial().await, web.serial().await);
    assert!(api
        .serial_change(&api_mark, Duration::from_secs(12))
        .await
        .is_some());
    assert!(web
        .serial_change(&web_mark, Duration::from_secs(12))
        .await
        .is_some());

    // 3. Drop the old root; both proxies now hold new-root certificates.
    write_replacing(&extra, b"");
    tokio::time::sleep(Duration::from_secs(4)).await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let persistent = persistent.await.unwrap();
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    eprintln!(
        "mesh CA renewal and root rollover under load: {ok} requests (HTTP/1.1, HTTP/2, \
         TCP over new proxy-to-proxy mTLS connections) and {persistent} on one kept \
         connection succeeded, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed requests, the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(ok > 300, "too little load to mean anything: {ok}");
    assert!(
        persistent > 300,
        "the kept connection served only {persistent}"
    );
    // api counts its callers by their SPIFFE ID.
    let from_web = api
        .metric(&format!(
            "sinew_listener_downstream_peer_cx_total{{listener=\"inbound-tcp\",peer_spiffe_id=\"{WEB_ID}\"}}"
        ))
        .await;
    assert!(from_web > 100.0, "TCP connections from web: {from_web}");
    // ... and its HTTP responses by caller and status class.
    let answered_web = api
        .metric(&format!(
            "sinew_listener_downstream_peer_rq_total{{listener=\"inbound\",peer_spiffe_id=\"{WEB_ID}\",code_class=\"2xx\"}}"
        ))
        .await;
    assert!(
        answered_web > 100.0,
        "HTTP responses to web: {answered_web}"
    );

    // api's certificate now chains to the new root: a client that trusts only the new
    // root verifies it, one that trusts only the old root cannot.
    assert_eq!(served_chain_verifies(api_http, &new_root).await, Ok(()));
    assert!(served_chain_verifies(api_http, &old_root).await.is_err());
}

/// Whether the certificate `127.0.0.1:port` serves chains to the root in `root` (and
/// is an SVID of the trust domain). The client presents no certificate: the handshake
/// is judged from the client's side only.
async fn served_chain_verifies(port: u16, root: &Path) -> Result<(), String> {
    let bundle = sinew_tls::TrustBundle::from_file(root.to_str().unwrap()).unwrap();
    let verifier = sinew_tls::ServerVerifier::new(
        bundle,
        false,
        sinew_tls::PeerPolicy {
            trust_domain: Some(TRUST_DOMAIN.into()),
            subject_alt_names: Vec::new(),
        },
    );
    let config = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A proxy with `mesh.ca.sds_socket` serves its certificate, key and bundle over SDS on
/// a Unix socket (mode 0600) to a client built on Envoy's own types, and pushes the
/// renewed certificate when it has one.
#[tokio::test]
async fn an_agent_socket_serves_the_workload_certificate_and_its_renewal_over_sds() {
    let dir = TempDir::new("mesh-ca-agent");
    let (list, files) = tokens(&dir, &[API_ID]);
    let ca_dir = dir.file("ca");
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  dir: {}\n  tokens: {}\n  workload_lifetime: 12s\n",
        ca_dir.display(),
        list.display()
    );
    let (_control, control) = start_control(&dir, &block).await;
    let socket = dir.file("sds.sock");
    let port = free_port();
    let _proxy = MeshProxy::start(
        &dir,
        "agent",
        control,
        (
            &ca_dir.join("ca.crt"),
            &files[0],
            &format!(", sds_socket: '{}'", socket.display()),
        ),
        &format!(
            "listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    mtls: strict
    tcp: {{cluster: nowhere}}
clusters:
  - name: nowhere
    endpoints: [{{address: 127.0.0.1:9}}]
"
        ),
    )
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the socket hands out a private key");
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ca/python_sds_agent_client.py"
    );
    let output = shell(format!("python3 {script} {} 2>&1", socket.display())).await;
    let got: serde_json::Value =
        serde_json::from_str(output.trim()).unwrap_or_else(|_| panic!("python client: {output}"));
    assert_eq!(got["spiffe_id"], API_ID, "{got}");
    assert_eq!(got["renewed_spiffe_id"], API_ID, "{got}");
    assert_eq!(got["serial_changed"], true, "the renewal was pushed: {got}");
    assert_eq!(got["roots"], 1, "{got}");
}

/// One `openssl s_client` connection to `addr`, trusting `ca`, presenting `client`'s
/// certificate and key if given, that sends [`ECHO_PROBE`] and reads for half a second.
/// Returns openssl's verify line, the number of lines holding the probe (what came back
/// through the proxy), and the served certificate's serial and SAN.
///
/// The probe is searched anywhere in a line: openssl prints its session report and the
/// bytes it reads through different buffers, so an echo may land inside a report line.
async fn openssl_mtls(addr: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let cert = client.map_or(String::new(), |(c, k)| {
        format!("-cert {} -key {}", c.display(), k.display())
    });
    shell(format!(
        "dir=$(mktemp -d) && (echo {ECHO_PROBE}; sleep 0.5) | timeout 10 openssl s_client \
         -connect {addr} -CAfile {} {cert} -showcerts > $dir/out 2>&1; \
         grep -m1 'Verify return code' $dir/out; grep -c '{ECHO_PROBE}' $dir/out; \
         openssl x509 -in $dir/out -noout -serial -ext subjectAltName 2>&1; rm -r $dir",
        ca.display()
    ))
    .await
}

/// What [`openssl_mtls`] sends; no certificate, key or hex dump can hold it.
const ECHO_PROBE: &str = "sinew-echo-probe";

/// Whether the probe came back in an [`openssl_mtls`] report (its second line).
fn echoed(report: &str) -> bool {
    report
        .lines()
        .nth(1)
        .and_then(|count| count.trim().parse::<u32>().ok())
        .is_some_and(|count| count > 0)
}

/// Istio's shape: an Envoy bootstrap whose listener takes its certificate (`default`)
/// and the roots it checks clients against (`ROOTCA`, in a `combined_validation_context`
/// with a URI SAN matcher) from an SDS server of its own — `api_config_source` naming the
/// static cluster `sds-grpc`, a pipe to the node agent's Unix socket. The agent is a mesh
/// proxy with `sds_socket`. The bootstrap's proxy serves the agent's SVID, lets the named
/// client's bytes through and no one else's, and serves the renewed certificate to new
/// handshakes once the agent pushes it.
#[tokio::test]
async fn an_envoy_bootstrap_takes_its_certificate_from_an_agent_socket_as_sds_grpc() {
    let dir = TempDir::new("mesh-ca-sds-grpc");
    let (list, files) = tokens(&dir, &[API_ID, WEB_ID, OTHER_ID]);
    let ca_dir = dir.file("ca");
    let block = format!(
        "  trust_domain: {TRUST_DOMAIN}\n  dir: {}\n  tokens: {}\n  workload_lifetime: 12s\n",
        ca_dir.display(),
        list.display()
    );
    let (_control, control) = start_control(&dir, &block).await;
    let root = ca_dir.join("ca.crt");
    let socket = dir.file("agent.sock");
    let echo = sinew_integration::echo_server().await;
    // The agent's own listener names `default` and `ROOTCA` as an Istio-shaped one does:
    // the proxy answers both itself (the SDS server named here does not exist).
    let own_port = free_port();
    let agent = MeshProxy::start(
        &dir,
        "agent",
        control,
        (
            &root,
            &files[0],
            &format!(", sds_socket: '{}'", socket.display()),
        ),
        &format!(
            "listeners:
  - name: own
    address: 127.0.0.1:{own_port}
    tls:
      cert: {{sds: default}}
      client_ca: {{sds: ROOTCA, server: 'unix:{}'}}
      require_client_certificate: true
    tcp: {{cluster: echo}}
clusters:
  - name: echo
    endpoints: [{{address: '{echo}'}}]
",
            dir.file("no-such-agent.sock").display()
        ),
    )
    .await;
    // The client: an SVID for the web identity, from the same CA (Python's client).
    let client = python_client(control, &root, &files[1], &dir).await;
    assert_eq!(client["spiffe_id"], WEB_ID, "{client}");
    let (client_cert, client_key) = (dir.file("svid.pem"), dir.file("svid.key"));
    // A second client of the same mesh, whose identity the listener does not accept.
    let other_dir = TempDir::new("mesh-ca-sds-grpc-other");
    let other = python_client(control, &root, &files[2], &other_dir).await;
    assert_eq!(other["spiffe_id"], OTHER_ID, "{other}");
    let other_client = (other_dir.file("svid.pem"), other_dir.file("svid.key"));
    let port = free_port();
    let admin = free_port();
    // An SDS reference to the `sds-grpc` cluster, its lines after the first at `indent`.
    let sds = |name: &str, indent: usize| {
        [
            "sds_config:",
            "  resource_api_version: V3",
            "  api_config_source:",
            "    api_type: GRPC",
            "    transport_api_version: V3",
            "    grpc_services:",
            "    - envoy_grpc: {cluster_name: sds-grpc}",
        ]
        .iter()
        .fold(format!("name: {name}"), |text, line| {
            format!("{text}\n{:indent$}{line}", "")
        })
    };
    let bootstrap = dir.file("envoy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - {}
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names:
                - san_type: URI
                  matcher: {{exact: '{WEB_ID}'}}
              validation_context_sds_secret_config:
                {}
          require_client_certificate: true
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound
          cluster: echo
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}
  - name: sds-grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{pipe: {{path: '{}'}}}}}}
",
            sds("default", 14),
            sds("ROOTCA", 16),
            echo.port(),
            socket.display()
        ),
    )
    .unwrap();
    let check = Command::new(sinew_binary())
        .arg("validate")
        .arg(&bootstrap)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let log = std::fs::File::create(dir.file("envoy-shaped.log")).unwrap();
    let _proxy = ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&bootstrap)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr).await;

    // The agent's SVID, as the agent's own /certs has it.
    let first_serial = agent.serial().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while tokio::time::Instant::now() < deadline {
        seen = openssl_mtls(addr, &root, Some((&client_cert, &client_key))).await;
        // Both secrets in force: the certificate served, and the client's accepted.
        if seen.contains("Verify return code: 0") && echoed(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.contains("Verify return code: 0"), "{seen}");
    assert!(echoed(&seen), "the web client's bytes came back: {seen}");
    assert!(seen.contains(&format!("URI:{API_ID}")), "{seen}");
    // openssl prints the serial's value; /certs its DER bytes (a leading 00 for a high
    // first bit).
    let normalise = |s: &str| {
        s.trim()
            .replace(':', "")
            .to_ascii_lowercase()
            .trim_start_matches('0')
            .to_string()
    };
    let serial_of = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("serial="))
            .map(normalise)
            .unwrap_or_default()
    };
    assert_eq!(serial_of(&seen), normalise(&first_serial), "{seen}");
    // ROOTCA from the agent decides who gets in: no certificate, or one of the mesh
    // whose identity the SAN matcher does not name, and nothing comes back.
    let anonymous = openssl_mtls(addr, &root, None).await;
    assert!(
        !echoed(&anonymous),
        "a client without a certificate: {anonymous}"
    );
    let refused = openssl_mtls(addr, &root, Some((&other_client.0, &other_client.1))).await;
    assert!(
        !echoed(&refused),
        "a client the SAN matcher does not name: {refused}"
    );
    // The agent's own listener serves the same certificate and checks clients against
    // the mesh bundle.
    let own: SocketAddr = format!("127.0.0.1:{own_port}").parse().unwrap();
    let served = openssl_mtls(own, &root, Some((&client_cert, &client_key))).await;
    assert!(served.contains("Verify return code: 0"), "{served}");
    assert!(echoed(&served), "{served}");
    assert_eq!(serial_of(&served), normalise(&first_serial), "{served}");

    // The agent renews at half of the 12 s life and pushes the new certificate; the
    // next handshakes to the bootstrap's proxy serve it.
    let renewed = agent
        .serial_change(&first_serial, Duration::from_secs(20))
        .await
        .expect("the agent renews its certificate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        seen = openssl_mtls(addr, &root, Some((&client_cert, &client_key))).await;
        if serial_of(&seen) == normalise(&renewed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(serial_of(&seen), normalise(&renewed), "{seen}");
    assert!(seen.contains("Verify return code: 0"), "{seen}");
    assert!(echoed(&seen), "{seen}");
}

/// A bootstrap whose xDS cluster (`ads_config` → `xds_cluster`) has a TLS
/// `transport_socket`: the proxy reaches `sinew control` over TLS as that context says
/// — the roots in `trusted_ca`, the `sni`, and the control plane's SPIFFE ID in
/// `match_typed_subject_alt_names` — and serves the listener control sends. The same
/// bootstrap trusting another root never gets it.
#[tokio::test]
async fn an_envoy_bootstrap_reaches_its_control_plane_over_tls_as_its_xds_cluster_says() {
    let dir = TempDir::new("mesh-ca-xds-tls");
    let (list, _files) = tokens(&dir, &[API_ID]);
    let ca_dir = dir.file("ca");
    let app = Upstream::start("app").await;
    let (edge_port, other_port) = (free_port(), free_port());
    let services = format!(
        "kind: Service
name: app
endpoints: [{{address: '{}'}}]
---
kind: Listener
name: edge
address: 127.0.0.1:{edge_port}
nodes: [edge]
routes: [{{prefix: /, service: app}}]
---
kind: Listener
name: other
address: 127.0.0.1:{other_port}
nodes: [other]
routes: [{{prefix: /, service: app}}]
",
        app.addr
    );
    let (_control, control) = start_control_serving(&dir, &ca_dir, &list, &services).await;
    let xds_port = control.port();
    let (stranger, _) = openssl_root(&dir, "stranger").await;

    let bootstrap = |node: &str, roots: &Path| {
        let file = dir.file(&format!("{node}.yaml"));
        std::fs::write(
            &file,
            format!(
                "node: {{id: {node}, cluster: edge}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds_cluster}}}}]
  lds_config: {{ads: {{}}, resource_api_version: V3}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          validation_context:
            trusted_ca: {{filename: '{}'}}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{exact: 'spiffe://{TRUST_DOMAIN}/ns/sinew-system/sa/sinew-control'}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}
",
                roots.display()
            ),
        )
        .unwrap();
        ChildGuard(
            Command::new(sinew_binary())
                .args(["proxy", "-c"])
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.file(&format!("{node}.log"))).unwrap())
                .spawn()
                .expect("start sinew proxy"),
        )
    };
    let _edge = bootstrap("edge", &ca_dir.join("ca.crt"));
    let _other = bootstrap("other", &stranger);

    let edge: SocketAddr = format!("127.0.0.1:{edge_port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = String::from("never answered");
    while tokio::time::Instant::now() < deadline {
        match TestClient::http1().try_get(edge, "/", &[]).await {
            Ok(reply) if reply.status.as_u16() == 200 => {
                last = String::new();
                break;
            }
            Ok(reply) => last = format!("status {}", reply.status),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        last.is_empty(),
        "the listener control sends over TLS serves: {last}"
    );
    // The proxy that trusts another root has had as long, and has no listener.
    let other: SocketAddr = format!("127.0.0.1:{other_port}").parse().unwrap();
    assert!(
        TcpStream::connect(other).await.is_err(),
        "a control plane the roots do not vouch for steers nothing"
    );
    let log = std::fs::read_to_string(dir.file("other.log")).unwrap();
    assert!(
        log.contains("xDS connect failed") || log.contains("xDS stream ended"),
        "{log}"
    );
}

/// Mesh mTLS steered by `sinew control` alone, as Istio's: the services file says which
/// listeners are strict or permissive and which services are called over mTLS with
/// which identities; each proxy serves and presents the SVID it got from the CA (SDS
/// `default`) and checks peers against the mesh roots (`ROOTCA`). Web's proxy calls api's
/// strict port over mTLS and api's proxy counts the call under web's identity; a service
/// expecting another identity, and a plaintext call to the strict port, fail; the
/// permissive port serves the mesh client and a plaintext one.
#[tokio::test]
async fn control_sends_mesh_mtls_that_proxies_serve_with_their_own_svids() {
    let dir = TempDir::new("mesh-ca-control-mtls");
    let (list, files) = tokens(&dir, &[API_ID, WEB_ID]);
    let ca_dir = dir.file("ca");
    let app = Upstream::start("app").await;
    let (edge, strict, permissive) = (free_port(), free_port(), free_port());
    let services = format!(
        "kind: Service
name: app
endpoints: [{{address: '{app}'}}]
---
kind: Service
name: api
endpoints: [{{address: '127.0.0.1:{strict}'}}]
mtls: {{identities: ['{API_ID}']}}
---
kind: Service
name: api-as-other
endpoints: [{{address: '127.0.0.1:{strict}'}}]
mtls: {{identities: ['{OTHER_ID}']}}
---
kind: Service
name: api-in-plaintext
endpoints: [{{address: '127.0.0.1:{strict}'}}]
---
kind: Service
name: api-permissive
endpoints: [{{address: '127.0.0.1:{permissive}'}}]
mtls: {{identities: ['{API_ID}']}}
---
kind: Listener
name: edge
address: 127.0.0.1:{edge}
nodes: [web]
routes:
  - {{prefix: /other, service: api-as-other}}
  - {{prefix: /plaintext, service: api-in-plaintext}}
  - {{prefix: /permissive, service: api-permissive}}
  - {{prefix: /, service: api}}
---
kind: Listener
name: inbound
address: 127.0.0.1:{strict}
nodes: [api]
mtls: strict
routes: [{{prefix: /, service: app}}]
---
kind: Listener
name: inbound-permissive
address: 127.0.0.1:{permissive}
nodes: [api]
mtls: permissive
routes: [{{prefix: /, service: app}}]
",
        app = app.addr
    );
    let (_control, control) = start_control_serving(&dir, &ca_dir, &list, &services).await;
    let root = ca_dir.join("ca.crt");
    let api = MeshProxy::start(&dir, "api", control, (&root, &files[0], ""), "").await;
    let _web = MeshProxy::start(&dir, "web", control, (&root, &files[1], ""), "").await;

    let status = |port: u16, path: &'static str| async move {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        match TestClient::http1().try_get(addr, path, &[]).await {
            Ok(reply) => reply.status.as_u16(),
            Err(_) => 0,
        }
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while tokio::time::Instant::now() < until {
        last = status(edge, "/orders").await;
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 200, "web -> api over mesh mTLS");
    let counted = api
        .metric(&format!(
            "sinew_listener_downstream_peer_rq_total{{listener=\"inbound\",peer_spiffe_id=\"{WEB_ID}\",code_class=\"2xx\"}}"
        ))
        .await;
    assert!(
        counted >= 1.0,
        "api's proxy counts the call under web's identity"
    );
    assert_eq!(
        status(edge, "/other").await,
        503,
        "api is not the identity expected"
    );
    // The strict port answers a plaintext request with a TLS alert: a bad gateway.
    let plaintext = status(edge, "/plaintext").await;
    assert!(
        matches!(plaintext, 502 | 503),
        "the strict port refuses plaintext: {plaintext}"
    );
    assert_eq!(
        status(strict, "/").await,
        0,
        "a plaintext client of the strict port"
    );
    assert_eq!(
        status(edge, "/permissive").await,
        200,
        "mesh client, permissive port"
    );
    assert_eq!(
        status(permissive, "/").await,
        200,
        "plaintext client, permissive port"
    );
}
