//! HTTP compression of an HTTP listener's responses (`http.compression`, Envoy's
//! compressor filter) and decompression of its requests and responses
//! (`http.decompression`, Envoy's decompressor filter), spelled for Sinew's YAML.
//!
//! The behaviour is Envoy's: a response is compressed with the algorithm the client's
//! `Accept-Encoding` prefers (q-values, then the order listed here) when it is at least
//! `min_content_length` bytes (or of unknown length), of a listed content type, not
//! already encoded, not `Cache-Control: no-transform`, and not a HEAD, 1xx, 204 or 304
//! answer. The proxy code is in `sinew-proxy`'s `filters/compression`.

use serde::Deserialize;

use crate::ConfigError;

/// A content coding Sinew can produce and read (RFC 9110 §8.4.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Gzip,
    /// Brotli, `Content-Encoding: br`.
    #[serde(alias = "brotli")]
    Br,
    Zstd,
}

impl Algorithm {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
        }
    }
}

/// Response compression for a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// The algorithms offered, in the order preferred when the client's q-values tie.
    #[serde(default = "default_encoders")]
    pub algorithms: Vec<Encoder>,
    /// Responses whose `Content-Length` is below this are sent as they are (Envoy's
    /// default, 30). A response of unknown length (streamed) is compressed.
    #[serde(default = "default_min_content_length")]
    pub min_content_length: u64,
    /// Media types (without parameters) that are compressed; when unset, Envoy's list
    /// (JSON, JavaScript, HTML, CSS, plain text, XML, SVG and their usual synonyms). A
    /// response without `Content-Type` is compressed.
    #[serde(default)]
    pub content_types: Option<Vec<String>>,
    /// Do not compress a response that has an `ETag` (unless `weaken_etag_on_compress`).
    #[serde(default)]
    pub disable_on_etag_header: bool,
    /// When compressing, turn a strong `ETag` into a weak one instead of removing it.
    #[serde(default)]
    pub weaken_etag_on_compress: bool,
    /// Remove `Accept-Encoding` from requests sent upstream, so the upstream sends its
    /// bodies unencoded and Sinew compresses them.
    #[serde(default)]
    pub remove_accept_encoding_header: bool,
    /// Response statuses never compressed (for example 206).
    #[serde(default)]
    pub uncompressible_response_codes: Vec<u16>,
}

/// One algorithm offered, with its tuning.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoder {
    pub algorithm: Algorithm,
    /// gzip: 0-9 (6 when unset, zlib's default); brotli: quality 0-11 (3 when unset,
    /// Envoy's default); zstd: 1-22 (3 when unset, zstd's default).
    #[serde(default)]
    pub level: Option<u32>,
    /// brotli only: the window, 10-24 (18 when unset, Envoy's default).
    #[serde(default)]
    pub window_bits: Option<u32>,
    /// zstd only: end each frame with a checksum (Envoy's `enable_checksum`).
    #[serde(default)]
    pub checksum: bool,
    /// Preferred over the others when the client's q-values tie (Envoy's `choose_first`).
    #[serde(default)]
    pub choose_first: bool,
}

fn default_encoders() -> Vec<Encoder> {
    vec![Encoder {
        algorithm: Algorithm::Gzip,
        level: None,
        window_bits: None,
        checksum: false,
        choose_first: false,
    }]
}

fn default_min_content_length() -> u64 {
    30
}

/// Request (and response) decompression for a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decompression {
    /// The encodings decoded; a body in any other is passed on as it is.
    #[serde(default = "default_decoders")]
    pub algorithms: Vec<Algorithm>,
    /// Decode request bodies before they go upstream (Envoy's default: on).
    #[serde(default = "default_true")]
    pub request: bool,
    /// Decode response bodies before they go downstream (Envoy's default: on).
    #[serde(default = "default_true")]
    pub response: bool,
    /// With `response` on, add the decoded encodings to the request's `Accept-Encoding`
    /// so the upstream may use them (Envoy's `advertise_accept_encoding`, default on).
    #[serde(default = "default_true")]
    pub advertise_accept_encoding: bool,
    /// Decode even when `Cache-Control: no-transform` says not to.
    #[serde(default)]
    pub ignore_no_transform_header: bool,
    /// Decompression-bomb guard: a body may not grow past this many times the encoded
    /// bytes read so far (Envoy's `max_inflate_ratio`, default 100). A request that does
    /// gets 413; a response is cut off (its stream reset).
    #[serde(default = "default_max_inflate_ratio")]
    pub max_inflate_ratio: u32,
}

fn default_decoders() -> Vec<Algorithm> {
    vec![Algorithm::Gzip]
}

fn default_true() -> bool {
    true
}

fn default_max_inflate_ratio() -> u32 {
    100
}

pub(crate) fn check_compression(path: &str, c: &Compression, errors: &mut Vec<ConfigError>) {
    if c.algorithms.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.algorithms"),
            "must list at least one algorithm",
        ));
    }
    for (i, e) in c.algorithms.iter().enumerate() {
        let p = format!("{path}.algorithms[{i}]");
        if c.algorithms[..i].iter().any(|o| o.algorithm == e.algorithm) {
            errors.push(ConfigError::new(
                format!("{p}.algorithm"),
                format!("{} is listed twice", e.algorithm.token()),
            ));
        }
        let (max, name) = match e.algorithm {
            Algorithm::Gzip => (9, "0 to 9"),
            Algorithm::Br => (11, "0 to 11"),
            Algorithm::Zstd => (22, "1 to 22"),
        };
        if let Some(level) = e.level {
            let low = e.algorithm == Algorithm::Zstd && level == 0;
            if level > max || low {
                errors.push(ConfigError::new(
                    format!("{p}.level"),
                    format!("must be {name} for {}", e.algorithm.token()),
                ));
            }
        }
        match (e.algorithm, e.window_bits) {
            (_, None) => {}
            (Algorithm::Br, Some(w)) if (10..=24).contains(&w) => {}
            (Algorithm::Br, Some(_)) => errors.push(ConfigError::new(
                format!("{p}.window_bits"),
                "must be 10 to 24 for br",
            )),
            (_, Some(_)) => errors.push(ConfigError::new(
                format!("{p}.window_bits"),
                "is only settable for br",
            )),
        }
        if e.checksum && e.algorithm != Algorithm::Zstd {
            errors.push(ConfigError::new(
                format!("{p}.checksum"),
                "is only settable for zstd",
            ));
        }
    }
    for (i, t) in c.content_types.iter().flatten().enumerate() {
        if t.trim().is_empty() || t.contains(';') {
            errors.push(ConfigError::new(
                format!("{path}.content_types[{i}]"),
                "must be a media type without parameters",
            ));
        }
    }
}

pub(crate) fn check_decompression(path: &str, d: &Decompression, errors: &mut Vec<ConfigError>) {
    if d.algorithms.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.algorithms"),
            "must list at least one algorithm",
        ));
    }
    if d.max_inflate_ratio == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_inflate_ratio"),
            "must be at least 1",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_compression_block_is_envoys_defaults() {
        let c: Compression = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(c.min_content_length, 30);
        assert_eq!(c.algorithms.len(), 1);
        assert_eq!(c.algorithms[0].algorithm, Algorithm::Gzip);
        assert!(c.content_types.is_none());
        let d: Decompression = serde_yaml_ng::from_str("{}").unwrap();
        assert!(d.request && d.response && d.advertise_accept_encoding);
        assert_eq!(d.max_inflate_ratio, 100);
    }

    #[test]
    fn levels_out_of_range_and_duplicates_are_refused() {
        let c: Compression = serde_yaml_ng::from_str(
            "algorithms: [{algorithm: gzip, level: 10}, {algorithm: brotli, window_bits: 30},
                          {algorithm: gzip}, {algorithm: zstd, level: 0}]",
        )
        .unwrap();
        let mut errors = Vec::new();
        check_compression("c", &c, &mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "c.algorithms[0].level",
                "c.algorithms[1].window_bits",
                "c.algorithms[2].algorithm",
                "c.algorithms[3].level"
            ]
        );
    }
}
