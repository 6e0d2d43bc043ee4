//! A real etcd (Debian package `etcd-server`) per test, on loopback ports of its own with
//! a data directory of its own, and `etcdctl` (package `etcd-client`) to register
//! instances the way a service's own agent would: a key with a lease.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ChildGuard};

pub struct Etcd {
    pub endpoint: String,
    peer: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says so.
    pub fn start() -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let dir = std::env::temp_dir().join(format!("sinew-etcd-{}-{client}", std::process::id()));
        let mut etcd = Etcd {
            endpoint,
            peer,
            dir,
            child: None,
        };
        etcd.run();
        etcd
    }

    /// A member restart: the process is killed, then started again on the same data
    /// directory and ports, and waited for.
    pub fn restart(&mut self) {
        self.child = None;
        self.run();
    }

    fn run(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.endpoint, "--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install the Debian package `etcd-server` (scripts/test does)")
            });
        self.child = Some(ChildGuard(child));
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if self.ctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd at {} was not healthy within 20 s", self.endpoint);
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self
            .ctl(&["endpoint", "status", "--write-out=json"])
            .expect("endpoint status");
        let status: serde_json::Value = serde_json::from_str(&out).expect("status is JSON");
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// Compacts the history up to the current revision, as an operator (or etcd's
    /// auto-compaction) does: watches that start before it are told so and cancelled.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        self.ctl(&["compact", &revision.to_string(), "--physical"])
            .expect("compact");
        revision
    }

    /// Runs `etcdctl` against this server; its stdout, or its stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run etcdctl ({e}): install the Debian package `etcd-client` (scripts/test does)")
            });
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Grants a lease of `ttl` seconds and returns its id (hex, as etcdctl prints it).
    pub fn grant(&self, ttl: u32) -> String {
        let out = self
            .ctl(&["lease", "grant", &ttl.to_string()])
            .expect("lease grant");
        // "lease 694d8a2d1c1bb40b granted with TTL(30s)"
        out.split_whitespace()
            .nth(1)
            .expect("a lease id")
            .to_string()
    }

    pub fn put(&self, key: &str, value: &str, lease: Option<&str>) {
        let mut args = vec!["put", key, value];
        let flag;
        if let Some(lease) = lease {
            flag = format!("--lease={lease}");
            args.push(&flag);
        }
        self.ctl(&args).expect("put");
    }

    /// Puts many keys fast (one `etcdctl` per key would take seconds): each through
    /// etcd's JSON gateway (`POST /v3/kv/put`), one connection per key.
    pub fn put_many(&self, items: &[(String, String)]) {
        use base64::Engine;
        use std::io::{Read, Write};
        let authority = self.endpoint.trim_start_matches("http://");
        let b64 = base64::engine::general_purpose::STANDARD;
        for (key, value) in items {
            let body =
                serde_json::json!({"key": b64.encode(key), "value": b64.encode(value)}).to_string();
            let mut stream = std::net::TcpStream::connect(authority).expect("connect to etcd");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            write!(
                stream,
                "POST /v3/kv/put HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("send a put");
            let mut reply = String::new();
            stream
                .read_to_string(&mut reply)
                .expect("read the put's answer");
            assert!(reply.starts_with("HTTP/1.1 200"), "put {key}: {reply}");
        }
    }

    pub fn revoke(&self, lease: &str) {
        self.ctl(&["lease", "revoke", lease]).expect("lease revoke");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
