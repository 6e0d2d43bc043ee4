//! The five resource types Sinew takes over xDS, their type URLs, and the order in which
//! updates are applied so the proxy never points at something it does not have yet.

/// A resource type. The declaration order is Envoy's update order: secrets (which
/// clusters and listeners refer to), clusters, then their endpoints, then listeners,
/// then their route configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Secret,
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Clusters and listeners are requested whole (wildcard); secrets, endpoints and
    /// route configurations by name.
    pub fn is_wildcard(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener)
    }

    /// Envoy's short names, for logs and errors.
    pub fn short_name(self) -> &'static str {
        match self {
            Kind::Secret => "SDS",
            Kind::Cluster => "CDS",
            Kind::Endpoint => "EDS",
            Kind::Listener => "LDS",
            Kind::Route => "RDS",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_urls_round_trip_and_order_is_envoys() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_type_url(kind.type_url()), Some(kind));
        }
        assert_eq!(Kind::from_type_url("type.googleapis.com/nope"), None);
        let mut sorted = [
            Kind::Route,
            Kind::Listener,
            Kind::Endpoint,
            Kind::Cluster,
            Kind::Secret,
        ];
        sorted.sort();
        assert_eq!(sorted, Kind::ALL);
    }
}
