//! Talking to Nix: resolve an image's packages in the package set, realise them, and read
//! their runtime graph; and the queries `nixery popcount` needs.
//!
//! Three short commands per image build, never one per package: `nix-instantiate --eval`
//! of nix/lookup.nix (names in, derivations out, as JSON), one `nix-store --realise` of all
//! derivations together (Nix schedules the builds), and one `nix path-info --recursive` for
//! the closure with sizes and references. They share one deadline (`NIX_TIMEOUT`), and each is
//! stopped when the request that needs it is abandoned.

mod child;
pub mod derivation;
mod exprs;
mod graph;
mod process;
mod source;
mod store_path;

pub use child::{TERM_GRACE, stop_all};
pub use graph::{GraphError, PathInfo, RuntimeGraph, parse_path_info};
pub use process::ProcessError;
pub use store_path::{StorePath, StorePathError};

use crate::image::{Arch, PackageName};
use crate::metrics::Metrics;
use crate::pkgsource::SourceRevision;
use exprs::Expressions;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

/// A package as nix/lookup.nix resolved it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPackage {
    /// The name as requested.
    pub name: PackageName,
    /// The attribute path it resolved to, e.g. `bashInteractive`.
    pub attr: String,
    pub drv_path: StorePath,
    /// The output paths that go into the image.
    pub outputs: Vec<StorePath>,
}

#[derive(Debug, Deserialize)]
struct LookupResult {
    missing: Vec<PackageName>,
    unusable: Vec<PackageName>,
    packages: Vec<ResolvedPackage>,
}

/// A top-level derivation of a package set, as nix/popcount.nix lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TopLevelDerivation {
    pub attr: String,
    pub drv_path: StorePath,
    pub outputs: Vec<StorePath>,
}

/// Why Nix could not produce an image's packages.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("packages not found: {}", .missing.join(", "))]
    UnknownPackages { missing: Vec<PackageName>, unusable: Vec<PackageName> },
    #[error("evaluating the package set failed")]
    Evaluation(#[source] ProcessError),
    #[error("building the packages failed")]
    Build(#[source] ProcessError),
    #[error("querying the store failed")]
    Query(#[source] ProcessError),
    #[error("unexpected output from nix: {step}: {source}")]
    Output { step: &'static str, source: serde_json::Error },
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

impl Realised {
    /// Output paths of the packages every image carries (`cacert`, `iana-etc`), which the
    /// layer grouping treats as the most popular.
    pub fn always_included_outputs(&self) -> BTreeSet<StorePath> {
        self.packages
            .iter()
            .filter(|p| crate::image::ALWAYS_INCLUDED.contains(&p.name.as_str()))
            .flat_map(|p| p.outputs.iter().cloned())
            .collect()
    }
}

/// Runs Nix for the registry.
pub struct Nix {
    timeout: Duration,
    exprs: Expressions,
    metrics: Arc<Metrics>,
}

/// One budget for a sequence of commands.
#[derive(Clone, Copy)]
struct Deadline {
    started: Instant,
    at: Instant,
}

impl Nix {
    /// Writes the expressions to a private temporary directory.
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        Ok(Nix { timeout, exprs: Expressions::write()?, metrics })
    }

    fn deadline(&self) -> Deadline {
        let started = Instant::now();
        Deadline { started, at: started + self.timeout }
    }

    /// `nix-instantiate --eval --strict --json` of `expr` with string arguments.
    fn eval(&self, expr: &str, source: &SourceRevision, system: &str, args: &[(&str, &str)]) -> Command {
        let (src_type, src_args) = source::nix_args(source);
        let mut c = Command::new("nix-instantiate");
        c.args(["--eval", "--strict", "--json", "--read-write-mode"])
            .arg(self.exprs.path(expr))
            .args(["--argstr", "srcType", src_type])
            .args(["--argstr", "srcArgs", &src_args])
            .args(["--argstr", "system", system]);
        for (k, v) in args {
            c.args(["--argstr", k, v]);
        }
        c
    }

    /// Resolves, builds and queries `packages` of `source` for `arch`.
    pub async fn realise(
        &self,
        source: &SourceRevision,
        arch: Arch,
        packages: &BTreeSet<PackageName>,
    ) -> Result<Realised, NixError> {
        let deadline = self.deadline();
        let names = serde_json::to_string(packages).expect("names serialise");
        let eval = self.eval("lookup.nix", source, arch.nix_system(), &[("packages", &names)]);
        let lookup: LookupResult =
            self.json("evaluate", eval, deadline).await.map_err(|e| e.or(NixError::Evaluation))?;
        if !lookup.missing.is_empty() || !lookup.unusable.is_empty() {
            return Err(NixError::UnknownPackages { missing: lookup.missing, unusable: lookup.unusable });
        }

        let drvs: BTreeSet<&StorePath> = lookup.packages.iter().map(|p| &p.drv_path).collect();
        let mut build = Command::new("nix-store");
        build.arg("--realise").args(&drvs);
        self.run("realise", build, deadline).await.map_err(NixError::Build)?;

        let roots: BTreeSet<StorePath> = lookup.packages.iter().flat_map(|p| p.outputs.iter().cloned()).collect();
        let out = self.path_info(&roots, true, deadline).await?;
        let graph = RuntimeGraph::from_path_info(&out, roots)?;
        Ok(Realised { packages: lookup.packages, graph })
    }

    /// The sorted top-level attribute names of the package set.
    pub async fn attribute_names(&self, source: &SourceRevision) -> Result<Vec<String>, NixError> {
        let eval = self.eval("popcount.nix", source, Arch::Amd64.nix_system(), &[("mode", "names")]);
        self.json("list attributes", eval, self.deadline()).await.map_err(|e| e.or(NixError::Evaluation))
    }

    /// The derivations among `attrs` (others are skipped).
    pub async fn derivations(
        &self,
        source: &SourceRevision,
        attrs: &[String],
    ) -> Result<Vec<TopLevelDerivation>, NixError> {
        let names = serde_json::to_string(attrs).expect("strings serialise");
        let eval =
            self.eval("popcount.nix", source, Arch::Amd64.nix_system(), &[("mode", "derivations"), ("names", &names)]);
        self.json("instantiate", eval, self.deadline()).await.map_err(|e| e.or(NixError::Evaluation))
    }

    /// The runtime references of those `paths` that are valid in the local store.
    pub async fn local_references(
        &self,
        paths: &BTreeSet<StorePath>,
    ) -> Result<BTreeMap<StorePath, Vec<StorePath>>, NixError> {
        let deadline = self.deadline();
        let mut check = Command::new("nix-store");
        check.args(["--check-validity", "--print-invalid"]).args(paths);
        let invalid = self.run("check validity", check, deadline).await.map_err(NixError::Query)?;
        let invalid: BTreeSet<&str> = std::str::from_utf8(&invalid).unwrap_or("").lines().collect();
        let valid: BTreeSet<StorePath> = paths.iter().filter(|p| !invalid.contains(p.as_str())).cloned().collect();
        if valid.is_empty() {
            return Ok(BTreeMap::new());
        }
        let out = self.path_info(&valid, false, deadline).await?;
        Ok(parse_path_info(&out)?.into_iter().map(|(p, info)| (p, info.references)).collect())
    }

    async fn path_info(
        &self,
        paths: &BTreeSet<StorePath>,
        recursive: bool,
        deadline: Deadline,
    ) -> Result<Vec<u8>, NixError> {
        let mut query = Command::new("nix");
        query.args(["--extra-experimental-features", "nix-command", "path-info", "--json", "--closure-size"]);
        if recursive {
            query.arg("--recursive");
        }
        query.args(paths);
        self.run("query graph", query, deadline).await.map_err(NixError::Query)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        step: &'static str,
        command: Command,
        deadline: Deadline,
    ) -> Result<T, JsonStepError> {
        let out = self.run(step, command, deadline).await.map_err(JsonStepError::Process)?;
        serde_json::from_slice(&out).map_err(|source| JsonStepError::Output(NixError::Output { step, source }))
    }

    async fn run(&self, step: &str, command: Command, deadline: Deadline) -> Result<Vec<u8>, ProcessError> {
        self.metrics.nix_invocations.inc();
        tracing::info!(step, "running nix");
        process::run(command, deadline.started, deadline.at).await
    }
}

/// A step that runs a command and decodes its JSON output.
enum JsonStepError {
    Process(ProcessError),
    Output(NixError),
}

impl JsonStepError {
    fn or(self, wrap: impl FnOnce(ProcessError) -> NixError) -> NixError {
        match self {
            JsonStepError::Process(p) => wrap(p),
            JsonStepError::Output(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_that_is_not_json_names_the_step_and_keeps_the_parse_error() {
        let nix = Nix::new(Duration::from_secs(10), Arc::new(Metrics::default())).unwrap();
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "echo '{\"missing\": oops}'"]);
        let result = nix.json::<LookupResult>("evaluate", command, nix.deadline()).await;
        let err = match result {
            Ok(_) => panic!("garbage parsed"),
            Err(e) => e.or(NixError::Evaluation),
        };
        assert!(matches!(&err, NixError::Output { step: "evaluate", source } if source.is_syntax()), "{err:?}");
        assert!(err.to_string().starts_with("unexpected output from nix: evaluate: expected value at line 1"), "{err}");
    }
}
