//! How a [`SourceRevision`] is handed to nix/source.nix: a source type and JSON arguments,
//! both passed with `--argstr` and decoded there with `builtins.fromJSON`, so a URL, ref or
//! path is data and never Nix code.
//!
//! - channel: `{ channel }`, the branch or commit of nixpkgs' archive URL;
//! - git: `builtins.fetchGit`'s arguments: `{ url }` for the default branch, `{ url, ref }`
//!   for a ref, `{ url, rev, allRefs = true }` for a commit (which may be on any ref);
//! - path: `{ path }`.

use crate::pkgsource::{GitRevision, SourceRevision};
use serde_json::json;

/// nix/source.nix's `srcType` and `srcArgs` for `source`.
pub fn nix_args(source: &SourceRevision) -> (&'static str, String) {
    let (kind, args) = match source {
        SourceRevision::Channel(channel) => ("channel", json!({ "channel": channel.as_str() })),
        SourceRevision::Git { url, at } => {
            let args = match at {
                GitRevision::DefaultBranch => json!({ "url": url }),
                GitRevision::Ref(tag) => json!({ "url": url, "ref": tag.as_str() }),
                GitRevision::Commit(commit) => json!({ "url": url, "rev": commit.as_str(), "allRefs": true }),
            };
            ("git", args)
        }
        SourceRevision::Path(path) => ("path", json!({ "path": path })),
    };
    (kind, args.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Tag;
    use crate::pkgsource::{Channel, PkgSource};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn git_revisions_become_fetch_git_arguments() {
        let git = PkgSource::Git("https://example.org/pkgs.git".into());
        let latest = nix_args(&git.revision(&Tag::latest()));
        assert_eq!(latest, ("git", r#"{"url":"https://example.org/pkgs.git"}"#.to_owned()));
        let (_, branch) = nix_args(&git.revision(&Tag::parse("release-23.05").unwrap()));
        assert!(branch.contains(r#""ref":"release-23.05""#), "{branch}");
        let (_, commit) = nix_args(&git.revision(&Tag::parse(COMMIT).unwrap()));
        assert!(commit.contains(COMMIT) && commit.contains(r#""allRefs":true"#), "{commit}");
        assert!(!commit.contains("\"ref\""), "{commit}");
    }

    #[test]
    fn channels_and_paths() {
        let channel = PkgSource::Channel(Channel::parse("nixos-unstable").unwrap()).revision(&Tag::latest());
        assert_eq!(nix_args(&channel), ("channel", r#"{"channel":"nixos-unstable"}"#.to_owned()));
        let pinned = PkgSource::Channel(Channel::parse(COMMIT).unwrap()).revision(&Tag::latest());
        assert_eq!(nix_args(&pinned), ("channel", format!(r#"{{"channel":"{COMMIT}"}}"#)));
        let path = PkgSource::Path("/srv/pkgs".into()).revision(&Tag::latest());
        assert_eq!(nix_args(&path), ("path", r#"{"path":"/srv/pkgs"}"#.to_owned()));
    }

    #[test]
    fn text_stays_data() {
        let tag = Tag::parse("a_b").unwrap();
        let git = PkgSource::Git(r#"https://x/"; builtins.abort "no"#.into()).revision(&tag);
        let (_, args) = nix_args(&git);
        let back: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(back["url"], r#"https://x/"; builtins.abort "no"#);
    }
}
