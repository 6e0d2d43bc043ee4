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

/// Runs `redis-cli -p PORT ARGS...` against `addr` and returns what it printed, trimmed
/// (in a pipe redis-cli prints errors without the `(error)` prefix, one value a line).
pub fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}): install the Debian package `redis-tools`")
        });
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Runs `redis-cli` with `input` on its standard input (for `--pipe`, or a script of
/// inline commands), within 60 s.
pub fn cli_with_input(addr: SocketAddr, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run redis-cli (Debian package `redis-tools`)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_bounded(child, Duration::from_secs(60), "redis-cli");
    let _ = writer.join();
    out
}

/// Waits for a child to exit within `limit` (killing it after) and returns its standard
/// output and error together.
pub fn wait_bounded(mut child: std::process::Child, limit: Duration, what: &str) -> String {
    let until = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

/// Waits (up to 10 s) until `addr` answers PING with PONG through a RESP proxy.
pub fn wait_pong(addr: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && cli(addr, &["PING"]) == "PONG"
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{addr} did not answer PING within 10s");
}

/// twemproxy (Debian package `nutcracker`) in front of `shards`, with ketama and key hash
/// `hash` (`fnv1a_64`, its default, or `md5`): the reference for where keys should land.
pub struct Twemproxy {
    pub addr: SocketAddr,
    _child: ChildGuard,
}

impl Twemproxy {
    pub fn start(dir: &std::path::Path, shards: &[SocketAddr], hash: &str) -> Twemproxy {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let servers: String = shards.iter().map(|s| format!("   - {s}:1\n")).collect();
        let config = dir.join("nutcracker.yml");
        std::fs::write(
            &config,
            format!(
                "pool:\n  listen: {addr}\n  hash: {hash}\n  distribution: ketama\n  redis: true\n  auto_eject_hosts: false\n  servers:\n{servers}"
            ),
        )
        .expect("write nutcracker.yml");
        // Its stats server binds 0.0.0.0:22222 unless told otherwise: a port of its own.
        let stats = free_port().to_string();
        let child = Command::new("nutcracker")
            .args(["-a", "127.0.0.1", "-s", &stats])
            .arg("-c")
            .arg(&config)
            .arg("-o")
            .arg(dir.join("nutcracker.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nutcracker ({e}): install the Debian package `nutcracker` (scripts/test does)")
            });
        let proxy = Twemproxy {
            addr,
            _child: ChildGuard(child),
        };
        wait_pong(addr);
        proxy
    }
}
