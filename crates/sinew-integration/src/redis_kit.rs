//! A real `redis-server` (Debian package `redis-server`) per test, on a loopback port of
//! its own, with no persistence; and a minimal RESP client for the test to look inside.
//! The server can be killed, paused (SIGSTOP) and resumed, and started again on its port.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, ChildGuard};

pub struct RedisServer {
    pub addr: SocketAddr,
    child: Option<ChildGuard>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts the server (again) on its port; an earlier process is killed first.
    pub fn restart(&mut self) {
        self.child = None;
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install the Debian package `redis-server` \
                     (scripts/test does)"
                )
            });
        self.child = Some(ChildGuard(child));
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.try_command(&["PING"]).as_deref() == Ok("PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on {} did not answer PING within 10s",
            self.addr
        );
    }

    /// Kills the server (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Runs one command; panics on failure. Returns the reply as text (integers and bulk
    /// strings alike; arrays as their elements joined by spaces).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    pub fn try_command(&self, args: &[&str]) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        read_reply(&mut BufReader::new(stream))
    }
}

fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        "$" if rest == "-1" => Ok(String::new()),
        "$" => {
            let mut data = String::new();
            reader.read_line(&mut data).map_err(|e| e.to_string())?;
            Ok(data.trim_end().to_string())
        }
        "*" => {
            let n: usize = rest.parse().map_err(|_| format!("bad array {line:?}"))?;
            let items: Result<Vec<String>, String> = (0..n).map(|_| read_reply(reader)).collect();
            Ok(items?.join(" "))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}
