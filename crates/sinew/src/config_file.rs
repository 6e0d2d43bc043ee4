//! The file `-c` names: Sinew's own YAML (docs/config.md) or an Envoy v3 bootstrap
//! (docs/envoy-bootstrap.md), told apart by their top-level keys. Both become the same
//! checked config; a bootstrap may also say which control plane to follow. `sinew validate`
//! also takes the control plane's files, told apart the same way ([`kind_of`]).

use std::path::Path;

use sinew_config::{Diagnostics, LoadedConfig};
use sinew_xds::bootstrap::{self, EnvoyBootstrap};

/// The kinds of file `sinew validate` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// What `sinew proxy -c` runs: Sinew's YAML or an Envoy bootstrap.
    Proxy,
    /// What `sinew control -c` runs.
    Control,
    /// A directory registry's file: `kind: Service` and `kind: Listener` documents.
    Registry,
}

/// Tells the kind of a file from its top-level keys: a document with `kind` is a
/// registry file, `xds_address` or `registries` make a control config, and anything
/// else (text that does not parse included: its loader says why) is a proxy config.
pub fn kind_of(text: &str) -> Kind {
    use serde::Deserialize;
    let mut first = true;
    let mut kind = Kind::Proxy;
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let Ok(serde_yaml_ng::Value::Mapping(top)) = serde_yaml_ng::Value::deserialize(document)
        else {
            first = false;
            continue;
        };
        let has = |key: &str| top.contains_key(key);
        if has("kind") {
            return Kind::Registry;
        }
        if first && (has("xds_address") || has("registries")) {
            kind = Kind::Control;
        }
        first = false;
    }
    kind
}

/// A config file, read and checked. One exists at a time (start-up, a reload), so its
/// size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ConfigFile {
    Sinew(LoadedConfig),
    Envoy(Box<EnvoyBootstrap>),
}

impl ConfigFile {
    pub fn loaded(&self) -> &LoadedConfig {
        match self {
            ConfigFile::Sinew(l) => l,
            ConfigFile::Envoy(b) => &b.loaded,
        }
    }
}

/// Reads `path` and checks it as deeply as starting it would (compiling it without
/// running it), so every error is reported with the file's own positions.
pub fn load(path: &Path) -> Result<ConfigFile, Diagnostics> {
    let (name, text) = sinew_config::read_file(path)?;
    let wrong_command = match kind_of(&text) {
        Kind::Proxy => None,
        Kind::Control => Some("a `sinew control` config: run it with `sinew control -c FILE`"),
        Kind::Registry => Some(
            "a directory registry's Service/Listener file: put it in a directory that \
             `sinew control` follows (docs/control.md)",
        ),
    };
    if let Some(what) = wrong_command {
        return Err(Diagnostics::new(
            name,
            sinew_config::SourceMap::default(),
            vec![sinew_config::ConfigError::new(
                "",
                format!("this is {what}, not a proxy config"),
            )],
        ));
    }
    if bootstrap::is_envoy_bootstrap(&text) {
        let b = bootstrap::load_str(&name, &text)?;
        sinew_proxy::check(&b.loaded).map_err(|d| b.diagnostics(d.errors))?;
        Ok(ConfigFile::Envoy(Box::new(b)))
    } else {
        let loaded = sinew_proxy::load_file(path)?;
        sinew_proxy::check(&loaded)?;
        Ok(ConfigFile::Sinew(loaded))
    }
}

/// [`load`] for reloads: the config alone, with the SDS secrets it names followed
/// ([`crate::sds::follow`]) before it compiles.
pub fn load_config(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let loaded = load(path).map(|file| match file {
        ConfigFile::Sinew(l) => l,
        ConfigFile::Envoy(b) => b.loaded,
    })?;
    if let Err(e) = crate::sds::follow(&loaded.config) {
        return Err(Diagnostics::new(
            loaded.file.clone(),
            loaded.source_map.clone(),
            vec![sinew_config::ConfigError::new(
                "",
                format!("SDS secrets file {e}"),
            )],
        ));
    }
    Ok(loaded)
}
