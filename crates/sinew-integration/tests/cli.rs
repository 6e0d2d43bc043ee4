//! The `sinew` command line: `validate` and `proxy` on good and bad files, with every error
//! as `file:line:col: field.path: message`; `--help` of each command; `--print-config`. And
//! an IPv6 listener.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sinew_integration::tls_kit::TempDir;
use sinew_integration::{sinew_binary, ChildGuard, TestClient, TestProxy, Upstream};

/// Runs `sinew args...` to completion (its output through files, so no pipe can fill up),
/// killing it if it runs longer than `limit`.
fn sinew(args: &[&str], limit: Duration) -> Output {
    let dir = TempDir::new("cli-run");
    let (out_path, err_path) = (dir.file("stdout"), dir.file("stderr"));
    let child = Command::new(sinew_binary())
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
        let certs = repo.join("examples/certs/");
        let yaml = yaml.replace("examples/certs/", &certs.to_string_lossy());
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
