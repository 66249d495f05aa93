//! Resolving an image's names to derivations, and saying precisely why a name cannot be
//! used.
//!
//! One evaluation (nix/lookup.nix, mode `resolve`) classifies every name: found, missing, or
//! unusable. A name is unusable when it is not a package, or when forcing it throws, which
//! is how nixpkgs refuses unfree, broken and insecure packages and removed aliases;
//! `builtins.tryEval` catches the throw (so the other names are still resolved) but drops its
//! text. For those names only, each is evaluated again alone (mode `single`) without tryEval,
//! and nixpkgs' own reason is read from Nix's error ([`super::diagnostic`]).
//!
//! Some errors cannot be caught by tryEval: `abort`, infinite recursion, a missing file, a
//! type error. One of them anywhere fails the whole evaluation, and Nix's message does not
//! say which name led there. Then the package set is evaluated alone (mode `probe`): if it
//! fails, the source itself is broken (a tag naming no commit, a syntax error) and that is
//! the answer. Otherwise each name is evaluated alone, concurrently on spare Nix job slots,
//! and the culprits are reported with their messages, next to the names that are fine.
//! A store Nix cannot write fails any evaluation that instantiates: that is the server's
//! fault ([`super::store_access`]), never a name's.
//! None of this extra work happens for an image whose names all resolve.

use super::diagnostic::final_error;
use super::error::{NixError, PackageFailure, PackageProblems, Step};
use super::store_access::unwritable_store;
use super::{Job, Nix, ProcessError, ResolvedPackage, StorePath, failure};
use crate::image::{ALWAYS_INCLUDED, PackageName, SHELL_PACKAGES};
use crate::sbom::PathMeta;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The trace line nix/lookup.nix prints before forcing a name without tryEval (as Nix prints
/// it; the text alone also appears in the code frames of Nix's traces).
const FORCING_MARKER: &str = "trace: nixery-lookup: forcing without tryEval";

/// Whether nix/lookup.nix got as far as forcing the name without tryEval: then what failed
/// was a throw the package set meant (a refusal), not an uncatchable error.
fn was_forced(stderr: &str) -> bool {
    stderr.lines().any(|l| l.trim() == FORCING_MARKER)
}

/// One name, as nix/lookup.nix classified it.
#[derive(Debug, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Lookup {
    Ok(ResolvedPackage),
    Missing {
        name: PackageName,
        /// Where it was looked for (a flake's outputs); empty for a package set.
        #[serde(rename = "lookedIn", default)]
        looked_in: Vec<Place>,
    },
    Unusable {
        name: PackageName,
        reason: Option<String>,
    },
}

/// A place a name was looked for, and whether the source has it (see nix/lookup.nix).
#[derive(Debug, Deserialize)]
struct Place {
    #[serde(rename = "where")]
    at: String,
    present: bool,
}

fn places(looked_in: Vec<Place>) -> Vec<(String, bool)> {
    looked_in.into_iter().map(|p| (p.at, p.present)).collect()
}

/// What mode `resolve` prints: each name's classification, and for the SBOM the meta of the
/// derivations it reached (by output path) and the revision's commit time.
#[derive(Debug, Deserialize)]
struct Resolution {
    packages: Vec<Lookup>,
    #[serde(default)]
    meta: BTreeMap<String, Option<PathMeta>>,
    #[serde(default)]
    revision: RevisionFacts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevisionFacts {
    #[serde(default)]
    last_modified: Option<i64>,
}

/// The names of an image resolved, with what the evaluation learnt for its SBOM.
#[derive(Debug)]
pub(super) struct Resolved {
    pub packages: Vec<ResolvedPackage>,
    /// Meta of every output path the evaluation reached (paths Nix would not accept are left
    /// out).
    pub meta: BTreeMap<StorePath, PathMeta>,
    /// The package set revision's commit time, if the fetcher knows it.
    pub committed: Option<i64>,
}

/// What evaluating one name alone found.
#[derive(Debug)]
enum Alone {
    Classified(Lookup),
    /// The package set refused it (a throw): its reason.
    Refused(String),
    /// Its evaluation fails uncatchably: Nix's message.
    Failing(String),
}

impl PackageProblems {
    /// Files what one name alone turned out to be.
    fn add(&mut self, name: PackageName, alone: Alone) {
        let failure = |reason: String| PackageFailure { name: name.clone(), reason };
        match alone {
            Alone::Classified(Lookup::Ok(_)) => self.fine.push(name),
            Alone::Classified(Lookup::Missing { looked_in, .. }) => self.add_missing(name, places(looked_in)),
            Alone::Classified(Lookup::Unusable { reason, .. }) => self
                .unusable
                .push(failure(reason.unwrap_or_else(|| "its evaluation fails (Nix gave no reason)".to_owned()))),
            Alone::Refused(reason) => self.unusable.push(failure(reason)),
            Alone::Failing(message) => self.failing.push(failure(message)),
        }
    }

    fn sort(&mut self) {
        self.missing.sort();
        self.unusable.sort_by(|a, b| a.name.cmp(&b.name));
        self.failing.sort_by(|a, b| a.name.cmp(&b.name));
        self.fine.sort();
    }
}

/// Why a lookup evaluation gave no classification.
enum LookupError {
    /// Nix failed: its stderr, and the process error.
    Failed(String, ProcessError),
    Other(NixError),
}

impl Nix {
    /// The derivations of `names`, or what is wrong with them.
    pub(super) async fn resolve(&self, job: &Job<'_>, names: &BTreeSet<PackageName>) -> Result<Resolved, NixError> {
        let Resolution { packages: lookups, meta, revision } =
            match self.lookup::<Resolution>(job, Step::Evaluate, "resolve", names.iter()).await {
                Ok(resolution) => resolution,
                Err(LookupError::Failed(stderr, e)) => return Err(self.diagnose(job, names, &stderr, e).await),
                Err(LookupError::Other(e)) => return Err(e),
            };
        let mut problems = PackageProblems::default();
        let mut resolved = Vec::new();
        let mut unexplained = Vec::new();
        for lookup in lookups {
            match lookup {
                Lookup::Ok(p) => resolved.push(p),
                Lookup::Missing { name, looked_in } => problems.add_missing(name, places(looked_in)),
                Lookup::Unusable { name, reason: Some(reason) } => {
                    problems.unusable.push(PackageFailure { name, reason: job.scrub.message(&reason) })
                }
                Lookup::Unusable { name, reason: None } => unexplained.push(name),
            }
        }
        if problems.is_empty() && unexplained.is_empty() {
            let meta =
                meta.into_iter().filter_map(|(path, meta)| Some((StorePath::parse(&path).ok()?, meta?))).collect();
            return Ok(Resolved { packages: resolved, meta, committed: revision.last_modified });
        }
        for (name, alone) in self.each_alone(job, unexplained).await? {
            problems.add(name, alone);
        }
        problems.fine.extend(resolved.into_iter().map(|p| p.name));
        problems.sort();
        Err(NixError::Packages(problems))
    }

    /// The whole evaluation failed (`stderr`): the package set itself, or which names.
    async fn diagnose(&self, job: &Job<'_>, names: &BTreeSet<PackageName>, stderr: &str, e: ProcessError) -> NixError {
        match self.lookup::<bool>(job, Step::Evaluate, "probe", std::iter::empty()).await {
            Ok(_) => {}
            Err(LookupError::Failed(stderr, _)) => {
                return NixError::PackageSet {
                    message: super::flake::with_lock_hint(job.source, self.reason(job, &stderr)),
                };
            }
            Err(LookupError::Other(e)) => return e,
        }
        let alone = match self.each_alone(job, names.iter().cloned().collect()).await {
            Ok(alone) => alone,
            Err(e) => return e,
        };
        let mut problems = PackageProblems::default();
        for (name, alone) in alone {
            problems.add(name, alone);
        }
        if problems.is_empty() {
            // Every name is fine alone: not a package's fault that can be named.
            tracing::warn!(error = %self.reason(job, stderr), "the evaluation failed, but no name fails alone");
            return failure(Step::Evaluate, e, &job.scrub);
        }
        problems.sort();
        NixError::Packages(problems)
    }

    /// Evaluates each name alone: one at a time on the image's own slot, more at once on
    /// spare slots (never waiting for one: see jobs.rs).
    async fn each_alone(&self, job: &Job<'_>, names: Vec<PackageName>) -> Result<Vec<(PackageName, Alone)>, NixError> {
        let mut queue: VecDeque<PackageName> = names.into();
        let mut running = FuturesUnordered::new();
        let mut own_slot_free = true;
        let mut results = Vec::new();
        loop {
            while let Some(name) = queue.pop_front() {
                let spare = if own_slot_free {
                    own_slot_free = false;
                    None
                } else if let Some(permit) = self.jobs.spare() {
                    Some(permit)
                } else {
                    queue.push_front(name);
                    break;
                };
                running.push(async move {
                    let on_own_slot = spare.is_none();
                    let result = self.alone(job, &name).await;
                    drop(spare);
                    (on_own_slot, name, result)
                });
            }
            let Some((on_own_slot, name, result)) = running.next().await else { break };
            own_slot_free |= on_own_slot;
            results.push((name, result?));
        }
        Ok(results)
    }

    /// Evaluates one name alone (mode `single`).
    async fn alone(&self, job: &Job<'_>, name: &PackageName) -> Result<Alone, NixError> {
        match self.lookup::<Vec<Lookup>>(job, Step::EvaluateEach, "single", std::iter::once(name)).await {
            Ok(mut lookups) if lookups.len() == 1 => Ok(Alone::Classified(lookups.remove(0))),
            Ok(lookups) => Err(NixError::Output {
                step: Step::EvaluateEach,
                source: serde::de::Error::invalid_length(lookups.len(), &"one result"),
            }),
            Err(LookupError::Failed(stderr, _)) if was_forced(&stderr) => Ok(Alone::Refused(self.reason(job, &stderr))),
            Err(LookupError::Failed(stderr, _)) => Ok(Alone::Failing(self.reason(job, &stderr))),
            Err(LookupError::Other(e)) => Err(e),
        }
    }

    /// Nix's final error in `stderr`, without server paths.
    fn reason(&self, job: &Job<'_>, stderr: &str) -> String {
        final_error(stderr)
            .map(|m| job.scrub.message(&m))
            .unwrap_or_else(|| "Nix failed without an error message".to_owned())
    }

    /// Runs nix/lookup.nix in `mode` for `names`.
    async fn lookup<T: serde::de::DeserializeOwned>(
        &self,
        job: &Job<'_>,
        step: Step,
        mode: &str,
        names: impl Iterator<Item = &PackageName>,
    ) -> Result<T, LookupError> {
        let names = serde_json::to_string(&names.collect::<Vec<_>>()).expect("names serialise");
        let config = self.policy.nixpkgs_config.nix_arg();
        // What the registry adds to images by itself: a flake has it in its legacyPackages.
        let added: Vec<&str> = SHELL_PACKAGES.iter().chain(&ALWAYS_INCLUDED).copied().collect();
        let added = serde_json::to_string(&added).expect("names serialise");
        let args = [
            ("packages", names.as_str()),
            ("mode", mode),
            ("nixpkgsConfig", config.as_str()),
            ("addedNames", added.as_str()),
        ];
        let command = self.eval("lookup.nix", super::Derivations::Write, job.source, job.system, &args);
        match self.run(step, command, job.deadline).await {
            Ok(out) => serde_json::from_slice(&out.stdout)
                .map_err(|source| LookupError::Other(NixError::Output { step, source })),
            Err(e) => match &e {
                // A store Nix cannot write fails every name alike: not theirs to carry.
                ProcessError::Failed { stderr, .. } if unwritable_store(&stderr.text()).is_none() => {
                    Err(LookupError::Failed(stderr.text(), e))
                }
                _ => Err(LookupError::Other(failure(step, e, &job.scrub))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_results_as_nix_lookup_prints_them() {
        let json = r#"[
            {"attr":"curl.dev","drvPath":"/nix/store/nr2cival8ddw7kibdvr97sfm2dnrj068-curl-8.0.drv","name":"curl.dev",
             "output":"dev","outputs":["/nix/store/nzlv168b2h0y5wfn1235kjxw5p1zrqxx-curl-8.0-dev"],"status":"ok"},
            {"name":"lib","reason":"not a package: it is an attribute set","status":"unusable"},
            {"name":"nonfree","reason":null,"status":"unusable"},
            {"name":"nosuch","status":"missing"},
            {"name":"cacert","status":"missing","lookedIn":[{"where":"legacyPackages.x86_64-linux","present":false}]}]"#;
        let lookups: Vec<Lookup> = serde_json::from_str(json).unwrap();
        assert!(matches!(&lookups[0], Lookup::Ok(p) if p.output == "dev" && p.attr == "curl.dev"));
        assert!(matches!(&lookups[1], Lookup::Unusable { reason: Some(r), .. } if r.starts_with("not a package")));
        assert!(matches!(&lookups[2], Lookup::Unusable { reason: None, .. }));
        assert!(
            matches!(&lookups[3], Lookup::Missing { name, looked_in } if name.as_str() == "nosuch" && looked_in.is_empty())
        );
        assert!(matches!(&lookups[4], Lookup::Missing { looked_in, .. } if !looked_in[0].present));
    }

    #[test]
    fn a_resolution_carries_meta_by_output_path_and_the_commit_time() {
        let json = r#"{"packages":[],"revision":{"lastModified":1600000000},
            "meta":{"/nix/store/nzlv168b2h0y5wfn1235kjxw5p1zrqxx-curl-8.0-dev":{"output":"dev","pname":"curl",
                "version":"8.0","licenses":[{"spdxId":"curl","name":"curl"},{"spdxId":null,"name":"unfree"}],
                "homepage":"https://curl.se","description":null},
              "/nix/store/nzlv168b2h0y5wfn1235kjxw5p1zrqxx-odd":null}}"#;
        let r: Resolution = serde_json::from_str(json).unwrap();
        assert_eq!(r.revision.last_modified, Some(1_600_000_000));
        let dev = r.meta["/nix/store/nzlv168b2h0y5wfn1235kjxw5p1zrqxx-curl-8.0-dev"].as_ref().unwrap();
        assert_eq!((dev.output.as_deref(), dev.licenses.len()), (Some("dev"), 2));
        assert_eq!(dev.licenses[1].spdx_id, None);
        assert!(r.meta["/nix/store/nzlv168b2h0y5wfn1235kjxw5p1zrqxx-odd"].is_none(), "meta that threw");
    }

    #[test]
    fn a_refusal_is_told_by_the_trace_line_not_by_code_frames() {
        let refused = "trace: nixery-lookup: forcing without tryEval\nerror:\n       error: unfree\n";
        assert!(was_forced(refused));
        let aborted = "error:\n       … while calling 'single'\n         at /tmp/x/lookup.nix:99:3:\n\
                          99|   then builtins.trace \"nixery-lookup: forcing without tryEval\" (resolveWith true name)\n\
                       error: evaluation aborted with the following error message: 'no'\n";
        assert!(!was_forced(aborted));
    }

    #[test]
    fn names_alone_are_filed_by_what_they_turned_out_to_be() {
        let name = |s: &str| PackageName::parse(s).unwrap();
        let mut problems = PackageProblems::default();
        problems.add(name("zed"), Alone::Failing("infinite recursion encountered".into()));
        problems.add(name("hello"), Alone::Classified(Lookup::Missing { name: name("hello"), looked_in: vec![] }));
        problems.add(name("nonfree"), Alone::Refused("unfree".into()));
        problems.add(name("aaa"), Alone::Failing("abort".into()));
        problems.sort();
        assert_eq!(problems.failing.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["aaa", "zed"]);
        assert_eq!(problems.missing, vec![name("hello")]);
        assert_eq!(problems.unusable[0].reason, "unfree");
    }
}
