//! DNS re-resolution against a real DNS server: Debian's dnsmasq on a loopback port
//! answers for a name from a hosts file that the test rewrites (then SIGHUPs dnsmasq), and
//! a `dns` cluster that names that server in `dns_resolvers` sends its traffic wherever
//! the answer now points. The name (under `.test`, reserved) is known to dnsmasq alone, so
//! the system resolver could not have answered it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::probe::{reached_ok, set, wait_for};
use sinew_integration::{free_port, scratch_dir, ChildGuard, TestClient, TestProxy, Upstream};

const NAME: &str = "svc.sinew.test";

/// dnsmasq answering from `hosts` only, on 127.0.0.1:`port` (UDP and TCP), logging every
/// query to `log`.
struct Dnsmasq {
    address: SocketAddr,
    hosts: PathBuf,
    log: PathBuf,
    child: ChildGuard,
}

impl Dnsmasq {
    async fn start(dir: &Path, hosts: &str) -> Dnsmasq {
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let log = dir.join("dnsmasq.log");
        let port = free_port();
        let child = Command::new("dnsmasq")
            .arg(format!("--port={port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-daemon", "--no-resolv", "--no-hosts"])
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            // Authoritative for the test's domain: a name or type it lacks is a plain
            // "no such record", not REFUSED for want of an upstream server.
            .arg("--local=/sinew.test/")
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .args(["--log-queries", "--log-facility=-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `dnsmasq` ({e}): install Debian's package `dnsmasq-base` (scripts/test does)")
            });
        let dnsmasq = Dnsmasq {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            hosts: hosts_file,
            log,
            child: ChildGuard(child),
        };
        // It binds UDP and TCP together, after reading the hosts file: a TCP connect
        // means it answers.
        wait_for("dnsmasq listens", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(dnsmasq.address)
                .await
                .is_ok()
        })
        .await;
        dnsmasq
    }

    /// Replaces the hosts file and makes dnsmasq read it again.
    fn answer(&self, hosts: &str) {
        let tmp = self.hosts.with_extension("tmp");
        std::fs::write(&tmp, hosts).unwrap();
        std::fs::rename(&tmp, &self.hosts).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "SIGHUP to dnsmasq");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_cluster_follows_a_real_dns_servers_changing_answer() {
    // Two upstreams on one port at two loopback addresses: DNS gives the address, the
    // cluster's endpoint the port.
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.2:0")
        .port();
    let a = Upstream::start_on("a", SocketAddr::from(([127, 0, 0, 2], port))).await;
    let b = Upstream::start_on("b", SocketAddr::from(([127, 0, 0, 3], port))).await;

    let dir = scratch_dir("dns");
    let dns = Dnsmasq::start(&dir, &format!("127.0.0.2 {NAME}\n")).await;
    assert!(
        tokio::net::lookup_host(format!("{NAME}:{port}"))
            .await
            .is_err(),
        "the system resolver knows {NAME}: the test could not tell who answered"
    );

    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: svc
clusters:
  - name: svc
    type: dns
    dns_refresh: 200ms
    dns_resolvers: ['{server}']
    endpoints: [{{address: '{NAME}:{port}'}}]
",
        server = dns.address,
    ))
    .await;
    let addr = proxy.addr("web").await;
    let client = TestClient::http1();
    // The cluster was resolved before the listener took traffic.
    assert_eq!(reached_ok(&client, addr, 4).await, set(&["a"]));
    assert!(
        dns.log()
            .contains(&format!("query[A] {NAME} from 127.0.0.1")),
        "dnsmasq was not asked:\n{}",
        dns.log()
    );

    // The answer moves to b: traffic follows within a few refreshes.
    dns.answer(&format!("127.0.0.3 {NAME}\n"));
    wait_for("traffic moves to b", Duration::from_secs(5), || async {
        reached_ok(&client, addr, 4).await == set(&["b"])
    })
    .await;

    // Both addresses: both endpoints, round robin.
    dns.answer(&format!("127.0.0.2 {NAME}\n127.0.0.3 {NAME}\n"));
    wait_for(
        "traffic spreads over a and b",
        Duration::from_secs(5),
        || async { reached_ok(&client, addr, 4).await == set(&["a", "b"]) },
    )
    .await;

    // The name goes away: resolving fails, and the last answer keeps serving.
    dns.answer("");
    wait_for(
        "two refreshes asked dnsmasq in vain",
        Duration::from_secs(5),
        || async {
            let log = dns.log();
            let after_fourth_read = log.match_indices("read ").nth(3).map(|(i, _)| &log[i..]);
            after_fourth_read.is_some_and(|l| l.matches(&format!("query[A] {NAME}")).count() >= 2)
        },
    )
    .await;
    assert_eq!(reached_ok(&client, addr, 4).await, set(&["a", "b"]));
    assert_eq!(
        (a.requests() > 0, b.requests() > 0),
        (true, true),
        "both upstreams served"
    );
    drop(dns);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Envoy bootstrap with a LOGICAL_DNS cluster asking dnsmasq (c-ares `resolvers`):
/// one endpoint at a time, the first address of the family it asks for, moving when the
/// answer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstraps_logical_dns_cluster_follows_the_first_address_of_its_family() {
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.2:0")
        .port();
    let a = Upstream::start_on("a", SocketAddr::from(([127, 0, 0, 2], port))).await;
    let b = Upstream::start_on("b", SocketAddr::from(([127, 0, 0, 3], port))).await;
    let dir = scratch_dir("logical-dns");
    let dns = Dnsmasq::start(&dir, &format!("127.0.0.2 {NAME}\n")).await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bootstrap = dir.join("envoy.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ['*']
              routes:
              - match: {{prefix: /}}
                route: {{cluster: svc}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: svc
    type: logical_dns
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 0.2s
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers:
        - socket_address: {{address: 127.0.0.1, port_value: {dns_port}}}
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: {NAME}, port_value: {port}}}}}
",
            listen_port = listen.port(),
            dns_port = dns.address.port(),
        ),
    )
    .unwrap();
    let _proxy = sinew_integration::start_proxy_file(&bootstrap);
    wait_for("the proxy listens", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(listen).await.is_ok()
    })
    .await;
    let client = TestClient::http1();
    // The cluster was resolved before the listener took traffic.
    assert_eq!(reached_ok(&client, listen, 4).await, set(&["a"]));

    // An IPv6 address first and b after it: V4_ONLY skips the IPv6 one (nothing listens
    // on ::1 at that port), and the one endpoint moves to b.
    dns.answer(&format!("::1 {NAME}\n127.0.0.3 {NAME}\n"));
    wait_for("traffic moves to b", Duration::from_secs(5), || async {
        reached_ok(&client, listen, 4).await == set(&["b"])
    })
    .await;

    // Two IPv4 addresses: still one endpoint, not two (STRICT_DNS would spread).
    dns.answer(&format!("127.0.0.2 {NAME}\n127.0.0.3 {NAME}\n"));
    wait_for(
        "dnsmasq is asked after the two-address answer",
        Duration::from_secs(5),
        || async {
            let log = dns.log();
            let after_third_read = log.match_indices("read ").nth(2).map(|(i, _)| &log[i..]);
            after_third_read.is_some_and(|l| l.matches(&format!("query[A] {NAME}")).count() >= 2)
        },
    )
    .await;
    let reached = reached_ok(&client, listen, 8).await;
    assert_eq!(reached.len(), 1, "one endpoint at a time: {reached:?}");
    assert!(a.requests() > 0 && b.requests() > 0);
    drop(dns);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dns_resolvers_must_be_addresses_on_a_dns_cluster() {
    let dir = scratch_dir("dns-validate");
    let file = dir.join("proxy.yaml");
    std::fs::write(
        &file,
        "listeners: []
clusters:
  - name: by-name
    type: dns
    dns_resolvers: ['127.0.0.1:53', 'localhost:53']
    endpoints: [{address: 'svc.sinew.test:80'}]
  - name: by-address
    dns_resolvers: ['127.0.0.1:53']
    endpoints: [{address: '127.0.0.1:80'}]
",
    )
    .unwrap();
    let out = Command::new(sinew_integration::sinew_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run sinew validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(":5:")
            && stderr.contains("clusters[0].dns_resolvers[1]")
            && stderr.contains("\"localhost:53\" is not ip:port"),
        "{stderr}"
    );
    assert!(
        stderr.contains("clusters[1].dns_resolvers")
            && stderr.contains("only a `dns` or `logical_dns` cluster"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
