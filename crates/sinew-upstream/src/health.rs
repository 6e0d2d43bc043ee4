//! The health of one endpoint, shared by three parties: the request path reports how each
//! exchange went (a few relaxed atomics, no lock, no allocation), the cluster's background
//! tasks check, eject and return endpoints, and the admin API shows the result.
//!
//! Also the panic rule that turns per-endpoint health into the set a balancer picks from.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How one exchange with an endpoint went, as the request path saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No connection could be opened (refused, timed out, TLS failed).
    ConnectFailure,
    /// The connection closed or reset before a whole response head came.
    Reset,
    /// No answer within the per-try timeout.
    Timeout,
    /// A connection opened, and that is the whole exchange (the TCP proxy): a success.
    Connected,
}

/// Bits of [`OutlierState::pending`]: which consecutive-failure threshold was just reached.
pub(crate) const PENDING_5XX: u8 = 1;
pub(crate) const PENDING_GATEWAY: u8 = 2;
pub(crate) const PENDING_LOCAL_ORIGIN: u8 = 4;

/// Active-check and outlier state of one endpoint. It lives in the endpoint's
/// [`EndpointState`](crate::EndpointState), so it survives reloads that keep the endpoint.
#[derive(Default)]
pub struct EndpointHealth {
    /// Failing active health checks, or not checked yet.
    pub(crate) active_failed: AtomicBool,
    /// At least one active check has finished.
    pub(crate) active_checked: AtomicBool,
    /// New, and not yet passed a check: one pass will do.
    active_pending: AtomicBool,
    /// Active check results in a row that disagree with the current state.
    active_streak: AtomicU32,
    pub(crate) outlier: OutlierState,
}

/// Passive health: counters the request path bumps and the ejection the sweep decides.
#[derive(Default)]
pub struct OutlierState {
    pub(crate) ejected: AtomicBool,
    /// Times ejected, less one for each base ejection time spent in service since: the
    /// multiplier of the next ejection's length.
    pub(crate) ejections: AtomicU32,
    /// On the [`clock`], in milliseconds.
    pub(crate) ejected_until: AtomicU64,
    pub(crate) returned_at: AtomicU64,
    pub(crate) consecutive_5xx: AtomicU32,
    pub(crate) consecutive_gateway: AtomicU32,
    pub(crate) consecutive_local: AtomicU32,
    /// This interval's outcomes: upstream answers (5xx = failure) and local-origin ones.
    pub(crate) external_success: AtomicU32,
    pub(crate) external_failure: AtomicU32,
    pub(crate) local_success: AtomicU32,
    pub(crate) local_failure: AtomicU32,
    /// `PENDING_*` bits set when a consecutive threshold is reached, for the sweep.
    pub(crate) pending: AtomicU8,
}

impl EndpointHealth {
    /// A new endpoint of a cluster with active checks waits for its first pass.
    pub(crate) fn new(awaiting_first_check: bool) -> Self {
        let h = EndpointHealth::default();
        h.active_failed
            .store(awaiting_first_check, Ordering::Relaxed);
        h.active_pending
            .store(awaiting_first_check, Ordering::Relaxed);
        h
    }

    /// Failing active health checks (or not yet checked).
    pub fn active_check_failed(&self) -> bool {
        self.active_failed.load(Ordering::Relaxed)
    }

    /// Ejected by outlier detection.
    pub fn ejected(&self) -> bool {
        self.outlier.ejected.load(Ordering::Relaxed)
    }

    /// How many times it was ejected (less returns earned back by staying in service).
    pub fn ejection_multiplier(&self) -> u32 {
        self.outlier.ejections.load(Ordering::Relaxed)
    }

    /// Time left of the current ejection.
    pub fn ejected_for(&self) -> Option<Duration> {
        self.ejected().then(|| {
            let until = self.outlier.ejected_until.load(Ordering::Relaxed);
            Duration::from_millis(until.saturating_sub(clock()))
        })
    }

    /// Carries health over to the state of the same address in a new config.
    pub(crate) fn take_over(&self, old: &EndpointHealth) {
        let copy_bool = |to: &AtomicBool, from: &AtomicBool| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed)
        };
        let copy_u32 = |to: &AtomicU32, from: &AtomicU32| {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed)
        };
        copy_bool(&self.active_failed, &old.active_failed);
        copy_bool(&self.active_checked, &old.active_checked);
        copy_bool(&self.active_pending, &old.active_pending);
        copy_u32(&self.active_streak, &old.active_streak);
        copy_bool(&self.outlier.ejected, &old.outlier.ejected);
        copy_u32(&self.outlier.ejections, &old.outlier.ejections);
        for (to, from) in [
            (&self.outlier.ejected_until, &old.outlier.ejected_until),
            (&self.outlier.returned_at, &old.outlier.returned_at),
        ] {
            to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Applies one active check result; true when the endpoint's health flipped. A new
    /// endpoint needs one pass; after that `healthy` passes or `unhealthy` failures in a
    /// row flip it, as Envoy's thresholds do; a failure `at_once` takes a healthy endpoint
    /// out by itself (Envoy's rule for an endpoint that answers it is unhealthy).
    pub(crate) fn record_active_check(
        &self,
        passed: bool,
        at_once: bool,
        healthy: u32,
        unhealthy: u32,
    ) -> bool {
        self.active_checked.store(true, Ordering::Relaxed);
        let first = passed && self.active_pending.swap(false, Ordering::Relaxed);
        let failed = self.active_failed.load(Ordering::Relaxed);
        if passed != failed {
            // The result agrees with the state.
            self.active_streak.store(0, Ordering::Relaxed);
            return false;
        }
        let streak = self.active_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = match (passed, at_once) {
            (true, _) => healthy,
            (false, true) => 1,
            (false, false) => unhealthy,
        };
        if first || streak >= needed {
            self.active_failed.store(!passed, Ordering::Relaxed);
            self.active_streak.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the balancer may pick it, counting only the mechanisms the cluster runs.
    pub(crate) fn healthy(&self, active: bool, outlier: bool) -> bool {
        let failing_checks = active && self.active_check_failed();
        let ejected = outlier && self.ejected();
        !failing_checks && !ejected
    }
}

/// Milliseconds since the process first asked; ejection deadlines are kept on it.
pub(crate) fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The members a subset's balancer picks from: the healthy ones, or all of them when the
/// healthy share is below `panic_threshold` percent (Envoy's panic mode: better to spread
/// load over sick endpoints than to pile it on the few left). True when in panic.
pub(crate) fn eligible(
    members: &[usize],
    healthy: impl Fn(usize) -> bool,
    panic_threshold: f64,
) -> (Vec<usize>, bool) {
    let up: Vec<usize> = members.iter().copied().filter(|&i| healthy(i)).collect();
    if up.len() == members.len() {
        return (up, false);
    }
    let share = 100.0 * up.len() as f64 / members.len() as f64;
    if share < panic_threshold {
        (members.to_vec(), true)
    } else {
        (up, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_endpoint_needs_one_pass_then_thresholds_apply() {
        let h = EndpointHealth::new(true);
        assert!(h.active_check_failed());
        assert!(!h.record_active_check(false, false, 2, 3), "still failing");
        assert!(
            h.record_active_check(true, false, 2, 3),
            "first pass suffices"
        );
        assert!(!h.active_check_failed());
        assert!(!h.record_active_check(false, false, 2, 3));
        assert!(!h.record_active_check(false, false, 2, 3));
        assert!(
            !h.record_active_check(true, false, 2, 3),
            "a pass breaks the streak"
        );
        assert!(!h.record_active_check(false, false, 2, 3));
        assert!(!h.record_active_check(false, false, 2, 3));
        assert!(
            h.record_active_check(false, false, 2, 3),
            "third failure in a row"
        );
        assert!(h.active_check_failed());
        assert!(!h.record_active_check(true, false, 2, 3));
        assert!(
            h.record_active_check(true, false, 2, 3),
            "second pass in a row"
        );
        assert!(!h.active_check_failed());
    }

    #[test]
    fn an_unhealthy_answer_at_once_takes_a_healthy_endpoint_out_alone() {
        let h = EndpointHealth::new(true);
        assert!(h.record_active_check(true, false, 2, 3));
        assert!(
            !h.record_active_check(false, false, 2, 3),
            "a timeout counts"
        );
        assert!(
            h.record_active_check(false, true, 2, 3),
            "an answer does not wait"
        );
        assert!(h.active_check_failed());
        assert!(
            !h.record_active_check(true, false, 2, 3),
            "back after two passes"
        );
        assert!(h.record_active_check(true, false, 2, 3));
    }

    #[test]
    fn panic_spreads_over_all_members_below_the_threshold() {
        let members = [0, 1, 2, 3];
        let up = |n: usize| move |i: usize| i < n;
        assert_eq!(eligible(&members, up(4), 50.0), (vec![0, 1, 2, 3], false));
        assert_eq!(
            eligible(&members, up(2), 50.0),
            (vec![0, 1], false),
            "50% is not below 50%"
        );
        assert_eq!(eligible(&members, up(1), 50.0), (vec![0, 1, 2, 3], true));
        assert_eq!(eligible(&members, up(0), 50.0), (vec![0, 1, 2, 3], true));
        assert_eq!(
            eligible(&members, up(0), 0.0),
            (vec![], false),
            "0 disables panic"
        );
        assert_eq!(eligible(&[], up(0), 50.0), (vec![], false));
    }

    #[test]
    fn health_counts_only_the_mechanisms_the_cluster_runs() {
        let h = EndpointHealth::new(true);
        h.outlier.ejected.store(true, Ordering::Relaxed);
        assert!(h.healthy(false, false));
        assert!(!h.healthy(true, false));
        assert!(!h.healthy(false, true));
    }
}
