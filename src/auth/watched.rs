//! A file the server re-reads when it changes (the htpasswd file, a key file): an operator
//! edits it, or Kubernetes swaps a mounted Secret's symlink, and the next request sees it
//! without a restart.
//!
//! A change is noticed by the file's identity and size and modification time (`stat`
//! follows symlinks, so a Secret's `..data` swap shows as another inode), looked at no more
//! than once a second whatever the request rate. A file that cannot be read or parsed after a
//! change keeps what was loaded before (one ERROR line per change): a half-written file must
//! not lock every user out.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a file is looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What tells one version of a file from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp { device: meta.dev(), inode: meta.ino(), len: meta.len(), modified: meta.modified().ok() })
    }
}

/// Parses a file's bytes into `T`, or says why not (the message names no secret).
pub type Parser<T> = fn(&[u8]) -> Result<T, String>;

/// The parsed contents of a file, re-read when it changes.
pub struct Watched<T> {
    path: PathBuf,
    parse: Parser<T>,
    current: RwLock<Arc<T>>,
    /// The stamp of the last version looked at (loaded or refused), and when.
    checked: Mutex<(Option<Stamp>, Instant)>,
}

impl<T> Watched<T> {
    /// Reads and parses `path` now: its error stops start-up.
    pub fn open(path: &Path, parse: Parser<T>) -> Result<Watched<T>, String> {
        let stamp = Stamp::of(path).map_err(|e| e.to_string())?;
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let value = parse(&bytes)?;
        Ok(Watched {
            path: path.to_owned(),
            parse,
            current: RwLock::new(Arc::new(value)),
            checked: Mutex::new((Some(stamp), Instant::now())),
        })
    }

    /// The current contents, re-read first if the file changed (looked at once a second at
    /// most); the second value says whether they were just re-read.
    pub fn get(&self) -> (Arc<T>, bool) {
        let reloaded = self.reload_if_changed();
        (self.current.read().expect("watched file lock").clone(), reloaded)
    }

    fn reload_if_changed(&self) -> bool {
        let mut checked = self.checked.lock().expect("watched file lock");
        if checked.1.elapsed() < CHECK_EVERY {
            return false;
        }
        checked.1 = Instant::now();
        let stamp = Stamp::of(&self.path).ok();
        if stamp == checked.0 {
            return false;
        }
        checked.0 = stamp;
        let loaded = std::fs::read(&self.path).map_err(|e| e.to_string()).and_then(|bytes| (self.parse)(&bytes));
        match loaded {
            Ok(value) => {
                *self.current.write().expect("watched file lock") = Arc::new(value);
                tracing::info!(file = %self.path.display(), "re-read a changed file");
                true
            }
            Err(error) => {
                tracing::error!(file = %self.path.display(), %error, "a changed file cannot be used: keeping what was loaded before");
                false
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn expire_check(&self) {
        self.checked.lock().unwrap().1 = Instant::now() - CHECK_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Result<Vec<String>, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        if text.contains("bad") {
            return Err("a bad line".into());
        }
        Ok(text.lines().map(str::to_owned).collect())
    }

    #[test]
    fn changes_are_seen_and_bad_versions_keep_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\n").unwrap();
        let watched = Watched::open(&path, lines).unwrap();
        assert_eq!(*watched.get().0, ["a"]);

        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(*watched.get().0, ["a"], "looked at once a second at most");
        watched.expire_check();
        assert_eq!(watched.get(), (Arc::new(vec!["a".to_owned(), "b".to_owned()]), true));

        // Replaced by a rename (a new inode), as editors and Kubernetes do.
        let next = dir.path().join("f.new");
        std::fs::write(&next, "c\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        watched.expire_check();
        assert_eq!(*watched.get().0, ["c"]);

        std::fs::write(&path, "bad\n").unwrap();
        watched.expire_check();
        assert_eq!(watched.get(), (Arc::new(vec!["c".to_owned()]), false), "a bad version is not taken");
        std::fs::remove_file(&path).unwrap();
        watched.expire_check();
        assert_eq!(*watched.get().0, ["c"], "nor a missing file");
        assert!(Watched::open(&path, lines).is_err(), "at start-up a missing file is an error");
    }
}
