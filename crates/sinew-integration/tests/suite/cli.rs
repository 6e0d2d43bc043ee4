//! The `sinew` command line: `validate` and `proxy` on good and bad files, with every error
//! as `file:line:col: field.path: message`; `--help` of each command; `--print-config`. And
//! an IPv6 listener.
//!
//! Then what a new user meets following the docs: every example validates (and nothing is
//! started or contacted doing so), `validate` tells control-plane files from proxy configs,
//! flags that cannot work are refused at start-up with what to write instead, messages
//! say what to do, and logs into a pipe carry no colour codes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{
    free_port, sinew_binary, ChildGuard, OneRoute, TestClient, TestProxy, Upstream,
};

/// Runs `sinew args...` to completion (its output through files, so no pipe can fill up),
/// killing it if it runs longer than `limit`.
fn sinew(args: &[&str], limit: Duration) -> Output {
    sinew_in(Path::new("."), args, limit)
}

/// [`sinew`] run from `cwd` (the examples name their files relative to the repository).
fn sinew_in(cwd: &Path, args: &[&str], limit: Duration) -> Output {
    let dir = TempDir::new("cli-run");
    let (out_path, err_path) = (dir.file("stdout"), dir.file("stderr"));
    let child = Command::new(sinew_binary())
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn sinew");
    let mut guard = ChildGuard(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = guard.exited() {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "`sinew {}` still running after {limit:?}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD: &str = "
listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {prefix: /}
              cluster: svc
clusters:
  - name: svc
    endpoints: [{address: 127.0.0.1:9}]
";

/// Three structural errors, on lines 3, 10 and 14.
const THREE_ERRORS: &str = "listeners:
  - name: web
    address: 127.0.0.1:99999
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {prefix: /}
              cluster: missing
clusters:
  - name: svc
    endpoints:
      - address: not-an-address
";

/// (line, column, field path, start of message) for [`THREE_ERRORS`].
const THREE_EXPECTED: [(u32, u32, &str, &str); 3] = [
    (
        3,
        5,
        "listeners[0].address",
        "\"127.0.0.1:99999\" is not ip:port",
    ),
    (
        10,
        15,
        "listeners[0].http.virtual_hosts[0].routes[0].cluster",
        "no cluster named \"missing\"",
    ),
    (
        14,
        9,
        "clusters[0].endpoints[0].address",
        "\"not-an-address\" is not ip:port",
    ),
];

/// Three regexes that do not compile (found when the data plane compiles the config).
const THREE_REGEX_ERRORS: &str = "listeners:
  - name: web
    address: 127.0.0.1:0
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {path_regex: '/(a'}
              cluster: svc
            - match:
                prefix: /
                headers:
                  - name: x-v
                    regex: '[z'
              cluster: svc
              rewrite:
                regex: {pattern: '(', substitution: /}
clusters:
  - name: svc
    endpoints: [{address: 127.0.0.1:9}]
";

const THREE_REGEX_EXPECTED: [(u32, u32, &str, &str); 3] = [
    (
        9,
        23,
        "listeners[0].http.virtual_hosts[0].routes[0].match.path_regex",
        "regex does not compile",
    ),
    (
        15,
        21,
        "listeners[0].http.virtual_hosts[0].routes[1].match.headers[0].regex",
        "regex does not compile",
    ),
    (
        18,
        25,
        "listeners[0].http.virtual_hosts[0].routes[1].rewrite.regex.pattern",
        "regex does not compile",
    ),
];

/// Checks that `stderr` is exactly one `file:line:col: path: message` line per expected error.
fn assert_diagnostics(stderr: &str, file: &str, expected: &[(u32, u32, &str, &str)]) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        expected.len(),
        "want one line per error, got:\n{stderr}"
    );
    for (line, (l, c, path, message)) in lines.iter().zip(expected) {
        let prefix = format!("{file}:{l}:{c}: {path}: {message}");
        assert!(
            line.starts_with(&prefix),
            "want a line starting with\n  {prefix}\ngot\n  {line}\nin:\n{stderr}"
        );
    }
}

#[test]
fn validate_accepts_a_good_file() {
    let dir = TempDir::new("cli-good");
    let file = dir.file("good.yaml");
    std::fs::write(&file, GOOD).unwrap();
    let out = sinew(
        &["validate", file.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).trim().is_empty(), "{}", text(&out.stderr));
}

/// The benchmark harness's Sinew config (bench/configs/, written by bench/harness.py) is one
/// a user could run: it passes the same validation.
#[test]
fn validate_accepts_the_benchmark_configs() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for name in ["sinew.yaml", "sinew-resilience.yaml"] {
        let yaml = std::fs::read_to_string(repo.join("bench/configs").join(name)).unwrap();
        // Its certificate paths are relative to the repository root; this test runs elsewhere.
        // The TLS scenarios' certificates are made by the harness when it runs
        // (bench/.run/certs/); the example certificates stand in for them here.
        let certs = repo.join("examples/certs/");
        let yaml = yaml
            .replace("bench/.run/certs/ecdsa.", "examples/certs/server.")
            .replace("bench/.run/certs/rsa.", "examples/certs/server.")
            .replace("bench/.run/certs/ca.crt", "examples/certs/ca.crt")
            .replace("examples/certs/", &certs.to_string_lossy());
        let dir = TempDir::new("cli-bench");
        let file = dir.file(name);
        std::fs::write(&file, yaml).unwrap();
        let out = sinew(
            &["validate", file.to_str().unwrap()],
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn validate_prints_every_error_with_file_line_column_and_field_path() {
    let dir = TempDir::new("cli-bad");
    let file = dir.file("bad.yaml");
    std::fs::write(&file, THREE_ERRORS).unwrap();
    let path = file.to_str().unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    assert_diagnostics(&text(&out.stderr), path, &THREE_EXPECTED);
}

#[test]
fn validate_prints_regex_errors_one_line_each() {
    let dir = TempDir::new("cli-regex");
    let file = dir.file("regex.yaml");
    std::fs::write(&file, THREE_REGEX_ERRORS).unwrap();
    let path = file.to_str().unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_diagnostics(&stderr, path, &THREE_REGEX_EXPECTED);
    assert!(stderr.contains("/(a"), "the pattern is quoted: {stderr}");
}

#[test]
fn validate_reports_structural_and_regex_errors_together() {
    let dir = TempDir::new("cli-mixed");
    let file = dir.file("mixed.yaml");
    std::fs::write(
        &file,
        THREE_REGEX_ERRORS.replace(
            "    endpoints: [{address: 127.0.0.1:9}]",
            "    endpoints: [{address: nowhere}]",
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        4,
        "3 regexes and 1 address:\n{stderr}"
    );
}

#[test]
fn validate_of_a_missing_file_fails_clearly() {
    let dir = TempDir::new("cli-missing");
    let file = dir.file("absent.yaml");
    let out = sinew(
        &["validate", file.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("absent.yaml"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn proxy_refuses_to_start_on_a_bad_file_with_the_same_diagnostics() {
    let dir = TempDir::new("cli-proxy-bad");
    let file = dir.file("bad.yaml");
    std::fs::write(&file, THREE_ERRORS).unwrap();
    let path = file.to_str().unwrap();
    let out = sinew(&["proxy", "-c", path], Duration::from_secs(10));
    assert!(!out.status.success(), "sinew proxy started on a bad file");
    assert_diagnostics(&text(&out.stderr), path, &THREE_EXPECTED);

    std::fs::write(&file, THREE_REGEX_ERRORS).unwrap();
    let out = sinew(&["proxy", "--config", path], Duration::from_secs(10));
    assert!(!out.status.success(), "sinew proxy started on a bad file");
    assert_diagnostics(&text(&out.stderr), path, &THREE_REGEX_EXPECTED);
}

#[test]
fn help_of_every_command_exits_0_and_names_its_options() {
    for (args, must_mention) in [
        (
            &["--help"][..],
            &["proxy", "validate", "--print-config", "--workers", "--help"][..],
        ),
        (&["proxy", "--help"], &["--config", "-c", "SIGHUP"]),
        (&["validate", "--help"], &["<FILE>", "line"]),
        (&["help", "proxy"], &["--config"]),
    ] {
        let out = sinew(args, Duration::from_secs(10));
        assert!(
            out.status.success(),
            "sinew {args:?}: {}",
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        for word in must_mention {
            assert!(
                stdout.contains(word),
                "`sinew {}` does not mention {word}:\n{stdout}",
                args.join(" ")
            );
        }
    }
    // An unknown option is an error, not a silent quickstart.
    let out = sinew(&["--no-such-option"], Duration::from_secs(10));
    assert!(!out.status.success());
}

#[test]
fn print_config_prints_yaml_that_validate_accepts() {
    let out = sinew(&["--print-config"], Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(yaml.contains("listeners:"), "{yaml}");
    let dir = TempDir::new("cli-print");
    let file = dir.file("quickstart.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = sinew(
        &["validate", file.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "the printed config does not validate:\n{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn ipv6_listener_and_endpoint_proxy_over_loopback() {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!("IPv6 loopback (::1) is unavailable here ({e}); this test needs it");
    }
    let v4 = Upstream::start("v4").await;
    let v6 = Upstream::start_on("v6", "[::1]:0".parse().unwrap()).await;
    let proxy = TestProxy::start(&format!(
        "
listeners:
  - name: web6
    address: '[::1]:0'
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - {{match: {{prefix: /six}}, cluster: six}}
            - {{match: {{prefix: /}}, cluster: four}}
clusters:
  - name: four
    endpoints: [{{address: {}}}]
  - name: six
    endpoints: [{{address: '{}'}}]
",
        v4.addr, v6.addr
    ))
    .await;
    let addr = proxy.addr("web6").await;
    assert!(addr.is_ipv6(), "{addr}");
    for client in [TestClient::http1(), TestClient::http2()] {
        let r = client.get(addr, "/", &[("x-test-echo", "1")]).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("x-forwarded-for: ::1"), "{}", r.text());
        let r = client.get(addr, "/six", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "v6\n");
    }
    // IPv6-only: the port is not also served on IPv4.
    let v4_side = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    if let Ok(Ok(_)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(v4_side),
    )
    .await
    {
        // Something else may own the IPv4 port; only fail if it is the proxy answering.
        let r = TestClient::http1().try_get(v4_side, "/six", &[]).await;
        assert!(
            !matches!(&r, Ok(r) if r.text() == "v6\n"),
            "the [::1] listener also answers on 127.0.0.1"
        );
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every example in examples/ and examples/envoy/ passes `sinew validate`, run from the
/// repository as examples/README.md says. tracing.yaml made it panic ("there is no reactor
/// running"): compiling its `tracing` started an OTLP exporter.
#[test]
fn validate_accepts_every_example_and_starts_nothing() {
    let repo = repository();
    let mut files = Vec::new();
    for dir in ["examples", "examples/envoy"] {
        for entry in std::fs::read_dir(repo.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            ) {
                files.push(path.strip_prefix(&repo).unwrap().to_path_buf());
            }
        }
    }
    assert!(files.len() > 20, "examples found: {files:?}");
    assert!(files.iter().any(|f| f.ends_with("tracing.yaml")));
    for file in &files {
        let file = file.to_str().unwrap();
        let out = sinew_in(&repo, &["validate", file], Duration::from_secs(10));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "sinew validate {file}:\n{stderr}");
        assert!(text(&out.stdout).contains(": ok"), "{file}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
}

/// `--xds` without a scheme is refused at once with what to write, and `https://` with
/// nothing to check the control plane's certificate against is refused with what to
/// give, instead of "xDS connect failed" forever.
#[test]
fn proxy_refuses_an_xds_address_it_cannot_connect_to() {
    let out = sinew(
        &["proxy", "--xds", "127.0.0.1:18000"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has no scheme; write http://127.0.0.1:18000"),
        "{stderr}"
    );

    let out = sinew(
        &["proxy", "--xds", "https://cp.example:18000"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("needs roots to check it with: give --xds-ca FILE"),
        "{stderr}"
    );

    let out = sinew(
        &["proxy", "--xds", "http://127.0.0.1:18000/v3"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // The same for a bootstrap's Google gRPC target, found by `validate`.
    let dir = TempDir::new("cli-xds-https");
    let file = dir.file("ads.yaml");
    std::fs::write(
        &file,
        "dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services:
      - google_grpc: {target_uri: 'https://cp.example:18000', stat_prefix: ads}
  lds_config: {ads: {}}
",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{path}:5:23: dynamic_resources.ads_config.grpc_services[0].google_grpc.target_uri: "
        )) && stderr.contains("does not read a Google gRPC service's channel credentials"),
        "{stderr}"
    );
}

/// `sinew proxy` alone names both ways to give it a config.
#[test]
fn proxy_without_a_config_names_config_and_xds() {
    let out = sinew(&["proxy"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("-c FILE") && stderr.contains("--xds http://HOST:PORT"),
        "{stderr}"
    );
}

/// `sinew control --help` names the four registries and offers no flag its command
/// ignores; `--drain-timeout` belongs to the proxy (drain.rs tests that it works there).
#[test]
fn control_help_is_true_and_drain_timeout_is_the_proxys() {
    let out = sinew(&["control", "--help"], Duration::from_secs(10));
    assert!(out.status.success());
    let help = text(&out.stdout);
    for registry in ["directory", "etcd", "ZooKeeper", "Kubernetes"] {
        assert!(help.contains(registry), "no {registry} in:\n{help}");
    }
    assert!(!help.contains("--drain-timeout"), "{help}");
    let out = sinew(
        &["control", "--drain-timeout", "5s", "-c", "x.yaml"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    let out = sinew(&["proxy", "--help"], Duration::from_secs(10));
    assert!(text(&out.stdout).contains("--drain-timeout"));
}

const CONTROL_CONFIG: &str = "xds_address: 127.0.0.1:18000
admin_address: 127.0.0.1:18001
registries:
  - directory: services
  - etcd:
      endpoints: [http://127.0.0.1:2379]
";

/// `validate` recognises a `sinew control` config and a directory registry's file, and
/// checks each with its own checker; errors carry file:line:col like the proxy's.
#[test]
fn validate_checks_control_configs_and_registry_files() {
    let dir = TempDir::new("cli-control");
    let file = dir.file("control.yaml");
    let path = file.to_str().unwrap();
    std::fs::write(&file, CONTROL_CONFIG).unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok (a `sinew control` config)"),
        "{}",
        text(&out.stdout)
    );

    std::fs::write(
        &file,
        CONTROL_CONFIG.replace("[http://127.0.0.1:2379]", "[]")
            + "  - zookeeper: {servers: []}\n  - consul: {}\n",
    )
    .unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    // A type error stops parsing: the unknown registry is reported first, alone.
    assert_diagnostics(
        &text(&out.stderr),
        path,
        &[(8, 5, "registries[3]", "unknown variant `consul`")],
    );
    std::fs::write(
        &file,
        CONTROL_CONFIG.replace("[http://127.0.0.1:2379]", "[]") + "  - zookeeper: {servers: []}\n",
    )
    .unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert_diagnostics(
        &text(&out.stderr),
        path,
        &[
            (
                6,
                7,
                "registries[1].etcd.endpoints",
                "needs at least one endpoint",
            ),
            (
                7,
                17,
                "registries[2].zookeeper.servers",
                "needs at least one server",
            ),
        ],
    );
    // `sinew proxy` given it says what it is.
    let out = sinew(&["proxy", "-c", path], Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("this is a `sinew control` config: run it with `sinew control -c FILE`"),
        "{}",
        text(&out.stderr)
    );
    // `sinew control` says the same.
    let out = sinew(&["control", "-c", path], Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with(&format!("{path}:6:7: registries[1].etcd.endpoints")),
        "{}",
        text(&out.stderr)
    );

    let file = dir.file("reviews.yaml");
    let path = file.to_str().unwrap();
    std::fs::write(
        &file,
        "kind: Service
name: reviews
endpoints: [{address: 127.0.0.1:9001}]
---
kind: Listener
name: edge
address: 127.0.0.1:8080
routes: [{prefix: /, service: reviews}]
",
    )
    .unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok (a directory registry file, 2 resources)"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(
        &file,
        "kind: Service
name: reviews
lb: fastest
---
kind: Listener
name: edge
address: 127.0.0.1:8080
routs: [{prefix: /, service: reviews}]
",
    )
    .unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{path}:8:1: ")) && stderr.contains("routs"),
        "{stderr}"
    );
    std::fs::write(&file, "kind: Service\nname: reviews\nlb: fastest\n").unwrap();
    let out = sinew(&["validate", path], Duration::from_secs(10));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{path}:2:1: service \"reviews\": lb \"fastest\" is not a policy"
        )),
        "{stderr}"
    );
}

/// A bootstrap with the given listener filters' `http_filters` and route cluster.
fn bootstrap(access_log_type: &str, lb_policy: &str, route_cluster: &str) -> String {
    format!(
        "static_resources:
  listeners:
  - name: web
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          access_log:
          - name: log
            typed_config:
              '@type': type.googleapis.com/{access_log_type}
              path: /dev/stdout
          route_config:
            virtual_hosts:
            - name: all
              domains: ['*']
              routes:
              - match: {{prefix: /}}
                route: {{cluster: {route_cluster}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: svc
    type: STATIC
    lb_policy: {lb_policy}
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 9}}}}}}
"
    )
}

/// Messages about Envoy files say what is wrong in Envoy's words: a known type Sinew does
/// not support is named as such (not "not found", like a typo), an unsupported policy by
/// its enum name, a route to a missing cluster as an error, not as warming.
#[test]
fn validate_explains_envoy_files_in_envoys_words() {
    let dir = TempDir::new("cli-envoy-words");
    let file = dir.file("envoy.yaml");
    let path = file.to_str().unwrap();
    let validate = |yaml: String| {
        std::fs::write(&file, yaml).unwrap();
        let out = sinew(&["validate", path], Duration::from_secs(10));
        assert!(!out.status.success(), "{}", text(&out.stdout));
        text(&out.stderr)
    };
    let file_log = "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig";
    let e = validate(bootstrap(file_log, "ROUND_ROBIN", "svc"));
    assert!(
        e.starts_with(&format!("{path}:14:"))
            && e.contains(&format!("Envoy type {file_log} is not supported by Sinew")),
        "{e}"
    );
    let e = validate(bootstrap(
        "envoy.extensions.access_loggers.file.v3.FileAccesLog",
        "ROUND_ROBIN",
        "svc",
    ));
    assert!(e.contains("is not an Envoy v3 type"), "{e}");
    assert!(e.contains("spelling"), "{e}");

    let stdout_log =
        "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig";
    let e = validate(bootstrap(stdout_log, "CLUSTER_PROVIDED", "svc"));
    assert!(
        e.contains(&format!("Envoy type {stdout_log} is not supported")),
        "{e}"
    );

    // Without the access log, the next problem shows.
    let no_log = |yaml: String| {
        let start = yaml.find("          access_log:").unwrap();
        let end = yaml.find("          route_config:").unwrap();
        format!("{}{}", &yaml[..start], &yaml[end..])
    };
    let e = validate(no_log(bootstrap(file_log, "CLUSTER_PROVIDED", "svc")));
    assert!(
        e.contains("lb_policy: CLUSTER_PROVIDED is not supported by Sinew; use ROUND_ROBIN"),
        "{e}"
    );
    let e = validate(no_log(bootstrap(file_log, "ROUND_ROBIN", "nowhere")));
    assert!(
        e.contains(
            "routes to cluster \"nowhere\", which static_resources.clusters does not define"
        ),
        "{e}"
    );
    assert!(!e.contains("waits for"), "{e}");
    assert!(
        e.trim_end()
            .ends_with(": 1 problem to solve before Sinew can run this Envoy bootstrap"),
        "{e}"
    );
    // The access log and the cluster's policy, both reported in one pass and counted.
    let e = validate(bootstrap(file_log, "CLUSTER_PROVIDED", "svc"));
    assert!(
        e.contains(&format!("Envoy type {file_log} is not supported")),
        "{e}"
    );
    assert!(
        e.contains("lb_policy: CLUSTER_PROVIDED is not supported"),
        "{e}"
    );
    assert!(
        e.trim_end()
            .ends_with(": 2 problems to solve before Sinew can run this Envoy bootstrap"),
        "{e}"
    );
}

/// A running `sinew proxy` whose stderr is a pipe read into memory.
struct PipedProxy {
    guard: ChildGuard,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    admin: std::net::SocketAddr,
}

impl PipedProxy {
    async fn start(dir: &TempDir) -> PipedProxy {
        let admin_port = free_port();
        let file = dir.file("sinew.yaml");
        std::fs::write(
            &file,
            format!(
                "{}admin: {{address: '127.0.0.1:{admin_port}'}}\n",
                OneRoute::to(&["127.0.0.1:9".parse().unwrap()]).yaml()
            ),
        )
        .unwrap();
        let mut child = Command::new(sinew_binary())
            .args(["proxy", "-c", file.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TestClient::http1()
            .try_get(admin, "/ready", &[])
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the admin API never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PipedProxy {
            guard: ChildGuard(child),
            stderr,
            admin,
        }
    }

    fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().unwrap().clone()
    }
}

/// Logs into a pipe are plain text: no ANSI escape codes (they were coloured always).
#[tokio::test]
async fn logs_into_a_pipe_have_no_colour_codes() {
    let dir = TempDir::new("cli-colour");
    let proxy = PipedProxy::start(&dir).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&proxy.stderr()).contains("admin server listening") {
        assert!(Instant::now() < deadline, "no log line at info");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = proxy.stderr();
    assert!(
        !logged.contains(&0x1b),
        "ESC in logs written to a pipe:\n{}",
        String::from_utf8_lossy(&logged)
    );
    drop(proxy.guard);
}

/// `POST /logging?no_such_module=debug` is refused with 400 naming the module, where it
/// used to be taken and change nothing; a real module, or one inside it, is taken.
#[tokio::test]
async fn logging_refuses_an_unknown_module() {
    let dir = TempDir::new("cli-logging");
    let proxy = PipedProxy::start(&dir).await;
    let admin = proxy.admin;
    let post = move |path: &'static str| async move {
        TestClient::http1()
            .send(http::Method::POST, admin, path, &[], bytes::Bytes::new())
            .await
    };
    let r = post("/logging?no_such_module=debug").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().starts_with("no_such_module: no such module") && r.text().contains("sinew_proxy"),
        "{}",
        r.text()
    );
    let r = post("/logging?sinew_proxy=loud").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let current = TestClient::http1().get(proxy.admin, "/logging", &[]).await;
    assert_eq!(
        current.text(),
        "info\n",
        "the refused calls changed nothing"
    );
    let r = post("/logging?sinew_proxy::protocol=debug&h2=warn").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "info,sinew_proxy::protocol=debug,h2=warn\n");
}

/// A YAML syntax error is reported where it is, for a bootstrap and for Sinew's own YAML,
/// and `validate` returns: a list item whose later keys sit deeper than its first key once
/// made it hang.
#[test]
fn validate_reports_a_yaml_syntax_error_at_its_line_and_returns() {
    let dir = TempDir::new("cli-bad-yaml");
    let cases = [
        (
            "bootstrap.yaml",
            "static_resources:\n  listeners:\n  - name: default\n      sds_config:\n        path: /x\n",
        ),
        (
            "sinew.yaml",
            "listeners:\n  - name: a\n      address: 127.0.0.1:0\n",
        ),
    ];
    for (name, body) in cases {
        let file = dir.file(name);
        std::fs::write(&file, body).unwrap();
        let path = file.to_str().unwrap();
        let out = sinew(&["validate", path], Duration::from_secs(10));
        assert!(!out.status.success(), "{name} validated");
        let stderr = text(&out.stderr);
        let line = stderr.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!("{path}:"))
                && line.contains("not valid YAML: mapping values are not allowed"),
            "{name}: {stderr}"
        );
        let at: Vec<&str> = line[path.len() + 1..].splitn(3, ':').collect();
        assert_eq!(
            at[0],
            if name == "bootstrap.yaml" { "4" } else { "3" },
            "{stderr}"
        );
    }
}
