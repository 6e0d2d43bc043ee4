//! The identity a peer's certificate states, read once when its handshake completes.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::SpiffeId;

/// What a certificate (already verified by TLS) says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID, when the certificate is an X.509-SVID: exactly one `spiffe://` URI
    /// SAN, and a valid one.
    pub spiffe: Option<SpiffeId>,
    /// Every URI SAN, in the certificate's order.
    pub uri_sans: Vec<String>,
    /// Every DNS SAN.
    pub dns_sans: Vec<String>,
    /// The subject's distinguished name, as RFC 4514 text.
    pub subject: String,
    /// The serial number in lower-case hex.
    pub serial: String,
    /// The end of the validity period, in seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the DER certificate, lower-case hex (`x-forwarded-client-cert`'s
    /// `Hash`, Envoy's `%DOWNSTREAM_PEER_FINGERPRINT_256%`).
    pub sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl PeerIdentity {
    /// Reads a DER certificate; an error says what could not be read.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} bytes follow the certificate", rest.len()));
        }
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("bad subjectAltName: {e}"))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        let mut spiffe_uris = uri_sans.iter().filter(|u| u.starts_with("spiffe://"));
        let spiffe = match (spiffe_uris.next(), spiffe_uris.next()) {
            (Some(only), None) => SpiffeId::parse(only).ok(),
            _ => None,
        };
        let serial = hex(cert.tbs_certificate.raw_serial());
        Ok(PeerIdentity {
            spiffe,
            uri_sans,
            dns_sans,
            subject: cert.subject().to_string(),
            serial,
            not_after: cert.validity().not_after.timestamp(),
            sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
        })
    }

    /// The principal authorization rules match (`<trust-domain>/<path>` for a SPIFFE
    /// ID), if the certificate names one.
    pub fn principal(&self) -> Option<&str> {
        self.spiffe.as_ref().map(SpiffeId::principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_svid_names_its_spiffe_id_sans_serial_and_expiry() {
        let mut params = rcgen::CertificateParams::new(vec!["web.shop.svc".into()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/shop/sa/web".try_into().unwrap(),
        ));
        params.serial_number = Some(vec![0x01, 0xab, 0x7f].into());
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = PeerIdentity::from_der(cert.der()).unwrap();
        assert_eq!(id.principal(), Some("cluster.local/ns/shop/sa/web"));
        assert_eq!(id.dns_sans, vec!["web.shop.svc"]);
        assert_eq!(id.serial, "01ab7f");
        assert_eq!(id.not_after, 1_893_542_400);
        assert_eq!(id.sha256.len(), 64);
    }

    #[test]
    fn two_spiffe_uris_make_no_svid() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        for uri in ["spiffe://a.org/x", "spiffe://a.org/y"] {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(uri.try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = PeerIdentity::from_der(cert.der()).unwrap();
        assert_eq!(id.spiffe, None);
        assert_eq!(id.uri_sans.len(), 2);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", &[0xff; 64]] {
            assert!(PeerIdentity::from_der(input).is_err());
        }
    }
}
