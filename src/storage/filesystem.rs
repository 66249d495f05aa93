//! The local filesystem backend: the embedded default.
//!
//! Uploads stream into `staging/<unique>`, are fsynced, then renamed onto their key; a rename
//! within one filesystem is atomic, so readers see either nothing or the whole object. A
//! [`StagedFile`] that is dropped without being committed deletes itself, and whatever a
//! crash left in `staging/` is removed at start-up.

use super::error::io_kind;
use super::keys::staging_name;
use super::{ByteStream, ObjectKey, Op, SetupError, StorageBackend, StorageError};
use futures::StreamExt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

const PREFIXES: [&str; 4] = ["staging", "layers", "manifests", "builds"];
/// Buffer of uploads and reads.
const BUFFER: usize = 256 * 1024;

/// A storage directory.
#[derive(Clone)]
pub struct Filesystem {
    root: Arc<Path>,
}

/// An upload sitting in `staging/`; dropping it removes it.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    committed: bool,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
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

impl Filesystem {
    /// Opens (creating) the storage directory and clears leftovers of interrupted uploads.
    pub async fn open(root: &Path) -> Result<Self, SetupError> {
        let fail = |what: &str| {
            let what = what.to_owned();
            move |source| SetupError::Backend(Box::new(OpenError { what, source }))
        };
        for p in PREFIXES {
            tokio::fs::create_dir_all(root.join(p)).await.map_err(fail(&format!("creating {p}/")))?;
        }
        let mut leftovers = tokio::fs::read_dir(root.join("staging")).await.map_err(fail("clearing staging/"))?;
        let mut removed = 0;
        while let Some(entry) = leftovers.next_entry().await.map_err(fail("clearing staging/"))? {
            tokio::fs::remove_file(entry.path()).await.map_err(fail("clearing staging/"))?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of interrupted uploads from staging/");
        }
        let root = tokio::fs::canonicalize(root).await.map_err(fail("resolving the directory"))?;
        Ok(Filesystem { root: root.into() })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

impl StorageBackend for Filesystem {
    type Staged = StagedFile;

    async fn stage(&self, mut body: ByteStream) -> Result<StagedFile, StorageError> {
        let key = staging_name();
        let path = self.root.join(&key);
        let file = tokio::fs::File::create(&path).await.map_err(fail(Op::Upload, &key))?;
        // From here on, dropping `staged` removes the file, on every error path too.
        let staged = StagedFile { path, committed: false };
        let mut out = tokio::io::BufWriter::with_capacity(BUFFER, file);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::body(&key, e))?;
            out.write_all(&chunk).await.map_err(fail(Op::Upload, &key))?;
        }
        out.flush().await.map_err(fail(Op::Upload, &key))?;
        out.into_inner().sync_all().await.map_err(fail(Op::Upload, &key))?;
        Ok(staged)
    }

    async fn commit(&self, mut staged: StagedFile, key: &ObjectKey) -> Result<(), StorageError> {
        tokio::fs::rename(&staged.path, self.path(key)).await.map_err(fail(Op::Commit, key))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::storage::ErrorKind;
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

    #[tokio::test]
    async fn start_up_clears_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        std::fs::write(dir.path().join("staging/123-0"), "half a layer").unwrap();
        Filesystem::open(dir.path()).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
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
