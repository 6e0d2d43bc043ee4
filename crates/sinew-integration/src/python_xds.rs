//! An xDS control plane written by others' hands: `tests/xds/python_control_plane.py`,
//! Python's grpcio serving Envoy's types from the `envoy-data-plane` package. The test
//! feeds it snapshots on stdin and reads back every request the proxy sent it (ACKs,
//! NACKs with their `error_detail`, subscriptions) as JSON lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::{eventually, ChildGuard};

pub struct PythonControlPlane {
    pub port: u16,
    stdin: ChildStdin,
    requests: Arc<Mutex<Vec<Value>>>,
    _child: ChildGuard,
}

impl PythonControlPlane {
    /// Starts it on `port` (0: any free port) and waits until it listens.
    pub fn start(port: u16) -> PythonControlPlane {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/xds/python_control_plane.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (Debian package python3)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let child = ChildGuard(child);
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = first
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the Python control plane did not start (got {first:?}); it needs \
                     `pip install grpcio envoy-data-plane==2.2.0`, which scripts/test runs"
                )
            });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        PythonControlPlane {
            port,
            stdin,
            requests,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves a new snapshot: one listener on `listener_port` routing everything to the
    /// EDS cluster `svc` with `endpoints`; `bad` adds an HTTP filter Sinew refuses.
    pub fn push(
        &mut self,
        version: &str,
        listener_port: u16,
        endpoints: &[std::net::SocketAddr],
        bad: bool,
    ) {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        self.push_snapshot(
            json!({"version": version, "listener_port": listener_port, "endpoints": endpoints, "bad": bad}),
        );
    }

    /// Serves a snapshot written out in full (the script's doc lists the fields), for
    /// the options `push` does not take: `withhold`, `initial_fetch_timeout`.
    pub fn push_snapshot(&mut self, snapshot: Value) {
        writeln!(self.stdin, "{snapshot}").expect("write a snapshot");
        self.stdin.flush().expect("flush");
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits for a request that satisfies `check`, and returns it.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        eventually(Duration::from_secs(15), || {
            found = self.requests().into_iter().find(|r| check(r));
            found.is_some()
        })
        .await;
        found.unwrap_or_else(|| panic!("no request {what}; got {:#?}", self.requests()))
    }
}
