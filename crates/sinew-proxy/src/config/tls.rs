//! Compiling TLS: the proxy's mesh identity, and each listener's acceptor — a gateway's
//! `tls` (its certificate, optionally verifying client certificates) or mesh `mtls`
//! (the proxy's SVID, clients verified against the mesh's bundle and trust domain).
//! A certificate or CA named as an SDS secret is the shared one from
//! [`PushedSecrets`], awaited until the secret arrives.

use std::sync::Arc;

use sinew_config::model::{Config, Listener};
use sinew_config::tls::{KeySource, MtlsMode, PemSource};
use sinew_config::ConfigError;
use sinew_tls::{
    ClientVerifier, MeshIdentity, PeerPolicy, PushedSecrets, RotatingCert, SniCertificates,
    TrustBundle,
};
use tokio_rustls::TlsAcceptor;

use super::resumption::SessionResumption;
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
    if let Some(ca) = &mesh.ca {
        // The first certificate is fetched before the proxy starts (and seeds the first
        // snapshot); checking a config (`sinew validate`) gets a stand-in with the same
        // bundle instead, so every listener and cluster is still checked.
        if previous.is_some() {
            return Err(ConfigError::new(
                "mesh",
                "a mesh CA source (or a change to one) is taken only when `sinew proxy` starts: restart the proxy",
            ));
        }
        return sinew_ca::workload::stand_in(&mesh.trust_domain, &ca.bundle)
            .map(Some)
            .map_err(|message| ConfigError::new("mesh.ca.bundle", message));
    }
    let Some(files) = &mesh.identity else {
        return Ok(None);
    };
    MeshIdentity::from_files(&mesh.trust_domain, &files.cert, &files.key, &files.bundle)
        .map(Some)
        .map_err(|(field, message)| ConfigError::new(format!("mesh.identity.{field}"), message))
}

/// A listener's TLS, if it takes any; `previous` is the same listener's in the config
/// this one replaces. The error is (field path under the listener, message).
pub(crate) fn downstream_tls(
    l: &Listener,
    mesh: Option<&Arc<MeshIdentity>>,
    previous: Option<&DownstreamTls>,
) -> Result<Option<DownstreamTls>, (String, String)> {
    let http_alpn = || vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Some(t) = &l.tls {
        let versions = sinew_upstream::cluster::protocol_versions(t.min_version, t.max_version);
        let builder = rustls::ServerConfig::builder_with_provider(sinew_tls::provider())
            .with_protocol_versions(&versions)
            .map_err(|e| ("tls.min_version".to_string(), e.to_string()))?;
        let certs = listener_certificates(t)?;
        let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match certs.as_slice() {
            [(_, only)] => only.clone(),
            _ => SniCertificates::new(certs.clone()),
        };
        let certs: Vec<Arc<RotatingCert>> = certs.into_iter().map(|(_, c)| c).collect();
        let builder = match &t.client_ca {
            Some(ca) => {
                let mut sans = sinew_upstream::cluster::san_matchers(&t.match_subject_alt_names);
                let bundle = match ca {
                    PemSource::File(ca) => {
                        TrustBundle::from_file(ca).map_err(|e| ("tls.client_ca".to_string(), e))?
                    }
                    PemSource::Inline(ca) => TrustBundle::from_pem(&ca.pem, "the inline CA")
                        .map_err(|e| ("tls.client_ca.pem".to_string(), e))?,
                    PemSource::Sds(s) => {
                        let key = sinew_upstream::cluster::secret_key(s);
                        let (bundle, secret_sans) = PushedSecrets::global().validation(&key);
                        sans.extend(secret_sans);
                        bundle
                    }
                };
                let policy = PeerPolicy {
                    trust_domain: None,
                    subject_alt_names: sans,
                };
                builder.with_client_cert_verifier(ClientVerifier::new(
                    bundle,
                    t.require_client_certificate,
                    policy,
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver);
        // A TCP proxy offers no ALPN: it does not know what it carries.
        if l.http.is_some() {
            config.alpn_protocols = t.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        }
        let settings = format!("{t:?}");
        let kept = previous
            .and_then(|p| p.resumption.as_ref())
            .filter(|r| r.settings == settings)
            .cloned();
        let resumption = match kept {
            Some(kept) => kept,
            None => SessionResumption::new(t, settings)?,
        };
        if let Some(ticketer) = &resumption.ticketer {
            config.ticketer = ticketer.clone();
        }
        config.session_storage = resumption.cache.clone();
        return Ok(Some(DownstreamTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            plaintext_allowed: t.allow_plaintext,
            local_uri_san: first_uri_san(&certs[0]),
            certs,
            resumption: Some(resumption),
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
    let builder = rustls::ServerConfig::builder_with_provider(sinew_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("mtls".to_string(), e.to_string()))?;
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
        certs: vec![mesh.cert.clone()],
        resumption: None,
    }))
}

/// A certificate with the DNS names it answers for.
type NamedCert = (Vec<String>, Arc<RotatingCert>);

/// A listener's certificates in config order (`cert`/`key` first, then
/// `certificates`), each with the DNS names its leaf answers for.
fn listener_certificates(
    t: &sinew_config::model::ListenerTls,
) -> Result<Vec<NamedCert>, (String, String)> {
    type Source<'a> = (
        String,
        &'a PemSource,
        Option<&'a KeySource>,
        Option<&'a str>,
        Option<&'a [String]>,
    );
    let mut sources: Vec<Source> = Vec::new();
    if let Some(cert) = &t.cert {
        sources.push(("tls".into(), cert, t.key.as_ref(), None, None));
    }
    for (j, c) in t.certificates.iter().enumerate() {
        let path = format!("tls.certificates[{j}]");
        let names = c.server_names.as_deref();
        let key = c.key.as_ref();
        sources.push((path, &c.cert, key, c.ocsp_staple.as_deref(), names));
    }
    sources
        .into_iter()
        .map(|(path, cert, key, ocsp, server_names)| {
            let cert = match cert {
                PemSource::File(_) | PemSource::Inline(_) => {
                    let key = key.ok_or_else(|| (format!("{path}.key"), "is required".into()))?;
                    sinew_upstream::cluster::certificate(cert, key, ocsp)
                        .map_err(|e| e.field_and_message())
                        .map_err(|(f, m)| (format!("{path}.{f}"), m))?
                }
                PemSource::Sds(s) => {
                    PushedSecrets::global().certificate(&sinew_upstream::cluster::secret_key(s))
                }
            };
            // Names given in config (Envoy's filter-chain `server_names`) replace the
            // leaf's: the chain, not the certificate, says which SNI it serves.
            let names = match server_names {
                Some(names) => names.to_vec(),
                None => cert
                    .leaf_identity()
                    .map(|id| id.dns_sans)
                    .unwrap_or_default(),
            };
            Ok((names, cert))
        })
        .collect()
}

fn first_uri_san(cert: &RotatingCert) -> Option<String> {
    cert.leaf_identity()?.uri_sans.into_iter().next()
}
