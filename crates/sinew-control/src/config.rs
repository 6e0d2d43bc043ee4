//! `sinew control -c FILE`: where to serve xDS and the admin API, how long to debounce,
//! and which registries to follow. Every error carries `file:line:col: field: message`,
//! as the proxy's do, and `sinew validate` prints them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sinew_config::{ConfigError, Diagnostics, SourceMap};

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
    /// Where services come from; may be empty when the control plane only runs the CA.
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
    /// The mesh CA. With it, xDS is served over TLS (mTLS for proxies that hold a
    /// certificate), workload certificates are issued on CSRs, and the trust bundle is
    /// served as the SDS secret `ROOTCA`.
    #[serde(default)]
    pub ca: Option<CaConfig>,
}

/// `ca:` — where the CA's signing certificate comes from, whom it issues to, and for how
/// long.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The SPIFFE trust domain of every certificate issued (`cluster.local`).
    pub trust_domain: String,
    /// A directory for a self-signed root made on first start (`ca.crt`, `ca.key`) and
    /// read on every later one. Either this, or `cert` and `key`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// PEM: the signing certificate (a root, or an intermediate followed by its chain up
    /// to the root).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM: the signing certificate's private key.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM: roots trusted beside the signing one (the old root during a rollover).
    #[serde(default)]
    pub trusted_roots: Option<PathBuf>,
    /// The longest lifetime a workload certificate gets (and the default).
    #[serde(
        default = "default_workload_lifetime",
        deserialize_with = "sinew_config::duration::deserialize"
    )]
    pub workload_lifetime: Duration,
    /// Names (DNS names or IP addresses) on the control plane's own certificate, which
    /// proxies check against the address they dial.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Per-workload tokens (for VMs): a YAML list of `{identity, token_sha256}`.
    #[serde(default)]
    pub tokens: Option<PathBuf>,
    /// Kubernetes service-account tokens, checked with the TokenReview API.
    #[serde(default)]
    pub kubernetes: Option<TokenReviewConfig>,
}

/// Where TokenReviews are sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReviewConfig {
    /// As the Kubernetes registry's `api_server`: unset uses the kubeconfig or the
    /// in-cluster service account.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Audiences the token must be for (none: the API server's default).
    #[serde(default)]
    pub audiences: Vec<String>,
}

fn default_workload_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn default_debounce() -> Duration {
    Duration::from_millis(100)
}

/// One registry, written as a one-key map (`- etcd: {...}`); the key says which.
#[derive(Debug, Clone)]
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

const REGISTRY_KINDS: &[&str] = &["directory", "etcd", "zookeeper", "kubernetes"];

/// By hand rather than `untagged`: an untagged enum's error is only "did not match any
/// variant", with no word of which field was wrong; this reads the key, then the value as
/// that registry, so an error inside names its field and position.
impl<'de> Deserialize<'de> for RegistryConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneKey;
        impl<'de> Visitor<'de> for OneKey {
            type Value = RegistryConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "one registry: directory, etcd, zookeeper or kubernetes (e.g. `- etcd: {{endpoints: [...]}}`)"
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RegistryConfig, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "an empty registry: write one of directory, etcd, zookeeper or kubernetes",
                    ));
                };
                let registry = match kind.as_str() {
                    "directory" => RegistryConfig::Directory {
                        directory: map.next_value()?,
                    },
                    "etcd" => RegistryConfig::Etcd {
                        etcd: map.next_value()?,
                    },
                    "zookeeper" => RegistryConfig::Zookeeper {
                        zookeeper: map.next_value()?,
                    },
                    "kubernetes" => RegistryConfig::Kubernetes {
                        kubernetes: map.next_value()?,
                    },
                    other => return Err(de::Error::unknown_variant(other, REGISTRY_KINDS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "{extra:?} beside {kind:?}: each registry is a list item of its own \
                         (`- {kind}: ...`, then `- {extra}: ...`)"
                    )));
                }
                Ok(registry)
            }
        }
        deserializer.deserialize_map(OneKey)
    }
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

/// What is wrong in a Kubernetes registry's config, as (field, message).
fn check_kubernetes(k: &KubernetesConfig) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    if let Some(url) = &k.api_server {
        match url.parse::<http::Uri>() {
            Err(e) => errors.push(("api_server", format!("{url:?} is not a URL: {e}"))),
            Ok(uri)
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() =>
            {
                errors.push((
                    "api_server",
                    format!("{url:?} is not an http:// or https:// URL with a host"),
                ))
            }
            Ok(_) => {}
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
            errors.push((
                "namespace",
                format!("{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63); leave it out for every namespace"),
            ));
        }
    }
    errors
}

/// Every error of a parsed config that its types cannot express.
fn check(config: &ControlConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if config.registries.is_empty() && config.ca.is_none() {
        errors.push(ConfigError::new(
            "registries",
            "needs at least one registry (directory, etcd, zookeeper or kubernetes), or a `ca`",
        ));
    }
    for (i, r) in config.registries.iter().enumerate() {
        match r {
            RegistryConfig::Etcd { etcd } if etcd.endpoints.is_empty() => {
                errors.push(ConfigError::new(
                    format!("registries[{i}].etcd.endpoints"),
                    "needs at least one endpoint (e.g. http://127.0.0.1:2379)",
                ))
            }
            RegistryConfig::Zookeeper { zookeeper } if zookeeper.servers.is_empty() => {
                errors.push(ConfigError::new(
                    format!("registries[{i}].zookeeper.servers"),
                    "needs at least one server (e.g. 127.0.0.1:2181)",
                ))
            }
            RegistryConfig::Kubernetes { kubernetes } => {
                for (field, message) in check_kubernetes(kubernetes) {
                    errors.push(ConfigError::new(
                        format!("registries[{i}].kubernetes.{field}"),
                        message,
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(ca) = &config.ca {
        errors.extend(check_ca(ca));
    }
    errors
}

fn check_ca(ca: &CaConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Err(e) = sinew_identity::SpiffeId::parse(&format!("spiffe://{}", ca.trust_domain)) {
        errors.push(ConfigError::new(
            "ca.trust_domain",
            format!("{:?} is not a SPIFFE trust domain: {e}", ca.trust_domain),
        ));
    }
    match (&ca.dir, &ca.cert, &ca.key) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        (Some(_), _, _) => errors.push(ConfigError::new(
            "ca.dir",
            "give either dir (a generated root) or cert and key, not both",
        )),
        (None, Some(_), None) => errors.push(ConfigError::new("ca.key", "cert needs its key")),
        (None, None, Some(_)) => errors.push(ConfigError::new("ca.cert", "key needs its cert")),
        (None, None, None) => errors.push(ConfigError::new(
            "ca",
            "say where the signing certificate is: dir (generated on first start) or cert and key",
        )),
    }
    if ca.workload_lifetime < Duration::from_secs(10) {
        errors.push(ConfigError::new(
            "ca.workload_lifetime",
            "at least 10s: proxies renew at half of it",
        ));
    }
    if ca.server_names.is_empty() {
        errors.push(ConfigError::new(
            "ca.server_names",
            "at least one name: proxies check the control plane's certificate against the address they dial",
        ));
    }
    if ca.tokens.is_none() && ca.kubernetes.is_none() {
        errors.push(ConfigError::new(
            "ca",
            "no bootstrap credential: give tokens (per-workload token file) or kubernetes (TokenReview), or both",
        ));
    }
    errors
}

impl ControlConfig {
    /// Reads and checks the file; every error is `file:line:column: field: message`. A
    /// relative directory is taken from the file's own directory.
    pub fn load(path: &Path) -> Result<ControlConfig, Diagnostics> {
        let (name, text) = sinew_config::read_file(path)?;
        let mut config = Self::parse(&name, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for r in &mut config.registries {
            if let RegistryConfig::Directory { directory } = r {
                if directory.is_relative() {
                    *directory = base.join(&*directory);
                }
            }
        }
        if let Some(ca) = &mut config.ca {
            for file in [
                &mut ca.dir,
                &mut ca.cert,
                &mut ca.key,
                &mut ca.trusted_roots,
                &mut ca.tokens,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// Parses and checks config text; `name` is used in error messages.
    pub fn parse(name: &str, text: &str) -> Result<ControlConfig, Diagnostics> {
        let source_map = SourceMap::index(text);
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let config: ControlConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let error = sinew_config::yaml_error(path, &e.into_inner(), &source_map);
                Diagnostics::new(name, source_map.clone(), vec![error])
            })?;
        let errors = check(&config);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(Diagnostics::new(name, source_map, errors))
        }
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
        let result = ControlConfig::load(&path).map_err(|d| d.to_string());
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

    #[test]
    fn every_error_has_its_line_and_column() {
        let text = "xds_address: 127.0.0.1:18000
registries:
  - etcd: {endpoints: []}
  - zookeeper:
      servers: []
  - kubernetes: {namespace: Shop}
";
        let e = ControlConfig::parse("control.yaml", text)
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with(
                "control.yaml:3:12: registries[0].etcd.endpoints: needs at least one endpoint"
            ),
            "{e}"
        );
        assert!(
            lines[1].starts_with(
                "control.yaml:5:7: registries[1].zookeeper.servers: needs at least one server"
            ),
            "{e}"
        );
        assert!(
            lines[2].starts_with("control.yaml:6:18: registries[2].kubernetes.namespace: \"Shop\""),
            "{e}"
        );
    }

    #[test]
    fn a_registry_error_names_its_field_not_just_the_enum() {
        let e = load("  - etcd: {endpoints: [http://127.0.0.1:2379], prefx: /x/}\n").unwrap_err();
        assert!(e.contains(":3:") && e.contains("registries[0].etcd"), "{e}");
        assert!(e.contains("unknown field `prefx`"), "{e}");
        let e = load("  - consul: {}\n").unwrap_err();
        assert!(
            e.contains("registries[0]") && e.contains("unknown variant `consul`"),
            "{e}"
        );
        assert!(e.contains("etcd"), "it lists the registries there are: {e}");
        let e = load("  - directory: x\n    etcd: {endpoints: [a]}\n").unwrap_err();
        assert!(e.contains("each registry is a list item of its own"), "{e}");
    }
}
