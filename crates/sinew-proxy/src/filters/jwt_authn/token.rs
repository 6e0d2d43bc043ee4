//! One JWT (RFC 7519, compact JWS): read, then checked against a provider — issuer,
//! times, audience, then the signature with the provider's keys.
//!
//! The crate: `jsonwebtoken` 9 verifies signatures. It builds on ring 0.17, already in the
//! tree through rustls (no aws-lc-rs), and without its `use_pem` feature brings no other
//! crate. Only its key types and `crypto::verify` are used: the token is read and its
//! claims checked here, so each failure gets Envoy's reason (the body of the 401) and the
//! algorithm comes from Sinew's own allow-list, never from what the token asks for.
//!
//! The checks run in Envoy's order (issuer, times, audience, key, signature), so a token
//! that is both expired and forged is reported expired, as Envoy reports it.

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::jwks::{self, KeySet, BASE64URL};
use base64::Engine as _;

/// Why a token was refused, with Envoy's words for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtError {
    Missing,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    AlgNotSupported,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    AudNotString,
    ExpNotInteger,
    NbfNotInteger,
    IatNotInteger,
    SignatureBadBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    Expired,
    NotYetValid,
    NoMatchingKey,
    VerificationFail,
    /// The provider's remote key set has never been fetched.
    JwksFetchFail,
}

impl JwtError {
    /// The reason, as Envoy's jwt_authn words it (the reply's body).
    pub(crate) fn message(self) -> &'static str {
        use JwtError::*;
        match self {
            Missing => "Jwt is missing",
            BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            HeaderBadJson => "Jwt header is an invalid JSON",
            HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            AlgNotSupported => "Jwt header [alg] is not supported",
            HeaderBadKid => "Jwt header [kid] field is not a string",
            PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            PayloadBadJson => "Jwt payload is an invalid JSON",
            IssNotString => "Jwt payload [iss] field is not a string",
            SubNotString => "Jwt payload [sub] field is not a string",
            AudNotString => "Jwt payload [aud] field is not a string or string list",
            ExpNotInteger => "Jwt payload [exp] field is not an integer",
            NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            IatNotInteger => "Jwt payload [iat] field is not an integer",
            SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            UnknownIssuer => "Jwt issuer is not configured",
            AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Expired => "Jwt is expired",
            NotYetValid => "Jwt not yet valid",
            NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            VerificationFail => "Jwt verification fails",
            JwksFetchFail => "Jwks remote fetch is failed",
        }
    }

    /// Whether no token was found (not a token that failed).
    pub(crate) fn is_missing(self) -> bool {
        self == JwtError::Missing
    }
}

/// A token read but not yet checked.
#[derive(Debug)]
pub(crate) struct Token<'a> {
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
    /// The payload as it came (base64url), for `forward_payload_header`.
    pub payload_b64: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    audiences: Vec<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    pub claims: Map<String, Value>,
}

/// Reads a compact JWS. Every malformed shape is an error; nothing here panics or
/// allocates more than a small multiple of the token's length.
pub(crate) fn parse(token: &str) -> Result<Token<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::BadFormat);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        // An empty signature is `alg: none`'s shape.
        return Err(JwtError::BadFormat);
    }
    let header_json = BASE64URL
        .decode(header)
        .map_err(|_| JwtError::HeaderBadBase64)?;
    let header_json: Map<String, Value> =
        serde_json::from_slice(&header_json).map_err(|_| JwtError::HeaderBadJson)?;
    let alg = match header_json.get("alg") {
        Some(Value::String(name)) => jwks::algorithm(name).ok_or(JwtError::AlgNotSupported)?,
        _ => return Err(JwtError::HeaderBadAlg),
    };
    let kid = match header_json.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::HeaderBadKid),
    };
    let payload_json = BASE64URL
        .decode(payload)
        .map_err(|_| JwtError::PayloadBadBase64)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload_json).map_err(|_| JwtError::PayloadBadJson)?;
    let string = |name: &str, error: JwtError| match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(error),
    };
    let issuer = string("iss", JwtError::IssNotString)?;
    let subject = string("sub", JwtError::SubNotString)?;
    let audiences = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(JwtError::AudNotString)?,
        Some(_) => return Err(JwtError::AudNotString),
    };
    let time = |name: &str, error: JwtError| match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(error),
        Some(_) => Err(error),
    };
    let exp = time("exp", JwtError::ExpNotInteger)?;
    let nbf = time("nbf", JwtError::NbfNotInteger)?;
    let iat = time("iat", JwtError::IatNotInteger)?;
    Ok(Token {
        signed: &token[..header.len() + 1 + payload.len()],
        signature,
        payload_b64: payload,
        alg,
        kid,
        issuer,
        subject,
        audiences,
        exp,
        nbf,
        iat,
        claims,
    })
}

/// What a provider checks a token against.
pub(crate) struct Expectations<'a> {
    /// Empty: any issuer.
    pub issuer: &'a str,
    /// Normalised (see [`normalize_audience`]); empty: any audience.
    pub audiences: &'a [String],
    pub clock_skew_seconds: i64,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

impl Token<'_> {
    /// Whether this token names the expected issuer (the first check, and the one that
    /// picks a provider among several sharing a header).
    pub(crate) fn issuer_matches(&self, issuer: &str) -> bool {
        issuer.is_empty() || self.issuer.as_deref() == Some(issuer)
    }

    /// Every check but the signature.
    pub(crate) fn check_claims(&self, want: &Expectations<'_>) -> Result<(), JwtError> {
        if !self.issuer_matches(want.issuer) {
            return Err(JwtError::UnknownIssuer);
        }
        let skew = want.clock_skew_seconds;
        if self
            .exp
            .is_some_and(|exp| want.now > exp.saturating_add(skew))
        {
            return Err(JwtError::Expired);
        }
        let future = |t: Option<i64>| t.is_some_and(|t| t > want.now.saturating_add(skew));
        if future(self.nbf) || future(self.iat) {
            return Err(JwtError::NotYetValid);
        }
        if !want.audiences.is_empty()
            && !self
                .audiences
                .iter()
                .any(|a| want.audiences.iter().any(|w| *w == normalize_audience(a)))
        {
            return Err(JwtError::AudienceNotAllowed);
        }
        Ok(())
    }

    /// Checks the signature with the keys that may have made it.
    pub(crate) fn check_signature(&self, keys: &KeySet) -> Result<(), JwtError> {
        let mut tried = false;
        for key in keys.candidates(self.kid.as_deref(), self.alg) {
            tried = true;
            match jsonwebtoken::crypto::verify(
                self.signature,
                self.signed.as_bytes(),
                &key.key,
                self.alg,
            ) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::Base64(_)) => {
                    return Err(JwtError::SignatureBadBase64)
                }
                Err(_) => {}
            }
        }
        Err(if tried {
            JwtError::VerificationFail
        } else {
            JwtError::NoMatchingKey
        })
    }
}

/// Envoy compares audiences without their scheme and trailing slash, so
/// `https://api.example/` in a token matches `api.example` in the config.
pub(crate) fn normalize_audience(audience: &str) -> String {
    let a = audience
        .strip_prefix("https://")
        .or_else(|| audience.strip_prefix("http://"))
        .unwrap_or(audience);
    a.strip_suffix('/').unwrap_or(a).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

    type Signer = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

    /// A key pair made for one test, with its public half as a JWK.
    pub(crate) struct TestKey {
        pub alg: &'static str,
        sign: Signer,
        pub jwk: Value,
    }

    impl TestKey {
        pub(crate) fn ec(alg: &'static str, kid: &str) -> TestKey {
            let (signing, crv) = match alg {
                "ES256" => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
                _ => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            };
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let half = (point.len() - 1) / 2;
            let jwk = serde_json::json!({
                "kty": "EC", "crv": crv, "kid": kid,
                "x": BASE64URL.encode(&point[1..1 + half]),
                "y": BASE64URL.encode(&point[1 + half..]),
            });
            TestKey {
                alg,
                sign: Box::new(move |m| {
                    pair.sign(&SystemRandom::new(), m)
                        .unwrap()
                        .as_ref()
                        .to_vec()
                }),
                jwk,
            }
        }

        pub(crate) fn ed25519(kid: &str) -> TestKey {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": BASE64URL.encode(pair.public_key().as_ref()),
            });
            TestKey {
                alg: "EdDSA",
                sign: Box::new(move |m| pair.sign(m).as_ref().to_vec()),
                jwk,
            }
        }

        /// An RSA key (ring makes none): generated for this test by Debian's openssl.
        pub(crate) fn rsa(alg: &'static str, kid: &str) -> TestKey {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-outform",
                    "DER",
                ])
                .output()
                .expect("openssl (Debian package openssl) makes the test's RSA key");
            assert!(out.status.success(), "openssl genpkey failed");
            // DER from genpkey is PKCS#1 (RSAPrivateKey).
            let pair = RsaKeyPair::from_der(&out.stdout).unwrap();
            let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
            let jwk = serde_json::json!({
                "kty": "RSA", "kid": kid,
                "n": BASE64URL.encode(&public.n),
                "e": BASE64URL.encode(&public.e),
            });
            let padding: &'static dyn signature::RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                _ => &signature::RSA_PSS_SHA256,
            };
            TestKey {
                alg,
                sign: Box::new(move |m| {
                    let mut sig = vec![0; pair.public().modulus_len()];
                    pair.sign(padding, &SystemRandom::new(), m, &mut sig)
                        .unwrap();
                    sig
                }),
                jwk,
            }
        }

        pub(crate) fn kid(&self) -> &str {
            self.jwk["kid"].as_str().unwrap()
        }

        /// A token over `claims`, with this key's `kid` unless `header` says otherwise.
        pub(crate) fn token(&self, header: Value, claims: &Value) -> String {
            let mut h = serde_json::json!({"alg": self.alg, "kid": self.kid()});
            for (k, v) in header.as_object().unwrap() {
                if v.is_null() {
                    h.as_object_mut().unwrap().remove(k);
                } else {
                    h[k] = v.clone();
                }
            }
            let signed = format!(
                "{}.{}",
                BASE64URL.encode(h.to_string()),
                BASE64URL.encode(claims.to_string())
            );
            let sig = (self.sign)(signed.as_bytes());
            format!("{signed}.{}", BASE64URL.encode(sig))
        }

        pub(crate) fn sign(&self, claims: &Value) -> String {
            self.token(serde_json::json!({}), claims)
        }
    }

    pub(crate) fn jwks(keys: &[&TestKey]) -> String {
        serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
            .to_string()
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        serde_json::json!({"iss": "https://idp", "sub": "alice", "aud": "api", "exp": NOW + 600, "iat": NOW - 5})
    }

    fn expect<'a>(audiences: &'a [String]) -> Expectations<'a> {
        Expectations {
            issuer: "https://idp",
            audiences,
            clock_skew_seconds: 60,
            now: NOW,
        }
    }

    fn check(token: &str, keys: &KeySet, audiences: &[String]) -> Result<(), JwtError> {
        let t = parse(token)?;
        t.check_claims(&expect(audiences))?;
        t.check_signature(keys)
    }

    fn set(keys: &[&TestKey]) -> KeySet {
        jwks::parse(&jwks(keys)).unwrap().set
    }

    #[test]
    fn every_algorithm_verifies_and_a_changed_token_does_not() {
        let keys = [
            TestKey::rsa("RS256", "rs256"),
            TestKey::rsa("RS384", "rs384"),
            TestKey::rsa("RS512", "rs512"),
            TestKey::rsa("PS256", "ps256"),
            TestKey::ec("ES256", "es256"),
            TestKey::ec("ES384", "es384"),
            TestKey::ed25519("ed"),
        ];
        let all = set(&keys.iter().collect::<Vec<_>>());
        for key in &keys {
            let token = key.sign(&claims());
            assert_eq!(check(&token, &all, &[]), Ok(()), "{}", key.alg);
            // One byte of the payload changed: the signature no longer covers it.
            let mut forged = claims();
            forged["sub"] = "mallory".into();
            let forged_payload = BASE64URL.encode(forged.to_string());
            let parts: Vec<&str> = token.split('.').collect();
            let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
            assert_eq!(
                check(&forged, &all, &[]),
                Err(JwtError::VerificationFail),
                "{}",
                key.alg
            );
        }
    }

    #[test]
    fn kid_picks_the_key_and_a_token_without_kid_tries_its_algorithm() {
        let (a, b) = (TestKey::ec("ES256", "a"), TestKey::ec("ES256", "b"));
        let keys = set(&[&a, &b]);
        assert_eq!(check(&b.sign(&claims()), &keys, &[]), Ok(()));
        let no_kid = b.token(serde_json::json!({"kid": null}), &claims());
        assert_eq!(check(&no_kid, &keys, &[]), Ok(()));
        // b's token claiming to be a's: a's key does not verify it.
        let wrong_kid = b.token(serde_json::json!({"kid": "a"}), &claims());
        assert_eq!(
            check(&wrong_kid, &keys, &[]),
            Err(JwtError::VerificationFail)
        );
        let unknown = b.token(serde_json::json!({"kid": "c"}), &claims());
        assert_eq!(check(&unknown, &keys, &[]), Err(JwtError::NoMatchingKey));
        // No key of the token's algorithm.
        let ed = TestKey::ed25519("a");
        assert_eq!(
            check(&ed.sign(&claims()), &keys, &[]),
            Err(JwtError::NoMatchingKey)
        );
    }

    #[test]
    fn none_and_hmac_tokens_are_refused_before_any_key_is_used() {
        let key = TestKey::ec("ES256", "k");
        let keys = set(&[&key]);
        let header = |h: &str| BASE64URL.encode(h);
        let payload = BASE64URL.encode(claims().to_string());
        let none = format!("{}.{payload}.", header(r#"{"alg":"none"}"#));
        assert_eq!(check(&none, &keys, &[]), Err(JwtError::BadFormat));
        let none_signed = format!("{}.{payload}.AAAA", header(r#"{"alg":"none"}"#));
        assert_eq!(
            check(&none_signed, &keys, &[]),
            Err(JwtError::AlgNotSupported)
        );
        // HS256 keyed with the public key's bytes: the key-confusion attack.
        let hs = format!("{}.{payload}.AAAA", header(r#"{"alg":"HS256","kid":"k"}"#));
        assert_eq!(check(&hs, &keys, &[]), Err(JwtError::AlgNotSupported));
    }

    #[test]
    fn issuer_times_and_audience_are_checked_with_skew() {
        let key = TestKey::ed25519("k");
        let keys = set(&[&key]);
        let with = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            key.sign(&c)
        };
        let aud = vec!["api".to_string()];
        assert_eq!(
            check(&with("iss", "https://other".into()), &keys, &[]),
            Err(JwtError::UnknownIssuer)
        );
        assert_eq!(
            check(&with("exp", (NOW - 61).into()), &keys, &[]),
            Err(JwtError::Expired)
        );
        assert_eq!(
            check(&with("exp", (NOW - 59).into()), &keys, &[]),
            Ok(()),
            "within the skew"
        );
        assert_eq!(
            check(&with("nbf", (NOW + 61).into()), &keys, &[]),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(check(&with("nbf", (NOW + 59).into()), &keys, &[]), Ok(()));
        assert_eq!(
            check(&with("iat", (NOW + 3600).into()), &keys, &[]),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            check(&with("aud", "web".into()), &keys, &aud),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(
            check(
                &with("aud", serde_json::json!(["web", "https://api/"])),
                &keys,
                &aud
            ),
            Ok(())
        );
        assert_eq!(
            check(&with("aud", "web".into()), &keys, &[]),
            Ok(()),
            "no audiences: any"
        );
        let mut no_aud = claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            check(&key.sign(&no_aud), &keys, &aud),
            Err(JwtError::AudienceNotAllowed)
        );
        // Envoy's order: expired wins over a bad signature.
        let expired = with("exp", (NOW - 3600).into());
        let forged = format!("{}AAAA", &expired[..expired.len() - 4]);
        assert_eq!(check(&forged, &keys, &[]), Err(JwtError::Expired));
    }

    #[test]
    fn malformed_tokens_get_envoys_reasons() {
        let b = |s: &str| BASE64URL.encode(s);
        let ok_header = b(r#"{"alg":"ES256"}"#);
        let ok_payload = b(r#"{"iss":"https://idp"}"#);
        for (token, error) in [
            ("".to_string(), JwtError::BadFormat),
            ("a.b".to_string(), JwtError::BadFormat),
            ("a.b.c.d".to_string(), JwtError::BadFormat),
            (format!("!.{ok_payload}.AA"), JwtError::HeaderBadBase64),
            (
                format!("{}.{ok_payload}.AA", b("[1]")),
                JwtError::HeaderBadJson,
            ),
            (
                format!("{}.{ok_payload}.AA", b("{}")),
                JwtError::HeaderBadAlg,
            ),
            (
                format!("{}.{ok_payload}.AA", b(r#"{"alg":5}"#)),
                JwtError::HeaderBadAlg,
            ),
            (
                format!("{}.{ok_payload}.AA", b(r#"{"alg":"ES256","kid":1}"#)),
                JwtError::HeaderBadKid,
            ),
            (format!("{ok_header}.!.AA"), JwtError::PayloadBadBase64),
            (
                format!("{ok_header}.{}.AA", b("nope")),
                JwtError::PayloadBadJson,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"iss":1}"#)),
                JwtError::IssNotString,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"sub":[]}"#)),
                JwtError::SubNotString,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"aud":["a",1]}"#)),
                JwtError::AudNotString,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"exp":"soon"}"#)),
                JwtError::ExpNotInteger,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"nbf":1.5}"#)),
                JwtError::NbfNotInteger,
            ),
            (
                format!("{ok_header}.{}.AA", b(r#"{"iat":null}"#)),
                JwtError::IatNotInteger,
            ),
        ] {
            assert_eq!(parse(&token).map(|_| ()), Err(error), "{token}");
        }
        let key = TestKey::ec("ES256", "k");
        let bad_sig = format!("{ok_header}.{ok_payload}.!!!!");
        assert_eq!(
            check(&bad_sig, &set(&[&key]), &[]),
            Err(JwtError::SignatureBadBase64)
        );
    }
}
