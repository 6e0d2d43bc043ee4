//! The proxy's workload identity: its SVID, the mesh's trust bundle and trust domain.
//! Listeners in mTLS modes and clusters with `mtls` share one, so a rotation reaches
//! every new handshake at once.

use std::sync::Arc;

use crate::{PeerPolicy, RotatingCert, SanMatcher, TrustBundle};

/// The proxy's SVID and what its peers must chain to.
#[derive(Debug)]
pub struct MeshIdentity {
    pub trust_domain: String,
    pub cert: Arc<RotatingCert>,
    pub bundle: Arc<TrustBundle>,
}

impl MeshIdentity {
    /// Loads an SVID and bundle from files (each re-read when it changes). The error
    /// names the field (`cert`, `key`, `bundle`) at fault.
    pub fn from_files(
        trust_domain: &str,
        cert: &str,
        key: &str,
        bundle: &str,
    ) -> Result<Arc<Self>, (&'static str, String)> {
        let cert = RotatingCert::from_files(cert, key).map_err(|e| e.field_and_message())?;
        let bundle = TrustBundle::from_file(bundle).map_err(|e| ("bundle", e))?;
        Ok(Arc::new(MeshIdentity {
            trust_domain: trust_domain.into(),
            cert,
            bundle,
        }))
    }

    /// A peer must hold an SVID of the trust domain and, when `identities` is not empty,
    /// be one of them.
    pub fn peer_policy(&self, identities: &[String]) -> PeerPolicy {
        PeerPolicy {
            trust_domain: Some(self.trust_domain.clone()),
            subject_alt_names: identities.iter().map(|id| SanMatcher::uri(id)).collect(),
        }
    }
}
