//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted the way Envoy's `MAGLEV` is.
//!
//! Each endpoint has a pseudo-random permutation of the table's slots (an `offset` and a `skip`
//! derived from two hashes of its id; a prime table size makes every skip a full cycle). Endpoints
//! take turns claiming their next still-free slot until the table is full, so with equal weights
//! every endpoint owns within one slot of `M / n` — far more even than a ring of similar size —
//! and a lookup is a single index. Weights are honoured by how often an endpoint gets a turn:
//! the heaviest takes one every round, an endpoint of half that weight every other round.
//! Removing an endpoint mostly just hands its slots to others; a few other slots move too.

use xxhash_rust::xxh64::xxh64;

use crate::random::Sampler;
use crate::MAX_MAGLEV_TABLE_SIZE;

pub(crate) struct Maglev {
    table: Box<[u32]>,
    /// For requests without a hash.
    fallback: Sampler,
}

struct Turn {
    index: u32,
    weight: u64,
    /// Rounds are skipped until `round · weight` reaches this; it grows by the heaviest weight
    /// per claimed slot. Envoy does the same with normalised f64 weights; integers are exact.
    target: u64,
    /// Next slot in this endpoint's permutation.
    position: u64,
    skip: u64,
}

const FREE: u32 = u32::MAX;

impl Maglev {
    /// `weights` must have a non-zero entry; `id(i)` is endpoint i's stable identity.
    pub(crate) fn new(weights: &[u32], id: &dyn Fn(usize) -> u64, table_size: usize) -> Maglev {
        let m = table_size_for(table_size);
        let mut turns: Vec<Turn> = (0u32..)
            .zip(weights)
            .filter(|&(_, &w)| w > 0)
            .map(|(i, &w)| {
                let key = id(i as usize).to_le_bytes();
                Turn {
                    index: i,
                    weight: u64::from(w),
                    target: 0,
                    position: xxh64(&key, 0) % m,
                    skip: xxh64(&key, 1) % (m - 1) + 1,
                }
            })
            .collect();
        let heaviest = turns.iter().map(|t| t.weight).max().unwrap_or(1);

        let mut table = vec![FREE; m as usize];
        let mut filled = 0u64;
        // The heaviest endpoint claims a slot every round, so this ends within `m` rounds.
        let mut round = 1u64;
        while filled < m && !turns.is_empty() {
            for turn in turns.iter_mut() {
                if filled == m {
                    break;
                }
                if round * turn.weight < turn.target {
                    continue;
                }
                turn.target += heaviest;
                loop {
                    let slot = turn.position as usize;
                    turn.position = (turn.position + turn.skip) % m;
                    if table[slot] == FREE {
                        table[slot] = turn.index;
                        break;
                    }
                }
                filled += 1;
            }
            round += 1;
        }
        Maglev {
            table: table.into_boxed_slice(),
            fallback: Sampler::new(weights),
        }
    }

    pub(crate) fn pick(&self, hash: Option<u64>) -> usize {
        match hash {
            Some(h) => self.table[(h % self.table.len() as u64) as usize] as usize,
            None => self.fallback.sample(),
        }
    }
}

/// `requested` rounded up to a prime (at least 2, so a skip of 1 exists) and clamped to
/// [`MAX_MAGLEV_TABLE_SIZE`], which is itself prime.
fn table_size_for(requested: usize) -> u64 {
    let mut m = requested.clamp(2, MAX_MAGLEV_TABLE_SIZE) as u64;
    while !is_prime(m) {
        m += 1;
    }
    m
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_fair, assert_shares_pp, count_picks, moved_fraction, seeded};
    use crate::{hash_key, Balancer, PickContext, Policy, DEFAULT_MAGLEV_TABLE_SIZE};

    fn by_index(weights: &[u32], m: usize) -> Maglev {
        Maglev::new(weights, &|i| i as u64, m)
    }

    fn slots(t: &Maglev, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &i in t.table.iter() {
            counts[i as usize] += 1;
        }
        counts
    }

    #[test]
    fn maglev_table_size_is_rounded_to_a_prime() {
        assert!(is_prime(DEFAULT_MAGLEV_TABLE_SIZE as u64));
        assert!(is_prime(MAX_MAGLEV_TABLE_SIZE as u64));
        assert_eq!(table_size_for(65537), 65537);
        assert_eq!(table_size_for(1000), 1009);
        assert_eq!(table_size_for(0), 2);
        assert_eq!(table_size_for(usize::MAX), MAX_MAGLEV_TABLE_SIZE as u64);
        assert_eq!(by_index(&[1, 1], 100).table.len(), 101);
    }

    #[test]
    fn maglev_equal_weights_split_the_table_within_one_slot() {
        let t = by_index(&[1; 10], DEFAULT_MAGLEV_TABLE_SIZE);
        assert!(t.table.iter().all(|&i| i < 10), "table fully populated");
        let counts = slots(&t, 10);
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "{counts:?}");
    }

    #[test]
    fn maglev_weighted_table_shares_match_weights() {
        let t = by_index(&[1, 2, 7, 0], DEFAULT_MAGLEV_TABLE_SIZE);
        let counts = slots(&t, 4);
        assert_eq!(counts[3], 0);
        assert_shares_pp(&counts, &[1, 2, 7, 0], 0.05);
    }

    #[test]
    fn maglev_equal_weights_distribution_is_fair() {
        seeded(51);
        let b = Balancer::new(&Policy::maglev(), &[1; 4]);
        assert_fair(&count_picks(&b, 4, 100_000), 0.02);
    }

    #[test]
    fn maglev_unequal_weights_distribution_matches_1_2_7() {
        seeded(52);
        let b = Balancer::new(&Policy::maglev(), &[1, 2, 7]);
        assert_shares_pp(&count_picks(&b, 3, 100_000), &[1, 2, 7], 1.0);
    }

    #[test]
    fn maglev_same_hash_maps_to_same_endpoint() {
        seeded(53);
        let weights = [3, 1, 4, 1, 5];
        let a = Balancer::new(&Policy::maglev(), &weights);
        let b = Balancer::new(&Policy::maglev(), &weights);
        for _ in 0..10_000 {
            let ctx = PickContext::with_hash(fastrand::u64(..));
            let first = a.pick(&ctx);
            assert_eq!(first, a.pick(&ctx));
            assert_eq!(first, b.pick(&ctx));
        }
        let t = by_index(&weights, DEFAULT_MAGLEV_TABLE_SIZE);
        assert_eq!(t.pick(Some(5)), t.table[5] as usize);
        assert_eq!(t.pick(Some(65537 + 5)), t.table[5] as usize);
    }

    #[test]
    fn maglev_removing_one_endpoint_moves_few_other_keys() {
        seeded(54);
        const N: usize = 10;
        let all = [1u32; N];
        let mut without = all;
        without[6] = 0;
        let before = Balancer::new(&Policy::maglev(), &all);
        let after = Balancer::new(&Policy::maglev(), &without);
        let moved = moved_fraction(&before, &after, 100_000, |i| i);
        // The removed endpoint's 1/N must move; Maglev moves only a little more than that,
        // far from the ~(N-1)/N a modulo-based table would.
        assert!(moved > 0.09 && moved < 1.6 / N as f64, "moved {moved}");
    }

    #[test]
    fn maglev_ids_keep_keys_when_positions_shift() {
        seeded(55);
        let ids: Vec<u64> = (0..10)
            .map(|i| hash_key(format!("pod-{i}.svc:80").as_bytes()))
            .collect();
        let mut ids_after = ids.clone();
        ids_after.remove(0);
        let before = Balancer::with_ids(&Policy::maglev(), &[1; 10], &ids);
        let after = Balancer::with_ids(&Policy::maglev(), &[1; 9], &ids_after);
        let moved = moved_fraction(&before, &after, 100_000, |i| i + 1);
        assert!(moved < 0.16, "moved {moved}");
    }
}
