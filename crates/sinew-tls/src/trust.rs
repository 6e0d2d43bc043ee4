//! A trust bundle (the CA certificates a peer's chain must lead to), replaceable while
//! connections run: a root rollover pushes a bundle with the old and the new root, then
//! one with the new root alone. A pushed bundle may be awaited: referenced before its
//! secret arrived, it verifies no peer until the secret fills it in place.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::pem;

/// Where a trust bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// A PEM file, re-read when it changes.
    File(String),
    /// PEM written in the config (Envoy's `inline_string`): never re-read.
    Inline,
    /// Pushed by the control plane (an SDS validation context of this name).
    Pushed(String),
}

/// One version of a bundle, with the chain verifier built from it.
pub(crate) struct BundleState {
    pub roots: Arc<RootCertStore>,
    /// Verifies a client's chain (the identity checks are `ClientVerifier`'s own).
    pub client_chain: Arc<dyn ClientCertVerifier>,
}

/// The roots in force, swappable without a lock on the handshake path.
pub struct TrustBundle {
    /// None while a pushed secret has not arrived.
    state: ArcSwapOption<BundleState>,
    source: BundleSource,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

fn build(roots: RootCertStore) -> Result<BundleState, String> {
    let roots = Arc::new(roots);
    let client_chain = WebPkiClientVerifier::builder_with_provider(roots.clone(), pem::provider())
        .build()
        .map_err(|e| format!("cannot build a verifier from the bundle: {e}"))?;
    Ok(BundleState {
        roots,
        client_chain,
    })
}

impl TrustBundle {
    /// Loads a PEM bundle and, inside a runtime, re-reads it whenever it changes.
    pub fn from_file(path: &str) -> Result<Arc<Self>, String> {
        let state = build(pem::load_roots(path)?)?;
        let bundle = Arc::new(TrustBundle {
            state: ArcSwapOption::from_pointee(state),
            source: BundleSource::File(path.into()),
        });
        crate::watch::spawn(&bundle, vec![path.into()], TrustBundle::reload_file);
        Ok(bundle)
    }

    /// A bundle from PEM written in the config; `what` names it in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<Arc<Self>, String> {
        let state = build(pem::parse_roots(pem.as_bytes(), what)?)?;
        Ok(Arc::new(TrustBundle {
            state: ArcSwapOption::from_pointee(state),
            source: BundleSource::Inline,
        }))
    }

    /// A bundle that the control plane pushes.
    pub fn pushed(name: &str, roots: RootCertStore) -> Result<Arc<Self>, String> {
        Ok(Arc::new(TrustBundle {
            state: ArcSwapOption::from_pointee(build(roots)?),
            source: BundleSource::Pushed(name.into()),
        }))
    }

    /// A pushed bundle whose secret has not arrived yet: every peer is refused until
    /// [`replace`](Self::replace) fills it.
    pub fn awaited(name: &str) -> Arc<Self> {
        Arc::new(TrustBundle {
            state: ArcSwapOption::empty(),
            source: BundleSource::Pushed(name.into()),
        })
    }

    /// Whether roots are in force (false only for an awaited secret).
    pub fn is_ready(&self) -> bool {
        self.state.load().is_some()
    }

    fn reload_file(&self) -> Result<(), String> {
        let BundleSource::File(path) = &self.source else {
            return Ok(());
        };
        self.replace(pem::load_roots(path)?)
    }

    /// Puts new roots in force for the handshakes that start from now on.
    pub fn replace(&self, roots: RootCertStore) -> Result<(), String> {
        self.state.store(Some(Arc::new(build(roots)?)));
        Ok(())
    }

    /// How many roots the bundle holds now (0 while awaited).
    pub fn len(&self) -> usize {
        self.state.load().as_ref().map_or(0, |s| s.roots.len())
    }

    /// Whether the bundle is empty (only while awaited: an empty bundle is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where it comes from.
    pub fn source(&self) -> &BundleSource {
        &self.source
    }

    /// The roots in force, or the error a handshake fails with while awaited.
    pub(crate) fn state(&self) -> Result<Arc<BundleState>, rustls::Error> {
        self.state.load_full().ok_or_else(|| {
            let name = match &self.source {
                BundleSource::Pushed(name) | BundleSource::File(name) => name.as_str(),
                BundleSource::Inline => "inline",
            };
            rustls::Error::General(format!("trust bundle secret {name:?} has not arrived yet"))
        })
    }
}
