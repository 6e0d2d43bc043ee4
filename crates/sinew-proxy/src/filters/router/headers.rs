//! Header work every proxied request and response gets: hop-by-hop removal (RFC 9110
//! §7.6.1), `X-Forwarded-For`, `X-Forwarded-Proto`, `Via`, and `x-request-id`.

use std::net::IpAddr;

use http::header::{HeaderName, CONNECTION, EXPECT, TE, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether a header is hop-by-hop by itself (without being named in `Connection`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == UPGRADE
        || name == TRANSFER_ENCODING
        || name == TE
        || name == EXPECT
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers: the fixed ones and any the `Connection` header names.
/// `TE: trailers` survives (gRPC needs it over HTTP/2); upgrades keep their two headers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass over the
    // names finds out, instead of a hash lookup per candidate.
    let mut hop_by_hop = headers.keys().filter(|name| is_hop_by_hop(name));
    let Some(first) = hop_by_hop.next() else {
        if keep_upgrade {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    };
    let only_connection = first == CONNECTION && hop_by_hop.next().is_none();
    if let Some(connection) = headers.get(CONNECTION) {
        // Names other than the usual tokens are collected first (they borrow the map we
        // are about to change); the Vec allocates only if there are any.
        let named: Vec<HeaderName> = connection
            .as_bytes()
            .split(|b| *b == b',')
            .map(|t| t.trim_ascii())
            .filter(|t| {
                !(t.eq_ignore_ascii_case(b"keep-alive")
                    || t.eq_ignore_ascii_case(b"close")
                    || t.eq_ignore_ascii_case(b"upgrade"))
            })
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    if only_connection && !keep_upgrade {
        headers.remove(CONNECTION);
        return;
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    // The downstream `100 Continue` is the codec's to send, when the body is first read;
    // the upstream side does not wait for one, so the expectation ends here.
    if headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
    {
        headers.remove(EXPECT);
    }
    if let Some(te) = headers.get(TE) {
        if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            headers.remove(TE);
        }
    }
}

/// What a proxied request's headers get before the route's own edits: hop-by-hop
/// removal, an `x-request-id` if asked for and missing, `X-Forwarded-For`/`-Proto`, and
/// `Via`. One function, so the benches measure what requests pay.
pub fn prepare_request(
    headers: &mut HeaderMap,
    upgrade: bool,
    generate_request_id: bool,
    client: &HeaderValue,
    tls: bool,
    forwarding: Forwarding,
    via: Option<&HeaderValue>,
) {
    // The codec sizes the map to the headers it parsed; room for the usual additions makes it
    // grow once, not once for each.
    headers.reserve(4);
    remove_hop_by_hop(headers, upgrade);
    if generate_request_id && !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, new_request_id());
    }
    set_forwarded(headers, client, tls, forwarding);
    if let Some(via) = via {
        append_via(headers, via);
    }
}

/// What an upstream response's headers get before the route's own edits: hop-by-hop
/// removal (not on a switch of protocols, whose `Connection`/`Upgrade` the client needs)
/// and `Via`.
pub fn prepare_response(
    headers: &mut HeaderMap,
    switching_protocols: bool,
    via: Option<&HeaderValue>,
) {
    if !switching_protocols {
        remove_hop_by_hop(headers, false);
    }
    if let Some(via) = via {
        append_via(headers, via);
    }
}

/// The client address as a header value; made once per connection.
pub fn client_address_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).expect("an IP address is a valid header value")
}

/// What a listener does with `X-Forwarded-For` and `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    pub xff: Xff,
    /// An incoming `X-Forwarded-Proto` is kept (else set from the connection: `http`, or
    /// `https` behind TLS).
    pub keep_proto: bool,
    /// `scheme_to_overwrite`: `X-Forwarded-Proto` (and the upstream `:scheme`) is this,
    /// whatever came or the connection is.
    pub scheme: Option<sinew_config::model::Scheme>,
}

/// What happens to `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xff {
    /// The client's address is appended to what came (or is the whole header).
    Append,
    /// The client's address replaces what came.
    Replace,
    /// The header goes on as it came (Envoy without `use_remote_address`, or with
    /// `skip_xff_append`).
    Keep,
}

impl Forwarding {
    /// Sinew's `trust_forwarded_headers: true`, the default.
    pub const TRUSTED: Forwarding = Forwarding {
        xff: Xff::Append,
        keep_proto: true,
        scheme: None,
    };
    /// Sinew's `trust_forwarded_headers: false`.
    pub const UNTRUSTED: Forwarding = Forwarding {
        xff: Xff::Replace,
        keep_proto: false,
        scheme: None,
    };

    /// A listener's: Sinew's own (`trust_forwarded_headers`) unless Envoy's
    /// `use_remote_address` is set. Envoy appends only with `use_remote_address: true`
    /// (and no `skip_xff_append`), and keeps an incoming `X-Forwarded-Proto` only when it
    /// trusts hops in front of it (`xff_num_trusted_hops` > 0).
    pub fn of(http: &sinew_config::model::HttpConnectionManager) -> Forwarding {
        let forwarding = match http.use_remote_address {
            None if http.trust_forwarded_headers => Forwarding::TRUSTED,
            None => Forwarding::UNTRUSTED,
            Some(remote) => Forwarding {
                xff: if remote && !http.skip_xff_append {
                    Xff::Append
                } else {
                    Xff::Keep
                },
                keep_proto: http.xff_num_trusted_hops > 0,
                scheme: None,
            },
        };
        Forwarding {
            scheme: http.scheme_to_overwrite,
            ..forwarding
        }
    }
}

/// Sets `X-Forwarded-For` and `X-Forwarded-Proto` as `forwarding` says. `client` is the
/// value of [`client_address_value`].
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    forwarding: Forwarding,
) {
    let xff = match (forwarding.xff, headers.get(&X_FORWARDED_FOR)) {
        (Xff::Keep, _) => None,
        (Xff::Append, Some(existing)) if !existing.is_empty() => {
            let mut v = Vec::with_capacity(existing.len() + 2 + client.len());
            v.extend_from_slice(existing.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(client.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }
    if let Some(scheme) = forwarding.scheme {
        headers.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(scheme.as_str()),
        );
    } else if !(forwarding.keep_proto && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// Appends this proxy to `Via` (`1.1 sinew`, `2 sinew`).
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(VIA, via.clone());
}

/// A random version 4 UUID, for requests that arrive without an `x-request-id`. Written
/// into a stack buffer: the header value's own copy is the only allocation.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Version 4 in the third group, variant 10xx in the fourth.
    let hi = (fastrand::u64(..) & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (fastrand::u64(..) & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = [0u8; 36];
    let mut nibble = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *byte = b'-';
        } else {
            *byte = HEX[((bits >> (124 - 4 * nibble)) & 0xf) as usize];
            nibble += 1;
        }
    }
    HeaderValue::from_bytes(&out).expect("hex and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert(EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_lone_connection_header_goes_with_the_headers_it_names() {
        for value in ["keep-alive", "Keep-Alive, x-secret", "close"] {
            let mut h = HeaderMap::new();
            h.insert(CONNECTION, HeaderValue::from_static(value));
            h.insert("x-secret", HeaderValue::from_static("1"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            remove_hop_by_hop(&mut h, false);
            let mut kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            kept.sort();
            let want: &[&str] = if value.contains("x-secret") {
                &["x-kept"]
            } else {
                &["x-kept", "x-secret"]
            };
            assert_eq!(kept, want, "Connection: {value}");
        }
    }

    #[test]
    fn keeps_te_trailers_and_upgrade_headers_when_upgrading() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[TE], "trailers");
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_for_trusted_and_replaces_for_untrusted() {
        let ip = client_address_value("10.0.0.7".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut h, &ip, false, Forwarding::TRUSTED);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            &client_address_value("::1".parse().unwrap()),
            false,
            Forwarding::UNTRUSTED,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn envoy_s_use_remote_address_appends_and_transparent_mode_keeps_the_header() {
        let ip = client_address_value("10.0.0.7".parse().unwrap());
        let incoming = || {
            let mut h = HeaderMap::new();
            h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
            h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            h
        };
        let envoy = |yaml: &str| {
            let http: sinew_config::model::HttpConnectionManager =
                serde_yaml_ng::from_str(&format!("{{virtual_hosts: [], {yaml}}}")).unwrap();
            Forwarding::of(&http)
        };
        let mut h = incoming();
        set_forwarded(&mut h, &ip, false, envoy("use_remote_address: true"));
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.7");
        assert_eq!(
            h[&X_FORWARDED_PROTO], "http",
            "no trusted hops: set from TLS"
        );
        let mut h = incoming();
        let f = envoy("use_remote_address: true, xff_num_trusted_hops: 1, skip_xff_append: true");
        set_forwarded(&mut h, &ip, false, f);
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &ip, true, envoy("use_remote_address: false"));
        assert!(!h.contains_key(&X_FORWARDED_FOR), "transparent: none added");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn scheme_to_overwrite_sets_x_forwarded_proto_whatever_came_or_the_connection_is() {
        let ip = client_address_value("10.0.0.7".parse().unwrap());
        for (yaml, tls, want) in [
            ("scheme_to_overwrite: https", false, "https"),
            ("scheme_to_overwrite: http", true, "http"),
            (
                "scheme_to_overwrite: https, xff_num_trusted_hops: 1, use_remote_address: true",
                false,
                "https",
            ),
        ] {
            let http: sinew_config::model::HttpConnectionManager =
                serde_yaml_ng::from_str(&format!("{{virtual_hosts: [], {yaml}}}")).unwrap();
            let mut h = HeaderMap::new();
            h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
            set_forwarded(&mut h, &ip, tls, Forwarding::of(&http));
            assert_eq!(h[&X_FORWARDED_PROTO], want, "{yaml}");
        }
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped_and_distinct() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(
            matches!(&s[19..20], "8" | "9" | "a" | "b"),
            "variant 10xx: {s}"
        );
        let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, vec![8, 13, 18, 23], "{s}");
    }
}
