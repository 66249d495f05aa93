//! Builds this server's Nix will not run, and the answer a user gets for them: which package,
//! what it needs (a system, system features, any build at all), and what would give it.
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
//!
//! These are failures of the image, not of the server: the same server serves every image
//! whose paths it can build or fetch, and the user learns what the image needs. The
//! requested packages concerned are found through the derivation files
//! ([`super::attribution`]).

use super::StorePath;
use crate::image::PackageName;
use regex::Regex;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
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

/// What a build needs that this server's Nix does not give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "needs", rename_all = "snake_case")]
pub enum Need {
    /// A machine of `system` (when it is not this one's) with `missing_features`.
    Machine {
        system: String,
        /// Whether `system` is another than the one this Nix builds for.
        foreign_system: bool,
        missing_features: Vec<String>,
        /// What this server's Nix is, as it says.
        host_system: Option<String>,
        host_features: Option<Vec<String>>,
    },
    /// Any build: Nix builds nothing here (max-jobs = 0) and no remote builder took it.
    LocalBuilds,
    /// A remote builder with what the build requires (Nix does not say what).
    RemoteBuilder,
}

/// A build of the image this server's Nix will not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unbuildable {
    /// The derivation Nix refused, or the first of those it would have had to build.
    pub derivation: Option<StorePath>,
    /// The requested packages that need it.
    pub packages: Vec<PackageName>,
    /// How many other derivations Nix would have had to build too (when it refused all).
    pub more_builds: usize,
    #[serde(flatten)]
    pub need: Need,
}

impl Unbuildable {
    /// The failure for `refusal`, where `planned` is what the realise meant to build
    /// (the image's own derivations first) and `packages` the requested packages concerned.
    pub fn new(refusal: Refusal, planned: &[StorePath], packages: Vec<PackageName>) -> Self {
        let first_planned = planned.first().cloned();
        let others = |drv: &Option<StorePath>| planned.iter().filter(|p| Some(*p) != drv.as_ref()).count();
        match refusal {
            Refusal::Machine { derivation, required, current } => {
                let host_features = current.features.clone();
                let missing_features = match (&required.features, &current.features) {
                    (Some(required), Some(current)) => required.difference(current).cloned().collect(),
                    (Some(required), None) => required.iter().cloned().collect(),
                    (None, _) => Vec::new(),
                };
                let system = required.system.or_else(|| current.system.clone()).unwrap_or_default();
                let foreign_system = current.system.as_deref().is_some_and(|host| host != system);
                let need = Need::Machine {
                    system,
                    foreign_system,
                    missing_features,
                    host_system: current.system,
                    host_features: host_features.map(|f| f.into_iter().collect()),
                };
                Unbuildable { derivation: Some(derivation), packages, more_builds: 0, need }
            }
            Refusal::NoBuilds { derivation } => {
                let derivation = derivation.or(first_planned);
                let more_builds = others(&derivation);
                Unbuildable { more_builds, derivation, packages, need: Need::LocalBuilds }
            }
            Refusal::NoRemoteFits => {
                let more_builds = others(&first_planned);
                Unbuildable { derivation: first_planned, packages, more_builds, need: Need::RemoteBuilder }
            }
        }
    }

    /// The cause in the words that fit a status line: the derivation by name, what it
    /// needs, and what would help, briefly.
    pub fn headline(&self) -> String {
        let what = self.derivation.as_ref().map_or("the packages", |d| d.name().trim_end_matches(".drv"));
        let mut line = format!("cannot build {what}{}", self.target());
        self.needed_by(&mut line);
        line.push_str(": ");
        line.push_str(&match &self.need {
            Need::Machine { foreign_system: true, .. } => {
                format!(
                    "Nix here builds for {} only; needs a remote builder, extra-platforms with binfmt, or a cache \
                     with its paths",
                    self.host()
                )
            }
            Need::Machine { missing_features, .. } => format!(
                "Nix here lacks the system features {}; needs a remote builder with them, or a cache with its paths",
                missing_features.join(", ")
            ),
            Need::LocalBuilds => {
                "Nix here builds nothing (max-jobs = 0); needs a cache with its paths, or a remote builder".to_owned()
            }
            Need::RemoteBuilder => {
                "no remote builder has the system features it requires; needs one, or a cache with its paths".to_owned()
            }
        });
        line
    }

    /// ` for aarch64-linux with the system features kvm`, or nothing.
    fn target(&self) -> String {
        let Need::Machine { system, foreign_system, missing_features, .. } = &self.need else { return String::new() };
        let mut text = String::new();
        if *foreign_system {
            text.push_str(&format!(" for {system}"));
        }
        if !missing_features.is_empty() {
            text.push_str(&format!(" with the system features {}", missing_features.join(", ")));
        }
        text
    }

    fn needed_by(&self, line: &mut String) {
        if !self.packages.is_empty() {
            line.push_str(&format!(" (needed by {})", self.packages.join(", ")));
        }
    }

    fn host(&self) -> &str {
        match &self.need {
            Need::Machine { host_system: Some(host), .. } => host,
            _ => "its own system",
        }
    }
}

impl fmt::Display for Unbuildable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.derivation {
            Some(drv) => write!(f, "cannot build {drv}")?,
            None => f.write_str("cannot build the packages")?,
        }
        match self.more_builds {
            0 => {}
            1 => f.write_str(" and 1 more derivation")?,
            n => write!(f, " and {n} more derivations")?,
        }
        f.write_str(&self.target())?;
        let mut needed = String::new();
        self.needed_by(&mut needed);
        f.write_str(&needed)?;
        match &self.need {
            Need::Machine { system, foreign_system: true, missing_features, .. } => {
                let with = if missing_features.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", missing_features.join(", "))
                };
                write!(
                    f,
                    ": this server's Nix builds for {} only. It needs a remote builder for {system}{with} \
                     (builders), extra-platforms = {system} with binfmt emulation (QEMU), or a binary cache \
                     that has these paths",
                    self.host()
                )
            }
            Need::Machine { missing_features, host_features, .. } => {
                let has = host_features.as_ref().map_or(String::new(), |h| format!(" (it has {})", h.join(", ")));
                write!(
                    f,
                    ": this server's Nix lacks the system features {}{has}. It needs a remote builder with them \
                     (builders), system-features in nix.conf if this machine has them, or a binary cache that \
                     has these paths",
                    missing_features.join(", ")
                )
            }
            Need::LocalBuilds => f.write_str(
                ": this server's Nix builds nothing (max-jobs = 0) and no remote builder took the build. It \
                 needs a binary cache that has these paths, a remote builder (builders), or max-jobs above 0",
            ),
            Need::RemoteBuilder => f.write_str(
                ": this server's Nix builds nothing (max-jobs = 0) and none of its remote builders has the \
                 system features the build requires. It needs a remote builder that has them, or a binary \
                 cache that has these paths",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &str = "/nix/store/0cldwzk2hwkdgh7wj8500bhpd78csxs4-native-1.0.drv";
    const HOST: &str = "benchmark, big-parallel, kvm, nixos-test, uid-range";

    fn sp(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    fn machine(system: &str, features: &[&str]) -> Machine {
        Machine { system: Some(system.into()), features: Some(features.iter().map(|f| f.to_string()).collect()) }
    }

    fn host() -> Machine {
        machine("x86_64-linux", &["benchmark", "big-parallel", "kvm", "nixos-test", "uid-range"])
    }

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

    /// Captured from Nix 2.26.3 (a derivation with `requiredSystemFeatures = [ "gpu" "kvm" ]`).
    #[test]
    fn missing_features_as_nix_2_26_says_it() {
        let stderr = format!(
            "error: a 'x86_64-linux' with features {{gpu, kvm}} is required to build '{NATIVE}', but I am a \
             'x86_64-linux' with features {{{HOST}}}\n"
        );
        let refusal = parse_refusal(&stderr).unwrap();
        let u = Unbuildable::new(refusal, &[], vec![PackageName::parse("native").unwrap()]);
        assert_eq!(
            u.need,
            Need::Machine {
                system: "x86_64-linux".into(),
                foreign_system: false,
                missing_features: vec!["gpu".into()],
                host_system: Some("x86_64-linux".into()),
                host_features: Some(HOST.split(", ").map(str::to_owned).collect()),
            }
        );
        assert_eq!(
            u.to_string(),
            format!(
                "cannot build {NATIVE} with the system features gpu (needed by native): this server's Nix lacks \
                 the system features gpu (it has {HOST}). It needs a remote builder with them (builders), \
                 system-features in nix.conf if this machine has them, or a binary cache that has these paths"
            )
        );
        assert_eq!(
            u.headline(),
            "cannot build native-1.0 with the system features gpu (needed by native): Nix here lacks the system \
             features gpu; needs a remote builder with them, or a cache with its paths"
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

    #[test]
    fn another_system_names_it_the_host_and_what_would_help() {
        let refusal =
            Refusal::Machine { derivation: sp(NATIVE), required: machine("aarch64-linux", &[]), current: host() };
        let u = Unbuildable::new(refusal, &[], vec![PackageName::parse("native").unwrap()]);
        assert_eq!(
            u.to_string(),
            format!(
                "cannot build {NATIVE} for aarch64-linux (needed by native): this server's Nix builds for \
                 x86_64-linux only. It needs a remote builder for aarch64-linux (builders), extra-platforms = \
                 aarch64-linux with binfmt emulation (QEMU), or a binary cache that has these paths"
            )
        );
        assert_eq!(
            u.headline(),
            "cannot build native-1.0 for aarch64-linux (needed by native): Nix here builds for x86_64-linux only; \
             needs a remote builder, extra-platforms with binfmt, or a cache with its paths"
        );
    }

    #[test]
    fn no_builds_names_the_first_planned_derivation_and_counts_the_rest() {
        let planned = [sp(NATIVE), sp("/nix/store/1cldwzk2hwkdgh7wj8500bhpd78csxs4-dep.drv")];
        let u = Unbuildable::new(Refusal::NoBuilds { derivation: None }, &planned, vec![]);
        assert_eq!(u.derivation, Some(sp(NATIVE)));
        assert!(
            u.to_string().starts_with(&format!(
                "cannot build {NATIVE} and 1 more derivation: this server's Nix builds nothing (max-jobs = 0)"
            )),
            "{u}"
        );
    }
}
