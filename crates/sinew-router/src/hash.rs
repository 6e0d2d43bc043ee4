//! Hash policies: the request key that ring hash and Maglev balance on, so that requests
//! with the same header, cookie or client address keep reaching the same endpoint.

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName};
use sinew_config::model;

use crate::Errors;

#[derive(Debug)]
pub(crate) enum HashPolicy {
    Header(HeaderName),
    Cookie(Box<str>),
    SourceIp,
}

impl HashPolicy {
    /// `p` is the route's path.
    pub(crate) fn compile(
        policies: &[model::HashPolicy],
        p: &str,
        errors: &mut Errors,
    ) -> Option<Box<[HashPolicy]>> {
        let mut ok = true;
        let mut out = Vec::with_capacity(policies.len());
        for (i, h) in policies.iter().enumerate() {
            if let Some(name) = &h.header {
                match errors.header_name(&format!("{p}.hash_policy[{i}].header"), name) {
                    Some(n) => out.push(HashPolicy::Header(n)),
                    None => ok = false,
                }
            } else if let Some(name) = &h.cookie {
                out.push(HashPolicy::Cookie(name.as_str().into()));
            } else if h.source_ip {
                out.push(HashPolicy::SourceIp);
            }
        }
        ok.then(|| out.into())
    }

    /// The hash of this policy's key, or `None` if the request has no such key.
    fn hash(&self, headers: &HeaderMap, source_ip: IpAddr) -> Option<u64> {
        match self {
            HashPolicy::Header(name) => {
                let values = headers.get_all(name);
                let mut iter = values.iter();
                let first = iter.next()?;
                if iter.next().is_none() {
                    Some(sinew_balance::hash_key(first.as_bytes()))
                } else {
                    // Same key as the joined form a single header line would carry.
                    let joined = values
                        .iter()
                        .map(|v| v.as_bytes())
                        .collect::<Vec<_>>()
                        .join(&b","[..]);
                    Some(sinew_balance::hash_key(&joined))
                }
            }
            HashPolicy::Cookie(name) => {
                cookie(headers, name).map(|v| sinew_balance::hash_key(v.as_bytes()))
            }
            // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; it must hash as
            // the same client it is on an IPv4 socket.
            HashPolicy::SourceIp => Some(match source_ip.to_canonical() {
                IpAddr::V4(v4) => sinew_balance::hash_key(&v4.octets()),
                IpAddr::V6(v6) => sinew_balance::hash_key(&v6.octets()),
            }),
        }
    }
}

/// Hash for ring-hash/maglev from the first hash policy that yields a key.
pub(crate) fn hash(policies: &[HashPolicy], headers: &HeaderMap, source_ip: IpAddr) -> Option<u64> {
    policies.iter().find_map(|p| p.hash(headers, source_ip))
}

/// The value of cookie `name` from the Cookie headers (HTTP/2 may send one per cookie), with
/// surrounding quotes removed. An empty value counts as no cookie, as in Envoy.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
        .map(|v| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use sinew_balance::hash_key;

    use crate::test_util::{first_route, header_map, one_route};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

    fn hash(policies: &str, headers: &[(&str, &str)], ip: IpAddr) -> Option<u64> {
        let t = one_route(&format!(
            "{{match: {{}}, cluster: a, hash_policy: {policies}}}"
        ));
        first_route(&t).hash(&header_map(headers), ip)
    }

    #[test]
    fn header_policy_hashes_the_header_value() {
        assert_eq!(
            hash("[{header: X-User}]", &[("x-user", "alice")], IP),
            Some(hash_key(b"alice"))
        );
        assert_eq!(
            hash(
                "[{header: x-user}]",
                &[("x-user", "a"), ("x-user", "b")],
                IP
            ),
            Some(hash_key(b"a,b"))
        );
    }

    #[test]
    fn cookie_policy_finds_its_cookie_among_several() {
        let h = [("cookie", "theme=dark; session=abc123; lang=en")];
        assert_eq!(
            hash("[{cookie: session}]", &h, IP),
            Some(hash_key(b"abc123"))
        );
        // Split across Cookie headers, quoted.
        let h = [("cookie", "a=1"), ("cookie", "session=\"xyz\"; b=2")];
        assert_eq!(hash("[{cookie: session}]", &h, IP), Some(hash_key(b"xyz")));
        // Names are matched whole, not as suffixes.
        let h = [("cookie", "oldsession=1")];
        assert_eq!(hash("[{cookie: session}]", &h, IP), None);
    }

    #[test]
    fn source_ip_policy_hashes_the_address_bytes() {
        assert_eq!(
            hash("[{source_ip: true}]", &[], IP),
            Some(hash_key(&[10, 1, 2, 3]))
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(
            hash("[{source_ip: true}]", &[], mapped),
            Some(hash_key(&[10, 1, 2, 3]))
        );
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            hash("[{source_ip: true}]", &[], v6),
            Some(hash_key(&Ipv6Addr::LOCALHOST.octets()))
        );
    }

    #[test]
    fn falls_back_to_the_next_policy_that_yields_a_key() {
        let policies = "[{header: x-user}, {cookie: session}, {source_ip: true}]";
        assert_eq!(
            hash(policies, &[("cookie", "session=s1")], IP),
            Some(hash_key(b"s1"))
        );
        assert_eq!(
            hash(policies, &[("cookie", "session=")], IP),
            Some(hash_key(&[10, 1, 2, 3]))
        );
        assert_eq!(
            hash(policies, &[("x-user", "u"), ("cookie", "session=s1")], IP),
            Some(hash_key(b"u"))
        );
    }

    #[test]
    fn no_policy_or_no_key_gives_no_hash() {
        assert_eq!(hash("[]", &[("x-user", "u")], IP), None);
        assert_eq!(hash("[{header: x-user}, {cookie: c}]", &[], IP), None);
    }
}
