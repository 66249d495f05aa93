//! Files that a live process works with, and what a dead one left behind.
//!
//! Several servers share directories: replicas share one storage volume (`staging/`), and
//! servers on one host share `/tmp`. A server that crashes cannot clean up after itself, so
//! the next one to start must tell a dead server's leftovers from another's work in progress.
//! A PID cannot tell them apart: in containers every server is PID 1, and PID namespaces,
//! other hosts and PID reuse make a PID meaningless to another server. A lock can: the
//! owner holds an advisory lock (`flock(2)`) on the file for as long as it works with it,
//! and the kernel releases the lock when the owner's process ends, however it ends
//! (`kill -9`, a panic, an OOM kill). A leftover may be removed only by a process that takes
//! the lock itself, and it removes the file while holding it.
//!
//! A lock is taken on a file that exists, so between creating a file and locking it there is
//! a moment when it looks abandoned. [`create_locked`] closes it for names nobody else
//! creates (staging files have random names): the file is new (`O_EXCL`) and is only
//! considered abandoned when it is also older than a grace period ([`claim_abandoned`]). A
//! lock file that marks a whole directory is locked first and then renamed into place
//! ([`lock_dir`]), so the name only ever appears locked.
//!
//! # Network filesystems
//!
//! On Linux NFS clients `flock` is carried out as a POSIX lock on the whole file, which
//! NFSv4 (and NFSv3 with `lockd`) enforces across hosts; the server releases the locks of a
//! crashed client after its lease time (90 s by default). Mounted with `nolock` or
//! `local_lock=flock|all`, locks are local to each host, and other hosts see every file as
//! unlocked. CephFS enforces `flock` across clients; some FUSE filesystems do not. That is
//! why a leftover must also be older than a grace period: a live writer writes all the
//! time (every chunk moves the modification time), so a file nobody wrote for the whole
//! grace period is abandoned even where locks do not cross hosts. The modification time of
//! a network file comes from the file server's clock, so the grace period must exceed the
//! clock skew between hosts, by far.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Creates `path`, which must not exist yet (`O_EXCL`), for writing, and locks it. The lock
/// lasts as long as the returned file (or a clone of it) is open.
pub fn create_locked(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
    lock_new(file)
}

/// A new file is locked by nobody else; if it is (someone else opened and locked it in
/// between), it is not ours to use.
fn lock_new(file: File) -> io::Result<File> {
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "locked by another process")),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The lock on `path` if no live process holds it and the file was last modified more than
/// `grace` ago: the file is abandoned, and the caller may remove it while it holds the
/// returned lock. `None` if it is in use, too young, or gone.
pub fn claim_abandoned(path: &Path, grace: Duration) -> io::Result<Option<File>> {
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(e),
    }
    // The age of what is locked now (the name may have been replaced in between).
    Ok(older_than(&file.metadata()?, grace).then_some(file))
}

/// Whether `meta` was last modified more than `grace` ago (a time in the future is young).
pub fn older_than(meta: &std::fs::Metadata, grace: Duration) -> bool {
    let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
    SystemTime::now().duration_since(modified).is_ok_and(|age| age > grace)
}

/// The name of the lock file that marks a directory as owned ([`lock_dir`]).
pub const DIR_LOCK: &str = "owner.lock";

/// Marks directory `dir` as owned by this process for as long as the returned file is open:
/// `dir/owner.lock`, locked before it gets its name.
pub fn lock_dir(dir: &Path) -> io::Result<File> {
    let pending = dir.join(".owner.lock.new");
    let file = create_locked(&pending)?;
    std::fs::rename(&pending, dir.join(DIR_LOCK))?;
    Ok(file)
}

/// Whether directory `dir` is abandoned: its lock file exists and is not held. The returned
/// lock is held while the caller removes the directory. `None` if it is owned, or has no
/// lock file (then it is not known to be [`lock_dir`]'s).
pub fn claim_abandoned_dir(dir: &Path) -> io::Result<Option<File>> {
    claim_abandoned(&dir.join(DIR_LOCK), Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, by: Duration) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_created_file_is_locked_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let _owned = create_locked(&path).unwrap();
        let again = create_locked(&path).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists, "O_EXCL: a name is created once");
        age(&path, Duration::from_secs(3600));
        assert!(claim_abandoned(&path, Duration::from_secs(60)).unwrap().is_none(), "held, however old");
    }

    #[test]
    fn only_unlocked_files_older_than_the_grace_are_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        drop(create_locked(&path).unwrap());
        let grace = Duration::from_secs(600);
        assert!(claim_abandoned(&path, grace).unwrap().is_none(), "unlocked but young");
        age(&path, Duration::from_secs(601));
        let claimed = claim_abandoned(&path, grace).unwrap().expect("unlocked and old");
        // While claimed, nobody else may claim (or create) it.
        assert!(claim_abandoned(&path, grace).unwrap().is_none());
        drop(claimed);
        assert!(claim_abandoned(&dir.path().join("gone"), grace).unwrap().is_none(), "a missing file");
    }

    #[test]
    fn a_lock_dies_with_its_process() {
        // A child process locks a file and is killed: the kernel releases its lock.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "").unwrap();
        // One process: the shell locks its descriptor 9 (with flock(1)) and becomes `sleep`.
        let script = format!("exec 9>>'{}'; flock 9; exec sleep 30", path.display());
        let mut child = std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap();
        let held = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            claim_abandoned(&path, Duration::ZERO).unwrap().is_none()
        });
        assert!(held, "the child never took the lock");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(claim_abandoned(&path, Duration::ZERO).unwrap().is_some(), "the lock outlived its process");
    }

    #[test]
    fn a_directory_lock_appears_only_locked() {
        let dir = tempfile::tempdir().unwrap();
        let owned = lock_dir(dir.path()).unwrap();
        assert!(dir.path().join(DIR_LOCK).is_file());
        assert!(!dir.path().join(".owner.lock.new").exists());
        assert!(claim_abandoned_dir(dir.path()).unwrap().is_none());
        drop(owned);
        assert!(claim_abandoned_dir(dir.path()).unwrap().is_some());
        let unmarked = tempfile::tempdir().unwrap();
        assert!(claim_abandoned_dir(unmarked.path()).unwrap().is_none(), "no lock file: not known to be ours");
    }
}
