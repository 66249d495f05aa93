//! Why an image's paths could not be had from a binary cache: none has them while local
//! builds are off (the dry run's refusal, or a substitute a cache listed but did not deliver),
//! or the one that has them is signed by no trusted key. Failures of the image
//! ([`super::NixError`]), read by [`super::realise`].
//!
//! Every `Display` is one line; long lists are cut in the message and complete in the fields.

use super::StorePath;
use crate::image::PackageName;
use serde::Serialize;
use std::fmt;

/// How many paths a message lists before "and N more".
const MESSAGE_PATHS: usize = 5;

/// What no binary cache has, with local builds off.
///
/// Lists start with the requested packages' own derivations and outputs (in request order),
/// then their dependencies (by name): a closure can need hundreds, and the packages are what
/// the user asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotSubstitutable {
    /// The requested packages concerned.
    pub packages: Vec<PackageName>,
    /// Derivations Nix would have to build.
    pub builds: Vec<StorePath>,
    /// Paths Nix could neither fetch nor build (outputs that substitutable paths refer to).
    pub unknown: Vec<StorePath>,
    /// How many of `builds` and of `unknown` are dependencies (they follow the packages' own).
    pub dependencies: Dependencies,
    /// Paths a binary cache listed but did not deliver (found by the realise, not the dry run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undelivered: Vec<StorePath>,
    /// What went wrong fetching them, as Nix said it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<String>,
}

/// How many paths of a list are dependencies of the requested packages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Dependencies {
    pub builds: usize,
    pub unknown: usize,
}

impl NotSubstitutable {
    /// The cause in the words that fit a status line: the packages' own paths by name
    /// (without hashes) and how many dependencies follow.
    pub fn headline(&self) -> String {
        let mut line = "not in any binary cache, and local builds are off".to_owned();
        if !self.packages.is_empty() {
            line.push_str(&format!(": {}", self.packages.join(", ")));
        }
        if !self.builds.is_empty() {
            line.push_str(&format!("; would build {}", names(&self.builds, self.dependencies.builds)));
        }
        if !self.unknown.is_empty() {
            line.push_str(&format!("; no cache has {}", names(&self.unknown, self.dependencies.unknown)));
        }
        if !self.undelivered.is_empty() {
            line.push_str(&format!("; a cache did not deliver {}", names(&self.undelivered, 0)));
        }
        line
    }
}

impl fmt::Display for NotSubstitutable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false)")?;
        if !self.packages.is_empty() {
            write!(f, ": {}", self.packages.join(", "))?;
        }
        if !self.builds.is_empty() {
            write!(f, "; would have to build {}", own_then_dependencies(&self.builds, self.dependencies.builds))?;
        }
        if !self.unknown.is_empty() {
            write!(f, "; no cache has {}", own_then_dependencies(&self.unknown, self.dependencies.unknown))?;
        }
        if !self.undelivered.is_empty() {
            write!(f, "; a binary cache listed but did not deliver {}", paths(&self.undelivered))?;
            if let Some(error) = &self.cache_error {
                write!(f, " ({error})")?;
            }
        }
        Ok(())
    }
}

/// `a, b and 699 dependencies` of a list whose last `dependencies` entries are dependencies.
fn own_then_dependencies(list: &[StorePath], dependencies: usize) -> String {
    let own = &list[..list.len().saturating_sub(dependencies)];
    let deps = match dependencies {
        1 => "1 dependency".to_owned(),
        n => format!("{n} dependencies"),
    };
    match (own.is_empty(), dependencies) {
        (true, _) => format!("{deps} of them: {}", paths(list)),
        (false, 0) => paths(own),
        (false, _) => format!("{} and {deps}", paths(own)),
    }
}

/// Like [`own_then_dependencies`], by name without hash (`fresh-1`), at most three.
fn names(list: &[StorePath], dependencies: usize) -> String {
    const NAMES: usize = 3;
    let own = &list[..list.len().saturating_sub(dependencies)];
    let shown: Vec<&str> = own.iter().take(NAMES).map(|p| p.name().trim_end_matches(".drv")).collect();
    let mut text = shown.join(", ");
    if own.len() > NAMES {
        text.push_str(&format!(" and {} more", own.len() - NAMES));
    }
    match (text.is_empty(), dependencies) {
        (_, 0) => text,
        (true, n) => format!("{n} dependencies"),
        (false, 1) => format!("{text} and 1 dependency"),
        (false, n) => format!("{text} and {n} dependencies"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NixError;

    use crate::nix::fixtures::{name, sp};

    /// The image's own derivation first, then how many dependencies follow, in the message,
    /// the headline (status line) and the detail.
    #[test]
    fn refusals_name_the_packages_own_paths_and_count_the_dependencies() {
        let mut builds = vec![sp("fresh-1.drv")];
        builds.extend((0..699).map(|i| sp(&format!("dep-{i}.drv"))));
        let n = NotSubstitutable {
            packages: vec![name("fresh")],
            builds,
            dependencies: Dependencies { builds: 699, unknown: 0 },
            ..Default::default()
        };
        assert_eq!(
            n.to_string(),
            format!(
                "not in any binary cache, and local builds are off (NIXERY_LOCAL_BUILDS=false): fresh; \
                 would have to build {} and 699 dependencies",
                sp("fresh-1.drv")
            )
        );
        assert_eq!(
            n.headline(),
            "not in any binary cache, and local builds are off: fresh; would build fresh-1 and 699 dependencies"
        );
        let detail = NixError::NotSubstitutable(n.clone()).detail();
        assert_eq!(detail["builds"][0], sp("fresh-1.drv").as_str());
        assert_eq!(detail["dependencies"]["builds"], 699);
        assert!(detail.get("undelivered").is_none(), "{detail}");
        // Only dependencies: counted, and the first few named.
        let deps = NotSubstitutable {
            builds: n.builds[1..4].to_vec(),
            dependencies: Dependencies { builds: 3, unknown: 0 },
            ..n
        };
        assert!(
            deps.to_string().ends_with(&format!(
                "would have to build 3 dependencies of them: {}, {}, {}",
                deps.builds[0], deps.builds[1], deps.builds[2]
            )),
            "{deps}"
        );
        assert!(deps.headline().ends_with("would build 3 dependencies"), "{}", deps.headline());
    }

    #[test]
    fn long_path_lists_are_cut_in_the_message_only() {
        let builds: Vec<StorePath> = (0..8).map(|i| sp(&format!("dep-{i}.drv"))).collect();
        let n = NotSubstitutable { packages: vec![name("fresh")], builds: builds.clone(), ..Default::default() };
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
