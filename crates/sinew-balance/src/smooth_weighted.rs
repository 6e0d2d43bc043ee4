//! nginx's smooth weighted round robin, precomputed as one full cycle.
//!
//! nginx's algorithm: on every pick each endpoint's `current` grows by its weight, the endpoint
//! with the largest `current` (lowest index on ties) is chosen and loses the total weight. After
//! `total` picks every `current` is back at zero, so the picks form a cycle of length `total` in
//! which endpoint i appears exactly `weight_i` times, spread evenly. Computing that cycle once at
//! build time turns each pick into an O(1) index (see [`crate::round_robin`]).
//!
//! Simulating nginx naively costs O(n) per step, O(n · total) per cycle, which is too slow for
//! large endpoint sets. At step t endpoint i's `current` is `w_i · t − total · k_i` — a line in
//! t whose intercept drops whenever i is picked — so the cycle is built with a kinetic tournament
//! tree over those lines: O(log² n) amortised per step.

/// Largest cycle built; bigger gcd-reduced totals are scaled down to about this.
pub(crate) const MAX_CYCLE: u64 = 1 << 20;

/// One full cycle of nginx's pick sequence for `weights` (indices into `weights`). Weights are
/// divided by their gcd; if the reduced total still exceeds [`MAX_CYCLE`] they are scaled to
/// `max(1, w · MAX_CYCLE / total)`, so the cycle has at most `MAX_CYCLE + n` entries and each
/// endpoint with non-zero weight appears at least once. Empty if all weights are zero.
pub(crate) fn sequence(weights: &[u32]) -> Vec<u32> {
    let reduced = reduce(weights);
    let total: u64 = reduced.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let mut tree = Tournament::new(&reduced);
    let mut seq = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for t in 1..=total as i64 {
        let winner = tree.winner_at(t);
        seq.push(winner as u32);
        tree.lower(winner, total as i64, t);
    }
    seq
}

/// Weights divided by their gcd, scaled down if their total exceeds [`MAX_CYCLE`].
fn reduce(weights: &[u32]) -> Vec<u64> {
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w)).collect();
    divide_by_gcd(&mut w);
    let total: u64 = w.iter().sum();
    if total > MAX_CYCLE {
        for x in w.iter_mut().filter(|x| **x > 0) {
            // u128: x < 2^32 and MAX_CYCLE = 2^20, so this cannot overflow; result < MAX_CYCLE.
            *x = ((u128::from(*x) * u128::from(MAX_CYCLE) / u128::from(total)) as u64).max(1);
        }
        divide_by_gcd(&mut w);
    }
    w
}

fn divide_by_gcd(w: &mut [u64]) {
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g > 1 {
        for x in w.iter_mut() {
            *x /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

const NONE: u32 = u32::MAX;
const NEVER: i64 = i64::MAX;

/// Kinetic tournament tree over lines `slope_i · t + icpt_i`, answering "which line is highest
/// at time t" for non-decreasing t while single intercepts are lowered.
///
/// Every internal node stores the winner of its subtree at the current time and the first
/// (integer) time at which that might change — the earliest of its children's and of the moment
/// the losing child's line overtakes the winning one. Advancing time only revisits nodes whose
/// certificate has expired. Leaves are in index order, so preferring the left child on ties
/// reproduces nginx's "lowest index wins" rule.
struct Tournament {
    leaves: usize,
    slope: Vec<i64>,
    icpt: Vec<i64>,
    winner: Vec<u32>,
    expires: Vec<i64>,
}

impl Tournament {
    /// Lines `w_i · t` (nginx's `current` before any pick); zero weights never win.
    fn new(weights: &[u64]) -> Tournament {
        let leaves = weights.len().next_power_of_two();
        let mut tree = Tournament {
            leaves,
            slope: weights.iter().map(|&w| w as i64).collect(),
            icpt: vec![0; weights.len()],
            winner: vec![NONE; 2 * leaves],
            expires: vec![NEVER; 2 * leaves],
        };
        for (i, &w) in weights.iter().enumerate() {
            if w > 0 {
                tree.winner[leaves + i] = i as u32;
            }
        }
        for node in (1..leaves).rev() {
            tree.pull(node, 1);
        }
        tree
    }

    fn value(&self, i: u32, t: i64) -> i64 {
        self.slope[i as usize] * t + self.icpt[i as usize]
    }

    /// The highest line at time `t` (not earlier than any previous call).
    fn winner_at(&mut self, t: i64) -> usize {
        self.advance(1, t);
        self.winner[1] as usize
    }

    /// Lowers line `i`'s intercept by `by`, as nginx does to the chosen endpoint at time `t`.
    fn lower(&mut self, i: usize, by: i64, t: i64) {
        self.icpt[i] -= by;
        let mut node = (self.leaves + i) / 2;
        while node >= 1 {
            self.pull(node, t);
            node /= 2;
        }
    }

    fn advance(&mut self, node: usize, t: i64) {
        if self.expires[node] > t {
            return;
        }
        // Leaves never expire, so `node` is internal here.
        self.advance(2 * node, t);
        self.advance(2 * node + 1, t);
        self.pull(node, t);
    }

    /// Recomputes `node` from its children, which must be up to date at time `t`.
    fn pull(&mut self, node: usize, t: i64) {
        let (l, r) = (self.winner[2 * node], self.winner[2 * node + 1]);
        let mut expires = self.expires[2 * node].min(self.expires[2 * node + 1]);
        let winner = if l == NONE {
            r
        } else if r == NONE {
            l
        } else {
            let (sl, sr) = (self.slope[l as usize], self.slope[r as usize]);
            let (il, ir) = (self.icpt[l as usize], self.icpt[r as usize]);
            if self.value(l, t) >= self.value(r, t) {
                if sr > sl {
                    // First t' with sr·t' + ir > sl·t' + il.
                    expires = expires.min((il - ir).div_euclid(sr - sl) + 1);
                }
                l
            } else {
                if sl > sr {
                    // First t' with sl·t' + il >= sr·t' + ir (ties go left).
                    expires = expires.min(-(il - ir).div_euclid(sl - sr));
                }
                r
            }
        };
        self.winner[node] = winner;
        self.expires[node] = expires;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{count_picks, seeded};
    use crate::{Balancer, Policy};

    /// nginx's `ngx_http_upstream_get_peer`, verbatim in spirit: O(n) per pick.
    fn nginx(weights: &[u64], picks: usize) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::with_capacity(picks);
        for _ in 0..picks {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                current[i] += w as i64;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            out.push(b as u32);
        }
        out
    }

    #[test]
    fn smooth_weighted_matches_nginx_sequence_for_5_1_1() {
        // The example from nginx's commit introducing smooth weighted round robin.
        assert_eq!(sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_weighted_matches_naive_nginx_for_random_weights() {
        seeded(7);
        for round in 0..300 {
            let n = fastrand::usize(1..=if round < 250 { 12 } else { 200 });
            let max = if round % 3 == 0 { 4 } else { 60 };
            let weights: Vec<u32> = (0..n).map(|_| fastrand::u32(0..=max)).collect();
            let reduced = reduce(&weights);
            let total: u64 = reduced.iter().sum();
            let got = sequence(&weights);
            assert_eq!(got.len() as u64, total);
            assert_eq!(got, nginx(&reduced, total as usize), "weights {weights:?}");
            if total > 0 {
                // After one cycle nginx's state is back at zero, so the cycle repeats.
                assert_eq!(
                    &nginx(&reduced, 2 * total as usize)[total as usize..],
                    &got[..]
                );
            }
        }
    }

    #[test]
    fn smooth_weighted_cycle_is_exact_and_reduced_by_gcd() {
        let seq = sequence(&[10, 0, 20, 70]);
        assert_eq!(seq.len(), 10);
        for (i, want) in [(0, 1), (1, 0), (2, 2), (3, 7)] {
            assert_eq!(seq.iter().filter(|&&x| x == i).count(), want, "{seq:?}");
        }
    }

    #[test]
    fn smooth_weighted_is_smooth() {
        // Unlike a naive weighted cycle (a a a a a b c), no endpoint's count ever strays more
        // than one pick from its ideal share t·w/total, at any prefix of the cycle.
        seeded(3);
        for _ in 0..50 {
            let weights: Vec<u32> = (0..fastrand::usize(2..20))
                .map(|_| fastrand::u32(1..100))
                .collect();
            let reduced = reduce(&weights);
            let total: u64 = reduced.iter().sum();
            let seq = sequence(&weights);
            let mut counts = vec![0u64; weights.len()];
            for (t, &i) in seq.iter().enumerate() {
                counts[i as usize] += 1;
                for (k, &w) in counts.iter().zip(&reduced) {
                    let ideal = (t as u64 + 1) * w;
                    let actual = k * total;
                    assert!(ideal.abs_diff(actual) < total, "{weights:?} at {t}");
                }
            }
        }
        let seq = sequence(&[5, 1, 1]);
        let longest_run = seq.chunk_by(|a, b| a == b).map(<[u32]>::len).max().unwrap();
        assert_eq!(longest_run, 2);
    }

    #[test]
    fn smooth_weighted_scales_huge_totals_down_keeping_proportions() {
        let weights = [1_000_003, 2_000_000, 7_000_000, 1, 0];
        let seq = sequence(&weights);
        assert!(seq.len() as u64 <= MAX_CYCLE + 5, "{}", seq.len());
        let count = |i| seq.iter().filter(|&&x| x == i).count() as f64;
        let n = seq.len() as f64;
        assert!((count(0) / n - 0.1).abs() < 1e-4);
        assert!((count(1) / n - 0.2).abs() < 1e-4);
        assert!((count(2) / n - 0.7).abs() < 1e-4);
        assert_eq!(count(3), 1.0, "tiny weight keeps one slot");
        assert_eq!(count(4), 0.0);

        let seq = sequence(&[u32::MAX, u32::MAX - 1, 1]);
        assert!(seq.len() as u64 <= MAX_CYCLE + 3);
        assert!(seq.contains(&2));
    }

    #[test]
    fn smooth_weighted_distribution_matches_weights() {
        seeded(13);
        let b = Balancer::new(&Policy::SmoothWeighted, &[1, 2, 7]);
        assert_eq!(count_picks(&b, 3, 100_000), vec![10_000, 20_000, 70_000]);
        let b = Balancer::new(&Policy::SmoothWeighted, &[4; 4]);
        assert_eq!(count_picks(&b, 4, 100_000), vec![25_000; 4]);
    }

    #[test]
    fn smooth_weighted_picks_follow_the_nginx_cycle() {
        let b = Balancer::new(&Policy::SmoothWeighted, &[5, 1, 1]);
        let picks: Vec<u32> = (0..21)
            .map(|_| b.pick(&crate::PickContext::none()).unwrap() as u32)
            .collect();
        let cycle = [0, 0, 1, 0, 2, 0, 0];
        let is_rotation = (0..7).any(|s| (0..21).all(|k| picks[k] == cycle[(s + k) % 7]));
        assert!(is_rotation, "{picks:?} is not a rotation of nginx's cycle");
    }

    #[test]
    fn smooth_weighted_builds_large_endpoint_sets_quickly() {
        // 5,000 endpoints with distinct weights: the naive O(n · total) simulation would take
        // ~10^10 steps here.
        let weights: Vec<u32> = (1..=5_000).collect();
        let start = std::time::Instant::now();
        let seq = sequence(&weights);
        assert!(seq.len() as u64 <= MAX_CYCLE + 5_000);
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }
}
