//! What a matched route does: send to a cluster, split between weighted clusters, redirect,
//! or answer directly.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use sinew_config::model;

use crate::redirect::Redirect;
use crate::{Errors, Resolver, Target};

#[derive(Debug)]
pub enum Action {
    Cluster(Target),
    Weighted(WeightedTargets),
    Redirect(Redirect),
    DirectResponse {
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
}

impl Action {
    /// `p` is the route's path; `matched_prefix` its `match.prefix`, which a redirect's
    /// `prefix_rewrite` replaces.
    pub(crate) fn compile(
        r: &model::Route,
        matched_prefix: Option<&str>,
        p: &str,
        errors: &mut Errors,
        resolve: &mut Resolver<'_>,
    ) -> Option<Action> {
        if let Some(cluster) = &r.cluster {
            return Some(Action::Cluster(resolve(cluster, &r.metadata_match)));
        }
        if let Some(list) = &r.weighted_clusters {
            return Some(Action::Weighted(WeightedTargets::compile(
                list,
                &r.metadata_match,
                resolve,
            )));
        }
        if let Some(redirect) = &r.redirect {
            return Redirect::compile(redirect, matched_prefix, p, errors).map(Action::Redirect);
        }
        if let Some(d) = &r.direct_response {
            let dp = format!("{p}.direct_response");
            let status = StatusCode::from_u16(d.status).ok();
            if status.is_none() {
                errors.push(
                    format!("{dp}.status"),
                    format!("{} is not a status code", d.status),
                );
            }
            let content_type = match &d.content_type {
                Some(ct) => Some(errors.header_value(&format!("{dp}.content_type"), ct)?),
                None => None,
            };
            return Some(Action::DirectResponse {
                status: status?,
                body: d.body.clone().map(Bytes::from).unwrap_or_default(),
                content_type,
            });
        }
        // Validation guarantees exactly one action; this is unreachable for a checked config.
        errors.push(p, "route has no action");
        None
    }
}

/// Clusters with weights, picked in proportion to them.
#[derive(Debug, Clone)]
pub struct WeightedTargets {
    targets: Box<[Target]>,
    /// `cumulative[i]` is the sum of weights `0..=i`; the last one is the total.
    cumulative: Box<[u64]>,
}

impl WeightedTargets {
    /// Each cluster's own `metadata_match` is laid over the route's, as in Envoy.
    fn compile(
        list: &[model::WeightedCluster],
        route_metadata: &BTreeMap<String, String>,
        resolve: &mut Resolver<'_>,
    ) -> WeightedTargets {
        let mut total = 0u64;
        let mut targets = Vec::with_capacity(list.len());
        let mut cumulative = Vec::with_capacity(list.len());
        for w in list {
            let target = if w.metadata_match.is_empty() {
                resolve(&w.cluster, route_metadata)
            } else {
                let mut metadata = route_metadata.clone();
                metadata.extend(w.metadata_match.clone());
                resolve(&w.cluster, &metadata)
            };
            total += u64::from(w.weight);
            targets.push(target);
            cumulative.push(total);
        }
        WeightedTargets {
            targets: targets.into(),
            cumulative: cumulative.into(),
        }
    }

    /// A target chosen at random in proportion to the weights; lock-free and O(log n).
    pub fn pick(&self) -> Target {
        let total = self.cumulative.last().copied().unwrap_or(0);
        // Validation rejects all-zero weights; should one get here, the first target is as
        // good an answer as any.
        if total == 0 {
            return self.targets.first().copied().unwrap_or(Target(0));
        }
        self.pick_at(fastrand::u64(0..total))
    }

    /// The target that owns point `r` in `[0, total)`. Zero-weight targets own no point.
    fn pick_at(&self, r: u64) -> Target {
        let i = self.cumulative.partition_point(|&c| c <= r);
        self.targets[i.min(self.targets.len() - 1)]
    }

    /// The targets with their weights, in config order.
    pub fn targets(&self) -> impl Iterator<Item = (Target, u64)> + '_ {
        let mut previous = 0;
        self.targets
            .iter()
            .zip(self.cumulative.iter())
            .map(move |(t, &c)| {
                let weight = c - previous;
                previous = c;
                (*t, weight)
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_util::{compile, first_route, one_route};

    fn weighted(route: &str) -> WeightedTargets {
        let t = one_route(route);
        match &first_route(&t).action {
            Action::Weighted(w) => w.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn weighted_pick_follows_the_weights() {
        let w = weighted(
            "{match: {}, weighted_clusters: [{cluster: a, weight: 80}, {cluster: b, weight: 20}]}",
        );
        let n = 100_000;
        let a = (0..n).filter(|_| w.pick() == Target(0)).count();
        let share = a as f64 / n as f64;
        assert!((0.78..=0.82).contains(&share), "share of a: {share}");
    }

    #[test]
    fn weighted_pick_gives_each_target_exactly_its_points() {
        let w = weighted(
            "{match: {}, weighted_clusters: [{cluster: a, weight: 2}, {cluster: b, weight: 0}, {cluster: c, weight: 3}]}",
        );
        let picks: Vec<usize> = (0..5).map(|r| w.pick_at(r).0).collect();
        assert_eq!(picks, [0, 0, 2, 2, 2]);
        assert_eq!(
            w.targets().collect::<Vec<_>>(),
            [(Target(0), 2), (Target(1), 0), (Target(2), 3)]
        );
    }

    #[test]
    fn subset_metadata_of_weighted_clusters_is_laid_over_the_route_s() {
        let mut seen: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        let mut resolve = |name: &str, m: &BTreeMap<String, String>| {
            seen.push((name.to_string(), m.clone()));
            Target(seen.len() - 1)
        };
        let routes = "[{name: v, domains: ['*'], routes: [
            {match: {}, cluster: a, metadata_match: {version: v1}},
            {match: {}, metadata_match: {version: v1, zone: z}, weighted_clusters: [
                {cluster: b, weight: 1},
                {cluster: c, weight: 1, metadata_match: {version: v2}}]}]}]";
        compile(routes, &mut resolve).unwrap();
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            seen,
            [
                ("a".into(), m(&[("version", "v1")])),
                ("b".into(), m(&[("version", "v1"), ("zone", "z")])),
                ("c".into(), m(&[("version", "v2"), ("zone", "z")])),
            ]
        );
    }

    #[test]
    fn cluster_and_direct_response_actions() {
        let t = one_route("{match: {}, cluster: c}");
        assert!(matches!(first_route(&t).action, Action::Cluster(Target(2))));
        let t = one_route(
            "{match: {}, direct_response: {status: 404, body: nope, content_type: text/plain}}",
        );
        match &first_route(&t).action {
            Action::DirectResponse {
                status,
                body,
                content_type,
            } => {
                assert_eq!(*status, StatusCode::NOT_FOUND);
                assert_eq!(&body[..], b"nope");
                assert_eq!(content_type.as_ref().unwrap(), "text/plain");
            }
            other => panic!("{other:?}"),
        }
        let t = one_route("{match: {}, direct_response: {status: 204}}");
        assert!(matches!(
            &first_route(&t).action,
            Action::DirectResponse { body, content_type: None, .. } if body.is_empty()
        ));
    }
}
