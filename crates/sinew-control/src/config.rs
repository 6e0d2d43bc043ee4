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
