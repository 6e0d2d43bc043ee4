//! A counter kept per worker and summed when scraped.
//!
//! A counter every request bumps is a cache line every core writes: with two workers,
//! each add waits for the line to come back from the other core. Each worker here adds to
//! a slot of its own (its own cache line, see `sinew-runtime`), and a scrape, which is
//! rare, reads them all. The sum a scrape reads is exact once traffic stops; while it
//! flows, it may miss adds in flight, as any counter read would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// One worker's slot, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Slot<T>(pub T);

/// Slots for every worker, `sinew_runtime::count()` of them (one when built before the
/// workers started).
pub(crate) fn slots<T: Default>() -> Arc<[Slot<T>]> {
    (0..sinew_runtime::count().max(1))
        .map(|_| Slot::default())
        .collect()
}

/// The calling worker's slot.
pub(crate) fn mine<T>(slots: &[Slot<T>]) -> &T {
    &slots[sinew_runtime::index() % slots.len()].0
}

/// A Prometheus counter with one slot per worker. Clones share the slots.
#[derive(Debug, Clone)]
pub struct ShardedCounter(Arc<[Slot<AtomicU64>]>);

impl Default for ShardedCounter {
    fn default() -> Self {
        Self(slots())
    }
}

impl ShardedCounter {
    pub fn inc(&self) {
        mine(&self.0).fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every worker.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_every_worker_sum_when_read() {
        let workers = sinew_runtime::Workers::spawn(2).unwrap();
        let counter = ShardedCounter::default();
        assert_eq!(counter.0.len(), 2, "one slot per worker");
        let (tx, rx) = std::sync::mpsc::channel();
        for handle in workers.handles() {
            let (counter, tx) = (counter.clone(), tx.clone());
            handle.spawn(async move {
                for _ in 0..1000 {
                    counter.inc();
                }
                let _ = tx.send(());
            });
        }
        for _ in 0..2 {
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        }
        assert_eq!(counter.get(), 2000);
        assert!(
            counter
                .0
                .iter()
                .all(|s| s.0.load(Ordering::Relaxed) == 1000),
            "each worker added to its own slot"
        );
    }
}
