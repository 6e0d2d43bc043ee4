//! Envoy bootstraps written by tests: listeners whose HTTP connection manager routes every
//! request to one cluster through the router, with room for the fields a test is about,
//! and the real binary started on the file. Tests spell Envoy's own field names, so what
//! they check is the mapping a user's bootstrap goes through.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::{envoy_static_cluster, start_proxy_file, ChildGuard, TestClient};

/// One listener on 127.0.0.1 with an HTTP connection manager and a catch-all route.
pub struct HttpListener {
    name: String,
    port: u16,
    cluster: String,
    listener_fields: String,
    manager_fields: String,
    route_fields: String,
}

/// A listener `name` on `port` whose one route sends everything to `cluster`.
pub fn http_listener(name: &str, port: u16, cluster: &str) -> HttpListener {
    HttpListener {
        name: name.into(),
        port,
        cluster: cluster.into(),
        listener_fields: String::new(),
        manager_fields: String::new(),
        route_fields: String::new(),
    }
}

impl HttpListener {
    /// Fields of the `Listener` itself, as `key: value` lines (block or flow style on one
    /// line each), indented here.
    pub fn listener_field(mut self, line: &str) -> Self {
        self.listener_fields.push_str(&format!("    {line}\n"));
        self
    }

    /// Fields of the `HttpConnectionManager`, one line each.
    pub fn manager_field(mut self, line: &str) -> Self {
        self.manager_fields.push_str(&format!("          {line}\n"));
        self
    }

    /// Fields of the catch-all route's `RouteAction` (beside `cluster`), one line each.
    pub fn route_field(mut self, line: &str) -> Self {
        self.route_fields
            .push_str(&format!("                  {line}\n"));
        self
    }

    /// The listener as an item of `static_resources.listeners`.
    pub fn yaml(&self) -> String {
        let HttpListener {
            name,
            port,
            cluster,
            listener_fields,
            manager_fields,
            route_fields,
        } = self;
        format!(
            r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
{listener_fields}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
{manager_fields}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route:
                  cluster: {cluster}
{route_fields}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    }
}

/// A bootstrap of these listeners, one static cluster per `(name, address)`, and an admin
/// server on `admin_port`.
pub fn bootstrap(
    listeners: &[HttpListener],
    clusters: &[(&str, SocketAddr)],
    admin_port: u16,
) -> String {
    let listeners: String = listeners.iter().map(HttpListener::yaml).collect();
    bootstrap_of(&listeners, clusters, admin_port)
}

/// A listener `name` on 127.0.0.1:`port` whose one filter is the network filter `filter`
/// (`envoy.filters.network.redis_proxy`…) with `@type` `type_url` and the YAML `fields`
/// (each line indented by 10 spaces, under `typed_config`).
pub fn network_listener(
    name: &str,
    port: u16,
    filter: &str,
    type_url: &str,
    fields: &str,
) -> String {
    format!(
        r#"  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: {filter}
        typed_config:
          "@type": {type_url}
          stat_prefix: {name}
{fields}"#
    )
}

/// A bootstrap of `listeners` (YAML list items of `static_resources.listeners`), one
/// static cluster per `(name, address)`, and an admin server on `admin_port`.
pub fn bootstrap_of(listeners: &str, clusters: &[(&str, SocketAddr)], admin_port: u16) -> String {
    let clusters: String = clusters
        .iter()
        .map(|(name, addr)| envoy_static_cluster(name, *addr))
        .collect();
    format!(
        "static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n"
    )
}

/// `sinew proxy` on the bootstrap at `file` (written by the caller), once its admin server
/// on `admin_port` says it is ready; killed when dropped.
pub async fn start(file: &Path, admin_port: u16) -> ChildGuard {
    let proxy = start_proxy_file(file);
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let client = TestClient::http1();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.try_get(admin, "/ready", &[]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin API never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy
}
