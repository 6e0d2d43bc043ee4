//! Rate-limit mechanics, apart from HTTP: what the proxy's listeners and request handler
//! call to decide whether one more connection or request may go.
//!
//! - [`TokenBucket`]: one lock-free bucket (Envoy's token bucket semantics).
//! - [`KeyedBuckets`]: one bucket per key (client IP, header value...) in a table with a
//!   bound, so a flood of distinct keys cannot grow memory without limit.
//! - [`GlobalLimiter`]: counters shared by many proxies in Redis, one round trip per
//!   decision, with fixed or sliding windows, that never makes a request wait longer than
//!   its timeout.

mod clock;
pub mod global;
pub mod keyed;
pub mod token_bucket;

pub use clock::now_nanos;
pub use global::{Counter, GlobalLimiter, GlobalVerdict, RedisOptions, Window};
pub use keyed::KeyedBuckets;
pub use token_bucket::{BucketSpec, Take, TokenBucket};
