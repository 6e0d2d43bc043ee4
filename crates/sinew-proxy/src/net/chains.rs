//! Choosing a connection's filter chain from its first bytes (`chains` in the config;
//! sinew-config's `chains.rs` has the model and the rules).
//!
//! The listener peeks: the bytes stay in the socket, so the chosen chain reads the
//! connection from its start — terminating TLS, passing it through untouched, or
//! serving plaintext. Peeking waits on the socket's readiness like a read does: a hello
//! that arrives in pieces costs a wake-up per piece, not a spin.

use std::io;
use std::time::Duration;

use sinew_codec::sniff::{detect, Detected};
use sinew_config::chains::{ChainMatch, Protocol, Transport};
use sinew_tls::client_hello::{read_client_hello, ClientHello, ClientHelloRead, HANDSHAKE_RECORD};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most a ClientHello may take before the connection is closed: far above any
/// browser's or library's, including post-quantum key shares.
const MAX_HELLO: usize = 16 * 1024;

impl AsRef<ChainMatcher> for ChainMatcher {
    fn as_ref(&self) -> &ChainMatcher {
        self
    }
}

/// A chain's match, ready to compare.
#[derive(Debug, Default)]
pub struct ChainMatcher {
    exact: Vec<String>,
    /// `*.example.com` as `.example.com`.
    suffixes: Vec<String>,
    transport: Option<Transport>,
    alpn: Vec<Vec<u8>>,
    protocols: Vec<Protocol>,
}

impl ChainMatcher {
    pub fn compile(m: &ChainMatch) -> Self {
        let (wild, exact): (Vec<String>, Vec<String>) = m
            .server_names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .partition(|n| n.starts_with("*."));
        ChainMatcher {
            exact,
            suffixes: wild.into_iter().map(|w| w[1..].to_string()).collect(),
            transport: m.transport,
            alpn: m.alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            protocols: m.protocols.clone(),
        }
    }

    fn names_none(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Whether choosing among chains needs the whole ClientHello, not just its first byte.
    fn reads_hello(&self) -> bool {
        !self.names_none() || !self.alpn.is_empty()
    }
}

/// What a connection showed before its chain was chosen.
#[derive(Debug, PartialEq)]
pub(crate) enum Inspected {
    /// With the protocol its first bytes show, when the chains sniff and it is one
    /// Sinew knows.
    Plaintext(Option<Protocol>),
    Tls(ClientHello),
}

/// The chain that takes a connection that showed `seen`, by Envoy's rules: the server
/// name, then the transport, then ALPN, each stage keeping the most specific chains that
/// match and never going back. None: no chain (the listener's default takes it).
pub(crate) fn select<C: AsRef<ChainMatcher>>(chains: &[C], seen: &Inspected) -> Option<usize> {
    let (tls, hello) = match seen {
        Inspected::Plaintext(_) => (false, None),
        Inspected::Tls(hello) => (true, Some(hello)),
    };
    let all: Vec<usize> = (0..chains.len()).collect();
    let m = |i: &usize| chains[*i].as_ref();
    let name = hello.and_then(|h| h.server_name.as_deref());
    let by_name: Vec<usize> = match name {
        None => all.into_iter().filter(|i| m(i).names_none()).collect(),
        Some(name) => {
            let exact: Vec<usize> = all
                .iter()
                .copied()
                .filter(|i| m(i).exact.iter().any(|e| e == name))
                .collect();
            if !exact.is_empty() {
                exact
            } else {
                // The longest suffix first: `a.b.example` tries `.b.example`, then `.example`.
                let wildcard = name.match_indices('.').find_map(|(dot, _)| {
                    let suffix = &name[dot..];
                    let found: Vec<usize> = all
                        .iter()
                        .copied()
                        .filter(|i| m(i).suffixes.iter().any(|s| s == suffix))
                        .collect();
                    (!found.is_empty()).then_some(found)
                });
                wildcard.unwrap_or_else(|| all.into_iter().filter(|i| m(i).names_none()).collect())
            }
        }
    };
    let transport = if tls {
        Transport::Tls
    } else {
        Transport::Plaintext
    };
    let exact: Vec<usize> = by_name
        .iter()
        .copied()
        .filter(|i| m(i).transport == Some(transport))
        .collect();
    let by_transport = match exact.is_empty() {
        false => exact,
        true => by_name
            .into_iter()
            .filter(|i| m(i).transport.is_none())
            .collect(),
    };
    if let Inspected::Plaintext(sniffed) = seen {
        // As for ALPN: the first chain listing the protocol, else one listing none.
        let listed = sniffed.and_then(|p| {
            by_transport
                .iter()
                .copied()
                .find(|i| m(i).protocols.contains(&p))
        });
        return listed.or_else(|| by_transport.into_iter().find(|i| m(i).protocols.is_empty()));
    }
    let offered = hello.map_or(&[][..], |h| &h.alpn[..]);
    let listed = offered.iter().find_map(|proto| {
        by_transport
            .iter()
            .copied()
            .find(|i| m(i).alpn.contains(proto))
    });
    listed.or_else(|| by_transport.into_iter().find(|i| m(i).alpn.is_empty()))
}

/// Whether a listener's chains need a plaintext connection's protocol sniffed.
pub(crate) fn sniffs<C: AsRef<ChainMatcher>>(chains: &[C]) -> bool {
    chains.iter().any(|c| !c.as_ref().protocols.is_empty())
}

/// The sniffed protocol, in the config's terms.
fn protocol(detected: sinew_codec::sniff::Protocol) -> Protocol {
    use sinew_codec::sniff::Protocol as P;
    match detected {
        P::Http => Protocol::Http,
        P::Bolt => Protocol::Bolt,
        P::Dubbo => Protocol::Dubbo,
        P::Redis => Protocol::Redis,
    }
}

/// Whether a listener's chains need the whole ClientHello to choose.
pub(crate) fn reads_hello<C: AsRef<ChainMatcher>>(chains: &[C]) -> bool {
    chains.iter().any(|c| c.as_ref().reads_hello())
}

/// Peeks at the connection until it shows what chooses its chain: plaintext from its
/// first byte, or, when `sniff`, from enough bytes to tell its protocol; TLS from the
/// first byte, or its whole ClientHello when `whole_hello`. None when the peer closes,
/// the hello is too large, or `timeout` (zero: none) passes first: the connection is
/// then closed.
pub(crate) async fn inspect(
    stream: &TcpStream,
    whole_hello: bool,
    sniff: bool,
    timeout: Duration,
) -> Option<Inspected> {
    // A second handle on the socket, for a non-blocking peek that tokio's readiness
    // can wait on (its own peek never says "would block" while bytes are queued).
    let peeker = std::net::TcpStream::from(socket2::SockRef::from(stream).try_clone().ok()?);
    let mut buf = vec![0u8; 2048];
    let look = stream.async_io(Interest::READABLE, || {
        let n = peeker.peek(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if buf[0] != HANDSHAKE_RECORD {
            if !sniff {
                return Ok(Some(Inspected::Plaintext(None)));
            }
            return match detect(&buf[..n]) {
                Detected::Is(p) => Ok(Some(Inspected::Plaintext(Some(protocol(p))))),
                Detected::Unknown => Ok(Some(Inspected::Plaintext(None))),
                Detected::NeedMore => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        if !whole_hello {
            return Ok(Some(Inspected::Tls(ClientHello::default())));
        }
        match read_client_hello(&buf[..n]) {
            ClientHelloRead::Hello(hello) => Ok(Some(Inspected::Tls(hello))),
            ClientHelloRead::NotTls => Ok(Some(Inspected::Plaintext(None))),
            ClientHelloRead::Incomplete if n < buf.len() => Err(io::ErrorKind::WouldBlock.into()),
            ClientHelloRead::Incomplete if buf.len() < MAX_HELLO => {
                buf.resize(MAX_HELLO, 0);
                Err(io::ErrorKind::WouldBlock.into())
            }
            ClientHelloRead::Incomplete => Err(io::ErrorKind::InvalidData.into()),
        }
    });
    // Zero waits for ever, as Envoy's `listener_filters_timeout: 0s`.
    let timeout = match timeout {
        Duration::ZERO => Duration::from_secs(365 * 86_400),
        t => t,
    };
    match tokio::time::timeout(timeout, look).await {
        Ok(Ok(seen)) => seen,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(names: &[&str], transport: Option<Transport>, alpn: &[&str]) -> ChainMatcher {
        ChainMatcher::compile(&ChainMatch {
            server_names: names.iter().map(|s| s.to_string()).collect(),
            transport,
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
            protocols: Vec::new(),
        })
    }

    fn tls(name: Option<&str>, alpn: &[&str]) -> Inspected {
        Inspected::Tls(ClientHello {
            server_name: name.map(str::to_string),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        })
    }

    #[test]
    fn an_exact_name_beats_a_wildcard_and_the_longest_wildcard_beats_a_shorter_one() {
        let chains = [
            matcher(&["*.example.com"], None, &[]),
            matcher(&["*.b.example.com"], None, &[]),
            matcher(&["a.b.example.com"], None, &[]),
            matcher(&[], None, &[]),
        ];
        assert_eq!(select(&chains, &tls(Some("a.b.example.com"), &[])), Some(2));
        assert_eq!(select(&chains, &tls(Some("x.b.example.com"), &[])), Some(1));
        assert_eq!(select(&chains, &tls(Some("x.y.example.com"), &[])), Some(0));
        assert_eq!(select(&chains, &tls(Some("example.com"), &[])), Some(3));
        assert_eq!(select(&chains, &tls(None, &[])), Some(3));
        assert_eq!(select(&chains, &Inspected::Plaintext(None)), Some(3));
    }

    #[test]
    fn a_name_that_matches_does_not_fall_back_when_its_chain_wants_another_transport() {
        let chains = [
            matcher(&["a.example"], Some(Transport::Tls), &["h2"]),
            matcher(&[], None, &[]),
        ];
        // Envoy does not go back to the catch-all once the name matched.
        assert_eq!(
            select(&chains, &tls(Some("a.example"), &["http/1.1"])),
            None
        );
        assert_eq!(select(&chains, &tls(Some("a.example"), &["h2"])), Some(0));
    }

    #[test]
    fn alpn_takes_the_first_protocol_the_client_offers_that_a_chain_lists() {
        let chains = [
            matcher(&[], Some(Transport::Tls), &["http/1.1"]),
            matcher(&[], Some(Transport::Tls), &["h2"]),
            matcher(&[], Some(Transport::Tls), &[]),
            matcher(&[], Some(Transport::Plaintext), &[]),
        ];
        assert_eq!(select(&chains, &tls(None, &["h2", "http/1.1"])), Some(1));
        assert_eq!(select(&chains, &tls(None, &["http/1.1", "h2"])), Some(0));
        assert_eq!(select(&chains, &tls(None, &["spdy/3"])), Some(2));
        assert_eq!(select(&chains, &Inspected::Plaintext(None)), Some(3));
    }

    #[test]
    fn a_transport_named_beats_one_left_open() {
        let chains = [
            matcher(&[], None, &[]),
            matcher(&[], Some(Transport::Tls), &[]),
        ];
        assert_eq!(select(&chains, &tls(None, &[])), Some(1));
        assert_eq!(select(&chains, &Inspected::Plaintext(None)), Some(0));
    }

    #[tokio::test]
    async fn a_hello_sent_in_pieces_is_read_whole_and_plaintext_from_its_first_byte() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let hello = {
            let mut config = rustls::ClientConfig::builder_with_provider(sinew_tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = rustls::pki_types::ServerName::try_from("pieces.example").unwrap();
            let mut client =
                rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
            let mut out = Vec::new();
            client.write_tls(&mut out).unwrap();
            out
        };
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(address).await.unwrap();
            for piece in hello.chunks(50) {
                c.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut plain = TcpStream::connect(address).await.unwrap();
            plain.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            (c, plain)
        });
        let (tls_side, _) = listener.accept().await.unwrap();
        let seen = inspect(&tls_side, true, false, Duration::from_secs(5)).await;
        let expected = ClientHello {
            server_name: Some("pieces.example".into()),
            alpn: vec![b"h2".to_vec()],
        };
        assert_eq!(seen, Some(Inspected::Tls(expected)));
        let (plain_side, _) = listener.accept().await.unwrap();
        let seen = inspect(&plain_side, true, false, Duration::from_secs(5)).await;
        assert_eq!(seen, Some(Inspected::Plaintext(None)));
        let _keep = client.await.unwrap();
        // A client that sends half a hello and stops is given up at the timeout.
        let half = tokio::spawn(async move {
            let mut c = TcpStream::connect(address).await.unwrap();
            c.write_all(&[0x16, 3, 1, 0, 200, 1]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            c
        });
        let (half_side, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            inspect(&half_side, true, false, Duration::from_millis(200)).await,
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        half.abort();
    }

    #[test]
    fn a_sniffed_protocol_takes_the_chain_that_lists_it_else_one_that_lists_none() {
        let with = |protocols: Vec<Protocol>| {
            ChainMatcher::compile(&ChainMatch {
                protocols,
                ..ChainMatch::default()
            })
        };
        let chains = vec![
            with(vec![Protocol::Http]),
            with(vec![Protocol::Bolt, Protocol::Redis]),
            with(vec![]),
        ];
        let plain = |p| select(&chains, &Inspected::Plaintext(p));
        assert_eq!(plain(Some(Protocol::Http)), Some(0));
        assert_eq!(plain(Some(Protocol::Redis)), Some(1));
        assert_eq!(plain(Some(Protocol::Dubbo)), Some(2));
        assert_eq!(plain(None), Some(2));
        assert!(sniffs(&chains));
        assert!(!sniffs(&chains[2..]));
    }

    #[tokio::test]
    async fn a_request_line_sent_a_byte_at_a_time_is_sniffed_once_it_says_enough() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = TcpStream::connect(addr).await.unwrap();
            for b in b"OPTIONS * HTTP/1.1\r\n" {
                s.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            s
        });
        let (server_side, _) = listener.accept().await.unwrap();
        let seen = inspect(&server_side, false, true, Duration::from_secs(5)).await;
        assert_eq!(seen, Some(Inspected::Plaintext(Some(Protocol::Http))));
        drop(client.await.unwrap());
    }
}
