//! A real etcd (Debian package `etcd-server`) per test, on loopback ports of its own with
//! a data directory of its own, and `etcdctl` (package `etcd-client`) to register
//! instances the way a service's own agent would: a key with a lease.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ChildGuard};

pub struct Etcd {
    pub endpoint: String,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says so.
    pub fn start() -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let dir = std::env::temp_dir().join(format!("sinew-etcd-{}-{client}", std::process::id()));
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install the Debian package `etcd-server` (scripts/test does)")
            });
        let etcd = Etcd {
            endpoint,
            dir,
            child: Some(ChildGuard(child)),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if etcd.ctl(&["endpoint", "health"]).is_ok() {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd at {} was not healthy within 20 s", etcd.endpoint);
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
