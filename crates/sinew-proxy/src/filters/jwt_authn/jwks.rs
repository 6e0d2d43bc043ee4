//! JSON Web Key Sets (RFC 7517): the public keys a provider's tokens are signed with,
//! parsed once per file or fetch into keys ready to verify with.
//!
//! Supported: RSA (`n`, `e`; 2048 to 8192 bits, as ring verifies), EC P-256 and P-384
//! (`x`, `y`), OKP Ed25519 (`x`). A key with `use` other than `sig`, or of a type or curve
//! Sinew cannot verify with (HMAC `oct` keys among them: a shared secret has no place in a
//! public key set), is left out with a reason; a set with no usable key is an error.
//! Malformed input of any kind is a clear error, never a panic.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// base64url with or without padding: key sets in the wild carry both.
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// More keys than this in one set is not a key set but an attack on the verifier (a
/// token without `kid` is tried against every key of its algorithm).
const MAX_KEYS: usize = 64;

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a token signed with `alg` can be verified with a key of this kind.
    pub(crate) fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// One public key.
pub(crate) struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when it names one: then only tokens of that algorithm use it.
    pub alg: Option<Algorithm>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

/// A parsed key set.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// The keys a token with `kid` (if any) and `alg` may have been signed with: of the
    /// right kind and algorithm, and with that `kid` when both have one (a key without a
    /// `kid` is a candidate for every token, as in Envoy).
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            k.kind.verifies(alg)
                && k.alg.is_none_or(|a| a == alg)
                && match (kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key has this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A parsed set and the keys left out of it, each with its reason.
pub(crate) struct Parsed {
    pub set: KeySet,
    pub skipped: Vec<String>,
}

/// Parses a JWKS document. `Err` when it is not a key set at all or holds no usable key.
pub(crate) fn parse(text: &str) -> Result<Parsed, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("Jwks is an invalid JSON: {e}"))?;
    let keys = match doc.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err("[keys] in Jwks is not an array".into()),
        None => return Err("Jwks does not have [keys] field".into()),
    };
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "Jwks has {} keys; at most {MAX_KEYS} are accepted",
            keys.len()
        ));
    }
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match parse_key(key) {
            Ok(k) => set.keys.push(k),
            Err(why) => skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    if set.keys.is_empty() {
        let why = if skipped.is_empty() {
            "it is empty".to_string()
        } else {
            skipped.join("; ")
        };
        return Err(format!("Jwks doesn't have any valid public key: {why}"));
    }
    Ok(Parsed { set, skipped })
}

fn parse_key(key: &Value) -> Result<Jwk, String> {
    let Value::Object(fields) = key else {
        return Err("is not a JSON object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match fields.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("[{name}] is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name)?.ok_or_else(|| format!("[{name}] is missing"))?;
        BASE64URL
            .decode(value)
            .map_err(|e| format!("[{name}] is not base64url: {e}"))
    };
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Err(format!("[use] is {usage:?}, not \"sig\""));
        }
    }
    let kid = text("kid")?.map(str::to_string);
    let alg = match text("alg")? {
        None => None,
        Some(name) => Some(algorithm(name).ok_or_else(|| {
            format!("[alg] {name:?} is not supported (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)")
        })?),
    };
    let kty = text("kty")?.ok_or("[kty] is missing")?;
    let (kind, key) = match kty {
        "RSA" => {
            let n = strip_leading_zeros(bytes("n")?);
            let e = strip_leading_zeros(bytes("e")?);
            // ring verifies RSA keys of 2048 to 8192 bits with an odd exponent from 3 to
            // 2^33 - 1; a key outside that would fail every token, so it is refused now.
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RSA modulus [n] has {bits} bits (2048 to 8192 are accepted)"
                ));
            }
            let exponent = e
                .iter()
                .fold(0u64, |acc, b| acc.saturating_mul(256) | *b as u64);
            if e.len() > 5 || exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
                return Err("RSA exponent [e] is not an odd number from 3 to 2^33-1".into());
            }
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            let (kind, size) = match text("crv")?.ok_or("[crv] is missing")? {
                "P-256" => (KeyKind::P256, 32),
                "P-384" => (KeyKind::P384, 48),
                other => {
                    return Err(format!(
                        "EC curve {other:?} is not supported (P-256, P-384)"
                    ))
                }
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != size || y.len() != size {
                return Err(format!(
                    "EC [x] and [y] must be {size} bytes each, not {} and {}",
                    x.len(),
                    y.len()
                ));
            }
            // The uncompressed point ring takes: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            match text("crv")?.ok_or("[crv] is missing")? {
                "Ed25519" => {}
                other => {
                    return Err(format!("OKP curve {other:?} is not supported (Ed25519)"));
                }
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err(format!("Ed25519 [x] must be 32 bytes, not {}", x.len()));
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        other => return Err(format!("[kty] {other:?} is not supported (RSA, EC, OKP)")),
    };
    if let Some(alg) = alg {
        if !kind.verifies(alg) {
            return Err(format!(
                "[alg] {alg:?} does not fit a {kty} key of this curve"
            ));
        }
    }
    Ok(Jwk {
        kid,
        alg,
        kind,
        key,
    })
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

/// The algorithm a token's or key's `alg` names, among those Sinew verifies: never
/// `none`, and never HMAC (`HS*`), whose "key" in a public set would let anyone who
/// reads the set sign tokens (the key-confusion attack).
pub(crate) fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        BASE64URL.encode(bytes)
    }

    fn rsa_n(bits: usize) -> String {
        let mut n = vec![0xC5u8; bits / 8];
        n[bits / 8 - 1] |= 1;
        b64(&n)
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("{text} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_each_key_type_with_kid_and_alg() {
        let text = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"r","alg":"RS256","use":"sig","n":"{n}","e":"AQAB"}},
                {{"kty":"EC","kid":"e","crv":"P-256","x":"{x}","y":"{x}"}},
                {{"kty":"EC","crv":"P-384","x":"{x384}","y":"{x384}"}},
                {{"kty":"OKP","kid":"o","crv":"Ed25519","x":"{x}"}}
            ]}}"#,
            n = rsa_n(2048),
            x = b64(&[7; 32]),
            x384 = b64(&[7; 48]),
        );
        let parsed = parse(&text).unwrap();
        assert!(parsed.skipped.is_empty());
        let set = parsed.set;
        assert_eq!(set.len(), 4);
        let kinds = |kid, alg| set.candidates(kid, alg).map(|k| k.kind).collect::<Vec<_>>();
        assert_eq!(kinds(Some("r"), Algorithm::RS256), vec![KeyKind::Rsa]);
        // The RSA key says RS256: a PS256 token does not use it.
        assert!(kinds(Some("r"), Algorithm::PS256).is_empty());
        assert_eq!(kinds(Some("e"), Algorithm::ES256), vec![KeyKind::P256]);
        // The P-384 key has no kid: a candidate for any ES384 token.
        assert_eq!(kinds(Some("zz"), Algorithm::ES384), vec![KeyKind::P384]);
        assert_eq!(kinds(None, Algorithm::EdDSA), vec![KeyKind::Ed25519]);
        assert!(kinds(Some("o"), Algorithm::ES256).is_empty());
        assert!(set.has_kid("o") && !set.has_kid("x"));
    }

    #[test]
    fn documents_that_are_not_key_sets_are_clear_errors() {
        assert!(err("not json").starts_with("Jwks is an invalid JSON"));
        assert_eq!(err("{}"), "Jwks does not have [keys] field");
        assert_eq!(err(r#"{"keys":{}}"#), "[keys] in Jwks is not an array");
        assert_eq!(
            err(r#"{"keys":[]}"#),
            "Jwks doesn't have any valid public key: it is empty"
        );
        let many = format!(r#"{{"keys":[{}]}}"#, vec!["{}"; 65].join(","));
        assert!(err(&many).contains("at most 64"));
    }

    #[test]
    fn each_malformed_key_says_what_is_wrong() {
        let x = b64(&[7; 32]);
        for (key, reason) in [
            ("5".to_string(), "keys[0]: is not a JSON object"),
            (r#"{"n":"AQAB"}"#.to_string(), "keys[0]: [kty] is missing"),
            (r#"{"kty":7}"#.to_string(), "keys[0]: [kty] is not a string"),
            (
                r#"{"kty":"oct","k":"c2VjcmV0"}"#.to_string(),
                "[kty] \"oct\" is not supported",
            ),
            (
                r#"{"kty":"RSA","e":"AQAB"}"#.to_string(),
                "keys[0]: [n] is missing",
            ),
            (
                r#"{"kty":"RSA","n":"!!","e":"AQAB"}"#.to_string(),
                "[n] is not base64url",
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, rsa_n(1024)),
                "has 1024 bits",
            ),
            (
                format!(r#"{{"kty":"RSA","n":"{}","e":"AAAC"}}"#, rsa_n(2048)),
                "exponent [e]",
            ),
            (
                format!(
                    r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"HS256"}}"#,
                    rsa_n(2048)
                ),
                "[alg] \"HS256\" is not supported",
            ),
            (
                format!(
                    r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"ES256"}}"#,
                    rsa_n(2048)
                ),
                "does not fit a RSA key",
            ),
            (
                format!(
                    r#"{{"kty":"RSA","n":"{}","e":"AQAB","use":"enc"}}"#,
                    rsa_n(2048)
                ),
                "[use] is \"enc\"",
            ),
            (
                format!(r#"{{"kty":"EC","crv":"P-521","x":"{x}","y":"{x}"}}"#),
                "EC curve \"P-521\" is not supported",
            ),
            (
                format!(r#"{{"kty":"EC","x":"{x}","y":"{x}"}}"#),
                "[crv] is missing",
            ),
            (
                format!(r#"{{"kty":"EC","crv":"P-256","x":"{x}"}}"#),
                "[y] is missing",
            ),
            (
                format!(r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"AAAA"}}"#),
                "must be 32 bytes each, not 32 and 3",
            ),
            (
                r#"{"kty":"OKP","crv":"X25519","x":"AAAA"}"#.to_string(),
                "OKP curve \"X25519\"",
            ),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#.to_string(),
                "must be 32 bytes, not 3",
            ),
        ] {
            let e = err(&format!(r#"{{"keys":[{key}]}}"#));
            assert!(e.contains(reason), "{key}: {e:?} lacks {reason:?}");
        }
    }

    #[test]
    fn a_usable_key_beside_bad_ones_is_kept_and_the_rest_reported() {
        let text = format!(
            r#"{{"keys":[{{"kty":"oct","k":"AA"}},{{"kty":"OKP","crv":"Ed25519","x":"{}"}}]}}"#,
            b64(&[1; 32])
        );
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.set.len(), 1);
        assert_eq!(parsed.skipped.len(), 1);
        assert!(parsed.skipped[0].starts_with("keys[0]: [kty] \"oct\""));
    }

    #[test]
    fn none_and_hmac_are_never_algorithms() {
        for name in ["none", "None", "HS256", "HS384", "HS512", "ES512", ""] {
            assert!(algorithm(name).is_none(), "{name}");
        }
        assert_eq!(algorithm("EdDSA"), Some(Algorithm::EdDSA));
    }
}
