//! Authorization policies over real sockets with the real proxy: the allow/deny matrix
//! by method, path, header and client IP over HTTP/1.1 and HTTP/2 (gRPC gets status 7),
//! path-normalisation bypass attempts sent byte for byte, `X-Forwarded-For` with 0, 1
//! and 2 trusted hops, a TCP proxy allowing and refusing connections by address, a list
//! file changed while the proxy runs, decisions in `/metrics` and the access log, and
//! bad policies refused at their file, line, column and field path.
//!
//! Principals (SPIFFE IDs from client certificates) are tested at the unit level only:
//! listeners that ask for client certificates are not on this branch yet.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use sinew_integration::raw::{read_response, read_to_close};
use sinew_integration::{
    admin_kit, h2_request, scratch_dir, sinew_binary, wait_for_lines, TestClient, TestProxy,
    Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One HTTP listener `web` with `listener` (4 spaces in) and `http` (6 spaces in) extras,
/// a route for `/admin` and one for everything else to `svc`.
fn http_config(upstream: SocketAddr, listener: &str, http: &str) -> String {
    format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
{listener}
    http:
{http}
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: svc
clusters:
  - name: svc
    endpoints: [{{address: {upstream}}}]
"
    )
}

/// Sends `GET target` as written (no client library to tidy it) and reads the answer:
/// (status, head, body).
async fn raw_get(addr: SocketAddr, target: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: shop.test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = read_response(&mut stream, Duration::from_secs(10)).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, body)
}

const MATRIX_POLICIES: &str = "    authorization:
      policies:
        - name: deny-admin
          action: DENY
          rules:
            - to: [{operation: {paths: [/admin, '/admin/*']}}]
        - name: deny-evil-header
          action: DENY
          rules:
            - when: [{key: 'request.headers[x-evil]', values: ['*']}]
        - name: readers-from-loopback-1
          action: ALLOW
          rules:
            - from: [{source: {ip_blocks: [127.0.0.1/32, '::1']}}]
              to: [{operation: {methods: [GET, HEAD]}}]
        - name: writers
          action: ALLOW
          rules:
            - to: [{operation: {methods: [POST, PUT], paths: ['/api/*']}}]
              when: [{key: 'request.headers[x-role]', values: [writer, admin]}]
        - name: watch-api
          action: AUDIT
          rules:
            - to: [{operation: {paths: ['/api/*']}}]
";

/// Method, path, extra headers, and the status expected.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
);

#[tokio::test]
async fn the_authorization_matrix_allows_and_denies_by_method_path_header_and_ip() {
    let upstream = Upstream::start("svc").await;
    let dir = scratch_dir("authz-matrix");
    let log = dir.join("access.log");
    let http = format!(
        "      access_log:\n        - path: {}\n          format: \"%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE_DETAILS%\\n\"\n",
        log.display()
    );
    let proxy = TestProxy::start(&http_config(upstream.addr, MATRIX_POLICIES, &http)).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    let send = |method: &'static str,
                path: &'static str,
                headers: &'static [(&'static str, &'static str)]| {
        let client = client.clone();
        async move {
            client
                .send(
                    method.parse().unwrap(),
                    addr,
                    path,
                    headers,
                    bytes::Bytes::new(),
                )
                .await
        }
    };

    let cases: &[Case] = &[
        ("GET", "/", &[], 200),
        ("HEAD", "/x", &[], 200),
        ("GET", "/admin", &[], 403),
        ("GET", "/admin/users", &[], 403),
        ("GET", "/administrator", &[], 200),
        ("GET", "/x", &[("x-evil", "1")], 403),
        ("POST", "/api/items", &[], 403),
        ("POST", "/api/items", &[("x-role", "writer")], 200),
        ("PUT", "/api/items/1", &[("x-role", "admin")], 200),
        ("POST", "/api/items", &[("x-role", "reader")], 403),
        ("POST", "/other", &[("x-role", "writer")], 403),
        ("DELETE", "/api/items/1", &[("x-role", "writer")], 403),
        ("GET", "/x", &[("x-role", "writer"), ("x-evil", "")], 403),
    ];
    for (method, path, headers, want) in cases {
        let reply = send(method, path, headers).await;
        assert_eq!(
            reply.status,
            *want,
            "{method} {path} {headers:?}: {}",
            reply.text()
        );
        if *want == 403 && *method != "HEAD" {
            assert_eq!(reply.text(), "RBAC: access denied");
            assert_eq!(reply.header("content-type"), Some("text/plain"));
        }
    }
    let upstream_before = upstream.requests();

    // Another client address: the GET rule is for 127.0.0.1 only.
    let elsewhere = TestClient::http1_from(IpAddr::from([127, 0, 0, 2]));
    assert_eq!(elsewhere.get(addr, "/x", &[]).await.status, 403);
    let post = elsewhere
        .send(
            http::Method::POST,
            addr,
            "/api/x",
            &[("x-role", "writer")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(post.status, 200, "the writers rule has no source");
    assert_eq!(
        upstream.requests(),
        upstream_before + 1,
        "denials never reach the upstream"
    );

    // HTTP/2, and gRPC's form of a denial.
    let h2 = h2_request(addr, &format!("http://{addr}/admin"), &[]).await;
    assert_eq!(h2.status, 403);
    assert_eq!(h2.text(), "RBAC: access denied");
    let grpc = h2_request(
        addr,
        &format!("http://{addr}/admin/pkg.Svc/Method"),
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
    .await;
    assert_eq!(grpc.status, 200, "gRPC errors are Trailers-Only");
    assert_eq!(grpc.header("grpc-status"), Some("7"), "PERMISSION_DENIED");
    assert_eq!(grpc.header("grpc-message"), Some("RBAC: access denied"));

    // The access log says RBAC; the metrics count each policy's decisions.
    let lines = wait_for_lines(&log, cases.len() + 4).await;
    let has = |line: &str| lines.iter().any(|l| l == line);
    for line in [
        "403 RBAC GET /admin rbac_access_denied_matched_policy[deny-admin]",
        "403 RBAC DELETE /api/items/1 rbac_access_denied_matched_policy[none]",
        "403 RBAC GET /x rbac_access_denied_matched_policy[deny-evil-header]",
        "200 RBAC GET /admin/pkg.Svc/Method rbac_access_denied_matched_policy[deny-admin]",
        "200 - GET / -",
    ] {
        assert!(has(line), "no {line:?} in {lines:#?}");
    }
    let admin = admin_kit::start(&proxy).await;
    let metrics = admin_kit::metrics(admin.address).await;
    let count = |policy: &str, action: &str, result: &str| {
        admin_kit::value(
            &metrics,
            "sinew_authz_decisions_total",
            &[
                ("listener", "web"),
                ("policy", policy),
                ("action", action),
                ("result", result),
            ],
        )
    };
    assert_eq!(count("deny-admin", "DENY", "denied"), 4.0, "{metrics}");
    assert_eq!(count("deny-evil-header", "DENY", "denied"), 2.0);
    assert_eq!(count("writers", "ALLOW", "allowed"), 3.0);
    assert_eq!(
        count("-", "ALLOW", "denied"),
        5.0,
        "denied: no ALLOW matched"
    );
    assert_eq!(count("watch-api", "AUDIT", "audited"), 6.0);
}

#[tokio::test]
async fn path_normalisation_bypass_attempts_are_denied() {
    let upstream = Upstream::start("svc").await;
    let policies = "    authorization:
      policies:
        - name: no-admin
          action: DENY
          rules:
            - to: [{operation: {paths: [/admin, '/admin/*']}}]
";
    let normalise = "      normalize_path: true
      merge_slashes: true
      path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
";
    let proxy = TestProxy::start(&http_config(upstream.addr, policies, normalise)).await;
    let addr = proxy.addr("web").await;
    for attempt in [
        "/admin",
        "/admin/../admin",
        "/public/../admin",
        "//admin",
        "/%61dmin",
        "/admin%2Fsecret",
        "/admin%2fsecret",
        "/admin?x",
        "/admin/.",
        "/./admin/",
        "/public/%2e%2e/admin",
        "/public%2F..%2Fadmin",
        "/public/..%2Fadmin",
        "///admin//x",
    ] {
        let (status, head, body) = raw_get(addr, attempt, "").await;
        assert_eq!(status, 403, "{attempt} got through: {head}\n{body}");
    }
    // A fragment has no place in a request target: the codec refuses it before any
    // policy looks.
    let (status, _, _) = raw_get(addr, "/admin#x", "").await;
    assert_eq!(status, 400);
    assert_eq!(upstream.requests(), 0);

    // Paths are case-sensitive: `/ADMIN` is another path, allowed, and the upstream sees
    // it as sent. Allowed paths reach the upstream normalised, with their query.
    let (status, _, body) = raw_get(addr, "/ADMIN", "x-test-echo: 1\r\n").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /ADMIN HTTP/1.1"), "{body}");
    let (status, _, body) =
        raw_get(addr, "/public//./a/../%62?q=%2F..", "x-test-echo: 1\r\n").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("GET /public/b?q=%2F.. HTTP/1.1"), "{body}");

    // Without normalisation the same attempts would reach the upstream as another path:
    // that is what the options are for.
    let bare = TestProxy::start(&http_config(upstream.addr, policies, "")).await;
    let bare_addr = bare.addr("web").await;
    let (status, _, body) = raw_get(bare_addr, "/public/../admin", "x-test-echo: 1\r\n").await;
    assert_eq!(
        status, 200,
        "unnormalised, the DENY rule does not see /admin"
    );
    assert!(body.starts_with("GET /public/../admin"), "{body}");
}

#[tokio::test]
async fn escaped_slashes_are_refused_or_redirected_as_configured() {
    let upstream = Upstream::start("svc").await;
    let reject = TestProxy::start(&http_config(
        upstream.addr,
        "",
        "      path_with_escaped_slashes_action: REJECT_REQUEST\n",
    ))
    .await;
    let (status, _, _) = raw_get(reject.addr("web").await, "/admin%2Fsecret", "").await;
    assert_eq!(status, 400);
    let (status, _, _) = raw_get(reject.addr("web").await, "/a%5cb", "").await;
    assert_eq!(status, 400);
    let (status, _, _) = raw_get(reject.addr("web").await, "/plain%20path", "").await;
    assert_eq!(status, 200, "other escapes are fine");

    let redirect = TestProxy::start(&http_config(
        upstream.addr,
        "",
        "      path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n",
    ))
    .await;
    let (status, head, _) = raw_get(redirect.addr("web").await, "/a%2Fb?x=1", "").await;
    assert_eq!(status, 307, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nlocation: /a/b?x=1"),
        "{head}"
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn x_forwarded_for_trusted_hops_choose_the_original_client() {
    let upstream = Upstream::start("svc").await;
    let allow_client = "    authorization:
      policies:
        - name: the-client
          rules:
            - from: [{source: {remote_ip_blocks: [203.0.113.0/24]}}]
";
    let client = TestClient::http1();
    let xff = [("x-forwarded-for", "203.0.113.7, 10.0.0.1")];
    let mut got = Vec::new();
    for hops in 0..=2 {
        let http = format!("      xff_num_trusted_hops: {hops}\n");
        let proxy = TestProxy::start(&http_config(upstream.addr, allow_client, &http)).await;
        let addr = proxy.addr("web").await;
        got.push(client.get(addr, "/", &xff).await.status.as_u16());
        if hops == 1 {
            let reordered = [("x-forwarded-for", "10.0.0.1, 203.0.113.7")];
            assert_eq!(client.get(addr, "/", &reordered).await.status, 200);
            // Two header lines read as one list.
            let two = [
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-for", "203.0.113.8"),
            ];
            assert_eq!(client.get(addr, "/", &two).await.status, 200);
        }
        if hops == 2 {
            // Fewer entries than hops: the peer (127.0.0.1) is the client.
            let short = [("x-forwarded-for", "203.0.113.7")];
            assert_eq!(client.get(addr, "/", &short).await.status, 403);
        }
    }
    // 0 hops: the peer; 1: the rightmost entry (10.0.0.1); 2: the one before it.
    assert_eq!(got, vec![403, 403, 200]);
}

async fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Whether the proxy passes bytes through: echoed back, or the connection closed.
async fn echoes(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => &buf == b"ping",
        Ok(Err(_)) => false,
        Err(_) => panic!("neither echoed nor closed within 5 s"),
    }
}

#[tokio::test]
async fn a_tcp_listener_allows_and_denies_connections_by_address() {
    let echo = sinew_integration::echo_server().await;
    let dir = scratch_dir("authz-tcp");
    let log = dir.join("tcp.log");
    let yaml = format!(
        "
listeners:
  - name: db
    address: 127.0.0.1:0
    authorization:
      policies:
        - name: no-127-0-0-3
          action: DENY
          rules:
            - from: [{{source: {{ip_blocks: [127.0.0.3]}}}}]
              to: [{{operation: {{methods: [DELETE]}}}}]
        - name: app-servers
          rules:
            - from: [{{source: {{ip_blocks: [127.0.0.0/30]}}}}]
        - name: web-only
          rules:
            - from: [{{source: {{ip_blocks: [127.0.0.0/8]}}}}]
              to: [{{operation: {{paths: ['/*']}}}}]
    tcp:
      cluster: echo
      access_log:
        - path: {}
          format: \"%RESPONSE_FLAGS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %RESPONSE_CODE_DETAILS%\\n\"
clusters:
  - name: echo
    endpoints: [{{address: {echo}}}]
",
        log.display()
    );
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("db").await;

    let mut allowed = connect_from([127, 0, 0, 2], addr).await;
    assert!(echoes(&mut allowed).await, "127.0.0.2 is in app-servers");
    drop(allowed);
    // 127.0.0.3: allowed by app-servers, but the DENY rule's `methods` are ignored on
    // TCP, so it matches as if it had only its source (Istio's fail-closed choice).
    let mut denied = connect_from([127, 0, 0, 3], addr).await;
    let (closed, data) = read_to_close(&mut denied, Duration::from_secs(5)).await;
    assert!(closed && data.is_empty(), "127.0.0.3 must be closed on");
    // 127.0.0.9: only web-only would allow it, and its path rule cannot match on TCP.
    let mut outside = connect_from([127, 0, 0, 9], addr).await;
    let (closed, data) = read_to_close(&mut outside, Duration::from_secs(5)).await;
    assert!(closed && data.is_empty(), "127.0.0.9 must be closed on");

    let lines = wait_for_lines(&log, 3).await;
    let has = |line: &str| lines.iter().any(|l| l == line);
    assert!(
        has("RBAC 127.0.0.3 rbac_access_denied_matched_policy[no-127-0-0-3]"),
        "{lines:#?}"
    );
    assert!(
        has("RBAC 127.0.0.9 rbac_access_denied_matched_policy[none]"),
        "{lines:#?}"
    );
    assert!(has("- 127.0.0.2 -"), "{lines:#?}");
}

#[tokio::test]
async fn a_list_file_changed_while_running_is_followed_by_the_next_request() {
    let upstream = Upstream::start("svc").await;
    let dir = scratch_dir("authz-list");
    let list = dir.join("blocked.txt");
    std::fs::write(&list, "# blocked clients\n192.0.2.1\n").unwrap();
    let policies = format!(
        "    authorization:
      policies:
        - name: blacklist
          action: DENY
          rules:
            - from: [{{source: {{ip_blocks: {{from_file: '{}', refresh_interval: 100ms}}}}}}]
",
        list.display()
    );
    let proxy = TestProxy::start(&http_config(upstream.addr, &policies, "")).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);

    write_list(&list, "192.0.2.1\n127.0.0.0/24  # loopback, now blocked\n");
    assert!(
        status_becomes(&client, addr, 403).await,
        "the blocked list was not picked up"
    );

    // A bad file keeps the last good list (and says why in the log).
    write_list(&list, "127.0.0.1\nthis is not an address\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get(addr, "/", &[]).await.status, 403);

    write_list(&list, "# nobody\n");
    assert!(
        status_becomes(&client, addr, 200).await,
        "the emptied list was not picked up"
    );
}

/// Replaces a list file the way an editor or a config tool does: a new file renamed
/// over the old one.
fn write_list(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status_becomes(client: &TestClient, addr: SocketAddr, want: u16) -> bool {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        if client.get(addr, "/", &[]).await.status == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

const BAD_POLICIES: &str = "listeners:
  - name: web
    address: 127.0.0.1:0
    authorization:
      policies:
        - name: p
          action: DENY
          rules:
            - from: [{source: {ip_blocks: [10.0.0.0/33]}}]
              to: [{operation: {paths: [admin]}}]
            - when: [{key: 'request.auth.claim[x]', values: [a]}]
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes: [{match: {prefix: /}, cluster: svc}]
clusters:
  - {name: svc, endpoints: [{address: 127.0.0.1:1}]}
";

#[tokio::test]
async fn a_bad_policy_is_refused_with_file_line_column_and_field_path() {
    // On reload: refused, the running config kept.
    let upstream = Upstream::start("svc").await;
    let proxy = TestProxy::start(&http_config(upstream.addr, "", "")).await;
    let err = proxy.reload(BAD_POLICIES).await.unwrap_err();
    for want in [
        "test.yaml:9:44: listeners[0].authorization.policies[0].rules[0].from[0].source.ip_blocks[0]: \"10.0.0.0/33\": the prefix length must be a number from 0 to 32",
        "test.yaml:10:41: listeners[0].authorization.policies[0].rules[0].to[0].operation.paths[0]: \"admin\": a path starts with `/`",
        "test.yaml:11:23: listeners[0].authorization.policies[0].rules[1].when[0].key: unknown key \"request.auth.claim[x]\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let addr = proxy.addr("web").await;
    assert_eq!(TestClient::http1().get(addr, "/", &[]).await.status, 200);

    // `sinew validate` on a file: the same lines, and a list file that cannot be read.
    let dir = scratch_dir("authz-validate");
    let file = dir.join("bad.yaml");
    let missing = dir.join("no-such-list.txt");
    let text = BAD_POLICIES.replace(
        "            - when:",
        &format!(
            "            - from: [{{source: {{principals: {{from_file: '{}'}}}}}}]\n            - when:",
            missing.display()
        ),
    );
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(sinew_binary())
        .args(["validate", file.to_str().unwrap()])
        .output()
        .expect("run sinew validate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = file.display();
    for want in [
        format!("{path}:9:44: listeners[0].authorization.policies[0].rules[0].from[0].source.ip_blocks[0]:"),
        format!("{path}:10:41: listeners[0].authorization.policies[0].rules[0].to[0].operation.paths[0]:"),
        format!("{path}:11:"),
        format!("listeners[0].authorization.policies[0].rules[1].from[0].source.principals.from_file: cannot read {}", missing.display()),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}

/// The example in docs/security.md, run: loaded as written (with its list file made
/// here, its routes and cluster added, and a port of its own), then asked what it says.
#[tokio::test]
async fn the_security_docs_example_does_what_the_docs_say() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md"),
    )
    .expect("docs/security.md");
    let section = docs
        .split("## Authorization policies")
        .nth(1)
        .expect("an Authorization policies section");
    let start = section.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let upstream = Upstream::start("svc").await;
    let dir = scratch_dir("authz-docs");
    let blocked = dir.join("blocked.txt");
    std::fs::write(&blocked, "198.51.100.0/24\n").unwrap();
    assert!(example.contains("/etc/sinew/blocked.txt") && example.contains("route_config: main"));
    let yaml = format!(
        "{}route_configs:
  - name: main
    virtual_hosts:
      - name: all
        domains: ['*']
        routes: [{{match: {{prefix: /}}, cluster: svc}}]
clusters:
  - {{name: svc, endpoints: [{{address: {}}}]}}
",
        example
            .replace("/etc/sinew/blocked.txt", &blocked.display().to_string())
            .replace("0.0.0.0:8080", "127.0.0.1:0"),
        upstream.addr
    );
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("shop").await;
    let client = TestClient::http1();
    assert_eq!(
        client.get(addr, "/products", &[]).await.status,
        200,
        "readers"
    );
    // 127.0.0.1 is not in 10.0.0.0/8: outside, so no admin.
    assert_eq!(client.get(addr, "/admin/users", &[]).await.status, 403);
    assert_eq!(raw_get(addr, "/public/../admin", "").await.0, 403);
    assert_eq!(
        raw_get(addr, "/admin%2Fusers", "").await.0,
        400,
        "REJECT_REQUEST"
    );
    // Writers need a certificate principal: without mTLS, POST is denied.
    let post = client
        .send(
            http::Method::POST,
            addr,
            "/api/orders",
            &[("x-role", "writer")],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(post.status, 403);
    // One trusted hop: the client named last in X-Forwarded-For is blocked by the list.
    let blocked_client = [("x-forwarded-for", "198.51.100.20")];
    assert_eq!(
        client.get(addr, "/products", &blocked_client).await.status,
        403
    );
}

/// curl (Debian's), sending paths as written (`--path-as-is`) over HTTP/1.1 and HTTP/2
/// prior knowledge: the bypass attempts are denied on both, and an allowed path gets
/// through.
#[tokio::test]
async fn curl_bypass_attempts_over_http1_and_http2_are_denied() {
    let upstream = Upstream::start("svc").await;
    let policies = "    authorization:
      policies:
        - name: no-admin
          action: DENY
          rules:
            - to: [{operation: {paths: [/admin, '/admin/*']}}]
";
    let normalise = "      normalize_path: true
      merge_slashes: true
      path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
";
    let proxy = TestProxy::start(&http_config(upstream.addr, policies, normalise)).await;
    let addr = proxy.addr("web").await;
    let curl = |version: &'static str, path: &'static str| {
        let url = format!("http://{addr}{path}");
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                ])
                .args(["--path-as-is", version, &url])
                .output()
                .unwrap_or_else(|e| panic!("cannot run curl ({e}): run `apt-get install -y curl`"));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        for path in [
            "/admin/../admin",
            "/public/../admin",
            "//admin",
            "/%61dmin",
            "/admin%2Fsecret",
            "/admin/.",
        ] {
            let code = curl(version, path).await.unwrap();
            assert_eq!(code, "403", "curl {version} {path}");
        }
        assert_eq!(
            curl(version, "/public/./x").await.unwrap(),
            "200",
            "{version}"
        );
    }
    assert_eq!(upstream.requests(), 2);
}

/// Policies are config: a reload that adds or removes one applies from the next
/// request on, on a connection that stays open.
#[tokio::test]
async fn a_reload_changes_the_policies_for_the_next_request() {
    let upstream = Upstream::start("svc").await;
    let proxy = TestProxy::start(&http_config(upstream.addr, "", "")).await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    assert_eq!(client.get(addr, "/orders", &[]).await.status, 200);
    let deny = "    authorization:
      policies:
        - name: closed
          action: DENY
          rules: [{to: [{operation: {paths: ['/orders*']}}]}]
";
    proxy
        .reload(&http_config(upstream.addr, deny, ""))
        .await
        .unwrap();
    assert_eq!(client.get(addr, "/orders", &[]).await.status, 403);
    assert_eq!(client.get(addr, "/other", &[]).await.status, 200);
    proxy
        .reload(&http_config(upstream.addr, "", ""))
        .await
        .unwrap();
    assert_eq!(client.get(addr, "/orders", &[]).await.status, 200);
}
