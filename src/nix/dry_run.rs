//! Reading the plan of `nix-store --realise` (with `--dry-run`, or the lines a realise
//! prints before it starts).
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
//! still counts as "will be fetched" (the realise finds out: [`super::realise_failure`]).

use super::StorePath;
use std::collections::BTreeSet;

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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nix::fixtures::{BROKEN_DRV, BUSYBOX, FRESH, FRESH_DRV, set};

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
}
