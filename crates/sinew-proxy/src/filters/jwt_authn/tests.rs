//! The filter's decisions on requests: rules, requirements, Istio's default, the reply
//! and what is passed upstream.

use super::token::tests::{jwks, TestKey};
use super::*;
use http::Request;
use serde_json::json;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(iss: &str) -> serde_json::Value {
    json!({"iss": iss, "sub": "alice", "aud": "api", "exp": now() + 600, "groups": ["dev", "ops"], "realm": {"role": "admin"}, "n": 7})
}

/// A filter from the YAML of `jwt_authn`'s fields (indented 8), with `{a}` and `{b}`
/// standing for the inline key sets of two providers' keys.
fn filter(yaml: &str, a: &TestKey, b: &TestKey) -> Arc<JwtAuthn> {
    let yaml = yaml
        .replace("{a}", &jwks(&[a]).replace('\'', "''"))
        .replace("{b}", &jwks(&[b]).replace('\'', "''"));
    let j: config::JwtAuthn =
        serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    compile(&j, "jwt_authn", "web", None, None).unwrap_or_else(|e| panic!("{e:?}"))
}

const TWO_PROVIDERS: &str = "
providers:
  - name: a
    issuer: https://a
    audiences: [api]
    local_jwks: {inline: '{a}'}
    claim_to_headers: [{header_name: x-sub, claim_name: sub}, {header_name: x-groups, claim_name: groups}, {header_name: x-role, claim_name: realm.role}, {header_name: x-n, claim_name: n}]
    forward_payload_header: x-jwt-payload
  - name: b
    issuer: https://b
    local_jwks: {inline: '{b}'}
    from_headers: [{name: x-token}]
    from_params: [token]
    forward: true
";

fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut r = Request::builder().uri(path).header("host", "api.example");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(()).unwrap()
}

/// The request's claims, where it must not be refused.
fn ok(f: &JwtAuthn, req: &mut Request<()>) -> Option<Arc<VerifiedClaims>> {
    match f.authenticate(req) {
        Ok(claims) => claims,
        Err(refused) => panic!("{} refused: {refused:?}", req.uri()),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn refused(f: &JwtAuthn, req: &mut Request<()>) -> (StatusCode, String, String) {
    let reply = f.authenticate(req).expect_err("refused").reply(req, false);
    let www = reply
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = match reply.body() {
        ResponseBody::Local(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    (reply.status(), body, www)
}

#[test]
fn istio_default_passes_no_token_and_refuses_a_bad_one() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let f = filter(TWO_PROVIDERS, &a, &b);
    // No token: on, unauthenticated.
    let mut req = request("/x", &[]);
    assert_eq!(ok(&f, &mut req), None);
    // a's token in Authorization.
    let token = a.sign(&claims("https://a"));
    let mut req = request("/x?q=1", &[("authorization", &bearer(&token))]);
    let got = ok(&f, &mut req).unwrap();
    assert_eq!(got.principal(), "https://a/alice");
    // b's token in its own header, or its query parameter.
    let token = b.sign(&claims("https://b"));
    let mut req = request("/x", &[("x-token", &token)]);
    assert_eq!(ok(&f, &mut req).unwrap().issuer, "https://b");
    let mut req = request(&format!("/x?token={token}"), &[]);
    assert_eq!(ok(&f, &mut req).unwrap().issuer, "https://b");
    // A token no provider issues.
    let stranger = a.sign(&claims("https://c"));
    let (status, body, www) = refused(
        &f,
        &mut request("/x", &[("authorization", &bearer(&stranger))]),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "Jwt issuer is not configured");
    assert_eq!(
        www,
        r#"Bearer realm="http://api.example/x", error="invalid_token""#
    );
    // a's issuer, signed by b's key: a's verdict, not "issuer not configured".
    let forged = b.token(json!({"alg": "EdDSA", "kid": "ka"}), &claims("https://a"));
    let (_, body, _) = refused(
        &f,
        &mut request("/x", &[("authorization", &bearer(&forged))]),
    );
    assert_eq!(body, "Jwks doesn't have key to match kid or alg from Jwt");
    // Garbage is refused too.
    let (status, body, _) = refused(&f, &mut request("/x", &[("authorization", "Bearer abc")]));
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::UNAUTHORIZED,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        )
    );
}

#[test]
fn wrong_audience_is_403_without_a_challenge() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let f = filter(TWO_PROVIDERS, &a, &b);
    let mut c = claims("https://a");
    c["aud"] = "other".into();
    let (status, body, www) = refused(
        &f,
        &mut request("/x", &[("authorization", &bearer(&a.sign(&c)))]),
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "Audiences in Jwt are not allowed");
    assert_eq!(www, "");
}

#[test]
fn rules_pick_the_requirement_by_path() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let yaml = format!(
        "{TWO_PROVIDERS}
rules:
  - match: {{prefix: /public}}
  - match: {{path: /admin}}
    requires: {{provider_name: a}}
  - match: {{prefix: /either}}
    requires: {{requires_any: [{{provider_name: a}}, {{provider_name: b}}]}}
  - match: {{prefix: /both}}
    requires: {{requires_all: [{{provider_name: a}}, {{provider_name: b}}]}}
  - match: {{prefix: /optional}}
    requires: {{allow_missing_or_failed: true}}
"
    );
    let f = filter(&yaml, &a, &b);
    let ta = bearer(&a.sign(&claims("https://a")));
    let tb = b.sign(&claims("https://b"));
    // Exempt, even with a bad token.
    assert!(f
        .authenticate(&mut request(
            "/public/x",
            &[("authorization", "Bearer junk")]
        ))
        .is_ok());
    // Required: missing is 401 with a bare challenge.
    let (status, body, www) = refused(&f, &mut request("/admin", &[]));
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt is missing")
    );
    assert_eq!(www, r#"Bearer realm="http://api.example/admin""#);
    assert!(f
        .authenticate(&mut request("/admin", &[("authorization", &ta)]))
        .is_ok());
    // /admin/x matches no rule: nothing is needed.
    assert_eq!(ok(&f, &mut request("/admin/x", &[])), None);
    // b's token is not a's.
    let (_, body, _) = refused(&f, &mut request("/admin", &[("x-token", &tb)]));
    assert_eq!(body, "Jwt is missing");
    assert!(f
        .authenticate(&mut request("/either", &[("x-token", &tb)]))
        .is_ok());
    assert_eq!(
        refused(&f, &mut request("/either", &[])).1,
        "Jwt is missing"
    );
    // All: both tokens; the first one's claims.
    let both = ok(
        &f,
        &mut request("/both", &[("authorization", &ta), ("x-token", &tb)]),
    )
    .unwrap();
    assert_eq!(both.issuer, "https://a");
    assert_eq!(
        refused(&f, &mut request("/both", &[("authorization", &ta)])).1,
        "Jwt is missing"
    );
    // Missing or failed: on either way, with claims when valid.
    assert_eq!(
        ok(
            &f,
            &mut request("/optional", &[("authorization", "Bearer x.y.z")])
        ),
        None
    );
    assert!(ok(&f, &mut request("/optional", &[("authorization", &ta)])).is_some());
}

#[test]
fn accepted_requests_carry_claims_and_lose_the_token_unless_forwarded() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let f = filter(TWO_PROVIDERS, &a, &b);
    let token = a.sign(&claims("https://a"));
    let mut req = request(
        "/x",
        &[
            ("authorization", &bearer(&token)),
            ("x-sub", "spoofed"),
            ("x-role", "spoofed"),
        ],
    );
    ok(&f, &mut req);
    let h = req.headers();
    assert!(
        h.get("authorization").is_none(),
        "a's token is not forwarded"
    );
    assert_eq!(h["x-sub"], "alice");
    assert_eq!(h["x-groups"], "dev,ops");
    assert_eq!(h["x-role"], "admin");
    assert_eq!(h["x-n"], "7");
    assert_eq!(h["x-jwt-payload"], token.split('.').nth(1).unwrap());
    // Without a token, headers a client made up under the claim names are gone.
    let mut req = request("/x", &[("x-sub", "spoofed"), ("x-jwt-payload", "e30")]);
    ok(&f, &mut req);
    assert!(req.headers().get("x-sub").is_none() && req.headers().get("x-jwt-payload").is_none());
    // b forwards its token.
    let tb = b.sign(&claims("https://b"));
    let mut req = request(&format!("/x?a=1&token={tb}&z=2"), &[]);
    ok(&f, &mut req);
    assert_eq!(
        req.uri().query(),
        Some(format!("a=1&token={tb}&z=2").as_str())
    );
}

#[test]
fn a_token_in_a_stripped_query_parameter_is_removed() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let f = filter(TWO_PROVIDERS, &a, &b);
    let ta = a.sign(&claims("https://a"));
    let mut req = request(&format!("/x?a=1&access_token={ta}&z=2"), &[]);
    ok(&f, &mut req).unwrap();
    assert_eq!(req.uri().path_and_query().unwrap().as_str(), "/x?a=1&z=2");
    let mut req = request(&format!("/x?access_token={ta}"), &[]);
    ok(&f, &mut req).unwrap();
    assert_eq!(req.uri().path_and_query().unwrap().as_str(), "/x");
}

#[test]
fn grpc_requests_get_grpc_statuses() {
    let (a, b) = (TestKey::ec("ES256", "ka"), TestKey::ed25519("kb"));
    let f = filter(TWO_PROVIDERS, &a, &b);
    let mut req = request(
        "/svc/Method",
        &[
            ("content-type", "application/grpc"),
            ("authorization", "Bearer a.b.c"),
        ],
    );
    let reply = f.authenticate(&mut req).unwrap_err().reply(&req, true);
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["grpc-status"], "16");
    assert_eq!(
        reply.headers()["grpc-message"],
        "Jwt header is an invalid Base64url encoded"
    );
    assert_eq!(
        reply.headers()["www-authenticate"],
        r#"Bearer realm="https://api.example/svc/Method", error="invalid_token""#
    );
    let mut c = claims("https://a");
    c["aud"] = "other".into();
    let mut req = request(
        "/svc/M",
        &[
            ("content-type", "application/grpc"),
            ("authorization", &bearer(&a.sign(&c))),
        ],
    );
    let reply = f.authenticate(&mut req).unwrap_err().reply(&req, false);
    assert_eq!(reply.headers()["grpc-status"], "7");
}

#[test]
fn a_remote_set_never_fetched_refuses_with_envoys_reason() {
    let a = TestKey::ec("ES256", "ka");
    let j: config::JwtAuthn = serde_yaml_ng::from_str(
        "providers: [{name: r, issuer: https://a, remote_jwks: {uri: 'http://127.0.0.1:9/jwks'}}]",
    )
    .unwrap();
    let f = compile(&j, "jwt_authn", "web", None, None).unwrap();
    let token = a.sign(&claims("https://a"));
    let (status, body, _) = refused(&f, &mut request("/", &[("authorization", &bearer(&token))]));
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwks remote fetch is failed")
    );
}

#[test]
fn local_key_sets_with_unusable_keys_are_config_errors_at_their_field() {
    let j: config::JwtAuthn = serde_yaml_ng::from_str(
        r#"providers: [{name: a, local_jwks: {inline: '{"keys":[{"kty":"oct","k":"AA"}]}'}}, {name: b, local_jwks: {filename: /nonexistent/jwks.json}}]"#,
    )
    .unwrap();
    let Err(errors) = compile(&j, "p", "web", None, None) else {
        panic!("accepted")
    };
    assert_eq!(errors[0].path, "p.providers[0].local_jwks.inline");
    assert!(
        errors[0].message.contains("[kty] \"oct\" is not supported"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[1].path, "p.providers[1].local_jwks.filename");
    assert!(
        errors[1].message.contains("cannot read"),
        "{}",
        errors[1].message
    );
}

/// What authentication costs per request, by algorithm (a measurement, not a check):
/// `cargo test --release -p sinew-proxy jwt_authn_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn jwt_authn_cost() {
    let keys = [
        TestKey::rsa("RS256", "rs"),
        TestKey::ec("ES256", "es"),
        TestKey::ed25519("ed"),
    ];
    let yaml = format!(
        "providers: [{{name: a, issuer: https://a, local_jwks: {{inline: '{}'}}, claim_to_headers: [{{header_name: x-sub, claim_name: sub}}]}}]",
        jwks(&keys.iter().collect::<Vec<_>>())
    );
    let j: config::JwtAuthn = serde_yaml_ng::from_str(&yaml).unwrap();
    let f = compile(&j, "jwt_authn", "web", None, None).unwrap();
    let n = 2000;
    let time = |headers: &[(&str, &str)]| {
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut req = request("/x", headers);
            std::hint::black_box(f.authenticate(&mut req).is_ok());
        }
        started.elapsed() / n
    };
    let baseline = time(&[]);
    eprintln!("no token: {baseline:?} per request (request building included)");
    for key in &keys {
        let token = bearer(&key.sign(&claims("https://a")));
        let each = time(&[("authorization", &token)]);
        eprintln!("{}: {each:?} per request", key.alg);
    }
}
