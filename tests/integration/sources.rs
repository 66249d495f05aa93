//! What a tag means on each kind of package source, and when a moving tag is resolved again:
//! a channel resolved through a local git remote (as `NIXERY_CHANNEL_REPO` allows), a git
//! package-set repository, and a local path re-read when its TTL expires. Real Nix, real git.

use crate::harness::{PackageRepo, Server, pull_and_unpack, temp_dir};
use std::time::{Duration, Instant};

/// What `hello` prints in `name:tag`, pulled with skopeo and unpacked with umoci.
fn greeting(server: &Server, name_and_tag: &str) -> String {
    pull_and_unpack(server, name_and_tag, &[]).sh(server, "hello")
}

#[test]
fn channel_tags_select_branches_and_commits_of_the_channel_repository() {
    let repo = PackageRepo::new();
    let server = Server::start_with(&[
        ("NIXERY_PKGS_PATH", ""),
        ("NIXERY_CHANNEL", "nixos-test"),
        ("NIXERY_CHANNEL_REPO", &repo.url()),
    ]);
    // `latest` is the configured channel.
    assert_eq!(greeting(&server, "shell/hello:latest"), "Hello, channel!\n");
    // A full commit pins the package set; a branch name selects that branch.
    assert_eq!(greeting(&server, &format!("shell/hello:{}", repo.first)), "Hello, world!\n");
    let (latest, main, old) = (
        server.manifest_digest("hello", "latest"),
        server.manifest_digest("hello", "main"),
        server.manifest_digest("hello", "old"),
    );
    assert_eq!(server.manifest_digest("hello", "nixos-test"), latest);
    assert_eq!(server.manifest_digest("hello", &repo.first), old, "`old` is the first commit");
    assert!(latest != main && main != old, "the tag did not select the branch: {latest} {main} {old}");

    let message = server.refusal("hello", "nixos-99.99");
    assert!(message.contains("'nixos-99.99'"), "the message does not name the tag: {message}");
    assert!(server.metric("nixery_source_resolution_failures_total") >= 1);
}

#[test]
fn git_tags_select_refs_and_commits_and_latest_is_the_default_branch() {
    let repo = PackageRepo::new();
    let server = Server::start_with(&[("NIXERY_PKGS_REPO", &repo.url()), ("NIXERY_PKGS_PATH", "")]);
    assert_eq!(greeting(&server, "shell/hello:latest"), "Hello, v2!\n");
    assert_eq!(greeting(&server, &format!("shell/hello:{}", repo.first)), "Hello, world!\n");
    let latest = server.manifest_digest("hello", "latest");
    assert_eq!(server.manifest_digest("hello", "main"), latest, "latest is the default branch");
    let old = server.manifest_digest("hello", "old");
    assert_ne!(old, latest, "the tag did not select the branch");
    assert_eq!(server.manifest_digest("hello", &repo.first), old);
    let third = server.manifest_digest("hello", "nixos-test");
    assert_eq!(server.manifest_digest("hello", "nixos-test"), third, "a branch gives the same image again");
    assert!(third != latest && third != old, "the nixos-test branch did not select its own package set");
    let message = server.refusal("hello", "no-such-branch");
    assert!(message.contains("'no-such-branch'"), "{message}");
}

#[test]
fn a_path_source_is_re_read_when_its_ttl_expires() {
    const TTL: Duration = Duration::from_secs(15);
    let dir = temp_dir("path-pkgs");
    let pkgs = dir.path().join("default.nix");
    std::fs::write(&pkgs, crate::harness::package_repo::package_set("Hello, world!")).unwrap();
    let server = Server::start_with(&[
        ("NIXERY_PKGS_PATH", pkgs.to_str().unwrap()),
        ("NIXERY_SOURCE_TTL", &TTL.as_secs().to_string()),
    ]);
    let nix = || server.metric("nixery_nix_invocations_total");

    // A path has one revision: other tags are refused, saying why.
    assert!(server.refusal("hello", "v1").contains("'latest'"));

    let resolved = Instant::now();
    let first = server.manifest_digest("shell/hello", "latest");
    let (nix_after_first, built_after_first) = (nix(), server.metric("nixery_layers_built_total"));
    assert!(nix_after_first > 0);

    // Changed files are not seen within the TTL: the manifest comes from memory, no Nix runs.
    std::fs::write(&pkgs, crate::harness::package_repo::package_set("Hello, changed!")).unwrap();
    assert_eq!(server.manifest_digest("shell/hello", "latest"), first);
    assert_eq!(nix(), nix_after_first, "{}", server.context("Nix ran within the TTL"));
    assert!(resolved.elapsed() < TTL, "this machine took longer than the TTL: the test cannot judge");
    assert_eq!(server.metric_labelled("nixery_manifest_requests_total", r#"cache="warm""#), 1);

    // After the TTL the next request evaluates the files again and gets the new image.
    std::thread::sleep(TTL.saturating_sub(resolved.elapsed()) + Duration::from_millis(500));
    let resolved = Instant::now();
    let changed = server.manifest_digest("shell/hello", "latest");
    assert_ne!(changed, first, "the changed package set was not read after the TTL");
    assert!(nix() > nix_after_first);
    assert_eq!(greeting(&server, "shell/hello:latest"), "Hello, changed!\n");
    assert!(resolved.elapsed() < TTL, "this machine took longer than the TTL: the test cannot judge");

    // A change that leaves every output path as it was: evaluated again after the TTL, the
    // same manifest, and no layer archived (only `hello`'s layer and the forest were new).
    let built = server.metric("nixery_layers_built_total");
    assert_eq!(built, built_after_first + 2, "{}", server.metrics());
    let text = crate::harness::package_repo::package_set("Hello, changed!");
    std::fs::write(&pkgs, format!("# a comment changes no output\n{text}")).unwrap();
    std::thread::sleep(TTL.saturating_sub(resolved.elapsed()) + Duration::from_millis(500));
    let nix_before = nix();
    assert_eq!(server.manifest_digest("shell/hello", "latest"), changed);
    assert!(nix() > nix_before, "the files were not evaluated again after the TTL");
    assert_eq!(server.metric("nixery_layers_built_total"), built, "{}", server.metrics());
}
