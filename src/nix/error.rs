//! Why Nix could not give an image: one enum whose variants say what failed, with the data a
//! client (and the registry's error mapping) needs.
//!
//! Failures of the requested image: names the package set does not have, or refuses (with
//! nixpkgs' reason), or whose evaluation fails (with the culprit's message and the names
//! that are fine); a package set that does not evaluate at all; a failed build (the failing
//! derivation and its last log lines); packages no binary cache has while local builds are
//! off and substitutes signed by no trusted key ([`super::substitutes`]); a build this server's Nix will not run (another
//! system, missing system features, no builds at all: [`super::unbuildable`]); a timeout.
//! Then the server's own troubles: a store Nix cannot write ([`super::store_access`]), a Nix
//! command that fails in a way not classified here, output that cannot be read, or no Nix job
//! slot in time.
//!
//! Every `Display` is one informative line that names no file of the server (messages from
//! Nix pass through [`super::diagnostic::Scrubber`] before they get here); long lists are
//! cut in the message and complete in the fields.

use super::substitutes::{NotSubstitutable, UntrustedSignature};
use super::unbuildable::Unbuildable;
use super::{GraphError, ProcessError, StorePath};
use crate::image::PackageName;
use serde::Serialize;
use std::fmt;

/// The Nix step that failed or ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Resolving the names and instantiating the derivations.
    Evaluate,
    /// Evaluating names one at a time (to find the culprit, or nixpkgs' reason).
    EvaluateEach,
    /// `nix-store --realise --dry-run` (NIXERY_LOCAL_BUILDS=false).
    CheckCaches,
    /// Building or fetching the packages.
    Realise,
    /// Reading the runtime graph.
    QueryGraph,
    /// popcount: listing the package set's attributes.
    ListAttributes,
    /// popcount: evaluating a batch of attributes' outputs.
    EvaluateOutputs,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Evaluate => "evaluating the packages",
            Step::EvaluateEach => "evaluating the packages one at a time",
            Step::CheckCaches => "checking the binary caches",
            Step::Realise => "realising the packages",
            Step::QueryGraph => "querying the runtime graph",
            Step::ListAttributes => "listing the package set's attributes",
            Step::EvaluateOutputs => "evaluating the outputs of a batch of attributes",
        })
    }
}

/// A package name and what Nix said about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageFailure {
    pub name: PackageName,
    pub reason: String,
}

/// The names of an image that cannot be used, and those that can.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PackageProblems {
    /// Not in the package set.
    pub missing: Vec<PackageName>,
    /// In the package set but refused: nixpkgs' reason (unfree, broken, insecure, a removed
    /// alias's text), or not a package at all.
    pub unusable: Vec<PackageFailure>,
    /// Their evaluation fails with an error `tryEval` cannot catch (abort, infinite
    /// recursion, a missing file, a type error), with Nix's message.
    pub failing: Vec<PackageFailure>,
    /// The requested names that evaluate fine.
    pub fine: Vec<PackageName>,
    /// Where the missing names were looked for, when the source has several places for them
    /// (a flake's outputs); empty for a package set, whose names are its own attributes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub looked_in: Vec<LookedIn>,
}

/// Missing names that were looked for in the same places.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LookedIn {
    pub names: Vec<PackageName>,
    /// The places, in the order they were searched (`packages.x86_64-linux`, …).
    pub places: Vec<String>,
    /// Those of the places the source does not have.
    pub absent: Vec<String>,
}

impl PackageProblems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unusable.is_empty() && self.failing.is_empty()
    }

    /// Files a missing name, with where it was looked for (`places`, each with whether the
    /// source has it; none for a package set).
    pub fn add_missing(&mut self, name: PackageName, places: Vec<(String, bool)>) {
        self.missing.push(name.clone());
        if places.is_empty() {
            return;
        }
        let absent: Vec<String> = places.iter().filter(|(_, present)| !present).map(|(p, _)| p.clone()).collect();
        let places: Vec<String> = places.into_iter().map(|(p, _)| p).collect();
        match self.looked_in.iter_mut().find(|l| l.places == places && l.absent == absent) {
            Some(group) => group.names.push(name),
            None => self.looked_in.push(LookedIn { names: vec![name], places, absent }),
        }
    }

    /// `packages not found: …`, each name with where it was looked for, if that is known.
    fn not_found(&self) -> String {
        let mut parts: Vec<String> = self.looked_in.iter().map(LookedIn::to_string).collect();
        let elsewhere: Vec<&str> = self
            .missing
            .iter()
            .filter(|name| !self.looked_in.iter().any(|l| l.names.contains(name)))
            .map(PackageName::as_str)
            .collect();
        if !elsewhere.is_empty() {
            parts.insert(0, elsewhere.join(", "));
        }
        format!("packages not found: {}", parts.join("; "))
    }
}

impl fmt::Display for LookedIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (looked for in the flake's {}", self.names.join(", "), self.places.join(", then "))?;
        match self.absent.len() {
            0 => {}
            1 if self.places.len() == 1 => f.write_str(", which it does not have")?,
            _ => write!(f, ", and it has no {}", self.absent.join(" or "))?,
        }
        if self.absent.iter().any(|a| a.starts_with("legacyPackages.")) {
            f.write_str(": expose nixpkgs' packages there, e.g. legacyPackages = nixpkgs.legacyPackages")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for PackageProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_reasons = |list: &[PackageFailure]| {
            list.iter().map(|p| format!("{} ({})", p.name, p.reason)).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if !self.failing.is_empty() {
            parts.push(format!("evaluation fails for {}", with_reasons(&self.failing)));
        }
        if !self.missing.is_empty() {
            parts.push(self.not_found());
        }
        if !self.unusable.is_empty() {
            parts.push(format!("unusable packages: {}", with_reasons(&self.unusable)));
        }
        // Named only when the evaluation failed as a whole: then it is news that they are fine.
        if !self.failing.is_empty() && !self.fine.is_empty() {
            parts.push(format!("these evaluate fine: {}", self.fine.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A build that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildFailure {
    /// The derivation whose builder failed, when Nix named one.
    pub derivation: Option<StorePath>,
    /// The requested packages that need it.
    pub packages: Vec<PackageName>,
    /// Its last log lines (or the end of Nix's log).
    pub log_tail: Vec<String>,
}

/// How many log lines [`BuildFailure`]'s message carries (the fields carry all).
const MESSAGE_LOG_LINES: usize = 3;

impl fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.derivation {
            Some(drv) => write!(f, "building {drv} failed")?,
            None => f.write_str("building the packages failed")?,
        }
        if !self.packages.is_empty() {
            write!(f, " (needed by {})", self.packages.join(", "))?;
        }
        let last: Vec<&str> =
            self.log_tail.iter().rev().map(|l| l.trim()).filter(|l| !l.is_empty()).take(MESSAGE_LOG_LINES).collect();
        if !last.is_empty() {
            let last: Vec<&str> = last.into_iter().rev().collect();
            write!(f, "; last log lines: {}", last.join(" | "))?;
        }
        Ok(())
    }
}

/// Why Nix could not produce an image's packages (see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("{0}")]
    Packages(PackageProblems),
    #[error("the package set does not evaluate: {message}")]
    PackageSet { message: String },
    #[error("{0}")]
    Build(BuildFailure),
    #[error("{0}")]
    NotSubstitutable(NotSubstitutable),
    #[error("{0}")]
    UntrustedSignature(UntrustedSignature),
    #[error("{0}")]
    Unbuildable(Unbuildable),
    #[error("{step} timed out after {seconds} s (NIX_TIMEOUT)")]
    Timeout { step: Step, seconds: u64 },
    #[error(transparent)]
    Busy(#[from] super::jobs::Busy),
    /// A Nix command failed in a way not classified above; `summary` is Nix's final error.
    #[error("{step} failed: {summary}")]
    Command {
        step: Step,
        summary: String,
        log_tail: Vec<String>,
        #[source]
        source: ProcessError,
    },
    /// Nix cannot write its store (see [`super::store_access`]): the server's fault.
    #[error(
        "{step} failed: the Nix store cannot be written ({message}); the server's Nix needs /nix/store and \
         its database writable (a read-only root filesystem needs a volume at /nix)"
    )]
    StoreNotWritable { step: Step, message: String },
    #[error("unexpected output from nix: {step}: {source}")]
    Output { step: Step, source: serde_json::Error },
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Packages the registry's package policy refuses (checked after evaluation, before
    /// anything is realised).
    #[error(transparent)]
    Refused(#[from] crate::package_policy::PackagesRefused),
}

impl NixError {
    /// Whether the failure is the requested image's (its packages, their builds, the
    /// caches, its time) rather than the server's.
    pub fn is_image_failure(&self) -> bool {
        match self {
            NixError::Packages(_)
            | NixError::PackageSet { .. }
            | NixError::Build(_)
            | NixError::NotSubstitutable(_)
            | NixError::UntrustedSignature(_)
            | NixError::Unbuildable(_)
            | NixError::Timeout { .. }
            | NixError::Refused(_) => true,
            NixError::Busy(_)
            | NixError::Command { .. }
            | NixError::StoreNotWritable { .. }
            | NixError::Output { .. }
            | NixError::Graph(_) => false,
        }
    }

    /// The structured data of the failure, for the `detail` of an error answer.
    pub fn detail(&self) -> serde_json::Value {
        use serde_json::{json, to_value};
        let value = match self {
            NixError::Packages(p) => to_value(p),
            NixError::PackageSet { message } => Ok(json!({ "message": message })),
            NixError::Build(b) => Ok(json!({ "derivation": b.derivation, "packages": b.packages, "log": b.log_tail })),
            NixError::NotSubstitutable(n) => to_value(n),
            NixError::UntrustedSignature(u) => to_value(u),
            NixError::Unbuildable(u) => to_value(u),
            NixError::Timeout { step, seconds } => Ok(json!({ "step": step, "seconds": seconds })),
            NixError::Busy(b) => Ok(json!({ "waited_seconds": b.waited.as_secs(), "limit": b.limit })),
            NixError::Command { step, log_tail, .. } => Ok(json!({ "step": step, "log": log_tail })),
            NixError::StoreNotWritable { step, .. } => Ok(json!({ "step": step })),
            NixError::Output { step, .. } => Ok(json!({ "step": step })),
            NixError::Graph(_) => Ok(serde_json::Value::Null),
            NixError::Refused(r) => to_value(r),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nix::fixtures::{name, sp};

    #[test]
    fn package_problems_name_each_cause_and_the_fine_ones_after_a_failed_evaluation() {
        let missing_only =
            PackageProblems { missing: vec![name("nosuch")], fine: vec![name("hello")], ..Default::default() };
        assert_eq!(missing_only.to_string(), "packages not found: nosuch");
        let all = PackageProblems {
            missing: vec![name("nosuch")],
            unusable: vec![PackageFailure { name: name("nonfree"), reason: "unfree".into() }],
            failing: vec![PackageFailure { name: name("failing.aborting"), reason: "evaluation aborted".into() }],
            fine: vec![name("cacert"), name("hello")],
            ..Default::default()
        };
        assert_eq!(
            all.to_string(),
            "evaluation fails for failing.aborting (evaluation aborted); packages not found: nosuch; \
             unusable packages: nonfree (unfree); these evaluate fine: cacert, hello"
        );
        let detail = NixError::Packages(all).detail();
        assert_eq!(detail["unusable"][0]["reason"], "unfree");
        assert_eq!(detail["fine"][1], "hello");
    }

    #[test]
    fn missing_names_of_a_flake_say_where_they_were_looked_for() {
        let places = |list: &[(&str, bool)]| list.iter().map(|(p, ok)| (p.to_string(), *ok)).collect::<Vec<_>>();
        let mut p = PackageProblems::default();
        p.add_missing(
            name("nosuch"),
            places(&[("packages.x86_64-linux", true), ("legacyPackages.x86_64-linux", true)]),
        );
        assert_eq!(
            p.to_string(),
            "packages not found: nosuch (looked for in the flake's packages.x86_64-linux, then legacyPackages.x86_64-linux)"
        );
        let mut p = PackageProblems::default();
        for added in ["cacert", "iana-etc"] {
            p.add_missing(name(added), places(&[("legacyPackages.x86_64-linux", false)]));
        }
        p.add_missing(name("ours"), places(&[("packages.x86_64-linux", true), ("legacyPackages.x86_64-linux", false)]));
        assert_eq!(
            p.to_string(),
            "packages not found: cacert, iana-etc (looked for in the flake's legacyPackages.x86_64-linux, which it does \
             not have: expose nixpkgs' packages there, e.g. legacyPackages = nixpkgs.legacyPackages); ours (looked for \
             in the flake's packages.x86_64-linux, then legacyPackages.x86_64-linux, and it has no \
             legacyPackages.x86_64-linux: expose nixpkgs' packages there, e.g. legacyPackages = nixpkgs.legacyPackages)"
        );
        assert_eq!(p.missing.len(), 3);
        let detail = NixError::Packages(p).detail();
        assert_eq!(detail["looked_in"][0]["absent"][0], "legacyPackages.x86_64-linux");
        let mut plain = PackageProblems::default();
        plain.add_missing(name("nosuch"), Vec::new());
        assert_eq!(plain.to_string(), "packages not found: nosuch");
        assert!(NixError::Packages(plain).detail().get("looked_in").is_none());
    }

    #[test]
    fn build_failures_carry_the_derivation_and_the_last_lines() {
        let failure = BuildFailure {
            derivation: Some(sp("broken-1.0.drv")),
            packages: vec![name("broken")],
            log_tail: vec!["one".into(), "two".into(), "".into(), "three".into(), "error: four".into()],
        };
        assert_eq!(
            failure.to_string(),
            format!(
                "building {} failed (needed by broken); last log lines: two | three | error: four",
                sp("broken-1.0.drv")
            )
        );
    }
}
