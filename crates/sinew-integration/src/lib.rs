//! Shared kit for Sinew's integration tests: a proxy started in-process from YAML, upstream
//! servers that misbehave on command, and a plain HTTP client.
//!
//! Everything binds port 0 on loopback, so tests run in parallel and leave nothing behind.

pub mod admin_kit;
pub mod bolt_kit;
pub mod envoy_kit;
pub mod etcd_kit;
pub mod grpc_kit;
pub mod kube_api_kit;
pub mod otlp_kit;
pub mod probe;
pub mod prometheus_kit;
pub mod python_xds;
pub mod raw;
pub mod redis_kit;
pub mod rpc_peers;
pub mod tls_kit;
pub mod upstream;
pub mod zookeeper_kit;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use upstream::{Upstream, UpstreamOptions};

/// A proxy running in this process.
pub struct TestProxy {
    pub proxy: Arc<sinew_proxy::Proxy>,
}

impl TestProxy {
    /// Starts a proxy on `yaml`; panics with the diagnostics if the config is refused.
    pub async fn start(yaml: &str) -> TestProxy {
        let loaded = sinew_config::load_str("test.yaml", yaml)
            .unwrap_or_else(|d| panic!("test config refused:\n{d}\n---\n{yaml}"));
        let proxy = sinew_proxy::Proxy::start(&loaded)
            .await
            .unwrap_or_else(|d| panic!("test config refused:\n{d}\n---\n{yaml}"));
        TestProxy { proxy }
    }

    /// The bound address of a listener.
    pub async fn addr(&self, listener: &str) -> SocketAddr {
        self.proxy
            .listener_address(listener)
            .await
            .unwrap_or_else(|| panic!("no listener named {listener}"))
    }

    /// Reloads with new YAML; returns the diagnostics if refused.
    pub async fn reload(&self, yaml: &str) -> Result<u64, String> {
        let loaded = sinew_config::load_str("test.yaml", yaml).map_err(|d| d.to_string())?;
        self.proxy.reload(loaded).await.map_err(|d| d.to_string())
    }
}

/// The config most tests need: one HTTP listener `web` on 127.0.0.1:0 with one route
/// sending every request to cluster `svc`. Each extra is YAML spliced into its block,
/// already indented for it: listener fields 4 spaces, `http` fields 6, route fields 14,
/// cluster fields 4.
#[derive(Default, Clone)]
pub struct OneRoute {
    endpoints: Vec<SocketAddr>,
    listener: String,
    http: String,
    route: String,
    cluster: String,
}

impl OneRoute {
    pub fn to(endpoints: &[SocketAddr]) -> Self {
        Self {
            endpoints: endpoints.to_vec(),
            ..Self::default()
        }
    }

    pub fn listener(mut self, yaml: &str) -> Self {
        self.listener = yaml.to_string();
        self
    }

    pub fn http(mut self, yaml: &str) -> Self {
        self.http = yaml.to_string();
        self
    }

    pub fn route(mut self, yaml: &str) -> Self {
        self.route = yaml.to_string();
        self
    }

    pub fn cluster(mut self, yaml: &str) -> Self {
        self.cluster = yaml.to_string();
        self
    }

    pub fn yaml(&self) -> String {
        let endpoints: String = self
            .endpoints
            .iter()
            .map(|a| format!("{{address: {a}}}, "))
            .collect();
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:0
{listener}
    http:
{http}
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: svc
{route}
clusters:
  - name: svc
    endpoints: [{endpoints}]
{cluster}
",
            listener = self.listener,
            http = self.http,
            route = self.route,
            cluster = self.cluster,
        )
    }

    /// Starts the proxy; returns it with the listener's address.
    pub async fn start(&self) -> (TestProxy, SocketAddr) {
        let proxy = TestProxy::start(&self.yaml()).await;
        let addr = proxy.addr("web").await;
        (proxy, addr)
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Reads a whole response: status, version, headers and the collected body.
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Reply, String> {
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("response body failed: {e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 (or, with `http2_only`, h2c prior-knowledge) client with keep-alive.
#[derive(Clone)]
pub struct TestClient {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub fn http1() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// An HTTP/1.1 client whose connections come from `local` (any 127.0.0.0/8 address works
    /// on Linux), to play several clients for source-IP hashing.
    pub fn http1_from(local: IpAddr) -> Self {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_local_address(Some(local));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// GET `http://{addr}{path}` with the given extra headers (`Host` among them if set).
    pub async fn get(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, addr, path, headers, Bytes::new())
            .await
    }

    pub async fn send(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        self.try_send(method, addr, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestClient::get`], but a failure (or no answer within 20 s) is an `Err`.
    pub async fn try_get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.try_send(Method::GET, addr, path, headers, Bytes::new())
            .await
    }

    pub async fn try_send(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("valid request");
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {e:?}"))?;
            Reply::read(resp).await
        };
        tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .map_err(|_| "request timed out".to_string())?
    }
}

/// Sends one request on a new HTTP/2 (prior knowledge) connection to `addr`, with `uri`'s
/// authority as `:authority` whatever `addr` is — for virtual-host matching over HTTP/2.
pub async fn h2_request(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let mut req = Request::builder().method(Method::GET).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).expect("valid request");
        let resp = sender.send_request(req).await.expect("h2 request");
        Reply::read(resp).await.unwrap_or_else(|e| panic!("{e}"))
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("h2 request timed out")
}

/// What a batch of requests got: answers counted by the `x-upstream` header (or `-` when
/// absent), non-2xx statuses, and failures (with the first few of either).
#[derive(Debug, Default)]
pub struct Tally {
    pub by_upstream: BTreeMap<String, usize>,
    pub non_2xx: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
}

impl Tally {
    pub fn count(&self, upstream: &str) -> usize {
        self.by_upstream.get(upstream).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.by_upstream.values().sum::<usize>() + self.errors
    }
    fn merge(&mut self, other: Tally) {
        for (k, v) in other.by_upstream {
            *self.by_upstream.entry(k).or_default() += v;
        }
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        self.first_errors.extend(other.first_errors);
        self.first_errors.truncate(5);
    }
}

/// Sends `total` GETs for `path` from `concurrency` tasks sharing `client` (so keep-alive
/// connections are reused), and gives up after `deadline`; panics if not all were sent.
pub async fn tally(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    total: usize,
    concurrency: usize,
    deadline: Duration,
) -> Tally {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = tokio::time::Instant::now() + deadline;
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let next = next.clone();
        let headers = headers.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut t = Tally::default();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total
                && tokio::time::Instant::now() < until
            {
                match client.try_get(addr, &path, &headers).await {
                    Ok(r) => {
                        if !r.status.is_success() {
                            t.non_2xx += 1;
                            if t.first_errors.len() < 5 {
                                t.first_errors.push(format!("{} {}", r.status, r.text()));
                            }
                        }
                        let who = r.header("x-upstream").unwrap_or("-").to_string();
                        *t.by_upstream.entry(who).or_default() += 1;
                    }
                    Err(e) => {
                        t.errors += 1;
                        if t.first_errors.len() < 5 {
                            t.first_errors.push(e);
                        }
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.expect("load task"));
    }
    assert_eq!(
        all.total(),
        total,
        "only {} of {total} requests were sent within {deadline:?}",
        all.total()
    );
    all
}

/// A TCP server on a loopback port that echoes back everything it reads, for TCP
/// proxy tests.
pub async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an echo server");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A loopback port that was free a moment ago (bound to port 0, then released), for
/// configs that must name a port before the process that binds it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A loopback address where nothing listens (a port bound and released).
pub fn closed_port_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("try_wait")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new directory under the system temp dir, unique to this process and call.
pub fn scratch_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sinew-{label}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// `sinew control -c config`, killed when dropped.
pub fn start_control(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        std::process::Command::new(sinew_binary())
            .args(["control", "-c"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start sinew control"),
    )
}

/// `sinew proxy -c config` (a Sinew config or an Envoy bootstrap), killed when dropped.
pub fn start_proxy_file(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        std::process::Command::new(sinew_binary())
            .args(["proxy", "-c"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start sinew proxy"),
    )
}

/// An Envoy bootstrap's static cluster `name` with one endpoint at `addr`, as an item of
/// `static_resources.clusters` (two-space indent), for bootstraps written by tests.
pub fn envoy_static_cluster(name: &str, addr: SocketAddr) -> String {
    format!(
        "  - name: {name}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
",
        port = addr.port()
    )
}

/// The nearest-rank percentile `p` (0..=1) of sorted durations; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The lines of a file written by the proxy (an access log), empty while it is missing.
pub fn read_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (up to 5 s) for `path` to hold at least `n` lines, and returns them.
pub async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let found = eventually(Duration::from_secs(5), || read_lines(path).len() >= n).await;
    let lines = read_lines(path);
    assert!(
        found,
        "expected {n} lines in {}, got {lines:?}",
        path.display()
    );
    lines
}

/// Runs a shell command off the caller's runtime (an in-process proxy may run on it)
/// and returns its standard output.
pub async fn shell(command: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .output()
            .expect("sh runs")
    })
    .await
    .expect("the command's thread");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 20 ms until it holds or `deadline` passes.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The release binary built by `scripts/test` (or `cargo build --release`).
pub fn sinew_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("SINEW_BIN") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("release/sinew");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p sinew` first (scripts/test does)",
        bin.display()
    );
    bin
}
