//! The compression filter's decisions: which encoding a client's `Accept-Encoding`
//! chooses, which responses are compressed, what happens to their headers, and the
//! bodies coded as they stream.

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use sinew_config::compression::{Algorithm, Compression, Decompression, Encoder as EncoderConfig};

use super::*;

fn encoder(algorithm: Algorithm) -> EncoderConfig {
    EncoderConfig {
        algorithm,
        level: None,
        window_bits: None,
        checksum: false,
        choose_first: false,
    }
}

fn accept(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
    h
}

fn compressor(yaml: &str) -> Compressor {
    let c: Compression = serde_yaml_ng::from_str(yaml).unwrap();
    Compressor::compile(&c, "l", None)
}

const JSON: &str = "{\"items\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}";

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::text(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    r
}

const GZIP: Negotiated = Negotiated { choice: Some(0) };
const NONE: Negotiated = Negotiated { choice: None };

#[test]
fn accept_encoding_negotiation_follows_q_values_then_listed_order() {
    use Algorithm::{Br, Gzip, Zstd};
    let all = [encoder(Gzip), encoder(Br), encoder(Zstd)];
    let mut br_first = [encoder(Gzip), encoder(Br), encoder(Zstd)];
    br_first[1].choose_first = true;
    br_first.sort_by_key(|e| !e.choose_first);
    let table: &[(&[EncoderConfig], Option<&str>, Option<Algorithm>)] = &[
        // No header: Envoy does not compress.
        (&all, None, None),
        (&all, Some(""), None),
        (&all, Some("gzip"), Some(Gzip)),
        (&all, Some("GZIP"), Some(Gzip)),
        (&all, Some("x-gzip"), Some(Gzip)),
        (&all, Some("br"), Some(Br)),
        (&all, Some("gzip, deflate, br, zstd"), Some(Gzip)),
        (&all, Some("gzip;q=0.5, br"), Some(Br)),
        (&all, Some("gzip;q=0.5, br;q=0.8, zstd;q=0.9"), Some(Zstd)),
        (&all, Some("gzip; q=1.0, br;Q=0.999"), Some(Gzip)),
        // q=0 means "not acceptable" (RFC 9110 §12.4.2).
        (&all, Some("gzip;q=0"), None),
        (&all, Some("gzip;q=0, br;q=0.001"), Some(Br)),
        (&all, Some("*"), Some(Gzip)),
        (&all, Some("*;q=0.3, br;q=0.2"), Some(Gzip)),
        (&all, Some("*;q=0"), None),
        (&all, Some("deflate"), None),
        // identity preferred to every encoding we have: sent as it is.
        (&all, Some("identity;q=1, gzip;q=0.5"), None),
        (&all, Some("identity, gzip"), Some(Gzip)),
        (&all, Some("identity;q=0, *;q=0.1"), Some(Gzip)),
        // Malformed weights are ignored, not read as 1.
        (&all, Some("gzip;q=2, br"), Some(Br)),
        (&all, Some("gzip;q=0.1234, br;q=0.1"), Some(Br)),
        (&all, Some("gzip;q=abc"), None),
        // A repeated coding takes its higher weight.
        (&all, Some("gzip;q=0.1, br;q=0.5, gzip;q=0.9"), Some(Gzip)),
        // choose_first breaks ties, not weights.
        (&br_first, Some("gzip, br"), Some(Br)),
        (&br_first, Some("gzip, br;q=0.9"), Some(Gzip)),
        // Only configured algorithms are offered.
        (&all[..1], Some("br, zstd"), None),
    ];
    for (encoders, header, want) in table {
        let headers = header.map(accept).unwrap_or_default();
        let got = choose(encoders, &headers).map(|i| encoders[usize::from(i)].algorithm);
        assert_eq!(got, *want, "Accept-Encoding: {header:?}");
    }
    // Two header lines are one list.
    let mut two = accept("gzip;q=0.2");
    two.append(ACCEPT_ENCODING, HeaderValue::from_static("br"));
    assert_eq!(choose(&all, &two), Some(1));
}

#[test]
fn a_compressed_response_is_encoded_varies_and_loses_its_length() {
    let c = compressor("{}");
    let mut r = response(
        200,
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "63"),
        ],
        JSON,
    );
    c.on_response(GZIP, &mut r);
    assert_eq!(r.headers()[CONTENT_ENCODING], "gzip");
    assert_eq!(r.headers()[VARY], "Accept-Encoding");
    assert!(r.headers().get(CONTENT_LENGTH).is_none());
}

#[test]
fn a_response_the_client_cannot_take_compressed_still_varies() {
    let c = compressor("{}");
    let mut r = response(200, &[("content-type", "text/html")], JSON);
    c.on_response(NONE, &mut r);
    assert!(r.headers().get(CONTENT_ENCODING).is_none());
    assert_eq!(r.headers()[VARY], "Accept-Encoding");
}

#[test]
fn responses_that_must_not_be_compressed_are_left_alone() {
    let c = compressor("{uncompressible_response_codes: [206]}");
    // (status, response headers, request method, why it is left alone)
    #[allow(clippy::type_complexity)]
    let cases: &[(u16, &[(&str, &str)], &str, &str)] = &[
        (204, &[], "", "no content"),
        (304, &[], "", "not modified"),
        (206, &[], JSON, "listed as uncompressible"),
        (200, &[], "", "empty body"),
        (
            200,
            &[("content-length", "29")],
            JSON,
            "below min_content_length",
        ),
        (200, &[("content-encoding", "br")], JSON, "already encoded"),
        (
            200,
            &[("cache-control", "public, No-Transform")],
            JSON,
            "no-transform",
        ),
        (
            200,
            &[("content-type", "image/png")],
            JSON,
            "content type not listed",
        ),
    ];
    for (status, headers, body, why) in cases {
        let mut r = response(*status, headers, body);
        c.on_response(GZIP, &mut r);
        let encoding = r.headers().get(CONTENT_ENCODING);
        assert!(
            encoding.is_none() || encoding.unwrap() == "br",
            "{why}: compressed"
        );
        assert!(r.headers().get(VARY).is_none(), "{why}: Vary added");
    }
    // A local body shorter than the minimum, without Content-Length: its size is known.
    let mut short = response(200, &[], "tiny");
    c.on_response(GZIP, &mut short);
    assert!(short.headers().get(CONTENT_ENCODING).is_none());
}

#[test]
fn head_requests_negotiate_nothing_and_accept_encoding_may_be_removed() {
    let c = compressor("{remove_accept_encoding_header: true}");
    let mut req = http::Request::builder()
        .method("HEAD")
        .header(ACCEPT_ENCODING, "gzip")
        .body(sinew_stream::RequestBody::Filtered(Box::new(Taken)))
        .unwrap();
    assert_eq!(c.on_request(&mut req), None);
    assert!(req.headers().get(ACCEPT_ENCODING).is_none());
    let mut get = http::Request::builder()
        .header(ACCEPT_ENCODING, "br, gzip")
        .body(sinew_stream::RequestBody::Filtered(Box::new(Taken)))
        .unwrap();
    assert_eq!(c.on_request(&mut get), Some(GZIP));
}

#[test]
fn strong_etags_are_removed_or_weakened_and_weak_ones_kept() {
    let cases = [
        ("{}", "\"v1\"", None, true),
        ("{}", "W/\"v1\"", Some("W/\"v1\""), true),
        (
            "{weaken_etag_on_compress: true}",
            "\"v1\"",
            Some("W/\"v1\""),
            true,
        ),
        (
            "{disable_on_etag_header: true}",
            "W/\"v1\"",
            Some("W/\"v1\""),
            false,
        ),
        (
            "{disable_on_etag_header: true, weaken_etag_on_compress: true}",
            "\"v1\"",
            Some("W/\"v1\""),
            true,
        ),
    ];
    for (config, etag, want, compressed) in cases {
        let c = compressor(config);
        let mut r = response(200, &[("etag", etag)], JSON);
        c.on_response(GZIP, &mut r);
        let got = r.headers().get(ETAG).map(|v| v.to_str().unwrap());
        assert_eq!(got, want, "{config} {etag}");
        assert_eq!(
            r.headers().contains_key(CONTENT_ENCODING),
            compressed,
            "{config} {etag}"
        );
    }
}

#[test]
fn content_types_default_to_envoys_list_and_may_be_replaced() {
    let default = compressor("{}");
    let custom = compressor("{content_types: [application/grpc-web+json]}");
    let cases = [
        ("application/json", true, false),
        ("Text/HTML; charset=utf-8", true, false),
        ("image/svg+xml", true, false),
        ("application/javascript", true, false),
        ("image/jpeg", false, false),
        ("application/grpc-web+json", false, true),
    ];
    for (content_type, by_default, by_custom) in cases {
        for (c, want) in [(&default, by_default), (&custom, by_custom)] {
            let mut r = response(200, &[("content-type", content_type)], JSON);
            c.on_response(GZIP, &mut r);
            assert_eq!(
                r.headers().contains_key(CONTENT_ENCODING),
                want,
                "{content_type}"
            );
        }
    }
    // No Content-Type: compressed, as Envoy does.
    let mut r = response(200, &[], JSON);
    default.on_response(GZIP, &mut r);
    assert!(r.headers().contains_key(CONTENT_ENCODING));
}

#[test]
fn vary_is_not_repeated() {
    let c = compressor("{}");
    let mut r = response(200, &[("vary", "Origin, accept-encoding")], JSON);
    c.on_response(GZIP, &mut r);
    assert_eq!(r.headers().get_all(VARY).iter().count(), 1);
}

#[tokio::test]
async fn a_compressed_body_decodes_to_the_original() {
    let c = compressor("{algorithms: [{algorithm: br}, {algorithm: zstd}, {algorithm: gzip}]}");
    for (i, algorithm) in [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip]
        .into_iter()
        .enumerate()
    {
        let mut r = response(200, &[(CONTENT_TYPE.as_str(), "text/plain")], JSON);
        c.on_response(
            Negotiated {
                choice: Some(i as u8),
            },
            &mut r,
        );
        assert_eq!(r.headers()[CONTENT_ENCODING], algorithm.token());
        let encoded = r.into_body().collect().await.unwrap().to_bytes();
        let mut decoder = coder::Decoder::new(algorithm, 100).unwrap();
        let mut decoded = decoder.chunk(&encoded).unwrap().to_vec();
        decoded.extend_from_slice(&decoder.finish().unwrap());
        assert_eq!(decoded, JSON.as_bytes(), "{algorithm:?}");
    }
}

#[tokio::test]
async fn a_decompressor_decodes_responses_and_advertises_its_encodings() {
    let d: Decompression = serde_yaml_ng::from_str("{algorithms: [gzip, br]}").unwrap();
    let d = Decompressor::compile(&d, "l", None);
    let mut req = http::Request::builder()
        .header(ACCEPT_ENCODING, "zstd")
        .body(sinew_stream::RequestBody::Filtered(Box::new(Taken)))
        .unwrap();
    d.on_request(&mut req);
    assert_eq!(req.headers()[ACCEPT_ENCODING], "zstd, gzip, br");

    let mut encoder = coder::Encoder::new(&encoder(Algorithm::Gzip)).unwrap();
    let mut gz = encoder.chunk(JSON.as_bytes()).unwrap().to_vec();
    gz.extend_from_slice(&encoder.finish().unwrap());
    let mut r = Response::new(ResponseBody::text(Bytes::from(gz.clone())));
    r.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    r.headers_mut().insert(CONTENT_LENGTH, gz.len().into());
    d.on_response(&mut r);
    assert!(r.headers().get(CONTENT_ENCODING).is_none());
    assert!(r.headers().get(CONTENT_LENGTH).is_none());
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, JSON.as_bytes());

    // Only the outermost coding is taken off; an unknown one is left as it is.
    let mut layered = Response::new(ResponseBody::text("x"));
    layered
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd, gzip"));
    d.on_response(&mut layered);
    assert_eq!(layered.headers()[CONTENT_ENCODING], "zstd");
    let mut unknown = Response::new(ResponseBody::text("x"));
    unknown
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    d.on_response(&mut unknown);
    assert_eq!(unknown.headers()[CONTENT_ENCODING], "zstd");
}
