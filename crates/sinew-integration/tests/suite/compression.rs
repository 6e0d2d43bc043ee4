//! Response compression and request decompression, through the real binary: a Sinew YAML
//! config and an Envoy bootstrap (compressor and decompressor filters, Envoy's field
//! spelling), checked with curl (`--compressed` decodes gzip, br and zstd; raw requests
//! show the headers) against the test upstream, which echoes what it received.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::{eventually, free_port, scratch_dir, sinew_binary, ChildGuard, Upstream};

fn scratch(name: &str) -> PathBuf {
    scratch_dir("compression").join(name)
}

fn start(config: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .spawn()
            .expect("start sinew proxy"),
    )
}

async fn wait_for_port(addr: SocketAddr) {
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok())
        .await,
        "nothing listens on {addr}"
    );
}

/// A response as curl got it: status, lower-case headers, body (decoded when
/// `--compressed` was among the arguments).
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs curl against `url` with `args`; the body, if any, from `body` (binary-safe).
async fn curl(url: String, args: &[&str], body: Option<Vec<u8>>) -> Got {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = scratch_dir("compression-curl");
        let id = format!("{}-{}", std::process::id(), free_port());
        let head = dir.join(format!("head-{id}"));
        let out = dir.join(format!("body-{id}"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&out)
            .args(&args);
        if let Some(body) = &body {
            let input = dir.join(format!("in-{id}"));
            std::fs::File::create(&input)
                .and_then(|mut f| f.write_all(body))
                .unwrap();
            cmd.arg("--data-binary")
                .arg(format!("@{}", input.display()));
        }
        let status = cmd.arg(&url).status().expect("curl runs");
        assert!(status.success(), "curl {args:?} {url}: {status}");
        let head = std::fs::read_to_string(&head).unwrap();
        // The last head (a 100 Continue may come first).
        let last = head
            .split("\r\n\r\n")
            .filter(|h| !h.trim().is_empty())
            .last()
            .unwrap_or("");
        let mut lines = last.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = std::fs::read(&out).unwrap_or_default();
        Got {
            status,
            headers,
            body,
        }
    })
    .await
    .unwrap()
}

/// A JSON document of about `n` bytes that compresses like real JSON.
fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"user {}\",\"active\":{}}},",
            i * 7919 % 1000,
            i % 3 == 0
        ));
        i += 1;
    }
    s.push_str("{}]");
    s.into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Echo the request body back as JSON (the test upstream's directives).
const ECHO_JSON: &[&str] = &[
    "-H",
    "x-test-echo-body: 1",
    "-H",
    "x-test-response-header: content-type: application/json",
];

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

/// The checks both configs must pass: each algorithm negotiated and round-tripped, and
/// the responses that must not be compressed left alone.
async fn check_compression(listener: SocketAddr, algorithms: &[&str]) {
    let url = format!("http://{listener}/");
    let doc = json(100_000);
    for algorithm in algorithms {
        let accept = format!("Accept-Encoding: {algorithm}");
        // Raw: the headers say what was done.
        let raw = curl(
            url.clone(),
            &with(ECHO_JSON, &["-H", &accept]),
            Some(doc.clone()),
        )
        .await;
        assert_eq!(raw.status, 200);
        assert_eq!(raw.header("content-encoding"), Some(*algorithm), "{raw:?}");
        assert_eq!(raw.header("vary"), Some("Accept-Encoding"));
        assert_eq!(raw.header("content-length"), None, "streamed");
        assert!(
            raw.body.len() < doc.len() / 3,
            "{algorithm}: {}",
            raw.body.len()
        );
        // curl decodes it to the original.
        let decoded = curl(
            url.clone(),
            &with(ECHO_JSON, &["--compressed", "-H", &accept]),
            Some(doc.clone()),
        )
        .await;
        assert!(decoded.body == doc, "{algorithm}: the body round-trips");
        // HTTP/2 (h2c on the same port).
        let h2 = curl(
            url.clone(),
            &with(
                ECHO_JSON,
                &["--http2-prior-knowledge", "--compressed", "-H", &accept],
            ),
            Some(doc.clone()),
        )
        .await;
        assert_eq!(h2.header("content-encoding"), Some(*algorithm));
        assert!(h2.body == doc, "{algorithm} over HTTP/2");
    }
    // q-values: the client's preference wins over the listed order.
    let prefer = format!("Accept-Encoding: gzip;q=0.2, {};q=0.9", algorithms[1]);
    let got = curl(
        url.clone(),
        &with(ECHO_JSON, &["-H", &prefer]),
        Some(doc.clone()),
    )
    .await;
    assert_eq!(got.header("content-encoding"), Some(algorithms[1]));

    // No Accept-Encoding: sent as it is, but it varies.
    let plain = curl(url.clone(), ECHO_JSON, Some(doc.clone())).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert!(plain.body == doc);

    let gz = ["-H", "Accept-Encoding: gzip"];
    // Below min_content_length (30): not compressed, its length kept.
    let small = curl(
        url.clone(),
        &with(&gz, &["-H", "x-test-body-bytes: 10"]),
        None,
    )
    .await;
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("content-length"), Some("10"));
    assert_eq!(small.body, b"xxxxxxxxxx");
    // Big enough, and no Content-Type: compressed (as in Envoy).
    let big = curl(
        url.clone(),
        &with(&gz, &["-H", "x-test-body-bytes: 5000"]),
        None,
    )
    .await;
    assert_eq!(big.header("content-encoding"), Some("gzip"));
    // HEAD: never.
    let head = curl(
        url.clone(),
        &with(&gz, &["-I", "-H", "x-test-body-bytes: 5000"]),
        None,
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    // 304: never.
    let not_modified = curl(url.clone(), &with(&gz, &["-H", "x-test-status: 304"]), None).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("content-encoding"), None);
    // An image: not a listed type.
    let image = curl(
        url.clone(),
        &with(
            &gz,
            &[
                "-H",
                "x-test-body-bytes: 5000",
                "-H",
                "x-test-response-header: content-type: image/png",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(image.header("content-encoding"), None);
    // no-transform: never.
    let kept = curl(
        url.clone(),
        &with(
            &gz,
            &[
                "-H",
                "x-test-body-bytes: 5000",
                "-H",
                "x-test-response-header: cache-control: no-transform",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(kept.header("content-encoding"), None);
    // A strong ETag is removed from a compressed response (Envoy's default).
    let tagged = curl(
        url.clone(),
        &with(
            &gz,
            &[
                "-H",
                "x-test-body-bytes: 5000",
                "-H",
                "x-test-response-header: etag: \"v1\"",
            ],
        ),
        None,
    )
    .await;
    assert_eq!(tagged.header("content-encoding"), Some("gzip"));
    assert_eq!(tagged.header("etag"), None);
}

/// The request-direction checks: a gzip body reaches the upstream decoded; a bomb gets
/// 413 and garbage 400.
async fn check_request_decompression(listener: SocketAddr) {
    let url = format!("http://{listener}/");
    let doc = json(50_000);
    let echoed = curl(
        url.clone(),
        &with(ECHO_JSON, &["-H", "Content-Encoding: gzip"]),
        Some(gzip(&doc)),
    )
    .await;
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == doc, "the upstream got the decoded body");
    // What the upstream saw: no Content-Encoding, no stale Content-Length.
    let seen = curl(
        url.clone(),
        &["-H", "Content-Encoding: gzip", "-H", "x-test-echo: 1"],
        Some(gzip(&doc)),
    )
    .await;
    let seen = String::from_utf8_lossy(&seen.body).to_ascii_lowercase();
    assert!(!seen.contains("content-encoding"), "{seen}");
    assert!(
        !seen.contains(&format!("content-length: {}", gzip(&doc).len())),
        "{seen}"
    );

    // 20 MB of zeros is about 20 KB of gzip: far past 100 times.
    let bomb = gzip(&vec![0u8; 20 << 20]);
    let refused = curl(
        url.clone(),
        &with(ECHO_JSON, &["-H", "Content-Encoding: gzip"]),
        Some(bomb),
    )
    .await;
    assert_eq!(refused.status, 413, "{refused:?}");
    let garbage = curl(
        url.clone(),
        &with(ECHO_JSON, &["-H", "Content-Encoding: gzip"]),
        Some(b"this is not gzip at all".to_vec()),
    )
    .await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_from_sinew_yaml_negotiates_streams_and_skips_what_it_must() {
    let upstream = Upstream::start("up").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "
listeners:
  - name: web
    address: {listener}
    http:
      compression:
        algorithms: [{{algorithm: gzip}}, {{algorithm: br, level: 4}}, {{algorithm: zstd}}]
      decompression:
        algorithms: [gzip]
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: up
clusters:
  - name: up
    endpoints: [{{address: {}}}]
",
        upstream.addr
    );
    let file = scratch("sinew.yaml");
    std::fs::write(&file, config).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    check_compression(listener, &["gzip", "br", "zstd"]).await;
    check_request_decompression(listener).await;
}

/// An Envoy bootstrap as an Envoy user writes it: two compressor filters (gzip with
/// zlib tuning, brotli), a gzip decompressor, the router.
fn envoy_bootstrap(listener: SocketAddr, upstream: SocketAddr, gzip_extra: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {lport} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: backend }}
          http_filters:
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 30
                  content_type: [application/json, text/plain]
              compressor_library:
                name: text_optimized
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                  memory_level: 3
                  window_bits: 10
                  compression_level: BEST_COMPRESSION
{gzip_extra}
          - name: envoy.filters.http.compressor.brotli
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 30
                  content_type: [application/json, text/plain]
              compressor_library:
                name: brotli
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli
                  quality: 5
          - name: envoy.filters.http.decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              decompressor_library:
                name: gzip
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
                  window_bits: 15
              response_direction_config:
                common_config:
                  enabled:
                    default_value: false
                    runtime_key: response_decompressor_enabled
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {uport} }}
"#,
        lport = listener.port(),
        uport = upstream.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_from_an_envoy_bootstrap_maps_compressor_and_decompressor_filters() {
    let upstream = Upstream::start("up").await;
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = scratch("envoy.yaml");
    std::fs::write(&file, envoy_bootstrap(listener, upstream.addr, "")).unwrap();
    let _proxy = start(&file);
    wait_for_port(listener).await;
    // content_type lists application/json: the checks' JSON and unlabelled bodies pass
    // (no Content-Type is compressed), the image does not.
    check_compression(listener, &["gzip", "br"]).await;
    check_request_decompression(listener).await;
    // zstd is not offered by this bootstrap.
    let got = curl(
        format!("http://{listener}/"),
        &[
            "-H",
            "Accept-Encoding: zstd",
            "-H",
            "x-test-body-bytes: 5000",
        ],
        None,
    )
    .await;
    assert_eq!(got.header("content-encoding"), None);
}

#[test]
fn compression_fields_sinew_cannot_honour_are_named_by_validate() {
    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let upstream = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = "                  compression_strategy: RLE\n";
    let text = envoy_bootstrap(listener, upstream, extra).replace(
        "                  min_content_length: 30\n                  content_type: [application/json, text/plain]\n              compressor_library:\n                name: brotli",
        "                  min_content_length: 30\n                  content_type: [application/json, text/plain]\n                status_header_enabled: true\n              compressor_library:\n                name: brotli",
    );
    let file = scratch("envoy-unsupported.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Both, in one pass (the migration report).
    assert!(stderr.contains("compression_strategy"), "{stderr}");
    assert!(stderr.contains("status_header_enabled"), "{stderr}");

    // Without them, the bootstrap is valid.
    std::fs::write(&file, envoy_bootstrap(listener, upstream, "")).unwrap();
    let out = Command::new(sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
