//! `/certs`: every certificate the proxy presents — the mesh SVID, listeners', clusters'
//! client certificates, those fed by SDS secrets among them (`source: {sds: NAME}`) —
//! with its SPIFFE ID, names, serial and expiry. Never a key.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde_json::{json, Value};
use sinew_tls::CertSource;

use super::{json, Admin, Reply};

pub(super) fn certs(admin: &Admin) -> Reply {
    let snapshot = admin.proxy.snapshot();
    let now = now_unix();
    let certificates: Vec<Value> = snapshot
        .certificates()
        .into_iter()
        .map(|(name, cert)| {
            let source = match cert.source() {
                CertSource::Config { cert, .. } => match cert.file() {
                    Some(file) => json!({"file": file}),
                    None => json!({"inline": true}),
                },
                CertSource::Pushed { name } => json!({"sds": name}),
            };
            match cert.leaf_identity() {
                Some(id) => json!({
                    "name": name,
                    "source": source,
                    "spiffe_id": id.spiffe.as_ref().map(|s| s.as_str()),
                    "uri_sans": id.uri_sans,
                    "dns_sans": id.dns_sans,
                    "subject": id.subject,
                    "serial": id.serial,
                    "not_after_unix": id.not_after,
                    "expires_in_seconds": id.not_after - now,
                }),
                None if !cert.is_ready() => json!({
                    "name": name,
                    "source": source,
                    "error": "the SDS secret has not arrived",
                }),
                None => json!({"name": name, "source": source, "error": "unreadable"}),
            }
        })
        .collect();
    json(StatusCode::OK, &json!({ "certificates": certificates }))
}

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
