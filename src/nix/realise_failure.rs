//! Reading why a `nix-store --realise -Q` failed, and which cause matters to the user.
//!
//! A failed build, with `--no-build-output` (`-Q`, so the log is not streamed but quoted):
//!
//! ```text
//! error: builder for '/nix/store/…-broken-1.0.drv' failed with exit code 1;
//!        last 2 log lines:
//!        > compiling broken...
//!        > error: this package is broken on purpose
//!        For full logs, run:
//! error: 1 dependencies of derivation '/nix/store/…-needs-broken.drv' failed to build
//! ```
//!
//! and a fixed-output derivation whose download does not match its hash:
//! `error: hash mismatch in fixed-output derivation '/nix/store/…drv':` followed by the
//! `specified:` and `got:` lines.
//!
//! A substitute signed by no trusted key is refused with a warning, `ignoring substitute for
//! '/nix/store/…' from 'https://…', as it's not signed by any of the keys in
//! 'trusted-public-keys'`, and Nix builds the path instead; with `--max-jobs 0` (no local
//! builds) it then fails with `Unable to start any build` (capitalised since Nix 2.20,
//! lower-case before; [`super::refusal`] reads it and Nix's other refusals).
//!
//! A substitute a cache lists but does not deliver: Nix begins to copy it, fails, and falls
//! back to building it (Nix 2.26.3, a `file://` cache whose NAR is gone, `--max-jobs 0`):
//!
//! ```text
//! copying path '/nix/store/…-greeting-1.0' from 'http://cache.example'...
//! error: file 'nar/….nar.zst' does not exist in binary cache 'http://cache.example'
//! error:
//!        Unable to start any build;
//!        either increase '--max-jobs' or enable remote builds.
//! ```

use super::StorePath;
use super::refusal::{Refusal, parse_refusal};
use regex::Regex;
use std::sync::LazyLock;

/// A derivation that failed to build, and its last log lines as Nix quoted them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedBuild {
    pub derivation: StorePath,
    pub log: Vec<String>,
}

/// What a failed `nix-store --realise` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealiseFailure {
    /// Builds that failed, first failure first.
    pub failed_builds: Vec<FailedBuild>,
    /// Substitutes refused for want of a trusted signature: (path, cache URL as Nix wrote it).
    pub untrusted: Vec<(StorePath, String)>,
    /// Nix needed to build something but was not allowed to (`--max-jobs 0`).
    pub builds_forbidden: bool,
    /// A build Nix will not run here ([`super::unbuildable`]).
    pub refusal: Option<Refusal>,
    /// Paths Nix began to copy from a binary cache (`copying path '…' from '…'...`).
    pub copying: Vec<StorePath>,
    /// Nix's first error other than the refusal, when it copied: the cache's failure.
    pub cache_error: Option<String>,
}

/// What made a realise fail, in the order it matters to the user.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// Substitutes were refused and nothing could be built instead (local builds off), or
    /// nothing else failed.
    Untrusted(Vec<(StorePath, String)>),
    /// A build failed (with local builds on, also after a refused substitute: the build is
    /// what the user waited for).
    Build(FailedBuild),
    /// A build Nix will not run here, and no substitute was refused for want of a key.
    Refused(Refusal),
    Other,
}

impl RealiseFailure {
    pub(super) fn cause(self) -> Cause {
        let nothing_else = self.failed_builds.is_empty() && self.refusal.is_none();
        if !self.untrusted.is_empty() && (self.builds_forbidden || nothing_else) {
            return Cause::Untrusted(self.untrusted);
        }
        match (self.failed_builds.into_iter().next(), self.refusal) {
            (Some(first), _) => Cause::Build(first),
            (None, Some(refusal)) => Cause::Refused(refusal),
            (None, None) => Cause::Other,
        }
    }
}

/// Reads the failure of `nix-store --realise -Q` from its stderr.
pub fn parse_realise_failure(stderr: &str) -> RealiseFailure {
    static BUILDER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"builder for '(/nix/store/[^']+\.drv)' failed").expect("regex"));
    static HASH_MISMATCH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"hash mismatch in fixed-output derivation '(/nix/store/[^']+\.drv)'").expect("regex")
    });
    static UNTRUSTED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"ignoring substitute for '(/nix/store/[^']+)' from '([^']*)', as it's not signed by any of the keys",
        )
        .expect("regex")
    });
    static COPYING: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^copying path '(/nix/store/[^']+)' from '").expect("regex"));
    let mut failure =
        RealiseFailure { refusal: parse_refusal(stderr), cache_error: cache_error(stderr), ..Default::default() };
    if stderr.contains("Reason: local builds are disabled") {
        failure.builds_forbidden = true;
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if let Some(c) = UNTRUSTED.captures(line) {
            if let Ok(path) = StorePath::parse(&c[1]) {
                let entry = (path, c[2].to_owned());
                if !failure.untrusted.contains(&entry) {
                    failure.untrusted.push(entry);
                }
            }
            continue;
        }
        if let Some(path) = COPYING.captures(line).and_then(|c| StorePath::parse(&c[1]).ok()) {
            if !failure.copying.contains(&path) {
                failure.copying.push(path);
            }
            continue;
        }
        if line.to_ascii_lowercase().contains("unable to start any build") {
            failure.builds_forbidden = true;
            continue;
        }
        let (captures, quoted) = match (BUILDER.captures(line), HASH_MISMATCH.captures(line)) {
            (Some(c), _) => (c, true),
            (None, Some(c)) => (c, false),
            (None, None) => continue,
        };
        let Ok(derivation) = StorePath::parse(&captures[1]) else { continue };
        let mut log = Vec::new();
        if quoted {
            // `last N log lines:`, then the lines quoted with `> `.
            while i < lines.len() {
                let next = lines[i].trim_start();
                if let Some(quote) = next.strip_prefix("> ").or_else(|| (next == ">").then_some("")) {
                    log.push(quote.to_owned());
                } else if !(log.is_empty() && next.starts_with("last ")) {
                    break;
                }
                i += 1;
            }
        } else {
            // The indented lines that explain the mismatch.
            while i < lines.len() && lines[i].starts_with(char::is_whitespace) && !lines[i].trim().is_empty() {
                log.push(lines[i].trim().to_owned());
                i += 1;
            }
        }
        if !failure.failed_builds.iter().any(|b| b.derivation == derivation) {
            failure.failed_builds.push(FailedBuild { derivation, log });
        }
    }
    failure
}

/// The first `error: …` line before Nix's final refusal, after it began copying a path: what
/// the binary cache did wrong (`error: file 'nar/….nar.xz' does not exist in binary cache`).
fn cache_error(stderr: &str) -> Option<String> {
    let copying = stderr.find("copying path '")?;
    stderr[copying..]
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("error: "))
        .map(str::trim)
        .find(|e| {
            let lower = e.to_ascii_lowercase();
            !e.is_empty() && !lower.contains("unable to start any build") && !e.starts_with("Cannot build '")
        })
        .map(str::to_owned)
}

/// A cache URL fit to show: without credentials (`https://user:token@host` →
/// `https://***@host`) or query, and without the path of a local (`file://`) cache.
pub fn cache_for_display(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else { return "<cache>".to_owned() };
    if scheme == "file" || scheme == "local" {
        return format!("{scheme}://<path>");
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    if path.is_empty() { format!("{scheme}://{authority}") } else { format!("{scheme}://{authority}/{path}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nix::fixtures::{BROKEN_DRV, FRESH, FRESH_DRV, NEEDS_BROKEN_DRV};

    /// Captured from Nix 2.26.3 (`nix-store --realise -Q` of needs-broken and hello).
    #[test]
    fn a_failed_build_with_its_quoted_log() {
        let stderr = format!(
            "these 2 derivations will be built:
  {BROKEN_DRV}
  {NEEDS_BROKEN_DRV}
building '{BROKEN_DRV}'...
error: builder for '{BROKEN_DRV}' failed with exit code 1;
       last 2 log lines:
       > compiling broken...
       > error: this package is broken on purpose
       For full logs, run:
         nix-store -l {BROKEN_DRV}
error: 1 dependencies of derivation '{NEEDS_BROKEN_DRV}' failed to build
"
        );
        let failure = parse_realise_failure(&stderr);
        assert_eq!(
            failure.failed_builds,
            vec![FailedBuild {
                derivation: StorePath::parse(BROKEN_DRV).unwrap(),
                log: vec!["compiling broken...".into(), "error: this package is broken on purpose".into()],
            }]
        );
        assert!(failure.untrusted.is_empty() && !failure.builds_forbidden);
    }

    #[test]
    fn a_fixed_output_hash_mismatch() {
        let stderr = format!(
            "error: hash mismatch in fixed-output derivation '{FRESH_DRV}':
         specified: sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
            got:    sha256-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=
"
        );
        let failure = parse_realise_failure(&stderr);
        assert_eq!(failure.failed_builds[0].derivation.as_str(), FRESH_DRV);
        assert_eq!(failure.failed_builds[0].log.len(), 2);
        assert!(failure.failed_builds[0].log[1].starts_with("got:"));
    }

    /// Captured from Nix 2.26.3: a cache signed by a key not in trusted-public-keys, realised
    /// with `--max-jobs 0`.
    #[test]
    fn untrusted_substitutes_and_forbidden_builds() {
        let stderr = format!(
            "this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):
  {FRESH}
warning: ignoring substitute for '{FRESH}' from 'file:///tmp/s9x/cache/s9x32430', as it's not signed by any of the keys in 'trusted-public-keys'
error:
                           Unable to start any build;
                           either increase '--max-jobs' or enable remote builds.

                           For more information run 'man nix.conf' and search for '/machines'.
"
        );
        let failure = parse_realise_failure(&stderr);
        assert_eq!(
            failure.untrusted,
            vec![(StorePath::parse(FRESH).unwrap(), "file:///tmp/s9x/cache/s9x32430".to_owned())]
        );
        assert!(failure.builds_forbidden);
        assert!(failure.failed_builds.is_empty());
        // Nix before 2.20 wrote it in lower case, on the error line.
        let old = parse_realise_failure(
            "error: unable to start any build; either increase '--max-jobs' or enable remote builds.",
        );
        assert!(old.builds_forbidden);
    }

    #[test]
    fn the_cause_that_matters_to_the_user() {
        let untrusted = vec![(StorePath::parse(FRESH).unwrap(), "https://cache.example".to_owned())];
        let build = FailedBuild { derivation: StorePath::parse(BROKEN_DRV).unwrap(), log: vec![] };
        let no_builds = Refusal::NoBuilds { derivation: None };
        let failure =
            |untrusted: &[(StorePath, String)], builds: &[FailedBuild], refusal: Option<&Refusal>| RealiseFailure {
                untrusted: untrusted.to_vec(),
                failed_builds: builds.to_vec(),
                builds_forbidden: refusal == Some(&no_builds),
                refusal: refusal.cloned(),
                ..RealiseFailure::default()
            };
        // Local builds off: the refused substitute is why nothing could be had.
        assert_eq!(failure(&untrusted, &[], Some(&no_builds)).cause(), Cause::Untrusted(untrusted.clone()));
        // Local builds on: Nix built instead, and that build failed.
        assert_eq!(failure(&untrusted, std::slice::from_ref(&build), None).cause(), Cause::Build(build.clone()));
        assert_eq!(failure(&[], &[], Some(&no_builds)).cause(), Cause::Refused(no_builds.clone()));
        // Local builds on, a substitute refused and the build it fell back to impossible here:
        // what the build needs is the answer (the warning is in the log).
        let machine = Refusal::Machine {
            derivation: StorePath::parse(FRESH_DRV).unwrap(),
            required: Default::default(),
            current: Default::default(),
        };
        assert_eq!(failure(&untrusted, &[], Some(&machine)).cause(), Cause::Refused(machine.clone()));
        assert_eq!(failure(&[], &[], None).cause(), Cause::Other);
    }

    /// Captured from Nix 2.26.3: a `file://` cache whose NAR was deleted, `--max-jobs 0`.
    #[test]
    fn a_substitute_the_cache_did_not_deliver() {
        let stderr = format!(
            "this path will be fetched (0.00 MiB download, 0.00 MiB unpacked):
  {FRESH}
copying path '{FRESH}' from 'file:///tmp/s9x/cache'...
error: file 'nar/0ym375jwzpkxdpnk84kch4fpw09w78b9s0awzbk2gz4im6h80r2s.nar.xz' does not exist in binary cache
error:
                           Unable to start any build;
                           either increase '--max-jobs' or enable remote builds.

                           For more information run 'man nix.conf' and search for '/machines'.
"
        );
        let failure = parse_realise_failure(&stderr);
        assert_eq!(failure.copying, vec![StorePath::parse(FRESH).unwrap()]);
        assert_eq!(
            failure.cache_error.as_deref(),
            Some(
                "file 'nar/0ym375jwzpkxdpnk84kch4fpw09w78b9s0awzbk2gz4im6h80r2s.nar.xz' does not exist in binary cache"
            )
        );
        assert!(failure.builds_forbidden);
        assert_eq!(failure.cause(), Cause::Refused(Refusal::NoBuilds { derivation: None }));
        // Without a copy, no cache error: the refusal's own lines are not one.
        assert_eq!(parse_realise_failure("error: unable to start any build; either increase").cache_error, None);
    }

    #[test]
    fn cache_urls_lose_credentials_and_local_paths() {
        assert_eq!(cache_for_display("https://cache.nixos.org"), "https://cache.nixos.org");
        assert_eq!(
            cache_for_display("https://user:token@cache.example/sub?priority=10"),
            "https://***@cache.example/sub"
        );
        assert_eq!(cache_for_display("file:///srv/cache"), "file://<path>");
        assert_eq!(cache_for_display("s3://bucket?region=eu-west-1"), "s3://bucket");
        assert_eq!(cache_for_display("nonsense"), "<cache>");
    }
}
