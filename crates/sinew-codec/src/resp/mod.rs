//! RESP, the Redis serialization protocol, versions 2 and 3: bytes in, frame boundaries
//! and command arguments out. Nothing here knows about keys, shards or routes.
//!
//! Two readers, both incremental (a frame that arrives in pieces is never rescanned from
//! its start) and bounded ([`Limits`]: nesting depth, bulk length, element count, line
//! length), so a peer cannot make the proxy buffer or recurse without end:
//!
//! - [`FrameScanner`] finds where one frame of any type ends — RESP2's five and RESP3's
//!   maps, sets, pushes, attributes, nulls, booleans, doubles, big numbers, verbatim
//!   strings and blob errors — without copying or building values, so a shard's reply
//!   can be forwarded as the byte range it came in;
//! - [`CommandParser`] reads a client's command: an array of bulk strings, whose
//!   arguments it gives as ranges into the frame, or an inline command (`PING\r\n`) split
//!   as redis-server splits it.
//!
//! [`encode`] writes the few frames a proxy makes itself: errors, integers, bulk
//! strings, array headers and commands.

mod command;
pub mod encode;
mod error;
mod scan;

pub use command::{CommandParser, Parsed};
pub use error::RespError;
pub use scan::FrameScanner;

/// The bounds a reader enforces. Exceeding one is an error, not a wait for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Aggregates inside aggregates, counting the outermost as 1.
    pub max_depth: usize,
    /// Bytes in one bulk string (Redis's `proto-max-bulk-len` defaults to 512 MiB).
    pub max_bulk: usize,
    /// Elements announced by one aggregate (a map's pairs count twice).
    pub max_elements: usize,
    /// Bytes in one line: a simple string, an error, a number, an inline command
    /// (redis-server's inline limit is 64 KiB).
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_bulk: 512 * 1024 * 1024,
            max_elements: 16 * 1024 * 1024,
            max_line: 64 * 1024,
        }
    }
}

/// Finds the end of the CRLF-terminated line starting at `from`: the index of its CR.
/// `Ok(None)`: not all here yet. A CR not followed by LF, or a line longer than `max`,
/// is an error.
pub(crate) fn line_end(buf: &[u8], from: usize, max: usize) -> Result<Option<usize>, RespError> {
    let window = &buf[from..buf.len().min(from.saturating_add(max).saturating_add(2))];
    match memchr::memchr(b'\r', window) {
        Some(i) if i > max => Err(RespError::LineTooLong),
        Some(i) if i + 1 < window.len() => {
            if window[i + 1] == b'\n' {
                Ok(Some(from + i))
            } else {
                Err(RespError::BadLineEnd)
            }
        }
        Some(_) => Ok(None),
        None if window.len() > max => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

/// Parses a decimal integer as RESP writes lengths and integers: an optional `-`, then
/// digits; nothing else (no `+`, no spaces, no empty).
pub(crate) fn parse_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests;
