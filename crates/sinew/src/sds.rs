//! Secrets that listeners and clusters name (`{sds: NAME}` in Sinew's config; an Envoy
//! `sds_secret_config` with an `sds_config`), put in force in [`PushedSecrets`]:
//!
//! - on the xDS stream: the handler in `xds.rs` asks for the names the config uses and
//!   hands each response to [`check`] and then [`put_in_force`];
//! - from a file holding a `DiscoveryResponse` (`path`, Envoy's `path_config_source`):
//!   [`watch_files`] reads each file once before the config that names it is compiled,
//!   then re-reads it whenever it (or its `watched_directory`) changes.
//!
//! Either way a new version replaces the certificate or bundle in place: new handshakes
//! take it, established connections keep theirs, and nothing is reloaded — unless a
//! validation context's name matchers changed, which the caller applies with a rebuild.
//! A bad version is refused naming the secret and field, and the last good one stays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use sinew_config::tls::{PemSource, SdsSecret};
use sinew_config::Config;
use sinew_tls::{PushedSecrets, SecretKey};
use sinew_xds::secret::{material, Material};

/// The proxy's metrics, once it runs: file watchers count their updates there too.
static METRICS: OnceLock<Arc<sinew_proxy::metrics::Metrics>> = OnceLock::new();

/// Where SDS updates are counted from now on.
pub fn count_in(metrics: Arc<sinew_proxy::metrics::Metrics>) {
    let _ = METRICS.set(metrics);
}

fn count(secret: &str, accepted: bool) {
    if let Some(m) = METRICS.get() {
        m.sds_update(secret, accepted);
    }
}

/// A secret checked and parsed, ready to put in force.
pub struct Checked {
    key: SecretKey,
    what: Parsed,
}

enum Parsed {
    Certificate(CertifiedKey),
    Validation(RootCertStore, Vec<sinew_tls::SanMatcher>),
}

/// Checks a secret and parses its PEM (reading any files it names); the error names the
/// secret and the field at fault.
pub fn check(secret: &Secret, file: Option<&str>) -> Result<Checked, String> {
    let label = format!("secret {:?}", secret.name);
    let parsed = match material(secret).map_err(|e| e.to_string())? {
        Material::Certificate { chain, key } => {
            let chain_at = format!("{label}: tls_certificate.certificate_chain");
            let key_at = format!("{label}: tls_certificate.private_key");
            let chain = chain.read().map_err(|e| format!("{chain_at}: {e}"))?;
            let key = key.read().map_err(|e| format!("{key_at}: {e}"))?;
            let certified = sinew_tls::certified_key(&chain, &key, &chain_at, &key_at)
                .map_err(|e| e.to_string())?;
            Parsed::Certificate(certified)
        }
        Material::Validation { trusted_ca, sans } => {
            let at = format!("{label}: validation_context.trusted_ca");
            let pem = trusted_ca.read().map_err(|e| format!("{at}: {e}"))?;
            let roots = sinew_tls::pem::parse_roots(&pem, &at)?;
            let sans = sinew_upstream::cluster::san_matchers(&sans);
            Parsed::Validation(roots, sans)
        }
    };
    Ok(Checked {
        key: SecretKey {
            name: secret.name.clone(),
            file: file.map(str::to_string),
        },
        what: parsed,
    })
}

/// Puts checked secrets in force; whether a validation context's name matchers changed
/// (what uses it must then be rebuilt).
pub fn put_in_force(checked: Vec<Checked>) -> Result<bool, String> {
    let store = PushedSecrets::global();
    let mut matchers_changed = false;
    for Checked { key, what } in checked {
        match what {
            Parsed::Certificate(certified) => store.set_certificate(&key, certified),
            Parsed::Validation(roots, sans) => {
                matchers_changed |= store
                    .set_validation(&key, roots, sans)
                    .map_err(|e| format!("secret {:?}: validation_context: {e}", key.name))?;
            }
        }
        count(&key.name, true);
        tracing::info!(secret = %key, "SDS secret in force for new handshakes");
    }
    Ok(matchers_changed)
}

/// Counts a refused update of these secrets.
pub fn count_rejected(names: impl IntoIterator<Item = String>) {
    for name in names {
        count(&name, false);
    }
}

/// Every secret a config names.
pub fn referenced(config: &Config) -> Vec<&SdsSecret> {
    let mut out = Vec::new();
    for l in &config.listeners {
        out.extend(listener_secrets(l));
    }
    for c in &config.clusters {
        if let Some(t) = &c.tls {
            out.extend(
                [Some(&t.ca), t.cert.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(PemSource::sds),
            );
        }
    }
    out
}

/// The secrets a listener names.
pub fn listener_secrets(l: &sinew_config::model::Listener) -> Vec<&SdsSecret> {
    let Some(t) = &l.tls else { return Vec::new() };
    let mut sources: Vec<&PemSource> = t.cert.iter().collect();
    sources.extend(t.certificates.iter().map(|c| &c.cert));
    sources.extend(t.client_ca.iter());
    sources.into_iter().filter_map(PemSource::sds).collect()
}

/// The names to ask the xDS stream for.
pub fn stream_names(config: &Config) -> BTreeSet<String> {
    referenced(config)
        .into_iter()
        .filter(|s| s.path.is_none())
        .map(|s| s.sds.clone())
        .collect()
}

/// A file of secrets being watched.
struct SecretFile {
    path: String,
}

/// The files watched so far (each once, for the life of the process).
fn watched() -> &'static Mutex<BTreeMap<String, Arc<SecretFile>>> {
    static WATCHED: OnceLock<Mutex<BTreeMap<String, Arc<SecretFile>>>> = OnceLock::new();
    WATCHED.get_or_init(Default::default)
}

/// Reads every secrets file `config` names that is not watched yet, and watches it from
/// then on. A file that cannot be read or holds a bad secret the first time is an error
/// naming the file and field (as Envoy requires the file at load time); later a bad
/// version is logged and the last good secrets stay.
pub fn watch_files(config: &Config) -> Result<(), String> {
    let mut files: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for s in referenced(config) {
        if let Some(path) = &s.path {
            let dir = files.entry(path).or_default();
            if dir.is_none() {
                *dir = s.watched_directory.as_deref();
            }
        }
    }
    let mut watched = watched().lock().unwrap_or_else(|e| e.into_inner());
    for (path, dir) in files {
        if watched.contains_key(path) {
            continue;
        }
        let file = Arc::new(SecretFile {
            path: path.to_string(),
        });
        file.load().map_err(|e| format!("{path}: {e}"))?;
        let mut paths = vec![path.to_string()];
        paths.extend(dir.map(str::to_string));
        sinew_tls::watch::spawn(&file, paths, SecretFile::load);
        watched.insert(path.to_string(), file);
    }
    Ok(())
}

impl SecretFile {
    fn load(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {:?}: {e}", self.path))?;
        let secrets = sinew_xds::secret::parse_file(&text)?;
        let checked: Result<Vec<Checked>, String> =
            secrets.iter().map(|s| check(s, Some(&self.path))).collect();
        match checked {
            Ok(checked) => {
                put_in_force(checked)?;
                Ok(())
            }
            Err(e) => {
                count_rejected(secrets.into_iter().map(|s| s.name));
                Err(e)
            }
        }
    }
}
