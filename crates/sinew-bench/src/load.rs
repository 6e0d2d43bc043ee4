//! `load`: HTTP/1.1 GETs as fast as `--conns` connections allow, for the TLS scenarios
//! of the harness, where wrk cannot do what is measured: wrk always resumes a TLS session
//! when the server issues tickets (so it cannot measure full handshakes against a proxy
//! with its defaults), cannot report whether a handshake resumed, and cannot present a
//! client certificate.
//!
//! Two shapes: keep-alive (one connection per worker, requests one after another), or
//! `--close`, a new connection (and handshake) for each request with `Connection: close`.
//! Over TLS (`--ca`) the client offers TLS 1.3 only and ALPN `http/1.1`; it resumes
//! sessions only with `--resume`, each connection with the tickets of its own previous
//! one (as many clients each resuming their own session), and it counts every handshake
//! as full or resumed from what rustls reports, so the harness can check that a resumed
//! run resumed and a full run did not. `--cert`/`--key` present a client certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::hold::response_complete;

/// How the client talks TLS; `None` in [`Options::tls`] is cleartext.
pub struct Tls<'a> {
    /// The CA bundle the server's certificate is verified against.
    pub ca: &'a Path,
    /// A client certificate chain and its key, presented when the server asks.
    pub client_cert: Option<(&'a Path, &'a Path)>,
    /// Resume sessions with the tickets the server issues (else every handshake is full).
    pub resume: bool,
}

pub struct Options<'a> {
    pub connect: SocketAddr,
    pub conns: usize,
    pub secs: f64,
    /// A new connection for each request.
    pub close: bool,
    pub tls: Option<Tls<'a>>,
}

/// What one worker did.
#[derive(Default)]
struct Counts {
    requests: u64,
    errors: u64,
    full: u64,
    resumed: u64,
    first_error: Option<String>,
    /// The negotiated suite and key exchange group, as rustls names them.
    negotiated: Option<String>,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.full += other.full;
        self.resumed += other.resumed;
        self.first_error = self.first_error.take().or(other.first_error);
        self.negotiated = self.negotiated.take().or(other.negotiated);
    }

    fn failed(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// Runs the load and prints one line of JSON: requests, errors, the rate, and over TLS
/// the handshakes counted as full and as resumed. Fails if no request succeeded.
pub async fn run(options: Options<'_>) -> Result<(), String> {
    let client_config = options.tls.as_ref().map(client_config).transpose()?;
    let resume = options.tls.as_ref().is_some_and(|tls| tls.resume);
    let server_name = ServerName::IpAddress(options.connect.ip().into());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.secs);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.conns.max(1) {
        let worker = Worker {
            connect: options.connect,
            connector: client_config.as_ref().map(|c| worker_connector(c, resume)),
            server_name: server_name.clone(),
            deadline,
        };
        if options.close {
            workers.spawn(worker.new_connection_each_request());
        } else {
            workers.spawn(worker.keep_alive());
        }
    }
    let mut total = Counts::default();
    while let Some(counts) = workers.join_next().await {
        total.add(counts.map_err(|e| e.to_string())?);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"secs\": {secs:.3}, \"rps\": {:.1}, \
         \"full_handshakes\": {}, \"resumed_handshakes\": {}, \"negotiated\": \"{}\", \
         \"first_error\": \"{}\"}}",
        total.requests,
        total.errors,
        total.requests as f64 / secs,
        total.full,
        total.resumed,
        total.negotiated.as_deref().unwrap_or(""),
        json_escape(total.first_error.as_deref().unwrap_or("")),
    );
    if total.requests == 0 {
        return Err(format!(
            "no request succeeded: {}",
            total.first_error.unwrap_or_default()
        ));
    }
    Ok(())
}

pub(crate) fn json_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

/// TLS 1.3 only, ALPN `http/1.1`, the server verified against `tls.ca`; no session
/// resumption (each worker gets a store of its own when it resumes).
fn client_config(tls: &Tls<'_>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = sinew_tls::pem::load_roots(&tls.ca.to_string_lossy())?;
    let builder = rustls::ClientConfig::builder_with_provider(sinew_tls::pem::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                sinew_tls::pem::load_certs(&cert.to_string_lossy())?,
                sinew_tls::pem::load_key(&key.to_string_lossy())?,
            )
            .map_err(|e| format!("the client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A worker's connector: with `resume`, a session store of its own, so that each worker
/// resumes with the tickets its previous connection was sent. One store shared by all
/// would not do: rustls keeps at most 8 TLS 1.3 tickets for a server, so with more
/// workers than that some would find none and make a full handshake.
fn worker_connector(config: &Arc<rustls::ClientConfig>, resume: bool) -> TlsConnector {
    if !resume {
        return TlsConnector::from(config.clone());
    }
    let mut own = (**config).clone();
    own.resumption = Resumption::in_memory_sessions(1);
    TlsConnector::from(Arc::new(own))
}

/// A connection, cleartext or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

const KEEP_ALIVE_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const CLOSING_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

struct Worker {
    connect: SocketAddr,
    connector: Option<TlsConnector>,
    server_name: ServerName<'static>,
    deadline: Instant,
}

impl Worker {
    /// Connects, and over TLS completes the handshake and counts its kind.
    async fn open(&self, counts: &mut Counts) -> Result<Box<dyn Stream>, String> {
        let tcp = TcpStream::connect(self.connect)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.connect))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let Some(connector) = &self.connector else {
            return Ok(Box::new(tcp));
        };
        let stream = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", self.connect))?;
        let session = stream.get_ref().1;
        match session.handshake_kind() {
            Some(HandshakeKind::Resumed) => counts.resumed += 1,
            _ => counts.full += 1,
        }
        if counts.negotiated.is_none() {
            counts.negotiated = Some(format!(
                "{:?} {:?}",
                session
                    .negotiated_cipher_suite()
                    .map(|s| s.suite())
                    .unwrap_or(rustls::CipherSuite::Unknown(0)),
                session
                    .negotiated_key_exchange_group()
                    .map(|g| g.name())
                    .unwrap_or(rustls::NamedGroup::Unknown(0)),
            ));
        }
        Ok(Box::new(stream))
    }

    async fn keep_alive(self) -> Counts {
        let mut counts = Counts::default();
        let mut response = Vec::with_capacity(1024);
        while Instant::now() < self.deadline {
            let mut stream = match self.open(&mut counts).await {
                Ok(stream) => stream,
                Err(e) => {
                    counts.failed(e);
                    continue;
                }
            };
            while Instant::now() < self.deadline {
                match exchange(&mut stream, KEEP_ALIVE_GET, &mut response).await {
                    Ok(()) => counts.requests += 1,
                    Err(e) => {
                        counts.failed(e);
                        break;
                    }
                }
            }
        }
        counts
    }

    async fn new_connection_each_request(self) -> Counts {
        let mut counts = Counts::default();
        let mut response = Vec::with_capacity(1024);
        while Instant::now() < self.deadline {
            let result = match self.open(&mut counts).await {
                Ok(mut stream) => exchange(&mut stream, CLOSING_GET, &mut response).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => counts.requests += 1,
                Err(e) => counts.failed(e),
            }
        }
        counts
    }
}

/// Sends `request` and reads one whole 200 response into `response`. Over TLS 1.3 the
/// server's session tickets arrive before the response, so once it is read the client
/// holds them for its next connection.
async fn exchange(
    stream: &mut Box<dyn Stream>,
    request: &[u8],
    response: &mut Vec<u8>,
) -> Result<(), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("writing the request: {e}"))?;
    response.clear();
    let mut buf = [0u8; 4096];
    while !response_complete(response)? {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the response: {e}"))?;
        if n == 0 {
            return Err("the connection closed before the response ended".into());
        }
        response.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
