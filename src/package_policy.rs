//! `NIXERY_PACKAGES_ALLOW` / `NIXERY_PACKAGES_DENY`: which packages this registry builds
//! images of, checked on the attribute paths the names resolved to, after evaluation and
//! before anything is realised (nothing is built or fetched for a refused image).
//!
//! Each setting is a comma-separated list of rules; a rule is an attribute path in which `*`
//! stands for any run of characters, dots included:
//!
//! ```text
//! NIXERY_PACKAGES_DENY=bashInteractive,python3Packages.*,*-unwrapped
//! NIXERY_PACKAGES_ALLOW=hello,git,curl,haskellPackages.*
//! ```
//!
//! Rules are matched, case-sensitively as Nix's attribute names are, against what the name
//! *resolved* to (nix/lookup.nix's `attr`), never against what the client typed: names are
//! matched case-insensitively when there is no exact attribute, so `bashinteractive` is
//! `bashInteractive` and a deny rule for `bashInteractive` refuses both. A name that selects
//! an output (`curl.dev`, attribute path `curl.dev`) is matched as that path and as its
//! package's (`curl`), so a rule for `curl` covers all of curl's outputs.
//!
//! Deny wins over allow. With an allow list, every package must match one of its rules,
//! those `shell` brings (bashInteractive, coreutils, moreutils, nano) included; the packages
//! every image carries (cacert, iana-etc) need not be listed, but a deny rule refuses them
//! too. A refusal names each refused package with its attribute path and the rule, and is
//! answered 403 `DENIED` ([`crate::registry`]), which docker, podman and skopeo print and
//! containerd shows as the status line.

use crate::image::{self, PackageName};
use crate::nix::ResolvedPackage;
use serde::Serialize;
use std::fmt;

/// One rule: an attribute path, `*` matching any run of characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(String);

impl Rule {
    /// A rule as written in the setting; `None` for an empty one or one with whitespace.
    pub fn parse(text: &str) -> Option<Rule> {
        let ok = !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || c == ',');
        ok.then(|| Rule(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` matches (see the module docs).
    pub fn matches(&self, path: &str) -> bool {
        wildcard(self.0.as_bytes(), path.as_bytes())
    }
}

/// `pattern` (with `*`) against `text`, in O(len(pattern) × len(text)) at worst.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has been tried up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` take one more character.
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The configured rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackagePolicy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

/// Which setting refused a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "setting", content = "rule")]
pub enum Refusing {
    /// A rule of `NIXERY_PACKAGES_DENY` matched.
    #[serde(rename = "NIXERY_PACKAGES_DENY")]
    Denied(String),
    /// No rule of `NIXERY_PACKAGES_ALLOW` matched.
    #[serde(rename = "NIXERY_PACKAGES_ALLOW")]
    NotAllowed,
}

/// A package the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedPackage {
    /// The name as requested.
    pub package: PackageName,
    /// The attribute path it resolved to.
    pub attribute: String,
    #[serde(flatten)]
    pub by: Refusing,
}

impl fmt::Display for RefusedPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.package)?;
        if self.package.as_str() != self.attribute {
            write!(f, " (attribute {})", self.attribute)?;
        }
        match &self.by {
            Refusing::Denied(rule) => write!(f, " by rule '{rule}' of NIXERY_PACKAGES_DENY"),
            Refusing::NotAllowed => f.write_str(" as no rule of NIXERY_PACKAGES_ALLOW allows it"),
        }
    }
}

/// The packages of an image the policy refuses (never empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PackagesRefused {
    pub refused: Vec<RefusedPackage>,
}

impl fmt::Display for PackagesRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = self.refused.len() == 1;
        write!(f, "{} refused by this registry's package policy: ", if one { "package" } else { "packages" })?;
        let list: Vec<String> = self.refused.iter().map(ToString::to_string).collect();
        f.write_str(&list.join("; "))
    }
}

impl PackagePolicy {
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// The rules as stable text, for cache keys: the same rules always give the same
    /// identity, other rules another.
    pub fn identity(&self) -> String {
        let list = |rules: &[Rule]| rules.iter().map(Rule::as_str).collect::<Vec<_>>().join(",");
        format!("allow={};deny={}", list(&self.allow), list(&self.deny))
    }

    /// The attribute paths a resolved package is matched as.
    fn paths(package: &ResolvedPackage) -> Vec<&str> {
        let mut paths = vec![package.attr.as_str()];
        if let Some(base) = package.attr.strip_suffix(&format!(".{}", package.output)) {
            paths.push(base);
        }
        paths
    }

    fn refusal(&self, package: &ResolvedPackage) -> Option<Refusing> {
        let paths = Self::paths(package);
        if let Some(rule) = self.deny.iter().find(|r| paths.iter().any(|p| r.matches(p))) {
            return Some(Refusing::Denied(rule.as_str().to_owned()));
        }
        let allowed = self.allow.is_empty()
            || image::is_always_included(&package.name)
            || self.allow.iter().any(|r| paths.iter().any(|p| r.matches(p)));
        (!allowed).then_some(Refusing::NotAllowed)
    }

    /// Refuses `packages` if any of them is refused (see the module docs).
    pub fn check(&self, packages: &[ResolvedPackage]) -> Result<(), PackagesRefused> {
        if self.is_open() {
            return Ok(());
        }
        let refused: Vec<RefusedPackage> = packages
            .iter()
            .filter_map(|p| {
                self.refusal(p).map(|by| RefusedPackage { package: p.name.clone(), attribute: p.attr.clone(), by })
            })
            .collect();
        if refused.is_empty() { Ok(()) } else { Err(PackagesRefused { refused }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::StorePath;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| Rule::parse(r).unwrap()).collect()
    }

    fn resolved(name: &str, attr: &str, output: &str) -> ResolvedPackage {
        let path = StorePath::parse(&format!("/nix/store/{}-{attr}", "a".repeat(32))).unwrap();
        ResolvedPackage {
            name: PackageName::parse(name).unwrap(),
            attr: attr.to_owned(),
            output: output.to_owned(),
            drv_path: path.clone(),
            outputs: vec![path],
            main_program: None,
            root: None,
        }
    }

    #[test]
    fn wildcards_match_any_run_of_characters() {
        let cases = [
            ("python3Packages.*", "python3Packages.requests", true),
            ("python3Packages.*", "python3Packages.a.b", true),
            ("python3Packages.*", "python3Packages", false),
            ("python3Packages.*", "python311Packages.requests", false),
            ("*-unwrapped", "firefox-unwrapped", true),
            ("*-unwrapped", "firefox-unwrapped2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("*", "anything.at.all", true),
            ("bashInteractive", "bashInteractive", true),
            ("bashInteractive", "bashinteractive", false),
            ("bash", "bashInteractive", false),
            ("**x", "x", true),
        ];
        for (rule, path, want) in cases {
            assert_eq!(Rule::parse(rule).unwrap().matches(path), want, "{rule} ~ {path}");
        }
        assert_eq!(Rule::parse(""), None);
        assert_eq!(Rule::parse("a b"), None);
    }

    #[test]
    fn rules_apply_to_resolved_attribute_paths() {
        let policy = PackagePolicy { allow: vec![], deny: rules(&["bashInteractive", "haskellPackages.*", "curl"]) };
        let cacert = resolved("cacert", "cacert", "out");
        // The client's spelling does not matter: the resolved attribute does.
        let error = policy.check(&[cacert.clone(), resolved("bashinteractive", "bashInteractive", "out")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "package refused by this registry's package policy: 'bashinteractive' (attribute bashInteractive) \
             by rule 'bashInteractive' of NIXERY_PACKAGES_DENY"
        );
        let detail = serde_json::to_value(&error).unwrap();
        assert_eq!(detail["refused"][0]["setting"], "NIXERY_PACKAGES_DENY");
        assert_eq!(detail["refused"][0]["rule"], "bashInteractive");
        assert_eq!(detail["refused"][0]["attribute"], "bashInteractive");
        assert!(policy.check(&[resolved("haskellpackages.pandoc", "haskellPackages.pandoc", "out")]).is_err());
        // A rule for a package covers its outputs.
        assert!(policy.check(&[resolved("curl.dev", "curl.dev", "dev")]).is_err());
        assert!(policy.check(&[resolved("curl", "curl", "bin")]).is_err());
        assert!(policy.check(&[cacert, resolved("hello", "hello", "out")]).is_ok());
    }

    #[test]
    fn an_allow_list_needs_every_package_but_those_every_image_carries() {
        let policy = PackagePolicy { allow: rules(&["hello", "curl.dev"]), deny: rules(&["iana-etc"]) };
        let base = [resolved("cacert", "cacert", "out")];
        assert!(policy.check(&[&base[..], &[resolved("hello", "hello", "out")]].concat()).is_ok());
        assert!(policy.check(&[resolved("curl.dev", "curl.dev", "dev")]).is_ok());
        assert!(policy.check(&[resolved("curl", "curl", "bin")]).is_err(), "curl.dev does not allow curl");
        let error = policy.check(&[resolved("git", "git", "out"), resolved("hello", "hello", "out")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "package refused by this registry's package policy: 'git' as no rule of NIXERY_PACKAGES_ALLOW allows it"
        );
        let error =
            policy.check(&[resolved("iana-etc", "iana-etc", "out"), resolved("git", "git", "out")]).unwrap_err();
        assert_eq!(error.refused.len(), 2, "{error}");
        assert_eq!(error.refused[0].by, Refusing::Denied("iana-etc".into()), "deny applies to every package");
        assert!(PackagePolicy::default().check(&[resolved("git", "git", "out")]).is_ok());
    }
}
