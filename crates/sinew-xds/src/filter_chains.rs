//! A listener's several filter chains folded into one Sinew listener, where Sinew's
//! model can say what Envoy's `filter_chain_match` says — the shapes Istio uses for mTLS
//! and gateways:
//! - chains told apart by `transport_protocol` (`"tls"` with a TLS transport socket,
//!   `"raw_buffer"` without) become one listener whose `tls` also takes plaintext
//!   (`allow_plaintext`, told apart by the first byte as PERMISSIVE mTLS is);
//! - TLS chains told apart by `server_names`, each with its own certificates, become one
//!   `tls` whose certificates are chosen by SNI (`server_names` on each certificate);
//!   a chain without `server_names` gives the default certificate.
//!
//! The chains must otherwise be the same: equal filters (Sinew runs one set per
//! listener) and equal TLS settings besides the certificates. Every other way of telling
//! chains apart (ports, addresses, source, ALPN) is refused by its field. One difference
//! remains: Envoy closes a TLS connection whose SNI no chain names when no chain is the
//! default, where Sinew completes it with the first chain's certificate.

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
}

/// One filter chain, mapped on its own.
#[derive(Debug)]
pub(crate) struct Chain {
    pub index: usize,
    pub matched: ChainMatch,
    /// The listener `tls` its transport socket makes; None for plaintext.
    pub tls: Option<Value>,
    /// The listener fields its network filters make (`http` or `tcp`, `authorization`).
    pub filters: Map<String, Value>,
    pub rds: Option<RdsWait>,
}

/// The chains as one listener.
#[derive(Debug)]
pub(crate) struct Merged {
    pub tls: Option<Value>,
    pub filters: Map<String, Value>,
    pub rds: Option<RdsWait>,
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
    if !m.application_protocols.is_empty() {
        return Err(ctx.error(
            format!("{path}.application_protocols"),
            "is not supported by Sinew: a listener runs one set of filters whatever ALPN the client offers",
        ));
    }
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
    })
}

/// Folds the chains (at least one) into one listener's `tls` and filters.
pub(crate) fn merge(ctx: &Ctx, chains: Vec<Chain>) -> Result<Merged, XdsError> {
    let at = |c: &Chain, field: &str| format!("filter_chains[{}].{field}", c.index);
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
            format!(
                "matches what filter_chains[{}] matches (both plaintext)",
                plain[0].index
            ),
        ));
    }
    if let (Some(p), Some(t)) = (plain.first(), tls_chains.first()) {
        if p.matched.transport_protocol.is_empty() && t.matched.transport_protocol.is_empty() {
            return Err(ctx.error(
                at(p, "filter_chain_match.transport_protocol"),
                format!("set \"raw_buffer\" here or \"tls\" on filter_chains[{}], so TLS and plaintext clients each find their chain", t.index),
            ));
        }
    }
    let mut tls = tls_certificates_by_sni(ctx, &tls_chains)?;
    if let (Some(Value::Object(tls)), false) = (&mut tls, plain.is_empty()) {
        tls.insert("allow_plaintext".into(), json!(true));
    }
    Ok(Merged { tls, filters, rds })
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
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for &c in chains {
        if without_certificates(c) != settings {
            return Err(ctx.error(
                format!("filter_chains[{}].transport_socket", c.index),
                format!("TLS settings other than the certificates differ from filter_chains[{}]'s: Sinew's listener has one TLS configuration", first.index),
            ));
        }
        if c.matched.server_names.is_empty() {
            if let Some(d) = default.replace(c) {
                return Err(ctx.error(
                    format!("filter_chains[{}].filter_chain_match", c.index),
                    format!(
                        "matches what filter_chains[{}] matches (TLS without server_names)",
                        d.index
                    ),
                ));
            }
        }
        for name in &c.matched.server_names {
            if let Some((_, other)) = seen.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(ctx.error(
                    format!("filter_chains[{}].filter_chain_match.server_names", c.index),
                    format!("{name:?} is also in filter_chains[{other}]'s"),
                ));
            }
            seen.push((name.as_str(), c.index));
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
