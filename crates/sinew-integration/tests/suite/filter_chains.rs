//! Filter chains chosen per connection on one port: by SNI (exact and wildcard), by the
//! ALPN protocols a ClientHello offers, TLS passed through undecrypted to a TLS
//! upstream, and plaintext — in Sinew's YAML and in an Envoy bootstrap's spelling,
//! checked with curl and openssl as clients.

use sinew_integration::tls_kit::{TestCa, TlsUpstream};
use sinew_integration::{free_port, scratch_dir, shell, start_proxy_file, TestProxy, Upstream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `curl` through `listener` for `host`, with extra `args`; prints the body, or the
/// exit status when curl fails.
async fn curl(listener: SocketAddr, host: &str, scheme: &str, args: &str) -> String {
    let port = listener.port();
    shell(format!(
        "curl -s -k --max-time 5 {args} --resolve {host}:{port}:127.0.0.1 {scheme}://{host}:{port}/ || echo \"curl exit $?\""
    ))
    .await
    .trim()
    .to_string()
}

/// The subject of the certificate `openssl s_client` is shown for `sni`.
async fn served_subject(listener: SocketAddr, sni: &str) -> String {
    let out = shell(format!(
        "(sleep 0.3) | timeout 10 openssl s_client -connect {listener} -servername {sni} 2>&1"
    ))
    .await;
    out.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.trim().replace(" = ", "="))
        .unwrap_or_else(|| "none".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_chosen_by_sni_and_alpn_terminate_pass_through_or_serve_plaintext_on_one_port() {
    let ca = TestCa::new("chains");
    let edge_cert = ca.issue("edge", &["app.example"]);
    let backend_cert = ca.issue("backend", &["backend.internal"]);
    let backend = TlsUpstream::start("backend", &backend_cert, &["h2", "http/1.1"]).await;
    let (h2_app, h1_app, plain) = (
        Upstream::start("h2-app").await,
        Upstream::start("h1-app").await,
        Upstream::start("plain").await,
    );
    let routes = |cluster: &str| {
        format!(
            "virtual_hosts: [{{name: all, domains: ['*'], routes: [{{match: {{prefix: /}}, cluster: {cluster}}}]}}]"
        )
    };
    let tls = format!(
        "{{cert: '{}', key: '{}'}}",
        edge_cert.cert_path(),
        edge_cert.key_path()
    );
    let yaml = format!(
        "
listeners:
  - name: edge
    address: 127.0.0.1:0
    inspect_timeout: 1s
    http: {{{plain_routes}}}
    chains:
      - match: {{server_names: [app.example], alpn: [h2]}}
        tls: {tls}
        http: {{{h2_routes}}}
      - match: {{server_names: [app.example]}}
        tls: {tls}
        http: {{{h1_routes}}}
      - match: {{server_names: ['*.pass.example']}}
        tcp: {{cluster: backend}}
clusters:
  - {{name: h2-app, endpoints: [{{address: {}}}]}}
  - {{name: h1-app, endpoints: [{{address: {}}}]}}
  - {{name: plain, endpoints: [{{address: {}}}]}}
  - {{name: backend, endpoints: [{{address: {}}}]}}
",
        h2_app.addr,
        h1_app.addr,
        plain.addr,
        backend.addr,
        plain_routes = routes("plain"),
        h2_routes = routes("h2-app"),
        h1_routes = routes("h1-app"),
    );
    let proxy = TestProxy::start(&yaml).await;
    let edge = proxy.addr("edge").await;

    // ALPN: a client offering h2 takes the h2 chain; one offering only http/1.1 the other.
    assert_eq!(
        curl(edge, "app.example", "https", "--http2").await,
        "h2-app"
    );
    assert_eq!(
        curl(edge, "app.example", "https", "--http1.1").await,
        "h1-app"
    );
    // Passthrough: the backend's own certificate and ALPN reach the client untouched.
    assert_eq!(
        curl(edge, "x.pass.example", "https", "--http2").await,
        "backend HTTP/2.0 alpn=h2"
    );
    assert_eq!(
        served_subject(edge, "deep.x.pass.example").await,
        "CN=backend.internal"
    );
    assert_eq!(served_subject(edge, "app.example").await, "CN=app.example");
    // Plaintext on the same port takes the listener's own body, the default chain.
    assert_eq!(curl(edge, "app.example", "http", "").await, "plain");
    // A client that sends half a ClientHello and stops is closed at the inspect timeout.
    let started = std::time::Instant::now();
    let mut half = tokio::net::TcpStream::connect(edge).await.unwrap();
    half.write_all(&[0x16, 3, 1, 0, 200, 1]).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), half.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A reload that drops the plaintext default leaves plaintext clients no chain: closed.
    let without_default = yaml.replacen(&format!("    http: {{{}}}\n", routes("plain")), "", 1);
    assert_ne!(without_default, yaml);
    proxy.reload(&without_default).await.unwrap();
    let out = curl(edge, "app.example", "http", "").await;
    // Closed unanswered: an empty reply (52), or a reset (56) as the request was unread.
    assert!(out == "curl exit 52" || out == "curl exit 56", "{out}");
    assert_eq!(
        curl(edge, "app.example", "https", "--http2").await,
        "h2-app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_bootstraps_sni_alpn_and_passthrough_chains_each_serve_their_connections() {
    let ca = TestCa::new("envoy-chains");
    let one = ca.issue("one", &["one.example"]);
    let backend_cert = ca.issue("backend", &["backend.internal"]);
    let backend = TlsUpstream::start("backend", &backend_cert, &["h2", "http/1.1"]).await;
    let app_one = Upstream::start("one").await;
    let app_h1 = Upstream::start("h1").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let hcm = |cluster: &str| {
        format!(
            r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {cluster}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
        )
    };
    let tcp = |cluster: &str| {
        format!(
            r#"
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {cluster}
          cluster: {cluster}"#
        )
    };
    let cluster =
        |name: &str, addr: SocketAddr| sinew_integration::envoy_static_cluster(name, addr);
    let text = format!(
        r#"
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ server_names: [one.example] }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: '{cert}' }}
              private_key: {{ filename: '{key}' }}
      filters:{one}
    - filter_chain_match: {{ server_names: [pass.example] }}
      filters:{pass}
    - filter_chain_match: {{ transport_protocol: tls, application_protocols: [h2] }}
      filters:{alpn}
    - filter_chain_match: {{}}
      filters:{h1}
  clusters:
{c1}{c2}{c3}"#,
        port = listener.port(),
        cert = one.cert_path(),
        key = one.key_path(),
        one = hcm("one"),
        pass = tcp("backend"),
        alpn = tcp("backend"),
        h1 = hcm("h1"),
        c1 = cluster("one", app_one.addr),
        c2 = cluster("backend", backend.addr),
        c3 = cluster("h1", app_h1.addr),
    );
    let dir = scratch_dir("envoy-chains");
    let file = dir.join("envoy.yaml");
    std::fs::write(&file, &text).unwrap();
    let check = std::process::Command::new(sinew_integration::sinew_binary())
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let _proxy = start_proxy_file(&file);
    let up = sinew_integration::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(listener).is_ok()
    })
    .await;
    assert!(up, "the listener never opened");

    assert_eq!(
        curl(listener, "one.example", "https", "--http2").await,
        "one"
    );
    assert_eq!(
        curl(listener, "pass.example", "https", "--http1.1").await,
        "backend HTTP/1.1 alpn=http/1.1"
    );
    // No SNI chain for this name, and h2 offered: the ALPN chain passes it through.
    assert_eq!(
        curl(listener, "other.example", "https", "--http2").await,
        "backend HTTP/2.0 alpn=h2"
    );
    // The catch-all takes plaintext (and would take TLS offering only http/1.1).
    assert_eq!(curl(listener, "other.example", "http", "").await, "h1");
}
