//! Talking to Nix: resolve an image's packages in the package set, realise them, and read
//! their runtime graph.
//!
//! Three short commands per image build, never one per package: `nix-instantiate --eval`
//! of nix/lookup.nix (names in, derivations out, as JSON), one `nix-store --realise` of all
//! derivations together (Nix schedules the builds), and one `nix path-info --recursive` for
//! the closure with sizes and references. They share one deadline (`NIX_TIMEOUT`), and each is
//! stopped when the request that needs it is abandoned.

mod graph;
mod process;

pub use graph::{GraphError, PathInfo, RuntimeGraph, store_path_name};
pub use process::ProcessError;

use crate::image::Arch;
use crate::metrics::Metrics;
use crate::pkgsource::SourceRevision;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

/// The lookup expression, shipped inside the binary so the server runs from anywhere.
const LOOKUP_NIX: &str = include_str!("../../nix/lookup.nix");

/// A package as nix/lookup.nix resolved it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPackage {
    /// The name as requested.
    pub name: String,
    /// The attribute path it resolved to, e.g. `bashInteractive`.
    pub attr: String,
    pub drv_path: String,
    /// The output paths that go into the image.
    pub outputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct LookupResult {
    missing: Vec<String>,
    unusable: Vec<String>,
    packages: Vec<ResolvedPackage>,
}

/// Why Nix could not produce an image's packages.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("packages not found: {}", .missing.join(", "))]
    UnknownPackages {
        missing: Vec<String>,
        unusable: Vec<String>,
    },
    #[error("evaluating the package set failed")]
    Evaluation(#[source] ProcessError),
    #[error("building the packages failed")]
    Build(#[source] ProcessError),
    #[error("querying the runtime graph failed")]
    Query(#[source] ProcessError),
    #[error("unexpected output from nix: {0}")]
    Output(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

impl NixError {
    /// The process failure underneath, if any (for timeouts and log tails).
    pub fn process(&self) -> Option<&ProcessError> {
        match self {
            NixError::Evaluation(p) | NixError::Build(p) | NixError::Query(p) => Some(p),
            _ => None,
        }
    }
}

/// The realised packages of one image and their closure.
#[derive(Clone, Debug)]
pub struct Realised {
    pub packages: Vec<ResolvedPackage>,
    pub graph: RuntimeGraph,
}

/// Runs Nix for the registry.
pub struct Nix {
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Nix {
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Nix { timeout, metrics }
    }

    /// Resolves, builds and queries `packages` of `source` for `arch`.
    pub async fn realise(
        &self,
        source: &SourceRevision,
        arch: Arch,
        packages: &BTreeSet<String>,
    ) -> Result<Realised, NixError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let names = serde_json::to_string(packages).expect("strings serialise");

        let mut eval = Command::new("nix-instantiate");
        eval.args(["--eval", "--strict", "--json", "--read-write-mode"])
            .args(["--expr", LOOKUP_NIX])
            .args(["--argstr", "srcType", source.kind])
            .args(["--argstr", "srcArgs", &source.args])
            .args(["--argstr", "system", arch.nix_system()])
            .args(["--argstr", "packages", &names]);
        let out = self
            .run("evaluate", eval, started, deadline)
            .await
            .map_err(NixError::Evaluation)?;
        let lookup: LookupResult = serde_json::from_slice(&out)
            .map_err(|e| NixError::Output(format!("lookup result: {e}")))?;
        if !lookup.missing.is_empty() || !lookup.unusable.is_empty() {
            return Err(NixError::UnknownPackages {
                missing: lookup.missing,
                unusable: lookup.unusable,
            });
        }

        let drvs: BTreeSet<&str> = lookup
            .packages
            .iter()
            .map(|p| p.drv_path.as_str())
            .collect();
        let mut build = Command::new("nix-store");
        build.arg("--realise").args(&drvs);
        self.run("realise", build, started, deadline)
            .await
            .map_err(NixError::Build)?;

        let roots: BTreeSet<String> = lookup
            .packages
            .iter()
            .flat_map(|p| p.outputs.iter().cloned())
            .collect();
        let mut query = Command::new("nix");
        query
            .args([
                "--extra-experimental-features",
                "nix-command",
                "path-info",
                "--json",
                "--recursive",
                "--closure-size",
            ])
            .args(&roots);
        let out = self
            .run("query graph", query, started, deadline)
            .await
            .map_err(NixError::Query)?;
        let graph = RuntimeGraph::from_path_info(&out, roots)?;
        Ok(Realised {
            packages: lookup.packages,
            graph,
        })
    }

    async fn run(
        &self,
        step: &str,
        command: Command,
        started: Instant,
        deadline: Instant,
    ) -> Result<Vec<u8>, ProcessError> {
        self.metrics.nix_invocations.inc();
        tracing::info!(step, "running nix");
        process::run(command, started, deadline).await
    }
}
