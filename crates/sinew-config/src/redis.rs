//! A listener's `redis` section: a Redis (RESP) proxy, after Envoy's `redis_proxy`
//! network filter. Each command is routed by its first key: the longest `prefix_routes`
//! prefix the key starts with names the cluster, else `catch_all_cluster`. The
//! endpoints of that cluster are its shards, chosen per key by consistent hash
//! (twemproxy's ketama over the endpoints, weights honoured).

use std::time::Duration;

use serde::Deserialize;

use crate::{duration, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisProxy {
    /// Routes by key prefix; the longest matching prefix wins.
    #[serde(default)]
    pub prefix_routes: Vec<RedisPrefixRoute>,
    /// Whether prefixes match keys regardless of ASCII case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// The cluster of keys no prefix matches; without it they get an error.
    #[serde(default)]
    pub catch_all_cluster: Option<String>,
    /// How long a command may wait for its shard's reply before the client gets an
    /// error (and the shard's connection is closed, as its replies are now out of step).
    #[serde(
        default = "default_op_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub op_timeout: Duration,
    /// Commands one client may have in flight; reading its further commands waits.
    #[serde(default = "default_max_pipeline")]
    pub max_pipeline: u32,
    /// Hash only the part of a key between its first `{` and the next `}` when that
    /// is not empty, so related keys land on one shard (twemproxy's `hash_tag: "{}"`).
    #[serde(default)]
    pub enable_hashtagging: bool,
    /// How a key is hashed onto the continuum (twemproxy's `hash`).
    #[serde(default)]
    pub hash: RedisHash,
}

/// Key hashes, by twemproxy's names, so a pool moved from twemproxy keeps its keys where
/// they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum RedisHash {
    /// twemproxy's default: FNV-1a in 32 bits. Fast, but keys that differ only in their
    /// last bytes (`user:1`, `user:2`) hash close together and crowd onto few shards.
    #[default]
    #[serde(rename = "fnv1a_64")]
    Fnv1a64,
    /// The first four bytes of the key's MD5: spreads any keys evenly.
    #[serde(rename = "md5")]
    Md5,
}

fn default_op_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_max_pipeline() -> u32 {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisPrefixRoute {
    pub prefix: String,
    pub cluster: String,
    /// Whether the prefix is cut from keys before they go to the shard.
    #[serde(default)]
    pub remove_prefix: bool,
}

impl RedisProxy {
    /// Every cluster the proxy sends to, with its field path under the section.
    pub fn clusters(&self) -> impl Iterator<Item = (String, &str)> {
        let routes = self
            .prefix_routes
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("prefix_routes[{i}].cluster"), r.cluster.as_str()));
        routes.chain(
            self.catch_all_cluster
                .iter()
                .map(|c| ("catch_all_cluster".to_string(), c.as_str())),
        )
    }
}

/// Checks what does not need other parts of the config; `p` is the section's path.
pub(crate) fn check(p: &str, r: &RedisProxy, errors: &mut Vec<ConfigError>) {
    let mut err = |field: String, message: String| errors.push(ConfigError::new(field, message));
    if r.prefix_routes.is_empty() && r.catch_all_cluster.is_none() {
        err(
            p.to_string(),
            "set `prefix_routes` or `catch_all_cluster`: no key would have a cluster".into(),
        );
    }
    if r.op_timeout.is_zero() {
        err(format!("{p}.op_timeout"), "must be positive".into());
    }
    if r.max_pipeline == 0 {
        err(format!("{p}.max_pipeline"), "must be at least 1".into());
    }
    for (i, route) in r.prefix_routes.iter().enumerate() {
        let same = |other: &RedisPrefixRoute| match r.case_insensitive {
            true => other.prefix.eq_ignore_ascii_case(&route.prefix),
            false => other.prefix == route.prefix,
        };
        if let Some(j) = r.prefix_routes[..i].iter().position(same) {
            err(
                format!("{p}.prefix_routes[{i}].prefix"),
                format!(
                    "{:?} is already the prefix of prefix_routes[{j}]",
                    route.prefix
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(yaml: &str) -> String {
        match crate::load_str("r.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    const CLUSTERS: &str = "
clusters:
  - {name: users, endpoints: [{address: 127.0.0.1:7001}]}
  - {name: cache, endpoints: [{address: 127.0.0.1:7002}, {address: 127.0.0.1:7003}]}
";

    #[test]
    fn a_redis_listener_with_prefix_routes_and_a_catch_all_loads() {
        let yaml = format!(
            "listeners:
  - name: r
    address: 127.0.0.1:0
    redis:
      prefix_routes: [{{prefix: 'user:', cluster: users, remove_prefix: true}}]
      catch_all_cluster: cache
      op_timeout: 250ms
{CLUSTERS}"
        );
        let loaded = crate::load_str("r.yaml", &yaml).expect("loads");
        let r = loaded.config.listeners[0].redis.as_ref().unwrap();
        assert_eq!(r.op_timeout, std::time::Duration::from_millis(250));
        assert!(r.prefix_routes[0].remove_prefix);
        assert_eq!(r.max_pipeline, 1024);
    }

    #[test]
    fn redis_errors_name_file_line_and_field() {
        let yaml = format!(
            "listeners:
  - name: r
    address: 127.0.0.1:0
    tcp: {{cluster: cache}}
    redis:
      prefix_routes:
        - {{prefix: 'a', cluster: nope}}
        - {{prefix: 'a', cluster: users}}
      op_timeout: 0s
      max_pipeline: 0
{CLUSTERS}"
        );
        let out = errors(&yaml);
        for wanted in [
            "listeners[0]: set one of `http`, `tcp`, `rpc` or `redis`, not several",
            "r.yaml:7:",
            "listeners[0].redis.prefix_routes[0].cluster: no cluster named \"nope\"",
            "listeners[0].redis.prefix_routes[1].prefix: \"a\" is already the prefix of prefix_routes[0]",
            "listeners[0].redis.op_timeout: must be positive",
            "listeners[0].redis.max_pipeline: must be at least 1",
        ] {
            assert!(out.contains(wanted), "{wanted:?} not in {out}");
        }
        let none = "listeners:\n  - {name: r, address: 127.0.0.1:0, redis: {}}\n";
        assert!(errors(none).contains("set `prefix_routes` or `catch_all_cluster`"));
        let unknown = format!(
            "listeners:\n  - name: r\n    address: 127.0.0.1:0\n    redis: {{catch_all_cluster: cache, read_policy: any}}\n{CLUSTERS}"
        );
        let out = errors(&unknown);
        assert!(
            out.contains("r.yaml:4:") && out.contains("read_policy"),
            "{out}"
        );
    }
}
