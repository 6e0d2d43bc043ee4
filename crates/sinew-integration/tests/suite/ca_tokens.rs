//! What the mesh CA tests share: bootstrap token files for workloads and the CA's list
//! of their hashes.

use std::path::PathBuf;

use sinew_integration::free_port;
use sinew_integration::tls_kit::TempDir;

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
