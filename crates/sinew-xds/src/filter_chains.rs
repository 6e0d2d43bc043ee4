//! A listener's filter chains as Sinew's listener says them, in one of two forms:
//!
//! - **Folded**, where the chains differ only in what one listener can say — the shapes
//!   Istio uses for mTLS and gateways: chains told apart by `transport_protocol` (`"tls"`
//!   with a TLS transport socket, `"raw_buffer"` without) become one listener whose `tls`
//!   also takes plaintext (`allow_plaintext`); TLS chains told apart by `server_names`
//!   become one `tls` whose certificates are chosen by SNI, the chain without
//!   `server_names` giving the default certificate. One TLS acceptor, no inspection.
//! - **As chains** (the listener's `chains`), for everything else Envoy's
//!   `filter_chain_match` chooses by: different filters per chain, ALPN
//!   (`application_protocols`), TLS passed through undecrypted to a TCP proxy (a chain
//!   that names servers or `"tls"` without a transport socket), `default_filter_chain`,
//!   and SNI chains with no TLS chain to fall back on (Envoy then closes a connection
//!   whose name no chain lists; folding would serve it the first certificate).
//!
//! Chains told apart by destination port or address, or by source, are refused by field.

use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
use serde_json::{json, Map, Value};

use crate::{Ctx, XdsError};

/// An RDS route configuration name, and how long a listener waits for it.
pub(crate) type RdsWait = (String, Option<std::time::Duration>);

/// What a chain's `filter_chain_match` says that Sinew can fold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChainMatch {
    /// `""`, `"tls"` or `"raw_buffer"`.
    pub transport_protocol: String,
    pub server_names: Vec<String>,
    pub application_protocols: Vec<String>,
}

/// One filter chain, mapped on its own.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    /// `filter_chains[i]` or `default_filter_chain`.
    pub path: String,
    pub matched: ChainMatch,
    /// The listener `tls` its transport socket makes; None for plaintext.
    pub tls: Option<Value>,
    /// The listener fields its network filters make (`http` or `tcp`, `authorization`).
    pub filters: Map<String, Value>,
    pub rds: Option<RdsWait>,
}

/// The chains as one listener: its own body (`tls` and filters), and its `chains`.
#[derive(Debug)]
pub(crate) struct Merged {
    pub tls: Option<Value>,
    pub filters: Map<String, Value>,
    pub rds: Option<RdsWait>,
    pub chains: Vec<Value>,
}

/// Reads a chain's `filter_chain_match` (at `path`), refusing what cannot be folded.
pub(crate) fn chain_match(
    ctx: &Ctx,
    path: &str,
    m: Option<FilterChainMatch>,
) -> Result<ChainMatch, XdsError> {
    let mut m = m.unwrap_or_default();
    let transport_protocol = std::mem::take(&mut m.transport_protocol);
    if !matches!(transport_protocol.as_str(), "" | "tls" | "raw_buffer") {
        return Err(ctx.error(
            format!("{path}.transport_protocol"),
            format!("{transport_protocol:?}: Sinew tells only \"tls\" from \"raw_buffer\""),
        ));
    }
    let server_names = std::mem::take(&mut m.server_names);
    let application_protocols = std::mem::take(&mut m.application_protocols);
    if m.destination_port.is_some() {
        return Err(ctx.error(
            format!("{path}.destination_port"),
            "is not supported by Sinew: a listener has one port (give each port its own listener)",
        ));
    }
    crate::unsupported::first_set_field(&m).map_err(|field| {
        ctx.error(
            format!("{path}.{field}"),
            "is not supported by Sinew: chains told apart by address or source cannot be folded into one listener",
        )
    })?;
    Ok(ChainMatch {
        transport_protocol,
        server_names,
        application_protocols,
    })
}

/// The listener's chains (at least one) and its `default_filter_chain`, folded into one
/// body where that says the same as Envoy, else as Sinew chains.
pub(crate) fn assemble(
    ctx: &Ctx,
    chains: Vec<Chain>,
    default: Option<Chain>,
) -> Result<Merged, XdsError> {
    if default.is_none() && foldable(&chains) {
        if let Ok(merged) = merge(ctx, chains.clone()) {
            return Ok(merged);
        }
    }
    as_chains(ctx, chains, default)
}

/// Whether folding could say what the chains say: the same filters, no ALPN, nothing
/// passed through, and an SNI miss served by a chain that names no server.
fn foldable(chains: &[Chain]) -> bool {
    let first = &chains[0];
    let same = chains
        .iter()
        .all(|c| c.filters == first.filters && c.rds == first.rds);
    let alpn = chains
        .iter()
        .any(|c| !c.matched.application_protocols.is_empty());
    let named = chains.iter().any(|c| !c.matched.server_names.is_empty());
    let tls_default = chains
        .iter()
        .any(|c| c.tls.is_some() && c.matched.server_names.is_empty());
    same && !alpn && !chains.iter().any(passes_through) && (!named || tls_default)
}

/// Whether a chain takes TLS connections without a TLS transport socket: it passes them
/// through as they came.
fn passes_through(c: &Chain) -> bool {
    c.tls.is_none()
        && (c.matched.transport_protocol == "tls"
            || !c.matched.server_names.is_empty()
            || !c.matched.application_protocols.is_empty())
}

/// The chains as Sinew's `chains`, the default chain as the listener's own body.
fn as_chains(ctx: &Ctx, chains: Vec<Chain>, default: Option<Chain>) -> Result<Merged, XdsError> {
    let mut rds: Option<(RdsWait, &str)> = None;
    for c in chains.iter().chain(default.as_ref()) {
        if let Some(wait) = &c.rds {
            match &rds {
                Some((first, at)) if first.0 != wait.0 => {
                    return Err(ctx.error(
                        format!("{}.filters", c.path),
                        format!("waits for RDS route configuration {:?}, and {at} for {:?}: Sinew waits for one per listener", wait.0, first.0),
                    ));
                }
                Some(_) => {}
                None => rds = Some((wait.clone(), &c.path)),
            }
        }
    }
    let rds = rds.map(|(wait, _)| wait);
    let mut out = Vec::with_capacity(chains.len());
    let mut matches = Vec::with_capacity(chains.len());
    for c in &chains {
        let m = &c.matched;
        let transport = match (m.transport_protocol.as_str(), c.tls.is_some()) {
            ("raw_buffer", true) => {
                return Err(ctx.error(
                    format!("{}.filter_chain_match.transport_protocol", c.path),
                    "\"raw_buffer\" matches plaintext clients, which a chain with a TLS transport socket cannot serve",
                ))
            }
            ("raw_buffer", false) => Some(sinew_config::chains::Transport::Plaintext),
            ("tls", _) => Some(sinew_config::chains::Transport::Tls),
            _ => None,
        };
        if passes_through(c) && c.filters.contains_key("http") {
            return Err(ctx.error(
                format!("{}.filters", c.path),
                "take TLS connections without a TLS transport socket, which passes them through undecrypted: only a TCP proxy can carry them",
            ));
        }
        let matched = sinew_config::chains::ChainMatch {
            server_names: m.server_names.clone(),
            transport,
            alpn: m.application_protocols.clone(),
            protocols: Vec::new(),
        };
        let mut chain = Map::new();
        chain.insert("match".into(), match_json(&matched));
        if let Some(tls) = &c.tls {
            chain.insert("tls".into(), tls.clone());
        }
        chain.extend(c.filters.clone());
        out.push(Value::Object(chain));
        matches.push(matched);
    }
    if let Some((later, earlier)) = sinew_config::chains::first_overlap(&matches) {
        return Err(ctx.error(
            format!("{}.filter_chain_match", chains[later].path),
            format!(
                "matches connections that {} matches (Envoy refuses such chains too)",
                chains[earlier].path
            ),
        ));
    }
    let (tls, filters) = match default {
        Some(d) => (d.tls, d.filters),
        None => (None, Map::new()),
    };
    Ok(Merged {
        tls,
        filters,
        rds,
        chains: out,
    })
}

/// A chain match in Sinew's YAML.
fn match_json(m: &sinew_config::chains::ChainMatch) -> Value {
    let mut out = Map::new();
    if !m.server_names.is_empty() {
        out.insert("server_names".into(), json!(m.server_names));
    }
    match m.transport {
        Some(sinew_config::chains::Transport::Tls) => {
            out.insert("transport".into(), json!("tls"));
        }
        Some(sinew_config::chains::Transport::Plaintext) => {
            out.insert("transport".into(), json!("plaintext"));
        }
        None => {}
    }
    if !m.alpn.is_empty() {
        out.insert("alpn".into(), json!(m.alpn));
    }
    Value::Object(out)
}

/// Folds the chains (at least one) into one listener's `tls` and filters.
fn merge(ctx: &Ctx, chains: Vec<Chain>) -> Result<Merged, XdsError> {
    let at = |c: &Chain, field: &str| format!("{}.{field}", c.path);
    for c in &chains {
        let protocol = c.matched.transport_protocol.as_str();
        if protocol == "tls" && c.tls.is_none() {
            return Err(ctx.error(
                at(c, "filter_chain_match.transport_protocol"),
                "\"tls\" on a chain without a TLS transport socket passes TLS through undecrypted, which Sinew does not do",
            ));
        }
        if protocol == "raw_buffer" && c.tls.is_some() {
            return Err(ctx.error(
                at(c, "filter_chain_match.transport_protocol"),
                "\"raw_buffer\" matches plaintext clients, which a chain with a TLS transport socket cannot serve",
            ));
        }
        if c.tls.is_none() && !c.matched.server_names.is_empty() {
            return Err(ctx.error(
                at(c, "filter_chain_match.server_names"),
                "a plaintext chain has no SNI to match",
            ));
        }
    }
    let mut chains = chains.into_iter();
    let first = chains.next().expect("the listener has a chain");
    let rest: Vec<Chain> = chains.collect();
    for c in &rest {
        if c.filters != first.filters || c.rds != first.rds {
            return Err(ctx.error(
                at(c, "filters"),
                "differ from filter_chains[0]'s: Sinew runs one set of filters per listener, so its chains may differ only in filter_chain_match (transport_protocol, server_names) and certificates",
            ));
        }
    }
    let Chain { filters, rds, .. } = &first;
    let (filters, rds) = (filters.clone(), rds.clone());
    let all: Vec<Chain> = std::iter::once(first).chain(rest).collect();
    let (tls_chains, plain): (Vec<&Chain>, Vec<&Chain>) = all.iter().partition(|c| c.tls.is_some());
    if let Some(second) = plain.get(1) {
        return Err(ctx.error(
            at(second, "filter_chain_match"),
            format!("matches what {} matches (both plaintext)", plain[0].path),
        ));
    }
    if let (Some(p), Some(t)) = (plain.first(), tls_chains.first()) {
        if p.matched.transport_protocol.is_empty() && t.matched.transport_protocol.is_empty() {
            return Err(ctx.error(
                at(p, "filter_chain_match.transport_protocol"),
                format!("set \"raw_buffer\" here or \"tls\" on {}, so TLS and plaintext clients each find their chain", t.path),
            ));
        }
    }
    let mut tls = tls_certificates_by_sni(ctx, &tls_chains)?;
    if let (Some(Value::Object(tls)), false) = (&mut tls, plain.is_empty()) {
        tls.insert("allow_plaintext".into(), json!(true));
    }
    Ok(Merged {
        tls,
        filters,
        rds,
        chains: Vec::new(),
    })
}

/// The TLS chains' `tls` as one: equal settings, certificates chosen by SNI.
fn tls_certificates_by_sni(ctx: &Ctx, chains: &[&Chain]) -> Result<Option<Value>, XdsError> {
    let without_certificates = |c: &Chain| {
        let mut tls = c.tls.clone().unwrap_or_default();
        if let Value::Object(map) = &mut tls {
            map.remove("certificates");
        }
        tls
    };
    let Some(first) = chains.first() else {
        return Ok(None);
    };
    let named = chains.iter().any(|c| !c.matched.server_names.is_empty());
    if chains.len() == 1 && !named {
        return Ok(first.tls.clone());
    }
    let settings = without_certificates(first);
    let mut default: Option<&Chain> = None;
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for &c in chains {
        if without_certificates(c) != settings {
            return Err(ctx.error(
                format!("{}.transport_socket", c.path),
                format!("TLS settings other than the certificates differ from {}'s: Sinew's listener has one TLS configuration", first.path),
            ));
        }
        if c.matched.server_names.is_empty() {
            if let Some(d) = default.replace(c) {
                return Err(ctx.error(
                    format!("{}.filter_chain_match", c.path),
                    format!("matches what {} matches (TLS without server_names)", d.path),
                ));
            }
        }
        for name in &c.matched.server_names {
            if let Some((_, other)) = seen.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(ctx.error(
                    format!("{}.filter_chain_match.server_names", c.path),
                    format!("{name:?} is also in {other}'s"),
                ));
            }
            seen.push((name.as_str(), c.path.as_str()));
        }
    }
    // The default chain's certificates come first: Sinew's default is the first.
    let ordered = default.into_iter().chain(
        chains
            .iter()
            .copied()
            .filter(|c| !c.matched.server_names.is_empty()),
    );
    let mut certificates = Vec::new();
    for c in ordered {
        let listed = c.tls.as_ref().and_then(|t| t.get("certificates"));
        for cert in listed.and_then(Value::as_array).into_iter().flatten() {
            let mut cert = cert.clone();
            cert["server_names"] = json!(c.matched.server_names);
            certificates.push(cert);
        }
    }
    let mut tls = settings;
    tls["certificates"] = Value::Array(certificates);
    Ok(Some(tls))
}

#[cfg(test)]
mod tests;
