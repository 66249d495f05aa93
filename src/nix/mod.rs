//! Talking to Nix: resolve an image's packages in the package set, realise them, and read
//! their runtime graph; and the queries `nixery popcount` needs.
//!
//! Three short commands per image build, never one per package: `nix-instantiate --eval`
//! of nix/lookup.nix (names in, derivations out, as JSON), one `nix-store --realise` of all
//! derivations together (Nix schedules the builds), and one `nix path-info --recursive` for
//! the closure with sizes and references. They share one deadline (`NIX_TIMEOUT`), and each is
//! stopped when the request that needs it is abandoned. With local builds off
//! (NIXERY_LOCAL_BUILDS=false) a dry run comes first, so an image that would need a build
//! is refused before anything is built ([`realise`]).
//!
//! Failures are worked out only on the failure path: which name broke the evaluation and
//! nixpkgs' own reason for refusing a package ([`lookup`]), which requested packages a failed
//! or missing store path concerns ([`attribution`]), Nix's message without the server's paths
//! ([`diagnostic`]). What comes out is a [`NixError`] whose variants say what failed.
//!
//! All Nix processes of the server share NIXERY_MAX_NIX_JOBS slots ([`jobs`]). The server
//! and its subcommands refuse to start with a Nix older than 2.18 ([`version`]).
//!
//! An image's evaluation instantiates its derivations (`--read-write-mode`: the `.drv` files
//! are written, as the build needs them); popcount's evaluations of a whole package set only
//! compute store paths and write no derivation ([`Derivations`]).

mod attribution;
mod child;
mod derivation;
mod diagnostic;
mod dry_run;
mod error;
mod exprs;
#[cfg(test)]
mod fixtures;
pub mod flake;
mod graph;
mod jobs;
mod lookup;
mod nar;
mod policy;
mod process;
mod realise;
mod realise_failure;
mod refusal;
mod roots;
mod source;
mod store_access;
mod store_path;
mod substitutes;
mod unbuildable;
pub mod version;

pub use child::{TERM_GRACE, stop_all};
pub use diagnostic::Scrubber;
pub use error::{BuildFailure, NixError, PackageFailure, PackageProblems, Step};
pub use graph::{GraphError, PathInfo, RuntimeGraph};
pub use jobs::Busy;
pub use policy::{NixPolicy, NixpkgsConfig, cores};
pub use process::ProcessError;
pub use roots::{BuildRoots, GcRoots};
pub use store_path::{StorePath, StorePathError};
pub use substitutes::{Dependencies, NotSubstitutable, Substitute, UntrustedSignature};
pub use unbuildable::{Need, Unbuildable};

use crate::image::{Arch, PackageName};
use crate::metrics::Metrics;
use crate::pkgsource::SourceRevision;
use exprs::Expressions;
use jobs::NixJobs;
use process::Output;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::process::Command;
use tokio::time::Instant;

/// A package as nix/lookup.nix resolved it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPackage {
    /// The name as requested.
    pub name: PackageName,
    /// The attribute path it resolved to, e.g. `bashInteractive` or `curl.dev`.
    pub attr: String,
    /// The output the name denotes (`curl` → its default output, `curl.dev` → `dev`).
    pub output: String,
    pub drv_path: StorePath,
    /// The output paths that go into the image (the one output's).
    pub outputs: Vec<StorePath>,
    /// `meta.mainProgram`: the program the package is run as (`nix run`), if it says.
    #[serde(default)]
    pub main_program: Option<String>,
    /// Where `attr` was found, for a source with several roots (a flake's
    /// `packages.x86_64-linux` or `legacyPackages.x86_64-linux`); `None` for a package set.
    #[serde(default)]
    pub root: Option<String>,
}

/// A top-level package of a package set, as nix/popcount.nix lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TopLevelPackage {
    pub attr: String,
    /// The paths of all its outputs (`out`, `dev`, `man`, ...).
    pub outputs: Vec<StorePath>,
}

/// Whether an evaluation writes the derivations it meets to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Derivations {
    /// Instantiate them (`--read-write-mode`): their `.drv` files are written, for a build.
    Write,
    /// Only compute their store paths (`--eval`'s default): nothing is added for them, which
    /// over a whole package set is tens of thousands of files.
    Compute,
}

/// The realised packages of one image and their closure.
#[derive(Clone, Debug)]
pub struct Realised {
    pub packages: Vec<ResolvedPackage>,
    pub graph: RuntimeGraph,
    /// What the evaluation learnt of the derivations behind the closure's paths (their meta,
    /// by output path), for the SBOM.
    pub meta: BTreeMap<StorePath, crate::sbom::PathMeta>,
    /// The package set revision's commit time (seconds since the epoch), if known.
    pub committed: Option<i64>,
    /// The GC roots that keep the closure in the store while it is archived ([`roots`]).
    pub roots: Option<std::sync::Arc<BuildRoots>>,
}

/// Runs Nix for the registry.
pub struct Nix {
    policy: NixPolicy,
    exprs: Expressions,
    jobs: NixJobs,
    metrics: Arc<Metrics>,
    roots: Option<GcRoots>,
}

/// One budget for a sequence of commands.
#[derive(Clone, Copy)]
struct Deadline {
    started: Instant,
    at: Instant,
}

/// One image's Nix work: what it is about, how its messages are cleaned, its deadline.
struct Job<'a> {
    source: &'a SourceRevision,
    system: &'static str,
    scrub: Scrubber,
    deadline: Deadline,
}

impl Nix {
    /// Writes the expressions to a private temporary directory.
    pub fn new(policy: NixPolicy, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let jobs = NixJobs::new(policy.max_jobs, metrics.clone());
        let roots = policy.gc_roots.as_deref().and_then(|dir| match GcRoots::open(dir) {
            Ok(roots) => Some(roots),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot make the GC roots directory (NIXERY_GC_ROOTS): store paths being archived are not \
                     protected from Nix's garbage collection"
                );
                None
            }
        });
        Ok(Nix { policy, exprs: Expressions::write()?, jobs, metrics, roots })
    }

    fn deadline(&self) -> Deadline {
        let started = Instant::now();
        Deadline { started, at: started + self.policy.timeout }
    }

    fn job<'a>(&self, source: &'a SourceRevision, arch: Arch) -> Job<'a> {
        Job { source, system: arch.nix_system(), scrub: Scrubber::for_source(source), deadline: self.deadline() }
    }

    /// `nix-instantiate --eval --strict --json` of `expr` with string arguments (for a flake,
    /// purely: [`flake::pure_evaluation`]).
    fn eval(
        &self,
        expr: &str,
        derivations: Derivations,
        source: &SourceRevision,
        system: &str,
        args: &[(&str, &str)],
    ) -> Command {
        let (src_type, src_args) = source::nix_args(source);
        let mut c = Command::new("nix-instantiate");
        c.args(["--eval", "--strict", "--json"]);
        if derivations == Derivations::Write {
            c.arg("--read-write-mode");
        }
        if source.is_flake() {
            flake::pure_evaluation(&mut c, &self.exprs, expr);
        } else {
            c.arg(self.exprs.path(expr));
        }
        c.args(["--argstr", "srcType", src_type])
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
        // One slot for all of this image's steps (see jobs.rs); the deadline starts with it.
        let _slot = self.jobs.turn(self.policy.timeout).await?;
        let job = self.job(source, arch);
        let lookup::Resolved { packages: resolved, meta, committed } = self.resolve(&job, packages).await?;
        // The package policy sees what the names resolved to, before anything is realised.
        self.policy.packages.check(&resolved)?;
        if !self.policy.local_builds {
            self.check_caches(&job, &resolved).await?;
        }
        let held = self.roots.as_ref().and_then(|r| {
            r.for_build().map_err(|e| tracing::warn!(error = %e, "cannot make a build's GC root directory")).ok()
        });
        self.build(&job, &resolved, held.as_ref()).await?;

        let roots: BTreeSet<StorePath> = resolved.iter().flat_map(|p| p.outputs.iter().cloned()).collect();
        let out = self.path_info(&roots, job.deadline, &job.scrub).await?;
        let graph = RuntimeGraph::from_path_info(&out, roots)?;
        Ok(Realised { packages: resolved, graph, meta, committed, roots: held.map(Arc::new) })
    }

    /// The sorted top-level attribute names of the package set.
    pub async fn attribute_names(&self, source: &SourceRevision) -> Result<Vec<String>, NixError> {
        let job = self.job(source, Arch::Amd64);
        let eval = self.eval("popcount.nix", Derivations::Compute, source, job.system, &[("mode", "names")]);
        self.json(Step::ListAttributes, eval, job.deadline, &job.scrub).await
    }

    /// The derivations among `attrs` and their output paths (others are skipped), evaluated
    /// without writing anything to the store.
    pub async fn top_level_outputs(
        &self,
        source: &SourceRevision,
        attrs: &[String],
    ) -> Result<Vec<TopLevelPackage>, NixError> {
        let job = self.job(source, Arch::Amd64);
        let names = serde_json::to_string(attrs).expect("strings serialise");
        let args = [("mode", "outputs"), ("names", names.as_str())];
        let eval = self.eval("popcount.nix", Derivations::Compute, source, job.system, &args);
        self.json(Step::EvaluateOutputs, eval, job.deadline, &job.scrub).await
    }

    async fn path_info(
        &self,
        paths: &BTreeSet<StorePath>,
        deadline: Deadline,
        scrub: &Scrubber,
    ) -> Result<Vec<u8>, NixError> {
        let mut query = Command::new("nix");
        query.args(["--extra-experimental-features", "nix-command", "path-info", "--json", "--closure-size"]);
        query.arg("--recursive").args(paths);
        Ok(self.step(Step::QueryGraph, query, deadline, scrub).await?.stdout)
    }

    /// Runs a step and decodes its JSON output.
    async fn json<T: DeserializeOwned>(
        &self,
        step: Step,
        command: Command,
        deadline: Deadline,
        scrub: &Scrubber,
    ) -> Result<T, NixError> {
        let out = self.step(step, command, deadline, scrub).await?;
        serde_json::from_slice(&out.stdout).map_err(|source| NixError::Output { step, source })
    }

    /// Runs a step whose failure is not analysed further.
    async fn step(
        &self,
        step: Step,
        command: Command,
        deadline: Deadline,
        scrub: &Scrubber,
    ) -> Result<Output, NixError> {
        self.run(step, command, deadline).await.map_err(|e| failure(step, e, scrub))
    }

    async fn run(&self, step: Step, command: Command, deadline: Deadline) -> Result<Output, ProcessError> {
        self.metrics.nix_invocations.inc();
        let _running = self.metrics.nix_processes.hold();
        tracing::info!(%step, "running nix");
        let started = std::time::Instant::now();
        let result = process::run(command, deadline.started, deadline.at).await;
        tracing::debug!(%step, seconds = started.elapsed().as_secs_f64(), ok = result.is_ok(), "nix step finished");
        result
    }
}

/// A failed step as the error it is, with Nix's message cleaned by `scrub`.
fn failure(step: Step, e: ProcessError, scrub: &Scrubber) -> NixError {
    match e {
        ProcessError::Timeout { seconds, .. } => NixError::Timeout { step, seconds },
        ProcessError::Failed { ref stderr, .. } => {
            let text = stderr.text();
            if let Some(message) = store_access::unwritable_store(&text) {
                return NixError::StoreNotWritable { step, message: scrub.message(&message) };
            }
            let summary = diagnostic::final_error(&text)
                .map(|m| scrub.message(&m))
                .unwrap_or_else(|| "Nix printed no error message".to_owned());
            let log_tail = stderr.tail().iter().map(|l| scrub.log_line(l)).collect();
            NixError::Command { step, summary, log_tail, source: e }
        }
        ProcessError::Spawn { .. } | ProcessError::Io { .. } => {
            NixError::Command { step, summary: e.to_string(), log_tail: Vec::new(), source: e }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[tokio::test]
    async fn output_that_is_not_json_names_the_step_and_keeps_the_parse_error() {
        let nix = Nix::new(NixPolicy::with_timeout(Duration::from_secs(10)), Arc::new(Metrics::default())).unwrap();
        let source = SourceRevision::Path { path: "/srv/pkgs".into(), generation: 1 };
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "echo '{\"missing\": oops}'"]);
        let job = nix.job(&source, Arch::Amd64);
        let result = nix.json::<serde_json::Value>(Step::Evaluate, command, job.deadline, &job.scrub).await;
        let err = result.expect_err("garbage parsed");
        assert!(matches!(&err, NixError::Output { step: Step::Evaluate, source } if source.is_syntax()), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("unexpected output from nix: evaluating the packages: expected value at line 1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failed_step_says_why_without_server_paths() {
        let nix = Nix::new(NixPolicy::with_timeout(Duration::from_secs(10)), Arc::new(Metrics::default())).unwrap();
        let source = SourceRevision::Path { path: "/srv/pkgs".into(), generation: 1 };
        let mut command = Command::new("/bin/sh");
        command.args([
            "-c",
            "echo 'error:' >&2; echo \"       error: path '/srv/pkgs/x.nix' or '/root/y' is bad\" >&2; exit 1",
        ]);
        let job = nix.job(&source, Arch::Amd64);
        let err = nix.step(Step::QueryGraph, command, job.deadline, &job.scrub).await.unwrap_err();
        assert_eq!(err.to_string(), "querying the runtime graph failed: path 'pkgs/x.nix' or '<path>' is bad");
        assert!(!err.is_image_failure());
        assert_eq!(nix.metrics.nix_invocations.get(), 1);
        assert_eq!(nix.metrics.nix_processes.get(), 0, "the process gauge is given back");
    }
}
