//! Dubbo through Sinew's RPC listener, between two independent implementations: the
//! providers and a consumer are Ant's `sofa-rpc-node` speaking Dubbo through
//! `dubbo-remoting` (npm, in `peers/dubbo`), the other consumer is `dubbo-ssl-python`
//! (PyPI). Calls are routed by interface, version and group, balanced, and retried past
//! a killed provider; the proxy's own errors reach both clients as Dubbo errors with
//! their text. One port also serves every protocol Sinew sniffs.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use sinew_integration::rpc_peers::{
    node_provider, output_lines, output_lines_killing, peer_command,
};
use sinew_integration::{ChildGuard, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "com.sinew.test.EchoService";

/// A provider of `SERVICE` at `version`, answering with `name:`.
async fn provider(name: &str, version: &str) -> (ChildGuard, SocketAddr) {
    node_provider("dubbo", "server.js", &[name, version]).await
}

/// Which consumer makes the calls.
#[derive(Clone, Copy, Debug)]
enum Client {
    /// sofa-rpc-node with dubbo-remoting.
    Node,
    /// dubbo-ssl-python.
    Python,
}

fn consumer(client: Client, addr: SocketAddr, call: &Call) -> Command {
    let count = call.count.to_string();
    let addr = addr.to_string();
    let mut args = vec![
        addr.as_str(),
        call.service,
        call.version,
        call.group,
        call.method,
        count.as_str(),
    ];
    match client {
        Client::Node => {
            args.insert(0, "client.js");
            args.push(call.arg);
            peer_command("dubbo", "node", &args)
        }
        Client::Python => {
            args.insert(0, "client.py");
            peer_command("dubbo", "python3", &args)
        }
    }
}

struct Call<'a> {
    service: &'a str,
    version: &'a str,
    group: &'a str,
    method: &'a str,
    count: usize,
    /// For `slow`: how long the provider waits (node consumer only).
    arg: &'a str,
}

impl<'a> Call<'a> {
    fn echo(version: &'a str, group: &'a str, count: usize) -> Self {
        Call {
            service: SERVICE,
            version,
            group,
            method: "echo",
            count,
            arg: "",
        }
    }
}

async fn run(client: Client, addr: SocketAddr, call: &Call<'_>) -> Vec<String> {
    output_lines(consumer(client, addr, call)).await
}

/// Routes by version (2.0.0 to `v2`) and group (`canary` to `canary`), a 300 ms
/// timeout for `slow`, retries on connect failure and reset for the rest.
fn config(v1: &[SocketAddr], v2: SocketAddr, canary: SocketAddr) -> String {
    let v1: String = v1.iter().map(|a| format!("{{address: '{a}'}}, ")).collect();
    format!(
        r#"
listeners:
- name: rpc
  address: 127.0.0.1:0
  rpc:
    protocol: dubbo
    virtual_hosts:
    - name: echo
      domains: ["{SERVICE}"]
      routes:
      - match: {{ prefix: /, headers: [{{ name: version, exact: "2.0.0" }}] }}
        cluster: v2
      - match: {{ prefix: /, headers: [{{ name: group, exact: canary }}] }}
        cluster: canary
      - match: {{ path: /slow }}
        cluster: v1
        timeout: 300ms
      - match: {{ prefix: / }}
        cluster: v1
        retry: {{ retry_on: [connect-failure, reset], num_retries: 2, base_backoff: 5ms }}
clusters:
- {{ name: v1, lb: round_robin, endpoints: [{v1}] }}
- {{ name: v2, endpoints: [{{ address: "{v2}" }}] }}
- {{ name: canary, endpoints: [{{ address: "{canary}" }}] }}
"#
    )
}

fn all_from(lines: &[String], names: &[&str]) -> bool {
    lines
        .iter()
        .all(|l| names.iter().any(|n| l.starts_with(&format!("ok {n}:"))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_calls_are_routed_by_interface_version_and_group_and_balanced() {
    let (_a, a) = provider("a", "1.0.0").await;
    let (_b, b) = provider("b", "1.0.0").await;
    let (_c, c) = provider("c", "2.0.0").await;
    let (_d, d) = provider("d", "1.0.0").await;
    let proxy = TestProxy::start(&config(&[a, b], c, d)).await;
    let addr = proxy.addr("rpc").await;

    for client in [Client::Node, Client::Python] {
        let lines = run(client, addr, &Call::echo("1.0.0", "", 6)).await;
        assert_eq!(lines.len(), 6, "{client:?}: {lines:?}");
        assert!(all_from(&lines, &["a", "b"]), "{client:?}: {lines:?}");
        for (i, l) in lines.iter().enumerate() {
            assert!(
                l.ends_with(&format!(":hi{i}")),
                "{client:?}: the call's own answer: {l}"
            );
        }
        assert!(
            lines.iter().any(|l| l.starts_with("ok a:")),
            "{client:?}: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("ok b:")),
            "{client:?}: {lines:?}"
        );

        let lines = run(client, addr, &Call::echo("2.0.0", "", 3)).await;
        assert!(
            lines.len() == 3 && all_from(&lines, &["c"]),
            "{client:?}: {lines:?}"
        );

        let lines = run(client, addr, &Call::echo("1.0.0", "canary", 3)).await;
        assert!(
            lines.len() == 3 && all_from(&lines, &["d"]),
            "{client:?}: {lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_exceptions_timeouts_and_missing_routes_reach_both_clients_as_dubbo_errors() {
    let (_a, a) = provider("a", "1.0.0").await;
    let (_c, c) = provider("c", "2.0.0").await;
    let proxy = TestProxy::start(&config(&[a], c, a)).await;
    let addr = proxy.addr("rpc").await;

    for client in [Client::Node, Client::Python] {
        let fail = Call {
            method: "fail",
            ..Call::echo("1.0.0", "", 1)
        };
        let lines = run(client, addr, &fail).await;
        assert!(
            lines.len() == 1 && lines[0].starts_with("error ") && lines[0].contains("failed: hi0"),
            "{client:?}: {lines:?}"
        );

        let nowhere = Call {
            service: "com.sinew.test.Nowhere",
            ..Call::echo("1.0.0", "", 2)
        };
        let lines = run(client, addr, &nowhere).await;
        assert_eq!(lines.len(), 2, "{client:?}: {lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("error ") && l.contains("sinew: no route")),
            "{client:?}: the proxy's text reaches the client: {lines:?}"
        );
    }

    // The route's 300 ms timeout, long before the consumer's own 3 s.
    let slow = |ms| Call {
        method: "slow",
        arg: ms,
        ..Call::echo("1.0.0", "", 1)
    };
    let started = std::time::Instant::now();
    let lines = run(Client::Node, addr, &slow("2000")).await;
    assert!(
        lines[0].starts_with("error ") && lines[0].contains("sinew: no response"),
        "{lines:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    let lines = run(Client::Node, addr, &slow("10")).await;
    assert!(lines[0].starts_with("ok a:slow"), "{lines:?}");
}

/// One Dubbo message off `stream`: its head and body.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> ([u8; 16], Vec<u8>) {
    let mut head = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .unwrap();
    let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.unwrap();
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_unroutable_calls_are_answered_by_the_proxy_with_their_ids() {
    let (_a, a) = provider("a", "1.0.0").await;
    let proxy = TestProxy::start(&config(&[a], a, a)).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr("rpc").await)
        .await
        .unwrap();

    let id = 0x0102_0304_0506_0777;
    stream
        .write_all(&sinew_codec::dubbo::encode_heartbeat(id))
        .await
        .unwrap();
    let (head, body) = read_frame(&mut stream).await;
    // A response with the event bit, status OK, the heartbeat's id, a null body.
    assert_eq!(&head[..4], &[0xda, 0xbb, 0x22, 20]);
    assert_eq!(u64::from_be_bytes(head[4..12].try_into().unwrap()), id);
    assert_eq!(body, b"N");

    let call = sinew_codec::dubbo::encode_request(
        78,
        true,
        "com.sinew.test.Nowhere",
        "1.0.0",
        "echo",
        &["x"],
        &[],
    );
    stream.write_all(&call).await.unwrap();
    let (head, body) = read_frame(&mut stream).await;
    assert_eq!(&head[..4], &[0xda, 0xbb, 0x02, 60], "SERVICE_NOT_FOUND");
    assert_eq!(u64::from_be_bytes(head[4..12].try_into().unwrap()), 78);
    assert!(String::from_utf8_lossy(&body).contains("sinew: no route"));

    // A routed call on the same connection reaches the provider and its answer comes
    // back with the client's id.
    let call =
        sinew_codec::dubbo::encode_request(79, true, SERVICE, "1.0.0", "echo", &["raw"], &[]);
    stream.write_all(&call).await.unwrap();
    let (head, body) = read_frame(&mut stream).await;
    assert_eq!(&head[..4], &[0xda, 0xbb, 0x02, 20], "OK");
    assert_eq!(u64::from_be_bytes(head[4..12].try_into().unwrap()), 79);
    assert!(String::from_utf8_lossy(&body).contains("a:raw"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_run_costs_no_call() {
    let (mut a_process, a) = provider("a", "1.0.0").await;
    let (_b, b) = provider("b", "1.0.0").await;
    let proxy = TestProxy::start(&config(&[a, b], b, b)).await;
    let addr = proxy.addr("rpc").await;
    let seen = output_lines_killing(
        consumer(Client::Node, addr, &Call::echo("1.0.0", "", 300)),
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
        "only b once a is dead"
    );
}

/// One port, every protocol Sinew sniffs: HTTP (curl, HTTP/1.1 and HTTP/2's preface),
/// SOFA Bolt (sofa-rpc-node), Dubbo (both clients) and Redis (redis-cli), each to its
/// own chain; bytes of none of them take the default chain, a TCP proxy to an echo
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_http_bolt_dubbo_and_redis_by_sniffing_and_passes_other_bytes_to_tcp() {
    let (_bolt, bolt) = node_provider("bolt", "server.js", &["bolt"]).await;
    let (_dubbo, dubbo) = provider("dubbo", "1.0.0").await;
    let redis = sinew_integration::redis_kit::RedisServer::start();
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
      - {{ name: echo, domains: ["{SERVICE}"], routes: [{{ match: {{ prefix: / }}, cluster: bolt }}] }}
  - match: {{ protocols: [dubbo] }}
    rpc:
      protocol: dubbo
      virtual_hosts:
      - {{ name: echo, domains: ["{SERVICE}"], routes: [{{ match: {{ prefix: / }}, cluster: dubbo }}] }}
  - match: {{ protocols: [redis] }}
    redis: {{ catch_all_cluster: cache }}
clusters:
- {{ name: web, endpoints: [{{ address: "{web}" }}] }}
- {{ name: bolt, endpoints: [{{ address: "{bolt}" }}] }}
- {{ name: dubbo, endpoints: [{{ address: "{dubbo}" }}] }}
- {{ name: cache, endpoints: [{{ address: "{redis}" }}] }}
- {{ name: echo_tcp, endpoints: [{{ address: "{echo}" }}] }}
"#,
        web = web.addr,
        redis = redis.addr,
    );
    let proxy = TestProxy::start(&yaml).await;
    let addr = proxy.addr("mixed").await;

    for (flag, want) in [
        ("--http1.1", "200 1.1"),
        ("--http2-prior-knowledge", "200 2"),
    ] {
        let out = sinew_integration::shell(format!(
            "curl -s -o /dev/null -w '%{{http_code}} %{{http_version}}' --max-time 5 {flag} http://{addr}/x"
        ))
        .await;
        assert_eq!(out, want, "{flag}");
    }
    assert_eq!(web.requests(), 2);

    let bolt_lines = output_lines(peer_command(
        "bolt",
        "node",
        &["client.js", &addr.to_string(), SERVICE, "echo", "2"],
    ))
    .await;
    assert!(
        all_from(&bolt_lines, &["bolt"]) && bolt_lines.len() == 2,
        "{bolt_lines:?}"
    );

    for client in [Client::Node, Client::Python] {
        let lines = run(client, addr, &Call::echo("1.0.0", "", 2)).await;
        assert!(
            all_from(&lines, &["dubbo"]) && lines.len() == 2,
            "{client:?}: {lines:?}"
        );
    }

    let cli = move |args: &[&str]| sinew_integration::redis_kit::cli(addr, args);
    assert_eq!(
        tokio::task::spawn_blocking(move || cli(&["SET", "sniffed", "yes"]))
            .await
            .unwrap(),
        "OK"
    );
    assert_eq!(
        redis.command(&["GET", "sniffed"]),
        "yes",
        "the SET reached the server"
    );

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"\x00hello, no protocol").await.unwrap();
    let mut back = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .unwrap();
    assert_eq!(&back, b"\x00hello, no protocol");
}

/// Envoy's Dubbo proxy filter in a bootstrap, run by the sinew binary: a route
/// configuration for version 2.0.0 of the interface, then one for the interface at any
/// version, as Envoy tries them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_dubbo_proxy_bootstrap_routes_by_interface_and_version() {
    use sinew_integration::envoy_kit::{bootstrap_of, network_listener, start};
    let (_a, a) = provider("a", "1.0.0").await;
    let (_c, c) = provider("c", "2.0.0").await;
    let (port, admin) = (
        sinew_integration::free_port(),
        sinew_integration::free_port(),
    );
    let listener = network_listener(
        "dubbo",
        port,
        "envoy.filters.network.dubbo_proxy",
        "type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy",
        &format!(
            r#"          route_config:
          - name: v2
            interface: {SERVICE}
            version: 2.0.0
            routes: [{{ match: {{ method: {{ name: {{ prefix: "" }} }} }}, route: {{ cluster: v2 }} }}]
          - name: any
            interface: "*.EchoService"
            routes: [{{ match: {{ method: {{ name: {{ exact: echo }} }} }}, route: {{ cluster: v1 }} }}]
          dubbo_filters: [{{ name: envoy.filters.dubbo.router }}]
"#
        ),
    );
    let dir = sinew_integration::scratch_dir("envoy-dubbo");
    let file = dir.join("envoy.yaml");
    std::fs::write(
        &file,
        bootstrap_of(&listener, &[("v1", a), ("v2", c)], admin),
    )
    .unwrap();
    let _proxy = start(&file, admin).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for client in [Client::Node, Client::Python] {
        let lines = run(client, addr, &Call::echo("2.0.0", "", 2)).await;
        assert!(
            lines.len() == 2 && all_from(&lines, &["c"]),
            "{client:?}: {lines:?}"
        );
        let lines = run(client, addr, &Call::echo("1.0.0", "", 2)).await;
        assert!(
            lines.len() == 2 && all_from(&lines, &["a"]),
            "{client:?}: {lines:?}"
        );
        // Only `echo` is routed at 1.0.0: `fail` has no route.
        let fail = Call {
            method: "fail",
            ..Call::echo("1.0.0", "", 1)
        };
        let lines = run(client, addr, &fail).await;
        assert!(
            lines[0].contains("sinew: no route"),
            "{client:?}: {lines:?}"
        );
    }
}

/// The provider URL a Java Dubbo provider of `SERVICE` at `version` on `addr` writes to
/// ZooKeeper, as its node's path (percent-encoded under the interface's `providers`).
fn zookeeper_provider_node(addr: SocketAddr, version: &str, group: &str) -> String {
    let url = format!(
        "dubbo://{addr}/{SERVICE}?anyhost=true&application=echo&dubbo=2.0.2&group={group}&interface={SERVICE}&methods=echo,fail,slow&side=provider&version={version}&weight=100"
    );
    sinew_integration::zookeeper_kit::dubbo_provider_node(SERVICE, &url)
}

/// `sinew control` following Dubbo's registry in a real ZooKeeper: providers that
/// register there (ephemeral nodes, as Dubbo writes them) are reached over Dubbo through
/// a proxy it steers over xDS, by the version and group of each call, and a provider
/// whose session ends leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinew_control_routes_dubbo_calls_to_the_providers_registered_in_zookeeper() {
    use sinew_integration::zookeeper_kit::ZooKeeper;
    let zk = ZooKeeper::start();
    let (_a, a) = provider("a", "1.0.0").await;
    let (_c, c) = provider("c", "2.0.0").await;
    let (_d, d) = provider("d", "1.0.0").await;
    let dir = sinew_integration::scratch_dir("control-dubbo");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    let xds = SocketAddr::from(([127, 0, 0, 1], sinew_integration::free_port()));
    std::fs::write(
        dir.join("services/rpc.yaml"),
        format!("kind: Listener\nname: rpc\naddress: {edge}\ndubbo: [{SERVICE}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("control.yaml"),
        format!(
            "xds_address: {xds}\nregistries:\n  - directory: services\n  - zookeeper: {{servers: ['{}']}}\n",
            zk.address
        ),
    )
    .unwrap();
    zk.cli(&[
        "create /dubbo \"\"",
        &format!("create /dubbo/{SERVICE} \"\""),
        &format!("create /dubbo/{SERVICE}/providers \"\""),
    ])
    .expect("zkCli create");
    let _sessions = [
        zk.ephemeral(&zookeeper_provider_node(a, "1.0.0", "")),
        zk.ephemeral(&zookeeper_provider_node(c, "2.0.0", "")),
    ];
    let mut canary = zk.ephemeral(&zookeeper_provider_node(d, "1.0.0", "canary"));
    let _control = sinew_integration::start_control(&dir.join("control.yaml"));
    let _proxy = ChildGuard(
        Command::new(sinew_integration::sinew_binary())
            .args([
                "proxy",
                "--xds",
                &format!("http://{xds}"),
                "--node-id",
                "consumer",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start sinew proxy"),
    );
    // The listener opens once the control plane has read ZooKeeper and sent it.
    let ready = sinew_integration::eventually(Duration::from_secs(20), || {
        std::net::TcpStream::connect(edge).is_ok()
    })
    .await;
    assert!(ready, "the Dubbo listener never opened");

    for client in [Client::Node, Client::Python] {
        let lines = run(client, edge, &Call::echo("1.0.0", "", 3)).await;
        assert!(
            lines.len() == 3 && all_from(&lines, &["a"]),
            "{client:?}: {lines:?}"
        );
        let lines = run(client, edge, &Call::echo("2.0.0", "", 3)).await;
        assert!(
            lines.len() == 3 && all_from(&lines, &["c"]),
            "{client:?}: {lines:?}"
        );
        let lines = run(client, edge, &Call::echo("1.0.0", "canary", 3)).await;
        assert!(
            lines.len() == 3 && all_from(&lines, &["d"]),
            "{client:?}: {lines:?}"
        );
    }

    // The canary provider's session ends: its node goes, and so do its calls' route.
    canary.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let lines = run(Client::Node, edge, &Call::echo("1.0.0", "canary", 1)).await;
        if lines[0].starts_with("error ") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the canary never left: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
