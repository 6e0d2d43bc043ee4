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
fn chains_that_cannot_fold_into_one_listener_are_refused_by_field() {
    let at = "static_resources.listeners[0].filter_chains";
    let other_cluster = tls("b", "").to_string();
    let cases: Vec<(String, String)> = vec![
        (
            listener(&[
                ("{ server_names: [a] }", tls("a", "")),
                ("{ server_names: [b] }", tls("b", "require_client_certificate: true")),
            ]),
            format!("{at}[1].transport_socket: TLS settings other than the certificates differ"),
        ),
        (
            listener(&[("{ destination_port: 443 }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.destination_port: is not supported by Sinew: a listener has one port"),
        ),
        (
            listener(&[("{ application_protocols: [istio] }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.application_protocols"),
        ),
        (
            listener(&[("{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }] }", tls("a", ""))]),
            format!("{at}[0].filter_chain_match.prefix_ranges: is not supported by Sinew"),
        ),
        (
            listener(&[("{}", tls("a", "")), ("{}", String::new())]),
            format!("{at}[1].filter_chain_match.transport_protocol: set \"raw_buffer\" here"),
        ),
        (
            listener(&[("{ transport_protocol: tls }", String::new())]),
            format!("{at}[0].filter_chain_match.transport_protocol: \"tls\" on a chain without a TLS transport socket"),
        ),
        (
            listener(&[
                ("{ server_names: [a, b] }", tls("a", "")),
                ("{ server_names: [B] }", other_cluster),
            ]),
            format!("{at}[1].filter_chain_match.server_names: \"B\" is also in filter_chains[0]'s"),
        ),
    ];
    for (text, want) in cases {
        let e = error_of(&text);
        assert!(e.contains(&want), "want {want:?} in:\n{e}");
    }
    // Different filters per chain: one Sinew listener runs one set.
    let text = listener(&[
        ("{ transport_protocol: tls }", tls("a", "")),
        ("{ transport_protocol: raw_buffer }", String::new()),
    ]);
    let different = text.rsplitn(2, "cluster: app").collect::<Vec<_>>();
    let text = format!("{}cluster: other{}", different[1], different[0]);
    let text = text.replacen("  clusters:\n", "  clusters:\n  - { name: other, type: STATIC, load_assignment: { cluster_name: other, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8081 } } } }] }] } }\n", 1);
    let e = error_of(&text);
    assert!(
        e.contains(&format!("{at}[1].filters: differ from filter_chains[0]'s")),
        "{e}"
    );
    // Listener filters other than the TLS inspector.
    let text = listener(&[("{}", tls("a", ""))]).replace(
        "envoy.filters.listener.tls_inspector\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        "envoy.filters.listener.http_inspector",
    );
    let e = error_of(&text);
    assert!(e.contains("listener_filters[0]: listener filter \"envoy.filters.listener.http_inspector\" is not supported"), "{e}");
}
