//! SOFA Bolt v1, the transport of Ant Group's SOFARPC, as an [`RpcCodec`].
//!
//! Every Bolt v1 message is a fixed head and three length-prefixed parts: a class name,
//! a header map and the content (the serialized call). Requests have a 22-byte head
//! (with the client's timeout), responses a 20-byte one (with a status):
//!
//! ```text
//! request:  proto=1 type cmdcode:2 ver2 id:4 codec timeout:4 classLen:2 headerLen:2 contentLen:4
//! response: proto=1 type cmdcode:2 ver2 id:4 codec status:2  classLen:2 headerLen:2 contentLen:4
//! ```
//!
//! `type` is 1 for a request, 2 for a one-way request and 0 for a response; `cmdcode` is
//! 1 for a call, 2 for its response and 0 for a heartbeat (and its ack). The header map
//! is `(keyLen:4 key valueLen:4 value)*`. The service is its `service` entry
//! (`interface:version[:uniqueId]`, SOFARPC's unique name; the uniqueId is the group),
//! the method its `sofa_head_method_name`, or, when a client sends none (Hessian-coded
//! calls from some clients), the `methodName` at the front of the Hessian 2.0 request
//! object in the content.

use bytes::{BufMut, Bytes, BytesMut};

use crate::hessian2;
use crate::rpc::{
    CallInfo, CodecError, Frame, FrameKind, HeaderEdit, ProxyError, ResponseClass, RpcCodec,
    Sniffed,
};

/// The protocol byte of Bolt v1.
const PROTOCOL_V1: u8 = 0x01;
const TYPE_RESPONSE: u8 = 0x00;
const TYPE_REQUEST: u8 = 0x01;
const TYPE_ONEWAY: u8 = 0x02;
const CMD_HEARTBEAT: u16 = 0;
const CMD_REQUEST: u16 = 1;
const CMD_RESPONSE: u16 = 2;
const REQUEST_HEAD: usize = 22;
const RESPONSE_HEAD: usize = 20;
/// Where the request id sits in either head.
const ID_AT: usize = 5;
/// The largest message read (class, header and content together): past it, the
/// connection is closed rather than buffered without bound.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bolt response statuses (`ResponseStatus` in SOFA Bolt).
pub mod status {
    pub const SUCCESS: u16 = 0x00;
    pub const ERROR: u16 = 0x01;
    pub const SERVER_EXCEPTION: u16 = 0x02;
    pub const UNKNOWN: u16 = 0x03;
    pub const SERVER_THREADPOOL_BUSY: u16 = 0x04;
    pub const ERROR_COMM: u16 = 0x05;
    pub const NO_PROCESSOR: u16 = 0x06;
    pub const TIMEOUT: u16 = 0x07;
    pub const CLIENT_SEND_ERROR: u16 = 0x08;
    pub const CODEC_EXCEPTION: u16 = 0x09;
    pub const CONNECTION_CLOSED: u16 = 0x10;
}

/// The Bolt v1 codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bolt;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Where the three lengths sit: after the head's timeout (request) or status (response).
fn lengths_at(kind_byte: u8) -> usize {
    if kind_byte == TYPE_RESPONSE {
        12
    } else {
        14
    }
}

fn head_len(kind_byte: u8) -> usize {
    if kind_byte == TYPE_RESPONSE {
        RESPONSE_HEAD
    } else {
        REQUEST_HEAD
    }
}

/// The class name, header map and content of a whole message.
fn parts(b: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let at = lengths_at(b[1]);
    let class = u16_at(b, at) as usize;
    let header = u16_at(b, at + 2) as usize;
    let head = head_len(b[1]);
    let header_start = head + class;
    let content_start = header_start + header;
    (
        &b[head..header_start],
        &b[header_start..content_start],
        &b[content_start..],
    )
}

/// The entries of a Bolt header map; stops at the first malformed entry.
fn header_entries(mut map: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    std::iter::from_fn(move || {
        let mut field = || {
            let len = map.get(..4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            let value = map.get(4..4usize.checked_add(len)?)?;
            map = &map[4 + len..];
            Some(value)
        };
        Some((field()?, field()?))
    })
}

/// The Hessian-coded request's `methodName`, from the request object at the front of
/// the content.
fn hessian_method(content: &[u8]) -> Option<String> {
    let mut r = hessian2::Reader::new(content);
    let hessian2::Value::Object { class } = r.value()? else {
        return None;
    };
    let fields = r.class(class)?.1.to_vec();
    for field in fields {
        // Only strings (or nulls) can be read past; the method name comes early.
        let value = r.string()?;
        if field == "methodName" {
            return Some(value);
        }
    }
    None
}

/// A response head with no class, header or content but `content`.
fn response(request: &Frame, cmdcode: u16, status: u16, content: &[u8]) -> Bytes {
    let b = &request.bytes;
    let mut out = BytesMut::with_capacity(RESPONSE_HEAD + content.len());
    out.put_u8(PROTOCOL_V1);
    out.put_u8(TYPE_RESPONSE);
    out.put_u16(cmdcode);
    out.put_u8(b[4]);
    out.put_slice(&b[ID_AT..ID_AT + 4]);
    out.put_u8(b[9]);
    out.put_u16(status);
    out.put_u16(0);
    out.put_u16(0);
    out.put_u32(content.len() as u32);
    out.put_slice(content);
    out.freeze()
}

impl RpcCodec for Bolt {
    fn name(&self) -> &'static str {
        "bolt"
    }

    fn sniff(&self, first: &[u8]) -> Sniffed {
        match first {
            [] | [PROTOCOL_V1] | [PROTOCOL_V1, TYPE_REQUEST | TYPE_ONEWAY, ..]
                if first.len() < 4 =>
            {
                Sniffed::NeedMore
            }
            [PROTOCOL_V1, TYPE_REQUEST | TYPE_ONEWAY, ..] => match u16_at(first, 2) {
                CMD_HEARTBEAT | CMD_REQUEST => Sniffed::Yes,
                _ => Sniffed::No,
            },
            _ => Sniffed::No,
        }
    }

    fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        if buf[0] != PROTOCOL_V1 {
            return Err(CodecError(format!(
                "not Bolt v1: protocol byte {:#04x}",
                buf[0]
            )));
        }
        let type_byte = buf[1];
        if !matches!(type_byte, TYPE_RESPONSE | TYPE_REQUEST | TYPE_ONEWAY) {
            return Err(CodecError(format!("unknown Bolt type {type_byte:#04x}")));
        }
        let head = head_len(type_byte);
        if buf.len() < head {
            return Ok(None);
        }
        let cmdcode = u16_at(buf, 2);
        let at = lengths_at(type_byte);
        let body =
            u16_at(buf, at) as usize + u16_at(buf, at + 2) as usize + u32_at(buf, at + 4) as usize;
        if body > MAX_MESSAGE_BYTES {
            return Err(CodecError(format!(
                "Bolt message of {body} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
            )));
        }
        let kind = match (type_byte, cmdcode) {
            (TYPE_REQUEST, CMD_REQUEST) => FrameKind::Request,
            (TYPE_ONEWAY, CMD_REQUEST) => FrameKind::OneWay,
            (TYPE_REQUEST | TYPE_ONEWAY, CMD_HEARTBEAT) => FrameKind::Heartbeat,
            (TYPE_RESPONSE, CMD_RESPONSE) => FrameKind::Response,
            (TYPE_RESPONSE, CMD_HEARTBEAT) => FrameKind::HeartbeatAck,
            _ => {
                return Err(CodecError(format!(
                    "unknown Bolt command code {cmdcode} for type {type_byte}"
                )))
            }
        };
        let total = head + body;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let bytes = buf.split_to(total);
        let request_id = u32_at(&bytes, ID_AT) as u64;
        Ok(Some(Frame {
            kind,
            request_id,
            bytes,
        }))
    }

    fn call_info(&self, request: &Frame) -> CallInfo {
        let (_, header, content) = parts(&request.bytes);
        let mut info = CallInfo::default();
        for (key, value) in header_entries(header) {
            let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value))
            else {
                continue;
            };
            match key {
                "service" | "sofa_head_target_service" if info.service.is_empty() => {
                    let mut unique = value.splitn(3, ':');
                    info.service = unique.next().unwrap_or_default().to_owned();
                    info.version = unique.next().unwrap_or_default().to_owned();
                    info.group = unique.next().unwrap_or_default().to_owned();
                }
                "sofa_head_method_name" => info.method = value.to_owned(),
                _ => {}
            }
            info.headers.push((key.to_owned(), value.to_owned()));
        }
        if info.method.is_empty() {
            info.method = hessian_method(content).unwrap_or_default();
        }
        info
    }

    fn set_request_id(&self, frame: &mut Frame, id: u64) {
        // Bolt ids are 32 bits; the proxy hands out ids that fit.
        let id = id as u32;
        frame.bytes[ID_AT..ID_AT + 4].copy_from_slice(&id.to_be_bytes());
        frame.request_id = id as u64;
    }

    fn response_class(&self, response: &Frame) -> ResponseClass {
        match u16_at(&response.bytes, 10) {
            status::SUCCESS => ResponseClass::Success,
            status::SERVER_EXCEPTION => ResponseClass::ServerError,
            status::SERVER_THREADPOOL_BUSY | status::NO_PROCESSOR | status::CONNECTION_CLOSED => {
                ResponseClass::Unavailable
            }
            status::TIMEOUT => ResponseClass::Timeout,
            _ => ResponseClass::Error,
        }
    }

    fn error_reply(&self, request: &Frame, error: ProxyError, _message: &str) -> Bytes {
        let code = match error {
            ProxyError::NoRoute => status::NO_PROCESSOR,
            ProxyError::Unavailable => status::CONNECTION_CLOSED,
            ProxyError::Timeout => status::TIMEOUT,
            ProxyError::Overloaded => status::SERVER_THREADPOOL_BUSY,
            ProxyError::Denied => status::ERROR,
        };
        // The status says it all. Bolt clients read an error response's content as the
        // server's exception object, which the proxy has none of (sofa-bolt-node
        // refuses anything else and drops the connection), so there is no content and
        // the text goes to the proxy's log instead.
        let content = [];
        response(request, CMD_RESPONSE, code, &content)
    }

    fn heartbeat_ack(&self, heartbeat: &Frame) -> Option<Bytes> {
        Some(response(heartbeat, CMD_HEARTBEAT, status::SUCCESS, &[]))
    }

    /// The header map is the one length-prefixed section between the class name and
    /// the content: it is re-encoded and the rest copied around it. A map that is not
    /// whole UTF-8 entries, or one that would grow past the 16-bit length, is left as
    /// it is.
    fn edit_headers(&self, request: &mut Frame, edit: &mut HeaderEdit<'_>) -> bool {
        if !matches!(request.kind, FrameKind::Request | FrameKind::OneWay) {
            return false;
        }
        let b = &request.bytes;
        let (class, header, content) = parts(b);
        let mut pairs = Vec::new();
        let mut read = 0;
        for (key, value) in header_entries(header) {
            let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value))
            else {
                return false;
            };
            read += 8 + key.len() + value.len();
            pairs.push((key.to_owned(), value.to_owned()));
        }
        if read != header.len() {
            return false;
        }
        edit(&mut pairs);
        let new_len: usize = pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let Ok(new_len16) = u16::try_from(new_len) else {
            return false;
        };
        let mut out = BytesMut::with_capacity(b.len() - header.len() + new_len);
        let at = lengths_at(b[1]);
        out.put_slice(&b[..at + 2]);
        out.put_u16(new_len16);
        out.put_slice(&b[at + 4..REQUEST_HEAD]);
        out.put_slice(class);
        for (key, value) in &pairs {
            out.put_u32(key.len() as u32);
            out.put_slice(key.as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_slice(content);
        request.bytes = out;
        true
    }
}

/// Builds a Bolt v1 request: for tests, benchmarks and the proxy's own probes.
pub fn encode_request(
    id: u32,
    oneway: bool,
    timeout_ms: u32,
    class: &[u8],
    headers: &[(&str, &str)],
    content: &[u8],
) -> BytesMut {
    let mut header = Vec::new();
    for (k, v) in headers {
        header.put_u32(k.len() as u32);
        header.put_slice(k.as_bytes());
        header.put_u32(v.len() as u32);
        header.put_slice(v.as_bytes());
    }
    let mut out =
        BytesMut::with_capacity(REQUEST_HEAD + class.len() + header.len() + content.len());
    out.put_u8(PROTOCOL_V1);
    out.put_u8(if oneway { TYPE_ONEWAY } else { TYPE_REQUEST });
    out.put_u16(CMD_REQUEST);
    out.put_u8(1);
    out.put_u32(id);
    out.put_u8(1); // Hessian 2.0
    out.put_u32(timeout_ms);
    out.put_u16(class.len() as u16);
    out.put_u16(header.len() as u16);
    out.put_u32(content.len() as u32);
    out.put_slice(class);
    out.put_slice(&header);
    out.put_slice(content);
    out
}

/// Builds a Bolt v1 response with `status` and `content`.
pub fn encode_response(id: u32, status: u16, content: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(RESPONSE_HEAD + content.len());
    out.put_u8(PROTOCOL_V1);
    out.put_u8(TYPE_RESPONSE);
    out.put_u16(CMD_RESPONSE);
    out.put_u8(1);
    out.put_u32(id);
    out.put_u8(1);
    out.put_u16(status);
    out.put_u16(0);
    out.put_u16(0);
    out.put_u32(content.len() as u32);
    out.put_slice(content);
    out
}

/// A Bolt v1 heartbeat request.
pub fn encode_heartbeat(id: u32) -> BytesMut {
    let mut out = BytesMut::with_capacity(REQUEST_HEAD);
    out.put_u8(PROTOCOL_V1);
    out.put_u8(TYPE_REQUEST);
    out.put_u16(CMD_HEARTBEAT);
    out.put_u8(1);
    out.put_u32(id);
    out.put_u8(1);
    out.put_u32(1000);
    out.put_slice(&[0; 8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_headers_are_re_encoded_around_the_class_and_content() {
        let mut buf = encode_request(
            9,
            false,
            1000,
            b"Cls",
            &[
                ("service", "a.B:1.0"),
                ("Tenant", "x"),
                ("sofa_head_method_name", "m"),
            ],
            b"CONTENT",
        );
        let mut frame = Bolt.decode(&mut buf).unwrap().unwrap();
        let edited = Bolt.edit_headers(&mut frame, &mut |h| {
            h.retain(|(k, _)| k != "Tenant");
            h.push(("x-added".into(), "yes".into()));
        });
        assert!(edited);
        let mut again = frame.bytes.clone();
        let decoded = Bolt.decode(&mut again).unwrap().unwrap();
        assert!(again.is_empty(), "one whole frame");
        let (class, _, content) = parts(&decoded.bytes);
        assert_eq!((class, content), (&b"Cls"[..], &b"CONTENT"[..]));
        let info = Bolt.call_info(&decoded);
        assert_eq!((info.service.as_str(), info.method.as_str()), ("a.B", "m"));
        let names: Vec<&str> = info.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["service", "sofa_head_method_name", "x-added"]);
        assert_eq!(decoded.request_id, 9);
        let mut ack = Frame {
            kind: FrameKind::Response,
            request_id: 1,
            bytes: encode_response(1, 0, b""),
        };
        assert!(
            !Bolt.edit_headers(&mut ack, &mut |_| {}),
            "responses are left alone"
        );
    }
    use sinew_fuzz::proptest::prelude::*;

    const SOFA_REQUEST: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";

    /// A Hessian 2.0 SofaRequest as sofa-rpc-node writes it: class definition, then the
    /// object with `methodName` first.
    fn hessian_request(method: &str) -> Vec<u8> {
        let s = |s: &str| {
            let mut v = vec![s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        };
        let mut b = vec![b'C', 0x30, SOFA_REQUEST.len() as u8];
        b.extend_from_slice(SOFA_REQUEST);
        b.push(0x95);
        for f in [
            "methodName",
            "methodArgSigs",
            "targetServiceUniqueName",
            "targetAppName",
            "requestProps",
        ] {
            b.extend(s(f));
        }
        b.push(0x60);
        b.extend(s(method));
        b.push(b'N');
        b
    }

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(f) = Bolt.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(buf.is_empty());
        frames
    }

    #[test]
    fn a_request_gives_its_service_version_group_and_method_from_the_header_map() {
        let req = encode_request(
            7,
            false,
            3000,
            SOFA_REQUEST,
            &[
                ("service", "com.example.Echo:1.0:blue"),
                ("sofa_head_method_name", "echo"),
                ("zone", "gz"),
            ],
            b"args",
        );
        let frames = decode_all(&req);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            (frames[0].kind, frames[0].request_id),
            (FrameKind::Request, 7)
        );
        let info = Bolt.call_info(&frames[0]);
        assert_eq!(
            (
                info.service.as_str(),
                info.version.as_str(),
                info.group.as_str(),
                info.method.as_str()
            ),
            ("com.example.Echo", "1.0", "blue", "echo")
        );
        assert!(info.headers.contains(&("zone".into(), "gz".into())));
    }

    #[test]
    fn a_hessian_call_without_a_method_header_gives_the_method_from_its_content() {
        let req = encode_request(
            1,
            false,
            0,
            SOFA_REQUEST,
            &[("service", "com.example.Echo:1.0")],
            &hessian_request("plus"),
        );
        let frames = decode_all(&req);
        assert_eq!(Bolt.call_info(&frames[0]).method, "plus");
    }

    #[test]
    fn frames_split_anywhere_are_read_when_whole_and_pipelined_ones_one_by_one() {
        let mut stream =
            encode_request(1, false, 0, SOFA_REQUEST, &[("service", "a:1.0")], b"x").to_vec();
        stream.extend_from_slice(&encode_heartbeat(2));
        stream.extend_from_slice(&encode_request(3, true, 0, b"", &[], b""));
        stream.extend_from_slice(&encode_response(4, status::TIMEOUT, b"late"));
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut n = 0;
            while Bolt.decode(&mut buf).unwrap().is_some() {
                n += 1;
            }
            buf.extend_from_slice(&stream[cut..]);
            while Bolt.decode(&mut buf).unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, 4, "cut at {cut}");
        }
        let kinds: Vec<_> = decode_all(&stream)
            .iter()
            .map(|f| (f.kind, f.request_id))
            .collect();
        assert_eq!(
            kinds,
            [
                (FrameKind::Request, 1),
                (FrameKind::Heartbeat, 2),
                (FrameKind::OneWay, 3),
                (FrameKind::Response, 4)
            ]
        );
    }

    #[test]
    fn ids_are_rewritten_in_place_and_replies_carry_the_requests_id() {
        let mut f = decode_all(&encode_request(9, false, 0, b"", &[], b""))
            .pop()
            .unwrap();
        Bolt.set_request_id(&mut f, 0xdead_beef);
        assert_eq!(decode_all(&f.bytes)[0].request_id, 0xdead_beef);
        let reply = Bolt.error_reply(&f, ProxyError::Timeout, "no answer in 1s");
        let reply = decode_all(&reply).pop().unwrap();
        assert_eq!(
            (reply.kind, reply.request_id),
            (FrameKind::Response, 0xdead_beef)
        );
        assert_eq!(Bolt.response_class(&reply), ResponseClass::Timeout);
        let hb = decode_all(&encode_heartbeat(5)).pop().unwrap();
        let ack = decode_all(&Bolt.heartbeat_ack(&hb).unwrap()).pop().unwrap();
        assert_eq!((ack.kind, ack.request_id), (FrameKind::HeartbeatAck, 5));
    }

    #[test]
    fn other_protocols_and_oversized_messages_are_errors() {
        assert!(Bolt
            .decode(&mut BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]))
            .is_err());
        let mut huge = encode_request(1, false, 0, b"", &[], b"").to_vec();
        huge[18..22].copy_from_slice(&(MAX_MESSAGE_BYTES as u32 + 1).to_be_bytes());
        assert!(Bolt.decode(&mut BytesMut::from(&huge[..])).is_err());
        assert_eq!(Bolt.sniff(b"GET /"), Sniffed::No);
        assert_eq!(Bolt.sniff(&[1]), Sniffed::NeedMore);
        assert_eq!(Bolt.sniff(&encode_heartbeat(1)), Sniffed::Yes);
    }

    const DICTIONARY: &[&[u8]] = &[
        &[1, 1, 0, 1],
        &[1, 0, 0, 2],
        &[0xff, 0xff, 0xff, 0xff],
        b"service",
        b"C",
        b"\x60",
    ];

    #[test]
    fn fuzz_bolt_decoder() {
        let samples = vec![
            encode_request(
                1,
                false,
                0,
                SOFA_REQUEST,
                &[("service", "com.example.Echo:1.0")],
                &hessian_request("echo"),
            )
            .to_vec(),
            encode_response(2, 0, b"ok").to_vec(),
            encode_heartbeat(3).to_vec(),
        ];
        sinew_fuzz::run(
            "bolt",
            1,
            prop_oneof![
                sinew_fuzz::mutated(samples, DICTIONARY),
                sinew_fuzz::token_soup(DICTIONARY, 24)
            ],
            |bytes| {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(frame)) = Bolt.decode(&mut buf) {
                    match frame.kind {
                        FrameKind::Request | FrameKind::OneWay => {
                            let _ = Bolt.call_info(&frame);
                        }
                        FrameKind::Response => {
                            let _ = Bolt.response_class(&frame);
                        }
                        _ => {}
                    }
                    let _ = Bolt.error_reply(&frame, ProxyError::Unavailable, "x");
                }
                Ok(())
            },
        );
    }
}
