//! One build per image for the whole fleet, with the real binary: three replicas on one
//! storage (a directory, fake-gcs-server, moto) asked for the same new image of a git source
//! at once build it once (one replica runs Nix, the others wait for its manifest) and
//! answer one digest; a replica killed with SIGKILL while it holds the build lease is taken
//! over once the lease expires.

use crate::harness::process::wait_until;
use crate::harness::shared_storage::{SharedStore, StoreKind, pull_checked};
use crate::harness::{PackageRepo, nonce};
use rstest::rstest;
use std::time::{Duration, Instant};

#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn three_replicas_asked_at_once_build_a_new_image_once(#[case] kind: StoreKind) {
    let store = SharedStore::start(kind);
    let repo = PackageRepo::new();
    let (source, commit) = (repo.source_env(), repo.first.clone());
    // `fresh` with a nonce of its own is new to the Nix store and to storage.
    let nonce = nonce();
    let env = [&source[..], &[("NIXERY_TEST_NONCE", nonce.as_str())]].concat();
    let replicas: Vec<_> = (0..3).map(|_| store.server(&env)).collect();
    let barrier = std::sync::Barrier::new(replicas.len());
    let digests: Vec<String> = std::thread::scope(|s| {
        let pulls: Vec<_> = replicas
            .iter()
            .map(|r| {
                let (barrier, commit) = (&barrier, &commit);
                s.spawn(move || {
                    barrier.wait();
                    pull_checked(r, "shell/fresh", commit).unwrap_or_else(|e| r.fail(&e))
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "replicas answered different digests: {digests:?}");
    let nix_runs: Vec<u64> = replicas.iter().map(|r| r.metric("nixery_nix_invocations_total")).collect();
    let builds: Vec<u64> = replicas.iter().map(|r| r.metric("nixery_image_builds_total")).collect();
    let waited: Vec<u64> = replicas.iter().map(|r| r.metric("nixery_builds_elsewhere_total")).collect();
    eprintln!(
        "FLEET {kind:?}: Nix runs per replica {nix_runs:?} (sum {}), builds {builds:?}",
        nix_runs.iter().sum::<u64>()
    );
    let logs = || replicas.iter().map(|r| r.log_tail(15)).collect::<Vec<_>>().join("\n---\n");
    assert_eq!(builds.iter().sum::<u64>(), 1, "builds {builds:?}\n{}", logs());
    assert_eq!(nix_runs.iter().filter(|n| **n > 0).count(), 1, "Nix ran on several replicas: {nix_runs:?}\n{}", logs());
    assert_eq!(waited.iter().sum::<u64>(), 2, "{waited:?}");
}

#[rstest]
#[case::filesystem(StoreKind::Filesystem)]
#[case::gcs(StoreKind::Gcs)]
#[case::s3(StoreKind::S3)]
fn a_holder_killed_mid_build_is_taken_over_when_its_lease_expires(#[case] kind: StoreKind) {
    let store = SharedStore::start(kind);
    let repo = PackageRepo::new();
    let (source, commit) = (repo.source_env(), repo.first.clone());
    let salt = nonce();
    // The build takes at least 5 s (NIXERY_BIG_PAUSE), so the holder is still building when
    // it is killed 1.5 s in: without the pause, an idle machine built and stored the image
    // first, and the taker then answered from storage before the lease could expire.
    let env = [
        &source[..],
        &[
            ("NIXERY_BUILD_LEASE", "2s"),
            ("NIXERY_TEST_SALT", salt.as_str()),
            ("NIXERY_BIG_MIB", "64"),
            ("NIXERY_BIG_PAUSE", "5"),
        ],
    ]
    .concat();
    let holder = store.server(&env);
    let taker = store.server(&env);
    std::thread::scope(|s| {
        let first = s.spawn(|| pull_checked(&holder, "big", &commit));
        assert!(
            wait_until(Duration::from_secs(120), || holder.metric("nixery_nix_processes") > 0),
            "{}",
            holder.context("the holder never ran Nix")
        );
        assert_eq!(store.keys("leases/").len(), 1, "no lease: {:?}", store.keys(""));
        let second = s.spawn(|| {
            let started = Instant::now();
            (pull_checked(&taker, "big", &commit), started.elapsed())
        });
        // The second replica waits for the holder.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(taker.metric("nixery_nix_invocations_total"), 0, "{}", taker.log_tail(20));
        // SIGKILL, by the PID the harness started: no release, no renewal, no goodbye.
        unsafe { libc::kill(holder.pid() as libc::pid_t, libc::SIGKILL) };
        assert!(first.join().unwrap().is_err(), "the killed holder answered");
        let (taken, waited) = second.join().unwrap();
        let digest = taken.unwrap_or_else(|e| taker.fail(&e));
        assert!(digest.starts_with("sha256:"));
        assert!(waited > Duration::from_secs(2), "answered after {waited:?}: before the lease could expire");
    });
    assert!(taker.log().contains("taking over a lease that was not renewed"), "{}", taker.log_tail(30));
    assert_eq!(taker.metric("nixery_image_builds_total"), 1);
}
