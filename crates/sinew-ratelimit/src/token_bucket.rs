//! A token bucket held in one atomic word, taken with a compare-and-swap: no lock and no
//! allocation on the request path.
//!
//! Semantics are Envoy's: the bucket starts full with `max_tokens`; at every
//! `fill_interval` boundary it gains `tokens_per_fill`, up to `max_tokens`. Instead of a
//! timer that refills every bucket, a bucket refills lazily when it is next touched: the
//! state records which fill interval ("tick", counted from the process clock's origin) it
//! was last brought up to date in, and the tokens it had then. Both are 32 bits, packed
//! into one `u64` so one CAS updates them together. A tick is at least 50ms (validation),
//! so 32 bits of ticks last more than six years before wrapping, and the comparison that
//! matters (has this bucket's tick passed?) is made in wrapping arithmetic anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_nanos;

/// A bucket's shape: how many tokens it holds and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    pub max_tokens: u32,
    pub tokens_per_fill: u32,
    fill_interval_nanos: u64,
}

/// What one take found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub allowed: bool,
    /// Tokens left after this take.
    pub remaining: u32,
}

fn pack(tick: u32, tokens: u32) -> u64 {
    (u64::from(tick) << 32) | u64::from(tokens)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

impl BucketSpec {
    /// `max_tokens` and `tokens_per_fill` of at least 1 and a `fill_interval` of at least
    /// a millisecond (config validation asks for 50ms).
    pub fn new(max_tokens: u32, tokens_per_fill: u32, fill_interval: Duration) -> Self {
        Self {
            max_tokens: max_tokens.max(1),
            tokens_per_fill: tokens_per_fill.max(1),
            fill_interval_nanos: (fill_interval.as_nanos() as u64).max(1_000_000),
        }
    }

    pub fn fill_interval(&self) -> Duration {
        Duration::from_nanos(self.fill_interval_nanos)
    }

    fn tick(&self, now: u64) -> u32 {
        (now / self.fill_interval_nanos) as u32
    }

    /// The state of a full bucket at `now`.
    pub fn full(&self, now: u64) -> u64 {
        pack(self.tick(now), self.max_tokens)
    }

    /// Tokens in the bucket `state` at `now`, refills counted, with the tick it is at.
    fn refilled(&self, state: u64, now: u64) -> (u32, u32) {
        let (last_tick, tokens) = unpack(state);
        let tick = self.tick(now);
        // Another thread may have stored a later tick than this thread's clock reading;
        // that is no refill (and not a wrap-around to a full bucket).
        let elapsed = tick.wrapping_sub(last_tick);
        if elapsed == 0 || elapsed > u32::MAX / 2 {
            return (last_tick, tokens);
        }
        let tokens = u64::from(tokens) + u64::from(elapsed) * u64::from(self.tokens_per_fill);
        (tick, tokens.min(u64::from(self.max_tokens)) as u32)
    }

    /// Takes one token from the bucket `state` at `now`: the state after and the outcome.
    pub fn take(&self, state: u64, now: u64) -> (u64, Take) {
        let (tick, tokens) = self.refilled(state, now);
        match tokens.checked_sub(1) {
            Some(left) => (
                pack(tick, left),
                Take {
                    allowed: true,
                    remaining: left,
                },
            ),
            None => (
                pack(tick, 0),
                Take {
                    allowed: false,
                    remaining: 0,
                },
            ),
        }
    }

    /// Whether the bucket `state` has refilled completely by `now` (it then carries no
    /// information: forgetting it changes nothing).
    pub fn is_full(&self, state: u64, now: u64) -> bool {
        self.refilled(state, now).1 >= self.max_tokens
    }

    /// Time from `now` until the next fill (Envoy's `x-ratelimit-reset`).
    pub fn until_next_fill(&self, now: u64) -> Duration {
        Duration::from_nanos(self.fill_interval_nanos - now % self.fill_interval_nanos)
    }
}

/// One shared bucket.
#[derive(Debug)]
pub struct TokenBucket {
    spec: BucketSpec,
    state: AtomicU64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(spec: BucketSpec) -> Self {
        Self {
            spec,
            state: AtomicU64::new(spec.full(now_nanos())),
        }
    }

    pub fn spec(&self) -> &BucketSpec {
        &self.spec
    }

    /// Takes a token now.
    pub fn try_take(&self) -> Take {
        self.try_take_at(now_nanos())
    }

    /// Takes a token at `now` (nanoseconds on [`now_nanos`]'s clock).
    pub fn try_take_at(&self, now: u64) -> Take {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (next, take) = self.spec.take(current, now);
            // An empty bucket stays as it is: refusals under a flood write nothing, so
            // they do not fight over the cache line.
            if next == current {
                return take;
            }
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn spec(max: u32, per_fill: u32, interval_ms: u64) -> BucketSpec {
        BucketSpec::new(max, per_fill, Duration::from_millis(interval_ms))
    }

    #[test]
    fn starts_full_and_refuses_once_empty() {
        let s = spec(3, 1, 1000);
        let mut state = s.full(0);
        let mut remaining = Vec::new();
        for _ in 0..4 {
            let (next, take) = s.take(state, 10 * MS);
            state = next;
            remaining.push((take.allowed, take.remaining));
        }
        assert_eq!(
            remaining,
            [(true, 2), (true, 1), (true, 0), (false, 0)],
            "a bucket of 3 lets 3 through"
        );
    }

    #[test]
    fn refills_per_interval_up_to_the_maximum() {
        let s = spec(10, 4, 100);
        let mut state = s.full(0);
        for _ in 0..10 {
            state = s.take(state, 0).0;
        }
        assert!(!s.take(state, 99 * MS).1.allowed, "no fill before 100ms");
        let (after_one, take) = s.take(state, 100 * MS);
        assert_eq!(
            take,
            Take {
                allowed: true,
                remaining: 3
            },
            "one fill adds 4"
        );
        let (_, take) = s.take(after_one, 250 * MS);
        assert_eq!(take.remaining, 3 + 4 - 1, "a second fill adds 4 more");
        let (_, take) = s.take(state, 10_000 * MS);
        assert_eq!(take.remaining, 9, "a long pause refills to max_tokens only");
    }

    #[test]
    fn a_stale_clock_reading_does_not_refill() {
        let s = spec(2, 1, 100);
        let mut state = s.full(500 * MS);
        state = s.take(state, 500 * MS).0;
        state = s.take(state, 500 * MS).0;
        // A thread that read the clock before another thread stored tick 5.
        assert!(!s.take(state, 450 * MS).1.allowed);
        assert!(s.is_full(state, 700 * MS));
        assert!(!s.is_full(state, 600 * MS));
    }

    #[test]
    fn reset_is_the_time_to_the_next_fill() {
        let s = spec(1, 1, 1000);
        assert_eq!(s.until_next_fill(250 * MS), Duration::from_millis(750));
        assert_eq!(s.until_next_fill(1000 * MS), Duration::from_millis(1000));
    }

    #[test]
    fn concurrent_takes_never_hand_out_more_than_the_bucket_holds() {
        let bucket = std::sync::Arc::new(TokenBucket::new(spec(1000, 1, 3_600_000)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = bucket.clone();
                std::thread::spawn(move || (0..600).filter(|_| b.try_take().allowed).count())
            })
            .collect();
        let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(granted, 1000);
    }
}
