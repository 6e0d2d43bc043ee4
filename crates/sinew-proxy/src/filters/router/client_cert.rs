//! `x-forwarded-client-cert` (XFCC): what the upstream is told of the client's
//! certificate, with Envoy's `forward_client_cert_details` modes and its element format
//! (`By=<this proxy's URI SAN>;Hash=<SHA-256 of the client certificate>;Subject="…";
//! URI=…;DNS=…`, one element per hop, hops separated by commas).

use http::{HeaderMap, HeaderName, HeaderValue};
use sinew_config::tls::{ClientCertDetails, ForwardClientCert};
use sinew_identity::PeerIdentity;

pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Applies the listener's mode to a request's headers. `client` is the verified client
/// certificate's identity (`None`: not mTLS); `by` is this proxy's own URI SAN.
pub(crate) fn apply(
    headers: &mut HeaderMap,
    mode: ForwardClientCert,
    details: ClientCertDetails,
    client: Option<&PeerIdentity>,
    by: Option<&str>,
) {
    let client = match (mode, client) {
        (ForwardClientCert::AlwaysForwardOnly, _) => return,
        (ForwardClientCert::Sanitize, _) | (_, None) => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
            return;
        }
        (_, Some(client)) => client,
    };
    let element = || element(client, details, by);
    let value = match mode {
        ForwardClientCert::ForwardOnly => return,
        ForwardClientCert::SanitizeSet => element(),
        ForwardClientCert::AppendForward => match headers.get(&X_FORWARDED_CLIENT_CERT) {
            Some(existing) if !existing.is_empty() => match existing.to_str() {
                Ok(existing) => format!("{existing},{}", element()),
                // Not text: nothing trustworthy to append to.
                Err(_) => element(),
            },
            _ => element(),
        },
        ForwardClientCert::Sanitize | ForwardClientCert::AlwaysForwardOnly => unreachable!(),
    };
    match HeaderValue::try_from(value) {
        Ok(v) => {
            headers.insert(&X_FORWARDED_CLIENT_CERT, v);
        }
        // A certificate field that is not header text (it was checked DER, but a subject
        // may hold controls): the header is dropped rather than half-written.
        Err(_) => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
    }
}

/// This hop's element.
fn element(client: &PeerIdentity, details: ClientCertDetails, by: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::with_capacity(5);
    if let Some(by) = by {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", client.sha256));
    if details.subject {
        // Quoted, with `"` and `\` escaped, as Envoy writes it.
        let escaped = client.subject.replace('\\', "\\\\").replace('"', "\\\"");
        parts.push(format!("Subject=\"{escaped}\""));
    }
    if details.uri {
        parts.extend(client.uri_sans.iter().map(|uri| format!("URI={uri}")));
    }
    if details.dns {
        parts.extend(client.dns_sans.iter().map(|dns| format!("DNS={dns}")));
    }
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> PeerIdentity {
        PeerIdentity {
            spiffe: None,
            uri_sans: vec!["spiffe://cluster.local/ns/a/sa/web".into()],
            dns_sans: vec!["web.a".into()],
            subject: "CN=web,O=\"x\"".into(),
            serial: "01".into(),
            not_after: 0,
            sha256: "ab".repeat(32),
        }
    }

    fn run(mode: ForwardClientCert, incoming: Option<&str>, mtls: bool) -> Option<String> {
        let mut headers = HeaderMap::new();
        if let Some(v) = incoming {
            headers.insert(&X_FORWARDED_CLIENT_CERT, HeaderValue::from_str(v).unwrap());
        }
        let details = ClientCertDetails {
            subject: true,
            uri: true,
            dns: false,
        };
        let id = client();
        let by = Some("spiffe://cluster.local/ns/b/sa/api");
        apply(&mut headers, mode, details, mtls.then_some(&id), by);
        headers
            .get(&X_FORWARDED_CLIENT_CERT)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn each_mode_keeps_sets_appends_or_drops_the_header_as_envoy() {
        use ForwardClientCert::*;
        let own = format!(
            "By=spiffe://cluster.local/ns/b/sa/api;Hash={};Subject=\"CN=web,O=\\\"x\\\"\";URI=spiffe://cluster.local/ns/a/sa/web",
            "ab".repeat(32)
        );
        let forged = Some("By=x;Hash=00");
        assert_eq!(run(Sanitize, forged, true), None);
        assert_eq!(run(ForwardOnly, forged, true).as_deref(), forged);
        assert_eq!(run(ForwardOnly, forged, false), None);
        assert_eq!(run(SanitizeSet, forged, true), Some(own.clone()));
        assert_eq!(run(SanitizeSet, forged, false), None);
        assert_eq!(
            run(AppendForward, forged, true),
            Some(format!("By=x;Hash=00,{own}"))
        );
        assert_eq!(run(AppendForward, None, true), Some(own));
        assert_eq!(run(AppendForward, forged, false), None);
        assert_eq!(run(AlwaysForwardOnly, forged, false).as_deref(), forged);
    }
}
