//! Embeds the protobuf descriptors an Envoy bootstrap file is read with.
//!
//! Envoy's YAML and JSON are the proto3 JSON mapping of its protos, so reading them takes
//! the message descriptors (field names, types, enums, `Any` type URLs). `envoy-types`
//! ships them, compiled from Envoy's own .proto files, as `src/generated/types.bin`; this
//! script finds that file in Cargo's registry (the version Cargo.lock pins; Cargo has
//! unpacked it before any build script runs, as it is a dependency), keeps only the files
//! a bootstrap and the extensions Sinew maps need, drops their source comments, and
//! writes the result to `OUT_DIR`, beside the names of all the messages envoy-types knows
//! (for telling an unsupported Envoy type from a misspelt one). No protobuf compiler is
//! needed.
//!
//! (`cargo metadata` would find it too, but it resolves the whole workspace, which needs
//! packages a `cargo build -p` has not downloaded.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The files read directly: the bootstrap, and each extension whose `typed_config` Sinew
/// maps (the rest arrive as what these import).
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/redis_proxy/v3/redis_proxy.proto",
    "envoy/extensions/filters/network/dubbo_proxy/v3/dubbo_proxy.proto",
    "envoy/extensions/filters/network/dubbo_proxy/router/v3/router.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/csrf/v3/csrf.proto",
    "envoy/extensions/filters/http/lua/v3/lua.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/compressor/v3/compressor.proto",
    "envoy/extensions/filters/http/decompressor/v3/decompressor.proto",
    "envoy/extensions/compression/gzip/compressor/v3/gzip.proto",
    "envoy/extensions/compression/gzip/decompressor/v3/gzip.proto",
    "envoy/extensions/compression/brotli/compressor/v3/brotli.proto",
    "envoy/extensions/compression/brotli/decompressor/v3/brotli.proto",
    "envoy/extensions/compression/zstd/compressor/v3/zstd.proto",
    "envoy/extensions/compression/zstd/decompressor/v3/zstd.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.proto",
    "envoy/config/trace/v3/zipkin.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/resource_monitors/fixed_heap/v3/fixed_heap.proto",
];

fn main() {
    let types = envoy_types_descriptors();
    println!("cargo:rerun-if-changed={}", types.display());
    println!("cargo:rerun-if-changed=build.rs");

    let bytes =
        std::fs::read(&types).unwrap_or_else(|e| panic!("cannot read {}: {e}", types.display()));
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("types.bin is a descriptor set");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("envoy_type_names.txt"), type_names(&set))
        .expect("write the type names");
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
    std::fs::write(
        out.join("envoy_descriptors.bin"),
        FileDescriptorSet { file }.encode_to_vec(),
    )
    .expect("write the descriptors");
}

/// The full name of every top-level message in the set, one a line, sorted: every type
/// an `@type` may name in Envoy, most of which Sinew has no mapper for (and so no
/// descriptor embedded). An unknown `@type` on this list is then "not supported by
/// Sinew" rather than what looks like a misspelling.
fn type_names(set: &FileDescriptorSet) -> String {
    let mut names: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.message_type
                .iter()
                .map(move |m| format!("{}.{}", f.package(), m.name()))
        })
        .collect();
    names.sort();
    names.join("\n")
}

/// `types.bin` of the envoy-types that Cargo.lock pins, under `$CARGO_HOME/registry/src`
/// (`~/.cargo` unless set) or a `vendor/` directory beside Cargo.lock.
fn envoy_types_descriptors() -> PathBuf {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let lock_path = manifest
        .ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|p| p.exists())
        .expect("a Cargo.lock above the crate");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock = std::fs::read_to_string(&lock_path).expect("read Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("Cargo.lock pins envoy-types");
    let crate_dir = format!("envoy-types-{version}");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let mut candidates = vec![lock_path
        .parent()
        .expect("Cargo.lock is in a directory")
        .join("vendor")
        .join(&crate_dir)];
    if let Ok(registries) = std::fs::read_dir(cargo_home.join("registry/src")) {
        candidates.extend(registries.flatten().map(|r| r.path().join(&crate_dir)));
    }
    candidates
        .iter()
        .map(|dir| dir.join("src/generated/types.bin"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "envoy-types {version}'s src/generated/types.bin is not in any of {candidates:?}"
            )
        })
}
