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
    let documents = sinew_config::yaml_documents(text);
    let has = |document: &serde_yaml_ng::Value, key: &str| {
        document
            .as_mapping()
            .is_some_and(|top| top.contains_key(key))
    };
    if documents.iter().any(|d| has(d, "kind")) {
        Kind::Registry
    } else if documents
        .first()
        .is_some_and(|d| has(d, "xds_address") || has(d, "registries"))
    {
        Kind::Control
    } else {
        Kind::Proxy
    }
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
    // A syntax error is reported first, where it is: parsing into either config's types
    // stops at the first field it does not know, which may come before the error, and a
    // bootstrap whose text does not parse would be read as Sinew's own YAML.
    if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
        let source_map = sinew_config::SourceMap::index(&text);
        let mut error = sinew_config::yaml_error(String::new(), &e, &source_map);
        error.message = format!("not valid YAML: {}", error.message);
        return Err(Diagnostics::new(name, source_map, vec![error]));
    }
    if bootstrap::is_envoy_bootstrap(&text) {
        let b = bootstrap::load_str(&name, &text)?;
        sinew_proxy::check(&b.loaded).map_err(|d| b.diagnostics(d.errors))?;
        b.check_files()?;
        // The runtime the file declares is the one `/runtime` shows and xDS resources
        // are mapped with, from this (re)load on.
        b.runtime.clone().install();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_returns_on_text_whose_indentation_breaks_a_list_item() {
        // A list item whose later keys sit deeper than its first key: once hung
        // `sinew validate` inside the YAML document iterator.
        let text = "static_resources:\n  listeners:\n  - name: default\n      sds_config:\n        path: /x\n";
        assert_eq!(kind_of(text), Kind::Proxy);
    }

    #[test]
    fn kind_of_still_finds_a_registry_document_after_a_first_one() {
        let text = "a: 1\n---\nkind: Service\nname: x\n";
        assert_eq!(kind_of(text), Kind::Registry);
        assert_eq!(kind_of("xds_address: 127.0.0.1:1\n"), Kind::Control);
    }
}
