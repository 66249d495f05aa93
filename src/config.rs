//! The server's configuration: the only place that knows the command line and the
//! environment.
//!
//! Every setting is a `--flag` and an environment variable with Nixery's name, so an existing
//! Nixery deployment's environment works unchanged. Values are checked here, at start-up, and
//! mapped into the domain's types ([`BuildPolicy`], [`NixPolicy`], [`LayerPolicy`],
//! [`PkgSource`], [`StorageConfig`]), which know nothing of flags or variables. A bad value stops the server
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

use crate::build::BuildPolicy;
use crate::cache::CachePolicy;
use crate::digest::Digest;
use crate::image::Platforms;
use crate::layers::{Grouping, LayerPolicy};
use crate::nix::{NixPolicy, NixpkgsConfig};
use crate::pkgsource::{Channel, PkgSource, RemoteUrl};
use crate::storage::{GcsConfig, S3Config};
use clap::builder::{BoolValueParser, TypedValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
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

/// `NIXERY_STORAGE_BACKEND`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    Filesystem,
    Gcs,
    S3,
}

/// `NIXERY_LAYER_GROUPING`'s values, mapped to the domain's [`Grouping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupingArg {
    /// Units that recur whole, heaviest kept apart (the default; docs/reuse.md).
    Stable,
    /// Nixery's dominator-tree grouping, for drop-in compatibility.
    Nixery,
}

impl From<GroupingArg> for Grouping {
    fn from(arg: GroupingArg) -> Grouping {
        match arg {
            GroupingArg::Stable => Grouping::Stable,
            GroupingArg::Nixery => Grouping::Nixery,
        }
    }
}

/// A container registry that builds images from Nix packages on demand.
///
/// Without a subcommand it serves the registry.
#[derive(Clone, Debug, Parser)]
#[command(name = "nixery", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Subcommand>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Compute popularity data (Nixery's format) for a package set and write it as JSON.
    Popcount(PopcountArgs),
    /// Print the layer plan of an image (store paths, sizes, popularity, merge ratings, in
    /// manifest order) without building archives. Runs Nix to realise the packages.
    Layers(LayersArgs),
}

/// Where packages come from: at most one of the three.
#[derive(Clone, Debug, clap::Args)]
pub struct SourceArgs {
    /// nixpkgs channel (branch) or commit to take packages from [default: nixos-unstable].
    #[arg(long, env = "NIXERY_CHANNEL")]
    pub channel: Option<String>,

    /// Git repository of a package set; the image tag selects a ref or commit.
    #[arg(long, env = "NIXERY_PKGS_REPO")]
    pub pkgs_repo: Option<String>,

    /// Local path of a package set (a directory with default.nix, or a .nix file).
    #[arg(long, env = "NIXERY_PKGS_PATH")]
    pub pkgs_path: Option<PathBuf>,

    /// Git remote of the channel: tags are resolved there (`git ls-remote`) and pinned
    /// commits fetched from it (GitHub's archive tarball for a GitHub repository)
    /// [default: https://github.com/NixOS/nixpkgs].
    #[arg(long, env = "NIXERY_CHANNEL_REPO")]
    pub channel_repo: Option<String>,
}

/// How tags are resolved and manifests cached (see `crate::cache`).
#[derive(Clone, Debug, clap::Args)]
pub struct CacheArgs {
    /// Seconds a tag that moves (a branch, `latest`, a local path) keeps the revision it was
    /// resolved to; 0 resolves on every request. Full commits never expire.
    #[arg(long, env = "NIXERY_SOURCE_TTL", default_value_t = 60)]
    pub source_ttl: u64,

    /// MiB of manifests kept in memory (least used evicted first).
    #[arg(long, env = "NIXERY_MANIFEST_CACHE_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1048576))]
    pub manifest_cache_mib: u64,
}

impl From<CacheArgs> for CachePolicy {
    fn from(args: CacheArgs) -> CachePolicy {
        CachePolicy { source_ttl: Duration::from_secs(args.source_ttl), manifest_memory: args.manifest_cache_mib << 20 }
    }
}

/// How images are built.
#[derive(Clone, Debug, clap::Args)]
pub struct BuildArgs {
    /// Seconds an image's Nix work (evaluate, build, query) may take, from when it gets a Nix
    /// job slot; also the longest an image waits for a slot.
    #[arg(long, env = "NIX_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub nix_timeout: u64,

    /// Popularity data (Nixery's format): an http(s) URL or a file path.
    #[arg(long, env = "NIX_POPULARITY_URL")]
    pub popularity_url: Option<String>,

    /// Most store-path layers per image; the symlink-forest layer comes on top.
    #[arg(long, env = "NIXERY_LAYER_BUDGET", default_value_t = 94, value_parser = clap::value_parser!(u16).range(1..=124))]
    pub layer_budget: u16,

    /// How store paths are grouped into layers: `stable` (measured to reuse more, see
    /// docs/reuse.md) or `nixery` (Nixery's dominator-tree grouping).
    #[arg(long, env = "NIXERY_LAYER_GROUPING", value_enum, default_value = "stable")]
    pub layer_grouping: GroupingArg,

    /// Build packages that no binary cache has; `false` refuses such images before anything
    /// is built, naming what is missing (for public instances).
    #[arg(long, env = "NIXERY_LOCAL_BUILDS", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_builds: bool,

    /// Most Nix processes at a time, across all images; others wait their turn [default:
    /// the number of cores].
    #[arg(long, env = "NIXERY_MAX_NIX_JOBS", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_nix_jobs: Option<u32>,

    /// nixpkgs configuration handed to the package set as `config`: a JSON object
    /// (`{"allowUnfree": true}`), or the path of a .json file or of a .nix file (which may
    /// hold functions, e.g. allowUnfreePredicate).
    #[arg(long, env = "NIXERY_NIXPKGS_CONFIG")]
    pub nixpkgs_config: Option<String>,

    /// Platforms images are built for, comma-separated (`linux/amd64,linux/arm64`); with
    /// several, a client that accepts an image index gets one per tag [default: the host's].
    #[arg(long, env = "NIXERY_PLATFORMS", value_parser = Platforms::parse)]
    pub platforms: Option<Platforms>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "NIXERY_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub build: BuildArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// Where blobs, manifests and build records are stored.
    #[arg(long, env = "NIXERY_STORAGE_BACKEND", value_enum, default_value = "filesystem")]
    pub storage_backend: StorageBackend,

    /// Directory of the filesystem storage backend.
    #[arg(long, env = "STORAGE_PATH", default_value = "nixery-storage")]
    pub storage_path: PathBuf,

    /// Serve blobs of object-store backends through this server instead of redirecting
    /// clients to the bucket (for clusters that cannot reach it).
    #[arg(long, env = "NIXERY_PROXY_BLOBS")]
    pub proxy_blobs: bool,

    /// Seconds a signed or presigned blob URL stays valid.
    #[arg(long, env = "NIXERY_SIGNED_URL_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub signed_url_ttl: u64,

    #[command(flatten)]
    pub gcs: GcsArgs,

    #[command(flatten)]
    pub s3: S3Args,
}

/// Google Cloud Storage (`NIXERY_STORAGE_BACKEND=gcs`).
#[derive(Clone, Debug, clap::Args)]
pub struct GcsArgs {
    /// Bucket of the gcs backend.
    #[arg(long, env = "GCS_BUCKET")]
    pub gcs_bucket: Option<String>,

    /// Credentials JSON file; a service account key also signs blob URLs. Without it,
    /// Application Default Credentials and public blob URLs.
    #[arg(long, env = "GOOGLE_APPLICATION_CREDENTIALS")]
    pub google_application_credentials: Option<PathBuf>,

    /// A Cloud Storage emulator (`http://host:port`), as Google's clients honour it.
    #[arg(long, env = "STORAGE_EMULATOR_HOST")]
    pub storage_emulator_host: Option<String>,
}

/// S3 and S3-compatible stores (`NIXERY_STORAGE_BACKEND=s3`), configured by the usual AWS
/// variables.
#[derive(Clone, Debug, clap::Args)]
pub struct S3Args {
    /// Bucket of the s3 backend.
    #[arg(long, env = "NIXERY_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// Region [default: AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Endpoint of an S3-compatible store (MinIO, R2, an emulator) [default:
    /// AWS_ENDPOINT_URL, else AWS].
    #[arg(long, env = "AWS_ENDPOINT_URL_S3")]
    pub aws_endpoint_url_s3: Option<String>,

    /// Address objects as bucket.host/key instead of host/bucket/key.
    #[arg(long, env = "NIXERY_S3_VIRTUAL_HOSTED_STYLE")]
    pub s3_virtual_hosted_style: bool,

    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true, hide = true)]
    pub aws_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true, hide = true)]
    pub aws_secret_access_key: Option<String>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true, hide = true)]
    pub aws_session_token: Option<String>,
    #[arg(long, env = "AWS_WEB_IDENTITY_TOKEN_FILE", hide = true)]
    pub aws_web_identity_token_file: Option<PathBuf>,
    #[arg(long, env = "AWS_ROLE_ARN", hide = true)]
    pub aws_role_arn: Option<String>,
    #[arg(long, env = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", hide = true)]
    pub aws_container_credentials_relative_uri: Option<String>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct PopcountArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// File to write the popularity JSON to.
    #[arg(long, short, default_value = "popularity.json")]
    pub output: PathBuf,

    /// Top-level attributes evaluated per Nix invocation.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// Seconds each Nix invocation may take.
    #[arg(long, env = "NIX_TIMEOUT", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub nix_timeout: u64,

    /// Binary cache (http or https) whose narinfo files give each output's runtime
    /// references.
    #[arg(long, default_value = DEFAULT_BINARY_CACHE, value_parser = binary_cache_url)]
    pub binary_cache: Url,

    /// narinfo requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
}

#[derive(Clone, Debug, clap::Args)]
pub struct LayersArgs {
    /// Image name, e.g. `shell/git`.
    pub image: String,

    /// Tag (selects the revision of a channel or git package source).
    #[arg(long, default_value = "latest")]
    pub tag: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub build: BuildArgs,
}

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
    pub storage: StorageConfig,
}

/// What the binary was asked to do, with checked settings.
#[derive(Clone, Debug)]
pub enum Command {
    Serve(Box<Config>),
    Popcount(PopcountSettings),
    Layers { image: String, tag: String, json: bool, build: BuildSettings },
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

impl BuildArgs {
    fn check(self, source: SourceArgs) -> Result<BuildSettings, ConfigError> {
        let nix = NixPolicy {
            timeout: Duration::from_secs(self.nix_timeout),
            local_builds: self.local_builds,
            max_jobs: self.max_nix_jobs.map_or_else(crate::nix::cores, |n| n as usize),
            nixpkgs_config: nixpkgs_config(self.nixpkgs_config.as_deref())?,
        };
        let policy = BuildPolicy {
            source: source.resolve()?,
            nix,
            layers: LayerPolicy { grouping: self.layer_grouping.into(), budget: self.layer_budget.into() },
            platforms: self.platforms.unwrap_or_default(),
        };
        Ok(BuildSettings { policy, popularity_url: self.popularity_url })
    }
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
        let url_ttl = Duration::from_secs(args.signed_url_ttl);
        let storage = match args.storage_backend {
            StorageBackend::Filesystem => StorageConfig::Filesystem(args.storage_path),
            StorageBackend::Gcs => {
                let bucket =
                    args.gcs.gcs_bucket.ok_or(ConfigError::MissingBucket { backend: "gcs", variable: "GCS_BUCKET" })?;
                let mut gcs = GcsConfig::new(bucket);
                gcs.emulator_host = args.gcs.storage_emulator_host;
                gcs.credentials_file = args.gcs.google_application_credentials;
                gcs.proxy_blobs = args.proxy_blobs;
                gcs.url_ttl = url_ttl;
                StorageConfig::Gcs(gcs)
            }
            StorageBackend::S3 => {
                let s3_args = args.s3;
                let bucket = s3_args
                    .s3_bucket
                    .ok_or(ConfigError::MissingBucket { backend: "s3", variable: "NIXERY_S3_BUCKET" })?;
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
        };
        let build = args.build.check(args.source)?;
        Ok(Config { host: args.host, port: args.port, build, cache: args.cache.into(), storage })
    }

    /// The serve configuration from an argument list alone, with no environment (for tests
    /// and embedding).
    pub fn parse_from<I: IntoIterator<Item = &'static str>>(argv: I) -> Result<Config, ConfigError> {
        let argv: Vec<OsString> = argv.into_iter().map(OsString::from).collect();
        Config::from_args(parse_args(&argv, &|_| None)?.serve, &|_| None)
    }
}

/// `--binary-cache`: an absolute http(s) URL.
fn binary_cache_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("expected an http or https URL, not {other}")),
    }
}

/// A variable that is set and not empty.
fn set(env: Env, var: &str) -> Option<OsString> {
    env(var).filter(|v| !v.is_empty())
}

/// Every variable the command and its subcommands read.
fn variables(cmd: &clap::Command) -> Vec<OsString> {
    let mut vars: Vec<OsString> = std::iter::once(cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env().map(ToOwned::to_owned))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The arguments of `argv` and `env`, as described in the module docs.
fn parse_args(argv: &[OsString], env: Env) -> Result<Args, ConfigError> {
    let mut annotated = Args::command();
    annotated.build();
    let parser = annotated.clone().mut_args(|a| a.env(None)).mut_subcommands(|c| c.mut_args(|a| a.env(None)));
    let no_name = [OsString::from("nixery")];
    let argv = if argv.is_empty() { &no_name[..] } else { argv };

    // What the command line gives by itself: the subcommand, and which flags. Its mistakes
    // are reported by the full parse below.
    let given = match parser.clone().ignore_errors(true).try_get_matches_from(argv) {
        Ok(given) => given,
        // Help as clap renders it with the variables (and their values in this process).
        Err(e) if is_help(&e) => {
            return Err(annotated.try_get_matches_from(argv).map_or_else(ConfigError::Help, |_| ConfigError::Help(e)));
        }
        Err(e) => return Err(config_error(e, &annotated)),
    };

    // Each command's variables go after its own flags, as clap reads them after the command
    // line: a mistake on the command line is reported first.
    let subcommand = given.subcommand().zip(subcommand_position(&annotated, argv));
    let top_end = subcommand.map_or_else(|| end_of_options(argv, 1), |(_, at)| at);
    let mut full = argv[..top_end].to_vec();
    full.extend(env_flags(&annotated, &given, env)?);
    let mut rest = top_end;
    if let Some(((name, sub_given), at)) = subcommand {
        let sub = annotated.find_subcommand(name).expect("clap matched this subcommand");
        let sub_end = end_of_options(argv, at + 1);
        full.extend_from_slice(&argv[at..sub_end]);
        full.extend(env_flags(sub, sub_given, env)?);
        rest = sub_end;
    }
    full.extend_from_slice(&argv[rest..]);
    let matches = parser.try_get_matches_from(full).map_err(|e| config_error(e, &annotated))?;
    Args::from_arg_matches(&matches).map_err(ConfigError::Usage)
}

/// Where a command's options end when they start at `from`: at `--` (after which everything
/// is positional), else at the end.
fn end_of_options(argv: &[OsString], from: usize) -> usize {
    argv.iter().skip(from).position(|t| t == "--").map_or(argv.len(), |i| from + i)
}

/// The flags that stand for the variables of `cmd` (one command, not its subcommands) that
/// are set in `env` and whose flags the command line does not give.
fn env_flags(cmd: &clap::Command, given: &ArgMatches, env: Env) -> Result<Vec<OsString>, ConfigError> {
    let mut flags = Vec::new();
    for arg in cmd.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else { continue };
        let Some(value) = var.to_str().and_then(|var| set(env, var)) else { continue };
        if given.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue;
        }
        if arg.get_action().takes_values() {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            flags.push(flag);
        } else {
            // A switch: clap reads its variable as `true` or `false`.
            let on = BoolValueParser::new().parse_ref(cmd, Some(arg), &value).map_err(|e| config_error(e, cmd))?;
            if on {
                flags.push(format!("--{long}").into());
            }
        }
    }
    Ok(flags)
}

/// Where the subcommand stands in `argv`: the top-level command has only long options and
/// no positionals, so it is the first token after the program name that is neither an
/// option nor an option's value.
fn subcommand_position(top: &clap::Command, argv: &[OsString]) -> Option<usize> {
    let mut tokens = argv.iter().enumerate().skip(1);
    while let Some((i, token)) = tokens.next() {
        let token = token.to_string_lossy();
        match token.strip_prefix("--") {
            Some("") => return None,
            Some(long) => {
                let takes_value = |a: &clap::Arg| a.get_long() == Some(long) && a.get_action().takes_values();
                if top.get_arguments().any(takes_value) {
                    tokens.next();
                }
            }
            None if token.starts_with('-') => {}
            None => return Some(i),
        }
    }
    None
}

fn is_help(e: &clap::Error) -> bool {
    matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
}

/// A bad value for an argument that has a variable names both; anything else is clap's.
fn config_error(e: clap::Error, annotated: &clap::Command) -> ConfigError {
    if is_help(&e) {
        return ConfigError::Help(e);
    }
    let bad_value = matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation);
    let Some(ContextValue::String(rendered)) = e.get(ContextKind::InvalidArg).filter(|_| bad_value) else {
        return ConfigError::Usage(e);
    };
    // clap names the argument as the argument displays itself.
    let arg = std::iter::once(annotated)
        .chain(annotated.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.to_string() == *rendered);
    let Some((arg, variable, long)) = arg.and_then(|a| Some((a, a.get_env()?, a.get_long()?))) else {
        return ConfigError::Usage(e);
    };
    let value = match e.get(ContextKind::InvalidValue) {
        _ if arg.is_hide_env_values_set() => "***".to_owned(),
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    ConfigError::InvalidValue {
        variable: variable.to_string_lossy().into_owned(),
        flag: format!("--{long}"),
        value,
        source: e,
    }
}

/// Why clap refused a value: the value parser's own error, or the values it accepts.
fn reason(e: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => format!("expected one of {}", valid.join(", ")),
        _ => "invalid value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An environment of exactly `vars`.
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        move |var| vars.get(var).cloned()
    }

    fn command(args: &[&str], vars: &[(&str, &str)]) -> Result<Command, ConfigError> {
        Command::parse(std::iter::once("nixery").chain(args.iter().copied()), &env(vars))
    }

    fn serve(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        match command(args, vars)? {
            Command::Serve(config) => Ok(*config),
            other => panic!("not serve: {other:?}"),
        }
    }

    fn parse(args: &[&'static str]) -> Result<Config, ConfigError> {
        Config::parse_from(std::iter::once("nixery").chain(args.iter().copied()))
    }

    /// The variable and flag a bad value was reported for.
    fn invalid(err: ConfigError) -> (String, String, String) {
        match err {
            ConfigError::InvalidValue { variable, flag, value, .. } => (variable, flag, value),
            other => panic!("not an invalid value: {other}"),
        }
    }

    #[test]
    fn defaults_match_nixery() {
        // No source configured: the nixos-unstable channel.
        let c = parse(&[]).unwrap();
        let nixpkgs = RemoteUrl::new("https://github.com/NixOS/nixpkgs");
        let unstable = Channel::Branch("nixos-unstable".into());
        assert_eq!(c.build.policy.source, PkgSource::Channel { repo: nixpkgs, channel: unstable });
        assert_eq!(c.cache, CachePolicy { source_ttl: Duration::from_secs(60), manifest_memory: 64 << 20 });
        assert_eq!(c.build.policy.layers, LayerPolicy { grouping: Grouping::Stable, budget: 94 });
        assert_eq!(c.build.policy.nix.timeout, Duration::from_secs(60));
        assert!(c.build.policy.nix.local_builds, "Nixery builds what no cache has");
        assert_eq!(c.build.policy.nix.max_jobs, crate::nix::cores());
        assert_eq!(c.build.policy.nix.nixpkgs_config, NixpkgsConfig::default());
        assert_eq!(c.build.policy.platforms, Platforms::host(), "one platform, the host's");
        assert_eq!(c.port, 8080);
        assert_eq!(serve(&[], &[]).unwrap().port, 8080);
    }

    #[test]
    fn at_most_one_source() {
        let err = parse(&["--channel", "nixos-23.05", "--pkgs-repo", "https://x"]).unwrap_err();
        assert!(err.to_string().contains("NIXERY_CHANNEL and NIXERY_PKGS_REPO"), "{err}");
        let err = serve(&["--pkgs-path", "/"], &[("NIXERY_PKGS_REPO", "https://x")]).unwrap_err();
        assert!(matches!(&err, ConfigError::SeveralSources(v) if v == &["NIXERY_PKGS_REPO", "NIXERY_PKGS_PATH"]));
    }

    #[test]
    fn the_channel_repository_ttl_and_cache_size_are_configurable() {
        let vars = [
            ("NIXERY_CHANNEL", "nixos-24.11"),
            ("NIXERY_CHANNEL_REPO", "file:///srv/nixpkgs"),
            ("NIXERY_SOURCE_TTL", "0"),
            ("NIXERY_MANIFEST_CACHE_MIB", "2"),
        ];
        let c = serve(&[], &vars).unwrap();
        let PkgSource::Channel { repo, channel } = c.build.policy.source else { panic!("not a channel") };
        assert_eq!((repo.as_str(), channel.as_str()), ("file:///srv/nixpkgs", "nixos-24.11"));
        assert_eq!(c.cache, CachePolicy { source_ttl: Duration::ZERO, manifest_memory: 2 << 20 });
        let (var, _, _) = invalid(serve(&[], &[("NIXERY_SOURCE_TTL", "-1")]).unwrap_err());
        assert_eq!(var, "NIXERY_SOURCE_TTL");
        let (var, _, _) = invalid(serve(&[], &[("NIXERY_MANIFEST_CACHE_MIB", "0")]).unwrap_err());
        assert_eq!(var, "NIXERY_MANIFEST_CACHE_MIB");
        let err = serve(&["--pkgs-path", "/"], &[("NIXERY_CHANNEL_REPO", "file:///x")]).unwrap_err();
        assert!(matches!(err, ConfigError::ChannelRepoWithoutChannel("NIXERY_PKGS_PATH")), "{err}");
        // The repository alone selects the default channel there.
        let c = serve(&[], &[("NIXERY_CHANNEL_REPO", "file:///x")]).unwrap();
        assert!(matches!(c.build.policy.source, PkgSource::Channel { ref repo, .. } if repo.as_str() == "file:///x"));
    }

    #[test]
    fn platforms_are_a_checked_list() {
        let c = serve(&[], &[("NIXERY_PLATFORMS", "linux/arm64,linux/amd64")]).unwrap();
        assert_eq!(c.build.policy.platforms.to_string(), "linux/amd64,linux/arm64");
        let (var, flag, value) = invalid(serve(&[], &[("NIXERY_PLATFORMS", "linux/amd64,linux/s390x")]).unwrap_err());
        assert_eq!(
            (var.as_str(), flag.as_str(), value.as_str()),
            ("NIXERY_PLATFORMS", "--platforms", "linux/amd64,linux/s390x")
        );
        let err = serve(&["--platforms", "windows/amd64"], &[]).unwrap_err();
        assert!(err.to_string().contains("unknown platform 'windows/amd64'"), "{err}");
    }

    #[test]
    fn a_missing_pkgs_path_is_refused_with_the_variable_name() {
        let err = parse(&["--pkgs-path", "/does/not/exist"]).unwrap_err();
        assert!(err.to_string().starts_with("NIXERY_PKGS_PATH"), "{err}");
    }

    #[test]
    fn budget_and_timeout_are_range_checked() {
        let budget = ("NIXERY_LAYER_BUDGET".to_owned(), "--layer-budget".to_owned());
        let (var, flag, value) = invalid(serve(&["--layer-budget", "0"], &[]).unwrap_err());
        assert_eq!(((var, flag), value.as_str()), (budget.clone(), "0"));
        let (var, flag, _) = invalid(serve(&["--layer-budget", "125"], &[]).unwrap_err());
        assert_eq!((var, flag), budget);
        let (var, _, _) = invalid(serve(&["--nix-timeout", "0"], &[]).unwrap_err());
        assert_eq!(var, "NIX_TIMEOUT");
        assert_eq!(serve(&["--layer-budget", "124"], &[]).unwrap().build.policy.layers.budget, 124);
    }

    #[test]
    fn object_store_backends_need_a_bucket_and_take_the_proxy_flag() {
        let err = parse(&["--storage-backend", "gcs"]).unwrap_err();
        assert!(err.to_string().contains("GCS_BUCKET"), "{err}");
        let err = parse(&["--storage-backend", "s3"]).unwrap_err();
        assert!(err.to_string().contains("NIXERY_S3_BUCKET"), "{err}");
        let c = parse(&["--storage-backend", "gcs", "--gcs-bucket", "b", "--proxy-blobs", "--signed-url-ttl", "60"])
            .unwrap();
        let StorageConfig::Gcs(gcs) = c.storage else { panic!("not gcs") };
        assert_eq!(gcs.bucket, "b");
        assert!(gcs.proxy_blobs);
        assert_eq!(gcs.url_ttl, Duration::from_secs(60));
        let c = parse(&["--storage-backend", "s3", "--s3-bucket", "b", "--aws-endpoint-url-s3", "http://127.0.0.1:9"])
            .unwrap();
        let StorageConfig::S3(s3) = c.storage else { panic!("not s3") };
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert!(!s3.proxy_blobs);
    }

    #[test]
    fn subcommands_take_their_own_arguments() {
        let layers = command(&["layers", "shell/git", "--pkgs-path", "/", "--layer-budget", "10"], &[]).unwrap();
        let Command::Layers { image, tag, build, .. } = layers else { panic!("not layers") };
        assert_eq!(image, "shell/git");
        assert_eq!(tag, "latest");
        assert_eq!(build.policy.layers.budget, 10);
        let popcount = command(&["popcount", "--pkgs-path", "/", "-o", "/tmp/p.json"], &[]).unwrap();
        let Command::Popcount(p) = popcount else { panic!("not popcount") };
        assert_eq!(p.output, PathBuf::from("/tmp/p.json"));
        assert_eq!(p.binary_cache.as_str(), "https://cache.nixos.org/");
        assert_eq!(p.connections, 32);
    }

    #[test]
    fn variables_set_what_the_command_line_does_not() {
        let vars = [
            ("PORT", "9000"),
            ("NIXERY_PKGS_PATH", "/"),
            ("NIXERY_LAYER_BUDGET", "10"),
            ("NIXERY_LAYER_GROUPING", "nixery"),
            ("NIX_TIMEOUT", "30"),
            // Empty counts as unset: not a second package source.
            ("NIXERY_CHANNEL", ""),
        ];
        let c = serve(&[], &vars).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.build.policy.source, PkgSource::Path("/".into()));
        assert_eq!(c.build.policy.layers, LayerPolicy { grouping: Grouping::Nixery, budget: 10 });
        assert_eq!(c.build.policy.nix.timeout, Duration::from_secs(30));
        // The command line wins, and a variable it overrides is not even checked.
        let c =
            serve(&["--port", "9001", "--layer-budget", "11"], &[("PORT", "eighty"), ("NIXERY_LAYER_BUDGET", "10")])
                .unwrap();
        assert_eq!((c.port, c.build.policy.layers.budget), (9001, 11));
    }

    #[test]
    fn subcommands_read_their_variables_after_their_name() {
        let vars = [("NIX_TIMEOUT", "30"), ("NIXERY_PKGS_PATH", "/")];
        let Command::Layers { image, build, .. } = command(&["layers", "--", "shell/git"], &vars).unwrap() else {
            panic!("not layers")
        };
        assert_eq!(image, "shell/git");
        assert_eq!(build.policy.nix.timeout, Duration::from_secs(30));
        assert_eq!(build.policy.source, PkgSource::Path("/".into()));
        let Command::Popcount(p) = command(&["--port", "1", "popcount", "--nix-timeout", "5"], &vars).unwrap() else {
            panic!("not popcount")
        };
        assert_eq!(p.nix_timeout, Duration::from_secs(5));
    }

    #[test]
    fn switches_take_true_or_false_from_their_variables() {
        let gcs = [("NIXERY_STORAGE_BACKEND", "gcs"), ("GCS_BUCKET", "b")];
        let proxied = |value: &str| {
            let vars = [gcs[0], gcs[1], ("NIXERY_PROXY_BLOBS", value)];
            serve(&[], &vars).map(|c| matches!(c.storage, StorageConfig::Gcs(g) if g.proxy_blobs))
        };
        assert!(proxied("true").unwrap());
        assert!(!proxied("false").unwrap());
        let (var, flag, value) = invalid(proxied("yes").unwrap_err());
        assert_eq!((var.as_str(), flag.as_str(), value.as_str()), ("NIXERY_PROXY_BLOBS", "--proxy-blobs", "yes"));
    }

    #[test]
    fn bad_values_name_the_variable_the_flag_and_the_reason() {
        let err = serve(&[], &[("PORT", "eighty")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'eighty' for PORT (--port): invalid digit found in string",
            "the value parser's own error is the reason"
        );
        let err = serve(&["--storage-backend", "floppy"], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'floppy' for NIXERY_STORAGE_BACKEND (--storage-backend): expected one of filesystem, gcs, s3"
        );
        let err = serve(&[], &[("NIXERY_LAYER_BUDGET", "500")]).unwrap_err();
        assert!(err.to_string().ends_with("500 is not in 1..=124"), "{err}");
        let err = command(&["popcount", "--batch", "0"], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Usage(_)), "--batch has no variable: {err}");
    }

    #[test]
    fn popcount_takes_http_binary_caches_only() {
        let cache = |url: &'static str| match command(&["popcount", "--binary-cache", url], &[]) {
            Ok(Command::Popcount(p)) => Ok(p.binary_cache),
            Ok(other) => panic!("not popcount: {other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(cache("http://127.0.0.1:8081/sub").unwrap().as_str(), "http://127.0.0.1:8081/sub");
        assert_eq!(cache("https://cache.example").unwrap().as_str(), "https://cache.example/");
        for (bad, why) in [
            ("file:///srv/cache", "expected an http or https URL, not file"),
            ("s3://bucket", "expected an http or https URL, not s3"),
            ("cache.nixos.org", "relative URL without a base"),
        ] {
            let err = cache(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn nix_settings_map_into_the_nix_policy() {
        let vars = [("NIXERY_LOCAL_BUILDS", "false"), ("NIXERY_MAX_NIX_JOBS", "3")];
        let nix = serve(&[], &vars).unwrap().build.policy.nix;
        assert!(!nix.local_builds);
        assert_eq!(nix.max_jobs, 3);
        let (var, _, value) = invalid(serve(&[], &[("NIXERY_LOCAL_BUILDS", "no")]).unwrap_err());
        assert_eq!((var.as_str(), value.as_str()), ("NIXERY_LOCAL_BUILDS", "no"));
        let (var, _, _) = invalid(serve(&[], &[("NIXERY_MAX_NIX_JOBS", "0")]).unwrap_err());
        assert_eq!(var, "NIXERY_MAX_NIX_JOBS");
        assert!(
            serve(&["--local-builds", "true"], &[("NIXERY_LOCAL_BUILDS", "false")])
                .unwrap()
                .build
                .policy
                .nix
                .local_builds
        );
    }

    #[test]
    fn nixpkgs_config_is_inline_json_or_a_file() {
        let config =
            |value: &str| serve(&[], &[("NIXERY_NIXPKGS_CONFIG", value)]).map(|c| c.build.policy.nix.nixpkgs_config);
        let NixpkgsConfig::Attrs(attrs) = config(r#"{"allowUnfree": true}"#).unwrap() else { panic!("not attrs") };
        assert_eq!(attrs["allowUnfree"], serde_json::Value::Bool(true));
        let err = config("{allowUnfree = true;}").unwrap_err().to_string();
        assert!(err.starts_with("NIXERY_NIXPKGS_CONFIG: the value is not a JSON object"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("config.json");
        std::fs::write(&json, r#"{"permittedInsecurePackages": ["insecure-1.0"]}"#).unwrap();
        let NixpkgsConfig::Attrs(attrs) = config(json.to_str().unwrap()).unwrap() else { panic!("not attrs") };
        assert!(attrs.contains_key("permittedInsecurePackages"));
        std::fs::write(&json, "[1]").unwrap();
        assert!(config(json.to_str().unwrap()).unwrap_err().to_string().contains("JSON but not an object"));
        let nix = dir.path().join("config.nix");
        std::fs::write(&nix, "{ allowUnfreePredicate = pkg: true; }").unwrap();
        let NixpkgsConfig::File { path, .. } = config(nix.to_str().unwrap()).unwrap() else { panic!("not a file") };
        assert_eq!(path, std::fs::canonicalize(&nix).unwrap());
        let err = config("/no/such/config.nix").unwrap_err().to_string();
        assert!(err.starts_with("NIXERY_NIXPKGS_CONFIG: /no/such/config.nix:"), "{err}");
    }

    #[test]
    fn help_and_version_are_answers_for_main_to_print() {
        let ConfigError::Help(help) = command(&["--help"], &[]).unwrap_err() else { panic!("--help is not help") };
        assert!(help.to_string().contains("[env: NIXERY_LAYER_GROUPING="), "{help}");
        assert!(matches!(command(&["layers", "--help"], &[]), Err(ConfigError::Help(_))));
        assert!(matches!(command(&["--version"], &[]), Err(ConfigError::Help(_))));
        assert!(matches!(command(&["--bogus"], &[]), Err(ConfigError::Usage(_))));
        assert!(matches!(command(&["layers"], &[]), Err(ConfigError::Usage(_))), "the image is required");
    }

    #[test]
    fn s3_falls_back_to_the_generic_aws_variables() {
        let s3 = |vars: &[(&str, &str)]| {
            let mut all = vec![("NIXERY_STORAGE_BACKEND", "s3"), ("NIXERY_S3_BUCKET", "b")];
            all.extend_from_slice(vars);
            let StorageConfig::S3(s3) = serve(&[], &all).unwrap().storage else { panic!("not s3") };
            s3
        };
        let fallback = s3(&[("AWS_DEFAULT_REGION", "eu-west-1"), ("AWS_ENDPOINT_URL", "http://generic")]);
        assert_eq!(fallback.region.as_deref(), Some("eu-west-1"));
        assert_eq!(fallback.endpoint.as_deref(), Some("http://generic"));
        let specific = s3(&[
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_ENDPOINT_URL", "http://generic"),
            ("AWS_ENDPOINT_URL_S3", "http://s3"),
        ]);
        assert_eq!(specific.region.as_deref(), Some("us-west-2"));
        assert_eq!(specific.endpoint.as_deref(), Some("http://s3"));
        assert_eq!(s3(&[("AWS_DEFAULT_REGION", "")]).region, None, "empty counts as unset");
    }

    /// Runs in a child process of this test binary whose environment sets the variables to
    /// values that would fail or change the result if anything read them.
    #[test]
    fn the_process_environment_is_not_consulted() {
        const CHILD: &str = "NIXERY_CONFIG_TEST_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let name = "config::tests::the_process_environment_is_not_consulted";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture"])
                .env(CHILD, "1")
                .envs([("PORT", "eighty"), ("NIXERY_LAYER_BUDGET", "500"), ("NIXERY_PKGS_REPO", "https://x")])
                .envs([("NIXERY_STORAGE_BACKEND", "s3"), ("AWS_DEFAULT_REGION", "process")])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && log.contains("1 passed"), "{log}");
            return;
        }
        assert_eq!(std::env::var("PORT").as_deref(), Ok("eighty"), "the child sees the garbage");
        let c = serve(&[], &[("PORT", "9000")]).unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.build.policy.layers.budget, 94);
        assert!(matches!(c.build.policy.source, PkgSource::Channel { .. }));
        assert!(matches!(c.storage, StorageConfig::Filesystem(_)));
        let s3 = serve(&[], &[("NIXERY_STORAGE_BACKEND", "s3"), ("NIXERY_S3_BUCKET", "b")]).unwrap();
        let StorageConfig::S3(s3) = s3.storage else { panic!("not s3") };
        assert_eq!(s3.region, None);
        assert_eq!(parse(&[]).unwrap().port, 8080);
    }
}
