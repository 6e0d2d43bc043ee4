//! Rejects bare LF line endings in HTTP/1 request heads.
//!
//! RFC 9112 §2.2 lets a recipient accept a lone LF as a line ending, and hyper's parser
//! does; but disagreements about line endings between hops are a request-smuggling
//! vector, so Sinew refuses them. hyper gives no hook for it, so this reader watches the
//! bytes on their way to hyper: it follows the message framing (head, then a
//! Content-Length or chunked body, then the next head) and records which request's head
//! held a bare LF. The handler answers that request 400 and closes the connection.
//!
//! Since it sees where each head begins and ends, it also times heads: the header-read
//! timeout runs from a head's first byte to its last, as Envoy's does, rather than
//! from the moment a keep-alive connection starts waiting (hyper's own timer), which
//! would cut idle connections long before their idle timeout.
//!
//! It only watches: bytes pass through unchanged. It stands down for HTTP/2 (the preface)
//! and once a connection has really switched protocols (a 101 sent, see
//! [`HeadCheck::connection_switched`]); a request that merely asks to upgrade is followed
//! like any other, and so are the requests after it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::moment::SharedMoment;

/// Shared between the reader and the request handler of one connection.
#[derive(Debug)]
pub struct HeadCheck {
    /// Index (0-based, in arrival order) of the first request whose head was bad.
    bad_head: AtomicU64,
    /// Why it was bad: one of the `REASON_*` values.
    reason: AtomicU8,
    /// Requests the handler has seen.
    handled: AtomicU64,
    /// When the head being read began; unset between heads.
    head_began: SharedMoment,
    /// The connection switched protocols: what follows is not HTTP/1.
    switched: AtomicBool,
}

impl HeadCheck {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            bad_head: AtomicU64::new(u64::MAX),
            reason: AtomicU8::new(0),
            handled: AtomicU64::new(0),
            head_began: SharedMoment::unset(),
            switched: AtomicBool::new(false),
        })
    }

    /// The connection has switched protocols (a 101 went out): the bytes from here on are
    /// the new protocol's, so the scanner stands down and no head is being timed.
    pub fn connection_switched(&self) {
        self.switched.store(true, Ordering::Release);
        self.head_began.clear();
    }

    /// How long the request head now being read has been in progress, if one is.
    pub fn head_in_progress_for(&self) -> Option<Duration> {
        self.head_began.elapsed()
    }

    fn head_started(&self) {
        self.head_began.mark();
    }

    fn head_ended(&self) {
        self.head_began.clear();
    }

    /// Called once per request, in order: why this request's head is malformed, if it is.
    pub fn next_request_problem(&self) -> Option<&'static str> {
        let index = self.handled.fetch_add(1, Ordering::Relaxed);
        if self.bad_head.load(Ordering::Acquire) != index {
            return None;
        }
        Some(match self.reason.load(Ordering::Relaxed) {
            REASON_AMBIGUOUS_LENGTH => "ambiguous request framing (Content-Length)",
            REASON_FRAMING_TOO_LONG => "framing header too long",
            _ => "bare LF in request head",
        })
    }

    fn flag(&self, head: u64, reason: u8) {
        self.reason.store(reason, Ordering::Relaxed);
        self.bad_head.store(head, Ordering::Release);
    }
}

const REASON_BARE_LF: u8 = 1;
const REASON_AMBIGUOUS_LENGTH: u8 = 2;
const REASON_FRAMING_TOO_LONG: u8 = 3;

/// Longest header line prefix kept for inspection; framing headers are short.
const LINE_KEEP: usize = 96;

#[derive(Debug)]
enum State {
    /// Nothing read yet but the first `matched` bytes of `PRI`: HTTP/2's preface makes
    /// the scanner stand down.
    Start {
        matched: usize,
    },
    Head,
    Body(u64),
    ChunkSize {
        size: u64,
        in_extension: bool,
    },
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Off,
}

/// Follows HTTP/1 request framing over a byte stream.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    heads: u64,
    prev: u8,
    line: [u8; LINE_KEEP],
    line_len: usize,
    line_overflow: bool,
    first_line: bool,
    content_length: Option<u64>,
    chunked: bool,
    /// A head has begun and not yet ended.
    head_open: bool,
    check: Arc<HeadCheck>,
}

impl Scanner {
    pub fn new(check: Arc<HeadCheck>) -> Self {
        Self {
            state: State::Start { matched: 0 },
            heads: 0,
            prev: 0,
            line: [0; LINE_KEEP],
            line_len: 0,
            line_overflow: false,
            first_line: true,
            content_length: None,
            chunked: false,
            head_open: false,
            check,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.check.switched.load(Ordering::Acquire) {
            self.state = State::Off;
            return;
        }
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Start { matched } => {
                    // Byte by byte: TCP may cut the preface, or `POST` or `PUT`, anywhere,
                    // and a `P` alone must not switch the guard off.
                    const PREFACE: &[u8] = b"PRI";
                    let m = *matched;
                    if bytes[0] == PREFACE[m] {
                        bytes = &bytes[1..];
                        if m + 1 == PREFACE.len() {
                            self.check.head_ended();
                            self.state = State::Off;
                            return;
                        }
                        if m == 0 {
                            self.head_open = true;
                            self.check.head_started();
                        }
                        self.state = State::Start { matched: m + 1 };
                    } else {
                        self.state = State::Head;
                        // The bytes held back begin the request line (none is a line feed).
                        if m > 0 {
                            self.keep(&PREFACE[..m]);
                            self.prev = PREFACE[m - 1];
                        }
                    }
                }
                State::Body(remaining) => {
                    let n = (*remaining).min(bytes.len() as u64);
                    *remaining -= n;
                    bytes = &bytes[n as usize..];
                    if *remaining == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(remaining) => {
                    let n = (*remaining).min(bytes.len() as u64);
                    *remaining -= n;
                    bytes = &bytes[n as usize..];
                    if *remaining == 0 {
                        self.state = State::ChunkEnd;
                    }
                }
                State::ChunkEnd => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        self.state = State::ChunkSize {
                            size: 0,
                            in_extension: false,
                        };
                    }
                }
                State::ChunkSize { size, in_extension } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'\n' => {
                            self.state = if *size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(*size)
                            };
                            self.prev = b'\n';
                        }
                        b'\r' => {}
                        _ if *in_extension => {}
                        b';' | b' ' | b'\t' => *in_extension = true,
                        _ => match (b as char).to_digit(16) {
                            Some(d) if *size < (1 << 56) => *size = *size * 16 + d as u64,
                            // Malformed or huge: hyper rejects it; stop following.
                            _ => self.state = State::Off,
                        },
                    }
                }
                State::Trailers => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        // An empty line (LF right after the previous LF, CR aside) ends them.
                        if self.line_len == 0 {
                            self.state = State::Head;
                            self.first_line = true;
                        }
                        self.line_len = 0;
                    } else if b != b'\r' {
                        self.line_len = 1;
                    }
                }
                State::Head => {
                    if !self.head_open {
                        self.head_open = true;
                        self.check.head_started();
                    }
                    // Jump from line feed to line feed; only line starts are inspected.
                    let Some(lf) = memchr::memchr(b'\n', bytes) else {
                        self.keep(bytes);
                        self.prev = bytes[bytes.len() - 1];
                        return;
                    };
                    let before = if lf > 0 { bytes[lf - 1] } else { self.prev };
                    if before != b'\r' {
                        self.check.flag(self.heads, REASON_BARE_LF);
                        self.state = State::Off;
                        return;
                    }
                    self.keep(&bytes[..lf]);
                    self.prev = b'\n';
                    bytes = &bytes[lf + 1..];
                    self.end_of_line();
                }
            }
        }
    }

    /// Keeps the start of the current line, enough to recognise framing headers.
    fn keep(&mut self, segment: &[u8]) {
        let room = LINE_KEEP - self.line_len;
        let take = segment.len().min(room);
        self.line[self.line_len..self.line_len + take].copy_from_slice(&segment[..take]);
        self.line_len += take;
        if segment.len() > room {
            self.line_overflow = true;
        }
    }

    fn end_of_line(&mut self) {
        let mut line = &self.line[..self.line_len];
        if let Some((b'\r', rest)) = line.split_last() {
            line = rest;
        }
        if self.first_line {
            // Leading empty lines before a request are allowed (RFC 9112 §2.2).
            if !line.is_empty() {
                self.first_line = false;
            }
        } else if line.is_empty() {
            self.end_of_head();
        } else {
            let lower = |prefix: &[u8]| {
                line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
            };
            let value = |prefix_len: usize| {
                std::str::from_utf8(&line[prefix_len..])
                    .unwrap_or("")
                    .trim()
            };
            // A second Content-Length, or one beside Transfer-Encoding, makes the framing
            // ambiguous (RFC 9112 §6.3). hyper quietly merges equal lengths and drops the
            // length beside chunked, so only the raw head still shows them.
            let mut ambiguous = false;
            let mut framing = false;
            // A framing header too long to read whole is refused, not skipped: standing
            // down would leave its body, and the heads after it, unwatched.
            let too_long = self.line_overflow;
            // Most lines are none of the three: their first byte says so without a compare.
            match line.first().map(u8::to_ascii_lowercase) {
                Some(b'c') if lower(b"content-length:") => {
                    framing = true;
                    ambiguous = self.content_length.is_some() || self.chunked;
                    self.content_length = value(15).parse().ok();
                }
                Some(b't') if lower(b"transfer-encoding:") => {
                    framing = true;
                    ambiguous = self.content_length.is_some();
                    self.chunked = value(18).to_ascii_lowercase().contains("chunked");
                }
                _ => {}
            }
            if framing && too_long {
                self.check.flag(self.heads, REASON_FRAMING_TOO_LONG);
                self.state = State::Off;
            } else if ambiguous {
                self.check.flag(self.heads, REASON_AMBIGUOUS_LENGTH);
                self.state = State::Off;
            }
        }
        self.line_len = 0;
        self.line_overflow = false;
    }

    fn end_of_head(&mut self) {
        self.head_open = false;
        self.check.head_ended();
        self.heads += 1;
        self.first_line = true;
        let (chunked, length) = (self.chunked, self.content_length);
        self.chunked = false;
        self.content_length = None;
        if matches!(self.state, State::Off) {
            return;
        }
        self.state = match (chunked, length) {
            (true, _) => State::ChunkSize {
                size: 0,
                in_extension: false,
            },
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head,
        };
    }
}

impl sinew_upstream::tap::ReadObserver for Scanner {
    fn observe(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
    fn is_done(&self) -> bool {
        matches!(self.state, State::Off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_heads(input: &[u8], chunk: usize) -> Vec<bool> {
        let check = HeadCheck::new();
        let mut s = Scanner::new(check.clone());
        for c in input.chunks(chunk) {
            s.feed(c);
        }
        (0..4)
            .map(|_| check.next_request_problem().is_some())
            .collect()
    }

    #[test]
    fn accepts_crlf_requests_with_bodies_of_every_kind() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\na\nb\n\
POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n\n\n\n\r\n0\r\nT: 1\r\n\r\n\
GET / HTTP/1.1\r\n\r\n";
        for chunk in [1, 3, 7, 1000] {
            assert_eq!(
                bad_heads(input, chunk),
                vec![false; 4],
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn flags_the_request_whose_head_has_a_bare_lf() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(bad_heads(input, 5), vec![false, true, false, false]);
        let input = b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n";
        assert_eq!(bad_heads(input, 100), vec![true, false, false, false]);
    }

    #[test]
    fn times_a_head_from_its_first_byte_to_its_end() {
        let check = HeadCheck::new();
        let mut s = Scanner::new(check.clone());
        assert_eq!(check.head_in_progress_for(), None, "idle is not a head");
        s.feed(b"GET / HTTP/1.1\r\nHo");
        assert!(check.head_in_progress_for().is_some());
        s.feed(b"st: a\r\n\r\n");
        assert_eq!(check.head_in_progress_for(), None);
    }

    #[test]
    fn refuses_framing_headers_too_long_to_read_whole() {
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
        input.extend(std::iter::repeat_n(b'0', 200));
        input.extend_from_slice(b"5\r\n\r\nhello");
        assert_eq!(bad_heads(&input, 16), vec![true, false, false, false]);
    }

    #[test]
    fn stands_down_for_http2() {
        assert_eq!(
            bad_heads(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n", 4),
            vec![false; 4]
        );
    }

    #[test]
    fn keeps_checking_after_an_upgrade_request_that_did_not_switch() {
        let input = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(bad_heads(input, 4), vec![false, true, false, false]);
        let input = b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n\
POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(bad_heads(input, 7), vec![false, true, false, false]);
    }

    #[test]
    fn stands_down_once_the_connection_has_switched() {
        let check = HeadCheck::new();
        let mut s = Scanner::new(check.clone());
        s.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        check.connection_switched();
        s.feed(b"binary\nframes\n");
        assert!(matches!(s.state, State::Off));
        assert_eq!(
            check.head_in_progress_for(),
            None,
            "tunnel bytes are no head"
        );
        assert_eq!(check.next_request_problem(), None);
        assert_eq!(check.next_request_problem(), None);
    }
}
