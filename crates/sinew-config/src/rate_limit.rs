//! Rate-limit config: local token buckets (listener, virtual host, route), connection-rate
//! limits on listeners, and global limits shared by many proxies through Redis.
//!
//! Names follow Envoy where Envoy has the feature: the `local_ratelimit` HTTP filter
//! (`token_bucket`, `enable_x_ratelimit_headers`), the listener's
//! `local_ratelimit` network filter (connection rate), and the `ratelimit` filter with
//! Envoy's rate-limit service config (`domain`, `descriptors`, `rate_limit:
//! {requests_per_unit, unit}`, `failure_mode_deny`). Sinew talks to Redis itself instead of
//! to a separate rate-limit service, so the service's Redis settings sit here too.
//!
//! The validation of these fields lives here as well (called from `validate.rs`), so that
//! everything about rate limits reads in one place.

use std::time::Duration;

use serde::Deserialize;

use crate::duration;
use crate::ConfigError;

/// Envoy's `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`, trimmed to
/// what Sinew does: one token bucket, optionally one per value of a key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRateLimit {
    pub token_bucket: TokenBucket,
    /// One bucket per distinct value of this key (Envoy's `descriptors`, simplified to one
    /// key). Without it, every request at this level shares one bucket.
    #[serde(default)]
    pub key: Option<RateLimitKey>,
    /// With `key`: at most this many keys are tracked. At the bound, buckets that have
    /// refilled completely are forgotten (they hold nothing); if none has, new keys share
    /// one overflow bucket with the same limit until room frees up.
    #[serde(default = "default_max_keys")]
    pub max_keys: u32,
    /// Envoy's `enable_x_ratelimit_headers`: `draft_version_03` adds `x-ratelimit-limit`,
    /// `-remaining` and `-reset` to every response this limit applied to. Over-limit
    /// responses (429) always carry them.
    #[serde(default)]
    pub enable_x_ratelimit_headers: XRateLimitHeaders,
}

fn default_max_keys() -> u32 {
    10_000
}

/// Envoy's `envoy.type.v3.TokenBucket`: starts full with `max_tokens`; every
/// `fill_interval`, `tokens_per_fill` tokens are added, up to `max_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub max_tokens: u32,
    /// Envoy's default is 1.
    #[serde(default = "default_tokens_per_fill")]
    pub tokens_per_fill: u32,
    /// At least 50ms, as in Envoy.
    #[serde(deserialize_with = "duration::deserialize")]
    pub fill_interval: Duration,
}

fn default_tokens_per_fill() -> u32 {
    1
}

/// What a request is counted under. Spelled `client_ip`, `route` or `{header: NAME}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The downstream peer's IP address (Envoy's `remote_address` action).
    ClientIp,
    /// The route the request took (Envoy's `destination_cluster`-like per-route counting).
    Route,
    /// The value of a request header; requests without it share one bucket (Envoy's
    /// `request_headers` action).
    Header(String),
}

impl<'de> Deserialize<'de> for RateLimitKey {
    /// By hand: serde's derive wants YAML tags (`!header x-user`) for a variant with data,
    /// and `{header: x-user}` reads better beside the other fields.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct KeyVisitor;
        const EXPECTED: &str = "`client_ip`, `route` or `{header: NAME}`";
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = RateLimitKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateLimitKey, E> {
                match v {
                    "client_ip" => Ok(RateLimitKey::ClientIp),
                    "route" => Ok(RateLimitKey::Route),
                    _ => Err(E::custom(format!("unknown key `{v}`, expected {EXPECTED}"))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RateLimitKey, A::Error> {
                let key = match map.next_key::<String>()? {
                    Some(k) if k == "header" => RateLimitKey::Header(map.next_value()?),
                    Some(k) => {
                        return Err(de::Error::custom(format!(
                            "unknown key `{k}`, expected {EXPECTED}"
                        )))
                    }
                    None => return Err(de::Error::custom(format!("expected {EXPECTED}"))),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom(format!("expected {EXPECTED}")));
                }
                Ok(key)
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// How the local limits of a listener, its virtual hosts and their routes combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalRateLimitLevels {
    /// Each configured level applies in turn, and a request needs a token at each: a
    /// route's limit cannot open a hole in the listener's.
    #[default]
    EveryLevel,
    /// Only the most specific configured level applies (route, else virtual host, else
    /// listener), as Envoy applies per-route filter config. Configs mapped from xDS and
    /// Envoy bootstraps use this.
    MostSpecific,
    /// No local limit applies at any level. What an Envoy HTTP connection manager without
    /// the `local_ratelimit` filter maps to: Envoy applies the per-route and
    /// per-virtual-host configs only through that filter.
    Disabled,
}

/// Envoy's `x_ratelimit_headers` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XRateLimitHeaders {
    /// Only over-limit (429) responses carry the headers.
    #[default]
    Off,
    /// Every response the limit applied to carries them.
    #[serde(alias = "DRAFT_VERSION_03")]
    DraftVersion03,
}

/// Envoy's `envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit`: new
/// connections on a listener take a token each; without one they are closed at accept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRateLimit {
    pub token_bucket: TokenBucket,
}

/// Envoy's `ratelimit` HTTP filter together with the rate-limit service's config
/// (`domain`, `descriptors`), with the counters kept in Redis and shared by every proxy
/// that names the same Redis and domain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRateLimit {
    /// Namespace of the counters in Redis (Envoy's `domain`).
    pub domain: String,
    pub redis: RedisSettings,
    /// Envoy's `failure_mode_deny`: when Redis is down or slow, answer 429 (true) or let
    /// requests through (false, the default).
    #[serde(default)]
    pub failure_mode_deny: bool,
    /// `fixed` windows (counters reset at each window's start) or `sliding` (the previous
    /// window's count weighted by how much of it still overlaps the sliding window).
    #[serde(default)]
    pub window: WindowKind,
    /// Every descriptor applies; a request must be under all of them.
    pub descriptors: Vec<GlobalDescriptor>,
    /// As for local limits.
    #[serde(default)]
    pub enable_x_ratelimit_headers: XRateLimitHeaders,
}

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `host:port`.
    pub address: String,
    /// Longest a request waits for a decision (Envoy's `ratelimit` filter `timeout`); after
    /// it, `failure_mode_deny` decides.
    #[serde(
        default = "default_redis_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub timeout: Duration,
    /// Longest one background connection attempt may take. Requests never wait for it.
    #[serde(
        default = "default_redis_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connect_timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(25)
}
fn default_redis_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    #[default]
    Fixed,
    Sliding,
}

/// One counter (per value of `key`, or one for all requests without a key) and its limit,
/// as in the rate-limit service's `descriptors`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalDescriptor {
    #[serde(default)]
    pub key: Option<RateLimitKey>,
    pub rate_limit: RateLimitUnit,
}

/// The rate-limit service's `rate_limit: {requests_per_unit, unit}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitUnit {
    pub requests_per_unit: u32,
    pub unit: TimeUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Second,
    Minute,
    Hour,
}

impl TimeUnit {
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            TimeUnit::Second => 1,
            TimeUnit::Minute => 60,
            TimeUnit::Hour => 3600,
        })
    }
}

/// Envoy refuses a `fill_interval` under 50ms: shorter ones only add timer work.
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

pub(crate) fn check_token_bucket(path: &str, b: &TokenBucket, errors: &mut Vec<ConfigError>) {
    if b.max_tokens == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_tokens"),
            "must be at least 1",
        ));
    }
    if b.tokens_per_fill == 0 {
        errors.push(ConfigError::new(
            format!("{path}.tokens_per_fill"),
            "must be at least 1",
        ));
    }
    if b.fill_interval < MIN_FILL_INTERVAL {
        errors.push(ConfigError::new(
            format!("{path}.fill_interval"),
            "must be at least 50ms",
        ));
    }
}

fn check_key(path: &str, key: &Option<RateLimitKey>, errors: &mut Vec<ConfigError>) {
    if let Some(RateLimitKey::Header(name)) = key {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            errors.push(ConfigError::new(
                format!("{path}.key.header"),
                format!("{name:?} is not a valid header name"),
            ));
        }
    }
}

/// Checks a `local_rate_limit` at `path`.
pub(crate) fn check_local(path: &str, l: &LocalRateLimit, errors: &mut Vec<ConfigError>) {
    check_token_bucket(&format!("{path}.token_bucket"), &l.token_bucket, errors);
    check_key(path, &l.key, errors);
    if l.max_keys == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_keys"),
            "must be at least 1",
        ));
    }
}

/// Checks a `global_rate_limit` at `path`.
pub(crate) fn check_global(path: &str, g: &GlobalRateLimit, errors: &mut Vec<ConfigError>) {
    if g.domain.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.domain"),
            "must not be empty",
        ));
    }
    let address_ok = g
        .redis
        .address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !address_ok {
        errors.push(ConfigError::new(
            format!("{path}.redis.address"),
            format!("{:?} is not host:port", g.redis.address),
        ));
    }
    for (field, value) in [
        ("timeout", g.redis.timeout),
        ("connect_timeout", g.redis.connect_timeout),
    ] {
        if value.is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.redis.{field}"),
                "must be positive",
            ));
        }
    }
    if g.descriptors.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.descriptors"),
            "must list at least one descriptor",
        ));
    }
    for (i, d) in g.descriptors.iter().enumerate() {
        let dp = format!("{path}.descriptors[{i}]");
        check_key(&dp, &d.key, errors);
        if d.rate_limit.requests_per_unit == 0 {
            errors.push(ConfigError::new(
                format!("{dp}.rate_limit.requests_per_unit"),
                "must be at least 1",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    fn config(listener: &str, http: &str, vhost: &str, route: &str) -> String {
        format!(
            "
listeners:
  - name: web
    address: 127.0.0.1:0
{listener}
    http:
{http}
      virtual_hosts:
        - name: all
          domains: ['*']
{vhost}
          routes:
            - match: {{prefix: /}}
              cluster: backend
{route}
clusters:
  - name: backend
    endpoints: [{{address: 127.0.0.1:9000}}]
"
        )
    }

    fn errors(yaml: &str) -> String {
        match load_str("t.yaml", yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn accepts_every_level_and_key_kind() {
        let yaml = config(
            "    connection_rate_limit: {token_bucket: {max_tokens: 5, fill_interval: 1s}}",
            "      local_rate_limit: {token_bucket: {max_tokens: 100, tokens_per_fill: 100, fill_interval: 1s}, key: client_ip}
      global_rate_limit:
        domain: edge
        redis: {address: '127.0.0.1:6379'}
        window: sliding
        descriptors:
          - rate_limit: {requests_per_unit: 10, unit: minute}
          - key: {header: x-api-key}
            rate_limit: {requests_per_unit: 10, unit: second}",
            "          local_rate_limit: {token_bucket: {max_tokens: 5, fill_interval: 1s}, key: {header: x-user}}",
            "              local_rate_limit: {token_bucket: {max_tokens: 5, fill_interval: 1s}, key: route, enable_x_ratelimit_headers: DRAFT_VERSION_03}",
        );
        let loaded = load_str("t.yaml", &yaml).unwrap_or_else(|d| panic!("{d}"));
        let http = loaded.config.listeners[0].http.as_ref().unwrap();
        let global = http.global_rate_limit.as_ref().unwrap();
        assert_eq!(global.redis.timeout, std::time::Duration::from_millis(25));
        assert!(!global.failure_mode_deny);
        assert_eq!(
            global.descriptors[1].key,
            Some(super::RateLimitKey::Header("x-api-key".into()))
        );
    }

    #[test]
    fn rejects_empty_buckets_short_intervals_and_bad_redis_settings() {
        let yaml = config(
            "    connection_rate_limit: {token_bucket: {max_tokens: 0, fill_interval: 10ms}}",
            "      global_rate_limit: {domain: '', redis: {address: nowhere, timeout: 0}, descriptors: []}",
            "          local_rate_limit: {token_bucket: {max_tokens: 1, tokens_per_fill: 0, fill_interval: 1s}, key: {header: 'bad header'}, max_keys: 0}",
            "",
        );
        let e = errors(&yaml);
        for expected in [
            "listeners[0].connection_rate_limit.token_bucket.max_tokens: must be at least 1",
            "listeners[0].connection_rate_limit.token_bucket.fill_interval: must be at least 50ms",
            "listeners[0].http.global_rate_limit.domain: must not be empty",
            "listeners[0].http.global_rate_limit.redis.address: \"nowhere\" is not host:port",
            "listeners[0].http.global_rate_limit.redis.timeout: must be positive",
            "listeners[0].http.global_rate_limit.descriptors: must list at least one descriptor",
            "listeners[0].http.virtual_hosts[0].local_rate_limit.token_bucket.tokens_per_fill: must be at least 1",
            "listeners[0].http.virtual_hosts[0].local_rate_limit.key.header: \"bad header\" is not a valid header name",
            "listeners[0].http.virtual_hosts[0].local_rate_limit.max_keys: must be at least 1",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }

    #[test]
    fn rejects_unknown_keys_with_their_position() {
        let yaml = config(
            "",
            "",
            "",
            "              local_rate_limit: {token_bucket: {max_tokens: 1, fill_interval: 1s}, key: cookie}",
        );
        let e = errors(&yaml);
        assert!(
            e.contains("local_rate_limit.key: unknown key `cookie`"),
            "{e}"
        );
    }
}
