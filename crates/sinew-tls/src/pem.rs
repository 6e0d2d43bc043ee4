//! Reading PEM certificates, keys and trust roots, from files (config) or from bytes
//! (secrets pushed over SDS). Errors say which file or secret and why.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Reads a PEM certificate chain from a file.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    parse_certs(&read(path)?, &format!("{path:?}"))
}

/// Reads the first PEM private key (PKCS#8, PKCS#1 or SEC1) of a file.
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    parse_key(&read(path)?, &format!("{path:?}"))
}

/// Builds a root store from a PEM bundle of CA certificates in a file.
pub fn load_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    parse_roots(&read(path)?, &format!("{path:?}"))
}

/// Parses a PEM certificate chain; `what` names its source in errors.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| format!("cannot parse {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Parses the first PEM private key.
pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("cannot parse {what}: {e}"))?
        .ok_or_else(|| format!("{what} holds no PEM private key"))
}

/// Parses a PEM bundle of CA certificates into a root store.
pub fn parse_roots(pem: &[u8], what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(pem, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what}: bad CA certificate: {e}"))?;
    }
    Ok(roots)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot open {path:?}: {e}"))
}

/// The crypto provider every Sinew listener, upstream and control channel uses.
///
/// aws-lc-rs rather than ring, by measurement: its RSA signatures cost 0.60× of ring's, so
/// a full handshake with an RSA 2048 certificate does too, and ECDSA and resumed handshakes
/// cost about 0.9× (BENCHMARKS.md, "rustls crypto provider").
///
/// Key exchange groups in the order Sinew prefers them as a server (it picks the first of
/// its own groups the client sent a key share for, so no extra round trip): X25519, then
/// the NIST curves, then the X25519+ML-KEM-768 hybrid. The hybrid stays available for
/// clients that offer only it, but is not preferred: it costs more per handshake and
/// sends about 1 KB more each way, and mesh sessions are short-lived.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
            kx_group::X25519MLKEM768,
        ],
        ..default_provider()
    })
}

/// Makes [`provider`] the process default, for libraries that build their own rustls
/// configs without naming one (the Kubernetes client). Call once at start; later calls
/// and a default set elsewhere first are harmless.
pub fn install_default_provider() {
    let _ = rustls::crypto::CryptoProvider::install_default((*provider()).clone());
}
