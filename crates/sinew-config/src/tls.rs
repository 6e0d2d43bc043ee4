//! TLS and mesh identity in config: the proxy's own SPIFFE identity (`mesh`), how a
//! listener takes mTLS (`mtls` modes, client certificates on `tls`), how a cluster
//! originates it, which peer names are accepted, and what the upstream is told of the
//! client certificate (`x-forwarded-client-cert`). Certificates and CAs are files, PEM
//! written in the config itself (`{pem: ...}`), or secrets pushed over SDS
//! ([`PemSource`]); keys are files or inline PEM ([`KeySource`]).

use serde::Deserialize;

/// The proxy's workload identity: its SVID and the mesh's trust bundle, from files
/// (`identity`) or from the mesh CA in `sinew control` (`ca`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mesh {
    /// The SPIFFE trust domain peers must belong to (`cluster.local`).
    pub trust_domain: String,
    /// The SVID and bundle as files.
    #[serde(default)]
    pub identity: Option<MeshIdentityFiles>,
    /// The SVID from the mesh CA, the bundle from it over SDS.
    #[serde(default)]
    pub ca: Option<MeshCaSource>,
}

/// The mesh CA a proxy gets its certificate from. The key is made by the proxy and
/// never leaves it; the CA signs a CSR.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshCaSource {
    /// `https://host:port` of `sinew control` (its xDS port).
    pub address: String,
    /// PEM: the mesh's root(s), to check the CA's certificate with and trust until SDS
    /// sends the current bundle.
    pub bundle: String,
    /// A file holding the bootstrap credential: a Kubernetes service-account token or
    /// the workload's own token. Read for every request (platforms rotate them).
    pub token: String,
    /// Lifetime to ask for (the CA caps it); the CA's default when unset.
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub lifetime: Option<std::time::Duration>,
    /// Also serve the certificate (with its key) and the bundle over SDS on this Unix
    /// socket (mode 0600), for an Envoy beside the proxy, as Istio's agent does.
    #[serde(default)]
    pub sds_socket: Option<String>,
}

/// An SVID and trust bundle on disk, re-read when they change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshIdentityFiles {
    /// PEM certificate chain whose leaf holds the proxy's SPIFFE ID.
    pub cert: String,
    /// PEM private key of that certificate.
    pub key: String,
    /// PEM bundle of the mesh's root certificates.
    pub bundle: String,
}

/// Where a certificate (with its key) or a CA bundle comes from: a PEM file, re-read
/// when it changes; PEM written in the config (`{pem: TEXT}`, Envoy's `inline_string`),
/// which changes only with the config; or a secret pushed over SDS (`{sds: NAME}`),
/// replaced in place when a new version arrives. A certificate secret carries its key,
/// so `key` is left out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a PEM file name, PEM text as {pem: TEXT}, or a secret as {sds: NAME} (with `path: FILE` for a secret read from a file)"
)]
pub enum PemSource {
    File(String),
    Inline(InlinePem),
    Sds(SdsSecret),
}

/// Where a private key comes from: a PEM file (re-read with its certificate) or PEM
/// written in the config (`{pem: TEXT}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a PEM file name, or PEM text as {pem: TEXT}")]
pub enum KeySource {
    File(String),
    Inline(InlinePem),
}

impl KeySource {
    /// The file, when the key is read from one.
    pub fn file(&self) -> Option<&str> {
        match self {
            KeySource::File(f) => Some(f),
            KeySource::Inline(_) => None,
        }
    }
}

/// PEM text written in the config itself. Its `Debug` shows only its length: it may be a
/// private key, and configs are printed in logs and errors.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlinePem {
    pub pem: String,
}

impl std::fmt::Debug for InlinePem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InlinePem({} bytes)", self.pem.len())
    }
}

/// What inline PEM must hold, to check it when the config is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more certificates (a chain, or a CA bundle).
    Certificates,
    /// A private key (PKCS#8, PKCS#1 or SEC1).
    PrivateKey,
}

/// Checks that `text` is well-formed PEM of `kind`; the error says what is wrong and
/// never quotes the text (it may be a key). Whether a key fits its certificate, and
/// whether a certificate is a usable CA, are checked when the TLS context is built.
pub fn check_inline_pem(text: &str, kind: PemKind) -> Result<(), String> {
    use rustls_pemfile::Item;
    let mut reader = text.as_bytes();
    let mut found = 0;
    loop {
        match rustls_pemfile::read_one(&mut reader) {
            Ok(None) => break,
            Ok(Some(item)) => {
                let fits = match kind {
                    PemKind::Certificates => matches!(item, Item::X509Certificate(_)),
                    PemKind::PrivateKey => matches!(
                        item,
                        Item::Pkcs1Key(_) | Item::Pkcs8Key(_) | Item::Sec1Key(_)
                    ),
                };
                if fits {
                    found += 1;
                }
            }
            Err(e) => return Err(format!("is not well-formed PEM: {e}")),
        }
    }
    match (kind, found) {
        (PemKind::Certificates, 0) => {
            Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into())
        }
        (PemKind::PrivateKey, 0) => {
            Err("holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)".into())
        }
        (PemKind::PrivateKey, n) if n > 1 => Err(format!("holds {n} private keys: give one")),
        _ => Ok(()),
    }
}

/// A secret by name (Envoy's `sds_secret_config`): on the xDS stream (the control plane
/// pushes it), or from a file holding a `DiscoveryResponse` (Envoy's
/// `path_config_source`), re-read when it changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdsSecret {
    /// The secret's name.
    pub sds: String,
    /// A file with a `DiscoveryResponse` of Secrets (YAML or JSON); unset: the xDS stream.
    #[serde(default)]
    pub path: Option<String>,
    /// A directory whose changes (a file moved in, a symlink swapped) mean `path` is
    /// re-read (Envoy's `watched_directory`); `path` itself is watched either way.
    #[serde(default)]
    pub watched_directory: Option<String>,
    /// An SDS server of its own, `unix:PATH` or `http://HOST:PORT` (Envoy's
    /// `api_config_source` naming a static cluster, as Istio's `sds-grpc` names its node
    /// agent's socket); unset: the xDS stream. Exclusive with `path`.
    #[serde(default)]
    pub server: Option<String>,
    /// How long a listener naming a secret from the xDS stream waits for it before it is
    /// served anyway, refusing handshakes until it arrives (Envoy's
    /// `initial_fetch_timeout`; 15 s unless set, `0s` waits for ever).
    #[serde(default, deserialize_with = "crate::duration::deserialize_opt")]
    pub initial_fetch_timeout: Option<std::time::Duration>,
}

impl PemSource {
    /// The file, when the material is read from one.
    pub fn file(&self) -> Option<&str> {
        match self {
            PemSource::File(f) => Some(f),
            PemSource::Inline(_) | PemSource::Sds(_) => None,
        }
    }

    /// The secret, when the material is pushed over SDS.
    pub fn sds(&self) -> Option<&SdsSecret> {
        match self {
            PemSource::File(_) | PemSource::Inline(_) => None,
            PemSource::Sds(s) => Some(s),
        }
    }
}

/// One certificate of a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first (a file or `{pem: TEXT}`), or an SDS secret
    /// with the chain and its key.
    pub cert: PemSource,
    /// PEM private key, a file or `{pem: TEXT}` (none for an SDS secret: it carries its
    /// key).
    #[serde(default)]
    pub key: Option<KeySource>,
    /// A DER OCSP response stapled to handshakes (kept fresh by whoever writes it).
    #[serde(default)]
    pub ocsp_staple: Option<String>,
    /// The SNI names this certificate answers for (exact, or `*.` one label deep),
    /// instead of the DNS names in its leaf; `[]` answers for none (a default certificate
    /// only). Envoy's `filter_chain_match.server_names` map here.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
}

/// A TLS protocol version (Envoy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSv1_2")]
    Tls12,
    #[serde(rename = "TLSv1_3")]
    Tls13,
}

/// How a listener takes mesh mTLS (Istio's PeerAuthentication modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// mTLS only: a client must present an SVID of the trust domain.
    Strict,
    /// mTLS and plaintext on one port, told apart by the first bytes.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// Mesh mTLS to a cluster's endpoints, with the proxy's SVID.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMtls {
    /// The SPIFFE IDs an endpoint may hold; empty: any identity of the trust domain.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Server name sent in SNI (not checked against the certificate: identity is).
    #[serde(default)]
    pub sni: Option<String>,
}

/// Which of a peer's subject alternative names a matcher reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    #[default]
    Uri,
    Dns,
}

/// One accepted peer name (Envoy's `match_typed_subject_alt_names` entry): exactly one
/// of `exact`, `prefix`, `suffix`, `contains`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanMatch {
    #[serde(default)]
    pub san_type: SanType,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
}

impl SanMatch {
    /// The one comparison this entry sets, as (kind, value); `None` when it sets none
    /// or several (a validation error).
    pub fn comparison(&self) -> Option<(&'static str, &str)> {
        let set: Vec<(&'static str, &str)> = [
            ("exact", &self.exact),
            ("prefix", &self.prefix),
            ("suffix", &self.suffix),
            ("contains", &self.contains),
        ]
        .into_iter()
        .filter_map(|(kind, v)| v.as_deref().map(|v| (kind, v)))
        .collect();
        match set.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// What the upstream learns of the client certificate (Envoy's
/// `forward_client_cert_details`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardClientCert {
    /// Drop any `x-forwarded-client-cert` the client sent.
    #[default]
    Sanitize,
    /// Pass the client's header on, over mTLS only.
    ForwardOnly,
    /// Pass the client's header on, over mTLS only, with this hop's entry appended.
    AppendForward,
    /// Replace the header with this hop's entry, over mTLS only.
    SanitizeSet,
    /// Pass the client's header on, whatever the connection.
    AlwaysForwardOnly,
}

/// Which fields this hop's `x-forwarded-client-cert` entry carries besides `By` and
/// `Hash` (Envoy's `set_current_client_cert_details`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertDetails {
    #[serde(default)]
    pub subject: bool,
    #[serde(default)]
    pub uri: bool,
    #[serde(default)]
    pub dns: bool,
}

#[cfg(test)]
mod tests {
    use super::{KeySource, PemSource};

    fn errors(yaml: &str) -> String {
        match crate::load_str("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn mtls_fields_are_checked_and_each_error_names_its_field() {
        let text = errors(
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    mtls: strict
    tls: {cert: c, key: k, require_client_certificate: true, match_subject_alt_names: [{}]}
    tcp: {cluster: c}
clusters:
  - name: c
    mtls: {identities: ['not-spiffe']}
    tls: {sni: x, ca: ca, cert: only-cert}
    endpoints: [{address: '127.0.0.1:1'}]
",
        );
        for expected in [
            "t.yaml:5:5: listeners[0].mtls: needs the proxy's identity",
            "listeners[0].mtls: a listener takes `tls` or `mtls`, not both",
            "listeners[0].tls.require_client_certificate: needs `client_ca`",
            "listeners[0].tls.match_subject_alt_names[0]: set exactly one of",
            "clusters[0].mtls: needs the proxy's identity",
            "clusters[0].mtls: a cluster takes `tls` or `mtls`, not both",
            "clusters[0].tls: a client certificate needs both `cert` and `key`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn a_secret_may_come_from_an_sds_server_of_its_own_but_not_also_from_a_file() {
        let ok = crate::load_str(
            "t.yaml",
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls:
      cert: {sds: default, server: 'unix:/run/agent/socket'}
      client_ca: {sds: ROOTCA, server: 'http://127.0.0.1:15012'}
    tcp: {cluster: c}
clusters:
  - name: c
    endpoints: [{address: '127.0.0.1:1'}]
",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let tls = ok.config.listeners[0].tls.as_ref().unwrap();
        let server = |s: &crate::tls::PemSource| s.sds().and_then(|s| s.server.clone());
        assert_eq!(
            server(tls.cert.as_ref().unwrap()).as_deref(),
            Some("unix:/run/agent/socket")
        );
        let text = errors(
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls:
      cert: {sds: default, server: 'unix:/s', path: /s.yaml}
      client_ca: {sds: ROOTCA, server: 'tcp://127.0.0.1:1'}
    tcp: {cluster: c}
clusters:
  - name: c
    tls: {sni: x, ca: {sds: ROOTCA, server: 'unix:'}}
    endpoints: [{address: '127.0.0.1:1'}]
",
        );
        for expected in [
            "listeners[0].tls.cert.server: a secret comes from a file (`path`) or a server, not both",
            "listeners[0].tls.client_ca.server: \"tcp://127.0.0.1:1\": give unix:PATH or http://HOST:PORT",
            "clusters[0].tls.ca.server: \"unix:\": give unix:PATH",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn certificates_and_cas_may_be_sds_secrets_and_a_secret_takes_no_key() {
        let ok = crate::load_str(
            "t.yaml",
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls:
      certificates: [{cert: {sds: server}}, {cert: {sds: other, path: /s.yaml, watched_directory: /d, initial_fetch_timeout: 2s}}]
      client_ca: {sds: ROOTCA}
      require_client_certificate: true
    tcp: {cluster: c}
clusters:
  - name: c
    tls: {sni: x, ca: {sds: ROOTCA}, cert: {sds: client}}
    endpoints: [{address: '127.0.0.1:1'}]
",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let tls = ok.config.listeners[0].tls.as_ref().unwrap();
        assert_eq!(
            tls.certificates[1].cert.sds().map(|s| (
                s.sds.as_str(),
                s.path.as_deref(),
                s.initial_fetch_timeout
            )),
            Some((
                "other",
                Some("/s.yaml"),
                Some(std::time::Duration::from_secs(2))
            ))
        );
        let text = errors(
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls: {cert: {sds: server}, key: k.pem}
    tcp: {cluster: c}
  - name: b
    address: 127.0.0.1:0
    tls: {certificates: [{cert: c.pem}, {cert: {sds: ''}}]}
    tcp: {cluster: c}
clusters:
  - name: c
    tls: {sni: x, ca: {sds: ROOTCA, bogus: 1}}
    endpoints: [{address: '127.0.0.1:1'}]
",
        );
        assert!(
            text.contains("a PEM file name, PEM text as {pem: TEXT}, or a secret as {sds: NAME}"),
            "{text}"
        );
        let text = errors(
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls: {cert: {sds: server}, key: k.pem}
    tcp: {cluster: c}
  - name: b
    address: 127.0.0.1:0
    tls: {certificates: [{cert: c.pem}, {cert: {sds: ''}}]}
    tcp: {cluster: c}
clusters:
  - name: c
    endpoints: [{address: '127.0.0.1:1'}]
",
        );
        for expected in [
            "listeners[0].tls.key: the SDS secret \"server\" carries its key: leave `key` out",
            "listeners[1].tls.certificates[0]: `cert` and `key` go together",
            "listeners[1].tls.certificates[1].cert.sds: is empty",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    #[test]
    fn certificates_keys_and_cas_may_be_inline_pem_and_bad_pem_is_named_at_its_field() {
        let yaml = format!(
            "
listeners:
  - name: a
    address: 127.0.0.1:0
    tls:
      cert: {{pem: {CERT:?}}}
      key:
        pem: |
          -----BEGIN PRIVATE KEY-----
          AAAA
          -----END PRIVATE KEY-----
      client_ca: {{pem: {CERT:?}}}
    tcp: {{cluster: c}}
clusters:
  - name: c
    tls: {{sni: x, ca: {{pem: {CERT:?}}}, cert: {{pem: {CERT:?}}}, key: {{pem: {KEY:?}}}}}
    endpoints: [{{address: '127.0.0.1:1'}}]
"
        );
        let ok = crate::load_str("t.yaml", &yaml).unwrap_or_else(|d| panic!("{d}"));
        let tls = ok.config.listeners[0].tls.as_ref().unwrap();
        assert!(matches!(&tls.cert, Some(PemSource::Inline(p)) if p.pem == CERT));
        assert!(matches!(&tls.key, Some(KeySource::Inline(p)) if p.pem == KEY));
        assert!(
            !format!("{tls:?}").contains("AAAA"),
            "Debug never shows inline PEM"
        );
        let bad = yaml
            .replacen(
                "PRIVATE KEY-----\n          AAAA",
                "RSA PUBLIC KEY-----\n          AAAA",
                1,
            )
            .replacen(
                "END PRIVATE KEY-----\n      client_ca",
                "END RSA PUBLIC KEY-----\n      client_ca",
                1,
            )
            .replace(&format!("ca: {{pem: {CERT:?}}}"), "ca: {pem: not pem}");
        let text = errors(&bad);
        for expected in [
            "t.yaml:8:9: listeners[0].tls.key.pem: holds no PEM private key",
            "listeners[0].tls.client_ca.pem: holds no PEM certificate",
            "clusters[0].tls.ca.pem: holds no PEM certificate",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("AAAA"), "{text}");
    }

    #[test]
    fn upstream_verification_is_on_unless_turned_off_and_off_takes_no_ca_or_names() {
        let cluster = |tls: &str| {
            format!("clusters:\n  - name: c\n    tls: {tls}\n    endpoints: [{{address: '127.0.0.1:1'}}]\n")
        };
        let ok = crate::load_str("t.yaml", &cluster("{verify: false}"))
            .unwrap_or_else(|d| panic!("{d}"));
        let tls = ok.config.clusters[0].tls.as_ref().unwrap();
        assert!(!tls.verify && tls.sni.is_none() && tls.ca.is_none());
        let on = crate::load_str("t.yaml", &cluster("{sni: x, ca: ca.pem}")).unwrap();
        assert!(on.config.clusters[0].tls.as_ref().unwrap().verify);
        for (tls, expected) in [
            ("{sni: x}", "clusters[0].tls.ca: is required: the CAs that sign the upstream's certificate (or `verify: false`"),
            ("{ca: ca.pem}", "clusters[0].tls.sni: is required unless `match_subject_alt_names`"),
            ("{verify: false, ca: ca.pem}", "clusters[0].tls.ca: is unused with `verify: false`"),
            (
                "{verify: false, match_subject_alt_names: [{exact: a}]}",
                "clusters[0].tls.match_subject_alt_names: is unused with `verify: false`",
            ),
            (
                "{sni: x, ca: ca.pem, min_version: TLSv1_3, max_version: TLSv1_2}",
                "clusters[0].tls.min_version: is newer than `max_version`",
            ),
        ] {
            let text = errors(&cluster(tls));
            assert!(text.contains(expected), "{tls}: missing {expected:?} in:\n{text}");
        }
        let text = errors(&cluster("{sni: x, ca: ca.pem, max_version: TLSv1_1}"));
        assert!(text.contains("clusters[0].tls.max_version"), "{text}");
    }

    #[test]
    fn a_cluster_may_only_expect_ids_of_the_mesh_trust_domain() {
        let text = errors(
            "
mesh:
  trust_domain: cluster.local
  identity: {cert: c, key: k, bundle: b}
clusters:
  - name: c
    mtls: {identities: ['spiffe://other.org/ns/a/sa/b', 'spiffe://cluster.local/a//b']}
    endpoints: [{address: '127.0.0.1:1'}]
",
        );
        assert!(text.contains("clusters[0].mtls.identities[0]: spiffe://other.org/ns/a/sa/b is not of the mesh's trust domain"), "{text}");
        assert!(
            text.contains(
                "clusters[0].mtls.identities[1]: not a SPIFFE ID: the path has an empty segment"
            ),
            "{text}"
        );
        let bad_domain =
            errors("mesh: {trust_domain: Cluster.Local, identity: {cert: c, key: k, bundle: b}}\n");
        assert!(
            bad_domain.contains("mesh.trust_domain: the trust domain may hold only"),
            "{bad_domain}"
        );
    }
}
