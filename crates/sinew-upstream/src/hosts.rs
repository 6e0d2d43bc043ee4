//! A cluster's endpoints at one moment: each [`Endpoint`] (address, weight, labels and
//! live state) and the [`HostSet`] that groups them into subsets, each with a balancer
//! over the endpoints it may pick now (the healthy ones, or all of them in panic mode).
//!
//! A host set is immutable: the cluster publishes a whole new one when DNS or health
//! changes, and outlier detection reads the endpoints of the current one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sinew_balance::{hash_key, Balancer, Policy};

use crate::health::eligible;
use crate::pool::EndpointState;

/// One endpoint of a host set: its address, weight and labels, and its live state.
#[derive(Clone)]
pub struct Endpoint {
    pub weight: u32,
    pub metadata: Arc<BTreeMap<String, String>>,
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    pub fn address(&self) -> SocketAddr {
        self.state.address
    }
}

pub(crate) struct Subset {
    /// Indexes into `HostSet::endpoints`.
    members: Vec<usize>,
    /// The members the balancer picks from (its indexes are into this): the healthy ones,
    /// or all of them in panic mode.
    pub(crate) eligible: Vec<usize>,
    panic: bool,
    pub(crate) balancer: Balancer,
}

/// Which health mechanisms a cluster runs, and its panic threshold (percent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthPolicy {
    pub(crate) active: bool,
    pub(crate) outlier: bool,
    pub(crate) panic_threshold: f64,
}

/// The endpoints of a cluster at one moment, with a balancer per subset.
pub struct HostSet {
    /// Every endpoint, healthy or not (the admin API shows them all).
    pub endpoints: Vec<Endpoint>,
    pub(crate) subsets: Vec<Subset>,
}

impl HostSet {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        selectors: &[BTreeMap<String, String>],
        policy: &Policy,
        health: HealthPolicy,
    ) -> Self {
        let subsets = selectors
            .iter()
            .map(|selector| {
                let members: Vec<usize> = endpoints
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| selector.iter().all(|(k, v)| e.metadata.get(k) == Some(v)))
                    .map(|(i, _)| i)
                    .collect();
                let (eligible, panic) = eligible(
                    &members,
                    |i| {
                        endpoints[i]
                            .state
                            .health
                            .healthy(health.active, health.outlier)
                    },
                    health.panic_threshold,
                );
                let weights: Vec<u32> = eligible.iter().map(|&i| endpoints[i].weight).collect();
                // Hash policies key endpoints by address so a key keeps its endpoint when
                // other endpoints come and go (or fall ill and recover).
                let ids: Vec<u64> = eligible
                    .iter()
                    .map(|&i| hash_key(endpoints[i].address().to_string().as_bytes()))
                    .collect();
                Subset {
                    balancer: Balancer::with_ids(policy, &weights, &ids),
                    members,
                    eligible,
                    panic,
                }
            })
            .collect();
        HostSet { endpoints, subsets }
    }

    /// Whether `subset` balances over all its members because too few are healthy.
    pub fn in_panic(&self, subset: usize) -> bool {
        self.subsets.get(subset).is_some_and(|s| s.panic)
    }

    /// Every endpoint of `subset`, healthy or not.
    pub fn members(&self, subset: usize) -> impl Iterator<Item = &Endpoint> {
        self.subsets
            .get(subset)
            .into_iter()
            .flat_map(|s| s.members.iter().map(|&i| &self.endpoints[i]))
    }

    /// The endpoints `subset` picks from now.
    pub fn eligible(&self, subset: usize) -> impl Iterator<Item = &Endpoint> {
        self.subsets
            .get(subset)
            .into_iter()
            .flat_map(|s| s.eligible.iter().map(|&i| &self.endpoints[i]))
    }
}
