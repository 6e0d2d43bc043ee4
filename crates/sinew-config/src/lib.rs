//! Sinew's configuration: the model ([`model`]), loading it from YAML, and checking it
//! whole before anything runs on it.
//!
//! Every problem is reported as a [`ConfigError`] with the field path; [`Diagnostics`]
//! adds the file, line and column, so that `sinew validate` can print
//! `file:line:col: field.path: what is wrong` for every error at once.

pub mod access_log;
pub mod admin;
pub mod authz;
mod chain_match;
pub mod chains;
pub mod circuit_breaker;
pub mod compression;
pub mod duration;
pub mod fault;
mod header_match;
pub mod health;
pub mod jwt_authn;
pub mod mirror;
pub mod model;
pub mod origin;
pub mod overload;
pub mod rate_limit;
pub mod redis;
pub mod socket;
pub mod source;
pub mod tls;
mod token;
pub mod trace;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::Config;
pub use source::{Position, SourceMap};

/// One problem with a config, at a field path such as `clusters[1].endpoints[0].address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// Set when the parser itself knows the position (syntax and type errors).
    pub position: Option<Position>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            position: None,
        }
    }
}

/// All the errors of one config file, ready to print.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub errors: Vec<ConfigError>,
    source_map: SourceMap,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>, source_map: SourceMap, errors: Vec<ConfigError>) -> Self {
        Self {
            file: file.into(),
            errors,
            source_map,
        }
    }
}

impl fmt::Display for Diagnostics {
    /// One line per error, in the order they appear in the file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut located: Vec<(usize, usize, &ConfigError)> = self
            .errors
            .iter()
            .map(|e| {
                let pos = e.position.or_else(|| self.source_map.lookup(&e.path));
                let (line, column) = pos.map_or((1, 1), |p| (p.line, p.column));
                (line, column, e)
            })
            .collect();
        located.sort_by_key(|(line, column, _)| (*line, *column));
        for (i, (line, column, e)) in located.into_iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let path = if e.path.is_empty() { "<root>" } else { &e.path };
            write!(f, "{}:{line}:{column}: {path}: {}", self.file, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A parsed and checked config, with the map that turns later errors into positions.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub file: String,
    pub config: Config,
    pub source_map: SourceMap,
    /// The text it was parsed from (for the admin API's config dump).
    pub source: std::sync::Arc<str>,
}

impl LoadedConfig {
    /// Wraps errors found later (e.g. while compiling the data plane) with this file's positions.
    pub fn diagnostics(&self, errors: Vec<ConfigError>) -> Diagnostics {
        Diagnostics::new(self.file.clone(), self.source_map.clone(), errors)
    }
}

/// Reads and checks a config file.
pub fn load_file(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let loaded = parse_file(path)?;
    checked(loaded)
}

/// Parses and checks config text; `name` is used in error messages.
pub fn load_str(name: &str, text: &str) -> Result<LoadedConfig, Diagnostics> {
    checked(parse_str(name, text)?)
}

fn checked(loaded: LoadedConfig) -> Result<LoadedConfig, Diagnostics> {
    let errors = validate(&loaded.config);
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(loaded.diagnostics(errors))
    }
}

/// Every structural and reference error of a parsed config (empty when it is whole).
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut errors = validate::check(config);
    errors.extend(admin::check(config.admin.as_ref()));
    errors.extend(overload::check(config.overload.as_ref()));
    errors
}

/// Reads and parses a config file without checking it; see [`validate`].
pub fn parse_file(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let (name, text) = read_file(path)?;
    parse_str(&name, &text)
}

/// The top-level value of each YAML document in `text`, in order, up to the first one that
/// does not parse. Stopping there is what makes this end: after a syntax error the YAML
/// document iterator yields that same error forever, as it cannot tell where the next
/// document starts. Whoever loads the text reports the error.
pub fn yaml_documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map_while(|document| serde_yaml_ng::Value::deserialize(document).ok())
        .collect()
}

/// A config file's name (for messages) and text; a file that cannot be read is a
/// diagnostic naming it.
pub fn read_file(path: &Path) -> Result<(String, String), Diagnostics> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((name, text)),
        Err(e) => Err(Diagnostics::new(
            name,
            SourceMap::default(),
            vec![ConfigError::new("", format!("cannot read file: {e}"))],
        )),
    }
}

/// Parses config text without checking it. Syntax and type errors stop parsing, so only
/// the first is reported.
pub fn parse_str(name: &str, text: &str) -> Result<LoadedConfig, Diagnostics> {
    let source_map = SourceMap::index(text);
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(deserializer) {
        Ok(config) => match source_map.unreadable() {
            Some((position, why)) => {
                let error = ConfigError {
                    path: String::new(),
                    message: format!("not valid YAML: {why}"),
                    position: Some(position),
                };
                Err(Diagnostics::new(name, source_map.clone(), vec![error]))
            }
            None => Ok(LoadedConfig {
                file: name.to_string(),
                config,
                source_map,
                source: text.into(),
            }),
        },
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let error = yaml_error(path, &e.into_inner(), &source_map);
            Err(Diagnostics::new(name, source_map, vec![error]))
        }
    }
}

/// A YAML syntax or type error at `path` as a [`ConfigError`], at the best position known.
pub fn yaml_error(
    path: String,
    inner: &serde_yaml_ng::Error,
    source_map: &SourceMap,
) -> ConfigError {
    // For a type error the parser points at the enclosing mapping and the field's own key
    // (from the source map) is better; for a syntax error the parser's location is the
    // real one and the map only knows an ancestor. The later of the two is right in both
    // cases.
    let parser = inner.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let mapped = source_map.lookup(&path);
    let position = match (parser, mapped) {
        (Some(p), Some(m)) if (p.line, p.column) > (m.line, m.column) => Some(p),
        (Some(_), Some(_)) => None,
        (p, _) => p,
    };
    ConfigError {
        path,
        message: strip_location(&inner.to_string()),
        position,
    }
}

/// serde_yaml wraps messages as "path: message at line L column C"; we print the path and
/// position ourselves.
fn strip_location(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}
