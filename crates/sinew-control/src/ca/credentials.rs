//! Bootstrap credentials: how a workload without a certificate proves who it is.
//!
//! - A per-workload token (for VMs): the token file lists each identity with the SHA-256
//!   of its token, so the file on the CA's disk holds no usable secret. Re-read when it
//!   changes, so a workload can be added or revoked without a restart.
//! - A Kubernetes service-account token, checked by the API server's TokenReview
//!   (`authentication.k8s.io/v1`): an authenticated `system:serviceaccount:<ns>:<sa>`
//!   becomes `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use serde::Deserialize;
use sinew_identity::SpiffeId;

use crate::config::{CaConfig, TokenReviewConfig};

/// One line of the token file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    identity: String,
    /// Hex SHA-256 of the token.
    token_sha256: String,
}

/// How a workload proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// A per-workload token from the token file.
    Token,
    /// A Kubernetes service-account token, checked by TokenReview.
    Kubernetes,
    /// A certificate the CA issued before (a renewal over mTLS).
    Svid,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Token => "token",
            Method::Kubernetes => "kubernetes",
            Method::Svid => "svid",
        }
    }
}

/// Why a request was refused: a short reason for counting, and the detail for the log.
#[derive(Debug, Clone)]
pub struct Refused {
    /// `no_credential`, `unknown_token`, `foreign_trust_domain`, `token_review` or
    /// `bad_csr`.
    pub reason: &'static str,
    pub detail: String,
}

impl Refused {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Refused {
        Refused {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.reason)
    }
}

/// Checks bearer tokens.
pub struct Credentials {
    trust_domain: String,
    tokens: Option<TokenFile>,
    kubernetes: Option<TokenReviewConfig>,
}

struct TokenFile {
    path: PathBuf,
    /// The file's modification time and entries, as last read.
    loaded: Mutex<Option<(Option<SystemTime>, Vec<TokenEntry>)>>,
}

impl TokenFile {
    fn entries(&self) -> Result<Vec<TokenEntry>, String> {
        let modified = std::fs::metadata(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?
            .modified()
            .ok();
        let mut loaded = self.loaded.lock().expect("token file lock");
        if let Some((when, entries)) = loaded.as_ref() {
            if *when == modified && modified.is_some() {
                return Ok(entries.clone());
            }
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let entries: Vec<TokenEntry> =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        *loaded = Some((modified, entries.clone()));
        Ok(entries)
    }
}

impl Credentials {
    pub fn new(config: &CaConfig) -> Credentials {
        Credentials {
            trust_domain: config.trust_domain.clone(),
            tokens: config.tokens.clone().map(|path| TokenFile {
                path,
                loaded: Mutex::new(None),
            }),
            kubernetes: config.kubernetes.clone(),
        }
    }

    /// The identity a token proves, or why it proves none. The message is for the CA's
    /// log; the workload is told only that it was refused.
    pub async fn authenticate(&self, token: &str) -> Result<(SpiffeId, Method), Refused> {
        if token.is_empty() {
            return Err(Refused::new("no_credential", "no bearer token"));
        }
        if let Some(file) = &self.tokens {
            let digest =
                hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
            match file.entries() {
                Ok(entries) => {
                    if let Some(entry) = entries
                        .iter()
                        .find(|e| e.token_sha256.eq_ignore_ascii_case(&digest))
                    {
                        return self
                            .in_trust_domain(&entry.identity)
                            .map(|id| (id, Method::Token))
                            .map_err(|e| Refused::new("foreign_trust_domain", e));
                    }
                }
                Err(e) => tracing::warn!("mesh CA token file: {e}"),
            }
        }
        if let Some(kubernetes) = &self.kubernetes {
            return self
                .review(kubernetes, token)
                .await
                .map(|id| (id, Method::Kubernetes))
                .map_err(|e| Refused::new("token_review", e));
        }
        Err(Refused::new(
            "unknown_token",
            "the token matches no workload",
        ))
    }

    fn in_trust_domain(&self, identity: &str) -> Result<SpiffeId, String> {
        let id = SpiffeId::parse(identity).map_err(|e| format!("{identity:?}: {e}"))?;
        if id.trust_domain() != self.trust_domain {
            return Err(format!("{id} is not in trust domain {}", self.trust_domain));
        }
        Ok(id)
    }

    async fn review(&self, config: &TokenReviewConfig, token: &str) -> Result<SpiffeId, String> {
        let client = crate::registry::kubernetes::client(config.api_server.as_deref()).await?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!config.audiences.is_empty()).then(|| config.audiences.clone()),
            },
            ..Default::default()
        };
        let reviews: kube::Api<TokenReview> = kube::Api::all(client);
        let answer = reviews
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview: {e}"))?;
        let status = answer
            .status
            .ok_or("TokenReview: no status in the answer")?;
        if status.authenticated != Some(true) {
            return Err(format!(
                "TokenReview: not authenticated{}",
                status.error.map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        if !config.audiences.is_empty() {
            let granted = status.audiences.unwrap_or_default();
            if !granted.iter().any(|a| config.audiences.contains(a)) {
                return Err(format!(
                    "TokenReview: the token is for {granted:?}, not {:?}",
                    config.audiences
                ));
            }
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account_identity(&self.trust_domain, &username)
    }
}

/// `system:serviceaccount:<ns>:<sa>` → `spiffe://<td>/ns/<ns>/sa/<sa>`; anything else
/// (a user, a node) is no workload.
fn service_account_identity(trust_domain: &str, username: &str) -> Result<SpiffeId, String> {
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| format!("TokenReview: {username:?} is not a service account"))?;
    let (namespace, account) = rest
        .split_once(':')
        .ok_or_else(|| format!("TokenReview: {username:?} has no namespace"))?;
    // Kubernetes names are DNS labels; anything with a separator in it would make a
    // different SPIFFE path than the account it names.
    if [namespace, account]
        .iter()
        .any(|part| part.is_empty() || part.contains(['/', ':']))
    {
        return Err(format!(
            "TokenReview: {username:?} is not a namespace and an account name"
        ));
    }
    SpiffeId::for_service_account(trust_domain, namespace, account)
        .map_err(|e| format!("TokenReview: {username:?}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_accounts_map_to_istio_shaped_ids_and_nothing_else_does() {
        let id =
            service_account_identity("cluster.local", "system:serviceaccount:shop:web").unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/shop/sa/web");
        assert!(service_account_identity("cluster.local", "system:node:n1").is_err());
        assert!(service_account_identity("cluster.local", "alice").is_err());
        assert!(service_account_identity("cluster.local", "system:serviceaccount:a/b:c").is_err());
    }

    fn credentials(file: &str) -> Credentials {
        let path =
            std::env::temp_dir().join(format!("sinew-ca-tokens-{}-{file}", std::process::id()));
        Credentials {
            trust_domain: "cluster.local".into(),
            tokens: Some(TokenFile {
                path,
                loaded: Mutex::new(None),
            }),
            kubernetes: None,
        }
    }

    #[tokio::test]
    async fn a_token_is_known_by_its_hash_and_the_file_is_reread_when_it_changes() {
        let c = credentials("reread");
        let path = c.tokens.as_ref().unwrap().path.clone();
        let sha = |t: &str| hex(ring::digest::digest(&ring::digest::SHA256, t.as_bytes()).as_ref());
        std::fs::write(
            &path,
            format!("- identity: spiffe://cluster.local/ns/vm/sa/billing\n  token_sha256: {}\n- identity: spiffe://other.domain/ns/vm/sa/x\n  token_sha256: {}\n", sha("s3cret"), sha("foreign")),
        )
        .unwrap();
        assert_eq!(
            c.authenticate("s3cret").await.unwrap().0.as_str(),
            "spiffe://cluster.local/ns/vm/sa/billing"
        );
        assert!(c.authenticate("wrong").await.is_err());
        assert!(c.authenticate("").await.is_err());
        let error = c.authenticate("foreign").await.unwrap_err();
        assert!(error.detail.contains("not in trust domain"), "{error}");
        assert_eq!(error.reason, "foreign_trust_domain");
        assert_eq!(
            c.authenticate("wrong").await.unwrap_err().reason,
            "unknown_token"
        );
        assert_eq!(
            c.authenticate("").await.unwrap_err().reason,
            "no_credential"
        );
        // Revoked: the file changes, the token stops working.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "[]\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(c.authenticate("s3cret").await.is_err());
        let _ = std::fs::remove_file(&path);
    }
}
