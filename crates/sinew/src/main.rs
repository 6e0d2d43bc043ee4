//! The `sinew` command: the quickstart, the proxy, and config validation.
//!
//! SIGTERM or Ctrl-C drains the proxy (listeners close, requests in flight finish, for up
//! to `drain_timeout` or `--drain-timeout`) and exits 0; a second one exits at once, 1.

mod config_file;
mod demo;
mod log_control;
mod sds;
mod xds;
mod xds_files;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

const QUICKSTART_CONFIG: &str = include_str!("quickstart.yaml");

/// Sinew: a fast, multi-protocol service-mesh proxy.
///
/// With no command, runs the quickstart: a gateway on 127.0.0.1:8080 in front of two
/// demo services, on a config embedded in the binary.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print the quickstart's embedded config and exit.
    #[arg(long)]
    print_config: bool,
    /// Worker threads (default: one per core). The proxy runs one current-thread runtime
    /// per worker, each accepting on its own SO_REUSEPORT socket; the control plane runs a
    /// multi-thread runtime of this many threads.
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// The quickstart's drain: how long SIGTERM or Ctrl-C lets connections finish before
    /// they are closed, e.g. `30s` (default: 20s).
    #[arg(long, value_name = "DURATION", value_parser = sinew_config::duration::parse)]
    drain_timeout: Option<Duration>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the data plane on a config file, or steered by a control plane (--xds).
    /// Without --xds, SIGHUP or a change of the file reloads it; SIGTERM or Ctrl-C
    /// drains it and exits.
    Proxy {
        /// The config file: Sinew's YAML (docs/config.md) or an Envoy v3 bootstrap
        /// (YAML or JSON; docs/envoy-bootstrap.md). With `--xds` it is optional: its
        /// listeners and clusters run beside those from the control plane. One of
        /// `--config` and `--xds` is needed.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// How long SIGTERM or Ctrl-C lets connections finish before they are closed,
        /// e.g. `30s` (default: the config's `drain_timeout`, 20s).
        #[arg(long, value_name = "DURATION", value_parser = sinew_config::duration::parse)]
        drain_timeout: Option<Duration>,
        #[command(flatten)]
        xds: XdsArgs,
    },
    /// Run the control plane: follow registries (a directory of YAML files, etcd,
    /// ZooKeeper's Dubbo providers, Kubernetes Services) and serve xDS to proxies
    /// (docs/control.md). SIGTERM or Ctrl-C stops it at once: a proxy keeps what it
    /// was sent and reconnects to another replica or to the restarted one.
    Control {
        /// The control plane's config file (YAML; see docs/control.md). `sinew validate`
        /// checks it.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a file and print every error as file:line:col: field.path: message. It
    /// may be a proxy config (Sinew's YAML or an Envoy bootstrap), a `sinew control`
    /// config, or a directory registry's Service/Listener file; which one is told from
    /// its top-level keys. Nothing is started or contacted.
    Validate {
        /// The file to check.
        file: PathBuf,
    },
}

/// Taking config from an xDS control plane (docs/xds.md).
#[derive(clap::Args)]
struct XdsArgs {
    /// A control plane's gRPC address, `http://HOST:PORT` or, over TLS,
    /// `https://HOST:PORT` (e.g. `https://127.0.0.1:18000`). Repeat it for replicas: the
    /// proxy uses one at a time and fails over to the next.
    #[arg(long = "xds", value_name = "URL", value_parser = xds_url)]
    xds: Vec<String>,
    /// PEM roots that an `https://` control plane's certificate must chain to [default:
    /// the mesh's trust bundle, when the config has `mesh`]. With a mesh identity the
    /// proxy also presents its certificate (mTLS).
    #[arg(long, value_name = "FILE")]
    xds_ca: Option<PathBuf>,
    /// This proxy's node id, as the control plane knows it [default: a bootstrap's
    /// `node.id`, else sinew].
    #[arg(long)]
    node_id: Option<String>,
    /// This proxy's node cluster (the service it runs beside) [default: a bootstrap's
    /// `node.cluster`].
    #[arg(long)]
    node_cluster: Option<String>,
    /// Node metadata, `key=value`; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    node_metadata: Vec<(String, String)>,
    /// `sotw` (state of the world) or `delta` (incremental).
    #[arg(long, default_value = "sotw", value_parser = ["sotw", "delta"])]
    xds_variant: String,
    /// `ads` (one aggregated stream) or `per-type` (a stream per resource type).
    #[arg(long, default_value = "ads", value_parser = ["ads", "per-type"])]
    xds_streams: String,
}

/// A control plane's address as the xDS client can use it: `http://HOST[:PORT]`. Anything
/// else was once taken and then failed to connect forever, so it is refused here, with
/// what to write instead.
fn xds_url(s: &str) -> Result<String, String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "it has no scheme; write http://{s} (a control plane's address is http://HOST:PORT)"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "scheme {other:?} is not supported; write http://{rest} (gRPC over plain HTTP/2)"
            ))
        }
    }
    let uri: http::Uri = s
        .parse()
        .map_err(|e| format!("not a URL ({e}); write http://HOST:PORT"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("it has no host; write http://HOST:PORT".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "a control plane is addressed by host and port only; write http://{}",
            uri.authority().map_or("HOST:PORT", |a| a.as_str())
        ));
    }
    Ok(s.to_string())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// jemalloc, by measurement (`bench/harness.py --quick --scenarios h,h-return --targets
/// sinew --idle-conns 2000`, 2 workers): 30 s after a burst of 1,000 keep-alive
/// connections closed, RSS stood 23.0 MB above idle with glibc's malloc (its per-thread
/// arenas keep freed memory) and 4.0 MB above with jemalloc, whose background threads
/// return unused pages to the kernel; idle RSS 19.0 MB against 16.4. mimalloc did worse
/// on all three (idle 25.7, +31.6). It costs more per idle connection while hyper holds
/// each one's buffers (26.3 KB against 22.1), which Sinew's own HTTP/1 codec removes.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The heap in use for the overload manager's heap monitor: jemalloc's `stats.allocated`
/// (bytes the program holds, allocator slack and free pages not counted), the nearest to
/// the tcmalloc measure Envoy's `fixed_heap` monitor reads. Its statistics are cached
/// until the epoch advances.
fn jemalloc_allocated() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|n| n as u64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sinew_proxy::overload::set_heap_reader(jemalloc_allocated);
    let log = log_control::init();
    sinew_tls::pem::install_default_provider();
    if cli.print_config {
        print!("{QUICKSTART_CONFIG}");
        return ExitCode::SUCCESS;
    }
    if cli.drain_timeout.is_some() && cli.command.is_some() {
        usage_error(
            None,
            clap::error::ErrorKind::ArgumentConflict,
            "--drain-timeout before a command is the quickstart's; for the proxy write \
             `sinew proxy --drain-timeout 30s ...` (the control plane does not drain: it \
             stops at once and proxies reconnect)",
        );
    }
    match cli.command {
        Some(Command::Validate { file }) => validate(&file),
        Some(Command::Control { config }) => run(cli.workers, control(config)),
        Some(Command::Proxy {
            config,
            drain_timeout,
            xds,
        }) => {
            if config.is_none() && xds.xds.is_empty() {
                usage_error(
                    Some("proxy"),
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "`sinew proxy` needs a config file (-c FILE), a control plane \
                     (--xds http://HOST:PORT), or both",
                );
            }
            run_proxy(cli.workers, move |workers| async move {
                proxy(config.as_deref(), xds, drain_timeout, log, workers).await
            })
        }
        None => run_proxy(cli.workers, move |workers| {
            quickstart(cli.drain_timeout, log, workers)
        }),
    }
}

/// Exits as clap does for a usage error (status 2, with the usage line of `subcommand`, or
/// the top level's), saying `message`.
fn usage_error(subcommand: Option<&str>, kind: clap::error::ErrorKind, message: &str) -> ! {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    match subcommand.and_then(|name| command.find_subcommand_mut(name)) {
        Some(sub) => sub.error(kind, message).exit(),
        None => command.error(kind, message).exit(),
    }
}

/// Builds the control plane's runtime: tokio's multi-thread runtime with one thread per
/// core unless `--workers` says otherwise, or a current-thread runtime for one.
fn run(workers: Option<usize>, main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let workers = workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    match builder.enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(main);
            // The drain is done (or was cut short on purpose): exit without waiting for
            // background tasks such as a DNS lookup on the blocking pool.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("sinew: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the data plane: `--workers` per-core workers (one per core by default, see
/// `sinew-runtime` for why this shape), and a current-thread runtime on this thread for
/// what is not traffic: startup, reloads, the admin API, xDS, health checks, signals.
fn run_proxy<F, Fut>(workers: Option<usize>, main: F) -> ExitCode
where
    F: FnOnce(Arc<sinew_proxy::Workers>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let workers = workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|rt| Ok((rt, sinew_proxy::Workers::spawn(workers)?)));
    match started {
        Ok((rt, workers)) => {
            let code = rt.block_on(main(workers));
            // The drain is done (or was cut short on purpose): exit without waiting for
            // background tasks such as a DNS lookup on the blocking pool.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("sinew: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks any file Sinew reads, with the checker for its kind; starts and contacts nothing.
fn validate(file: &Path) -> ExitCode {
    let (name, text) = match sinew_config::read_file(file) {
        Ok(read) => read,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let checked: Result<String, String> = match config_file::kind_of(&text) {
        config_file::Kind::Proxy => match config_file::load(file) {
            Ok(config_file::ConfigFile::Sinew(_)) => Ok("a proxy config".into()),
            Ok(config_file::ConfigFile::Envoy(_)) => Ok("an Envoy bootstrap".into()),
            // An Envoy bootstrap's errors are a migration report: all of them, counted.
            Err(d) if sinew_xds::bootstrap::is_envoy_bootstrap(&text) => {
                let n = d.errors.len();
                let plural = if n == 1 { "" } else { "s" };
                Err(format!(
                    "{d}\n{name}: {n} problem{plural} to solve before Sinew can run this Envoy bootstrap"
                ))
            }
            Err(d) => Err(d.to_string()),
        },
        config_file::Kind::Control => sinew_control::ControlConfig::parse(&name, &text)
            .map(|_| "a `sinew control` config".into())
            .map_err(|d| d.to_string()),
        config_file::Kind::Registry => sinew_control::registry::directory::check(&text)
            .map(|n| {
                let plural = if n == 1 { "" } else { "s" };
                format!("a directory registry file, {n} resource{plural}")
            })
            .map_err(|errors| {
                let lines: Vec<String> = errors.iter().map(|e| format!("{name}:{e}")).collect();
                lines.join("\n")
            }),
    };
    match checked {
        Ok(what) => {
            println!("{name}: ok ({what})");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn proxy(
    path: Option<&Path>,
    xds: XdsArgs,
    drain_timeout: Option<Duration>,
    log: Arc<dyn sinew_proxy::admin::LogControl>,
    workers: Arc<sinew_proxy::Workers>,
) -> ExitCode {
    let file = match path {
        Some(path) => match config_file::load(path) {
            Ok(f) => f,
            Err(d) => {
                eprintln!("{d}");
                return ExitCode::FAILURE;
            }
        },
        None => config_file::ConfigFile::Sinew(
            sinew_config::load_str("<no static config>", "{}").expect("an empty config is valid"),
        ),
    };
    let loaded = file.loaded();
    // A certificate from the mesh CA comes before anything serves: mesh listeners and
    // clusters need it, and the key is made here, in memory.
    let workload = match &loaded.config.mesh {
        Some(mesh) => match &mesh.ca {
            Some(ca) => match obtain_workload_identity(&mesh.trust_domain, ca).await {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("sinew: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        },
        None => None,
    };
    let identity = workload.as_ref().map(|w| w.identity.clone());
    let secrets = workload.as_ref().map(|w| w.secrets.clone());
    // An Envoy (or another proxy) beside this one takes the certificate over SDS on a
    // local socket, as from Istio's agent.
    let sds_socket = loaded
        .config
        .mesh
        .as_ref()
        .and_then(|m| m.ca.as_ref())
        .and_then(|ca| ca.sds_socket.as_ref());
    let _agent = match (sds_socket, &secrets) {
        (Some(path), Some(store)) => match sinew_ca::agent::serve(Path::new(path), store.clone()) {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("sinew: mesh.ca.sds_socket: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // The proxy answers `default` and `ROOTCA` itself with its workload certificate and
    // the mesh's bundle, as Istio's agent does for its Envoy: an Istio-shaped listener or
    // cluster sent by the control plane uses them however its `sds_config` names them.
    if let Some(identity) = &identity {
        let store = sinew_tls::PushedSecrets::global();
        for name in [sinew_ca::agent::WORKLOAD_SECRET, sinew_ca::ROOT_CA_SECRET] {
            store.provide_locally(name, identity.cert.clone(), identity.bundle.clone());
        }
    }
    if let config_file::ConfigFile::Envoy(b) = &file {
        sinew_proxy::admin::runtime::install(Arc::new(EnvoyRuntime));
        b.grpc_services.clone().install();
        sds::set_node(b.node.clone().unwrap_or_default());
    }
    // Secrets named from files are read, and SDS servers subscribed to, before the
    // listeners that use them start.
    if let Err(e) = sds::follow(&loaded.config) {
        eprintln!("sinew: SDS secrets file {e}");
        return ExitCode::FAILURE;
    }
    let proxy = match sinew_proxy::Proxy::start_with_identity(loaded, workers, identity).await {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    sds::count_in(proxy.metrics.clone());
    let _admin = match start_admin(&proxy, loaded, log).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    // With a control plane the static file is read once: xDS updates are assembled on
    // top of it, and a file reload would drop them.
    let xds_tls = match xds_client_tls(&xds, &file, &proxy) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("sinew: {e}");
            return ExitCode::FAILURE;
        }
    };
    let files = match &file {
        config_file::ConfigFile::Envoy(b) => b.files.clone(),
        config_file::ConfigFile::Sinew(_) => Vec::new(),
    };
    if !files.is_empty() && !xds.xds.is_empty() {
        eprintln!("sinew: the bootstrap takes its listeners and clusters from files (dynamic_resources ... path_config_source): --xds cannot be given with it");
        return ExitCode::FAILURE;
    }
    // The follower runs for the life of the process.
    let file_sources = if files.is_empty() {
        None
    } else {
        tokio::spawn(ignore_sighup_under_xds());
        let handler = xds::ProxyHandler::new(proxy.clone(), loaded.config.clone(), secrets.clone());
        let started =
            xds_files::start(handler, files, loaded.config.clone(), proxy.metrics.clone());
        match started.await {
            Ok(task) => Some(task),
            Err(e) => {
                eprintln!("sinew: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let _xds_client = match xds_source(xds, &file, xds_tls) {
        None if file_sources.is_some() => None,
        None => {
            if let Some(path) = path {
                tokio::spawn(sinew_proxy::reload::watch(
                    proxy.clone(),
                    path.to_path_buf(),
                    config_file::load_config,
                ));
            }
            None
        }
        Some(source) => {
            tokio::spawn(ignore_sighup_under_xds());
            Some(sinew_xds_client::XdsClient::start(
                source,
                xds::ProxyHandler::new(proxy.clone(), loaded.config.clone(), secrets.clone()),
            ))
        }
    };
    tokio::spawn(reopen_access_logs_on_sigusr1());
    serve_until_signalled(&proxy, drain_timeout).await
}

async fn control(path: PathBuf) -> ExitCode {
    let config = match sinew_control::ControlConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let control = match sinew_control::ControlPlane::start(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sinew: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if control.ca.is_some() {
        "https"
    } else {
        "http"
    };
    println!("xDS listening on {scheme}://{}", control.xds_address);
    if let Some(admin) = control.admin_address {
        println!("admin API listening on http://{admin}");
    }
    let signal = ShutdownSignals::new().next().await;
    tracing::info!(signal, "stopping the control plane");
    drop(control);
    ExitCode::SUCCESS
}

async fn quickstart(
    drain_timeout: Option<Duration>,
    log: Arc<dyn sinew_proxy::admin::LogControl>,
    workers: Arc<sinew_proxy::Workers>,
) -> ExitCode {
    for (name, address) in [("blue", "127.0.0.1:18081"), ("green", "127.0.0.1:18082")] {
        if let Err(e) = demo::serve(name, address.parse().expect("literal address")).await {
            eprintln!("sinew: cannot start the {name} demo service on {address}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let loaded = match sinew_config::load_str("<embedded quickstart.yaml>", QUICKSTART_CONFIG) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let proxy = match sinew_proxy::Proxy::start_on(&loaded, workers).await {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::FAILURE;
        }
    };
    let admin = match start_admin(&proxy, &loaded, log).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let admin_address = admin
        .as_ref()
        .map_or_else(|| "(off)".to_string(), |a| a.address.to_string());
    println!(
        "Sinew quickstart is running: a gateway on 127.0.0.1:8080 splitting traffic 80/20
between two demo services, blue (127.0.0.1:18081) and green (127.0.0.1:18082).

Try:
  curl http://127.0.0.1:8080/                # blue about 80% of the time, green 20%
  for i in $(seq 20); do curl -s http://127.0.0.1:8080/; done | sort | uniq -c
  curl http://127.0.0.1:8080/green           # always green
  curl http://127.0.0.1:8080/hello           # answered by the proxy itself
  curl --http2-prior-knowledge http://127.0.0.1:8080/   # HTTP/2 on the same port

The admin API is on {admin_address} (docs/admin.md):
  curl http://{admin_address}/ready            # LIVE
  curl http://{admin_address}/metrics          # Prometheus metrics
  curl http://{admin_address}/clusters         # endpoints, health, requests in flight
  curl -X POST 'http://{admin_address}/logging?sinew_proxy=debug'

The config it runs is embedded in the binary: crates/sinew/src/quickstart.yaml,
or print it with `sinew --print-config`. Run your own with `sinew proxy -c FILE`.
Press Ctrl-C to stop."
    );
    serve_until_signalled(&proxy, drain_timeout).await
}

/// Where the proxy's xDS comes from: the `--xds` flags, else a bootstrap's
/// `dynamic_resources`, else nowhere. The node is the flags' where given, else the
/// bootstrap's.
fn xds_source(
    args: XdsArgs,
    file: &config_file::ConfigFile,
    tls: Option<XdsTls>,
) -> Option<sinew_xds_client::ClientConfig> {
    use sinew_xds_client::{ClientConfig, Mode, Streams};
    let bootstrap = match file {
        config_file::ConfigFile::Envoy(b) => Some(b),
        config_file::ConfigFile::Sinew(_) => None,
    };
    let from_file = bootstrap.and_then(|b| b.dynamic.clone());
    let (servers, delta, aggregated) = if !args.xds.is_empty() {
        (
            args.xds,
            args.xds_variant == "delta",
            args.xds_streams != "per-type",
        )
    } else if let Some(d) = from_file {
        (d.servers, d.delta, d.aggregated)
    } else {
        return None;
    };
    let file_node = bootstrap.and_then(|b| b.node.clone()).unwrap_or_default();
    let mut node = xds::node(
        args.node_id.unwrap_or_else(|| {
            if file_node.id.is_empty() {
                "sinew".into()
            } else {
                file_node.id.clone()
            }
        }),
        args.node_cluster.unwrap_or(file_node.cluster),
        &args.node_metadata,
    );
    if args.node_metadata.is_empty() {
        node.metadata = file_node.metadata;
    }
    if file_node.locality.is_some() {
        node.locality = file_node.locality;
    }
    Some(ClientConfig {
        servers,
        tls: tls.as_ref().map(|(config, _)| config.clone()),
        tls_server_name: tls.and_then(|(_, name)| name),
        node,
        mode: if delta {
            Mode::Delta
        } else {
            Mode::StateOfTheWorld
        },
        streams: if aggregated {
            Streams::Aggregated
        } else {
            Streams::PerType
        },
        connect_timeout: Duration::from_secs(5),
    })
}

/// How long a starting proxy keeps asking the mesh CA for its first certificate.
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(120);

async fn obtain_workload_identity(
    trust_domain: &str,
    ca: &sinew_config::tls::MeshCaSource,
) -> Result<sinew_ca::workload::WorkloadIdentity, String> {
    let bundle = sinew_tls::TrustBundle::from_file(&ca.bundle)
        .map_err(|e| format!("mesh.ca.bundle: {e}"))?;
    let bundle_pem = std::fs::read_to_string(&ca.bundle)
        .map_err(|e| format!("mesh.ca.bundle: {:?}: {e}", ca.bundle))?;
    let config = sinew_ca::workload::CaClientConfig {
        address: ca.address.clone(),
        trust_domain: trust_domain.to_string(),
        bundle,
        bundle_pem,
        token_file: PathBuf::from(&ca.token),
        lifetime: ca.lifetime,
    };
    sinew_ca::workload::obtain(config, FIRST_CERTIFICATE_WAIT).await
}

/// TLS to a control plane, and the name its certificate is checked against (None: the
/// host dialled).
type XdsTls = (
    Arc<rustls::ClientConfig>,
    Option<rustls::pki_types::ServerName<'static>>,
);

/// TLS for `https://` control planes. Given by `--xds`: their certificate must chain to
/// `--xds-ca` or the mesh's bundle (kept current by SDS) and name the host dialled; with
/// a mesh identity the proxy presents its certificate. From a bootstrap: as its xDS
/// cluster's TLS context says (roots, name matchers, SNI, client certificate). None
/// when no server is `https://`.
fn xds_client_tls(
    args: &XdsArgs,
    file: &config_file::ConfigFile,
    proxy: &sinew_proxy::Proxy,
) -> Result<Option<XdsTls>, String> {
    if args.xds.is_empty() {
        let tls_cluster = match file {
            config_file::ConfigFile::Envoy(b) => {
                b.dynamic.as_ref().and_then(|d| d.tls_cluster.clone())
            }
            config_file::ConfigFile::Sinew(_) => None,
        };
        let Some(name) = tls_cluster else {
            return Ok(None);
        };
        let snapshot = proxy.snapshot();
        let cluster = snapshot
            .clusters
            .iter()
            .find(|c| *c.name == *name)
            .ok_or_else(|| format!("the xDS cluster {name:?} did not compile"))?;
        let tls = cluster
            .tls()
            .ok_or_else(|| format!("the xDS cluster {name:?} has no TLS"))?;
        // gRPC is HTTP/2, whatever the cluster offers its upstreams.
        let mut config = (*tls.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        return Ok(Some((Arc::new(config), Some(tls.server_name.clone()))));
    }
    if !args.xds.iter().any(|s| s.starts_with("https://")) {
        return Ok(None);
    }
    let mesh = proxy
        .snapshot()
        .mesh
        .as_ref()
        .map(|(_, identity)| identity.clone());
    let bundle = match (&args.xds_ca, &mesh) {
        (Some(file), _) => sinew_tls::TrustBundle::from_file(&file.display().to_string())
            .map_err(|e| format!("--xds-ca: {e}"))?,
        (None, Some(identity)) => identity.bundle.clone(),
        (None, None) => {
            return Err(
                "an https:// control plane needs roots to check it with: give --xds-ca FILE, or a `mesh` in the config"
                    .into(),
            )
        }
    };
    let verifier = sinew_tls::ServerVerifier::new(bundle, true, sinew_tls::PeerPolicy::default());
    let builder = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match mesh {
        Some(identity) => builder.with_client_cert_resolver(identity.cert.clone()),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some((Arc::new(tls), None)))
}

/// Starts the admin server when the config has `admin` (Envoy's bootstrap `admin`). Its
/// address is read once, at start: a reload does not move it.
async fn start_admin(
    proxy: &Arc<sinew_proxy::Proxy>,
    loaded: &sinew_config::LoadedConfig,
    log: Arc<dyn sinew_proxy::admin::LogControl>,
) -> Result<Option<sinew_proxy::admin::AdminServer>, ExitCode> {
    let Some(admin) = &loaded.config.admin else {
        return Ok(None);
    };
    let address = admin.socket_address().expect("validated");
    let started = sinew_proxy::admin::AdminServer::start_logged(
        proxy.clone(),
        address,
        Some(log),
        &admin.access_log,
    );
    match started.await {
        Ok(server) => {
            println!("admin API listening on http://{}", server.address);
            Ok(Some(server))
        }
        Err(e) => {
            eprintln!("sinew: cannot start the admin server on {address}: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// An Envoy bootstrap's runtime (`layered_runtime`) for the admin API.
struct EnvoyRuntime;

impl sinew_proxy::admin::runtime::RuntimeControl for EnvoyRuntime {
    fn show(&self) -> serde_json::Value {
        sinew_xds::runtime::dump()
    }

    fn modify(&self, pairs: &[(String, String)]) -> Result<(), String> {
        sinew_xds::runtime::modify(pairs)
    }
}

/// Under xDS (a control plane, or files of resources) the config file is not reloaded:
/// it would drop what xDS added. SIGHUP (which would otherwise end the process) is logged
/// and ignored.
async fn ignore_sighup_under_xds() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP ignored: the config comes from xDS (a control plane or files)");
    }
}

/// SIGUSR1 reopens access-log files, for logrotate (see docs/access-log.md).
async fn reopen_access_logs_on_sigusr1() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot listen for SIGUSR1; access logs will not be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        sinew_proxy::filters::access_log::reopen_files();
        tracing::info!("SIGUSR1: access-log files will be reopened before their next line");
    }
}

/// Serves until SIGTERM or Ctrl-C, then drains within `drain_timeout` (or the config's)
/// and exits 0; a second signal while draining exits at once with 1.
async fn serve_until_signalled(
    proxy: &sinew_proxy::Proxy,
    drain_timeout: Option<Duration>,
) -> ExitCode {
    let mut signals = ShutdownSignals::new();
    let first = signals.next().await;
    let deadline = drain_timeout.unwrap_or_else(|| proxy.drain_timeout());
    tracing::info!(
        signal = first,
        ?deadline,
        "draining; a second SIGTERM or Ctrl-C exits at once"
    );
    tokio::select! {
        report = proxy.drain(deadline) => {
            tracing::info!(
                finished = report.finished,
                cut = report.cut,
                took = ?report.took,
                "drained; exiting"
            );
            ExitCode::SUCCESS
        }
        second = signals.next() => {
            tracing::warn!(signal = second, "second signal while draining; exiting now");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream.
struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        ShutdownSignals {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => "SIGTERM",
            _ = recv(&mut self.interrupt) => "SIGINT",
        }
    }
}
