//! Embeds the protobuf descriptors an Envoy bootstrap file is read with.
//!
//! Envoy's YAML and JSON are the proto3 JSON mapping of its protos, so reading them takes
//! the message descriptors (field names, types, enums, `Any` type URLs). `envoy-types`
//! ships them, compiled from Envoy's own .proto files, as `src/generated/types.bin`; this
//! script finds that file through `cargo metadata` (so registries, vendoring and
//! `CARGO_HOME` all work), keeps only the files a bootstrap and the extensions Sinew maps
//! need, drops their source comments, and writes the result to `OUT_DIR`. No protobuf
//! compiler is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The files read directly: the bootstrap, and each extension whose `typed_config` Sinew
/// maps (the rest arrive as what these import).
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/lua/v3/lua.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
];

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only this target's packages: they are the ones the build has downloaded, so
    // `--offline` holds on a fresh machine.
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &target, "--manifest-path"])
        .arg(PathBuf::from(&manifest).join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let envoy_manifest = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency");
    let types = PathBuf::from(envoy_manifest)
        .parent()
        .expect("a manifest has a directory")
        .join("src/generated/types.bin");
    println!("cargo:rerun-if-changed={}", types.display());
    println!("cargo:rerun-if-changed=build.rs");

    let bytes =
        std::fs::read(&types).unwrap_or_else(|e| panic!("cannot read {}: {e}", types.display()));
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("types.bin is a descriptor set");
    let mut by_name: BTreeMap<String, prost_types::FileDescriptorProto> = set
        .file
        .into_iter()
        .map(|f| (f.name().to_string(), f))
        .collect();

    // Every file the roots import, transitively, in dependency order (the pool wants a
    // file's imports before it).
    let mut kept = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        by_name: &BTreeMap<String, prost_types::FileDescriptorProto>,
        seen: &mut BTreeSet<String>,
        kept: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let file = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in envoy-types' descriptors"));
        for dependency in &file.dependency {
            visit(dependency, by_name, seen, kept);
        }
        kept.push(name.to_string());
    }
    for root in ROOTS {
        visit(root, &by_name, &mut seen, &mut kept);
    }
    let file = kept
        .iter()
        .map(|name| {
            let mut f = by_name.remove(name).expect("visited files exist");
            f.source_code_info = None;
            f
        })
        .collect();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(
        out.join("envoy_descriptors.bin"),
        FileDescriptorSet { file }.encode_to_vec(),
    )
    .expect("write the descriptors");
}
