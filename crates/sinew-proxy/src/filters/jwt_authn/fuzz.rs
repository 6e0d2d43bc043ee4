//! Fuzzing of what reaches the filter from outside: tokens (as bytes, and as damaged
//! JSON inside well-formed base64url) and key sets (from files and remote servers). Each
//! input gets an answer or a clear error, never a panic; and no damaged token verifies.

use base64::Engine as _;
use sinew_fuzz::proptest::prelude::*;

use super::jwks::{self, BASE64URL};
use super::token::tests::{jwks as jwks_text, TestKey};
use super::token::{self, Expectations};

const TOKEN_DICTIONARY: &[&[u8]] = &[
    b".",
    b"..",
    b"eyJ",
    b"eyJhbGciOiJub25lIn0",
    b"e30",
    b"=",
    b"-",
    b"_",
    b"AAAA",
    b"////",
    b"++",
    b" ",
    b"\xff",
];

const JSON_DICTIONARY: &[&[u8]] = &[
    b"\"alg\"",
    b"\"none\"",
    b"\"HS256\"",
    b"\"ES256\"",
    b"\"EdDSA\"",
    b"\"kid\"",
    b"\"kty\"",
    b"\"RSA\"",
    b"\"EC\"",
    b"\"OKP\"",
    b"\"crv\"",
    b"\"P-256\"",
    b"\"Ed25519\"",
    b"\"x\"",
    b"\"y\"",
    b"\"n\"",
    b"\"e\"",
    b"\"keys\"",
    b"\"exp\"",
    b"\"nbf\"",
    b"\"aud\"",
    b"\"iss\"",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"1e999",
    b"-9223372036854775808",
    b"18446744073709551616",
    b"\"\\u0000\"",
    b",",
    b":",
    b"\"",
];

fn expectations(now: i64) -> Expectations<'static> {
    Expectations {
        issuer: "https://idp",
        audiences: &[],
        clock_skew_seconds: 60,
        now,
    }
}

/// Parses and checks `text` as a token; Ok(true) when it verifies.
fn verifies(text: &str, keys: &jwks::KeySet) -> bool {
    let Ok(t) = token::parse(text) else {
        return false;
    };
    t.check_claims(&expectations(1_800_000_000)).is_ok() && t.check_signature(keys).is_ok()
}

#[test]
fn fuzz_jwt_token_bytes() {
    let keys = [TestKey::ec("ES256", "e"), TestKey::ed25519("o")];
    let set = jwks::parse(&jwks_text(&[&keys[0], &keys[1]])).unwrap().set;
    let claims = serde_json::json!({"iss": "https://idp", "sub": "s", "exp": 1_900_000_000i64});
    let samples: Vec<String> = keys.iter().map(|k| k.sign(&claims)).collect();
    for s in &samples {
        assert!(verifies(s, &set), "the unmutated samples verify");
    }
    let originals = samples.clone();
    sinew_fuzz::run(
        "fuzz_jwt_token_bytes",
        4,
        prop_oneof![
            sinew_fuzz::mutated_text(samples, TOKEN_DICTIONARY),
            sinew_fuzz::token_soup(TOKEN_DICTIONARY, 24)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        |text| {
            // A token that verifies is one of the samples: damage never passes.
            if verifies(&text, &set) {
                let signed = |t: &str| t.rsplit_once('.').map(|(s, _)| s.to_string());
                prop_assert!(
                    originals.iter().any(|o| signed(o) == signed(&text)),
                    "a damaged token verified: {text}"
                );
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_jwt_token_json() {
    let key = TestKey::ed25519("o");
    let set = jwks::parse(&jwks_text(&[&key])).unwrap().set;
    let headers = vec![
        r#"{"alg":"EdDSA","kid":"o","typ":"JWT"}"#.to_string(),
        r#"{"alg":"ES256"}"#.to_string(),
    ];
    let payloads = vec![
        r#"{"iss":"https://idp","sub":"s","aud":["a","b"],"exp":1900000000,"nbf":1,"iat":2}"#
            .to_string(),
        r#"{"iss":"https://idp","realm":{"roles":["x"]}}"#.to_string(),
    ];
    sinew_fuzz::run(
        "fuzz_jwt_token_json",
        4,
        (
            sinew_fuzz::mutated_text(headers, JSON_DICTIONARY),
            sinew_fuzz::mutated_text(payloads, JSON_DICTIONARY),
        ),
        |(header, payload)| {
            let text = format!(
                "{}.{}.{}",
                BASE64URL.encode(&header),
                BASE64URL.encode(&payload),
                BASE64URL.encode([7u8; 64])
            );
            // Whatever the JSON says, a made-up signature never verifies.
            prop_assert!(!verifies(&text, &set), "{text}");
            Ok(())
        },
    );
}

#[test]
fn fuzz_jwks() {
    let keys = [
        TestKey::ec("ES256", "e"),
        TestKey::ec("ES384", "f"),
        TestKey::ed25519("o"),
    ];
    let mut samples = vec![jwks_text(&[&keys[0], &keys[1], &keys[2]])];
    samples.push(
        r#"{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","use":"sig","n":"AQAB","e":"AQAB"}]}"#
            .to_string(),
    );
    sinew_fuzz::run(
        "fuzz_jwks",
        2,
        prop_oneof![
            sinew_fuzz::mutated_text(samples, JSON_DICTIONARY),
            sinew_fuzz::token_soup(JSON_DICTIONARY, 24)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        |text| {
            match jwks::parse(&text) {
                Ok(parsed) => prop_assert!(parsed.set.len() <= 64),
                Err(why) => prop_assert!(!why.is_empty()),
            }
            Ok(())
        },
    );
}
