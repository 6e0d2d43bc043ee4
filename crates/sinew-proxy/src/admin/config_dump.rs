//! `/config_dump`: the running config as JSON, as it was written (defaults are not filled
//! in), with secrets redacted: TLS private keys, and any field whose name says password,
//! secret or token, and credentials inside URLs.

use http::StatusCode;
use serde_json::{json, Value};

use super::{Admin, Reply};

pub(super) fn config_dump(admin: &Admin) -> Reply {
    let source = admin.proxy.running_source();
    let config: Value = match serde_yaml_ng::from_str(&source.1) {
        Ok(v) => v,
        Err(e) => {
            return super::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the running config does not convert to JSON: {e}\n"),
            )
        }
    };
    let snapshot = admin.proxy.snapshot();
    super::json(
        StatusCode::OK,
        &json!({
            "version": snapshot.version,
            "file": source.0,
            "config": redact(config, false),
        }),
    )
}

const REDACTED: &str = "[redacted]";

/// `in_tls`: inside a `tls` mapping, where `key` is a private key.
pub(crate) fn redact(value: Value, in_tls: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = (in_tls && lower == "key")
                        || ["password", "secret", "token", "private_key"]
                            .iter()
                            .any(|s| lower.contains(s));
                    let v = if secret && !v.is_object() && !v.is_array() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v, lower == "tls")
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| redact(v, in_tls)).collect()),
        Value::String(s) => Value::String(redact_url_credentials(&s)),
        other => other,
    }
}

/// `redis://user:pass@host` -> `redis://[redacted]@host`.
fn redact_url_credentials(s: &str) -> String {
    if let Some((scheme, rest)) = s.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]);
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_passwords_and_url_credentials_are_redacted() {
        let v = json!({
            "listeners": [{"tls": {"cert": "c.pem", "key": "k.pem"}}],
            "redis": {"address": "redis://u:pw@127.0.0.1:6379", "password": "pw"},
            "route": {"key": {"header": "x"}},
        });
        let r = redact(v, false);
        assert_eq!(r["listeners"][0]["tls"]["key"], REDACTED);
        assert_eq!(r["listeners"][0]["tls"]["cert"], "c.pem");
        assert_eq!(r["redis"]["password"], REDACTED);
        assert_eq!(r["redis"]["address"], "redis://[redacted]@127.0.0.1:6379");
        assert_eq!(
            r["route"]["key"]["header"], "x",
            "a rate-limit key is no secret"
        );
    }
}
