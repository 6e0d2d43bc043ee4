//! HTTP's policy families applied to SOFA Bolt calls, one test per family: fault
//! injection, local rate limits, mirroring, per-call authorization, access logs and
//! metrics. Calls come from Ant's `sofa-rpc-node` consumer (to its provider) and as raw
//! Bolt frames (to a stub Bolt server that counts what reaches it), so each test sees
//! both what the client gets and what the upstream got.

use std::time::{Duration, Instant};

use sinew_codec::bolt::status;
use sinew_integration::admin_kit::{self, value};
use sinew_integration::bolt_kit::{self, consume, provider, BoltStub, SERVICE};
use sinew_integration::{eventually, TestProxy};
use tokio::net::TcpStream;

/// The stub's service.
const STUB: &str = "com.sinew.test.Stub";

/// An rpc listener named `rpc` with `extra` listener-level lines (indented for `rpc:`'s
/// siblings) and `rpc_extra` lines inside `rpc:`, virtual hosts `vhosts`, and
/// `clusters`.
fn config(extra: &str, rpc_extra: &str, vhosts: &str, clusters: &str) -> String {
    format!(
        r#"
listeners:
- name: rpc
  address: 127.0.0.1:0
{extra}
  rpc:
    protocol: bolt
{rpc_extra}
    virtual_hosts:
{vhosts}
clusters:
{clusters}
"#
    )
}

async fn connect(proxy: &TestProxy) -> TcpStream {
    TcpStream::connect(proxy.addr("rpc").await).await.unwrap()
}

/// Raw calls of `method` on `stream`, ids from `first_id`; the statuses in order.
async fn statuses(
    stream: &mut TcpStream,
    first_id: u32,
    count: u32,
    service: &str,
    method: &str,
) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..count {
        let id = first_id + i;
        let (got, status) = bolt_kit::call(stream, id, service, method, &[]).await;
        assert_eq!(got, id, "the response carries the call's own id");
        out.push(status);
    }
    out
}

fn count(list: &[u16], status: u16) -> usize {
    list.iter().filter(|s| **s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delays_hold_calls_and_aborts_answer_with_the_protocols_errors_at_their_percentage() {
    let (_p, echo) = provider("a").await;
    let stub = BoltStub::start(Duration::ZERO).await;
    let vhosts = format!(
        r#"    - name: echo
      domains: ["{SERVICE}"]
      routes:
      - {{ match: {{ path: /echo }}, cluster: echo, fault: {{ delay: {{ fixed_delay: 300ms, percentage: 100 }} }} }}
      - {{ match: {{ path: /fail }}, cluster: echo, fault: {{ abort: {{ http_status: 503, percentage: 100 }} }} }}
    - name: stub
      domains: ["{STUB}"]
      routes:
      - {{ match: {{ path: /busy }}, cluster: stub, fault: {{ abort: {{ http_status: 429, percentage: 100 }} }} }}
      - {{ match: {{ path: /late }}, cluster: stub, fault: {{ abort: {{ grpc_status: 4, percentage: 100 }} }} }}
      - {{ match: {{ path: /half }}, cluster: stub, fault: {{ abort: {{ http_status: 403, percentage: 50 }} }} }}
      - {{ match: {{ prefix: / }}, cluster: stub }}"#
    );
    let clusters = format!(
        "- {{ name: echo, endpoints: [{{ address: \"{echo}\" }}] }}\n- {{ name: stub, endpoints: [{{ address: \"{}\" }}] }}",
        stub.addr
    );
    let proxy = TestProxy::start(&config("", "", &vhosts, &clusters)).await;
    let addr = proxy.addr("rpc").await;

    // Three calls one after another, each held 300 ms, then answered by the provider.
    let started = Instant::now();
    let lines = consume(addr, SERVICE, "echo", 3, "").await;
    let took = started.elapsed();
    assert_eq!(lines, ["ok a:hi0", "ok a:hi1", "ok a:hi2"], "{lines:?}");
    assert!(
        took >= Duration::from_millis(900),
        "3 delayed calls took {took:?}"
    );

    // An abort never reaches the provider: the consumer gets a Bolt error, not the
    // provider's own exception.
    let lines = consume(addr, SERVICE, "fail", 1, "").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error ") && !lines[0].contains("failed: hi0"),
        "{lines:?}"
    );

    let mut stream = connect(&proxy).await;
    let busy = statuses(&mut stream, 1, 3, STUB, "busy").await;
    assert_eq!(
        busy,
        [status::SERVER_THREADPOOL_BUSY; 3],
        "429 is overloaded"
    );
    let late = statuses(&mut stream, 10, 2, STUB, "late").await;
    assert_eq!(late, [status::TIMEOUT; 2], "DEADLINE_EXCEEDED is a timeout");
    assert_eq!(stub.count(), 0, "no aborted call reached the upstream");

    let half = statuses(&mut stream, 100, 200, STUB, "half").await;
    let (aborted, passed) = (count(&half, status::ERROR), count(&half, status::SUCCESS));
    assert_eq!(aborted + passed, 200, "{half:?}");
    assert!(
        (60..=140).contains(&aborted),
        "50% aborted: {aborted} of 200"
    );
    assert_eq!(
        stub.count(),
        passed,
        "every call not aborted reached the stub"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_listener_rate_limits_refuse_calls_as_overloaded() {
    let stub = BoltStub::start(Duration::ZERO).await;
    let vhosts = format!(
        r#"    - name: stub
      domains: ["{STUB}"]
      routes:
      - match: {{ path: /limited }}
        cluster: stub
        local_rate_limit: {{ token_bucket: {{ max_tokens: 5, tokens_per_fill: 5, fill_interval: 1h }} }}
      - {{ match: {{ prefix: / }}, cluster: stub }}"#
    );
    let rpc_extra = "    local_rate_limit: { token_bucket: { max_tokens: 20, tokens_per_fill: 20, fill_interval: 1h } }";
    let clusters = format!(
        "- {{ name: stub, endpoints: [{{ address: \"{}\" }}] }}",
        stub.addr
    );
    let proxy = TestProxy::start(&config("", rpc_extra, &vhosts, &clusters)).await;
    let mut stream = connect(&proxy).await;

    // The route's bucket holds 5.
    let limited = statuses(&mut stream, 1, 10, STUB, "limited").await;
    assert_eq!(&limited[..5], [status::SUCCESS; 5], "{limited:?}");
    assert_eq!(
        &limited[5..],
        [status::SERVER_THREADPOOL_BUSY; 5],
        "{limited:?}"
    );
    assert_eq!(stub.count(), 5);

    // The listener's holds 20, and the 10 calls above took one each (the outer level
    // first): 10 more pass on any route, then every call is refused.
    let other = statuses(&mut stream, 100, 15, STUB, "other").await;
    assert_eq!(&other[..10], [status::SUCCESS; 10], "{other:?}");
    assert_eq!(
        &other[10..],
        [status::SERVER_THREADPOOL_BUSY; 5],
        "{other:?}"
    );
    assert_eq!(stub.count(), 15, "refused calls never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_calls_reach_the_shadow_with_fresh_ids_without_delaying_the_call() {
    let (_p, echo) = provider("a").await;
    let main = BoltStub::start(Duration::ZERO).await;
    // A shadow that takes a second per answer: waiting for it would show.
    let shadow = BoltStub::start(Duration::from_secs(1)).await;
    let half = BoltStub::start(Duration::ZERO).await;
    let vhosts = format!(
        r#"    - name: echo
      domains: ["{SERVICE}"]
      routes:
      - {{ match: {{ prefix: / }}, cluster: echo, request_mirror_policies: [{{ cluster: shadow }}] }}
    - name: stub
      domains: ["{STUB}"]
      routes:
      - {{ match: {{ prefix: / }}, cluster: main, request_mirror_policies: [{{ cluster: half, percentage: 50 }}] }}"#
    );
    let clusters = format!(
        "- {{ name: echo, endpoints: [{{ address: \"{echo}\" }}] }}\n\
         - {{ name: shadow, endpoints: [{{ address: \"{}\" }}] }}\n\
         - {{ name: main, endpoints: [{{ address: \"{}\" }}] }}\n\
         - {{ name: half, endpoints: [{{ address: \"{}\" }}] }}",
        shadow.addr, main.addr, half.addr
    );
    let proxy = TestProxy::start(&config("", "", &vhosts, &clusters)).await;
    let addr = proxy.addr("rpc").await;

    let started = Instant::now();
    let lines = consume(addr, SERVICE, "echo", 10, "").await;
    let took = started.elapsed();
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("ok a:")), "{lines:?}");
    assert!(
        took < Duration::from_secs(6),
        "10 calls waited for a 1 s shadow: {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || shadow.count() == 10).await,
        "the shadow got {} copies",
        shadow.count()
    );
    let copies = shadow.calls();
    assert!(
        copies
            .iter()
            .all(|c| c.service == SERVICE && c.method == "echo"),
        "{copies:?}"
    );

    // Half of 200 calls copied, each with an id of its shadow connection's own (the
    // client's are 1000 and up; each proxy worker has its own connection).
    let mut stream = connect(&proxy).await;
    let answered = statuses(&mut stream, 1000, 200, STUB, "ping").await;
    assert_eq!(answered, [status::SUCCESS; 200]);
    assert_eq!(main.count(), 200);
    assert!(
        eventually(Duration::from_secs(5), || half.count() >= 60).await,
        "{}",
        half.count()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copies = half.calls();
    assert!(
        (60..=140).contains(&copies.len()),
        "50% mirrored: {} of 200",
        copies.len()
    );
    let mut ids: Vec<(usize, u64)> = copies.iter().map(|c| (c.connection, c.id)).collect();
    assert!(ids.iter().all(|(_, id)| *id < 1000), "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        copies.len(),
        "copies' ids are distinct on each connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_rules_on_method_and_service_deny_single_calls() {
    let (_p, echo) = provider("a").await;
    let stub = BoltStub::start(Duration::ZERO).await;
    let authz = r#"  authorization:
    policies:
    - name: no-fail
      action: DENY
      rules: [{ to: [{ operation: { paths: [/fail] } }] }]
    - name: no-stub-secret
      action: DENY
      rules: [{ to: [{ operation: { hosts: ["com.sinew.test.Stub"], paths: [/secret] } }] }]"#;
    let vhosts = format!(
        r#"    - {{ name: echo, domains: ["{SERVICE}"], routes: [{{ match: {{ prefix: / }}, cluster: echo }}] }}
    - {{ name: stub, domains: ["{STUB}"], routes: [{{ match: {{ prefix: / }}, cluster: stub }}] }}"#
    );
    let clusters = format!(
        "- {{ name: echo, endpoints: [{{ address: \"{echo}\" }}] }}\n- {{ name: stub, endpoints: [{{ address: \"{}\" }}] }}",
        stub.addr
    );
    let proxy = TestProxy::start(&config(authz, "", &vhosts, &clusters)).await;
    let admin = admin_kit::start(&proxy).await;
    let addr = proxy.addr("rpc").await;

    // The connection is admitted: rules that read calls are decided per call.
    let lines = consume(addr, SERVICE, "echo", 2, "").await;
    assert_eq!(lines, ["ok a:hi0", "ok a:hi1"]);
    let lines = consume(addr, SERVICE, "fail", 1, "").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("error ") && !lines[0].contains("failed: hi0"),
        "denied before the provider: {lines:?}"
    );

    let mut stream = connect(&proxy).await;
    let open = statuses(&mut stream, 1, 2, STUB, "open").await;
    let secret = statuses(&mut stream, 3, 2, STUB, "secret").await;
    // The same connection goes on serving after a denial.
    let again = statuses(&mut stream, 5, 1, STUB, "open").await;
    assert_eq!(open, [status::SUCCESS; 2]);
    assert_eq!(secret, [status::ERROR; 2], "denied calls get Bolt's ERROR");
    assert_eq!(again, [status::SUCCESS]);
    let reached: Vec<String> = stub.calls().into_iter().map(|c| c.method).collect();
    assert_eq!(reached, ["open", "open", "open"]);

    let m = admin_kit::metrics(admin.address).await;
    let denied = |policy| {
        value(
            &m,
            "sinew_authz_decisions_total",
            &[
                ("listener", "rpc"),
                ("policy", policy),
                ("result", "denied"),
            ],
        )
    };
    assert_eq!(denied("no-fail"), 1.0);
    assert_eq!(denied("no-stub-secret"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_gets_an_access_log_line_with_service_method_protocol_and_status() {
    let (_p, echo) = provider("a").await;
    let dir = sinew_integration::scratch_dir("rpc-access-log");
    let log = dir.join("calls.log");
    let rpc_extra = format!(
        "    access_log:\n    - path: {}\n      format: \"%REQ(:AUTHORITY)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %UPSTREAM_CLUSTER% %REQ(X-TENANT)%\\n\"",
        log.display()
    );
    let vhosts = format!(
        r#"    - name: echo
      domains: ["{SERVICE}"]
      routes:
      - {{ match: {{ path: /slow }}, cluster: echo, timeout: 200ms }}
      - {{ match: {{ prefix: / }}, cluster: echo }}"#
    );
    let clusters = format!("- {{ name: echo, endpoints: [{{ address: \"{echo}\" }}] }}");
    let proxy = TestProxy::start(&config("", &rpc_extra, &vhosts, &clusters)).await;
    let addr = proxy.addr("rpc").await;

    let lines = consume(addr, SERVICE, "echo", 2, "").await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let lines = consume(addr, SERVICE, "slow", 1, "1000").await;
    assert!(lines[0].starts_with("error "), "{lines:?}");
    let mut stream = connect(&proxy).await;
    let (_, nowhere) = bolt_kit::call(
        &mut stream,
        9,
        "com.sinew.test.Nowhere",
        "echo",
        &[("x-tenant", "t1")],
    )
    .await;
    assert_eq!(nowhere, status::NO_PROCESSOR);

    let logged = sinew_integration::wait_for_lines(&log, 4).await;
    assert_eq!(logged.len(), 4, "one line per call: {logged:?}");
    let ok = format!("{SERVICE} /echo bolt 200 - {echo} echo -");
    assert_eq!(&logged[..2], [ok.clone(), ok], "{logged:?}");
    assert_eq!(
        logged[2],
        format!("{SERVICE} /slow bolt 504 UT {echo} echo -")
    );
    assert_eq!(logged[3], "com.sinew.test.Nowhere /echo bolt 404 NR - - t1");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_outcome_and_timed_per_listener_route_and_cluster() {
    let stub = BoltStub::start(Duration::ZERO).await;
    let vhosts = format!(
        r#"    - name: stub
      domains: ["{STUB}"]
      routes:
      - {{ name: refused, match: {{ path: /refused }}, cluster: stub, fault: {{ abort: {{ http_status: 429, percentage: 100 }} }} }}
      - {{ name: all, match: {{ prefix: / }}, cluster: stub }}"#
    );
    let clusters = format!(
        "- {{ name: stub, endpoints: [{{ address: \"{}\" }}] }}",
        stub.addr
    );
    let proxy = TestProxy::start(&config("", "", &vhosts, &clusters)).await;
    let admin = admin_kit::start(&proxy).await;
    let mut stream = connect(&proxy).await;
    statuses(&mut stream, 1, 7, STUB, "ping").await;
    statuses(&mut stream, 20, 3, STUB, "refused").await;
    statuses(&mut stream, 30, 2, "com.sinew.test.Nowhere", "ping").await;

    let m = admin_kit::metrics(admin.address).await;
    let calls = |source, class| {
        value(
            &m,
            "sinew_rpc_calls_total",
            &[
                ("listener", "rpc"),
                ("protocol", "bolt"),
                ("source", source),
                ("class", class),
            ],
        )
    };
    assert_eq!(calls("upstream", "success"), 7.0);
    assert_eq!(calls("proxy", "overloaded"), 3.0);
    assert_eq!(calls("proxy", "no_route"), 2.0);
    assert_eq!(calls("upstream", "server_error"), 0.0);
    assert_eq!(
        value(
            &m,
            "sinew_rpc_call_time_seconds_count",
            &[("listener", "rpc"), ("protocol", "bolt")]
        ),
        12.0
    );
    let route = |name, class| {
        value(
            &m,
            "sinew_vhost_route_rq_total",
            &[
                ("virtual_host", "stub"),
                ("route", name),
                ("code_class", class),
            ],
        )
    };
    assert_eq!(route("all", "2xx"), 7.0);
    assert_eq!(route("refused", "4xx"), 3.0);
    assert_eq!(
        value(
            &m,
            "sinew_cluster_upstream_rq_total",
            &[("cluster", "stub"), ("code_class", "2xx")]
        ),
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_header_actions_rewrite_the_bolt_header_map_on_the_way_upstream() {
    let (_p, echo) = provider("a").await;
    let stub = BoltStub::start(Duration::ZERO).await;
    let vhosts = format!(
        r#"    - name: echo
      domains: ["{SERVICE}"]
      request_headers: {{ add: {{ x-via: sinew }} }}
      routes:
      - {{ match: {{ prefix: / }}, cluster: echo, request_headers: {{ set: {{ x-tenant: blue }} }} }}
    - name: stub
      domains: ["{STUB}"]
      request_headers: {{ add: {{ x-via: sinew }} }}
      routes:
      - match: {{ prefix: / }}
        cluster: stub
        request_headers: {{ set: {{ x-tenant: blue }}, remove: [x-secret] }}"#
    );
    let clusters = format!(
        "- {{ name: echo, endpoints: [{{ address: \"{echo}\" }}] }}\n- {{ name: stub, endpoints: [{{ address: \"{}\" }}] }}",
        stub.addr
    );
    let proxy = TestProxy::start(&config("", "", &vhosts, &clusters)).await;

    // The provider reads the re-encoded message as a whole call.
    let lines = consume(proxy.addr("rpc").await, SERVICE, "echo", 2, "").await;
    assert_eq!(lines, ["ok a:hi0", "ok a:hi1"]);

    let mut stream = connect(&proxy).await;
    let (id, status) = bolt_kit::call(
        &mut stream,
        5,
        STUB,
        "ping",
        &[("X-Tenant", "red"), ("x-secret", "s3cret"), ("Keep", "k")],
    )
    .await;
    assert_eq!((id, status), (5, status::SUCCESS));
    let got = stub
        .calls()
        .pop()
        .expect("the call reached the stub")
        .headers;
    let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("service", "com.sinew.test.Stub:1.0"),
            ("sofa_head_method_name", "ping"),
            ("Keep", "k"),
            ("x-tenant", "blue"),
            ("x-via", "sinew"),
        ]
    );
}
