//! A real ZooKeeper (Debian package `zookeeper`) per test, on a loopback port of its own
//! with a data directory of its own, and its own `zkCli.sh` to write nodes the way a
//! Dubbo provider's registry client would.

use std::io::Write;
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
        let child = Command::new(format!("{BIN}/zkServer.sh"))
            .arg("start-foreground")
            .arg(dir.join("zoo.cfg"))
            .env("ZOOCFGDIR", &dir)
            .env("ZOO_LOG_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {BIN}/zkServer.sh ({e}): install the Debian package `zookeeper` (scripts/test does)")
            });
        let zk = ZooKeeper {
            address: format!("127.0.0.1:{port}"),
            dir,
            child: Some(ChildGuard(child)),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if zk
                .cli(&["ls /"])
                .is_ok_and(|out| out.contains("[zookeeper"))
            {
                return zk;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ZooKeeper at {} did not open a session within 30 s",
            zk.address
        );
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

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
