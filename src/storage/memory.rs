//! An in-memory backend: objects in a map shared by clones of one [`Memory`], served by
//! streaming. It keeps the contract of the others (uploads sit under `staging/` until
//! committed, a dropped staged upload disappears, a failing body leaves nothing), so the build
//! pipeline and the blob handlers are tested against it without a disk, sockets or emulators.
//! Nothing survives the process: it is not a configuration choice for a server.

use super::keys::staging_name;
use super::{
    ByteStream, ErrorKind, Generation, Listing, ObjectInfo, ObjectKey, Op, Prefix, StorageBackend, StorageError,
    Versioned,
};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// One stored object: its bytes, when it was written, and its generation.
#[derive(Clone)]
struct Object {
    bytes: Bytes,
    modified: SystemTime,
    generation: u64,
}

impl Object {
    fn new(bytes: Bytes) -> Self {
        static GENERATIONS: AtomicU64 = AtomicU64::new(1);
        Object { bytes, modified: SystemTime::now(), generation: GENERATIONS.fetch_add(1, Ordering::Relaxed) }
    }
}

type Objects = Arc<Mutex<BTreeMap<String, Object>>>;

/// Objects in memory; clones share them.
#[derive(Clone, Default)]
pub struct Memory {
    objects: Objects,
}

/// An upload under `staging/`; dropping it removes it.
pub struct StagedBytes {
    name: String,
    owner: Option<Objects>,
}

impl Drop for StagedBytes {
    fn drop(&mut self) {
        if let Some(objects) = self.owner.take() {
            lock(&objects).remove(&self.name);
        }
    }
}

fn lock(objects: &Objects) -> MutexGuard<'_, BTreeMap<String, Object>> {
    // A panic elsewhere cannot leave the map half-changed: every change is one call.
    objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys under `prefix`, sorted (`""` for all).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        lock(&self.objects).keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// Removes an object, as something outside this process would.
    #[cfg(test)]
    pub fn remove(&self, key: &str) {
        lock(&self.objects).remove(key);
    }

    /// Makes an object look written `ago` in the past (for tests of what time decides).
    #[cfg(test)]
    pub fn age(&self, key: &str, ago: std::time::Duration) {
        if let Some(object) = lock(&self.objects).get_mut(key) {
            object.modified = SystemTime::now() - ago;
        }
    }

    fn object(&self, key: &ObjectKey) -> Option<Bytes> {
        lock(&self.objects).get(key.as_str()).map(|o| o.bytes.clone())
    }

    fn info_of(key: &str, object: &Object) -> ObjectInfo {
        ObjectInfo { key: ObjectKey::stored(key), size: object.bytes.len() as u64, modified: object.modified }
    }
}

impl StorageBackend for Memory {
    type Staged = StagedBytes;

    async fn stage(&self, mut body: ByteStream) -> Result<StagedBytes, StorageError> {
        let name = staging_name();
        let mut bytes = BytesMut::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| StorageError::body(&name, e))?);
        }
        lock(&self.objects).insert(name.clone(), Object::new(bytes.freeze()));
        Ok(StagedBytes { name, owner: Some(self.objects.clone()) })
    }

    async fn commit(&self, mut staged: StagedBytes, key: &ObjectKey) -> Result<(), StorageError> {
        let mut objects = lock(&self.objects);
        let bytes = objects.remove(&staged.name);
        staged.owner = None;
        let object =
            bytes.ok_or_else(|| StorageError::new(Op::Commit, key, ErrorKind::NotFound, "staged upload gone"))?;
        objects.insert(key.to_string(), Object::new(object.bytes));
        Ok(())
    }

    async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, StorageError> {
        Ok(self.object(key).map(|b| b.len() as u64))
    }

    async fn read(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Option<ByteStream>, StorageError> {
        let Some(bytes) = self.object(key) else { return Ok(None) };
        let bytes = match range {
            Some(r) => bytes.slice(r.start as usize..r.end as usize),
            None => bytes,
        };
        Ok(Some(Box::pin(futures::stream::once(async move { Ok(bytes) })) as ByteStream))
    }

    /// The map is always there.
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// A snapshot of the prefix, taken when the listing starts.
    fn list(&self, prefix: Prefix) -> Listing {
        let objects = lock(&self.objects);
        let listed: Vec<Result<ObjectInfo, StorageError>> = objects
            .range(prefix.as_str().to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
            .map(|(k, o)| Ok(Self::info_of(k, o)))
            .collect();
        Box::pin(futures::stream::iter(listed))
    }

    async fn info(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        Ok(lock(&self.objects).get(key.as_str()).map(|o| Self::info_of(key.as_str(), o)))
    }

    async fn delete(&self, keys: &[ObjectKey]) -> Result<(), StorageError> {
        let mut objects = lock(&self.objects);
        for key in keys {
            objects.remove(key.as_str());
        }
        Ok(())
    }

    async fn create(&self, key: &ObjectKey, bytes: Bytes) -> Result<Option<Generation>, StorageError> {
        let mut objects = lock(&self.objects);
        if objects.contains_key(key.as_str()) {
            return Ok(None);
        }
        let object = Object::new(bytes);
        let generation = Generation::new(object.generation.to_string());
        objects.insert(key.to_string(), object);
        Ok(Some(generation))
    }

    async fn replace(
        &self,
        key: &ObjectKey,
        bytes: Bytes,
        current: &Generation,
    ) -> Result<Option<Generation>, StorageError> {
        let mut objects = lock(&self.objects);
        match objects.get(key.as_str()) {
            Some(o) if o.generation.to_string() == current.as_str() => {}
            _ => return Ok(None),
        }
        let object = Object::new(bytes);
        let generation = Generation::new(object.generation.to_string());
        objects.insert(key.to_string(), object);
        Ok(Some(generation))
    }

    async fn read_versioned(&self, key: &ObjectKey) -> Result<Option<Versioned>, StorageError> {
        Ok(lock(&self.objects)
            .get(key.as_str())
            .map(|o| Versioned { bytes: o.bytes.clone(), generation: Generation::new(o.generation.to_string()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::storage::Download;
    use futures::TryStreamExt;

    fn body(chunks: Vec<std::io::Result<Bytes>>) -> ByteStream {
        Box::pin(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn uploads_are_staged_then_committed() {
        let memory = Memory::new();
        let key = ObjectKey::blob(&Digest::of(b"hello world"));
        let staged = memory.stage(body(vec![Ok("hello ".into()), Ok("world".into())])).await.unwrap();
        assert_eq!(memory.keys("staging/").len(), 1);
        assert_eq!(memory.size(&key).await.unwrap(), None, "visible before commit");
        memory.commit(staged, &key).await.unwrap();
        assert_eq!(memory.keys(""), [key.to_string()]);
        assert_eq!(memory.get(&key).await.unwrap().unwrap(), "hello world");
        let dropped = memory.stage(body(vec![Ok("x".into())])).await.unwrap();
        drop(dropped);
        assert_eq!(memory.keys(""), [key.to_string()], "a dropped upload stayed");
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing() {
        let memory = Memory::new();
        let broken = body(vec![Ok("partial".into()), Err(std::io::Error::other("writer failed"))]);
        let err = memory.stage(broken).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Body);
        assert!(err.key().starts_with("staging/"), "{err}");
        assert!(memory.keys("").is_empty());
    }

    #[tokio::test]
    async fn downloads_stream_all_or_a_range() {
        let memory = Memory::new();
        let key = ObjectKey::blob(&Digest::of(b"0123456789"));
        memory.put(&key, Bytes::from_static(b"0123456789")).await.unwrap();
        let Some(Download::Stream(stream)) = memory.download(&key).await.unwrap() else { panic!("not streamed") };
        assert_eq!(stream.len(), 10);
        let part: Vec<Bytes> = stream.bytes(Some(3..7)).await.unwrap().try_collect().await.unwrap();
        assert_eq!(part.concat(), b"3456");
        assert!(memory.download(&ObjectKey::blob(&Digest::of(b"nope"))).await.unwrap().is_none());
    }
}
