//! `sinew-bench`: the load side of `bench/run`. It is not part of the proxy; it exists so the
//! harness measures proxies against an upstream and clients whose cost is small and known.
//!
//! - `upstream` serves fixed bodies over HTTP/1.1, h2c and TLS, and an endless byte stream
//!   over TCP, so the direct baseline and every proxy talk to the same server.
//! - `tcp-read` reads from a TCP stream as fast as it can and reports the rate.
//! - `hold` opens many keep-alive connections (cleartext or TLS), makes one request on
//!   each, and keeps them open until its standard input closes, so the harness can read a
//!   proxy's RSS meanwhile.
//! - `load` sends GETs over keep-alive connections or a new connection each, in cleartext
//!   or TLS 1.3, with session resumption on or off and an optional client certificate,
//!   and counts full and resumed handshakes (the TLS scenarios).
//! - `rpc-upstream` is a Bolt or Dubbo echo server, and `rpc-load` keeps pipelined echo
//!   calls in flight against it, directly or through a proxy, and checks each answer's id
//!   (the RPC scenarios).

mod hold;
mod load;
mod rpc;
mod rpc_load;
mod rpc_upstream;
mod tcp;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sinew-bench",
    about = "Upstream and clients for Sinew's benchmark harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve 64-byte bodies (any path) and 1 MiB bodies (`/1m`), and a TCP byte stream.
    Upstream {
        /// HTTP/1.1 and h2c (prior knowledge) on one port.
        #[arg(long)]
        http: SocketAddr,
        /// The same over TLS (ALPN h2 and http/1.1); needs --cert and --key.
        #[arg(long)]
        tls: Option<SocketAddr>,
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        /// Every connection accepted here is sent an endless stream of bytes.
        #[arg(long)]
        tcp_source: Option<SocketAddr>,
    },
    /// Read from `--connect` over `--streams` connections for `--secs` seconds; print JSON.
    TcpRead {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Open `--conns` keep-alive connections, make one GET on each, print JSON once all
    /// are idle, and hold them until standard input closes.
    Hold {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Connect over TLS (ALPN http/1.1 only), trusting the CA bundle given by --ca.
        #[arg(long, requires = "ca")]
        tls: bool,
        /// PEM CA bundle for --tls; the certificate must name the IP address of --connect.
        #[arg(long, requires = "tls")]
        ca: Option<PathBuf>,
    },
    /// GETs to `--connect` over `--conns` connections for `--secs` seconds, each as soon as
    /// the last response is in; print JSON (requests, errors, full and resumed handshakes).
    Load {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 50)]
        conns: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// A new connection for each request (`Connection: close`), so over TLS a new
        /// handshake for each.
        #[arg(long)]
        close: bool,
        /// Talk TLS 1.3 (ALPN http/1.1), verifying the server against this PEM CA bundle;
        /// the certificate must name the IP address of --connect.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Resume TLS sessions with the server's tickets; without it every handshake is full.
        #[arg(long, requires = "ca")]
        resume: bool,
        /// A client certificate chain (PEM) to present; needs --key.
        #[arg(long, requires_all = ["ca", "key"])]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// A Bolt or Dubbo echo server: each call answered with its payload; prints the bound
    /// address as JSON.
    RpcUpstream {
        #[arg(long, value_enum)]
        protocol: rpc::Protocol,
        #[arg(long)]
        listen: SocketAddr,
        /// Runtime threads (the harness pins the server to one core and uses 1).
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Echo calls to `--target` over `--connections` connections, `--pipeline` in flight
    /// on each, for `--secs` seconds, every answer's id checked; print JSON (requests,
    /// errors, the rate).
    RpcLoad {
        #[arg(long, value_enum)]
        protocol: rpc::Protocol,
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        pipeline: usize,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Payload bytes of each call (Bolt content, Dubbo string argument).
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match cli.command {
        Command::RpcUpstream { threads, .. } if threads > 1 => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()
        }
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Upstream {
                http,
                tls,
                cert,
                key,
                tcp_source,
            } => upstream::run(http, tls.map(|addr| (addr, cert, key)), tcp_source).await,
            Command::TcpRead {
                connect,
                streams,
                secs,
            } => tcp::read(connect, streams, secs).await,
            Command::Hold {
                connect,
                conns,
                tls,
                ca,
            } => hold::run(connect, conns, ca.as_deref().filter(|_| tls)).await,
            Command::Load {
                connect,
                conns,
                secs,
                close,
                ca,
                resume,
                cert,
                key,
            } => {
                let tls = ca.as_deref().map(|ca| load::Tls {
                    ca,
                    client_cert: cert.as_deref().zip(key.as_deref()),
                    resume,
                });
                load::run(load::Options {
                    connect,
                    conns,
                    secs,
                    close,
                    tls,
                })
                .await
            }
            Command::RpcUpstream {
                protocol, listen, ..
            } => rpc_upstream::run(protocol, listen).await,
            Command::RpcLoad {
                protocol,
                target,
                connections,
                pipeline,
                secs,
                size,
            } => {
                rpc_load::run(rpc_load::Options {
                    protocol,
                    target,
                    connections,
                    pipeline,
                    secs,
                    size,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sinew-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
