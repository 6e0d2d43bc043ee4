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
pub mod ledger;
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
    /// What was issued and refused, for the admin API.
    pub ledger: ledger::Ledger,
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
            ledger: ledger::Ledger::default(),
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

impl MeshCa {
    /// The CA as the admin API shows it: the trust bundle's roots (which one signs),
    /// the signing certificate, counts of certificates issued and requests refused, and
    /// the last certificates issued. Public facts only: never a key.
    pub fn view(&self) -> serde_json::Value {
        use serde_json::json;
        let authority = self.authority.load();
        let roots = ledger::roots(authority.bundle(), authority.signing_root());
        let signing = authority
            .signing_certificate()
            .and_then(|pem| {
                sinew_tls::pem::parse_certs(pem.as_bytes(), "the signing certificate").ok()
            })
            .and_then(|ders| ders.first().and_then(|der| ledger::facts(der).ok()))
            .map(|f| {
                json!({
                    "subject": f.subject,
                    "serial": f.serial,
                    "sha256": f.sha256,
                    "not_after": ledger::rfc3339(f.not_after),
                })
            });
        let (issued, refused, recent) = self.ledger.snapshot();
        let issued_by: serde_json::Map<String, serde_json::Value> = issued
            .iter()
            .map(|(m, n)| (m.as_str().to_string(), json!(n)))
            .collect();
        json!({
            "trust_domain": self.config.trust_domain,
            "workload_lifetime_seconds": self.config.workload_lifetime.as_secs(),
            "roots": roots,
            "signing": signing,
            "issued_total": issued.values().sum::<u64>(),
            "issued_by": issued_by,
            "refused_total": refused.values().sum::<u64>(),
            "refused": refused,
            "recent": recent.iter().map(|i| json!({
                "spiffe_id": i.spiffe_id,
                "serial": i.serial,
                "not_after": ledger::rfc3339(i.not_after),
                "issued_at": ledger::rfc3339(i.issued_at),
                "authenticated_by": i.authenticated_by.as_str(),
            })).collect::<Vec<_>>(),
        })
    }

    /// The same as Prometheus text: issued by method, refused by reason, and each
    /// root's expiry.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let (issued, refused, _) = self.ledger.snapshot();
        let authority = self.authority.load();
        out.push_str("# HELP sinew_control_ca_certificates_issued_total Workload certificates issued, by how the workload authenticated.\n# TYPE sinew_control_ca_certificates_issued_total counter\n");
        for method in [
            credentials::Method::Token,
            credentials::Method::Kubernetes,
            credentials::Method::Svid,
        ] {
            let n = issued.get(&method).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sinew_control_ca_certificates_issued_total{{authenticated_by=\"{}\"}} {n}",
                method.as_str()
            );
        }
        out.push_str("# HELP sinew_control_ca_requests_refused_total Certificate requests refused, by reason.\n# TYPE sinew_control_ca_requests_refused_total counter\n");
        for reason in service::REFUSAL_REASONS {
            let n = refused.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "sinew_control_ca_requests_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP sinew_control_ca_root_expiry_timestamp_seconds When each root of the trust bundle expires (Unix time).\n# TYPE sinew_control_ca_root_expiry_timestamp_seconds gauge\n");
        for root in ledger::roots(authority.bundle(), authority.signing_root()) {
            let _ = writeln!(
                out,
                "sinew_control_ca_root_expiry_timestamp_seconds{{serial=\"{}\",signing=\"{}\"}} {}",
                root["serial"].as_str().unwrap_or(""),
                root["signing"],
                root["not_after_unix"]
            );
        }
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
