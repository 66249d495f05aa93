//! A flake as the package source (`NIXERY_PKGS_FLAKE`): the reference the operator
//! configures, what a tag selects from it, and the locked flake an image is built from.
//!
//! References are Nix's own URL-like flake references, of the kinds whose revisions can be
//! pinned:
//!
//! | reference | what it is | `latest` |
//! |---|---|---|
//! | `git+https://host/repo`, `git+ssh://git@host/repo`, `git+http://…`, `git+file:///srv/repo` | a git repository | its default branch; `?ref=<branch>` makes it that branch, `?rev=<commit>` that commit |
//! | `github:owner/repo`, `gitlab:owner/repo`, `sourcehut:~owner/repo` | a forge's repository, fetched through its archive API | its default branch; a third part (`github:o/r/<branch or commit>`) makes it that |
//! | `path:/srv/flake` (or `path:./flake`, from the working directory) | a directory on the server | the directory as it is, read again once per `NIXERY_SOURCE_TTL` |
//!
//! Other query parameters (`dir=<subdirectory>`, `submodules=1`, `host=<forge host>`, …)
//! are passed on as given; the ones that lock a reference (`narHash`, `lastModified`,
//! `revCount`, `allRefs`) are the server's to set, and `?rev=` and `?ref=` are read as above.
//! Indirect references (`nixpkgs`, `flake:…`: the flake registry, which pure evaluation does
//! not consult), tarballs and bare paths are refused at start-up with what to write instead.
//!
//! Tags mean what they mean for a git source: a full commit pins the flake at that commit,
//! another tag names a branch or tag, `latest` is as above. A path flake has one revision,
//! the directory, so it takes `latest` only.
//!
//! Nix evaluates a flake purely, which needs it locked: a commit (`git+…?rev=`,
//! `github:o/r/<rev>`), or for a path the NAR hash of its contents. So every tag of a flake
//! is resolved ([`FlakeTarget`], done in [`crate::nix::flake`]) into a [`LockedFlake`]; the
//! flake's own `flake.lock` then pins its inputs (nixpkgs), as `nix build` would. A commit's
//! lock never changes and is kept for good; a moving tag's once per `NIXERY_SOURCE_TTL`.
//!
//! The reference as configured may carry credentials (`git+https://user:token@host/…`): it
//! goes to git and Nix only. What is shown ([`FlakeRef::shown`]) has them redacted, and a
//! flake on the server's disk is named without its path.

use super::{CommitHash, RemoteUrl};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use std::fmt;
use std::path::{Path, PathBuf};

/// Query parameters that lock a reference: the server sets them, a configured value would
/// pin the flake behind its back.
const LOCKING_PARAMS: [&str; 4] = ["narHash", "lastModified", "revCount", "allRefs"];

/// Characters escaped in a query value the server writes (a NAR hash's `+`, `/`, `=`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Why a flake reference cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlakeRefError {
    #[error(
        "'{0}' is an indirect reference, looked up in the flake registry, which pure evaluation does not use: \
         give the flake itself, e.g. github:owner/repo or git+https://host/repo"
    )]
    Indirect(String),
    #[error("a bare path is ambiguous: write path:{0} (the directory as it is) or git+file://{0} (its git commits)")]
    BarePath(String),
    #[error("'{scheme}:' references have no revisions to pin; use {supported}")]
    Unsupported { scheme: String, supported: &'static str },
    #[error("{0}")]
    Malformed(String),
}

impl FlakeRefError {
    /// The indirect reference `text`, without the credentials or token a URL in it carries
    /// (the error is repeated to whoever configured it and logged).
    fn indirect(text: &str) -> FlakeRefError {
        FlakeRefError::Indirect(crate::redact::credentials(text).into_owned())
    }
}

const SUPPORTED: &str = "git+https:, git+ssh:, git+http:, git+file:, github:, gitlab:, sourcehut: or path:";

/// The configured flake (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FlakeRef {
    kind: Kind,
    /// Query parameters passed on to Nix as given, in order.
    params: Vec<(String, Option<String>)>,
    /// What `latest` selects.
    latest: FlakeTarget,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    /// `git+<transport>://…`: the URL git is given (without `git+` and the query).
    Git(RemoteUrl),
    /// `github:`, `gitlab:`, `sourcehut:` (the scheme) and `owner/repo`.
    Forge { scheme: String, repo: String },
    /// `path:`: a directory on the server (absolute, as canonicalised at start-up).
    Path(PathBuf),
}

/// What a tag selects from a flake: the key its resolution is cached under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlakeTarget {
    /// The default branch (`HEAD`).
    Head,
    /// A branch or tag.
    Named(String),
    /// A commit: its lock never changes.
    Commit(CommitHash),
    /// A path flake as it is on disk now.
    Directory,
}

impl FlakeTarget {
    /// Whether the target always denotes the same flake (so its lock is kept for good).
    pub fn is_fixed(&self) -> bool {
        matches!(self, FlakeTarget::Commit(_))
    }
}

impl fmt::Display for FlakeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlakeTarget::Head => f.write_str("HEAD"),
            FlakeTarget::Named(name) => f.write_str(name),
            FlakeTarget::Commit(commit) => f.write_str(commit.as_str()),
            FlakeTarget::Directory => f.write_str("latest"),
        }
    }
}

/// How the server fetches a flake to lock it (see [`crate::nix::flake`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Resolve the reference with `git ls-remote` at this URL (unless it is a commit), then
    /// fetch [`FlakeRef::at_commit`].
    Git(RemoteUrl),
    /// Let Nix resolve this reference (a forge's API) and report the commit.
    Forge(String),
    /// Let Nix read this directory and report its NAR hash.
    Directory(String),
}

impl FlakeRef {
    /// Parses a configured reference. A relative `path:` is taken from `cwd`; the directory
    /// is not checked here (see [`FlakeRef::local_dir`]).
    pub fn parse(text: &str, cwd: &Path) -> Result<FlakeRef, FlakeRefError> {
        let text = text.trim();
        if text.contains('#') {
            return Err(FlakeRefError::Malformed(format!(
                "'{}' names an output (#…): give the flake only; image names choose its packages",
                crate::redact::credentials(text)
            )));
        }
        if text.starts_with('/') || text.starts_with('.') {
            return Err(FlakeRefError::BarePath(text.to_owned()));
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let Some((scheme, rest)) = base.split_once(':') else {
            return Err(FlakeRefError::indirect(text));
        };
        let mut params = Vec::new();
        let (mut reference, mut rev) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (pair.to_owned(), None),
            };
            match key.as_str() {
                "ref" => reference = value,
                "rev" => rev = value,
                k if LOCKING_PARAMS.contains(&k) => {
                    return Err(FlakeRefError::Malformed(format!(
                        "'{k}' locks a flake reference: the server locks the flake itself (leave it out)"
                    )));
                }
                _ => params.push((key, value)),
            }
        }
        let kind = match scheme {
            "git+https" | "git+http" | "git+ssh" | "git+file" => {
                let url = &base["git+".len()..];
                if !rest.starts_with("//") {
                    return Err(FlakeRefError::Malformed(format!("'{scheme}:' needs a URL: {scheme}://host/path")));
                }
                Kind::Git(RemoteUrl::new(url))
            }
            "github" | "gitlab" | "sourcehut" => {
                let parts: Vec<&str> = rest.split('/').collect();
                let plain = |s: &str| !s.is_empty() && !s.contains(['@', ':', ' ']);
                match parts.as_slice() {
                    [owner, repo] if plain(owner) && plain(repo) => {}
                    [owner, repo, third] if plain(owner) && plain(repo) && plain(third) => {
                        match CommitHash::parse(third) {
                            Some(_) => rev = Some((*third).to_owned()),
                            None => reference = Some((*third).to_owned()),
                        }
                    }
                    _ => {
                        return Err(FlakeRefError::Malformed(format!(
                            "'{}' is not {scheme}:owner/repo or {scheme}:owner/repo/<branch or commit>",
                            crate::redact::credentials(base)
                        )));
                    }
                }
                Kind::Forge { scheme: scheme.to_owned(), repo: format!("{}/{}", parts[0], parts[1]) }
            }
            "path" => {
                if reference.is_some() || rev.is_some() {
                    return Err(FlakeRefError::Malformed(
                        "a path flake has one revision, the directory: it takes no ref or rev".to_owned(),
                    ));
                }
                let dir = Path::new(rest);
                Kind::Path(if dir.is_absolute() { dir.to_owned() } else { cwd.join(dir) })
            }
            "flake" => return Err(FlakeRefError::indirect(text)),
            "http" | "https" | "file" | "tarball+https" | "tarball+http" | "tarball+file" | "file+https"
            | "file+http" | "file+file" | "hg+https" | "hg+http" | "hg+ssh" | "hg+file" => {
                return Err(FlakeRefError::Unsupported { scheme: scheme.to_owned(), supported: SUPPORTED });
            }
            _ if !base.contains("://") && !base.contains('/') => {
                return Err(FlakeRefError::indirect(text));
            }
            _ => return Err(FlakeRefError::Unsupported { scheme: scheme.to_owned(), supported: SUPPORTED }),
        };
        let latest = match (&kind, rev, reference) {
            (Kind::Path(_), _, _) => FlakeTarget::Directory,
            (_, Some(rev), _) => FlakeTarget::Commit(CommitHash::parse(&rev).ok_or_else(|| {
                FlakeRefError::Malformed(format!("rev={rev} is not a full commit hash (40 hexadecimal digits)"))
            })?),
            (_, None, Some(name)) => FlakeTarget::Named(name),
            (_, None, None) => FlakeTarget::Head,
        };
        Ok(FlakeRef { kind, params, latest })
    }

    /// What `latest` selects.
    pub fn latest(&self) -> &FlakeTarget {
        &self.latest
    }

    /// Whether the flake is a directory, which has one revision.
    pub fn is_directory(&self) -> bool {
        matches!(self.kind, Kind::Path(_))
    }

    /// The directory of a path flake (for the start-up check that it exists).
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Path(dir) => Some(dir),
            _ => None,
        }
    }

    /// With the directory of a path flake replaced by `dir` (its canonical form).
    pub fn with_dir(mut self, dir: PathBuf) -> FlakeRef {
        if let Kind::Path(_) = self.kind {
            self.kind = Kind::Path(dir);
        }
        self
    }

    /// The `dir=` parameter: the flake's subdirectory of the fetched tree.
    pub fn subdir(&self) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == "dir").and_then(|(_, v)| v.as_deref())
    }

    /// How `target` is fetched to lock it.
    pub fn fetch(&self, target: &FlakeTarget) -> Fetch {
        match &self.kind {
            Kind::Git(url) => Fetch::Git(url.clone()),
            Kind::Forge { scheme, repo } => {
                let at = match target {
                    FlakeTarget::Head | FlakeTarget::Directory => String::new(),
                    FlakeTarget::Named(name) => format!("/{name}"),
                    FlakeTarget::Commit(commit) => format!("/{commit}"),
                };
                Fetch::Forge(format!("{scheme}:{repo}{at}{}", self.query(&[])))
            }
            Kind::Path(dir) => Fetch::Directory(format!("path:{}{}", dir.display(), self.query(&[]))),
        }
    }

    /// The flake at `commit`, locked: what Nix fetches and evaluates. A git commit may be on
    /// any branch (`allRefs`: Nix before 2.20 fetches only the default branch otherwise).
    pub fn at_commit(&self, commit: &CommitHash) -> String {
        match &self.kind {
            Kind::Git(url) => {
                format!("git+{}{}", url.as_str(), self.query(&[("allRefs", "1"), ("rev", commit.as_str())]))
            }
            Kind::Forge { scheme, repo } => format!("{scheme}:{repo}/{commit}{}", self.query(&[])),
            Kind::Path(_) => unreachable!("a path flake has no commits"),
        }
    }

    /// A snapshot of a path flake in the store, locked by its NAR hash.
    fn at_snapshot(&self, store_path: &str, nar_hash: &str) -> String {
        format!("path:{store_path}{}", self.query(&[("narHash", nar_hash)]))
    }

    /// `?k=v&…` of the passed-on parameters and `extra` (values escaped), or nothing.
    fn query(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        pairs.extend(extra.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE))));
        if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) }
    }

    /// The reference without what selects a revision and with credentials redacted: what
    /// the flake is, for cache identities and provenance (a rotated token is the same flake,
    /// a different `dir=` is not).
    pub fn redacted(&self) -> String {
        let base = match &self.kind {
            Kind::Git(url) => format!("git+{}", url.redacted()),
            Kind::Forge { scheme, repo } => format!("{scheme}:{repo}"),
            Kind::Path(dir) => format!("path:{}", dir.display()),
        };
        crate::redact::credentials(&format!("{base}{}", self.query(&[]))).into_owned()
    }

    /// What logs, pages and answers show: [`Self::redacted`], except that a flake on the
    /// server's disk is not located.
    pub fn shown(&self) -> String {
        match &self.kind {
            Kind::Path(_) => "a path flake on the server".to_owned(),
            Kind::Git(url) if url.shown() != url.redacted() => "a git flake on the server".to_owned(),
            _ => self.redacted(),
        }
    }

    /// `text` (a message of git's or Nix's about this flake) with credentials and the
    /// server's paths of the flake removed.
    pub fn redact_in(&self, text: &str) -> String {
        match &self.kind {
            Kind::Git(url) => url.redact_in(text),
            Kind::Forge { .. } => crate::redact::credentials(text).into_owned(),
            Kind::Path(dir) => {
                let text = crate::redact::credentials(text);
                let dir = dir.display().to_string();
                if dir.is_empty() { text.into_owned() } else { text.replace(&dir, "<the flake>") }
            }
        }
    }
}

impl fmt::Display for FlakeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Debug for FlakeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakeRef({:?})", self.shown())
    }
}

/// What a flake was locked at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlakeLock {
    /// A commit of a git or forge flake.
    Commit(CommitHash),
    /// A path flake as read once: its copy in the store, and that copy's NAR hash (SRI),
    /// which locks it.
    Snapshot { store_path: String, nar_hash: String },
}

/// A flake locked for one image: what Nix evaluates, and what provenance can name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockedFlake {
    pub flake: FlakeRef,
    pub lock: FlakeLock,
    /// The commit of the flake's `nixpkgs` input as its `flake.lock` pins it, where it has
    /// such an input locked by commit.
    pub nixpkgs: Option<CommitHash>,
    /// When the locked revision was made (the commit's time, seconds since the epoch), where
    /// Nix reported it; never for a path flake, whose files' times are not a revision's.
    pub last_modified: Option<u64>,
}

impl LockedFlake {
    /// The locked reference handed to `builtins.getFlake`.
    pub fn reference(&self) -> String {
        match &self.lock {
            FlakeLock::Commit(commit) => self.flake.at_commit(commit),
            FlakeLock::Snapshot { store_path, nar_hash } => self.flake.at_snapshot(store_path, nar_hash),
        }
    }

    /// The commit, for a git or forge flake.
    pub fn commit(&self) -> Option<&CommitHash> {
        match &self.lock {
            FlakeLock::Commit(commit) => Some(commit),
            FlakeLock::Snapshot { .. } => None,
        }
    }

    /// Stable data naming exactly this flake's contents, for caches that outlive the process:
    /// the flake and its commit, or a path flake's NAR hash (its contents, wherever they are).
    pub fn identity(&self) -> Value {
        match &self.lock {
            FlakeLock::Commit(commit) => json!(["flake", self.flake.redacted(), commit.as_str()]),
            FlakeLock::Snapshot { nar_hash, .. } => {
                json!(["flake", format!("path:{}", self.flake.query(&[])), nar_hash])
            }
        }
    }
}

/// The commit of the root's `nixpkgs` input in a `flake.lock` (version 5 to 7: `nodes`, a
/// `root` node naming its inputs, each input a node name or a `follows` path), if it is
/// locked by commit. Anything else (no such input, a follows path, another format) is `None`:
/// provenance names it only where it is certain.
pub fn locked_nixpkgs(lock_file: &str) -> Option<CommitHash> {
    let lock: Value = serde_json::from_str(lock_file).ok()?;
    let nodes = lock.get("nodes")?;
    let root = lock.get("root")?.as_str()?;
    let node = nodes.get(root)?.get("inputs")?.get("nixpkgs")?.as_str()?;
    CommitHash::parse(nodes.get(node)?.get("locked")?.get("rev")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn parse(text: &str) -> FlakeRef {
        FlakeRef::parse(text, Path::new("/srv")).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn commit() -> CommitHash {
        CommitHash::parse(COMMIT).unwrap()
    }

    #[test]
    fn git_flakes_are_locked_by_commit_on_any_branch() {
        let flake = parse("git+https://user:t0ken@git.example/org/pkgs.git?dir=nix&submodules=1");
        assert_eq!(flake.latest(), &FlakeTarget::Head);
        assert_eq!(
            flake.fetch(&FlakeTarget::Head),
            Fetch::Git(RemoteUrl::new("https://user:t0ken@git.example/org/pkgs.git"))
        );
        assert_eq!(
            flake.at_commit(&commit()),
            format!("git+https://user:t0ken@git.example/org/pkgs.git?dir=nix&submodules=1&allRefs=1&rev={COMMIT}")
        );
        assert_eq!(flake.subdir(), Some("nix"));
        assert_eq!(flake.redacted(), "git+https://***@git.example/org/pkgs.git?dir=nix&submodules=1");
        assert!(!format!("{flake:?} {flake}").contains("t0ken"));
        for ssh in ["git+ssh://git@host/org/repo", "git+http://host/repo", "git+file:///srv/repo"] {
            assert!(matches!(parse(ssh).fetch(&FlakeTarget::Head), Fetch::Git(_)), "{ssh}");
        }
    }

    #[test]
    fn ref_and_rev_say_what_latest_is() {
        assert_eq!(parse("git+https://h/r?ref=develop").latest(), &FlakeTarget::Named("develop".into()));
        assert_eq!(parse(&format!("git+https://h/r?rev={COMMIT}")).latest(), &FlakeTarget::Commit(commit()));
        assert_eq!(parse("github:o/r/release-24.11").latest(), &FlakeTarget::Named("release-24.11".into()));
        assert_eq!(parse(&format!("github:o/r/{COMMIT}")).latest(), &FlakeTarget::Commit(commit()));
        assert_eq!(parse("github:o/r").latest(), &FlakeTarget::Head);
        // What selects a revision is not part of what the flake is.
        assert_eq!(parse("git+https://h/r?ref=develop").redacted(), "git+https://h/r");
        assert_eq!(parse("github:o/r/develop").at_commit(&commit()), format!("github:o/r/{COMMIT}"));
    }

    #[test]
    fn forge_flakes_are_resolved_by_nix_at_each_target() {
        let flake = parse("github:NixOS/templates?dir=trivial");
        assert_eq!(flake.fetch(&FlakeTarget::Head), Fetch::Forge("github:NixOS/templates?dir=trivial".into()));
        assert_eq!(
            flake.fetch(&FlakeTarget::Named("v1".into())),
            Fetch::Forge("github:NixOS/templates/v1?dir=trivial".into())
        );
        assert_eq!(
            flake.fetch(&FlakeTarget::Commit(commit())),
            Fetch::Forge(format!("github:NixOS/templates/{COMMIT}?dir=trivial"))
        );
        assert_eq!(flake.shown(), "github:NixOS/templates?dir=trivial");
        assert_eq!(parse("sourcehut:~user/repo").redacted(), "sourcehut:~user/repo");
    }

    #[test]
    fn a_path_flake_is_locked_by_its_contents_and_never_shown() {
        let flake = parse("path:./flakes/ours");
        assert_eq!(flake.local_dir(), Some(Path::new("/srv/./flakes/ours")));
        let flake = flake.with_dir("/srv/flakes/ours".into());
        assert!(flake.is_directory());
        assert_eq!(flake.latest(), &FlakeTarget::Directory);
        assert_eq!(flake.fetch(&FlakeTarget::Directory), Fetch::Directory("path:/srv/flakes/ours".into()));
        let locked = LockedFlake {
            flake: flake.clone(),
            lock: FlakeLock::Snapshot { store_path: "/nix/store/x-source".into(), nar_hash: "sha256-a+b/c=".into() },
            nixpkgs: None,
            last_modified: None,
        };
        assert_eq!(locked.reference(), "path:/nix/store/x-source?narHash=sha256-a%2Bb%2Fc%3D");
        assert_eq!(locked.commit(), None);
        assert!(!flake.shown().contains("/srv"), "{}", flake.shown());
        let message = "error: path '/srv/flakes/ours/flake.nix' does not exist";
        assert_eq!(flake.redact_in(message), "error: path '<the flake>/flake.nix' does not exist");
        // The same contents elsewhere are the same package set.
        let moved = LockedFlake { flake: parse("path:/elsewhere"), ..locked.clone() };
        assert_eq!(locked.identity(), moved.identity());
        let git_local = parse("git+file:///srv/repo");
        assert!(!git_local.shown().contains("/srv"), "{}", git_local.shown());
    }

    #[test]
    fn identities_name_the_flake_and_commit_without_credentials() {
        let at = |text: &str| LockedFlake {
            flake: parse(text),
            lock: FlakeLock::Commit(commit()),
            nixpkgs: None,
            last_modified: None,
        };
        assert_eq!(at("git+https://u:a@h/r").identity(), at("git+https://u:b@h/r?ref=main").identity());
        assert_ne!(at("git+https://h/r").identity(), at("git+https://h/r?dir=sub").identity());
        assert_ne!(at("git+https://h/r").identity(), at("github:h/r").identity());
        assert_eq!(at("github:o/r").identity(), json!(["flake", "github:o/r", COMMIT]));
    }

    #[test]
    fn references_that_cannot_be_pinned_are_refused_saying_what_to_write() {
        let err = |text: &str| FlakeRef::parse(text, Path::new("/")).unwrap_err();
        assert!(matches!(err("nixpkgs"), FlakeRefError::Indirect(_)));
        assert!(matches!(err("flake:nixpkgs"), FlakeRefError::Indirect(_)));
        assert!(err("/srv/flake").to_string().contains("path:/srv/flake"), "{}", err("/srv/flake"));
        assert!(matches!(err("https://example.org/f.tar.gz"), FlakeRefError::Unsupported { .. }));
        assert!(matches!(err("hg+https://h/r"), FlakeRefError::Unsupported { .. }));
        assert!(err("github:o/r#hello").to_string().contains("names an output"));
        assert!(err("github:o").to_string().contains("github:owner/repo"));
        assert!(err("git+https://h/r?narHash=sha256-x").to_string().contains("locks"));
        assert!(err("git+https://h/r?rev=abc").to_string().contains("full commit"));
        assert!(err("path:/x?rev=abc").to_string().contains("one revision"));
        assert!(matches!(err("git+https:h/r"), FlakeRefError::Malformed(_)));
        // A token in a mistyped reference is not repeated back.
        for text in ["flake:ours?access_token=SECRETtoken42", "ours?token=SECRETtoken42"] {
            let shown = err(text).to_string();
            assert!(matches!(err(text), FlakeRefError::Indirect(_)) && !shown.contains("SECRET"), "{shown}");
        }
    }

    #[test]
    fn the_nixpkgs_input_is_read_from_the_lock_file() {
        let lock = format!(
            r#"{{"nodes": {{"nixpkgs_2": {{"locked": {{"rev": "{COMMIT}", "type": "github"}}}},
                "utils": {{"locked": {{"rev": "{}"}}}},
                "root": {{"inputs": {{"nixpkgs": "nixpkgs_2", "utils": "utils"}}}}}},
              "root": "root", "version": 7}}"#,
            "f".repeat(40)
        );
        assert_eq!(locked_nixpkgs(&lock), Some(commit()));
        let follows = r#"{"nodes": {"root": {"inputs": {"nixpkgs": ["utils", "nixpkgs"]}}}, "root": "root"}"#;
        assert_eq!(locked_nixpkgs(follows), None);
        assert_eq!(locked_nixpkgs(r#"{"nodes": {"root": {}}, "root": "root"}"#), None);
        assert_eq!(locked_nixpkgs("not json"), None);
    }
}
