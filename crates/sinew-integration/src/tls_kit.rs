//! TLS for tests: a throwaway CA and server certificates (rcgen, written as PEM files into
//! a temporary directory), a TLS upstream server, and a TLS client that speaks HTTP/1.1 or
//! HTTP/2 over whatever ALPN settles on. Crypto is ring, as in the proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Reply;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "sinew-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A certificate and its key, as PEM files and in memory.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl CertFiles {
    /// Reads an existing PEM certificate and PKCS#8 key (such as examples/certs/).
    pub fn from_pem(cert: &Path, key: &Path) -> CertFiles {
        use rustls::pki_types::pem::PemObject;
        let cert_der = CertificateDer::from_pem_file(cert).expect("PEM certificate");
        let key_der = match PrivateKeyDer::from_pem_file(key).expect("PEM key") {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => panic!("{} is not a PKCS#8 key", key.display()),
        };
        CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            cert_der,
            key_der,
        }
    }

    pub fn cert_path(&self) -> &str {
        self.cert.to_str().expect("utf-8 temp path")
    }
    pub fn key_path(&self) -> &str {
        self.key.to_str().expect("utf-8 temp path")
    }
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A test certificate authority whose files live in a temp dir.
pub struct TestCa {
    pub dir: TempDir,
    /// PEM file of the CA certificate (what a client trusts).
    pub ca_pem: PathBuf,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(tag: &str) -> TestCa {
        let dir = TempDir::new(tag);
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Sinew test CA {tag}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let ca_pem = dir.file("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).expect("write ca.pem");
        TestCa {
            ca_der: cert.der().clone(),
            ca_pem,
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn ca_path(&self) -> &str {
        self.ca_pem.to_str().expect("utf-8 temp path")
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses), written as
    /// `<file_stem>.pem` and `<file_stem>.key`.
    pub fn issue(&self, file_stem: &str, names: &[&str]) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        let cert_path = self.dir.file(&format!("{file_stem}.pem"));
        let key_path = self.dir.file(&format!("{file_stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        CertFiles {
            cert: cert_path,
            key: key_path,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA");
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }
}

/// Where a file path is shown in YAML: as a string.
pub fn yaml_path(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// An HTTPS upstream: rustls in front of hyper's HTTP/1.1 + HTTP/2 server. Every answer
/// is 200 with the body `<name> <version> alpn=<protocol>`, e.g. `secure HTTP/2.0 alpn=h2`.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TlsUpstream {
    pub async fn start(name: &'static str, cert: &CertFiles, alpn: &[&str]) -> TlsUpstream {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone()], cert.key())
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let done = handshakes.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    let alpn = tls
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "none".into());
                    let service = service_fn(move |req: Request<Incoming>| {
                        let body = format!("{name} {:?} alpn={alpn}", req.version());
                        async move {
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            handshakes,
            accept,
        }
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One GET over a fresh TLS connection to `addr`, verifying the server as `server_name`
/// with `config`; HTTP/2 if ALPN chose `h2`, else HTTP/1.1. Returns the ALPN protocol
/// chosen and the reply.
pub async fn tls_get(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    server_name: &str,
    path: &str,
) -> Result<(Option<String>, Reply), String> {
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let alpn = tls
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        let io = TokioIo::new(tls);
        let uri = format!("https://{server_name}{path}");
        let response = if alpn.as_deref() == Some("h2") {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::builder()
                .uri(uri)
                .version(Version::HTTP_2)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::builder()
                .uri(path)
                .header(http::header::HOST, server_name)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send.send_request(req).await.map_err(|e| e.to_string())?
        };
        Ok((alpn, Reply::read(response).await?))
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// When a test certificate is valid.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    /// From yesterday to a year from now.
    Current,
    /// Ended in 2020.
    Expired,
    /// Starts in 2099.
    NotYetValid,
}

impl TestCa {
    /// Issues an X.509-SVID for `spiffe_id` (usable by servers and clients), with the
    /// extra DNS names `dns` (so ordinary TLS clients can verify a proxy by host name),
    /// written as `<file_stem>.pem` / `<file_stem>.key`.
    pub fn issue_svid(
        &self,
        file_stem: &str,
        spiffe_id: &str,
        dns: &[&str],
        validity: Validity,
    ) -> CertFiles {
        let mut params =
            CertificateParams::new(dns.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("SVID params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            spiffe_id.try_into().expect("an IA5 URI"),
        ));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let at = |secs: i64| {
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs as u64)
        };
        (params.not_before, params.not_after) = match validity {
            Validity::Current => (at(today - 86_400), at(today + 365 * 86_400)),
            Validity::Expired => (
                rcgen::date_time_ymd(2019, 1, 1),
                rcgen::date_time_ymd(2020, 1, 1),
            ),
            Validity::NotYetValid => (
                rcgen::date_time_ymd(2099, 1, 1),
                rcgen::date_time_ymd(2100, 1, 1),
            ),
        };
        let key = KeyPair::generate().expect("SVID key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign SVID");
        let cert_path = self.dir.file(&format!("{file_stem}.pem"));
        let key_path = self.dir.file(&format!("{file_stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        CertFiles {
            cert: cert_path,
            key: key_path,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A client config trusting only this CA that presents `cert` when asked.
    pub fn client_config_with_cert(&self, cert: &CertFiles, alpn: &[&str]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA");
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.cert_der.clone()], cert.key())
            .expect("client cert");
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }
}

impl TestCa {
    /// Issues a server certificate for `names` with an RSA 2048 key (made by Debian's
    /// openssl: ring signs with RSA keys but does not generate them).
    pub fn issue_rsa(&self, file_stem: &str, names: &[&str]) -> CertFiles {
        let key_path = self.dir.file(&format!("{file_stem}.key"));
        let made = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .arg("-out")
            .arg(&key_path)
            .output()
            .expect("openssl genpkey");
        assert!(made.status.success(), "openssl genpkey: {made:?}");
        let pem = std::fs::read_to_string(&key_path).expect("RSA key");
        let key = KeyPair::from_pem(&pem).expect("rcgen reads the RSA key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{} (RSA)", names[0]));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("sign RSA cert");
        let cert_path = self.dir.file(&format!("{file_stem}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        CertFiles {
            cert: cert_path,
            key: key_path,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}
