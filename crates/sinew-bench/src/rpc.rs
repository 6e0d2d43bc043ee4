//! The calls of the RPC benchmark (`rpc-upstream`, `rpc-load`): what a Bolt or Dubbo echo
//! request looks like, how the echo server answers it, and what the load counts as a good
//! answer. The bytes come from Sinew's own codecs (`sinew_codec::bolt`, `::dubbo`), so the
//! load, the server and the proxy agree on framing; the proxy's routing fields (service,
//! method, version) are set as a real client sets them, so Sinew does its whole per-call
//! work on them.

use bytes::{Buf, BytesMut};
use sinew_codec::hessian2::Reader;
use sinew_codec::rpc::{Frame, FrameKind, ResponseClass, RpcCodec};
use sinew_codec::{bolt, dubbo};

/// The interface every echo call names (a Sinew route's `domains` match it).
pub const SERVICE: &str = "com.example.EchoService";
pub const METHOD: &str = "echo";
pub const VERSION: &str = "1.0";
/// SOFARPC's request class, as its clients put it in a Bolt request.
const BOLT_CLASS: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";
/// Where the request id sits: Bolt's 4 bytes at 5, Dubbo's 8 at 4.
const BOLT_ID_AT: usize = 5;
const DUBBO_ID_AT: usize = 4;
/// The largest payload: one Hessian string chunk (Dubbo's argument).
pub const MAX_SIZE: usize = 65_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Bolt,
    Dubbo,
}

impl Protocol {
    pub fn codec(self) -> &'static dyn RpcCodec {
        match self {
            Protocol::Bolt => &bolt::Bolt,
            Protocol::Dubbo => &dubbo::Dubbo,
        }
    }

    /// A two-way call of `service`'s `echo` carrying `size` bytes of payload, with id 0
    /// (the load writes each request's id with [`Protocol::put_request`]). Bolt: the
    /// payload is the content, the service and method are in the header map as SOFARPC
    /// puts them. Dubbo: the payload is the one string argument (ASCII, so `size`
    /// characters are `size` bytes).
    pub fn request(self, size: usize) -> Vec<u8> {
        let payload = "x".repeat(size);
        let unique = format!("{SERVICE}:{VERSION}");
        match self {
            Protocol::Bolt => bolt::encode_request(
                0,
                false,
                3000,
                BOLT_CLASS,
                &[
                    ("service", unique.as_str()),
                    ("sofa_head_method_name", METHOD),
                ],
                payload.as_bytes(),
            ),
            Protocol::Dubbo => {
                dubbo::encode_request(0, true, SERVICE, VERSION, METHOD, &[&payload], &[])
            }
        }
        .to_vec()
    }

    /// Appends `template` (from [`Protocol::request`]) to `out` with request id `id`.
    /// Bolt ids are 32 bits: `id` is cut to its low 32.
    pub fn put_request(self, out: &mut BytesMut, template: &[u8], id: u64) {
        let start = out.len();
        out.extend_from_slice(template);
        let at = start
            + match self {
                Protocol::Bolt => BOLT_ID_AT,
                Protocol::Dubbo => DUBBO_ID_AT,
            };
        match self {
            Protocol::Bolt => out[at..at + 4].copy_from_slice(&(id as u32).to_be_bytes()),
            Protocol::Dubbo => out[at..at + 8].copy_from_slice(&id.to_be_bytes()),
        }
    }

    /// The id a response to request `id` carries.
    pub fn wire_id(self, id: u64) -> u64 {
        match self {
            Protocol::Bolt => id & u64::from(u32::MAX),
            Protocol::Dubbo => id,
        }
    }

    /// The echo server's answer to one frame, appended to `out`: a call gets an OK
    /// response carrying its payload (Bolt: the content; Dubbo: the string argument), a
    /// heartbeat its ack; a one-way call nothing. Anything else is an error (a server
    /// is sent no responses).
    pub fn echo(self, frame: &Frame, out: &mut BytesMut) -> Result<(), String> {
        match frame.kind {
            FrameKind::Request => {
                let response = match self {
                    Protocol::Bolt => bolt::encode_response(
                        frame.request_id as u32,
                        bolt::status::SUCCESS,
                        bolt_content(&frame.bytes)?,
                    ),
                    Protocol::Dubbo => {
                        dubbo::encode_response(frame.request_id, &dubbo_argument(&frame.bytes)?)
                    }
                };
                out.extend_from_slice(&response);
            }
            FrameKind::Heartbeat => {
                if let Some(ack) = self.codec().heartbeat_ack(frame) {
                    out.extend_from_slice(&ack);
                }
            }
            FrameKind::OneWay => {}
            kind => return Err(format!("the echo server was sent a {kind:?}")),
        }
        Ok(())
    }

    /// Whether `frame` is a good answer to a request of `size` payload bytes: an OK
    /// response at least as long as the payload it should carry.
    pub fn check_response(self, frame: &Frame, size: usize) -> Result<(), String> {
        if frame.kind != FrameKind::Response {
            return Err(format!("expected a response, got a {:?}", frame.kind));
        }
        let class = self.codec().response_class(frame);
        if class != ResponseClass::Success {
            return Err(format!("response {} is {class:?}", frame.request_id));
        }
        if frame.bytes.len() < size {
            return Err(format!(
                "response {} is {} bytes, shorter than the {size}-byte payload",
                frame.request_id,
                frame.bytes.len()
            ));
        }
        Ok(())
    }
}

/// A Bolt request's content: after its 22-byte head, its class name and header map,
/// whose lengths the head gives at 14 and 16.
fn bolt_content(request: &[u8]) -> Result<&[u8], String> {
    let mut head = request
        .get(14..18)
        .ok_or("a Bolt request shorter than its head")?;
    let class = head.get_u16() as usize;
    let header = head.get_u16() as usize;
    request
        .get(22 + class + header..)
        .ok_or_else(|| "a Bolt request shorter than its lengths".into())
}

/// A Dubbo request's first argument as a string: the sixth Hessian value of its body,
/// after the Dubbo version, service, version, method and parameter types.
fn dubbo_argument(request: &[u8]) -> Result<String, String> {
    let mut r = Reader::new(request.get(16..).unwrap_or_default());
    for _ in 0..5 {
        r.string()
            .ok_or("a Dubbo request without its five leading strings")?;
    }
    r.string()
        .ok_or_else(|| "a Dubbo request whose first argument is not a string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(protocol: Protocol, bytes: &[u8]) -> Frame {
        let mut buf = BytesMut::from(bytes);
        let frame = protocol
            .codec()
            .decode(&mut buf)
            .unwrap()
            .expect("a whole frame");
        assert!(buf.is_empty(), "one frame, nothing after it");
        frame
    }

    #[test]
    fn requests_carry_the_id_written_and_route_as_the_echo_service() {
        for protocol in [Protocol::Bolt, Protocol::Dubbo] {
            let template = protocol.request(1024);
            let mut out = BytesMut::new();
            protocol.put_request(&mut out, &template, 7);
            protocol.put_request(&mut out, &template, 8);
            let first = protocol.codec().decode(&mut out).unwrap().unwrap();
            let second = protocol.codec().decode(&mut out).unwrap().unwrap();
            assert_eq!(
                (first.request_id, second.request_id),
                (7, 8),
                "{protocol:?}"
            );
            assert_eq!(first.kind, FrameKind::Request);
            let info = protocol.codec().call_info(&first);
            assert_eq!(
                (info.service.as_str(), info.method.as_str()),
                (SERVICE, METHOD),
                "{protocol:?}"
            );
            assert!(first.bytes.len() > 1024 && first.bytes.len() < 1024 + 200);
        }
    }

    #[test]
    fn the_echo_answers_a_call_with_its_payload_and_the_same_id() {
        for protocol in [Protocol::Bolt, Protocol::Dubbo] {
            let mut request = BytesMut::new();
            protocol.put_request(&mut request, &protocol.request(1024), 42);
            let mut out = BytesMut::new();
            protocol
                .echo(&decode(protocol, &request), &mut out)
                .unwrap();
            let response = decode(protocol, &out);
            assert_eq!(response.request_id, 42);
            protocol.check_response(&response, 1024).unwrap();
            // The payload is in the response: 1 KB in, about 1 KB out.
            assert!(response.bytes.len() < 1024 + 32, "{}", response.bytes.len());
            let payload = "x".repeat(1024);
            assert!(response.bytes.ends_with(payload.as_bytes()), "{protocol:?}");
        }
    }

    #[test]
    fn the_echo_acks_heartbeats_and_refuses_responses() {
        let bolt = decode(Protocol::Bolt, &bolt::encode_heartbeat(3));
        let dubbo = decode(Protocol::Dubbo, &dubbo::encode_heartbeat(3));
        for (protocol, heartbeat) in [(Protocol::Bolt, bolt), (Protocol::Dubbo, dubbo)] {
            let mut out = BytesMut::new();
            protocol.echo(&heartbeat, &mut out).unwrap();
            let ack = decode(protocol, &out);
            assert_eq!(
                (ack.kind, ack.request_id),
                (FrameKind::HeartbeatAck, 3),
                "{protocol:?}"
            );
            assert!(protocol.echo(&ack, &mut out).is_err());
        }
    }

    #[test]
    fn an_error_status_or_a_short_response_is_not_a_good_answer() {
        let error = decode(
            Protocol::Bolt,
            &bolt::encode_response(1, bolt::status::SERVER_EXCEPTION, b"boom"),
        );
        assert!(Protocol::Bolt.check_response(&error, 0).is_err());
        let short = decode(Protocol::Dubbo, &dubbo::encode_response(1, "short"));
        assert!(Protocol::Dubbo.check_response(&short, 0).is_ok());
        assert!(Protocol::Dubbo.check_response(&short, 1024).is_err());
    }
}
