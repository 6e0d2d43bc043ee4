//! Name resolution for `dns` clusters: the [`Resolver`] a cluster asks, the system
//! resolver ([`SystemResolver`], getaddrinfo) and a cluster's own DNS servers
//! ([`ServerResolver`] for `dns_resolvers`, Envoy's cluster `dns_resolvers`): names are
//! asked of those servers only, over UDP (TCP when an answer is truncated), instead of
//! the system resolver that `/etc/resolv.conf` configures.
//!
//! The protocol work is hickory-resolver's: parsing answers that come off the network is
//! exactly what a hand-written parser gets wrong, and hickory is the maintained Rust
//! resolver (it brings 12 crates the workspace did not already have; see Cargo.toml).

use std::net::SocketAddr;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

/// A resolution in progress: the addresses a `host:port` stands for.
pub type Resolving<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
>;

/// Turns `host:port` into addresses. The system resolver in production; tests script one.
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, host_port: &'a str) -> Resolving<'a>;
}

/// getaddrinfo, through tokio's blocking pool.
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host_port: &'a str) -> Resolving<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host(host_port).await?.collect()) })
    }
}

/// Asks the given DNS servers, in order, for a name's A and AAAA records.
pub struct ServerResolver {
    servers: Vec<SocketAddr>,
    resolver: TokioResolver,
}

impl ServerResolver {
    pub fn new(servers: &[SocketAddr]) -> Self {
        let mut config = ResolverConfig::new();
        for &server in servers {
            config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        }
        let mut options = ResolverOpts::default();
        // Both families, as getaddrinfo answers; every address becomes an endpoint.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The cluster re-resolves every `dns_refresh` and must see a changed answer then,
        // whatever TTL the server gave: no cache between refreshes.
        options.cache_size = 0;
        // Only the named servers answer; /etc/hosts is the system resolver's business.
        options.use_hosts_file = ResolveHosts::Never;
        // Names are asked as written, never completed with a search domain.
        options.ndots = 0;
        // A refresh is bounded by the cluster's warm-up (5 s); one server that does not
        // answer must leave time for the next.
        options.timeout = std::time::Duration::from_secs(2);
        options.attempts = 1;
        // The servers in the order written, one at a time (hickory would otherwise ask
        // two at once and prefer the fastest).
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        options.num_concurrent_reqs = 1;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        ServerResolver {
            servers: servers.to_vec(),
            resolver,
        }
    }

    /// The servers it asks, as configured.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }
}

/// Splits `host:port` (validation has checked the shape); an IPv6 literal may be
/// bracketed.
fn split_host_port(host_port: &str) -> std::io::Result<(&str, u16)> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host_port:?} is not host:port"),
        )
    };
    let (host, port) = host_port.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

impl Resolver for ServerResolver {
    fn resolve<'a>(&'a self, host_port: &'a str) -> Resolving<'a> {
        Box::pin(async move {
            let (host, port) = split_host_port(host_port)?;
            // An address needs no server, as with getaddrinfo.
            if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            let answer = self.resolver.lookup_ip(host).await.map_err(|e| {
                std::io::Error::other(format!("{host} from DNS servers {:?}: {e}", self.servers))
            })?;
            Ok(answer.iter().map(|ip| SocketAddr::new(ip, port)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_and_port_split_at_the_last_colon() {
        assert_eq!(split_host_port("svc.test:80").unwrap(), ("svc.test", 80));
        assert_eq!(split_host_port("[::1]:8080").unwrap(), ("::1", 8080));
        assert!(split_host_port("svc.test").is_err());
        assert!(split_host_port(":80").is_err());
        assert!(split_host_port("svc:http").is_err());
    }
}
