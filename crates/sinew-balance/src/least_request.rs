//! Least request by the power of N choices: sample a few candidates and keep the least loaded.
//!
//! Comparing a couple of random candidates instead of scanning for the global minimum keeps a
//! pick O(N log n) and, unlike always taking the minimum, stops every proxy in a fleet from
//! stampeding onto the same momentarily idle endpoint. Load is `active / weight`, compared by
//! cross-multiplication in u128 so there are no floats and no overflow.

use crate::random::Sampler;
use crate::DEFAULT_CHOICES;

pub(crate) struct LeastRequest {
    sampler: Sampler,
    weights: Box<[u32]>,
    choices: u32,
}

impl LeastRequest {
    /// `weights` must have a non-zero entry. `choices` 0 means [`DEFAULT_CHOICES`]; more choices
    /// than pickable endpoints are capped, since extra draws could only repeat candidates.
    pub(crate) fn new(weights: &[u32], choices: u32) -> LeastRequest {
        let live = weights.iter().filter(|&&w| w > 0).count();
        let choices = if choices == 0 {
            DEFAULT_CHOICES
        } else {
            choices
        };
        LeastRequest {
            sampler: Sampler::new(weights),
            weights: weights.into(),
            choices: choices.min(u32::try_from(live).unwrap_or(u32::MAX)).max(1),
        }
    }

    pub(crate) fn pick(&self, active: &dyn Fn(usize) -> u64) -> usize {
        let mut best = self.sampler.sample();
        if self.choices == 1 {
            return best;
        }
        let mut best_active = active(best);
        for _ in 1..self.choices {
            // Drawing among the endpoints other than the current best keeps the comparison
            // meaningful; with two endpoints it guarantees both are compared.
            let candidate = self.sampler.sample_except(best);
            let candidate_active = active(candidate);
            // candidate_active / w_c < best_active / w_b; ties keep the earlier (random) draw,
            // so equal loads leave the sampler's weighted distribution untouched.
            if u128::from(candidate_active) * u128::from(self.weights[best])
                < u128::from(best_active) * u128::from(self.weights[candidate])
            {
                best = candidate;
                best_active = candidate_active;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{assert_fair, assert_shares_pp, seeded};
    use crate::{Balancer, PickContext, Policy};

    fn count(b: &Balancer, n: usize, picks: usize, active: &dyn Fn(usize) -> u64) -> Vec<usize> {
        let mut counts = vec![0; n];
        let ctx = PickContext { hash: None, active };
        for _ in 0..picks {
            counts[b.pick(&ctx).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn least_request_equal_loads_and_weights_is_uniform() {
        seeded(31);
        let b = Balancer::new(&Policy::least_request(), &[1; 5]);
        assert_fair(&count(&b, 5, 100_000, &|_| 0), 0.02);
        assert_fair(&count(&b, 5, 100_000, &|_| 17), 0.02);
    }

    #[test]
    fn least_request_idle_endpoints_follow_weights_1_2_7() {
        seeded(32);
        let b = Balancer::new(&Policy::least_request(), &[1, 2, 7]);
        assert_shares_pp(&count(&b, 3, 100_000, &|_| 0), &[1, 2, 7], 1.0);
    }

    #[test]
    fn least_request_avoids_heavily_loaded_endpoint() {
        seeded(33);
        let b = Balancer::new(&Policy::least_request(), &[1; 5]);
        let counts = count(&b, 5, 100_000, &|i| if i == 2 { 1_000_000 } else { 3 });
        // With two distinct candidates the overloaded one always loses its comparison.
        assert_eq!(counts[2], 0, "{counts:?}");
        assert_fair(&[counts[0], counts[1], counts[3], counts[4]], 0.03);
    }

    #[test]
    fn least_request_two_choices_follow_the_p2c_distribution() {
        // With distinct pairs drawn uniformly from 5 endpoints of increasing load, endpoint i
        // wins exactly the pairs it forms with the 4 - i busier ones: 4:3:2:1:0 out of 10.
        seeded(34);
        let b = Balancer::new(&Policy::least_request(), &[1; 5]);
        let counts = count(&b, 5, 100_000, &|i| 10 * i as u64);
        assert_shares_pp(&counts, &[4, 3, 2, 1, 0], 1.0);
    }

    #[test]
    fn least_request_compares_active_per_weight() {
        seeded(35);
        let b = Balancer::new(&Policy::least_request(), &[1, 4]);
        // 1/1 vs 3/4: the heavier endpoint is less loaded relative to its weight.
        assert_eq!(count(&b, 2, 1_000, &|i| [1, 3][i]), vec![0, 1_000]);
        // 1/1 vs 5/4: now it is not.
        assert_eq!(count(&b, 2, 1_000, &|i| [1, 5][i]), vec![1_000, 0]);
        // Extreme values must not overflow the comparison.
        let b = Balancer::new(&Policy::least_request(), &[u32::MAX, 1]);
        assert_eq!(count(&b, 2, 1_000, &|_| u64::MAX), vec![1_000, 0]);
    }

    #[test]
    fn least_request_one_choice_ignores_load() {
        seeded(36);
        let b = Balancer::new(&Policy::LeastRequest { choices: 1 }, &[1; 4]);
        assert_fair(&count(&b, 4, 100_000, &|i| 1_000 * i as u64), 0.02);
    }

    #[test]
    fn least_request_more_choices_concentrate_on_least_loaded() {
        seeded(37);
        let weights = [1; 8];
        let load = |i: usize| 10 * i as u64;
        let two = count(
            &Balancer::new(&Policy::least_request(), &weights),
            8,
            50_000,
            &load,
        );
        let four = Balancer::new(&Policy::LeastRequest { choices: 4 }, &weights);
        let four = count(&four, 8, 50_000, &load);
        assert!(four[0] > two[0] + 5_000, "{two:?} vs {four:?}");
        assert!(four[7] == 0 && two[7] == 0);
    }
}
