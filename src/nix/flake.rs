//! Nix for a flake source: locking what a tag selects, and evaluating the lookup purely.
//!
//! **Locking** ([`FlakeLocker`]), once per moving tag and TTL, once for good per commit:
//!
//! - a git flake's branch, tag or `HEAD` is resolved with `git ls-remote`, exactly as for a
//!   git source (a branch wins over a tag, an annotated tag is peeled); then
//! - `nix flake prefetch --json <ref>` fetches the flake at that commit into the store (the
//!   fetch the evaluation needs anyway) and reports it; a forge flake's branch or `HEAD` is
//!   resolved by this call itself (the forge's API, with Nix's `access-tokens`), and a path
//!   flake is copied into the store, its NAR hash locking it. The answer, as Nix 2.26
//!   prints it:
//!
//!   ```json
//!   {"hash":"sha256-cfkx…","locked":{"lastModified":1718000000,"narHash":"sha256-cfkx…",
//!    "rev":"cb914e91ac10a6890c9c57fb89a4c37a515c7847","type":"git","url":"file:///srv/repo",…},
//!    "original":{…},"storePath":"/nix/store/8zf6…-source"}
//!   ```
//!
//!   `locked.rev` is a forge flake's commit, `hash` a path flake's lock, `storePath` where
//!   the flake's `flake.lock` is read for the commit of its `nixpkgs` input (provenance).
//!   `tarball-ttl = 0` makes Nix ask the forge again instead of answering from its own cache
//!   of branch heads (an hour by default): the TTL is `NIXERY_SOURCE_TTL`'s. `flake-registry`
//!   is empty: no reference here is looked up in a registry, so none is downloaded.
//!
//! **Evaluating** ([`pure_evaluation`]): `nix-instantiate` with `pure-eval`, as `nix build`
//! evaluates flakes, and the experimental features flakes need (`nix-command flakes`), given
//! on the command line for this source only. Pure evaluation reads no file outside the store
//! but through a locked fetch, so nix/lookup.nix cannot be named as a file: a fixed
//! expression imports the expressions' directory as a path locked by its NAR hash
//! ([`super::exprs`]) and calls the file with the other arguments.

use super::diagnostic::{Scrubber, final_error};
use super::exprs::Expressions;
use super::process::{self, ProcessError};
use crate::pkgsource::flake::{Fetch, locked_nixpkgs};
use crate::pkgsource::{
    CommitHash, FlakeLock, FlakeRef, FlakeTarget, LockedFlake, LsRemote, RemoteRef, SourceError, SourceRevision,
};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

/// The experimental features a flake source needs, for `--extra-experimental-features`.
const FEATURES: &str = "nix-command flakes";

/// The expression a pure evaluation runs: the expressions' directory, fetched as a locked
/// path (`nixeryExpressions`: `builtins.fetchTree`'s arguments as JSON), and in it the file
/// `nixeryFile`, called with every other argument. Fixed text: data comes as arguments.
const ENTRY: &str = r#"{ nixeryExpressions, nixeryFile, ... }@args:
import (builtins.fetchTree (builtins.fromJSON nixeryExpressions) + "/${nixeryFile}")
  (builtins.removeAttrs args [ "nixeryExpressions" "nixeryFile" ])"#;

/// Makes `command` (a `nix-instantiate` with its options) evaluate `file` of the expressions
/// for a flake source: purely, with the features flakes need. Its other arguments follow.
pub(super) fn pure_evaluation(command: &mut Command, exprs: &Expressions, file: &str) {
    command
        .args(["--extra-experimental-features", FEATURES, "--option", "pure-eval", "true"])
        .args(["--option", "flake-registry", ""])
        .args(["--expr", ENTRY])
        .args(["--argstr", "nixeryExpressions", &exprs.locked_path()])
        .args(["--argstr", "nixeryFile", file]);
}

/// A flake's evaluation failure with what to do about it, when the cause is a `flake.lock`
/// that does not lock every input (pure evaluation cannot lock one itself).
pub(super) fn with_lock_hint(source: &SourceRevision, message: String) -> String {
    let SourceRevision::Flake(flake) = source else { return message };
    let unlocked = ["unlocked flake input", "lock file"];
    if !unlocked.iter().any(|u| message.contains(u)) {
        return message;
    }
    let how = if flake.flake.is_directory() {
        "run `nix flake lock` in the flake's directory"
    } else {
        "run `nix flake lock` in the flake and commit its flake.lock"
    };
    format!("{message} (the flake's flake.lock must lock every input: {how})")
}

/// `nix flake prefetch --json`'s answer (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prefetched {
    hash: String,
    store_path: String,
    #[serde(default)]
    locked: Locked,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Locked {
    rev: Option<String>,
    last_modified: Option<u64>,
}

/// Locks flakes: what a tag selects becomes a [`LockedFlake`] (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct FlakeLocker {
    /// How long one fetch may take (a first fetch of a large repository is a clone).
    pub timeout: Duration,
}

impl FlakeLocker {
    /// `flake` at `target`, fetched and locked.
    pub async fn lock(&self, flake: &FlakeRef, target: &FlakeTarget) -> Result<LockedFlake, SourceError> {
        match flake.fetch(target) {
            Fetch::Git(url) => {
                let commit = match target {
                    FlakeTarget::Commit(commit) => commit.clone(),
                    FlakeTarget::Head | FlakeTarget::Directory => {
                        LsRemote { timeout: self.timeout }.resolve(&url, &RemoteRef::Head).await?
                    }
                    FlakeTarget::Named(name) => {
                        LsRemote { timeout: self.timeout }.resolve(&url, &RemoteRef::Named(name.clone())).await?
                    }
                };
                let fetched = self.prefetch(flake, target, &flake.at_commit(&commit)).await?;
                Ok(self.locked(flake, FlakeLock::Commit(commit), &fetched))
            }
            Fetch::Forge(reference) => {
                let fetched = self.prefetch(flake, target, &reference).await?;
                let commit =
                    fetched.locked.rev.as_deref().and_then(CommitHash::parse).ok_or_else(|| SourceError::Flake {
                        reference: target.clone(),
                        message: "Nix reported no commit for it".to_owned(),
                    })?;
                Ok(self.locked(flake, FlakeLock::Commit(commit), &fetched))
            }
            Fetch::Directory(reference) => {
                let fetched = self.prefetch(flake, target, &reference).await?;
                let lock =
                    FlakeLock::Snapshot { store_path: fetched.store_path.clone(), nar_hash: fetched.hash.clone() };
                Ok(LockedFlake { last_modified: None, ..self.locked(flake, lock, &fetched) })
            }
        }
    }

    fn locked(&self, flake: &FlakeRef, lock: FlakeLock, fetched: &Prefetched) -> LockedFlake {
        let dir = Path::new(&fetched.store_path).join(flake.subdir().unwrap_or(""));
        let nixpkgs = std::fs::read_to_string(dir.join("flake.lock")).ok().and_then(|text| locked_nixpkgs(&text));
        LockedFlake { flake: flake.clone(), lock, nixpkgs, last_modified: fetched.locked.last_modified }
    }

    /// `nix flake prefetch --json reference`.
    async fn prefetch(
        &self,
        flake: &FlakeRef,
        target: &FlakeTarget,
        reference: &str,
    ) -> Result<Prefetched, SourceError> {
        let mut nix = Command::new("nix");
        nix.args(["--extra-experimental-features", FEATURES])
            .args(["--option", "tarball-ttl", "0", "--option", "flake-registry", ""])
            .args(["flake", "prefetch", "--json", "--"])
            .arg(reference);
        let started = Instant::now();
        let fail = |message: String| SourceError::Flake { reference: target.clone(), message };
        match process::run(nix, started, started + self.timeout).await {
            Ok(out) => serde_json::from_slice(&out.stdout)
                .map_err(|e| fail(format!("unexpected output of nix flake prefetch: {e}"))),
            Err(ProcessError::Timeout { seconds, .. }) => Err(SourceError::Timeout {
                remote: flake.shown(),
                reference: RemoteRef::Named(target.to_string()),
                seconds,
            }),
            Err(ProcessError::Failed { stderr, .. }) => {
                let text = stderr.text();
                let message = final_error(&text).unwrap_or_else(|| "Nix printed no error message".to_owned());
                Err(fail(Scrubber::default().message(&flake.redact_in(&message))))
            }
            Err(e) => Err(SourceError::Remote {
                remote: flake.shown(),
                reference: RemoteRef::Named(target.to_string()),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_answer_of_nix_2_26() {
        let json = r#"{"hash":"sha256-cfkxcJ0jNfX2ftyT4HfiAriV3YmZNN8pnVHypgUbDVA=","locked":{"__final":true,
            "lastModified":1718000000,"narHash":"sha256-cfkxcJ0jNfX2ftyT4HfiAriV3YmZNN8pnVHypgUbDVA=",
            "ref":"refs/heads/main","rev":"cb914e91ac10a6890c9c57fb89a4c37a515c7847","revCount":1,"type":"git",
            "url":"file:///tmp/fx/outer"},"original":{"type":"git","url":"file:///tmp/fx/outer"},
            "storePath":"/nix/store/8zf6nrrcvs0q6v51c47p4pcycj8ys1gz-source"}"#;
        let p: Prefetched = serde_json::from_str(json).unwrap();
        assert_eq!(p.locked.rev.as_deref(), Some("cb914e91ac10a6890c9c57fb89a4c37a515c7847"));
        assert_eq!(
            (p.locked.last_modified, p.store_path.as_str()),
            (Some(1718000000), "/nix/store/8zf6nrrcvs0q6v51c47p4pcycj8ys1gz-source")
        );
        let path: Prefetched = serde_json::from_str(
            r#"{"hash":"sha256-x","locked":{"path":"/srv/f","type":"path"},"storePath":"/nix/store/q-source"}"#,
        )
        .unwrap();
        assert_eq!(path.locked.rev, None);
    }

    #[test]
    fn only_a_flake_is_evaluated_purely_with_the_features_flakes_need() {
        use super::super::{Derivations, Nix, NixPolicy};
        let nix = Nix::new(NixPolicy::with_timeout(Duration::from_secs(10)), Default::default()).unwrap();
        let args = |source: &SourceRevision| -> Vec<String> {
            let command = nix.eval("lookup.nix", Derivations::Write, source, "x86_64-linux", &[("mode", "probe")]);
            command.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect()
        };
        let has =
            |args: &[String], seq: &[&str]| args.windows(seq.len()).any(|w| w.iter().zip(seq).all(|(a, b)| a == b));
        let lookup = nix.exprs.path("lookup.nix").display().to_string();

        let plain = args(&SourceRevision::Path { path: "/srv/pkgs".into(), generation: 1 });
        assert!(plain.contains(&lookup), "{plain:?}");
        assert!(!plain.iter().any(|a| a.contains("flakes") || a == "pure-eval" || a == "--expr"), "{plain:?}");

        let flake = FlakeRef::parse("git+file:///srv/flake", Path::new("/")).unwrap();
        let commit = CommitHash::parse(&"a".repeat(40)).unwrap();
        let locked = LockedFlake { flake, lock: FlakeLock::Commit(commit), nixpkgs: None, last_modified: None };
        let pure = args(&SourceRevision::Flake(locked));
        assert!(has(&pure, &["--extra-experimental-features", "nix-command flakes"]), "{pure:?}");
        assert!(has(&pure, &["--option", "pure-eval", "true"]), "{pure:?}");
        assert!(has(&pure, &["--argstr", "nixeryFile", "lookup.nix"]), "{pure:?}");
        assert!(has(&pure, &["--argstr", "srcType", "flake"]), "{pure:?}");
        assert!(!pure.contains(&lookup), "pure evaluation cannot read the file: {pure:?}");
        assert!(has(&pure, &["--argstr", "nixeryExpressions", &nix.exprs.locked_path()]), "{pure:?}");
    }

    #[test]
    fn an_unlocked_input_says_how_to_lock_it() {
        let flake = |text: &str| FlakeRef::parse(text, Path::new("/")).unwrap();
        let revision = |flake: FlakeRef, lock| {
            SourceRevision::Flake(LockedFlake { flake, lock, nixpkgs: None, last_modified: None })
        };
        let commit = FlakeLock::Commit(CommitHash::parse(&"a".repeat(40)).unwrap());
        let message = "cannot update unlocked flake input 'nixpkgs' in pure mode".to_owned();
        let git = with_lock_hint(&revision(flake("git+https://h/r"), commit), message.clone());
        assert!(git.starts_with(&message) && git.contains("commit its flake.lock"), "{git}");
        let snapshot = FlakeLock::Snapshot { store_path: "/nix/store/x".into(), nar_hash: "sha256-x".into() };
        let dir = with_lock_hint(&revision(flake("path:/srv/f"), snapshot), message.clone());
        assert!(dir.contains("in the flake's directory"), "{dir}");
        let other = SourceRevision::Path { path: "/srv".into(), generation: 1 };
        assert_eq!(with_lock_hint(&other, message.clone()), message);
        let unrelated = with_lock_hint(
            &revision(flake("github:o/r"), FlakeLock::Commit(CommitHash::parse(&"b".repeat(40)).unwrap())),
            "infinite recursion".into(),
        );
        assert_eq!(unrelated, "infinite recursion");
    }
}
