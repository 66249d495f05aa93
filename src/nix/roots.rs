//! GC roots for the store paths an image is built from, held until its layers are stored.
//!
//! Between `nix-store --realise` and the last layer archive, the image's store paths are
//! read from the local store. Nothing else keeps them alive: Nix's automatic collection
//! (`min-free`/`max-free` in nix.conf, run while a build needs space) or an operator's
//! `nix-store --gc` would delete a path that is being archived, and the archive would fail
//! halfway. So the realisation registers a root for each requested output (`nix-store
//! --realise --add-root <dir>/result`, which roots their runtime closures, i.e. every path
//! of every layer), created by Nix in the same step that makes the paths valid, and the
//! builder drops it when the image's layers are stored.
//!
//! The roots live under a directory the server owns (`NIXERY_GC_ROOTS`, by default
//! `/nix/var/nix/gcroots/nixery`, where they are roots by themselves; anywhere else Nix also
//! links them from `/nix/var/nix/gcroots/auto`): one subdirectory per server process,
//! `<pid>-<random>`, locked while it lives ([`crate::ownership`]), and one directory per
//! build inside it. A server that is killed leaves its roots behind; the next one to start
//! removes every subdirectory whose lock nobody holds, so leftover roots live no longer than
//! until the next start.

use crate::ownership;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The GC roots of this server process.
pub struct GcRoots {
    dir: tempfile::TempDir,
    /// Tells other servers this directory is in use.
    _owner: std::fs::File,
    next: AtomicU64,
}

/// The roots of one build; removed when dropped.
#[derive(Debug)]
pub struct BuildRoots {
    dir: PathBuf,
}

impl GcRoots {
    /// Removes the roots dead servers left under `base`, then makes this server's directory.
    pub fn open(base: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(base)?;
        remove_abandoned(base);
        let dir = tempfile::Builder::new().prefix(&format!("{}-", std::process::id())).tempdir_in(base)?;
        let owner = ownership::lock_dir(dir.path())?;
        Ok(GcRoots { dir, _owner: owner, next: AtomicU64::new(0) })
    }

    /// A fresh directory for one build's roots.
    pub fn for_build(&self) -> io::Result<BuildRoots> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.path().join(n.to_string());
        std::fs::create_dir(&dir)?;
        Ok(BuildRoots { dir })
    }
}

impl BuildRoots {
    /// What `--add-root` is given: Nix makes `result`, `result-2`, … for the outputs.
    pub fn link(&self) -> PathBuf {
        self.dir.join("result")
    }

    /// The store paths rooted now (the targets of the links).
    pub fn targets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect()
    }
}

impl Drop for BuildRoots {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "cannot remove the GC roots of a build");
        }
    }
}

/// Removes the root directories under `base` whose servers are gone.
fn remove_abandoned(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        match ownership::claim_abandoned_dir(&dir) {
            Ok(Some(_lock)) => match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %entry.file_name().to_string_lossy(), "removed the GC roots of a dead server")
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove a dead server's GC roots"),
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot check a GC root directory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_roots_go_when_dropped_and_a_dead_server_s_at_the_next_start() {
        let base = tempfile::tempdir().unwrap();
        let roots = GcRoots::open(base.path()).unwrap();
        let build = roots.for_build().unwrap();
        std::os::unix::fs::symlink("/nix/store/x", build.link()).unwrap();
        assert_eq!(build.targets(), [PathBuf::from("/nix/store/x")]);
        let other = roots.for_build().unwrap();
        assert_ne!(build.link(), other.link());
        let dir = build.dir.clone();
        drop(build);
        assert!(!dir.exists(), "a build's roots outlived it");

        // A live server's directory is kept by another's start; a dead one's is removed.
        let live = roots.dir.path().to_owned();
        let _second = GcRoots::open(base.path()).unwrap();
        assert!(live.exists(), "a live server's roots were removed");
        let dead = base.path().join("1-dead");
        std::fs::create_dir(&dead).unwrap();
        drop(ownership::lock_dir(&dead).unwrap()); // its owner is gone: the lock is released
        let _third = GcRoots::open(base.path()).unwrap();
        assert!(!dead.exists(), "a dead server's roots were kept");
        assert!(live.exists());
    }
}
