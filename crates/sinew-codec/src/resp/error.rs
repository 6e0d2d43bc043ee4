//! What can be wrong with RESP bytes. Each error's text is what a proxy tells the peer
//! (after `-ERR Protocol error: `), in redis-server's words where it has them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// A frame began with a byte that is no RESP type.
    UnknownType(u8),
    /// A CR not followed by LF.
    BadLineEnd,
    /// A line longer than `Limits::max_line`.
    LineTooLong,
    /// A length or count that is not a decimal integer, or negative where that means nothing.
    BadLength,
    /// A bulk string announced longer than `Limits::max_bulk`.
    BulkTooLong(i64),
    /// An aggregate announced more elements than `Limits::max_elements`.
    TooManyElements(i64),
    /// Aggregates nested deeper than `Limits::max_depth`.
    TooDeep,
    /// A bulk string whose data is not followed by CRLF.
    BadBulkEnd,
    /// A line-typed value that does not read as its type (`:x`, `#maybe`, `_x`).
    BadValue(u8),
    /// A command's array holds something other than bulk strings.
    ExpectedBulk(u8),
    /// An inline command with a quote left open.
    UnbalancedQuotes,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown type byte {:?}", char::from(*b)),
            RespError::BadLineEnd => f.write_str("CR not followed by LF"),
            RespError::LineTooLong => f.write_str("too big inline request"),
            RespError::BadLength => f.write_str("invalid length"),
            RespError::BulkTooLong(n) => {
                write!(f, "invalid bulk length {n} (the limit is 512 MiB)")
            }
            RespError::TooManyElements(n) => write!(f, "invalid multibulk length {n}"),
            RespError::TooDeep => f.write_str("aggregates nested too deep"),
            RespError::BadBulkEnd => f.write_str("bulk string not followed by CRLF"),
            RespError::BadValue(t) => write!(f, "invalid {:?} value", char::from(*t)),
            RespError::ExpectedBulk(b) => write!(f, "expected '$', got '{}'", char::from(*b)),
            RespError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
        }
    }
}

impl std::error::Error for RespError {}
