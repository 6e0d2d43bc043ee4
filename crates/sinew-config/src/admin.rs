//! Bootstrap-level observability config: the admin HTTP server (`admin`) and whether
//! the proxy keeps metrics at all (`stats_config`), as in Envoy's bootstrap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;

use crate::ConfigError;

/// The admin HTTP server: readiness, metrics, cluster state, config dump, log levels,
/// drain. Envoy: bootstrap `admin.address`. Absent, no admin server runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `ip:port`, or a bare port (bound on 127.0.0.1, since the admin API can drain
    /// the proxy and should not face the network by accident).
    pub address: String,
    /// One line per admin request, as a listener's access logs (Envoy: `admin.access_log`
    /// and `admin.access_log_path`). None by default.
    #[serde(default)]
    pub access_log: Vec<crate::access_log::AccessLog>,
}

impl Admin {
    /// The socket address to bind, or None when `address` is neither `ip:port` nor a port.
    pub fn socket_address(&self) -> Option<SocketAddr> {
        let text = self.address.trim();
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Some(a);
        }
        let port = text.strip_prefix(':').unwrap_or(text).parse::<u16>().ok()?;
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    }
}

/// What the proxy counts. Envoy: bootstrap `stats_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    #[serde(default)]
    pub stats_matcher: StatsMatcher,
}

/// Envoy's `stats_config.stats_matcher`; only `reject_all` is supported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsMatcher {
    /// `true` turns every per-listener, per-route and per-cluster metric off: the request
    /// path then does no metric work at all. Default `false`.
    #[serde(default)]
    pub reject_all: bool,
}

impl StatsConfig {
    /// Whether metrics are kept (`stats_matcher.reject_all` is not set).
    pub fn enabled(config: &Option<StatsConfig>) -> bool {
        !config.as_ref().is_some_and(|s| s.stats_matcher.reject_all)
    }
}

/// Checks the `admin` field.
pub(crate) fn check(admin: Option<&Admin>) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Some(admin) = admin {
        crate::access_log::check("admin.access_log", &admin.access_log, &mut errors);
        if admin.socket_address().is_none() {
            errors.push(ConfigError::new(
                "admin.address",
                format!(
                    "`{}` is not an address: write ip:port (e.g. 127.0.0.1:9901) or a port",
                    admin.address
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_binds_on_loopback() {
        let a = |s: &str| {
            Admin {
                address: s.into(),
                access_log: Vec::new(),
            }
            .socket_address()
        };
        assert_eq!(a("9901"), Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(a(":9901"), Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(a("0.0.0.0:9901"), Some("0.0.0.0:9901".parse().unwrap()));
        assert_eq!(a("[::1]:9901"), Some("[::1]:9901".parse().unwrap()));
        assert_eq!(a("localhost:x"), None);
    }

    #[test]
    fn a_bad_admin_address_is_reported_at_its_field() {
        let loaded = crate::parse_str("t.yaml", "admin: {address: 'nope'}\n").unwrap();
        let errors = crate::validate(&loaded.config);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "admin.address");
    }

    #[test]
    fn the_admin_access_log_takes_a_listeners_log_fields_and_is_checked_like_one() {
        let loaded = crate::parse_str(
            "t.yaml",
            "admin: {address: 9901, access_log: [{path: /tmp/admin.log}, {path: /dev/stdout, format: '%BAD%'}]}\n",
        )
        .unwrap();
        let admin = loaded.config.admin.as_ref().unwrap();
        assert_eq!(admin.access_log[0].path, "/tmp/admin.log");
        let errors = crate::validate(&loaded.config);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].path.starts_with("admin.access_log[1]"),
            "{errors:?}"
        );
    }

    #[test]
    fn reject_all_turns_metrics_off() {
        let loaded = crate::parse_str(
            "t.yaml",
            "stats_config: {stats_matcher: {reject_all: true}}\n",
        )
        .unwrap();
        assert!(!StatsConfig::enabled(&loaded.config.stats_config));
        assert!(StatsConfig::enabled(&None));
    }
}
