//! The mesh CA inside `sinew control`.
//!
//! - [`authority`]: the signing certificate (a root made on first start and kept on
//!   disk, or files) and issuing;
//! - [`credentials`]: bootstrap credentials (per-workload tokens, Kubernetes
//!   TokenReview);
//! - [`service`]: the certificate service proxies call with a CSR;
//! - [`secure`]: the xDS port over TLS, with the peer's identity for the service.
//!
//! The CA's files are watched: when they change (a root rollover: first the new root
//! added to `trusted_roots`, then the signing certificate switched, then the old root
//! dropped), the new bundle goes to every proxy as the SDS secret `ROOTCA`, and the
//! control plane's own certificate is re-issued. Workload certificates move to the new
//! signer as each proxy renews.

pub mod authority;
pub mod credentials;
pub mod secure;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sinew_tls::{ClientVerifier, PeerPolicy, RotatingCert, TrustBundle};

use crate::config::CaConfig;
use crate::registry::{Report, Reports};
use authority::Authority;
use credentials::Credentials;

/// The running CA.
pub struct MeshCa {
    config: CaConfig,
    authority: ArcSwap<Authority>,
    credentials: Credentials,
    /// The roots client certificates are checked against on the xDS port.
    bundle: Arc<TrustBundle>,
    /// The control plane's own certificate on the xDS port.
    server_cert: Arc<RotatingCert>,
    reports: Reports,
}

impl MeshCa {
    /// Loads (or first makes) the CA, issues the control plane's own certificate, tells
    /// the builder the trust bundle, and starts watching the CA's files. Must run inside
    /// the tokio runtime.
    pub fn start(config: CaConfig, reports: Reports) -> Result<Arc<MeshCa>, String> {
        let authority = Authority::load(&config)?;
        let bundle = TrustBundle::pushed(
            "ca",
            sinew_tls::pem::parse_roots(authority.bundle().as_bytes(), "the CA's bundle")?,
        )?;
        let server_cert =
            RotatingCert::pushed("sinew-control", server_certificate(&authority, &config)?);
        let _ = reports.send(Report::TrustBundle {
            pem: authority.bundle().to_string(),
        });
        let ca = Arc::new(MeshCa {
            authority: ArcSwap::from_pointee(authority),
            credentials: Credentials::new(&config),
            bundle,
            server_cert,
            reports,
            config,
        });
        let files = authority::files(&ca.config)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        sinew_tls::watch::spawn(&ca, files, MeshCa::reload);
        tokio::spawn(renew_server_certificate(Arc::downgrade(&ca)));
        Ok(ca)
    }

    /// Re-reads the CA after its files changed; on any error the old one keeps serving.
    fn reload(&self) -> Result<(), String> {
        let authority = Authority::load(&self.config)?;
        let roots = sinew_tls::pem::parse_roots(authority.bundle().as_bytes(), "the CA's bundle")?;
        let server = server_certificate(&authority, &self.config)?;
        self.bundle.replace(roots)?;
        let pem = authority.bundle().to_string();
        self.authority.store(Arc::new(authority));
        self.server_cert.replace(server);
        tracing::info!("mesh CA reloaded; sending the new trust bundle to every proxy");
        let _ = self.reports.send(Report::TrustBundle { pem });
        Ok(())
    }

    /// TLS for the xDS port: the control plane's certificate, and client certificates
    /// optional (a proxy's first request has none) but verified when presented.
    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        let verifier = ClientVerifier::new(
            self.bundle.clone(),
            false,
            PeerPolicy {
                trust_domain: Some(self.config.trust_domain.clone()),
                subject_alt_names: Vec::new(),
            },
        );
        let mut tls = rustls::ServerConfig::builder_with_provider(sinew_tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.server_cert.clone());
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(tls)
    }
}

fn server_certificate(
    authority: &Authority,
    config: &CaConfig,
) -> Result<rustls::sign::CertifiedKey, String> {
    let (chain, key) = authority.issue_server(&config.server_names)?;
    sinew_tls::certified_key(
        chain.concat().as_bytes(),
        key.as_bytes(),
        "the control plane's certificate",
        "its key",
    )
    .map_err(|e| e.to_string())
}

/// Re-issues the control plane's own certificate at half its lifetime.
async fn renew_server_certificate(ca: std::sync::Weak<MeshCa>) {
    loop {
        let Some(lifetime) = ca.upgrade().map(|ca| ca.config.workload_lifetime) else {
            return;
        };
        tokio::time::sleep(lifetime / 2).await;
        let Some(ca) = ca.upgrade() else { return };
        match server_certificate(&ca.authority.load(), &ca.config) {
            Ok(cert) => ca.server_cert.replace(cert),
            Err(e) => {
                tracing::error!("re-issuing the control plane's certificate: {e}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}
