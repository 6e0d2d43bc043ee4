//! Runs every config in examples/, so none of them rots: each starts, binds its
//! listeners, and each cleartext HTTP or TCP listener proxies a request to the real
//! upstreams the examples name (127.0.0.1:19001-19003). The upstream-TLS example meets a
//! TLS upstream serving the example certificate.

use std::path::PathBuf;
use std::time::Duration;

use sinew_integration::tls_kit::{CertFiles, TlsUpstream};
use sinew_integration::{TestClient, TestProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_starts_and_proxies() {
    let _upstreams = [
        Upstream::start_on("u1", "127.0.0.1:19001".parse().unwrap()).await,
        Upstream::start_on("u2", "127.0.0.1:19002".parse().unwrap()).await,
        Upstream::start_on("u3", "127.0.0.1:19003".parse().unwrap()).await,
    ];
    let certs = repo().join("examples/certs/");
    let example_cert = CertFiles::from_pem(&certs.join("server.crt"), &certs.join("server.key"));
    let tls_upstream = TlsUpstream::start("secure", &example_cert, &["http/1.1"]).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the examples, found {}",
        files.len()
    );
    let client = TestClient::http1();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Example paths are relative to the repository root; tests run elsewhere.
        let access_log =
            std::env::temp_dir().join(format!("sinew-example-access-{}.log", std::process::id()));
        let yaml = std::fs::read_to_string(&file)
            .unwrap()
            .replace("examples/certs/", &certs.to_string_lossy())
            .replace(
                "/tmp/sinew-access-errors.log",
                &access_log.to_string_lossy(),
            );
        let config = sinew_config::load_str(&name, &yaml).unwrap_or_else(|d| panic!("{d}"));
        // Its clusters speak TLS: point them at the TLS upstream instead.
        let yaml = if config.config.clusters.iter().any(|c| c.tls.is_some()) {
            yaml.replace("127.0.0.1:19001", &tls_upstream.addr.to_string())
        } else {
            yaml
        };
        let proxy = TestProxy::start(&yaml).await;
        for listener in &config.config.listeners {
            let addr = proxy.addr(&listener.name).await;
            if listener.tls.is_some() {
                TcpStream::connect(addr)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            } else if listener.tcp.is_some() {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut out = Vec::new();
                tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                    .await
                    .unwrap_or_else(|_| panic!("{name}: TCP proxy timed out"))
                    .unwrap();
                let out = String::from_utf8_lossy(&out);
                assert!(out.starts_with("HTTP/1.1 200"), "{name}: {out}");
            } else {
                let reply = client.get(addr, "/", &[]).await;
                assert!(
                    reply.status.as_u16() < 500,
                    "{name}: listener {} answered {}: {}",
                    listener.name,
                    reply.status,
                    reply.text()
                );
            }
        }
        if let Some(admin) = &config.config.admin {
            // The binary starts the admin server; here the test does, where it says.
            let address = admin.socket_address().expect("validated");
            let server = sinew_proxy::admin::AdminServer::start(proxy.proxy.clone(), address, None)
                .await
                .unwrap_or_else(|e| panic!("{name}: admin on {address}: {e}"));
            let ready = client.get(server.address, "/ready", &[]).await;
            assert_eq!(ready.status, 200, "{name}: /ready");
            let metrics = client.get(server.address, "/metrics", &[]).await.text();
            assert!(
                metrics.contains(
                    "sinew_cluster_upstream_rq_total{cluster=\"app\",code_class=\"2xx\"} 1"
                ),
                "{name}: the request above is counted:\n{metrics}"
            );
        }
        if name == "rate-limits.yaml" {
            // The /api route's bucket holds 3 per key: a burst of 8 meets a 429.
            let addr = proxy.addr("limited").await;
            let mut statuses = Vec::new();
            for _ in 0..8 {
                statuses.push(client.get(addr, "/api", &[("x-api-key", "k")]).await.status);
            }
            assert!(
                statuses.contains(&http::StatusCode::TOO_MANY_REQUESTS),
                "{name}: {statuses:?}"
            );
        }
        if name == "access-log.yaml" {
            // A 404 passes the file log's filter and arrives as a JSON line.
            let addr = proxy.addr("web").await;
            let reply = client.get(addr, "/gone", &[("x-test-status", "404")]).await;
            assert_eq!(reply.status, 404);
            let logged = sinew_integration::eventually(Duration::from_secs(5), || {
                std::fs::read_to_string(&access_log)
                    .is_ok_and(|t| t.contains(r#""path":"/gone""#) && t.contains(r#""status":404"#))
            })
            .await;
            let _ = std::fs::remove_file(&access_log);
            assert!(
                logged,
                "{name}: no JSON line for the 404 in {}",
                access_log.display()
            );
        }
        if name == "tracing.yaml" {
            // The caller's trace goes on to the upstream, under the proxy's own span.
            let addr = proxy.addr("web").await;
            let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let echo = client
                .get(addr, "/", &[("traceparent", caller), ("x-test-echo", "1")])
                .await
                .text();
            let seen = echo
                .lines()
                .find_map(|l| l.strip_prefix("traceparent: "))
                .unwrap_or_else(|| panic!("{name}: no traceparent upstream:\n{echo}"));
            assert!(
                seen.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && seen != caller,
                "{name}: {seen}"
            );
        }
        proxy.proxy.stop_listening().await;
    }
    assert!(
        tls_upstream.handshakes() > 0,
        "the upstream-TLS example never reached the TLS upstream"
    );
}
