//! Socket options in config: TCP keepalive on a listener's accepted sockets
//! (`listeners[].tcp_keepalive`) and on a cluster's upstream connections
//! (`clusters[].upstream_connection_options.tcp_keepalive`, Envoy's spelling), and the
//! proxy's `drain_timeout`.
//!
//! Keepalive is off unless configured, as in Envoy: HTTP connections are already closed by
//! their idle timeouts, and probes only earn their keep on long-lived quiet connections
//! (TCP proxy, gRPC streams, WebSockets) behind NAT or conntrack tables that forget them.
//! A `tcp_keepalive` block turns `SO_KEEPALIVE` on; a field it leaves out keeps the
//! kernel's value (Linux: `net.ipv4.tcp_keepalive_time` 7200 s, `_intvl` 75 s,
//! `_probes` 9), again as Envoy does.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::ConfigError;

/// Envoy's `config.core.v3.TcpKeepalive`. Times are whole seconds (the kernel counts in
/// seconds), written as durations: `60s`, `2m`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`, 1-127).
    #[serde(default)]
    pub keepalive_probes: Option<u32>,
    /// Idle time before the first probe (`TCP_KEEPIDLE`, 1 s to 32767 s).
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub keepalive_time: Option<Duration>,
    /// Time between probes (`TCP_KEEPINTVL`, 1 s to 32767 s).
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    pub keepalive_interval: Option<Duration>,
}

/// Envoy's `Cluster.upstream_connection_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConnectionOptions {
    /// Keepalive on every connection to the cluster's endpoints. Unset: off.
    #[serde(default)]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// Linux's ceiling for `TCP_KEEPIDLE` and `TCP_KEEPINTVL` (`MAX_TCP_KEEPIDLE`).
const MAX_KEEPALIVE_SECONDS: u64 = 32767;
/// Linux's ceiling for `TCP_KEEPCNT` (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_PROBES: u32 = 127;

impl TcpKeepalive {
    /// What is wrong with it, with `path` the path of the `tcp_keepalive` block.
    pub fn check(&self, path: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("keepalive_time", self.keepalive_time),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            let Some(value) = value else { continue };
            if value.subsec_nanos() != 0 {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must be whole seconds (the kernel counts keepalive in seconds)",
                ));
            } else if value.as_secs() == 0 || value.as_secs() > MAX_KEEPALIVE_SECONDS {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    format!("must be between 1s and {MAX_KEEPALIVE_SECONDS}s"),
                ));
            }
        }
        if let Some(probes) = self.keepalive_probes {
            if probes == 0 || probes > MAX_KEEPALIVE_PROBES {
                errors.push(ConfigError::new(
                    format!("{path}.keepalive_probes"),
                    format!("must be between 1 and {MAX_KEEPALIVE_PROBES}"),
                ));
            }
        }
        errors
    }
}

/// How long a drain gives connections by default (`drain_timeout`): longer than the
/// default request timeout (15 s), so a request within it finishes, and shorter than
/// Kubernetes' default termination grace period (30 s), so Sinew exits on its own
/// before it is killed. Envoy's `--drain-time-s` defaults to 600 s, which is too long for
/// a sidecar: the pod would be killed first.
pub fn default_drain_timeout() -> Duration {
    Duration::from_secs(20)
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn errors(yaml: &str) -> String {
        match load_str("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    fn config(listener_keepalive: &str, cluster_keepalive: &str) -> String {
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:0
    tcp_keepalive: {listener_keepalive}
    tcp: {{cluster: backend}}
clusters:
  - name: backend
    endpoints: [{{address: 127.0.0.1:9000}}]
    upstream_connection_options:
      tcp_keepalive: {cluster_keepalive}
"
        )
    }

    #[test]
    fn accepts_keepalive_on_listeners_and_clusters() {
        let yaml = config(
            "{keepalive_time: 60s, keepalive_interval: 10s, keepalive_probes: 3}",
            "{}",
        );
        assert_eq!(errors(&yaml), "");
        let loaded = load_str("t.yaml", &yaml).unwrap();
        let k = loaded.config.listeners[0].tcp_keepalive.clone().unwrap();
        assert_eq!(k.keepalive_time, Some(std::time::Duration::from_secs(60)));
        assert_eq!(k.keepalive_probes, Some(3));
        let c = &loaded.config.clusters[0].upstream_connection_options;
        assert_eq!(c.tcp_keepalive, Some(Default::default()));
        assert_eq!(
            loaded.config.drain_timeout,
            super::default_drain_timeout(),
            "drain_timeout has its default"
        );
    }

    #[test]
    fn rejects_keepalive_the_kernel_cannot_take_with_the_field_path() {
        let out = errors(&config(
            "{keepalive_time: 1500ms, keepalive_probes: 0}",
            "{keepalive_interval: 10h}",
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[0].starts_with("t.yaml:5:")
                && lines[0]
                    .contains("listeners[0].tcp_keepalive.keepalive_time: must be whole seconds"),
            "{out}"
        );
        assert!(
            lines[1]
                .contains("listeners[0].tcp_keepalive.keepalive_probes: must be between 1 and 127"),
            "{out}"
        );
        assert!(
            lines[2].contains(
                "clusters[0].upstream_connection_options.tcp_keepalive.keepalive_interval: must be between 1s and 32767s"
            ),
            "{out}"
        );
    }

    #[test]
    fn rejects_unknown_keepalive_fields() {
        let out = errors(&config("{keepalive_tme: 60s}", "{}"));
        assert!(out.contains("unknown field `keepalive_tme`"), "{out}");
    }
}
