//! Fuzzing (docs/fuzzing.md) of what a peer sends that Sinew reads: certificates (DER,
//! mutated from real SVIDs) and SPIFFE IDs (text). Never a panic; what is accepted is
//! consistent with itself.

use sinew_identity::{PeerIdentity, SpiffeId};

fn svid(uris: &[&str], dns: &[&str]) -> Vec<u8> {
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

const DER_DICTIONARY: &[&[u8]] = &[
    b"\x30\x82",
    b"\x06\x03\x55\x1d\x11",
    b"\x86\x24spiffe://cluster.local/ns/a/sa/b",
    b"\x82\x09localhost",
    b"\xa0\x03\x02\x01\x02",
    b"\x30\x00",
    b"\xff\xff\xff\xff",
];

#[test]
fn fuzz_peer_certificate_der_mutated() {
    let seeds = vec![
        svid(&["spiffe://cluster.local/ns/shop/sa/web"], &["web.shop"]),
        svid(&["spiffe://a.org/x", "spiffe://a.org/y"], &[]),
        svid(&[], &["a.example", "*.b.example"]),
    ];
    sinew_fuzz::run(
        "fuzz_peer_certificate_der_mutated",
        2,
        sinew_fuzz::mutated(seeds, DER_DICTIONARY),
        |der| {
            if let Ok(identity) = PeerIdentity::from_der(&der) {
                if let Some(id) = &identity.spiffe {
                    // An SVID's ID is one of its URI SANs and parses again as itself.
                    assert!(identity.uri_sans.iter().any(|u| u == id.as_str()));
                    assert_eq!(&SpiffeId::parse(id.as_str()).unwrap(), id);
                }
                assert_eq!(identity.sha256.len(), 64);
            }
            Ok(())
        },
    );
}

const ID_DICTIONARY: &[&[u8]] = &[
    b"spiffe://",
    b"SPIFFE://",
    b"cluster.local",
    b"/",
    b"//",
    b".",
    b"..",
    b"/ns/",
    b"/sa/",
    b"%2F",
    b":443",
    b"@",
    b"?",
    b"#",
    b"\xc3\xa9",
];

#[test]
fn fuzz_spiffe_id_text() {
    sinew_fuzz::run(
        "fuzz_spiffe_id_text",
        1,
        sinew_fuzz::token_soup(ID_DICTIONARY, 12),
        |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(id) = SpiffeId::parse(&text) {
                assert_eq!(id.as_str(), text);
                assert!(!id.trust_domain().is_empty());
                assert!(!id.path().contains("//") && !id.path().ends_with('/'));
                assert_eq!(format!("spiffe://{}", id.principal()), text);
            }
            Ok(())
        },
    );
}
