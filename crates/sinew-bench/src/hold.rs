//! Holds many idle keep-alive connections open, each having made one request, so that the
//! harness can read what an idle connection costs a proxy in memory: over cleartext
//! HTTP/1.1, or over TLS (HTTP/1.1 by ALPN) to measure what a proxy keeps per idle TLS
//! session as well.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// How many connections are being opened at once.
const OPENING_AT_ONCE: usize = 200;

/// A held connection, cleartext or TLS: only kept open, never read again.
trait Held: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Held for T {}

/// `tls_roots`: with a CA bundle, every connection is TLS, verified against it (the
/// server is named by the IP address of `connect`, as the benchmark certificate lists it).
pub async fn run(
    connect: SocketAddr,
    conns: usize,
    tls_roots: Option<&Path>,
) -> Result<(), String> {
    let connector = tls_roots.map(tls_connector).transpose()?;
    let mut held: Vec<Box<dyn Held>> = Vec::with_capacity(conns);
    let mut opening = tokio::task::JoinSet::new();
    let mut started = 0;
    while held.len() < conns {
        while started < conns && opening.len() < OPENING_AT_ONCE {
            opening.spawn(open_one(connect, connector.clone()));
            started += 1;
        }
        let stream = opening
            .join_next()
            .await
            .expect("a connection is being opened")
            .map_err(|e| e.to_string())??;
        held.push(stream);
    }
    println!("{{\"held\": {}}}", held.len());
    // Hold until the harness closes our standard input.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    drop(held);
    Ok(())
}

/// A client config that trusts `roots` and offers only HTTP/1.1, so that every proxy
/// keeps an HTTP/1.1 connection (not an HTTP/2 one) behind each TLS session.
fn tls_connector(roots: &Path) -> Result<TlsConnector, String> {
    let roots = sinew_tls::pem::load_roots(&roots.to_string_lossy())?;
    let mut config = rustls::ClientConfig::builder_with_provider(sinew_tls::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects (with a TLS handshake if `tls`), makes one request and reads its whole
/// response, leaving the connection idle.
async fn open_one(connect: SocketAddr, tls: Option<TlsConnector>) -> Result<Box<dyn Held>, String> {
    let tcp = TcpStream::connect(connect)
        .await
        .map_err(|e| format!("cannot connect to {connect}: {e}"))?;
    match tls {
        None => Ok(Box::new(request_once(tcp).await?)),
        Some(connector) => {
            let name = ServerName::IpAddress(connect.ip().into());
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {connect} failed: {e}"))?;
            Ok(Box::new(request_once(stream).await?))
        }
    }
}

/// Sends one GET and reads its whole response; gives the stream back, now idle.
async fn request_once<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> Result<S, String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !response_complete(&response)? {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before the response ended".into());
        }
        response.extend_from_slice(&buf[..n]);
    }
    Ok(stream)
}

/// Whether `response` holds a whole 200 response with a Content-Length body.
pub(crate) fn response_complete(response: &[u8]) -> Result<bool, String> {
    let Some(head_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(false);
    };
    let head = std::str::from_utf8(&response[..head_end]).map_err(|e| e.to_string())?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected response: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or("the response has no Content-Length")?;
    Ok(response.len() >= head_end + 4 + length)
}
