//! Round robin: a precomputed cycle of endpoint indices walked by one shared atomic cursor.
//!
//! Plain round robin's cycle is just the pickable endpoints in order; weighted cycles come from
//! [`crate::smooth_weighted`]. Either way a pick is one relaxed `fetch_add` and an index, so all
//! worker threads share one sequence without locking, and picks interleave exactly: every
//! window of one full cycle — even across threads — contains each endpoint its weight's share
//! of times.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::smooth_weighted;

pub(crate) struct Cycle {
    seq: Box<[u32]>,
    cursor: AtomicUsize,
}

impl Cycle {
    /// Plain round robin, or smooth weighted round robin if the non-zero weights differ (a plain
    /// cycle would silently ignore the weights). `weights` must have a non-zero entry.
    pub(crate) fn round_robin(weights: &[u32]) -> Cycle {
        let mut nonzero = weights.iter().copied().filter(|&w| w > 0);
        let first = nonzero.next().unwrap_or(0);
        if nonzero.all(|w| w == first) {
            Self::from_sequence(live_indices(weights))
        } else {
            Self::smooth_weighted(weights)
        }
    }

    /// nginx's smooth weighted round robin. `weights` must have a non-zero entry.
    pub(crate) fn smooth_weighted(weights: &[u32]) -> Cycle {
        Self::from_sequence(smooth_weighted::sequence(weights))
    }

    fn from_sequence(seq: Vec<u32>) -> Cycle {
        debug_assert!(!seq.is_empty());
        // Every proxy (and every rebuild after an endpoint change) starting at position 0 would
        // send the first burst of a whole fleet to the same endpoint; a random start spreads it.
        let start = fastrand::usize(..seq.len().max(1));
        Cycle {
            seq: seq.into_boxed_slice(),
            cursor: AtomicUsize::new(start),
        }
    }

    pub(crate) fn pick(&self) -> usize {
        // Relaxed is enough: the counter orders nothing else, it only has to hand out each
        // position once. Wrapping at usize::MAX merely skews one cycle.
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.seq[n % self.seq.len()] as usize
    }

    #[cfg(test)]
    pub(crate) fn sequence(&self) -> &[u32] {
        &self.seq
    }
}

fn live_indices(weights: &[u32]) -> Vec<u32> {
    (0u32..)
        .zip(weights)
        .filter(|&(_, &w)| w > 0)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{count_picks, seeded};
    use crate::{Balancer, PickContext, Policy};

    fn picks(b: &Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| b.pick(&PickContext::none()).unwrap())
            .collect()
    }

    #[test]
    fn round_robin_cycles_through_endpoints_in_order() {
        let b = Balancer::new(&Policy::RoundRobin, &[3, 3, 3, 3, 3]);
        let seen = picks(&b, 23);
        for pair in seen.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 5, "{seen:?}");
        }
    }

    #[test]
    fn round_robin_skips_zero_weight_endpoints() {
        let b = Balancer::new(&Policy::RoundRobin, &[0, 1, 0, 1, 1, 0]);
        let seen = picks(&b, 12);
        let next = |i| match i {
            1 => 3,
            3 => 4,
            4 => 1,
            _ => panic!("picked zero-weight endpoint {i}"),
        };
        for pair in seen.windows(2) {
            assert_eq!(pair[1], next(pair[0]), "{seen:?}");
        }
    }

    #[test]
    fn round_robin_equal_weights_distribution_is_exact() {
        seeded(11);
        let b = Balancer::new(&Policy::RoundRobin, &[1; 4]);
        assert_eq!(count_picks(&b, 4, 100_000), vec![25_000; 4]);
    }

    #[test]
    fn round_robin_with_unequal_weights_uses_smooth_weighted_cycle() {
        let weights = [1, 2, 7];
        let rr = Cycle::round_robin(&weights);
        assert_eq!(rr.sequence(), &smooth_weighted::sequence(&weights)[..]);
        let b = Balancer::new(&Policy::RoundRobin, &weights);
        assert_eq!(count_picks(&b, 3, 100_000), vec![10_000, 20_000, 70_000]);
    }

    #[test]
    fn round_robin_starts_at_random_position() {
        seeded(5);
        let firsts: std::collections::HashSet<usize> = (0..200)
            .map(|_| picks(&Balancer::new(&Policy::RoundRobin, &[1; 8]), 1)[0])
            .collect();
        assert_eq!(firsts.len(), 8, "{firsts:?}");
    }

    #[test]
    fn concurrent_round_robin_picks_stay_exactly_balanced() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 50_000;
        let weights = [1, 1, 1, 1, 1];
        let b = Balancer::new(&Policy::RoundRobin, &weights);
        let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| s.spawn(|| count_picks(&b, weights.len(), PER_THREAD)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut totals = vec![0; weights.len()];
        for counts in &per_thread {
            for (t, c) in totals.iter_mut().zip(counts) {
                *t += c;
            }
        }
        // The shared cursor hands out every position exactly once, so however the threads
        // interleave, 200,000 picks over 5 endpoints are exactly 40,000 each.
        assert_eq!(totals, vec![THREADS * PER_THREAD / 5; 5]);
    }

    #[test]
    fn concurrent_smooth_weighted_picks_keep_exact_proportions() {
        let weights = [1, 2, 7];
        let b = Balancer::new(&Policy::SmoothWeighted, &weights);
        let totals = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| s.spawn(|| count_picks(&b, 3, 30_000)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold(vec![0; 3], |acc, c| {
                    acc.iter().zip(&c).map(|(a, b)| a + b).collect()
                })
        });
        assert_eq!(totals, vec![9_000, 18_000, 63_000]);
    }
}
