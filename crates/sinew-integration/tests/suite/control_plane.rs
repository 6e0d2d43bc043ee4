//! `sinew control` end to end over real gRPC: a real etcd as the registry, a watched
//! directory for services and listeners, and two Sinew proxies (one state of the world
//! over ADS, one delta over per-type streams), each running the listener that selects
//! its node. Also a real ZooKeeper, and, since no Kubernetes cluster can run here, a
//! stand-in API server serving recorded-format responses (`tests/kubernetes/`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sinew_integration::etcd_kit::Etcd;
use sinew_integration::zookeeper_kit::ZooKeeper;
use sinew_integration::{
    free_port, scratch_dir, sinew_binary, start_control, ChildGuard, TestClient, Upstream,
};

struct Mesh {
    dir: PathBuf,
    admin: SocketAddr,
    edges: [SocketAddr; 2],
    _control: ChildGuard,
    _proxies: Vec<ChildGuard>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listeners_yaml(edges: &[SocketAddr; 2], regex_on_first: Option<&str>) -> String {
    let first_route = match regex_on_first {
        Some(regex) => format!("{{path_regex: '{regex}', service: web}}"),
        None => "{prefix: /, service: web}".to_string(),
    };
    format!(
        "kind: Listener
name: edge-1
address: {}
nodes: [proxy-1]
routes: [{first_route}]
---
kind: Listener
name: edge-2
address: {}
nodes: [proxy-2]
routes: [{{prefix: /, service: web}}]
",
        edges[0], edges[1]
    )
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and config managers do, so a poll never sees half.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A proxy steered by the control planes at `xds` (replicas), as node `node`.
fn start_proxy(xds: &[String], node: &str, flags: &[&str]) -> ChildGuard {
    let mut command = Command::new(sinew_binary());
    command.arg("proxy");
    for url in xds {
        command.args(["--xds", url]);
    }
    let child = command
        .args(["--node-id", node])
        .args(flags)
        .stdout(Stdio::null())
        .spawn()
        .expect("start sinew proxy");
    ChildGuard(child)
}

fn start_mesh(etcd: &Etcd) -> Mesh {
    let dir = scratch_dir("control");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edges = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    write(
        &dir.join("services/web.yaml"),
        "kind: Service\nname: web\nconnect_timeout: 1s\nretries: {retry_on: [connect-failure], num_retries: 2}\n",
    );
    write(
        &dir.join("services/listeners.yaml"),
        &listeners_yaml(&edges, None),
    );
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("control.yaml"),
        &format!(
            "xds_address: {xds}
admin_address: {admin}
debounce: 100ms
registries:
  - directory: services
  - etcd: {{endpoints: ['{}'], prefix: /sinew/services/}}
",
            etcd.endpoint
        ),
    );
    let control = start_control(&dir.join("control.yaml"));
    // proxy-1: state of the world over ADS; proxy-2: delta over a stream per type.
    let xds = [format!("http://{xds}")];
    let proxies = vec![
        start_proxy(
            &xds,
            "proxy-1",
            &["--xds-variant", "sotw", "--xds-streams", "ads"],
        ),
        start_proxy(
            &xds,
            "proxy-2",
            &["--xds-variant", "delta", "--xds-streams", "per-type"],
        ),
    ];
    Mesh {
        dir,
        admin,
        edges,
        _control: control,
        _proxies: proxies,
    }
}

/// The body (trimmed) or the status each edge answers now.
async fn answers(edges: &[SocketAddr]) -> Vec<String> {
    let mut out = Vec::new();
    for edge in edges {
        out.push(match TestClient::http1().try_get(*edge, "/", &[]).await {
            Ok(r) if r.status == 200 => r.text().trim_end().to_string(),
            Ok(r) => r.status.as_u16().to_string(),
            Err(_) => "unreachable".into(),
        });
    }
    out
}

/// Waits until every edge answers `expected`; returns how long that took.
async fn until_all(edges: &[SocketAddr], expected: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < within {
        last = answers(edges).await;
        if last.iter().all(|a| a == expected) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("edges did not all answer {expected:?} within {within:?}; last: {last:?}");
}

async fn status(admin: SocketAddr) -> Value {
    let reply = TestClient::http1().get(admin, "/status", &[]).await;
    serde_json::from_slice(&reply.body).expect("status is JSON")
}

#[tokio::test]
async fn etcd_instances_take_traffic_within_a_second_and_leave_with_their_lease() {
    let etcd = Etcd::start();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mesh = start_mesh(&etcd);

    // No instances yet: both proxies run their listener and answer 503.
    until_all(&mesh.edges, "503", Duration::from_secs(15)).await;

    let lease = etcd.grant(60);
    let registered = Instant::now();
    etcd.put(
        "/sinew/services/web/a",
        &format!(
            r#"{{"address": "{}", "labels": {{"version": "v1"}}}}"#,
            a.addr
        ),
        Some(&lease),
    );
    until_all(&mesh.edges, "a", Duration::from_secs(5)).await;
    let took = registered.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "an etcd instance took {took:?} to take traffic"
    );

    etcd.put(
        "/sinew/services/web/b",
        &format!(r#"{{"address": "{}"}}"#, b.addr),
        None,
    );
    let revoked = Instant::now();
    etcd.revoke(&lease);
    until_all(&mesh.edges, "b", Duration::from_secs(5)).await;
    let left = revoked.elapsed();
    for _ in 0..20 {
        assert_eq!(answers(&mesh.edges).await, ["b", "b"]);
    }
    eprintln!("registered → serving: {took:?}; lease revoked → gone: {left:?}");

    // Every node ACKed what it was sent.
    let s = status(mesh.admin).await;
    for node in ["proxy-1", "proxy-2"] {
        for kind in ["CDS", "EDS", "LDS", "RDS"] {
            let t = &s["nodes"][node]["types"][kind];
            assert_eq!(t["sent"], t["acked"], "{node} {kind}: {s:#}");
            assert!(t["nack"].is_null(), "{node} {kind}: {s:#}");
        }
    }
}

#[tokio::test]
async fn a_bad_resource_is_nacked_and_the_old_config_keeps_serving() {
    let etcd = Etcd::start();
    let a = Upstream::start("a").await;
    let mesh = start_mesh(&etcd);
    etcd.put(
        "/sinew/services/web/a",
        &format!(r#"{{"address": "{}"}}"#, a.addr),
        None,
    );
    until_all(&mesh.edges, "a", Duration::from_secs(15)).await;

    // A regex the control plane passes through and the proxy cannot compile.
    write(
        &mesh.dir.join("services/listeners.yaml"),
        &listeners_yaml(&mesh.edges, Some("(unclosed")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let nack = loop {
        let s = status(mesh.admin).await;
        if let Some(message) = s["nodes"]["proxy-1"]["types"]["RDS"]["nack"].as_str() {
            break message.to_string();
        }
        assert!(Instant::now() < deadline, "no NACK from proxy-1: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        nack.starts_with(
            "route_configuration \"edge-1\": virtual_hosts[0].routes[0].match.path_regex"
        ),
        "{nack}"
    );
    for _ in 0..20 {
        assert_eq!(
            answers(&mesh.edges).await,
            ["a", "a"],
            "both still serve the last good config"
        );
    }
    let s = status(mesh.admin).await;
    assert!(
        s["nodes"]["proxy-2"]["types"]["RDS"]["nack"].is_null(),
        "proxy-2 was not sent the bad route: {s:#}"
    );

    // Fixed: accepted again.
    write(
        &mesh.dir.join("services/listeners.yaml"),
        &listeners_yaml(&mesh.edges, None),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(mesh.admin).await;
        let rds = &s["nodes"]["proxy-1"]["types"]["RDS"];
        if rds["nack"].is_null() && rds["sent"] == rds["acked"] {
            break;
        }
        assert!(Instant::now() < deadline, "the fix was not ACKed: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lines a child writes to stdout, collected by a thread.
fn collect_lines(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    lines_of(child.stdout.take().expect("stdout"))
}

/// Lines read from `output` (a child's stdout or stderr), collected by a thread.
fn lines_of(
    output: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Another implementation as the client: Python's grpcio with Envoy's own types decodes
/// what `sinew control` serves, NACKs a listener update (recorded, not resent), and
/// follows a change to an endpoint and to the listener.
#[tokio::test]
async fn a_python_xds_client_decodes_what_sinew_control_serves_and_its_nack_is_recorded() {
    let dir = scratch_dir("control-py");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let service = |port: u16| {
        format!("kind: Service\nname: web\nendpoints: [{{address: '127.0.0.1:{port}'}}]\n")
    };
    let listener = |port: u16| {
        format!("kind: Listener\nname: edge\naddress: 127.0.0.1:{port}\nroutes: [{{prefix: /, service: web}}]\n")
    };
    write(&dir.join("services/web.yaml"), &service(9001));
    write(
        &dir.join("services/api.yaml"),
        "kind: Service\nname: api\nendpoints: [{address: '127.0.0.1:9101'}]\n",
    );
    write(&dir.join("services/edge.yaml"), &listener(8001));
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("control.yaml"),
        &format!(
            "xds_address: {xds}\nadmin_address: {admin}\nregistries: [{{directory: services}}]\n"
        ),
    );
    let _control = start_control(&dir.join("control.yaml"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/xds/python_xds_client.py"
    );
    let mut child = Command::new("python3")
        .args([script, &xds.to_string(), "python-client", "LDS"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let lines = collect_lines(&mut child);
    let _client = ChildGuard(child);

    let wait_line = |what: &'static str, check: Box<dyn Fn(&str) -> bool>| {
        let lines = lines.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(l) = lines.lock().unwrap().iter().find(|l| check(l)) {
                    return l.clone();
                }
                assert!(
                    Instant::now() < deadline,
                    "no line {what}; got {:#?} (needs `pip install grpcio envoy-data-plane==2.2.0`, which scripts/test runs)",
                    lines.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let json_of = |kind: &'static str| {
        Box::new(move |l: &str| serde_json::from_str::<Value>(l).is_ok_and(|v| v["type"] == kind))
            as Box<dyn Fn(&str) -> bool>
    };
    let cds: Value = serde_json::from_str(&wait_line("CDS", json_of("CDS")).await).unwrap();
    assert_eq!(cds["clusters"], serde_json::json!(["api", "web"]));
    let eds: Value = serde_json::from_str(&wait_line("EDS", json_of("EDS")).await).unwrap();
    assert_eq!(
        eds["endpoints"],
        serde_json::json!({"api": ["127.0.0.1:9101"], "web": ["127.0.0.1:9001"]})
    );
    let lds: Value = serde_json::from_str(&wait_line("LDS", json_of("LDS")).await).unwrap();
    assert_eq!(lds["listeners"]["edge"], "127.0.0.1:8001");
    wait_line("NACKED LDS", Box::new(|l| l.starts_with("NACKED LDS"))).await;

    // The NACK is recorded by node and type, and the same version is not sent again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(admin).await;
        let lds_status = &s["nodes"]["python-client"]["types"]["LDS"];
        if lds_status["nack"]
            .as_str()
            .is_some_and(|m| m.starts_with("python refuses LDS"))
        {
            assert_eq!(lds_status["nacks"], 1, "{s:#}");
            assert_eq!(s["nodes"]["python-client"]["cluster"], "python");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the NACK was not recorded: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Changes reach the client: a new endpoint, then a new listener address, ACKed. The
    // endpoint change sends web's assignment alone: state of the world may leave out
    // the by-name resources that did not change, and the client keeps them.
    write(&dir.join("services/web.yaml"), &service(9002));
    let eds = wait_line(
        "EDS with 9002",
        Box::new(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["endpoints"]["web"] == serde_json::json!(["127.0.0.1:9002"]))
        }),
    )
    .await;
    let eds: Value = serde_json::from_str(&eds).unwrap();
    assert_eq!(
        eds["endpoints"],
        serde_json::json!({"web": ["127.0.0.1:9002"]}),
        "only the changed assignment is sent"
    );
    write(&dir.join("services/edge.yaml"), &listener(8002));
    wait_line(
        "LDS with 8002",
        Box::new(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["listeners"]["edge"] == "127.0.0.1:8002")
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(admin).await;
        let t = &s["nodes"]["python-client"]["types"]["LDS"];
        if t["nack"].is_null() && t["sent"] == t["acked"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new listener was not ACKed: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lds_responses = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| json_of("LDS")(l))
        .count();
    assert_eq!(
        lds_responses,
        2,
        "one LDS response per version: {:#?}",
        lines.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sinew control` following a real ZooKeeper (and a directory with one listener that
/// routes to Dubbo's `com.example.DemoService`), and a proxy it steers.
struct ZkMesh {
    dir: PathBuf,
    edge: SocketAddr,
    _control: ChildGuard,
    _proxy: ChildGuard,
}

impl Drop for ZkMesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const DEMO_PROVIDERS: &str = "/dubbo/com.example.DemoService/providers";

/// Starts the mesh and waits until the edge answers 503 (no provider yet).
async fn start_zk_mesh(zk: &ZooKeeper) -> ZkMesh {
    let dir = scratch_dir("control-zk");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("services/edge.yaml"),
        &format!("kind: Listener\nname: edge\naddress: {edge}\nroutes: [{{prefix: /, service: com.example.DemoService}}]\n"),
    );
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("control.yaml"),
        &format!(
            "xds_address: {xds}\nregistries:\n  - directory: services\n  - zookeeper: {{servers: ['{}']}}\n",
            zk.address
        ),
    );
    let control = start_control(&dir.join("control.yaml"));
    let proxy = start_proxy(&[format!("http://{xds}")], "consumer", &[]);
    until_all(&[edge], "503", Duration::from_secs(15)).await;
    ZkMesh {
        dir,
        edge,
        _control: control,
        _proxy: proxy,
    }
}

/// The node a Dubbo provider listening on `addr` registers: its URL, percent-encoded,
/// under the interface's `providers`.
fn dubbo_provider_node(addr: SocketAddr) -> String {
    let url = format!(
        "dubbo://{addr}/com.example.DemoService?anyhost=true&application=demo&version=1.0.0&weight=100"
    );
    sinew_integration::zookeeper_kit::dubbo_provider_node("com.example.DemoService", &url)
}

/// The persistent parents a Dubbo provider's registry creates before its own node.
fn create_dubbo_parents(zk: &ZooKeeper) {
    zk.cli(&[
        "create /dubbo \"\"",
        "create /dubbo/com.example.DemoService \"\"",
        &format!("create {DEMO_PROVIDERS} \"\""),
    ])
    .expect("zkCli create");
}

/// Dubbo's registry: a provider node written to a real ZooKeeper becomes an endpoint
/// that takes traffic through a proxy, and leaves when the node is deleted.
#[tokio::test]
async fn a_dubbo_provider_written_to_zookeeper_becomes_an_endpoint() {
    let zk = ZooKeeper::start();
    let provider = Upstream::start("provider").await;
    let mesh = start_zk_mesh(&zk).await;
    let path = dubbo_provider_node(provider.addr);
    create_dubbo_parents(&zk);
    zk.cli(&[&format!("create {path} \"\"")])
        .expect("zkCli create");
    until_all(&[mesh.edge], "provider", Duration::from_secs(10)).await;

    zk.cli(&[&format!("delete {path}")]).expect("zkCli delete");
    until_all(&[mesh.edge], "503", Duration::from_secs(10)).await;
}

/// As Dubbo registers: the provider's node is ephemeral, held by the provider's own
/// client session. Killing that client (a crash, a partition) leaves the node to the
/// server, which deletes it when the session expires; the endpoint leaves with it.
#[tokio::test]
async fn a_dubbo_providers_ephemeral_node_leaves_the_proxy_when_its_session_expires() {
    let zk = ZooKeeper::start();
    let provider = Upstream::start("provider").await;
    let mesh = start_zk_mesh(&zk).await;
    create_dubbo_parents(&zk);
    let mut session = zk.ephemeral(&dubbo_provider_node(provider.addr));
    until_all(&[mesh.edge], "provider", Duration::from_secs(10)).await;
    for _ in 0..10 {
        assert_eq!(answers(&[mesh.edge]).await, ["provider"]);
    }

    let killed = Instant::now();
    session.kill();
    // The session's 4 s timeout, then the server's next expiry check (a tick, 2 s).
    until_all(&[mesh.edge], "503", Duration::from_secs(20)).await;
    let gone = killed.elapsed();
    assert!(
        gone >= Duration::from_secs(3),
        "the node went before its session could have expired ({gone:?}): it was not ephemeral"
    );
    eprintln!("provider client killed → endpoint gone: {gone:?}");
}

/// The ZooKeeper server restarts under the registry's watch. Once it is back, changes
/// reach the proxy: the first may be seen by the read after reconnecting, the second
/// only by a watch that survived (or was set again).
#[tokio::test]
async fn the_zookeeper_registry_follows_changes_after_a_server_restart() {
    let mut zk = ZooKeeper::start();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let mesh = start_zk_mesh(&zk).await;
    create_dubbo_parents(&zk);
    let (path_a, path_b, path_c) = (
        dubbo_provider_node(a.addr),
        dubbo_provider_node(b.addr),
        dubbo_provider_node(c.addr),
    );
    zk.cli(&[&format!("create {path_a} \"\"")])
        .expect("zkCli create");
    until_all(&[mesh.edge], "a", Duration::from_secs(10)).await;

    zk.restart();
    // The proxy kept what it had while ZooKeeper was away.
    assert_eq!(answers(&[mesh.edge]).await, ["a"]);
    zk.cli(&[
        &format!("create {path_b} \"\""),
        &format!("delete {path_a}"),
    ])
    .expect("zkCli create, delete");
    until_all(&[mesh.edge], "b", Duration::from_secs(20)).await;
    let changed = Instant::now();
    zk.cli(&[
        &format!("create {path_c} \"\""),
        &format!("delete {path_b}"),
    ])
    .expect("zkCli create, delete");
    until_all(&[mesh.edge], "c", Duration::from_secs(10)).await;
    eprintln!(
        "a change after the restart reached the proxy in {:?}",
        changed.elapsed()
    );
}

/// A service's `rate_limit` reaches the proxies as its routes' own token bucket, and
/// leaves with the policy.
#[tokio::test]
async fn a_service_rate_limit_becomes_a_bucket_on_its_routes_in_every_proxy() {
    let a = Upstream::start("a").await;
    let dir = scratch_dir("control-rate-limit");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let service = |policy: &str| {
        format!(
            "kind: Service\nname: web\nendpoints: [{{address: '{}'}}]\n{policy}",
            a.addr
        )
    };
    // Refilled once a minute: the test sees the burst alone.
    write(
        &dir.join("services/web.yaml"),
        &service("rate_limit: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s}\n"),
    );
    write(
        &dir.join("services/edge.yaml"),
        &format!(
            "kind: Listener\nname: edge\naddress: {edge}\nroutes: [{{prefix: /, service: web}}]\n"
        ),
    );
    write(
        &dir.join("control.yaml"),
        &format!("xds_address: {xds}\nregistries: [{{directory: services}}]\n"),
    );
    let _control = start_control(&dir.join("control.yaml"));
    let _proxy = start_proxy(&[format!("http://{xds}")], "edge", &[]);
    // The first answer took one of the 3 tokens.
    until_all(&[edge], "a", Duration::from_secs(15)).await;
    let mut burst = Vec::new();
    for _ in 0..5 {
        burst.extend(answers(&[edge]).await);
    }
    assert_eq!(
        burst.iter().filter(|a| *a == "a").count(),
        2,
        "3 tokens in all: {burst:?}"
    );
    assert_eq!(&burst[3..], ["429", "429"], "{burst:?}");

    // Without the policy the route has no bucket.
    write(&dir.join("services/web.yaml"), &service(""));
    until_all(&[edge], "a", Duration::from_secs(15)).await;
    for _ in 0..10 {
        assert_eq!(answers(&[edge]).await, ["a"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replicas: two `sinew control` processes share nothing but the registries. A proxy
/// given both fails over when its replica dies, is sent nothing it already has (the
/// versions are content hashes, the same in both), and keeps taking changes.
#[tokio::test]
async fn a_proxy_fails_over_between_control_plane_replicas() {
    let etcd = Etcd::start();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = scratch_dir("control-replicas");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("services/edge.yaml"),
        &format!(
            "kind: Listener\nname: edge\naddress: {edge}\nroutes: [{{prefix: /, service: web}}]\n"
        ),
    );
    let mut replicas = Vec::new();
    let mut urls = Vec::new();
    let mut admins = Vec::new();
    for i in 0..2 {
        let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join(format!("control-{i}.yaml"));
        write(
            &config,
            &format!(
                "xds_address: {xds}\nadmin_address: {admin}\nregistries:\n  - directory: services\n  - etcd: {{endpoints: ['{}']}}\n",
                etcd.endpoint
            ),
        );
        replicas.push(Some(start_control(&config)));
        urls.push(format!("http://{xds}"));
        admins.push(admin);
    }
    etcd.put(
        "/sinew/services/web/a",
        &format!(r#"{{"address": "{}"}}"#, a.addr),
        None,
    );
    let _proxy = start_proxy(&urls, "edge", &[]);
    until_all(&[edge], "a", Duration::from_secs(15)).await;
    let first = status(admins[0]).await;
    assert_eq!(
        first["nodes"]["edge"]["streams"], 1,
        "the proxy uses the first replica: {first:#}"
    );

    replicas[0] = None; // the first replica dies
    for _ in 0..20 {
        assert_eq!(
            answers(&[edge]).await,
            ["a"],
            "the proxy serves on while it fails over"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let s = status(admins[1]).await;
        if s["nodes"]["edge"]["streams"] == 1
            && s["nodes"]["edge"]["types"]["EDS"]["acked"].is_string()
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not fail over: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for kind in ["CDS", "EDS", "LDS", "RDS"] {
        assert_eq!(
            first["nodes"]["edge"]["types"][kind]["acked"],
            second["nodes"]["edge"]["types"][kind]["acked"],
            "{kind}: both replicas serve the same version"
        );
    }

    etcd.put(
        "/sinew/services/web/b",
        &format!(r#"{{"address": "{}"}}"#, b.addr),
        None,
    );
    etcd.ctl(&["del", "/sinew/services/web/a"]).expect("del");
    until_all(&[edge], "b", Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sinew control` following `etcd` (services under `/sinew/services/`, a listener that
/// routes to `web`), its log lines collected, and one proxy it steers.
struct EtcdEdge {
    dir: PathBuf,
    edge: SocketAddr,
    control: ChildGuard,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _proxy: ChildGuard,
}

impl Drop for EtcdEdge {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts it and waits until the edge answers 503 (no instance yet).
async fn start_etcd_edge(etcd: &Etcd) -> EtcdEdge {
    let dir = scratch_dir("control-etcd");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("services/edge.yaml"),
        &format!(
            "kind: Listener\nname: edge\naddress: {edge}\nroutes: [{{prefix: /, service: web}}]\n"
        ),
    );
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("control.yaml"),
        &format!(
            "xds_address: {xds}\nregistries:\n  - directory: services\n  - etcd: {{endpoints: ['{}']}}\n",
            etcd.endpoint
        ),
    );
    let mut child = Command::new(sinew_binary())
        .args(["control", "-c"])
        .arg(dir.join("control.yaml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sinew control");
    let log = lines_of(child.stderr.take().expect("stderr"));
    let proxy = start_proxy(&[format!("http://{xds}")], "edge", &[]);
    until_all(&[edge], "503", Duration::from_secs(15)).await;
    EtcdEdge {
        dir,
        edge,
        control: ChildGuard(child),
        log,
        _proxy: proxy,
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to a process the test started.
fn signal(child: &ChildGuard, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {}", child.id());
}

fn instance(addr: SocketAddr) -> String {
    format!(r#"{{"address": "{addr}"}}"#)
}

/// The registry's watch falls behind and etcd compacts the history it has not read:
/// etcd cancels the watch with a compact revision, and only a new read of the prefix
/// shows what changed meanwhile. The control plane is paused (SIGSTOP) while a burst
/// of writes fills the watch's buffers (so etcd can no longer send to it and takes it
/// out of the synced watchers), then `a` leaves, `b` arrives and the history is
/// compacted; once resumed, the registry must re-read and converge on `b`.
#[tokio::test]
async fn an_etcd_watch_that_falls_behind_a_compaction_reads_the_prefix_again() {
    let etcd = Etcd::start();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mesh = start_etcd_edge(&etcd).await;
    etcd.put("/sinew/services/web/a", &instance(a.addr), None);
    until_all(&[mesh.edge], "a", Duration::from_secs(10)).await;

    signal(&mesh.control, "-STOP");
    // 400 revisions of 32 KiB: more than HTTP/2's window and etcd's per-stream queue
    // (128 responses) hold, so the watcher becomes a victim and then unsynced. The
    // values are not instances (each is logged and dropped), so the registry's work
    // once resumed stays small.
    let padding = "x".repeat(32 << 10);
    let burst: Vec<(String, String)> = (0..400)
        .map(|i| (format!("/sinew/services/burst/{i}"), padding.clone()))
        .collect();
    etcd.put_many(&burst);
    etcd.ctl(&["del", "/sinew/services/web/a"]).expect("del");
    etcd.put("/sinew/services/web/b", &instance(b.addr), None);
    let compacted = etcd.compact();
    signal(&mesh.control, "-CONT");

    let log = || mesh.log.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answers(&[mesh.edge]).await != ["b"] {
        assert!(
            Instant::now() < deadline,
            "the edge did not answer b within 30 s; control's log: {:#?}",
            log()
                .iter()
                .filter(|l| !l.contains("not an instance"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        log().iter().any(|l| l.contains("fell behind a compaction")),
        "the watch was not cancelled by the compaction at revision {compacted}, so this \
         test did not test it; control's log: {:#?}",
        log()
            .iter()
            .filter(|l| !l.contains("not an instance"))
            .collect::<Vec<_>>()
    );
    for _ in 0..10 {
        assert_eq!(answers(&[mesh.edge]).await, ["b"]);
    }
}

/// An etcd member restarts (killed, then started on the same data directory and port):
/// the registry reconnects, resumes its watch, and later registrations reach the proxy.
#[tokio::test]
async fn the_etcd_registry_reconnects_after_a_member_restart() {
    let mut etcd = Etcd::start();
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let mesh = start_etcd_edge(&etcd).await;
    etcd.put("/sinew/services/web/a", &instance(a.addr), None);
    until_all(&[mesh.edge], "a", Duration::from_secs(10)).await;

    etcd.restart();
    // The proxy kept what it had while etcd was away.
    assert_eq!(answers(&[mesh.edge]).await, ["a"]);
    etcd.put("/sinew/services/web/b", &instance(b.addr), None);
    etcd.ctl(&["del", "/sinew/services/web/a"]).expect("del");
    until_all(&[mesh.edge], "b", Duration::from_secs(20)).await;
    // By now the registry is connected again: this one comes through its watch.
    let registered = Instant::now();
    etcd.put("/sinew/services/web/c", &instance(c.addr), None);
    etcd.ctl(&["del", "/sinew/services/web/b"]).expect("del");
    until_all(&[mesh.edge], "c", Duration::from_secs(10)).await;
    eprintln!(
        "after the restart, a registration reached the proxy in {:?}",
        registered.elapsed()
    );
    let log = mesh.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l.contains("etcd registry")),
        "the registry did not notice the restart: {log:#?}"
    );
}

/// The fixture `tests/kubernetes/<name>` with every EndpointSlice's `http` port (and the
/// unnamed one) set to `port`, the port the test's pods listen on.
fn kubernetes_fixture(name: &str, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut value: Value = serde_json::from_str(&text).expect("fixture is JSON");
    // A list, a watch event, or one object.
    let objects: Vec<&mut Value> = if value.get("items").is_some() {
        value["items"]
            .as_array_mut()
            .expect("items")
            .iter_mut()
            .collect()
    } else if value.get("object").is_some() {
        vec![&mut value["object"]]
    } else {
        vec![&mut value]
    };
    for object in objects {
        for p in object
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if matches!(p["name"].as_str(), Some("http" | "")) {
                p["port"] = port.into();
            }
        }
    }
    value.to_string()
}

/// Waits until requests for `path` are answered by exactly the upstreams `expected`
/// (round robin, so a dozen requests reach each of them), then checks that it holds.
async fn until_served_by(edge: SocketAddr, path: &str, expected: &[&str], within: Duration) {
    let expected: std::collections::BTreeSet<String> =
        expected.iter().map(|s| s.to_string()).collect();
    let client = TestClient::http1();
    let round = || async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            seen.insert(match client.try_get(edge, path, &[]).await {
                Ok(r) if r.status == 200 => r.text().trim_end().to_string(),
                Ok(r) => r.status.as_u16().to_string(),
                Err(_) => "unreachable".into(),
            });
        }
        seen
    };
    let start = Instant::now();
    let mut last = round().await;
    while last != expected {
        assert!(
            start.elapsed() < within,
            "{path} was not served by {expected:?} within {within:?}; last: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = round().await;
    }
    for _ in 0..3 {
        assert_eq!(round().await, expected, "{path} after it settled");
    }
}

/// The Kubernetes registry against a stand-in API server: Services and EndpointSlices
/// listed from recorded-format responses become clusters and endpoints (multi-port and
/// single-port naming, not-ready endpoints left out, one namespace), then follow watch
/// events (a MODIFIED slice, a DELETED one) and a re-list after the watch expires.
#[tokio::test]
async fn kubernetes_endpoint_slices_become_endpoints_and_follow_the_watch() {
    use sinew_integration::eventually;
    use sinew_integration::kube_api_kit::KubeApi;
    // The pods: loopback addresses of their own, one port shared (as a slice's port is).
    let a = Upstream::start_on("a", "127.0.0.2:0".parse().unwrap()).await;
    let port = a.addr.port();
    let pod = |last: u8| SocketAddr::from(([127, 0, 0, last], port));
    let _b = Upstream::start_on("b", pod(3)).await;
    let c = Upstream::start_on("c", pod(4)).await;
    let _ratings = Upstream::start_on("ratings", pod(5)).await;
    let other_namespace = Upstream::start_on("other-namespace", pod(6)).await;
    let _d = Upstream::start_on("d", pod(7)).await;
    let api = KubeApi::start(
        &kubernetes_fixture("services.json", port),
        &kubernetes_fixture("endpointslices.json", port),
    )
    .await;

    let dir = scratch_dir("control-k8s");
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("services/edge.yaml"),
        &format!(
            "kind: Listener
name: edge
address: {edge}
routes:
  - {{prefix: /ratings, service: ratings.shop}}
  - {{prefix: /default, service: 'web.default'}}
  - {{prefix: /, service: 'web.shop:http'}}
"
        ),
    );
    let xds = SocketAddr::from(([127, 0, 0, 1], free_port()));
    write(
        &dir.join("control.yaml"),
        &format!(
            "xds_address: {xds}
registries:
  - directory: services
  - kubernetes: {{api_server: '{}', namespace: shop}}
",
            api.url
        ),
    );
    let _control = start_control(&dir.join("control.yaml"));
    let _proxy = start_proxy(&[format!("http://{xds}")], "edge", &[]);

    // (a) The listed slice's ready endpoints take traffic; `c` (not ready) does not.
    until_served_by(edge, "/", &["a", "b"], Duration::from_secs(15)).await;
    until_served_by(edge, "/ratings", &["ratings"], Duration::from_secs(5)).await;
    // `web` in namespace `default` is not followed: its route has no endpoints.
    until_served_by(edge, "/default", &["503"], Duration::from_secs(5)).await;
    assert_eq!(other_namespace.requests(), 0);
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.starts_with("/api/v1/namespaces/shop/services?")
                || r.starts_with("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?")),
        "only namespace shop is asked for: {requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("/endpointslices?")
            && r.contains("watch=true")
            && r.contains("labelSelector=kubernetes.io%2Fservice-name")),
        "slices are watched, only those that name a service: {requests:#?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || api.watching("services") == 1
            && api.watching("endpointslices") == 1)
        .await,
        "both kinds are watched: {:#?}",
        api.requests()
    );
    // A bookmark moves the watch's resource version on and changes nothing.
    api.bookmark();

    // (b) MODIFIED: `a` is terminating (not ready), `c` has become ready.
    api.push(&kubernetes_fixture("web-slice-modified.json", port));
    until_served_by(edge, "/", &["b", "c"], Duration::from_secs(10)).await;
    let served_by_a = a.requests();

    // A change the watch never sees (its history compacted): the watch is told
    // `410 Expired`, and only a new list shows `a` gone and its replacement `d` ready.
    let lists = |api: &KubeApi| {
        api.requests()
            .iter()
            .filter(|r| r.contains("/endpointslices?") && !r.contains("watch=true"))
            .count()
    };
    assert_eq!(lists(&api), 1);
    api.change_unwatched(&kubernetes_fixture("web-slice-replaced.json", port));
    until_served_by(edge, "/", &["b", "c", "d"], Duration::from_secs(15)).await;
    assert_eq!(lists(&api), 2, "{:#?}", api.requests());
    assert_eq!(a.requests(), served_by_a, "a left when it was not ready");
    assert!(c.requests() > 0);

    // (c) DELETED: the slice goes, and with it every endpoint of `web.shop:http`.
    assert!(
        eventually(Duration::from_secs(10), || api.watching("endpointslices")
            == 1)
        .await,
        "the slices are watched again after the re-list: {:#?}",
        api.requests()
    );
    api.push(&kubernetes_fixture("web-slice-deleted.json", port));
    until_served_by(edge, "/", &["503"], Duration::from_secs(10)).await;
    until_served_by(edge, "/ratings", &["ratings"], Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
