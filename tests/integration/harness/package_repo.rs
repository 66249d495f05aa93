//! A git repository of the test package set, for channel and git sources: branches whose
//! `hello` prints different greetings, and commits the tests pin.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use super::{run, temp_dir};

/// The package set with `hello` printing `greeting`.
pub fn package_set(greeting: &str) -> String {
    let pkgs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix"))
        .expect("read tests/pkgs/default.nix");
    assert!(pkgs.contains("Hello, world!"), "tests/pkgs/default.nix no longer greets the world");
    pkgs.replace("Hello, world!", greeting)
}

/// A repository in a temp dir (removed on drop):
/// - `main`: commit `first` ("Hello, world!"), then a commit "Hello, v2!" (its head);
/// - `old`: at `first`;
/// - `nixos-test`: `first` plus a commit "Hello, channel!".
pub struct PackageRepo {
    dir: TempDir,
    /// The first commit of `main`.
    pub first: String,
    url: String,
}

impl PackageRepo {
    pub fn new() -> PackageRepo {
        let dir = temp_dir("package-repo");
        let url = format!("file://{}", dir.path().display());
        let repo = PackageRepo { dir, first: String::new(), url };
        run(Command::new("git").args(["init", "-q", "-b", "main"]).arg(repo.path()));
        let first = repo.commit_checked_out("Hello, world!");
        repo.git(&["branch", "old"]);
        repo.commit("main", "Hello, v2!");
        repo.git(&["branch", "nixos-test", &first]);
        repo.commit("nixos-test", "Hello, channel!");
        PackageRepo { first, ..repo }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file://` URL of the repository.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A server's environment for this repository as its package source (the harness's
    /// default local package set unset).
    pub fn source_env(&self) -> [(&'static str, &str); 2] {
        [("NIXERY_PKGS_REPO", &self.url), ("NIXERY_PKGS_PATH", "")]
    }

    /// Runs git in the repository; its stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        run(Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
            .args(args))
        .trim()
        .to_owned()
    }

    /// Commits the package set with `hello` printing `greeting` on `branch` (which stays
    /// checked out elsewhere: `main` is checked out afterwards); the commit.
    pub fn commit(&self, branch: &str, greeting: &str) -> String {
        self.git(&["checkout", "-q", branch]);
        let commit = self.commit_checked_out(greeting);
        self.git(&["checkout", "-q", "main"]);
        commit
    }

    fn commit_checked_out(&self, greeting: &str) -> String {
        std::fs::write(self.path().join("default.nix"), package_set(greeting)).expect("write default.nix");
        self.git(&["add", "default.nix"]);
        self.git(&["commit", "-q", "-m", greeting]);
        self.git(&["rev-parse", "HEAD"])
    }
}
