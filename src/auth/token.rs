//! Docker's token authentication ("Token Authentication Specification" and "Token
//! Authentication Implementation" of distribution): the registry never sees a password. It
//! answers a request without a token with
//!
//! ```text
//! 401 Unauthorized
//! WWW-Authenticate: Bearer realm="https://auth.example/token",service="nixery.example",scope="repository:shell/git:pull"
//! ```
//!
//! the client asks the realm (`GET https://auth.example/token?service=nixery.example&scope=repository:shell/git:pull`,
//! with the user's Basic credentials if it has any) for a token, and sends the request again
//! with `Authorization: Bearer <token>`. The token is a JWS (compact JWT) the service signed:
//!
//! ```text
//! header: {"alg":"ES256","typ":"JWT","kid":"PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"}
//! claims: {"iss":"auth.example","sub":"alice","aud":"nixery.example","exp":1767225900,
//!          "nbf":1767225600,"iat":1767225600,"jti":"9f2c...",
//!          "access":[{"type":"repository","name":"shell/git","actions":["pull"]}]}
//! ```
//!
//! A token is accepted only if all of these hold, in this order: its signature is one of the
//! configured keys' ([`super::keys`]) in an algorithm of that key (never `none` or HMAC);
//! `iss` is `NIXERY_AUTH_TOKEN_ISSUER`; `aud` is or contains `NIXERY_AUTH_TOKEN_SERVICE`;
//! `exp` is present and not past, and `nbf`, if present, not future (both with
//! [`LEEWAY_SECONDS`] of clock skew, as distribution allows). Which repositories it may pull
//! is its `access` claim: entries of `"type":"repository"` whose `actions` hold `pull` (or
//! `*`) for exactly the name in the request's URL. A token whose `sub` is empty or missing is
//! Docker's anonymous token (what the token service gives a client without credentials): it
//! counts as no credentials at all, so `NIXERY_ANONYMOUS` decides for it.

use super::keys::Keys;
use super::{Grants, Identity, Principal};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde::Deserialize;
use std::sync::Arc;

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;

/// What the configuration says about the token service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenService {
    /// Where clients get tokens (`NIXERY_AUTH_TOKEN_REALM`).
    pub realm: String,
    /// This registry's name at the token service: the tokens' audience
    /// (`NIXERY_AUTH_TOKEN_SERVICE`).
    pub service: String,
    /// Who signs the tokens (`NIXERY_AUTH_TOKEN_ISSUER`).
    pub issuer: String,
}

/// One entry of the `access` claim.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// Whether this entry lets its holder pull `name`.
    pub fn allows_pull(&self, name: &str) -> bool {
        self.kind == "repository" && self.name == name && self.actions.iter().any(|a| a == "pull" || a == "*")
    }
}

/// The claims read beyond what [`Validation`] checks.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    access: Vec<AccessEntry>,
}

/// Why a token was refused: said to the client (it is the client's own token) and logged;
/// never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted (ES256, ES384, RS256-512, PS256-512, EdDSA)")]
    Algorithm,
    #[error("the token is not signed by a key of the token service")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token is for another service")]
    Audience,
    #[error("the token has no '{0}' claim")]
    MissingClaim(String),
}

/// Checks tokens against the configured service and keys.
pub struct TokenVerifier {
    pub service: TokenService,
    keys: Arc<Keys>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(service: TokenService, keys: Arc<Keys>) -> Self {
        // The algorithms are set per key (see `verify`); these are the claims' rules.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&[&service.issuer]);
        validation.set_audience(&[&service.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        TokenVerifier { service, keys, validation }
    }

    /// Who `token` speaks for and what it grants (see the module docs).
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        let keys = self.keys.for_kid(header.kid.as_deref()).await;
        let mut candidates = keys.candidates(header.kid.as_deref(), header.alg).peekable();
        if candidates.peek().is_none() {
            return Err(if keys.keys.iter().any(|k| k.algorithms.contains(&header.alg)) {
                TokenError::Signature
            } else {
                TokenError::Algorithm
            });
        }
        for key in candidates {
            let mut validation = self.validation.clone();
            validation.algorithms = vec![header.alg];
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(identity(data.claims)),
                // This key did not sign it: the next may have.
                Err(e) if signature_error(e.kind()) => continue,
                // The signature held, so the claims are the token's own: no other key helps.
                Err(e) => return Err(claims_error(e.kind())),
            }
        }
        Err(TokenError::Signature)
    }
}

fn signature_error(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
    )
}

fn claims_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        _ => TokenError::Malformed,
    }
}

/// The identity a verified token's claims give.
fn identity(claims: Claims) -> Identity {
    match claims.sub.filter(|s| !s.is_empty()) {
        Some(sub) => Identity { principal: Principal::User(sub), grants: Grants::Listed(claims.access) },
        None => Identity::anonymous(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use serde_json::{Value, json};

    fn service() -> TokenService {
        TokenService {
            realm: "http://auth.test/token".into(),
            service: "nixery.test".into(),
            issuer: "auth.test".into(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims(sub: &str, names: &[&str]) -> Value {
        let access: Vec<Value> =
            names.iter().map(|n| json!({"type": "repository", "name": n, "actions": ["pull"]})).collect();
        json!({"iss": "auth.test", "sub": sub, "aud": "nixery.test", "exp": now() + 300, "nbf": now() - 5,
               "iat": now() - 5, "jti": "1", "access": access})
    }

    fn sign(claims: &Value, alg: Algorithm, private: &str, kid: Option<&str>) -> String {
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &key).unwrap()
    }

    fn verifier(keys: &str) -> (tempfile::TempDir, TokenVerifier) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, keys).unwrap();
        let keys = Arc::new(Keys::from_file(&path).unwrap());
        (dir, TokenVerifier::new(service(), keys))
    }

    #[tokio::test]
    async fn a_token_of_the_service_names_its_subject_and_grants() {
        let (_dir, v) = verifier(&format!("{OTHER_PUBLIC}{EC_PUBLIC}{RSA_CERTIFICATE}"));
        let es = sign(&claims("alice", &["shell/hello"]), Algorithm::ES256, EC_PRIVATE, Some("PYYO:TEWU"));
        let id = v.verify(&es).await.unwrap();
        assert_eq!(id.principal, Principal::User("alice".into()));
        assert!(id.may_pull("shell/hello") && !id.may_pull("hello/shell") && !id.may_pull("shell"));
        // RSA, checked with the key of a certificate; PEM keys match whatever the kid.
        let rs = sign(&claims("bob", &[]), Algorithm::RS256, RSA_PRIVATE, Some("another-kid"));
        let id = v.verify(&rs).await.unwrap();
        assert_eq!(id.principal, Principal::User("bob".into()));
        assert!(!id.may_pull("shell/hello"), "no access claim, no pull");
    }

    #[tokio::test]
    async fn an_empty_subject_is_anonymous() {
        let (_dir, v) = verifier(EC_CERTIFICATE);
        let token = sign(&claims("", &["hello"]), Algorithm::ES256, EC_PRIVATE, None);
        assert_eq!(v.verify(&token).await.unwrap(), Identity::anonymous());
        let mut no_sub = claims("x", &[]);
        no_sub.as_object_mut().unwrap().remove("sub");
        let token = sign(&no_sub, Algorithm::ES256, EC_PRIVATE, None);
        assert_eq!(v.verify(&token).await.unwrap(), Identity::anonymous());
    }

    #[tokio::test]
    async fn tokens_that_do_not_hold_are_refused_saying_why() {
        let (_dir, v) = verifier(EC_PUBLIC);
        let good = claims("alice", &["hello"]);
        let with = |key: &str, value: Value| {
            let mut c = good.clone();
            c[key] = value;
            sign(&c, Algorithm::ES256, EC_PRIVATE, None)
        };
        let without = |key: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(key);
            sign(&c, Algorithm::ES256, EC_PRIVATE, None)
        };
        let tampered = {
            let token = sign(&good, Algorithm::ES256, EC_PRIVATE, None);
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let forged = claims("alice", &["hello", "secret"]);
            parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, forged.to_string());
            parts.join(".")
        };
        let hmac =
            encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(EC_PUBLIC.as_bytes()).unwrap())
                .unwrap();
        let unsigned = {
            let header = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, r#"{"alg":"none"}"#);
            let body = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, good.to_string());
            format!("{header}.{body}.")
        };
        let cases = [
            (sign(&good, Algorithm::ES256, OTHER_PRIVATE, None), TokenError::Signature),
            (tampered, TokenError::Signature),
            (with("exp", json!(now() - LEEWAY_SECONDS as i64 - 60)), TokenError::Expired),
            (with("nbf", json!(now() + LEEWAY_SECONDS as i64 + 60)), TokenError::NotYetValid),
            (with("iss", json!("someone.else")), TokenError::Issuer),
            (with("aud", json!("another.registry")), TokenError::Audience),
            (with("aud", json!(["another.registry", "a third"])), TokenError::Audience),
            (without("exp"), TokenError::MissingClaim("exp".into())),
            (without("aud"), TokenError::MissingClaim("aud".into())),
            (without("iss"), TokenError::MissingClaim("iss".into())),
            (sign(&good, Algorithm::RS256, RSA_PRIVATE, None), TokenError::Algorithm),
            (hmac, TokenError::Algorithm),
            // `none` is not even an algorithm name to jsonwebtoken: the header does not parse.
            (unsigned, TokenError::Malformed),
            ("not.a.token".to_owned(), TokenError::Malformed),
            ("".to_owned(), TokenError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token).await.map(|id| id.principal), Err(want.clone()), "{want}");
        }
        // An audience list holding this service is fine.
        let listed = with("aud", json!(["another.registry", "nixery.test"]));
        assert!(v.verify(&listed).await.is_ok());
    }

    #[test]
    fn access_entries_grant_pull_on_exactly_their_name() {
        let entry = |kind: &str, name: &str, actions: &[&str]| AccessEntry {
            kind: kind.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        };
        assert!(entry("repository", "shell/git", &["pull"]).allows_pull("shell/git"));
        assert!(entry("repository", "shell/git", &["push", "*"]).allows_pull("shell/git"));
        assert!(!entry("repository", "shell/git", &["push"]).allows_pull("shell/git"));
        assert!(!entry("repository", "shell/git", &["pull"]).allows_pull("shell/git/x"));
        assert!(!entry("repository", "shell", &["pull"]).allows_pull("shell/git"));
        assert!(!entry("registry", "shell/git", &["pull"]).allows_pull("shell/git"));
    }
}
