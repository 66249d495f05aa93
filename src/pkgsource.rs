//! Where packages come from: a nixpkgs channel, a git repository, or a local path, and what a
//! tag means for each.
//!
//! - channel: the tarball of a nixpkgs branch or commit; the tag is ignored.
//! - git: the tag is a ref (branch or tag name) or a full commit; `latest` is the default branch.
//! - path: a local package set; the tag is ignored.
//!
//! A [`PkgSource`] is what the operator configured, a [`SourceRevision`] what one request's
//! tag selects from it. Both say what they hold (a branch or a [`CommitHash`], a ref or the
//! default branch), so whether a revision is fixed is a match on its variant, not a look at
//! a string. Nix's arguments for a revision are rendered where Nix is called
//! (`crate::nix`), and the identity a cached manifest is filed under is derived from the
//! typed fields here ([`SourceRevision::pinned_identity`]): only a source pinned to a full
//! commit always denotes the same package set, so only those have one.

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

    /// The branch or commit, as nixpkgs' archive URLs name it.
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
    Channel(Channel),
    /// A git repository, by any URL `builtins.fetchGit` takes.
    Git(String),
    Path(PathBuf),
}

/// Which commit of a git source a tag selects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GitRevision {
    /// `latest`: whatever the default branch points at.
    DefaultBranch,
    /// A branch or tag name.
    Ref(Tag),
    Commit(CommitHash),
}

/// A package source resolved for one request's tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceRevision {
    Channel(Channel),
    Git { url: String, at: GitRevision },
    Path(PathBuf),
}

impl PkgSource {
    /// The source as it is for `tag`.
    pub fn revision(&self, tag: &Tag) -> SourceRevision {
        match self {
            PkgSource::Channel(channel) => SourceRevision::Channel(channel.clone()),
            PkgSource::Git(url) => {
                let at = if *tag == Tag::latest() {
                    GitRevision::DefaultBranch
                } else {
                    CommitHash::parse(tag.as_str()).map_or_else(|| GitRevision::Ref(tag.clone()), GitRevision::Commit)
                };
                SourceRevision::Git { url: url.clone(), at }
            }
            PkgSource::Path(path) => SourceRevision::Path(path.clone()),
        }
    }
}

impl SourceRevision {
    /// For a revision that always denotes the same package set (a full commit), what it is,
    /// as stable data for the keys of caches that outlive the process; `None` for one that
    /// moves (a branch, the default branch, a local path). The keys that embed it carry
    /// their own version.
    pub fn pinned_identity(&self) -> Option<Value> {
        match self {
            SourceRevision::Channel(Channel::Commit(commit)) => Some(json!(["channel", commit.as_str()])),
            SourceRevision::Git { url, at: GitRevision::Commit(commit) } => Some(json!(["git", url, commit.as_str()])),
            SourceRevision::Channel(Channel::Branch(_)) | SourceRevision::Git { .. } | SourceRevision::Path(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn commits_are_forty_lower_case_hex_digits() {
        assert_eq!(CommitHash::parse(COMMIT).map(|c| c.to_string()), Some(COMMIT.to_owned()));
        let tag_commit = Tag::parse(COMMIT).unwrap();
        assert!(CommitHash::parse(tag_commit.as_str()).is_some());
        for not in ["0123456789abcdef", &COMMIT.to_uppercase(), &format!("{COMMIT}0"), &COMMIT.replace('a', "g"), ""] {
            assert_eq!(CommitHash::parse(not), None, "{not}");
        }
    }

    #[test]
    fn git_tags_select_refs_commits_or_the_default_branch() {
        let url = "https://example.org/pkgs.git".to_owned();
        let git = PkgSource::Git(url.clone());
        let latest = git.revision(&Tag::latest());
        assert_eq!(latest, SourceRevision::Git { url: url.clone(), at: GitRevision::DefaultBranch });
        assert_eq!(latest.pinned_identity(), None);
        let branch_tag = Tag::parse("release-23.05").unwrap();
        let branch = git.revision(&branch_tag);
        assert_eq!(branch, SourceRevision::Git { url: url.clone(), at: GitRevision::Ref(branch_tag) });
        assert_eq!(branch.pinned_identity(), None);
        let commit = git.revision(&Tag::parse(COMMIT).unwrap());
        assert_eq!(
            commit,
            SourceRevision::Git { url: url.clone(), at: GitRevision::Commit(CommitHash::parse(COMMIT).unwrap()) }
        );
        assert_eq!(commit.pinned_identity(), Some(json!(["git", url, COMMIT])));
    }

    #[test]
    fn channels_and_paths_ignore_the_tag() {
        let channel = PkgSource::Channel(Channel::parse("nixos-unstable").unwrap());
        assert_eq!(channel.revision(&Tag::latest()), channel.revision(&Tag::parse("v2").unwrap()));
        assert_eq!(channel.revision(&Tag::latest()).pinned_identity(), None);
        let pinned = PkgSource::Channel(Channel::parse(COMMIT).unwrap()).revision(&Tag::latest());
        assert_eq!(pinned.pinned_identity(), Some(json!(["channel", COMMIT])));
        let path = PkgSource::Path("/srv/pkgs".into());
        assert_eq!(path.revision(&Tag::latest()), path.revision(&Tag::parse("x").unwrap()));
        assert_eq!(path.revision(&Tag::latest()).pinned_identity(), None);
    }

    #[test]
    fn a_channel_is_a_branch_unless_it_is_a_full_commit() {
        assert_eq!(Channel::parse("nixos-23.05"), Some(Channel::Branch("nixos-23.05".into())));
        assert_eq!(Channel::parse(COMMIT), Some(Channel::Commit(CommitHash::parse(COMMIT).unwrap())));
        assert_eq!(Channel::parse(&COMMIT[..12]), Some(Channel::Branch(COMMIT[..12].into())));
        assert_eq!(Channel::parse(COMMIT).unwrap().as_str(), COMMIT);
        assert_eq!(Channel::parse(" "), None);
    }

    #[test]
    fn pinned_identities_tell_sources_apart() {
        let commit = CommitHash::parse(COMMIT).unwrap();
        let a = SourceRevision::Git { url: "https://a".into(), at: GitRevision::Commit(commit.clone()) };
        let b = SourceRevision::Git { url: "https://b".into(), at: GitRevision::Commit(commit.clone()) };
        let c = SourceRevision::Channel(Channel::Commit(commit));
        assert_ne!(a.pinned_identity(), b.pinned_identity());
        assert_ne!(a.pinned_identity(), c.pinned_identity());
    }
}
