//! A flake as the package source (`NIXERY_PKGS_FLAKE`), against real Nix, git and clients:
//! a team's flake in a local git repository, whose `nixpkgs` input (a flake wrapping the test
//! package set) is locked in its flake.lock, with one package of its own
//! ([`crate::harness::flake_repo`]). Its own package and its input's are pulled and run with
//! skopeo + umoci and containerd; tags select its commits and branches, `latest` moves with
//! the default branch after the TTL while a commit's tag keeps its image; a `path:` flake is
//! locked by the server, or refused with how to lock it; arm64 images come from
//! `packages.aarch64-linux`; credentials in the reference show nowhere. What clients print
//! for a flake's failures is in client_errors.rs.

use std::time::{Duration, Instant};

use crate::harness::flake_repo::Outputs;
use crate::harness::{Containerd, Server, TeamFlake, nonce, pull_and_unpack};

/// A server whose package source is `flake`, with `env` on top.
fn serve(flake: &str, env: &[(&str, &str)]) -> Server {
    let mut all = vec![("NIXERY_PKGS_FLAKE", flake), ("NIXERY_PKGS_PATH", "")];
    all.extend_from_slice(env);
    Server::start_with(&all)
}

/// What `script` prints in `name:tag` (an image with a shell), pulled with skopeo and
/// unpacked with umoci.
fn in_image(server: &Server, name_and_tag: &str, script: &str) -> String {
    pull_and_unpack(server, name_and_tag, &[]).sh(server, script)
}

/// What `/bin/our-tool` prints in `name:tag`, pulled with skopeo and unpacked with umoci.
fn our_tool(server: &Server, name_and_tag: &str) -> String {
    pull_and_unpack(server, name_and_tag, &[]).chroot(server, &["/bin/our-tool"])
}

#[test]
fn a_flakes_own_package_and_its_inputs_run_in_skopeo_umoci_and_containerd() {
    let flake = TeamFlake::new();
    let server = serve(&flake.url(), &[]);
    let script = "our-tool; hello; bash -c 'echo bash says hi'; ls /bin/sponge /bin/nano /etc/ssl/certs/ca-bundle.crt";
    let expected = "our tool v1 for x86_64-linux\nHello, world!\nbash says hi\n/bin/nano\n/bin/sponge\n/etc/ssl/certs/ca-bundle.crt\n";
    assert_eq!(in_image(&server, "shell/our-tool/hello:latest", script), expected);

    let containerd = Containerd::start();
    for (image, program, printed) in
        [("shell/our-tool", "our-tool", "our tool v1 for x86_64-linux\n"), ("shell/hello", "hello", "Hello, world!\n")]
    {
        let reference = server.image(&format!("{image}:latest"));
        containerd.ctr_ok(&server, &["images", "pull", "--plain-http", &reference]);
        let id = format!("flake-{}", nonce());
        let out = containerd.ctr_ok(&server, &["run", "--rm", &reference, &id, "bash", "-c", program]);
        assert_eq!(out, printed, "{image}");
    }

    // The image of our-tool alone runs it (its meta.mainProgram) and holds no shell.
    let config = server.image_config("our-tool", "latest");
    assert_eq!(config["config"]["Cmd"][0], "/bin/our-tool", "{config}");

    // The start page names the flake's commit and the nixpkgs commit its flake.lock pins,
    // and no server path.
    let page = server.get_ok("/", &[]).text();
    assert!(page.contains(&flake.first) && page.contains(flake.nixpkgs_commit()), "{page}");
    assert!(!page.contains(&flake.path().display().to_string()), "the page shows the flake's path: {page}");
}

#[test]
fn latest_follows_the_default_branch_after_the_ttl_while_a_commit_keeps_its_image() {
    // Long enough for a cold build, skopeo, umoci and a second request on a loaded machine.
    const TTL: Duration = Duration::from_secs(30);
    let flake = TeamFlake::new();
    let server = serve(&flake.url(), &[("NIXERY_SOURCE_TTL", &TTL.as_secs().to_string())]);
    let resolved = Instant::now();
    let first = server.manifest_digest("our-tool", "latest");
    assert_eq!(in_image(&server, "shell/our-tool:latest", "our-tool"), "our tool v1 for x86_64-linux\n");

    // A new commit on main is not seen within the TTL. Its nixpkgs input moves on too, but
    // its flake.lock still pins the input's first commit.
    flake.commit("main", "v2", Outputs::Complete);
    flake.move_nixpkgs("Hello, unlocked!");
    let old = flake.commit("old-tools", "v0", Outputs::Complete);
    assert_eq!(server.manifest_digest("our-tool", "latest"), first);
    assert!(resolved.elapsed() < TTL, "this machine took longer than the TTL: the test cannot judge");

    // After the TTL, latest is the new commit.
    std::thread::sleep(TTL.saturating_sub(resolved.elapsed()) + Duration::from_millis(500));
    let second = server.manifest_digest("our-tool", "latest");
    assert_ne!(second, first, "{}", server.context("latest did not move after the TTL"));
    assert_eq!(
        in_image(&server, "shell/our-tool/hello:latest", "our-tool; hello"),
        "our tool v2 for x86_64-linux\nHello, world!\n"
    );
    // Its inputs are as its flake.lock says: a branch whose lock was updated has the new hello.
    flake.commit_lock_update("newer-nixpkgs");
    assert_eq!(in_image(&server, "shell/hello:newer-nixpkgs", "hello"), "Hello, unlocked!\n");

    // The first commit's tag still gives the first image, as does main's old head by branch.
    assert_eq!(server.manifest_digest("our-tool", &flake.first), first);
    assert_eq!(
        in_image(&server, &format!("shell/our-tool:{}", flake.first), "our-tool"),
        "our tool v1 for x86_64-linux\n"
    );
    assert_eq!(in_image(&server, "shell/our-tool:old-tools", "our-tool"), "our tool v0 for x86_64-linux\n");
    assert_eq!(server.manifest_digest("our-tool", &old), server.manifest_digest("our-tool", "old-tools"));

    // A commit is locked once, for good: asking again resolves nothing.
    let resolutions = server.metric("nixery_source_resolutions_total");
    for _ in 0..3 {
        assert_eq!(server.manifest_digest("our-tool", &flake.first), first);
    }
    assert_eq!(server.metric("nixery_source_resolutions_total"), resolutions, "{}", server.metrics());

    // Tags that select nothing say so.
    let message = server.refusal("our-tool", "no-such-branch");
    assert!(message.contains("'no-such-branch'"), "{message}");
    let missing_commit = "0123456789abcdef0123456789abcdef01234567";
    let message = server.refusal("our-tool", missing_commit);
    assert!(message.contains(missing_commit) && message.contains("fetching the flake"), "{message}");
    assert!(!message.contains("/tmp/"), "a server path in {message}");
}

#[test]
fn arm64_images_come_from_the_flakes_aarch64_linux_outputs() {
    let flake = TeamFlake::new();
    let server = serve(&flake.url(), &[]);
    let arm = pull_and_unpack(&server, "arm64/shell/our-tool/hello:latest", &["--override-arch", "arm64"]);
    assert_eq!(arm.sh(&server, "our-tool"), "our tool v1 for aarch64-linux\n");
    assert_eq!(server.image_config("arm64/our-tool", "latest")["architecture"], "arm64");
    let hello =
        std::fs::read_to_string(arm.resolve("/bin/hello").unwrap().parent().unwrap().join("../nix-support/system"))
            .unwrap_or_else(|e| server.fail(&format!("hello's nix-support/system: {e}")));
    assert_eq!(hello.trim(), "aarch64-linux", "legacyPackages.aarch64-linux's hello");
}

#[test]
fn a_path_flake_is_locked_by_the_server_and_read_again_after_the_ttl() {
    // Long enough for a cold build, skopeo, umoci and a second request on a loaded machine.
    const TTL: Duration = Duration::from_secs(30);
    let flake = TeamFlake::new();
    let (_dir, path) = flake.copy_files(true);
    let server = serve(&format!("path:{}", path.display()), &[("NIXERY_SOURCE_TTL", &TTL.as_secs().to_string())]);
    let resolved = Instant::now();
    let first = server.manifest_digest("our-tool", "latest");
    assert_eq!(our_tool(&server, "our-tool:latest"), "our tool v1 for x86_64-linux\n");
    // One revision, the directory: other tags are refused, saying why.
    assert!(server.refusal("our-tool", &flake.first).contains("'latest'"));

    // A change is read after the TTL (flake.lock as it was).
    std::fs::write(
        path.join("flake.nix"),
        std::fs::read_to_string(path.join("flake.nix")).unwrap().replace("v1", "v2"),
    )
    .unwrap();
    assert_eq!(server.manifest_digest("our-tool", "latest"), first, "read again within the TTL");
    assert!(resolved.elapsed() < TTL, "this machine took longer than the TTL: the test cannot judge");
    std::thread::sleep(TTL.saturating_sub(resolved.elapsed()) + Duration::from_millis(500));
    assert_eq!(our_tool(&server, "our-tool:latest"), "our tool v2 for x86_64-linux\n");

    // A path flake whose inputs are not locked is refused, saying how to lock it.
    let (_unlocked_dir, unlocked) = flake.copy_files(false);
    let server = serve(&format!("path:{}", unlocked.display()), &[]);
    let message = server.refusal("our-tool", "latest");
    assert!(message.contains("unlocked flake input 'nixpkgs'"), "{message}");
    assert!(message.contains("run `nix flake lock` in the flake's directory"), "{message}");
    assert!(!message.contains(&unlocked.display().to_string()), "the message shows the flake's path: {message}");
}

/// A token in the flake's URL shows in no answer and no log line, whether git or Nix fails.
#[test]
fn credentials_in_the_flake_reference_never_show() {
    const SECRET: &str = "SECRETflake42";
    let server = serve(&format!("git+https://user:{SECRET}@127.0.0.1:1/flake.git"), &[("RUST_LOG", "debug")]);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let mut answers = Vec::new();
    for tag in ["latest", commit] {
        let r = server.get(&format!("/v2/hello/manifests/{tag}"));
        assert!(r.status >= 400, "{}", server.context(&r.describe()));
        answers.push(r.describe());
    }
    let answers = answers.join("\n");
    assert!(answers.contains("502") && answers.contains("422"), "git's and Nix's failures: {answers}");
    let log = server.log();
    assert!(log.contains("***@127.0.0.1:1"), "{}", server.context("the redacted URL is not shown"));
    assert!(!answers.contains(SECRET), "an answer shows the token:\n{answers}");
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "log lines show the token:\n{}", leaks.join("\n"));
}
