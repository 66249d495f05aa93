//! The server's configuration: the only place the environment is read.
//!
//! Every setting is a `--flag` and an environment variable with Nixery's name, so an existing
//! Nixery deployment's environment works unchanged. Values are checked here, at start-up, and
//! a bad one stops the server with a message naming the variable.

use crate::pkgsource::PkgSource;
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
}

/// A container registry that builds images from Nix packages on demand.
#[derive(Clone, Debug, Parser)]
#[command(name = "nixery", version, about)]
pub struct Args {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "NIXERY_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// nixpkgs channel (branch) or commit to take packages from [default: nixos-unstable].
    #[arg(long, env = "NIXERY_CHANNEL")]
    pub channel: Option<String>,

    /// Git repository of a package set; the image tag selects a ref or commit.
    #[arg(long, env = "NIXERY_PKGS_REPO")]
    pub pkgs_repo: Option<String>,

    /// Local path of a package set (a directory with default.nix, or a .nix file).
    #[arg(long, env = "NIXERY_PKGS_PATH")]
    pub pkgs_path: Option<PathBuf>,

    /// Where blobs, manifests and build records are stored.
    #[arg(
        long,
        env = "NIXERY_STORAGE_BACKEND",
        value_enum,
        default_value = "filesystem"
    )]
    pub storage_backend: StorageBackend,

    /// Directory of the filesystem storage backend.
    #[arg(long, env = "STORAGE_PATH", default_value = "nixery-storage")]
    pub storage_path: PathBuf,

    /// Seconds an image's Nix work (evaluate, build, query) may take.
    #[arg(long, env = "NIX_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub nix_timeout: u64,

    /// Popularity data (Nixery's format): an http(s) URL or a file path.
    #[arg(long, env = "NIX_POPULARITY_URL")]
    pub popularity_url: Option<String>,

    /// Most store-path layers per image; the symlink-forest layer comes on top.
    #[arg(long, env = "NIXERY_LAYER_BUDGET", default_value_t = 94, value_parser = clap::value_parser!(u16).range(1..=124))]
    pub layer_budget: u16,
}

/// The checked configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub source: PkgSource,
    pub storage_path: PathBuf,
    pub nix_timeout: Duration,
    pub popularity_url: Option<String>,
    pub layer_budget: usize,
}

/// A configuration the server cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("set at most one package source, got {0}")]
    SeveralSources(String),
    #[error("NIXERY_PKGS_PATH {}: {source}", .path.display())]
    PkgsPath {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NIXERY_STORAGE_BACKEND={0} is not available in this build (use filesystem)")]
    BackendUnavailable(String),
    #[error("NIXERY_CHANNEL must not be empty")]
    EmptyChannel,
}

impl Config {
    /// Parses the command line and environment, exiting with a message naming the variable on
    /// a malformed value. A variable set to the empty string counts as unset, as in Nixery.
    ///
    /// Must be called before the process starts any thread (it edits the environment).
    pub fn from_env() -> Result<Config, ConfigError> {
        for var in Args::command().get_arguments().filter_map(|a| a.get_env()) {
            if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
                // SAFETY: documented precondition: no other thread exists yet.
                unsafe { std::env::remove_var(var) };
            }
        }
        let args = Args::try_parse().unwrap_or_else(|e| exit_naming_variable(e));
        Config::from_args(args)
    }

    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let given: Vec<&str> = [
            args.channel.as_ref().map(|_| "NIXERY_CHANNEL"),
            args.pkgs_repo.as_ref().map(|_| "NIXERY_PKGS_REPO"),
            args.pkgs_path.as_ref().map(|_| "NIXERY_PKGS_PATH"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if given.len() > 1 {
            return Err(ConfigError::SeveralSources(given.join(" and ")));
        }
        let source = if let Some(path) = args.pkgs_path {
            let path = std::fs::canonicalize(&path)
                .map_err(|source| ConfigError::PkgsPath { path, source })?;
            PkgSource::Path(path)
        } else if let Some(repo) = args.pkgs_repo {
            PkgSource::Git(repo)
        } else {
            let channel = args.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_owned());
            if channel.trim().is_empty() {
                return Err(ConfigError::EmptyChannel);
            }
            PkgSource::Channel(channel)
        };
        if args.storage_backend != StorageBackend::Filesystem {
            return Err(ConfigError::BackendUnavailable("gcs".into()));
        }
        Ok(Config {
            host: args.host,
            port: args.port,
            source,
            storage_path: args.storage_path,
            nix_timeout: Duration::from_secs(args.nix_timeout),
            popularity_url: args.popularity_url,
            layer_budget: args.layer_budget as usize,
        })
    }
}

/// Clap names the flag of a bad value; operators set variables, so name that too, then exit.
fn exit_naming_variable(err: clap::Error) -> ! {
    let bad_value = matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    );
    let flag = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) if bad_value => arg.clone(),
        _ => err.exit(),
    };
    let env = Args::command()
        .get_arguments()
        .find(|a| {
            a.get_long()
                .is_some_and(|l| flag.starts_with(&format!("--{l} ")))
        })
        .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()));
    let Some(env) = env else { err.exit() };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    // Clap's first line ends with the reason, e.g. "invalid digit found in string".
    let rendered = err.to_string();
    let reason = rendered
        .lines()
        .next()
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, r)| r)
        .unwrap_or("invalid value");
    eprintln!("error: invalid value '{value}' for {env} ({flag}): {reason}");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["nixery"];
        argv.extend_from_slice(args);
        Config::from_args(Args::try_parse_from(argv).expect("arguments parse"))
    }

    #[test]
    fn defaults_match_nixery() {
        // No source configured: the nixos-unstable channel.
        let c = Config::from_args(Args::try_parse_from(["nixery"]).unwrap()).unwrap();
        assert_eq!(c.source, PkgSource::Channel("nixos-unstable".into()));
        assert_eq!(c.layer_budget, 94);
        assert_eq!(c.nix_timeout, Duration::from_secs(60));
    }

    #[test]
    fn at_most_one_source() {
        let err = parse(&["--channel", "nixos-23.05", "--pkgs-repo", "https://x"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("NIXERY_CHANNEL and NIXERY_PKGS_REPO"),
            "{err}"
        );
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
}
