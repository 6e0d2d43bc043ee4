//! JWT authentication over real sockets, with tokens minted by an outside implementation:
//! PyJWT (with `cryptography`) generates the keys and signs the tokens in a Python
//! process per test, and exports the public keys as the JWKS the proxy reads — from a
//! file, or from an HTTP or HTTPS server in the test that fails its first fetches and
//! rotates its keys. The upstream echoes the request it got, so what the proxy passed on
//! (claims as headers, the token removed) is checked where it arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sinew_integration::tls_kit::{yaml_path, TempDir, TestCa};
use sinew_integration::{h2_request, OneRoute, Reply, TestClient, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "orders";

/// Mints keys and tokens with PyJWT. Prints JSON: `jwks` (the published keys: RS256,
/// ES256 and EdDSA, kids `rs`, `es`, `ed`), `jwks_rotated` (`rs` replaced by `rs2`),
/// `rs_pem` (the RSA public key) and `tokens` by name.
const MINT: &str = r#"
import base64, hashlib, hmac, json, sys, time
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

issuer, audience = sys.argv[1], sys.argv[2]
now = int(time.time())
keys = {
    "rs": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "rs2": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "es": ("ES256", ec.generate_private_key(ec.SECP256R1())),
    "ed": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    "unpublished": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}
export = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}

def jwk(kid):
    alg, key = keys[kid]
    d = json.loads(export[alg].to_jwk(key.public_key()))
    d.update({"kid": kid, "use": "sig"})
    return d

def claims(**over):
    c = {"iss": issuer, "sub": "alice", "aud": audience, "iat": now, "exp": now + 600,
         "groups": ["dev", "ops"], "tenant": {"id": "t-42"}}
    c.update(over)
    return c

def mint(key, kid=None, **over):
    alg, priv = keys[key]
    return jwt.encode(claims(**over), priv, algorithm=alg, headers={"kid": kid or key})

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

rs_pem = keys["rs"][1].public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
# The key-confusion attack: HS256 "signed" with the RSA public key as the HMAC secret.
signed = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rs"}).encode()) + "." + \
    b64(json.dumps(claims()).encode())
hs256 = signed + "." + b64(hmac.new(rs_pem, signed.encode(), hashlib.sha256).digest())

print(json.dumps({
    "jwks": {"keys": [jwk("rs"), jwk("es"), jwk("ed")]},
    "jwks_rotated": {"keys": [jwk("rs2"), jwk("es"), jwk("ed")]},
    "rs_pem": rs_pem.decode(),
    "tokens": {
        "rs256": mint("rs"),
        "es256": mint("es"),
        "eddsa": mint("ed"),
        "rs256_rotated": mint("rs2"),
        "expired": mint("rs", exp=now - 3600, iat=now - 7200),
        "not_yet_valid": mint("rs", nbf=now + 3600),
        "wrong_audience": mint("rs", aud="someone-else"),
        "audience_list": mint("es", aud=["someone-else", audience]),
        "wrong_issuer": mint("rs", iss="https://evil.example"),
        "bad_signature": mint("unpublished", kid="rs"),
        "unknown_kid": mint("rs", kid="nope"),
        "alg_none": jwt.encode(claims(), None, algorithm="none"),
        "hs256_public_key": hs256,
    },
}))
"#;

struct Minted {
    jwks: String,
    jwks_rotated: String,
    tokens: HashMap<String, String>,
}

impl Minted {
    fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }
}

fn mint() -> Minted {
    let out = std::process::Command::new("python3")
        .args(["-c", MINT, ISSUER, AUDIENCE])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "minting tokens with PyJWT failed (install it: python3 -m pip install pyjwt cryptography):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("mint prints JSON");
    Minted {
        jwks: v["jwks"].to_string(),
        jwks_rotated: v["jwks_rotated"].to_string(),
        tokens: v["tokens"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
            .collect(),
    }
}

/// A provider block (indented for `OneRoute::http`) named `idp` with `jwks` as its key
/// source and the `extra` fields (indented 10).
fn jwt_http(jwks_source: &str, extra: &str, rules: &str) -> String {
    format!(
        "      jwt_authn:
        providers:
          - name: idp
            issuer: {ISSUER}
            audiences: [{AUDIENCE}]
            {jwks_source}
            claim_to_headers:
              - {{header_name: x-jwt-sub, claim_name: sub}}
              - {{header_name: x-jwt-groups, claim_name: groups}}
              - {{header_name: x-jwt-tenant, claim_name: tenant.id}}
            forward_payload_header: x-jwt-payload
{extra}
{rules}"
    )
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-test-echo", "1"), ("host", "shop.example")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    TestClient::http1().get(addr, path, &headers).await
}

fn assert_refused(reply: &Reply, status: u16, body: &str, challenge: Option<&str>) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    assert_eq!(reply.text(), body);
    assert_eq!(reply.header("www-authenticate"), challenge);
}

#[tokio::test]
async fn pyjwt_tokens_are_checked_as_envoy_checks_them() {
    let minted = mint();
    let dir = TempDir::new("jwt-local");
    let jwks_file = dir.file("jwks.json");
    std::fs::write(&jwks_file, &minted.jwks).unwrap();
    let up = Upstream::start("up").await;
    let source = format!("local_jwks: {{filename: '{}'}}", yaml_path(&jwks_file));
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .http(&jwt_http(&source, "", ""))
        .start()
        .await;

    // Valid tokens of each algorithm: through, with claims as headers and the token gone.
    for name in ["rs256", "es256", "eddsa", "audience_list"] {
        let token = minted.token(name);
        let reply = get(addr, "/orders?id=1", Some(token)).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        let echo = reply.text().to_ascii_lowercase();
        assert!(echo.contains("x-jwt-sub: alice"), "{name}: {echo}");
        assert!(echo.contains("x-jwt-groups: dev,ops"), "{name}: {echo}");
        assert!(echo.contains("x-jwt-tenant: t-42"), "{name}: {echo}");
        let payload = token.split('.').nth(1).unwrap().to_ascii_lowercase();
        assert!(
            echo.contains(&format!("x-jwt-payload: {payload}")),
            "{name}: {echo}"
        );
        assert!(
            !echo.contains("authorization"),
            "{name}: token forwarded: {echo}"
        );
    }

    // Istio's RequestAuthentication: no token passes, unauthenticated, and a client's own
    // claim headers do not survive.
    let reply = TestClient::http1()
        .get(addr, "/", &[("x-test-echo", "1"), ("x-jwt-sub", "root")])
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        !reply.text().to_ascii_lowercase().contains("x-jwt-sub"),
        "{}",
        reply.text()
    );

    let invalid = Some(r#"Bearer realm="http://shop.example/orders", error="invalid_token""#);
    for (name, status, body) in [
        ("expired", 401, "Jwt is expired"),
        ("not_yet_valid", 401, "Jwt not yet valid"),
        ("wrong_issuer", 401, "Jwt issuer is not configured"),
        ("bad_signature", 401, "Jwt verification fails"),
        (
            "unknown_kid",
            401,
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
        (
            "alg_none",
            401,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
        ),
        ("hs256_public_key", 401, "Jwt header [alg] is not supported"),
    ] {
        let reply = get(addr, "/orders", Some(minted.token(name))).await;
        assert_refused(&reply, status, body, invalid);
    }
    let reply = get(addr, "/orders", Some(minted.token("wrong_audience"))).await;
    assert_refused(&reply, 403, "Audiences in Jwt are not allowed", None);
    // Only the valid requests and the one without a token reached the upstream.
    assert_eq!(up.requests(), 5);

    // Counted by result.
    let metrics = proxy.proxy.metrics.render(false);
    let count = |labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("sinew_jwt_authn_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {labels} in\n{metrics}"))
    };
    assert_eq!(
        count(r#"listener="web",provider="idp",result="verified""#),
        4
    );
    assert_eq!(
        count(r#"listener="web",provider="idp",result="refused""#),
        7
    );
    assert_eq!(
        count(r#"listener="web",provider="",result="no_token_allowed""#),
        1
    );
    // The wrong issuer's token is nobody's: refused without a provider.
    assert_eq!(count(r#"listener="web",provider="",result="refused""#), 1);
}

#[tokio::test]
async fn rules_require_tokens_where_they_say_and_grpc_gets_a_grpc_status() {
    let minted = mint();
    let up = Upstream::start("up").await;
    let inline = minted.jwks.replace('\'', "''");
    let source = format!("local_jwks: {{inline: '{inline}'}}");
    let rules = "        rules:
          - match: {prefix: /health}
          - match: {prefix: /}
            requires: {provider_name: idp}";
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&jwt_http(&source, "            forward: true", rules))
        .start()
        .await;
    let reply = get(addr, "/orders", None).await;
    assert_refused(
        &reply,
        401,
        "Jwt is missing",
        Some(r#"Bearer realm="http://shop.example/orders""#),
    );
    assert_eq!(get(addr, "/health", None).await.status, 200);
    // `forward: true` keeps the token.
    let token = minted.token("eddsa");
    let reply = get(addr, "/orders", Some(token)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains(token), "{}", reply.text());

    // The access_token query parameter (Envoy's default location) works too.
    let reply = TestClient::http1()
        .get(addr, &format!("/orders?access_token={token}"), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // gRPC over HTTP/2: UNAUTHENTICATED in gRPC's form.
    let reply = h2_request(
        addr,
        "http://shop.example/shop.Orders/List",
        &[
            ("content-type", "application/grpc"),
            ("authorization", "Bearer nope"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("16"));
    assert_eq!(
        reply.header("grpc-message"),
        Some("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
    );
    // And a valid token over HTTP/2 goes through.
    let bearer = format!("Bearer {}", minted.token("es256"));
    let reply = h2_request(
        addr,
        "http://shop.example/orders",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A JWKS server: fails its first `fail_first` requests with 503, then serves what
/// `body` holds; over TLS when `tls` is given.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(
        fail_first: usize,
        body: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.to_string()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (served, counted, tls) = (served.clone(), counted.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, fail_first, &served, &counted).await;
                            }
                        }
                        None => answer(tcp, fail_first, &served, &counted).await,
                    }
                });
            }
        });
        JwksServer {
            addr,
            body,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    fail_first: usize,
    body: &Mutex<String>,
    counted: &AtomicUsize,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let n = counted.fetch_add(1, Ordering::SeqCst);
    let reply = if n < fail_first {
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_string()
    } else {
        let body = body.lock().unwrap().clone();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Polls until `path` with `token` answers `status`, within `deadline`.
async fn until_status(addr: SocketAddr, token: &str, status: u16, deadline: Duration) -> Reply {
    let until = Instant::now() + deadline;
    loop {
        let reply = get(addr, "/orders", Some(token)).await;
        if reply.status == status || Instant::now() >= until {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_remote_jwks_that_fails_at_first_is_retried_and_its_rotation_followed() {
    let minted = mint();
    let server = JwksServer::start(3, &minted.jwks, None).await;
    let up = Upstream::start("up").await;
    let source = format!(
        "remote_jwks: {{uri: 'http://{}/.well-known/jwks.json', cache_duration: 10m, timeout: 2s}}",
        server.addr
    );
    let started = Instant::now();
    let (proxy, addr) = OneRoute::to(&[up.addr])
        .http(&jwt_http(&source, "", ""))
        .start()
        .await;
    let token = minted.token("rs256");
    // The first fetch failed: no key set, so a token cannot be checked (Envoy's answer),
    // while requests without one still pass.
    let reply = get(addr, "/orders", Some(token)).await;
    assert_refused(
        &reply,
        401,
        "Jwks remote fetch is failed",
        Some(r#"Bearer realm="http://shop.example/orders", error="invalid_token""#),
    );
    assert_eq!(get(addr, "/orders", None).await.status, 200);
    // Retried with backoff (not cached empty): the proxy recovers without a restart.
    let reply = until_status(addr, token, 200, Duration::from_secs(15)).await;
    assert_eq!(reply.status, 200, "never recovered: {}", reply.text());
    assert_eq!(server.requests(), 4, "3 failures, then one success");
    eprintln!("recovered {:?} after start", started.elapsed());

    // The issuer rotates: `rs` is replaced by `rs2`. A token with the new kid makes the
    // proxy fetch early (rate-limited), and then passes; the old key's tokens no longer do.
    *server.body.lock().unwrap() = minted.jwks_rotated.clone();
    let rotated = minted.token("rs256_rotated");
    let reply = until_status(addr, rotated, 200, Duration::from_secs(15)).await;
    assert_eq!(reply.status, 200, "rotation never seen: {}", reply.text());
    let reply = get(addr, "/orders", Some(token)).await;
    assert_refused(
        &reply,
        401,
        "Jwks doesn't have key to match kid or alg from Jwt",
        Some(r#"Bearer realm="http://shop.example/orders", error="invalid_token""#),
    );
    let fetches = server.requests();
    assert!(
        (5..=6).contains(&fetches),
        "early fetches are rate-limited: {fetches}"
    );

    let metrics = proxy.proxy.metrics.render(false);
    for line in [
        r#"sinew_jwt_jwks_fetch_total{listener="web",provider="idp",result="failure"} 3"#,
        &format!(
            r#"sinew_jwt_jwks_fetch_total{{listener="web",provider="idp",result="success"}} {}"#,
            fetches - 3
        ),
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_remote_jwks_over_https_is_checked_against_the_given_ca() {
    let minted = mint();
    let ca = TestCa::new("jwks");
    let cert = ca.issue("jwks", &["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.cert_der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
    )
    .unwrap();
    let server = JwksServer::start(
        0,
        &minted.jwks,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await;
    let up = Upstream::start("up").await;
    let port = server.addr.port();
    let trusted = format!(
        "remote_jwks: {{uri: 'https://localhost:{port}/jwks', ca: '{}'}}",
        ca.ca_path()
    );
    let (_proxy, addr) = OneRoute::to(&[up.addr])
        .http(&jwt_http(&trusted, "", ""))
        .start()
        .await;
    let reply = until_status(addr, minted.token("es256"), 200, Duration::from_secs(10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // A CA that did not sign the server's certificate: no key set, ever.
    let other = TestCa::new("jwks-other");
    let untrusted = format!(
        "remote_jwks: {{uri: 'https://localhost:{port}/jwks', ca: '{}'}}",
        other.ca_path()
    );
    let before = server.requests();
    let (_proxy2, addr2) = OneRoute::to(&[up.addr])
        .http(&jwt_http(&untrusted, "", ""))
        .start()
        .await;
    let reply = get(addr2, "/orders", Some(minted.token("es256"))).await;
    assert_refused(
        &reply,
        401,
        "Jwks remote fetch is failed",
        Some(r#"Bearer realm="http://shop.example/orders", error="invalid_token""#),
    );
    assert_eq!(
        server.requests(),
        before,
        "no request crossed an untrusted handshake"
    );
}

#[tokio::test]
async fn config_errors_name_their_field() {
    let dir = TempDir::new("jwt-bad");
    let bad = dir.file("jwks.json");
    std::fs::write(&bad, r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#).unwrap();
    let up = Upstream::start("up").await;
    let yaml = OneRoute::to(&[up.addr])
        .http(&jwt_http(
            &format!("local_jwks: {{filename: '{}'}}", yaml_path(&bad)),
            "",
            "",
        ))
        .yaml();
    let loaded = sinew_config::load_str("jwt.yaml", &yaml).expect("valid structure");
    let err = match sinew_proxy::Proxy::start(&loaded).await {
        Ok(_) => panic!("a JWKS with a 17-bit RSA key was accepted"),
        Err(d) => d.to_string(),
    };
    assert!(
        err.contains("jwt.yaml:")
            && err.contains("listeners[0].http.jwt_authn.providers[0].local_jwks.filename: Jwks doesn't have any valid public key: keys[0]: RSA modulus [n] has 17 bits"),
        "{err}"
    );
}

/// The example in docs/security.md is a config Sinew takes (with a CA file that exists).
#[tokio::test]
async fn the_documented_example_loads() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md"),
    )
    .expect("docs/security.md");
    let section = doc
        .split("## JWT authentication")
        .nth(1)
        .expect("a JWT authentication section");
    let example = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml example");
    let ca = TestCa::new("jwt-doc");
    let yaml = example
        .replace("/etc/sinew/idp-ca.pem", ca.ca_path())
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    let loaded = sinew_config::load_str("security.md", &yaml).unwrap_or_else(|d| panic!("{d}"));
    sinew_proxy::check(&loaded).unwrap_or_else(|d| panic!("{d}"));
    let jwt = loaded.config.listeners[0]
        .http
        .as_ref()
        .and_then(|h| h.jwt_authn.as_ref())
        .expect("jwt_authn");
    assert_eq!(jwt.providers.len(), 2);
    assert_eq!(jwt.rules.len(), 3);
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_remote_key_set_and_refetches_a_changed_one() {
    let minted = mint();
    let server = JwksServer::start(0, &minted.jwks, None).await;
    let up = Upstream::start("up").await;
    let source = |cache: &str| {
        format!(
            "remote_jwks: {{uri: 'http://{}/jwks', cache_duration: {cache}}}",
            server.addr
        )
    };
    let config = |cache: &str, timeout: &str| {
        OneRoute::to(&[up.addr])
            .http(&jwt_http(&source(cache), "", ""))
            .route(&format!("              timeout: {timeout}"))
            .yaml()
    };
    let proxy = sinew_integration::TestProxy::start(&config("10m", "5s")).await;
    let addr = proxy.addr("web").await;
    let token = minted.token("es256");
    assert_eq!(get(addr, "/orders", Some(token)).await.status, 200);
    assert_eq!(server.requests(), 1);
    // Another route timeout, the same provider: its key set and task are kept.
    proxy.reload(&config("10m", "6s")).await.unwrap();
    assert_eq!(get(addr, "/orders", Some(token)).await.status, 200);
    assert_eq!(server.requests(), 1, "an unchanged provider fetched again");
    // A changed remote_jwks is a new key set: fetched before the new config serves.
    proxy.reload(&config("20m", "6s")).await.unwrap();
    assert_eq!(server.requests(), 2);
    assert_eq!(get(addr, "/orders", Some(token)).await.status, 200);
}
