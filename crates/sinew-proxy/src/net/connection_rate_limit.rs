//! A listener's connection-rate limit (Envoy's `local_ratelimit` network filter): every
//! accepted connection takes a token from one lock-free bucket; without one, the accept
//! loop closes it at once, before any byte is read, and counts it.
//!
//! Like request buckets, the bucket is state carried across a reload that leaves the
//! listener's `connection_rate_limit` unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sinew_config::model;
use sinew_ratelimit::{BucketSpec, TokenBucket};

pub struct ConnectionRateLimit {
    config: model::ConnectionRateLimit,
    bucket: TokenBucket,
    refused: AtomicU64,
}

impl ConnectionRateLimit {
    /// The limit for `config`: `previous` itself when its config is the same.
    pub fn compile(
        config: &model::ConnectionRateLimit,
        previous: Option<&Arc<ConnectionRateLimit>>,
    ) -> Arc<Self> {
        if let Some(p) = previous.filter(|p| p.config == *config) {
            return p.clone();
        }
        let b = &config.token_bucket;
        Arc::new(Self {
            config: config.clone(),
            bucket: TokenBucket::new(BucketSpec::new(
                b.max_tokens,
                b.tokens_per_fill,
                b.fill_interval,
            )),
            refused: AtomicU64::new(0),
        })
    }

    /// Whether one more connection may be served now; a refusal is counted.
    pub fn admit(&self) -> bool {
        let allowed = self.bucket.try_take().allowed;
        if !allowed {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Connections closed at accept for want of a token.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}
