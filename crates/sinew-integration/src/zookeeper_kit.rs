//! A real ZooKeeper (Debian package `zookeeper`) per test, on a loopback port of its own
//! with a data directory of its own, and its own `zkCli.sh` to write nodes the way a
//! Dubbo provider's registry client would.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ChildGuard};

const BIN: &str = "/usr/share/zookeeper/bin";

pub struct ZooKeeper {
    /// `127.0.0.1:port`.
    pub address: String,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl ZooKeeper {
    /// Starts a standalone server and waits until a client session opens.
    pub fn start() -> ZooKeeper {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sinew-zk-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("zk dir");
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n",
                dir.display()
            ),
        )
        .expect("zoo.cfg");
        let mut zk = ZooKeeper {
            address: format!("127.0.0.1:{port}"),
            dir,
            child: None,
        };
        zk.run();
        zk
    }

    /// A server restart: the process is killed, then started again on the same data
    /// directory and port (sessions and nodes survive, as in a real restart), and waited
    /// for.
    pub fn restart(&mut self) {
        self.child = None;
        self.run();
    }

    fn run(&mut self) {
        // zkServer.sh execs the JVM in the foreground, so the guard kills the server.
        let child = Command::new(format!("{BIN}/zkServer.sh"))
            .arg("start-foreground")
            .arg(self.dir.join("zoo.cfg"))
            .env("ZOOCFGDIR", &self.dir)
            .env("ZOO_LOG_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {BIN}/zkServer.sh ({e}): install the Debian package `zookeeper` (scripts/test does)")
            });
        self.child = Some(ChildGuard(child));
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            // `[zookeeper]` when new, `[dubbo, zookeeper]` after a restart.
            if self
                .cli(&["ls /"])
                .is_ok_and(|out| out.contains("zookeeper]"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ZooKeeper at {} did not open a session within 30 s",
            self.address
        );
    }

    /// Creates `path` as an ephemeral node of a client session that stays open, as a
    /// Dubbo provider does (its parents must exist). The node lives as long as the
    /// session: [`Ephemeral::kill`] ends the client without closing it, so the server
    /// expires the session after its timeout (4 s, the least `tickTime=2000` allows).
    pub fn ephemeral(&self, path: &str) -> Ephemeral {
        // zkCli.sh runs the JVM as its child, not with exec: a process group of its own
        // lets the kill reach the JVM that holds the session.
        let mut child = Command::new(format!("{BIN}/zkCli.sh"))
            .args(["-timeout", "4000", "-server", &self.address])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {BIN}/zkCli.sh ({e}): install the Debian package `zookeeper`")
            });
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "create -e {path} \"\"").expect("write to zkCli");
        let session = Ephemeral {
            child: Some(child),
            _stdin: stdin,
        };
        let until = Instant::now() + Duration::from_secs(30);
        let parent = path
            .rsplit_once('/')
            .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
        let name = path.rsplit('/').next().unwrap_or(path);
        while Instant::now() < until {
            if self
                .cli(&[&format!("ls {parent}")])
                .is_ok_and(|out| out.contains(name))
            {
                return session;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the ephemeral node {path} did not appear within 30 s");
    }

    /// Runs `zkCli.sh` commands in one session; its output.
    pub fn cli(&self, commands: &[&str]) -> Result<String, String> {
        let mut child = Command::new(format!("{BIN}/zkCli.sh"))
            .args(["-server", &self.address])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut stdin = child.stdin.take().expect("stdin");
        for c in commands {
            writeln!(stdin, "{c}").map_err(|e| e.to_string())?;
        }
        writeln!(stdin, "quit").map_err(|e| e.to_string())?;
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("Connection refused") || text.contains("KeeperErrorCode = ConnectionLoss")
        {
            return Err(text);
        }
        Ok(text)
    }
}

/// A client session that holds an ephemeral node (see [`ZooKeeper::ephemeral`]).
pub struct Ephemeral {
    child: Option<std::process::Child>,
    /// Kept open: zkCli reads commands from it and quits at its end.
    _stdin: std::process::ChildStdin,
}

impl Ephemeral {
    /// Kills the client (the shell and its JVM) without closing its session, as a
    /// provider that crashes or is cut off: the node goes when the server expires it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The node a Dubbo provider with this `url` registers under `/dubbo/<interface>/providers`:
/// the URL percent-encoded as Dubbo's registry writes it.
pub fn dubbo_provider_node(interface: &str, url: &str) -> String {
    let node: String = url
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/dubbo/{interface}/providers/{node}")
}
