//! The streaming encoders and decoders behind the compression filter, one per algorithm,
//! each fed a body chunk at a time and giving back what it produced for that chunk.
//!
//! Encoders flush after every chunk (a sync flush for gzip, brotli's and zstd's flush):
//! a streamed response (server-sent events, a slow JSON stream) reaches the client as it
//! is produced instead of sitting in the compressor's window. Upstream chunks are reads
//! of several KiB, so the ratio lost to flushing is small.
//!
//! Decoders write into a [`Capped`] sink: the bound is checked as the decoder writes
//! each of its internal output buffers, so a small input that expands enormously (a
//! decompression bomb) is stopped after one buffer past the bound, not after it has
//! been expanded whole in memory.

use std::io::{self, Write};

use bytes::Bytes;
use sinew_config::compression::{Algorithm, Encoder as EncoderConfig};

/// gzip's default level (zlib's `Z_DEFAULT_COMPRESSION`).
const GZIP_LEVEL: u32 = 6;
/// Envoy's brotli defaults: quality 3, a 2^18-byte window.
const BROTLI_QUALITY: u32 = 3;
const BROTLI_WINDOW: u32 = 18;
/// zstd's default level.
const ZSTD_LEVEL: u32 = 3;
/// The buffer size brotli's writers work through.
const BROTLI_BUFFER: usize = 4096;

/// A compressor for one response body.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// Finished: nothing more is produced.
    Done,
}

impl Encoder {
    pub(crate) fn new(config: &EncoderConfig) -> io::Result<Self> {
        Ok(match config.algorithm {
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(config.level.unwrap_or(GZIP_LEVEL)),
            )),
            Algorithm::Br => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                config.level.unwrap_or(BROTLI_QUALITY),
                config.window_bits.unwrap_or(BROTLI_WINDOW),
            ))),
            Algorithm::Zstd => {
                let level = config.level.unwrap_or(ZSTD_LEVEL) as i32;
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)?;
                encoder.include_checksum(config.checksum)?;
                Encoder::Zstd(encoder)
            }
        })
    }

    /// Compresses `chunk` and flushes: what the client can be sent now.
    pub(crate) fn chunk(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                Ok(take(e.get_mut()))
            }
            Encoder::Brotli(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                Ok(take(e.get_mut()))
            }
            Encoder::Zstd(e) => {
                e.write_all(chunk)?;
                e.flush()?;
                Ok(take(e.get_mut()))
            }
            Encoder::Done => Ok(Bytes::new()),
        }
    }

    /// Ends the stream: the encoding's trailer (gzip's CRC and length, the last blocks).
    pub(crate) fn finish(&mut self) -> io::Result<Bytes> {
        match std::mem::replace(self, Encoder::Done) {
            Encoder::Gzip(e) => e.finish().map(Bytes::from),
            // Taking the writer out finishes the stream (brotli's `into_inner`).
            Encoder::Brotli(e) => Ok(Bytes::from(e.into_inner())),
            Encoder::Zstd(e) => e.finish().map(Bytes::from),
            Encoder::Done => Ok(Bytes::new()),
        }
    }
}

fn take(buf: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::take(buf))
}

/// Why a body could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CodingError {
    /// It grew past its bound: a decompression bomb, or simply too large.
    TooLarge,
    /// It is not valid in its encoding.
    Malformed(String),
}

impl std::fmt::Display for CodingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodingError::TooLarge => write!(f, "decompressed body over its bound"),
            CodingError::Malformed(e) => write!(f, "cannot be decompressed: {e}"),
        }
    }
}

/// The output of a decoder, refusing to grow past `limit` bytes in all.
pub(crate) struct Capped {
    buf: Vec<u8>,
    /// Bytes handed on already (taken out of `buf`).
    emitted: u64,
    limit: u64,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.emitted + (self.buf.len() + data.len()) as u64 > self.limit {
            self.over = true;
            return Err(io::Error::other("decompressed body over its bound"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum DecoderKind {
    Gzip(flate2::write::GzDecoder<Capped>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(zstd::stream::write::Decoder<'static, Capped>),
}

/// A decompressor for one body, with the decompression-bomb bound: the output may not
/// exceed `max_inflate_ratio` times the encoded bytes read so far.
pub(crate) struct Decoder {
    kind: DecoderKind,
    ratio: u64,
    read: u64,
}

impl Decoder {
    pub(crate) fn new(algorithm: Algorithm, max_inflate_ratio: u32) -> io::Result<Self> {
        let sink = Capped {
            buf: Vec::new(),
            emitted: 0,
            limit: 0,
            over: false,
        };
        let kind = match algorithm {
            Algorithm::Gzip => DecoderKind::Gzip(flate2::write::GzDecoder::new(sink)),
            Algorithm::Br => DecoderKind::Brotli(Box::new(brotli::DecompressorWriter::new(
                sink,
                BROTLI_BUFFER,
            ))),
            Algorithm::Zstd => DecoderKind::Zstd(zstd::stream::write::Decoder::new(sink)?),
        };
        Ok(Decoder {
            kind,
            ratio: u64::from(max_inflate_ratio.max(1)),
            read: 0,
        })
    }

    fn sink(&mut self) -> &mut Capped {
        match &mut self.kind {
            DecoderKind::Gzip(d) => d.get_mut(),
            DecoderKind::Brotli(d) => d.get_mut(),
            DecoderKind::Zstd(d) => d.get_mut(),
        }
    }

    /// Decodes `chunk`: the decoded bytes it gave.
    pub(crate) fn chunk(&mut self, chunk: &[u8]) -> Result<Bytes, CodingError> {
        self.read += chunk.len() as u64;
        let limit = self.read.saturating_mul(self.ratio);
        self.sink().limit = limit;
        let written = match &mut self.kind {
            DecoderKind::Gzip(d) => d.write_all(chunk).and_then(|()| d.flush()),
            DecoderKind::Brotli(d) => d.write_all(chunk).and_then(|()| d.flush()),
            DecoderKind::Zstd(d) => d.write_all(chunk).and_then(|()| d.flush()),
        };
        self.output(written)
    }

    /// The end of the encoded body: what the decoder still held; an error when the body
    /// stopped inside its encoding.
    pub(crate) fn finish(&mut self) -> Result<Bytes, CodingError> {
        let finished = match &mut self.kind {
            DecoderKind::Gzip(d) => d.try_finish(),
            DecoderKind::Brotli(d) => d.close().map_err(io::Error::other),
            DecoderKind::Zstd(d) => d.flush(),
        };
        self.output(finished)
    }

    fn output(&mut self, result: io::Result<()>) -> Result<Bytes, CodingError> {
        let sink = self.sink();
        if sink.over {
            return Err(CodingError::TooLarge);
        }
        result.map_err(|e| CodingError::Malformed(e.to_string()))?;
        let out = take(&mut sink.buf);
        sink.emitted += out.len() as u64;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(algorithm: Algorithm) -> EncoderConfig {
        EncoderConfig {
            algorithm,
            level: None,
            window_bits: None,
            checksum: algorithm == Algorithm::Zstd,
            choose_first: false,
        }
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"id\":{i},\"name\":\"item {}\"}},", i % 17))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn each_algorithm_round_trips_chunk_by_chunk() {
        let input = body(2000);
        for algorithm in [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd] {
            let mut encoder = Encoder::new(&config(algorithm)).unwrap();
            let mut encoded = Vec::new();
            for chunk in input.chunks(5000) {
                let out = encoder.chunk(chunk).unwrap();
                // Flushed per chunk: every chunk gives the client something.
                assert!(!out.is_empty(), "{algorithm:?}");
                encoded.extend_from_slice(&out);
            }
            encoded.extend_from_slice(&encoder.finish().unwrap());
            assert!(encoded.len() < input.len() / 4, "{algorithm:?} compresses");
            let mut decoder = Decoder::new(algorithm, 100).unwrap();
            let mut decoded = Vec::new();
            for chunk in encoded.chunks(700) {
                decoded.extend_from_slice(&decoder.chunk(chunk).unwrap());
            }
            decoded.extend_from_slice(&decoder.finish().unwrap());
            assert_eq!(decoded, input, "{algorithm:?}");
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_ratio() {
        let zeros = vec![0u8; 50 << 20];
        for algorithm in [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd] {
            let mut encoder = Encoder::new(&config(algorithm)).unwrap();
            let mut bomb = encoder.chunk(&zeros).unwrap().to_vec();
            bomb.extend_from_slice(&encoder.finish().unwrap());
            assert!(bomb.len() < (50 << 20) / 100, "{algorithm:?}: a real bomb");
            let mut decoder = Decoder::new(algorithm, 100).unwrap();
            let mut out = 0usize;
            let mut result = Ok(());
            for chunk in bomb.chunks(1024) {
                match decoder.chunk(chunk) {
                    Ok(b) => out += b.len(),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            assert_eq!(result, Err(CodingError::TooLarge), "{algorithm:?}");
            assert!(out <= bomb.len() * 100, "{algorithm:?}");
        }
    }

    #[test]
    fn garbage_is_malformed_not_too_large() {
        for algorithm in [Algorithm::Gzip, Algorithm::Br, Algorithm::Zstd] {
            let mut decoder = Decoder::new(algorithm, 100).unwrap();
            let got = decoder
                .chunk(b"this is not compressed at all, not even a little")
                .and_then(|_| decoder.finish());
            assert!(
                matches!(got, Err(CodingError::Malformed(_))),
                "{algorithm:?}: {got:?}"
            );
        }
    }
}
