//! Shared helpers for the unit tests: deterministic randomness, pick counting and share checks.

use crate::{Balancer, PickContext};

/// Makes this test thread's `fastrand` stream (used by the balancers and by the helpers here)
/// reproducible, so statistical tests are deterministic rather than flaky.
pub fn seeded(seed: u64) {
    fastrand::seed(seed);
}

/// Picks `picks` times with a fresh random request hash and no load, counting per endpoint.
pub fn count_picks(b: &Balancer, endpoints: usize, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; endpoints];
    for _ in 0..picks {
        let ctx = PickContext::with_hash(fastrand::u64(..));
        counts[b.pick(&ctx).expect("balancer is not empty")] += 1;
    }
    counts
}

/// Each endpoint's share of `counts` is within `tol_pp` percentage points of its weight's share.
pub fn assert_shares_pp(counts: &[usize], weights: &[u32], tol_pp: f64) {
    let total: usize = counts.iter().sum();
    let wsum: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let got = 100.0 * c as f64 / total as f64;
        let want = 100.0 * f64::from(w) / wsum;
        assert!(
            (got - want).abs() <= tol_pp,
            "endpoint {i}: {got:.2}% vs {want:.2}% (counts {counts:?}, weights {weights:?})"
        );
    }
}

/// Each count is within `tol` (relative, e.g. 0.02) of the fair share `total / len`.
pub fn assert_fair(counts: &[usize], tol: f64) {
    let total: usize = counts.iter().sum();
    let fair = total as f64 / counts.len() as f64;
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            (c as f64 - fair).abs() <= tol * fair,
            "endpoint {i}: {c} vs fair {fair:.0} ± {:.1}% (counts {counts:?})",
            tol * 100.0
        );
    }
}

/// Fraction of `keys` random hashes whose endpoint differs between two balancers; `after_to_before`
/// maps an index of `after`'s weight slice to the same endpoint's index in `before`'s.
pub fn moved_fraction(
    before: &Balancer,
    after: &Balancer,
    keys: usize,
    after_to_before: impl Fn(usize) -> usize,
) -> f64 {
    let mut moved = 0;
    for _ in 0..keys {
        let ctx = PickContext::with_hash(fastrand::u64(..));
        if before.pick(&ctx) != after.pick(&ctx).map(&after_to_before) {
            moved += 1;
        }
    }
    moved as f64 / keys as f64
}
