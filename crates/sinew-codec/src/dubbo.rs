//! Dubbo (its default `dubbo` protocol, with Hessian 2.0 bodies) as an [`RpcCodec`].
//!
//! Every message is a 16-byte head and a body:
//!
//! ```text
//! magic:2 (0xdabb)  flag:1  status:1  id:8  bodyLen:4
//! flag = request 0x80 | two-way 0x40 | event 0x20 | serialization id (low 5 bits)
//! ```
//!
//! A request's body is a row of Hessian values: the Dubbo version, the service path,
//! the service version, the method, the parameter types as JVM descriptors
//! (`Ljava/lang/String;I`), one value per argument, and the attachments map (which
//! holds the `group`, the `interface` and whatever the caller adds). Routing needs the
//! attachments, so the arguments are stepped over by [`hessian2::Reader::skip`], never
//! decoded. A response's status is in its head (20 is OK); an OK response's body starts
//! with a flag saying whether it holds a value or an exception. Events are requests with
//! the event bit: a heartbeat (a null body) wants an ack; a one-way event (a server's
//! "read-only" notice before it shuts down) wants none.

use bytes::{BufMut, Bytes, BytesMut};

use crate::hessian2::Reader;
use crate::rpc::{
    CallInfo, CodecError, Frame, FrameKind, ProxyError, ResponseClass, RpcCodec, Sniffed,
};

const MAGIC: [u8; 2] = [0xda, 0xbb];
const FLAG_REQUEST: u8 = 0x80;
const FLAG_TWO_WAY: u8 = 0x40;
const FLAG_EVENT: u8 = 0x20;
const SERIALIZATION_MASK: u8 = 0x1f;
/// Dubbo's id for Hessian 2.0, its default serialization.
pub const HESSIAN2: u8 = 2;
const HEAD: usize = 16;
const ID_AT: usize = 4;
/// The largest body read: Dubbo's own default `payload` limit (8 MiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Dubbo response statuses (`Response` in Dubbo's exchange layer).
pub mod status {
    pub const OK: u8 = 20;
    pub const CLIENT_TIMEOUT: u8 = 30;
    pub const SERVER_TIMEOUT: u8 = 31;
    pub const BAD_REQUEST: u8 = 40;
    pub const BAD_RESPONSE: u8 = 50;
    pub const SERVICE_NOT_FOUND: u8 = 60;
    pub const SERVICE_ERROR: u8 = 70;
    pub const SERVER_ERROR: u8 = 80;
    pub const CLIENT_ERROR: u8 = 90;
    pub const SERVER_THREADPOOL_EXHAUSTED: u8 = 100;
}

/// The first value of an OK response's body: what the rest is.
mod result_flag {
    pub const EXCEPTION: i64 = 0;
    pub const EXCEPTION_WITH_ATTACHMENTS: i64 = 3;
}

/// The Dubbo codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dubbo;

/// One argument per JVM type descriptor: `[` prefixes, then a primitive letter or
/// `L<class>;`. None when the text is not descriptors.
fn argument_count(descriptors: &str) -> Option<usize> {
    let mut rest = descriptors.as_bytes();
    let mut count = 0;
    while let Some((&first, tail)) = rest.split_first() {
        rest = tail;
        match first {
            b'[' => continue,
            b'Z' | b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S' => {}
            b'L' => {
                let end = rest.iter().position(|&c| c == b';')?;
                rest = &rest[end + 1..];
            }
            _ => return None,
        }
        count += 1;
    }
    Some(count)
}

/// A response head for `request` (its id and serialization) with `status`, and `body`.
fn response(request: &Frame, event: bool, status: u8, body: &[u8]) -> Bytes {
    let serialization = request
        .bytes
        .get(2)
        .map_or(HESSIAN2, |f| f & SERIALIZATION_MASK);
    let mut out = BytesMut::with_capacity(HEAD + body.len());
    out.put_slice(&MAGIC);
    out.put_u8(serialization | if event { FLAG_EVENT } else { 0 });
    out.put_u8(status);
    out.put_u64(request.request_id);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    out.freeze()
}

/// Hessian 2.0 bytes of a string (the short, medium or one-chunk form).
pub fn hessian_string(s: &str) -> Vec<u8> {
    // Hessian counts UTF-16 units; one chunk holds at most 65535.
    let units = s.encode_utf16().count().min(u16::MAX as usize);
    let mut out = Vec::with_capacity(s.len() + 3);
    match units {
        0..=31 => out.push(units as u8),
        32..=1023 => out.extend_from_slice(&[0x30 + (units >> 8) as u8, units as u8]),
        _ => out.extend_from_slice(&[b'S', (units >> 8) as u8, units as u8]),
    }
    out.extend_from_slice(s.as_bytes());
    out
}

impl RpcCodec for Dubbo {
    fn name(&self) -> &'static str {
        "dubbo"
    }

    fn sniff(&self, first: &[u8]) -> Sniffed {
        match first {
            [] | [0xda] => Sniffed::NeedMore,
            [0xda, 0xbb, ..] => Sniffed::Yes,
            _ => Sniffed::No,
        }
    }

    fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.sniff(buf) {
            Sniffed::NeedMore => return Ok(None),
            Sniffed::No => {
                return Err(CodecError(format!(
                    "not Dubbo: magic {:02x?}",
                    &buf[..2.min(buf.len())]
                )))
            }
            Sniffed::Yes => {}
        }
        if buf.len() < HEAD {
            return Ok(None);
        }
        let body = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        if body > MAX_BODY_BYTES {
            return Err(CodecError(format!(
                "Dubbo body of {body} bytes is over the {MAX_BODY_BYTES}-byte limit"
            )));
        }
        let flag = buf[2];
        let kind = match (flag & FLAG_REQUEST != 0, flag & FLAG_EVENT != 0) {
            (true, false) if flag & FLAG_TWO_WAY != 0 => FrameKind::Request,
            (true, false) => FrameKind::OneWay,
            (true, true) => FrameKind::Heartbeat,
            (false, false) => FrameKind::Response,
            (false, true) => FrameKind::HeartbeatAck,
        };
        let total = HEAD + body;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let bytes = buf.split_to(total);
        let request_id = u64::from_be_bytes(bytes[ID_AT..ID_AT + 8].try_into().expect("8 bytes"));
        Ok(Some(Frame {
            kind,
            request_id,
            bytes,
        }))
    }

    fn call_info(&self, request: &Frame) -> CallInfo {
        let mut info = CallInfo::default();
        let Some(body) = request.bytes.get(HEAD..) else {
            return info;
        };
        if request.bytes[2] & SERIALIZATION_MASK != HESSIAN2 {
            // Other serializations (fastjson, protobuf, …) are forwarded unread: with no
            // service or method, only catch-all routes take them.
            return info;
        }
        let mut r = Reader::new(body);
        let fixed = (|| {
            let _dubbo_version = r.string()?;
            info.service = r.string()?;
            info.version = r.string()?;
            info.method = r.string()?;
            argument_count(&r.string()?)
        })();
        let Some(arguments) = fixed else {
            return info;
        };
        if (0..arguments).try_for_each(|_| r.skip()).is_none() {
            return info;
        }
        for (key, value) in r.string_map().unwrap_or_default() {
            // An empty group or version is none (clients send either form).
            if value.is_empty() && matches!(key.as_str(), "group" | "version") {
                continue;
            }
            match key.as_str() {
                "group" if info.group.is_empty() => info.group.clone_from(&value),
                "version" if info.version.is_empty() => info.version.clone_from(&value),
                _ => {}
            }
            info.headers.push((key, value));
        }
        info
    }

    fn set_request_id(&self, frame: &mut Frame, id: u64) {
        frame.bytes[ID_AT..ID_AT + 8].copy_from_slice(&id.to_be_bytes());
        frame.request_id = id;
    }

    fn response_class(&self, response: &Frame) -> ResponseClass {
        match response.bytes[3] {
            status::OK => {
                let flag = response.bytes.get(HEAD..).and_then(|body| {
                    match Reader::new(body).value()? {
                        crate::hessian2::Value::Int(flag) => Some(flag),
                        _ => None,
                    }
                });
                match flag {
                    Some(result_flag::EXCEPTION | result_flag::EXCEPTION_WITH_ATTACHMENTS) => {
                        ResponseClass::ServerError
                    }
                    _ => ResponseClass::Success,
                }
            }
            status::CLIENT_TIMEOUT | status::SERVER_TIMEOUT => ResponseClass::Timeout,
            status::SERVICE_NOT_FOUND | status::SERVER_THREADPOOL_EXHAUSTED => {
                ResponseClass::Unavailable
            }
            status::SERVICE_ERROR => ResponseClass::ServerError,
            _ => ResponseClass::Error,
        }
    }

    fn error_reply(&self, request: &Frame, error: ProxyError, message: &str) -> Bytes {
        let code = match error {
            ProxyError::NoRoute => status::SERVICE_NOT_FOUND,
            ProxyError::Unavailable => status::SERVICE_ERROR,
            ProxyError::Timeout => status::SERVER_TIMEOUT,
            ProxyError::Overloaded => status::SERVER_THREADPOOL_EXHAUSTED,
            ProxyError::Denied => status::BAD_REQUEST,
        };
        // A response that is not OK carries its error text as one Hessian string, which
        // Dubbo clients raise as the call's exception message.
        response(
            request,
            false,
            code,
            &hessian_string(&format!("sinew: {message}")),
        )
    }

    fn heartbeat_ack(&self, heartbeat: &Frame) -> Option<Bytes> {
        // A one-way event (a server's read-only notice) wants no answer.
        (heartbeat.bytes[2] & FLAG_TWO_WAY != 0)
            .then(|| response(heartbeat, true, status::OK, b"N"))
    }
}

/// Builds a Dubbo request with Hessian 2.0 string arguments: for tests, benchmarks and
/// the proxy's own probes.
pub fn encode_request(
    id: u64,
    two_way: bool,
    service: &str,
    version: &str,
    method: &str,
    arguments: &[&str],
    attachments: &[(&str, &str)],
) -> BytesMut {
    let mut body = Vec::new();
    for field in [
        "2.0.2",
        service,
        version,
        method,
        &"Ljava/lang/String;".repeat(arguments.len()),
    ] {
        body.extend(hessian_string(field));
    }
    for argument in arguments {
        body.extend(hessian_string(argument));
    }
    body.push(b'H');
    for (key, value) in [("path", service), ("interface", service)]
        .iter()
        .chain(attachments)
    {
        body.extend(hessian_string(key));
        body.extend(hessian_string(value));
    }
    body.push(b'Z');
    let flag = FLAG_REQUEST | HESSIAN2 | if two_way { FLAG_TWO_WAY } else { 0 };
    frame(flag, 0, id, &body)
}

/// Builds an OK Dubbo response whose value is one Hessian string.
pub fn encode_response(id: u64, value: &str) -> BytesMut {
    let mut body = vec![0x91]; // the "value" result flag, 1
    body.extend(hessian_string(value));
    frame(HESSIAN2, status::OK, id, &body)
}

/// Builds a Dubbo heartbeat (a two-way event with a null body).
pub fn encode_heartbeat(id: u64) -> BytesMut {
    frame(
        FLAG_REQUEST | FLAG_TWO_WAY | FLAG_EVENT | HESSIAN2,
        0,
        id,
        b"N",
    )
}

fn frame(flag: u8, status: u8, id: u64, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(HEAD + body.len());
    out.put_slice(&MAGIC);
    out.put_u8(flag);
    out.put_u8(status);
    out.put_u64(id);
    out.put_u32(body.len() as u32);
    out.put_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinew_fuzz::proptest::prelude::*;

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = Dubbo.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty());
        out
    }

    /// A call as dubbo-remoting 2.1.4 (sofa-rpc-node's Dubbo protocol) writes it,
    /// captured: `com.example.Echo:1.0.0`, method `echo`, one object argument, group
    /// `blue`.
    const NODE_CALL: &str =
        "dabbc2000000000000000007000000c705322e352e3310636f6d2e6578616d706c652e4563686f05312e302e\
        30046563686f30264c636f6d2f6578616d706c652f506572736f6e3b4c6a6176612f6c616e672f537472696e\
        673b4312636f6d2e6578616d706c652e506572736f6e92046e616d650361676560016e930268694805647562\
        626f05322e352e330567726f757004626c756509696e7465726661636510636f6d2e6578616d706c652e4563\
        686f047061746810636f6d2e6578616d706c652e4563686f0776657273696f6e05312e302e305a";

    #[test]
    fn a_call_gives_its_service_version_method_and_the_group_from_its_attachments() {
        let bytes = encode_request(
            7,
            true,
            "com.example.Echo",
            "1.0.0",
            "echo",
            &["hello", "world"],
            &[("group", "blue"), ("tenant", "t1")],
        );
        let frames = decode_all(&bytes);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].kind, FrameKind::Request);
        assert_eq!(frames[0].request_id, 7);
        let info = Dubbo.call_info(&frames[0]);
        assert_eq!(info.service, "com.example.Echo");
        assert_eq!(info.version, "1.0.0");
        assert_eq!(info.method, "echo");
        assert_eq!(info.group, "blue");
        assert!(info.headers.contains(&("tenant".into(), "t1".into())));
    }

    #[test]
    fn an_object_argument_is_stepped_over_to_reach_the_attachments() {
        let bytes = unhex(NODE_CALL);
        let frames = decode_all(&bytes);
        let info = Dubbo.call_info(&frames[0]);
        assert_eq!(info.service, "com.example.Echo");
        assert_eq!(info.method, "echo");
        assert_eq!(info.group, "blue");
    }

    #[test]
    fn descriptors_count_one_argument_each() {
        assert_eq!(argument_count(""), Some(0));
        assert_eq!(argument_count("I"), Some(1));
        assert_eq!(argument_count("Ljava/lang/String;[I[[Lcom/x/P;J"), Some(4));
        assert_eq!(argument_count("Ljava/lang/String"), None);
        assert_eq!(argument_count("Q"), None);
    }

    #[test]
    fn frames_split_anywhere_are_read_when_whole_and_pipelined_ones_one_by_one() {
        let mut stream = encode_request(1, true, "S", "", "m", &["x"], &[]).to_vec();
        stream.extend_from_slice(&encode_heartbeat(2));
        stream.extend_from_slice(&encode_request(3, false, "S", "", "m", &[], &[]));
        stream.extend_from_slice(&encode_response(4, "ok"));
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut n = 0;
            while Dubbo.decode(&mut buf).unwrap().is_some() {
                n += 1;
            }
            buf.extend_from_slice(&stream[cut..]);
            while Dubbo.decode(&mut buf).unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, 4, "cut at {cut}");
        }
        let kinds: Vec<_> = decode_all(&stream).iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FrameKind::Request,
                FrameKind::Heartbeat,
                FrameKind::OneWay,
                FrameKind::Response
            ]
        );
    }

    #[test]
    fn ids_are_rewritten_in_place_and_replies_carry_the_requests_id() {
        let mut frame = decode_all(&encode_request(9, true, "S", "", "m", &[], &[])).remove(0);
        Dubbo.set_request_id(&mut frame, 0x0102_0304_0506_0708);
        assert_eq!(
            decode_all(&frame.bytes)[0].request_id,
            0x0102_0304_0506_0708
        );
        let reply = Dubbo.error_reply(&frame, ProxyError::NoRoute, "no route");
        let reply = decode_all(&reply).remove(0);
        assert_eq!(reply.kind, FrameKind::Response);
        assert_eq!(reply.request_id, 0x0102_0304_0506_0708);
        assert_eq!(reply.bytes[3], status::SERVICE_NOT_FOUND);
        assert_eq!(
            Reader::new(&reply.bytes[HEAD..]).string().as_deref(),
            Some("sinew: no route")
        );
        let heartbeat = decode_all(&encode_heartbeat(5)).remove(0);
        let ack = decode_all(&Dubbo.heartbeat_ack(&heartbeat).unwrap()).remove(0);
        assert_eq!((ack.kind, ack.request_id), (FrameKind::HeartbeatAck, 5));
    }

    #[test]
    fn a_one_way_event_gets_no_ack() {
        let mut event = encode_heartbeat(5);
        event[2] &= !FLAG_TWO_WAY;
        let event = decode_all(&event).remove(0);
        assert_eq!(event.kind, FrameKind::Heartbeat);
        assert_eq!(Dubbo.heartbeat_ack(&event), None);
    }

    #[test]
    fn responses_are_classed_by_status_and_result_flag() {
        let class = |status: u8, body: &[u8]| {
            Dubbo.response_class(&decode_all(&frame(HESSIAN2, status, 1, body)).remove(0))
        };
        assert_eq!(
            class(status::OK, &encode_response(1, "v")[HEAD..]),
            ResponseClass::Success
        );
        assert_eq!(class(status::OK, &[0x90, b'N']), ResponseClass::ServerError);
        assert_eq!(class(status::OK, &[0x92]), ResponseClass::Success);
        assert_eq!(class(status::SERVER_TIMEOUT, b""), ResponseClass::Timeout);
        assert_eq!(
            class(status::SERVER_THREADPOOL_EXHAUSTED, b""),
            ResponseClass::Unavailable
        );
        assert_eq!(
            class(status::SERVICE_ERROR, b""),
            ResponseClass::ServerError
        );
        assert_eq!(class(status::BAD_REQUEST, b""), ResponseClass::Error);
    }

    #[test]
    fn other_protocols_and_oversized_bodies_are_errors() {
        assert!(Dubbo
            .decode(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]))
            .is_err());
        let mut huge = encode_heartbeat(1).to_vec();
        huge[12..16].copy_from_slice(&(MAX_BODY_BYTES as u32 + 1).to_be_bytes());
        assert!(Dubbo.decode(&mut BytesMut::from(&huge[..])).is_err());
        assert_eq!(Dubbo.sniff(&[0xda]), Sniffed::NeedMore);
        assert_eq!(Dubbo.sniff(&[0xda, 0xbb]), Sniffed::Yes);
        assert_eq!(Dubbo.sniff(b"*1\r\n"), Sniffed::No);
    }

    const DICTIONARY: &[&[u8]] = &[
        &[0xda, 0xbb, 0xc2, 0],
        &[0xda, 0xbb, 0x02, 20],
        &[0xff, 0xff, 0xff, 0xff],
        b"H",
        b"Z",
        b"C",
        b"\x60",
        b"\x57",
        b"Ljava/lang/String;",
    ];

    #[test]
    fn fuzz_dubbo_decoder() {
        let samples = vec![
            encode_request(
                1,
                true,
                "com.example.Echo",
                "1.0",
                "echo",
                &["x"],
                &[("group", "g")],
            )
            .to_vec(),
            unhex(NODE_CALL),
            encode_response(2, "ok").to_vec(),
            encode_heartbeat(3).to_vec(),
        ];
        sinew_fuzz::run(
            "dubbo",
            1,
            prop_oneof![
                sinew_fuzz::mutated(samples, DICTIONARY),
                sinew_fuzz::token_soup(DICTIONARY, 24)
            ],
            |bytes| {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(frame)) = Dubbo.decode(&mut buf) {
                    match frame.kind {
                        FrameKind::Request | FrameKind::OneWay => {
                            let _ = Dubbo.call_info(&frame);
                        }
                        FrameKind::Response => {
                            let _ = Dubbo.response_class(&frame);
                        }
                        FrameKind::Heartbeat => {
                            let _ = Dubbo.heartbeat_ack(&frame);
                        }
                        FrameKind::HeartbeatAck => {}
                    }
                    let _ = Dubbo.error_reply(&frame, ProxyError::Unavailable, "x");
                }
                Ok(())
            },
        );
    }
}
