//! A client's commands: arrays of bulk strings, read incrementally with each argument
//! kept as a range into the frame (nothing copied), and inline commands split as
//! redis-server splits them (whitespace, double quotes with escapes, single quotes).

use std::ops::Range;

use super::{line_end, parse_int, Limits, RespError};

/// One command read from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// An array of bulk strings of `len` bytes; its arguments are
    /// [`CommandParser::args`], ranges into those bytes.
    Command { len: usize },
    /// An inline command of `len` bytes (up to and with its line end), its arguments
    /// unquoted and owned.
    Inline { len: usize, args: Vec<Vec<u8>> },
    /// `len` bytes that hold no command (an empty line, `*0`): skipped, as redis-server does.
    Empty { len: usize },
}

/// An incremental command reader; one per client connection, reused.
#[derive(Debug, Default)]
pub struct CommandParser {
    /// Arguments read so far of the command being read (ranges into its frame).
    args: Vec<Range<usize>>,
    /// Arguments still to come; 0 before the header is read.
    remaining: usize,
    /// Where the next argument starts.
    pos: usize,
    /// The buffer must hold at least this much before parsing is worth resuming.
    need: usize,
}

impl CommandParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The arguments of the command the last `Parsed::Command` returned, as ranges into
    /// its frame; valid until the next call to [`parse`](Self::parse).
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// Reads one command from the front of `buf` (which holds at least what earlier
    /// calls saw since the last command). `Ok(None)`: more bytes needed.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, RespError> {
        if buf.len() < self.need {
            return Ok(None);
        }
        if self.remaining == 0 {
            self.args.clear();
            match buf.first() {
                None => return Ok(None),
                Some(b'*') => {}
                Some(_) => return inline(buf, limits),
            }
            let Some(cr) = line_end(buf, 1, limits.max_line)? else {
                self.need = buf.len() + 1;
                return Ok(None);
            };
            let count = parse_int(&buf[1..cr]).ok_or(RespError::TooManyElements(-1))?;
            if count <= 0 {
                return Ok(Some(Parsed::Empty { len: cr + 2 }));
            }
            if count as u64 > limits.max_elements as u64 {
                return Err(RespError::TooManyElements(count));
            }
            self.remaining = count as usize;
            self.pos = cr + 2;
            // The ranges of a small command fit without growing; a huge count is not
            // trusted for a reservation before its arguments arrive.
            self.args.reserve(self.remaining.min(64));
        }
        while self.remaining > 0 {
            let start = self.pos;
            let Some(&kind) = buf.get(start) else {
                self.need = start + 1;
                return Ok(None);
            };
            if kind != b'$' {
                return Err(RespError::ExpectedBulk(kind));
            }
            let Some(cr) = line_end(buf, start + 1, limits.max_line)? else {
                self.need = buf.len() + 1;
                return Ok(None);
            };
            let len = parse_int(&buf[start + 1..cr]).ok_or(RespError::BadLength)?;
            if len < 0 {
                return Err(RespError::BadLength);
            }
            if len as u64 > limits.max_bulk as u64 {
                return Err(RespError::BulkTooLong(len));
            }
            let data = cr + 2;
            let end = data + len as usize;
            if buf.len() < end + 2 {
                self.need = end + 2;
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BadBulkEnd);
            }
            self.args.push(data..end);
            self.pos = end + 2;
            self.remaining -= 1;
        }
        let len = self.pos;
        self.pos = 0;
        self.need = 0;
        Ok(Some(Parsed::Command { len }))
    }
}

/// An inline command: one line (LF, optionally after CR), split into arguments.
fn inline(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, RespError> {
    let window = &buf[..buf.len().min(limits.max_line + 1)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        if window.len() > limits.max_line {
            return Err(RespError::LineTooLong);
        }
        return Ok(None);
    };
    let line = &buf[..lf];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_args(line)?;
    let len = lf + 1;
    if args.is_empty() {
        return Ok(Some(Parsed::Empty { len }));
    }
    Ok(Some(Parsed::Inline { len, args }))
}

/// Splits an inline command line: arguments separated by whitespace; `"..."` with the
/// escapes `\n \r \t \b \a \\ \"` and `\xHH`; `'...'` with `\'`. A closing quote must be
/// followed by whitespace or the end.
fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, RespError> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            if let Some(q) = quote {
                let Some(&c) = line.get(i) else {
                    return Err(RespError::UnbalancedQuotes);
                };
                if q == b'"' && c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok();
                    if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        arg.push(v);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n && (q == b'"' || line[i + 1] == b'\'') {
                    arg.push(match line[i + 1] {
                        b'n' if q == b'"' => b'\n',
                        b'r' if q == b'"' => b'\r',
                        b't' if q == b'"' => b'\t',
                        b'b' if q == b'"' => 8,
                        b'a' if q == b'"' => 7,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                if c == q {
                    i += 1;
                    if i < n && !line[i].is_ascii_whitespace() {
                        return Err(RespError::UnbalancedQuotes);
                    }
                    break;
                }
                arg.push(c);
                i += 1;
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(&c @ (b'"' | b'\'')) => {
                        quote = Some(c);
                        i += 1;
                    }
                    Some(&c) => {
                        arg.push(c);
                        i += 1;
                    }
                }
            }
        }
        args.push(arg);
    }
}
