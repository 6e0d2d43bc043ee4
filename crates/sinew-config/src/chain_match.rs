//! What a filter chain matches (`chains` on a listener): the server names, transport and
//! ALPN protocols a connection must show, and which matches overlap. Plain data, apart
//! from the listener model, so that the model can hold it.

use serde::Deserialize;

/// What a connection must show to take a chain; every field set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainMatch {
    /// SNI names: exact (`api.example.com`) or a suffix wildcard (`*.example.com`, any
    /// depth). Only TLS connections have one.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// `tls` or `plaintext`; unset, either.
    #[serde(default)]
    pub transport: Option<Transport>,
    /// ALPN protocols, any of which the ClientHello must offer.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// Protocols a plaintext connection's first bytes must show, any of them (sniffed).
    #[serde(default)]
    pub protocols: Vec<Protocol>,
}

/// A protocol told from a plaintext connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1 or HTTP/2 (its preface).
    Http,
    Bolt,
    Dubbo,
    Redis,
}

/// How a connection's bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tls,
    Plaintext,
}

impl ChainMatch {
    /// Whether matching this chain needs the ClientHello read (server names or ALPN).
    pub fn reads_hello(&self) -> bool {
        !self.server_names.is_empty() || !self.alpn.is_empty()
    }

    /// Whether matching this chain needs a plaintext connection's protocol sniffed.
    pub fn sniffs(&self) -> bool {
        !self.protocols.is_empty()
    }
}

/// The first chain (by index) that matches connections an earlier one matches, with
/// that earlier one: the later could never be told apart.
pub fn first_overlap(matches: &[ChainMatch]) -> Option<(usize, usize)> {
    let keys: Vec<_> = matches.iter().map(match_keys).collect();
    (1..matches.len()).find_map(|j| {
        let earlier = (0..j).find(|&i| keys[i].iter().any(|k| keys[j].contains(k)))?;
        Some((j, earlier))
    })
}

/// One combination of what a match names; `None` for a criterion it leaves open.
type MatchKey<'a> = (
    Option<String>,
    Option<Transport>,
    Option<&'a str>,
    Option<Protocol>,
);

/// Every (server name, transport, ALPN protocol, sniffed protocol) a match names, one per
/// combination. Two chains overlap when they share one.
fn match_keys(m: &ChainMatch) -> Vec<MatchKey<'_>> {
    let names: Vec<Option<String>> = match m.server_names.is_empty() {
        true => vec![None],
        false => m
            .server_names
            .iter()
            .map(|n| Some(n.to_ascii_lowercase()))
            .collect(),
    };
    let alpn: Vec<Option<&str>> = match m.alpn.is_empty() {
        true => vec![None],
        false => m.alpn.iter().map(|a| Some(a.as_str())).collect(),
    };
    let protocols: Vec<Option<Protocol>> = match m.protocols.is_empty() {
        true => vec![None],
        false => m.protocols.iter().copied().map(Some).collect(),
    };
    let mut keys = Vec::new();
    for n in &names {
        for a in &alpn {
            for p in &protocols {
                keys.push((n.clone(), m.transport, *a, *p));
            }
        }
    }
    keys
}
