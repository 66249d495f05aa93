//! Why Nix could not give an image: one enum whose variants say what failed, with the data a
//! client (and the registry's error mapping) needs.
//!
//! Failures of the requested image: names the package set does not have, or refuses (with
//! nixpkgs' reason), or whose evaluation fails (with the culprit's message and the names
//! that are fine); a package set that does not evaluate at all; a failed build (the failing
//! derivation and its last log lines); packages no binary cache has while local builds are
//! off; substitutes signed by no trusted key; a timeout. Then the server's own troubles: a Nix
//! command that fails in a way not classified here, output that cannot be read, or no Nix job
//! slot in time.
//!
//! Every `Display` is one informative line that names no file of the server (messages from
//! Nix pass through [`super::diagnostic::Scrubber`] before they get here); long lists are
//! cut in the message and complete in the fields.

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
}

impl PackageProblems {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unusable.is_empty() && self.failing.is_empty()
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
            parts.push(format!("packages not found: {}", self.missing.join(", ")));
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
/// How many paths a message lists before "and N more".
const MESSAGE_PATHS: usize = 5;

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

/// What no binary cache has, with local builds off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotSubstitutable {
    /// The requested packages concerned.
    pub packages: Vec<PackageName>,
    /// Derivations Nix would have to build.
    pub builds: Vec<StorePath>,
    /// Paths Nix could neither fetch nor build (outputs that substitutable paths refer to).
    pub unknown: Vec<StorePath>,
}

impl fmt::Display for NotSubstitutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false)")?;
        if !self.packages.is_empty() {
            write!(f, ": {}", self.packages.join(", "))?;
        }
        if !self.builds.is_empty() {
            write!(f, "; would have to build {}", paths(&self.builds))?;
        }
        if !self.unknown.is_empty() {
            write!(f, "; no cache has {}", paths(&self.unknown))?;
        }
        Ok(())
    }
}

/// A substitute Nix refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Substitute {
    pub path: StorePath,
    /// The binary cache that offered it (credentials removed).
    pub cache: String,
}

/// Substitutes signed by no key in `trusted-public-keys`, with local builds off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UntrustedSignature {
    pub packages: Vec<PackageName>,
    pub substitutes: Vec<Substitute>,
}

impl fmt::Display for UntrustedSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not signed by a trusted key (trusted-public-keys)")?;
        if !self.packages.is_empty() {
            write!(f, ": {}", self.packages.join(", "))?;
        }
        let shown: Vec<String> =
            self.substitutes.iter().take(MESSAGE_PATHS).map(|s| format!("{} from {}", s.path, s.cache)).collect();
        if !shown.is_empty() {
            write!(f, "; refused {}", shown.join(", "))?;
        }
        if self.substitutes.len() > MESSAGE_PATHS {
            write!(f, " and {} more", self.substitutes.len() - MESSAGE_PATHS)?;
        }
        f.write_str("; local builds are off (NIXERY_LOCAL_BUILDS=false)")
    }
}

/// Up to [`MESSAGE_PATHS`] paths, then how many more.
fn paths(list: &[StorePath]) -> String {
    let mut text = list.iter().take(MESSAGE_PATHS).map(StorePath::as_str).collect::<Vec<_>>().join(", ");
    if list.len() > MESSAGE_PATHS {
        text.push_str(&format!(" and {} more", list.len() - MESSAGE_PATHS));
    }
    text
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
            | NixError::Timeout { .. }
            | NixError::Refused(_) => true,
            NixError::Busy(_) | NixError::Command { .. } | NixError::Output { .. } | NixError::Graph(_) => false,
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
            NixError::Timeout { step, seconds } => Ok(json!({ "step": step, "seconds": seconds })),
            NixError::Busy(b) => Ok(json!({ "waited_seconds": b.waited.as_secs(), "limit": b.limit })),
            NixError::Command { step, log_tail, .. } => Ok(json!({ "step": step, "log": log_tail })),
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

    fn name(s: &str) -> PackageName {
        PackageName::parse(s).unwrap()
    }

    fn sp(name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", "a".repeat(32))).unwrap()
    }

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

    #[test]
    fn long_path_lists_are_cut_in_the_message_only() {
        let builds: Vec<StorePath> = (0..8).map(|i| sp(&format!("dep-{i}.drv"))).collect();
        let n = NotSubstitutable { packages: vec![name("fresh")], builds: builds.clone(), unknown: vec![] };
        let message = n.to_string();
        assert!(message.starts_with(
            "not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false): fresh; would have to build "
        ));
        assert!(message.ends_with(" and 3 more"), "{message}");
        assert_eq!(NixError::NotSubstitutable(n).detail()["builds"].as_array().unwrap().len(), 8);
        let u = UntrustedSignature {
            packages: vec![name("fresh")],
            substitutes: vec![Substitute { path: sp("fresh"), cache: "http://cache.example".into() }],
        };
        assert_eq!(
            u.to_string(),
            format!(
                "not signed by a trusted key (trusted-public-keys): fresh; refused {} from http://cache.example; \
                 local builds are off (NIXERY_LOCAL_BUILDS=false)",
                sp("fresh")
            )
        );
    }
}
