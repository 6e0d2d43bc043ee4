//! Bootstrap text the mappers' tests share: an HTTP listener with given HTTP filters,
//! and the static cluster `app` it routes to.

/// The static cluster `app` (one endpoint on 127.0.0.1:19001), as the last part of
/// `static_resources`.
pub(crate) const APP_CLUSTER: &str = r#"  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: 19001 }
"#;

/// A bootstrap whose one listener (`web`, 127.0.0.1:8080) runs an HTTP connection
/// manager with `http_filters` (YAML list items indented for it) before the router,
/// routing everything to `app`.
pub(crate) fn http_listener(http_filters: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: web
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 8080 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: app }}
          http_filters:
{http_filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{APP_CLUSTER}"#
    )
}

/// A bootstrap whose one listener ends with the network filter `filter` of `@type`
/// `type_url` and the YAML `fields` (indented 10 spaces, under `typed_config`), and the
/// static cluster `app`.
pub(crate) fn network_filter_listener(filter: &str, type_url: &str, fields: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: front
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 9000 }}
    filter_chains:
    - filters:
      - name: {filter}
        typed_config:
          "@type": {type_url}
          stat_prefix: front
{fields}
{APP_CLUSTER}"#
    )
}

/// What loading `text` as a bootstrap refuses it with; a panic if it is accepted.
pub(crate) fn refusal_of(text: &str) -> String {
    match crate::bootstrap::load_str("envoy.yaml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(d) => d.to_string(),
    }
}
