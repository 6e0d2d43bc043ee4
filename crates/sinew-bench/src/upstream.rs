//! The benchmark upstream: as little work per request as hyper allows, so that what the
//! harness sees between "direct" and a proxy is the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The small body: 64 bytes, as in the harness's scenario (a).
const SMALL: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n";
/// The large body's length: 1 MiB, scenario (d).
const LARGE_LEN: usize = 1 << 20;

type TlsFiles = (SocketAddr, Option<PathBuf>, Option<PathBuf>);

pub async fn run(
    http: SocketAddr,
    tls: Option<TlsFiles>,
    tcp_source: Option<SocketAddr>,
) -> Result<(), String> {
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    let http_listener = bind(http).await?;
    // The bound addresses, one JSON line, so that a caller may ask for port 0.
    let mut bound = format!("{{\"http\": \"{}\"", local_addr(&http_listener)?);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve_http(http_listener, None, large.clone()));
    if let Some((addr, cert, key)) = tls {
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err("--tls needs --cert and --key".into());
        };
        let acceptor = tls_acceptor(&cert, &key)?;
        let listener = bind(addr).await?;
        bound += &format!(", \"tls\": \"{}\"", local_addr(&listener)?);
        tasks.spawn(serve_http(listener, Some(acceptor), large.clone()));
    }
    if let Some(addr) = tcp_source {
        let listener = bind(addr).await?;
        bound += &format!(", \"tcp_source\": \"{}\"", local_addr(&listener)?);
        tasks.spawn(serve_tcp_source(listener));
    }
    println!("{bound}}}");
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, String> {
    listener.local_addr().map_err(|e| e.to_string())
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs = sinew_tls::pem::load_certs(&cert.to_string_lossy())?;
    let key = sinew_tls::pem::load_key(&key.to_string_lossy())?;
    let mut config = rustls::ServerConfig::builder_with_provider(sinew_tls::pem::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("bad certificate or key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    large: Bytes,
) -> Result<(), String> {
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let large = large.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let body = if request.uri().path() == "/1m" {
                    large.clone()
                } else {
                    Bytes::from_static(SMALL)
                };
                async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            // Errors here are clients going away mid-request, which load generators do at
            // the end of every run.
            let _ = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
            };
        });
    }
}

async fn serve_tcp_source(listener: TcpListener) -> Result<(), String> {
    let chunk = Bytes::from(vec![b'x'; 256 * 1024]);
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let chunk = chunk.clone();
        tokio::spawn(async move { while stream.write_all(&chunk).await.is_ok() {} });
    }
}
