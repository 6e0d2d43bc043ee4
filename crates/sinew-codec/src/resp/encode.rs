//! The frames a proxy writes itself (errors, integers, bulk strings, array headers) and
//! commands it builds to send on (a split `MGET`'s `GET`s).

use bytes::{BufMut, BytesMut};

/// `-<message>\r\n`; the message's first word is the error's code (`ERR`, `NOPROTO`).
/// CR and LF in it are replaced by spaces, as they would end the frame.
pub fn error(out: &mut BytesMut, message: &str) {
    out.reserve(message.len() + 3);
    out.put_u8(b'-');
    for b in message.bytes() {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    out.put_slice(b"\r\n");
}

/// `+<text>\r\n`.
pub fn simple(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 3);
    out.put_u8(b'+');
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

/// `:<n>\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    header(out, b':', n);
}

/// `$<len>\r\n<data>\r\n`.
pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    header(out, b'$', data.len() as i64);
    out.reserve(data.len() + 2);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// `*<n>\r\n`; the elements follow.
pub fn array_header(out: &mut BytesMut, n: usize) {
    header(out, b'*', n as i64);
}

/// A command as an array of bulk strings.
pub fn command<'a>(out: &mut BytesMut, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    array_header(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

fn header(out: &mut BytesMut, kind: u8, n: i64) {
    let digits = itoa_buf(n);
    out.reserve(digits.1 + 3);
    out.put_u8(kind);
    out.put_slice(&digits.0[digits.0.len() - digits.1..]);
    out.put_slice(b"\r\n");
}

/// The decimal digits of `n`, right-aligned in a stack buffer, and how many there are.
fn itoa_buf(n: i64) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    (buf, buf.len() - i)
}
