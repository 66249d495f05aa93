//! Garbage collection with the real binary on each backend (a directory, fake-gcs-server,
//! moto): `nixery gc [--dry-run]` against storage that servers keep using. What was served
//! within `NIXERY_RETENTION` keeps its blobs, the rest goes; a replica pulling while a
//! collection runs never fails; a build in progress completes; what a client pinned by
//! digest comes back byte for byte; what cannot come back says why; and Nix's own
//! collection (`nix-store --gc`) cannot pull a store path from under an archive.

use crate::harness::process::{output_timeout, wait_until};
use crate::harness::shared_storage::{SharedStore, StoreKind, pull_checked};
use crate::harness::{Launch, PackageRepo, Server, nonce, require_tool, temp_dir};
use rstest::rstest;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Short enough to wait for, long enough that a test's own pulls stay within it.
const RETENTION: &str = "6s";
const RETENTION_WAIT: Duration = Duration::from_secs(7);

/// The blob digests (config and layers) of the manifest `name:reference` on `server`.
fn blobs_of(server: &Server, name: &str, reference: &str) -> BTreeSet<String> {
    let (_, manifest) = server.manifest(name, reference);
    let layers = manifest["layers"].as_array().unwrap().iter();
    std::iter::once(&manifest["config"]).chain(layers).map(|d| d["digest"].as_str().unwrap().to_owned()).collect()
}

fn pulled(server: &Server, name: &str, reference: &str) -> String {
    pull_checked(server, name, reference).unwrap_or_else(|e| server.fail(&e))
}

#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn retention_decides_what_is_kept_and_a_collected_digest_comes_back(#[case] kind: StoreKind) {
    let store = SharedStore::start(kind);
    let repo = PackageRepo::new();
    let (source, commit) = (repo.source_env(), repo.first.clone());
    let lifecycle = [("NIXERY_RETENTION", RETENTION), ("NIXERY_GC_GRACE", "1s"), ("NIXERY_GC_INTERVAL", "0")];
    let server = store.server(&[&lifecycle[..], &source[..]].concat());
    let kept = pulled(&server, "hello", &commit);
    let gone = pulled(&server, "shell/hello-lib", &commit);
    let kept_blobs = blobs_of(&server, "hello", &commit);
    let gone_only: BTreeSet<String> = &blobs_of(&server, "shell/hello-lib", &commit) - &kept_blobs;
    assert!(!gone_only.is_empty() && kept_blobs.len() > 1);

    // `hello` keeps being pulled for longer than the retention; `shell/hello-lib` not.
    let until = Instant::now() + RETENTION_WAIT;
    while Instant::now() < until {
        pulled(&server, "hello", &commit);
        std::thread::sleep(Duration::from_millis(500));
    }

    // Pulled once more just before each collection, so that it is well within the retention
    // however long the machine takes between them.
    pulled(&server, "hello", &commit);
    let before = store.keys("");
    let dry = store.gc(&lifecycle[..2], true);
    assert_eq!(store.keys(""), before, "a dry run deleted something: {}", dry.summary);
    assert!(dry.summary.starts_with("nixery gc: would delete"), "{}", dry.summary);
    pulled(&server, "hello", &commit);
    let real = store.gc(&lifecycle[..2], false);
    let sorted = |lines: &[String]| lines.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(sorted(&dry.listed), sorted(&real.listed), "the dry run listed other objects");
    assert!(real.listed.iter().any(|l| l.starts_with(&format!("manifests/{gone} "))), "{:#?}", real.listed);

    assert!(store.has(&format!("manifests/{kept}")), "a manifest served within the retention was collected");
    for blob in &kept_blobs {
        assert!(store.has(&format!("layers/{blob}")), "blob {blob} of a kept manifest was collected");
    }
    assert!(!store.has(&format!("manifests/{gone}")), "{}", real.summary);
    for blob in &gone_only {
        assert!(!store.has(&format!("layers/{blob}")), "blob {blob} only a collected manifest had was kept");
        assert!(store.has(&format!("recipes/{blob}")), "the recipe of {blob} went with it");
    }
    assert!(store.has(&format!("recipes/{gone}")));

    // A client pinned to the digest pulls it again from a replica that never saw it: made
    // again from its recipe, byte for byte.
    let replica = store.server(&[&lifecycle[..], &source[..]].concat());
    let again = pulled(&replica, "shell/hello-lib", &gone);
    assert_eq!(again, gone);
    assert_eq!(replica.metric("nixery_remade_total"), 1, "{}", replica.log_tail(30));
    assert!(store.has(&format!("manifests/{gone}")));
    // The first server kept it in memory: it looks again, and serves what the replica made.
    assert_eq!(pulled(&server, "shell/hello-lib", &gone), gone);
}

#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn a_replica_pulling_while_collections_run_never_fails(#[case] kind: StoreKind) {
    let store = SharedStore::start(kind);
    let repo = PackageRepo::new();
    let (source, commit) = (repo.source_env(), repo.first.clone());
    let env = [&source[..], &[("NIXERY_RETENTION", RETENTION), ("NIXERY_GC_INTERVAL", "0")]].concat();
    let builder = store.server(&env);
    pulled(&builder, "hello", &commit);
    let gone = pulled(&builder, "shell/hello-lib", &commit);
    let replica = store.server(&env);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (pulls, failures) = std::thread::scope(|s| {
        let puller = s.spawn(|| {
            let (mut pulls, mut failures) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match pull_checked(&replica, "hello", &commit) {
                    Ok(_) => pulls += 1,
                    Err(e) => failures.push(e),
                }
            }
            (pulls, failures)
        });
        std::thread::sleep(RETENTION_WAIT);
        for _ in 0..3 {
            store.gc(&[("NIXERY_RETENTION", RETENTION), ("NIXERY_GC_GRACE", "1s")], false);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        puller.join().unwrap()
    });
    assert!(failures.is_empty(), "{} of {} pulls failed: {failures:#?}", failures.len(), pulls + failures.len());
    assert!(pulls > 3, "only {pulls} pulls");
    assert!(!store.has(&format!("manifests/{gone}")), "nothing was collected meanwhile");
}

/// Collections run over and over while an image is built; they delete an older image that
/// is no longer served (and older than the grace), and nothing the build writes.
#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn a_build_in_progress_during_collections_completes(#[case] kind: StoreKind) {
    const GRACE: Duration = Duration::from_secs(20);
    let store = SharedStore::start(kind);
    let salt = nonce();
    let env = [
        ("NIXERY_TEST_SALT", salt.as_str()),
        ("NIXERY_BIG_MIB", "64"),
        ("NIXERY_RETENTION", "2s"),
        ("NIXERY_GC_INTERVAL", "0"),
    ];
    let server = store.server(&env);
    let old = pulled(&server, "hello", "latest");
    std::thread::sleep(GRACE + Duration::from_secs(1));
    let gc = [("NIXERY_RETENTION", "2s"), ("NIXERY_GC_GRACE", "20s")];
    let (built, deleted) = std::thread::scope(|s| {
        let build = s.spawn(|| pull_checked(&server, "hello/big", "latest"));
        let mut deleted = Vec::new();
        while !build.is_finished() {
            deleted.extend(store.gc(&gc, false).listed);
        }
        (build.join().unwrap(), deleted)
    });
    let digest = built.unwrap_or_else(|e| server.fail(&format!("the build failed: {e}\ncollected: {deleted:#?}")));
    let new = &blobs_of(&server, "hello/big", "latest") - &blobs_of(&server, "hello", "latest");
    let collected: Vec<&String> = deleted.iter().filter(|l| new.iter().any(|b| l.contains(b.as_str()))).collect();
    assert!(collected.is_empty(), "collections deleted what the build wrote: {collected:#?}");
    assert!(deleted.iter().any(|l| l.starts_with(&format!("manifests/{old} "))), "nothing was collected: {deleted:#?}");
    assert_eq!(pulled(&server, "hello/big", "latest"), digest);
}

#[test]
fn a_collected_image_by_tag_is_rebuilt_and_a_path_source_digest_says_why() {
    let store = SharedStore::start(StoreKind::Filesystem);
    let env = [("NIXERY_RETENTION", "3s"), ("NIXERY_GC_GRACE", "1s"), ("NIXERY_GC_INTERVAL", "0")];
    let server = store.server(&env);
    let digest = pulled(&server, "hello", "latest");
    std::thread::sleep(Duration::from_secs(4));
    store.gc(&env[..2], false);
    assert!(!store.has(&format!("manifests/{digest}")), "not collected");
    assert_eq!(pulled(&server, "hello", "latest"), digest, "rebuilt by tag with another digest");
    assert_eq!(server.metric("nixery_image_builds_total"), 2, "{}", server.log_tail(20));

    std::thread::sleep(Duration::from_secs(4));
    store.gc(&env[..2], false);
    let r = server.request("GET", &format!("/v2/hello/manifests/{digest}"), &[]);
    assert_eq!(r.status, 404, "{}", server.context(&r.describe()));
    let error = &r.json()["errors"][0];
    assert_eq!(error["code"], "MANIFEST_UNKNOWN");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("garbage-collected") && message.contains("local package set"), "{message}");
    assert!(!message.contains(store.path().to_str().unwrap()), "a server path in {message}");
}

#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn abandoned_uploads_are_collected(#[case] kind: StoreKind) {
    let store = SharedStore::start(kind);
    let env = store.env();
    let base = env.iter().find(|(k, _)| *k == "STORAGE_EMULATOR_HOST" || *k == "AWS_ENDPOINT_URL_S3").map(|(_, v)| v);
    let send = |method: &str, url: String| {
        let r = crate::harness::http::send(method, &url, &[], crate::harness::http::TIMEOUT).unwrap();
        assert_eq!(r.status, 200, "{method} {url}: {}", r.describe());
    };
    let upload = |key: &str| match (kind, base) {
        (StoreKind::Filesystem, _) => {
            let path = store.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "half an upload").unwrap();
        }
        (StoreKind::Gcs, Some(base)) => {
            send("POST", format!("{base}/upload/storage/v1/b/nixery-test/o?uploadType=media&name={key}"));
        }
        (StoreKind::S3, Some(base)) => {
            send("PUT", format!("{base}/nixery-test/{key}"));
            // And a multipart upload nobody completes (moto wants it signed).
            use object_store::multipart::MultipartStore;
            let s3 = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name("nixery-test")
                .with_endpoint(base)
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("testing")
                .with_secret_access_key("testing")
                .build()
                .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(s3.create_multipart(&object_store::path::Path::from(key))).unwrap();
        }
        _ => unreachable!(),
    };
    let staging_name = |t: SystemTime, fill: char| {
        let millis = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
        format!("staging/{millis:012x}-{}", fill.to_string().repeat(32))
    };
    // Uploads started a day ago that stopped, and, after the grace, one that just started
    // (a grace of a few seconds: the young upload must still be young when the collection
    // looks, which on a loaded machine may be seconds later).
    let old = staging_name(SystemTime::now() - Duration::from_secs(86_400), 'a');
    upload(&old);
    std::thread::sleep(Duration::from_secs(7));
    let young = staging_name(SystemTime::now(), 'b');
    upload(&young);
    let run = store.gc(&[("NIXERY_GC_GRACE", "6s")], false);
    assert!(!store.has(&old), "{}", run.summary);
    assert!(store.has(&young), "an upload in progress was collected: {}", run.summary);
    if kind == StoreKind::S3 {
        assert!(run.summary.contains("unfinished uploads: 1"), "{}", run.summary);
    }
}

/// The server realises an image with a large package in a mount namespace whose /nix is an
/// overlay of the machine's (so the collection below touches no other test's store paths),
/// on one core (one layer archived at a time); while it archives the large layer,
/// `nix-store --gc` runs in the same namespace. Nix keeps the paths a process has open, but
/// not the image's other paths, which wait for their turn: without the server's GC root
/// they would be deleted and their archives fail. With it, the image is whole.
#[test]
fn nix_store_gc_during_a_large_archive_does_not_break_it() {
    require_tool(&["unshare", "nsenter", "taskset"]);
    let overlay = temp_dir("nix-overlay");
    let (upper, work) = (overlay.path().join("upper"), overlay.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let mount = format!(
        "mount -t overlay overlay -o lowerdir=/nix,upperdir={},workdir={} /nix && exec taskset -c 0 \"$0\"",
        upper.display(),
        work.display()
    );
    let wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount.as_str()];
    let salt = nonce();
    let env = [("NIXERY_TEST_SALT", salt.as_str()), ("NIXERY_BIG_MIB", "512")];
    let server = Server::launch_with(Launch { env: &env, wrapper: &wrapper, ..Launch::default() });
    let in_namespace = |args: &[&str]| {
        let pid = server.pid().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-m", "--"]).args(args);
        let out = output_timeout(&mut cmd, Duration::from_secs(300)).unwrap_or_else(|e| server.fail(&e));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{}", server.context(&format!("{args:?} failed: {text}")));
        text
    };
    let staging = server.storage().join("staging");
    std::thread::scope(|s| {
        let pull = s.spawn(|| pull_checked(&server, "big/hello-lib", "latest"));
        let archiving = || {
            let files = std::fs::read_dir(&staging).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
            files.iter().any(|f| f.metadata().is_ok_and(|m| m.len() > (8 << 20)))
        };
        assert!(wait_until(Duration::from_secs(240), || archiving() || pull.is_finished()), "never archived");
        if pull.is_finished() {
            let result = pull.join().unwrap();
            server.fail(&format!("the pull ended before the collection could run: {result:?}"));
        }
        let roots = in_namespace(&["nix-store", "--gc", "--print-roots"]);
        let held: Vec<&str> = roots.lines().filter(|l| l.contains("/gcroots/nixery/")).collect();
        assert!(held.iter().any(|l| l.contains("-big-512mib")), "no root holds the package being archived:\n{roots}");
        let collected = in_namespace(&["nix-store", "--gc"]);
        assert!(collected.contains("store paths deleted"), "{collected}");
        let digest = pull.join().unwrap().unwrap_or_else(|e| server.fail(&format!("the archive broke: {e}")));
        assert!(digest.starts_with("sha256:"));
    });
    // The roots went with the build.
    let roots = in_namespace(&["nix-store", "--gc", "--print-roots"]);
    assert!(!roots.contains("-big-512mib"), "the build's roots outlived it:\n{roots}");
}

/// The server collects by itself every NIXERY_GC_INTERVAL, once for the replicas sharing
/// its storage, and says what it reclaimed in its log and at /metrics.
#[test]
fn servers_collect_every_interval_once_for_the_fleet() {
    let store = SharedStore::start(StoreKind::Filesystem);
    let env = [("NIXERY_RETENTION", "3s"), ("NIXERY_GC_GRACE", "1s"), ("NIXERY_GC_INTERVAL", "4s")];
    let (a, b) = (store.server(&env), store.server(&env));
    let digest = pulled(&a, "hello", "latest");
    let deleted = || a.metric("nixery_gc_objects_deleted_total") + b.metric("nixery_gc_objects_deleted_total");
    assert!(wait_until(Duration::from_secs(60), || deleted() > 0), "{}", a.context("nothing was collected"));
    assert!(!store.has(&format!("manifests/{digest}")));
    let bytes = a.metric("nixery_gc_bytes_deleted_total") + b.metric("nixery_gc_bytes_deleted_total");
    assert!(bytes > 1000, "{bytes} bytes reclaimed");
    let logs = format!("{}{}", a.log(), b.log());
    assert!(logs.contains("garbage collection: deleted"), "{}", a.log_tail(20));
    // Over two more intervals the two replicas collect about once per interval, not twice.
    let runs = || a.metric("nixery_gc_runs_total") + b.metric("nixery_gc_runs_total");
    let before = runs();
    std::thread::sleep(Duration::from_secs(9));
    let during = runs() - before;
    assert!((1..=3).contains(&during), "{during} collections in 9 s at a 4 s interval by two replicas");
}
