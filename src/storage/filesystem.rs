//! The local filesystem backend: the embedded default.
//!
//! Uploads stream into `staging/<unique>`, are fsynced, then renamed onto their key; a rename
//! within one filesystem is atomic, so readers see either nothing or the whole object. A
//! [`StagedFile`] that is dropped without being committed deletes itself, and whatever a
//! crash left in `staging/` is removed at start-up.

use super::{ByteStream, Download, ObjectKey, StorageError};
use bytes::Bytes;
use futures::StreamExt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

const PREFIXES: [&str; 4] = ["staging", "layers", "manifests", "builds"];

pub struct Filesystem {
    root: PathBuf,
    counter: AtomicU64,
}

/// An upload sitting in `staging/`.
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

fn io_err(key: impl ToString) -> impl FnOnce(io::Error) -> StorageError {
    move |source| StorageError::Io { key: key.to_string(), source }
}

impl Filesystem {
    /// Opens (creating) the storage directory and clears leftovers of interrupted uploads.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        for p in PREFIXES {
            tokio::fs::create_dir_all(root.join(p)).await.map_err(io_err(p))?;
        }
        let staging = root.join("staging");
        let mut leftovers = tokio::fs::read_dir(&staging).await.map_err(io_err("staging"))?;
        let mut removed = 0;
        while let Some(entry) = leftovers.next_entry().await.map_err(io_err("staging"))? {
            tokio::fs::remove_file(entry.path()).await.map_err(io_err("staging"))?;
            removed += 1;
        }
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of interrupted uploads from staging/");
        }
        let root = tokio::fs::canonicalize(root).await.map_err(io_err("storage root"))?;
        Ok(Filesystem { root, counter: AtomicU64::new(0) })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    pub async fn stage(&self, mut body: ByteStream) -> Result<StagedFile, StorageError> {
        let name = format!("{}-{}", std::process::id(), self.counter.fetch_add(1, Ordering::Relaxed));
        let key = format!("staging/{name}");
        let path = self.root.join(&key);
        let file = tokio::fs::File::create(&path).await.map_err(io_err(&key))?;
        // From here on, dropping `staged` removes the file, on every error path too.
        let staged = StagedFile { path, committed: false };
        let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        while let Some(chunk) = body.next().await {
            let chunk: Bytes = chunk.map_err(io_err(&key))?;
            out.write_all(&chunk).await.map_err(io_err(&key))?;
        }
        out.flush().await.map_err(io_err(&key))?;
        out.into_inner().sync_all().await.map_err(io_err(&key))?;
        Ok(staged)
    }

    pub async fn commit(&self, mut staged: StagedFile, key: &ObjectKey) -> Result<(), StorageError> {
        tokio::fs::rename(&staged.path, self.path(key)).await.map_err(io_err(key))?;
        staged.committed = true;
        Ok(())
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Bytes>, StorageError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(b) => Ok(Some(b.into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(key)(e)),
        }
    }

    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(key)(e)),
        }
    }

    pub async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(self.path(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(key)(e)),
        };
        let body: ByteStream = match range {
            None => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)),
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start)).await.map_err(io_err(key))?;
                let part = file.take(r.end.saturating_sub(r.start));
                Box::pin(tokio_util::io::ReaderStream::with_capacity(part, 256 * 1024))
            }
        };
        Ok(Some(body))
    }

    pub async fn download(&self, key: &ObjectKey) -> Result<Option<Download>, StorageError> {
        Ok(self.size(key).await?.map(|len| Download::File { path: self.path(key), len }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

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
        assert!(fs.stage(broken).await.is_err());
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
}
