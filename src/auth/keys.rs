//! `NIXERY_AUTH_TOKEN_KEYS`: the public keys token signatures are checked with, from the
//! token service's own files or its JWKS endpoint.
//!
//! Three forms, told apart by the value and the content:
//!
//! - **PEM**: a file of one or more blocks, each a public key or a certificate whose key is
//!   taken (what distribution's `rootcertbundle` holds for Harbor, GitLab and docker_auth):
//!
//!   ```text
//!   -----BEGIN PUBLIC KEY-----
//!   MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE...
//!   -----END PUBLIC KEY-----
//!   -----BEGIN CERTIFICATE-----
//!   MIIBezCCASGgAwIBAgIU...
//!   -----END CERTIFICATE-----
//!   ```
//!
//!   PEM keys have no id, so a token's `kid` (distribution's token services put a libtrust
//!   fingerprint there, others a name) does not select among them: every key of the token's
//!   algorithm is tried.
//! - **JWKS file** (RFC 7517; the content starts with `{`):
//!   `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"...","y":"..."}]}`. A token's
//!   `kid` selects the key with that id; a token without one tries them all.
//! - **JWKS URL** (`https://…`): fetched at start-up (a failure stops it), then again every
//!   [`REFRESH_EVERY`], and when a token names a `kid` the set does not have, at most every
//!   [`REFETCH_AT_MOST`]: a token service that rotates its key is followed without a restart.
//!   A fetch that fails keeps the keys there were (logged).
//!
//! Files are re-read when they change ([`super::watched`]).
//!
//! Only public-key algorithms are ever accepted: ES256/ES384 (EC keys), RS256–512 and
//! PS256–512 (RSA), EdDSA (Ed25519), each only with a key of its kind; a JWK's `alg`
//! narrows its key to that algorithm. Symmetric (`oct`) JWKs, keys marked for encryption
//! (`"use":"enc"`) and private keys are refused: with a public key list, an HMAC
//! "signature" would be made with a key everybody has.

use super::watched::Watched;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// How often a JWKS URL is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// The shortest time between fetches caused by unknown key ids.
pub const REFETCH_AT_MOST: Duration = Duration::from_secs(10);
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the keys come from (the configuration's `NIXERY_AUTH_TOKEN_KEYS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM or JWKS file.
    File(PathBuf),
    /// A JWKS endpoint.
    Url(Url),
}

/// One key a signature may be checked with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The JWK's `kid`; none for PEM keys (they match any token).
    pub kid: Option<String>,
    pub key: DecodingKey,
    /// The algorithms this key checks.
    pub algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("algorithms", &self.algorithms).finish()
    }
}

/// The keys of one version of the source.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A PEM or JWKS document (JWKS if it starts with `{`).
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        let set =
            if bytes.trim_ascii_start().starts_with(b"{") { Self::from_jwks(bytes)? } else { Self::from_pem(bytes)? };
        if set.keys.is_empty() {
            return Err("no public key in it".to_owned());
        }
        Ok(set)
    }

    fn from_pem(bytes: &[u8]) -> Result<KeySet, String> {
        let blocks = pem::parse_many(bytes).map_err(|e| format!("not PEM: {e}"))?;
        let mut keys = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let n = i + 1;
            match block.tag() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => {}
                tag if tag.contains("PRIVATE") => {
                    return Err(format!("PEM block {n} is a private key: give the token service's public key"));
                }
                tag => return Err(format!("PEM block {n} is a {tag}, not a public key or certificate")),
            }
            let one = pem::encode(block);
            let key = DecodingKey::from_ec_pem(one.as_bytes())
                .or_else(|_| DecodingKey::from_rsa_pem(one.as_bytes()))
                .or_else(|_| DecodingKey::from_ed_pem(one.as_bytes()))
                .map_err(|_| format!("PEM block {n} ({}) holds no EC, RSA or Ed25519 public key", block.tag()))?;
            let algorithms = key.family().algorithms().to_vec();
            keys.push(VerifyingKey { kid: None, key, algorithms });
        }
        Ok(KeySet { keys })
    }

    fn from_jwks(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::new();
        for (i, value) in set.keys.into_iter().enumerate() {
            // A key of a kind this server cannot use is skipped, not fatal: token services
            // publish encryption keys and newer key types next to their signing keys.
            match serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(|jwk| from_jwk(&jwk)) {
                Ok(key) => keys.push(key),
                Err(why) => tracing::debug!(key = i, why, "skipping a JWK"),
            }
        }
        Ok(KeySet { keys })
    }

    /// The keys that may have signed a token with `kid` and `alg`: PEM keys whatever its
    /// `kid`, JWKs with that `kid` (all of them for a token without one).
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a VerifyingKey> {
        self.keys.iter().filter(move |k| {
            let id_matches = match (&k.kid, kid) {
                (None, _) | (_, None) => true,
                (Some(have), Some(want)) => have == want,
            };
            id_matches && k.algorithms.contains(&alg)
        })
    }

    /// Whether a token naming `kid` could find its key here.
    fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref().is_none_or(|have| have == kid))
    }
}

/// A JWK as a verifying key, or why it is not one.
fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, String> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return Err("not a signing key".to_owned());
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err("a symmetric key".to_owned());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let algorithms = match jwk.common.key_algorithm {
        Some(alg) => {
            let alg = Algorithm::try_from(alg).map_err(|_| format!("alg {alg:?} is not a signature algorithm"))?;
            if !key.family().algorithms().contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key"));
            }
            vec![alg]
        }
        None => key.family().algorithms().to_vec(),
    };
    if algorithms.iter().any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) {
        return Err("a symmetric key".to_owned());
    }
    Ok(VerifyingKey { kid: jwk.common.key_id.clone(), key, algorithms })
}

/// The current keys of the configured source.
pub struct Keys {
    from: From,
}

enum From {
    File(Watched<KeySet>),
    Url(Remote),
}

/// A JWKS endpoint and what it said last.
struct Remote {
    url: Url,
    client: reqwest::Client,
    current: RwLock<Arc<KeySet>>,
    /// When the last fetch started.
    fetched: Mutex<Instant>,
}

/// A failed fetch, without the URL reqwest's errors carry (it may hold a token in its query;
/// the caller names the URL, redacted).
fn fetch_error(error: reqwest::Error) -> String {
    error.without_url().to_string()
}

impl Remote {
    async fn fetch(&self) -> Result<KeySet, String> {
        let response = self.client.get(self.url.clone()).send().await.map_err(fetch_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body = response.bytes().await.map_err(fetch_error)?;
        KeySet::parse(&body)
    }

    /// Fetches again; on failure the old keys stay.
    async fn refresh(&self) {
        *self.fetched.lock().expect("jwks lock") = Instant::now();
        match self.fetch().await {
            Ok(set) => *self.current.write().expect("jwks lock") = Arc::new(set),
            Err(error) => {
                tracing::warn!(url = %crate::redact::credentials(self.url.as_str()), %error, "fetching the token keys failed: keeping the keys there were")
            }
        }
    }
}

impl Keys {
    /// Loads the keys of `source` (start-up: an unreadable or empty source is an error) and,
    /// for a URL, starts refreshing them every [`REFRESH_EVERY`] while the returned value lives.
    pub async fn open(source: &KeySource) -> Result<Arc<Keys>, String> {
        let keys = match source {
            KeySource::File(path) => Keys { from: From::File(Watched::open(path, KeySet::parse)?) },
            KeySource::Url(url) => {
                let client = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build().map_err(|e| e.to_string())?;
                let remote = Remote {
                    url: url.clone(),
                    client,
                    current: RwLock::new(Arc::default()),
                    fetched: Mutex::new(Instant::now()),
                };
                let set = remote.fetch().await?;
                *remote.current.write().expect("jwks lock") = Arc::new(set);
                Keys { from: From::Url(remote) }
            }
        };
        let keys = Arc::new(keys);
        if matches!(keys.from, From::Url(_)) {
            tokio::spawn(refresh_while_alive(Arc::downgrade(&keys)));
        }
        Ok(keys)
    }

    /// The keys from `path` (for tests and tools).
    pub fn from_file(path: &Path) -> Result<Keys, String> {
        Ok(Keys { from: From::File(Watched::open(path, KeySet::parse)?) })
    }

    /// The current key set; for a token naming a `kid` the set lacks, a JWKS URL is fetched
    /// again first (at most every [`REFETCH_AT_MOST`]).
    pub async fn for_kid(&self, kid: Option<&str>) -> Arc<KeySet> {
        match &self.from {
            From::File(file) => file.get().0,
            From::Url(remote) => {
                let current = remote.current.read().expect("jwks lock").clone();
                let unknown = kid.is_some_and(|kid| !current.knows(kid));
                let may_fetch = remote.fetched.lock().expect("jwks lock").elapsed() >= REFETCH_AT_MOST;
                if unknown && may_fetch {
                    remote.refresh().await;
                    return remote.current.read().expect("jwks lock").clone();
                }
                current
            }
        }
    }
}

async fn refresh_while_alive(keys: Weak<Keys>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(keys) = keys.upgrade() else { return };
        if let From::Url(remote) = &keys.from {
            remote.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_keys::*;
    use jsonwebtoken::EncodingKey;

    fn jwk(private: &str, alg: Algorithm, kid: &str) -> Jwk {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    #[test]
    fn pem_files_hold_keys_and_certificates() {
        let set =
            KeySet::parse(format!("{EC_PUBLIC}\n{RSA_CERTIFICATE}{EC_CERTIFICATE}{RSA_PUBLIC}").as_bytes()).unwrap();
        let algorithms: Vec<_> = set.keys.iter().map(|k| k.algorithms[0]).collect();
        assert_eq!(algorithms, [Algorithm::ES256, Algorithm::RS256, Algorithm::ES256, Algorithm::RS256]);
        assert!(set.keys.iter().all(|k| k.kid.is_none()));
        assert_eq!(set.candidates(Some("any"), Algorithm::ES256).count(), 2, "PEM keys match any kid");
        assert_eq!(set.candidates(None, Algorithm::PS256).count(), 2);
        assert_eq!(set.candidates(None, Algorithm::HS256).count(), 0);
    }

    #[test]
    fn pem_mistakes_are_named() {
        let private = KeySet::parse(EC_PRIVATE.as_bytes()).unwrap_err();
        assert_eq!(private, "PEM block 1 is a private key: give the token service's public key");
        assert!(!private.contains("MIG"), "no key material in the message");
        let other = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n";
        assert_eq!(
            KeySet::parse(format!("{EC_PUBLIC}{other}").as_bytes()).unwrap_err(),
            "PEM block 2 is a X509 CRL, not a public key or certificate"
        );
        assert_eq!(KeySet::parse(b"").unwrap_err(), "no public key in it");
        assert_eq!(KeySet::parse(b"hello").unwrap_err(), "no public key in it");
    }

    #[test]
    fn jwk_sets_keep_signing_keys_by_id() {
        let mut oct = serde_json::json!({"kty": "oct", "kid": "shared", "k": "c2VjcmV0"});
        let mut enc = serde_json::to_value(jwk(OTHER_PRIVATE, Algorithm::ES256, "enc")).unwrap();
        enc["use"] = "enc".into();
        let set = serde_json::json!({"keys": [
            serde_json::to_value(jwk(EC_PRIVATE, Algorithm::ES256, "ec-1")).unwrap(),
            serde_json::to_value(jwk(RSA_PRIVATE, Algorithm::RS256, "rsa-1")).unwrap(),
            oct.take(), enc, {"kty": "OKP", "crv": "X25519", "x": "AAAA"}
        ]});
        let set = KeySet::parse(set.to_string().as_bytes()).unwrap();
        let ids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(ids, ["ec-1", "rsa-1"], "the symmetric, encryption and unknown keys are skipped");
        assert_eq!(set.keys[1].algorithms, [Algorithm::RS256], "a JWK's alg narrows its key");
        assert_eq!(set.candidates(Some("ec-1"), Algorithm::ES256).count(), 1);
        assert_eq!(set.candidates(Some("rsa-1"), Algorithm::ES256).count(), 0);
        assert_eq!(set.candidates(Some("gone"), Algorithm::ES256).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 1);
        assert!(set.knows("ec-1") && !set.knows("gone"));
        let only_oct = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert_eq!(KeySet::parse(only_oct.to_string().as_bytes()).unwrap_err(), "no public key in it");
    }

    /// A JWKS URL may carry a token in its query; reqwest's errors name the URL, so a
    /// failed fetch (refused, or a body cut short) must not repeat it.
    #[tokio::test]
    async fn a_failed_fetch_does_not_repeat_the_url() {
        use std::io::Write as _;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_port = closed.local_addr().unwrap().port();
        drop(closed);
        let cut_short = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cut_port = cut_short.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = cut_short.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"keys\"");
        });
        for port in [refused_port, cut_port] {
            let url = Url::parse(&format!("http://127.0.0.1:{port}/jwks?access_token=SECRETtoken42")).unwrap();
            let error = Keys::open(&KeySource::Url(url)).await.err().expect("the fetch fails");
            assert!(!error.contains("SECRETtoken42") && !error.contains("jwks"), "{error}");
        }
    }
}
