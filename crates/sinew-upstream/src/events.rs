//! Counts of a cluster's background events — active health check results and outlier
//! ejections — for the metrics endpoint. They happen off the request path, so they are
//! always counted; like the circuit-breaker counts, a reloaded cluster of the same name
//! carries them on.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ClusterEvents {
    /// Active health checks that passed.
    pub health_check_success: AtomicU64,
    /// Active health checks that failed (bad status, timeout, connect failure).
    pub health_check_failure: AtomicU64,
    /// Endpoints ejected by outlier detection (each ejection once).
    pub outlier_ejections: AtomicU64,
}

impl ClusterEvents {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
