//! `sinew proxy -c envoy.yaml` with HTTP/2 protocol options in Envoy's spelling, run by
//! the real binary: the connection manager's `http2_protocol_options` are what the
//! listener announces to a client (read with `nghttp -v`), and a cluster's
//! `explicit_http_config.http2_protocol_options` are what Sinew announces to the
//! upstream (read off the wire by a bare TCP listener playing the upstream).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use sinew_integration::{eventually, free_port, scratch_dir};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn bootstrap(listener: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {lport} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          codec_type: AUTO
          http2_protocol_options:
            max_concurrent_streams: 50
            initial_stream_window_size: 131072
            initial_connection_window_size: 1048576
          http_protocol_options: {{ accept_http_10: true }}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: app, timeout: 2s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{ idle_timeout: 30s }}
        explicit_http_config:
          http2_protocol_options:
            max_concurrent_streams: 7
            initial_stream_window_size: 98304
            initial_connection_window_size: 262144
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {uport} }} }} }}
"#,
        lport = listener.port(),
        uport = upstream.port(),
    )
}

/// HTTP/2 frames off the wire after the client preface: (type, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let kind = bytes[3];
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        if bytes.len() < 9 + len {
            break;
        }
        out.push((kind, stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// The SETTINGS entries (id, value) of the first SETTINGS frame, and the connection's
/// first WINDOW_UPDATE increment, in what a client sent.
fn settings_and_window(bytes: &[u8]) -> (Vec<(u16, u32)>, Option<u32>) {
    let mut settings = Vec::new();
    let mut window = None;
    for (kind, stream, payload) in frames(bytes) {
        if kind == 0x4 && settings.is_empty() {
            settings = payload
                .chunks(6)
                .map(|e| {
                    (
                        u16::from_be_bytes([e[0], e[1]]),
                        u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                    )
                })
                .collect();
        }
        if kind == 0x8 && stream == 0 && window.is_none() {
            window = Some(u32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ]));
        }
    }
    (settings, window)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_http2_protocol_options_set_what_the_listener_and_the_cluster_announce() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = scratch_dir("envoy-protocol-options").join("envoy.yaml");
    std::fs::write(&file, bootstrap(listener, upstream_addr)).unwrap();
    let _proxy = sinew_integration::start_proxy_file(&file);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            listener
        )
        .is_ok())
        .await,
        "nothing listens on {listener}"
    );

    // The listener's SETTINGS, as nghttp prints them.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("nghttp")
            .args(["-nv", "-t", "3"])
            .arg(format!("http://{listener}/"))
            .stdin(Stdio::null())
            .output()
            .expect("nghttp")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let received: String = text
        .split("recv SETTINGS frame")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take(6)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        received.contains("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):50"),
        "{text}"
    );
    assert!(
        received.contains("SETTINGS_INITIAL_WINDOW_SIZE(0x04):131072"),
        "{text}"
    );
    // The connection window is raised from the protocol's 65,535 by a WINDOW_UPDATE.
    assert!(
        text.contains("window_size_increment=983041"),
        "connection window 1048576 = 65535 + 983041:\n{text}"
    );

    // What Sinew announces to the upstream: nghttp's request went there (and times out,
    // as this upstream never answers).
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), upstream.accept())
        .await
        .expect("the proxy connects upstream")
        .unwrap();
    let mut bytes = Vec::new();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {} bytes", bytes.len());
            bytes.extend_from_slice(&buf[..n]);
            if bytes.len() > preface.len() {
                let (settings, window) = settings_and_window(&bytes[preface.len()..]);
                if !settings.is_empty() && window.is_some() {
                    return;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no SETTINGS and WINDOW_UPDATE in {bytes:?}");
    assert!(bytes.starts_with(preface), "h2c to the upstream: {bytes:?}");
    let (settings, window) = settings_and_window(&bytes[preface.len()..]);
    assert!(
        settings.contains(&(0x4, 98304)),
        "SETTINGS_INITIAL_WINDOW_SIZE 98304 in {settings:?}"
    );
    assert_eq!(window, Some(262144 - 65535), "{settings:?}");
}
