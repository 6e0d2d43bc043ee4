//! gRPC channels to a control plane, in plaintext (`http://`) or TLS (`https://`).
//!
//! tonic's own TLS would bring a second copy of the TLS setup; instead the connection is
//! made here with the workspace's rustls (so the verifier can be Sinew's own, checking
//! the control plane's SPIFFE ID or host name, and the client certificate can be the
//! proxy's rotating SVID) and handed to tonic as an already-secured stream. tonic is
//! given an `http://` URI for it: it only uses the URI to find the authority, and its
//! own `https` handling would refuse to run without its TLS feature.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to `address` (`http://host:port` or `https://host:port`).
pub async fn connect(
    address: &str,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel, String> {
    let (secure, rest) = if let Some(rest) = address.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = address.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "bad server address {address:?}: give http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let endpoint = Endpoint::from_shared(format!("http://{rest}"))
        .map_err(|e| format!("bad server address {address:?}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    if !secure {
        return endpoint.connect().await.map_err(|e| e.to_string());
    }
    let Some(tls) = tls else {
        return Err(format!(
            "{address}: an https:// control plane needs its roots (--xds-ca, or mesh.ca.bundle)"
        ));
    };
    let connector = TlsConnector {
        config: tls,
        timeout,
    };
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e}: {}", source_chain(&e)))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut next = e.source();
    while let Some(cause) = next {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// Makes TCP connections and runs the TLS handshake on them, naming the server by the
/// URI's host (its SNI and the name its certificate is checked against).
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

type Connected = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = Connected;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or("the control plane's address has no host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{host}: {e}"))?;
            let handshake = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
            };
            let stream = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| format!("TLS connection to {host}:{port} timed out"))??;
            Ok(TokioIo::new(stream))
        })
    }
}
