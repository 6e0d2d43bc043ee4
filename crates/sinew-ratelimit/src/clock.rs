//! The monotonic clock buckets count fills on: nanoseconds since the first call in this
//! process, so bucket state fits in integers that a single atomic can hold.

use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since this process first asked (monotonic; u64 lasts 584 years).
pub fn now_nanos() -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    origin.elapsed().as_nanos() as u64
}
