//! How a pinned [`SourceRevision`] is handed to nix/source.nix: a fetcher and JSON arguments,
//! both passed with `--argstr` and decoded there with `builtins.fromJSON`, so a URL, commit or
//! path is data and never Nix code.
//!
//! - a channel commit on GitHub: `tarball` with `{ url }`, GitHub's archive of the commit
//!   (what Nixery fetches; Nix caches it by URL);
//! - any other remote's commit (a channel mirror, a package-set repository):
//!   `git` with `builtins.fetchGit`'s `{ url, rev, allRefs = true }` (the commit may be on
//!   any ref);
//! - a path: `path` with `{ path }`. Its generation is this process's business, not Nix's;
//! - a flake: `flake` with `{ ref }`, its locked reference for `builtins.getFlake`
//!   (nix/flake.nix).
//!
//! Every revision is pinned by the time it gets here ([`crate::cache::sources`] resolves
//! moving references), so what Nix fetches never moves under a cached manifest.

use crate::pkgsource::{RemoteUrl, SourceRevision};
use serde_json::json;

/// nix/source.nix's `srcType` and `srcArgs` for `source`.
pub fn nix_args(source: &SourceRevision) -> (&'static str, String) {
    let git = |url: &RemoteUrl, rev: &str| json!({ "url": url.as_str(), "rev": rev, "allRefs": true });
    let (kind, args) = match source {
        SourceRevision::Channel { repo, commit } => match repo.github_archive(commit) {
            Some(url) => ("tarball", json!({ "url": url })),
            None => ("git", git(repo, commit.as_str())),
        },
        SourceRevision::Git { url, commit } => ("git", git(url, commit.as_str())),
        SourceRevision::Path { path, .. } => ("path", json!({ "path": path })),
        SourceRevision::Flake(flake) => ("flake", json!({ "ref": flake.reference() })),
    };
    (kind, args.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkgsource::CommitHash;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn commit() -> CommitHash {
        CommitHash::parse(COMMIT).unwrap()
    }

    #[test]
    fn channel_commits_on_github_are_archive_tarballs_elsewhere_git() {
        let github =
            SourceRevision::Channel { repo: RemoteUrl::new("https://github.com/NixOS/nixpkgs"), commit: commit() };
        let url = format!("https://github.com/NixOS/nixpkgs/archive/{COMMIT}.tar.gz");
        assert_eq!(nix_args(&github), ("tarball", json!({ "url": url }).to_string()));
        let mirror = SourceRevision::Channel { repo: RemoteUrl::new("file:///srv/nixpkgs"), commit: commit() };
        let (kind, args) = nix_args(&mirror);
        assert_eq!(kind, "git");
        let args: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(args, json!({ "url": "file:///srv/nixpkgs", "rev": COMMIT, "allRefs": true }));
    }

    #[test]
    fn git_commits_and_paths() {
        let git = SourceRevision::Git { url: RemoteUrl::new("https://u:t@example.org/pkgs.git"), commit: commit() };
        let (kind, args) = nix_args(&git);
        assert_eq!(kind, "git");
        let args: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(args["url"], "https://u:t@example.org/pkgs.git", "Nix gets the credentials");
        assert_eq!(args["rev"], COMMIT);
        let path = SourceRevision::Path { path: "/srv/pkgs".into(), generation: 7 };
        assert_eq!(nix_args(&path), ("path", r#"{"path":"/srv/pkgs"}"#.to_owned()));
    }

    #[test]
    fn a_flake_is_its_locked_reference() {
        use crate::pkgsource::{FlakeLock, FlakeRef, LockedFlake};
        let flake = FlakeRef::parse("git+https://u:t@example.org/pkgs?dir=nix", std::path::Path::new("/")).unwrap();
        let locked = LockedFlake { flake, lock: FlakeLock::Commit(commit()), nixpkgs: None, last_modified: None };
        let (kind, args) = nix_args(&SourceRevision::Flake(locked));
        assert_eq!(kind, "flake");
        let args: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(args["ref"], format!("git+https://u:t@example.org/pkgs?dir=nix&allRefs=1&rev={COMMIT}"));
    }

    #[test]
    fn text_stays_data() {
        let url = r#"https://x/"; builtins.abort "no"#;
        let git = SourceRevision::Git { url: RemoteUrl::new(url), commit: commit() };
        let (_, args) = nix_args(&git);
        let back: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(back["url"], url);
    }
}
