//! Where packages come from: a nixpkgs channel, a git repository, a local path, or a flake;
//! what a tag means for each; and the pinned revision an image is built from.
//!
//! Three stages, three types:
//! - [`PkgSource`]: what the operator configured.
//! - [`Selection`]: what one request's tag selects from it, before anything is asked of a
//!   remote: either a fixed commit (pinned already) or a reference that moves.
//! - [`SourceRevision`]: the pinned revision an image is built from: a commit of a remote, or
//!   one reading of a local path. A moving reference becomes one through the resolver
//!   ([`crate::cache::sources`]), at most once per `NIXERY_SOURCE_TTL`.
//!
//! What a tag means (the same rule for both remote kinds):
//!
//! | source | `latest` | a full commit (40 hex) | any other tag |
//! |---|---|---|---|
//! | channel | the configured channel (`NIXERY_CHANNEL`, a branch or a commit) | that commit of the channel repository | that branch (or tag) of the channel repository, e.g. `nixos-24.11` |
//! | git | the default branch (`HEAD`) | that commit | that branch or tag |
//! | path | the package set as it is on disk (re-read once per TTL) | refused | refused |
//! | flake | its default branch (or the branch or commit its reference names) | that commit | that branch or tag |
//!
//! A flake ([`flake`]) is evaluated purely, so every tag of it, a commit too, is locked
//! before Nix sees it: the commit and what its `flake.lock` pins, or for a `path:` flake the
//! hash of its contents. A commit's lock is kept for good, a moving tag's for the TTL.
//!
//! A path source has one revision, the files on disk: a tag other than `latest` would have to
//! be ignored, which silently gives `hello:v1` and `hello:nixos-24.11` the same packages
//! while on the other sources the tag means something. So it is refused with a message
//! saying why ([`SourceError::PathTag`]): a tag always selects, or fails, never is ignored.
//!
//! The channel keeps Nixery's meaning (nixpkgs' branch or commit) but is resolved through a
//! git remote whose URL is configurable (`NIXERY_CHANNEL_REPO`, nixpkgs on GitHub by default),
//! so tests and mirrors can point it elsewhere. Nix fetches a pinned channel commit as
//! GitHub's archive tarball when the remote is a GitHub repository (cheap, cached by Nix by
//! URL), and with `builtins.fetchGit` otherwise ([`crate::nix`] renders the arguments).
//!
//! Only a commit always denotes the same package set: [`SourceRevision::pinned_identity`] is
//! the stable data that caches outliving the process file a manifest under. A path's
//! revision carries a generation number instead, which is only meaningful in this process.
//! A path flake's lock is the hash of its contents, so it has an identity too.

pub mod flake;
mod remote;

pub use flake::{FlakeLock, FlakeRef, FlakeTarget, LockedFlake};
pub use remote::{LsRemote, RemoteUrl};

use crate::image::Tag;
use serde_json::{Value, json};
use std::fmt;
use std::path::PathBuf;

/// A full git commit hash: 40 lower-case hexadecimal digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitHash(String);

impl CommitHash {
    /// `s` as a commit hash, if it is one (an abbreviated hash is not: it names nothing fixed).
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex.then(|| CommitHash(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A nixpkgs channel (`NIXERY_CHANNEL`): a branch, which moves, or a commit, which does not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Branch(String),
    Commit(CommitHash),
}

impl Channel {
    /// A full commit hash pins nixpkgs, anything else names a branch; `None` for blank text.
    pub fn parse(s: &str) -> Option<Self> {
        if s.trim().is_empty() {
            return None;
        }
        Some(CommitHash::parse(s).map_or_else(|| Channel::Branch(s.to_owned()), Channel::Commit))
    }

    /// The branch or commit.
    pub fn as_str(&self) -> &str {
        match self {
            Channel::Branch(branch) => branch,
            Channel::Commit(commit) => commit.as_str(),
        }
    }
}

/// The configured package source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PkgSource {
    /// A nixpkgs channel (`NIXERY_CHANNEL`) of the repository at `repo`
    /// (`NIXERY_CHANNEL_REPO`).
    Channel { repo: RemoteUrl, channel: Channel },
    /// A git repository of a package set (`NIXERY_PKGS_REPO`).
    Git(RemoteUrl),
    /// A local package set (`NIXERY_PKGS_PATH`).
    Path(PathBuf),
    /// A flake (`NIXERY_PKGS_FLAKE`).
    Flake(FlakeRef),
}

/// A reference of a git remote that moves: what `git ls-remote` resolves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RemoteRef {
    /// The default branch (`HEAD`).
    Head,
    /// A branch or tag name (a registry tag, so no `/`, `*` or other pattern characters).
    Named(String),
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteRef::Head => f.write_str("HEAD"),
            RemoteRef::Named(name) => f.write_str(name),
        }
    }
}

/// What moves, and so needs resolving: a reference of the configured remote, or the local
/// package set (re-read once per TTL). The key of the resolution cache: the configured source
/// is fixed for the process, so it is not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Moving {
    Remote(RemoteRef),
    LocalPath,
    /// What a tag selects from a flake; every tag of a flake is locked, a commit once and for
    /// good ([`FlakeTarget::is_fixed`]).
    Flake(FlakeTarget),
}

impl fmt::Display for Moving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Moving::Remote(reference) => reference.fmt(f),
            Moving::LocalPath => f.write_str("latest"),
            Moving::Flake(target) => target.fmt(f),
        }
    }
}

/// What a request's tag selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// A full commit: pinned without asking anyone.
    Pinned(SourceRevision),
    /// A reference that moves, to be resolved.
    Moving(Moving),
}

/// A pinned package source: what Nix builds an image from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceRevision {
    /// A commit of the channel repository.
    Channel { repo: RemoteUrl, commit: CommitHash },
    /// A commit of a package-set repository.
    Git { url: RemoteUrl, commit: CommitHash },
    /// The local package set as read in resolution `generation` of this process.
    Path { path: PathBuf, generation: u64 },
    /// A flake, locked.
    Flake(LockedFlake),
}

/// Why a tag selects no package set.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{remote} has no branch or tag '{reference}'")]
    UnknownRef { remote: String, reference: RemoteRef },
    #[error(
        "the package set is a local path, which has one revision: use the tag 'latest' (tag '{0}' selects nothing)"
    )]
    PathTag(String),
    #[error("resolving '{reference}' at {remote} failed: {message}")]
    Remote { remote: String, reference: RemoteRef, message: String },
    #[error("resolving '{reference}' at {remote} timed out after {seconds} s")]
    Timeout { remote: String, reference: RemoteRef, seconds: u64 },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// Nix could not fetch the flake at what the tag selects (a commit it does not have, a
    /// branch the forge does not know, a directory that is gone): Nix's reason, without
    /// credentials or server paths.
    #[error("fetching the flake at '{reference}' failed: {message}")]
    Flake { reference: FlakeTarget, message: String },
}

impl PkgSource {
    /// What `tag` selects from this source (see the module docs' table).
    pub fn select(&self, tag: &Tag) -> Result<Selection, SourceError> {
        let latest = *tag == Tag::latest();
        let commit = || CommitHash::parse(tag.as_str());
        let named = || Selection::Moving(Moving::Remote(RemoteRef::Named(tag.as_str().to_owned())));
        Ok(match self {
            PkgSource::Channel { repo, channel } => {
                let pinned = |commit| Selection::Pinned(SourceRevision::Channel { repo: repo.clone(), commit });
                match (latest, channel) {
                    (true, Channel::Commit(commit)) => pinned(commit.clone()),
                    (true, Channel::Branch(branch)) => {
                        Selection::Moving(Moving::Remote(RemoteRef::Named(branch.clone())))
                    }
                    (false, _) => commit().map_or_else(named, pinned),
                }
            }
            PkgSource::Git(_) if latest => Selection::Moving(Moving::Remote(RemoteRef::Head)),
            PkgSource::Git(url) => commit()
                .map_or_else(named, |commit| Selection::Pinned(SourceRevision::Git { url: url.clone(), commit })),
            PkgSource::Path(_) if latest => Selection::Moving(Moving::LocalPath),
            PkgSource::Path(_) => return Err(SourceError::PathTag(tag.as_str().to_owned())),
            PkgSource::Flake(flake) if latest => Selection::Moving(Moving::Flake(flake.latest().clone())),
            PkgSource::Flake(flake) if flake.is_directory() => {
                return Err(SourceError::PathTag(tag.as_str().to_owned()));
            }
            PkgSource::Flake(_) => Selection::Moving(Moving::Flake(match commit() {
                Some(commit) => FlakeTarget::Commit(commit),
                None => FlakeTarget::Named(tag.as_str().to_owned()),
            })),
        })
    }

    /// The remote a [`RemoteRef`] is resolved at (none for a path).
    pub fn remote(&self) -> Option<&RemoteUrl> {
        match self {
            PkgSource::Channel { repo, .. } => Some(repo),
            PkgSource::Git(url) => Some(url),
            PkgSource::Path(_) | PkgSource::Flake(_) => None,
        }
    }

    /// The pinned revision of this source at `commit` of its remote (`None` for a path).
    pub fn at_commit(&self, commit: CommitHash) -> Option<SourceRevision> {
        match self {
            PkgSource::Channel { repo, .. } => Some(SourceRevision::Channel { repo: repo.clone(), commit }),
            PkgSource::Git(url) => Some(SourceRevision::Git { url: url.clone(), commit }),
            PkgSource::Path(_) | PkgSource::Flake(_) => None,
        }
    }

    /// The local package set as read in resolution `generation` (`None` for a remote).
    pub fn at_generation(&self, generation: u64) -> Option<SourceRevision> {
        match self {
            PkgSource::Path(path) => Some(SourceRevision::Path { path: path.clone(), generation }),
            _ => None,
        }
    }
}

impl SourceRevision {
    /// For a revision that always denotes the same package set (a commit), what it is, as
    /// stable data for the keys of caches that outlive the process; `None` for a path's
    /// reading. The remote is named without credentials (a rotated token is the same
    /// repository). The keys that embed it carry their own version.
    pub fn pinned_identity(&self) -> Option<Value> {
        match self {
            SourceRevision::Channel { repo, commit } => Some(json!(["channel", repo.redacted(), commit.as_str()])),
            SourceRevision::Git { url, commit } => Some(json!(["git", url.redacted(), commit.as_str()])),
            SourceRevision::Path { .. } => None,
            SourceRevision::Flake(flake) => Some(flake.identity()),
        }
    }

    /// The commit, for a remote's revision (a git or forge flake's too).
    pub fn commit(&self) -> Option<&CommitHash> {
        match self {
            SourceRevision::Channel { commit, .. } | SourceRevision::Git { commit, .. } => Some(commit),
            SourceRevision::Path { .. } => None,
            SourceRevision::Flake(flake) => flake.commit(),
        }
    }

    /// Whether Nix evaluates this revision as a flake (purely, with the experimental
    /// features flakes need).
    pub fn is_flake(&self) -> bool {
        matches!(self, SourceRevision::Flake(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    fn commit() -> CommitHash {
        CommitHash::parse(COMMIT).unwrap()
    }

    fn named(s: &str) -> Selection {
        Selection::Moving(Moving::Remote(RemoteRef::Named(s.into())))
    }

    #[test]
    fn commits_are_forty_lower_case_hex_digits() {
        assert_eq!(CommitHash::parse(COMMIT).map(|c| c.to_string()), Some(COMMIT.to_owned()));
        assert!(CommitHash::parse(tag(COMMIT).as_str()).is_some());
        for not in ["0123456789abcdef", &COMMIT.to_uppercase(), &format!("{COMMIT}0"), &COMMIT.replace('a', "g"), ""] {
            assert_eq!(CommitHash::parse(not), None, "{not}");
        }
    }

    #[test]
    fn git_tags_select_refs_commits_or_the_default_branch() {
        let url = RemoteUrl::new("https://example.org/pkgs.git");
        let git = PkgSource::Git(url.clone());
        assert_eq!(git.select(&Tag::latest()).unwrap(), Selection::Moving(Moving::Remote(RemoteRef::Head)));
        assert_eq!(git.select(&tag("release-23.05")).unwrap(), named("release-23.05"));
        let pinned = git.select(&tag(COMMIT)).unwrap();
        assert_eq!(pinned, Selection::Pinned(SourceRevision::Git { url: url.clone(), commit: commit() }));
        // An abbreviated hash is a ref name, resolved (and refused) like any other.
        assert_eq!(git.select(&tag(&COMMIT[..12])).unwrap(), named(&COMMIT[..12]));
    }

    #[test]
    fn channel_tags_select_branches_and_commits_of_the_channel_repository() {
        let repo = RemoteUrl::new("https://github.com/NixOS/nixpkgs");
        let unstable = PkgSource::Channel { repo: repo.clone(), channel: Channel::parse("nixos-unstable").unwrap() };
        assert_eq!(unstable.select(&Tag::latest()).unwrap(), named("nixos-unstable"));
        assert_eq!(unstable.select(&tag("nixos-24.11")).unwrap(), named("nixos-24.11"));
        let by_commit = Selection::Pinned(SourceRevision::Channel { repo: repo.clone(), commit: commit() });
        assert_eq!(unstable.select(&tag(COMMIT)).unwrap(), by_commit);
        // A channel configured as a commit: `latest` is pinned, other tags still select.
        let pinned = PkgSource::Channel { repo: repo.clone(), channel: Channel::parse(COMMIT).unwrap() };
        assert_eq!(pinned.select(&Tag::latest()).unwrap(), by_commit);
        assert_eq!(pinned.select(&tag("nixos-24.11")).unwrap(), named("nixos-24.11"));
    }

    #[test]
    fn a_path_has_only_latest() {
        let path = PkgSource::Path("/srv/pkgs".into());
        assert_eq!(path.select(&Tag::latest()).unwrap(), Selection::Moving(Moving::LocalPath));
        let err = path.select(&tag("v1")).unwrap_err();
        assert!(matches!(&err, SourceError::PathTag(t) if t == "v1"), "{err}");
        assert!(err.to_string().contains("'latest'"), "{err}");
        assert_eq!(path.at_commit(commit()), None);
        let read = path.at_generation(3).unwrap();
        assert_eq!(read, SourceRevision::Path { path: "/srv/pkgs".into(), generation: 3 });
        assert_eq!(read.pinned_identity(), None, "a path's reading is not stable across processes");
    }

    #[test]
    fn every_tag_of_a_flake_is_locked_and_a_path_flake_has_only_latest() {
        let flake = |text: &str| PkgSource::Flake(FlakeRef::parse(text, std::path::Path::new("/")).unwrap());
        let target = |t| Selection::Moving(Moving::Flake(t));
        let git = flake("git+https://example.org/pkgs");
        assert_eq!(git.select(&Tag::latest()).unwrap(), target(FlakeTarget::Head));
        assert_eq!(git.select(&tag("v1")).unwrap(), target(FlakeTarget::Named("v1".into())));
        assert_eq!(git.select(&tag(COMMIT)).unwrap(), target(FlakeTarget::Commit(commit())));
        assert_eq!(
            flake("github:o/r/develop").select(&Tag::latest()).unwrap(),
            target(FlakeTarget::Named("develop".into()))
        );
        assert_eq!((git.remote(), git.at_commit(commit()), git.at_generation(1)), (None, None, None));
        let dir = flake("path:/srv/flake");
        assert_eq!(dir.select(&Tag::latest()).unwrap(), target(FlakeTarget::Directory));
        assert!(matches!(dir.select(&tag(COMMIT)), Err(SourceError::PathTag(_))));
        assert!(matches!(dir.select(&tag("v1")), Err(SourceError::PathTag(_))));
    }

    #[test]
    fn a_channel_is_a_branch_unless_it_is_a_full_commit() {
        assert_eq!(Channel::parse("nixos-23.05"), Some(Channel::Branch("nixos-23.05".into())));
        assert_eq!(Channel::parse(COMMIT), Some(Channel::Commit(commit())));
        assert_eq!(Channel::parse(&COMMIT[..12]), Some(Channel::Branch(COMMIT[..12].into())));
        assert_eq!(Channel::parse(COMMIT).unwrap().as_str(), COMMIT);
        assert_eq!(Channel::parse(" "), None);
    }

    #[test]
    fn pinned_identities_tell_sources_apart_and_ignore_credentials() {
        let at = |url: &str| SourceRevision::Git { url: RemoteUrl::new(url), commit: commit() };
        let a = at("https://a");
        let b = at("https://b");
        let c = SourceRevision::Channel { repo: RemoteUrl::new("https://a"), commit: commit() };
        assert_ne!(a.pinned_identity(), b.pinned_identity());
        assert_ne!(a.pinned_identity(), c.pinned_identity());
        assert_eq!(at("https://u:secret@a/r").pinned_identity(), at("https://u:other@a/r").pinned_identity());
        assert_eq!(a.commit(), Some(&commit()));
    }
}
