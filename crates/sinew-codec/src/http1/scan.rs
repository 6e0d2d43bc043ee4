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
/// fields), the rest on the heap. A head that arrives in pieces keeps its spans in a
/// `Vec` between reads ([`FieldSpans::save_into`], [`FieldSpans::restored`]).
pub(crate) struct FieldSpans {
    inline: [FieldSpan; INLINE_FIELDS],
    inline_len: usize,
    spill: Vec<FieldSpan>,
}

const INLINE_FIELDS: usize = 32;

impl FieldSpans {
    pub(crate) fn new() -> Self {
        FieldSpans {
            inline: [FieldSpan::default(); INLINE_FIELDS],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    /// Spans saved by [`FieldSpans::save_into`], in order.
    pub(crate) fn restored(saved: Vec<FieldSpan>) -> Self {
        FieldSpans {
            inline: [FieldSpan::default(); INLINE_FIELDS],
            inline_len: 0,
            spill: saved,
        }
    }

    pub(crate) fn save_into(self, saved: &mut Vec<FieldSpan>) {
        saved.clear();
        saved.extend(self.iter().copied());
    }

    pub(crate) fn len(&self) -> usize {
        self.inline_len + self.spill.len()
    }

    fn push(&mut self, span: FieldSpan) {
        if self.spill.is_empty() && self.inline_len < INLINE_FIELDS {
            self.inline[self.inline_len] = span;
            self.inline_len += 1;
        } else {
            self.spill.push(span);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &FieldSpan> {
        self.inline[..self.inline_len]
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

/// A field line whose name and colon have been read, waiting for the LF that ends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingValue {
    name: (u32, u32),
    value_start: usize,
    /// The LF is not before this offset.
    searched_to: usize,
}

/// One field line, or the empty line that ends a field section.
pub(crate) enum FieldLine {
    Field(FieldSpan, usize),
    /// The empty line; the section ends just before this offset.
    End(usize),
    /// The bytes end inside the line's name: read it again when more arrive.
    Incomplete,
    /// The bytes end inside the value: only the new bytes need searching.
    IncompleteValue(PendingValue),
}

/// Reads one field line (RFC 9112 §5) starting at `i`.
pub(crate) fn field_line(b: &[u8], i: usize) -> Result<FieldLine, HeadError> {
    match b.get(i) {
        None => return Ok(FieldLine::Incomplete),
        Some(b'\r') => {
            return match b.get(i + 1) {
                None => Ok(FieldLine::Incomplete),
                Some(b'\n') => Ok(FieldLine::End(i + 2)),
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
        None => return Ok(FieldLine::Incomplete),
        Some(b':') if name_end > name_start => {}
        Some(b' ' | b'\t') if name_end > name_start => return Err(HeadError::SpaceBeforeColon),
        Some(b'\n') => return Err(HeadError::BareLf),
        Some(_) => return Err(HeadError::InvalidHeaderName),
    }
    j += 1;
    while j < b.len() && matches!(b[j], b' ' | b'\t') {
        j += 1;
    }
    if j == b.len() {
        // Leading whitespace may continue: read the line again from its start.
        return Ok(FieldLine::Incomplete);
    }
    value_end(
        b,
        PendingValue {
            name: (name_start as u32, name_end as u32),
            value_start: j,
            searched_to: j,
        },
    )
}

/// Finds the LF that ends a pending value and checks the line ending.
fn value_end(b: &[u8], pending: PendingValue) -> Result<FieldLine, HeadError> {
    let from = pending.searched_to.min(b.len());
    let Some(offset) = memchr::memchr(b'\n', &b[from..]) else {
        return Ok(FieldLine::IncompleteValue(PendingValue {
            searched_to: b.len(),
            ..pending
        }));
    };
    let lf = from + offset;
    let value_start = pending.value_start;
    // The byte before the LF is inside the line (at worst the colon), so `lf >= 1`.
    if lf == 0 || b[lf - 1] != b'\r' {
        return Err(HeadError::BareLf);
    }
    // The CR is at or after `value_start`: OWS and the colon are not CR.
    let mut value_end = (lf - 1).max(value_start);
    while value_end > value_start && matches!(b[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    let span = FieldSpan {
        name: pending.name,
        value: (value_start as u32, value_end as u32),
    };
    Ok(FieldLine::Field(span, lf + 1))
}

/// How far a field section has been read, kept between reads when it arrives in
/// pieces, so that each line is tokenized once, in order, however the bytes are cut:
/// the answer (and the first error) is the same as for the section in one piece.
#[derive(Debug, Default, Clone)]
pub(crate) struct FieldProgress {
    /// The start of the first line not yet read whole.
    pub(crate) pos: usize,
    pending: Option<PendingValue>,
    /// Spans of the lines read so far (empty while the head is read in one go).
    saved: Vec<FieldSpan>,
}

impl FieldProgress {
    /// The spans read so far, to continue from.
    pub(crate) fn take_spans(&mut self) -> FieldSpans {
        FieldSpans::restored(std::mem::take(&mut self.saved))
    }

    /// Keeps the spans read so far until the next read.
    pub(crate) fn keep_spans(&mut self, spans: FieldSpans) {
        spans.save_into(&mut self.saved);
    }

    /// Recorded for a longer buffer than `len`: not this buffer's progress.
    pub(crate) fn is_past(&self, len: usize) -> bool {
        self.pos > len || self.pending.is_some_and(|p| p.searched_to > len)
    }
}

/// Where a field section scan stopped.
pub(crate) enum Fields {
    /// The section (and the head) ends before this offset.
    Complete(usize),
    /// More bytes are needed; `progress` says where to go on.
    Partial,
}

/// Reads field lines from `progress` to the empty line, recording their spans.
pub(crate) fn fields(
    b: &[u8],
    progress: &mut FieldProgress,
    max_fields: usize,
    spans: &mut FieldSpans,
) -> Result<Fields, HeadError> {
    loop {
        let line = match progress.pending.take() {
            Some(pending) => value_end(b, pending)?,
            None => field_line(b, progress.pos)?,
        };
        match line {
            FieldLine::Incomplete => return Ok(Fields::Partial),
            FieldLine::IncompleteValue(pending) => {
                progress.pending = Some(pending);
                return Ok(Fields::Partial);
            }
            FieldLine::End(end) => return Ok(Fields::Complete(end)),
            FieldLine::Field(span, next) => {
                if spans.len() >= max_fields {
                    return Err(HeadError::TooManyHeaders);
                }
                spans.push(span);
                progress.pos = next;
            }
        }
    }
}

/// How far an incomplete start line has been read, for its reader to go on from.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LineCursor {
    /// Where a part of the line ends once known (the request line: the method's end).
    pub(crate) mark: usize,
    /// Bytes before this were read and found good.
    pub(crate) scanned_to: usize,
}

/// How far a head has been read: its start line once read, then its fields.
#[derive(Debug, Clone)]
pub(crate) struct HeadProgress<L> {
    line: Option<L>,
    cursor: LineCursor,
    fields: FieldProgress,
}

impl<L> Default for HeadProgress<L> {
    fn default() -> Self {
        HeadProgress {
            line: None,
            cursor: LineCursor::default(),
            fields: FieldProgress::default(),
        }
    }
}

impl<L> HeadProgress<L> {
    pub(crate) fn take_spans(&mut self) -> FieldSpans {
        self.fields.take_spans()
    }

    pub(crate) fn keep_spans(&mut self, spans: FieldSpans) {
        self.fields.keep_spans(spans)
    }

    pub(crate) fn is_past(&self, len: usize) -> bool {
        self.fields.is_past(len) || self.cursor.scanned_to > len || self.cursor.mark > len
    }
}

/// Where a head scan stopped.
pub(crate) enum HeadScan<L> {
    /// The head ends before `end`.
    Complete {
        line: L,
        end: usize,
    },
    Partial,
}

/// Tokenizes a head: empty lines a request may start with, the start line (read by
/// `start_line`, from its first byte each time until it is whole), then the fields.
pub(crate) fn head<L: Copy>(
    b: &[u8],
    progress: &mut HeadProgress<L>,
    max_fields: usize,
    spans: &mut FieldSpans,
    start_line: impl Fn(&[u8], usize, &mut LineCursor) -> Result<Option<(L, usize)>, HeadError>,
) -> Result<HeadScan<L>, HeadError> {
    let line = match progress.line {
        Some(line) => line,
        None => {
            let Some(start) = skip_empty_lines(b, progress.fields.pos)? else {
                // Go on from the CR of an empty line not yet whole, or the end.
                progress.fields.pos = b.len() - usize::from(b.last() == Some(&b'\r'));
                return Ok(HeadScan::Partial);
            };
            progress.fields.pos = start;
            let Some((line, next)) = start_line(b, start, &mut progress.cursor)? else {
                return Ok(HeadScan::Partial);
            };
            progress.line = Some(line);
            progress.fields.pos = next;
            line
        }
    };
    Ok(match fields(b, &mut progress.fields, max_fields, spans)? {
        Fields::Complete(end) => HeadScan::Complete { line, end },
        Fields::Partial => HeadScan::Partial,
    })
}

/// Reads one kind of head (requests, or responses) off a connection's read buffer, one
/// after another, resuming a head that arrives in pieces where the last read stopped.
/// Between calls the caller only appends to the buffer, or calls [`Resumable::reset`].
#[derive(Debug, Clone)]
pub(crate) struct Resumable<L> {
    pub(crate) limits: super::HeadLimits,
    /// An incomplete head: what has been read of it. Boxed, and only while a head
    /// arrives in pieces, so a connection between requests keeps 8 bytes here.
    progress: Option<Box<HeadProgress<L>>>,
}

/// A head read whole: its bytes, its start line and where its fields are in them.
pub(crate) struct WholeHead<L> {
    pub(crate) bytes: Bytes,
    pub(crate) line: L,
    pub(crate) spans: FieldSpans,
}

impl<L: Copy> Resumable<L> {
    pub(crate) fn new(limits: super::HeadLimits) -> Self {
        Resumable {
            limits,
            progress: None,
        }
    }

    /// Forgets an incomplete head.
    pub(crate) fn reset(&mut self) {
        self.progress = None;
    }

    /// The next head at the front of `buf`, read by `start_line` and then its fields:
    /// `Ok(None)` until it is all there; once it is, it is split off `buf` (the body and
    /// anything pipelined after it stay).
    pub(crate) fn next(
        &mut self,
        buf: &mut bytes::BytesMut,
        start_line: impl Fn(&[u8], usize, &mut LineCursor) -> Result<Option<(L, usize)>, HeadError>,
    ) -> Result<Option<WholeHead<L>>, HeadError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let (window, at_limit) = head_window(buf.len(), self.limits.max_head_bytes);
        let mut progress = match self.progress.take() {
            Some(progress) if !progress.is_past(window) => *progress,
            // Fresh (the common case, on the stack), or recorded for another buffer.
            _ => HeadProgress::default(),
        };
        let mut spans = progress.take_spans();
        match head(
            &buf[..window],
            &mut progress,
            self.limits.max_headers,
            &mut spans,
            start_line,
        )? {
            HeadScan::Complete { line, end } => Ok(Some(WholeHead {
                bytes: buf.split_to(end).freeze(),
                line,
                spans,
            })),
            HeadScan::Partial if at_limit => Err(HeadError::HeadTooLarge),
            HeadScan::Partial => {
                progress.keep_spans(spans);
                self.progress = Some(Box::new(progress));
                Ok(None)
            }
        }
    }
}

/// One head from the start of `bytes`, copied out of them, and how many bytes it took;
/// `Ok(None)` when it is not all there.
pub(crate) fn head_once<L: Copy>(
    bytes: &[u8],
    limits: &super::HeadLimits,
    start_line: impl Fn(&[u8], usize, &mut LineCursor) -> Result<Option<(L, usize)>, HeadError>,
) -> Result<Option<(WholeHead<L>, usize)>, HeadError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let (window, at_limit) = head_window(bytes.len(), limits.max_head_bytes);
    let mut progress = HeadProgress::default();
    let mut spans = FieldSpans::new();
    match head(
        &bytes[..window],
        &mut progress,
        limits.max_headers,
        &mut spans,
        start_line,
    )? {
        HeadScan::Complete { line, end } => Ok(Some((
            WholeHead {
                bytes: Bytes::copy_from_slice(&bytes[..end]),
                line,
                spans,
            },
            end,
        ))),
        HeadScan::Partial if at_limit => Err(HeadError::HeadTooLarge),
        HeadScan::Partial => Ok(None),
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

/// Builds the field map from a frozen head.
pub(crate) fn build_fields(head: &Bytes, spans: &FieldSpans) -> Result<HeaderMap, HeadError> {
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
        map.append(name, value);
    }
    Ok(map)
}
