//! A provider's remote JWKS: fetched over HTTP or HTTPS, cached, refreshed in the
//! background, read by requests without a lock.
//!
//! - The key set sits in an `ArcSwapOption`: a request loads it with a few atomic
//!   operations and never waits for a fetch.
//! - One task per provider fetches it: at start, then every `cache_duration`. A fetch that
//!   fails keeps the last good set (if any) and is retried with backoff (250 ms doubling
//!   to 30 s, never longer than `cache_duration`). A failed *first* fetch is never cached
//!   as an empty set: until one succeeds, requests that need the provider get 401
//!   (`Jwks remote fetch is failed`, as Envoy), and the error is logged at each attempt.
//! - A token whose `kid` is not in the set may be a sign that the issuer rotated its keys:
//!   it asks the task for an early fetch, at most once per [`EARLY_REFETCH_INTERVAL`], so
//!   random `kid`s cannot turn the proxy into a load generator against the issuer.
//! - The task ends when the provider is dropped (a reload that changes or removes it).
//!
//! HTTPS checks the server against the PEM CAs in `ca` (the proxy reads no system trust
//! store); the client is hyper's HTTP/1 connection over tokio-rustls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use sinew_config::jwt_authn::RemoteJwks as RemoteConfig;
use tokio::sync::{oneshot, watch, Notify};

use super::jwks::{self, KeySet};

/// The fewest time between two fetches a token with an unknown `kid` may cause.
pub(crate) const EARLY_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// A JWKS larger than this is refused (real ones are a few KiB).
const MAX_BODY_BYTES: usize = 1 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counters of a provider's fetches; absent when metrics are off.
#[derive(Clone)]
pub(crate) struct FetchCounters {
    pub success: Counter,
    pub failure: Counter,
}

/// A provider's remote key set and the task that keeps it.
pub(crate) struct RemoteJwks {
    pub config: RemoteConfig,
    shared: Arc<Shared>,
    /// Dropping it ends the task.
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    started: AtomicBool,
}

struct Shared {
    config: RemoteConfig,
    /// For logs: `listener/provider`.
    name: String,
    keys: ArcSwapOption<KeySet>,
    refetch: Notify,
    /// When the last fetch ended, in ms since `epoch`; 0 before the first.
    last_fetch_ms: AtomicU64,
    epoch: Instant,
    first_attempt_done: watch::Sender<bool>,
    counters: Option<FetchCounters>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl RemoteJwks {
    /// The fetcher for `config`; the CA file is read now, so a bad one is a config error.
    /// The task starts with [`RemoteJwks::start`].
    pub(crate) fn new(
        config: &RemoteConfig,
        name: String,
        counters: Option<FetchCounters>,
    ) -> Result<Self, (&'static str, String)> {
        let uri: Uri = config
            .uri
            .parse()
            .map_err(|e| ("uri", format!("{:?} is not a URL: {e}", config.uri)))?;
        if uri.host().is_none() {
            return Err(("uri", format!("{:?} has no host", config.uri)));
        }
        let tls = match (uri.scheme_str(), &config.ca) {
            (Some("https"), Some(ca)) => {
                let roots = sinew_tls::pem::load_roots(ca).map_err(|e| ("ca", e))?;
                let client = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ("ca", e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
            }
            (Some("https"), None) => {
                return Err(("ca", "an https uri needs `ca`".into()));
            }
            _ => None,
        };
        Ok(RemoteJwks {
            config: config.clone(),
            shared: Arc::new(Shared {
                config: config.clone(),
                name,
                keys: ArcSwapOption::empty(),
                refetch: Notify::new(),
                last_fetch_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                first_attempt_done: watch::channel(false).0,
                counters,
                tls,
            }),
            stop: std::sync::Mutex::new(None),
            started: AtomicBool::new(false),
        })
    }

    /// Starts the fetch task on the current runtime (once; later calls do nothing).
    /// Outside a runtime (`sinew validate`) there is nothing to fetch for.
    pub(crate) fn start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (stop, stopped) = oneshot::channel();
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop);
        runtime.spawn(keep_fresh(self.shared.clone(), stopped));
    }

    /// The key set, if one was ever fetched.
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// A token named a `kid` the set does not have, or came while there is no set: fetch
    /// early, unless a fetch ended less than [`EARLY_REFETCH_INTERVAL`] ago.
    pub(crate) fn want_fresh_keys(&self) {
        let shared = &self.shared;
        let now = shared.epoch.elapsed().as_millis() as u64;
        let last = shared.last_fetch_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= EARLY_REFETCH_INTERVAL.as_millis() as u64 {
            shared.refetch.notify_one();
        }
    }

    /// Waits until the first fetch has ended (well or not), at most `bound`.
    pub(crate) async fn first_attempt(&self, bound: Duration) {
        let mut done = self.shared.first_attempt_done.subscribe();
        let _ = tokio::time::timeout(bound, done.wait_for(|d| *d)).await;
    }
}

async fn keep_fresh(shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let result = tokio::time::timeout(shared.config.timeout, fetch(&shared)).await;
        let result = result.unwrap_or_else(|_| {
            Err(format!(
                "no complete answer within {:?}",
                shared.config.timeout
            ))
        });
        shared.last_fetch_ms.store(
            shared.epoch.elapsed().as_millis().max(1) as u64,
            Ordering::Relaxed,
        );
        let wait = match result {
            Ok(parsed) => {
                for why in &parsed.skipped {
                    tracing::warn!(provider = %shared.name, uri = %shared.config.uri, "JWKS key left out: {why}");
                }
                tracing::debug!(provider = %shared.name, keys = parsed.set.len(), "JWKS fetched");
                shared.keys.store(Some(Arc::new(parsed.set)));
                if let Some(c) = &shared.counters {
                    c.success.inc();
                }
                backoff = FIRST_BACKOFF;
                shared.config.cache_duration
            }
            Err(why) => {
                if let Some(c) = &shared.counters {
                    c.failure.inc();
                }
                let cached = shared.keys.load().is_some();
                tracing::warn!(
                    provider = %shared.name,
                    uri = %shared.config.uri,
                    retry_in = ?backoff,
                    keeping_last_keys = cached,
                    "JWKS fetch failed: {why}"
                );
                let wait = backoff.min(shared.config.cache_duration);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        shared.first_attempt_done.send_replace(true);
        // A little jitter, so proxies started together do not fetch together forever.
        let wait = wait.mul_f64(0.9 + fastrand::f64() * 0.2);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refetch.notified() => {}
            _ = &mut stopped => return,
        }
    }
}

/// One fetch: GET the URI, 200 with a JWKS that has a usable key.
async fn fetch(shared: &Shared) -> Result<jwks::Parsed, String> {
    let uri: Uri = shared
        .config
        .uri
        .parse()
        .map_err(|e| format!("bad uri: {e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "sinew")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let (status, body) = match &shared.tls {
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
            exchange(TokioIo::new(stream), request).await?
        }
        None => exchange(TokioIo::new(tcp), request).await?,
    };
    if status != StatusCode::OK {
        return Err(format!("the server answered {status}"));
    }
    let text = std::str::from_utf8(&body).map_err(|_| "the JWKS is not UTF-8".to_string())?;
    jwks::parse(text)
}

async fn exchange<S>(
    io: TokioIo<S>,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // The connection is driven beside the request and dropped with it.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body failed (at most {MAX_BODY_BYTES} bytes): {e}"))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        // Ends the task (its receiver resolves when the sender goes).
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::jwt_authn::token::tests::{jwks as jwks_text, TestKey};
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A JWKS server on loopback that fails its first `fail_first` requests with 503,
    /// then serves whatever `body` holds; counts requests.
    async fn server(
        fail_first: usize,
        body: Arc<std::sync::Mutex<String>>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = s.read(&mut buf).await;
                    let reply = if n < fail_first {
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                    } else {
                        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/jwks"), count)
    }

    fn config(uri: &str) -> RemoteConfig {
        RemoteConfig {
            uri: uri.to_string(),
            cache_duration: Duration::from_secs(600),
            timeout: Duration::from_secs(2),
            ca: None,
        }
    }

    #[tokio::test]
    async fn a_failed_first_fetch_is_retried_with_backoff_not_cached_empty() {
        let key = TestKey::ed25519("k1");
        let body = Arc::new(std::sync::Mutex::new(jwks_text(&[&key])));
        let (uri, count) = server(3, body).await;
        let counters = FetchCounters {
            success: Counter::default(),
            failure: Counter::default(),
        };
        let remote =
            RemoteJwks::new(&config(&uri), "web/idp".into(), Some(counters.clone())).unwrap();
        remote.start();
        remote.first_attempt(Duration::from_secs(2)).await;
        assert!(
            remote.keys().is_none(),
            "a failed fetch must not leave an (empty) key set"
        );
        let started = Instant::now();
        while remote.keys().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never recovered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 3 failures (backoff 250, 500, 1000 ms with jitter), then the set.
        assert_eq!(count.load(Ordering::SeqCst), 4);
        assert_eq!(counters.failure.get(), 3);
        assert_eq!(counters.success.get(), 1);
        assert!(remote.keys().unwrap().has_kid("k1"));
        assert!(
            started.elapsed() >= Duration::from_millis(1300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_early_at_most_once_per_interval_and_rotation_is_seen() {
        let (old, new) = (TestKey::ed25519("old"), TestKey::ed25519("new"));
        let body = Arc::new(std::sync::Mutex::new(jwks_text(&[&old])));
        let (uri, count) = server(0, body.clone()).await;
        let remote = RemoteJwks::new(&config(&uri), "web/idp".into(), None).unwrap();
        remote.start();
        remote.first_attempt(Duration::from_secs(2)).await;
        assert!(remote.keys().unwrap().has_kid("old"));
        *body.lock().unwrap() = jwks_text(&[&new]);
        // Right after a fetch: no early one.
        for _ in 0..20 {
            remote.want_fresh_keys();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Once the interval has passed, one early fetch sees the new key.
        let until = Instant::now() + EARLY_REFETCH_INTERVAL + Duration::from_secs(3);
        while !remote.keys().unwrap().has_kid("new") {
            assert!(Instant::now() < until, "the rotated key was never fetched");
            remote.want_fresh_keys();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_bad_answer_keeps_the_last_good_set() {
        let key = TestKey::ed25519("k");
        let body = Arc::new(std::sync::Mutex::new(jwks_text(&[&key])));
        let (uri, count) = server(0, body.clone()).await;
        let mut cfg = config(&uri);
        cfg.cache_duration = Duration::from_millis(200);
        let remote = RemoteJwks::new(&cfg, "web/idp".into(), None).unwrap();
        remote.start();
        remote.first_attempt(Duration::from_secs(2)).await;
        *body.lock().unwrap() = "{\"keys\": 5}".into();
        let until = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < 3 {
            assert!(Instant::now() < until);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(remote.keys().unwrap().has_kid("k"));
    }

    #[test]
    fn https_needs_a_readable_ca() {
        let mut cfg = config("https://127.0.0.1:1/jwks");
        assert!(RemoteJwks::new(&cfg, "x".into(), None).is_err());
        cfg.ca = Some("/nonexistent/ca.pem".into());
        let Err((field, why)) = RemoteJwks::new(&cfg, "x".into(), None) else {
            panic!("a missing CA file was accepted")
        };
        assert_eq!(field, "ca");
        assert!(why.contains("cannot open"), "{why}");
    }
}
