//! Circuit breakers: a cluster's connections, pending requests, requests and retries in
//! flight, counted against its limits, as Envoy's resource manager does.
//!
//! The counts are shared by every version of a cluster across reloads, so what is in
//! flight stays counted when the limits change; the limits belong to one config. Taking
//! a slot is one atomic read-modify-write and no lock; a slot gives itself back when
//! dropped.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use sinew_config::model;

/// What is in flight to one cluster, and how often a limit turned work away.
#[derive(Debug, Default)]
pub struct BreakerCounts {
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub requests: AtomicU32,
    pub retries: AtomicU32,
    /// A connection was needed over `max_connections` (the request waited or shared).
    pub connection_overflows: AtomicU64,
    /// A request was answered 503 because `max_pending_requests` were waiting.
    pub pending_overflows: AtomicU64,
    /// A request was answered 503 because `max_requests` were in flight.
    pub request_overflows: AtomicU64,
    /// A retry was not made because `max_retries` (or the budget) were in flight.
    pub retry_overflows: AtomicU64,
}

/// Which count a [`Slot`] holds.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Connection,
    Pending,
    Request,
    Retry,
}

/// One unit of a cluster's resource, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<BreakerCounts>,
    resource: Resource,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts
            .counter(self.resource)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl BreakerCounts {
    fn counter(&self, resource: Resource) -> &AtomicU32 {
        match resource {
            Resource::Connection => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Request => &self.requests,
            Resource::Retry => &self.retries,
        }
    }
}

/// A cluster's limits with the counts they apply to.
#[derive(Debug)]
pub struct CircuitBreakers {
    max_connections: u32,
    max_pending_requests: u32,
    max_requests: u32,
    max_retries: u32,
    /// (percent of requests in flight, minimum concurrency), replacing `max_retries`.
    retry_budget: Option<(f64, u32)>,
    counts: Arc<BreakerCounts>,
}

impl CircuitBreakers {
    /// Limits from `config` over `counts` (the previous version's, to carry them over).
    pub fn new(config: &model::CircuitBreakers, counts: Arc<BreakerCounts>) -> Self {
        Self {
            max_connections: config.max_connections,
            max_pending_requests: config.max_pending_requests,
            max_requests: config.max_requests,
            max_retries: config.max_retries,
            retry_budget: config
                .retry_budget
                .as_ref()
                .map(|b| (b.budget_percent, b.min_retry_concurrency)),
            counts,
        }
    }

    pub fn counts(&self) -> &Arc<BreakerCounts> {
        &self.counts
    }

    /// A request slot, or None (counted) when `max_requests` are in flight.
    pub fn try_request(&self) -> Option<Slot> {
        self.take(Resource::Request, self.max_requests)
            .or_else(|| self.overflow(&self.counts.request_overflows))
    }

    /// A pending slot for a request about to wait for a connection, or None (counted).
    pub fn try_pending(&self) -> Option<Slot> {
        self.take(Resource::Pending, self.max_pending_requests)
            .or_else(|| self.overflow(&self.counts.pending_overflows))
    }

    /// A connection slot, or None (counted) when `max_connections` are open.
    pub fn try_connection(&self) -> Option<Slot> {
        self.take(Resource::Connection, self.max_connections)
            .or_else(|| self.overflow(&self.counts.connection_overflows))
    }

    /// A retry slot, or None (counted) when the retries in flight reach `max_retries`, or
    /// the budget's share of the requests in flight when a budget is set.
    pub fn try_retry(&self) -> Option<Slot> {
        self.take(Resource::Retry, self.retry_limit())
            .or_else(|| self.overflow(&self.counts.retry_overflows))
    }

    /// Envoy's budget: `budget_percent` of active plus pending requests, but never fewer
    /// than `min_retry_concurrency`.
    fn retry_limit(&self) -> u32 {
        match self.retry_budget {
            None => self.max_retries,
            Some((percent, min_concurrency)) => {
                let load = self.counts.requests.load(Ordering::Relaxed) as f64
                    + self.counts.pending.load(Ordering::Relaxed) as f64;
                ((load * percent / 100.0) as u32).max(min_concurrency)
            }
        }
    }

    fn take(&self, resource: Resource, limit: u32) -> Option<Slot> {
        self.counts
            .counter(resource)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                counts: self.counts.clone(),
                resource,
            })
    }

    fn overflow(&self, counter: &AtomicU64) -> Option<Slot> {
        counter.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(yaml: &str) -> CircuitBreakers {
        let config: model::CircuitBreakers = serde_yaml_ng::from_str(yaml).unwrap();
        CircuitBreakers::new(&config, Arc::default())
    }

    #[test]
    fn defaults_are_envoys_and_not_unlimited() {
        let b = breakers("{}");
        assert_eq!(
            (
                b.max_connections,
                b.max_pending_requests,
                b.max_requests,
                b.max_retries
            ),
            (1024, 1024, 1024, 3)
        );
    }

    #[test]
    fn a_slot_is_refused_at_the_limit_counted_and_given_back_on_drop() {
        let b = breakers("{max_requests: 2}");
        let first = b.try_request().unwrap();
        let _second = b.try_request().unwrap();
        assert!(b.try_request().is_none());
        assert_eq!(b.counts.request_overflows.load(Ordering::Relaxed), 1);
        drop(first);
        assert!(b.try_request().is_some(), "a dropped slot frees its place");
        assert_eq!(b.counts.requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn retry_budget_follows_the_load_with_a_floor() {
        let b = breakers(
            "{max_retries: 1, retry_budget: {budget_percent: 25, min_retry_concurrency: 2}}",
        );
        // Idle cluster: the floor, not max_retries, applies.
        assert_eq!(b.retry_limit(), 2);
        let requests: Vec<Slot> = (0..20).map(|_| b.try_request().unwrap()).collect();
        let pending: Vec<Slot> = (0..4).map(|_| b.try_pending().unwrap()).collect();
        assert_eq!(b.retry_limit(), 6, "25% of 20 active + 4 pending");
        let retries: Vec<Slot> = (0..6).map(|_| b.try_retry().unwrap()).collect();
        assert!(b.try_retry().is_none());
        assert_eq!(b.counts.retry_overflows.load(Ordering::Relaxed), 1);
        drop((requests, pending, retries));
        assert_eq!(b.retry_limit(), 2);
    }

    #[test]
    fn counts_outlive_a_change_of_limits() {
        let old = breakers("{max_requests: 5}");
        let held = old.try_request().unwrap();
        let config: model::CircuitBreakers = serde_yaml_ng::from_str("{max_requests: 1}").unwrap();
        let new = CircuitBreakers::new(&config, old.counts.clone());
        assert!(
            new.try_request().is_none(),
            "the request in flight still counts"
        );
        drop(held);
        assert!(new.try_request().is_some());
    }
}
