//! Secrets named by listeners (`sds_config`), in the real `sinew proxy` binary: over
//! ADS from an independent control plane (Python's grpcio with envoy-data-plane types),
//! and from a file holding a `DiscoveryResponse`, moved into place. Certificates are
//! made by `openssl req`; which one a new handshake sees is read by `openssl s_client`,
//! and a connection opened before a swap keeps working after it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sinew_integration::python_xds::PythonControlPlane;
use sinew_integration::tls_kit::TempDir;
use sinew_integration::{admin_kit, free_port, shell, sinew_binary, ChildGuard, Upstream};

/// An openssl-made CA and leaf certificates for `localhost`, each with its own serial.
struct OpensslCerts {
    dir: TempDir,
}

impl OpensslCerts {
    fn new(tag: &str) -> OpensslCerts {
        let dir = TempDir::new(tag);
        let run = |cmd: String| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(&dir.path)
                .output()
                .expect("sh runs");
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -subj '/CN=SDS test CA' -days 2 -keyout ca.key -out ca.pem \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
                .into(),
        );
        std::fs::write(
            dir.file("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let certs = OpensslCerts { dir };
        for (name, serial) in [("first", "0x5d51"), ("second", "0x5d52")] {
            let cmd = format!(
                "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                 -subj '/CN={name}' -keyout {name}.key -out {name}.csr && \
                 openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} \
                 -days 2 -extfile leaf.ext -out {name}.pem"
            );
            let out = Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .current_dir(&certs.dir.path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        certs
    }

    fn pem(&self, name: &str) -> (String, String) {
        let read = |f: String| std::fs::read_to_string(self.dir.file(&f)).unwrap();
        (read(format!("{name}.pem")), read(format!("{name}.key")))
    }

    fn client(&self) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(self.dir.file("ca.pem")).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// The subject and serial of the certificate a new handshake to `addr` sees (as
/// `openssl s_client` prints them), or what went wrong.
async fn served_certificate(addr: SocketAddr) -> String {
    shell(format!(
        "(sleep 0.3) | timeout 10 openssl s_client -connect {addr} -servername localhost 2>/dev/null \
         | openssl x509 -noout -subject -serial 2>&1"
    ))
    .await
}

async fn wait_for_certificate(addr: SocketAddr, cn: &str, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = served_certificate(addr).await;
        if last.contains(&format!("CN = {cn}")) && last.contains(&format!("serial={serial}")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} did not serve CN={cn} serial={serial} within 15 s; last: {last}");
}

/// An HTTP/1.1 connection over TLS kept open across requests.
struct KeptConnection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    leaf: Vec<u8>,
}

impl KeptConnection {
    async fn open(addr: SocketAddr, config: rustls::ClientConfig) -> KeptConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptConnection { send, leaf }
    }

    async fn get(&mut self) -> (u16, String) {
        let req = http::Request::builder()
            .uri("/")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The connection task may not have seen the last response's end yet: wait until
        // it can take the next request (an error here means the proxy closed it).
        self.send
            .ready()
            .await
            .expect("the kept connection stays open");
        let resp = self
            .send
            .send_request(req)
            .await
            .expect("request on the kept connection");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn start_proxy(args: &[&str], config: &Path) -> ChildGuard {
    let child = Command::new(sinew_binary())
        .arg("proxy")
        .args(args)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .env("RUST_LOG", "info")
        .spawn()
        .expect("start sinew");
    ChildGuard(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_certificate_over_ads_warms_then_rotates_in_place_and_a_bad_one_is_nacked() {
    let certs = OpensslCerts::new("sds-ads");
    let up = Upstream::start("a").await;
    let mut control_plane = PythonControlPlane::start(0);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The listener names its certificate over ADS; the secret is not served yet.
    let listener = |version: &str| {
        json!({"version": version, "listener_port": port, "endpoints": [up.addr.to_string()],
               "tls_secret": "server"})
    };
    control_plane.push_snapshot(listener("1"));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = TempDir::new("sds-ads-cfg");
    let static_config = dir.file("admin.yaml");
    std::fs::write(&static_config, format!("admin: {{address: '{admin}'}}\n")).unwrap();
    let url = control_plane.url();
    let _proxy = start_proxy(
        &[
            "--xds",
            &url,
            "--xds-variant",
            "sotw",
            "--xds-streams",
            "ads",
        ],
        &static_config,
    );

    // The proxy asks for the secret by name, and holds the listener back meanwhile.
    control_plane
        .wait_for("asking for secret \"server\"", |r| {
            r["type"] == "SDS" && r["names"] == json!(["server"])
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a listener whose secret has not arrived is not served (warming)"
    );

    // The secret arrives: the listener serves it.
    let (cert, key) = certs.pem("first");
    let mut with = listener("2");
    with["secrets"] = json!({"server": {"cert": cert, "key": key}});
    control_plane.push_snapshot(with);
    wait_for_certificate(addr, "first", "5D51").await;
    let mut kept = KeptConnection::open(addr, certs.client()).await;
    assert_eq!(kept.get().await, (200, "a\n".to_string()));

    // A new version: new handshakes see it, the established connection keeps working.
    let (cert, key) = certs.pem("second");
    let mut with = listener("3");
    with["secrets"] = json!({"server": {"cert": cert, "key": key}});
    control_plane.push_snapshot(with);
    wait_for_certificate(addr, "second", "5D52").await;
    for _ in 0..5 {
        assert_eq!(
            kept.get().await,
            (200, "a\n".to_string()),
            "no connection dropped"
        );
    }
    let first_der = kept.leaf.clone();
    let fresh = KeptConnection::open(addr, certs.client()).await;
    assert_ne!(
        fresh.leaf, first_der,
        "a new handshake takes the new certificate"
    );

    // A bad secret is NACKed naming the field; the last good one stays.
    let mut bad = listener("4");
    bad["secrets"] = json!({"server": {"cert": "not a certificate", "key": key}});
    control_plane.push_snapshot(bad);
    let nack = control_plane
        .wait_for("NACKing SDS version 4", |r| {
            r["type"] == "SDS" && !r["error"].is_null()
        })
        .await;
    let error = nack["error"].as_str().unwrap();
    assert!(
        error.contains("secret \"server\": tls_certificate.certificate_chain"),
        "{error}"
    );
    wait_for_certificate(addr, "second", "5D52").await;
    assert_eq!(kept.get().await, (200, "a\n".to_string()));

    let metrics = admin_kit::metrics(admin).await;
    let accepted = admin_kit::value(
        &metrics,
        "sinew_sds_updates_total",
        &[("secret", "server"), ("result", "accepted")],
    );
    let rejected = admin_kit::value(
        &metrics,
        "sinew_sds_updates_total",
        &[("secret", "server"), ("result", "rejected")],
    );
    assert_eq!((accepted, rejected), (2.0, 1.0), "{metrics}");
}

/// A DiscoveryResponse holding one certificate secret, as JSON.
fn secrets_file(name: &str, cert: &str, key: &str) -> String {
    json!({"version_info": "1", "resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"inline_string": cert},
            "private_key": {"inline_string": key}
        }
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_bootstrap_naming_a_secrets_file_serves_it_and_takes_a_file_moved_in() {
    let certs = OpensslCerts::new("sds-path");
    let up = Upstream::start("a").await;
    let dir = TempDir::new("sds-path-cfg");
    let watched = dir.file("secrets");
    std::fs::create_dir_all(&watched).unwrap();
    let secrets = watched.join("sds.json");
    let (cert, key) = certs.pem("first");
    std::fs::write(&secrets, secrets_file("server", &cert, &key)).unwrap();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let bootstrap = dir.file("envoy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            r#"
static_resources:
  listeners:
    - name: web
      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_certificate_sds_secret_configs:
                  - name: server
                    sds_config:
                      path_config_source:
                        path: {secrets}
                        watched_directory: {{path: {watched}}}
          filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: web
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes: [{{match: {{prefix: /}}, route: {{cluster: svc}}}}]
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: svc
      connect_timeout: 1s
      load_assignment:
        cluster_name: svc
        endpoints:
          - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up_port}}}}}}}
"#,
            secrets = secrets.display(),
            watched = watched.display(),
            up_port = up.addr.port(),
        ),
    )
    .unwrap();
    let _proxy = start_proxy(&[], &bootstrap);
    wait_for_certificate(addr, "first", "5D51").await;
    let mut kept = KeptConnection::open(addr, certs.client()).await;
    assert_eq!(kept.get().await, (200, "a\n".to_string()));

    // A new file is written beside and moved in (the atomic swap Envoy's docs describe).
    let (cert, key) = certs.pem("second");
    let staged = dir.file("staged.json");
    std::fs::write(&staged, secrets_file("server", &cert, &key)).unwrap();
    std::fs::rename(&staged, &secrets).unwrap();
    wait_for_certificate(addr, "second", "5D52").await;
    assert_eq!(
        kept.get().await,
        (200, "a\n".to_string()),
        "no connection dropped"
    );

    // A bad file moved in: the last good secret stays.
    std::fs::write(&staged, secrets_file("server", "garbage", &key)).unwrap();
    std::fs::rename(&staged, &secrets).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    wait_for_certificate(addr, "second", "5D52").await;
}
