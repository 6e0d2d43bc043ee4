//! A certificate and key that can be replaced while connections use it: new handshakes
//! take the new one, established sessions keep theirs (TLS never re-reads a certificate
//! after its handshake). Fed from files (re-read when they change), from PEM written in
//! the config (which changes only with the config), or pushed (SDS).
//! A pushed certificate may be awaited: referenced before its secret arrived, it
//! answers no handshake (which then fails cleanly) until the secret fills it in place.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use sinew_identity::PeerIdentity;

use crate::pem;

/// PEM material named in config: a file, or the text itself.
#[derive(Clone, PartialEq, Eq)]
pub enum PemInput {
    /// A file, re-read when it changes.
    File(String),
    /// PEM text from the config (Envoy's `inline_string`): never re-read.
    Inline(String),
}

impl std::fmt::Debug for PemInput {
    // Inline text may be a private key: shown by length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemInput::File(path) => f.debug_tuple("File").field(path).finish(),
            PemInput::Inline(text) => write!(f, "Inline({} bytes)", text.len()),
        }
    }
}

impl PemInput {
    /// The file, if it is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            PemInput::File(path) => Some(path),
            PemInput::Inline(_) => None,
        }
    }

    /// The PEM and how errors name it (`"cert.pem"`, or `the inline cert`).
    fn read(&self, field: &str) -> Result<(Vec<u8>, String), String> {
        match self {
            PemInput::File(path) => Ok((read(path)?, format!("{path:?}"))),
            PemInput::Inline(text) => Ok((text.as_bytes().to_vec(), format!("the inline {field}"))),
        }
    }
}

/// Where a rotating certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files or inline PEM (and a DER OCSP response to staple); the files are
    /// re-read when they change.
    Config {
        cert: PemInput,
        key: PemInput,
        ocsp: Option<String>,
    },
    /// Pushed by the control plane (an SDS secret of this name).
    Pushed { name: String },
}

/// A certificate chain with its key, swappable without a lock on the handshake path.
pub struct RotatingCert {
    /// None while a pushed secret has not arrived.
    current: ArcSwapOption<CertifiedKey>,
    source: CertSource,
}

impl std::fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingCert")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Which part of a certificate source is wrong, for a config error's field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertError {
    Cert(String),
    Key(String),
    Ocsp(String),
}

impl CertError {
    /// The config field the error is about (`cert` or `key`) and the message.
    pub fn field_and_message(self) -> (&'static str, String) {
        match self {
            CertError::Cert(m) => ("cert", m),
            CertError::Key(m) => ("key", m),
            CertError::Ocsp(m) => ("ocsp_staple", m),
        }
    }
}

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertError::Cert(m) | CertError::Key(m) | CertError::Ocsp(m) => f.write_str(m),
        }
    }
}

/// Builds a `CertifiedKey` from PEM, checking that the key is the certificate's.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_what: &str,
    key_what: &str,
) -> Result<CertifiedKey, CertError> {
    let chain = pem::parse_certs(cert_pem, cert_what).map_err(CertError::Cert)?;
    let key = pem::parse_key(key_pem, key_what).map_err(CertError::Key)?;
    CertifiedKey::from_der(chain, key, &pem::provider()).map_err(|e| {
        CertError::Key(format!(
            "{key_what} does not fit the certificate in {cert_what}: {e}"
        ))
    })
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot open {path:?}: {e}"))
}

fn certified_from_config(
    cert: &PemInput,
    key: &PemInput,
    ocsp: Option<&str>,
) -> Result<CertifiedKey, CertError> {
    let (cert_pem, cert_what) = cert.read("certificate").map_err(CertError::Cert)?;
    let (key_pem, key_what) = key.read("key").map_err(CertError::Key)?;
    let mut certified = certified_key(&cert_pem, &key_pem, &cert_what, &key_what)?;
    if let Some(ocsp) = ocsp {
        certified.ocsp = Some(read(ocsp).map_err(CertError::Ocsp)?);
    }
    Ok(certified)
}

impl RotatingCert {
    /// Loads a certificate and key from files and, inside a runtime, re-reads them
    /// whenever they change.
    pub fn from_files(cert: &str, key: &str) -> Result<Arc<Self>, CertError> {
        Self::from_files_stapling(cert, key, None)
    }

    /// As [`from_files`](Self::from_files), stapling the DER OCSP response in `ocsp`
    /// (re-read with the others) to every handshake.
    pub fn from_files_stapling(
        cert: &str,
        key: &str,
        ocsp: Option<&str>,
    ) -> Result<Arc<Self>, CertError> {
        Self::from_config(
            &PemInput::File(cert.into()),
            &PemInput::File(key.into()),
            ocsp,
        )
    }

    /// A certificate and key each from a file or inline PEM, stapling the DER OCSP
    /// response in `ocsp` if given. Inside a runtime, the files among them are re-read
    /// whenever they change; with no file, nothing is watched.
    pub fn from_config(
        cert: &PemInput,
        key: &PemInput,
        ocsp: Option<&str>,
    ) -> Result<Arc<Self>, CertError> {
        let loaded = certified_from_config(cert, key, ocsp)?;
        let rotating = Arc::new(RotatingCert {
            current: ArcSwapOption::from_pointee(loaded),
            source: CertSource::Config {
                cert: cert.clone(),
                key: key.clone(),
                ocsp: ocsp.map(str::to_string),
            },
        });
        let mut paths: Vec<String> = [cert.file(), key.file(), ocsp]
            .into_iter()
            .flatten()
            .map(str::to_string)
            .collect();
        paths.dedup();
        if !paths.is_empty() {
            crate::watch::spawn(&rotating, paths, RotatingCert::reload_files);
        }
        Ok(rotating)
    }

    /// A certificate that the control plane pushes (`name` is its SDS secret).
    pub fn pushed(name: &str, first: CertifiedKey) -> Arc<Self> {
        Arc::new(RotatingCert {
            current: ArcSwapOption::from_pointee(first),
            source: CertSource::Pushed { name: name.into() },
        })
    }

    /// A pushed certificate whose secret has not arrived yet: it answers no handshake
    /// until [`replace`](Self::replace) fills it.
    pub fn awaited(name: &str) -> Arc<Self> {
        Arc::new(RotatingCert {
            current: ArcSwapOption::empty(),
            source: CertSource::Pushed { name: name.into() },
        })
    }

    /// Whether a certificate is in force (false only for an awaited secret).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    fn reload_files(&self) -> Result<(), String> {
        let CertSource::Config { cert, key, ocsp } = &self.source else {
            return Ok(());
        };
        let loaded =
            certified_from_config(cert, key, ocsp.as_deref()).map_err(|e| e.to_string())?;
        self.replace(loaded);
        Ok(())
    }

    /// Puts a new certificate in force for the handshakes that start from now on.
    pub fn replace(&self, certified: CertifiedKey) {
        self.current.store(Some(Arc::new(certified)));
    }

    /// The certificate in force (None while an awaited secret has not arrived).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Where it comes from.
    pub fn source(&self) -> &CertSource {
        &self.source
    }

    /// What the leaf certificate in force says (SPIFFE ID, serial, expiry), for the
    /// admin API and metrics.
    pub fn leaf_identity(&self) -> Option<PeerIdentity> {
        let current = self.current.load();
        PeerIdentity::from_der(current.as_ref()?.cert.first()?.as_ref()).ok()
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

impl ResolvesClientCert for RotatingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load_full()?;
        // Offer the certificate only when its key can sign a scheme the server accepts;
        // otherwise the handshake would fail later, with a less clear error.
        current.key.choose_scheme(sigschemes)?;
        Some(current)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_naming_the_key() {
        let cert_key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&cert_key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let err = certified_key(
            cert.pem().as_bytes(),
            other.serialize_pem().as_bytes(),
            "cert.pem",
            "key.pem",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CertError::Key(m) if m.contains("does not fit")),
            "{err:?}"
        );
        assert!(certified_key(
            cert.pem().as_bytes(),
            cert_key.serialize_pem().as_bytes(),
            "cert.pem",
            "key.pem"
        )
        .is_ok());
        let garbage = certified_key(b"not pem", b"", "cert.pem", "key.pem").unwrap_err();
        assert!(matches!(garbage, CertError::Cert(_)), "{garbage:?}");
    }

    #[tokio::test]
    async fn changed_files_are_reloaded_and_a_bad_change_keeps_the_last_good_pair() {
        let dir = std::env::temp_dir().join(format!("sinew-tls-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        let write = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            std::fs::write(&cert_path, cert.pem()).unwrap();
            std::fs::write(&key_path, key.serialize_pem()).unwrap();
            cert.der().clone()
        };
        let first = write("first.example");
        let rotating =
            RotatingCert::from_files(cert_path.to_str().unwrap(), key_path.to_str().unwrap())
                .unwrap();
        assert_eq!(rotating.current().unwrap().cert[0], first);
        let second = write("second.example");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rotating.current().unwrap().cert[0] != second && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(rotating.current().unwrap().cert[0], second);
        std::fs::write(&key_path, "-----BEGIN PRIVATE KEY-----\nbad\n").unwrap();
        tokio::time::sleep(crate::watch::POLL_INTERVAL * 3).await;
        assert_eq!(
            rotating.current().unwrap().cert[0],
            second,
            "the last good pair stays"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
