//! Reading what `nix-store --realise` says: its plan (`--dry-run`) and its failures.
//!
//! The plan (stderr, the same in Nix 2.8 to 2.26+; Nix 2.3 lacked the counts):
//!
//! ```text
//! these 2 derivations will be built:          (or: this derivation will be built:)
//!   /nix/store/…-fresh-1.drv
//! these 3 paths will be fetched (0.12 MiB download, 0.50 MiB unpacked):
//!   /nix/store/…-hello
//! don't know how to build these paths:
//!   /nix/store/…-libfoo
//! ```
//!
//! "will be built" means no binary cache has the outputs; "don't know how to build" lists
//! outputs that a substitutable path refers to but no cache has and no known derivation
//! produces. The dry run does not check signatures, so a substitute signed by an untrusted key
//! still counts as "will be fetched"; the real realise then warns
//! `ignoring substitute for '/nix/store/…' from 'https://…', as it's not signed by any of the
//! keys in 'trusted-public-keys'` and, with `--max-jobs 0` (no local builds), fails with
//! `Unable to start any build` (capitalised since Nix 2.20, lower-case before).
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

use super::attribution::packages_concerned;
use super::error::{BuildFailure, NixError, NotSubstitutable, Step, Substitute, UntrustedSignature};
use super::{BuildRoots, Job, Nix, ProcessError, ResolvedPackage, StorePath, failure};
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::LazyLock;
use tokio::process::Command;

/// What `nix-store --realise` is given: `drv!output` for each package, so only the outputs
/// the image holds are built or fetched (not a package's man pages when its binaries are
/// asked for).
fn targets(packages: &[ResolvedPackage]) -> BTreeSet<String> {
    packages.iter().map(|p| format!("{}!{}", p.drv_path, p.output)).collect()
}

impl Nix {
    /// With local builds off: the dry run, and a refusal naming what no cache has.
    pub(super) async fn check_caches(&self, job: &Job<'_>, packages: &[ResolvedPackage]) -> Result<(), NixError> {
        let mut dry_run = Command::new("nix-store");
        dry_run.args(["--realise", "--dry-run"]).args(targets(packages));
        let out = self.step(Step::CheckCaches, dry_run, job.deadline, &job.scrub).await?;
        let plan = parse_dry_run(&out.stderr.text());
        if plan.will_build.is_empty() && plan.unknown.is_empty() {
            return Ok(());
        }
        let concerned = packages_concerned(packages, &plan.will_build, &plan.unknown).await;
        Err(NixError::NotSubstitutable(NotSubstitutable {
            packages: concerned,
            builds: plan.will_build.into_iter().collect(),
            unknown: plan.unknown.into_iter().collect(),
        }))
    }

    /// Builds or fetches the packages; with local builds off, `--max-jobs 0` makes sure
    /// nothing is built even where the dry run was optimistic (it checks no signatures).
    /// With `roots`, the outputs are registered as GC roots there as they become valid
    /// ([`super::roots`]).
    pub(super) async fn build(
        &self,
        job: &Job<'_>,
        packages: &[ResolvedPackage],
        roots: Option<&BuildRoots>,
    ) -> Result<(), NixError> {
        let mut realise = Command::new("nix-store");
        // The log is quoted in the error instead of streamed (`last N log lines:`).
        realise.args(["--realise", "--no-build-output"]);
        if let Some(roots) = roots {
            realise.arg("--add-root").arg(roots.link());
        }
        if !self.policy.local_builds {
            realise.args(["--max-jobs", "0"]);
        }
        realise.args(targets(packages));
        let e = match self.run(Step::Realise, realise, job.deadline).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let ProcessError::Failed { stderr, .. } = &e else { return Err(failure(Step::Realise, e, &job.scrub)) };
        match parse_realise_failure(&stderr.text()).cause() {
            Cause::Untrusted(untrusted) => {
                let paths: BTreeSet<StorePath> = untrusted.iter().map(|(p, _)| p.clone()).collect();
                let concerned = packages_concerned(packages, &BTreeSet::new(), &paths).await;
                let substitutes = untrusted
                    .into_iter()
                    .map(|(path, url)| Substitute { path, cache: cache_for_display(&url) })
                    .collect();
                Err(NixError::UntrustedSignature(UntrustedSignature { packages: concerned, substitutes }))
            }
            Cause::Build(first) => {
                let drvs = BTreeSet::from([first.derivation.clone()]);
                let concerned = packages_concerned(packages, &drvs, &BTreeSet::new()).await;
                let log = if first.log.is_empty() { stderr.tail() } else { first.log };
                Err(NixError::Build(BuildFailure {
                    derivation: Some(first.derivation),
                    packages: concerned,
                    log_tail: log.iter().map(|l| job.scrub.log_line(l)).collect(),
                }))
            }
            Cause::BuildsForbidden => {
                let log_tail = stderr.tail().iter().map(|l| job.scrub.log_line(l)).collect();
                let summary = "Nix had to build a path although local builds are off (NIXERY_LOCAL_BUILDS=false): \
                               a binary cache listed it but did not deliver it"
                    .to_owned();
                Err(NixError::Command { step: Step::Realise, summary, log_tail, source: e })
            }
            Cause::Other => Err(failure(Step::Realise, e, &job.scrub)),
        }
    }
}

/// What a dry run says Nix would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRun {
    pub will_build: BTreeSet<StorePath>,
    pub will_fetch: BTreeSet<StorePath>,
    pub unknown: BTreeSet<StorePath>,
}

/// The sections of a dry run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Build,
    Fetch,
    Unknown,
    Other,
}

/// Reads the plan of `nix-store --realise --dry-run` from its stderr.
pub fn parse_dry_run(stderr: &str) -> DryRun {
    let mut plan = DryRun::default();
    let mut section = Section::Other;
    for line in stderr.lines() {
        if !line.starts_with(char::is_whitespace) {
            section = if line.contains("will be built") {
                Section::Build
            } else if line.contains("will be fetched") {
                Section::Fetch
            } else if line.starts_with("don't know how to build") {
                Section::Unknown
            } else {
                Section::Other
            };
            continue;
        }
        // A derivation's output may be written `drv^out` or `drv!out` (content-addressed
        // derivations); the derivation stands for it.
        let word = line.trim();
        let path = word.split(['^', '!']).next().unwrap_or(word);
        let Ok(path) = StorePath::parse(path) else { continue };
        let into = match section {
            Section::Build => &mut plan.will_build,
            Section::Fetch => &mut plan.will_fetch,
            Section::Unknown => &mut plan.unknown,
            Section::Other => continue,
        };
        into.insert(path);
    }
    plan
}

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
}

/// What made a realise fail, in the order it matters to the user.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    /// Substitutes were refused and nothing could be built instead (local builds off), or
    /// nothing else failed.
    Untrusted(Vec<(StorePath, String)>),
    /// A build failed (with local builds on, also after a refused substitute: the build is
    /// what the user waited for).
    Build(FailedBuild),
    /// Something had to be built, with local builds off, and no substitute was refused.
    BuildsForbidden,
    Other,
}

impl RealiseFailure {
    fn cause(self) -> Cause {
        if !self.untrusted.is_empty() && (self.builds_forbidden || self.failed_builds.is_empty()) {
            return Cause::Untrusted(self.untrusted);
        }
        match self.failed_builds.into_iter().next() {
            Some(first) => Cause::Build(first),
            None if self.builds_forbidden => Cause::BuildsForbidden,
            None => Cause::Other,
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
    let mut failure = RealiseFailure::default();
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

    const FRESH_DRV: &str = "/nix/store/5q5a1dlf9vd21zpxz0izwnxbc2m8xj35-fresh-x22582.drv";
    const BROKEN_DRV: &str = "/nix/store/3z5b87fakr8m7xlizalp43x4w7lbhmw2-broken-1.0.drv";
    const NEEDS_BROKEN_DRV: &str = "/nix/store/8z0sc8piyyhnd4jkaz1gxvl0p4vgyvqm-needs-broken.drv";
    const FRESH: &str = "/nix/store/xcr84izm41f5556r7lcw9qx7rgqqyay2-fresh-s9x32430";
    const BUSYBOX: &str = "/nix/store/szb2jzkgvqlw9x4a3jr56dx0rdp1aiam-busybox-1.35.0";

    fn set(paths: &[&str]) -> BTreeSet<StorePath> {
        paths.iter().map(|p| StorePath::parse(p).unwrap()).collect()
    }

    /// Captured from Nix 2.26.3 here (a fresh nonce package, `substituters =`).
    #[test]
    fn a_plan_with_builds_fetches_and_unknown_paths() {
        let stderr = format!(
            "these 2 derivations will be built:
  {BROKEN_DRV}
  {FRESH_DRV}
these 2 paths will be fetched (0.00 MiB download, 0.00 MiB unpacked):
  {FRESH}
  {BUSYBOX}
don't know how to build these paths:
  {BUSYBOX}^out
warning: ignoring the client-specified setting 'x'
"
        );
        let plan = parse_dry_run(&stderr);
        assert_eq!(plan.will_build, set(&[BROKEN_DRV, FRESH_DRV]));
        assert_eq!(plan.will_fetch, set(&[FRESH, BUSYBOX]));
        assert_eq!(plan.unknown, set(&[BUSYBOX]));
    }

    #[test]
    fn singular_headers_and_an_empty_plan() {
        let stderr = format!(
            "this derivation will be built:\n  {FRESH_DRV}\nthis path will be fetched (0.00 MiB download, 0.00 MiB unpacked):\n  {FRESH}\n"
        );
        let plan = parse_dry_run(&stderr);
        assert_eq!(plan.will_build, set(&[FRESH_DRV]));
        assert_eq!(plan.will_fetch, set(&[FRESH]));
        assert_eq!(parse_dry_run(""), DryRun::default());
        // Nix 2.3's headers had no counts.
        let old = parse_dry_run(&format!("these derivations will be built:\n  {FRESH_DRV}\n"));
        assert_eq!(old.will_build, set(&[FRESH_DRV]));
    }

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
        let failure = |untrusted: &[(StorePath, String)], builds: &[FailedBuild], forbidden| RealiseFailure {
            untrusted: untrusted.to_vec(),
            failed_builds: builds.to_vec(),
            builds_forbidden: forbidden,
        };
        // Local builds off: the refused substitute is why nothing could be had.
        assert_eq!(failure(&untrusted, &[], true).cause(), Cause::Untrusted(untrusted.clone()));
        // Local builds on: Nix built instead, and that build failed.
        assert_eq!(failure(&untrusted, std::slice::from_ref(&build), false).cause(), Cause::Build(build.clone()));
        assert_eq!(failure(&[], &[], true).cause(), Cause::BuildsForbidden);
        assert_eq!(failure(&[], &[], false).cause(), Cause::Other);
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
