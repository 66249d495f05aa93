//! The server's configuration: the only place the environment is read.
//!
//! Every setting is a `--flag` and an environment variable with Nixery's name, so an existing
//! Nixery deployment's environment works unchanged. Values are checked here, at start-up, and
//! a bad one stops the server with a message naming the variable.

use crate::layers::Grouping;
use crate::pkgsource::{Channel, PkgSource};
use crate::storage::{GcsConfig, S3Config};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, ValueEnum};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Nixery's default package source when none is configured.
pub const DEFAULT_CHANNEL: &str = "nixos-unstable";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageBackend {
    Filesystem,
    Gcs,
    S3,
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
}

/// How images are built.
#[derive(Clone, Debug, clap::Args)]
pub struct BuildArgs {
    /// Seconds an image's Nix work (evaluate, build, query) may take.
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
    pub layer_grouping: Grouping,
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
}

#[derive(Clone, Debug, clap::Args)]
pub struct LayersArgs {
    /// Image name, e.g. `shell/git`.
    pub image: String,

    /// Tag (selects the revision of a git package source).
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

/// Checked settings shared by everything that builds images.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    pub source: PkgSource,
    pub nix_timeout: Duration,
    pub popularity_url: Option<String>,
    pub layer_budget: usize,
    pub grouping: Grouping,
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
    pub storage: StorageConfig,
}

/// What the binary was asked to do, with checked settings.
#[derive(Clone, Debug)]
pub enum Command {
    Serve(Box<Config>),
    Popcount { source: PkgSource, output: PathBuf, batch: usize, nix_timeout: Duration },
    Layers { image: String, tag: String, json: bool, build: BuildSettings },
}

/// A configuration the server cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("set at most one package source, got {0}")]
    SeveralSources(String),
    #[error("NIXERY_PKGS_PATH {}: {source}", .path.display())]
    PkgsPath { path: PathBuf, source: std::io::Error },
    #[error("NIXERY_STORAGE_BACKEND={backend} needs {variable}")]
    MissingBucket { backend: &'static str, variable: &'static str },
    #[error("NIXERY_CHANNEL must not be empty")]
    EmptyChannel,
}

impl Command {
    /// Parses the command line and environment, exiting with a message naming the variable on
    /// a malformed value. A variable set to the empty string counts as unset, as in Nixery.
    ///
    /// Must be called before the process starts any thread (it edits the environment).
    pub fn from_env() -> Result<Command, ConfigError> {
        for var in Args::command().get_arguments().filter_map(|a| a.get_env()) {
            if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
                // SAFETY: documented precondition: no other thread exists yet.
                unsafe { std::env::remove_var(var) };
            }
        }
        let args = Args::try_parse().unwrap_or_else(|e| exit_naming_variable(e));
        Command::from_args(args)
    }

    pub fn from_args(args: Args) -> Result<Command, ConfigError> {
        Ok(match args.command {
            None => Command::Serve(Box::new(Config::from_args(args.serve)?)),
            Some(Subcommand::Popcount(p)) => Command::Popcount {
                source: p.source.resolve()?,
                output: p.output,
                batch: p.batch as usize,
                nix_timeout: Duration::from_secs(p.nix_timeout),
            },
            Some(Subcommand::Layers(l)) => {
                Command::Layers { image: l.image, tag: l.tag, json: l.json, build: l.build.check(l.source)? }
            }
        })
    }
}

impl SourceArgs {
    /// The one configured package source (nixos-unstable when none is given).
    pub fn resolve(self) -> Result<PkgSource, ConfigError> {
        let given: Vec<&str> = [
            self.channel.as_ref().map(|_| "NIXERY_CHANNEL"),
            self.pkgs_repo.as_ref().map(|_| "NIXERY_PKGS_REPO"),
            self.pkgs_path.as_ref().map(|_| "NIXERY_PKGS_PATH"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(ConfigError::SeveralSources(given.join(" and ")));
        }
        Ok(if let Some(path) = self.pkgs_path {
            let path = std::fs::canonicalize(&path).map_err(|source| ConfigError::PkgsPath { path, source })?;
            PkgSource::Path(path)
        } else if let Some(repo) = self.pkgs_repo {
            PkgSource::Git(repo)
        } else {
            let channel = self.channel.as_deref().unwrap_or(DEFAULT_CHANNEL);
            PkgSource::Channel(Channel::parse(channel).ok_or(ConfigError::EmptyChannel)?)
        })
    }
}

impl BuildArgs {
    fn check(self, source: SourceArgs) -> Result<BuildSettings, ConfigError> {
        Ok(BuildSettings {
            source: source.resolve()?,
            nix_timeout: Duration::from_secs(self.nix_timeout),
            popularity_url: self.popularity_url,
            layer_budget: self.layer_budget as usize,
            grouping: self.layer_grouping,
        })
    }
}

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
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
                s3.region = s3_args.aws_region.or_else(|| non_empty_env("AWS_DEFAULT_REGION"));
                s3.endpoint = s3_args.aws_endpoint_url_s3.or_else(|| non_empty_env("AWS_ENDPOINT_URL"));
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
        Ok(Config { host: args.host, port: args.port, build: args.build.check(args.source)?, storage })
    }

    /// The serve configuration from an argument list (for tests and embedding).
    pub fn parse_from<I: IntoIterator<Item = &'static str>>(argv: I) -> Result<Config, ConfigError> {
        Config::from_args(Args::try_parse_from(argv).expect("arguments parse").serve)
    }
}

/// A variable that is set and not empty (the fallbacks clap's `env` cannot express).
fn non_empty_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// Clap names the flag of a bad value; operators set variables, so name that too, then exit.
fn exit_naming_variable(err: clap::Error) -> ! {
    let bad_value = matches!(err.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation);
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if bad_value => arg.clone(),
        _ => err.exit(),
    };
    let env = Args::command()
        .get_arguments()
        .find(|a| a.get_long().is_some_and(|l| flag.starts_with(&format!("--{l} "))))
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    let Some(env) = env else { err.exit() };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    // Clap's first line ends with the reason, e.g. "invalid digit found in string".
    let rendered = err.to_string();
    let reason = rendered.lines().next().and_then(|l| l.rsplit_once(": ")).map(|(_, r)| r).unwrap_or("invalid value");
    eprintln!("error: invalid value '{value}' for {env} ({flag}): {reason}");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&'static str]) -> Result<Config, ConfigError> {
        Config::parse_from(std::iter::once("nixery").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_nixery() {
        // No source configured: the nixos-unstable channel.
        let c = parse(&[]).unwrap();
        assert_eq!(c.build.source, PkgSource::Channel(Channel::Branch("nixos-unstable".into())));
        assert_eq!(c.build.layer_budget, 94);
        assert_eq!(c.build.nix_timeout, Duration::from_secs(60));
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn at_most_one_source() {
        let err = parse(&["--channel", "nixos-23.05", "--pkgs-repo", "https://x"]).unwrap_err();
        assert!(err.to_string().contains("NIXERY_CHANNEL and NIXERY_PKGS_REPO"), "{err}");
    }

    #[test]
    fn a_missing_pkgs_path_is_refused_with_the_variable_name() {
        let err = parse(&["--pkgs-path", "/does/not/exist"]).unwrap_err();
        assert!(err.to_string().starts_with("NIXERY_PKGS_PATH"), "{err}");
    }

    #[test]
    fn budget_and_timeout_are_range_checked() {
        assert!(Args::try_parse_from(["nixery", "--layer-budget", "0"]).is_err());
        assert!(Args::try_parse_from(["nixery", "--layer-budget", "125"]).is_err());
        assert!(Args::try_parse_from(["nixery", "--nix-timeout", "0"]).is_err());
        assert!(Args::try_parse_from(["nixery", "--layer-budget", "124"]).is_ok());
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
        let args = Args::try_parse_from(["nixery", "layers", "shell/git", "--pkgs-path", "/", "--layer-budget", "10"])
            .unwrap();
        let Command::Layers { image, tag, build, .. } = Command::from_args(args).unwrap() else { panic!("not layers") };
        assert_eq!(image, "shell/git");
        assert_eq!(tag, "latest");
        assert_eq!(build.layer_budget, 10);
        let args = Args::try_parse_from(["nixery", "popcount", "--pkgs-path", "/", "-o", "/tmp/p.json"]).unwrap();
        let Command::Popcount { output, .. } = Command::from_args(args).unwrap() else { panic!("not popcount") };
        assert_eq!(output, PathBuf::from("/tmp/p.json"));
    }
}
