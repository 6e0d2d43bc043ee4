//! A listener's filter chains: what runs on a connection is chosen per connection, by
//! what its first bytes say — TLS or plaintext, and for TLS the server name (SNI) and
//! the application protocols (ALPN) of its ClientHello — as Envoy's
//! `filter_chain_match` with the TLS inspector chooses.
//!
//! Each chain is a listener's body of its own: `tls` (terminate) or none (plaintext, or
//! TLS passed through undecrypted to a `tcp` proxy), `http` or `tcp`, `authorization`.
//! The listener's own body is the default chain, for connections no chain matches;
//! without one they are closed.
//!
//! Choosing follows Envoy's order, most specific first, and never backtracks: the server
//! name (exact, then the longest `*.` suffix, then chains that name none), then the
//! transport (`tls` or `plaintext`, then chains that say neither), then ALPN (the first
//! protocol the client offers that a chain lists, then chains that list none).

pub use crate::chain_match::{first_overlap, ChainMatch, Protocol, Transport};
use crate::model::Listener;
use crate::ConfigError;

impl Listener {
    /// Chain `index` as a listener of its own (same name and address, no chains), so
    /// that checking and compiling a chain is checking and compiling a listener.
    pub fn chain_as_listener(&self, index: usize) -> Listener {
        let chain = &self.chains[index];
        Listener {
            name: self.name.clone(),
            address: self.address.clone(),
            max_connections: None,
            connection_rate_limit: None,
            tcp_keepalive: None,
            tls: chain.tls.clone(),
            mtls: None,
            http: chain.http.clone(),
            tcp: chain.tcp.clone(),
            rpc: chain.rpc.clone(),
            redis: chain.redis.clone(),
            authorization: chain.authorization.clone(),
            chains: Vec::new(),
            inspect_timeout: self.inspect_timeout,
        }
    }

    /// Whether the listener's own body (its `http` or `tcp`) serves connections: always
    /// without chains, and as the default chain when it has one.
    pub fn has_default_chain(&self) -> bool {
        self.chains.is_empty()
            || self.http.is_some()
            || self.tcp.is_some()
            || self.rpc.is_some()
            || self.redis.is_some()
    }
}

/// A body that serves connections: a listener's own, or one of its chains as a
/// listener ([`Listener::chain_as_listener`]).
pub struct Body<'a> {
    /// Index in `listeners`.
    pub index: usize,
    /// The chain's index; None for the listener's own body.
    pub chain: Option<usize>,
    /// Its config path: `listeners[0]` or `listeners[0].chains[1]`.
    pub path: String,
    pub listener: std::borrow::Cow<'a, Listener>,
}

/// Every body of `listeners` that serves connections, in order: each listener's own
/// (unless it has chains and no default), then its chains.
pub fn bodies(listeners: &[Listener]) -> Vec<Body<'_>> {
    let mut out = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.has_default_chain() {
            out.push(Body {
                index: i,
                chain: None,
                path: format!("listeners[{i}]"),
                listener: std::borrow::Cow::Borrowed(l),
            });
        }
        for j in 0..l.chains.len() {
            out.push(Body {
                index: i,
                chain: Some(j),
                path: format!("listeners[{i}].chains[{j}]"),
                listener: std::borrow::Cow::Owned(l.chain_as_listener(j)),
            });
        }
    }
    out
}

/// Checks what the chains' matches say against what each chain can serve: a chain that
/// names servers or ALPN sees only TLS; a plaintext one cannot terminate TLS; a TLS
/// connection that is not terminated can only be passed through; and no two chains may
/// match the same connections. `p` is the listener's path.
pub(crate) fn check(p: &str, l: &Listener, errors: &mut Vec<ConfigError>) {
    if l.chains.is_empty() {
        return;
    }
    if l.mtls.is_some() {
        errors.push(ConfigError::new(
            format!("{p}.mtls"),
            "a listener with chains takes `tls` on each chain, not `mtls`",
        ));
    }
    if l.tls.as_ref().is_some_and(|t| t.allow_plaintext) {
        errors.push(ConfigError::new(
            format!("{p}.tls.allow_plaintext"),
            "a listener with chains tells plaintext apart with a `transport: plaintext` chain",
        ));
    }
    if !l.has_default_chain() {
        for (field, set) in [
            ("tls", l.tls.is_some()),
            ("authorization", l.authorization.is_some()),
        ] {
            if set {
                errors.push(ConfigError::new(
                    format!("{p}.{field}"),
                    "belongs to the default chain, which needs `http` or `tcp` beside it",
                ));
            }
        }
    }
    let matches: Vec<ChainMatch> = l.chains.iter().map(|c| c.matcher.clone()).collect();
    if let Some((later, earlier)) = first_overlap(&matches) {
        errors.push(ConfigError::new(
            format!("{p}.chains[{later}].match"),
            format!("matches connections that {p}.chains[{earlier}] matches; the later one would never run"),
        ));
    }
    for (j, c) in l.chains.iter().enumerate() {
        let cp = format!("{p}.chains[{j}]");
        let m = &c.matcher;
        let mut err = |field: &str, message: String| {
            errors.push(ConfigError::new(format!("{cp}.{field}"), message))
        };
        if m.transport == Some(Transport::Plaintext) {
            if m.reads_hello() {
                err(
                    "match.transport",
                    "a plaintext connection has no SNI or ALPN to match".into(),
                );
            }
            if c.tls.is_some() {
                err(
                    "tls",
                    "a chain for plaintext connections cannot terminate TLS".into(),
                );
            }
        }
        if m.sniffs() && (m.transport == Some(Transport::Tls) || m.reads_hello()) {
            err(
                "match.protocols",
                "protocols are sniffed on plaintext connections: leave out `transport: tls`, `server_names` and `alpn`".into(),
            );
        }
        let only_tls = m.transport == Some(Transport::Tls) || m.reads_hello();
        if only_tls && c.tls.is_none() && (c.http.is_some() || c.redis.is_some()) {
            err(
                if c.http.is_some() { "http" } else { "redis" },
                "TLS connections reach this chain, and without `tls` they are passed through undecrypted, which only `tcp` can do".into(),
            );
        }
        for (k, name) in m.server_names.iter().enumerate() {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if bare.is_empty() || bare.contains('*') || name.ends_with('.') {
                err(
                    &format!("match.server_names[{k}]"),
                    format!("{name:?} is not a server name or a `*.` suffix wildcard"),
                );
            }
        }
        for (k, proto) in m.alpn.iter().enumerate() {
            if proto.is_empty() || proto.len() > 255 {
                err(
                    &format!("match.alpn[{k}]"),
                    "an ALPN protocol is 1 to 255 bytes".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors_of(chains: &str, default: &str) -> String {
        let yaml = format!(
            "
listeners:
  - name: edge
    address: 127.0.0.1:0
{default}    chains:
{chains}clusters:
  - {{name: app, endpoints: [{{address: 127.0.0.1:1}}]}}
"
        );
        match crate::load_str("t.yaml", &yaml) {
            Ok(_) => String::new(),
            Err(d) => d.to_string(),
        }
    }

    const TCP: &str = "tcp: {cluster: app}";
    const HTTP: &str = "http: {virtual_hosts: [{name: a, domains: ['*'], routes: [{match: {prefix: /}, cluster: app}]}]}";

    #[test]
    fn chains_without_a_default_and_passthrough_by_name_are_accepted() {
        let chains = format!(
            "      - {{match: {{server_names: [a.example, '*.b.example']}}, {TCP}}}\n      - {{match: {{transport: plaintext}}, {HTTP}}}\n"
        );
        assert_eq!(errors_of(&chains, ""), "");
    }

    #[test]
    fn chains_that_overlap_or_cannot_serve_what_they_match_are_refused_by_field() {
        let cases = [
            (
                format!("      - {{match: {{server_names: [a, b]}}, {TCP}}}\n      - {{match: {{server_names: [B]}}, {TCP}}}\n"),
                "listeners[0].chains[1].match: matches connections that listeners[0].chains[0] matches",
            ),
            (
                format!("      - {{match: {{transport: plaintext, alpn: [h2]}}, {TCP}}}\n"),
                "listeners[0].chains[0].match.transport: a plaintext connection has no SNI or ALPN",
            ),
            (
                format!("      - {{match: {{server_names: [a.example]}}, {HTTP}}}\n"),
                "listeners[0].chains[0].http: TLS connections reach this chain, and without `tls` they are passed through",
            ),
            (
                format!("      - {{match: {{server_names: ['a.*.example']}}, {TCP}}}\n"),
                "listeners[0].chains[0].match.server_names[0]: \"a.*.example\" is not a server name",
            ),
            (
                "      - {match: {}}\n".to_string(),
                "listeners[0].chains[0]: set one of `http`, `tcp`, `rpc` or `redis`",
            ),
        ];
        for (chains, want) in cases {
            let e = errors_of(&chains, "");
            assert!(e.contains(want), "want {want:?} in:\n{e}");
        }
        let e = errors_of(
            &format!("      - {{match: {{}}, {TCP}}}\n"),
            "    authorization: {policies: []}\n",
        );
        assert!(
            e.contains("listeners[0].authorization: belongs to the default chain"),
            "{e}"
        );
    }
}
