//! The canonical description of an image: target architecture plus the sorted,
//! de-duplicated set of package names, with meta-packages expanded.
//!
//! Nixery only honours meta-packages at the front of a name; here they are honoured
//! anywhere, so that `git/shell` and `shell/git` are one image (nixpkgs has no `shell`,
//! `arm64` or `nonroot` attribute, so nothing is lost).
//!
//! `nonroot` is not a package but a property of the image: who runs its command. It is part
//! of the spec (so of every cache key) because it changes the symlink forest (`/etc/passwd`,
//! `/home/nonroot`) and the config's `User`.

use super::name::{ImageName, PackageName};
use std::collections::BTreeSet;

/// Packages the `shell` meta-package adds.
pub const SHELL_PACKAGES: [&str; 4] = ["bashInteractive", "coreutils", "moreutils", "nano"];
/// Packages every image contains (TLS roots and /etc/services, /etc/protocols).
pub const ALWAYS_INCLUDED: [&str; 2] = ["cacert", "iana-etc"];
/// The attribute whose presence makes `bash` the image's command.
pub const INTERACTIVE_SHELL: &str = "bashInteractive";

/// Whether `name` is one of the packages every image carries. Their outputs are in every
/// image, so the layer grouping treats them as the most popular paths whatever the
/// popularity data says.
pub fn is_always_included(name: &PackageName) -> bool {
    ALWAYS_INCLUDED.contains(&name.as_str())
}

/// The meta-package that makes an image run as [`ImageUser::NonRoot`].
pub const NONROOT: &str = "nonroot";

/// Who an image's command runs as. Every image has root in its user database (programs
/// look users up by uid: `whoami`, git, ssh); `nonroot` adds user and group 1000 and runs
/// the image as them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageUser {
    #[default]
    Root,
    NonRoot,
}

impl ImageUser {
    /// uid and gid of the `nonroot` user: the first regular user of Linux distributions,
    /// which is also the uid CI runners and bind-mounted home directories usually have.
    pub const NONROOT_ID: u32 = 1000;

    /// The image config's `User`: numeric `uid:gid`, so a runtime need not read the image's
    /// `/etc/passwd` to start the process and Kubernetes' `runAsNonRoot` (which only trusts
    /// numeric users) accepts the image. `None` for root (the runtimes' default).
    pub fn config_user(self) -> Option<&'static str> {
        match self {
            ImageUser::Root => None,
            ImageUser::NonRoot => Some("1000:1000"),
        }
    }

    /// The name in the cache keys.
    pub fn key_name(self) -> &'static str {
        match self {
            ImageUser::Root => "root",
            ImageUser::NonRoot => NONROOT,
        }
    }
}

/// The CPU architecture an image is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The Nix system double the package set is instantiated for.
    pub fn nix_system(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux",
            Arch::Arm64 => "aarch64-linux",
        }
    }

    /// The architecture of the machine the server runs on (the default platform), if it is
    /// one images can be built for.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The GOARCH-style name used in image configs.
    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// What to build: the architecture, the sorted package names and who runs the image.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageSpec {
    pub arch: Arch,
    pub packages: BTreeSet<PackageName>,
    pub user: ImageUser,
}

impl ImageSpec {
    /// The spec of `name` for the host's platform unless the name says `arm64`.
    pub fn from_name(name: &ImageName) -> Self {
        Self::from_packages(name.components(), Arch::host().unwrap_or(Arch::Amd64))
    }

    /// The spec of `name`, built for `default` unless the name selects an architecture.
    pub fn for_platform(name: &ImageName, default: Arch) -> Self {
        Self::from_packages(name.components(), default)
    }

    /// The architecture the name itself selects (`arm64` anywhere in it), if any: such a
    /// name is one platform's image, never an index.
    pub fn arch_in_name(name: &ImageName) -> Option<Arch> {
        name.components().iter().any(|c| c.as_str() == "arm64").then_some(Arch::Arm64)
    }

    pub fn from_packages(components: &[PackageName], default: Arch) -> Self {
        let mut arch = default;
        let mut user = ImageUser::Root;
        let mut packages = BTreeSet::new();
        for c in components {
            match c.as_str() {
                "shell" => packages.extend(SHELL_PACKAGES.map(PackageName::from_static)),
                "arm64" => arch = Arch::Arm64,
                NONROOT => user = ImageUser::NonRoot,
                _ => {
                    packages.insert(c.clone());
                }
            }
        }
        packages.extend(ALWAYS_INCLUDED.map(PackageName::from_static));
        ImageSpec { arch, packages, user }
    }

    /// A name that gives this spec back ([`ImageSpec::from_name`]), for pages that list
    /// images: the architecture's meta-package, `shell` if all its packages are there, then
    /// the other packages, without the always-included ones (unless there is nothing else).
    pub fn canonical_name(&self) -> String {
        let has_shell = SHELL_PACKAGES.iter().all(|p| self.packages.contains(*p));
        let arm64 = (self.arch == Arch::Arm64).then_some("arm64");
        let nonroot = (self.user == ImageUser::NonRoot).then_some(NONROOT);
        let shell = has_shell.then_some("shell");
        let rest = self
            .packages
            .iter()
            .map(PackageName::as_str)
            .filter(|p| !(ALWAYS_INCLUDED.contains(p) || has_shell && SHELL_PACKAGES.contains(p)));
        let mut parts: Vec<&str> = arm64.into_iter().chain(nonroot).chain(shell).chain(rest).collect();
        if parts.len() == usize::from(arm64.is_some()) + usize::from(nonroot.is_some()) {
            parts.extend(ALWAYS_INCLUDED);
        }
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> ImageSpec {
        ImageSpec::from_name(&ImageName::parse(name).unwrap())
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        assert_eq!(spec("shell/git"), spec("git/shell"));
        assert_eq!(spec("git/hello"), spec("hello/git/git"));
    }

    #[test]
    fn shell_expands_and_base_packages_are_added() {
        let s = spec("shell/git");
        let expected: BTreeSet<PackageName> =
            ["bashInteractive", "cacert", "coreutils", "git", "iana-etc", "moreutils", "nano"]
                .iter()
                .map(|s| PackageName::parse(s).unwrap())
                .collect();
        assert_eq!(s.packages, expected);
        assert_eq!(s.arch, Arch::Amd64);
    }

    #[test]
    fn arm64_selects_the_architecture_and_is_not_a_package() {
        let s = spec("arm64/hello");
        assert_eq!(s.arch, Arch::Arm64);
        assert_eq!(s.arch.nix_system(), "aarch64-linux");
        assert!(!s.packages.contains("arm64"));
        assert_ne!(spec("arm64/hello"), spec("hello"));
    }

    #[test]
    fn canonical_names_give_the_spec_back() {
        for (name, canonical) in [
            ("git/shell/hello", "shell/git/hello"),
            ("hello/arm64", "arm64/hello"),
            ("bashInteractive/coreutils/nano", "bashInteractive/coreutils/nano"),
            ("cacert", "cacert/iana-etc"),
            ("arm64/iana-etc", "arm64/cacert/iana-etc"),
            ("hello/nonroot/arm64", "arm64/nonroot/hello"),
            ("nonroot", "nonroot/cacert/iana-etc"),
        ] {
            let s = spec(name);
            assert_eq!(s.canonical_name(), canonical, "{name}");
            assert_eq!(spec(&s.canonical_name()), s, "{name}");
        }
    }

    #[test]
    fn nonroot_counts_anywhere_and_is_not_a_package() {
        let s = spec("hello/nonroot");
        assert_eq!(s.user, ImageUser::NonRoot);
        assert!(!s.packages.contains(NONROOT));
        assert_eq!(s, spec("nonroot/hello"));
        assert_ne!(s, spec("hello"));
        assert_eq!(spec("hello").user, ImageUser::Root);
        assert_eq!(ImageUser::NonRoot.config_user(), Some("1000:1000"));
        assert_eq!(ImageUser::Root.config_user(), None);
    }

    #[test]
    fn the_default_platform_applies_unless_the_name_selects_one() {
        let hello = ImageName::parse("hello").unwrap();
        assert_eq!(ImageSpec::for_platform(&hello, Arch::Arm64).arch, Arch::Arm64);
        assert_eq!(ImageSpec::for_platform(&hello, Arch::Amd64).arch, Arch::Amd64);
        let arm = ImageName::parse("hello/arm64").unwrap();
        assert_eq!(ImageSpec::for_platform(&arm, Arch::Amd64).arch, Arch::Arm64);
        assert_eq!(ImageSpec::arch_in_name(&arm), Some(Arch::Arm64));
        assert_eq!(ImageSpec::arch_in_name(&hello), None);
    }

    #[test]
    fn an_image_of_nothing_still_has_the_base_packages() {
        assert_eq!(spec("cacert").packages.len(), 2);
    }

    #[test]
    fn only_the_base_packages_are_always_included() {
        let s = spec("shell/hello");
        let always: Vec<&str> = s.packages.iter().filter(|p| is_always_included(p)).map(|p| p.as_str()).collect();
        assert_eq!(always, ALWAYS_INCLUDED);
        assert!(SHELL_PACKAGES.contains(&INTERACTIVE_SHELL));
    }

    #[test]
    fn built_in_names_are_valid_package_names() {
        for name in SHELL_PACKAGES.iter().chain(&ALWAYS_INCLUDED) {
            assert_eq!(PackageName::from_static(name).as_str(), *name);
        }
    }
}
