//! A latency histogram whose `observe` is three relaxed atomic adds on the calling
//! worker's own buckets.
//!
//! prometheus-client's own `Histogram` keeps its buckets behind a lock, which the request
//! path must not take; this one keeps fixed buckets of atomics, one set per worker (see
//! `shard.rs`), and encodes their sums through the crate's `EncodeMetric`, so it sits in
//! a `Family` like any other metric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::shard::{mine, slots, Slot};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in seconds: 0.5 ms to 60 s, roughly 1-2.5-5 per decade (Envoy's default
/// buckets span the same range).
pub const BOUNDS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const BOUNDS_MICROS: [u64; 16] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

#[derive(Debug, Default)]
struct Inner {
    /// One count per bound, plus the last for +Inf; not cumulative (the encoder sums).
    buckets: [AtomicU64; 17],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Cheap to clone: clones share the buckets.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Arc<[Slot<Inner>]>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(slots())
    }
}

impl LatencyHistogram {
    pub fn observe(&self, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        let i = BOUNDS_MICROS.partition_point(|&b| b < micros);
        let mine = mine(&self.0);
        mine.buckets[i].fetch_add(1, Ordering::Relaxed);
        mine.sum_micros.fetch_add(micros, Ordering::Relaxed);
        mine.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|s| s.0.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        let micros: u64 = self
            .0
            .iter()
            .map(|s| s.0.sum_micros.load(Ordering::Relaxed))
            .sum();
        micros as f64 / 1e6
    }

    /// Observations in bucket `i`, over every worker.
    fn bucket(&self, i: usize) -> u64 {
        self.0
            .iter()
            .map(|s| s.0.buckets[i].load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); 17];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = BOUNDS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, self.bucket(i));
        }
        // Count as the sum of the buckets read, so a scrape racing an observation stays
        // consistent (the +Inf bucket must equal _count).
        let count = buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(100));
        let counts: Vec<u64> = (0..17).map(|i| h.bucket(i)).collect();
        assert_eq!(counts[0], 1, "0.5 ms is within le=0.0005");
        assert_eq!(counts[6], 1, "30 ms is within le=0.05");
        assert_eq!(counts[16], 1, "100 s only within +Inf");
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 100.0305).abs() < 1e-9);
    }
}
