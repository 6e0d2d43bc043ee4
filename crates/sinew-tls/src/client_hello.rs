//! Reading a TLS ClientHello from a connection's first bytes, without taking part in
//! the handshake: whether the client speaks TLS, the server name it asks for (SNI,
//! RFC 6066 §3) and the application protocols it offers (ALPN, RFC 7301).
//!
//! A listener with several filter chains reads this before it picks one, as Envoy's TLS
//! inspector does: the bytes stay in the socket (the caller peeks), so the chain then
//! terminates TLS or passes it through untouched. The parser is bounded and total: any
//! input gives an answer, never a panic, and it reads nothing it does not need.

/// The content type of a TLS record that carries a handshake (RFC 8446 §5.1).
pub const HANDSHAKE_RECORD: u8 = 0x16;
/// The handshake message type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;
/// A record's plaintext may be at most 2^14 bytes (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What a connection's first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHelloRead {
    /// They start like a TLS handshake, and more bytes are needed to read the hello.
    Incomplete,
    /// Not a TLS ClientHello: plaintext, another protocol, or a damaged hello.
    NotTls,
    /// A whole ClientHello.
    Hello(ClientHello),
}

/// What a ClientHello says that chooses a filter chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The first `host_name` of the SNI extension, in lower case.
    pub server_name: Option<String>,
    /// The ALPN protocols offered, in the client's order of preference.
    pub alpn: Vec<Vec<u8>>,
}

/// Reads the ClientHello at the start of `bytes` (everything the connection has sent so
/// far). The hello may span several records.
pub fn read_client_hello(bytes: &[u8]) -> ClientHelloRead {
    // The handshake message, joined from the records that carry it.
    let mut message = Vec::new();
    let mut rest = bytes;
    loop {
        match rest {
            [] => return ClientHelloRead::Incomplete,
            [first, ..] if *first != HANDSHAKE_RECORD => return ClientHelloRead::NotTls,
            // Every TLS version's record says 3.x (TLS 1.3 writes 3.1 for compatibility).
            [_, major, ..] if *major != 3 => return ClientHelloRead::NotTls,
            _ => {}
        }
        if rest.len() < 5 {
            return ClientHelloRead::Incomplete;
        }
        let length = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if length == 0 || length > MAX_RECORD {
            return ClientHelloRead::NotTls;
        }
        let Some(payload) = rest.get(5..5 + length) else {
            return ClientHelloRead::Incomplete;
        };
        message.extend_from_slice(payload);
        rest = &rest[5 + length..];
        if message[0] != CLIENT_HELLO {
            return ClientHelloRead::NotTls;
        }
        if message.len() < 4 {
            continue;
        }
        let body_length = u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize;
        // A hello that needs more than four full records is no client's.
        if body_length > 4 * MAX_RECORD {
            return ClientHelloRead::NotTls;
        }
        if message.len() >= 4 + body_length {
            return match hello_body(&message[4..4 + body_length]) {
                Some(hello) => ClientHelloRead::Hello(hello),
                None => ClientHelloRead::NotTls,
            };
        }
    }
}

/// A cursor over a hello's fields; every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A field prefixed by its length in one byte.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A field prefixed by its length in two bytes.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The ClientHello's body (RFC 8446 §4.1.2): version, random, session id, cipher suites,
/// compression methods, then extensions (absent in the oldest clients' hellos).
fn hello_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    r.take(2 + 32)?;
    r.vec8()?;
    r.vec16()?;
    r.vec8()?;
    let mut hello = ClientHello::default();
    if r.0.is_empty() {
        return Some(hello);
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let mut data = Reader(extensions.vec16()?);
        match kind {
            EXTENSION_SERVER_NAME => hello.server_name = server_name(&mut data)?,
            EXTENSION_ALPN => hello.alpn = alpn(&mut data)?,
            _ => {}
        }
    }
    Some(hello)
}

/// The first `host_name` of a ServerNameList; `Some(None)` when it names none.
fn server_name(data: &mut Reader) -> Option<Option<String>> {
    let mut list = Reader(data.vec16()?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            return Some(Some(name.to_ascii_lowercase()));
        }
    }
    Some(None)
}

/// A ProtocolNameList's names.
fn alpn(data: &mut Reader) -> Option<Vec<Vec<u8>>> {
    let mut list = Reader(data.vec16()?);
    let mut names = Vec::new();
    while !list.0.is_empty() {
        let name = list.vec8()?;
        if name.is_empty() {
            return None;
        }
        names.push(name.to_vec());
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real client (rustls) asking for `name` with `alpn`.
    pub(crate) fn rustls_hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn a_real_hello_gives_its_server_name_and_alpn_in_the_clients_order() {
        let bytes = rustls_hello("API.example.com", &[b"h2", b"http/1.1"]);
        let expected = ClientHello {
            server_name: Some("api.example.com".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        assert_eq!(read_client_hello(&bytes), ClientHelloRead::Hello(expected));
    }

    #[test]
    fn every_prefix_of_a_hello_is_incomplete() {
        let bytes = rustls_hello("a.example", &[b"h2"]);
        for n in 0..bytes.len() {
            assert_eq!(
                read_client_hello(&bytes[..n]),
                ClientHelloRead::Incomplete,
                "{n}"
            );
        }
    }

    #[test]
    fn a_hello_split_across_records_is_joined() {
        let bytes = rustls_hello("split.example", &[b"http/1.1"]);
        let message = &bytes[5..];
        let (a, b) = message.split_at(40);
        let mut split = Vec::new();
        for part in [a, b] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let ClientHelloRead::Hello(hello) = read_client_hello(&split) else {
            panic!("not read");
        };
        assert_eq!(hello.server_name.as_deref(), Some("split.example"));
        assert_eq!(hello.alpn, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn plaintext_and_other_protocols_are_not_tls() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PRI * HTTP/2.0\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            &[0x16, 2, 0],
            &[0x16, 3, 1, 0, 0],
            &[0x16, 3, 1, 0, 4, 2, 0, 0, 0],
        ] {
            assert_eq!(
                read_client_hello(bytes),
                ClientHelloRead::NotTls,
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn a_hello_without_extensions_has_no_name_and_no_alpn() {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0, 0x2f, 1, 0]);
        let mut bytes = vec![0x16, 3, 1];
        bytes.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        bytes.extend_from_slice(&[1, 0, 0, body.len() as u8]);
        bytes.extend_from_slice(&body);
        let expected = ClientHello::default();
        assert_eq!(read_client_hello(&bytes), ClientHelloRead::Hello(expected));
    }

    #[test]
    fn a_hello_whose_lengths_run_past_its_end_is_not_tls() {
        let mut bytes = rustls_hello("x.example", &[b"h2"]);
        // The session id's length byte, just after the version and random.
        bytes[5 + 4 + 34] = 0xff;
        assert_eq!(read_client_hello(&bytes), ClientHelloRead::NotTls);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use sinew_fuzz::proptest::prelude::*;

    const DICTIONARY: &[&[u8]] = &[
        &[0x16, 3, 1],
        &[0x16, 3, 3, 0x40, 0],
        &[1, 0, 0],
        &[0, 0],
        &[0, 16],
        &[0xff, 0xff],
        b"h2",
        b"http/1.1",
    ];

    /// Any bytes give an answer without a panic, and a hello read from a prefix of the
    /// input is the one read from the whole.
    #[test]
    fn fuzz_client_hello_reader() {
        let samples = vec![
            super::tests::rustls_hello("a.example", &[b"h2", b"http/1.1"]),
            super::tests::rustls_hello("b.example.com", &[]),
        ];
        sinew_fuzz::run(
            "client_hello",
            1,
            prop_oneof![
                sinew_fuzz::mutated(samples, DICTIONARY),
                sinew_fuzz::token_soup(DICTIONARY, 24),
            ],
            |bytes| {
                if let ClientHelloRead::Hello(hello) = read_client_hello(&bytes) {
                    let mut longer = bytes.clone();
                    longer.extend_from_slice(b"trailing");
                    prop_assert_eq!(read_client_hello(&longer), ClientHelloRead::Hello(hello));
                }
                Ok(())
            },
        );
    }
}
