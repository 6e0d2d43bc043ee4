//! What the mesh CA tests share: bootstrap token files for workloads and the CA's list
//! of their hashes, and `sinew proxy` processes that get their SVID from the CA and
//! their xDS from `sinew control`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{free_port, sinew_binary, ChildGuard};
use tokio::net::TcpStream;

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a token file for each identity and the CA's token list; returns the list and
/// the token file of each identity, in order.
pub fn tokens(dir: &TempDir, identities: &[&str]) -> (PathBuf, Vec<PathBuf>) {
    let mut list = String::new();
    let mut files = Vec::new();
    for (i, id) in identities.iter().enumerate() {
        let token = format!("token-{i}-{}", free_port());
        list.push_str(&format!(
            "- identity: {id}\n  token_sha256: {}\n",
            sha256_hex(&token)
        ));
        let file = dir.file(&format!("workload-{i}.token"));
        std::fs::write(&file, &token).unwrap();
        files.push(file);
    }
    let list_file = dir.file("tokens.yaml");
    std::fs::write(&list_file, list).unwrap();
    (list_file, files)
}

/// Waits (up to 15 s) until `addr` takes connections.
pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..300 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Starts `sinew proxy` named `name` with `body` under a `mesh.ca` block pointing at
/// `control` (`ca_extra` is added to that map, e.g. `, sds_socket: '/path'`), steered by
/// `control` over `--xds https://`; returns it and its admin address once that answers.
pub async fn start_mesh_proxy(
    dir: &TempDir,
    name: &str,
    control: SocketAddr,
    (bundle, token, ca_extra): (&Path, &Path, &str),
    body: &str,
) -> (ChildGuard, SocketAddr) {
    let admin_port = free_port();
    let config = dir.file(&format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "admin: {{address: 127.0.0.1:{admin_port}}}
mesh:
  trust_domain: cluster.local
  ca: {{address: 'https://{control}', bundle: '{}', token: '{}'{ca_extra}}}
{body}",
            bundle.display(),
            token.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.file(&format!("{name}.log"))).unwrap();
    let child = ChildGuard(
        Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(&config)
            .args(["--xds", &format!("https://{control}"), "--node-id", name])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sinew proxy"),
    );
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_for_port(admin).await;
    (child, admin)
}
