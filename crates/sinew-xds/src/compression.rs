//! Envoy's compressor and decompressor HTTP filters (`envoy.filters.http.compressor`,
//! `envoy.filters.http.decompressor`) in a connection manager's filter chain, mapped to
//! the model's `compression` and `decompression` (docs/config.md).
//!
//! How Envoy's shape folds into Sinew's:
//! - Envoy has one compressor filter per algorithm (its `compressor_library`); several
//!   in one chain offer several algorithms, chosen by the client's q-values and then the
//!   filters' order (`choose_first` first). Sinew has one `compression` block with a list
//!   of algorithms in that order, and one set of response settings: compressor filters
//!   whose response settings differ are refused.
//! - Likewise decompressor filters fold into one `decompression` with a list of
//!   algorithms, and must agree on their direction settings.
//! - Sinew decompresses a response before it compresses it: a decompressor placed
//!   before a compressor (the other order in Envoy) is refused when it decodes
//!   responses.
//! - Tuning that only changes buffer sizes or memory (`chunk_size`, gzip's
//!   `memory_level` and `window_bits`, brotli's ring-buffer flag) is accepted: the bytes a
//!   client decodes are the same. What would change the output or the behaviour and
//!   Sinew cannot do (request compression, zstd dictionaries, gzip strategies, brotli
//!   encoder modes, the status header, runtime keys' overrides) is refused by its field.

use envoy_types::pb::envoy::config::core::v3::{RuntimeFeatureFlag, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::compression::brotli::compressor::v3::Brotli;
use envoy_types::pb::envoy::extensions::compression::brotli::decompressor::v3::Brotli as BrotliDecompressor;
use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use envoy_types::pb::envoy::extensions::compression::gzip::decompressor::v3::Gzip as GzipDecompressor;
use envoy_types::pb::envoy::extensions::compression::zstd::compressor::v3::Zstd;
use envoy_types::pb::envoy::extensions::compression::zstd::decompressor::v3::Zstd as ZstdDecompressor;
use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::Compressor;
use envoy_types::pb::envoy::extensions::filters::http::decompressor::v3::{
    decompressor::CommonDirectionConfig, Decompressor,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::Any;
use serde_json::{json, Map, Value};

use crate::{Ctx, XdsError};

pub(crate) const COMPRESSOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
pub(crate) const DECOMPRESSOR_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor";
const GZIP: &str = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI: &str = "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD: &str = "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd";
const GZIP_D: &str = "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip";
const BROTLI_D: &str =
    "type.googleapis.com/envoy.extensions.compression.brotli.decompressor.v3.Brotli";
const ZSTD_D: &str = "type.googleapis.com/envoy.extensions.compression.zstd.decompressor.v3.Zstd";

/// Envoy's default `max_inflate_ratio` (gzip's decompressor).
const DEFAULT_INFLATE_RATIO: u32 = 100;

/// The compressor and decompressor filters of one connection manager, as they are read.
#[derive(Default)]
pub(crate) struct Filters {
    /// `(algorithm entry, choose_first)` in filter order.
    encoders: Vec<Value>,
    /// The response settings every compressor filter must share.
    response: Option<(Map<String, Value>, String)>,
    decoders: Vec<Value>,
    /// The settings every decompressor filter must share, and where they were first seen.
    decompression: Option<(Map<String, Value>, String)>,
    /// A decompressor that decodes responses was seen (a compressor after it is refused).
    decodes_responses: bool,
    max_inflate_ratio: Option<u32>,
}

impl Filters {
    /// Reads one compressor filter's config (`any`, at `path`).
    pub(crate) fn compressor(&mut self, ctx: &Ctx, path: &str, any: &Any) -> Result<(), XdsError> {
        let mut config: Compressor = prost::Message::decode(any.value.as_slice())
            .map_err(|e| ctx.error(path, format!("is not a valid Compressor: {e}")))?;
        if self.decodes_responses {
            return Err(ctx.error(
                path,
                "a compressor after a decompressor that decodes responses is not supported by \
                 Sinew (it decompresses responses before compressing them: list the \
                 compressor first)",
            ));
        }
        let library = config
            .compressor_library
            .take()
            .ok_or_else(|| ctx.error(format!("{path}.compressor_library"), "is required"))?;
        let lpath = format!("{path}.compressor_library");
        let encoder = encoder(
            ctx,
            &lpath,
            library,
            std::mem::take(&mut config.choose_first),
        )?;
        let response = response_settings(ctx, path, &mut config)?;
        // Left set: what Sinew cannot do (request compression).
        ctx.only_supported(path, &config)?;
        let Some(response) = response else {
            // Response compression turned off: the filter does nothing Sinew must do.
            return Ok(());
        };
        same_as_first(
            &mut self.response,
            response,
            ctx,
            path,
            "compressor filters with different response settings",
        )?;
        self.encoders.push(encoder);
        Ok(())
    }

    /// Reads one decompressor filter's config (`any`, at `path`).
    pub(crate) fn decompressor(
        &mut self,
        ctx: &Ctx,
        path: &str,
        any: &Any,
    ) -> Result<(), XdsError> {
        let mut config: Decompressor = prost::Message::decode(any.value.as_slice())
            .map_err(|e| ctx.error(path, format!("is not a valid Decompressor: {e}")))?;
        let library = config
            .decompressor_library
            .take()
            .ok_or_else(|| ctx.error(format!("{path}.decompressor_library"), "is required"))?;
        let lpath = format!("{path}.decompressor_library");
        let algorithm = self.decoder(ctx, &lpath, library)?;
        let mut settings = Map::new();
        let mut request = config.request_direction_config.take().unwrap_or_default();
        let rpath = format!("{path}.request_direction_config");
        let (request_on, request_ignore) = common(
            ctx,
            &format!("{rpath}.common_config"),
            request.common_config.take(),
        )?;
        let advertise = request
            .advertise_accept_encoding
            .take()
            .is_none_or(|b| b.value);
        ctx.only_supported(&rpath, &request)?;
        let mut response = config.response_direction_config.take().unwrap_or_default();
        let spath = format!("{path}.response_direction_config");
        let (response_on, response_ignore) = common(
            ctx,
            &format!("{spath}.common_config"),
            response.common_config.take(),
        )?;
        ctx.only_supported(&spath, &response)?;
        ctx.only_supported(path, &config)?;
        if request_on && response_on && request_ignore != response_ignore {
            return Err(ctx.error(
                format!("{spath}.common_config.ignore_no_transform_header"),
                "differing from the request direction's is not supported by Sinew",
            ));
        }
        if !request_on && !response_on {
            return Ok(());
        }
        settings.insert("request".into(), json!(request_on));
        settings.insert("response".into(), json!(response_on));
        settings.insert("advertise_accept_encoding".into(), json!(advertise));
        settings.insert(
            "ignore_no_transform_header".into(),
            json!((request_on && request_ignore) || (response_on && response_ignore)),
        );
        same_as_first(
            &mut self.decompression,
            settings,
            ctx,
            path,
            "decompressor filters with different direction settings",
        )?;
        self.decodes_responses |= response_on;
        if !self.decoders.contains(&algorithm) {
            self.decoders.push(algorithm);
        }
        Ok(())
    }

    /// The model's `compression` and `decompression`, into the connection manager's JSON.
    pub(crate) fn finish(self, out: &mut Map<String, Value>) {
        if let Some((mut response, _)) = self.response {
            // choose_first filters come first; the rest keep their filter order.
            let mut encoders = self.encoders;
            encoders.sort_by_key(|e| !e["choose_first"].as_bool().unwrap_or(false));
            response.insert("algorithms".into(), Value::Array(encoders));
            out.insert("compression".into(), Value::Object(response));
        }
        if let Some((mut settings, _)) = self.decompression {
            settings.insert("algorithms".into(), Value::Array(self.decoders));
            settings.insert(
                "max_inflate_ratio".into(),
                json!(self.max_inflate_ratio.unwrap_or(DEFAULT_INFLATE_RATIO)),
            );
            out.insert("decompression".into(), Value::Object(settings));
        }
    }

    /// A decompressor library: its algorithm's name for the model.
    fn decoder(
        &mut self,
        ctx: &Ctx,
        path: &str,
        library: TypedExtensionConfig,
    ) -> Result<Value, XdsError> {
        let any = library
            .typed_config
            .ok_or_else(|| ctx.error(format!("{path}.typed_config"), "is required"))?;
        let tpath = format!("{path}.typed_config");
        let bad = |e: prost::DecodeError| ctx.error(&tpath, format!("does not decode: {e}"));
        Ok(match any.type_url.as_str() {
            GZIP_D => {
                let mut gzip: GzipDecompressor =
                    prost::Message::decode(any.value.as_slice()).map_err(bad)?;
                // Sinew reads any window up to 2^15 and picks its own buffer size.
                if let Some(bits) = gzip.window_bits.take() {
                    if !(9..=15).contains(&bits.value) {
                        return Err(ctx.error(format!("{tpath}.window_bits"), "must be 9 to 15"));
                    }
                }
                gzip.chunk_size = None;
                if let Some(ratio) = gzip.max_inflate_ratio.take() {
                    if ratio.value == 0 {
                        return Err(
                            ctx.error(format!("{tpath}.max_inflate_ratio"), "must be at least 1")
                        );
                    }
                    self.max_inflate_ratio = Some(ratio.value);
                }
                ctx.only_supported(&tpath, &gzip)?;
                json!("gzip")
            }
            BROTLI_D => {
                let mut brotli: BrotliDecompressor =
                    prost::Message::decode(any.value.as_slice()).map_err(bad)?;
                brotli.chunk_size = None;
                brotli.disable_ring_buffer_reallocation = false;
                ctx.only_supported(&tpath, &brotli)?;
                json!("br")
            }
            ZSTD_D => {
                let mut zstd: ZstdDecompressor =
                    prost::Message::decode(any.value.as_slice()).map_err(bad)?;
                zstd.chunk_size = None;
                ctx.only_supported(&tpath, &zstd)?;
                json!("zstd")
            }
            other => {
                return Err(ctx.error(
                    tpath,
                    format!(
                        "decompressor library {other:?} is not supported by Sinew (gzip, \
                         brotli and zstd are)"
                    ),
                ))
            }
        })
    }
}

/// A compressor library: the model's algorithm entry.
fn encoder(
    ctx: &Ctx,
    path: &str,
    library: TypedExtensionConfig,
    choose_first: bool,
) -> Result<Value, XdsError> {
    let any = library
        .typed_config
        .ok_or_else(|| ctx.error(format!("{path}.typed_config"), "is required"))?;
    let tpath = format!("{path}.typed_config");
    let bad = |e: prost::DecodeError| ctx.error(&tpath, format!("does not decode: {e}"));
    let mut out = Map::new();
    match any.type_url.as_str() {
        GZIP => {
            let mut gzip: Gzip = prost::Message::decode(any.value.as_slice()).map_err(bad)?;
            out.insert("algorithm".into(), json!("gzip"));
            // DEFAULT_COMPRESSION (0) is zlib's level 6; the others are their level.
            match std::mem::take(&mut gzip.compression_level) {
                0 => {}
                level @ 1..=9 => {
                    out.insert("level".into(), json!(level));
                }
                other => {
                    return Err(ctx.error(
                        format!("{tpath}.compression_level"),
                        format!("{other} is not a compression level"),
                    ))
                }
            }
            // Memory and buffer sizes: Sinew's deflate uses a 2^15 window and its own
            // buffers; a client decodes the same bytes either way.
            if let Some(bits) = gzip.window_bits.take() {
                if !(9..=15).contains(&bits.value) {
                    return Err(ctx.error(format!("{tpath}.window_bits"), "must be 9 to 15"));
                }
            }
            if let Some(level) = gzip.memory_level.take() {
                if !(1..=9).contains(&level.value) {
                    return Err(ctx.error(format!("{tpath}.memory_level"), "must be 1 to 9"));
                }
            }
            gzip.chunk_size = None;
            ctx.only_supported(&tpath, &gzip)?;
        }
        BROTLI => {
            let mut brotli: Brotli = prost::Message::decode(any.value.as_slice()).map_err(bad)?;
            out.insert("algorithm".into(), json!("br"));
            if let Some(q) = brotli.quality.take() {
                if q.value > 11 {
                    return Err(ctx.error(format!("{tpath}.quality"), "must be 0 to 11"));
                }
                out.insert("level".into(), json!(q.value));
            }
            if let Some(bits) = brotli.window_bits.take() {
                if !(10..=24).contains(&bits.value) {
                    return Err(ctx.error(format!("{tpath}.window_bits"), "must be 10 to 24"));
                }
                out.insert("window_bits".into(), json!(bits.value));
            }
            brotli.chunk_size = None;
            ctx.only_supported(&tpath, &brotli)?;
        }
        ZSTD => {
            let mut zstd: Zstd = prost::Message::decode(any.value.as_slice()).map_err(bad)?;
            out.insert("algorithm".into(), json!("zstd"));
            if let Some(level) = zstd.compression_level.take() {
                if !(1..=22).contains(&level.value) {
                    return Err(ctx.error(format!("{tpath}.compression_level"), "must be 1 to 22"));
                }
                out.insert("level".into(), json!(level.value));
            }
            if std::mem::take(&mut zstd.enable_checksum) {
                out.insert("checksum".into(), json!(true));
            }
            zstd.chunk_size = None;
            ctx.only_supported(&tpath, &zstd)?;
        }
        other => {
            return Err(ctx.error(
                tpath,
                format!(
                    "compressor library {other:?} is not supported by Sinew (gzip, brotli \
                     and zstd are)"
                ),
            ))
        }
    }
    if choose_first {
        out.insert("choose_first".into(), json!(true));
    }
    Ok(Value::Object(out))
}

/// The response settings of a compressor filter as the model's `compression` fields;
/// None when response compression is turned off. Reads `response_direction_config`,
/// or the deprecated top-level fields when it is unset (as Envoy does).
#[allow(deprecated)]
fn response_settings(
    ctx: &Ctx,
    path: &str,
    config: &mut Compressor,
) -> Result<Option<Map<String, Value>>, XdsError> {
    let mut out = Map::new();
    let (enabled, min_length, content_types, matchers, etag, weaken, remove, codes, at);
    match config.response_direction_config.take() {
        Some(mut response) => {
            at = format!("{path}.response_direction_config");
            let mut common = response.common_config.take().unwrap_or_default();
            enabled = common.enabled.take();
            min_length = common.min_content_length.take();
            content_types = std::mem::take(&mut common.content_type);
            matchers = std::mem::take(&mut common.content_type_matcher);
            ctx.only_supported(format_args!("{at}.common_config"), &common)?;
            etag = std::mem::take(&mut response.disable_on_etag_header);
            weaken = std::mem::take(&mut response.weaken_etag_on_compress);
            remove = std::mem::take(&mut response.remove_accept_encoding_header);
            codes = std::mem::take(&mut response.uncompressible_response_codes);
            // What is left (the status header) is refused by its field.
            ctx.only_supported(&at, &response)?;
            // Envoy ignores the deprecated fields when this one is set.
            config.content_length = None;
            config.content_type.clear();
            config.disable_on_etag_header = false;
            config.remove_accept_encoding_header = false;
            config.runtime_enabled = None;
        }
        None => {
            at = path.to_string();
            enabled = config.runtime_enabled.take();
            min_length = config.content_length.take();
            content_types = std::mem::take(&mut config.content_type);
            matchers = Vec::new();
            etag = std::mem::take(&mut config.disable_on_etag_header);
            weaken = false;
            remove = std::mem::take(&mut config.remove_accept_encoding_header);
            codes = Vec::new();
        }
    }
    // Request compression, when on, stays set for the caller's `only_supported` to
    // refuse; turned off, it asks nothing of Sinew.
    let request_on = config.request_direction_config.as_ref().is_some_and(|r| {
        r.common_config
            .as_ref()
            .and_then(|c| c.enabled.clone())
            .is_none_or(|flag| feature_on(Some(flag)))
    });
    if !request_on {
        config.request_direction_config = None;
    }
    if !feature_on(enabled) {
        return Ok(None);
    }
    if let Some(n) = min_length {
        out.insert("min_content_length".into(), json!(n.value));
    }
    let mut types: Vec<String> = content_types;
    for (i, m) in matchers.into_iter().enumerate() {
        match m.match_pattern {
            Some(MatchPattern::Exact(t)) if !m.ignore_case || t == t.to_ascii_lowercase() => {
                types.push(t)
            }
            _ => {
                return Err(ctx.error(
                    format!("{at}.common_config.content_type_matcher[{i}]"),
                    "only exact matches are supported by Sinew here",
                ))
            }
        }
    }
    if !types.is_empty() {
        out.insert("content_types".into(), json!(types));
    }
    out.insert("disable_on_etag_header".into(), json!(etag));
    out.insert("weaken_etag_on_compress".into(), json!(weaken));
    out.insert("remove_accept_encoding_header".into(), json!(remove));
    if !codes.is_empty() {
        out.insert("uncompressible_response_codes".into(), json!(codes));
    }
    Ok(Some(out))
}

/// Whether a direction is on: unset, or its `default_value` true. The runtime key would
/// let Envoy's runtime turn it on or off; Sinew keeps the default.
fn feature_on(flag: Option<RuntimeFeatureFlag>) -> bool {
    flag.is_none_or(|f| f.default_value.is_none_or(|v| v.value))
}

/// A decompressor direction's common config: whether it is on, and whether it ignores
/// `no-transform`.
fn common(
    ctx: &Ctx,
    path: &str,
    config: Option<CommonDirectionConfig>,
) -> Result<(bool, bool), XdsError> {
    let mut config = config.unwrap_or_default();
    let on = feature_on(config.enabled.take());
    let ignore = std::mem::take(&mut config.ignore_no_transform_header);
    ctx.only_supported(path, &config)?;
    Ok((on, ignore))
}

/// Keeps the first filter's settings; a later filter whose settings differ is refused,
/// naming the first (Sinew runs one set of settings for all of them).
fn same_as_first<T: PartialEq>(
    first: &mut Option<(T, String)>,
    value: T,
    ctx: &Ctx,
    path: &str,
    what: &str,
) -> Result<(), XdsError> {
    match first {
        None => *first = Some((value, path.to_string())),
        Some((kept, at)) if *kept != value => {
            return Err(ctx.error(
                path,
                format!("{what} are not supported by Sinew (this one differs from {at})"),
            ))
        }
        Some(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::compressor::ResponseDirectionConfig;
    use envoy_types::pb::google::protobuf::UInt32Value;
    use prost::Message;

    fn u(value: u32) -> Option<UInt32Value> {
        Some(UInt32Value { value })
    }

    fn any<M: Message>(type_url: &str, m: &M) -> Any {
        Any {
            type_url: type_url.into(),
            value: m.encode_to_vec(),
        }
    }

    fn library<M: Message>(type_url: &str, m: &M) -> Option<TypedExtensionConfig> {
        Some(TypedExtensionConfig {
            name: "lib".into(),
            typed_config: Some(any(type_url, m)),
        })
    }

    #[test]
    fn several_compressor_filters_offer_several_algorithms_in_order() {
        let ctx = Ctx::new("listener", "l");
        let mut filters = Filters::default();
        let gzip = Compressor {
            compressor_library: library(
                GZIP,
                &Gzip {
                    compression_level: 9,
                    window_bits: u(10),
                    memory_level: u(3),
                    ..Default::default()
                },
            ),
            response_direction_config: Some(ResponseDirectionConfig {
                remove_accept_encoding_header: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let brotli = Compressor {
            compressor_library: library(
                BROTLI,
                &Brotli {
                    quality: u(5),
                    ..Default::default()
                },
            ),
            response_direction_config: Some(ResponseDirectionConfig {
                remove_accept_encoding_header: true,
                ..Default::default()
            }),
            choose_first: true,
            ..Default::default()
        };
        filters
            .compressor(&ctx, "f[0]", &any(COMPRESSOR_TYPE_URL, &gzip))
            .unwrap();
        filters
            .compressor(&ctx, "f[1]", &any(COMPRESSOR_TYPE_URL, &brotli))
            .unwrap();
        let mut out = Map::new();
        filters.finish(&mut out);
        assert_eq!(
            out["compression"],
            json!({
                "algorithms": [
                    {"algorithm": "br", "level": 5, "choose_first": true},
                    {"algorithm": "gzip", "level": 9},
                ],
                "disable_on_etag_header": false,
                "weaken_etag_on_compress": false,
                "remove_accept_encoding_header": true,
            })
        );
    }

    #[test]
    fn what_sinew_cannot_do_is_refused_by_its_field() {
        let ctx = Ctx::new("listener", "l");
        let cases = [
            (
                Compressor {
                    compressor_library: library(
                        GZIP,
                        &Gzip {
                            compression_strategy: 3,
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                },
                "f.compressor_library.typed_config.compression_strategy",
            ),
            (
                Compressor {
                    compressor_library: library(ZSTD, &Zstd::default()),
                    response_direction_config: Some(ResponseDirectionConfig {
                        status_header_enabled: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "f.response_direction_config.status_header_enabled",
            ),
            (
                Compressor {
                    compressor_library: library(GZIP, &Gzip::default()),
                    request_direction_config: Some(Default::default()),
                    ..Default::default()
                },
                "f.request_direction_config",
            ),
        ];
        for (config, field) in cases {
            let mut filters = Filters::default();
            let err = filters
                .compressor(&ctx, "f", &any(COMPRESSOR_TYPE_URL, &config))
                .unwrap_err();
            assert_eq!(err.field, field);
        }
    }

    #[test]
    fn decompressors_decode_both_directions_by_default() {
        let ctx = Ctx::new("listener", "l");
        let mut filters = Filters::default();
        let gzip = Decompressor {
            decompressor_library: library(
                GZIP_D,
                &GzipDecompressor {
                    max_inflate_ratio: u(20),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        let zstd = Decompressor {
            decompressor_library: library(ZSTD_D, &ZstdDecompressor::default()),
            ..Default::default()
        };
        filters
            .decompressor(&ctx, "f[0]", &any(DECOMPRESSOR_TYPE_URL, &gzip))
            .unwrap();
        filters
            .decompressor(&ctx, "f[1]", &any(DECOMPRESSOR_TYPE_URL, &zstd))
            .unwrap();
        // A compressor after a response decompressor would run in the other order.
        let late = Compressor {
            compressor_library: library(GZIP, &Gzip::default()),
            ..Default::default()
        };
        assert!(filters
            .compressor(&ctx, "f[2]", &any(COMPRESSOR_TYPE_URL, &late))
            .is_err());
        let mut out = Map::new();
        filters.finish(&mut out);
        assert_eq!(
            out["decompression"],
            json!({
                "algorithms": ["gzip", "zstd"],
                "request": true,
                "response": true,
                "advertise_accept_encoding": true,
                "ignore_no_transform_header": false,
                "max_inflate_ratio": 20,
            })
        );
    }
}
