//! Which protocol a plaintext connection speaks, from its first bytes, so that one port
//! can serve several: HTTP (HTTP/1's request line or HTTP/2's preface), SOFA Bolt,
//! Dubbo and Redis (RESP). TLS is told apart before this, by its record byte.

use crate::rpc::{RpcCodec, Sniffed};

/// A protocol a connection's first bytes show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1 (a request line) or HTTP/2 (its `PRI * HTTP/2.0` preface).
    Http,
    Bolt,
    /// Dubbo's magic `0xdabb`.
    Dubbo,
    /// A RESP array (`*<count>`), how every Redis client sends commands.
    Redis,
}

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Is(Protocol),
    /// None of these protocols.
    Unknown,
    /// Too few bytes to tell.
    NeedMore,
}

/// The longest HTTP method this recognizes a request line by.
const MAX_METHOD: usize = 16;

/// The bytes that decide: a connection that sent this many without deciding is unknown.
pub const ENOUGH: usize = MAX_METHOD + 1;

/// Reads the first bytes of a plaintext connection.
pub fn detect(first: &[u8]) -> Detected {
    let Some(&b) = first.first() else {
        return Detected::NeedMore;
    };
    match b {
        0xda => match first.get(1) {
            None => Detected::NeedMore,
            Some(0xbb) => Detected::Is(Protocol::Dubbo),
            Some(_) => Detected::Unknown,
        },
        b'*' => match first.get(1) {
            None => Detected::NeedMore,
            Some(d) if d.is_ascii_digit() || *d == b'-' => Detected::Is(Protocol::Redis),
            Some(_) => Detected::Unknown,
        },
        0x01 => match crate::bolt::Bolt.sniff(first) {
            Sniffed::Yes => Detected::Is(Protocol::Bolt),
            Sniffed::No => Detected::Unknown,
            Sniffed::NeedMore => Detected::NeedMore,
        },
        b'A'..=b'Z' => {
            // A method token (upper-case letters and `-`), then a space: HTTP/1's
            // request line, or `PRI` of HTTP/2's preface.
            let token = first
                .iter()
                .take(MAX_METHOD + 1)
                .position(|c| !(c.is_ascii_uppercase() || *c == b'-'));
            match token {
                Some(n) if first[n] == b' ' => Detected::Is(Protocol::Http),
                Some(_) => Detected::Unknown,
                None if first.len() <= MAX_METHOD => Detected::NeedMore,
                None => Detected::Unknown,
            }
        }
        _ => Detected::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_told_from_its_first_bytes_and_too_few_bytes_wait() {
        let cases: &[(&[u8], Detected)] = &[
            (b"GET / HTTP/1.1\r\n", Detected::Is(Protocol::Http)),
            (b"M-SEARCH * HTTP/1.1", Detected::Is(Protocol::Http)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Detected::Is(Protocol::Http),
            ),
            (b"*1\r\n$4\r\nPING\r\n", Detected::Is(Protocol::Redis)),
            (&[0xda, 0xbb, 0xc2, 0], Detected::Is(Protocol::Dubbo)),
            (
                &crate::bolt::encode_heartbeat(1),
                Detected::Is(Protocol::Bolt),
            ),
            (b"GE", Detected::NeedMore),
            (b"*", Detected::NeedMore),
            (&[0xda], Detected::NeedMore),
            (&[0x01, 0x01], Detected::NeedMore),
            (b"", Detected::NeedMore),
            (b"SSH-2.0-OpenSSH", Detected::Unknown),
            (b"get / HTTP/1.1", Detected::Unknown),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Detected::Unknown),
            (&[0x00, 0x01], Detected::Unknown),
        ];
        for (bytes, want) in cases {
            assert_eq!(detect(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn enough_bytes_always_decide() {
        for b in 0..=255u8 {
            let first = [b; ENOUGH];
            assert_ne!(detect(&first), Detected::NeedMore, "{b:#04x}");
        }
    }
}
