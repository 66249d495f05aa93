//! What Nix says when it will not run a build here: the derivation and what it requires, or
//! that it builds nothing at all. Read from the stderr of a failed `nix-store --realise`;
//! [`super::unbuildable`] makes the answer of it.
//!
//! Nix builds a derivation here only if the machine is its `system` (or lists it in
//! `extra-platforms`, as binfmt emulation does) and has every feature of its
//! `requiredSystemFeatures` (`kvm`, `big-parallel`, `nixos-test`, ... against the
//! `system-features` setting), unless a remote builder (`builders`) takes it. Otherwise
//! `nix-store --realise` stops with, in Nix 2.18 to 2.29 (local-derivation-goal.cc, later
//! derivation-builder.cc; captured from 2.26.3 here):
//!
//! ```text
//! error: a 'aarch64-linux' with features {} is required to build '/nix/store/…-native-1.0.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test, uid-range}
//! ```
//!
//! In Nix 2.30 to 2.33 (derivation-builder.cc):
//!
//! ```text
//! error: Cannot build '/nix/store/…-native-1.0.drv'.
//!        Reason: required system or feature not available
//!        Required system: 'aarch64-linux' with features {}
//!        Current system: 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test, uid-range}
//! ```
//!
//! From Nix 2.34 (derivation-building-goal.cc) one `Reason:` per cause, each with its data:
//! `Reason: platform mismatch` (`Required system: 'aarch64-linux'`, `Current system:
//! 'x86_64-linux'`), `Reason: missing system features` (`Required features: {kvm}`,
//! `Available features: {benchmark, big-parallel}`), `Reason: local builds are disabled
//! (max-jobs = 0)`.
//!
//! When Nix may build nothing here (`--max-jobs 0`, or `max-jobs = 0` in its configuration)
//! and no remote builder takes the build, Nix before 2.34 names no derivation: 2.18 and 2.19
//! print `error: unable to start any build; either increase '--max-jobs' or enable remote
//! builds.`, 2.20 and later `Unable to start any build;` and the rest on the lines after
//! `error:`; with remote builders none of which fits, the end reads `remote machines may not
//! have all required system features.` The derivations are then those of the plan the realise
//! printed first (`these 2 derivations will be built:`, read by [`super::realise`]).
//!
//! Nix colours some words (ANSI escapes) on a terminal only; they are removed anyway.

use super::StorePath;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::LazyLock;

/// What Nix said it will not build here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The derivation needs a machine this one is not: another system, or features it lacks.
    Machine { derivation: StorePath, required: Machine, current: Machine },
    /// Nix may build nothing here (max-jobs = 0) and no remote builder took the build; Nix
    /// 2.34 and later name the derivation.
    NoBuilds { derivation: Option<StorePath> },
    /// Nix may build nothing here and no remote builder has what the build requires.
    NoRemoteFits,
}

/// A system and its features, as Nix writes them (features `None` where it does not say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub system: Option<String>,
    pub features: Option<BTreeSet<String>>,
}

/// Reads a refusal of Nix's from the stderr of a failed realise (see the module docs).
pub fn parse_refusal(stderr: &str) -> Option<Refusal> {
    static CLASSIC: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"a '([^']+)' with features \{([^}]*)\} is required to build '(/nix/store/[^']+\.drv)', but I am a '([^']+)' with features \{([^}]*)\}",
        )
        .expect("regex")
    });
    static CANNOT_BUILD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"Cannot build '(/nix/store/[^']+\.drv)'").expect("regex"));
    static SYSTEM: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(Required|Current) system: '([^']+)'(?: with features \{([^}]*)\})?").expect("regex")
    });
    static FEATURES: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(Required|Available) features: \{([^}]*)\}").expect("regex"));
    let text = without_ansi(stderr);
    if let Some(c) = CLASSIC.captures(&text) {
        let derivation = StorePath::parse(&c[3]).ok()?;
        let machine = |system: &str, features: &str| Machine {
            system: Some(system.to_owned()),
            features: Some(feature_set(features)),
        };
        return Some(Refusal::Machine { derivation, required: machine(&c[1], &c[2]), current: machine(&c[4], &c[5]) });
    }
    if let Some(c) = CANNOT_BUILD.captures(&text) {
        let derivation = StorePath::parse(&c[1]).ok()?;
        let (mut required, mut current) = (Machine::default(), Machine::default());
        let mut no_builds = false;
        for line in text[c.get(0).map_or(0, |m| m.end())..].lines().map(str::trim) {
            if let Some(s) = SYSTEM.captures(line) {
                let machine = if &s[1] == "Required" { &mut required } else { &mut current };
                machine.system = Some(s[2].to_owned());
                if let Some(features) = s.get(3) {
                    machine.features = Some(feature_set(features.as_str()));
                }
            } else if let Some(f) = FEATURES.captures(line) {
                let machine = if &f[1] == "Required" { &mut required } else { &mut current };
                machine.features = Some(feature_set(&f[2]));
            } else if line.starts_with("Reason: local builds are disabled") {
                no_builds = true;
            }
        }
        if required.system.is_some() || required.features.is_some() {
            return Some(Refusal::Machine { derivation, required, current });
        }
        if no_builds {
            return Some(Refusal::NoBuilds { derivation: Some(derivation) });
        }
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let start = lower.find("unable to start any build")?;
    if lower[start..].contains("remote machines may not have all required system features") {
        Some(Refusal::NoRemoteFits)
    } else {
        Some(Refusal::NoBuilds { derivation: None })
    }
}

/// `benchmark, big-parallel` as a set.
fn feature_set(list: &str) -> BTreeSet<String> {
    list.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect()
}

/// `text` without ANSI escape sequences (Nix colours words on a terminal).
fn without_ansi(text: &str) -> String {
    static ESCAPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").expect("regex"));
    ESCAPE.replace_all(text, "").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nix::fixtures::{HOST_FEATURES as HOST, NATIVE, host, machine, parsed as sp};

    /// Captured from Nix 2.26.3 (`nix-store --realise` of an aarch64-linux derivation).
    #[test]
    fn another_system_as_nix_2_18_to_2_29_say_it() {
        let stderr = format!(
            "this derivation will be built:\n  {NATIVE}\nerror: a 'aarch64-linux' with features {{}} is required to \
             build '{NATIVE}', but I am a 'x86_64-linux' with features {{{HOST}}}\n"
        );
        assert_eq!(
            parse_refusal(&stderr),
            Some(Refusal::Machine { derivation: sp(NATIVE), required: machine("aarch64-linux", &[]), current: host() })
        );
    }

    /// The wording of Nix 2.30 to 2.33 (derivation-builder.cc), with its colours.
    #[test]
    fn another_system_as_nix_2_30_says_it() {
        let stderr = format!(
            "error: Cannot build '\x1b[35;1m{NATIVE}\x1b[0m'.
       Reason: \x1b[31;1mrequired system or feature not available\x1b[0m
       Required system: '\x1b[35;1maarch64-linux\x1b[0m' with features {{}}
       Current system: '\x1b[35;1mx86_64-linux\x1b[0m' with features {{{HOST}}}
"
        );
        assert_eq!(
            parse_refusal(&stderr),
            Some(Refusal::Machine { derivation: sp(NATIVE), required: machine("aarch64-linux", &[]), current: host() })
        );
    }

    /// The wording of Nix 2.34 and later (derivation-building-goal.cc): a reason per cause.
    #[test]
    fn each_reason_as_nix_2_34_says_it() {
        let stderr = format!(
            "error: Cannot build '{NATIVE}'.
       Reason: local builds are disabled (max-jobs = 0)
       Hint: set 'max-jobs' to a non-zero value to enable local builds, or configure remote builders via 'builders'
       Reason: platform mismatch
       Required system: 'aarch64-linux'
       Current system: 'x86_64-linux'
       Reason: missing system features
       Required features: {{kvm}}
       Available features: {{benchmark, big-parallel}}
"
        );
        let Some(Refusal::Machine { required, current, .. }) = parse_refusal(&stderr) else { panic!("{stderr}") };
        assert_eq!(required, machine("aarch64-linux", &["kvm"]));
        assert_eq!(current, machine("x86_64-linux", &["benchmark", "big-parallel"]));
        let only_jobs = format!(
            "error: Cannot build '{NATIVE}'.\n       Reason: local builds are disabled (max-jobs = 0)\n       Hint: set 'max-jobs'\n"
        );
        assert_eq!(parse_refusal(&only_jobs), Some(Refusal::NoBuilds { derivation: Some(sp(NATIVE)) }));
    }

    /// Captured from Nix 2.26.3 (`--max-jobs 0`); 2.18 and 2.19 wrote it on one line.
    #[test]
    fn no_builds_at_all() {
        let current = "error:
                           Unable to start any build;
                           either increase '--max-jobs' or enable remote builds.

                           For more information run 'man nix.conf' and search for '/machines'.
";
        assert_eq!(parse_refusal(current), Some(Refusal::NoBuilds { derivation: None }));
        let old = "error: unable to start any build; either increase '--max-jobs' or enable remote builds.\n\
                   https://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html\n";
        assert_eq!(parse_refusal(old), Some(Refusal::NoBuilds { derivation: None }));
        let remote = "error: unable to start any build; remote machines may not have all required system features.";
        assert_eq!(parse_refusal(remote), Some(Refusal::NoRemoteFits));
        assert_eq!(parse_refusal("error: builder for '/nix/store/x.drv' failed with exit code 1"), None);
    }
}
