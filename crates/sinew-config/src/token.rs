//! HTTP tokens (RFC 9110 §5.6.2): the characters a method or a header field name is
//! made of, for the fields that name them.

/// Whether `b` may appear in a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
