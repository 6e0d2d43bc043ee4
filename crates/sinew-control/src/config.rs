//! `sinew control -c FILE`: where to serve xDS and the admin API, how long to debounce,
//! and which registries to follow.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// gRPC (xDS) listen address.
    pub xds_address: SocketAddr,
    /// The admin API (`/status`, `/ready`); off when unset.
    #[serde(default)]
    pub admin_address: Option<SocketAddr>,
    /// Registry events within this window after the first go into one build.
    #[serde(
        default = "default_debounce",
        deserialize_with = "sinew_config::duration::deserialize"
    )]
    pub debounce: Duration,
    pub registries: Vec<RegistryConfig>,
}

fn default_debounce() -> Duration {
    Duration::from_millis(100)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum RegistryConfig {
    /// `- directory: /etc/sinew/services`
    Directory { directory: PathBuf },
    /// `- etcd: {endpoints: [http://127.0.0.1:2379], prefix: /sinew/services/}`
    Etcd { etcd: EtcdConfig },
    /// `- zookeeper: {servers: [127.0.0.1:2181], root: /dubbo}`
    Zookeeper { zookeeper: ZookeeperConfig },
    /// `- kubernetes: {api_server: http://127.0.0.1:8001, namespace: default}`
    Kubernetes { kubernetes: KubernetesConfig },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// `http://host:port` (or `https://`) of an API server that needs no credentials,
    /// such as `kubectl proxy`; when unset, the kubeconfig or the in-cluster service
    /// account is used, as kubectl would.
    #[serde(default)]
    pub api_server: Option<String>,
    /// The namespace to follow; every namespace when unset.
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZookeeperConfig {
    /// `host:port` of each server; one is used at a time.
    pub servers: Vec<String>,
    /// Dubbo's registry root.
    #[serde(default = "default_zookeeper_root")]
    pub root: String,
}

fn default_zookeeper_root() -> String {
    "/dubbo".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "/sinew/services/".into()
}

/// `field: message` for the first thing wrong in a Kubernetes registry's config.
fn check_kubernetes(k: &KubernetesConfig) -> Result<(), String> {
    if let Some(url) = &k.api_server {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("api_server: {url:?} is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "api_server: {url:?} is not an http:// or https:// URL with a host"
            ));
        }
    }
    if let Some(ns) = &k.namespace {
        // A namespace is a DNS label (RFC 1123).
        let label = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !label {
            return Err(format!(
                "namespace: {ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63); leave it out for every namespace"
            ));
        }
    }
    Ok(())
}

impl ControlConfig {
    /// Reads the file; errors are `file:line:column: field: message`. A relative
    /// directory is taken from the file's own directory.
    pub fn load(path: &Path) -> Result<ControlConfig, String> {
        let name = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        let mut config: ControlConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let field = e.path().to_string();
                let inner = e.into_inner();
                let at = inner
                    .location()
                    .map(|l| format!("{}:{}", l.line(), l.column()))
                    .unwrap_or_else(|| "1:1".into());
                format!("{name}:{at}: {field}: {inner}")
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (i, r) in config.registries.iter().enumerate() {
            if let RegistryConfig::Etcd { etcd } = r {
                if etcd.endpoints.is_empty() {
                    return Err(format!(
                        "{name}: registries[{i}].etcd.endpoints: needs at least one endpoint"
                    ));
                }
            }
            if let RegistryConfig::Zookeeper { zookeeper } = r {
                if zookeeper.servers.is_empty() {
                    return Err(format!(
                        "{name}: registries[{i}].zookeeper.servers: needs at least one server"
                    ));
                }
            }
            if let RegistryConfig::Kubernetes { kubernetes } = r {
                check_kubernetes(kubernetes)
                    .map_err(|e| format!("{name}: registries[{i}].kubernetes.{e}"))?;
            }
        }
        for r in &mut config.registries {
            if let RegistryConfig::Directory { directory } = r {
                if directory.is_relative() {
                    *directory = base.join(&*directory);
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(registries: &str) -> Result<ControlConfig, String> {
        // Tests run in parallel: each call its own file.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "sinew-control-config-{}-{}.yaml",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(
            &path,
            format!("xds_address: 127.0.0.1:0\nregistries:\n{registries}"),
        )
        .unwrap();
        let result = ControlConfig::load(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn kubernetes_takes_a_server_and_a_namespace_or_neither() {
        let c = load("  - kubernetes: {api_server: 'http://127.0.0.1:8001', namespace: shop}\n")
            .unwrap();
        let RegistryConfig::Kubernetes { kubernetes } = &c.registries[0] else {
            panic!("{c:?}")
        };
        assert_eq!(
            kubernetes.api_server.as_deref(),
            Some("http://127.0.0.1:8001")
        );
        assert_eq!(kubernetes.namespace.as_deref(), Some("shop"));
        let c = load("  - kubernetes: {}\n").unwrap();
        let RegistryConfig::Kubernetes { kubernetes } = &c.registries[0] else {
            panic!("{c:?}")
        };
        assert!(kubernetes.api_server.is_none() && kubernetes.namespace.is_none());
    }

    #[test]
    fn a_bad_kubernetes_server_or_namespace_is_named() {
        let e =
            load("  - directory: x\n  - kubernetes: {api_server: '127.0.0.1:8001'}\n").unwrap_err();
        assert!(
            e.contains(": registries[1].kubernetes.api_server: \"127.0.0.1:8001\" is not"),
            "{e}"
        );
        let e = load("  - kubernetes: {api_server: 'http://127.0.0.1:8001', namespace: Shop}\n")
            .unwrap_err();
        assert!(
            e.contains(": registries[0].kubernetes.namespace: \"Shop\" is not a namespace name"),
            "{e}"
        );
    }
}
