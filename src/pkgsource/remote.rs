//! Git remotes: URLs that may carry credentials, and `git ls-remote`, which turns a moving
//! reference into a commit without cloning anything.
//!
//! A remote URL may hold a token (`https://user:token@host/repo`). It is handed as is only to
//! git and Nix; everywhere else (logs, errors, `Debug`, cache identities) it is shown as
//! [`RemoteUrl::redacted`], and git's own messages are redacted before they go anywhere. A
//! remote on the server's own disk (`file://...` or a path) is a server file path, which no
//! answer or log line shows: [`RemoteUrl::shown`] names it only as the local repository.
//!
//! `git ls-remote` runs with no terminal prompt (`GIT_TERMINAL_PROMPT=0`, stdin closed), under
//! a deadline, and is killed when the request that waits for it goes away. A named reference
//! is asked for by its full names (`refs/heads/<name>`, `refs/tags/<name>` and the peeled
//! `refs/tags/<name>^{}`), never as a pattern: `ls-remote <name>` alone would also match
//! `refs/heads/other/<name>`. A branch wins over a tag of the same name, as git's own lookup
//! does; an annotated tag resolves to the commit it points at.

use super::{CommitHash, RemoteRef, SourceError};
use std::fmt;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// A git remote's URL (credentials and all); shown redacted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RemoteUrl(String);

impl RemoteUrl {
    pub fn new(url: impl Into<String>) -> Self {
        RemoteUrl(url.into())
    }

    /// The URL as configured, credentials included: for git and Nix only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The user-info part of `scheme://user-info@host/...`, if any.
    fn user_info(&self) -> Option<&str> {
        let (_, rest) = self.0.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority.rfind('@').map(|at| &authority[..at])
    }

    /// The path of a remote on this machine (`file:///srv/repo`, `/srv/repo`), if it is one.
    fn local_path(&self) -> Option<&str> {
        if let Some(path) = self.0.strip_prefix("file://") {
            return Some(path);
        }
        (self.0.starts_with('/') || self.0.starts_with('.')).then_some(self.0.as_str())
    }

    /// What logs and answers show: the URL without credentials ([`Self::redacted`]), and
    /// a remote on this machine without its path.
    pub fn shown(&self) -> String {
        match self.local_path() {
            Some(_) => LOCAL.to_owned(),
            None => self.redacted(),
        }
    }

    /// The URL without credentials ([`crate::redact::credentials`]; part of cache
    /// identities, where a token must not count but a local path must).
    pub fn redacted(&self) -> String {
        crate::redact::credentials(&self.0).into_owned()
    }

    /// `text` (a message of git's) with credentials removed (those of any URL in it, and this
    /// URL's user info wherever it shows on its own), and a local remote's path replaced by
    /// what [`Self::shown`] says.
    pub fn redact_in(&self, text: &str) -> String {
        let text = crate::redact::credentials(text);
        let text = match self.user_info() {
            Some(info) if !info.is_empty() => text.replace(info, crate::redact::MASK),
            _ => text.into_owned(),
        };
        match self.local_path() {
            Some(path) if !path.is_empty() => text.replace(&self.0, LOCAL).replace(path, LOCAL),
            _ => text,
        }
    }

    /// GitHub's archive tarball of `commit`, for a plain `https://github.com/<owner>/<repo>`
    /// URL (no credentials: a private repository goes through git, which knows how to send
    /// them).
    pub fn github_archive(&self, commit: &CommitHash) -> Option<String> {
        let path = self.0.strip_prefix("https://github.com/")?;
        let path = path.trim_end_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let (owner, repo) = path.split_once('/')?;
        let plain = |s: &str| {
            !s.is_empty() && !s.starts_with('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        (plain(owner) && plain(repo)).then(|| format!("https://github.com/{owner}/{repo}/archive/{commit}.tar.gz"))
    }
}

/// How a remote on this machine is shown.
const LOCAL: &str = "the local repository";

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({:?})", self.shown())
    }
}

/// Runs `git ls-remote`.
#[derive(Clone, Copy, Debug)]
pub struct LsRemote {
    pub timeout: Duration,
}

impl LsRemote {
    /// The commit `reference` of `url` points at now.
    pub async fn resolve(&self, url: &RemoteUrl, reference: &RemoteRef) -> Result<CommitHash, SourceError> {
        let wanted: Vec<String> = match reference {
            RemoteRef::Head => vec!["HEAD".to_owned()],
            RemoteRef::Named(name) => {
                vec![format!("refs/heads/{name}"), format!("refs/tags/{name}^{{}}"), format!("refs/tags/{name}")]
            }
        };
        let mut git = Command::new("git");
        git.args(["ls-remote", "--"])
            .arg(url.as_str())
            .args(&wanted)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let remote = url.shown();
        let out = match tokio::time::timeout(self.timeout, git.output()).await {
            Err(_) => {
                return Err(SourceError::Timeout {
                    remote,
                    reference: reference.clone(),
                    seconds: self.timeout.as_secs(),
                });
            }
            Ok(out) => out.map_err(SourceError::Spawn)?,
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let message = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("git ls-remote failed");
            return Err(SourceError::Remote { remote, reference: reference.clone(), message: url.redact_in(message) });
        }
        let listing = String::from_utf8_lossy(&out.stdout);
        let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
        // The first wanted name that is listed (a branch, then a peeled tag, then a tag).
        let found = wanted.iter().find_map(|name| refs.iter().find(|(_, r)| r == name).map(|(hash, _)| *hash));
        let Some(hash) = found else {
            return Err(SourceError::UnknownRef { remote, reference: reference.clone() });
        };
        CommitHash::parse(hash).ok_or_else(|| SourceError::Remote {
            remote,
            reference: reference.clone(),
            message: format!("'{hash}' is not a SHA-1 commit hash"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn credentials_never_show() {
        let url = RemoteUrl::new("https://user:s3cret@git.example/org/pkgs.git");
        assert_eq!(url.redacted(), "https://***@git.example/org/pkgs.git");
        assert_eq!(url.to_string(), url.redacted());
        assert!(!format!("{url:?}").contains("s3cret"));
        let message = "fatal: unable to access 'https://user:s3cret@git.example/org/pkgs.git/': 403";
        assert!(!url.redact_in(message).contains("s3cret"), "{}", url.redact_in(message));
        let plain = RemoteUrl::new("https://git.example/a@b");
        assert_eq!(plain.redacted(), "https://git.example/a@b", "an @ in the path is not user info");
        assert_eq!(RemoteUrl::new("/srv/repo").redacted(), "/srv/repo");
        for local in ["/srv/repo", "file:///srv/repo"] {
            let url = RemoteUrl::new(local);
            assert_eq!((url.shown(), url.to_string()), (LOCAL.to_owned(), LOCAL.to_owned()));
            let message = format!("fatal: '{local}' does not appear to be a git repository");
            assert!(!url.redact_in(&message).contains("/srv/repo"), "{}", url.redact_in(&message));
        }
        assert_eq!(RemoteUrl::new("https://git.example/r").shown(), "https://git.example/r");
    }

    #[test]
    fn github_remotes_have_archive_tarballs() {
        let commit = CommitHash::parse(&"a".repeat(40)).unwrap();
        let tarball = |url: &str| RemoteUrl::new(url).github_archive(&commit);
        let nixpkgs = format!("https://github.com/NixOS/nixpkgs/archive/{commit}.tar.gz");
        assert_eq!(tarball("https://github.com/NixOS/nixpkgs").as_deref(), Some(nixpkgs.as_str()));
        assert_eq!(tarball("https://github.com/NixOS/nixpkgs.git/").as_deref(), Some(nixpkgs.as_str()));
        for other in [
            "https://u:t@github.com/NixOS/nixpkgs",
            "https://github.com/NixOS",
            "https://github.com/a/b/c",
            "git@github.com:NixOS/nixpkgs",
            "file:///srv/nixpkgs",
            "https://github.com/../x",
        ] {
            assert_eq!(tarball(other), None, "{other}");
        }
    }

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[tokio::test]
    async fn resolves_branches_tags_and_head_of_a_real_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        git(repo, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git(repo, &["rev-parse", "HEAD"]);
        git(repo, &["tag", "-a", "v1", "-m", "annotated"]);
        git(repo, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = git(repo, &["rev-parse", "HEAD"]);
        git(repo, &["tag", "v2"]);
        git(repo, &["branch", "v2", &one]);
        git(repo, &["branch", "other/x"]);

        let url = RemoteUrl::new(format!("file://{}", repo.display()));
        let ls = LsRemote { timeout: Duration::from_secs(30) };
        let at = |r: RemoteRef| {
            let url = url.clone();
            async move { ls.resolve(&url, &r).await }
        };
        assert_eq!(at(RemoteRef::Head).await.unwrap().as_str(), two);
        assert_eq!(at(RemoteRef::Named("main".into())).await.unwrap().as_str(), two);
        assert_eq!(at(RemoteRef::Named("v1".into())).await.unwrap().as_str(), one, "annotated tags are peeled");
        assert_eq!(at(RemoteRef::Named("v2".into())).await.unwrap().as_str(), one, "the branch wins over the tag");
        let err = at(RemoteRef::Named("nope".into())).await.unwrap_err();
        assert!(matches!(&err, SourceError::UnknownRef { reference: RemoteRef::Named(n), .. } if n == "nope"), "{err}");
        let err = at(RemoteRef::Named("x".into())).await.unwrap_err();
        assert!(matches!(err, SourceError::UnknownRef { .. }), "a name is not a pattern: {err}");

        let missing = RemoteUrl::new(format!("file://u:s3cret@{}/missing", repo.display()));
        let err = ls.resolve(&missing, &RemoteRef::Head).await.unwrap_err();
        assert!(matches!(err, SourceError::Remote { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
