//! Choosing a listener's certificate per handshake: by the client's SNI (exact names
//! first, then `*.` wildcards one label deep), then by what the client can verify — so
//! an ECDSA and an RSA certificate for the same names sit side by side and each client
//! gets one whose signature it accepts. Without a match, the first certificate (in
//! config order) the client can verify is the default.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::RotatingCert;

/// One certificate and the names it answers for.
#[derive(Debug)]
struct Entry {
    exact: Vec<String>,
    /// Wildcard suffixes, with their dot: `*.b.example` is stored as `.b.example`.
    wildcard: Vec<String>,
    cert: Arc<RotatingCert>,
}

/// A listener's certificates, chosen by SNI and signature scheme.
#[derive(Debug)]
pub struct SniCertificates {
    entries: Vec<Entry>,
}

impl SniCertificates {
    /// `certs` in config order, each with the DNS names it answers for (lower-case;
    /// `*.x` for a wildcard). The first is the default.
    pub fn new(certs: Vec<(Vec<String>, Arc<RotatingCert>)>) -> Arc<Self> {
        let entries = certs
            .into_iter()
            .map(|(names, cert)| {
                let (wild, exact): (Vec<String>, Vec<String>) = names
                    .into_iter()
                    .map(|n| n.to_ascii_lowercase())
                    .partition(|n| n.starts_with("*."));
                Entry {
                    exact,
                    wildcard: wild.into_iter().map(|w| w[1..].to_string()).collect(),
                    cert,
                }
            })
            .collect();
        Arc::new(SniCertificates { entries })
    }

    /// The certificates, in config order.
    pub fn certificates(&self) -> impl Iterator<Item = &Arc<RotatingCert>> {
        self.entries.iter().map(|e| &e.cert)
    }

    /// The certificate for `server_name` that can sign one of `schemes`.
    fn choose(
        &self,
        server_name: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let usable = |e: &Entry| {
            let current = e.cert.current()?;
            current.key.choose_scheme(schemes).map(|_| current)
        };
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            let exact = self.entries.iter().filter(|e| e.exact.contains(&name));
            if let Some(found) = exact.filter_map(usable).next() {
                return Some(found);
            }
            // A wildcard covers exactly one label: `*.b.example` is `x.b.example`, not
            // `b.example` nor `y.x.b.example`.
            if let Some(dot) = name.find('.') {
                let suffix = &name[dot..];
                let wild = self
                    .entries
                    .iter()
                    .filter(|e| e.wildcard.iter().any(|w| w == suffix));
                if let Some(found) = wild.filter_map(usable).next() {
                    return Some(found);
                }
            }
        }
        self.entries.iter().filter_map(usable).next()
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name(), hello.signature_schemes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::SignatureScheme as S;

    fn cert(name: &str) -> Arc<RotatingCert> {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let certified =
            crate::certified_key(c.pem().as_bytes(), key.serialize_pem().as_bytes(), "c", "k")
                .unwrap();
        RotatingCert::pushed(name, certified)
    }

    #[test]
    fn exact_names_win_over_wildcards_and_the_first_certificate_is_the_default() {
        let (default, a, wild) = (cert("default"), cert("a"), cert("wild"));
        let sni = SniCertificates::new(vec![
            (vec!["default.example".into()], default.clone()),
            (vec!["A.example".into()], a.clone()),
            (
                vec!["*.b.example".into(), "x.b.example".into()],
                wild.clone(),
            ),
        ]);
        let ecdsa = [S::ECDSA_NISTP256_SHA256];
        let pick = |name: Option<&str>| sni.choose(name, &ecdsa).unwrap();
        assert!(Arc::ptr_eq(&pick(Some("a.example")), &a.current().unwrap()));
        assert!(Arc::ptr_eq(
            &pick(Some("y.b.example")),
            &wild.current().unwrap()
        ));
        assert!(Arc::ptr_eq(
            &pick(Some("x.b.example")),
            &wild.current().unwrap()
        ));
        for other in [Some("b.example"), Some("z.y.b.example"), Some("nope"), None] {
            assert!(
                Arc::ptr_eq(&pick(other), &default.current().unwrap()),
                "{other:?}"
            );
        }
        // A client that can verify none of the keys' schemes gets nothing.
        assert!(sni.choose(Some("a.example"), &[S::ED448]).is_none());
    }
}
