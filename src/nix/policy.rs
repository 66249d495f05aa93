//! How the server runs Nix, in the domain's terms: the configuration (src/config.rs) maps
//! NIX_TIMEOUT, NIXERY_LOCAL_BUILDS, NIXERY_MAX_NIX_JOBS, NIXERY_NIXPKGS_CONFIG and the
//! package policy (NIXERY_PACKAGES_ALLOW/_DENY) into a [`NixPolicy`] at start-up.

use crate::digest::Digest;
use crate::package_policy::PackagePolicy;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// How Nix is run for images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NixPolicy {
    /// How long one image's Nix work (evaluate, build, query) may take; also how long an
    /// image may wait for a Nix job slot (src/nix/jobs.rs).
    pub timeout: Duration,
    /// Build what no binary cache has (`false`: refuse such images before anything is built).
    pub local_builds: bool,
    /// Most Nix processes at a time, across all images.
    pub max_jobs: usize,
    /// nixpkgs' `config` for the package set.
    pub nixpkgs_config: NixpkgsConfig,
    /// Which resolved packages may be realised (`NIXERY_PACKAGES_ALLOW`/`_DENY`).
    pub packages: PackagePolicy,
    /// Where the GC roots of builds in progress go (`NIXERY_GC_ROOTS`; [`super::roots`]);
    /// `None`: no roots.
    pub gc_roots: Option<PathBuf>,
}

impl NixPolicy {
    /// Defaults for one-off commands: local builds, as many jobs as cores, no nixpkgs config.
    pub fn with_timeout(timeout: Duration) -> Self {
        NixPolicy {
            timeout,
            local_builds: true,
            max_jobs: cores(),
            nixpkgs_config: NixpkgsConfig::default(),
            packages: PackagePolicy::default(),
            gc_roots: None,
        }
    }
}

/// The number of cores (NIXERY_MAX_NIX_JOBS' default).
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// nixpkgs configuration (`allowUnfree` and the like), handed to the package set as its
/// `config` argument by nix/source.nix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NixpkgsConfig {
    /// An attribute set given as a JSON object (inline, or read from a .json file).
    Attrs(Map<String, Value>),
    /// A .nix file, imported by Nix (it may hold functions, e.g. `allowUnfreePredicate`).
    /// `digest` is its content's at start-up, so cached manifests follow edits.
    File { path: PathBuf, digest: Digest },
}

impl Default for NixpkgsConfig {
    fn default() -> Self {
        NixpkgsConfig::Attrs(Map::new())
    }
}

impl NixpkgsConfig {
    /// nix/source.nix's `nixpkgsConfig` argument.
    pub fn nix_arg(&self) -> String {
        match self {
            NixpkgsConfig::Attrs(attrs) => json!({ "attrs": attrs }),
            NixpkgsConfig::File { path, .. } => json!({ "file": path }),
        }
        .to_string()
    }

    /// What the configuration is, as stable data for cache keys: the same configuration
    /// always gives the same identity, a changed one another.
    pub fn identity(&self) -> Value {
        match self {
            NixpkgsConfig::Attrs(attrs) => json!({ "attrs": attrs }),
            NixpkgsConfig::File { digest, .. } => json!({ "file": digest.hex() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_become_nix_arguments_and_identities() {
        let none = NixpkgsConfig::default();
        assert_eq!(none.nix_arg(), r#"{"attrs":{}}"#);
        let Value::Object(unfree) = json!({ "allowUnfree": true }) else { unreachable!() };
        let unfree = NixpkgsConfig::Attrs(unfree);
        assert_eq!(unfree.nix_arg(), r#"{"attrs":{"allowUnfree":true}}"#);
        assert_ne!(unfree.identity(), none.identity());
        let file = NixpkgsConfig::File { path: "/etc/nixery/config.nix".into(), digest: Digest::of(b"{ }") };
        assert_eq!(file.nix_arg(), r#"{"file":"/etc/nixery/config.nix"}"#);
        assert!(!file.identity().to_string().contains("/etc"), "the identity is the content, not the path");
    }
}
