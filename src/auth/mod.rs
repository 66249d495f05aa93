//! Who is asking, and may they: authentication in the two schemes registry clients speak,
//! and the decisions that follow from it.
//!
//! - [`htpasswd`]: `NIXERY_AUTH_HTPASSWD`, HTTP Basic against an htpasswd file of bcrypt
//!   hashes (`WWW-Authenticate: Basic realm="nixery"`), as `docker login`, `podman login`,
//!   skopeo `--creds` and `ctr --user` send it.
//! - [`token`]: Docker's token scheme for an external token service (Harbor, GitLab,
//!   docker_auth, a cloud IAM): `WWW-Authenticate: Bearer realm=…,service=…,scope=…`, and
//!   JWTs signed by the service's keys ([`keys`]).
//! - [`access`]: what an [`Identity`] may do with a repository name: pull what exists, or
//!   cause a build (`NIXERY_ANONYMOUS`), as a pure decision the registry's handlers ask for.
//! - [`links`]: which manifests belong to which names, so that with authentication a
//!   manifest by digest is served only under a name it was built for.
//!
//! At most one scheme is configured. Without one every client is anonymous, and the registry
//! behaves as it always has (`NIXERY_ANONYMOUS=build`, the default).
//!
//! Credentials never reach a log line or an answer: the request log prints the path only (no
//! query, no header), refusals say why in words, and tokens, passwords and hashes are held
//! only as long as a request needs them (verified passwords as keyed digests).

pub mod access;
pub mod htpasswd;
pub mod keys;
pub mod links;
pub mod token;
mod watched;

#[cfg(test)]
pub(crate) mod test_keys;

pub use access::{Action, AnonymousAccess, Decision, Refusal};
pub use links::Links;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use htpasswd::Htpasswd;
use token::{AccessEntry, TokenError, TokenVerifier};

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials, or Docker's anonymous token.
    Anonymous,
    /// A user of the htpasswd file, or a token's subject.
    User(String),
}

impl Principal {
    pub fn is_anonymous(&self) -> bool {
        *self == Principal::Anonymous
    }
}

/// What a principal may pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grants {
    /// Every name (htpasswd users, and everyone without authentication).
    Everything,
    /// The names a token's `access` claim lists with `pull`.
    Listed(Vec<AccessEntry>),
}

/// A principal and its grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    pub grants: Grants,
}

impl Identity {
    /// A client without credentials: what `NIXERY_ANONYMOUS` allows, on every name.
    pub fn anonymous() -> Self {
        Identity { principal: Principal::Anonymous, grants: Grants::Everything }
    }

    fn user(name: &str) -> Self {
        Identity { principal: Principal::User(name.to_owned()), grants: Grants::Everything }
    }

    /// Whether the grants cover pulling `name` (the name as in the request's URL).
    pub fn may_pull(&self, name: &str) -> bool {
        match &self.grants {
            Grants::Everything => true,
            Grants::Listed(entries) => entries.iter().any(|e| e.allows_pull(name)),
        }
    }
}

/// The credentials a request carries, as read from its `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// Present but unreadable (another scheme, bad base64, no `:`).
    Unreadable,
}

impl Credentials {
    pub fn from_headers(headers: &HeaderMap) -> Credentials {
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Credentials::None };
        let Ok(value) = value.to_str() else { return Credentials::Unreadable };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok();
            let text = decoded.and_then(|d| String::from_utf8(d).ok());
            match text.as_deref().and_then(|t| t.split_once(':')) {
                // containers/image (skopeo, podman) answers a Basic challenge it has no
                // credentials for with an empty user and password: that is no credentials.
                Some(("", "")) => Credentials::None,
                Some((user, password)) => Credentials::Basic { user: user.to_owned(), password: password.to_owned() },
                None => Credentials::Unreadable,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Credentials::Bearer(rest.to_owned())
        } else {
            Credentials::Unreadable
        }
    }
}

/// Why credentials were refused: the answer's message (no secret in it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    Password { user: String, why: htpasswd::Refused },
    #[error("{0}")]
    Token(TokenError),
    #[error("this registry takes {expected} credentials")]
    Scheme { expected: &'static str },
}

/// The configured scheme.
pub enum Authenticator {
    Htpasswd(Htpasswd),
    Token(TokenVerifier),
}

/// The realm of Basic challenges.
pub const BASIC_REALM: &str = "nixery";

impl Authenticator {
    /// Who `credentials` belong to.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Identity, AuthError> {
        match (self, credentials) {
            (_, Credentials::None) => Ok(Identity::anonymous()),
            (Authenticator::Htpasswd(file), Credentials::Basic { user, password }) => {
                match file.verify(&user, &password).await {
                    Ok(()) => Ok(Identity::user(&user)),
                    Err(why) => Err(AuthError::Password { user, why }),
                }
            }
            (Authenticator::Token(verifier), Credentials::Bearer(token)) => {
                verifier.verify(&token).await.map_err(AuthError::Token)
            }
            (Authenticator::Htpasswd(_), _) => Err(AuthError::Scheme { expected: "Basic" }),
            (Authenticator::Token(_), _) => Err(AuthError::Scheme { expected: "Bearer token" }),
        }
    }

    /// The `WWW-Authenticate` value of a 401 for a request about `name` (none for `/v2/`).
    pub fn challenge(&self, name: Option<&str>) -> HeaderValue {
        let text = match self {
            Authenticator::Htpasswd(_) => format!("Basic realm=\"{BASIC_REALM}\""),
            Authenticator::Token(verifier) => {
                let s = &verifier.service;
                let mut text = format!("Bearer realm=\"{}\",service=\"{}\"", s.realm, s.service);
                if let Some(name) = name {
                    text.push_str(&format!(",scope=\"repository:{name}:pull\""));
                }
                text
            }
        };
        // Realm and service are checked by the configuration to be quotable text, and names
        // by their grammar.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"nixery\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> Credentials {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        Credentials::from_headers(&headers)
    }

    #[test]
    fn authorization_headers_as_clients_send_them() {
        assert_eq!(Credentials::from_headers(&HeaderMap::new()), Credentials::None);
        // `docker login -u alice` with the password "se:cret": only the first ':' splits.
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:se:cret");
        assert_eq!(
            with_authorization(&format!("Basic {basic}")),
            Credentials::Basic { user: "alice".into(), password: "se:cret".into() }
        );
        assert_eq!(
            with_authorization(&format!("basic  {basic} ")),
            Credentials::Basic { user: "alice".into(), password: "se:cret".into() }
        );
        assert_eq!(with_authorization("Bearer eyJ.eyJ.sig"), Credentials::Bearer("eyJ.eyJ.sig".into()));
        let empty = base64::engine::general_purpose::STANDARD.encode(":");
        assert_eq!(with_authorization(&format!("Basic {empty}")), Credentials::None, "skopeo without credentials");
        let no_colon = base64::engine::general_purpose::STANDARD.encode("alice");
        for unreadable in ["Basic !!!", &format!("Basic {no_colon}"), "Bearer", "Digest x=1", "token"] {
            assert_eq!(with_authorization(unreadable), Credentials::Unreadable, "{unreadable}");
        }
    }

    #[test]
    fn refusals_say_why_without_secrets() {
        let wrong = AuthError::Password { user: "alice".into(), why: htpasswd::Refused::WrongPassword };
        let unknown = AuthError::Password { user: "nobody".into(), why: htpasswd::Refused::UnknownUser };
        assert_eq!(wrong.to_string(), unknown.to_string(), "the client cannot tell which users exist");
        assert_eq!(AuthError::Token(TokenError::Expired).to_string(), "the token has expired");
    }
}
