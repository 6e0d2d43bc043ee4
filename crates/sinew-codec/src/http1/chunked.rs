//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from a read
//! buffer: chunk data is split off the buffer as `Bytes` (no copy), size lines and
//! extensions are checked byte by byte, trailers are returned as a `HeaderMap`. Every
//! line must end in CRLF: a bare LF in the framing is how a chunked body is read as two
//! different bodies by two parsers, so it is an error here, as in the head guard.

use std::fmt;

use bytes::{Buf, BytesMut};
use http::HeaderMap;

use super::scan::{self, FieldLine, FieldSpans, Fields};
use super::HeadError;

/// Bounds on what a chunked body may spend on framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// Chunk extension bytes over the whole body: extensions carry nothing Sinew uses,
    /// and one-byte chunks with long extensions would make framing cost more than data.
    pub max_extension_bytes: u64,
    /// The trailer section, its final CRLF included.
    pub max_trailer_bytes: usize,
    /// Trailer fields.
    pub max_trailers: usize,
}

impl Default for ChunkedLimits {
    /// hyper's bounds: 16 KiB of extensions per body, 16 KiB of trailers, 100 fields.
    fn default() -> Self {
        ChunkedLimits {
            max_extension_bytes: 16 * 1024,
            max_trailer_bytes: 16 * 1024,
            max_trailers: 100,
        }
    }
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Body bytes: part or all of one chunk's data.
    Data(bytes::Bytes),
    /// The last chunk has been read, with the trailer fields if there were any.
    End(Option<HeaderMap>),
}

/// A chunked body that cannot be trusted; the message and its connection end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkedError {
    /// A chunk size that is not hex digits (or is missing).
    InvalidSize,
    /// More than 16 hex digits: past u64 (leading zeros included, so no two readers can
    /// disagree about where a long size ends).
    SizeOverflow,
    /// A framing line ended in LF without CR.
    BareLf,
    /// A CR not followed by LF in a framing line.
    BareCr,
    /// A control character in a chunk extension.
    InvalidExtension,
    /// Extensions over [`ChunkedLimits::max_extension_bytes`].
    ExtensionsTooLong,
    /// Chunk data not followed by CRLF (the size was a lie).
    MissingDataCrlf,
    /// A trailer line that would be an invalid header line.
    InvalidTrailer(HeadError),
    /// Trailers over [`ChunkedLimits::max_trailer_bytes`].
    TrailersTooLarge,
    /// More trailer fields than [`ChunkedLimits::max_trailers`].
    TooManyTrailers,
}

impl ChunkedError {
    /// What a server answers when a request body fails this way (a response body that
    /// fails is cut off instead; its head has gone out already).
    pub fn status(self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }

    pub fn reason(self) -> &'static str {
        match self {
            ChunkedError::InvalidSize => "invalid chunk size",
            ChunkedError::SizeOverflow => "chunk size too long",
            ChunkedError::BareLf => "bare LF in chunked framing",
            ChunkedError::BareCr => "bare CR in chunked framing",
            ChunkedError::InvalidExtension => "invalid chunk extension",
            ChunkedError::ExtensionsTooLong => "chunk extensions too long",
            ChunkedError::MissingDataCrlf => "chunk data not followed by CRLF",
            ChunkedError::InvalidTrailer(_) => "invalid trailer",
            ChunkedError::TrailersTooLarge => "trailers too large",
            ChunkedError::TooManyTrailers => "too many trailers",
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkedError::InvalidTrailer(why) => write!(f, "invalid trailer: {why}"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size (before `;` or CR).
    SizeSpace {
        size: u64,
    },
    /// Inside the extensions, up to CR.
    Extension {
        size: u64,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// The trailer section; lines before `checked` are known good.
    Trailers {
        checked: usize,
        fields: usize,
    },
    Done,
}

/// Decodes one chunked body. Feed it the connection's read buffer after the head; it
/// consumes framing and splits off data, leaving whatever follows the body (the next
/// pipelined message) in the buffer.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: ChunkedLimits,
    extension_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new(ChunkedLimits::default())
    }
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            limits,
            extension_bytes: 0,
        }
    }

    /// The last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next frame: `Ok(None)` when `buf` holds no more of the body yet (or the body
    /// has ended). Data is yielded as soon as any of a chunk is there.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ChunkedError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = if n == remaining {
                        State::DataCr
                    } else {
                        State::Data {
                            remaining: remaining - n,
                        }
                    };
                    return Ok(Some(Frame::Data(data)));
                }
                State::Trailers { .. } => return self.trailers(buf),
                _ => {
                    let mut used = 0;
                    for &b in buf.iter() {
                        used += 1;
                        self.framing_byte(b)?;
                        if matches!(self.state, State::Data { .. } | State::Trailers { .. }) {
                            break;
                        }
                    }
                    buf.advance(used);
                    if !matches!(self.state, State::Data { .. } | State::Trailers { .. }) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// One byte of a size line or of the CRLF after data.
    fn framing_byte(&mut self, b: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::Size { size, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == 16 {
                        return Err(ChunkedError::SizeOverflow);
                    }
                    let value = (b as char).to_digit(16).unwrap_or(0);
                    State::Size {
                        size: (size << 4) | u64::from(value),
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => {
                    return Err(if b == b'\n' {
                        ChunkedError::BareLf
                    } else {
                        ChunkedError::InvalidSize
                    })
                }
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => State::Extension { size },
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkedError::BareLf),
                _ => return Err(ChunkedError::InvalidSize),
            },
            // RFC 9112 §7.1.1 puts BWS only around `;`; a space before CR is taken too,
            // as hyper did: it cannot be read two ways.
            State::SizeSpace { size } => match b {
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => State::Extension { size },
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkedError::BareLf),
                _ => return Err(ChunkedError::InvalidSize),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkedError::BareLf),
                b'\t' => self.extension_byte(size)?,
                c if c < 0x20 || c == 0x7f => return Err(ChunkedError::InvalidExtension),
                _ => self.extension_byte(size)?,
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::Trailers {
                    checked: 0,
                    fields: 0,
                },
                b'\n' => State::Data { remaining: size },
                _ => return Err(ChunkedError::BareCr),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                b'\n' => return Err(ChunkedError::BareLf),
                _ => return Err(ChunkedError::MissingDataCrlf),
            },
            State::DataLf => match b {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkedError::BareCr),
            },
            other => other,
        };
        Ok(())
    }

    fn extension_byte(&mut self, size: u64) -> Result<State, ChunkedError> {
        self.extension_bytes += 1;
        if self.extension_bytes > self.limits.max_extension_bytes {
            return Err(ChunkedError::ExtensionsTooLong);
        }
        Ok(State::Extension { size })
    }

    /// The trailer section: checked line by line as it arrives, built once it is whole.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ChunkedError> {
        let State::Trailers {
            mut checked,
            mut fields,
        } = self.state
        else {
            return Ok(None);
        };
        let limit = self.limits.max_trailer_bytes;
        let window = &buf[..buf.len().min(limit)];
        loop {
            match scan::field_line(window, checked).map_err(trailer_error)? {
                None => {
                    self.state = State::Trailers { checked, fields };
                    if buf.len() >= limit {
                        return Err(ChunkedError::TrailersTooLarge);
                    }
                    return Ok(None);
                }
                Some(FieldLine::Field(_, next)) => {
                    fields += 1;
                    if fields > self.limits.max_trailers {
                        return Err(ChunkedError::TooManyTrailers);
                    }
                    checked = next;
                }
                Some(FieldLine::End(end)) => {
                    self.state = State::Done;
                    if fields == 0 {
                        buf.advance(end);
                        return Ok(Some(Frame::End(None)));
                    }
                    let section = buf.split_to(end).freeze();
                    let mut spans = FieldSpans::new();
                    match scan::fields(&section, 0, fields, &mut spans).map_err(trailer_error)? {
                        Fields::Complete(_) => {}
                        // The same bytes were just read as complete.
                        Fields::Partial(_) => return Err(ChunkedError::TrailersTooLarge),
                    }
                    let map =
                        scan::build_fields(&section, &spans, |_, _| {}).map_err(trailer_error)?;
                    return Ok(Some(Frame::End(Some(map))));
                }
            }
        }
    }
}

fn trailer_error(e: HeadError) -> ChunkedError {
    match e {
        HeadError::BareLf => ChunkedError::BareLf,
        HeadError::BareCr => ChunkedError::BareCr,
        other => ChunkedError::InvalidTrailer(other),
    }
}
