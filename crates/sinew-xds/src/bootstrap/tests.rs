//! Envoy bootstraps as Envoy's documentation writes them, mapped to Sinew's model; and
//! the errors bad ones get.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/envoy")
        .join(name)
}

fn error_of(text: &str) -> String {
    match load_str("envoy.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => d.to_string(),
    }
}

/// The Sinew config `front-proxy.yaml` means, written by hand in Sinew's own YAML.
const FRONT_PROXY_IN_SINEW: &str = r#"
admin:
  address: 127.0.0.1:19901
listeners:
  - name: listener_0
    address: 127.0.0.1:18100
    http:
      # Envoy adds no Via header unless asked to.
      via: ""
      # No local_ratelimit filter in the chain: Envoy applies no local limit.
      local_rate_limit_levels: disabled
      # Envoy's default: X-Forwarded-For passes untouched.
      use_remote_address: false
      # No cors filter in the chain: Envoy applies no CORS policy.
      cors: false
      # No upgrade_configs: Envoy answers upgrades 403.
      upgrades: {}
      virtual_hosts:
        - name: backend
          domains: ["*"]
          routes:
            - match: { prefix: /service/2 }
              cluster: service2
              timeout: 5s
            - match: { prefix: / }
              weighted_clusters:
                - { cluster: service1, weight: 80 }
                - { cluster: service2, weight: 20 }
              timeout: 5s
              retry:
                retry_on: [connect-failure, 5xx]
                num_retries: 2
                per_try_timeout: 1s
clusters:
  - name: service1
    connect_timeout: 250ms
    lb: round_robin
    endpoints:
      - address: 127.0.0.1:19001
      - address: 127.0.0.1:19003
  - name: service2
    type: dns
    connect_timeout: 250ms
    lb: least_request
    endpoints:
      - address: localhost:19002
"#;

#[test]
fn front_proxy_example_maps_to_the_same_config_as_its_sinew_equivalent() {
    let envoy = load_file(&example("front-proxy.yaml")).unwrap_or_else(|d| panic!("{d}"));
    let sinew = sinew_config::load_str("sinew.yaml", FRONT_PROXY_IN_SINEW)
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        format!("{:#?}", envoy.loaded.config),
        format!("{:#?}", sinew.config)
    );
    assert!(envoy.dynamic.is_none());
    assert!(envoy.node.is_none());
}

#[test]
fn stream_idle_timeouts_map_from_the_connection_manager_and_the_route() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen(
            "stat_prefix: ingress_http",
            "stat_prefix: ingress_http\n          stream_idle_timeout: 7s",
            1,
        )
        .replacen(
            "route: { cluster: service2, timeout: 5s }",
            "route: { cluster: service2, timeout: 5s, idle_timeout: 3s }",
            1,
        );
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let http = b.loaded.config.listeners[0].http.as_ref().unwrap();
    assert_eq!(http.stream_idle_timeout, Duration::from_secs(7));
    let routes = &http.virtual_hosts.as_ref().unwrap()[0].routes;
    assert_eq!(routes[0].idle_timeout, Some(Duration::from_secs(3)));
    assert_eq!(routes[1].idle_timeout, None);
}

#[test]
fn json_bootstraps_are_read_like_yaml() {
    let text = std::fs::read_to_string(example("tcp-proxy.json")).unwrap();
    assert!(is_envoy_bootstrap(&text));
    let b = load_str("tcp-proxy.json", &text).unwrap_or_else(|d| panic!("{d}"));
    let listener = &b.loaded.config.listeners[0];
    assert_eq!(listener.address, "127.0.0.1:18101");
    assert!(listener.tcp.is_some() && listener.http.is_none());
    assert_eq!(b.loaded.config.clusters[0].name, "service3");
    assert_eq!(
        b.loaded.config.clusters[0].endpoints[0].address,
        "127.0.0.1:19003"
    );
}

#[test]
fn dynamic_resources_over_ads_name_the_static_xds_cluster_as_the_server() {
    let b = load_file(&example("ads.yaml")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        b.dynamic,
        Some(DynamicSource {
            servers: vec!["http://127.0.0.1:18000".into()],
            delta: false,
            aggregated: true,
            tls_cluster: None,
        })
    );
    let node = b.node.unwrap();
    assert_eq!(
        (node.id.as_str(), node.cluster.as_str()),
        ("edge-1", "edge")
    );
    assert_eq!(b.loaded.config.clusters[0].name, "xds_cluster");
    assert!(b.loaded.config.listeners.is_empty());
}

#[test]
fn per_type_delta_sources_and_google_grpc_targets_are_read() {
    let text = r#"
dynamic_resources:
  lds_config:
    api_config_source:
      api_type: DELTA_GRPC
      transport_api_version: V3
      grpc_services: [{google_grpc: {target_uri: "127.0.0.1:18000", stat_prefix: xds}}]
  cds_config:
    api_config_source:
      api_type: DELTA_GRPC
      transport_api_version: V3
      grpc_services: [{google_grpc: {target_uri: "127.0.0.1:18000", stat_prefix: xds}}]
"#;
    let b = load_str("envoy.yaml", text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        b.dynamic,
        Some(DynamicSource {
            servers: vec!["http://127.0.0.1:18000".into()],
            delta: true,
            aggregated: false,
            tls_cluster: None,
        })
    );
}

#[test]
fn sinew_configs_are_not_taken_for_bootstraps() {
    let basic = std::fs::read_to_string(example("../basic-proxy.yaml")).expect("the basic example");
    assert!(!is_envoy_bootstrap(&basic));
    assert!(!is_envoy_bootstrap("admin: {address: 127.0.0.1:9901}"));
    assert!(!is_envoy_bootstrap("not: [valid"));
}

#[test]
fn an_unknown_field_inside_typed_config_is_an_error_naming_it_at_the_typed_config() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace("codec_type: AUTO", "codec_typo: AUTO");
    // The unknown field is named, at its own line, even inside an `Any` (which the
    // parser reads whole before its type is known).
    let line = text.lines().position(|l| l.contains("codec_typo")).unwrap() + 1;
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "envoy.yaml:{line}:11: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.codec_typo: is not a field of this Envoy message"
        )),
        "{e}"
    );
}

#[test]
fn a_wrongly_typed_value_is_an_error_at_its_field() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace("port_value: 19001", "port_value: nineteen");
    let line = text.lines().position(|l| l.contains("nineteen")).unwrap() + 1;
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!("envoy.yaml:{line}:")),
        "wrong line: {e}"
    );
    assert!(
        e.contains("static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value"),
        "{e}"
    );
}

#[test]
fn an_unknown_extension_type_is_an_error() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace(
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.filters.http.no_such_filter.v3.Filter",
        );
    let e = error_of(&text);
    assert!(e.contains("no_such_filter"), "{e}");
    assert!(e.contains("static_resources.listeners[0]"), "{e}");
}

#[test]
fn an_unsupported_cluster_field_is_named_at_its_position_in_the_file() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen("lb_policy: ROUND_ROBIN", "lb_policy: CLUSTER_PROVIDED", 1);
    let line = text
        .lines()
        .position(|l| l.contains("CLUSTER_PROVIDED"))
        .unwrap()
        + 1;
    let e = error_of(&text);
    assert!(
        e.starts_with(&format!(
            "envoy.yaml:{line}:5: static_resources.clusters[0].lb_policy: "
        )),
        "{e}"
    );
}

#[test]
fn dns_clusters_take_envoys_lookup_family_auto_by_default_and_logical_dns_maps() {
    use sinew_config::model::{Discovery, DnsLookupFamily};
    let text = std::fs::read_to_string(example("front-proxy.yaml")).unwrap();
    let strict = text.replacen("    dns_lookup_family: ALL\n", "", 1);
    let b = load_str("envoy.yaml", &strict).unwrap_or_else(|d| panic!("{d}"));
    let service2 = &b.loaded.config.clusters[1];
    assert_eq!(
        (service2.discovery, service2.dns_lookup_family),
        (Discovery::Dns, DnsLookupFamily::Auto)
    );
    let logical = strict.replacen(
        "type: STRICT_DNS",
        "type: LOGICAL_DNS\n    dns_lookup_family: V4_PREFERRED\n    dns_resolvers: [{socket_address: {address: 127.0.0.1, port_value: 5353}}]",
        1,
    );
    let b = load_str("envoy.yaml", &logical).unwrap_or_else(|d| panic!("{d}"));
    let service2 = &b.loaded.config.clusters[1];
    assert_eq!(
        (service2.discovery, service2.dns_lookup_family),
        (Discovery::LogicalDns, DnsLookupFamily::V4Preferred)
    );
    assert_eq!(service2.dns_resolvers, vec!["127.0.0.1:5353".to_string()]);
    let other_resolver = strict.replacen(
        "type: STRICT_DNS",
        "type: STRICT_DNS\n    typed_dns_resolver_config: {name: apple, typed_config: {'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig}}",
        1,
    );
    let e = error_of(&other_resolver);
    assert!(
        e.contains("static_resources.clusters[1].typed_dns_resolver_config"),
        "{e}"
    );
}

#[test]
fn headers_with_underscores_action_maps_from_common_http_protocol_options() {
    use sinew_config::model::HeadersWithUnderscores;
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen(
            "stat_prefix: ingress_http",
            "stat_prefix: ingress_http\n          common_http_protocol_options: {headers_with_underscores_action: REJECT_REQUEST}",
            1,
        );
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let http = b.loaded.config.listeners[0].http.as_ref().unwrap();
    assert_eq!(
        http.headers_with_underscores,
        HeadersWithUnderscores::RejectRequest
    );
}

#[test]
fn contrib_extensions_are_named_as_such_not_as_misspellings() {
    let text = std::fs::read_to_string(example("tcp-proxy.json"))
        .unwrap()
        .replacen(
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "type.googleapis.com/envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy",
            1,
        );
    assert!(text.contains("MySQLProxy"));
    let e = error_of(&text);
    assert!(
        e.contains("mysql_proxy.v3.MySQLProxy is a contrib extension"),
        "{e}"
    );
}

#[test]
fn an_unsupported_bootstrap_section_is_named() {
    let text = "static_resources: {}\nwatchdogs: {}\n";
    let e = error_of(text);
    assert!(
        e.starts_with("envoy.yaml:2:1: watchdogs: is not supported by Sinew"),
        "{e}"
    );
}

/// Envoy's own example: keep-alive off at 92 % of the heap, requests refused at 95 %,
/// new connections closed at 95 % (a load shed point).
const OVERLOAD_MANAGER: &str = r#"
static_resources: {}
overload_manager:
  refresh_interval: 0.25s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: 2147483648
  actions:
  - name: envoy.overload_actions.disable_http_keepalive
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: { value: 0.92 }
  - name: envoy.overload_actions.stop_accepting_requests
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      scaled: { scaling_threshold: 0.9, saturation_threshold: 0.95 }
  - name: envoy.overload_actions.shrink_heap
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: { value: 0.9 }
    typed_config:
      "@type": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig
      timer_interval: 5s
  loadshed_points:
  - name: envoy.load_shed_points.tcp_listener_accept
    triggers:
    - name: envoy.resource_monitors.fixed_heap
      threshold: { value: 0.95 }
"#;

#[test]
fn the_overload_manager_with_the_fixed_heap_monitor_maps_to_overload() {
    use sinew_config::overload::OverloadActionKind as Kind;
    let b = load_str("envoy.yaml", OVERLOAD_MANAGER).unwrap();
    let o = b.loaded.config.overload.expect("overload is mapped");
    assert_eq!(o.refresh_interval, Duration::from_millis(250));
    assert_eq!(o.max_heap_size_bytes, 2147483648);
    let actions: Vec<_> = o
        .actions
        .iter()
        .map(|a| {
            (
                a.action,
                a.threshold,
                a.scaled.map(|s| s.saturation_threshold),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (Kind::DisableHttpKeepalive, Some(0.92), None),
            (Kind::StopAcceptingRequests, None, Some(0.95)),
            (Kind::ShrinkHeap, Some(0.9), None),
            (Kind::RejectIncomingConnections, Some(0.95), None),
        ]
    );
}

#[test]
fn other_monitors_actions_and_load_shed_points_are_refused_by_name() {
    for (from, to, want) in [
        (
            "- name: envoy.resource_monitors.fixed_heap\n    typed_config:",
            "- name: envoy.resource_monitors.cpu_utilization\n    typed_config:",
            "overload_manager.resource_monitors[0].name: \"envoy.resource_monitors.cpu_utilization\" is not supported by Sinew",
        ),
        (
            "envoy.overload_actions.disable_http_keepalive",
            "envoy.overload_actions.reduce_timeouts",
            "overload_manager.actions[0].name: \"envoy.overload_actions.reduce_timeouts\" is not supported by Sinew",
        ),
        (
            "envoy.load_shed_points.tcp_listener_accept",
            "envoy.load_shed_points.connection_pool_new_connection",
            "overload_manager.loadshed_points[0].name: \"envoy.load_shed_points.connection_pool_new_connection\" is not supported by Sinew",
        ),
        (
            "  loadshed_points:",
            "  buffer_factory_config: { minimum_account_to_track_power_of_two: 20 }\n  loadshed_points:",
            "overload_manager.buffer_factory_config: is not supported by Sinew",
        ),
    ] {
        assert!(OVERLOAD_MANAGER.contains(from), "{from}");
        let e = error_of(&OVERLOAD_MANAGER.replacen(from, to, 1));
        assert!(e.contains(want), "want {want:?} in:\n{e}");
    }
}

#[test]
fn a_route_to_an_undefined_cluster_names_the_listener() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace(
            "route: { cluster: service2, timeout: 5s }",
            "route: { cluster: nowhere }",
        );
    let e = error_of(&text);
    let line = text
        .lines()
        .position(|l| l.contains("- name: listener_0"))
        .unwrap()
        + 1;
    assert!(
        e.starts_with(&format!(
            "envoy.yaml:{line}:5: static_resources.listeners[0]: "
        )),
        "{e}"
    );
    assert!(e.contains("\"nowhere\""), "{e}");
}

#[test]
fn an_ads_source_without_ads_config_is_an_error() {
    let text = "dynamic_resources:\n  lds_config: {ads: {}}\n";
    let e = error_of(text);
    assert!(
        e.contains("dynamic_resources.lds_config.ads: needs dynamic_resources.ads_config"),
        "{e}"
    );
}

#[test]
fn an_xds_cluster_that_is_not_static_is_an_error() {
    let text = r#"
dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services: [{envoy_grpc: {cluster_name: xds}}]
  cds_config: {ads: {}}
"#;
    let e = error_of(text);
    assert!(
        e.contains("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: \"xds\" is not a cluster in static_resources"),
        "{e}"
    );
}

#[test]
fn a_cluster_defined_twice_is_an_error_at_the_second() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace("- name: service2\n", "- name: service1\n");
    let e = error_of(&text);
    assert!(
        e.contains("static_resources.clusters[1].name: cluster \"service1\" is defined twice"),
        "{e}"
    );
}

#[test]
fn local_ratelimit_maps_the_filter_chain_and_per_route_buckets_most_specific_first() {
    let loaded = load_file(&example("local-ratelimit.yaml")).unwrap_or_else(|d| panic!("{d}"));
    let http = loaded.loaded.config.listeners[0]
        .http
        .as_ref()
        .expect("an HTTP listener");
    assert_eq!(
        http.local_rate_limit_levels,
        sinew_config::model::LocalRateLimitLevels::MostSpecific
    );
    let listener = http.local_rate_limit.as_ref().expect("the chain's bucket");
    assert_eq!(listener.token_bucket.max_tokens, 5);
    assert_eq!(listener.token_bucket.tokens_per_fill, 5);
    assert_eq!(listener.token_bucket.fill_interval, Duration::from_secs(60));
    assert_eq!(
        listener.enable_x_ratelimit_headers,
        sinew_config::model::XRateLimitHeaders::DraftVersion03
    );
    let routes = &http.virtual_hosts.as_ref().unwrap()[0].routes;
    let api = routes[0].local_rate_limit.as_ref().expect("/api's bucket");
    assert_eq!(api.token_bucket.max_tokens, 2);
    assert!(routes[1].local_rate_limit.is_none());
}

/// The local rate limit example with `from` replaced by `to`.
fn local_ratelimit_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(example("local-ratelimit.yaml")).unwrap();
    assert!(text.contains(from), "{from:?} is not in the example");
    text.replacen(from, to, 1)
}

#[test]
fn local_ratelimit_settings_sinew_cannot_honour_are_refused_by_field() {
    let api = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].typed_per_filter_config[\"envoy.filters.http.local_ratelimit\"]";
    let chain = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config";
    for (from, to, expected) in [
        // Shadow mode: enabled, not enforced.
        (
            "default_value: { numerator: 100, denominator: HUNDRED }\n              enable_x",
            "default_value: { numerator: 0, denominator: HUNDRED }\n              enable_x",
            format!("{chain}.filter_enforced: a limit enabled but not enforced (shadow mode) is not supported by Sinew"),
        ),
        // A fraction of requests.
        (
            "numerator: 100, denominator: HUNDRED",
            "numerator: 5000, denominator: TEN_THOUSAND",
            format!("{api}.filter_enabled.default_value: only 0% or 100% is supported by Sinew"),
        ),
        // A per-route config that enables nothing would exempt the route in Envoy.
        (
            "                    filter_enabled:\n                      runtime_key: api_rate_limit_enabled\n                      default_value: { numerator: 100, denominator: HUNDRED }\n",
            "",
            format!("{api}: a per-route local_ratelimit must have a token_bucket and filter_enabled"),
        ),
        (
            "stat_prefix: http_local_rate_limiter\n",
            "stat_prefix: http_local_rate_limiter\n              local_rate_limit_per_downstream_connection: true\n",
            format!("{chain}.local_rate_limit_per_downstream_connection: is not supported by Sinew"),
        ),
        (
            "stat_prefix: http_local_rate_limiter\n",
            "stat_prefix: http_local_rate_limiter\n              status: { code: 503 }\n",
            format!("{chain}.status: only 429 is supported by Sinew"),
        ),
    ] {
        let e = error_of(&local_ratelimit_with(from, to));
        assert!(e.contains(&expected), "expected {expected:?} in:\n{e}");
    }
}

/// A listener and a cluster with Envoy's TLS transport sockets, as Istio-shaped
/// bootstraps write them: a client certificate required and checked by URI SAN, and
/// TLS to the upstream verified against a CA.
const TLS_BOOTSTRAP: &str = r#"
static_resources:
  listeners:
    - name: inbound
      address: {socket_address: {address: 127.0.0.1, port_value: 15006}}
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              require_client_certificate: true
              common_tls_context:
                alpn_protocols: [h2, http/1.1]
                tls_params: {tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}
                tls_certificates:
                  - certificate_chain: {filename: /etc/certs/cert-chain.pem}
                    private_key: {filename: /etc/certs/key.pem}
                validation_context:
                  trusted_ca: {filename: /etc/certs/root-cert.pem}
                  match_typed_subject_alt_names:
                    - san_type: URI
                      matcher: {prefix: "spiffe://cluster.local/ns/shop/"}
          filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: inbound
                cluster: app
  clusters:
    - name: app
      type: STATIC
      load_assignment:
        cluster_name: app
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: app.internal
          common_tls_context:
            tls_certificates:
              - certificate_chain: {filename: /etc/certs/client.pem}
                private_key: {filename: /etc/certs/client-key.pem}
            validation_context:
              trusted_ca: {filename: /etc/certs/root-cert.pem}
"#;

#[test]
fn tls_transport_sockets_map_to_listener_and_cluster_tls() {
    use sinew_config::tls::{SanType, TlsVersion};
    let bootstrap = load_str("envoy.yaml", TLS_BOOTSTRAP).unwrap_or_else(|d| panic!("{d}"));
    let config = &bootstrap.loaded.config;
    let listener = config.listeners[0].tls.as_ref().expect("listener tls");
    assert_eq!(listener.certificates.len(), 1);
    assert_eq!(
        listener.certificates[0].cert.file(),
        Some("/etc/certs/cert-chain.pem")
    );
    assert_eq!(
        listener.certificates[0].key.as_ref().and_then(|k| k.file()),
        Some("/etc/certs/key.pem")
    );
    assert_eq!(
        listener.client_ca.as_ref().and_then(|c| c.file()),
        Some("/etc/certs/root-cert.pem")
    );
    assert!(listener.require_client_certificate);
    assert_eq!(listener.alpn, ["h2", "http/1.1"]);
    assert_eq!(listener.min_version, Some(TlsVersion::Tls12));
    assert_eq!(listener.max_version, Some(TlsVersion::Tls13));
    let san = &listener.match_subject_alt_names[0];
    assert_eq!(san.san_type, SanType::Uri);
    assert_eq!(
        san.prefix.as_deref(),
        Some("spiffe://cluster.local/ns/shop/")
    );
    let cluster = config.clusters[0].tls.as_ref().expect("cluster tls");
    assert_eq!(cluster.sni.as_deref(), Some("app.internal"));
    assert!(cluster.verify);
    assert_eq!(
        cluster.ca.as_ref().and_then(|c| c.file()),
        Some("/etc/certs/root-cert.pem")
    );
    assert_eq!(
        cluster.cert.as_ref().and_then(|c| c.file()),
        Some("/etc/certs/client.pem")
    );
    assert_eq!(
        cluster.key.as_ref().and_then(|k| k.file()),
        Some("/etc/certs/client-key.pem")
    );
}

#[test]
fn tls_fields_sinew_cannot_honour_are_named() {
    for (from, to, field) in [
        (
            "private_key: {filename: /etc/certs/key.pem}",
            "private_key: {inline_string: secret}",
            "tls_certificates[0].private_key.inline_string: holds no PEM private key",
        ),
        (
            "tls_maximum_protocol_version: TLSv1_3",
            "tls_maximum_protocol_version: TLSv1_1",
            "tls_params.tls_maximum_protocol_version: Sinew speaks TLS 1.2 and 1.3 only",
        ),
        (
            "sni: app.internal",
            "sni: app.internal\n          allow_renegotiation: true",
            "transport_socket.typed_config.allow_renegotiation: is not supported by Sinew",
        ),
    ] {
        let text = TLS_BOOTSTRAP.replacen(from, to, 1);
        let error = error_of(&text);
        assert!(error.contains(field), "{field:?} not in:\n{error}");
    }
}

/// Stand-ins for PEM: well-formed, which is all mapping checks (the key is checked
/// against its certificate when the TLS context is built).
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

/// `TLS_BOOTSTRAP` with the listener's certificate and key written in as Envoy's examples
/// do (`inline_string` block scalars), and the cluster's CA as `inline_bytes`.
fn tls_bootstrap_inline() -> String {
    let block = |pem: &str, indent: usize| {
        let pad = " ".repeat(indent);
        let lines: String = pem.lines().map(|l| format!("{pad}{l}\n")).collect();
        format!("|\n{lines}")
    };
    TLS_BOOTSTRAP
        .replacen(
            "                  - certificate_chain: {filename: /etc/certs/cert-chain.pem}
                    private_key: {filename: /etc/certs/key.pem}
",
            &format!(
                "                  - certificate_chain:
                      inline_string: {}                    private_key:
                      inline_string: {}",
                block(CERT_PEM, 24),
                block(KEY_PEM, 24)
            ),
            1,
        )
        .replacen(
            "            validation_context:
              trusted_ca: {filename: /etc/certs/root-cert.pem}
",
            // base64 of CERT_PEM: proto3 JSON writes bytes so.
            "            validation_context:
              trusted_ca: {inline_bytes: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFBQUEKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=}
",
            1,
        )
}

#[test]
fn inline_certificates_keys_and_cas_map_to_pem_written_in_the_config() {
    use sinew_config::tls::{KeySource, PemSource};
    let text = tls_bootstrap_inline();
    assert!(text.contains("inline_string") && text.contains("inline_bytes"));
    let bootstrap = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let config = &bootstrap.loaded.config;
    let listener = config.listeners[0].tls.as_ref().unwrap();
    let PemSource::Inline(cert) = &listener.certificates[0].cert else {
        panic!("{:?}", listener.certificates[0].cert);
    };
    assert_eq!(cert.pem, CERT_PEM);
    let Some(KeySource::Inline(key)) = &listener.certificates[0].key else {
        panic!("{:?}", listener.certificates[0].key);
    };
    assert_eq!(key.pem, KEY_PEM);
    // Printing the config never shows the key.
    assert!(!format!("{listener:?}").contains("AAAA"), "{listener:?}");
    let cluster = config.clusters[0].tls.as_ref().unwrap();
    assert!(
        matches!(&cluster.ca, Some(PemSource::Inline(ca)) if ca.pem == CERT_PEM),
        "{:?}",
        cluster.ca
    );
}

#[test]
fn bad_inline_pem_is_an_error_at_its_field_and_line() {
    let text = tls_bootstrap_inline().replace("PRIVATE KEY", "PUBLIC KEY");
    // The key's `inline_string` is the second in the file.
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("inline_string"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    let e = error_of(&text);
    let at = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].private_key.inline_string";
    assert!(
        e.contains(&format!(
            "envoy.yaml:{line}:23: {at}: holds no PEM private key"
        )),
        "{e}"
    );
    assert!(!e.contains("AAAA"), "the key text is never quoted:\n{e}");
    // DER, as some write it: Sinew takes PEM.
    let text = tls_bootstrap_inline().replacen(
        "inline_bytes: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFBQUEKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=",
        "inline_bytes: MIIB",
        1,
    );
    let e = error_of(&text);
    assert!(
        e.contains("static_resources.clusters[0].transport_socket.typed_config.common_tls_context.validation_context.trusted_ca.inline_bytes: is not PEM text"),
        "{e}"
    );
    let text = tls_bootstrap_inline().replacen(
        "trusted_ca: {inline_bytes: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkFBQUEKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=}",
        "trusted_ca: {environment_variable: CA}",
        1,
    );
    let e = error_of(&text);
    assert!(
        e.contains("validation_context.trusted_ca.environment_variable: is not supported by Sinew: use `filename` or `inline_string`"),
        "{e}"
    );
}

#[test]
fn static_secrets_may_hold_inline_pem_checked_where_they_are_defined() {
    let text = tls_bootstrap_with_secrets().replacen(
        "      tls_certificate:
        certificate_chain: {filename: /etc/certs/cert-chain.pem}
        private_key: {filename: /etc/certs/key.pem}",
        &format!(
            "      tls_certificate:
        certificate_chain: {{inline_string: {CERT_PEM:?}}}
        private_key: {{inline_string: {KEY_PEM:?}}}"
        ),
        1,
    );
    let bootstrap = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let listener = bootstrap.loaded.config.listeners[0].tls.as_ref().unwrap();
    assert!(matches!(
        &listener.certificates[0].cert,
        sinew_config::tls::PemSource::Inline(c) if c.pem == CERT_PEM
    ));
    let bad = text.replace("CERTIFICATE", "NONSENSE");
    let e = error_of(&bad);
    assert!(
        e.contains("static_resources.secrets[0].tls_certificate.certificate_chain.inline_string: holds no PEM certificate"),
        "{e}"
    );
}

#[test]
fn upstream_tls_versions_map_and_versions_sinew_cannot_speak_are_refused() {
    use sinew_config::tls::TlsVersion;
    let with = |params: &str| {
        TLS_BOOTSTRAP.replacen(
            "          common_tls_context:
            tls_certificates:
              - certificate_chain: {filename: /etc/certs/client.pem}",
            &format!(
                "          common_tls_context:
            tls_params: {params}
            tls_certificates:
              - certificate_chain: {{filename: /etc/certs/client.pem}}"
            ),
            1,
        )
    };
    let versions = |params: &str| {
        let b = load_str("envoy.yaml", &with(params)).unwrap_or_else(|d| panic!("{d}"));
        let t = b.loaded.config.clusters[0].tls.clone().unwrap();
        (t.min_version, t.max_version)
    };
    assert_eq!(
        versions("{tls_maximum_protocol_version: TLSv1_2}"),
        (None, Some(TlsVersion::Tls12))
    );
    assert_eq!(
        versions("{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}"),
        (Some(TlsVersion::Tls13), Some(TlsVersion::Tls13))
    );
    // TLS 1.0 and 1.1 as a minimum: Sinew has nothing older than 1.2 to offer.
    assert_eq!(
        versions("{tls_minimum_protocol_version: TLSv1_0, tls_maximum_protocol_version: TLSv1_2}"),
        (None, Some(TlsVersion::Tls12))
    );
    assert_eq!(
        versions("{tls_minimum_protocol_version: TLS_AUTO}"),
        (None, None)
    );
    let at =
        "static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_params";
    for (params, want) in [
        (
            "{tls_maximum_protocol_version: TLSv1_1}",
            format!("{at}.tls_maximum_protocol_version: Sinew speaks TLS 1.2 and 1.3 only"),
        ),
        (
            "{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}",
            format!("{at}.tls_minimum_protocol_version: \"TLSv1_3\" is newer than tls_maximum_protocol_version \"TLSv1_2\""),
        ),
        (
            "{cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]}",
            format!("{at}.cipher_suites: is not supported by Sinew"),
        ),
    ] {
        let e = error_of(&with(params));
        assert!(e.contains(&want), "want {want:?} in:\n{e}");
    }
}

#[test]
fn an_upstream_context_without_validation_maps_to_tls_that_does_not_verify() {
    let cluster_ctx = "          sni: app.internal
          common_tls_context:
            tls_certificates:
              - certificate_chain: {filename: /etc/certs/client.pem}
                private_key: {filename: /etc/certs/client-key.pem}
            validation_context:
              trusted_ca: {filename: /etc/certs/root-cert.pem}
";
    assert!(TLS_BOOTSTRAP.contains(cluster_ctx));
    let tls_of = |ctx: &str| {
        let text = TLS_BOOTSTRAP.replacen(cluster_ctx, ctx, 1);
        let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
        b.loaded.config.clusters[0].tls.clone().unwrap()
    };
    // Only SNI, as Envoy's tls-sni example writes it.
    let t = tls_of("          sni: app.internal\n");
    assert!(!t.verify);
    assert_eq!(t.ca, None);
    assert_eq!(t.sni.as_deref(), Some("app.internal"));
    // Nothing at all: no SNI either.
    let t = tls_of("          common_tls_context: {}\n");
    assert!(!t.verify);
    assert_eq!(t.sni, None);
    // A validation context with neither a CA nor names verifies nothing in Envoy either.
    let t = tls_of("          common_tls_context: {validation_context: {}}\n");
    assert!(!t.verify);
    // Names to match but no CA: Envoy refuses it, and so does Sinew.
    let text = TLS_BOOTSTRAP.replacen(
        cluster_ctx,
        "          common_tls_context:
            validation_context:
              match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: app.internal}}]
",
        1,
    );
    let e = error_of(&text);
    assert!(
        e.contains("common_tls_context.validation_context.trusted_ca: is required with match_typed_subject_alt_names"),
        "{e}"
    );
}

/// `TLS_BOOTSTRAP` with its certificates and CA given as static secrets, named from the
/// transport sockets as Istio's bootstraps name them (`validation_context_sds_secret_config`
/// on the listener, `combined_validation_context` on the cluster).
fn tls_bootstrap_with_secrets() -> String {
    let text = TLS_BOOTSTRAP
        .replacen(
            "                tls_certificates:
                  - certificate_chain: {filename: /etc/certs/cert-chain.pem}
                    private_key: {filename: /etc/certs/key.pem}
                validation_context:
                  trusted_ca: {filename: /etc/certs/root-cert.pem}
                  match_typed_subject_alt_names:",
            "                tls_certificate_sds_secret_configs: [{name: default}]
                validation_context_sds_secret_config: {name: ROOTCA}
                validation_context:
                  match_typed_subject_alt_names:",
            1,
        )
        .replacen(
            "            tls_certificates:
              - certificate_chain: {filename: /etc/certs/client.pem}
                private_key: {filename: /etc/certs/client-key.pem}
            validation_context:
              trusted_ca: {filename: /etc/certs/root-cert.pem}",
            "            tls_certificate_sds_secret_configs: [{name: client}]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: app.internal}}]
              validation_context_sds_secret_config: {name: ROOTCA}",
            1,
        );
    // `validation_context` and `validation_context_sds_secret_config` are one oneof: the
    // listener keeps its SAN matchers through a combined context instead.
    let text = text.replacen(
        "                validation_context_sds_secret_config: {name: ROOTCA}
                validation_context:
                  match_typed_subject_alt_names:
                    - san_type: URI
                      matcher: {prefix: \"spiffe://cluster.local/ns/shop/\"}",
        "                combined_validation_context:
                  validation_context_sds_secret_config: {name: ROOTCA}
                  default_validation_context:
                    match_typed_subject_alt_names:
                      - san_type: URI
                        matcher: {prefix: \"spiffe://cluster.local/ns/shop/\"}",
        1,
    );
    format!(
        "{text}  secrets:
    - name: default
      tls_certificate:
        certificate_chain: {{filename: /etc/certs/cert-chain.pem}}
        private_key: {{filename: /etc/certs/key.pem}}
    - name: client
      tls_certificate:
        certificate_chain: {{filename: /etc/certs/client.pem}}
        private_key: {{filename: /etc/certs/client-key.pem}}
    - name: ROOTCA
      validation_context:
        trusted_ca: {{filename: /etc/certs/root-cert.pem}}
"
    )
}

#[test]
fn static_secrets_named_by_transport_sockets_map_as_the_inline_files_do() {
    let text = tls_bootstrap_with_secrets();
    assert!(text.contains("sds_secret_config") && !text.contains("tls_certificates"));
    let named = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let inline = load_str("envoy.yaml", TLS_BOOTSTRAP).unwrap();
    let (a, b) = (&named.loaded.config, &inline.loaded.config);
    assert_eq!(
        format!("{:?}", a.listeners[0].tls),
        format!("{:?}", b.listeners[0].tls)
    );
    let cluster = a.clusters[0].tls.as_ref().unwrap();
    assert_eq!(
        cluster.ca.as_ref().and_then(|c| c.file()),
        Some("/etc/certs/root-cert.pem")
    );
    assert_eq!(
        cluster.cert.as_ref().and_then(|c| c.file()),
        Some("/etc/certs/client.pem")
    );
    assert_eq!(
        cluster.match_subject_alt_names[0].exact.as_deref(),
        Some("app.internal"),
        "the default context's matchers are kept"
    );
}

#[test]
fn bad_static_secrets_and_references_are_named() {
    let text = tls_bootstrap_with_secrets();
    let listener_ctx = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context";
    for (from, to, want) in [
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: nope}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].name: no secret \"nope\" with a tls_certificate"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: ROOTCA}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].name: no secret \"ROOTCA\" with a tls_certificate"),
        ),
        (
            "private_key: {filename: /etc/certs/key.pem}\n    - name: client",
            "private_key: {inline_string: KEY}\n    - name: client",
            "static_resources.secrets[0].tls_certificate.private_key.inline_string: holds no PEM private key".to_string(),
        ),
        (
            "trusted_ca: {filename: /etc/certs/root-cert.pem}\n",
            "trusted_ca: {filename: /etc/certs/root-cert.pem}\n        crl: {filename: /etc/crl.pem}\n",
            "static_resources.secrets[2].validation_context.crl: is not supported by Sinew".to_string(),
        ),
        (
            "    - name: client\n",
            "    - name: default\n",
            "static_resources.secrets[1].name: \"default\" is already the name of static_resources.secrets[0]".to_string(),
        ),
        // An SDS server of its own must be a static cluster, reached by one service.
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: nowhere}}]}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name: \"nowhere\" is not a static cluster with endpoints"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: DELTA_GRPC}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.api_type: Sinew's SDS client speaks GRPC"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services: needs exactly one gRPC service"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {path_config_source: {path: /s.yaml, poll_interval: 1s}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.path_config_source.poll_interval: is not supported"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {path_config_source: {}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.path_config_source.path: is required"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {self: {}}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config: Sinew takes a secret on the ADS stream"),
        ),
        (
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}, resource_api_version: V2}}]",
            format!("{listener_ctx}.tls_certificate_sds_secret_configs[0].sds_config.resource_api_version: Sinew speaks xDS v3 only"),
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let e = error_of(&text.replacen(from, to, 1));
        assert!(e.contains(&want), "want {want:?} in:\n{e}");
    }
}

/// The migration report: one pass lists every problem, across resources and within one
/// message, each at its line with the Envoy type named.
#[test]
fn every_problem_in_a_bootstrap_is_reported_at_once() {
    let text = r#"
watchdogs: {}
static_resources:
  listeners:
  - name: first
    continue_on_listener_filters_timeout: true
    address: { socket_address: { address: 127.0.0.1, port_value: 18100 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: svc
          max_downstream_connection_duration: 10s
  - name: second
    address: { socket_address: { address: 127.0.0.1, port_value: 18101 } }
    freebind: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: svc
  clusters:
  - name: svc
    connect_timeout: 1s
    close_connections_on_host_health_failure: true
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 19001 } } }
"#;
    let e = error_of(text);
    let lines: Vec<&str> = e.lines().collect();
    let expect = [
        "envoy.yaml:2:1: watchdogs: is not supported by Sinew (envoy.config.bootstrap.v3.Bootstrap.watchdogs)",
        "envoy.yaml:6:5: static_resources.listeners[0].continue_on_listener_filters_timeout: is not supported by Sinew: a connection that shows nothing in time is closed",
        "envoy.yaml:15:11: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_downstream_connection_duration: is not supported by Sinew (envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.max_downstream_connection_duration)",
        "envoy.yaml:18:5: static_resources.listeners[1].freebind: is not supported by Sinew (envoy.config.listener.v3.Listener.freebind)",
        "envoy.yaml:29:5: static_resources.clusters[0].close_connections_on_host_health_failure: is not supported by Sinew (envoy.config.cluster.v3.Cluster.close_connections_on_host_health_failure)",
    ];
    assert_eq!(lines.len(), expect.len(), "{e}");
    for (line, want) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(want),
            "{line}\n  should start with\n{want}\n\n{e}"
        );
    }
}

/// Extensions Sinew has no descriptor for do not stop the report: each is named at its
/// `typed_config`, and the problems after it are still found.
#[test]
fn unknown_extension_types_are_reported_with_everything_else() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replace(
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.filters.http.no_such_filter.v3.Filter",
        )
        .replacen("lb_policy: ROUND_ROBIN", "lb_policy: CLUSTER_PROVIDED", 1);
    let e = error_of(&text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].contains("typed_config: \"envoy.extensions.filters.http.no_such_filter.v3.Filter\" is not an Envoy v3 type"), "{e}");
    assert!(
        lines[1].contains("static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED"),
        "{e}"
    );
}

/// Envoy names a static listener that has no name; Sinew names it after its address.
#[test]
fn a_listener_without_a_name_is_named_after_its_address() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen("name: listener_0", "", 1);
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let names: Vec<&str> = b
        .loaded
        .config
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["127.0.0.1_18100"]);
}

#[test]
fn sds_references_over_ads_and_from_files_map_to_sds_sources() {
    use sinew_config::tls::PemSource;
    let text = tls_bootstrap_with_secrets()
        .replacen(
            "tls_certificate_sds_secret_configs: [{name: default}]",
            "tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}, initial_fetch_timeout: 2s}}]",
            1,
        )
        .replacen(
            "validation_context_sds_secret_config: {name: ROOTCA}",
            "validation_context_sds_secret_config: {name: ROOTCA, sds_config: {path_config_source: {path: /etc/sds/ca.yaml, watched_directory: {path: /etc/sds}}}}",
            1,
        );
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let config = &loaded.loaded.config;
    let listener = config.listeners[0].tls.as_ref().unwrap();
    let PemSource::Sds(cert) = &listener.certificates[0].cert else {
        panic!("an SDS certificate: {listener:?}")
    };
    assert_eq!(
        (
            cert.sds.as_str(),
            cert.path.as_deref(),
            cert.initial_fetch_timeout
        ),
        ("default", None, Some(std::time::Duration::from_secs(2)))
    );
    assert_eq!(
        listener.certificates[0].key, None,
        "the secret carries its key"
    );
    let Some(PemSource::Sds(ca)) = &listener.client_ca else {
        panic!("an SDS CA: {listener:?}")
    };
    assert_eq!(
        (
            ca.sds.as_str(),
            ca.path.as_deref(),
            ca.watched_directory.as_deref()
        ),
        ("ROOTCA", Some("/etc/sds/ca.yaml"), Some("/etc/sds"))
    );
    // The deprecated `path` form, and a combined context, on the cluster.
    let text = tls_bootstrap_with_secrets().replacen(
        "tls_certificate_sds_secret_configs: [{name: client}]",
        "tls_certificate_sds_secret_configs: [{name: client, sds_config: {path: /etc/sds/client.json}}]",
        1,
    );
    let loaded = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let cluster = loaded.loaded.config.clusters[0].tls.as_ref().unwrap();
    let Some(PemSource::Sds(client)) = &cluster.cert else {
        panic!("an SDS client certificate: {cluster:?}")
    };
    assert_eq!(client.path.as_deref(), Some("/etc/sds/client.json"));
    assert_eq!(cluster.key, None);
}

/// `traffic_direction` is a hint for stats and tracing; a listener with it maps.
#[test]
fn a_listener_traffic_direction_is_accepted_as_the_hint_it_is() {
    let text = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen(
            "name: listener_0",
            "name: listener_0\n    traffic_direction: OUTBOUND",
            1,
        );
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(b.loaded.config.listeners.len(), 1);
}

/// Istio's `sds-grpc`: a secret from an SDS server of its own, whose static cluster is a
/// pipe to the node agent's socket, maps to `{sds, server: unix:PATH}`; the pipe cluster
/// is no upstream (a route to it says so), and a config source naming the ADS server's
/// cluster is the ADS stream itself.
#[test]
fn an_sds_server_on_a_static_pipe_cluster_maps_to_a_unix_socket_server() {
    let sds = |cluster: &str| {
        format!("{{name: default, sds_config: {{api_config_source: {{api_type: GRPC, grpc_services: [{{envoy_grpc: {{cluster_name: {cluster}}}}}]}}}}}}")
    };
    let pipe_cluster = |indent: &str| {
        [
            "- name: sds-grpc",
            "  type: STATIC",
            "  load_assignment:",
            "    cluster_name: sds-grpc",
            "    endpoints:",
            "    - lb_endpoints:",
            "      - endpoint: {address: {pipe: {path: /run/agent/socket}}}",
        ]
        .map(|l| format!("{indent}{l}\n"))
        .concat()
    };
    // Adds `clusters` (list items at `indent`) first in the file's cluster list.
    let with_clusters = |text: &str, clusters: &str| {
        let at = text.find("\n  clusters:\n").expect("a cluster list") + "\n  clusters:\n".len();
        format!("{}{clusters}{}", &text[..at], &text[at..])
    };
    let bootstrap = tls_bootstrap_with_secrets();
    let indent = cluster_indent(&bootstrap);
    let text = with_clusters(
        &bootstrap.replacen(
            "tls_certificate_sds_secret_configs: [{name: default}]",
            &format!("tls_certificate_sds_secret_configs: [{}]", sds("sds-grpc")),
            1,
        ),
        &pipe_cluster(&indent),
    );
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let tls = b.loaded.config.listeners[0].tls.as_ref().unwrap();
    let secret = tls.certificates[0].cert.sds().expect("an SDS secret");
    assert_eq!(
        (secret.sds.as_str(), secret.server.as_deref()),
        ("default", Some("unix:/run/agent/socket"))
    );
    assert!(
        b.loaded
            .config
            .clusters
            .iter()
            .all(|c| c.name != "sds-grpc"),
        "a pipe cluster is no upstream"
    );

    // The ADS server's own cluster: the secret is on the stream.
    let xds_cluster = [
        "- name: xds",
        "  type: STATIC",
        "  load_assignment:",
        "    cluster_name: xds",
        "    endpoints:",
        "    - lb_endpoints:",
        "      - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18000}}}",
    ]
    .map(|l| format!("{indent}{l}\n"))
    .concat();
    let text = format!(
        "dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  lds_config: {{ads: {{}}}}
{}",
        with_clusters(
            &bootstrap.replacen(
                "tls_certificate_sds_secret_configs: [{name: default}]",
                &format!("tls_certificate_sds_secret_configs: [{}]", sds("xds")),
                1,
            ),
            &xds_cluster,
        )
    );
    let b = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let tls = b.loaded.config.listeners[0].tls.as_ref().unwrap();
    let secret = tls.certificates[0].cert.sds().unwrap();
    assert_eq!(
        (secret.sds.as_str(), secret.server.as_deref()),
        ("default", None)
    );

    // A route to a pipe cluster.
    let front = std::fs::read_to_string(example("front-proxy.yaml"))
        .unwrap()
        .replacen("cluster: service2", "cluster: sds-grpc", 1);
    let indent = cluster_indent(&front);
    let text = with_clusters(&front, &pipe_cluster(&indent));
    let e = error_of(&text);
    assert!(
        e.contains("whose endpoints are Unix sockets (pipe): Sinew reaches a pipe only as a gRPC config source"),
        "{e}"
    );
}

/// The indentation of the first item of a file's `clusters:` list.
fn cluster_indent(text: &str) -> String {
    let at = text.find("\n  clusters:\n").expect("a cluster list") + "\n  clusters:\n".len();
    text[at..].chars().take_while(|c| *c == ' ').collect()
}

/// Access loggers and filters Sinew cannot honour are each named at their place: a gRPC
/// logger, a nested JSON format value, a header filter.
#[test]
fn access_log_shapes_sinew_cannot_honour_are_named_where_they_are() {
    let text = r#"
static_resources:
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: 18100 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: svc
          access_log:
          - name: nested
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: { json_format: { request: { method: "%REQ(:METHOD)%" } } }
  - name: tcp2
    address: { socket_address: { address: 127.0.0.1, port_value: 18101 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: svc
          access_log:
          - name: by-header
            filter: { header_filter: { header: { name: x-debug, present_match: true } } }
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
  clusters:
  - name: svc
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 19001 } } }
"#;
    let e = error_of(text);
    assert!(
        e.contains("access_log[0].typed_config.log_format.json_format.request: is supported by Sinew only as a string"),
        "{e}"
    );
    assert!(
        e.contains("access_log[0].filter: HeaderFilter is not supported by Sinew"),
        "{e}"
    );
}

/// Enum names in lower case, as Envoy reads them (its loader ignores their case): at the
/// top level, in a cluster, inside a connection manager's `typed_config`, and inside an
/// access logger's filter within it; a lone value where a list is expected; and an empty
/// `typed_config`.
#[test]
fn enum_names_in_any_case_and_lone_list_values_are_read_as_envoy_reads_them() {
    let text = r#"
static_resources:
  listeners:
  - name: web
    address: { socket_address: { address: 127.0.0.1, port_value: 18100, protocol: tcp } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          codec_type: auto
          access_log:
          - name: errors
            filter: { status_code_filter: { comparison: { op: ge, value: { default_value: 500, runtime_key: k } } } }
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: svc }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: svc
    type: static
    lb_policy: least_request
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 19001 } } }
"#;
    let b = load_str("envoy.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let config = &b.loaded.config;
    assert_eq!(config.clusters[0].lb, model::LbPolicy::LeastRequest);
    let logs = config.listeners[0]
        .http
        .as_ref()
        .unwrap()
        .access_log
        .as_ref();
    let filter = logs.unwrap()[0].filter.as_ref().expect("the status filter");
    let comparison = &filter.status_code_filter.as_ref().unwrap().comparison;
    assert!(comparison.holds(500) && !comparison.holds(499));
    // One filter chain, and its one filter, written without the list around them.
    let lone = text
        .replace("    filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n        typed_config:",
                 "    filter_chains:\n      filters:\n        name: envoy.filters.network.http_connection_manager\n        typed_config:");
    assert_ne!(lone, text);
    let b = load_str("envoy.yaml", &lone).unwrap_or_else(|e| panic!("{e}\n{lone}"));
    assert!(b.loaded.config.listeners[0].http.is_some());
    // An empty typed_config is the extension its name says, with its defaults.
    let empty = text.replace(
        "            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "            typed_config: {}",
    );
    assert_ne!(empty, text);
    load_str("envoy.yaml", &empty).unwrap_or_else(|e| panic!("{e}\n{empty}"));
    // When stats are flushed to sinks Sinew does not have changes nothing.
    for flush in ["stats_flush_on_admin: true", "stats_flush_interval: 5s"] {
        let flushed = format!("{flush}{text}");
        load_str("envoy.yaml", &flushed).unwrap_or_else(|e| panic!("{flush}: {e}"));
    }
    // A name that is no enum value in any case is still refused, at its place.
    let e = error_of(&text.replace("least_request", "fastest"));
    assert!(
        e.starts_with("envoy.yaml:32:5: static_resources.clusters[0].lb_policy"),
        "{e}"
    );
}

/// `per_connection_buffer_limit_bytes` is flow control on clusters and on listeners
/// without a connection manager (accepted: Sinew's buffers are bounded anyway); on one
/// with a connection manager it is also how much of a request body retries and mirrors
/// keep, which is the manager's `request_body_buffer_bytes`.
#[test]
fn per_connection_buffer_limits_pace_tcp_and_bound_the_bodies_http_keeps_for_retries() {
    use crate::test_fixtures::http_listener;
    let tcp = r#"
static_resources:
  listeners:
  - name: tcp
    per_connection_buffer_limit_bytes: 32768
    address: { socket_address: { address: 127.0.0.1, port_value: 18100 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: svc
  clusters:
  - name: svc
    per_connection_buffer_limit_bytes: 32768
    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 19001 } } }
"#;
    load_str("envoy.yaml", tcp).unwrap_or_else(|d| panic!("{d}"));
    let without = load_str("envoy.yaml", &http_listener("")).unwrap_or_else(|d| panic!("{d}"));
    let http = without.loaded.config.listeners[0].http.as_ref().unwrap();
    assert_eq!(http.request_body_buffer_bytes, None, "Sinew's default then");
    let text = http_listener("").replacen(
        "  - name: web\n",
        "  - name: web\n    per_connection_buffer_limit_bytes: 32768\n",
        1,
    );
    let with = load_str("envoy.yaml", &text).unwrap_or_else(|d| panic!("{d}"));
    let http = with.loaded.config.listeners[0].http.as_ref().unwrap();
    assert_eq!(http.request_body_buffer_bytes, Some(32768));
}

#[test]
fn the_admin_access_log_path_and_list_become_the_admin_servers_access_logs() {
    let text = r#"
static_resources: {}
admin:
  access_log_path: /var/log/envoy/admin.log
  access_log:
  - name: envoy.access_loggers.stdout
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
      log_format: { text_format: "%REQ(:PATH)% %RESPONSE_CODE%\n" }
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
"#;
    let b = load_str("envoy.yaml", text).unwrap();
    let admin = b.loaded.config.admin.expect("admin is mapped");
    let logs: Vec<(&str, Option<&str>)> = admin
        .access_log
        .iter()
        .map(|l| (l.path.as_str(), l.format.as_deref()))
        .collect();
    assert_eq!(
        logs,
        [
            ("/var/log/envoy/admin.log", None),
            ("/dev/stdout", Some("%REQ(:PATH)% %RESPONSE_CODE%\n")),
        ]
    );
    // /dev/null, as Envoy's examples write it, is no log at all.
    let quiet = text
        .replace("/var/log/envoy/admin.log", "/dev/null")
        .replace("  access_log:\n", "  access_log: []\n  x_removed:\n");
    let quiet = quiet.split("  x_removed:").next().unwrap().to_string()
        + "  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }\n";
    let b = load_str("envoy.yaml", &quiet).unwrap();
    assert!(b.loaded.config.admin.unwrap().access_log.is_empty());
}

/// A listener whose connection manager has `extra` (indented for its typed_config).
fn hcm_with(extra: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 18100 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
{extra}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                direct_response: {{ status: 200 }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

#[test]
fn scheme_header_transformation_maps_to_scheme_to_overwrite() {
    use sinew_config::model::Scheme;
    let scheme = |extra: &str| {
        let b = load_str("envoy.yaml", &hcm_with(extra)).unwrap();
        b.loaded.config.listeners[0]
            .http
            .as_ref()
            .unwrap()
            .scheme_to_overwrite
    };
    assert_eq!(
        scheme("          scheme_header_transformation: { scheme_to_overwrite: https }\n"),
        Some(Scheme::Https)
    );
    assert_eq!(
        scheme("          scheme_header_transformation: { match_upstream: true }\n"),
        None
    );
    assert_eq!(scheme(""), None);
    let e = error_of(&hcm_with(
        "          scheme_header_transformation: { scheme_to_overwrite: ftp }\n",
    ));
    assert!(
        e.contains("scheme_header_transformation.scheme_to_overwrite: \"ftp\" is not a scheme"),
        "{e}"
    );
}

#[test]
fn a_routes_runtime_fraction_is_its_percentage_read_through_the_runtime() {
    let routes = |layer: &str| {
        let text = format!(
            r#"
static_resources:
  listeners:
  - name: web
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 18100 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  prefix: /
                  runtime_fraction:
                    default_value: {{ numerator: 25, denominator: TEN_THOUSAND }}
                    runtime_key: routing.canary
                direct_response: {{ status: 200 }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{layer}"#
        );
        let b = load_str("envoy.yaml", &text).unwrap();
        let http = b.loaded.config.listeners[0].http.clone().unwrap();
        http.virtual_hosts.unwrap()[0].routes[0].match_.percentage
    };
    assert_eq!(routes(""), Some(0.25));
    assert_eq!(
        routes(
            "layered_runtime:\n  layers:\n  - name: s\n    static_layer: {routing.canary: 5000}\n"
        ),
        Some(50.0)
    );
}

/// A fuzz find: text serde's parser reads but the indexing parser does not (here a flow
/// mapping continued on a line less indented than its block) is refused where it stops
/// being YAML, not reported at a field the file cannot locate.
#[test]
fn yaml_only_the_lenient_parser_reads_is_refused_where_it_stops_being_yaml() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/envoy/front-proxy.yaml"
    ))
    .unwrap();
    let broken = text.replacen(
        "- match: { prefix: \"/\" }\n                route:",
        "- match: { prefix:\n   \"/\" }\n$               route:",
        1,
    );
    assert_ne!(broken, text, "the sample changed");
    let e = error_of(&broken);
    assert!(e.contains(": not valid YAML: "), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}
