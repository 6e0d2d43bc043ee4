//! Gateway TLS termination, checked with `openssl s_client` as the client: certificates
//! chosen by SNI (exact, wildcard, default), an ECDSA and an RSA certificate for the
//! same names chosen by what the client can verify, the TLS version policy, session
//! resumption with tickets, and OCSP stapling.

use sinew_integration::tls_kit::{CertFiles, TestCa};
use sinew_integration::{shell, TestProxy, Upstream};
use std::net::SocketAddr;

/// A gateway listener with several certificates; `extra` is spliced into its `tls`.
async fn gateway(ca: &TestCa, certs: &[&CertFiles], extra: &str, up: &Upstream) -> TestProxy {
    let _ = ca;
    TestProxy::start(&gateway_yaml(certs, extra, up)).await
}

/// The config of [`gateway`].
fn gateway_yaml(certs: &[&CertFiles], extra: &str, up: &Upstream) -> String {
    let list: String = certs
        .iter()
        .map(|c| {
            format!(
                "        - {{cert: '{}', key: '{}'}}\n",
                c.cert_path(),
                c.key_path()
            )
        })
        .collect();
    format!(
        "
listeners:
  - name: gw
    address: 127.0.0.1:0
    tls:
      certificates:
{list}{extra}
    http:
      virtual_hosts:
        - name: all
          domains: ['*']
          routes:
            - match: {{prefix: /}}
              cluster: app
clusters:
  - name: app
    endpoints: [{{address: {}}}]
",
        up.addr
    )
}

/// Runs `openssl s_client` with `args` against `addr` (off the test's runtime, where
/// the proxy runs) and returns what it printed, stdout and stderr together.
async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let command = format!(
        "(sleep 0.3) | timeout 10 openssl s_client -connect {addr} {} 2>&1",
        args.join(" ")
    );
    shell(command).await
}

/// The subject CN of the certificate the server sent.
fn served_cn(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.trim().replace(" = ", "="))
        .unwrap_or_else(|| format!("no certificate in: {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_exact_then_wildcard_then_the_default() {
    let ca = TestCa::new("gw-sni");
    let up = Upstream::start("app").await;
    let default = ca.issue("default", &["default.example"]);
    let a = ca.issue("a", &["a.example"]);
    let wild = ca.issue("wild", &["*.b.example"]);
    let proxy = gateway(&ca, &[&default, &a, &wild], "", &up).await;
    let addr = proxy.addr("gw").await;
    for (sni, cn) in [
        ("a.example", "CN=a.example"),
        ("x.b.example", "CN=*.b.example"),
        ("b.example", "CN=default.example"),
        ("y.x.b.example", "CN=default.example"),
        ("unknown.example", "CN=default.example"),
    ] {
        let out = s_client(addr, &["-servername", sni, "-CAfile", ca.ca_path()]).await;
        assert_eq!(served_cn(&out), cn, "SNI {sni}");
    }
    let out = s_client(addr, &["-noservername", "-CAfile", ca.ca_path()]).await;
    assert_eq!(served_cn(&out), "CN=default.example", "no SNI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecdsa_and_an_rsa_certificate_for_one_name_are_chosen_by_the_clients_algorithms() {
    let ca = TestCa::new("gw-dual");
    let up = Upstream::start("app").await;
    let ecdsa = ca.issue("ecdsa", &["dual.example"]);
    let rsa = ca.issue_rsa("rsa", &["dual.example"]);
    let proxy = gateway(&ca, &[&ecdsa, &rsa], "", &up).await;
    let addr = proxy.addr("gw").await;
    let sni = ["-servername", "dual.example", "-CAfile", ca.ca_path()];
    let any = s_client(addr, &sni).await;
    assert_eq!(served_cn(&any), "CN=dual.example");
    let rsa_only = s_client(
        addr,
        &[&sni[..], &["-sigalgs", "rsa_pss_rsae_sha256:RSA+SHA256"]].concat(),
    )
    .await;
    assert_eq!(served_cn(&rsa_only), "CN=dual.example (RSA)", "{rsa_only}");
    assert!(
        rsa_only.contains("Verification: OK") || rsa_only.contains("Verify return code: 0"),
        "{rsa_only}"
    );
    let ecdsa_only = s_client(addr, &[&sni[..], &["-sigalgs", "ECDSA+SHA256"]].concat()).await;
    assert_eq!(served_cn(&ecdsa_only), "CN=dual.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_policy_refuses_tls12_when_the_minimum_is_tls13() {
    let ca = TestCa::new("gw-versions");
    let up = Upstream::start("app").await;
    let cert = ca.issue("v", &["v.example"]);
    let proxy = gateway(&ca, &[&cert], "      min_version: TLSv1_3\n", &up).await;
    let addr = proxy.addr("gw").await;
    let ca_args = ["-servername", "v.example", "-CAfile", ca.ca_path()];
    let tls13 = s_client(addr, &[&ca_args[..], &["-tls1_3"]].concat()).await;
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
    let tls12 = s_client(addr, &[&ca_args[..], &["-tls1_2"]].concat()).await;
    assert!(!tls12.contains("subject="), "TLS 1.2 was served: {tls12}");

    let both = gateway(&ca, &[&cert], "      max_version: TLSv1_2\n", &up).await;
    let old = s_client(both.addr("gw").await, &ca_args).await;
    assert!(old.contains("TLSv1.2"), "{old}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_with_tickets_in_tls13_and_tls12_and_not_when_tickets_are_off() {
    let ca = TestCa::new("gw-resume");
    let up = Upstream::start("app").await;
    let cert = ca.issue("r", &["r.example"]);
    let on = gateway(&ca, &[&cert], "", &up).await;
    let off = gateway(
        &ca,
        &[&cert],
        "      session_tickets: false\n      session_cache_size: 0\n",
        &up,
    )
    .await;
    let session = ca.dir.file("session.pem");
    let session = session.to_str().unwrap();
    for (proxy, version, resumes) in [
        (&on, "-tls1_3", true),
        (&on, "-tls1_2", true),
        (&off, "-tls1_3", false),
        (&off, "-tls1_2", false),
    ] {
        let addr = proxy.addr("gw").await;
        let base = ["-servername", "r.example", "-CAfile", ca.ca_path(), version];
        let first = s_client(addr, &[&base[..], &["-sess_out", session]].concat()).await;
        assert!(first.contains("New, TLSv1."), "{first}");
        let second = s_client(addr, &[&base[..], &["-sess_in", session]].concat()).await;
        assert_eq!(
            second.contains("Reused, TLSv1."),
            resumes,
            "{version} resumption (tickets on: {resumes}): {second}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ocsp_response_file_is_stapled_to_the_handshake() {
    let ca = TestCa::new("gw-ocsp");
    let up = Upstream::start("app").await;
    let cert = ca.issue("o", &["o.example"]);
    // The proxy staples the bytes as they are; openssl shows it received a response.
    let staple = ca.dir.file("o.ocsp");
    std::fs::write(&staple, b"\x30\x03\x0a\x01\x06").unwrap(); // OCSPResponse: unauthorized(6)
    let extra = format!(
        "        - {{cert: '{}', key: '{}', ocsp_staple: '{}'}}\n",
        cert.cert_path(),
        cert.key_path(),
        staple.display()
    );
    let proxy = gateway(&ca, &[], &extra, &up).await;
    let out = s_client(
        proxy.addr("gw").await,
        &[
            "-servername",
            "o.example",
            "-CAfile",
            ca.ca_path(),
            "-status",
        ],
    )
    .await;
    assert!(!out.contains("OCSP response: no response sent"), "{out}");
    assert!(
        out.contains("OCSP Response Status: unauthorized (0x6)")
            || out.contains("unauthorized (6)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_reload_until_the_listeners_tls_changes() {
    let ca = TestCa::new("gw-reload");
    let up = Upstream::start("app").await;
    let cert = ca.issue("r", &["r.example"]);
    let yaml = gateway_yaml(&[&cert], "", &up);
    let proxy = TestProxy::start(&yaml).await;
    let session = ca.dir.file("session.pem");
    let session = session.to_str().unwrap();
    let base = [
        "-servername",
        "r.example",
        "-CAfile",
        ca.ca_path(),
        "-tls1_3",
    ];
    let save = [&base[..], &["-sess_out", session]].concat();
    let resume = [&base[..], &["-sess_in", session]].concat();

    let first = s_client(proxy.addr("gw").await, &save).await;
    assert!(first.contains("New, TLSv1.3"), "{first}");
    // A reload that changes something else (a cluster added) keeps the ticket keys.
    let other_change =
        format!("{yaml}  - name: spare\n    endpoints: [{{address: 127.0.0.1:9}}]\n");
    proxy.reload(&other_change).await.unwrap();
    let after = s_client(proxy.addr("gw").await, &resume).await;
    assert!(
        after.contains("Reused, TLSv1.3"),
        "after an unrelated reload: {after}"
    );

    // A change of the listener's own TLS starts afresh: no session outlives its policy.
    let again = s_client(proxy.addr("gw").await, &save).await;
    assert!(again.contains("New, TLSv1.3"), "{again}");
    let tls_change = gateway_yaml(&[&cert], "      alpn: [http/1.1]\n", &up);
    proxy.reload(&tls_change).await.unwrap();
    let changed = s_client(proxy.addr("gw").await, &resume).await;
    assert!(
        changed.contains("New, TLSv1.3"),
        "after the listener's TLS changed: {changed}"
    );
}
