//! Trace context on the wire: reading W3C `traceparent` (Trace Context Level 1) and B3
//! (Zipkin's single `b3` header and its `x-b3-*` multi-header form) from a request, and
//! writing the proxy's span back in every format the request carried.
//!
//! A malformed header is treated as absent, never as an error: the request goes on and
//! starts a new trace (W3C §3.2.2.1 says the same; B3 has no rule, so Sinew follows it).

use http::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub static B3: HeaderName = HeaderName::from_static("b3");
pub static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// The caller's span: the trace it belongs to and its id, which becomes our parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: u128,
    pub span_id: u64,
}

/// What a request says about its trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's span, from the first well-formed format (W3C, then `b3`, then
    /// `x-b3-*`); None starts a new trace.
    pub parent: Option<Parent>,
    /// The caller's sampling decision; None leaves it to the proxy's rate. B3 may carry
    /// a decision with no ids (`b3: 0`), or ids with no decision.
    pub sampled: Option<bool>,
    /// The parent came from a well-formed `traceparent` (so its `tracestate` stands).
    pub from_w3c: bool,
    pub has_tracestate: bool,
    /// The forms present, each rewritten on the way upstream so none is left pointing at
    /// the caller's span.
    pub has_b3_single: bool,
    pub has_b3_multi: bool,
    /// The request's B3 trace id was 64-bit; B3 is written back at that width.
    pub b3_short_trace_id: bool,
    /// `x-b3-flags: 1` (debug): sampled, and passed on as it came.
    pub b3_debug: bool,
}

/// The trace headers of one request, found in one pass over its header names (a request
/// has a handful; four hash lookups for names that are usually absent cost more).
#[derive(Default)]
struct Found<'a> {
    traceparent: Option<&'a HeaderValue>,
    tracestate: bool,
    b3: Option<&'a HeaderValue>,
    x_b3_traceid: Option<&'a HeaderValue>,
    x_b3_spanid: Option<&'a HeaderValue>,
    x_b3_sampled: Option<&'a HeaderValue>,
    x_b3_flags: Option<&'a HeaderValue>,
}

impl<'a> Found<'a> {
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut found = Found::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "traceparent" => &mut found.traceparent,
                "tracestate" => {
                    found.tracestate = true;
                    continue;
                }
                "b3" => &mut found.b3,
                "x-b3-traceid" => &mut found.x_b3_traceid,
                "x-b3-spanid" => &mut found.x_b3_spanid,
                "x-b3-sampled" => &mut found.x_b3_sampled,
                "x-b3-flags" => &mut found.x_b3_flags,
                _ => continue,
            };
            // The first of repeated values counts.
            slot.get_or_insert(value);
        }
        found
    }
}

/// Reads a request's trace context.
pub fn extract(headers: &HeaderMap) -> Incoming {
    let found = Found::scan(headers);
    let mut incoming = Incoming {
        has_tracestate: found.tracestate,
        ..Incoming::default()
    };
    if let Some((parent, sampled)) = found
        .traceparent
        .and_then(|v| parse_traceparent(v.as_bytes()))
    {
        incoming.parent = Some(parent);
        incoming.sampled = Some(sampled);
        incoming.from_w3c = true;
    }
    if let Some(value) = found.b3 {
        incoming.has_b3_single = true;
        if let Some(single) = parse_b3_single(value.as_bytes()) {
            if incoming.parent.is_none() {
                incoming.parent = single.parent;
                incoming.sampled = single.sampled;
                incoming.b3_short_trace_id = single.short_trace_id;
            }
            incoming.b3_debug |= single.debug;
        }
    }
    if found.x_b3_traceid.is_some() || found.x_b3_sampled.is_some() {
        incoming.has_b3_multi = true;
        incoming.b3_debug |= found.x_b3_flags.is_some_and(|f| f.as_bytes() == b"1");
        if incoming.parent.is_none() && incoming.sampled.is_none() {
            let multi = parse_b3_multi(&found);
            incoming.parent = multi.parent;
            incoming.sampled = multi.sampled;
            incoming.b3_short_trace_id = multi.short_trace_id;
        }
    }
    if incoming.b3_debug {
        incoming.sampled = Some(true);
    }
    incoming
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase. Later versions may
/// append fields after a dash; version `ff` and all-zero ids are invalid.
fn parse_traceparent(value: &[u8]) -> Option<(Parent, bool)> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = lower_hex(&value[0..2])? as u8;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = lower_hex(&value[3..35])?;
    let span_id = lower_hex(&value[36..52])? as u64;
    let flags = lower_hex(&value[53..55])? as u8;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((Parent { trace_id, span_id }, flags & 1 == 1))
}

struct B3Parsed {
    parent: Option<Parent>,
    sampled: Option<bool>,
    debug: bool,
    short_trace_id: bool,
}

/// `{TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]`, or a bare sampling state
/// (`0`, `1`, `d`).
fn parse_b3_single(value: &[u8]) -> Option<B3Parsed> {
    let mut parts = value.split(|b| *b == b'-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        let (sampled, debug) = b3_sampling_state(first)?;
        return Some(B3Parsed {
            parent: None,
            sampled,
            debug,
            short_trace_id: false,
        });
    };
    let trace_id = b3_trace_id(first)?;
    let span_id = b3_span_id(second)?;
    let (sampled, debug) = match parts.next() {
        Some(state) => b3_sampling_state(state)?,
        None => (None, false),
    };
    if let Some(parent_span) = parts.next() {
        b3_span_id(parent_span)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3Parsed {
        parent: Some(Parent { trace_id, span_id }),
        sampled,
        debug,
        short_trace_id: first.len() == 16,
    })
}

fn parse_b3_multi(found: &Found) -> B3Parsed {
    let sampled = found.x_b3_sampled.and_then(|v| match v.as_bytes() {
        b"1" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    });
    let trace = found.x_b3_traceid.map(|v| v.as_bytes());
    let ids = trace
        .and_then(b3_trace_id)
        .zip(found.x_b3_spanid.and_then(|v| b3_span_id(v.as_bytes())));
    B3Parsed {
        parent: ids.map(|(trace_id, span_id)| Parent { trace_id, span_id }),
        sampled,
        debug: false,
        short_trace_id: trace.is_some_and(|t| t.len() == 16),
    }
}

fn b3_sampling_state(state: &[u8]) -> Option<(Option<bool>, bool)> {
    match state {
        b"1" => Some((Some(true), false)),
        b"0" => Some((Some(false), false)),
        b"d" => Some((Some(true), true)),
        _ => None,
    }
}

/// B3 trace ids are 64 or 128 bits; a 64-bit one is the low half of a W3C id.
fn b3_trace_id(hex: &[u8]) -> Option<u128> {
    if hex.len() != 16 && hex.len() != 32 {
        return None;
    }
    lower_hex(hex).filter(|id| *id != 0)
}

fn b3_span_id(hex: &[u8]) -> Option<u64> {
    if hex.len() != 16 {
        return None;
    }
    lower_hex(hex).map(|id| id as u64).filter(|id| *id != 0)
}

/// Lowercase hex, at most 32 digits (both W3C and B3 specify lowercase).
fn lower_hex(digits: &[u8]) -> Option<u128> {
    let mut value: u128 = 0;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u128::from(nibble);
    }
    Some(value)
}

/// The proxy's span as the upstream request will carry it.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Writes `traceparent` always, and each B3 form the request came with, all naming the
/// proxy's span (with the caller's as parent). `tracestate` passes through as it came,
/// unless the request's `traceparent` was unusable (W3C: then it is dropped too).
pub fn inject(headers: &mut HeaderMap, incoming: &Incoming, out: Outgoing) {
    if incoming.has_tracestate && !incoming.from_w3c {
        headers.remove(&TRACESTATE);
    }
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    write_hex(&mut buf[3..35], out.trace_id);
    buf[35] = b'-';
    write_hex(&mut buf[36..52], u128::from(out.span_id));
    buf[52..54].copy_from_slice(b"-0");
    buf[54] = if out.sampled { b'1' } else { b'0' };
    headers.insert(&TRACEPARENT, header_value(&buf));

    if !(incoming.has_b3_single || incoming.has_b3_multi) {
        return;
    }
    let mut trace_hex = [0u8; 32];
    write_hex(&mut trace_hex, out.trace_id);
    let trace_hex: &[u8] = if incoming.b3_short_trace_id && out.trace_id >> 64 == 0 {
        &trace_hex[16..]
    } else {
        &trace_hex
    };
    let mut span_hex = [0u8; 16];
    write_hex(&mut span_hex, u128::from(out.span_id));
    let parent_hex = incoming.parent.map(|p| {
        let mut hex = [0u8; 16];
        write_hex(&mut hex, u128::from(p.span_id));
        hex
    });
    let state: &[u8] = match (incoming.b3_debug, out.sampled) {
        (true, _) => b"d",
        (false, true) => b"1",
        (false, false) => b"0",
    };
    if incoming.has_b3_single {
        let mut single = Vec::with_capacity(32 + 1 + 16 + 2 + 17);
        single.extend_from_slice(trace_hex);
        single.push(b'-');
        single.extend_from_slice(&span_hex);
        single.push(b'-');
        single.extend_from_slice(state);
        if let Some(parent) = &parent_hex {
            single.push(b'-');
            single.extend_from_slice(parent);
        }
        headers.insert(&B3, header_value(&single));
    }
    if incoming.has_b3_multi {
        headers.insert(&X_B3_TRACEID, header_value(trace_hex));
        headers.insert(&X_B3_SPANID, header_value(&span_hex));
        match &parent_hex {
            Some(parent) => headers.insert(&X_B3_PARENTSPANID, header_value(parent)),
            None => headers.remove(&X_B3_PARENTSPANID),
        };
        // With debug, `x-b3-flags: 1` already says sampled and B3 says not to send both.
        if !incoming.b3_debug {
            let sampled: &'static str = if out.sampled { "1" } else { "0" };
            headers.insert(&X_B3_SAMPLED, HeaderValue::from_static(sampled));
        }
    }
}

fn write_hex(out: &mut [u8], value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *slot = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

fn header_value(ascii_hex: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(ascii_hex).expect("hex digits and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn w3c_traceparent_gives_parent_and_decision() {
        let incoming = extract(&headers(&[("traceparent", TP)]));
        assert_eq!(
            incoming.parent,
            Some(Parent {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x00f067aa0ba902b7
            })
        );
        assert_eq!(incoming.sampled, Some(true));
        let unsampled = TP.replace("-01", "-00");
        let incoming = extract(&headers(&[("traceparent", &unsampled)]));
        assert_eq!(incoming.sampled, Some(false));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // v00 with extra
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
            "garbage",
        ] {
            let incoming = extract(&headers(&[("traceparent", bad)]));
            assert_eq!(incoming.parent, None, "{bad}");
            assert_eq!(incoming.sampled, None, "{bad}");
        }
    }

    #[test]
    fn future_traceparent_versions_with_extra_fields_are_read() {
        let future = format!("cc{}-what-comes-next", &TP[2..]);
        let incoming = extract(&headers(&[("traceparent", &future)]));
        assert!(incoming.parent.is_some());
    }

    #[test]
    fn b3_single_header_in_all_its_shapes() {
        let full = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
        let incoming = extract(&headers(&[("b3", full)]));
        assert_eq!(
            incoming.parent,
            Some(Parent {
                trace_id: 0x80f198ee56343ba864fe8b2a57d3eff7,
                span_id: 0xe457b5a2e4d86bd1
            })
        );
        assert_eq!(incoming.sampled, Some(true));
        assert!(incoming.has_b3_single);

        let no_decision = extract(&headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1")]));
        assert_eq!(no_decision.sampled, None);
        assert!(no_decision.b3_short_trace_id);
        assert_eq!(
            no_decision.parent.unwrap().trace_id,
            0x64fe8b2a57d3eff7,
            "a 64-bit id is the low half"
        );

        let deny = extract(&headers(&[("b3", "0")]));
        assert_eq!((deny.parent, deny.sampled), (None, Some(false)));
        let debug = extract(&headers(&[("b3", "d")]));
        assert_eq!((debug.sampled, debug.b3_debug), (Some(true), true));
        let bad = extract(&headers(&[("b3", "xyz-e457b5a2e4d86bd1-1")]));
        assert_eq!((bad.parent, bad.sampled), (None, None));
    }

    #[test]
    fn b3_multi_headers() {
        let incoming = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(
            incoming.parent,
            Some(Parent {
                trace_id: 0x463ac35c9f6413ad48485a3953bb6124,
                span_id: 0xa2fb4a1d1a96d312
            })
        );
        assert_eq!(incoming.sampled, Some(false));
        assert!(incoming.has_b3_multi);

        let debug = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ]));
        assert_eq!(debug.sampled, Some(true));
    }

    #[test]
    fn w3c_wins_over_b3_when_both_come() {
        let incoming = extract(&headers(&[
            ("traceparent", TP),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ]));
        assert_eq!(
            incoming.parent.unwrap().trace_id,
            0x4bf92f3577b34da6a3ce929d0e0e4736
        );
        assert_eq!(incoming.sampled, Some(true));
        assert!(incoming.has_b3_single);
    }

    #[test]
    fn inject_writes_w3c_and_each_b3_form_that_came() {
        let mut map = headers(&[
            ("traceparent", TP),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]);
        let incoming = extract(&map);
        let out = Outgoing {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x1111222233334444,
            sampled: true,
        };
        inject(&mut map, &incoming, out);
        assert_eq!(
            map["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111222233334444-01"
        );
        assert_eq!(map["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(
            map["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-1111222233334444-1-00f067aa0ba902b7"
        );
        assert_eq!(map["x-b3-spanid"], "1111222233334444");
        assert_eq!(map["x-b3-parentspanid"], "00f067aa0ba902b7");
        assert_eq!(map["x-b3-sampled"], "1");
    }

    #[test]
    fn inject_keeps_b3_width_and_drops_tracestate_of_a_bad_traceparent() {
        let mut map = headers(&[
            ("traceparent", "bogus"),
            ("tracestate", "a=b"),
            ("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ]);
        let incoming = extract(&map);
        inject(
            &mut map,
            &incoming,
            Outgoing {
                trace_id: 0x64fe8b2a57d3eff7,
                span_id: 0xabc,
                sampled: false,
            },
        );
        assert!(!map.contains_key("tracestate"));
        assert_eq!(
            map["traceparent"],
            "00-000000000000000064fe8b2a57d3eff7-0000000000000abc-00"
        );
        assert_eq!(
            map["b3"],
            "64fe8b2a57d3eff7-0000000000000abc-0-e457b5a2e4d86bd1"
        );
    }
}
