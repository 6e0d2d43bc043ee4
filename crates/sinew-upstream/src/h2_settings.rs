//! Learns an HTTP/2 upstream's SETTINGS_MAX_CONCURRENT_STREAMS.
//!
//! hyper does not expose the peer's settings, yet the pool must know how many streams a
//! connection may carry so it opens another connection instead of queueing behind a
//! full one. The server's connection preface begins with a SETTINGS frame (RFC 9113
//! §3.4), so reading that one frame as it passes by is enough. Later SETTINGS changes
//! are not followed; the configured cap still bounds the count. The pool waits for that
//! first frame before it shares a new connection, so no stream is opened past a limit
//! it has not read yet.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

const FRAME_HEADER: usize = 9;
const SETTINGS_FRAME: u8 = 0x4;
const ACK_FLAG: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// What the peer's first SETTINGS frame said, shared with the pool.
#[derive(Debug)]
pub struct PeerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS; `u32::MAX` when the peer sets none.
    pub max_concurrent_streams: AtomicU32,
    /// Notified once the first SETTINGS frame has been read (or the stream was not HTTP/2).
    pub seen: Notify,
}

impl PeerSettings {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            max_concurrent_streams: AtomicU32::new(u32::MAX),
            seen: Notify::new(),
        })
    }
}

/// Reads the first SETTINGS frame of a byte stream.
#[derive(Debug)]
pub struct SettingsParser {
    state: State,
    peer: Arc<PeerSettings>,
}

#[derive(Debug)]
enum State {
    Header {
        buf: [u8; FRAME_HEADER],
        have: usize,
    },
    Payload {
        remaining: usize,
        entry: [u8; 6],
        have: usize,
    },
    Done,
}

impl SettingsParser {
    pub fn new(peer: Arc<PeerSettings>) -> Self {
        Self {
            state: State::Header {
                buf: [0; FRAME_HEADER],
                have: 0,
            },
            peer,
        }
    }

    fn finish(&mut self) {
        self.state = State::Done;
        // A stored permit: the pool may start waiting after this.
        self.peer.seen.notify_one();
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Header { buf, have } => {
                    let n = (FRAME_HEADER - *have).min(bytes.len());
                    buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == FRAME_HEADER {
                        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                        self.state = if buf[3] == SETTINGS_FRAME && buf[4] & ACK_FLAG == 0 {
                            State::Payload {
                                remaining: len,
                                entry: [0; 6],
                                have: 0,
                            }
                        } else {
                            State::Done
                        };
                        if matches!(
                            self.state,
                            State::Done | State::Payload { remaining: 0, .. }
                        ) {
                            self.finish();
                        }
                    }
                }
                State::Payload {
                    remaining,
                    entry,
                    have,
                } => {
                    let n = (6 - *have).min(bytes.len()).min(*remaining);
                    entry[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    *remaining -= n;
                    bytes = &bytes[n..];
                    if *have == 6 {
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                        if id == MAX_CONCURRENT_STREAMS {
                            self.peer
                                .max_concurrent_streams
                                .store(value, Ordering::Relaxed);
                        }
                        *have = 0;
                    }
                    if *remaining == 0 {
                        self.finish();
                    }
                }
            }
        }
    }
}

impl crate::tap::ReadObserver for SettingsParser {
    fn observe(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }
    fn is_done(&self) -> bool {
        SettingsParser::is_done(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_frame(entries: &[(u16, u32)]) -> Vec<u8> {
        let len = entries.len() * 6;
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            SETTINGS_FRAME,
            0,
            0,
            0,
            0,
            0,
        ];
        for (id, v) in entries {
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f
    }

    #[test]
    fn reads_max_concurrent_streams_split_across_reads() {
        let peer = PeerSettings::new();
        let mut p = SettingsParser::new(peer.clone());
        let frame = settings_frame(&[(0x1, 4096), (0x3, 7), (0x4, 65535)]);
        for b in frame.chunks(4) {
            p.feed(b);
        }
        assert!(p.is_done());
        assert_eq!(peer.max_concurrent_streams.load(Ordering::Relaxed), 7);
        // Later frames are ignored.
        p.feed(&settings_frame(&[(0x3, 1)]));
        assert_eq!(peer.max_concurrent_streams.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn means_unlimited_when_the_peer_sets_no_limit() {
        let peer = PeerSettings::new();
        let mut p = SettingsParser::new(peer.clone());
        p.feed(&settings_frame(&[(0x4, 65535)]));
        assert!(p.is_done());
        assert_eq!(
            peer.max_concurrent_streams.load(Ordering::Relaxed),
            u32::MAX
        );
    }

    #[tokio::test]
    async fn signals_the_pool_once_the_first_settings_are_read() {
        let peer = PeerSettings::new();
        let mut p = SettingsParser::new(peer.clone());
        p.feed(&settings_frame(&[]));
        // The permit was stored before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(1), peer.seen.notified())
            .await
            .expect("notified");
    }
}
