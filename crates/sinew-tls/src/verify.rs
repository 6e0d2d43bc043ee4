//! Verifying a peer: its chain against a trust bundle, then who it is — its SPIFFE trust
//! domain and the subject alternative names expected of it (Envoy's
//! `match_typed_subject_alt_names`). The same checks serve a listener verifying clients
//! (mTLS) and a cluster verifying its upstreams.
//!
//! Mesh upstreams are checked by identity, not host name: an SVID names a workload
//! (`spiffe://…/sa/web`), not the address it was dialled at, so the host-name check is
//! off unless asked for, as in Envoy.
//!
//! A cluster may also opt out of verifying its upstreams ([`ServerVerifier::accept_any`]),
//! as Envoy does for an `UpstreamTlsContext` without a `validation_context`: the
//! connection is still encrypted and the handshake signatures still checked (the peer
//! holds the key of the certificate it sent), but who the certificate names is not.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{Error, SignatureScheme};
use sinew_identity::PeerIdentity;

use crate::pem;
use crate::trust::TrustBundle;

/// Which subject alternative names a matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Uri,
    Dns,
}

/// How a name is compared (Envoy's string matcher, without regexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Contains(s) => value.contains(s.as_str()),
        }
    }
}

/// One accepted subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub matcher: StringMatch,
}

impl SanMatcher {
    /// An exact URI SAN: the usual way to expect one SPIFFE ID.
    pub fn uri(id: &str) -> Self {
        SanMatcher {
            san_type: SanType::Uri,
            matcher: StringMatch::Exact(id.into()),
        }
    }

    pub fn matches(&self, identity: &PeerIdentity) -> bool {
        let names = match self.san_type {
            SanType::Uri => &identity.uri_sans,
            SanType::Dns => &identity.dns_sans,
        };
        names.iter().any(|name| self.matcher.matches(name))
    }
}

/// Who a peer must be, once its chain is good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The peer must hold an X.509-SVID of this trust domain.
    pub trust_domain: Option<String>,
    /// The peer must have at least one of these names (none: any name).
    pub subject_alt_names: Vec<SanMatcher>,
}

/// Why a peer whose chain is good is still refused.
#[derive(Debug)]
struct IdentityRefused(String);

impl std::fmt::Display for IdentityRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityRefused {}

fn refused(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRefused(message),
    ))))
}

impl PeerPolicy {
    /// Whether the policy checks anything beyond the chain.
    pub fn is_open(&self) -> bool {
        self.trust_domain.is_none() && self.subject_alt_names.is_empty()
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        if self.is_open() {
            return Ok(());
        }
        let identity = PeerIdentity::from_der(end_entity.as_ref())
            .map_err(|e| refused(format!("unreadable peer certificate: {e}")))?;
        if let Some(domain) = &self.trust_domain {
            match &identity.spiffe {
                Some(id) if id.trust_domain() == domain => {}
                Some(id) => {
                    return Err(refused(format!(
                        "peer {id} is not of trust domain {domain:?}"
                    )))
                }
                None => {
                    return Err(refused(format!(
                        "peer certificate {:?} has no SPIFFE ID",
                        identity.subject
                    )))
                }
            }
        }
        if !self.subject_alt_names.is_empty()
            && !self.subject_alt_names.iter().any(|m| m.matches(&identity))
        {
            let shown = identity
                .uri_sans
                .first()
                .or(identity.dns_sans.first())
                .cloned()
                .unwrap_or_else(|| identity.subject.clone());
            return Err(refused(format!(
                "peer {shown} is not one of the identities expected"
            )));
        }
        Ok(())
    }
}

/// Handshake signatures, checked with the crypto provider's algorithms: the same for
/// both verifiers.
#[derive(Debug)]
struct Signatures(Arc<CryptoProvider>);

impl Signatures {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies clients on a listener: chain to the bundle, then the policy.
#[derive(Debug)]
pub struct ClientVerifier {
    bundle: Arc<TrustBundle>,
    mandatory: bool,
    policy: PeerPolicy,
    signatures: Signatures,
}

impl ClientVerifier {
    /// `mandatory`: a client without a certificate is refused (else it is let through
    /// unauthenticated, and later phases see no peer identity).
    pub fn new(bundle: Arc<TrustBundle>, mandatory: bool, policy: PeerPolicy) -> Arc<Self> {
        Arc::new(ClientVerifier {
            bundle,
            mandatory,
            policy,
            signatures: Signatures(pem::provider()),
        })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA names in the CertificateRequest: mesh clients hold one certificate, and a
        // bundle's names would grow every handshake.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.bundle
            .state()?
            .client_chain
            .verify_client_cert(end_entity, intermediates, now)?;
        self.policy.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// Verifies an upstream: chain to the bundle, the host name if asked, then the policy.
#[derive(Debug)]
pub struct ServerVerifier {
    /// None: any certificate is accepted ([`ServerVerifier::accept_any`]).
    bundle: Option<Arc<TrustBundle>>,
    check_host_name: bool,
    policy: PeerPolicy,
    signatures: Signatures,
}

impl ServerVerifier {
    pub fn new(bundle: Arc<TrustBundle>, check_host_name: bool, policy: PeerPolicy) -> Arc<Self> {
        Arc::new(ServerVerifier {
            bundle: Some(bundle),
            check_host_name,
            policy,
            signatures: Signatures(pem::provider()),
        })
    }

    /// Accepts whatever certificate the upstream presents (its chain, names and dates are
    /// not checked); the handshake signatures still are.
    pub fn accept_any() -> Arc<Self> {
        Arc::new(ServerVerifier {
            bundle: None,
            check_host_name: false,
            policy: PeerPolicy::default(),
            signatures: Signatures(pem::provider()),
        })
    }

    /// Whether the upstream's certificate is verified at all.
    pub fn verifies(&self) -> bool {
        self.bundle.is_some()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(bundle) = &self.bundle else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &bundle.state()?.roots,
            intermediates,
            now,
            self.signatures.0.signature_verification_algorithms.all,
        )?;
        if self.check_host_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        self.policy.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svid(uri: &str, dns: &[&str]) -> CertificateDer<'static> {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_trust_domain_and_expected_names_decide_after_the_chain() {
        let web = svid("spiffe://cluster.local/ns/shop/sa/web", &["web.shop"]);
        let policy = |domain: Option<&str>, sans: Vec<SanMatcher>| PeerPolicy {
            trust_domain: domain.map(str::to_string),
            subject_alt_names: sans,
        };
        assert!(policy(None, vec![]).check(&web).is_ok());
        assert!(policy(Some("cluster.local"), vec![]).check(&web).is_ok());
        let other = policy(Some("other.org"), vec![]).check(&web).unwrap_err();
        assert!(other.to_string().contains("not of trust domain"), "{other}");
        let expect = |m: StringMatch, t: SanType| SanMatcher {
            san_type: t,
            matcher: m,
        };
        for (matcher, ok) in [
            (
                SanMatcher::uri("spiffe://cluster.local/ns/shop/sa/web"),
                true,
            ),
            (
                SanMatcher::uri("spiffe://cluster.local/ns/shop/sa/api"),
                false,
            ),
            (
                expect(
                    StringMatch::Prefix("spiffe://cluster.local/ns/shop/".into()),
                    SanType::Uri,
                ),
                true,
            ),
            (
                expect(StringMatch::Suffix("/sa/web".into()), SanType::Uri),
                true,
            ),
            (
                expect(StringMatch::Contains("/ns/bank/".into()), SanType::Uri),
                false,
            ),
            (
                expect(StringMatch::Exact("web.shop".into()), SanType::Dns),
                true,
            ),
            // A URI matcher never matches a DNS name, nor the other way round.
            (
                expect(StringMatch::Exact("web.shop".into()), SanType::Uri),
                false,
            ),
        ] {
            let result = policy(Some("cluster.local"), vec![matcher.clone()]).check(&web);
            assert_eq!(result.is_ok(), ok, "{matcher:?}: {result:?}");
        }
        let plain = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let plain = plain.self_signed(&key).unwrap().der().clone();
        let refused = policy(Some("cluster.local"), vec![])
            .check(&plain)
            .unwrap_err();
        assert!(refused.to_string().contains("no SPIFFE ID"), "{refused}");
    }
}
