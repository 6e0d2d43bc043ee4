//! What the CA has done, for the admin API (`GET /ca`) and `/metrics`: certificates
//! issued by how the workload authenticated, requests refused by reason, the last
//! [`RECENT`] certificates issued, and the roots of the trust bundle. Only public facts
//! are kept: serials, names and dates, never a key.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::credentials::Method;

/// How many issued certificates the view keeps.
pub const RECENT: usize = 100;

/// One certificate issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub spiffe_id: String,
    /// Lower-case hex, as the proxy's `/certs` writes it.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    pub issued_at: i64,
    pub authenticated_by: Method,
}

#[derive(Default)]
struct State {
    issued: BTreeMap<Method, u64>,
    refused: BTreeMap<&'static str, u64>,
    recent: VecDeque<Issued>,
}

/// The CA's record, shared by the certificate service and the admin API.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
}

impl Ledger {
    pub fn issued(&self, issued: Issued) {
        let mut state = self.state.lock().expect("ledger lock");
        *state.issued.entry(issued.authenticated_by).or_default() += 1;
        if state.recent.len() == RECENT {
            state.recent.pop_front();
        }
        state.recent.push_back(issued);
    }

    pub fn refused(&self, reason: &'static str) {
        let mut state = self.state.lock().expect("ledger lock");
        *state.refused.entry(reason).or_default() += 1;
    }

    /// Counts by method and by reason, and the recent certificates, newest first.
    pub fn snapshot(
        &self,
    ) -> (
        BTreeMap<Method, u64>,
        BTreeMap<&'static str, u64>,
        Vec<Issued>,
    ) {
        let state = self.state.lock().expect("ledger lock");
        (
            state.issued.clone(),
            state.refused.clone(),
            state.recent.iter().rev().cloned().collect(),
        )
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds as RFC 3339 UTC (`2026-12-07T01:02:03Z`).
pub fn rfc3339(seconds: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => seconds.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The public facts of one certificate (DER).
#[derive(Debug, Clone, PartialEq)]
pub struct CertFacts {
    pub subject: String,
    pub serial: String,
    pub sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

pub fn facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("not a certificate: {e}"))?;
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        serial: hex(cert.tbs_certificate.raw_serial()),
        sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The leaf of an issued chain (PEM, leaf first).
pub fn leaf_facts(chain: &[String]) -> Result<CertFacts, String> {
    let first = chain.first().ok_or("an empty chain")?;
    let der = sinew_tls::pem::parse_certs(first.as_bytes(), "the issued certificate")?;
    facts(der.first().ok_or("no certificate in the issued PEM")?)
}

/// The roots of a PEM bundle, each marked when it is `signing_root` (PEM).
pub fn roots(bundle: &str, signing_root: Option<&str>) -> Vec<Value> {
    let signing_der = signing_root
        .and_then(|pem| sinew_tls::pem::parse_certs(pem.as_bytes(), "the signing root").ok())
        .and_then(|ders| ders.into_iter().next());
    let Ok(ders) = sinew_tls::pem::parse_certs(bundle.as_bytes(), "the trust bundle") else {
        return Vec::new();
    };
    ders.iter()
        .filter_map(|der| {
            let f = facts(der).ok()?;
            let signs = signing_der
                .as_ref()
                .is_some_and(|s| s.as_ref() == der.as_ref());
            Some(json!({
                "subject": f.subject,
                "serial": f.serial,
                "sha256": f.sha256,
                "not_before": rfc3339(f.not_before),
                "not_after": rfc3339(f.not_after),
                "not_after_unix": f.not_after,
                "signing": signs,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_keeps_counts_and_the_last_hundred_newest_first() {
        let ledger = Ledger::default();
        for i in 0..(RECENT + 5) {
            ledger.issued(Issued {
                spiffe_id: format!("spiffe://td/ns/a/sa/{i}"),
                serial: format!("{i:02x}"),
                not_after: 10,
                issued_at: 1,
                authenticated_by: if i % 2 == 0 {
                    Method::Token
                } else {
                    Method::Svid
                },
            });
        }
        ledger.refused("unknown_token");
        ledger.refused("unknown_token");
        ledger.refused("bad_csr");
        let (issued, refused, recent) = ledger.snapshot();
        assert_eq!(
            issued[&Method::Token] + issued[&Method::Svid],
            RECENT as u64 + 5
        );
        assert_eq!(refused["unknown_token"], 2);
        assert_eq!(refused["bad_csr"], 1);
        assert_eq!(recent.len(), RECENT);
        assert_eq!(
            recent[0].spiffe_id,
            format!("spiffe://td/ns/a/sa/{}", RECENT + 4)
        );
        assert_eq!(recent[RECENT - 1].spiffe_id, "spiffe://td/ns/a/sa/5");
    }

    #[test]
    fn dates_are_written_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_605_323), "2026-12-07T01:02:03Z");
    }
}
