//! The Nix expressions of nix/, shipped inside the binary and written to a private
//! directory at start-up, so the server runs from anywhere and the expressions can import
//! each other (`./source.nix`).
//!
//! They are written to a subdirectory holding nothing else, whose NAR hash is known from
//! their text ([`super::nar`]): a pure evaluation (a flake source) imports them as a locked
//! path ([`Expressions::locked_path`]), the only way it reads a file outside the store.
//!
//! The directory (`$TMPDIR/nixery-nix-<pid>-<random>`; the PID is for people, it says
//! nothing across PID namespaces) is removed when the server stops, but a server that is
//! killed leaves it behind. So it is marked as owned with a lock (see [`crate::ownership`])
//! that the kernel releases when its server dies, however it dies, and every server removes
//! the directories of dead ones when it starts. A directory without the lock file is not
//! touched: it may be a live server's of an older version.

use crate::ownership;
use std::path::{Path, PathBuf};

const PREFIX: &str = "nixery-nix-";

/// The subdirectory the expressions are written to (beside the ownership lock).
const SUBDIR: &str = "nix";

const FILES: [(&str, &str); 4] = [
    ("source.nix", include_str!("../../nix/source.nix")),
    ("flake.nix", include_str!("../../nix/flake.nix")),
    ("lookup.nix", include_str!("../../nix/lookup.nix")),
    ("popcount.nix", include_str!("../../nix/popcount.nix")),
];

/// The expressions on disk, removed when dropped.
pub struct Expressions {
    dir: tempfile::TempDir,
    /// Tells other servers this directory is in use.
    _owner: std::fs::File,
    /// The NAR hash (SRI) of the expressions' subdirectory.
    nar_hash: String,
}

impl Expressions {
    /// Removes what dead servers left, then writes the expressions to a new directory.
    pub fn write() -> std::io::Result<Self> {
        remove_abandoned(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(&format!("{PREFIX}{}-", std::process::id())).tempdir()?;
        let owner = ownership::lock_dir(dir.path())?;
        std::fs::create_dir(dir.path().join(SUBDIR))?;
        for (name, text) in FILES {
            std::fs::write(dir.path().join(SUBDIR).join(name), text)?;
        }
        let files: Vec<(&str, &[u8])> = FILES.iter().map(|(name, text)| (*name, text.as_bytes())).collect();
        Ok(Expressions { dir, _owner: owner, nar_hash: super::nar::directory_hash(&files) })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        debug_assert!(FILES.iter().any(|(n, _)| *n == name), "unknown expression {name}");
        self.dir.path().join(SUBDIR).join(name)
    }

    /// `builtins.fetchTree`'s arguments for the expressions' directory, as JSON: a path
    /// input locked by its NAR hash.
    pub fn locked_path(&self) -> String {
        let dir = self.dir.path().join(SUBDIR);
        serde_json::json!({ "type": "path", "path": dir, "narHash": self.nar_hash }).to_string()
    }
}

/// Removes the expression directories in `tmp` whose servers are gone.
fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let (dir, name) = (entry.path(), entry.file_name());
        let name = name.to_string_lossy();
        match ownership::claim_abandoned_dir(&dir) {
            Ok(Some(_lock)) => match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(%name, "removed the Nix expressions of a dead server"),
                Err(e) => tracing::warn!(%name, error = %e, "cannot remove a dead server's Nix expressions"),
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(%name, error = %e, "cannot check a Nix expression directory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_directory_has_the_hash_it_is_locked_by() {
        let exprs = Expressions::write().unwrap();
        let written: Vec<(String, Vec<u8>)> = std::fs::read_dir(exprs.path("lookup.nix").parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect();
        assert_eq!(written.len(), FILES.len(), "the locked directory holds only the expressions");
        let files: Vec<(&str, &[u8])> = written.iter().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
        let locked: serde_json::Value = serde_json::from_str(&exprs.locked_path()).unwrap();
        assert_eq!(locked["narHash"], super::super::nar::directory_hash(&files));
        assert_eq!(locked["type"], "path");
    }

    #[test]
    fn only_the_directories_of_dead_owners_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("lookup.nix"), "{}").unwrap();
            dir
        };
        let dead = make("nixery-nix-1-dead");
        drop(ownership::lock_dir(&dead).unwrap());
        let alive = make("nixery-nix-1-alive");
        let _owner = ownership::lock_dir(&alive).unwrap();
        let unmarked = make("nixery-nix-older");
        let other = tmp.path().join("something-else");
        std::fs::create_dir(&other).unwrap();
        drop(ownership::lock_dir(&other).unwrap());

        remove_abandoned(tmp.path());
        assert!(!dead.exists(), "a dead server's directory is left");
        assert!(alive.join("lookup.nix").exists(), "a live server's directory was removed");
        assert!(unmarked.exists(), "a directory without a lock was removed");
        assert!(other.exists(), "a directory of something else was removed");
    }
}
