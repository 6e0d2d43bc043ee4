//! The signing side of the mesh CA: a root made on first start and kept on disk, or a
//! root or intermediate loaded from files, and the certificates it issues.
//!
//! A workload certificate carries exactly one name, the SPIFFE ID the CA authenticated:
//! the CSR contributes only its public key (and must be signed by the matching private
//! key), so a workload cannot ask its way into another identity.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use sinew_identity::SpiffeId;
use time::OffsetDateTime;

use crate::config::CaConfig;

/// Lifetime of a root made on first start.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start this far in the past, for clocks a little behind ours.
const BACKDATE: Duration = Duration::from_secs(60);
/// Longest CSR accepted, in bytes of PEM.
const MAX_CSR_LEN: usize = 16 * 1024;

/// The CA as loaded: what signs, and what proxies are told to trust.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the signing certificate and its issuers, appended to every issued leaf.
    chain: Vec<String>,
    /// PEM of every root proxies trust: the signing chain's root and `trusted_roots`.
    bundle: String,
    trust_domain: String,
    lifetime: Duration,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The files the CA is read from (and watched for a rollover).
pub fn files(config: &CaConfig) -> Vec<PathBuf> {
    let mut files = match (&config.dir, &config.cert, &config.key) {
        (Some(dir), _, _) => vec![dir.join("ca.crt"), dir.join("ca.key")],
        (None, Some(cert), Some(key)) => vec![cert.clone(), key.clone()],
        _ => Vec::new(),
    };
    files.extend(config.trusted_roots.clone());
    files
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Authority {
    /// Loads the CA, first making and saving a root in `dir` if it has none.
    pub fn load(config: &CaConfig) -> Result<Authority, String> {
        let (cert_path, key_path) = match (&config.dir, &config.cert, &config.key) {
            (Some(dir), _, _) => {
                let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
                if !cert.exists() && !key.exists() {
                    create_root(dir, &cert, &key, &config.trust_domain)?;
                }
                (cert, key)
            }
            (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => return Err("ca: no signing certificate configured".into()),
        };
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let chain = split_pem(&cert_pem);
        let Some(signing) = chain.first() else {
            return Err(format!("{}: no certificate in it", cert_path.display()));
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{}: not a usable private key: {e}", key_path.display()))?;
        check_key_fits(signing, &key)
            .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(signing, key)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let mut bundle = chain.last().cloned().unwrap_or_default();
        if let Some(extra) = &config.trusted_roots {
            for root in split_pem(&read(extra)?) {
                if !bundle.contains(root.trim()) {
                    bundle.push_str(&root);
                }
            }
        }
        Ok(Authority {
            issuer,
            chain,
            bundle,
            trust_domain: config.trust_domain.clone(),
            lifetime: config.workload_lifetime,
        })
    }

    /// PEM of the roots proxies trust.
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// PEM of the root the signing chain ends in (the root that signs, directly or
    /// through the intermediate).
    pub fn signing_root(&self) -> Option<&str> {
        self.chain.last().map(String::as_str)
    }

    /// PEM of the certificate that signs workload certificates.
    pub fn signing_certificate(&self) -> Option<&str> {
        self.chain.first().map(String::as_str)
    }

    /// Signs a workload certificate for `identity` over the CSR's public key. `asked` is
    /// the lifetime the workload wants (capped at the CA's; zero takes the CA's).
    /// Returns the chain, leaf first.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        asked: Duration,
    ) -> Result<Vec<String>, String> {
        if csr_pem.len() > MAX_CSR_LEN {
            return Err(format!("the CSR is longer than {MAX_CSR_LEN} bytes"));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("not a valid CSR: {e}"))?;
        let lifetime = if asked.is_zero() {
            self.lifetime
        } else {
            asked.min(self.lifetime)
        };
        let mut params = leaf_params(lifetime, &self.trust_domain);
        params.subject_alt_names = vec![SanType::URI(
            identity
                .as_str()
                .try_into()
                .map_err(|e| format!("{identity}: {e}"))?,
        )];
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| format!("cannot sign: {e}"))?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// A certificate for the control plane itself, with its own fresh key: its SPIFFE
    /// ID plus `names` (DNS names or IP addresses), for proxies to check.
    pub fn issue_server(&self, names: &[String]) -> Result<(Vec<String>, String), String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut params = leaf_params(self.lifetime, &self.trust_domain);
        let id = format!(
            "spiffe://{}/ns/sinew-system/sa/sinew-control",
            self.trust_domain
        );
        params.subject_alt_names.push(SanType::URI(
            id.as_str().try_into().map_err(|e| format!("{id}: {e}"))?,
        ));
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e| format!("ca.server_names: {name:?}: {e}"))?,
                ),
            });
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign: {e}"))?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok((chain, key.serialize_pem()))
    }
}

/// What every issued leaf shares: the trust domain as its organisation, valid from a
/// minute ago for `lifetime`, for TLS clients and servers, a random serial, never a CA.
fn leaf_params(lifetime: Duration, trust_domain: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

/// 16 random bytes, the top bit clear so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Makes a self-signed root for the trust domain and writes it to `dir` (the key
/// readable by its owner only).
fn create_root(dir: &Path, cert: &Path, key: &Path, trust_domain: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let signing = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params
        .distinguished_name
        .push(DnType::CommonName, "Sinew mesh root CA");
    let id = format!("spiffe://{trust_domain}");
    params.subject_alt_names = vec![SanType::URI(
        id.as_str().try_into().map_err(|e| format!("{id}: {e}"))?,
    )];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_LIFETIME;
    params.serial_number = Some(random_serial());
    let root = params
        .self_signed(&signing)
        .map_err(|e| format!("cannot make the root: {e}"))?;
    write_private(key, signing.serialize_pem().as_bytes())?;
    std::fs::write(cert, root.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    tracing::info!(dir = %dir.display(), "made a new mesh root CA");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The PEM blocks of a file, each kept as its own text.
fn split_pem(text: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        blocks.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// The key must be the certificate's: a CA that signs with another key issues
/// certificates nobody can verify.
fn check_key_fits(cert_pem: &str, key: &KeyPair) -> Result<(), String> {
    let der = sinew_tls::pem::parse_certs(cert_pem.as_bytes(), "the CA certificate")?;
    let first = der.first().ok_or("no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| format!("not a certificate: {e}"))?;
    if parsed.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(key)
    {
        return Err("the key is not the certificate's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> CaConfig {
        CaConfig {
            trust_domain: "cluster.local".into(),
            dir: Some(dir.to_path_buf()),
            cert: None,
            key: None,
            trusted_roots: None,
            workload_lifetime: Duration::from_secs(3600),
            server_names: vec!["localhost".into()],
            tokens: None,
            kubernetes: None,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sinew-ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn csr() -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .try_into()
                .unwrap(),
        ));
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_root_made_on_first_start_is_kept_and_reused() {
        let dir = temp_dir("persist");
        let first = Authority::load(&config(&dir)).unwrap();
        let second = Authority::load(&config(&dir)).unwrap();
        assert_eq!(first.bundle(), second.bundle());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_issued_certificate_names_only_the_authenticated_identity() {
        let dir = temp_dir("issue");
        let ca = Authority::load(&config(&dir)).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let chain = ca.issue(&csr(), &id, Duration::ZERO).unwrap();
        assert_eq!(chain.len(), 2, "leaf and root");
        let der = sinew_tls::pem::parse_certs(chain[0].as_bytes(), "leaf").unwrap();
        let peer = sinew_identity::PeerIdentity::from_der(&der[0]).unwrap();
        assert_eq!(peer.uri_sans, vec![id.as_str().to_string()]);
        assert!(peer.dns_sans.is_empty(), "the CSR's names are not copied");
        let lifetime = peer.not_after - OffsetDateTime::now_utc().unix_timestamp();
        assert!((3500..=3600).contains(&lifetime), "{lifetime}");
        // A shorter lifetime is granted; a longer one is capped.
        let short = ca.issue(&csr(), &id, Duration::from_secs(600)).unwrap();
        let der = sinew_tls::pem::parse_certs(short[0].as_bytes(), "leaf").unwrap();
        let peer = sinew_identity::PeerIdentity::from_der(&der[0]).unwrap();
        assert!(peer.not_after - OffsetDateTime::now_utc().unix_timestamp() <= 600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_csr_whose_signature_does_not_hold_is_refused() {
        let dir = temp_dir("badsig");
        let ca = Authority::load(&config(&dir)).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let good = csr();
        let der = rustls_pemfile_der(&good);
        let mut tampered = der.clone();
        let at = tampered.len() - 10;
        tampered[at] ^= 0x55;
        let pem = pem_of("CERTIFICATE REQUEST", &tampered);
        let error = ca.issue(&pem, &id, Duration::ZERO).unwrap_err();
        assert!(error.contains("not a valid CSR"), "{error}");
        assert!(ca.issue("garbage", &id, Duration::ZERO).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Random and mutated CSRs: always an error or a certificate, never a panic.
    #[test]
    fn fuzz_csr_parsing_never_panics() {
        let dir = temp_dir("fuzz");
        let ca = Authority::load(&config(&dir)).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let der = rustls_pemfile_der(&csr());
        let mut rng = fastrand::Rng::with_seed(19);
        for round in 0..3000 {
            let mut bytes = der.clone();
            match round % 4 {
                0 => {
                    let i = rng.usize(..bytes.len());
                    bytes[i] = rng.u8(..);
                }
                1 => bytes.truncate(rng.usize(..bytes.len())),
                2 => {
                    let i = rng.usize(..bytes.len());
                    bytes.insert(i, rng.u8(..));
                }
                _ => bytes = (0..rng.usize(..400)).map(|_| rng.u8(..)).collect(),
            }
            let _ = ca.issue(&pem_of("CERTIFICATE REQUEST", &bytes), &id, Duration::ZERO);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = temp_dir("mismatch");
        let _ = Authority::load(&config(&dir)).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
        let mut c = config(&dir);
        c.dir = None;
        c.cert = Some(dir.join("ca.crt"));
        c.key = Some(dir.join("other.key"));
        let error = Authority::load(&c).unwrap_err();
        assert!(error.contains("not the certificate's"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }
}
