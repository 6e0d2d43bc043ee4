//! The certificate service (`CreateCertificate`): who is asking (the client certificate
//! of an mTLS connection, else a bearer token), then a certificate for exactly that
//! identity.

use std::sync::Arc;
use std::time::Duration;

use sinew_ca::proto::{IstioCertificateRequest, IstioCertificateResponse};
use sinew_ca::service::istio_certificate_service_server::IstioCertificateService;
use sinew_identity::SpiffeId;
use tonic::{Request, Response, Status};

use super::credentials::{Method, Refused};
use super::ledger::{self, Issued};
use super::secure::PeerInfo;
use super::MeshCa;

/// Every reason a request is refused for, as counted.
pub const REFUSAL_REASONS: [&str; 5] = [
    "no_credential",
    "unknown_token",
    "foreign_trust_domain",
    "token_review",
    "bad_csr",
];

#[derive(Clone)]
pub struct CertificateService {
    pub ca: Arc<MeshCa>,
}

#[tonic::async_trait]
impl IstioCertificateService for CertificateService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let (identity, method) = match self.who(&request, peer.as_ref()).await {
            Ok(who) => who,
            Err(why) => {
                self.ca.ledger.refused(why.reason);
                let remote = peer.and_then(|p| p.remote);
                tracing::warn!(?remote, "mesh CA refused a certificate request: {why}");
                return Err(Status::unauthenticated("the credential was not accepted"));
            }
        };
        let message = request.into_inner();
        let asked = Duration::from_secs(message.validity_duration.max(0) as u64);
        let authority = self.ca.authority.load();
        match authority.issue(&message.csr, &identity, asked) {
            Ok(cert_chain) => {
                tracing::info!(spiffe_id = %identity, "mesh CA issued a workload certificate");
                match ledger::leaf_facts(&cert_chain) {
                    Ok(leaf) => self.ca.ledger.issued(Issued {
                        spiffe_id: identity.to_string(),
                        serial: leaf.serial,
                        not_after: leaf.not_after,
                        issued_at: ledger::now(),
                        authenticated_by: method,
                    }),
                    Err(e) => {
                        tracing::error!("the certificate just issued does not read back: {e}")
                    }
                }
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(e) => {
                self.ca.ledger.refused("bad_csr");
                Err(Status::invalid_argument(e))
            }
        }
    }
}

impl CertificateService {
    /// The identity the request proves: a verified SVID of the trust domain wins (a
    /// renewal); otherwise the bearer token must check out.
    async fn who(
        &self,
        request: &Request<IstioCertificateRequest>,
        peer: Option<&PeerInfo>,
    ) -> Result<(SpiffeId, Method), Refused> {
        if let Some(spiffe) = peer
            .and_then(|p| p.identity.as_ref())
            .and_then(|id| id.spiffe.clone())
        {
            if spiffe.trust_domain() == self.ca.config.trust_domain {
                return Ok((spiffe, Method::Svid));
            }
        }
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Refused::new("no_credential", "no certificate and no bearer token"))?;
        self.ca.credentials.authenticate(token.trim()).await
    }
}
