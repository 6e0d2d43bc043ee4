//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally from a read
//! buffer: chunk data is split off the buffer as `Bytes` (no copy), size lines and
//! extensions are checked byte by byte, trailers are returned as a `HeaderMap`. Every
//! line must end in CRLF: a bare LF in the framing is how a chunked body is read as two
//! different bodies by two parsers, so it is an error here, as in the head guard.

use std::fmt;

use bytes::{Buf, BytesMut};
use http::HeaderMap;

use super::scan::{self, FieldProgress, Fields};
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
    /// The trailer section (how far it has been read is in `trailers`).
    Trailers,
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
    trailers: FieldProgress,
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
            trailers: FieldProgress::default(),
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
                State::Trailers => return self.trailers(buf),
                _ => {
                    let mut used = 0;
                    for &b in buf.iter() {
                        used += 1;
                        self.framing_byte(b)?;
                        if matches!(self.state, State::Data { .. } | State::Trailers) {
                            break;
                        }
                    }
                    buf.advance(used);
                    if !matches!(self.state, State::Data { .. } | State::Trailers) {
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
                b'\n' if size == 0 => State::Trailers,
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

    /// The trailer section: each line read once as it arrives (like a head's fields),
    /// the map built once the section is whole.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ChunkedError> {
        let limit = self.limits.max_trailer_bytes;
        let window = buf.len().min(limit);
        if self.trailers.is_past(window) {
            // Not the buffer the progress was recorded in: read the section again.
            self.trailers = FieldProgress::default();
        }
        let mut spans = self.trailers.take_spans();
        let scanned = scan::fields(
            &buf[..window],
            &mut self.trailers,
            self.limits.max_trailers,
            &mut spans,
        );
        match scanned.map_err(trailer_error)? {
            Fields::Partial if buf.len() >= limit => Err(ChunkedError::TrailersTooLarge),
            Fields::Partial => {
                self.trailers.keep_spans(spans);
                Ok(None)
            }
            Fields::Complete(end) => {
                self.state = State::Done;
                self.trailers = FieldProgress::default();
                if spans.len() == 0 {
                    buf.advance(end);
                    return Ok(Some(Frame::End(None)));
                }
                let section = buf.split_to(end).freeze();
                let map = scan::build_fields(&section, &spans).map_err(trailer_error)?;
                Ok(Some(Frame::End(Some(map))))
            }
        }
    }
}

fn trailer_error(e: HeadError) -> ChunkedError {
    match e {
        HeadError::TooManyHeaders => ChunkedError::TooManyTrailers,
        HeadError::BareLf => ChunkedError::BareLf,
        HeadError::BareCr => ChunkedError::BareCr,
        other => ChunkedError::InvalidTrailer(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The data joined, the trailers, and the bytes after the body.
    type Decoded = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Everything `input` decodes to, fed in pieces of `piece` bytes: the data joined,
    /// the trailers, and what stays in the buffer after the body.
    fn decode_in(
        input: &[u8],
        piece: usize,
        limits: ChunkedLimits,
    ) -> Result<Decoded, ChunkedError> {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        for part in input.chunks(piece.max(1)) {
            buf.extend_from_slice(part);
            while let Some(frame) = decoder.decode(&mut buf)? {
                match frame {
                    Frame::Data(bytes) => {
                        assert!(!bytes.is_empty(), "an empty data frame");
                        data.extend_from_slice(&bytes);
                    }
                    Frame::End(trailers) => {
                        // What follows the body: the buffer's rest and the input not fed.
                        let mut rest = buf.to_vec();
                        let fed = part.as_ptr() as usize + part.len() - input.as_ptr() as usize;
                        rest.extend_from_slice(&input[fed..]);
                        assert_eq!(decoder.decode(&mut buf), Ok(None), "after the end");
                        return Ok((data, trailers, rest));
                    }
                }
            }
        }
        panic!("no end for {:?}", String::from_utf8_lossy(input));
    }

    fn decode(input: &[u8]) -> Result<Decoded, ChunkedError> {
        let whole = decode_in(input, input.len(), ChunkedLimits::default());
        for piece in [1, 2, 3, 7] {
            assert_eq!(
                decode_in(input, piece, ChunkedLimits::default()),
                whole,
                "pieces of {piece}"
            );
        }
        whole
    }

    fn error(input: &[u8]) -> ChunkedError {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(input);
        loop {
            match decoder.decode(&mut buf) {
                Err(e) => return e,
                Ok(Some(Frame::Data(_))) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn chunks_are_joined_and_what_follows_stays() {
        let (data, trailers, rest) =
            decode(b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\nGET / HTTP/1.1\r\n").unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers, None);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn data_is_split_off_the_buffer_not_copied() {
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let mut decoder = ChunkedDecoder::default();
        let Some(Frame::Data(data)) = decoder.decode(&mut buf).unwrap() else {
            panic!("no data");
        };
        assert_eq!(data, Bytes::from_static(b"hello"));
        assert_eq!(
            data.as_ptr() as usize,
            start + 3,
            "the data is the buffer's own bytes"
        );
    }

    #[test]
    fn part_of_a_chunk_is_yielded_as_soon_as_it_arrives() {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"b\r\nhel"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Frame::Data(Bytes::from_static(b"hel"))))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"lo world\r\n0\r\n\r\n");
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Frame::Data(Bytes::from_static(b"lo world"))))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::End(None))));
        assert!(decoder.is_done());
    }

    #[test]
    fn sizes_take_upper_and_lower_hex_and_leading_zeros() {
        let (data, _, _) =
            decode(b"A\r\n0123456789\r\n000b\r\n0123456789a\r\n0000\r\n\r\n").unwrap();
        assert_eq!(data.len(), 21);
    }

    #[test]
    fn extensions_are_skipped() {
        let (data, _, _) =
            decode(b"5;name=value;quoted=\"a b\"\r\nhello\r\n5 ; x\r\nworld\r\n0;last\r\n\r\n")
                .unwrap();
        assert_eq!(data, b"helloworld");
    }

    #[test]
    fn trailers_are_returned_as_fields() {
        let (data, trailers, rest) =
            decode(b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other:  a b \r\n\r\nnext").unwrap();
        assert_eq!(data, b"abc");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "42");
        assert_eq!(trailers["x-other"], "a b");
        assert_eq!(rest, b"next");
    }

    #[test]
    fn an_invalid_chunk_size_is_an_error() {
        assert_eq!(
            error(b"zz\r\nhello\r\n0\r\n\r\n"),
            ChunkedError::InvalidSize
        );
        assert_eq!(error(b"\r\nhello\r\n"), ChunkedError::InvalidSize);
        assert_eq!(error(b";ext\r\n"), ChunkedError::InvalidSize);
        assert_eq!(error(b"-5\r\nhello\r\n"), ChunkedError::InvalidSize);
        assert_eq!(error(b"0x5\r\nhello\r\n"), ChunkedError::InvalidSize);
        assert_eq!(error(b"5 5\r\nhello\r\n"), ChunkedError::InvalidSize);
        assert_eq!(ChunkedError::InvalidSize.status().as_u16(), 400);
    }

    #[test]
    fn a_chunk_size_past_u64_is_an_error() {
        assert_eq!(
            error(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            ChunkedError::SizeOverflow
        );
        assert_eq!(error(b"10000000000000000\r\n"), ChunkedError::SizeOverflow);
        // Sixteen digits is the most a u64 needs, and it is taken.
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Frame::Data(Bytes::from_static(b"ab"))))
        );
    }

    #[test]
    fn bare_lf_in_chunked_framing_is_an_error() {
        assert_eq!(error(b"5\nhello\r\n0\r\n\r\n"), ChunkedError::BareLf);
        assert_eq!(error(b"5\r\nhello\n0\r\n\r\n"), ChunkedError::BareLf);
        assert_eq!(error(b"5\r\nhello\r\n0\n\r\n"), ChunkedError::BareLf);
        assert_eq!(error(b"5\r\nhello\r\n0\r\n\n"), ChunkedError::BareLf);
        assert_eq!(error(b"5;ext\nhello\r\n"), ChunkedError::BareLf);
        assert_eq!(error(b"5 \nhello\r\n"), ChunkedError::BareLf);
        assert_eq!(error(b"\n"), ChunkedError::BareLf);
        assert_eq!(error(b"0\r\nX: 1\n\r\n"), ChunkedError::BareLf);
    }

    #[test]
    fn bare_cr_in_chunked_framing_is_an_error() {
        assert_eq!(error(b"5\rhello\r\n"), ChunkedError::BareCr);
        assert_eq!(error(b"5\r\nhello\rx"), ChunkedError::BareCr);
        assert_eq!(error(b"0\r\n\rX"), ChunkedError::BareCr);
    }

    #[test]
    fn data_longer_than_its_size_is_an_error() {
        assert_eq!(
            error(b"3\r\nhello\r\n0\r\n\r\n"),
            ChunkedError::MissingDataCrlf
        );
    }

    #[test]
    fn control_characters_in_an_extension_are_an_error() {
        assert_eq!(
            error(b"5;a\0b\r\nhello\r\n"),
            ChunkedError::InvalidExtension
        );
        assert_eq!(
            error(b"5;a\x7f\r\nhello\r\n"),
            ChunkedError::InvalidExtension
        );
    }

    #[test]
    fn extensions_are_bounded_over_the_whole_body() {
        let limits = ChunkedLimits {
            max_extension_bytes: 10,
            ..ChunkedLimits::default()
        };
        // Each chunk's extension is short; together they pass the bound.
        let input = b"1;abcd\r\na\r\n1;efgh\r\nb\r\n1;ijkl\r\nc\r\n0\r\n\r\n";
        assert_eq!(
            decode_in(input, 100, limits),
            Err(ChunkedError::ExtensionsTooLong)
        );
        let input = b"1;abcd\r\na\r\n1;efgh\r\nb\r\n0\r\n\r\n";
        assert!(decode_in(input, 100, limits).is_ok());
    }

    #[test]
    fn trailers_are_bounded_in_bytes_and_count() {
        let limits = ChunkedLimits {
            max_trailer_bytes: 32,
            max_trailers: 2,
            ..ChunkedLimits::default()
        };
        let big = format!("0\r\nX: {}\r\n\r\n", "v".repeat(40));
        assert_eq!(
            decode_in(big.as_bytes(), 5, limits),
            Err(ChunkedError::TrailersTooLarge)
        );
        // Too large even while incomplete: the decoder does not wait for the rest.
        let mut decoder = ChunkedDecoder::new(limits);
        let mut buf = BytesMut::from(&big.as_bytes()[..36]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ChunkedError::TrailersTooLarge)
        );
        let many = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            decode_in(many, 3, limits),
            Err(ChunkedError::TooManyTrailers)
        );
        let fine = b"0\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(decode_in(fine, 3, limits).is_ok());
    }

    #[test]
    fn malformed_trailer_lines_are_errors() {
        assert_eq!(
            error(b"0\r\nX : 1\r\n\r\n"),
            ChunkedError::InvalidTrailer(HeadError::SpaceBeforeColon)
        );
        assert_eq!(
            error(b"0\r\nX: 1\r\n folded\r\n\r\n"),
            ChunkedError::InvalidTrailer(HeadError::ObsFold)
        );
        assert_eq!(
            error(b"0\r\nX(: 1\r\n\r\n"),
            ChunkedError::InvalidTrailer(HeadError::InvalidHeaderName)
        );
        assert_eq!(
            error(b"0\r\nX: a\0\r\n\r\n"),
            ChunkedError::InvalidTrailer(HeadError::InvalidHeaderValue)
        );
    }
}
