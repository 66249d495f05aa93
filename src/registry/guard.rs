//! The registry's door: who a request is ([`crate::auth`]), whether it may do what it asks,
//! and whether a build it would cause is within its client's rate ([`crate::rate_limit`]),
//! as answers in the registry's format. The handlers under `/v2/` and the web pages ask it
//! the same questions, so the same rules hold for everything that runs Nix.
//!
//! A handler first [`Guard::identify`]s the request (401 `UNAUTHORIZED` with the challenge for
//! credentials that do not hold), then [`Guard::check`]s the action: pulling what exists
//! needs the right to the name; causing a build (a manifest that exists neither in memory
//! nor storage for the tag's current revision, a `/ui/` page that must plan) also needs
//! `NIXERY_ANONYMOUS=build` or credentials, and a place in the client's build rate
//! ([`Guard::admit_build`]). [`Guard::must_look_first`] says when the handler has to ask the
//! caches before building, so that the rules can tell the two apart; a server without
//! authentication or limits skips all of it.
//!
//! Every refusal is counted in `/metrics` by reason, and logged at INFO without credentials.

use super::error::RegistryError;
use crate::auth::access::{self, Action, AnonymousAccess, Decision, Refusal};
use crate::auth::keys::{KeySource, Keys};
use crate::auth::token::{TokenService, TokenVerifier};
use crate::auth::{AuthError, Authenticator, Credentials, Identity, Links, Principal};
use crate::metrics::Metrics;
use crate::rate_limit::{BuildRate, ClientKey, RateLimiter, TrustedProxies};
use crate::storage::Storage;
use axum::http::{HeaderMap, StatusCode};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How clients authenticate (the configuration's choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `NIXERY_AUTH_HTPASSWD`.
    Htpasswd(PathBuf),
    /// `NIXERY_AUTH_TOKEN_*`.
    Token { service: TokenService, keys: KeySource },
}

/// Access settings, in the domain's terms (the configuration maps its variables into this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    pub scheme: Option<Scheme>,
    pub anonymous: AnonymousAccess,
    pub build_rate: Option<BuildRate>,
    pub trusted_proxies: TrustedProxies,
}

/// For the start-up log line: the scheme and its public settings, no secret.
impl std::fmt::Display for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scheme {
            None => f.write_str("no authentication")?,
            Some(Scheme::Htpasswd(path)) => write!(f, "htpasswd {}", path.display())?,
            Some(Scheme::Token { service, keys }) => {
                let keys = match keys {
                    KeySource::File(path) => path.display().to_string(),
                    KeySource::Url(url) => crate::redact::credentials(url.as_str()).into_owned(),
                };
                write!(
                    f,
                    "token realm {} service {} issuer {} keys {keys}",
                    service.realm, service.service, service.issuer
                )?
            }
        }
        let anonymous = match self.anonymous {
            AnonymousAccess::Build => "build",
            AnonymousAccess::Pull => "pull",
            AnonymousAccess::None => "none",
        };
        write!(f, ", anonymous {anonymous}")?;
        if let Some(rate) = self.build_rate {
            write!(f, ", build rate {rate}")?;
        }
        Ok(())
    }
}

/// Why access could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("NIXERY_AUTH_HTPASSWD {}: {message}", .path.display())]
    Htpasswd { path: PathBuf, message: String },
    #[error("NIXERY_AUTH_TOKEN_KEYS {source_name}: {message}")]
    Keys { source_name: String, message: String },
}

/// The access rules as the server runs them.
pub struct Guard {
    authenticator: Option<Authenticator>,
    anonymous: AnonymousAccess,
    links: Option<Links>,
    rate: Option<RateLimiter>,
    proxies: TrustedProxies,
    metrics: Arc<Metrics>,
}

impl Guard {
    /// Loads what `policy` names (the htpasswd file, the token keys).
    pub async fn open(
        policy: &AccessPolicy,
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
    ) -> Result<Guard, GuardError> {
        let authenticator = match &policy.scheme {
            None => None,
            Some(Scheme::Htpasswd(path)) => {
                let file = crate::auth::htpasswd::Htpasswd::open(path)
                    .map_err(|message| GuardError::Htpasswd { path: path.clone(), message })?;
                Some(Authenticator::Htpasswd(file))
            }
            Some(Scheme::Token { service, keys }) => {
                let source_name = match keys {
                    KeySource::File(path) => path.display().to_string(),
                    KeySource::Url(url) => crate::redact::credentials(url.as_str()).into_owned(),
                };
                let keys = Keys::open(keys).await.map_err(|message| GuardError::Keys { source_name, message })?;
                Some(Authenticator::Token(TokenVerifier::new(service.clone(), keys)))
            }
        };
        let links = authenticator.as_ref().map(|_| Links::new(storage));
        Ok(Guard {
            authenticator,
            anonymous: policy.anonymous,
            links,
            rate: policy.build_rate.map(RateLimiter::new),
            proxies: policy.trusted_proxies.clone(),
            metrics,
        })
    }

    /// No authentication, no limits: every client may do everything (tests, and servers
    /// configured so).
    pub fn open_to_all(metrics: Arc<Metrics>) -> Guard {
        Guard {
            authenticator: None,
            anonymous: AnonymousAccess::Build,
            links: None,
            rate: None,
            proxies: TrustedProxies::default(),
            metrics,
        }
    }

    /// The links of manifests to names, when authentication is on.
    pub fn links(&self) -> Option<&Links> {
        self.links.as_ref()
    }

    fn refuse(&self, why: Refusal, error: RegistryError) -> RegistryError {
        self.metrics.refused(why);
        error
    }

    /// A 401 for a request about `name`, with this server's challenge.
    fn challenge(&self, why: Refusal, message: String, name: Option<&str>) -> RegistryError {
        let challenge = match &self.authenticator {
            Some(a) => a.challenge(name),
            None => axum::http::HeaderValue::from_static("Basic realm=\"nixery\""),
        };
        self.refuse(why, RegistryError::unauthorized(message, challenge))
    }

    /// Who the request is: anonymous without credentials (or without a configured scheme),
    /// else whom its credentials name; 401 if they do not hold. `name` is what the request is
    /// about, for the challenge's scope.
    pub async fn identify(&self, headers: &HeaderMap, name: Option<&str>) -> Result<Identity, RegistryError> {
        let Some(authenticator) = &self.authenticator else { return Ok(Identity::anonymous()) };
        match authenticator.authenticate(Credentials::from_headers(headers)).await {
            Ok(identity) => Ok(identity),
            Err(e) => {
                match &e {
                    AuthError::Password { user, why } => tracing::info!(user, %why, "authentication failed"),
                    other => tracing::info!(why = %other, "authentication failed"),
                }
                Err(self.challenge(Refusal::Credentials, e.to_string(), name))
            }
        }
    }

    /// `/v2/`: with a scheme configured, only an authenticated client gets 200; anyone else
    /// the challenge, which is how `docker login` finds out how to log in and checks that
    /// it did.
    pub async fn base(&self, headers: &HeaderMap) -> Result<(), RegistryError> {
        if self.authenticator.is_none() {
            return Ok(());
        }
        let identity = self.identify(headers, None).await?;
        match &self.authenticator {
            // Not counted as a refusal: every client's first request, before it logs in.
            Some(a) if identity.principal.is_anonymous() => {
                Err(RegistryError::unauthorized("authentication required", a.challenge(None)))
            }
            _ => Ok(()),
        }
    }

    /// May `identity` do `action` on `name`? 401 or 403 if not ([`access::decide`]).
    pub fn check(&self, identity: &Identity, name: &str, action: Action) -> Result<(), RegistryError> {
        match access::decide(self.anonymous, identity, name, action) {
            Decision::Allow => Ok(()),
            Decision::Challenge(message) => Err(self.challenge(Refusal::Anonymous, message, Some(name))),
            Decision::Deny(message) => {
                tracing::info!(%message, "access denied");
                Err(self.refuse(Refusal::Access, RegistryError::denied(message)))
            }
        }
    }

    /// May `identity` open the start page? Anonymous clients only unless
    /// `NIXERY_ANONYMOUS=none`.
    pub fn check_browse(&self, identity: &Identity) -> Result<(), RegistryError> {
        if identity.principal.is_anonymous() && self.anonymous == AnonymousAccess::None {
            return Err(self.challenge(Refusal::Anonymous, "authentication required".to_owned(), None));
        }
        Ok(())
    }

    /// Whether a request of `identity` that may cause a build has to look for an existing
    /// answer first: when anonymous clients may not build, or builds are rate-limited.
    pub fn must_look_first(&self, identity: &Identity) -> bool {
        self.rate.is_some() || (identity.principal.is_anonymous() && self.anonymous != AnonymousAccess::Build)
    }

    /// The client a request counts against (see [`crate::rate_limit::client`]).
    pub fn client(&self, identity: &Identity, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientKey {
        match &identity.principal {
            Principal::User(user) => ClientKey::Principal(user.clone()),
            Principal::Anonymous => {
                let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                ClientKey::from_address(self.proxies.client_address(peer, headers))
            }
        }
    }

    /// A build for `identity` about `name`: allowed ([`Guard::check`]) and within its
    /// client's build rate, else 401, 403 or 429 `TOOMANYREQUESTS` with `Retry-After`.
    pub fn admit_build(
        &self,
        identity: &Identity,
        name: &str,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        self.check(identity, name, Action::Build)?;
        let Some(rate) = &self.rate else { return Ok(()) };
        let client = self.client(identity, peer, headers);
        rate.admit(&client, Instant::now()).map_err(|wait| {
            // Whole seconds, rounded up: asking again after them finds a place.
            let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            let wait = std::time::Duration::from_secs(seconds);
            tracing::info!(%client, rate = %rate.rate(), retry_after = seconds, "build rate exceeded");
            let (builds, window) = (rate.rate().builds.get(), rate.rate().window.as_secs());
            let images = if builds == 1 { "image" } else { "images" };
            let message = format!(
                "too many builds: at most {builds} new {images} per {window} s (NIXERY_BUILD_RATE); images \
                 already built can still be pulled; try again in {seconds} s"
            );
            self.refuse(Refusal::Rate, RegistryError::too_many_requests(message, wait))
        })
    }

    /// Counts the refusal in an answer that came from a build (a package the policy refused).
    pub fn count_build_answer(&self, error: &RegistryError) {
        if error.status == StatusCode::FORBIDDEN {
            self.metrics.refused(Refusal::Package);
        }
    }
}
