//! Envoy's filesystem xDS: resources read from a file that holds a `DiscoveryResponse`
//! (YAML or JSON), as a `path_config_source` (or the deprecated `path`) names it for
//! listeners, clusters and secrets.
//!
//! The file is read with Envoy's descriptors and its YAML leniencies, like a bootstrap,
//! so a listener in a file is spelt exactly as in `static_resources`; every resource must
//! be of the type the config source is for. Errors name the file, line, column and field.
//! Following the file (re-reading it when it changes, or when a file is moved into its
//! `watched_directory`) is the proxy's part.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use sinew_config::{Config, ConfigError, Diagnostics, SourceMap};

use crate::assemble::{Change, Resources};
use crate::{Ctx, XdsError};

/// A file of resources named by a config source, and how it is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceFile {
    /// The type URL of the resources it holds.
    pub type_url: &'static str,
    pub path: String,
    /// Envoy's `watched_directory`: a file moved into it also means "read the file again"
    /// (how a whole set of files is swapped at once).
    pub watched_directory: Option<String>,
    /// Where the bootstrap names it (`dynamic_resources.lds_config.path_config_source`).
    pub at: String,
}

/// Listeners (`lds_config`).
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// Clusters (`cds_config`).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// What one reading of a file holds.
#[derive(Debug, Clone)]
pub struct FileResources {
    /// `version_info`, for logs and metrics.
    pub version: String,
    pub resources: Vec<Any>,
    /// The file's name and where each path is in it, for errors.
    name: String,
    source_map: SourceMap,
}

impl FileResources {
    /// A mapper's or the validator's error about the resource `resource` (`listener
    /// "web"`) at `field`, as an error at its place in this file.
    fn locate(&self, labels: &[String], resource: &str, field: &str, message: &str) -> ConfigError {
        match labels.iter().position(|l| l == resource) {
            Some(i) if field.is_empty() => {
                ConfigError::new(format!("resources[{i}]"), format!("{resource}: {message}"))
            }
            Some(i) => ConfigError::new(
                format!("resources[{i}].{field}"),
                format!("{resource}: {message}"),
            ),
            None => ConfigError::new("resources", format!("{resource}: {field}: {message}")),
        }
    }

    fn diagnostics(&self, errors: Vec<ConfigError>) -> Diagnostics {
        Diagnostics::new(&self.name, self.source_map.clone(), errors)
    }
}

/// Reads every file and checks what it holds as the proxy takes it: each resource maps,
/// and with the static config `base` they make a valid config in which nothing waits
/// for what no file provides. The error is about the first file at fault.
pub fn check(files: &[ResourceFile], base: &Config) -> Result<(), Diagnostics> {
    let mut resources = Resources::default();
    let mut read = Vec::new();
    for file in files {
        let contents = self::read(&file.path, file.type_url)?;
        let decoded =
            decode(file.type_url, &contents).map_err(|e| contents.diagnostics(vec![e]))?;
        let labels = decoded.labels();
        let mapped = match decoded {
            Decoded::Listeners(l) => resources.listeners(complete(l)),
            Decoded::Clusters(c) => resources.clusters(complete(c)),
        };
        resources = mapped.map_err(|e: XdsError| {
            contents.diagnostics(vec![contents.locate(
                &labels,
                &e.resource,
                &e.field,
                &e.message,
            )])
        })?;
        read.push((contents, labels));
    }
    let assembled = resources.assemble(base);
    let mut errors: Vec<(usize, ConfigError)> = Vec::new();
    for w in &assembled.warming {
        if let Some(i) = read
            .iter()
            .position(|(_, labels)| labels.contains(&w.resource))
        {
            let (contents, labels) = &read[i];
            let why = format!(
                "waits for {}, which neither the static config nor a file provides",
                w.waits_for
            );
            errors.push((i, contents.locate(labels, &w.resource, "", &why)));
        }
    }
    for e in sinew_config::validate(&assembled.config) {
        let blamed = assembled.blame(&e.path);
        let (resource, field) = blamed.split_once(": ").unwrap_or((blamed.as_str(), ""));
        if let Some(i) = read
            .iter()
            .position(|(_, labels)| labels.iter().any(|l| l == resource))
        {
            let (contents, labels) = &read[i];
            errors.push((i, contents.locate(labels, resource, field, &e.message)));
        }
    }
    match errors.first().map(|(i, _)| *i) {
        None => Ok(()),
        Some(first) => {
            let (contents, _) = &read[first];
            let errors = errors
                .into_iter()
                .filter(|(i, _)| *i == first)
                .map(|(_, e)| e)
                .collect();
            Err(contents.diagnostics(errors))
        }
    }
}

fn complete<T>(updated: Vec<T>) -> Change<T> {
    Change {
        updated,
        removed: Vec::new(),
        complete: true,
    }
}

/// A file's resources, decoded.
enum Decoded {
    Listeners(Vec<Listener>),
    Clusters(Vec<Cluster>),
}

impl Decoded {
    /// Each resource as errors name it (`listener "web"`), in file order.
    fn labels(&self) -> Vec<String> {
        match self {
            Decoded::Listeners(l) => l
                .iter()
                .map(|l| Ctx::new("listener", &l.name).resource)
                .collect(),
            Decoded::Clusters(c) => c
                .iter()
                .map(|c| Ctx::new("cluster", &c.name).resource)
                .collect(),
        }
    }
}

fn decode(type_url: &str, contents: &FileResources) -> Result<Decoded, ConfigError> {
    fn all<M: prost::Message + Default>(contents: &FileResources) -> Result<Vec<M>, ConfigError> {
        contents
            .resources
            .iter()
            .enumerate()
            .map(|(i, any)| {
                M::decode(any.value.as_slice()).map_err(|e| {
                    ConfigError::new(format!("resources[{i}]"), format!("does not decode: {e}"))
                })
            })
            .collect()
    }
    Ok(if type_url == LISTENER_TYPE {
        Decoded::Listeners(all(contents)?)
    } else {
        Decoded::Clusters(all(contents)?)
    })
}

/// Reads the file at `path`: a `DiscoveryResponse` whose resources are all of `type_url`.
pub fn read(path: &str, type_url: &str) -> Result<FileResources, Diagnostics> {
    let (name, text) = sinew_config::read_file(std::path::Path::new(path))?;
    parse(&name, &text, type_url)
}

/// Parses file text; `name` is the file's name in error messages.
pub fn parse(name: &str, text: &str, type_url: &str) -> Result<FileResources, Diagnostics> {
    let source_map = SourceMap::index(text);
    let fail = |e: ConfigError| Diagnostics::new(name, source_map.clone(), vec![e]);
    const RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";
    let descriptor = crate::envoy_text::descriptors()
        .get_message_by_name(RESPONSE)
        .expect("the DiscoveryResponse message is embedded");
    let canonical = crate::envoy_text::lenient::canonical(text, &descriptor);
    let response: DiscoveryResponse = crate::envoy_text::parse_message(
        canonical.as_deref().unwrap_or(text),
        &source_map,
        RESPONSE,
    )
    .map_err(|mut e| {
        // The parser's line and column are in the rewritten text; the field's own
        // place in the file is the one to report.
        if canonical.is_some() && !e.path.is_empty() {
            e.position = None;
        }
        fail(e)
    })?;
    let DiscoveryResponse {
        version_info,
        resources,
        type_url: response_type,
        ..
    } = response;
    if !response_type.is_empty() && response_type != type_url {
        return Err(fail(ConfigError::new(
            "type_url",
            format!("{response_type:?}: this file must hold {type_url}"),
        )));
    }
    if let Some((i, any)) = resources
        .iter()
        .enumerate()
        .find(|(_, any)| any.type_url != type_url)
    {
        return Err(fail(ConfigError::new(
            format!("resources[{i}]"),
            format!(
                "@type {:?}: this file must hold resources of type {type_url}",
                any.type_url
            ),
        )));
    }
    Ok(FileResources {
        version: version_info,
        resources,
        name: name.to_string(),
        source_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_file_yields_its_listeners_with_envoys_yaml_leniencies() {
        let text = r#"
version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: web
  address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
  filter_chains:
    filters:
      name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: tcp
        cluster: backend
"#;
        let read = parse("lds.yaml", text, LISTENER_TYPE).unwrap();
        assert_eq!(read.version, "7");
        assert_eq!(read.resources.len(), 1);
        let listener: envoy_types::pb::envoy::config::listener::v3::Listener =
            prost::Message::decode(read.resources[0].value.as_slice()).unwrap();
        assert_eq!(listener.name, "web");
        // A lone filter chain (a mapping where a list is expected) is read as a list.
        assert_eq!(listener.filter_chains.len(), 1);
    }

    #[test]
    fn a_bad_file_is_refused_naming_file_line_column_and_field() {
        for (text, expected) in [
            (
                "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: a\n",
                "lds.yaml:2:3: resources[0]: @type \"type.googleapis.com/envoy.config.cluster.v3.Cluster\": this file must hold resources of type type.googleapis.com/envoy.config.listener.v3.Listener",
            ),
            (
                "resources:\n- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n  name: a\n  bogus: 1\n",
                "lds.yaml:4:3: resources[0].bogus: is not a field",
            ),
            ("hello: 1\n", "lds.yaml:1:1: hello:"),
            (
                "type_url: type.googleapis.com/envoy.config.cluster.v3.Cluster\nresources: []\n",
                "lds.yaml:1:1: type_url:",
            ),
        ] {
            let err = parse("lds.yaml", text, LISTENER_TYPE).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}\n{err}");
        }
    }

    #[test]
    fn an_empty_resources_list_is_a_file_with_no_resources() {
        let read = parse("cds.yaml", "resources: []\n", CLUSTER_TYPE).unwrap();
        assert!(read.resources.is_empty());
        let read = parse("cds.yaml", "version_info: a\n", CLUSTER_TYPE).unwrap();
        assert!(read.resources.is_empty());
    }
}
