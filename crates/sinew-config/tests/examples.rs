//! The example configurations in `examples/` are part of the documentation: each must load
//! without errors, and they must keep to the address plan the integration tests rely on
//! (listeners on distinct 127.0.0.1 / [::1] ports in 18000-18999, upstreams on
//! 127.0.0.1:19001-19003).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use sinew_config::model::Discovery;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Every `examples/*.yaml`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_is_valid() {
    let files = example_files();
    let mut failures = Vec::new();
    for file in &files {
        if let Err(diagnostics) = sinew_config::load_file(file) {
            failures.push(diagnostics.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} example configs are invalid:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    assert!(
        files.len() >= 15,
        "expected at least 15 examples in {}, found {}",
        examples_dir().display(),
        files.len()
    );
}

#[test]
fn examples_keep_to_the_address_plan() {
    let mut problems = Vec::new();
    let mut ports: HashMap<u16, String> = HashMap::new();
    for file in example_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(loaded) = sinew_config::load_file(&file) else {
            continue; // every_example_config_is_valid reports it
        };
        for listener in &loaded.config.listeners {
            let addr: SocketAddr = listener.address.parse().expect("validated");
            if !addr.ip().is_loopback() || !(18000..=18999).contains(&addr.port()) {
                problems.push(format!(
                    "{name}: listener {} is not on a loopback port in 18000-18999",
                    listener.address
                ));
            }
            if let Some(other) = ports.insert(addr.port(), name.clone()) {
                problems.push(format!(
                    "{name}: port {} is also used by {other}",
                    addr.port()
                ));
            }
        }
        for cluster in &loaded.config.clusters {
            for endpoint in &cluster.endpoints {
                let ok = match cluster.discovery {
                    Discovery::Static => matches!(
                        endpoint.address.as_str(),
                        "127.0.0.1:19001" | "127.0.0.1:19002" | "127.0.0.1:19003"
                    ),
                    Discovery::Dns | Discovery::LogicalDns => endpoint.address == "localhost:19001",
                };
                if !ok {
                    problems.push(format!(
                        "{name}: cluster {} has endpoint {} outside 127.0.0.1:19001-19003",
                        cluster.name, endpoint.address
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The error example in docs/config.md is real loader output; keep the two in step.
#[test]
fn documented_error_example_is_real() {
    let broken = "\
listeners:
  - name: web
    address: 127.0.0.1:8080
    http:
      virtual_hosts:
        - name: app
          domains: [\"*\"]
          routes:
            - match: { prefix: api }
              cluster: backend
              retry: { retry_on: [5xx, timeout] }
            - match: { prefix: / }
              cluster: backnd
clusters:
  - name: backend
    endpoints:
      - address: localhost:9001
";
    let diagnostics = match sinew_config::load_str("proxy.yaml", broken) {
        Ok(_) => panic!("the documented broken config loaded without errors"),
        Err(d) => d.to_string(),
    };
    let docs_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let docs = std::fs::read_to_string(&docs_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", docs_path.display()));
    assert!(
        docs.contains(broken),
        "docs/config.md no longer shows the broken config of this test"
    );
    assert!(
        docs.contains(&diagnostics),
        "docs/config.md must show the loader's real output for its broken example:\n{diagnostics}"
    );

    // The parse-error example: the first error only, at the field that has it.
    let misspelt = broken.replace(
        "  - name: backend\n",
        "  - name: backend\n    lb: round_robbin\n",
    );
    let parse_error = match sinew_config::load_str("proxy.yaml", &misspelt) {
        Ok(_) => panic!("an unknown lb policy loaded without errors"),
        Err(d) => d.to_string(),
    };
    assert!(
        docs.contains(&parse_error),
        "docs/config.md must show the loader's real output for `lb: round_robbin`:\n{parse_error}"
    );
}
