//! Where packages come from: a nixpkgs channel, a git repository, or a local path, and what a
//! tag means for each.
//!
//! - channel: the tarball of a nixpkgs branch or commit; the tag is ignored.
//! - git: the tag is a ref (branch or tag name) or a full commit; `latest` is the default branch.
//! - path: a local package set; the tag is ignored.
//!
//! Only a source pinned to a full commit is a fixed input, so only those give a
//! [`SourceRevision::pinned`] value that manifests may be cached under.

use crate::image::{Tag, name_is_commit};
use serde_json::json;
use std::path::PathBuf;

/// The configured package source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PkgSource {
    Channel(String),
    Git(String),
    Path(PathBuf),
}

/// A package source resolved for one request's tag: the arguments handed to nix/lookup.nix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRevision {
    /// `channel`, `git` or `path`, as nix/lookup.nix expects.
    pub kind: &'static str,
    /// JSON arguments for that kind, rendered with sorted keys.
    pub args: String,
    /// Whether these arguments always denote the same package set (a full commit).
    pub pinned: bool,
}

impl PkgSource {
    /// The source as it is for `tag`.
    pub fn revision(&self, tag: &Tag) -> SourceRevision {
        match self {
            PkgSource::Channel(channel) => SourceRevision {
                kind: "channel",
                args: json!({ "channel": channel }).to_string(),
                pinned: name_is_commit(channel),
            },
            PkgSource::Git(url) => {
                let args = if tag.as_str() == "latest" {
                    json!({ "url": url })
                } else if tag.is_commit() {
                    json!({ "url": url, "rev": tag.as_str(), "allRefs": true })
                } else {
                    json!({ "url": url, "ref": tag.as_str() })
                };
                SourceRevision { kind: "git", args: args.to_string(), pinned: tag.is_commit() }
            }
            PkgSource::Path(path) => {
                SourceRevision { kind: "path", args: json!({ "path": path }).to_string(), pinned: false }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn git_tags_select_refs_commits_or_the_default_branch() {
        let git = PkgSource::Git("https://example.org/pkgs.git".into());
        let latest = git.revision(&Tag::latest());
        assert_eq!(latest.args, r#"{"url":"https://example.org/pkgs.git"}"#);
        assert!(!latest.pinned);
        let branch = git.revision(&Tag::parse("release-23.05").unwrap());
        assert!(branch.args.contains(r#""ref":"release-23.05""#));
        assert!(!branch.pinned);
        let commit = git.revision(&Tag::parse(COMMIT).unwrap());
        assert!(commit.args.contains(COMMIT) && commit.args.contains("allRefs"));
        assert!(commit.pinned);
    }

    #[test]
    fn channels_and_paths_ignore_the_tag() {
        let channel = PkgSource::Channel("nixos-unstable".into());
        assert_eq!(channel.revision(&Tag::latest()), channel.revision(&Tag::parse("v2").unwrap()));
        assert!(!channel.revision(&Tag::latest()).pinned);
        assert!(PkgSource::Channel(COMMIT.into()).revision(&Tag::latest()).pinned);
        let path = PkgSource::Path("/srv/pkgs".into());
        assert_eq!(path.revision(&Tag::latest()), path.revision(&Tag::parse("x").unwrap()));
        assert!(!path.revision(&Tag::latest()).pinned);
    }
}
