//! Secrets pushed over SDS, by name: one [`RotatingCert`] and one [`TrustBundle`] per
//! secret, shared by every listener and cluster that names it, so a new version reaches
//! their next handshakes in place — no config reload, no connection dropped.
//!
//! A listener or cluster that names a secret before it arrived gets the awaited
//! certificate or bundle ([`RotatingCert::awaited`], [`TrustBundle::awaited`]): its
//! handshakes fail cleanly until the secret fills it. The store is one per process, as
//! the proxy's xDS stream is; whoever receives secrets (the xDS handler, a file watcher,
//! an SDS stream to a node agent) writes them here, and compiling a config reads them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::{RotatingCert, SanMatcher, TrustBundle};

/// Which secret: its name and where it comes from. The same name from two sources is
/// two secrets, as in Envoy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey {
    pub name: String,
    pub origin: SecretOrigin,
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretOrigin {
    /// The proxy's xDS stream (Envoy's `sds_config: {ads: {}}`).
    Stream,
    /// A file holding a `DiscoveryResponse` (Envoy's `path_config_source`).
    File(String),
    /// An SDS server of its own (`unix:PATH` or `http://HOST:PORT`; Envoy's
    /// `api_config_source`, as Istio's `sds-grpc` to its node agent).
    Server(String),
}

impl SecretKey {
    /// A secret pushed on the xDS stream.
    pub fn ads(name: &str) -> Self {
        SecretKey {
            name: name.into(),
            origin: SecretOrigin::Stream,
        }
    }
}

impl std::fmt::Display for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            SecretOrigin::Stream => write!(f, "{:?}", self.name),
            SecretOrigin::File(file) => write!(f, "{:?} (from {file})", self.name),
            SecretOrigin::Server(server) => write!(f, "{:?} (from {server})", self.name),
        }
    }
}

struct Entry {
    cert: Arc<RotatingCert>,
    bundle: Arc<TrustBundle>,
    /// The validation context's name matchers; the verifiers built from them are fixed,
    /// so a change to these takes a rebuild of what uses the secret.
    sans: Vec<SanMatcher>,
}

impl Entry {
    fn awaited(key: &SecretKey) -> Self {
        Entry {
            cert: RotatingCert::awaited(&key.name),
            bundle: TrustBundle::awaited(&key.name),
            sans: Vec::new(),
        }
    }
}

/// Every secret the proxy has been pushed or has asked for.
#[derive(Default)]
pub struct PushedSecrets {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: BTreeMap<SecretKey, Entry>,
    /// Names the proxy answers itself (see [`PushedSecrets::provide_locally`]).
    local: BTreeMap<String, Entry>,
}

impl Entries {
    fn get(&self, key: &SecretKey) -> Option<&Entry> {
        self.local_for(key).or_else(|| self.by_key.get(key))
    }

    fn local_for(&self, key: &SecretKey) -> Option<&Entry> {
        match key.origin {
            SecretOrigin::File(_) => None,
            SecretOrigin::Stream | SecretOrigin::Server(_) => self.local.get(&key.name),
        }
    }
}

impl PushedSecrets {
    /// The process's store.
    pub fn global() -> &'static PushedSecrets {
        static STORE: OnceLock<PushedSecrets> = OnceLock::new();
        STORE.get_or_init(PushedSecrets::default)
    }

    fn with<T>(&self, key: &SecretKey, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.local_for(key).is_some() {
            let entry = entries.local.get_mut(&key.name).expect("checked above");
            return f(entry);
        }
        let entry = entries
            .by_key
            .entry(key.clone())
            .or_insert_with(|| Entry::awaited(key));
        f(entry)
    }

    /// Answers `name` from the proxy itself, whichever stream or SDS server a config
    /// names it on (a file's secret stays the file's): the proxy's own workload
    /// certificate and trust bundle, as Istio's node agent answers `default` and
    /// `ROOTCA` for the Envoy beside it. Call before any config that names it compiles.
    pub fn provide_locally(&self, name: &str, cert: Arc<RotatingCert>, bundle: Arc<TrustBundle>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.local.insert(
            name.to_string(),
            Entry {
                cert,
                bundle,
                sans: Vec::new(),
            },
        );
    }

    /// Whether `name` is answered by the proxy itself.
    pub fn is_local(&self, name: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.local.contains_key(name)
    }

    /// The certificate of `key`, awaited if it has not arrived.
    pub fn certificate(&self, key: &SecretKey) -> Arc<RotatingCert> {
        self.with(key, |e| e.cert.clone())
    }

    /// The trust bundle of `key` (awaited if it has not arrived) and its name matchers.
    pub fn validation(&self, key: &SecretKey) -> (Arc<TrustBundle>, Vec<SanMatcher>) {
        self.with(key, |e| (e.bundle.clone(), e.sans.clone()))
    }

    /// Whether `key` has arrived, as a certificate or a validation context.
    pub fn has_arrived(&self, key: &SecretKey) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .is_some_and(|e| e.cert.is_ready() || e.bundle.is_ready())
    }

    /// Puts a certificate in force for `key`'s next handshakes.
    pub fn set_certificate(&self, key: &SecretKey, certified: CertifiedKey) {
        self.with(key, |e| e.cert.replace(certified));
    }

    /// Puts roots and name matchers in force for `key`; whether the matchers changed
    /// (then what uses the secret must be rebuilt to apply them).
    pub fn set_validation(
        &self,
        key: &SecretKey,
        roots: RootCertStore,
        sans: Vec<SanMatcher>,
    ) -> Result<bool, String> {
        self.with(key, |e| {
            e.bundle.replace(roots)?;
            let changed = e.sans != sans;
            e.sans = sans;
            Ok(changed)
        })
    }

    /// The certificates that have arrived, by secret, for the admin API.
    pub fn certificates(&self) -> Vec<(SecretKey, Arc<RotatingCert>)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .by_key
            .iter()
            .filter(|(_, e)| e.cert.is_ready())
            .map(|(k, e)| (k.clone(), e.cert.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified(name: &str) -> (CertifiedKey, rustls::pki_types::CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let certified = crate::certified_key(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            "cert",
            "key",
        )
        .unwrap();
        (certified, cert.der().clone())
    }

    #[test]
    fn an_awaited_secret_is_filled_in_place_for_everyone_holding_it() {
        let store = PushedSecrets::default();
        let key = SecretKey::ads("server");
        let held = store.certificate(&key);
        assert!(!held.is_ready() && !store.has_arrived(&key));
        assert!(held.current().is_none());
        let (first, first_der) = certified("a.example");
        store.set_certificate(&key, first);
        assert!(store.has_arrived(&key));
        assert_eq!(held.current().unwrap().cert[0], first_der);
        let (second, second_der) = certified("b.example");
        store.set_certificate(&key, second);
        assert_eq!(
            held.current().unwrap().cert[0],
            second_der,
            "replaced in place"
        );
        assert!(Arc::ptr_eq(&held, &store.certificate(&key)));
        let other_source = SecretKey {
            name: "server".into(),
            origin: SecretOrigin::File("/x".into()),
        };
        assert!(!store.has_arrived(&other_source), "keyed by source too");
        assert_eq!(store.certificates().len(), 1);
    }

    #[test]
    fn an_awaited_bundle_refuses_until_roots_arrive_and_reports_matcher_changes() {
        let store = PushedSecrets::default();
        let key = SecretKey::ads("ca");
        let (bundle, sans) = store.validation(&key);
        assert!(sans.is_empty() && bundle.is_empty());
        let err = bundle.state().err().unwrap().to_string();
        assert!(err.contains("\"ca\" has not arrived"), "{err}");
        let (_, der) = certified("root.example");
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let matchers = vec![SanMatcher::uri("spiffe://td/a")];
        assert!(store
            .set_validation(&key, roots.clone(), matchers.clone())
            .unwrap());
        assert_eq!(bundle.len(), 1);
        assert!(!store.set_validation(&key, roots, matchers).unwrap());
    }

    #[test]
    fn a_locally_provided_name_answers_the_stream_and_servers_but_not_files() {
        let store = PushedSecrets::default();
        let (certified_key, der) = certified("workload.example");
        let cert = RotatingCert::awaited("default");
        cert.replace(certified_key);
        let bundle = TrustBundle::awaited("ROOTCA");
        store.provide_locally("default", cert.clone(), bundle);
        let from_server = SecretKey {
            name: "default".into(),
            origin: SecretOrigin::Server("unix:/run/sds".into()),
        };
        for key in [SecretKey::ads("default"), from_server] {
            assert!(store.has_arrived(&key), "{key}");
            assert!(Arc::ptr_eq(&store.certificate(&key), &cert));
        }
        let from_file = SecretKey {
            name: "default".into(),
            origin: SecretOrigin::File("/s.yaml".into()),
        };
        assert!(!store.has_arrived(&from_file));
        assert!(store.is_local("default") && !store.is_local("other"));
        assert_eq!(cert.current().unwrap().cert[0], der);
    }
}
