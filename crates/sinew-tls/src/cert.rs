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
    let provider = pem::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(format!("cannot use the key in {key_what}: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::Key(format!(
            "{key_what} does not fit the certificate in {cert_what}"
        ))),
        // rustls cannot read the leaf (webpki takes X.509 v3 only): compare the keys
        // with a parser that reads v1 too. Envoy's own example certificates are v1, and
        // serving one needs no more than sending it.
        Err(e) => match leaf_public_key(&certified.cert[0]) {
            Some(leaf)
                if spki_key(certified.key.public_key().as_deref()).as_ref() == Some(&leaf) =>
            {
                Ok(certified)
            }
            Some(_) => Err(CertError::Key(format!(
                "{key_what} does not fit the certificate in {cert_what}"
            ))),
            None => Err(CertError::Cert(format!(
                "cannot read the certificate in {cert_what}: {e}"
            ))),
        },
    }
}

/// The public key (the BIT STRING of the SubjectPublicKeyInfo) of a certificate, of any
/// X.509 version.
fn leaf_public_key(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// The public key in a DER SubjectPublicKeyInfo.
fn spki_key(spki: Option<&[u8]>) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;
    let (_, info) = SubjectPublicKeyInfo::from_der(spki?).ok()?;
    Some(info.subject_public_key.data.to_vec())
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

    /// An X.509 v1 certificate (no extensions, as `openssl x509 -req` makes them and as
    /// Envoy's example certificates are), made for this test, with its key and another.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBJzCBzQIUQz5vsnWiK/aJNSenoNgDmp8k5oEwCgYIKoZIzj0EAwIwFTETMBEG
A1UEAwwKdjEuZXhhbXBsZTAgFw0yNjEyMDcxMjI4MjBaGA8yMTI2MTExMzEyMjgy
MFowFTETMBEGA1UEAwwKdjEuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABBbtac5XcxcZRZSYqe+T+cycaeLQVKVj+8YFtz2F9lDK8XYuzr+KbIXFjLUU
OrXsh8KGLwZgOzHZJN9/dZm0x+UwCgYIKoZIzj0EAwIDSQAwRgIhAMoGrV82/fg/
HuExMe8LigoH6UdgefA4IukPMKnwnBAgAiEA6YoP04Zy/WKLhVEaqHDf9FLa56FS
NqYi39Wg+F9bntg=
-----END CERTIFICATE-----\n";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUf1nC57MByTE5O3R
n/qAohfn5cYCvTQ6qAXTt5m0xnihRANCAAQW7WnOV3MXGUWUmKnvk/nMnGni0FSl
Y/vGBbc9hfZQyvF2Ls6/imyFxYy1FDq17IfChi8GYDsx2STff3WZtMfl
-----END PRIVATE KEY-----\n";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0tvSRJ+8ZCvw6d6U
tt5CiicOYnBVCUj9/BCq4I9lAwGhRANCAARj3mW8LvwpnanLtIm9/SuDEyO0Nrqr
yUOYQ+u8Y5oGHxejDtx5rw8GaKO8mE1HB79Y+gK4KEeIrdORhUfK5/OB
-----END PRIVATE KEY-----\n";

    #[test]
    fn an_x509_v1_certificate_is_served_when_its_key_fits_and_refused_when_not() {
        let ok = certified_key(V1_CERT.as_bytes(), V1_KEY.as_bytes(), "v1.pem", "v1.key");
        assert!(ok.is_ok(), "{ok:?}");
        let err = certified_key(V1_CERT.as_bytes(), OTHER_KEY.as_bytes(), "v1.pem", "v1.key")
            .unwrap_err();
        assert_eq!(
            err,
            CertError::Key("v1.key does not fit the certificate in v1.pem".into())
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err =
            certified_key(garbage.as_bytes(), V1_KEY.as_bytes(), "c.pem", "v1.key").unwrap_err();
        assert!(
            matches!(&err, CertError::Cert(m) if m.starts_with("cannot read the certificate in c.pem")),
            "{err:?}"
        );
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
