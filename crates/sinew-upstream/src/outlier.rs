//! Outlier detection (passive health checking), after Envoy's: the request path counts
//! each endpoint's outcomes; reaching a consecutive-failure threshold wakes the cluster's
//! outlier task, which ejects the endpoint at once; every `interval` the task also returns
//! endpoints whose ejection is over and ejects those whose success rate or failure
//! percentage stands out from the cluster's.
//!
//! An ejection lasts `base_ejection_time` times the number of times the endpoint has been
//! ejected, up to `max_ejection_time`; the multiplier shrinks by one for each base
//! ejection time the endpoint then stays in service. No more than `max_ejection_percent`
//! of the cluster is ejected at once, though one endpoint always may be.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sinew_config::model::OutlierDetection;
use tokio::sync::Notify;

use crate::health::{
    clock, Outcome, OutlierState, PENDING_5XX, PENDING_GATEWAY, PENDING_LOCAL_ORIGIN,
};
use crate::hosts::Endpoint;

/// A cluster's outlier detection: its config and the bell the request path rings.
pub struct OutlierDetector {
    cfg: OutlierDetection,
    /// Rung when an endpoint reaches a consecutive-failure threshold.
    pub(crate) wake: Notify,
    /// Where ejections are counted for metrics: the cluster's, shared across reloads.
    events: std::sync::Arc<crate::ClusterEvents>,
}

impl OutlierDetector {
    pub fn new(cfg: OutlierDetection) -> Self {
        Self {
            cfg,
            wake: Notify::new(),
            events: Default::default(),
        }
    }

    /// Counts ejections into `events` (the cluster's) instead of a private count.
    pub fn counting_into(mut self, events: std::sync::Arc<crate::ClusterEvents>) -> Self {
        self.events = events;
        self
    }

    pub(crate) fn interval(&self) -> Duration {
        self.cfg.interval
    }

    pub(crate) fn unejects_on_active_pass(&self) -> bool {
        self.cfg.successful_active_health_check_uneject_host
    }

    /// Counts one outcome. Request path: relaxed atomics only.
    #[inline]
    pub(crate) fn record(&self, s: &OutlierState, outcome: Outcome) {
        let split = self.cfg.split_external_local_origin_errors;
        // Without the split, local-origin failures count as the statuses Envoy maps
        // them to: 503 for connect failures and resets, 504 for timeouts.
        let status = match outcome {
            Outcome::Status(code) => {
                if split {
                    self.local_success(s);
                }
                code
            }
            Outcome::Connected if split => return self.local_success(s),
            Outcome::Connected => 200,
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout if split => {
                return self.local_failure(s)
            }
            Outcome::ConnectFailure | Outcome::Reset => 503,
            Outcome::Timeout => 504,
        };
        if (500..600).contains(&status) {
            s.external_failure.fetch_add(1, Ordering::Relaxed);
            if matches!(status, 502..=504) {
                self.bump(
                    &s.consecutive_gateway,
                    self.cfg.consecutive_gateway_failure,
                    s,
                    PENDING_GATEWAY,
                );
            } else {
                reset(&s.consecutive_gateway);
            }
            self.bump(&s.consecutive_5xx, self.cfg.consecutive_5xx, s, PENDING_5XX);
        } else {
            s.external_success.fetch_add(1, Ordering::Relaxed);
            reset(&s.consecutive_5xx);
            reset(&s.consecutive_gateway);
        }
    }

    fn local_success(&self, s: &OutlierState) {
        s.local_success.fetch_add(1, Ordering::Relaxed);
        reset(&s.consecutive_local);
    }

    fn local_failure(&self, s: &OutlierState) {
        s.local_failure.fetch_add(1, Ordering::Relaxed);
        self.bump(
            &s.consecutive_local,
            self.cfg.consecutive_local_origin_failure,
            s,
            PENDING_LOCAL_ORIGIN,
        );
    }

    fn bump(&self, counter: &AtomicU32, threshold: u32, s: &OutlierState, bit: u8) {
        // `==`, not `>=`: the threshold rings the bell once, not on every failure after.
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == threshold {
            s.pending.fetch_or(bit, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Ejects endpoints that reached a consecutive threshold and, when `interval_due`,
    /// returns those whose time is up and runs the success-rate and failure-percentage
    /// checks. True when any endpoint's ejection changed.
    pub(crate) fn sweep(&self, endpoints: &[Endpoint], interval_due: bool) -> bool {
        let cfg = &self.cfg;
        let now = clock();
        let base = cfg.base_ejection_time.as_millis() as u64;
        let total = endpoints.len();
        let mut changed = false;
        let mut ejected = endpoints
            .iter()
            .filter(|e| e.state.health.ejected())
            .count();
        if interval_due {
            for e in endpoints {
                let s = &e.state.health.outlier;
                if s.ejected.load(Ordering::Relaxed) {
                    if now >= s.ejected_until.load(Ordering::Relaxed) {
                        s.ejected.store(false, Ordering::Relaxed);
                        s.returned_at.store(now, Ordering::Relaxed);
                        ejected -= 1;
                        changed = true;
                    }
                } else if s.ejections.load(Ordering::Relaxed) > 0
                    && now.saturating_sub(s.returned_at.load(Ordering::Relaxed)) >= base
                {
                    // In service for a base ejection time: the next ejection is shorter.
                    s.ejections.fetch_sub(1, Ordering::Relaxed);
                    s.returned_at.store(now, Ordering::Relaxed);
                }
            }
        }
        let mut eject = |s: &OutlierState, enforcing: u32, ejected: &mut usize| {
            if s.ejected.load(Ordering::Relaxed)
                || !enforced(enforcing)
                || !may_eject(*ejected, total, cfg.max_ejection_percent)
            {
                return;
            }
            let ejections = s.ejections.load(Ordering::Relaxed);
            // Stop growing once the cap is reached, as Envoy does, so that time in
            // service earns the endpoint back shorter ejections.
            let ejections = if ejection_time(cfg, ejections) < cfg.max_ejection_time {
                ejections + 1
            } else {
                ejections.max(1)
            };
            s.ejections.store(ejections, Ordering::Relaxed);
            let length = ejection_time(cfg, ejections).as_millis() as u64;
            s.ejected_until.store(now + length, Ordering::Relaxed);
            s.ejected.store(true, Ordering::Relaxed);
            reset(&s.consecutive_5xx);
            reset(&s.consecutive_gateway);
            reset(&s.consecutive_local);
            *ejected += 1;
            changed = true;
            crate::ClusterEvents::bump(&self.events.outlier_ejections);
        };
        for e in endpoints {
            let s = &e.state.health.outlier;
            let pending = s.pending.swap(0, Ordering::Relaxed);
            if pending == 0 {
                continue;
            }
            // The most enforced of the thresholds reached decides.
            let mut enforcing = 0;
            if pending & PENDING_5XX != 0 {
                enforcing = enforcing.max(cfg.enforcing_consecutive_5xx);
            }
            if pending & PENDING_GATEWAY != 0 {
                enforcing = enforcing.max(cfg.enforcing_consecutive_gateway_failure);
            }
            if pending & PENDING_LOCAL_ORIGIN != 0 {
                enforcing = enforcing.max(cfg.enforcing_consecutive_local_origin_failure);
            }
            eject(s, enforcing, &mut ejected);
        }
        if interval_due {
            let take = |success: &AtomicU32, failure: &AtomicU32| {
                let ok = success.swap(0, Ordering::Relaxed) as u64;
                let failed = failure.swap(0, Ordering::Relaxed) as u64;
                (ok, ok + failed)
            };
            let external: Vec<(u64, u64)> = endpoints
                .iter()
                .map(|e| {
                    let s = &e.state.health.outlier;
                    take(&s.external_success, &s.external_failure)
                })
                .collect();
            let local: Vec<(u64, u64)> = endpoints
                .iter()
                .map(|e| {
                    let s = &e.state.health.outlier;
                    take(&s.local_success, &s.local_failure)
                })
                .collect();
            let mut buckets = vec![(
                external,
                cfg.enforcing_success_rate,
                cfg.enforcing_failure_percentage,
            )];
            if cfg.split_external_local_origin_errors {
                buckets.push((
                    local,
                    cfg.enforcing_local_origin_success_rate,
                    cfg.enforcing_failure_percentage_local_origin,
                ));
            }
            for (stats, enforcing_sr, enforcing_fp) in buckets {
                let by_rate = success_rate_outliers(
                    &stats,
                    cfg.success_rate_minimum_hosts as usize,
                    cfg.success_rate_request_volume as u64,
                    cfg.success_rate_stdev_factor as f64 / 1000.0,
                );
                for i in by_rate {
                    eject(
                        &endpoints[i].state.health.outlier,
                        enforcing_sr,
                        &mut ejected,
                    );
                }
                let by_failures = failure_percentage_outliers(
                    &stats,
                    cfg.failure_percentage_minimum_hosts as usize,
                    cfg.failure_percentage_request_volume as u64,
                    cfg.failure_percentage_threshold as f64,
                );
                for i in by_failures {
                    eject(
                        &endpoints[i].state.health.outlier,
                        enforcing_fp,
                        &mut ejected,
                    );
                }
            }
        }
        changed
    }

    /// A passed active check returns an ejected endpoint (Envoy's
    /// `successful_active_health_check_uneject_host`). True when it was ejected.
    pub(crate) fn uneject(&self, s: &OutlierState) -> bool {
        let was = s.ejected.swap(false, Ordering::Relaxed);
        if was {
            s.returned_at.store(clock(), Ordering::Relaxed);
        }
        was
    }
}

/// Stores zero only when needed: a load is cheaper than a write to a shared line.
#[inline]
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// `enforcing_*` is the percent chance that a detected outlier is really ejected.
fn enforced(percent: u32) -> bool {
    percent >= 100 || (percent > 0 && fastrand::u32(0..100) < percent)
}

/// Whether one more endpoint may be ejected with `ejected` out of `total` already out.
pub(crate) fn may_eject(ejected: usize, total: usize, max_percent: u32) -> bool {
    ejected == 0 || ((ejected + 1) * 100) as f64 <= max_percent as f64 * total as f64
}

/// The length of an ejection with multiplier `ejections`.
pub(crate) fn ejection_time(cfg: &OutlierDetection, ejections: u32) -> Duration {
    cfg.base_ejection_time
        .saturating_mul(ejections)
        .min(cfg.max_ejection_time)
}

/// Endpoints (indexes into `stats`, each `(successes, total)`) whose success rate is below
/// the mean by more than `stdev_factor` standard deviations, counting only endpoints with
/// `request_volume` requests, and only when there are `minimum_hosts` of those.
pub(crate) fn success_rate_outliers(
    stats: &[(u64, u64)],
    minimum_hosts: usize,
    request_volume: u64,
    stdev_factor: f64,
) -> Vec<usize> {
    let rates: Vec<(usize, f64)> = stats
        .iter()
        .enumerate()
        .filter(|(_, (_, total))| *total >= request_volume && *total > 0)
        .map(|(i, (ok, total))| (i, 100.0 * *ok as f64 / *total as f64))
        .collect();
    if rates.is_empty() || rates.len() < minimum_hosts {
        return Vec::new();
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    let threshold = mean - stdev_factor * variance.sqrt();
    rates
        .into_iter()
        .filter(|(_, r)| *r < threshold)
        .map(|(i, _)| i)
        .collect()
}

/// Endpoints whose failure percentage is at least `threshold`, under the same volume and
/// host-count conditions as [`success_rate_outliers`].
pub(crate) fn failure_percentage_outliers(
    stats: &[(u64, u64)],
    minimum_hosts: usize,
    request_volume: u64,
    threshold: f64,
) -> Vec<usize> {
    let eligible: Vec<(usize, f64)> = stats
        .iter()
        .enumerate()
        .filter(|(_, (_, total))| *total >= request_volume && *total > 0)
        .map(|(i, (ok, total))| (i, 100.0 * (total - ok) as f64 / *total as f64))
        .collect();
    if eligible.is_empty() || eligible.len() < minimum_hosts {
        return Vec::new();
    }
    eligible
        .into_iter()
        .filter(|(_, failed)| *failed >= threshold)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::EndpointHealth;

    fn detector(yaml: &str) -> OutlierDetector {
        OutlierDetector::new(serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn success_rate_ejects_only_what_stands_out_with_enough_hosts_and_volume() {
        // Four hosts at 100%, one at 50%: mean 90, stdev 20, threshold 90 - 1.9*20 = 52.
        let stats = [(100, 100), (100, 100), (100, 100), (100, 100), (50, 100)];
        assert_eq!(success_rate_outliers(&stats, 5, 100, 1.9), vec![4]);
        assert!(
            success_rate_outliers(&stats, 6, 100, 1.9).is_empty(),
            "too few hosts"
        );
        assert!(
            success_rate_outliers(&stats, 5, 101, 1.9).is_empty(),
            "too little volume"
        );
        // Two hosts at 80%: mean 92, stdev 9.8, threshold 73.4; neither stands out.
        let close = [(100, 100), (100, 100), (100, 100), (80, 100), (80, 100)];
        assert!(success_rate_outliers(&close, 5, 100, 1.9).is_empty());
        assert!(
            success_rate_outliers(&[(1, 1); 5], 5, 1, 1.9).is_empty(),
            "all equal"
        );
    }

    #[test]
    fn failure_percentage_ejects_at_or_above_the_threshold() {
        let stats = [(100, 100), (15, 100), (14, 100), (0, 10)];
        assert_eq!(failure_percentage_outliers(&stats, 3, 50, 85.0), vec![1, 2]);
        assert!(failure_percentage_outliers(&stats, 4, 50, 85.0).is_empty());
        assert_eq!(
            failure_percentage_outliers(&stats, 4, 10, 85.0),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_the_cap() {
        let cfg: OutlierDetection =
            serde_yaml_ng::from_str("{base_ejection_time: 30s, max_ejection_time: 100s}").unwrap();
        let secs: Vec<u64> = (1..=5).map(|n| ejection_time(&cfg, n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 90, 100, 100]);
    }

    #[test]
    fn max_ejection_percent_always_allows_one() {
        assert!(may_eject(0, 3, 10), "one always may be ejected");
        assert!(!may_eject(1, 3, 10));
        assert!(may_eject(1, 20, 10), "2 of 20 is 10%");
        assert!(!may_eject(2, 20, 10));
        assert!(may_eject(2, 3, 100));
        assert!(may_eject(0, 3, 0), "even 0% allows the first, as in Envoy");
    }

    #[test]
    fn consecutive_thresholds_ring_once_and_successes_reset_them() {
        let d = detector("{consecutive_5xx: 3, consecutive_gateway_failure: 2}");
        let h = EndpointHealth::default();
        let s = &h.outlier;
        d.record(s, Outcome::Status(500));
        d.record(s, Outcome::Status(200));
        d.record(s, Outcome::Status(500));
        d.record(s, Outcome::Status(500));
        assert_eq!(
            s.pending.load(Ordering::Relaxed),
            0,
            "a success reset the count"
        );
        d.record(s, Outcome::Status(500));
        assert_eq!(s.pending.load(Ordering::Relaxed), PENDING_5XX);
        s.pending.store(0, Ordering::Relaxed);
        d.record(s, Outcome::Status(500));
        assert_eq!(s.pending.load(Ordering::Relaxed), 0, "rings once");
        d.record(s, Outcome::Status(200));
        d.record(s, Outcome::Timeout);
        d.record(s, Outcome::ConnectFailure);
        assert_eq!(
            s.pending.load(Ordering::Relaxed),
            PENDING_GATEWAY,
            "unsplit, local failures count as 504 and 503"
        );
        assert_eq!(s.external_failure.load(Ordering::Relaxed), 7);
        assert_eq!(s.external_success.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn split_mode_counts_local_origin_failures_apart() {
        let d = detector(
            "{split_external_local_origin_errors: true, consecutive_local_origin_failure: 2}",
        );
        let h = EndpointHealth::default();
        let s = &h.outlier;
        d.record(s, Outcome::Reset);
        d.record(s, Outcome::Status(503));
        assert_eq!(
            s.pending.load(Ordering::Relaxed),
            0,
            "an answer resets local failures"
        );
        d.record(s, Outcome::ConnectFailure);
        d.record(s, Outcome::Timeout);
        assert_eq!(s.pending.load(Ordering::Relaxed), PENDING_LOCAL_ORIGIN);
        assert_eq!(s.consecutive_5xx.load(Ordering::Relaxed), 1);
        assert_eq!(s.local_failure.load(Ordering::Relaxed), 3);
    }
}
