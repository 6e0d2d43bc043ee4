//! Heads real clients and servers send: a table of captured heads (curl, browsers, Go's
//! net/http, python requests...), heads captured live from curl and python3 on this
//! machine over 127.0.0.1, responses from a live python3 http.server, and a
//! differential test: every valid head reads the same as with httparse (hyper's parser).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use sinew_codec::http1::{
    encode_request_head, parse_request, parse_response, BodyFraming, ChunkedDecoder, Frame,
    HeadLimits, OutgoingBody, RequestHead, RequestParser, ResponseParser, TargetForm,
};
use sinew_fuzz::proptest::collection::vec;
use sinew_fuzz::proptest::prelude::*;
use support::{request_in_pieces, response_in_pieces, REAL_REQUESTS, REAL_RESPONSES};

/// httparse's reading of a head: method, path, minor version, fields in order.
type Reading = (String, String, u8, Vec<(String, Vec<u8>)>);

fn httparse_reading(bytes: &[u8]) -> Reading {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => assert_eq!(len, bytes.len()),
        other => panic!(
            "httparse: {other:?} for {:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
    (
        req.method.unwrap().to_owned(),
        req.path.unwrap().to_owned(),
        req.version.unwrap(),
        req.headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect(),
    )
}

/// The codec's reading in the same shape (fields in their received order per name).
fn codec_reading(head: &RequestHead) -> Reading {
    let target = match head.target_form {
        TargetForm::Authority => head.target.authority().unwrap().to_string(),
        _ => head.target.to_string(),
    };
    let minor = u8::from(head.version == Version::HTTP_11);
    (
        head.method.to_string(),
        target,
        minor,
        head.headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
    )
}

fn sorted(mut reading: Reading) -> Reading {
    reading.3.sort_by(|a, b| a.0.cmp(&b.0));
    reading
}

#[test]
fn real_world_request_heads_parse_whole_and_byte_by_byte_as_httparse_reads_them() {
    for (name, bytes) in REAL_REQUESTS {
        let (head, used) = match parse_request(bytes, &HeadLimits::default()) {
            Ok(Some(parsed)) => parsed,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(used, bytes.len(), "{name}");
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        let pieces = request_in_pieces(bytes, &cuts, HeadLimits::default());
        assert_eq!(
            pieces,
            Ok(Some((head.clone(), used))),
            "{name}: byte by byte"
        );
        let theirs = httparse_reading(bytes);
        let mut ours = codec_reading(&head);
        if head.target_form == TargetForm::Absolute {
            // The codec reports the absolute target as a URI (same text).
            ours.1 = theirs.1.clone();
        }
        assert_eq!(sorted(ours), sorted(theirs), "{name}");
    }
}

#[test]
fn real_world_heads_have_the_framing_and_facts_they_say() {
    let find = |name: &str| {
        let bytes = REAL_REQUESTS.iter().find(|(n, _)| *n == name).unwrap().1;
        parse_request(bytes, &HeadLimits::default())
            .unwrap()
            .unwrap()
            .0
    };
    let upload = find("curl -T - (chunked upload)");
    assert_eq!(upload.framing, BodyFraming::Chunked);
    assert!(upload.expect_continue);
    assert_eq!(find("curl POST -d").framing, BodyFraming::Length(7));
    assert_eq!(
        find("curl -x (absolute form)").target_form,
        TargetForm::Absolute
    );
    assert_eq!(
        find("curl -p -x (CONNECT)").target_form,
        TargetForm::Authority
    );
    assert!(find("browser WebSocket upgrade").upgrade);
    assert!(!find("ApacheBench HTTP/1.0").keep_alive);
    assert!(!find("Kubernetes probe").keep_alive);
    assert_eq!(
        find("OPTIONS * from a load balancer").target_form,
        TargetForm::Asterisk
    );
    assert_eq!(
        find("Go net/http chunked POST").framing,
        BodyFraming::Chunked
    );
}

#[test]
fn real_world_response_heads_parse_whole_and_byte_by_byte() {
    for (name, bytes) in REAL_RESPONSES {
        let method = Method::GET;
        let (head, used) = match parse_response(bytes, &method, &HeadLimits::default()) {
            Ok(Some(parsed)) => parsed,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(used, bytes.len());
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(
            response_in_pieces(bytes, &cuts, &method, HeadLimits::default()),
            Ok(Some((head.clone(), used))),
            "{name}"
        );
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut slots);
        assert!(res.parse(bytes).unwrap().is_complete(), "{name}");
        assert_eq!(res.code, Some(head.status.as_u16()), "{name}");
        assert_eq!(res.headers.len(), head.headers.len(), "{name}");
    }
}

// A differential test over generated valid heads.

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}"
}

fn field_value() -> impl Strategy<Value = String> {
    // Visible ASCII and inner spaces/tabs; no leading or trailing whitespace.
    "([!-~]([ \t!-~]{0,30}[!-~])?)?"
}

fn path() -> impl Strategy<Value = String> {
    "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}){1,4}(\\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,20})?"
}

fn valid_head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just("GET".to_owned()),
            Just("POST".to_owned()),
            Just("DELETE".to_owned()),
            "[A-Z]{3,10}",
        ],
        path(),
        prop_oneof![Just("1.1"), Just("1.0")],
        vec((token(), field_value()), 0..20),
    )
        .prop_map(|(method, path, version, fields)| {
            let mut head = format!("{method} {path} HTTP/{version}\r\nHost: example.com\r\n");
            for (name, value) in fields {
                let lower = name.to_ascii_lowercase();
                // Framing and Host have their own rules; here only plain fields.
                if ["host", "content-length", "transfer-encoding"].contains(&lower.as_str()) {
                    continue;
                }
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            head.into_bytes()
        })
}

#[test]
fn differential_valid_heads_read_as_httparse_reads_them() {
    sinew_fuzz::run("differential_valid_heads", 1, valid_head(), |bytes| {
        let parsed = parse_request(&bytes, &HeadLimits::default());
        let Ok(Some((head, used))) = parsed else {
            return Err(TestCaseError::fail(format!("codec: {parsed:?}")));
        };
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(
            sorted(codec_reading(&head)),
            sorted(httparse_reading(&bytes))
        );
        Ok(())
    });
}

// Live peers on this machine.

/// What the capture server saw of one request.
#[derive(Debug)]
struct Captured {
    head: RequestHead,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// Accepts `count` connections on 127.0.0.1 and reads one request from each with the
/// codec (answering 100 Continue when asked, then 200 and a close); sends back what it
/// read. Returns the port.
fn capture_server(count: usize) -> (u16, mpsc::Receiver<Result<Captured, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..count {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let _ = tx.send(serve_one(stream));
        }
    });
    (port, rx)
}

fn serve_one(mut stream: TcpStream) -> Result<Captured, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut parser = RequestParser::new(HeadLimits::default());
    let mut buf = BytesMut::with_capacity(4096);
    let mut chunk = [0u8; 1024];
    let mut read_more = |buf: &mut BytesMut, stream: &mut TcpStream| -> Result<(), String> {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    };
    let head = loop {
        if let Some(head) = parser.parse(&mut buf).map_err(|e| e.to_string())? {
            break head;
        }
        read_more(&mut buf, &mut stream)?;
    };
    if head.expect_continue {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap();
    }
    let mut body = Vec::new();
    let mut trailers = None;
    match head.framing {
        BodyFraming::Length(n) => {
            while (buf.len() as u64) < n {
                read_more(&mut buf, &mut stream)?;
            }
            body.extend_from_slice(&buf.split_to(n as usize));
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            'body: loop {
                while let Some(frame) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                    match frame {
                        Frame::Data(data) => body.extend_from_slice(&data),
                        Frame::End(t) => {
                            trailers = t;
                            break 'body;
                        }
                    }
                }
                read_more(&mut buf, &mut stream)?;
            }
        }
        _ => {}
    }
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    Ok(Captured {
        head,
        body,
        trailers,
    })
}

fn curl(args: &[&str], stdin: Option<&[u8]>) {
    let mut child = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl is needed for this test: apt-get install -y curl");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    // curl's own exit status does not matter (a CONNECT tunnel to nowhere fails).
    let _ = child.wait();
}

fn captured(rx: &mpsc::Receiver<Result<Captured, String>>, what: &str) -> Captured {
    rx.recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| panic!("{what}: nothing captured"))
        .unwrap_or_else(|e| panic!("{what}: the codec refused it: {e}"))
}

#[test]
fn heads_sent_by_curl_parse() {
    let (port, rx) = capture_server(6);
    let base = format!("http://127.0.0.1:{port}");

    curl(
        &[&format!("{base}/path/x?y=1&z=%20"), "-H", "X-Custom: a, b"],
        None,
    );
    let got = captured(&rx, "GET");
    assert_eq!(got.head.method, Method::GET);
    assert_eq!(got.head.target.path(), "/path/x");
    assert_eq!(got.head.target.query(), Some("y=1&z=%20"));
    assert_eq!(
        got.head.headers["host"],
        format!("127.0.0.1:{port}").as_str()
    );
    assert_eq!(got.head.headers["x-custom"], "a, b");
    assert!(got.head.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("curl/"));

    curl(&["-d", "a=1&b=2", &format!("{base}/form")], None);
    let got = captured(&rx, "POST -d");
    assert_eq!(got.head.framing, BodyFraming::Length(7));
    assert_eq!(got.body, b"a=1&b=2");

    let upload = vec![b'u'; 3000];
    curl(&["-T", "-", &format!("{base}/upload")], Some(&upload));
    let got = captured(&rx, "PUT -T - (chunked, Expect)");
    assert_eq!(got.head.method, Method::PUT);
    assert_eq!(got.head.framing, BodyFraming::Chunked);
    assert!(got.head.expect_continue);
    assert_eq!(got.body, upload);
    assert_eq!(got.trailers, None);

    curl(&["-x", &base, "http://example.test/through-proxy"], None);
    let got = captured(&rx, "absolute form through -x");
    assert_eq!(got.head.target_form, TargetForm::Absolute);
    assert_eq!(got.head.headers["host"], "example.test");

    curl(&["-p", "-x", &base, "http://example.test:8443/"], None);
    let got = captured(&rx, "CONNECT through -p -x");
    assert_eq!(got.head.method, Method::CONNECT);
    assert_eq!(got.head.target_form, TargetForm::Authority);
    assert_eq!(
        got.head.target.authority().unwrap().as_str(),
        "example.test:8443"
    );

    curl(&["--http1.0", "-I", &format!("{base}/head")], None);
    let got = captured(&rx, "HTTP/1.0 HEAD");
    assert_eq!(got.head.method, Method::HEAD);
    assert_eq!(got.head.version, Version::HTTP_10);
    assert!(!got.head.keep_alive);
}

fn python(script: &str) -> std::process::Output {
    Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 is needed for this test: apt-get install -y python3")
}

#[test]
fn heads_sent_by_python_parse() {
    let (port, rx) = capture_server(3);
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
c.request("POST", "/json?q=1", body=b'{{"a": 1}}', headers={{"Content-Type": "application/json"}})
c.getresponse().read()
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
def chunks():
    yield b"first,"
    yield b"second"
c.request("PUT", "/stream", body=chunks(), encode_chunked=True, headers={{"Transfer-Encoding": "chunked"}})
c.getresponse().read()
try:
    import requests
    requests.get("http://127.0.0.1:{port}/via-requests", params={{"x": "a b"}}, timeout=10)
except ImportError:
    c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=10)
    c.request("GET", "/via-requests?x=a+b")
    c.getresponse().read()
"#
    );
    let out = python(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = captured(&rx, "http.client POST");
    assert_eq!(got.head.framing, BodyFraming::Length(8));
    assert_eq!(got.body, br#"{"a": 1}"#);
    assert_eq!(got.head.headers["accept-encoding"], "identity");

    let got = captured(&rx, "http.client chunked PUT");
    assert_eq!(got.head.framing, BodyFraming::Chunked);
    assert_eq!(got.body, b"first,second");

    let got = captured(&rx, "requests GET");
    assert_eq!(got.head.target.path(), "/via-requests");
    assert_eq!(got.head.target.query(), Some("x=a+b"));
}

/// A python3 http.server with handlers for each framing; returns it and its port.
fn python_server() -> (std::process::Child, u16) {
    let script = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        if self.path == "/length":
            self.protocol_version = "HTTP/1.1"
            self.send_response(200); self.send_header("Content-Length", "5"); self.end_headers()
            if self.command != "HEAD": self.wfile.write(b"hello")
        elif self.path == "/chunked":
            self.protocol_version = "HTTP/1.1"
            self.send_response(200); self.send_header("Transfer-Encoding", "chunked"); self.send_header("Trailer", "X-Sum"); self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n")
        elif self.path == "/close":
            self.send_response(200); self.send_header("Content-Type", "text/plain"); self.end_headers()
            self.wfile.write(b"until the close")
        elif self.path == "/not-modified":
            self.protocol_version = "HTTP/1.1"
            self.send_response(304); self.send_header("ETag", '"x"'); self.end_headers()
        else:
            self.protocol_version = "HTTP/1.1"
            self.send_error(404)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test: apt-get install -y python3");
    let mut line = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let port = line.trim().parse().expect("the server's port");
    (child, port)
}

/// Sends one request encoded by the codec and reads the response with it: head, body
/// by its framing, trailers.
fn exchange(
    port: u16,
    method: Method,
    path: &str,
) -> (
    sinew_codec::http1::ResponseHead,
    Vec<u8>,
    Option<http::HeaderMap>,
) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("host", format!("127.0.0.1:{port}").parse().unwrap());
    let mut out = BytesMut::new();
    encode_request_head(
        &method,
        &path.parse().unwrap(),
        &headers,
        OutgoingBody::Empty,
        &mut out,
    );
    stream.write_all(&out).unwrap();
    let mut parser = ResponseParser::new(HeadLimits::default());
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 1024];
    let mut fill = |buf: &mut BytesMut| -> bool {
        let n = stream.read(&mut chunk).unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        n > 0
    };
    let head = loop {
        if let Some(head) = parser.parse(&mut buf, &method).unwrap() {
            break head;
        }
        assert!(fill(&mut buf), "closed before the head");
    };
    let mut body = Vec::new();
    let mut trailers = None;
    match head.framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            while (buf.len() as u64) < n {
                assert!(fill(&mut buf));
            }
            body = buf.split_to(n as usize).to_vec();
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            'body: loop {
                while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                    match frame {
                        Frame::Data(d) => body.extend_from_slice(&d),
                        Frame::End(t) => {
                            trailers = t;
                            break 'body;
                        }
                    }
                }
                assert!(fill(&mut buf));
            }
        }
        BodyFraming::CloseDelimited => {
            while fill(&mut buf) {}
            body = buf.to_vec();
        }
    }
    (head, body, trailers)
}

#[test]
fn responses_from_python_http_server_parse_with_their_framing() {
    let (mut server, port) = python_server();
    let (head, body, _) = exchange(port, Method::GET, "/length");
    assert_eq!(
        (head.status, head.framing),
        (StatusCode::OK, BodyFraming::Length(5))
    );
    assert!(head.keep_alive);
    assert_eq!(body, b"hello");

    let (head, body, _) = exchange(port, Method::HEAD, "/length");
    assert_eq!(head.framing, BodyFraming::None);
    assert_eq!(head.headers["content-length"], "5");
    assert!(body.is_empty());

    let (head, body, trailers) = exchange(port, Method::GET, "/chunked");
    assert_eq!(head.framing, BodyFraming::Chunked);
    assert_eq!(body, b"abcdefg");
    assert_eq!(trailers.unwrap()["x-sum"], "7");

    let (head, body, _) = exchange(port, Method::GET, "/close");
    assert_eq!(head.version, Version::HTTP_10);
    assert_eq!(head.framing, BodyFraming::CloseDelimited);
    assert!(!head.keep_alive);
    assert_eq!(body, b"until the close");

    let (head, body, _) = exchange(port, Method::GET, "/not-modified");
    assert_eq!(
        (head.status, head.framing),
        (StatusCode::NOT_MODIFIED, BodyFraming::None)
    );
    assert!(body.is_empty());

    let (head, body, _) = exchange(port, Method::GET, "/missing");
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert_eq!(head.reason, "Not Found");
    assert_eq!(
        body.len() as u64,
        match head.framing {
            BodyFraming::Length(n) => n,
            other => panic!("{other:?}"),
        }
    );
    let _ = server.kill();
    let _ = server.wait();
}
