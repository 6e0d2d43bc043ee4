//! Load-balancing policies for Sinew: given the weights of an upstream's endpoints, choose which
//! endpoint serves the next request.
//!
//! Everything here is pure computation (no I/O, no async runtime). A [`Balancer`] is built once
//! per endpoint-set change — that is where all the expensive work (tables, rings, sequences)
//! happens — and is then shared by every worker thread. [`Balancer::pick`] takes `&self`, never
//! locks and never allocates; the only mutable state is a relaxed atomic cursor, plus the
//! thread-local generator of `fastrand` for the randomised policies.
//!
//! Endpoints are identified by their position in the weight slice. Hash-keyed policies
//! ([`Policy::RingHash`], [`Policy::Maglev`]) derive their ring/table from that identity, so to
//! keep keys sticky across endpoint-set changes either keep positions stable (give a removed
//! endpoint weight 0) or build with [`Balancer::with_ids`] and a stable id per endpoint.

use std::fmt;

mod least_request;
mod maglev;
mod random;
mod ring_hash;
mod round_robin;
mod smooth_weighted;
#[cfg(test)]
mod test_util;

use least_request::LeastRequest;
use maglev::Maglev;
use random::Sampler;
use ring_hash::RingHash;
use round_robin::Cycle;

/// Default number of candidates for [`Policy::LeastRequest`] (power of two choices).
pub const DEFAULT_CHOICES: u32 = 2;
/// Envoy's default `minimum_ring_size` for [`Policy::RingHash`].
pub const DEFAULT_MIN_RING_SIZE: usize = 1024;
/// Envoy's default (and largest accepted) `maximum_ring_size` for [`Policy::RingHash`]; larger
/// values are clamped to it.
pub const DEFAULT_MAX_RING_SIZE: usize = 8 * 1024 * 1024;
/// Envoy's default Maglev table size (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: usize = 65537;
/// Largest Maglev table size accepted (Envoy's limit, a prime); larger values are clamped to it.
pub const MAX_MAGLEV_TABLE_SIZE: usize = 5_000_011;

/// Which algorithm; built from config.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Plain round robin over the endpoints with non-zero weight. If those weights are not all
    /// equal, behaves exactly like [`Policy::SmoothWeighted`], so weights are always honoured.
    RoundRobin,
    /// nginx's smooth weighted round robin: every endpoint gets exactly its weight's share of each
    /// cycle, interleaved as evenly as possible (weights {5,1,1} give `a a b a c a a`).
    ///
    /// The cycle is precomputed; when the gcd-reduced total weight exceeds 2^20 the weights are
    /// scaled down proportionally (each non-zero weight stays at least 1), which bounds memory at
    /// the cost of a relative weight error of about total/2^20 for the lightest endpoints.
    SmoothWeighted,
    /// Weighted random (uniform when all non-zero weights are equal).
    Random,
    /// Power of `choices` random choices (weighted-random candidates), keeping the candidate with
    /// the lowest `active / weight`. `choices` 0 means the default, 2; 1 is plain weighted random.
    LeastRequest {
        /// Number of candidates compared per pick; capped at the number of pickable endpoints.
        choices: u32,
    },
    /// Ketama-style consistent-hash ring, built like Envoy's: each endpoint gets ring entries in
    /// proportion to its weight, with the lightest getting at least
    /// `min_ring_size * weight / total` and the whole ring at most `max_ring_size` entries.
    /// Sizes are clamped to `1 ..= DEFAULT_MAX_RING_SIZE` and `min <= max`.
    RingHash {
        /// Envoy default [`DEFAULT_MIN_RING_SIZE`].
        min_ring_size: usize,
        /// Envoy default [`DEFAULT_MAX_RING_SIZE`].
        max_ring_size: usize,
    },
    /// Google's Maglev consistent hashing with Envoy's weighting. `table_size` should be a prime
    /// much larger than the number of endpoints; anything else is rounded up to the next prime
    /// (at least 2) and clamped to [`MAX_MAGLEV_TABLE_SIZE`].
    Maglev {
        /// Envoy default [`DEFAULT_MAGLEV_TABLE_SIZE`].
        table_size: usize,
    },
}

impl Policy {
    /// Least request with the default two choices.
    pub fn least_request() -> Policy {
        Policy::LeastRequest {
            choices: DEFAULT_CHOICES,
        }
    }

    /// Ring hash with Envoy's default ring sizes.
    pub fn ring_hash() -> Policy {
        Policy::RingHash {
            min_ring_size: DEFAULT_MIN_RING_SIZE,
            max_ring_size: DEFAULT_MAX_RING_SIZE,
        }
    }

    /// Maglev with Envoy's default table size.
    pub fn maglev() -> Policy {
        Policy::Maglev {
            table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        }
    }
}

/// What a pick may need from the request and from live endpoint state.
pub struct PickContext<'a> {
    /// Hash of the request key (header, cookie, source IP) for RingHash/Maglev; None → behave like Random.
    pub hash: Option<u64>,
    /// Active requests of endpoint i (for LeastRequest); other policies ignore it.
    pub active: &'a dyn Fn(usize) -> u64,
}

impl PickContext<'static> {
    /// A context with no request hash and no load information, for policies that need neither.
    pub fn none() -> PickContext<'static> {
        PickContext {
            hash: None,
            active: &|_| 0,
        }
    }

    /// A context carrying only a request hash (for RingHash/Maglev).
    pub fn with_hash(hash: u64) -> PickContext<'static> {
        PickContext {
            hash: Some(hash),
            active: &|_| 0,
        }
    }
}

/// An immutable balancer over a fixed endpoint set, built once per endpoint-set change and
/// shared by all worker threads (Send + Sync). `pick` takes &self, never locks, allocates nothing,
/// and is O(1) or O(log n).
pub struct Balancer {
    kind: Kind,
    live: usize,
}

enum Kind {
    Empty,
    /// RoundRobin and SmoothWeighted: a precomputed cycle walked by an atomic cursor.
    Cycle(Cycle),
    Random(Sampler),
    LeastRequest(LeastRequest),
    RingHash(RingHash),
    Maglev(Maglev),
}

impl Balancer {
    /// weights[i] is endpoint i's weight (0 means never pick; treat all-zero or empty as no endpoints).
    ///
    /// Endpoint i's identity for hash-keyed policies is `i` itself; see [`Balancer::with_ids`].
    pub fn new(policy: &Policy, weights: &[u32]) -> Balancer {
        Self::build(policy, weights, &|i| i as u64)
    }

    /// Like [`Balancer::new`], but `ids[i]` is a stable identity of endpoint i (e.g.
    /// [`hash_key`] of its address), so that RingHash and Maglev keep mapping keys to the same
    /// endpoint when other endpoints are removed from the slice and positions shift. Ids should
    /// be distinct. Endpoints past the end of `ids` use their position as id. Other policies
    /// ignore the ids.
    pub fn with_ids(policy: &Policy, weights: &[u32], ids: &[u64]) -> Balancer {
        Self::build(policy, weights, &|i| {
            ids.get(i).copied().unwrap_or(i as u64)
        })
    }

    fn build(policy: &Policy, weights: &[u32], id: &dyn Fn(usize) -> u64) -> Balancer {
        // Indices are stored as u32 to halve table memory; 2^32 endpoints is far beyond memory.
        let weights = &weights[..weights.len().min(u32::MAX as usize)];
        let live = weights.iter().filter(|&&w| w > 0).count();
        if live == 0 {
            return Balancer {
                kind: Kind::Empty,
                live,
            };
        }
        let kind = match policy {
            Policy::RoundRobin => Kind::Cycle(Cycle::round_robin(weights)),
            Policy::SmoothWeighted => Kind::Cycle(Cycle::smooth_weighted(weights)),
            Policy::Random => Kind::Random(Sampler::new(weights)),
            Policy::LeastRequest { choices } => {
                Kind::LeastRequest(LeastRequest::new(weights, *choices))
            }
            Policy::RingHash {
                min_ring_size,
                max_ring_size,
            } => Kind::RingHash(RingHash::new(weights, id, *min_ring_size, *max_ring_size)),
            Policy::Maglev { table_size } => Kind::Maglev(Maglev::new(weights, id, *table_size)),
        };
        Balancer { kind, live }
    }

    /// Chooses an endpoint: an index into the weights the balancer was built from, never one of
    /// weight 0. None if there are no endpoints with non-zero weight.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        match &self.kind {
            Kind::Empty => None,
            Kind::Cycle(c) => Some(c.pick()),
            Kind::Random(s) => Some(s.sample()),
            Kind::LeastRequest(l) => Some(l.pick(ctx.active)),
            Kind::RingHash(r) => Some(r.pick(ctx.hash)),
            Kind::Maglev(m) => Some(m.pick(ctx.hash)),
        }
    }

    /// Number of pickable endpoints (those with non-zero weight).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when [`Balancer::pick`] always returns None.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "Empty",
            Kind::Cycle(_) => "Cycle",
            Kind::Random(_) => "Random",
            Kind::LeastRequest(_) => "LeastRequest",
            Kind::RingHash(_) => "RingHash",
            Kind::Maglev(_) => "Maglev",
        };
        f.debug_struct("Balancer")
            .field("kind", &kind)
            .field("len", &self.live)
            .finish()
    }
}

/// Stable 64-bit hash for request keys (xxh64 with seed 0, as Envoy uses xxHash) — the proxy hashes header/cookie/IP bytes with this.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(bytes, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{count_picks, seeded};

    fn all_policies() -> Vec<Policy> {
        vec![
            Policy::RoundRobin,
            Policy::SmoothWeighted,
            Policy::Random,
            Policy::least_request(),
            Policy::LeastRequest { choices: 0 },
            Policy::LeastRequest { choices: 1 },
            Policy::LeastRequest { choices: u32::MAX },
            Policy::ring_hash(),
            Policy::RingHash {
                min_ring_size: 0,
                max_ring_size: 0,
            },
            Policy::RingHash {
                min_ring_size: usize::MAX,
                max_ring_size: 3,
            },
            Policy::maglev(),
            Policy::Maglev { table_size: 0 },
            Policy::Maglev { table_size: 1000 },
            Policy::Maglev {
                table_size: usize::MAX,
            },
        ]
    }

    fn contexts() -> Vec<PickContext<'static>> {
        vec![
            PickContext::none(),
            PickContext::with_hash(0),
            PickContext::with_hash(u64::MAX),
            PickContext::with_hash(hash_key(b"10.1.2.3")),
            PickContext {
                hash: None,
                active: &|i| u64::MAX - i as u64,
            },
        ]
    }

    #[test]
    fn balancer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Balancer>();
    }

    #[test]
    fn empty_or_all_zero_weights_pick_none() {
        for policy in all_policies() {
            for weights in [&[][..], &[0], &[0, 0, 0]] {
                let b = Balancer::new(&policy, weights);
                assert!(b.is_empty(), "{policy:?} {weights:?}");
                assert_eq!(b.len(), 0);
                for ctx in contexts() {
                    assert_eq!(b.pick(&ctx), None, "{policy:?} {weights:?}");
                }
            }
        }
    }

    #[test]
    fn zero_weight_endpoint_is_never_picked_by_any_policy() {
        seeded(1);
        let weights = [0, 3, 0, 1, 0];
        for policy in all_policies() {
            let b = Balancer::new(&policy, &weights);
            assert_eq!(b.len(), 2);
            let counts = count_picks(&b, weights.len(), 5_000);
            assert_eq!(
                counts[0] + counts[2] + counts[4],
                0,
                "{policy:?}: {counts:?}"
            );
            assert!(counts[1] > 0, "{policy:?}: {counts:?}");
        }
    }

    #[test]
    fn single_endpoint_is_always_picked() {
        for policy in all_policies() {
            let b = Balancer::new(&policy, &[0, 0, 7]);
            assert_eq!(b.len(), 1);
            for ctx in contexts() {
                assert_eq!(b.pick(&ctx), Some(2), "{policy:?}");
            }
        }
    }

    #[test]
    fn extreme_weights_build_and_pick_without_panicking() {
        let cases: [&[u32]; 4] = [
            &[u32::MAX],
            &[u32::MAX, u32::MAX, u32::MAX],
            &[u32::MAX, 1, u32::MAX - 1, 0],
            &[1, u32::MAX],
        ];
        for policy in all_policies() {
            for weights in cases {
                let b = Balancer::new(&policy, weights);
                for ctx in contexts() {
                    let i = b.pick(&ctx).expect("non-empty");
                    assert!(weights[i] > 0, "{policy:?} {weights:?} picked {i}");
                }
            }
        }
    }

    #[test]
    fn hash_key_is_xxh64_with_seed_zero() {
        // Reference values of XXH64 with seed 0 (from the xxHash specification test vectors).
        assert_eq!(hash_key(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(hash_key(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_ne!(hash_key(b"10.0.0.1"), hash_key(b"10.0.0.2"));
    }

    #[test]
    fn with_ids_shorter_than_weights_still_works() {
        for policy in all_policies() {
            let b = Balancer::with_ids(&policy, &[1, 2, 3], &[42]);
            assert_eq!(b.len(), 3);
            for ctx in contexts() {
                assert!(b.pick(&ctx).is_some_and(|i| i < 3), "{policy:?}");
            }
        }
    }
}
