//! Compiling TLS: the proxy's mesh identity, and each listener's acceptor — a gateway's
//! `tls` (its certificate, optionally verifying client certificates) or mesh `mtls`
//! (the proxy's SVID, clients verified against the mesh's bundle and trust domain).

use std::sync::Arc;

use sinew_config::model::{Config, Listener};
use sinew_config::tls::MtlsMode;
use sinew_config::ConfigError;
use sinew_tls::{ClientVerifier, MeshIdentity, PeerPolicy, RotatingCert, TrustBundle};
use tokio_rustls::TlsAcceptor;

use super::snapshot::{DownstreamTls, Snapshot};

/// The mesh identity for `config`: the previous snapshot's when `mesh` is unchanged (so
/// clusters keep their pooled mTLS connections across reloads), else loaded afresh.
pub(crate) fn mesh_identity(
    config: &Config,
    previous: Option<&Snapshot>,
) -> Result<Option<Arc<MeshIdentity>>, ConfigError> {
    let Some(mesh) = &config.mesh else {
        return Ok(None);
    };
    if let Some((was, identity)) = previous.and_then(|p| p.mesh.as_ref()) {
        if was == mesh {
            return Ok(Some(identity.clone()));
        }
    }
    let files = &mesh.identity;
    MeshIdentity::from_files(&mesh.trust_domain, &files.cert, &files.key, &files.bundle)
        .map(Some)
        .map_err(|(field, message)| ConfigError::new(format!("mesh.identity.{field}"), message))
}

/// A listener's TLS, if it takes any. The error is (field path under the listener,
/// message).
pub(crate) fn downstream_tls(
    l: &Listener,
    mesh: Option<&Arc<MeshIdentity>>,
) -> Result<Option<DownstreamTls>, (String, String)> {
    let http_alpn = || vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let builder = rustls::ServerConfig::builder_with_provider(sinew_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls".to_string(), e.to_string()))?;
    if let Some(t) = &l.tls {
        let cert = RotatingCert::from_files(&t.cert, &t.key)
            .map_err(|e| e.field_and_message())
            .map_err(|(f, m)| (format!("tls.{f}"), m))?;
        let builder = match &t.client_ca {
            Some(ca) => {
                let bundle =
                    TrustBundle::from_file(ca).map_err(|e| ("tls.client_ca".to_string(), e))?;
                let policy = PeerPolicy {
                    trust_domain: None,
                    subject_alt_names: sinew_upstream::cluster::san_matchers(
                        &t.match_subject_alt_names,
                    ),
                };
                builder.with_client_cert_verifier(ClientVerifier::new(
                    bundle,
                    t.require_client_certificate,
                    policy,
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = t.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        return Ok(Some(DownstreamTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            plaintext_allowed: false,
            local_uri_san: first_uri_san(&cert),
            cert,
        }));
    }
    let plaintext_allowed = match l.mtls {
        None | Some(MtlsMode::Disable) => return Ok(None),
        Some(MtlsMode::Strict) => false,
        Some(MtlsMode::Permissive) => true,
    };
    let Some(mesh) = mesh else {
        return Err(("mtls".into(), "no mesh identity is configured".into()));
    };
    let verifier = ClientVerifier::new(mesh.bundle.clone(), true, mesh.peer_policy(&[]));
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(mesh.cert.clone());
    if l.http.is_some() {
        config.alpn_protocols = http_alpn();
    }
    Ok(Some(DownstreamTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        plaintext_allowed,
        local_uri_san: first_uri_san(&mesh.cert),
        cert: mesh.cert.clone(),
    }))
}

fn first_uri_san(cert: &RotatingCert) -> Option<String> {
    cert.leaf_identity()?.uri_sans.into_iter().next()
}
