//! Realising an image's packages: with local builds off a dry run first, which refuses the
//! image if anything would be built ([`super::dry_run`] reads the plan); then one
//! `nix-store --realise` of every `drv!output`, whose failure is read by
//! [`super::realise_failure`] and becomes the error of what matters to the user: a refused
//! substitute, a failed build (its derivation and last log lines), a build Nix will not run
//! here ([`super::refusal`], [`super::unbuildable`]), a substitute a cache did not deliver, or
//! a store Nix cannot write ([`super::store_access`]).
//!
//! Refusals list the requested packages' own derivations and outputs first (in request
//! order), then their dependencies by name, and count those: a closure can need hundreds.

use super::attribution::packages_concerned;
use super::dry_run::parse_dry_run;
use super::error::{BuildFailure, NixError, Step};
use super::realise_failure::{Cause, cache_for_display, parse_realise_failure};
use super::refusal::Refusal;
use super::store_access::unwritable_store;
use super::substitutes::{Dependencies, NotSubstitutable, Substitute, UntrustedSignature};
use super::unbuildable::Unbuildable;
use super::{BuildRoots, Job, Nix, ProcessError, ResolvedPackage, StorePath, failure};
use std::collections::BTreeSet;
use tokio::process::Command;

/// What `nix-store --realise` is given: `drv!output` for each package, so only the outputs
/// the image holds are built or fetched (not a package's man pages when its binaries are
/// asked for).
fn targets(packages: &[ResolvedPackage]) -> BTreeSet<String> {
    packages.iter().map(|p| format!("{}!{}", p.drv_path, p.output)).collect()
}

/// `paths` with those in `own` first (in `own`'s order), then the others by name: and how
/// many others there are.
fn own_first(paths: &BTreeSet<StorePath>, own: &[&StorePath]) -> (Vec<StorePath>, usize) {
    let mut first: Vec<StorePath> = Vec::new();
    for path in own {
        if paths.contains(*path) && !first.contains(path) {
            first.push((*path).clone());
        }
    }
    let mut rest: Vec<StorePath> = paths.iter().filter(|p| !first.contains(p)).cloned().collect();
    rest.sort_by(|a, b| a.name().cmp(b.name()).then_with(|| a.cmp(b)));
    let dependencies = rest.len();
    first.extend(rest);
    (first, dependencies)
}

/// The requested packages' derivations, in request order.
fn own_derivations(packages: &[ResolvedPackage]) -> Vec<&StorePath> {
    packages.iter().map(|p| &p.drv_path).collect()
}

/// The requested packages' outputs, in request order.
fn own_outputs(packages: &[ResolvedPackage]) -> Vec<&StorePath> {
    packages.iter().flat_map(|p| &p.outputs).collect()
}

impl Nix {
    /// With local builds off: the dry run, and a refusal naming what no cache has.
    pub(super) async fn check_caches(&self, job: &Job<'_>, packages: &[ResolvedPackage]) -> Result<(), NixError> {
        let mut dry_run = Command::new("nix-store");
        dry_run.args(["--realise", "--dry-run"]).args(targets(packages));
        let out = self.step(Step::CheckCaches, dry_run, job.deadline, &job.scrub).await?;
        let plan = parse_dry_run(&out.stderr.text());
        if plan.will_build.is_empty() && plan.unknown.is_empty() {
            return Ok(());
        }
        let concerned = packages_concerned(packages, &plan.will_build, &plan.unknown).await;
        let (builds, dependency_builds) = own_first(&plan.will_build, &own_derivations(packages));
        let (unknown, dependency_unknown) = own_first(&plan.unknown, &own_outputs(packages));
        Err(NixError::NotSubstitutable(NotSubstitutable {
            packages: concerned,
            builds,
            unknown,
            dependencies: Dependencies { builds: dependency_builds, unknown: dependency_unknown },
            ..NotSubstitutable::default()
        }))
    }

    /// Builds or fetches the packages; with local builds off, `--max-jobs 0` makes sure
    /// nothing is built even where the dry run was optimistic (it checks no signatures).
    /// With `roots`, the outputs are registered as GC roots there as they become valid
    /// ([`super::roots`]).
    pub(super) async fn build(
        &self,
        job: &Job<'_>,
        packages: &[ResolvedPackage],
        roots: Option<&BuildRoots>,
    ) -> Result<(), NixError> {
        let mut realise = Command::new("nix-store");
        // The log is quoted in the error instead of streamed (`last N log lines:`).
        realise.args(["--realise", "--no-build-output"]);
        if let Some(roots) = roots {
            realise.arg("--add-root").arg(roots.link());
        }
        if !self.policy.local_builds {
            realise.args(["--max-jobs", "0"]);
        }
        realise.args(targets(packages));
        let e = match self.run(Step::Realise, realise, job.deadline).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let ProcessError::Failed { stderr, .. } = &e else { return Err(failure(Step::Realise, e, &job.scrub)) };
        let text = stderr.text();
        if unwritable_store(&text).is_some() {
            return Err(failure(Step::Realise, e, &job.scrub));
        }
        let failed = parse_realise_failure(&text);
        let copied = failed.copying.clone();
        let cache_error = failed.cache_error.as_deref().map(|m| job.scrub.message(m));
        match failed.cause() {
            Cause::Untrusted(untrusted) => {
                let paths: BTreeSet<StorePath> = untrusted.iter().map(|(p, _)| p.clone()).collect();
                let concerned = packages_concerned(packages, &BTreeSet::new(), &paths).await;
                let substitutes = untrusted
                    .into_iter()
                    .map(|(path, url)| Substitute { path, cache: cache_for_display(&url) })
                    .collect();
                Err(NixError::UntrustedSignature(UntrustedSignature { packages: concerned, substitutes }))
            }
            Cause::Build(first) => {
                let drvs = BTreeSet::from([first.derivation.clone()]);
                let concerned = packages_concerned(packages, &drvs, &BTreeSet::new()).await;
                let log = if first.log.is_empty() { stderr.tail() } else { first.log };
                Err(NixError::Build(BuildFailure {
                    derivation: Some(first.derivation),
                    packages: concerned,
                    log_tail: log.iter().map(|l| job.scrub.log_line(l)).collect(),
                }))
            }
            // Local builds off: Nix built only because a substitute the dry run counted on
            // did not come.
            Cause::Refused(_) if !self.policy.local_builds => {
                let fetched = parse_dry_run(&text).will_fetch;
                let candidates = if copied.is_empty() { fetched } else { copied.into_iter().collect() };
                let mut undelivered = BTreeSet::new();
                for path in candidates {
                    if tokio::fs::symlink_metadata(path.as_path()).await.is_err() {
                        undelivered.insert(path);
                    }
                }
                let concerned = packages_concerned(packages, &BTreeSet::new(), &undelivered).await;
                let (undelivered, _) = own_first(&undelivered, &own_outputs(packages));
                Err(NixError::NotSubstitutable(NotSubstitutable {
                    packages: concerned,
                    undelivered,
                    cache_error,
                    ..NotSubstitutable::default()
                }))
            }
            Cause::Refused(refusal) => {
                let planned = parse_dry_run(&text).will_build;
                let concerned = match &refusal {
                    Refusal::Machine { derivation, .. } | Refusal::NoBuilds { derivation: Some(derivation) } => {
                        packages_concerned(packages, &BTreeSet::from([derivation.clone()]), &BTreeSet::new()).await
                    }
                    Refusal::NoBuilds { derivation: None } | Refusal::NoRemoteFits => {
                        packages_concerned(packages, &planned, &BTreeSet::new()).await
                    }
                };
                let (planned, _) = own_first(&planned, &own_derivations(packages));
                Err(NixError::Unbuildable(Unbuildable::new(refusal, &planned, concerned)))
            }
            Cause::Other => Err(failure(Step::Realise, e, &job.scrub)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packages_own_paths_come_first_then_dependencies_by_name() {
        let path = |hash: char, name: &str| {
            StorePath::parse(&format!("/nix/store/{}-{name}", hash.to_string().repeat(32))).unwrap()
        };
        let (own_b, own_a, dep_z, dep_c) =
            (path('0', "b.drv"), path('9', "a.drv"), path('1', "z.drv"), path('a', "c.drv"));
        let paths = BTreeSet::from([own_b.clone(), own_a.clone(), dep_z.clone(), dep_c.clone()]);
        let unrelated = path('2', "x.drv");
        let (ordered, dependencies) = own_first(&paths, &[&own_a, &unrelated, &own_b, &own_a]);
        assert_eq!(ordered, [own_a, own_b, dep_c, dep_z]);
        assert_eq!(dependencies, 2);
    }
}
