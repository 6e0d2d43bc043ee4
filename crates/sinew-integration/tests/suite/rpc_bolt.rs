//! SOFA Bolt through Sinew's RPC listener, between Ant's own implementations: the
//! `sofa-rpc-node` consumer and provider (on `sofa-bolt-node`) from npm, installed by
//! `scripts/test` into `peers/bolt`. Calls are balanced over two providers, an
//! application error reaches the client as the provider sent it, a route timeout and a
//! missing route come back as Bolt errors, heartbeats are answered by the proxy, and a
//! provider killed in the middle of a run of calls costs no call (retried on the other).

use std::net::SocketAddr;
use std::time::Duration;

use sinew_integration::bolt_kit::{consume, node, provider, SERVICE};
use sinew_integration::rpc_peers::output_lines_killing;
use sinew_integration::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"
listeners:
- name: rpc
  address: 127.0.0.1:0
  rpc:
    protocol: bolt
    virtual_hosts:
    - name: echo
      domains: ["{SERVICE}"]
      routes:
      - match: {{ path: /slow }}
        cluster: echo
        timeout: 300ms
      - match: {{ prefix: / }}
        cluster: echo
        retry: {{ retry_on: [connect-failure, reset], num_retries: 2, base_backoff: 5ms }}
clusters:
- name: echo
  lb: round_robin
  endpoints: [{{ address: "{a}" }}, {{ address: "{b}" }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_calls_are_balanced_and_errors_timeouts_and_missing_routes_come_back_as_bolt_errors() {
    let ((_a, a), (_b, b)) = (provider("a").await, provider("b").await);
    let proxy = TestProxy::start(&config(a, b)).await;
    let addr = proxy.addr("rpc").await;

    let lines = consume(addr, SERVICE, "echo", 6, "").await;
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.ends_with(&format!(":hi{i}")),
            "the call's own answer: {l}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("ok a:")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("ok b:")), "{lines:?}");

    // The provider's exception, as it sent it.
    let lines = consume(addr, SERVICE, "fail", 1, "").await;
    assert!(
        lines[0].starts_with("error ") && lines[0].contains("failed: hi0"),
        "{lines:?}"
    );

    // The route's 300 ms timeout, long before the consumer's own 3 s.
    let started = std::time::Instant::now();
    let lines = consume(addr, SERVICE, "slow", 1, "2000").await;
    assert!(lines[0].starts_with("error "), "{lines:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    let lines = consume(addr, SERVICE, "slow", 1, "10").await;
    assert!(lines[0].starts_with("ok "), "{lines:?}");

    // No virtual host for this service: an error, and the consumer carries on.
    let lines = consume(addr, "com.sinew.test.Nowhere", "echo", 2, "").await;
    assert!(lines.iter().all(|l| l.starts_with("error ")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_unroutable_calls_are_answered_by_the_proxy_with_their_ids() {
    let ((_a, a), (_b, b)) = (provider("a").await, provider("b").await);
    let proxy = TestProxy::start(&config(a, b)).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr("rpc").await)
        .await
        .unwrap();
    stream
        .write_all(&sinew_codec::bolt::encode_heartbeat(77))
        .await
        .unwrap();
    let mut ack = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut ack))
        .await
        .expect("an ack in time")
        .unwrap();
    // A response (type 0), command code 0 (heartbeat), the heartbeat's id, SUCCESS.
    assert_eq!((ack[0], ack[1], &ack[2..4]), (1, 0, &[0, 0][..]));
    assert_eq!(u32::from_be_bytes(ack[5..9].try_into().unwrap()), 77);
    assert_eq!(&ack[10..12], &[0, 0]);

    // On the same connection, a call no route takes: a Bolt response with the call's id
    // and status NO_PROCESSOR (6).
    let call = sinew_codec::bolt::encode_request(
        78,
        false,
        1000,
        b"com.alipay.sofa.rpc.core.request.SofaRequest",
        &[
            ("service", "com.sinew.test.Nowhere:1.0"),
            ("sofa_head_method_name", "echo"),
        ],
        b"",
    );
    stream.write_all(&call).await.unwrap();
    let mut reply = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply))
        .await
        .expect("a reply in time")
        .unwrap();
    assert_eq!((reply[1], &reply[2..4]), (0, &[0, 2][..]), "a response");
    assert_eq!(u32::from_be_bytes(reply[5..9].try_into().unwrap()), 78);
    assert_eq!(u16::from_be_bytes([reply[10], reply[11]]), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_run_costs_no_call() {
    let ((mut a_process, a), (_b, b)) = (provider("a").await, provider("b").await);
    let proxy = TestProxy::start(&config(a, b)).await;
    let addr = proxy.addr("rpc").await;
    let seen = output_lines_killing(
        node(&["client.js", &addr.to_string(), SERVICE, "echo", "300"]),
        &mut a_process,
        50,
    )
    .await;
    assert_eq!(
        seen.len(),
        300,
        "{:?}",
        &seen[seen.len().saturating_sub(5)..]
    );
    let failed: Vec<&String> = seen.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    assert!(seen[..50].iter().any(|l| l.starts_with("ok a:")));
    assert!(
        seen[200..].iter().all(|l| l.starts_with("ok b:")),
        "only b once a is dead (its last calls may still be in the pipe when it is killed)"
    );
}

/// One port, three protocols: chains matched on the protocol sniffed from the first
/// bytes send HTTP (curl, both HTTP/1.1 and HTTP/2's preface) to an HTTP manager and
/// Bolt (sofa-rpc-node) to the RPC proxy; bytes of no known protocol take the default
/// chain, a TCP proxy to an echo server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_http_and_bolt_by_sniffing_and_passes_other_bytes_to_tcp() {
    let ((_a, a), (_b, b)) = (provider("a").await, provider("b").await);
    let web = sinew_integration::Upstream::start("web").await;
    let echo = sinew_integration::echo_server().await;
    let yaml = format!(
        r#"
listeners:
- name: mixed
  address: 127.0.0.1:0
  inspect_timeout: 2s
  tcp: {{ cluster: echo_tcp }}
  chains:
  - match: {{ protocols: [http] }}
    http:
      virtual_hosts:
      - {{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, cluster: web }}] }}
  - match: {{ protocols: [bolt] }}
    rpc:
      protocol: bolt
      virtual_hosts:
      - {{ name: echo, domains: ["{SERVICE}"], routes: [{{ match: {{ prefix: / }}, cluster: echo }}] }}
clusters:
- {{ name: web, endpoints: [{{ address: "{web}" }}] }}
- {{ name: echo, endpoints: [{{ address: "{a}" }}, {{ address: "{b}" }}] }}
- {{ name: echo_tcp, endpoints: [{{ address: "{echo}" }}] }}
"#,
        web = web.addr
    );
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("mixed").await;

    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let out = sinew_integration::shell(format!(
            "curl -s -o /dev/null -w '%{{http_code}} %{{http_version}}' --max-time 5 {flag} http://{addr}/x"
        ))
        .await;
        let want = if flag == "--http1.1" {
            "200 1.1"
        } else {
            "200 2"
        };
        assert_eq!(out, want, "{flag}");
    }
    assert_eq!(web.requests(), 2);

    let lines = consume(addr, SERVICE, "echo", 2, "").await;
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{lines:?}");

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"\x00hello, no protocol").await.unwrap();
    let mut back = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(&back, b"\x00hello, no protocol");
}
