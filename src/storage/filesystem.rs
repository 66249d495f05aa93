//! The local filesystem backend: the embedded default, and a directory several servers may
//! share (replicas on one ReadWriteMany volume or NFS export).
//!
//! Uploads stream into `staging/<name>`, are hashed as they are written, fsynced, then
//! renamed onto their key; a rename within one filesystem is atomic, so readers see either
//! nothing or the whole object. A [`StagedFile`] that is dropped without being committed
//! deletes itself.
//!
//! Shared by several servers (in containers, each of them PID 1), three rules keep every
//! object whole and right:
//!
//! - **Staging names are never shared.** A name is 128 random bits from the OS
//!   ([`staging_name`]), and the file is created with `O_EXCL`: a name that exists already
//!   is never written into, it is drawn again.
//! - **Only abandoned staging files are removed.** A writer holds a lock on its staging file
//!   until it is committed or discarded ([`crate::ownership`]). At start-up and then every
//!   [`SWEEP_EVERY`], a file is removed only if nobody holds its lock *and* nobody wrote to it
//!   for [`STAGING_GRACE`] (the second condition covers network filesystems whose locks do
//!   not cross hosts; see the ownership module on NFS). So another server's start-up never
//!   removes an upload in progress, and a crashed server's leftovers go within
//!   `STAGING_GRACE` + `SWEEP_EVERY`.
//! - **A blob is committed only under the digest it has.** A content-addressed key
//!   (`layers/sha256:…`, `manifests/sha256:…`) is committed only if the bytes this backend
//!   wrote hash to it, and only if the staging file is still the one it wrote (same inode,
//!   same length: nobody wrote into it or replaced it). A mistake upstream (an archive
//!   pipeline naming a layer wrongly) or another process touching the file is refused with
//!   an [`Integrity`](super::ErrorKind::Integrity) error instead of being served. What is
//!   left is outside the server: a process writing into `layers/` directly, the disk itself,
//!   and blobs committed by earlier versions (which had none of this; a directory that
//!   several of those shared should be emptied).
//!
//! Small objects that change under a condition (build leases, [`crate::lease`]) are kept as
//! one file per generation, `<key>@<generation>` (twenty decimal digits), each written whole
//! in `staging/` and then hard-linked to its name: `link(2)` fails if the name exists, like
//! `O_EXCL` but for a file that is complete the moment it appears (also on NFS, where it is
//! the classic way to take a lock file). Creating writes generation 1 if no generation
//! exists; replacing generation *n* links *n+1*, so of two replicas racing from *n* exactly
//! one wins, and the winner removes the generations before its own. The current generation
//! is the highest present. Listings show the generation files as they are; garbage
//! collection removes the old ones by age like any object.
//!
//! Deleting a `staging/` file (garbage collection) first takes its lock, so an upload that
//! a live process is writing is never removed, however old ([`crate::ownership`]).

use super::error::io_kind;
use super::keys::staging_name;
use super::{
    ByteStream, ErrorKind, Generation, Listing, ObjectInfo, ObjectKey, Op, Prefix, SetupError, StorageBackend,
    StorageError, Versioned,
};
use crate::digest::{Digest, Hasher};
use crate::ownership;
use bytes::Bytes;
use futures::StreamExt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
/// Buffer of uploads and reads.
const BUFFER: usize = 256 * 1024;
/// How long an unlocked staging file must have gone unwritten before it counts as
/// abandoned. A live upload writes every few milliseconds; ten minutes is far beyond any
/// pause and any clock skew between hosts sharing a network filesystem.
pub const STAGING_GRACE: Duration = Duration::from_secs(600);
/// How often abandoned staging files are looked for after start-up.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// How often a staging name is drawn again when it exists already (it never does).
const NAME_ATTEMPTS: usize = 4;
/// Objects per message from the thread that reads a directory for a listing.
const LIST_BATCH: usize = 1000;
/// How often a versioned object is read again when its newest generation was replaced
/// (and removed) between finding and reading it.
const READ_ATTEMPTS: usize = 5;

/// A storage directory.
#[derive(Clone)]
pub struct Filesystem {
    root: Arc<Path>,
}

/// An upload sitting in `staging/`, locked while it lives; dropping it removes it.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    /// Holds the lock that tells other servers this upload is alive.
    lock: std::fs::File,
    /// What was written: digest and length.
    written: Option<(Digest, u64)>,
    committed: bool,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            // Removed while the lock is still held (`lock` is dropped after this).
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why the storage directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct OpenError {
    what: String,
    source: io::Error,
}

/// Why a staged upload was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitRefused {
    #[error("the staged bytes have digest {staged}, not the key's")]
    DigestMismatch { staged: Digest },
    #[error("the staging file was written to or replaced by another process")]
    Tampered,
}

fn fail(op: Op, key: impl ToString) -> impl FnOnce(io::Error) -> StorageError {
    move |source| StorageError::new(op, key.to_string(), io_kind(&source), source)
}

/// `Ok(None)` for a file that is not there.
fn absent_is_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// The messages of `rx` as a stream.
fn tokio_stream_of<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> futures::stream::BoxStream<'static, T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

impl Filesystem {
    /// Opens (creating) the storage directory, removes abandoned uploads, and keeps removing
    /// them every [`SWEEP_EVERY`] while the backend is in use.
    pub async fn open(root: &Path) -> Result<Self, SetupError> {
        let fail = |what: &str| {
            let what = what.to_owned();
            move |source| SetupError::Backend(Box::new(OpenError { what, source }))
        };
        for p in Prefix::ALL.map(Prefix::dir) {
            tokio::fs::create_dir_all(root.join(p)).await.map_err(fail(&format!("creating {p}/")))?;
        }
        let root: Arc<Path> = tokio::fs::canonicalize(root).await.map_err(fail("resolving the directory"))?.into();
        let staging = root.join("staging");
        blocking(move || sweep_staging(&staging, STAGING_GRACE)).await.map_err(fail("clearing staging/"))?;
        let weak = Arc::downgrade(&root);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(root) = weak.upgrade() else { return };
                let staging = root.join("staging");
                if let Err(e) = blocking(move || sweep_staging(&staging, STAGING_GRACE)).await {
                    tracing::warn!(error = %e, "cannot look for abandoned uploads in staging/");
                }
            }
        });
        Ok(Filesystem { root })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

/// Reads the directory of `prefix` in a thread of its own, sending what it finds in batches.
fn list_dir(root: &Path, prefix: Prefix, tx: tokio::sync::mpsc::Sender<Result<Vec<ObjectInfo>, StorageError>>) {
    let dir = root.join(prefix.dir());
    let failed = |e: io::Error| StorageError::new(Op::List, prefix.as_str(), io_kind(&e), e);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            let _ = tx.blocking_send(Err(failed(e)));
            return;
        }
    };
    let mut batch = Vec::with_capacity(LIST_BATCH);
    for entry in entries {
        let found = entry.and_then(|e| {
            let meta = absent_is_none(e.metadata())?;
            Ok(meta.filter(|m| m.is_file()).map(|m| (e.file_name(), m)))
        });
        match found {
            Ok(Some((name, meta))) => {
                let key = ObjectKey::stored(format!("{}{}", prefix.as_str(), name.to_string_lossy()));
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                batch.push(ObjectInfo { key, size: meta.len(), modified });
            }
            Ok(None) => {} // removed since the directory was read
            Err(e) => {
                let _ = tx.blocking_send(Err(failed(e)));
                return;
            }
        }
        if batch.len() == LIST_BATCH && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err() {
            return; // nobody reads the listing any more
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
}

/// Removes `path`; a `staging/` file only if no live upload holds it.
fn remove(path: &Path, staging: bool) -> io::Result<()> {
    if staging {
        let Some(_lock) = ownership::claim_abandoned(path, Duration::ZERO)? else { return Ok(()) };
        return absent_is_none(std::fs::remove_file(path)).map(drop);
    }
    absent_is_none(std::fs::remove_file(path)).map(drop)
}

/// The generation files of the versioned object at `path`, oldest first.
fn generations(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = path.parent().expect("keys have a prefix directory");
    let base = format!("{}@", path.file_name().expect("keys name a file").to_string_lossy());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name.to_string_lossy().strip_prefix(&base).and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        found.push((number, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The name of generation `number` of the object at `path`.
fn generation_path(path: &Path, number: u64) -> PathBuf {
    let mut name = path.file_name().expect("keys name a file").to_owned();
    name.push(format!("@{number:020}"));
    path.with_file_name(name)
}

/// Writes `bytes` as generation `number` of the object at `path`, if nobody has: written
/// whole in `staging/`, then linked to its name (which fails if it exists).
fn write_generation(root: &Path, path: &Path, number: u64, bytes: &[u8]) -> io::Result<bool> {
    use std::io::Write;
    let (_, staging, mut file) = create_staging(root)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| match std::fs::hard_link(&staging, generation_path(path, number)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&staging);
    linked
}

/// Removes the files of `staging` that are abandoned: unlocked and unwritten for `grace`.
fn sweep_staging(staging: &Path, grace: Duration) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(staging)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let result = ownership::claim_abandoned(&entry.path(), grace)
            .and_then(|claimed| claimed.map(|_lock| absent_is_none(std::fs::remove_file(entry.path()))).transpose());
        match result {
            Ok(Some(Some(()))) => removed += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(file = name, error = %e, "cannot check a staging file"),
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed abandoned uploads from staging/");
    }
    Ok(removed)
}

/// A new staging file, created (never opened: `O_EXCL`) and locked.
fn create_staging(root: &Path) -> io::Result<(String, PathBuf, std::fs::File)> {
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let key = staging_name();
        let path = root.join(&key);
        match ownership::create_locked(&path) {
            Ok(file) => return Ok((key, path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Whether `path` is still the file behind `lock`, with `len` bytes.
fn unchanged(lock: &std::fs::File, path: &Path, len: u64) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let ours = lock.metadata()?;
    let named = std::fs::metadata(path)?;
    Ok(ours.len() == len && (ours.dev(), ours.ino()) == (named.dev(), named.ino()))
}

impl StorageBackend for Filesystem {
    type Staged = StagedFile;

    async fn stage(&self, mut body: ByteStream) -> Result<StagedFile, StorageError> {
        let root = self.root.clone();
        let (key, path, file) = blocking(move || create_staging(&root)).await.map_err(fail(Op::Upload, "staging/"))?;
        let writer = file.try_clone().map_err(fail(Op::Upload, &key))?;
        // From here on, dropping `staged` removes the file, on every error path too.
        let mut staged = StagedFile { path, lock: file, written: None, committed: false };
        let mut out = tokio::io::BufWriter::with_capacity(BUFFER, tokio::fs::File::from_std(writer));
        let mut hasher = Hasher::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::body(&key, e))?;
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(fail(Op::Upload, &key))?;
        }
        out.flush().await.map_err(fail(Op::Upload, &key))?;
        out.into_inner().sync_all().await.map_err(fail(Op::Upload, &key))?;
        staged.written = Some(hasher.finish());
        Ok(staged)
    }

    async fn commit(&self, mut staged: StagedFile, key: &ObjectKey) -> Result<(), StorageError> {
        let (digest, len) = staged.written.clone().expect("only finished uploads are staged");
        if key.content_digest().is_some_and(|want| want != digest) {
            let refused = CommitRefused::DigestMismatch { staged: digest };
            return Err(StorageError::new(Op::Commit, key, ErrorKind::Integrity, refused));
        }
        let lock = staged.lock.try_clone().map_err(fail(Op::Commit, key))?;
        let (from, to) = (staged.path.clone(), self.path(key));
        let moved = blocking(move || {
            if !unchanged(&lock, &from, len)? {
                return Err(io::Error::new(io::ErrorKind::InvalidData, CommitRefused::Tampered));
            }
            std::fs::rename(&from, &to)
        });
        moved.await.map_err(fail(Op::Commit, key))?;
        staged.committed = true;
        Ok(())
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        let meta = absent_is_none(tokio::fs::metadata(self.path(key)).await).map_err(fail(Op::Stat, key))?;
        Ok(meta.map(|m| m.len()))
    }

    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let file = absent_is_none(tokio::fs::File::open(self.path(key)).await).map_err(fail(Op::Read, key))?;
        let Some(mut file) = file else { return Ok(None) };
        let body: ByteStream = match range {
            None => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, BUFFER)),
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start)).await.map_err(fail(Op::Read, key))?;
                let part = file.take(r.end.saturating_sub(r.start));
                Box::pin(tokio_util::io::ReaderStream::with_capacity(part, BUFFER))
            }
        };
        Ok(Some(body))
    }

    fn list(&self, prefix: Prefix) -> Listing {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || list_dir(&root, prefix, tx));
        let batches = tokio_stream_of(rx);
        Box::pin(batches.flat_map(|batch| {
            let items: Vec<Result<ObjectInfo, StorageError>> = match batch {
                Ok(objects) => objects.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        }))
    }

    async fn info(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        let meta = absent_is_none(tokio::fs::metadata(self.path(key)).await).map_err(fail(Op::Stat, key))?;
        Ok(meta.map(|m| ObjectInfo {
            key: key.clone(),
            size: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }))
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), StorageError> {
        let work: Vec<(ObjectKey, PathBuf)> = keys.iter().map(|k| (k.clone(), self.path(k))).collect();
        let first_failure = blocking(move || {
            for (key, path) in work {
                if let Err(e) = remove(&path, key.prefix() == Some(Prefix::Staging)) {
                    return Ok(Some((key, e)));
                }
            }
            Ok(None)
        });
        match first_failure.await.map_err(fail(Op::Delete, "objects"))? {
            Some((key, e)) => Err(StorageError::new(Op::Delete, key, io_kind(&e), e)),
            None => Ok(()),
        }
    }

    async fn create(&self, key: &ObjectKey, bytes: Bytes) -> Result<Option<Generation>, StorageError> {
        let (root, path) = (self.root.clone(), self.path(key));
        let created = blocking(move || {
            if !generations(&path)?.is_empty() {
                return Ok(None);
            }
            Ok(write_generation(&root, &path, 1, &bytes)?.then(|| Generation::new("1")))
        });
        created.await.map_err(fail(Op::Upload, key))
    }

    async fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> Result<Option<Generation>, StorageError> {
        let Ok(current) = current.as_str().parse::<u64>() else { return Ok(None) };
        let (root, path) = (self.root.clone(), self.path(key));
        let replaced = blocking(move || {
            let found = generations(&path)?;
            if found.last().map(|(n, _)| *n) != Some(current) {
                return Ok(None);
            }
            if !write_generation(&root, &path, current + 1, &bytes)? {
                return Ok(None);
            }
            for (_, older) in &found {
                let _ = std::fs::remove_file(older);
            }
            Ok(Some(Generation::new((current + 1).to_string())))
        });
        replaced.await.map_err(fail(Op::Upload, key))
    }

    async fn read_versioned(&self, key: &ObjectKey) -> Result<Option<Versioned>, StorageError> {
        let path = self.path(key);
        let read = blocking(move || {
            for _ in 0..READ_ATTEMPTS {
                let Some((number, newest)) = generations(&path)?.pop() else { return Ok(None) };
                match absent_is_none(std::fs::read(&newest))? {
                    Some(bytes) => {
                        let generation = Generation::new(number.to_string());
                        return Ok(Some(Versioned { bytes: bytes.into(), generation }));
                    }
                    None => continue, // replaced in between: read the new one
                }
            }
            Err(io::Error::other("the object kept changing while it was read"))
        });
        read.await.map_err(fail(Op::Read, key))
    }

    /// The storage directories are there: a volume that was unmounted, removed or went stale
    /// (NFS) fails here.
    async fn ping(&self) -> Result<(), StorageError> {
        for p in Prefix::ALL.map(Prefix::dir) {
            let meta = tokio::fs::metadata(self.root.join(p)).await.map_err(fail(Op::Stat, format!("{p}/")))?;
            if !meta.is_dir() {
                return Err(StorageError::new(Op::Stat, format!("{p}/"), ErrorKind::NotFound, "not a directory"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stream(chunks: Vec<io::Result<Bytes>>) -> ByteStream {
        Box::pin(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn commit_makes_an_upload_visible_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let key = ObjectKey::blob(&Digest::of(b"hello world"));
        let staged = fs.stage(stream(vec![Ok("hello ".into()), Ok("world".into())])).await.unwrap();
        assert_eq!(fs.get(&key).await.unwrap(), None, "visible before commit");
        fs.commit(staged, &key).await.unwrap();
        assert_eq!(fs.get(&key).await.unwrap().unwrap(), "hello world");
        assert_eq!(fs.size(&key).await.unwrap(), Some(11));
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn read_streams_all_or_a_range() {
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let key = ObjectKey::blob(&Digest::of(b"0123456789"));
        let staged = fs.stage(stream(vec![Ok("0123456789".into())])).await.unwrap();
        fs.commit(staged, &key).await.unwrap();
        let all: Vec<Bytes> = fs.read(&key, None).await.unwrap().unwrap().try_collect().await.unwrap();
        assert_eq!(all.concat(), b"0123456789");
        let part: Vec<Bytes> = fs.read(&key, Some(3..7)).await.unwrap().unwrap().try_collect().await.unwrap();
        assert_eq!(part.concat(), b"3456");
        assert!(fs.read(&ObjectKey::blob(&Digest::of(b"nope")), None).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_upload_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let broken = stream(vec![Ok("partial".into()), Err(io::Error::other("client went away"))]);
        let err = fs.stage(broken).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Body);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("layers")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_staged_upload_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let staged = fs.stage(stream(vec![Ok("x".into())])).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 1);
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    }

    /// Sets the modification time of `path` to `ago` in the past.
    fn age(path: &Path, ago: Duration) {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - ago).unwrap();
    }

    fn staging_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("staging")).unwrap().count()
    }

    #[tokio::test]
    async fn start_up_clears_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        let leftover = dir.path().join("staging/123-0");
        std::fs::write(&leftover, "half a layer").unwrap();
        age(&leftover, STAGING_GRACE + Duration::from_secs(1));
        Filesystem::open(dir.path()).await.unwrap();
        assert_eq!(staging_files(dir.path()), 0);
    }

    /// Another server's upload in progress survives this one's start-up: it is locked (a
    /// live writer), or it is young (a writer whose lock this host cannot see).
    #[tokio::test]
    async fn start_up_keeps_uploads_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Filesystem::open(dir.path()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
        let body: ByteStream = Box::pin(futures::stream::poll_fn({
            let mut rx = rx;
            move |cx| rx.poll_recv(cx)
        }));
        let upload = tokio::spawn({
            let writer = writer.clone();
            async move { writer.stage(body).await }
        });
        tx.send(Ok("first half ".into())).await.unwrap();
        while staging_files(dir.path()) == 0 {
            tokio::task::yield_now().await;
        }
        let in_progress = std::fs::read_dir(dir.path().join("staging")).unwrap().next().unwrap().unwrap().path();
        age(&in_progress, STAGING_GRACE * 2);
        // A young file nobody locks (as a writer on another host may look).
        let young = dir.path().join("staging/young");
        std::fs::write(&young, "x").unwrap();

        Filesystem::open(dir.path()).await.unwrap();
        assert!(in_progress.exists(), "a locked upload was removed");
        assert!(young.exists(), "a young upload was removed");

        tx.send(Ok("second half".into())).await.unwrap();
        drop(tx);
        let staged = upload.await.unwrap().unwrap();
        let key = ObjectKey::blob(&Digest::of(b"first half second half"));
        writer.commit(staged, &key).await.unwrap();
        assert_eq!(writer.get(&key).await.unwrap().unwrap(), "first half second half");
    }

    #[tokio::test]
    async fn a_blob_is_committed_only_under_its_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let staged = fs.stage(stream(vec![Ok("the real bytes".into())])).await.unwrap();
        let wrong = ObjectKey::blob(&Digest::of(b"other bytes"));
        let err = fs.commit(staged, &wrong).await.unwrap_err();
        assert_eq!((err.op(), err.kind()), (Op::Commit, ErrorKind::Integrity));
        assert!(err.to_string().contains(&Digest::of(b"the real bytes").to_string()), "{err}");
        assert_eq!(fs.size(&wrong).await.unwrap(), None);
        assert_eq!(staging_files(dir.path()), 0, "the refused upload was not discarded");
        // Keys that do not name their contents take any bytes.
        let staged = fs.stage(stream(vec![Ok("{}".into())])).await.unwrap();
        fs.commit(staged, &ObjectKey::build(&Digest::of(b"layer"))).await.unwrap();
    }

    #[tokio::test]
    async fn a_staging_file_written_by_another_process_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(dir.path()).await.unwrap();
        let staged = fs.stage(stream(vec![Ok("311 bytes, say".into())])).await.unwrap();
        // Someone else appends to the same file (as a writer sharing the name did).
        let mut other = std::fs::OpenOptions::new().append(true).open(&staged.path).unwrap();
        io::Write::write_all(&mut other, b" and 537 MB more").unwrap();
        let key = ObjectKey::blob(&Digest::of(b"311 bytes, say"));
        let err = fs.commit(staged, &key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert_eq!(fs.size(&key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn ping_fails_when_the_directory_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Filesystem::open(&dir.path().join("store")).await.unwrap();
        fs.ping().await.unwrap();
        std::fs::rename(dir.path().join("store"), dir.path().join("moved")).unwrap();
        let err = fs.ping().await.unwrap_err();
        assert_eq!((err.op(), err.kind()), (Op::Stat, ErrorKind::NotFound));
        assert!(!err.to_string().contains(&dir.path().to_string_lossy().into_owned()), "a path in {err}");
    }

    #[tokio::test]
    async fn an_unusable_directory_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "not a directory").unwrap();
        let err = Filesystem::open(&file).await.err().unwrap();
        let reason = err.backend::<OpenError>().expect("the filesystem's own error");
        assert_eq!(reason.what, "creating staging/");
        assert!(err.to_string().starts_with("creating staging/: "), "{err}");
    }
}
