//! Where a RESP2 or RESP3 frame ends, found without copying or building values.
//!
//! The scanner walks element headers: a line-typed value is skipped to its CRLF, a bulk
//! one by its announced length, an aggregate pushes how many elements it still owes. Its
//! position and that stack survive between calls, so a large reply arriving in many
//! reads is walked once, not once per read.

use super::{line_end, parse_int, Limits, RespError};

/// An incremental frame finder; one per stream, reused frame after frame.
#[derive(Debug, Default)]
pub struct FrameScanner {
    /// Where the next element starts, relative to the start of the frame.
    pos: usize,
    /// Elements each open aggregate still owes, innermost last.
    owed: Vec<u64>,
    /// The buffer must hold at least this much before scanning is worth resuming.
    pub(super) need: usize,
}

impl FrameScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `buf`, which starts with the frame (and holds at least the bytes given to
    /// earlier calls since the last complete frame). `Ok(Some(n))`: the frame is
    /// `buf[..n]`, and the scanner is ready for the next one. `Ok(None)`: more bytes
    /// needed. An error leaves the stream unusable.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, RespError> {
        if buf.len() < self.need {
            return Ok(None);
        }
        loop {
            let Some(next) = self.element(buf, limits)? else {
                return Ok(None);
            };
            self.pos = next;
            // One element done: it settles what its aggregates owe, innermost first.
            loop {
                match self.owed.last_mut() {
                    None => {
                        let n = self.pos;
                        self.pos = 0;
                        self.need = 0;
                        return Ok(Some(n));
                    }
                    Some(0) => {
                        self.owed.pop();
                    }
                    Some(left) => {
                        *left -= 1;
                        if *left == 0 {
                            self.owed.pop();
                            continue;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Reads the element at `self.pos`: `Some(end)` for a whole leaf, or for an empty
    /// aggregate; for a non-empty aggregate, pushes what it owes and returns
    /// `Some(header end)` after undoing the settle the caller will do for it.
    fn element(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, RespError> {
        loop {
            let start = self.pos;
            let Some(&kind) = buf.get(start) else {
                self.need = start + 1;
                return Ok(None);
            };
            let Some(cr) = line_end(buf, start + 1, limits.max_line)? else {
                self.need = buf.len() + 1;
                return Ok(None);
            };
            let text = &buf[start + 1..cr];
            let after = cr + 2;
            match kind {
                b'+' | b'-' => return Ok(Some(after)),
                b':' => {
                    parse_int(text).ok_or(RespError::BadValue(kind))?;
                    return Ok(Some(after));
                }
                b'_' => {
                    if !text.is_empty() {
                        return Err(RespError::BadValue(kind));
                    }
                    return Ok(Some(after));
                }
                b'#' => {
                    if text != b"t" && text != b"f" {
                        return Err(RespError::BadValue(kind));
                    }
                    return Ok(Some(after));
                }
                b',' => {
                    if !valid_double(text) {
                        return Err(RespError::BadValue(kind));
                    }
                    return Ok(Some(after));
                }
                b'(' => {
                    let digits = text.strip_prefix(b"-").unwrap_or(text);
                    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                        return Err(RespError::BadValue(kind));
                    }
                    return Ok(Some(after));
                }
                b'$' | b'!' | b'=' => {
                    let len = parse_int(text).ok_or(RespError::BadLength)?;
                    if len == -1 && kind == b'$' {
                        return Ok(Some(after)); // RESP2's null bulk string
                    }
                    if len < 0 {
                        return Err(RespError::BadLength);
                    }
                    if len as u64 > limits.max_bulk as u64 {
                        return Err(RespError::BulkTooLong(len));
                    }
                    let end = after + len as usize;
                    if buf.len() < end + 2 {
                        self.need = end + 2;
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(RespError::BadBulkEnd);
                    }
                    if kind == b'=' && (len < 4 || buf[after + 3] != b':') {
                        return Err(RespError::BadValue(kind));
                    }
                    return Ok(Some(end + 2));
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let count = parse_int(text).ok_or(RespError::BadLength)?;
                    if count == -1 && kind == b'*' {
                        return Ok(Some(after)); // RESP2's null array
                    }
                    if count < 0 {
                        return Err(RespError::BadLength);
                    }
                    if count as u64 > limits.max_elements as u64 {
                        return Err(RespError::TooManyElements(count));
                    }
                    let owed = match kind {
                        b'%' => count as u64 * 2,
                        // An attribute's pairs come before the value they describe, and
                        // the pair list with that value stands for one element.
                        b'|' => count as u64 * 2 + 1,
                        _ => count as u64,
                    };
                    if owed == 0 {
                        return Ok(Some(after));
                    }
                    if self.owed.len() >= limits.max_depth {
                        return Err(RespError::TooDeep);
                    }
                    self.owed.push(owed);
                    self.pos = after;
                    // Go on to the aggregate's first element.
                    continue;
                }
                other => return Err(RespError::UnknownType(other)),
            }
        }
    }
}

/// RESP3 doubles: `inf`, `-inf`, `nan`, or a decimal with optional fraction and exponent.
fn valid_double(text: &[u8]) -> bool {
    if matches!(text, b"inf" | b"-inf" | b"nan") {
        return true;
    }
    std::str::from_utf8(text)
        .ok()
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        })
        .and_then(|t| t.parse::<f64>().ok())
        .is_some()
}
