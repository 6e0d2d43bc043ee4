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
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to `address` (`http://host:port`, `https://host:port`, or `unix:PATH` for a
/// node agent's local socket). Over TLS the server is named `server_name` (its SNI and
/// the name its certificate is checked against) or else by the address's host.
pub async fn connect(
    address: &str,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    server_name: Option<ServerName<'static>>,
) -> Result<Channel, String> {
    if let Some(path) = address.strip_prefix("unix:") {
        // gRPC's naming allows `unix:///abs/path` as well as `unix:path`.
        let path = path.strip_prefix("//").unwrap_or(path);
        // The authority is only what tonic puts in `:authority`; Envoy sends `localhost`
        // to a pipe too.
        return Endpoint::from_static("http://localhost")
            .connect_timeout(timeout)
            .connect_with_connector(UnixConnector {
                path: Arc::from(path),
            })
            .await
            .map_err(|e| format!("{address}: {e}: {}", source_chain(&e)));
    }
    let (secure, rest) = if let Some(rest) = address.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = address.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "bad server address {address:?}: give http://HOST:PORT, https://HOST:PORT or unix:PATH"
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
        server_name,
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

/// Makes TCP connections and runs the TLS handshake on them, naming the server by
/// `server_name` or else the URI's host (its SNI and the name its certificate is
/// checked against).
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
    server_name: Option<ServerName<'static>>,
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
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or("the control plane's address has no host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?,
            };
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

/// Connects to a Unix socket, whatever the URI says.
#[derive(Clone)]
struct UnixConnector {
    path: Arc<str>,
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&*path).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
