//! The server's configuration: the only place that knows the command line and the
//! environment.
//!
//! Every setting is a `--flag` and an environment variable with Nixery's name, so an existing
//! Nixery deployment's environment works unchanged. Values are checked here, at start-up, and
//! mapped into the domain's types ([`BuildPolicy`], [`NixPolicy`], [`LayerPolicy`],
//! [`PkgSource`] (a flake reference parsed into a [`FlakeRef`]), [`CachePolicy`], [`ArchivePolicy`], [`StorageConfig`], [`server::Limits`],
//! [`AccessPolicy`], [`PackagePolicy`]),
//! which know nothing of flags or variables. A bad value stops the server
//! with a message naming the variable and the flag.
//!
//! # Reading the environment
//!
//! [`Command::parse`] takes the environment as an argument, so what it returns depends only
//! on its inputs: the tests give it a map and never see the developer's `PORT` or
//! `NIXERY_*`; [`Command::from_env`] gives it the process's. clap's `env = "..."` annotations
//! stay on the arguments, for `--help` (which lists every variable) and as the one list of
//! which variable sets which flag, but parsing uses a copy of the command without them:
//! a variable that is set (and not empty: empty counts as unset, as in Nixery) and whose flag
//! the command line does not give becomes that flag, `--flag=value`, placed after the command
//! line's own flags of the same (sub)command, as clap reads variables after the command line.
//! So clap checks a variable's value exactly as it checks the flag's, the command line still
//! wins, and its mistakes are still reported first. (One difference in order: clap reads the
//! top-level variables after a subcommand's arguments, here they come before the
//! subcommand's name, so `PORT=eighty nixery layers` reports `PORT` before the missing
//! image.)
//!
//! A bad value becomes [`ConfigError::InvalidValue`], built from clap's structured error (the
//! argument, the value, the value parser's own error), never from its rendered text.
//! `--help`, `--version` and malformed command lines come back as clap's answers for `main`
//! to print: nothing in here prints or exits.

mod args;
mod parse;
#[cfg(test)]
mod tests;

pub use args::*;
use parse::{parse_args, reason, set, variables};

use crate::archive::ArchivePolicy;
use crate::builder::{ArtifactPolicy, BuildPolicy};
use crate::cache::CachePolicy;
use crate::digest::Digest;
use crate::gc::GcPolicy;
use crate::layers::LayerPolicy;
use crate::nix::{NixPolicy, NixpkgsConfig};
use crate::package_policy::PackagePolicy;
use crate::pkgsource::{Channel, FlakeRef, PkgSource, RemoteUrl};
use crate::registry::{AccessPolicy, Scheme};
use crate::retention::Lifecycle;
use crate::server;
use crate::signing::SigningKey;
use crate::storage::{GcsConfig, S3Config};
use clap::CommandFactory;
use reqwest::Url;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Nixery's default package source when none is configured.
pub const DEFAULT_CHANNEL: &str = "nixos-unstable";
/// Where channels are resolved and fetched from unless `NIXERY_CHANNEL_REPO` says otherwise.
pub const DEFAULT_CHANNEL_REPO: &str = "https://github.com/NixOS/nixpkgs";
/// Where `popcount` reads narinfo files by default, as Nixery's popcount does.
pub const DEFAULT_BINARY_CACHE: &str = "https://cache.nixos.org";

/// Checked settings shared by everything that builds images: the domain's policy, and where
/// popularity data is loaded from.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    pub policy: BuildPolicy,
    pub popularity_url: Option<String>,
}

/// Where the server keeps blobs, manifests and build records.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    Filesystem(PathBuf),
    Gcs(GcsConfig),
    S3(S3Config),
}

/// The checked configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub build: BuildSettings,
    pub cache: CachePolicy,
    pub archive: ArchivePolicy,
    pub storage: StorageConfig,
    pub connections: server::Limits,
    /// From a shutdown signal until the process has exited.
    pub shutdown_timeout: Duration,
    /// SBOMs and signatures.
    pub artifacts: ArtifactPolicy,
    /// Who may pull and build, and how often.
    pub access: AccessPolicy,
    /// Retention, garbage collection and build leases.
    pub lifecycle: Lifecycle,
}

/// What the binary was asked to do, with checked settings.
#[derive(Clone, Debug)]
pub enum Command {
    Serve(Box<Config>),
    Popcount(PopcountSettings),
    Layers {
        image: String,
        tag: String,
        json: bool,
        build: BuildSettings,
    },
    /// `nixery gc`: the server's storage and what it keeps.
    Gc {
        storage: StorageConfig,
        policy: GcPolicy,
        dry_run: bool,
    },
}

/// Checked settings of `nixery popcount`.
#[derive(Clone, Debug)]
pub struct PopcountSettings {
    pub source: PkgSource,
    pub output: PathBuf,
    /// Attributes per Nix evaluation.
    pub batch: usize,
    pub nix_timeout: Duration,
    pub binary_cache: Url,
    /// narinfo requests in flight at once.
    pub connections: usize,
}

/// A configuration the server cannot start with, or clap's answer to the command line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--help` or `--version`: what was asked for, for `main` to print (not a failure).
    #[error(transparent)]
    Help(clap::Error),
    /// A malformed command line (an unknown flag, a missing argument, a bad value for a flag
    /// without a variable): clap's message with the usage.
    #[error(transparent)]
    Usage(clap::Error),
    #[error("invalid value '{value}' for {variable} ({flag}): {}", reason(.source))]
    InvalidValue {
        variable: String,
        flag: String,
        /// The value, or `***` for a secret's.
        value: String,
        source: clap::Error,
    },
    #[error("set at most one package source, got {}", .0.join(" and "))]
    SeveralSources(Vec<&'static str>),
    #[error("NIXERY_PKGS_PATH {}: {source}", .path.display())]
    PkgsPath { path: PathBuf, source: std::io::Error },
    #[error("NIXERY_STORAGE_BACKEND={backend} needs {variable}")]
    MissingBucket { backend: &'static str, variable: &'static str },
    #[error("NIXERY_CHANNEL must not be empty")]
    EmptyChannel,
    #[error("NIXERY_CHANNEL_REPO applies to the channel source only, not to {0}")]
    ChannelRepoWithoutChannel(&'static str),
    #[error("NIXERY_NIXPKGS_CONFIG: {0}")]
    NixpkgsConfig(String),
    #[error("NIXERY_PKGS_FLAKE: {0}")]
    PkgsFlake(#[from] crate::pkgsource::flake::FlakeRefError),
    #[error("NIXERY_PKGS_FLAKE {flake}: {source}")]
    PkgsFlakeDir { flake: String, source: std::io::Error },
    #[error(
        "NIXERY_NIXPKGS_CONFIG cannot be applied to a flake's outputs: a flake instantiates its own nixpkgs \
         (configure it there, e.g. legacyPackages = import nixpkgs {{ inherit system; config.allowUnfree = true; }}), \
         so unset NIXERY_NIXPKGS_CONFIG or serve another source"
    )]
    NixpkgsConfigWithFlake,
    /// The signing key cannot be used (no path, no password in the message).
    #[error("{variable}: {reason}")]
    SigningKey { variable: &'static str, reason: String },
    #[error(
        "NIXERY_REGISTRY_NAME must be a host name with an optional port and path (registry.example.com:5000/images), got '{0}'"
    )]
    RegistryName(String),
    #[error("set NIXERY_AUTH_HTPASSWD or NIXERY_AUTH_TOKEN_*, not both: clients can be asked for one scheme")]
    TwoSchemes,
    #[error("token authentication needs all of NIXERY_AUTH_TOKEN_REALM, _SERVICE, _ISSUER and _KEYS; missing {}", .0.join(", "))]
    IncompleteToken(Vec<&'static str>),
    #[error(
        "NIXERY_ANONYMOUS={0} needs authentication (NIXERY_AUTH_HTPASSWD or NIXERY_AUTH_TOKEN_*): without it every client is anonymous"
    )]
    AnonymousWithoutAuth(&'static str),
}

/// Looks up an environment variable (`std::env::var_os` in production, a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

impl Command {
    /// The command line and environment of this process.
    ///
    /// Must be called before the process starts any thread: variables of this configuration
    /// that are set to the empty string are removed from the process environment, so that
    /// libraries reading the same variables themselves (google-cloud-auth's Application
    /// Default Credentials read `GOOGLE_APPLICATION_CREDENTIALS`) treat them as unset too.
    pub fn from_env() -> Result<Command, ConfigError> {
        for var in variables(&Args::command()) {
            if std::env::var_os(&var).is_some_and(|v| v.is_empty()) {
                // SAFETY: documented precondition: no other thread exists yet.
                unsafe { std::env::remove_var(&var) };
            }
        }
        Command::parse(std::env::args_os(), &|var| std::env::var_os(var))
    }

    /// Parses `argv` (the program name first), taking settings from `env` where the command
    /// line does not give them. Reads nothing else: not the process environment.
    pub fn parse(argv: impl IntoIterator<Item = impl Into<OsString>>, env: Env) -> Result<Command, ConfigError> {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        Command::from_args(parse_args(&argv, env)?, env)
    }

    fn from_args(args: Args, env: Env) -> Result<Command, ConfigError> {
        Ok(match args.command {
            None => Command::Serve(Box::new(Config::from_args(args.serve, env)?)),
            Some(Subcommand::Popcount(p)) => Command::Popcount(PopcountSettings {
                source: p.source.resolve()?,
                output: p.output,
                batch: p.batch as usize,
                nix_timeout: Duration::from_secs(p.nix_timeout),
                binary_cache: p.binary_cache,
                connections: p.connections as usize,
            }),
            Some(Subcommand::Layers(l)) => {
                Command::Layers { image: l.image, tag: l.tag, json: l.json, build: l.build.check(l.source)? }
            }
            Some(Subcommand::Gc(g)) => {
                let policy = Lifecycle::from(args.serve.lifecycle.clone()).gc();
                Command::Gc { storage: storage_config(&args.serve, env)?, policy, dry_run: g.dry_run }
            }
        })
    }
}

impl SourceArgs {
    /// The one configured package source (nixos-unstable when none is given).
    fn resolve(self) -> Result<PkgSource, ConfigError> {
        let given: Vec<&'static str> = [
            self.channel.as_ref().map(|_| "NIXERY_CHANNEL"),
            self.pkgs_repo.as_ref().map(|_| "NIXERY_PKGS_REPO"),
            self.pkgs_path.as_ref().map(|_| "NIXERY_PKGS_PATH"),
            self.pkgs_flake.as_ref().map(|_| "NIXERY_PKGS_FLAKE"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(ConfigError::SeveralSources(given));
        }
        if let (Some(_), Some(other)) = (&self.channel_repo, given.first().filter(|s| **s != "NIXERY_CHANNEL")) {
            return Err(ConfigError::ChannelRepoWithoutChannel(other));
        }
        Ok(if let Some(path) = self.pkgs_path {
            let path = std::fs::canonicalize(&path).map_err(|source| ConfigError::PkgsPath { path, source })?;
            PkgSource::Path(path)
        } else if let Some(flake) = self.pkgs_flake {
            PkgSource::Flake(pkgs_flake(&flake)?)
        } else if let Some(repo) = self.pkgs_repo {
            PkgSource::Git(RemoteUrl::new(repo))
        } else {
            let channel = self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
            let channel = Channel::parse(channel).ok_or(ConfigError::EmptyChannel)?;
            let repo = RemoteUrl::new(self.channel_repo.as_deref().unwrap_or(DEFAULT_CHANNEL_REPO));
            PkgSource::Channel { repo, channel }
        })
    }
}

/// NIXERY_PKGS_FLAKE: a flake reference Nix can lock; a path flake's directory must exist
/// (it is made absolute and canonical, as NIXERY_PKGS_PATH is).
fn pkgs_flake(text: &str) -> Result<FlakeRef, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let flake = FlakeRef::parse(text, &cwd)?;
    match flake.local_dir() {
        Some(dir) => {
            let unreadable = |source| ConfigError::PkgsFlakeDir { flake: text.to_owned(), source };
            let dir = std::fs::canonicalize(dir).map_err(unreadable)?;
            std::fs::read_dir(&dir).map_err(unreadable)?;
            Ok(flake.with_dir(dir))
        }
        None => Ok(flake),
    }
}

impl BuildArgs {
    fn check(self, source: SourceArgs) -> Result<BuildSettings, ConfigError> {
        let source = source.resolve()?;
        if matches!(source, PkgSource::Flake(_)) && self.nixpkgs_config.as_deref().is_some_and(|v| !v.trim().is_empty())
        {
            return Err(ConfigError::NixpkgsConfigWithFlake);
        }
        let nix = NixPolicy {
            timeout: Duration::from_secs(self.nix_timeout),
            local_builds: self.local_builds,
            max_jobs: self.max_nix_jobs.map_or_else(crate::nix::cores, |n| n as usize),
            nixpkgs_config: nixpkgs_config(self.nixpkgs_config.as_deref())?,
            // The server's (AccessArgs) only: `nixery layers` plans whatever it is asked.
            packages: PackagePolicy::default(),
            gc_roots: Some(self.gc_roots),
        };
        let policy = BuildPolicy {
            source,
            nix,
            layers: LayerPolicy { grouping: self.layer_grouping.into(), budget: self.layer_budget.into() },
            platforms: self.platforms.unwrap_or_default(),
        };
        Ok(BuildSettings { policy, popularity_url: self.popularity_url })
    }
}

impl ArtifactArgs {
    /// The signing key (read and opened now: a key that cannot sign stops the start) and the
    /// registry's name.
    fn check(self) -> Result<ArtifactPolicy, ConfigError> {
        let registry_name = match self.registry_name.map(|n| n.trim().trim_end_matches('/').to_owned()) {
            Some(name) if !valid_registry_name(&name) => return Err(ConfigError::RegistryName(name)),
            name => name,
        };
        let signing = match self.signing_key {
            None => None,
            Some(path) => {
                let fail = |variable, reason: String| ConfigError::SigningKey { variable, reason };
                let pem = std::fs::read_to_string(&path)
                    .map_err(|e| fail("NIXERY_SIGNING_KEY", format!("cannot read the key file: {}", e.kind())))?;
                let password = match (self.signing_key_password, self.signing_key_password_file) {
                    (Some(p), _) => Some(p.into_bytes()),
                    (None, Some(file)) => {
                        let text = std::fs::read(&file).map_err(|e| {
                            fail("NIXERY_SIGNING_KEY_PASSWORD_FILE", format!("cannot read the file: {}", e.kind()))
                        })?;
                        let end = text.iter().rposition(|b| !b"\r\n".contains(b)).map_or(0, |i| i + 1);
                        Some(text[..end].to_vec())
                    }
                    (None, None) => None,
                };
                let key = SigningKey::from_pem(&pem, password.as_deref())
                    .map_err(|e| fail("NIXERY_SIGNING_KEY", e.to_string()))?;
                Some(key)
            }
        };
        Ok(ArtifactPolicy { signing, registry_name })
    }
}

/// A registry host (name or address, optional port) and optional path, as image references
/// start: no scheme, no spaces.
fn valid_registry_name(name: &str) -> bool {
    let host = name.split('/').next().unwrap_or_default();
    !host.is_empty()
        && !name.contains("://")
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && name.bytes().all(|b| b.is_ascii_graphic())
}

impl AccessArgs {
    /// The access policy and the package policy: at most one authentication scheme, a token
    /// scheme complete, and anonymous restrictions only with a scheme to log in with.
    fn check(self) -> Result<(AccessPolicy, PackagePolicy), ConfigError> {
        let token = [
            ("NIXERY_AUTH_TOKEN_REALM", self.auth_token_realm.is_some()),
            ("NIXERY_AUTH_TOKEN_SERVICE", self.auth_token_service.is_some()),
            ("NIXERY_AUTH_TOKEN_ISSUER", self.auth_token_issuer.is_some()),
            ("NIXERY_AUTH_TOKEN_KEYS", self.auth_token_keys.is_some()),
        ];
        let missing: Vec<&'static str> = token.iter().filter(|(_, set)| !set).map(|(v, _)| *v).collect();
        let any_token = missing.len() < token.len();
        let scheme = match (self.auth_htpasswd, any_token) {
            (Some(_), true) => return Err(ConfigError::TwoSchemes),
            (Some(path), false) => Some(Scheme::Htpasswd(path)),
            (None, true) if !missing.is_empty() => return Err(ConfigError::IncompleteToken(missing)),
            (None, true) => Some(Scheme::Token {
                service: crate::auth::token::TokenService {
                    realm: self.auth_token_realm.expect("checked"),
                    service: self.auth_token_service.expect("checked"),
                    issuer: self.auth_token_issuer.expect("checked"),
                },
                keys: self.auth_token_keys.expect("checked"),
            }),
            (None, false) => None,
        };
        let anonymous = self.anonymous.into();
        if scheme.is_none() && self.anonymous != AnonymousArg::Build {
            let value = if self.anonymous == AnonymousArg::Pull { "pull" } else { "none" };
            return Err(ConfigError::AnonymousWithoutAuth(value));
        }
        let access = AccessPolicy {
            scheme,
            anonymous,
            build_rate: self.build_rate,
            trusted_proxies: self.trusted_proxies.unwrap_or_default(),
        };
        let packages = PackagePolicy {
            allow: self.packages_allow.map(|r| r.0).unwrap_or_default(),
            deny: self.packages_deny.map(|r| r.0).unwrap_or_default(),
        };
        Ok((access, packages))
    }
}

/// Where the server keeps objects: the storage settings of `args` (and the AWS SDKs'
/// fallback variables of `env`).
fn storage_config(args: &ServeArgs, env: Env) -> Result<StorageConfig, ConfigError> {
    let url_ttl = Duration::from_secs(args.signed_url_ttl);
    Ok(match args.storage_backend {
        StorageBackend::Filesystem => StorageConfig::Filesystem(args.storage_path.clone()),
        StorageBackend::Gcs => {
            let bucket = args
                .gcs
                .gcs_bucket
                .clone()
                .ok_or(ConfigError::MissingBucket { backend: "gcs", variable: "GCS_BUCKET" })?;
            let mut gcs = GcsConfig::new(bucket);
            gcs.emulator_host = args.gcs.storage_emulator_host.clone();
            gcs.credentials_file = args.gcs.google_application_credentials.clone();
            gcs.proxy_blobs = args.proxy_blobs;
            gcs.url_ttl = url_ttl;
            StorageConfig::Gcs(gcs)
        }
        StorageBackend::S3 => {
            let s3_args = args.s3.clone();
            let bucket =
                s3_args.s3_bucket.ok_or(ConfigError::MissingBucket { backend: "s3", variable: "NIXERY_S3_BUCKET" })?;
            let mut s3 = S3Config::new(bucket);
            // The AWS SDKs' fallbacks: the generic variables after the specific ones.
            let fallback = |var: &str| set(env, var).map(|v| v.to_string_lossy().into_owned());
            s3.region = s3_args.aws_region.or_else(|| fallback("AWS_DEFAULT_REGION"));
            s3.endpoint = s3_args.aws_endpoint_url_s3.or_else(|| fallback("AWS_ENDPOINT_URL"));
            s3.access_key_id = s3_args.aws_access_key_id;
            s3.secret_access_key = s3_args.aws_secret_access_key;
            s3.session_token = s3_args.aws_session_token;
            s3.web_identity_token_file = s3_args.aws_web_identity_token_file;
            s3.role_arn = s3_args.aws_role_arn;
            s3.container_credentials_relative_uri = s3_args.aws_container_credentials_relative_uri;
            s3.virtual_hosted_style = s3_args.s3_virtual_hosted_style;
            s3.proxy_blobs = args.proxy_blobs;
            s3.url_ttl = url_ttl;
            StorageConfig::S3(s3)
        }
    })
}

/// NIXERY_NIXPKGS_CONFIG: a JSON object given inline (it starts with `{`), or a file: a
/// `.json` file is read and checked here, any other (`.nix`) is imported by Nix and only its
/// content's digest is taken (for cache keys).
fn nixpkgs_config(value: Option<&str>) -> Result<NixpkgsConfig, ConfigError> {
    let object = |text: &str, what: &str| match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(attrs)) => Ok(NixpkgsConfig::Attrs(attrs)),
        Ok(_) => Err(ConfigError::NixpkgsConfig(format!("{what} is JSON but not an object"))),
        Err(e) => Err(ConfigError::NixpkgsConfig(format!("{what} is not a JSON object: {e}"))),
    };
    let Some(value) = value.map(str::trim) else { return Ok(NixpkgsConfig::default()) };
    if value.starts_with('{') {
        return object(value, "the value");
    }
    let unreadable = |e: std::io::Error| ConfigError::NixpkgsConfig(format!("{value}: {e}"));
    let path = std::fs::canonicalize(value).map_err(unreadable)?;
    let bytes = std::fs::read(&path).map_err(unreadable)?;
    if path.extension().is_some_and(|e| e == "json") {
        return object(&String::from_utf8_lossy(&bytes), value);
    }
    Ok(NixpkgsConfig::File { digest: Digest::of(&bytes), path })
}

impl Config {
    fn from_args(args: ServeArgs, env: Env) -> Result<Config, ConfigError> {
        let storage = storage_config(&args, env)?;
        let mut build = args.build.check(args.source)?;
        let (access, packages) = args.access.check()?;
        build.policy.nix.packages = packages;
        let connections = server::Limits {
            header_timeout: Duration::from_secs(args.connections.header_timeout),
            idle_timeout: Duration::from_secs(args.connections.idle_timeout),
            max_connections: usize::try_from(args.connections.max_connections).unwrap_or(usize::MAX),
        };
        let artifacts = args.artifacts.check()?;
        Ok(Config {
            artifacts,
            host: args.host,
            port: args.port,
            build,
            cache: args.cache.into(),
            archive: args.archive.into(),
            storage,
            connections,
            shutdown_timeout: Duration::from_secs(args.connections.shutdown_timeout),
            access,
            lifecycle: args.lifecycle.into(),
        })
    }

    /// The serve configuration from an argument list alone, with no environment (for tests
    /// and embedding).
    pub fn parse_from<I: IntoIterator<Item = &'static str>>(argv: I) -> Result<Config, ConfigError> {
        let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
        Config::from_args(parse_args(&argv, &|_| None)?.serve, &|_| None)
    }
}
