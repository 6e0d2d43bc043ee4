//! Istio-shaped multi-chain listeners folded into one Sinew listener, and the chains that
//! cannot be, refused by field.

use crate::bootstrap::load_str;
use crate::test_fixtures::APP_CLUSTER;

/// A TLS transport socket with one certificate (`name`.pem) and `extra` context fields.
fn tls(name: &str, extra: &str) -> String {
    format!(
        r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          {extra}
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: /certs/{name}.pem }}
              private_key: {{ filename: /certs/{name}-key.pem }}
            validation_context:
              trusted_ca: {{ filename: /certs/ca.pem }}"#
    )
}

const TCP_PROXY: &str = r#"
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound
          cluster: app"#;

/// A listener whose chains are `chains` (each a `filter_chain_match` line and a
/// transport socket, or not), all with the same TCP proxy unless one says otherwise.
fn listener(chains: &[(&str, String)]) -> String {
    let chains: String = chains
        .iter()
        .map(|(matched, socket)| {
            format!("\n    - filter_chain_match: {matched}{socket}{TCP_PROXY}")
        })
        .collect();
    format!(
        r#"
static_resources:
  listeners:
  - name: inbound
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 15006 }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:{chains}
{APP_CLUSTER}"#
    )
}

fn error_of(text: &str) -> String {
    match load_str("envoy.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => d.to_string(),
    }
}

#[test]
fn a_tls_chain_and_a_raw_buffer_chain_make_one_listener_that_also_takes_plaintext() {
    let text = listener(&[
        (
            "{ transport_protocol: tls }",
            tls("svc", "require_client_certificate: true"),
        ),
        ("{ transport_protocol: raw_buffer }", String::new()),
    ]);
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let l = &loaded.loaded.config.listeners[0];
    let tls = l.tls.as_ref().expect("tls");
    assert!(tls.allow_plaintext);
    assert!(tls.require_client_certificate);
    assert_eq!(
        tls.client_ca.as_ref().and_then(|c| c.file()),
        Some("/certs/ca.pem")
    );
    assert_eq!(tls.certificates[0].cert.file(), Some("/certs/svc.pem"));
    assert_eq!(
        tls.certificates[0].server_names, None,
        "one chain: its leaf's names"
    );
    assert!(l.tcp.is_some());
}

#[test]
fn chains_told_apart_by_server_names_choose_certificates_by_sni_default_first() {
    let text = listener(&[
        ("{ server_names: [a.example] }", tls("a", "")),
        ("{ transport_protocol: tls }", tls("default", "")),
        ("{ server_names: ['*.b.example', b.example] }", tls("b", "")),
    ]);
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let tls = loaded.loaded.config.listeners[0].tls.clone().expect("tls");
    assert!(!tls.allow_plaintext);
    let got: Vec<(&str, Option<Vec<String>>)> = tls
        .certificates
        .iter()
        .map(|c| (c.cert.file().unwrap_or_default(), c.server_names.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("/certs/default.pem", Some(vec![])),
            ("/certs/a.pem", Some(vec!["a.example".to_string()])),
            (
                "/certs/b.pem",
                Some(vec!["*.b.example".to_string(), "b.example".to_string()])
            ),
        ]
    );
}

#[test]
fn chains_that_differ_in_filters_alpn_or_pass_tls_through_become_sinew_chains() {
    let text = listener(&[
        ("{ server_names: [a.example] }", tls("a", "")),
        (
            "{ server_names: [b.example] }",
            tls("b", "require_client_certificate: true"),
        ),
        (
            "{ transport_protocol: tls, application_protocols: [h2] }",
            String::new(),
        ),
        ("{ server_names: ['*.pass.example'] }", String::new()),
        ("{ transport_protocol: raw_buffer }", String::new()),
    ]);
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let l = &loaded.loaded.config.listeners[0];
    assert!(
        l.tls.is_none() && l.tcp.is_none() && l.http.is_none(),
        "no default chain"
    );
    let got: Vec<String> = l
        .chains
        .iter()
        .map(|c| {
            format!(
                "{:?} {:?} {:?} tls={} client_cert={} tcp={}",
                c.matcher.server_names,
                c.matcher.transport,
                c.matcher.alpn,
                c.tls.is_some(),
                c.tls.as_ref().is_some_and(|t| t.require_client_certificate),
                c.tcp.is_some()
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "[\"a.example\"] None [] tls=true client_cert=false tcp=true",
            "[\"b.example\"] None [] tls=true client_cert=true tcp=true",
            "[] Some(Tls) [\"h2\"] tls=false client_cert=false tcp=true",
            "[\"*.pass.example\"] None [] tls=false client_cert=false tcp=true",
            "[] Some(Plaintext) [] tls=false client_cert=false tcp=true",
        ]
    );
}

#[test]
fn a_default_filter_chain_is_the_listeners_own_body_beside_its_chains() {
    let text = listener(&[("{ server_names: [a.example] }", tls("a", ""))]).replacen(
        "\n  clusters:",
        &format!(
            "\n    default_filter_chain:{TCP_PROXY}\n    listener_filters_timeout: 2s\n  clusters:"
        ),
        1,
    );
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let l = &loaded.loaded.config.listeners[0];
    assert!(l.tcp.is_some() && l.tls.is_none());
    assert_eq!(l.chains.len(), 1);
    assert_eq!(l.inspect_timeout, std::time::Duration::from_secs(2));
}

#[test]
fn chains_sinew_cannot_tell_apart_or_serve_are_refused_by_field() {
    let at = "static_resources.listeners[0].filter_chains";
    let cases: Vec<(String, String)> = vec![
        (
            listener(&[("{ destination_port: 443 }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.destination_port: is not supported by Sinew: a listener has one port"),
        ),
        (
            listener(&[("{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }] }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.prefix_ranges: is not supported by Sinew"),
        ),
        (
            listener(&[("{}", tls("a", "")), ("{}", String::new())]),
            format!("{at}[1].filter_chain_match: matches connections that filter_chains[0] matches"),
        ),
        (
            listener(&[
                ("{ server_names: [a, b] }", tls("a", "")),
                ("{ server_names: [B] }", tls("b", "")),
            ]),
            format!("{at}[1].filter_chain_match: matches connections that filter_chains[0] matches"),
        ),
        (
            listener(&[("{ transport_protocol: raw_buffer, server_names: [a] }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.transport_protocol: \"raw_buffer\" matches plaintext clients"),
        ),
    ];
    for (text, want) in cases {
        let e = error_of(&text);
        assert!(e.contains(&want), "want {want:?} in:\n{e}");
    }
    // Listener filters other than the TLS inspector.
    let text = listener(&[("{}", tls("a", ""))]).replace(
        "envoy.filters.listener.tls_inspector\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "envoy.filters.listener.http_inspector",
    );
    let e = error_of(&text);
    assert!(e.contains("listener_filters[0]: listener filter \"envoy.filters.listener.http_inspector\" is not supported"), "{e}");
}
