//! SPIFFE IDs: `spiffe://<trust-domain>/<path>`, parsed by the rules of the SPIFFE ID
//! standard (lower-case trust domain of `[a-z0-9.-_]`, path segments of
//! `[A-Za-z0-9.-_]` that are neither empty nor `.` or `..`, no query, fragment, port or
//! user info, at most 2048 bytes).

use std::fmt;
use std::sync::Arc;

/// Longest SPIFFE ID the standard allows, in bytes.
const MAX_LEN: usize = 2048;
const SCHEME: &str = "spiffe://";

/// A valid SPIFFE ID. Cheap to clone (one shared string).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    text: Arc<str>,
    /// Where the trust domain ends (the path, if any, starts here).
    domain_end: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeIdError {
    TooLong,
    WrongScheme,
    EmptyTrustDomain,
    BadTrustDomainChar(char),
    EmptySegment,
    DotSegment,
    BadPathChar(char),
    TrailingSlash,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "a SPIFFE ID is at most {MAX_LEN} bytes"),
            Self::WrongScheme => write!(f, "a SPIFFE ID starts with \"spiffe://\""),
            Self::EmptyTrustDomain => write!(f, "the trust domain is empty"),
            Self::BadTrustDomainChar(c) => write!(
                f,
                "the trust domain may hold only lower-case letters, digits, '.', '-' and '_', not {c:?}"
            ),
            Self::EmptySegment => write!(f, "the path has an empty segment"),
            Self::DotSegment => write!(f, "the path has a '.' or '..' segment"),
            Self::BadPathChar(c) => write!(
                f,
                "the path may hold only letters, digits, '.', '-', '_' and '/', not {c:?}"
            ),
            Self::TrailingSlash => write!(f, "the path ends with '/'"),
        }
    }
}

impl std::error::Error for SpiffeIdError {}

fn trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Checks a trust domain name (as in config: `cluster.local`).
pub(crate) fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    match domain.chars().find(|c| !trust_domain_char(*c)) {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID.
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        if text.len() > MAX_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(domain)?;
        if !path.is_empty() {
            if path.ends_with('/') {
                return Err(SpiffeIdError::TrailingSlash);
            }
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(SpiffeIdError::EmptySegment);
                }
                if segment == "." || segment == ".." {
                    return Err(SpiffeIdError::DotSegment);
                }
                if let Some(c) = segment.chars().find(|c| !path_char(*c)) {
                    return Err(SpiffeIdError::BadPathChar(c));
                }
            }
        }
        Ok(SpiffeId {
            text: text.into(),
            domain_end: SCHEME.len() + domain.len(),
        })
    }

    /// The ID Istio gives a Kubernetes service account:
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn for_service_account(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.domain_end]
    }

    /// The path, with its leading '/' (empty for a trust domain's own ID).
    pub fn path(&self) -> &str {
        &self.text[self.domain_end..]
    }

    /// The namespace of an Istio-shaped path (`/ns/<namespace>/sa/<sa>`).
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio-shaped path.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The principal as Istio's authorization policies name it: the ID without its
    /// scheme (`cluster.local/ns/default/sa/web`).
    pub fn principal(&self) -> &str {
        &self.text[SCHEME.len()..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_istio_shaped_id_names_its_namespace_and_service_account() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/shop/sa/web");
        assert_eq!(id.namespace(), Some("shop"));
        assert_eq!(id.service_account(), Some("web"));
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/web");
        assert_eq!(
            SpiffeId::for_service_account("cluster.local", "shop", "web").unwrap(),
            id
        );
    }

    #[test]
    fn other_paths_have_no_namespace() {
        for text in [
            "spiffe://example.org",
            "spiffe://example.org/vm/db-1",
            "spiffe://example.org/ns/a/sa/b/extra",
        ] {
            let id = SpiffeId::parse(text).unwrap();
            assert_eq!(id.namespace(), None, "{text}");
        }
        assert_eq!(SpiffeId::parse("spiffe://example.org").unwrap().path(), "");
    }

    #[test]
    fn ids_that_break_the_standard_are_refused_with_the_reason() {
        use SpiffeIdError::*;
        let cases = [
            ("http://example.org/a", WrongScheme),
            ("SPIFFE://example.org/a", WrongScheme),
            ("spiffe:///a", EmptyTrustDomain),
            ("spiffe://Example.org/a", BadTrustDomainChar('E')),
            ("spiffe://example.org:443/a", BadTrustDomainChar(':')),
            ("spiffe://user@example.org/a", BadTrustDomainChar('@')),
            ("spiffe://example.org/a//b", EmptySegment),
            ("spiffe://example.org/a/../b", DotSegment),
            ("spiffe://example.org/./b", DotSegment),
            ("spiffe://example.org/a/", TrailingSlash),
            ("spiffe://example.org/a?x=1", BadPathChar('?')),
            ("spiffe://example.org/a#f", BadPathChar('#')),
            ("spiffe://example.org/a%2Fb", BadPathChar('%')),
        ];
        for (text, want) in cases {
            assert_eq!(SpiffeId::parse(text), Err(want), "{text}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_LEN));
        assert_eq!(SpiffeId::parse(&long), Err(TooLong));
    }
}
