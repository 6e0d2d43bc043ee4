//! Weighted random choice: the Random policy itself, and the candidate sampler that LeastRequest
//! and the hash-keyed policies (when the request has no hash) build on.
//!
//! Equal weights take the fast path — one uniform draw over the pickable endpoints — so the
//! common unweighted case costs no search. Otherwise a draw in `0..total` is located among the
//! prefix sums by binary search, O(log n).

pub(crate) enum Sampler {
    /// Indices of the endpoints with non-zero weight, ascending; all weights equal.
    Uniform(Box<[u32]>),
    /// Inclusive prefix sums of all weights (zero weights included, so positions are indices);
    /// the last entry is the total, which is non-zero.
    Weighted(Box<[u64]>),
}

impl Sampler {
    /// `weights` must have a non-zero entry.
    pub(crate) fn new(weights: &[u32]) -> Sampler {
        let mut nonzero = weights.iter().copied().filter(|&w| w > 0);
        let first = nonzero.next().unwrap_or(0);
        if nonzero.all(|w| w == first) {
            let live = (0u32..)
                .zip(weights)
                .filter(|&(_, &w)| w > 0)
                .map(|(i, _)| i)
                .collect();
            Sampler::Uniform(live)
        } else {
            // u64 cannot overflow: fewer than 2^32 endpoints of weight below 2^32.
            let cum = weights
                .iter()
                .scan(0u64, |sum, &w| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect();
            Sampler::Weighted(cum)
        }
    }

    /// An endpoint with probability proportional to its weight.
    pub(crate) fn sample(&self) -> usize {
        match self {
            Sampler::Uniform(live) => live[fastrand::usize(..live.len())] as usize,
            Sampler::Weighted(cum) => locate(cum, fastrand::u64(..total(cum))),
        }
    }

    /// Like [`Sampler::sample`] but never `except` (a pickable endpoint) unless it is the only
    /// pickable one: the weighted choice among all the others.
    pub(crate) fn sample_except(&self, except: usize) -> usize {
        match self {
            Sampler::Uniform(live) => {
                if live.len() < 2 {
                    return except;
                }
                // Draw among len - 1 positions and step over `except`'s; `live` is ascending, so
                // comparing indices compares positions.
                let p = fastrand::usize(..live.len() - 1);
                let p = if live[p] as usize >= except { p + 1 } else { p };
                live[p] as usize
            }
            Sampler::Weighted(cum) => {
                let end = cum[except];
                let start = if except == 0 { 0 } else { cum[except - 1] };
                let others = total(cum) - (end - start);
                if others == 0 {
                    return except;
                }
                // Draw from the total with `except`'s interval cut out.
                let r = fastrand::u64(..others);
                locate(cum, if r >= start { r + (end - start) } else { r })
            }
        }
    }
}

fn total(cum: &[u64]) -> u64 {
    cum.last().copied().unwrap_or(0)
}

/// The endpoint whose interval `[cum[i-1], cum[i])` contains `r` (`r < total`); zero-weight
/// endpoints have empty intervals and are never returned.
fn locate(cum: &[u64], r: u64) -> usize {
    cum.partition_point(|&c| c <= r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_fair, assert_shares_pp, count_picks, seeded};
    use crate::{Balancer, Policy};

    #[test]
    fn random_equal_weights_distribution_is_fair() {
        seeded(21);
        let b = Balancer::new(&Policy::Random, &[9; 4]);
        assert_fair(&count_picks(&b, 4, 100_000), 0.02);
    }

    #[test]
    fn random_unequal_weights_distribution_matches_1_2_7() {
        seeded(22);
        let b = Balancer::new(&Policy::Random, &[1, 2, 7]);
        assert_shares_pp(&count_picks(&b, 3, 100_000), &[1, 2, 7], 1.0);
    }

    #[test]
    fn random_skips_zero_weights_and_keeps_proportions() {
        seeded(23);
        let weights = [0, 1, 0, 3, 0];
        let b = Balancer::new(&Policy::Random, &weights);
        let counts = count_picks(&b, 5, 100_000);
        assert_eq!(counts[0] + counts[2] + counts[4], 0);
        assert_shares_pp(&counts, &weights, 1.0);
    }

    #[test]
    fn equal_weights_use_uniform_sampler_and_unequal_use_prefix_sums() {
        assert!(matches!(Sampler::new(&[0, 5, 5]), Sampler::Uniform(l) if *l == [1, 2]));
        assert!(matches!(Sampler::new(&[1, 2, 0]), Sampler::Weighted(c) if *c == [1, 3, 3]));
    }

    #[test]
    fn sample_except_draws_weighted_among_the_others() {
        seeded(24);
        for weights in [&[2u32, 2, 0, 2, 2][..], &[1, 2, 0, 3, 4]] {
            let s = Sampler::new(weights);
            for except in [0, 1, 3, 4] {
                let mut counts = [0usize; 5];
                for _ in 0..40_000 {
                    counts[s.sample_except(except)] += 1;
                }
                assert_eq!(counts[except] + counts[2], 0, "{weights:?} {except}");
                let mut rest = weights.to_vec();
                rest[except] = 0;
                assert_shares_pp(&counts, &rest, 1.5);
            }
        }
        assert_eq!(Sampler::new(&[0, 4]).sample_except(1), 1);
        assert_eq!(Sampler::new(&[0, 4, 0, 0]).sample_except(1), 1);
        assert_eq!(Sampler::new(&[3, 0, 0]).sample_except(0), 0);
    }
}
