//! Flakes for the flake source, as git repositories on this machine (no network), shaped
//! the way teams keep theirs: a nixpkgs-like flake whose `legacyPackages.<system>` is the
//! test package set ([`NixpkgsFlake`]), and a team's flake ([`TeamFlake`]) with that one as
//! its `nixpkgs` input, locked in its `flake.lock`, a package of its own (`our-tool`) in
//! `packages.<system>`, and nixpkgs' packages passed on as its `legacyPackages`.
//!
//! Both are evaluated purely by the server, so the test set is given the host's system and
//! a copy of the static busybox inside the flake (tests/pkgs/default.nix says why). Its
//! store paths are those of the unsalted set, which other tests build too.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{run, temp_dir};

/// The Nix system the test set's builds run on: this machine's.
pub fn host_system() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux",
        _ => "x86_64-linux",
    }
}

/// `nix` with what flakes need, and no download of the flake registry.
pub fn nix_flakes() -> Command {
    let mut nix = Command::new("nix");
    nix.args(["--extra-experimental-features", "nix-command flakes", "--option", "flake-registry", ""]);
    nix
}

/// Runs git in `dir` as a test user; its stdout, trimmed.
fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"])
        .args(args))
    .trim()
    .to_owned()
}

/// The nixpkgs-like flake: one commit holding the test package set (`pkgs.nix`), busybox
/// (`bin/busybox`) and a flake.nix exposing the set as `legacyPackages` for x86_64-linux and
/// aarch64-linux.
pub struct NixpkgsFlake {
    dir: TempDir,
    /// Its one commit: what a team flake's flake.lock pins.
    pub commit: String,
}

impl NixpkgsFlake {
    pub fn new() -> NixpkgsFlake {
        let dir = temp_dir("flake-nixpkgs");
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::create_dir(root.join("bin")).expect("create bin/");
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy the static busybox (scripts/setup)");
        let pkgs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pkgs/default.nix"))
            .expect("read tests/pkgs/default.nix");
        std::fs::write(root.join("pkgs.nix"), pkgs).expect("write pkgs.nix");
        let flake = r#"{
  description = "the test package set, shaped like nixpkgs";
  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      legacyPackages = forAll (system: import ./pkgs.nix {
        inherit system;
        hostSystem = "HOST";
        busyboxDir = ./bin;
      });
    };
}
"#;
        std::fs::write(root.join("flake.nix"), flake.replace("HOST", host_system())).expect("write flake.nix");
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "the test package set"]);
        let commit = git(root, &["rev-parse", "HEAD"]);
        NixpkgsFlake { dir, commit }
    }

    pub fn url(&self) -> String {
        format!("git+file://{}", self.dir.path().display())
    }

    /// Commits the test set with `hello` printing `greeting` instead; the commit.
    pub fn commit_greeting(&self, greeting: &str) -> String {
        let root = self.dir.path();
        std::fs::write(root.join("pkgs.nix"), super::package_repo::package_set(greeting)).expect("write pkgs.nix");
        git(root, &["commit", "-q", "-am", greeting]);
        git(root, &["rev-parse", "HEAD"])
    }
}

/// What a team flake's outputs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outputs {
    /// `packages.<system>.our-tool` and nixpkgs' `legacyPackages`.
    Complete,
    /// `packages.<system>.our-tool` only: nothing of what the registry adds to images.
    NoLegacyPackages,
    /// `packages` throws.
    Failing,
}

/// A team's flake in a git repository, `main` checked out:
/// - `main`: commit `first` (our-tool prints "our tool v1 for <system>");
/// - whatever [`TeamFlake::commit`] adds.
pub struct TeamFlake {
    dir: TempDir,
    nixpkgs: NixpkgsFlake,
    /// The first commit of `main`.
    pub first: String,
}

impl TeamFlake {
    pub fn new() -> TeamFlake {
        let nixpkgs = NixpkgsFlake::new();
        let dir = temp_dir("flake-team");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let flake = TeamFlake { dir, nixpkgs, first: String::new() };
        flake.write("v1", Outputs::Complete);
        git(flake.path(), &["add", "flake.nix"]);
        run(nix_flakes().current_dir(flake.path()).args(["flake", "lock"]));
        git(flake.path(), &["add", "flake.lock"]);
        git(flake.path(), &["commit", "-q", "-m", "our tool v1"]);
        let first = git(flake.path(), &["rev-parse", "HEAD"]);
        TeamFlake { first, ..flake }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `git+file://` reference of the repository.
    pub fn url(&self) -> String {
        format!("git+file://{}", self.path().display())
    }

    /// The commit of the nixpkgs-like input its flake.lock pins.
    pub fn nixpkgs_commit(&self) -> &str {
        &self.nixpkgs.commit
    }

    /// Runs git in the repository; its stdout, trimmed.
    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }

    /// Commits a flake.nix whose our-tool is `version` with `outputs` on `branch` (created at
    /// `main` if new; `main` is checked out afterwards), flake.lock unchanged; the commit.
    pub fn commit(&self, branch: &str, version: &str, outputs: Outputs) -> String {
        if self.git(&["branch", "--list", branch]).is_empty() {
            self.git(&["branch", branch, "main"]);
        }
        self.git(&["checkout", "-q", branch]);
        self.write(version, outputs);
        self.git(&["commit", "-q", "-am", &format!("our tool {version}, {outputs:?}")]);
        let commit = self.git(&["rev-parse", "HEAD"]);
        self.git(&["checkout", "-q", "main"]);
        commit
    }

    /// Moves the nixpkgs-like input on: `hello` prints `greeting` at its new commit, which
    /// no flake.lock pins yet.
    pub fn move_nixpkgs(&self, greeting: &str) -> String {
        self.nixpkgs.commit_greeting(greeting)
    }

    /// Commits on `branch` (created at `main` if new) a flake.lock updated to the input's
    /// current commit (`nix flake update`, asking the input anew); the commit.
    pub fn commit_lock_update(&self, branch: &str) -> String {
        if self.git(&["branch", "--list", branch]).is_empty() {
            self.git(&["branch", branch, "main"]);
        }
        self.git(&["checkout", "-q", branch]);
        run(nix_flakes().current_dir(self.path()).args(["--option", "tarball-ttl", "0", "flake", "update"]));
        self.git(&["commit", "-q", "-am", "update flake.lock"]);
        let commit = self.git(&["rev-parse", "HEAD"]);
        self.git(&["checkout", "-q", "main"]);
        commit
    }

    /// The flake's files as they are checked out (flake.nix, and flake.lock if `locked`)
    /// copied into a new plain directory, for a `path:` flake.
    pub fn copy_files(&self, locked: bool) -> (TempDir, PathBuf) {
        let dir = temp_dir("flake-path");
        let files: &[&str] = if locked { &["flake.nix", "flake.lock"] } else { &["flake.nix"] };
        for file in files {
            std::fs::copy(self.path().join(file), dir.path().join(file)).expect("copy the flake's files");
        }
        let path = dir.path().to_owned();
        (dir, path)
    }

    /// Writes flake.nix with our-tool at `version` and `outputs`.
    pub fn write(&self, version: &str, outputs: Outputs) {
        std::fs::write(self.path().join("flake.nix"), self.flake_nix(version, outputs)).expect("write flake.nix");
    }

    fn flake_nix(&self, version: &str, outputs: Outputs) -> String {
        let packages = match outputs {
            Outputs::Failing => r#"throw "this flake fails to evaluate on purpose""#,
            _ => "forAll (system: { our-tool = ourTool system; })",
        };
        let legacy = match outputs {
            Outputs::NoLegacyPackages => "",
            _ => "legacyPackages = nixpkgs.legacyPackages;",
        };
        r#"{
  description = "a team's tools, on the test package set";
  inputs.nixpkgs.url = "NIXPKGS";
  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      # The team's own package: a script that says its version and the system it is for,
      # built on the host like the whole test set.
      ourTool = system:
        let busybox = nixpkgs.legacyPackages.${system}.busybox; in
        builtins.derivation {
          name = "our-tool-1.0";
          system = "HOST";
          builder = "${busybox}/bin/sh";
          args = [ "-c" ''
            ${busybox}/bin/busybox mkdir -p $out/bin
            printf '#!${busybox}/bin/sh\necho "our tool VERSION for ${system}"\n' > $out/bin/our-tool
            ${busybox}/bin/busybox chmod 0555 $out/bin/our-tool
          '' ];
        } // { meta.mainProgram = "our-tool"; };
    in
    {
      packages = PACKAGES;
      LEGACY
    };
}
"#
        .replace("NIXPKGS", &self.nixpkgs.url())
        .replace("HOST", host_system())
        .replace("VERSION", version)
        .replace("PACKAGES", packages)
        .replace("LEGACY", legacy)
    }
}
