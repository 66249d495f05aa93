//! Builds this server's Nix will not run, and the answer a user gets for them: which package,
//! what it needs (a system, system features, any build at all), and what would give it.
//!
//! Nix builds a derivation here only if the machine is its `system` (or lists it in
//! `extra-platforms`, as binfmt emulation does) and has every feature of its
//! `requiredSystemFeatures` (`kvm`, `big-parallel`, `nixos-test`, ... against the
//! `system-features` setting), unless a remote builder (`builders`) takes it, and at all
//! only with `max-jobs` above 0. What Nix says otherwise is read by [`super::refusal`].
//!
//! These are failures of the image, not of the server: the same server serves every image
//! whose paths it can build or fetch, and the user learns what the image needs. The
//! requested packages concerned are found through the derivation files
//! ([`super::attribution`]).

use super::StorePath;
use super::refusal::Refusal;
use crate::image::PackageName;
use serde::Serialize;
use std::fmt;

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
    use crate::nix::refusal::parse_refusal;

    use crate::nix::fixtures::{HOST_FEATURES as HOST, NATIVE, host, machine, parsed as sp};

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
