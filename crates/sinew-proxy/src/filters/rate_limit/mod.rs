//! The request handler's rate-limit phase, between "route" and "act": local token buckets
//! at the listener, virtual-host and route levels, then the global (Redis) limit.
//!
//! Levels combine by applying each configured one in turn — listener, virtual host,
//! route — and a request must get through all of them. Envoy instead lets the most
//! specific per-route config replace the others (`local_rate_limit_levels:
//! most_specific`, which configs mapped from Envoy's use); by default Sinew does not, because the levels
//! protect different things (the listener limit guards the proxy and everything behind
//! it, a route limit guards one backend), and a route limit must not open a hole in the
//! listener's. A request refused at a later level has already taken its token at the
//! earlier ones: that is the price of not holding tokens in reserve.
//!
//! Buckets are state, not config, yet they live in the config snapshot so the request
//! path reads them without a lock. On reload, a level whose limit is unchanged (same
//! listener, same virtual host and route names, equal `local_rate_limit`) keeps its
//! buckets — a reload must not hand every client a fresh burst — while a changed limit
//! starts full. Route and virtual-host buckets belong to the listener: two listeners
//! sharing a `route_config` count separately. The global limiter likewise keeps its Redis
//! connection across a reload that leaves `global_rate_limit` unchanged.
//!
//! Nothing configured = `HttpManager::rate_limits` is None, checked once per request.
//!
//! RPC listeners use the same compiled limits for their calls ([`compile_rpc`],
//! [`HttpRateLimits::check_call`]): a call is a request to its service's virtual host at
//! its method's route, and a refusal is the protocol's "overloaded" error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sinew_router::{Route, VirtualHost};
use sinew_stream::DownstreamRequest;

use super::Routed;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use sinew_config::model::{self, RateLimitKey, XRateLimitHeaders};
use sinew_ratelimit::{
    now_nanos, BucketSpec, Counter, GlobalLimiter, GlobalVerdict, KeyedBuckets, RedisOptions, Take,
    TokenBucket, Window,
};

use crate::stream::body::ResponseBody;
use crate::stream::flags::ResponseFlags;
use crate::stream::local_reply;

/// One listener's rate limits, compiled.
pub struct HttpRateLimits {
    listener: Option<Arc<LocalLimit>>,
    /// Only the most specific level applies (`local_rate_limit_levels: most_specific`).
    most_specific: bool,
    /// Indexed like the route table's virtual hosts.
    vhosts: Box<[VhostLimits]>,
    global: Option<Arc<GlobalLimit>>,
    /// Every local limit by its level's name, for the next reload to find.
    named: HashMap<LevelName, Arc<LocalLimit>>,
}

/// (virtual host, route) names; (None, None) is the listener level.
type LevelName = (Option<String>, Option<String>);

#[derive(Default)]
struct VhostLimits {
    own: Option<Arc<LocalLimit>>,
    /// Indexed like the virtual host's routes; empty when no route has a limit.
    routes: Box<[Option<Arc<LocalLimit>>]>,
}

/// One level's local limit.
struct LocalLimit {
    config: model::LocalRateLimit,
    buckets: Buckets,
    headers_always: bool,
}

enum Buckets {
    One(TokenBucket),
    Keyed(Key, KeyedBuckets),
}

enum Key {
    ClientIp,
    Route,
    Header(HeaderName),
}

struct GlobalLimit {
    config: model::GlobalRateLimit,
    limiter: GlobalLimiter,
    descriptors: Box<[GlobalDescriptor]>,
}

struct GlobalDescriptor {
    /// `sinew:<domain>:<index>:` — the counter's key before the request's value.
    prefix: Box<[u8]>,
    key: Option<Key>,
    limit: u32,
    window: Duration,
}

/// What the response reports of the tightest limit that applied (the x-ratelimit-*
/// headers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

/// Where a request stands, for keys: its headers, its client address and its route's
/// position.
struct RequestKeys<'a> {
    headers: &'a HeaderMap,
    client: IpAddr,
    vhost: usize,
    route: usize,
}

impl RequestKeys<'_> {
    /// The request's value for `key`, written into `scratch` when it is not already bytes
    /// somewhere. A missing header is the empty value: requests without it share a bucket.
    fn value<'b>(&'b self, key: &Key, scratch: &'b mut [u8; 16]) -> &'b [u8] {
        match key {
            Key::ClientIp => match self.client {
                IpAddr::V4(v4) => {
                    scratch[..4].copy_from_slice(&v4.octets());
                    &scratch[..4]
                }
                IpAddr::V6(v6) => {
                    *scratch = v6.octets();
                    &scratch[..]
                }
            },
            Key::Route => {
                scratch[..8].copy_from_slice(&(self.vhost as u64).to_le_bytes());
                scratch[8..].copy_from_slice(&(self.route as u64).to_le_bytes());
                &scratch[..]
            }
            Key::Header(name) => self.headers.get(name).map_or(&b""[..], |v| v.as_bytes()),
        }
    }

    /// The value as text for a Redis key.
    fn text(&self, key: &Key, out: &mut Vec<u8>) {
        match key {
            Key::ClientIp => out.extend_from_slice(self.client.to_string().as_bytes()),
            Key::Route => {
                out.extend_from_slice(format!("{}/{}", self.vhost, self.route).as_bytes())
            }
            Key::Header(name) => {
                if let Some(v) = self.headers.get(name) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
    }
}

impl LocalLimit {
    fn new(config: &model::LocalRateLimit) -> Self {
        let b = &config.token_bucket;
        let spec = BucketSpec::new(b.max_tokens, b.tokens_per_fill, b.fill_interval);
        let buckets = match &config.key {
            None => Buckets::One(TokenBucket::new(spec)),
            Some(key) => Buckets::Keyed(Key::new(key), KeyedBuckets::new(spec, config.max_keys)),
        };
        Self {
            config: config.clone(),
            buckets,
            headers_always: config.enable_x_ratelimit_headers == XRateLimitHeaders::DraftVersion03,
        }
    }

    /// Takes a token at `now` (a [`now_nanos`] reading); Err(quota) when there was none.
    fn take(
        &self,
        keys: &RequestKeys<'_>,
        now: u64,
        quota: &mut Option<Quota>,
    ) -> Result<(), Quota> {
        let (take, spec): (Take, &BucketSpec) = match &self.buckets {
            Buckets::One(bucket) => (bucket.try_take_at(now), bucket.spec()),
            Buckets::Keyed(key, table) => {
                let mut scratch = [0u8; 16];
                (
                    table.try_take_at(keys.value(key, &mut scratch), now),
                    table.spec(),
                )
            }
        };
        if take.allowed && !self.headers_always {
            return Ok(());
        }
        let this = Quota {
            limit: spec.max_tokens,
            remaining: take.remaining,
            reset: spec.until_next_fill(now),
        };
        if !take.allowed {
            return Err(this);
        }
        tighten(quota, this);
        Ok(())
    }
}

impl Key {
    fn new(key: &RateLimitKey) -> Self {
        match key {
            RateLimitKey::ClientIp => Key::ClientIp,
            RateLimitKey::Route => Key::Route,
            RateLimitKey::Header(name) => {
                Key::Header(HeaderName::from_bytes(name.as_bytes()).expect("validated header name"))
            }
        }
    }
}

fn tighten(quota: &mut Option<Quota>, this: Quota) {
    if quota.is_none_or(|q| this.remaining < q.remaining) {
        *quota = Some(this);
    }
}

/// The index of `one` in `all`, if it is one of its elements. Safe pointer arithmetic:
/// the route table hands out references, and rate limits sit in arrays parallel to it.
fn position<T>(all: &[T], one: &T) -> Option<usize> {
    let size = std::mem::size_of::<T>().max(1);
    let offset = (one as *const T as usize).wrapping_sub(all.as_ptr() as usize);
    let i = offset / size;
    (i * size == offset && i < all.len() && std::ptr::eq(&all[i], one)).then_some(i)
}

/// Why a request or call was refused.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// A level (or the global limit) had no token left.
    OverLimit(Quota),
    /// The global limit's service could not be asked and `failure_mode_deny` is set.
    ServiceError,
}

impl Refusal {
    /// The HTTP reply: a 429 with the x-ratelimit-* headers, or Envoy's 500 for a rate
    /// limit service that failed closed.
    fn reply(self, grpc: bool) -> Response<ResponseBody> {
        match self {
            Refusal::OverLimit(quota) => over_limit(quota, grpc),
            // Envoy's `failure_mode_deny`: a 500 flagged RLSE, as Envoy answers.
            Refusal::ServiceError => local_reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ResponseFlags::RATE_LIMIT_SERVICE_ERROR,
                "rate limit service unavailable",
                grpc,
            ),
        }
    }
}

impl HttpRateLimits {
    /// The rate-limit phase: Ok with what to report on the response, or the reply that
    /// refuses the request.
    pub(crate) async fn check(
        &self,
        routed: &Routed<'_>,
        req: &DownstreamRequest,
        client: IpAddr,
    ) -> Result<Option<Quota>, Response<ResponseBody>> {
        self.check_call(
            routed.virtual_hosts,
            routed.vhost,
            routed.route,
            req.headers(),
            client,
        )
        .await
        .map_err(|r| r.reply(routed.grpc))
    }

    /// Takes a token at every level that applies to a request (or RPC call) routed to
    /// `route` of `vhost` (one of `virtual_hosts`), with `headers` for header keys.
    pub(crate) async fn check_call(
        &self,
        virtual_hosts: &[VirtualHost],
        vhost: &VirtualHost,
        route: &Route,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Option<Quota>, Refusal> {
        let vhost_index = position(virtual_hosts, vhost).unwrap_or(usize::MAX);
        let route_index = position(vhost.routes(), route).unwrap_or(usize::MAX);
        let keys = RequestKeys {
            headers,
            client,
            vhost: vhost_index,
            route: route_index,
        };
        let levels = self.vhosts.get(vhost_index);
        let mut quota = None;
        // One clock reading for every level: each costs about 75 instructions.
        let now = now_nanos();
        let mut applying = [
            levels.and_then(|v| v.routes.get(route_index)?.as_ref()),
            levels.and_then(|v| v.own.as_ref()),
            self.listener.as_ref(),
        ];
        if self.most_specific {
            let first = applying.iter().position(Option::is_some).unwrap_or(0);
            for (i, level) in applying.iter_mut().enumerate() {
                if i != first {
                    *level = None;
                }
            }
        }
        // Outermost first: a request refused by the listener's limit spends no token of
        // its route's.
        for limit in applying.into_iter().rev().flatten() {
            if let Err(over) = limit.take(&keys, now, &mut quota) {
                return Err(Refusal::OverLimit(over));
            }
        }
        if let Some(global) = &self.global {
            // Boxed: the Redis round trip's state is large, and inline it would size the
            // future of every request on every listener, limited or not.
            Box::pin(global.check(&keys, &mut quota)).await?;
        }
        Ok(quota)
    }
}

impl GlobalLimit {
    async fn check(
        &self,
        keys: &RequestKeys<'_>,
        quota: &mut Option<Quota>,
    ) -> Result<(), Refusal> {
        let counters: Vec<Counter> = self
            .descriptors
            .iter()
            .map(|d| {
                let mut key = d.prefix.to_vec();
                if let Some(k) = &d.key {
                    keys.text(k, &mut key);
                }
                Counter {
                    key,
                    limit: d.limit,
                    window: d.window,
                }
            })
            .collect();
        match self.limiter.decide(&counters).await {
            GlobalVerdict::Allowed {
                limit,
                remaining,
                reset,
            } => {
                if self.config.enable_x_ratelimit_headers == XRateLimitHeaders::DraftVersion03 {
                    tighten(
                        quota,
                        Quota {
                            limit,
                            remaining,
                            reset,
                        },
                    );
                }
                Ok(())
            }
            GlobalVerdict::OverLimit { limit, reset } => Err(Refusal::OverLimit(Quota {
                limit,
                remaining: 0,
                reset,
            })),
            GlobalVerdict::Unavailable if self.config.failure_mode_deny => {
                Err(Refusal::ServiceError)
            }
            GlobalVerdict::Unavailable => Ok(()),
        }
    }
}

/// The 429 (or, for gRPC, UNAVAILABLE) for a request over a limit.
fn over_limit(quota: Quota, grpc: bool) -> Response<ResponseBody> {
    let mut response = local_reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        ResponseFlags::RATE_LIMITED,
        "rate limited",
        grpc,
    );
    add_headers(&mut response, quota);
    response
}

/// Adds the x-ratelimit-* headers (Envoy's DRAFT_VERSION_03 names: limit, remaining, and
/// whole seconds until the bucket's next fill or the window's end, rounded up).
pub(crate) fn add_headers(response: &mut Response<ResponseBody>, quota: Quota) {
    let reset = quota.reset.as_secs() + u64::from(quota.reset.subsec_nanos() > 0);
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(quota.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
}

/// Compiles a listener's rate limits, keeping the buckets of unchanged levels from
/// `previous`. None when no level has a limit.
pub(crate) fn compile(
    http: &model::HttpConnectionManager,
    vhosts: &[model::VirtualHost],
    previous: Option<&HttpRateLimits>,
) -> Option<Arc<HttpRateLimits>> {
    compile_levels(
        &http.local_rate_limit,
        http.local_rate_limit_levels,
        http.global_rate_limit.as_ref(),
        vhosts,
        previous,
    )
}

/// Compiles an RPC listener's local limits (its own `local_rate_limit`, its virtual
/// hosts' and routes'), every level applying, keeping unchanged buckets from `previous`.
/// None when no level has a limit.
pub(crate) fn compile_rpc(
    rpc: &model::RpcProxy,
    vhosts: &[model::VirtualHost],
    previous: Option<&HttpRateLimits>,
) -> Option<Arc<HttpRateLimits>> {
    compile_levels(
        &rpc.local_rate_limit,
        model::LocalRateLimitLevels::EveryLevel,
        None,
        vhosts,
        previous,
    )
}

fn compile_levels(
    listener_limit: &Option<model::LocalRateLimit>,
    levels: model::LocalRateLimitLevels,
    global: Option<&model::GlobalRateLimit>,
    vhosts: &[model::VirtualHost],
    previous: Option<&HttpRateLimits>,
) -> Option<Arc<HttpRateLimits>> {
    let local_on = levels != model::LocalRateLimitLevels::Disabled;
    let any_local = local_on
        && (listener_limit.is_some()
            || vhosts.iter().any(|v| {
                v.local_rate_limit.is_some()
                    || v.routes.iter().any(|r| r.local_rate_limit.is_some())
            }));
    if !any_local && global.is_none() {
        return None;
    }
    let mut named = HashMap::new();
    let mut reuse = |level: LevelName, config: &Option<model::LocalRateLimit>| {
        let config = config.as_ref().filter(|_| local_on)?;
        let kept = previous
            .and_then(|p| p.named.get(&level))
            .filter(|old| old.config == *config);
        let limit = match kept {
            Some(old) => old.clone(),
            None => Arc::new(LocalLimit::new(config)),
        };
        named.insert(level, limit.clone());
        Some(limit)
    };
    let listener = reuse((None, None), listener_limit);
    let compiled_vhosts = vhosts
        .iter()
        .map(|v| {
            let own = reuse((Some(v.name.clone()), None), &v.local_rate_limit);
            let routes = if v.routes.iter().any(|r| r.local_rate_limit.is_some()) {
                v.routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let name = route_name(v, r, j);
                        reuse((Some(v.name.clone()), Some(name)), &r.local_rate_limit)
                    })
                    .collect()
            } else {
                Box::default()
            };
            VhostLimits { own, routes }
        })
        .collect();
    let global = global.map(|g| match previous.and_then(|p| p.global.as_ref()) {
        Some(old) if old.config == *g => old.clone(),
        _ => Arc::new(GlobalLimit::new(g)),
    });
    Some(Arc::new(HttpRateLimits {
        listener,
        most_specific: levels == model::LocalRateLimitLevels::MostSpecific,
        vhosts: compiled_vhosts,
        global,
        named,
    }))
}

/// A route's name as the router names it: its own, or `<vhost>/<index>`.
fn route_name(v: &model::VirtualHost, r: &model::Route, j: usize) -> String {
    r.name.clone().unwrap_or_else(|| format!("{}/{j}", v.name))
}

impl GlobalLimit {
    fn new(g: &model::GlobalRateLimit) -> Self {
        let limiter = GlobalLimiter::new(
            RedisOptions {
                address: g.redis.address.clone(),
                timeout: g.redis.timeout,
                connect_timeout: g.redis.connect_timeout,
            },
            match g.window {
                model::WindowKind::Fixed => Window::Fixed,
                model::WindowKind::Sliding => Window::Sliding,
            },
        );
        // Compiling may run outside tokio (`sinew validate`); then there is nothing to
        // connect for. Inside, the connection starts now, before the first request.
        if tokio::runtime::Handle::try_current().is_ok() {
            limiter.start();
        }
        let descriptors = g
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| GlobalDescriptor {
                prefix: format!("sinew:{}:{i}:", g.domain).into_bytes().into(),
                key: d.key.as_ref().map(Key::new),
                limit: d.rate_limit.requests_per_unit,
                window: d.rate_limit.unit.duration(),
            })
            .collect();
        Self {
            config: g.clone(),
            limiter,
            descriptors,
        }
    }
}

impl HttpRateLimits {
    /// Waits (briefly) for a new global limiter's first connection attempt, so a proxy
    /// that starts while Redis is up counts its first requests. Bounded by the limiter's
    /// connect timeout; a Redis that is down delays a start or reload by at most that.
    pub(crate) async fn warm(&self) {
        if let Some(global) = &self.global {
            global.limiter.start();
            let bound = global.limiter.options().connect_timeout;
            global.limiter.first_attempt(bound).await;
        }
    }
}
