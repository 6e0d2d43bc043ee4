//! Independent RPC peers (Node and Python programs under `peers/`) run as child
//! processes: a provider started on a fresh port and awaited until it says it listens,
//! and a consumer whose output lines are collected, each bounded in time.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, ChildGuard};

/// A peer package's directory under `crates/sinew-integration/peers`.
pub fn peers_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}

/// `program args…` run in peer package `peers`, its stdout piped.
pub fn peer_command(peers: &str, program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(peers_dir(peers))
        .stdout(Stdio::piped());
    command
}

/// A provider started by `node <script> <port> <args…>` in `peers`, once its first
/// line says `listening`.
pub async fn node_provider(peers: &str, script: &str, args: &[&str]) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let port_arg = port.to_string();
    let all: Vec<&str> = [script, port_arg.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let mut child = ChildGuard(
        peer_command(peers, "node", &all)
            .spawn()
            .expect("node runs (scripts/test installs the RPC peers)"),
    );
    let stdout = child.0.stdout.take().expect("piped");
    let said = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let said = tokio::time::timeout(Duration::from_secs(20), said).await;
    assert!(
        matches!(&said, Ok(Ok(Ok(l))) if l.starts_with("listening")),
        "{script} {args:?} did not start: {said:?}"
    );
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Every line `command` prints before it exits (at most 60 s).
pub async fn output_lines(mut command: Command) -> Vec<String> {
    let child = ChildGuard(command.spawn().expect("the peer runs"));
    let out = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let stdout = child.0.stdout.take().expect("piped");
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("the peer finishes within 60 s")
        .expect("its output is read")
}

/// Every line `command` prints (at most 60 s), with `victim` killed once `after` lines
/// have come: a provider dying in the middle of a consumer's run.
pub async fn output_lines_killing(
    mut command: Command,
    victim: &mut ChildGuard,
    after: usize,
) -> Vec<String> {
    let mut child = ChildGuard(command.spawn().expect("the peer runs"));
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let run = async {
        while let Some(line) = lines.recv().await {
            seen.push(line);
            if seen.len() == after {
                let _ = victim.0.kill();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the peer finishes within 60 s");
    seen
}
