//! A Docker token service standing in for an external one (token_service.py beside this
//! file: PyJWT and cryptography from PyPI, installed by scripts/setup), on a free 127.0.0.1
//! port, as a [`Daemon`] stopped by PID when dropped.
//!
//! It makes its own keys at start and writes the public ones where a server is pointed at
//! them ([`Keys`]); [`TokenService::server_env`] is the environment of a server that trusts
//! it. Users are configured per test ([`User`]), including ones whose tokens the server must
//! refuse: signed by a key it does not trust, expired, or for another service.

use super::credentials::basic;
use super::process::{Daemon, read_log};
use super::{http, temp_dir};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// `iss` of the tokens.
pub const ISSUER: &str = "token-service.test";
/// The service name (token audience) servers are configured with.
pub const SERVICE: &str = "nixery.test";

/// Which signing key a user's tokens carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// EC P-256, ES256: trusted.
    Good,
    /// RSA 2048, RS256: trusted.
    Rsa,
    /// EC P-256 the server is never told about.
    Other,
    /// EC P-256 published in the JWKS only after [`TokenService::publish_next`].
    Next,
}

impl SigningKey {
    fn name(self) -> &'static str {
        match self {
            SigningKey::Good => "good",
            SigningKey::Rsa => "rsa",
            SigningKey::Other => "other",
            SigningKey::Next => "next",
        }
    }
}

/// A user of the token service.
#[derive(Clone, Debug)]
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
    /// fnmatch patterns of the repositories the user may pull.
    pub repositories: &'static [&'static str],
    pub key: SigningKey,
    /// Seconds until the tokens expire (negative: expired when issued).
    pub expires_in: i64,
    /// An audience other than the requested service.
    pub audience: Option<&'static str>,
}

impl User {
    /// A user whose tokens hold for `repositories`.
    pub fn new(name: &'static str, password: &'static str, repositories: &'static [&'static str]) -> User {
        User { name, password, repositories, key: SigningKey::Good, expires_in: 300, audience: None }
    }
}

/// How a server is given the service's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// A PEM file of the trusted public keys.
    Pem,
    /// A JWKS file.
    JwksFile,
    /// The service's JWKS endpoint.
    JwksUrl,
}

/// The running token service.
pub struct TokenService {
    daemon: Option<Daemon>,
    dir: TempDir,
    pub port: u16,
}

impl TokenService {
    /// Starts it with `users`; anonymous clients get tokens with an empty `sub` and pull
    /// access to every repository they ask for.
    pub fn start(users: &[User]) -> TokenService {
        let dir = temp_dir("token-service");
        let users: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|u| {
                let settings = serde_json::json!({
                    "password": u.password, "repositories": u.repositories, "key": u.key.name(),
                    "expires_in": u.expires_in, "audience": u.audience,
                });
                (u.name.to_owned(), settings)
            })
            .collect();
        let config = serde_json::json!({"issuer": ISSUER, "users": users, "anonymous": {"repositories": ["*"]}});
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write the token service's config");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration/harness/token_service.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(&config_path).arg(dir.path());
        let mut daemon = Daemon::spawn(&mut cmd, &dir.path().join("log"))
            .unwrap_or_else(|e| panic!("cannot start the token service (run scripts/setup): {e}"));
        let port_file = dir.path().join("port");
        let ready = daemon.wait_ready(Duration::from_secs(30), || {
            std::fs::read_to_string(&port_file).map(drop).map_err(|e| e.to_string())
        });
        if let Err(e) = ready {
            panic!("the token service {e}\n--- its log ---\n{}", read_log(&dir.path().join("log")));
        }
        let port = std::fs::read_to_string(&port_file).unwrap().trim().parse().expect("a port number");
        TokenService { daemon: Some(daemon), dir, port }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `NIXERY_AUTH_TOKEN_REALM`.
    pub fn realm(&self) -> String {
        format!("{}/token", self.base())
    }

    /// The value of `NIXERY_AUTH_TOKEN_KEYS` for `keys`.
    pub fn keys(&self, keys: Keys) -> String {
        match keys {
            Keys::Pem => self.file("trusted.pem").display().to_string(),
            Keys::JwksFile => self.file("jwks.json").display().to_string(),
            Keys::JwksUrl => format!("{}/jwks.json", self.base()),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment of a server that trusts this service, its keys given as `keys`.
    pub fn server_env(&self, keys: Keys) -> Vec<(&'static str, String)> {
        vec![
            ("NIXERY_AUTH_TOKEN_REALM", self.realm()),
            ("NIXERY_AUTH_TOKEN_SERVICE", SERVICE.to_owned()),
            ("NIXERY_AUTH_TOKEN_ISSUER", ISSUER.to_owned()),
            ("NIXERY_AUTH_TOKEN_KEYS", self.keys(keys)),
        ]
    }

    /// A token as a client gets one: `GET /token?service=…&scope=repository:NAME:pull` with
    /// `user`'s credentials (none: anonymous).
    pub fn token(&self, user: Option<(&str, &str)>, name: &str) -> String {
        let url = format!("{}?service={SERVICE}&scope=repository:{name}:pull", self.realm());
        let authorization = user.map(|(user, password)| basic(user, password));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("Authorization", a.as_str())).collect();
        let answer = http::send("GET", &url, &headers, Duration::from_secs(30)).expect("the token service answers");
        assert_eq!(answer.status, 200, "no token for {user:?}: {}\n{}", answer.describe(), self.log());
        answer.json()["token"].as_str().expect("a token").to_owned()
    }

    /// Publishes the `next` key in the JWKS (a key rotation).
    pub fn publish_next(&self) {
        let answer = http::send("GET", &format!("{}/publish-next", self.base()), &[], Duration::from_secs(30));
        assert_eq!(answer.map(|a| a.status), Ok(200));
    }

    /// What it logged (one line per token request: user and scope).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("log"))
    }

    /// Token requests it answered for `user` (`(anonymous)` for anonymous ones).
    pub fn requests_by(&self, user: &str) -> usize {
        self.log().lines().filter(|l| l.starts_with(&format!("token: user={user} "))).count()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop();
        }
    }
}
