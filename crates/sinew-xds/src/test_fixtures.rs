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
