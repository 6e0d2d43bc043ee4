//! The file `-c` names: Sinew's own YAML (docs/config.md) or an Envoy v3 bootstrap
//! (docs/envoy-bootstrap.md), told apart by their top-level keys. Both become the same
//! checked config; a bootstrap may also say which control plane to follow.

use std::path::Path;

use sinew_config::{Diagnostics, LoadedConfig};
use sinew_xds::bootstrap::{self, EnvoyBootstrap};

/// A config file, read and checked.
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

/// [`load`] for reloads: the config alone.
pub fn load_config(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    load(path).map(|file| match file {
        ConfigFile::Sinew(l) => l,
        ConfigFile::Envoy(b) => b.loaded,
    })
}
