//! Per-service authorization policies from `sinew control`, over real sockets: a
//! control plane running the mesh CA and following a services file; an `api` proxy whose
//! listeners (HTTP and TCP, terminating mTLS) come from it over xDS with the policies as
//! Envoy RBAC; and two callers, `web` and `batch`, each a `sinew proxy` holding an SVID
//! from the CA and calling `api` over mesh mTLS. Allowed and denied per service (403
//! for HTTP, a closed connection for TCP), a live edit of the services file flipping the
//! decisions on the running proxy, a bad policy refused at its line and column while
//! the last good one keeps deciding, and the CA's admin view checked against the
//! certificates it actually issued (read with Python's `cryptography`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sinew_integration::tls_kit::TempDir;
use sinew_integration::{free_port, shell, sinew_binary, ChildGuard, TestClient, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TRUST_DOMAIN: &str = "cluster.local";
const API_ID: &str = "spiffe://cluster.local/ns/shop/sa/api";
const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";
const BATCH_ID: &str = "spiffe://cluster.local/ns/shop/sa/batch";

use crate::mesh_kit::{start_mesh_proxy, tokens, wait_for_port};

/// A caller: HTTP and TCP listeners whose clusters reach `api` over mesh mTLS.
fn caller_config(http: u16, tcp: u16, api_http: u16, api_tcp: u16) -> String {
    format!(
        "listeners:
  - name: out
    address: 127.0.0.1:{http}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: to-api
  - name: out-tcp
    address: 127.0.0.1:{tcp}
    tcp: {{cluster: to-api-tcp}}
clusters:
  - name: to-api
    mtls: {{identities: ['{API_ID}']}}
    endpoints: [{{address: 127.0.0.1:{api_http}}}]
  - name: to-api-tcp
    mtls: {{identities: ['{API_ID}']}}
    endpoints: [{{address: 127.0.0.1:{api_tcp}}}]
"
    )
}

struct Files<'a> {
    orders: SocketAddr,
    catalog: SocketAddr,
    echo: SocketAddr,
    api_http: u16,
    api_tcp: u16,
    cert: &'a Path,
    key: &'a Path,
    client_ca: &'a Path,
}

/// The services file: `orders_from` may call orders, `ledger_from` may open ledger
/// connections, batch may not reach catalog's admin pages; `bad` spoils orders' policy.
fn services_yaml(f: &Files, orders_from: &str, ledger_from: &str, bad: bool) -> String {
    let principal = |id: &str| id.trim_start_matches("spiffe://").to_string();
    let ip_blocks = if bad { "10.0.0.0/40" } else { "127.0.0.0/8" };
    let tls = format!(
        "{{cert: '{}', key: '{}', client_ca: '{}', require_client_certificate: true}}",
        f.cert.display(),
        f.key.display(),
        f.client_ca.display()
    );
    format!(
        "kind: Service
name: orders
endpoints: [{{address: '{orders}'}}]
authorization:
  policies:
    - name: callers
      rules:
        - from: [{{source: {{principals: ['{orders_from}'], ip_blocks: [{ip_blocks}]}}}}]
---
kind: Service
name: catalog
endpoints: [{{address: '{catalog}'}}]
authorization:
  policies:
    - name: no-batch-admin
      action: DENY
      rules:
        - from: [{{source: {{principals: ['{batch}']}}}}]
          to: [{{operation: {{paths: ['/catalog/admin/*']}}}}]
---
kind: Service
name: ledger
endpoints: [{{address: '{echo}'}}]
authorization:
  policies:
    - name: writers
      rules:
        - from: [{{source: {{principals: ['{ledger_from}']}}}}]
---
kind: Listener
name: inbound
address: 127.0.0.1:{api_http}
nodes: [api]
tls: {tls}
routes:
  - {{prefix: /orders, service: orders}}
  - {{prefix: /catalog, service: catalog}}
---
kind: Listener
name: inbound-tcp
address: 127.0.0.1:{api_tcp}
nodes: [api]
tls: {tls}
tcp: ledger
",
        orders = f.orders,
        catalog = f.catalog,
        echo = f.echo,
        orders_from = principal(orders_from),
        ledger_from = principal(ledger_from),
        batch = principal(BATCH_ID),
        api_http = f.api_http,
        api_tcp = f.api_tcp,
    )
}

fn write_replacing(to: &Path, text: &str) {
    let staged = to.with_extension("staged");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// `200 orders`, `403 RBAC: access denied`, or what failed.
async fn call(addr: SocketAddr, path: &str) -> String {
    match TestClient::http1().try_get(addr, path, &[]).await {
        Ok(r) => format!("{} {}", r.status.as_u16(), r.text().trim_end()),
        Err(e) => format!("error {e}"),
    }
}

/// Whether a TCP connection through `addr` echoes (true) or is closed (false).
async fn tcp_echoes(addr: SocketAddr) -> bool {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"ping\n").await.ok()?;
        let mut buf = [0u8; 5];
        tcp.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"ping\n")
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("a TCP connection neither echoed nor was closed within 10 s")
        .unwrap_or(false)
}

/// What each caller gets now, as `web:<answer> batch:<answer>` pairs.
struct Callers {
    web: (SocketAddr, SocketAddr),
    batch: (SocketAddr, SocketAddr),
}

impl Callers {
    async fn http(&self, path: &str) -> (String, String) {
        (call(self.web.0, path).await, call(self.batch.0, path).await)
    }

    async fn tcp(&self) -> (bool, bool) {
        (tcp_echoes(self.web.1).await, tcp_echoes(self.batch.1).await)
    }

    /// Polls until `path` answers `want` to both callers (up to `within`).
    async fn until_http(&self, path: &str, want: (&str, &str), within: Duration) {
        let until = tokio::time::Instant::now() + within;
        let mut last = (String::new(), String::new());
        while tokio::time::Instant::now() < until {
            last = self.http(path).await;
            if (last.0.as_str(), last.1.as_str()) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path}: wanted {want:?} within {within:?}, last {last:?}");
    }
}

/// A certificate's facts as Python's `cryptography` reads them.
async fn python_facts(pem: &Path) -> Value {
    let script = "import sys, json
from cryptography import x509
from cryptography.hazmat.primitives import hashes
c = x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read())
t = lambda d: d.strftime('%Y-%m-%dT%H:%M:%SZ')
print(json.dumps({'serial': format(c.serial_number, 'x'), 'sha256': c.fingerprint(hashes.SHA256()).hex(),
  'not_before': t(c.not_valid_before_utc), 'not_after': t(c.not_valid_after_utc),
  'subject': c.subject.rfc4514_string(),
  'uris': [u for u in c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)] if any(isinstance(e.value, x509.SubjectAlternativeName) for e in c.extensions) else []}))";
    let file = pem.with_extension("facts.py");
    std::fs::write(&file, script).unwrap();
    let out = shell(format!("python3 {} {} 2>&1", file.display(), pem.display())).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("python cryptography: {out}"))
}

fn serial_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches('0')
        .eq_ignore_ascii_case(b.trim_start_matches('0'))
}

/// The mesh certificate's serial a proxy's admin `/certs` shows.
async fn proxy_serial(admin: SocketAddr) -> String {
    for _ in 0..100 {
        let reply = TestClient::http1().get(admin, "/certs", &[]).await;
        if let Ok(certs) = serde_json::from_str::<Value>(&reply.text()) {
            if let Some(serial) = certs["certificates"]
                .as_array()
                .and_then(|list| list.iter().find(|c| c["name"] == "mesh"))
                .and_then(|c| c["serial"].as_str())
            {
                return serial.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{admin}: no mesh certificate in /certs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_from_control_decide_per_service_follow_the_file_and_the_ca_view_tells_the_truth()
{
    let dir = TempDir::new("control-authz");
    let (list, files) = tokens(&dir, &[API_ID, WEB_ID, BATCH_ID]);
    let ca_dir = dir.file("ca");
    let services_dir = dir.file("services");
    std::fs::create_dir_all(&services_dir).unwrap();
    let services = services_dir.join("services.yaml");
    let orders = Upstream::start("orders").await;
    let catalog = Upstream::start("catalog").await;
    let echo = sinew_integration::echo_server().await;
    let (api_http, api_tcp) = (free_port(), free_port());
    let svid_dir = TempDir::new("control-authz-svid");
    let (cert, key) = (svid_dir.file("svid.pem"), svid_dir.file("svid.key"));
    let client_ca = ca_dir.join("ca.crt");
    let f = Files {
        orders: orders.addr,
        catalog: catalog.addr,
        echo,
        api_http,
        api_tcp,
        cert: &cert,
        key: &key,
        client_ca: &client_ca,
    };
    write_replacing(&services, &services_yaml(&f, WEB_ID, BATCH_ID, false));

    let (xds_port, admin_port) = (free_port(), free_port());
    let control_config = dir.file("control.yaml");
    std::fs::write(
        &control_config,
        format!(
            "xds_address: 127.0.0.1:{xds_port}
admin_address: 127.0.0.1:{admin_port}
debounce: 100ms
registries: [{{directory: services}}]
ca:
  trust_domain: {TRUST_DOMAIN}
  dir: {}
  tokens: {}
  workload_lifetime: 2h
",
            ca_dir.display(),
            list.display()
        ),
    )
    .unwrap();
    let control_log = dir.file("control.log");
    let _control = ChildGuard(
        Command::new(sinew_binary())
            .args(["control", "-c"])
            .arg(&control_config)
            .stdout(std::fs::File::create(dir.file("control.out")).unwrap())
            .stderr(std::fs::File::create(&control_log).unwrap())
            .spawn()
            .expect("start sinew control"),
    );
    let control: SocketAddr = format!("127.0.0.1:{xds_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_for_port(control).await;
    wait_for_port(admin).await;

    // api's serving certificate: an SVID the CA issues to an outside client (Python's
    // grpcio) on a CSR, proven by api's token; the client also makes one request with a
    // wrong token and one with a garbage CSR, which the CA refuses.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ca/python_ca_client.py");
    let out = shell(format!(
        "python3 {script} {control} {} {} {} 2>&1",
        client_ca.display(),
        files[0].display(),
        svid_dir.path.display()
    ))
    .await;
    let got: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("python client: {out}"));
    assert_eq!(got["spiffe_id"], API_ID, "{got}");
    assert!(cert.exists() && key.exists());

    let (mut api_proc, _api_admin) =
        start_mesh_proxy(&dir, "api", control, (&client_ca, &files[0], ""), "").await;
    let (web_http, web_tcp, batch_http, batch_tcp) =
        (free_port(), free_port(), free_port(), free_port());
    let (_web, web_admin) = start_mesh_proxy(
        &dir,
        "web",
        control,
        (&client_ca, &files[1], ""),
        &caller_config(web_http, web_tcp, api_http, api_tcp),
    )
    .await;
    let (_batch, batch_admin) = start_mesh_proxy(
        &dir,
        "batch",
        control,
        (&client_ca, &files[2], ""),
        &caller_config(batch_http, batch_tcp, api_http, api_tcp),
    )
    .await;
    let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let callers = Callers {
        web: (at(web_http), at(web_tcp)),
        batch: (at(batch_http), at(batch_tcp)),
    };

    // 1. Per service: orders admits web only; catalog keeps batch out of /admin only;
    //    ledger (TCP) admits batch only.
    let denied = "403 RBAC: access denied";
    callers
        .until_http("/orders/1", ("200 orders", denied), Duration::from_secs(30))
        .await;
    assert_eq!(
        callers.http("/catalog/items").await,
        ("200 catalog".into(), "200 catalog".into())
    );
    assert_eq!(
        callers.http("/catalog/admin/keys").await,
        ("200 catalog".into(), denied.into())
    );
    // A path-normalisation bypass is judged by the path the router takes.
    assert_eq!(callers.http("/catalog/x/../admin/keys").await.1, denied);
    assert_eq!(callers.http("/catalog//admin/keys").await.1, denied);
    assert_eq!(
        callers.tcp().await,
        (false, true),
        "ledger admits batch only"
    );

    // 2. The services file changes: orders now admits batch, ledger web. The running
    //    proxy decides anew without a restart.
    write_replacing(&services, &services_yaml(&f, BATCH_ID, WEB_ID, false));
    callers
        .until_http("/orders/1", (denied, "200 orders"), Duration::from_secs(15))
        .await;
    assert_eq!(callers.tcp().await, (true, false), "ledger admits web only");
    assert!(
        api_proc.0.try_wait().unwrap().is_none(),
        "the api proxy was not restarted"
    );

    // 3. A bad policy is refused with its position; the last good one keeps deciding.
    let bad = services_yaml(&f, WEB_ID, BATCH_ID, true);
    let bad_line = bad.lines().position(|l| l.contains("10.0.0.0/40")).unwrap() + 1;
    let bad_column = bad
        .lines()
        .nth(bad_line - 1)
        .unwrap()
        .find("10.0.0.0/40")
        .unwrap()
        + 1;
    write_replacing(&services, &bad);
    let want = format!(
        "services.yaml:{bad_line}:{bad_column}: authorization.policies[0].rules[0].from[0].source.ip_blocks[0]"
    );
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&control_log).unwrap_or_default();
        if logged.contains(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        logged.contains(&want),
        "control's log lacks {want:?}:\n{logged}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        callers.http("/orders/1").await,
        (denied.into(), "200 orders".into()),
        "the last good policy keeps deciding"
    );

    // 4. The CA's view against the certificates it issued.
    let view: Value = {
        let reply = TestClient::http1().get(admin, "/ca", &[]).await;
        assert_eq!(reply.status, 200);
        let text = reply.text();
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let root = python_facts(&client_ca).await;
    let roots = view["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{view:#}");
    assert_eq!(roots[0]["sha256"], root["sha256"], "{view:#}\n{root}");
    assert!(serial_eq(
        roots[0]["serial"].as_str().unwrap(),
        root["serial"].as_str().unwrap()
    ));
    assert_eq!(roots[0]["not_before"], root["not_before"]);
    assert_eq!(roots[0]["not_after"], root["not_after"]);
    assert_eq!(roots[0]["signing"], true);
    assert!(roots[0]["subject"]
        .as_str()
        .unwrap()
        .contains("CN=Sinew mesh root CA"));

    let recent = view["recent"].as_array().unwrap();
    let find = |serial: &str| {
        recent
            .iter()
            .find(|e| serial_eq(e["serial"].as_str().unwrap(), serial))
            .unwrap_or_else(|| panic!("serial {serial} is not among the issued: {view:#}"))
    };
    // The outside client's SVID, as Python reads it.
    let svid = python_facts(&cert).await;
    assert_eq!(svid["uris"], serde_json::json!([API_ID]));
    let entry = find(svid["serial"].as_str().unwrap());
    assert_eq!(entry["spiffe_id"], API_ID);
    assert_eq!(entry["authenticated_by"], "token");
    assert_eq!(entry["not_after"], svid["not_after"]);
    // The callers' SVIDs, as their proxies show them.
    for (admin, id) in [(web_admin, WEB_ID), (batch_admin, BATCH_ID)] {
        let entry = find(&proxy_serial(admin).await);
        assert_eq!(entry["spiffe_id"], id);
        assert_eq!(entry["authenticated_by"], "token");
    }
    // api's own, web's and batch's (and any renewal), and the Python client's.
    let issued = view["issued_total"].as_u64().unwrap();
    assert!(issued >= 4, "{view:#}");
    assert_eq!(
        recent.len() as u64,
        issued,
        "fewer than 100: all are listed"
    );
    assert!(
        view["refused"]["unknown_token"].as_u64().unwrap() >= 1,
        "{view:#}"
    );
    assert!(
        view["refused"]["bad_csr"].as_u64().unwrap() >= 1,
        "{view:#}"
    );

    let metrics = TestClient::http1().get(admin, "/metrics", &[]).await.text();
    let token_line = format!(
        "sinew_control_ca_certificates_issued_total{{authenticated_by=\"token\"}} {}",
        view["issued_by"]["token"]
    );
    assert!(metrics.contains(&token_line), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "sinew_control_ca_root_expiry_timestamp_seconds{{serial=\"{}\",signing=\"true\"}}",
            roots[0]["serial"].as_str().unwrap()
        )),
        "{metrics}"
    );
}
