//! Ketama-style consistent-hash ring, sized and weighted the way Envoy's `RING_HASH` is.
//!
//! Each endpoint owns points on a 64-bit ring (`xxh64` of its id and a replica number, as
//! little-endian bytes) in proportion to its weight; a request hash belongs to the first point at
//! or after it, wrapping around. Removing an endpoint only frees its own arcs, so keys elsewhere
//! stay put — except that, as in Envoy, the ring is re-sized to keep its total near
//! `min_ring_size`, so every endpoint's replica count changes slightly with the endpoint count
//! and up to about another 1/N of keys can move between the remaining endpoints.

use xxhash_rust::xxh64::xxh64;

use crate::random::Sampler;
use crate::DEFAULT_MAX_RING_SIZE;

pub(crate) struct RingHash {
    /// Point hashes, ascending; searched apart from `owners` to keep the search cache-dense.
    hashes: Box<[u64]>,
    owners: Box<[u32]>,
    /// `buckets[b]` is the first point whose top bits are at least `b`, so a lookup only
    /// binary-searches the few points sharing the request hash's top bits: a plain search of a
    /// large ring is ~20 dependent cache misses.
    buckets: Box<[u32]>,
    /// `64 - log2(buckets.len() - 1)`: shifting a hash right by this gives its bucket.
    shift: u32,
    /// For requests without a hash.
    fallback: Sampler,
}

impl RingHash {
    /// `weights` must have a non-zero entry; `id(i)` is endpoint i's stable identity.
    pub(crate) fn new(
        weights: &[u32],
        id: &dyn Fn(usize) -> u64,
        min_ring_size: usize,
        max_ring_size: usize,
    ) -> RingHash {
        let max = max_ring_size.clamp(1, DEFAULT_MAX_RING_SIZE);
        let min = min_ring_size.clamp(1, max);
        let total = u128::from(weights.iter().map(|&w| u64::from(w)).sum::<u64>());
        let lightest = u128::from(
            weights
                .iter()
                .copied()
                .filter(|&w| w > 0)
                .min()
                .unwrap_or(1),
        );
        let (min, max) = (min as u128, max as u128);

        // Envoy's sizing: `scale` entries in all, enough that the lightest endpoint gets its
        // share of `min_ring_size` rounded up, but never more than `max_ring_size`. Endpoint i
        // then ends at `ceil(scale · prefix_weight_i / total)`: accumulating targets keeps the
        // rounding from drifting the ring past `scale`. Envoy does this in f64; exact integers
        // (u128: at most 2^23 · 2^64) avoid an extra entry from rounding fuzz. At the cap an
        // endpoint whose share is under one entry may get none, as in Envoy.
        let lightest_entries = (lightest * min).div_ceil(total);
        let (num, den) = if lightest_entries * total > max * lightest {
            (max, total)
        } else {
            (lightest_entries, lightest)
        };
        let size = (num * total).div_ceil(den);
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(size as usize);
        let mut prefix = 0u128;
        for (i, &w) in (0u32..).zip(weights) {
            if w == 0 {
                continue;
            }
            prefix += u128::from(w);
            let end = (num * prefix).div_ceil(den) as usize;
            let id = id(i as usize);
            for replica in 0..(end - ring.len()) as u64 {
                ring.push((point(id, replica), i));
            }
        }
        // Ties (astronomically rare) are broken by index so the ring is deterministic.
        ring.sort_unstable();
        let hashes: Box<[u64]> = ring.iter().map(|&(h, _)| h).collect();
        // About two points per bucket: a sixth more memory than the ring, for O(1) lookups.
        let bits = (hashes.len() / 2).max(1).ilog2();
        let shift = 64 - bits;
        let mut buckets = Vec::with_capacity((1usize << bits) + 1);
        let mut at = 0;
        for b in 0..1u64 << bits {
            while at < hashes.len() && bucket(hashes[at], shift) < b {
                at += 1;
            }
            buckets.push(at as u32);
        }
        buckets.push(hashes.len() as u32);
        RingHash {
            owners: ring.iter().map(|&(_, i)| i).collect(),
            hashes,
            buckets: buckets.into_boxed_slice(),
            shift,
            fallback: Sampler::new(weights),
        }
    }

    pub(crate) fn pick(&self, hash: Option<u64>) -> usize {
        match hash {
            Some(h) if !self.hashes.is_empty() => {
                let b = bucket(h, self.shift) as usize;
                let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
                // Points before `lo` are below h's bucket and points from `hi` on above it, so
                // the first point at or after h is in `lo..=hi`.
                let at = lo + self.hashes[lo..hi].partition_point(|&p| p < h);
                self.owners[if at == self.hashes.len() { 0 } else { at }] as usize
            }
            _ => self.fallback.sample(),
        }
    }
}

fn bucket(hash: u64, shift: u32) -> u64 {
    // A shift of 64 (one bucket) would overflow.
    hash.checked_shr(shift).unwrap_or(0)
}

/// Position of replica `replica` of the endpoint with identity `id`.
fn point(id: u64, replica: u64) -> u64 {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_le_bytes());
    key[8..].copy_from_slice(&replica.to_le_bytes());
    xxh64(&key, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_fair, assert_shares_pp, count_picks, moved_fraction, seeded};
    use crate::{hash_key, Balancer, PickContext, Policy};

    fn ring(min: usize, max: usize) -> Policy {
        Policy::RingHash {
            min_ring_size: min,
            max_ring_size: max,
        }
    }

    fn by_index(weights: &[u32], min: usize, max: usize) -> RingHash {
        RingHash::new(weights, &|i| i as u64, min, max)
    }

    fn entries_of(r: &RingHash, i: u32) -> usize {
        r.owners.iter().filter(|&&o| o == i).count()
    }

    #[test]
    fn ring_hash_same_hash_maps_to_same_endpoint() {
        seeded(41);
        let weights = [1, 3, 2, 5, 1];
        let a = Balancer::new(&Policy::ring_hash(), &weights);
        let b = Balancer::new(&Policy::ring_hash(), &weights);
        let mut seen = [false; 5];
        for _ in 0..10_000 {
            let ctx = PickContext::with_hash(fastrand::u64(..));
            let first = a.pick(&ctx);
            assert_eq!(first, a.pick(&ctx));
            assert_eq!(
                first,
                b.pick(&ctx),
                "rebuilding must not change the mapping"
            );
            seen[first.unwrap()] = true;
        }
        assert_eq!(seen, [true; 5]);
    }

    #[test]
    fn ring_hash_lookup_takes_first_point_at_or_after_hash_and_wraps() {
        let r = by_index(&[1, 1, 1], 64, 64);
        for k in 0..r.hashes.len() {
            let h = r.hashes[k];
            assert_eq!(r.pick(Some(h)), r.owners[k] as usize);
            if k + 1 < r.hashes.len() && h + 1 < r.hashes[k + 1] {
                assert_eq!(r.pick(Some(h + 1)), r.owners[k + 1] as usize);
            }
        }
        let last = *r.hashes.last().unwrap();
        if last < u64::MAX {
            assert_eq!(r.pick(Some(last + 1)), r.owners[0] as usize);
        }
        assert_eq!(r.pick(Some(0)), r.owners[0] as usize);
    }

    #[test]
    fn ring_hash_bucket_index_agrees_with_plain_binary_search() {
        seeded(47);
        for size in [1, 2, 3, 5, 64, 1000, 4099] {
            let r = by_index(&[1, 2, 3], size, size);
            let plain = |h: u64| {
                let at = r.hashes.partition_point(|&p| p < h);
                r.owners[at % r.hashes.len()] as usize
            };
            let mut probes: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX - 1, 1 << 63];
            for &p in r.hashes.iter() {
                probes.extend([p, p.wrapping_add(1), p.wrapping_sub(1)]);
            }
            probes.extend((0..10_000).map(|_| fastrand::u64(..)));
            for h in probes {
                assert_eq!(r.pick(Some(h)), plain(h), "ring {size}, hash {h:#x}");
            }
        }
    }

    #[test]
    fn ring_hash_sizes_ring_like_envoy() {
        // Equal weights: the ring is min_ring_size rounded up to a multiple of the count.
        let r = by_index(&[1; 4], 1024, 8 << 20);
        assert_eq!(r.hashes.len(), 1024);
        assert!((0..4).all(|i| entries_of(&r, i) == 256));
        let r = by_index(&[1; 10], 1024, 8 << 20);
        assert_eq!(r.hashes.len(), 1030);
        // The lightest endpoint gets its rounded-up share; the others proportionally more.
        let r = by_index(&[1, 1000], 1024, 8 << 20);
        assert_eq!((entries_of(&r, 0), entries_of(&r, 1)), (2, 2000));
        // ...unless that would exceed max_ring_size.
        let r = by_index(&[1, 1000], 1024, 1500);
        assert_eq!(r.hashes.len(), 1500);
        // Absurd sizes are clamped rather than allocating the world.
        let r = by_index(&[1, 1], usize::MAX, usize::MAX);
        assert_eq!(r.hashes.len(), DEFAULT_MAX_RING_SIZE);
        let r = by_index(&[1, 1], 0, 0);
        assert_eq!(r.hashes.len(), 1);
    }

    #[test]
    fn ring_hash_equal_weights_distribution_is_fair() {
        seeded(42);
        let b = Balancer::new(&ring(1 << 18, 1 << 20), &[1; 4]);
        assert_fair(&count_picks(&b, 4, 100_000), 0.02);
    }

    #[test]
    fn ring_hash_unequal_weights_distribution_matches_1_2_7() {
        seeded(43);
        let b = Balancer::new(&ring(1 << 18, 1 << 20), &[1, 2, 7]);
        assert_shares_pp(&count_picks(&b, 3, 100_000), &[1, 2, 7], 1.0);
        // Even the default, much smaller ring stays within 2 points.
        let b = Balancer::new(&Policy::ring_hash(), &[1, 2, 7]);
        assert_shares_pp(&count_picks(&b, 3, 100_000), &[1, 2, 7], 2.0);
    }

    #[test]
    fn ring_hash_without_hash_is_weighted_random() {
        seeded(44);
        let b = Balancer::new(&Policy::ring_hash(), &[1, 2, 7]);
        let mut counts = [0; 3];
        for _ in 0..100_000 {
            counts[b.pick(&PickContext::none()).unwrap()] += 1;
        }
        assert_shares_pp(&counts, &[1, 2, 7], 1.0);
    }

    #[test]
    fn ring_hash_removing_one_of_n_endpoints_remaps_about_one_nth_of_keys() {
        seeded(45);
        const N: usize = 10;
        let all = [1u32; N];
        let mut without = all;
        without[3] = 0;
        let before = Balancer::new(&Policy::ring_hash(), &all);
        let after = Balancer::new(&Policy::ring_hash(), &without);
        let moved = moved_fraction(&before, &after, 100_000, |i| i);
        // ~1/N lost with the endpoint plus the ring re-sizing (1030 → 1026 entries).
        assert!(
            moved > 0.8 / N as f64 && moved < 2.0 / N as f64,
            "moved {moved}"
        );

        // Keys that were not on the removed endpoint mostly stay where they were.
        let mut stayed_elsewhere = 0;
        let mut elsewhere = 0;
        for _ in 0..100_000 {
            let ctx = PickContext::with_hash(fastrand::u64(..));
            let was = before.pick(&ctx).unwrap();
            if was != 3 {
                elsewhere += 1;
                stayed_elsewhere += usize::from(after.pick(&ctx) == Some(was));
            }
        }
        assert!(stayed_elsewhere as f64 > 0.9 * elsewhere as f64);
    }

    #[test]
    fn ring_hash_ids_keep_keys_when_positions_shift() {
        seeded(46);
        let addrs: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:8080")).collect();
        let ids: Vec<u64> = addrs.iter().map(|a| hash_key(a.as_bytes())).collect();
        let mut ids_after = ids.clone();
        ids_after.remove(3);
        let old_index = |i| if i >= 3 { i + 1 } else { i };
        let before = Balancer::with_ids(&Policy::ring_hash(), &[1; 10], &ids);
        let after = Balancer::with_ids(&Policy::ring_hash(), &[1; 9], &ids_after);
        let moved = moved_fraction(&before, &after, 100_000, old_index);
        assert!(moved < 0.2, "moved {moved}");
        // Without ids, positions are identities: shifting them reshuffles most keys.
        let before = Balancer::new(&Policy::ring_hash(), &[1; 10]);
        let shifted = Balancer::new(&Policy::ring_hash(), &[1; 9]);
        let unstable = moved_fraction(&before, &shifted, 100_000, old_index);
        assert!(unstable > 0.5, "moved {unstable}");
    }
}
