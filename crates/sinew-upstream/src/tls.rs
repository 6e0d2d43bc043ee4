//! Reading PEM certificates, keys and trust roots, for listeners and upstream TLS alike.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::BufReader;

/// Reads a PEM certificate chain; errors say which file and why.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path:?}: {e}"))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(file)).collect();
    let certs = certs.map_err(|e| format!("cannot parse {path:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

/// Reads the first PEM private key (PKCS#8, PKCS#1 or SEC1) of a file.
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path:?}: {e}"))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| format!("cannot parse {path:?}: {e}"))?
        .ok_or_else(|| format!("{path:?} holds no PEM private key"))
}

/// Builds a root store from a PEM bundle of CA certificates.
pub fn load_roots(path: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{path:?}: bad CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The crypto provider Sinew uses everywhere (ring: small and quick to build).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
