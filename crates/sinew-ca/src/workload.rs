//! The proxy's workload certificate from the mesh CA.
//!
//! The key is made here and stays in memory; the CA sees only a CSR. The first request
//! proves who the workload is with its bootstrap credential (a token file, re-read for
//! every request since platforms rotate them); renewals prove it with the certificate
//! the proxy already holds, over mTLS, and fall back to the token if the CA no longer
//! takes that certificate (it expired while the CA was unreachable, or its root was
//! rolled over). Each new certificate goes into the [`RotatingCert`] that every mesh
//! listener and cluster uses, so new handshakes take it and open connections keep their
//! session.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use sinew_identity::PeerIdentity;
use sinew_tls::{MeshIdentity, PeerPolicy, RotatingCert, ServerVerifier, TrustBundle};
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;

use crate::agent::SecretStore;
use crate::proto::IstioCertificateRequest;
use crate::service::istio_certificate_service_client::IstioCertificateServiceClient;

/// Where the workload's certificate comes from.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// `https://host:port` of `sinew control` (its xDS port).
    pub address: String,
    /// The mesh's trust domain; the CA's own certificate must belong to it.
    pub trust_domain: String,
    /// The roots the CA's certificate chains to; the mesh's trust bundle until SDS
    /// pushes a newer one (the same object, so a rollover reaches this channel too).
    pub bundle: Arc<TrustBundle>,
    /// The same roots as PEM (what an agent's SDS socket serves until SDS updates it).
    pub bundle_pem: String,
    /// The bootstrap credential: a file holding a bearer token.
    pub token_file: PathBuf,
    /// Lifetime to ask for; `None` takes the CA's.
    pub lifetime: Option<Duration>,
}

/// A workload identity kept current by a renewal task; dropping it stops the task.
pub struct WorkloadIdentity {
    pub identity: Arc<MeshIdentity>,
    /// The same certificate and key as PEM, and the bundle, for an agent's SDS socket.
    pub secrets: Arc<SecretStore>,
    renewals: JoinHandle<()>,
}

impl Drop for WorkloadIdentity {
    fn drop(&mut self) {
        self.renewals.abort();
    }
}

/// A certificate and when to renew it.
struct Issued {
    certified: rustls::sign::CertifiedKey,
    chain_pem: String,
    key_pem: String,
    renew_at: SystemTime,
    spiffe_id: String,
}

/// Gets the first certificate (retrying with backoff until `give_up`), then starts the
/// renewal task. Must run inside the tokio runtime.
pub async fn obtain(config: CaClientConfig, give_up: Duration) -> Result<WorkloadIdentity, String> {
    let deadline = tokio::time::Instant::now() + give_up;
    let mut delay = Duration::from_millis(200);
    let first = loop {
        match request(&config, None).await {
            Ok(issued) => break issued,
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!("mesh CA {}: {e}; retrying in {delay:?}", config.address);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(format!("mesh CA {}: {e}", config.address)),
        }
    };
    tracing::info!(spiffe_id = %first.spiffe_id, "workload certificate issued by the mesh CA");
    let secrets = SecretStore::new(
        first.chain_pem.clone(),
        first.key_pem.clone(),
        config.bundle_pem.clone(),
    );
    let cert = RotatingCert::pushed(crate::agent::WORKLOAD_SECRET, first.certified);
    let identity = Arc::new(MeshIdentity {
        trust_domain: config.trust_domain.clone(),
        cert,
        bundle: config.bundle.clone(),
    });
    let renewals = tokio::spawn(renew(
        config,
        identity.clone(),
        secrets.clone(),
        first.renew_at,
    ));
    Ok(WorkloadIdentity {
        identity,
        secrets,
        renewals,
    })
}

/// A mesh identity for checking a config (`sinew validate`) without asking the CA: the
/// real bundle, and a throwaway self-signed certificate that never serves traffic.
pub fn stand_in(trust_domain: &str, bundle: &str) -> Result<Arc<MeshIdentity>, String> {
    let bundle = TrustBundle::from_file(bundle)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = CertificateParams::new(vec!["stand-in.invalid".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    let certified = sinew_tls::certified_key(
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        "stand-in",
        "stand-in key",
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(MeshIdentity {
        trust_domain: trust_domain.into(),
        cert: RotatingCert::pushed("stand-in", certified),
        bundle,
    }))
}

/// Renews at each certificate's renewal time; a failed renewal is retried with backoff
/// (never slower than a tenth of what is left, so it keeps trying well before expiry).
async fn renew(
    config: CaClientConfig,
    identity: Arc<MeshIdentity>,
    secrets: Arc<SecretStore>,
    mut renew_at: SystemTime,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let attempt = match request(&config, Some(&identity.cert)).await {
            Err(RequestError::Refused(why)) => {
                tracing::info!("mesh CA refused the current certificate ({why}); asking with the bootstrap credential");
                request(&config, None).await
            }
            other => other,
        };
        match attempt {
            Ok(issued) => {
                tracing::info!(spiffe_id = %issued.spiffe_id, "workload certificate renewed");
                identity.cert.replace(issued.certified);
                secrets.set_workload(issued.chain_pem, issued.key_pem);
                renew_at = issued.renew_at;
                delay = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!("renewing the workload certificate: {e}; retrying in {delay:?}");
                renew_at = SystemTime::now() + delay;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[derive(Debug)]
enum RequestError {
    /// The CA did not take the credential.
    Refused(String),
    Other(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Refused(m) => write!(f, "refused: {m}"),
            RequestError::Other(m) => f.write_str(m),
        }
    }
}

/// One CSR round trip: with the current certificate (mTLS) when given, else the token.
async fn request(
    config: &CaClientConfig,
    current: Option<&Arc<RotatingCert>>,
) -> Result<Issued, RequestError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| RequestError::Other(format!("cannot make a key: {e}")))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| RequestError::Other(format!("cannot make the CSR: {e}")))?;
    let tls = client_tls(config, current);
    let channel = sinew_xds_client::channel::connect(
        &config.address,
        Duration::from_secs(5),
        Some(tls),
        None,
    )
    .await
    .map_err(RequestError::Other)?;
    let mut call = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: config.lifetime.map_or(0, |l| l.as_secs() as i64),
    });
    if current.is_none() {
        let token = std::fs::read_to_string(&config.token_file).map_err(|e| {
            RequestError::Other(format!(
                "cannot read the token {:?}: {e}",
                config.token_file
            ))
        })?;
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| RequestError::Other("the token is not a valid header value".into()))?;
        call.metadata_mut().insert("authorization", value);
    }
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(call)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                RequestError::Refused(status.message().to_string())
            }
            _ => RequestError::Other(format!("{:?}: {}", status.code(), status.message())),
        })?
        .into_inner();
    issued(&response.cert_chain, &key).map_err(RequestError::Other)
}

/// Checks the returned chain against the key and reads when to renew it.
fn issued(chain: &[String], key: &KeyPair) -> Result<Issued, String> {
    let chain_pem = chain.concat();
    let key_pem = key.serialize_pem();
    let certified = sinew_tls::certified_key(
        chain_pem.as_bytes(),
        key_pem.as_bytes(),
        "the CA's answer",
        "the workload key",
    )
    .map_err(|e| e.to_string())?;
    let leaf = certified
        .cert
        .first()
        .ok_or("the CA answered with an empty chain")?;
    let identity = PeerIdentity::from_der(leaf)?;
    let spiffe_id = identity
        .spiffe
        .as_ref()
        .map(|s| s.to_string())
        .ok_or("the issued certificate holds no SPIFFE ID")?;
    Ok(Issued {
        certified,
        chain_pem,
        key_pem,
        renew_at: renewal_time(SystemTime::now(), identity.not_after),
        spiffe_id,
    })
}

/// Half the remaining lifetime, less up to a tenth of it at random, so proxies started
/// together do not all renew in the same second.
fn renewal_time(now: SystemTime, not_after: i64) -> SystemTime {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let remaining = (not_after as f64 - now_secs).max(0.0);
    let jitter = remaining * 0.1 * fastrand::f64();
    now + Duration::from_secs_f64(remaining / 2.0 - jitter.min(remaining / 2.0))
}

/// TLS to the CA: its certificate must chain to the bundle, name the host dialled and
/// belong to the trust domain; with `current`, the proxy presents its certificate.
fn client_tls(
    config: &CaClientConfig,
    current: Option<&Arc<RotatingCert>>,
) -> Arc<rustls::ClientConfig> {
    let verifier = ServerVerifier::new(
        config.bundle.clone(),
        true,
        PeerPolicy {
            trust_domain: Some(config.trust_domain.clone()),
            subject_alt_names: Vec::new(),
        },
    );
    let builder = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match current {
        Some(cert) => builder.with_client_cert_resolver(cert.clone()),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_in_the_first_half_of_what_is_left() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for _ in 0..1000 {
            let at = renewal_time(now, 1_000_000 + 86_400);
            let after = at.duration_since(now).unwrap().as_secs_f64();
            assert!(
                (86_400.0 * 0.4..=86_400.0 * 0.5).contains(&after),
                "{after}"
            );
        }
        assert_eq!(
            renewal_time(now, 10),
            now,
            "an expired certificate renews now"
        );
    }
}
