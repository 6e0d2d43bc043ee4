//! Opening a connection to one endpoint: TCP with a deadline, then TLS when the cluster asks.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use sinew_stream::{ConnRead, ConnWrite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// TLS settings of a cluster, compiled once.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// The rustls config the connector runs (a control-plane channel through this
    /// cluster reuses it).
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The certificate presented to the upstream, for the admin API and metrics.
    pub client_cert: Option<Arc<sinew_tls::RotatingCert>>,
    /// Name matchers taken from an SDS validation context when this was built: when the
    /// secret's change, the cluster's connections are made afresh.
    pub secret_sans: Vec<sinew_tls::SanMatcher>,
}

impl UpstreamTls {
    /// TLS to a cluster's endpoints: `server_name` goes in SNI (`None`: no SNI), the peer
    /// is checked by `verifier`, `client_cert` (if any) is presented when asked, and
    /// `versions` are the TLS versions offered.
    pub fn new(
        server_name: Option<&str>,
        verifier: Arc<sinew_tls::ServerVerifier>,
        client_cert: Option<Arc<sinew_tls::RotatingCert>>,
        alpn: Vec<Vec<u8>>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<UpstreamTls, (&'static str, String)> {
        let server_name = match server_name {
            Some(sni) => ServerName::try_from(sni.to_string())
                .map_err(|e| ("sni", format!("{sni:?}: {e}")))?,
            // rustls sends no SNI for an IP address; identity, not a name, is checked.
            None => ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        let builder = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
            .with_protocol_versions(versions)
            .map_err(|e| ("min_version", e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &client_cert {
            Some(cert) => builder.with_client_cert_resolver(cert.clone()),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn;
        let config = Arc::new(config);
        Ok(UpstreamTls {
            connector: TlsConnector::from(config.clone()),
            config,
            server_name,
            client_cert,
            secret_sans: Vec::new(),
        })
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(io::Error),
    Tls(io::Error),
    /// The peer did not agree to HTTP/2 over ALPN.
    NoH2,
    /// The HTTP/2 connection preface or SETTINGS exchange failed.
    Handshake(sinew_codec::http2::Error),
    /// Another request's attempt to this endpoint, which this one waited for, failed.
    FailedWhileWaiting,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => write!(f, "connect timeout"),
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::NoH2 => write!(f, "upstream did not negotiate h2 over ALPN"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake: {e}"),
            ConnectError::FailedWhileWaiting => write!(f, "a concurrent connection attempt failed"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A plain or TLS upstream stream.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects within `timeout`; with `tls`, also handshakes (inside the same deadline).
/// With `keepalive`, TCP keepalive is turned on for the connection.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    keepalive: Option<&socket2::TcpKeepalive>,
) -> Result<UpstreamIo, ConnectError> {
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        if let Some(keepalive) = keepalive {
            crate::socket::set_keepalive(&tcp, keepalive);
        }
        match tls {
            None => Ok(UpstreamIo::Plain(tcp)),
            Some(tls) => {
                // A client certificate pushed over SDS that has not arrived: fail here,
                // saying why, rather than handshake without it.
                if let Some(cert) = tls.client_cert.as_ref().filter(|c| !c.is_ready()) {
                    return Err(ConnectError::Tls(io::Error::other(format!(
                        "client certificate secret {:?} has not arrived yet",
                        match cert.source() {
                            sinew_tls::CertSource::Pushed { name } => name.as_str(),
                            sinew_tls::CertSource::Config { cert, .. } => {
                                cert.file().unwrap_or("inline")
                            }
                        }
                    ))));
                }
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(ConnectError::Tls)?;
                Ok(UpstreamIo::Tls(Box::new(stream)))
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

impl UpstreamIo {
    /// The connection's halves, for Sinew's HTTP/1 codec: TCP splits without a lock,
    /// TLS through tokio's split.
    pub fn into_halves(self) -> (ConnRead, ConnWrite) {
        match self {
            UpstreamIo::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (Box::new(read), Box::new(write))
            }
            UpstreamIo::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (Box::new(read), Box::new(write))
            }
        }
    }

    /// The ALPN protocol the peer chose, if TLS.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamIo::Plain(_) => None,
            UpstreamIo::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
