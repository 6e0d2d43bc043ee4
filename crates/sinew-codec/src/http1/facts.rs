//! What a head's fields say about framing and the connection, gathered while the field
//! map is built (one look at each field), then judged once the whole head is known.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::HeadError;

/// Longer `Content-Length` or `Transfer-Encoding` values are refused. An honest length
/// has at most 20 digits and an honest coding list a few words; the head guard refused
/// framing lines it could not read whole (96 bytes) rather than guess at them, and a
/// long run of leading zeros is a known way to make two parsers read different lengths.
pub(crate) const MAX_FRAMING_VALUE: usize = 64;

/// The transfer codings named by every `Transfer-Encoding` line, in order.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Codings {
    /// Codings named (empty list elements aside).
    pub(crate) count: u32,
    /// Times `chunked` is named.
    pub(crate) chunked: u32,
    /// The last coding named is `chunked`.
    pub(crate) last_is_chunked: bool,
    /// `chunked` carries parameters (it defines none).
    pub(crate) chunked_with_params: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub(crate) hosts: u32,
    /// A `Host` value is not `host[:port]` (nor empty).
    pub(crate) host_invalid: bool,
    pub(crate) content_lengths: u32,
    /// The first `Content-Length`, when it is one run of digits that fits u64.
    pub(crate) content_length: Option<u64>,
    pub(crate) framing_too_long: bool,
    pub(crate) codings: Option<Codings>,
    pub(crate) connection_close: bool,
    pub(crate) connection_keep_alive: bool,
    pub(crate) connection_upgrade: bool,
    pub(crate) upgrade: bool,
    pub(crate) expect_continue: bool,
}

impl Facts {
    /// The facts of a built field map. Read from the map rather than while building it:
    /// a callback in the build loop cost more (about 150 ns a head in the bench) than
    /// walking the finished map, and every fact is per field name, so the map's grouping
    /// by name loses nothing.
    pub(crate) fn of(headers: &HeaderMap) -> Facts {
        let mut facts = Facts::default();
        for (name, value) in headers {
            facts.inspect(name, value);
        }
        facts
    }

    fn inspect(&mut self, name: &HeaderName, value: &HeaderValue) {
        let bytes = value.as_bytes();
        if *name == header::CONTENT_LENGTH {
            self.content_lengths += 1;
            self.framing_too_long |= bytes.len() > MAX_FRAMING_VALUE;
            if self.content_lengths == 1 {
                self.content_length = digits(bytes);
            }
        } else if *name == header::TRANSFER_ENCODING {
            self.framing_too_long |= bytes.len() > MAX_FRAMING_VALUE;
            let codings = self.codings.get_or_insert_with(Codings::default);
            for element in list(bytes) {
                let (coding, params) = match element.iter().position(|&b| b == b';') {
                    Some(semi) => (trim(&element[..semi]), true),
                    None => (element, false),
                };
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                codings.count += 1;
                codings.chunked += u32::from(chunked);
                codings.last_is_chunked = chunked;
                codings.chunked_with_params |= chunked && params;
            }
        } else if *name == header::HOST {
            self.hosts += 1;
            self.host_invalid |= !valid_host(bytes);
        } else if *name == header::CONNECTION {
            // Any `close`, on any Connection line, wins over a `keep-alive`.
            for token in list(bytes) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.connection_keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    self.connection_upgrade = true;
                }
            }
        } else if *name == header::UPGRADE {
            self.upgrade = true;
        } else if *name == header::EXPECT {
            self.expect_continue |= bytes.eq_ignore_ascii_case(b"100-continue");
        }
    }

    /// The single `Content-Length`, judged: one line of digits that fits u64.
    pub(crate) fn single_content_length(&self) -> Result<Option<u64>, HeadError> {
        match self.content_lengths {
            0 => Ok(None),
            1 => self
                .content_length
                .map(Some)
                .ok_or(HeadError::InvalidContentLength),
            _ => Err(HeadError::DuplicateContentLength),
        }
    }
}

/// `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): a bracketed IP literal or
/// a reg-name/IPv4 of unreserved, sub-delims and `%`, then `:` and digits. Checked by
/// hand: `http::uri::Authority` would copy the value to parse it, and takes any port
/// text and userinfo.
fn valid_host(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        // RFC 9112 §3.2: empty when the target has no authority.
        return true;
    }
    let (name, rest) = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(close) => {
                let literal = &bytes[1..close];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'));
                if !ok {
                    return false;
                }
                (&bytes[..=close], &bytes[close + 1..])
            }
            None => return false,
        }
    } else {
        let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
        (&bytes[..end], &bytes[end..])
    };
    let reg_name_byte = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    let name_ok = name.first() == Some(&b'[') || name.iter().all(|&b| reg_name_byte(b));
    let port_ok = match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    name_ok && port_ok
}

/// RFC 9110 §5.6.1 list elements: split on commas, OWS trimmed, empty elements skipped.
fn list(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b',')
        .map(trim)
        .filter(|element| !element.is_empty())
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `1*DIGIT` as u64: no sign, no spaces, no comma list, no overflow (Rust's parser would
/// take a leading `+`).
pub(crate) fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}
