//! The tokenizer shared by request and response heads and chunked trailers: field lines,
//! versions, and the bookkeeping that lets a head arriving in pieces be searched, not
//! re-tokenized, on every read.
//!
//! A scan records where each field's name and value lie (offsets into the head), and
//! checks every syntax rule on the way: token names, no whitespace before the colon, no
//! obs-fold, CRLF line endings. The `http` types are built afterwards from the frozen
//! head, so values share the read buffer; `HeaderValue`'s own check of the value bytes
//! (no controls but HTAB) is the value rule, applied while those bytes are still hot.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Version;

use super::HeadError;

/// RFC 9110 §5.6.2: `tchar`, the bytes of a token (method, field name, coding).
const fn tchar_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
}

static TCHAR: [bool; 256] = tchar_table();

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Where one field line's name and value lie in the head. Offsets are u32: heads are
/// limited far below 4 GiB (`head_window`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// Field spans of one head: the first few on the stack (most heads have under 32
/// fields), the rest on the heap.
pub(crate) struct FieldSpans {
    inline: [FieldSpan; INLINE_FIELDS],
    len: usize,
    spill: Vec<FieldSpan>,
}

const INLINE_FIELDS: usize = 32;

impl FieldSpans {
    pub(crate) fn new() -> Self {
        FieldSpans {
            inline: [FieldSpan::default(); INLINE_FIELDS],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, span: FieldSpan) {
        if self.len < INLINE_FIELDS {
            self.inline[self.len] = span;
        } else {
            self.spill.push(span);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &FieldSpan> {
        self.inline[..self.len.min(INLINE_FIELDS)]
            .iter()
            .chain(self.spill.iter())
    }
}

/// Heads longer than this are refused whatever the configured limit, so offsets fit u32.
const HARD_HEAD_LIMIT: usize = 1 << 30;

/// How much of a buffer of `len` bytes a head may occupy, and whether that is all it
/// may ever occupy (so a head not complete within it is too large).
pub(crate) fn head_window(len: usize, max_head_bytes: usize) -> (usize, bool) {
    let limit = max_head_bytes.min(HARD_HEAD_LIMIT);
    (len.min(limit), len >= limit)
}

/// One field line, or the empty line that ends a field section.
pub(crate) enum FieldLine {
    Field(FieldSpan, usize),
    /// The empty line; the section ends just before this offset.
    End(usize),
}

/// Reads one field line (RFC 9112 §5) starting at `i`. `Ok(None)`: the line is not all
/// there yet (and the bytes from `i` on hold no LF).
pub(crate) fn field_line(b: &[u8], i: usize) -> Result<Option<FieldLine>, HeadError> {
    match b.get(i) {
        None => return Ok(None),
        Some(b'\r') => {
            return match b.get(i + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(FieldLine::End(i + 2))),
                Some(_) => Err(HeadError::BareCr),
            }
        }
        Some(b'\n') => return Err(HeadError::BareLf),
        // A continuation of the previous line (RFC 9112 §5.2: a server MUST reject it
        // or unfold it; proxies that unfold disagree with those that do not).
        Some(b' ' | b'\t') => return Err(HeadError::ObsFold),
        Some(_) => {}
    }
    let name_start = i;
    let mut j = i;
    while j < b.len() && is_tchar(b[j]) {
        j += 1;
    }
    let name_end = j;
    match b.get(j) {
        None => return Ok(None),
        Some(b':') if name_end > name_start => {}
        Some(b' ' | b'\t') if name_end > name_start => return Err(HeadError::SpaceBeforeColon),
        Some(b'\n') => return Err(HeadError::BareLf),
        Some(_) => return Err(HeadError::InvalidHeaderName),
    }
    j += 1;
    while j < b.len() && matches!(b[j], b' ' | b'\t') {
        j += 1;
    }
    let value_start = j;
    let Some(offset) = memchr::memchr(b'\n', &b[j..]) else {
        return Ok(None);
    };
    let lf = j + offset;
    // The byte before the LF is inside the line (at worst the colon), so `lf >= 1`.
    if b[lf - 1] != b'\r' {
        return Err(HeadError::BareLf);
    }
    // The CR is at or after `value_start`: OWS and the colon are not CR.
    let mut value_end = lf - 1;
    while value_end > value_start && matches!(b[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    let span = FieldSpan {
        name: (name_start as u32, name_end as u32),
        value: (value_start as u32, value_end as u32),
    };
    Ok(Some(FieldLine::Field(span, lf + 1)))
}

/// Where a field section scan stopped.
pub(crate) enum Fields {
    /// The section (and the head) ends before this offset.
    Complete(usize),
    /// More bytes are needed; the incomplete line starts at this offset.
    Partial(usize),
}

/// Reads field lines from `i` to the empty line, recording their spans.
pub(crate) fn fields(
    b: &[u8],
    mut i: usize,
    max_fields: usize,
    spans: &mut FieldSpans,
) -> Result<Fields, HeadError> {
    loop {
        match field_line(b, i)? {
            None => return Ok(Fields::Partial(i)),
            Some(FieldLine::End(end)) => return Ok(Fields::Complete(end)),
            Some(FieldLine::Field(span, next)) => {
                if spans.len() >= max_fields {
                    return Err(HeadError::TooManyHeaders);
                }
                spans.push(span);
                i = next;
            }
        }
    }
}

/// Skips the empty lines a request may start with (RFC 9112 §2.2: a server SHOULD
/// ignore at least one). `Ok(None)` when the bytes end inside them.
pub(crate) fn skip_empty_lines(b: &[u8], mut i: usize) -> Result<Option<usize>, HeadError> {
    loop {
        match b.get(i) {
            None => return Ok(None),
            Some(b'\r') => match b.get(i + 1) {
                None => return Ok(None),
                Some(b'\n') => i += 2,
                Some(_) => return Err(HeadError::BareCr),
            },
            Some(b'\n') => return Err(HeadError::BareLf),
            Some(_) => return Ok(Some(i)),
        }
    }
}

/// `(major, minor)` of an `HTTP/DIGIT.DIGIT`.
pub(crate) type VersionNumbers = (u8, u8);

/// Reads `HTTP/DIGIT.DIGIT` at `i`; returns its numbers and the offset after it.
pub(crate) fn version(b: &[u8], i: usize) -> Result<Option<(VersionNumbers, usize)>, HeadError> {
    const SHAPE: &[u8; 8] = b"HTTP/d.d";
    let mut digits = [0u8; 2];
    for (k, &expected) in SHAPE.iter().enumerate() {
        let Some(&c) = b.get(i + k) else {
            return Ok(None);
        };
        let fits = match expected {
            b'd' if c.is_ascii_digit() => {
                digits[usize::from(k == 7)] = c - b'0';
                true
            }
            b'd' => false,
            _ => c == expected,
        };
        if !fits {
            return Err(if c == b'\n' {
                HeadError::BareLf
            } else {
                HeadError::InvalidVersion
            });
        }
    }
    Ok(Some(((digits[0], digits[1]), i + SHAPE.len())))
}

/// RFC 9110 §2.5: a 1.x with a minor above 1 is handled as 1.1; another major is not
/// HTTP/1 (505). hyper answered 400 to both; it never saw a 1.2 client either.
pub(crate) fn http1_version((major, minor): VersionNumbers) -> Result<Version, HeadError> {
    match (major, minor) {
        (1, 0) => Ok(Version::HTTP_10),
        (1, _) => Ok(Version::HTTP_11),
        _ => Err(HeadError::UnsupportedVersion),
    }
}

/// Expects CRLF at `i`; returns the offset after it.
pub(crate) fn line_end(
    b: &[u8],
    i: usize,
    otherwise: HeadError,
) -> Result<Option<usize>, HeadError> {
    match b.get(i) {
        None => Ok(None),
        Some(b'\r') => match b.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(i + 2)),
            Some(_) => Err(HeadError::BareCr),
        },
        Some(b'\n') => Err(HeadError::BareLf),
        Some(_) => Err(otherwise),
    }
}

/// Builds the field map from a frozen head, passing each field to `inspect` as it goes
/// (framing, Host and Connection are read there, without a second lookup).
pub(crate) fn build_fields(
    head: &Bytes,
    spans: &FieldSpans,
    mut inspect: impl FnMut(&HeaderName, &HeaderValue),
) -> Result<HeaderMap, HeadError> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for span in spans.iter() {
        let name_bytes = &head[span.name.0 as usize..span.name.1 as usize];
        let name = HeaderName::from_bytes(name_bytes).map_err(|_| {
            if name_bytes.len() > u16::MAX as usize {
                HeadError::HeadTooLarge
            } else {
                HeadError::InvalidHeaderName
            }
        })?;
        let value = HeaderValue::from_maybe_shared(
            head.slice(span.value.0 as usize..span.value.1 as usize),
        )
        .map_err(|_| HeadError::InvalidHeaderValue)?;
        inspect(&name, &value);
        map.append(name, value);
    }
    Ok(map)
}

/// Remembers how far an incomplete head has been looked at, so the next read is
/// searched for the end of the head from there instead of tokenized again from the
/// start: a client sending its head a byte at a time costs linear work, not quadratic.
/// Once the end is in sight (or a line ends in a bare LF, or the limit is reached) the
/// whole head is tokenized once, which reports the first error in it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Resume {
    /// Bytes before this offset hold no LF not yet accounted for.
    scanned_to: usize,
    /// The start of the line being read.
    line_start: usize,
    /// The start line has been read, so an empty line ends the head.
    past_start_line: bool,
}

impl Resume {
    pub(crate) fn after_partial(window: usize, line_start: usize, past_start_line: bool) -> Self {
        Resume {
            scanned_to: window,
            line_start,
            past_start_line,
        }
    }

    pub(crate) fn is_fresh(&self) -> bool {
        self.scanned_to == 0
    }

    /// True when `window` (the buffer so far, within the head limit) may hold a whole
    /// head or an error, so it is worth tokenizing.
    pub(crate) fn worth_a_scan(&mut self, window: &[u8]) -> bool {
        if self.scanned_to > window.len() || self.line_start > self.scanned_to {
            // Not the buffer this was recorded for: start over.
            *self = Resume::default();
            return true;
        }
        let mut from = self.scanned_to;
        while let Some(offset) = memchr::memchr(b'\n', &window[from..]) {
            let lf = from + offset;
            if lf == 0 || window[lf - 1] != b'\r' || lf - 1 < self.line_start {
                return true;
            }
            if lf - 1 == self.line_start {
                if self.past_start_line {
                    return true;
                }
            } else {
                self.past_start_line = true;
            }
            self.line_start = lf + 1;
            from = lf + 1;
        }
        self.scanned_to = window.len();
        false
    }
}
