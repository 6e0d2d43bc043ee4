//! The claims of a verified JWT, as authorization rules and forwarded headers read them.

use serde_json::{Map, Value};

/// A token's claims after its signature, issuer, audience and times were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub` (empty when the token has none).
    pub subject: String,
    /// Every claim, `iss` and `sub` included.
    pub claims: Map<String, Value>,
}

impl VerifiedClaims {
    /// Istio's request principal: `<iss>/<sub>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }

    /// The values of a claim, by a path of nested names (Istio's
    /// `request.auth.claims[a][b]`): a string is one value, a list of strings many, and
    /// a space-separated string (OAuth's `scope`) is not split.
    pub fn values(&self, path: &[&str]) -> Vec<&str> {
        let Some((first, rest)) = path.split_first() else {
            return Vec::new();
        };
        let mut value = match self.claims.get(*first) {
            Some(v) => v,
            None => return Vec::new(),
        };
        for name in rest {
            value = match value.get(name) {
                Some(v) => v,
                None => return Vec::new(),
            };
        }
        match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: &str) -> VerifiedClaims {
        let claims: Map<String, Value> = serde_json::from_str(json).unwrap();
        VerifiedClaims {
            issuer: claims["iss"].as_str().unwrap().into(),
            subject: claims["sub"].as_str().unwrap_or("").into(),
            claims,
        }
    }

    #[test]
    fn the_principal_is_issuer_slash_subject() {
        let c = claims(r#"{"iss":"https://idp.example","sub":"alice"}"#);
        assert_eq!(c.principal(), "https://idp.example/alice");
    }

    #[test]
    fn claim_values_are_read_through_nested_names_and_lists() {
        let c = claims(
            r#"{"iss":"i","sub":"s","groups":["dev","ops",3],"realm":{"role":"admin"},"n":5}"#,
        );
        assert_eq!(c.values(&["groups"]), vec!["dev", "ops"]);
        assert_eq!(c.values(&["realm", "role"]), vec!["admin"]);
        assert!(c.values(&["n"]).is_empty());
        assert!(c.values(&["missing"]).is_empty());
        assert!(c.values(&[]).is_empty());
    }
}
