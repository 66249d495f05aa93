//! The command line and environment as clap sees them: one struct per group of settings,
//! each field a `--flag` with its Nixery environment variable (`env = "..."`, which `--help`
//! lists), and the `From` conversions of the groups that map one to one onto a domain type.
//! Checks that need several values at once live in [`super`].

use crate::archive::ArchivePolicy;
use crate::auth::AnonymousAccess;
use crate::auth::keys::KeySource;
use crate::cache::CachePolicy;
use crate::compression::Compression;
use crate::image::Platforms;
use crate::layers::Grouping;
use crate::package_policy::Rule;
use crate::rate_limit::{BuildRate, TrustedProxies};
use clap::{Parser, ValueEnum};
use reqwest::Url;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::DEFAULT_BINARY_CACHE;

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
    /// The heaviest units kept apart, the rest in bands by depth (the default; docs/reuse.md).
    Banded,
    /// Units that recur whole, heaviest kept apart, the rest in one layer.
    Stable,
    /// Nixery's dominator-tree grouping, for drop-in compatibility.
    Nixery,
    /// nixpkgs' size-first grouping (`dockerTools.streamLayeredImage`).
    Sizefirst,
}

impl From<GroupingArg> for Grouping {
    fn from(arg: GroupingArg) -> Grouping {
        match arg {
            GroupingArg::Banded => Grouping::Banded,
            GroupingArg::Stable => Grouping::Stable,
            GroupingArg::Nixery => Grouping::Nixery,
            GroupingArg::Sizefirst => Grouping::SizeFirst,
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
    /// Collect garbage in the server's storage (its storage settings, NIXERY_RETENTION and
    /// NIXERY_GC_GRACE): delete what no manifest served within the retention references.
    Gc(GcArgs),
}

/// `nixery gc`.
#[derive(Clone, Debug, clap::Args)]
pub struct GcArgs {
    /// Delete nothing: list what would be deleted (key and size, one per line) and the
    /// totals.
    #[arg(long)]
    pub dry_run: bool,
}

/// Storage over time and across replicas (mapped to [`crate::retention::Lifecycle`]).
#[derive(Clone, Debug, clap::Args)]
pub struct LifecycleArgs {
    /// How long a manifest (by tag or digest, an index, the SBOMs and signatures about it)
    /// keeps its blobs after it was last served, e.g. `30d`, `12h`, `90s` (a number alone is
    /// seconds); `0` keeps everything.
    #[arg(long, env = "NIXERY_RETENTION", default_value = "30d", value_parser = duration)]
    pub retention: Duration,

    /// How often the server collects garbage (once for all replicas sharing storage); `0`
    /// never (run `nixery gc` instead).
    #[arg(long, env = "NIXERY_GC_INTERVAL", default_value = "24h", value_parser = duration)]
    pub gc_interval: Duration,

    /// Nothing written more recently than this is collected; must exceed the longest build.
    #[arg(long, env = "NIXERY_GC_GRACE", default_value = "1h", value_parser = duration)]
    pub gc_grace: Duration,

    /// How long a replica's claim to build an image lasts unless renewed (it renews it every
    /// third of this while it builds); others wait for it that long after it died.
    #[arg(long, env = "NIXERY_BUILD_LEASE", default_value = "30s", value_parser = positive_duration)]
    pub build_lease: Duration,
}

impl From<LifecycleArgs> for crate::retention::Lifecycle {
    fn from(args: LifecycleArgs) -> Self {
        crate::retention::Lifecycle {
            retention: args.retention,
            gc_interval: args.gc_interval,
            gc_grace: args.gc_grace,
            build_lease: args.build_lease,
        }
    }
}

/// A duration: a number of seconds, or humantime's `30d`, `1h 30m`, `500ms`.
pub(super) fn duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map(Duration::from_secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(value).map_err(|e| format!("{e} (a number of seconds, or e.g. 30d, 12h, 90s)"))
}

/// A duration that is not zero.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match duration(value)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
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

    /// A flake whose packages (packages.<system>, then legacyPackages.<system>) images are
    /// made of: github:owner/repo, git+https://…, git+ssh://…, git+file://… or path:…; the
    /// image tag selects a branch, tag or commit.
    #[arg(long, env = "NIXERY_PKGS_FLAKE")]
    pub pkgs_flake: Option<String>,

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

    /// How store paths are grouped into layers: `banded` (the fewest bytes to keep images up
    /// to date, see docs/reuse.md), `stable` (the earlier default), `nixery` (Nixery's
    /// layers.go) or `sizefirst` (nixpkgs' `streamLayeredImage`).
    #[arg(long, env = "NIXERY_LAYER_GROUPING", value_enum, default_value = "banded")]
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

    /// Directory of the GC roots that keep the store paths of an image being built in the
    /// Nix store until its layers are stored (under /nix/var/nix/gcroots they are roots by
    /// themselves; anywhere else Nix links them from gcroots/auto).
    #[arg(long, env = "NIXERY_GC_ROOTS", default_value = "/nix/var/nix/gcroots/nixery")]
    pub gc_roots: PathBuf,
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

    #[command(flatten)]
    pub archive: ArchiveArgs,

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

    #[command(flatten)]
    pub connections: ConnectionArgs,

    #[command(flatten)]
    pub artifacts: ArtifactArgs,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
}

/// SBOMs and signatures (what the registry attaches to the images it serves).
#[derive(Clone, Debug, clap::Args)]
pub struct ArtifactArgs {
    /// Private key that signs every image manifest and index (cosign's format): a PEM file
    /// written by `cosign generate-key-pair`, or an unencrypted PKCS#8 EC P-256 key.
    #[arg(long, env = "NIXERY_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// Password of an encrypted signing key.
    #[arg(long, env = "NIXERY_SIGNING_KEY_PASSWORD", hide_env_values = true)]
    pub signing_key_password: Option<String>,

    /// File holding the password of an encrypted signing key (a trailing newline is ignored).
    #[arg(long, env = "NIXERY_SIGNING_KEY_PASSWORD_FILE", conflicts_with = "signing_key_password")]
    pub signing_key_password_file: Option<PathBuf>,

    /// The registry's public name (`registry.example.com[:port]`): signatures and SBOMs name
    /// images under it instead of by repository alone.
    #[arg(long, env = "NIXERY_REGISTRY_NAME")]
    pub registry_name: Option<String>,
}

/// `NIXERY_ANONYMOUS`'s values, mapped to the domain's [`AnonymousAccess`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AnonymousArg {
    /// Anonymous clients pull and cause builds (the default, Nixery's behaviour).
    Build,
    /// Anonymous clients pull what exists for the tag's current revision; builds need
    /// credentials.
    Pull,
    /// Nothing without credentials.
    None,
}

impl From<AnonymousArg> for AnonymousAccess {
    fn from(arg: AnonymousArg) -> AnonymousAccess {
        match arg {
            AnonymousArg::Build => AnonymousAccess::Build,
            AnonymousArg::Pull => AnonymousAccess::Pull,
            AnonymousArg::None => AnonymousAccess::None,
        }
    }
}

/// Who may pull and build, and how much (see `crate::auth`, `crate::package_policy`,
/// `crate::rate_limit`).
#[derive(Clone, Debug, clap::Args)]
pub struct AccessArgs {
    /// htpasswd file of users and bcrypt hashes (`htpasswd -B`): clients log in with Basic
    /// authentication. Re-read when it changes.
    #[arg(long, env = "NIXERY_AUTH_HTPASSWD")]
    pub auth_htpasswd: Option<PathBuf>,

    /// Docker token authentication: the token service's URL clients get tokens from.
    #[arg(long, env = "NIXERY_AUTH_TOKEN_REALM", value_parser = token_realm)]
    pub auth_token_realm: Option<String>,

    /// This registry's name at the token service (the tokens' audience).
    #[arg(long, env = "NIXERY_AUTH_TOKEN_SERVICE", value_parser = quotable)]
    pub auth_token_service: Option<String>,

    /// The tokens' issuer (`iss`).
    #[arg(long, env = "NIXERY_AUTH_TOKEN_ISSUER", value_parser = quotable)]
    pub auth_token_issuer: Option<String>,

    /// The token service's public keys: a PEM file (keys or certificates), a JWKS file, or a
    /// JWKS URL (fetched at start-up and every 5 minutes).
    #[arg(long, env = "NIXERY_AUTH_TOKEN_KEYS", value_parser = key_source)]
    pub auth_token_keys: Option<KeySource>,

    /// What clients without credentials may do: `build` (pull and cause builds), `pull`
    /// (pull what exists), `none`.
    #[arg(long, env = "NIXERY_ANONYMOUS", value_enum, default_value = "build")]
    pub anonymous: AnonymousArg,

    /// Packages images may hold, comma-separated attribute paths, `*` for any characters
    /// (`hello,python3Packages.*`) [default: all].
    #[arg(long, env = "NIXERY_PACKAGES_ALLOW", value_parser = package_rules)]
    pub packages_allow: Option<Rules>,

    /// Packages images may not hold, as for the allow list; wins over it.
    #[arg(long, env = "NIXERY_PACKAGES_DENY", value_parser = package_rules)]
    pub packages_deny: Option<Rules>,

    /// At most N cold builds per client (user, else address) per SECONDS: `N/SECONDS`
    /// [default: no limit].
    #[arg(long, env = "NIXERY_BUILD_RATE", value_parser = BuildRate::parse)]
    pub build_rate: Option<BuildRate>,

    /// Proxies whose `X-Forwarded-For` names the client: addresses and CIDR ranges,
    /// comma-separated.
    #[arg(long, env = "NIXERY_TRUSTED_PROXIES", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: Option<TrustedProxies>,
}

/// A list of package rules (clap needs one type per value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

/// `NIXERY_PACKAGES_ALLOW` / `_DENY`: comma-separated rules.
fn package_rules(value: &str) -> Result<Rules, String> {
    let rules: Result<Vec<Rule>, String> = value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| Rule::parse(r).ok_or_else(|| format!("'{r}' is not an attribute path or pattern")))
        .collect();
    let rules = rules?;
    if rules.is_empty() {
        return Err("no rule in it".to_owned());
    }
    Ok(Rules(rules))
}

/// Text that can stand between double quotes in a `WWW-Authenticate` challenge.
fn quotable(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii()) {
        return Err("must be printable ASCII without quotes or backslashes".to_owned());
    }
    Ok(value.to_owned())
}

/// `NIXERY_AUTH_TOKEN_REALM`: an absolute http(s) URL, quotable.
fn token_realm(value: &str) -> Result<String, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("expected an http or https URL".to_owned());
    }
    quotable(value)
}

/// `NIXERY_AUTH_TOKEN_KEYS`: an http(s) URL of a JWKS, or a file.
fn key_source(value: &str) -> Result<KeySource, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        let url = Url::parse(value).map_err(|e| e.to_string())?;
        return Ok(KeySource::Url(url));
    }
    Ok(KeySource::File(PathBuf::from(value)))
}

/// Client connections and shutdown (mapped to [`server::Limits`] and
/// [`Config::shutdown_timeout`]).
#[derive(Clone, Debug, clap::Args)]
pub struct ConnectionArgs {
    /// Seconds a client has to send a request's headers, from its first byte (or from
    /// connecting).
    #[arg(long, env = "NIXERY_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,

    /// Seconds a keep-alive connection may wait for its next request, and a client may
    /// leave an answer unread.
    #[arg(long, env = "NIXERY_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,

    /// Most connections open at once (fewer if the open file limit is lower); at the limit,
    /// the connections that waited longest without a request are closed to make room.
    #[arg(long, env = "NIXERY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_connections: u64,

    /// Seconds from SIGTERM until the process has exited: answers in progress may finish
    /// until shortly before, then Nix builds are stopped.
    #[arg(long, env = "NIXERY_SHUTDOWN_TIMEOUT", default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout: u64,
}

/// `NIXERY_LAYER_COMPRESSION`'s values, mapped to the domain's [`Compression`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// gzip, which every client reads (the default).
    Gzip,
    /// zstd: OCI `tar+zstd` layers, for Docker ≥ 23, containerd ≥ 1.5 and podman.
    Zstd,
}

/// How layer archives are compressed (see `crate::archive`).
#[derive(Clone, Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Layer compression: `gzip` (every client reads it) or `zstd` (faster and smaller, but
    /// only in OCI manifests, read by Docker ≥ 23, containerd ≥ 1.5 and podman).
    #[arg(long, env = "NIXERY_LAYER_COMPRESSION", value_enum, default_value = "gzip")]
    pub layer_compression: CompressionArg,

    /// Compression threads [default: one per core]. For tests and benchmarks, which show that
    /// no layer byte depends on it; hidden from `--help`.
    #[arg(long, env = "NIXERY_COMPRESSION_WORKERS", hide = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub compression_workers: Option<u16>,
}

impl From<ArchiveArgs> for ArchivePolicy {
    fn from(args: ArchiveArgs) -> ArchivePolicy {
        let compression = match args.layer_compression {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
        };
        let workers = args.compression_workers.and_then(|n| NonZeroUsize::new(n.into()));
        ArchivePolicy { compression, workers }
    }
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

/// `--binary-cache`: an absolute http(s) URL.
fn binary_cache_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("expected an http or https URL, not {other}")),
    }
}
